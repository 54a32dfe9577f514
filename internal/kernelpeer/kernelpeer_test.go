package kernelpeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// TestCpioNewc checks the archive writer against GNU cpio, which lists
// and extracts what it wrote.
func TestCpioNewc(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		testutil.Unavailable(t, "cpio is not installed (apt-get install -y cpio)")
	}
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "a/b"), 0o755)
	os.WriteFile(filepath.Join(tree, "a/b/odd"), []byte("12345"), 0o640)
	os.WriteFile(filepath.Join(tree, "empty"), nil, 0o600)
	os.Symlink("a/b/odd", filepath.Join(tree, "link"))
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	if err := w.addTree(tree); err != nil {
		t.Fatal(err)
	}
	w.entry("extra", 0o100755, []byte("xyz"))
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir, cmd.Stdin = out, &buf
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, b)
	}
	for name, want := range map[string]string{"a/b/odd": "12345", "empty": "", "extra": "xyz"} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "extra")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("extra: mode %v, %v; want 0755", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(out, "link")); err != nil || l != "a/b/odd" {
		t.Errorf("link -> %q, %v", l, err)
	}
}

// TestAgentOutput checks the capped buffer the agent collects output in.
func TestAgentOutput(t *testing.T) {
	c := &cappedBuffer{max: 5}
	io.WriteString(c, "abc")
	n, err := io.WriteString(c, "defg")
	if n != 4 || err != nil || string(c.b) != "abcde" {
		t.Errorf("wrote %d, %v: kept %q, want abcde", n, err, c.b)
	}
}

// TestBoot prepares the image, boots the kernel and runs commands in it:
// the output and exit status come back, ESP works (a state with every IV
// generator's algorithm family is accepted), and the ESP-in-UDP helper
// holds its sockets. It needs root, qemu and apt; with
// VNIC_REQUIRE_ROOT_TESTS=1 (CI) their absence fails the test.
func TestBoot(t *testing.T) {
	testutil.NeedRoot(t, "a network namespace, a tap device and a VM")
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testutil.Unavailable(t, "qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := Prepare(ctx, PrepareOptions{Log: testWriter{t}})
	if err != nil {
		testutil.Unavailable(t, "no kernel-peer image: %v", err)
	}
	agent := filepath.Join(t.TempDir(), "kernel-peer")
	build := exec.Command("go", "build", "-o", agent, "vnic/cmd/kernel-peer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "vnicKP-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()

	start := time.Now()
	vm, err := Boot(ctx, Config{Image: img, Agent: agent, Netns: ns, Tap: "kp0"})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	t.Logf("booted %s in %v", vm.Release, time.Since(start).Round(time.Millisecond))
	if vm.Release != img.Release {
		t.Errorf("guest runs %q, the image has %q", vm.Release, img.Release)
	}

	for _, c := range []struct {
		cmd  string
		code int
		out  string
	}{
		{"echo hello; echo err >&2", 0, "hello\nerr\n"},
		{"exit 3", 3, ""},
		{"printf '\\x00\\x01\\xff\\n\\r'", 0, "\x00\x01\xff\n\r"},
		{"ip link show eth0 | grep -c UP", 0, "1\n"},
		{"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel " +
			"aead 'rfc4106(gcm(aes))' 0x" + strings.Repeat("11", 20) + " 128 && " +
			"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x101 mode tunnel " +
			"enc 'cbc(aes)' 0x" + strings.Repeat("22", 16) + " auth-trunc 'hmac(sha256)' 0x" + strings.Repeat("33", 32) + " 128 flag esn replay-window 64 && " +
			"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x102 mode tunnel " +
			"aead 'rfc7539esp(chacha20,poly1305)' 0x" + strings.Repeat("44", 36) + " 128 && " +
			"ip xfrm state count", 0, ""},
	} {
		r, err := vm.Run(ctx, c.cmd, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v\nconsole:\n%s", c.cmd, err, vm.Console())
		}
		if r.Code != c.code || c.out != "" && r.Out != c.out {
			t.Errorf("%s: exit %d, output %q; want %d, %q", c.cmd, r.Code, r.Out, c.code, c.out)
		}
	}
	if r, err := vm.Run(ctx, "ip xfrm state count", 0); err != nil || !strings.Contains(r.Out, "3") {
		t.Errorf("the kernel holds %q states (%v), want 3", r.Out, err)
	}
	r, err := vm.Run(ctx, "sleep 5", time.Second)
	if err == nil || r.Code != -1 {
		t.Errorf("a command past its timeout: %+v, %v; want an error and code -1", r, err)
	}
	if r, err := vm.Run(ctx, "kernel-peer guest-espinudp 4500 >/dev/null 2>&1 & sleep 0.5; "+
		"grep -c ':1194 ' /proc/net/udp /proc/net/udp6", 0); err != nil || r.Out != "/proc/net/udp:1\n/proc/net/udp6:1\n" {
		t.Errorf("the ESP-in-UDP helper's sockets: %q, %v; want one on 4500 (0x1194) per family", r.Out, err)
	}
	// The channel carries large outputs intact.
	r, err = vm.Run(ctx, "head -c 300000 /dev/zero | tr '\\0' x", 0)
	if err != nil || len(r.Out) != 300000 || strings.Trim(r.Out, "x") != "" {
		t.Errorf("300000 bytes of output: got %d (%v)", len(r.Out), err)
	}
}

// testWriter logs each write as a test log line.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
