package sdnotify

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// listen opens a Unix datagram socket at addr (a path, or @name) that
// the test holds, as the service manager would.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one datagram from c, failing after a few seconds.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func uniqueName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "vnic-sdnotify-test-" + hex.EncodeToString(b)
}

// TestNotify sends to a socket the test holds, at a path and in the
// abstract namespace; does nothing without NOTIFY_SOCKET; and returns an
// error, to be logged, for a socket nobody listens on or an address that
// is not one.
func TestNotify(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	listen(t, stale).Close() // a datagram socket's file outlives it
	for _, tc := range []struct {
		name   string
		netns  bool   // the abstract namespace is the network namespace's: use one of the test's own
		listen string // the socket the test holds ("": none)
		env    string // NOTIFY_SOCKET (listen's address when "")
		unset  bool   // NOTIFY_SOCKET unset
		states []string
		sent   bool
		want   string // the datagram
		err    error  // errors.Is the error
		errMsg string // in the error
	}{
		{name: "path", listen: filepath.Join(dir, "notify.sock"), states: []string{Ready, Status("vnic0 up")},
			sent: true, want: "READY=1\nSTATUS=vnic0 up"},
		{name: "abstract", netns: true, listen: "@" + uniqueName(), states: []string{Stopping}, sent: true, want: "STOPPING=1"},
		{name: "status on one line", listen: filepath.Join(dir, "status.sock"), states: []string{Status("a\nb\r\nc")},
			sent: true, want: "STATUS=a b c"},
		{name: "unset", unset: true, states: []string{Ready}},
		{name: "empty", env: "", listen: "", states: []string{Ready}},
		{name: "no such socket", env: filepath.Join(dir, "none.sock"), states: []string{Ready}, sent: true,
			err: os.ErrNotExist, errMsg: "notify the service manager at " + filepath.Join(dir, "none.sock")},
		{name: "nobody listens", env: stale, states: []string{Ready}, sent: true, err: syscall.ECONNREFUSED},
		{name: "not an address", env: "notify.sock", states: []string{Ready}, sent: true,
			errMsg: `NOTIFY_SOCKET="notify.sock": expected the path of a Unix socket or an abstract name starting with @`},
		{name: "two lines in one state", listen: filepath.Join(dir, "bad.sock"), states: []string{"READY=1\nSTATUS=x"}, sent: true,
			errMsg: "is not one VARIABLE=VALUE line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.netns {
				testutil.EnterNetns(t)
			}
			var c *net.UnixConn
			env := tc.env
			if tc.listen != "" {
				c = listen(t, tc.listen)
				env = tc.listen
			}
			if tc.unset {
				t.Setenv(EnvSocket, "")
				os.Unsetenv(EnvSocket)
			} else {
				t.Setenv(EnvSocket, env)
			}
			sent, err := Notify(tc.states...)
			if sent != tc.sent {
				t.Errorf("sent %v, want %v", sent, tc.sent)
			}
			switch {
			case tc.err == nil && tc.errMsg == "":
				if err != nil {
					t.Fatalf("error: %v", err)
				}
			case err == nil:
				t.Fatalf("no error, want one (%v %q)", tc.err, tc.errMsg)
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Errorf("error %v, want one that is %v", err, tc.err)
			case !strings.Contains(err.Error(), tc.errMsg):
				t.Errorf("error %q, want one that says %q", err, tc.errMsg)
			}
			if tc.want != "" {
				if got := receive(t, c); got != tc.want {
					t.Errorf("datagram %q, want %q", got, tc.want)
				}
			}
			if tc.want == "" && c != nil {
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if n, _ := c.Read(make([]byte, 64)); n > 0 {
					t.Errorf("a datagram arrived after an error")
				}
			}
			if os.Getenv(EnvSocket) != env {
				t.Errorf("NOTIFY_SOCKET is %q after Notify, want it left as %q", os.Getenv(EnvSocket), env)
			}
		})
	}
}
