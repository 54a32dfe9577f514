package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionLine: the line `vnic --version` prints, from every kind of
// build information the go command stamps, and from none.
func TestVersionLine(t *testing.T) {
	const rev = "1e8268fcbcf3e9c1bb706359ccc7a0f0a0ef9283"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "-buildmode", Value: "exe"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-12-02T14:15:02Z"},
			{Key: "vcs.modified", Value: modified},
		}
	}
	build := func(version string, settings []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Path: "vnic/cmd/vnic",
			Main: debug.Module{Path: "vnic", Version: version}, Settings: settings}
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build information", nil, false,
			"vnic unknown (revision unknown) " + runtime.Version()},
		{"go test or go run: no commit", build("(devel)", nil), true,
			"vnic unknown (revision unknown) go1.26.8"},
		{"no version at all", build("", nil), true,
			"vnic unknown (revision unknown) go1.26.8"},
		{"no Go version", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"}}, true,
			"vnic 1.0.0 (revision unknown) " + runtime.Version()},
		{"go build, no tag, clean", build("v0.0.0-20261202141502-1e8268fcbcf3", vcs("false")), true,
			"vnic 0.0.0-devel (revision 1e8268fcbcf3 of 2026-12-02) go1.26.8"},
		{"go build, no tag, dirty", build("v0.0.0-20261202141502-1e8268fcbcf3+dirty", vcs("true")), true,
			"vnic 0.0.0-devel (revision 1e8268fcbcf3 of 2026-12-02, dirty) go1.26.8"},
		{"go build -buildvcs=false of a dirty tree: the version's mark alone",
			build("v0.0.0-20261202141502-1e8268fcbcf3+dirty", nil), true,
			"vnic 0.0.0-devel (revision unknown, dirty) go1.26.8"},
		{"vcs.modified alone", build("(devel)", vcs("true")), true,
			"vnic unknown (revision 1e8268fcbcf3 of 2026-12-02, dirty) go1.26.8"},
		{"a release tag", build("v1.2.3", vcs("false")), true,
			"vnic 1.2.3 (revision 1e8268fcbcf3 of 2026-12-02) go1.26.8"},
		{"a release tag, dirty", build("v1.2.3+dirty", vcs("true")), true,
			"vnic 1.2.3 (revision 1e8268fcbcf3 of 2026-12-02, dirty) go1.26.8"},
		{"a pre-release tag", build("v1.3.0-rc.1", vcs("false")), true,
			"vnic 1.3.0-rc.1 (revision 1e8268fcbcf3 of 2026-12-02) go1.26.8"},
		{"commits after a release", build("v1.2.4-0.20261202141502-1e8268fcbcf3", vcs("false")), true,
			"vnic 1.2.4-devel (revision 1e8268fcbcf3 of 2026-12-02) go1.26.8"},
		{"commits after a pre-release", build("v1.3.0-rc.1.0.20261202141502-1e8268fcbcf3", vcs("false")), true,
			"vnic 1.3.0-rc.1-devel (revision 1e8268fcbcf3 of 2026-12-02) go1.26.8"},
		{"a short revision, no time", build("(devel)", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}}), true,
			"vnic unknown (revision abc123) go1.26.8"},
	} {
		if got := versionLine(tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestVersionCommand: `vnic --version` and `vnic version` print the
// version line and nothing else, wherever the global options stand.
func TestVersionCommand(t *testing.T) {
	want := version() + "\n"
	if !strings.HasPrefix(want, "vnic ") || !strings.HasSuffix(want, ") "+runtime.Version()+"\n") {
		t.Errorf("version line %q: want vnic VERSION (revision ...) %s", want, runtime.Version())
	}
	for _, args := range [][]string{
		{"--version"}, {"-version"}, {"version"},
		{"--json", "version"}, {"--dev", "vnic1", "--version"}, {"version", "--socket", "/nowhere.sock"},
		{"--version", "sa", "list"}, // nothing is asked of a daemon
	} {
		code, out, errOut := vnic(context.Background(), args...)
		if code != 0 || out != want || errOut != "" {
			t.Errorf("vnic %s: exit %d, stdout %q, stderr %q; want 0, %q", strings.Join(args, " "), code, out, errOut, want)
		}
	}
	code, out, errOut := vnic(context.Background(), "version", "extra")
	if code != 2 || out != "" || !strings.Contains(errOut, `version: unexpected argument "extra"`) {
		t.Errorf("vnic version extra: exit %d, stdout %q, stderr %q; want 2 and the unexpected argument", code, out, errOut)
	}
	if _, out, _ := vnic(context.Background(), "help"); !strings.Contains(out, "\n  version ") || !strings.Contains(out, "\n  --version ") {
		t.Errorf("the usage does not list version and --version:\n%s", out)
	}
}

// TestVersionOfBuiltBinary: a vnic built in the git work tree, as make
// builds it, names the commit git's HEAD is, marked dirty exactly when
// git status reports changes. The tree may change while the test runs (it
// is being edited), so a mark is only required when git says the same
// before and after the build.
func TestVersionOfBuiltBinary(t *testing.T) {
	t.Parallel()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "TZ=UTC0")
		out, err := cmd.Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = strings.TrimSpace(string(ee.Stderr))
			}
			t.Fatalf("git %s: %v %s (this test needs the source as a git work tree)", strings.Join(args, " "), err, msg)
		}
		return strings.TrimSpace(string(out))
	}
	headBefore, dirtyBefore := git("rev-parse", "HEAD"), git("status", "--porcelain") != ""

	bin := filepath.Join(t.TempDir(), "vnic")
	// -buildvcs=true: stamp the commit, and fail rather than build
	// without it. GOFLAGS=-buildvcs=false in the go command's environment
	// file (as on this project's machines) would otherwise leave it out.
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	headAfter, dirtyAfter := git("rev-parse", "HEAD"), git("status", "--porcelain") != ""
	date := git("show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%d", "HEAD")

	line := func(arg string) string {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("vnic %s: %v\n%s", arg, err, out)
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	got := line("--version")
	if v := line("version"); v != got {
		t.Errorf("vnic version prints %q, vnic --version %q", v, got)
	}
	m := regexp.MustCompile(`^vnic (\S+) \(revision ([0-9a-f]+) of (\S+)(, dirty)?\) (\S+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("vnic --version printed %q, want vnic VERSION (revision REV of DATE[, dirty]) GOVERSION", got)
	}
	version, rev, gotDate, dirty, goVersion := m[1], m[2], m[3], m[4] != "", m[5]
	if rev != headBefore[:12] && rev != headAfter[:12] {
		t.Errorf("vnic --version names revision %s, git rev-parse HEAD gives %s", rev, headAfter)
	}
	if headBefore == headAfter && gotDate != date {
		t.Errorf("vnic --version dates the commit %s, git %s", gotDate, date)
	}
	if dirtyBefore == dirtyAfter && dirty != dirtyAfter {
		t.Errorf("vnic --version printed %q; git status says the tree is modified: %v", got, dirtyAfter)
	}
	if version == "unknown" {
		t.Errorf("vnic --version printed %q: go build stamped a version, it should show", got)
	}
	if goVersion != runtime.Version() {
		t.Errorf("vnic --version printed %q, built with %s", got, runtime.Version())
	}
}
