package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs the Makefile's install and uninstall, staged under
// a DESTDIR with PREFIX=/usr, in a copy of what they install from (so
// that the tree gets no ./vnic): the binary, the man page, the bash
// completion and the systemd unit land where a distribution puts them,
// with their modes; the unit names the installed binary; the installed
// vnic runs; uninstall removes all four. And make man finds the page
// renders without a warning.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed: %v", err)
	}
	src, root := t.TempDir(), t.TempDir()
	for _, f := range []string{"Makefile", "go.mod", "go.sum", "docs/vnic.8", "contrib/completion/vnic.bash", "contrib/systemd/vnic@.service"} {
		b, err := os.ReadFile(filepath.Join("..", "..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The binary, built already: with no Go files in the copy, make
	// finds it up to date.
	if out, err := exec.Command("go", "build", "-o", filepath.Join(src, "vnic"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-C", src, target, "PREFIX=/usr", "DESTDIR="+root)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("man") // the page renders without a warning
	make("install")
	want := map[string]os.FileMode{
		"usr/bin/vnic":                               0o755,
		"usr/share/man/man8/vnic.8":                  0o644,
		"usr/share/bash-completion/completions/vnic": 0o644,
		"usr/lib/systemd/system/vnic@.service":       0o644,
	}
	for f, mode := range want {
		st, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Errorf("make install: %v", err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", f, st.Mode().Perm(), mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/vnic@.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/vnic up -name %i") {
		t.Errorf("the installed unit does not start /usr/bin/vnic:\n%s", unit)
	}
	if out, err := exec.Command(filepath.Join(root, "usr/bin/vnic"), "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "vnic ") {
		t.Errorf("installed vnic --version: %q, %v", out, err)
	}
	make("uninstall")
	for f := range want {
		if _, err := os.Stat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("make uninstall left %s (%v)", f, err)
		}
	}
}
