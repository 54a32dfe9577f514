package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vnic/internal/testutil"
)

// notification is one datagram a service manager received, with the pid
// the kernel vouches sent it.
type notification struct {
	msg string
	pid int32
	err error
}

// notifySocket is a pretend service manager's notification socket: a Unix
// datagram socket at a path (abstract names are per network namespace,
// and the daemon runs in another), with SO_PASSCRED so that each datagram
// carries its sender's pid, as systemd's does.
func notifySocket(t *testing.T) (string, <-chan notification) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	out := make(chan notification, 8)
	go func() {
		for {
			buf, oob := make([]byte, 4096), make([]byte, 256)
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				out <- notification{err: err}
				return
			}
			nt := notification{msg: string(buf[:n]), pid: -1}
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if cred, err := unix.ParseUnixCredentials(&m); err == nil {
						nt.pid = cred.Pid
					}
				}
			}
			out <- nt
		}
	}()
	return path, out
}

// startNotifying starts h's daemon, with flags added, under the pretend
// service manager at path, its output in h.log, and returns it and what
// its Wait returns. Stopping it is the caller's.
func startNotifying(t *testing.T, h *host, path string, flags ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	h.log = &testutil.LockedBuffer{}
	args := append([]string{"netns", "exec", h.ns, vnicBin, "up", "-underlay", h.u4, "-underlay", h.u6,
		"-socket", h.sock, "-log-level", "debug"}, flags...)
	daemon := exec.Command("ip", args...)
	daemon.Env = append(os.Environ(), "NOTIFY_SOCKET="+path)
	daemon.Stdout, daemon.Stderr = h.log, h.log
	if err := daemon.Start(); err != nil {
		t.Fatalf("start vnic in %s: %v", h.ns, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	return daemon, exited
}

// TestNotifyReadyStopping runs the daemon under a pretend service manager
// ($NOTIFY_SOCKET): READY=1 comes from the daemon's own pid (systemd's
// default NotifyAccess=main ignores any other) once its socket answers,
// so that a caps request at that moment succeeds at the first try; on
// SIGTERM, STOPPING=1 comes from the daemon, that is before it exits, and
// the daemon exits cleanly.
func TestNotifyReadyStopping(t *testing.T) {
	tp := newTopology(t)
	h := tp.a
	path, notes := notifySocket(t)
	// As host.start does, without its polling: the notification is
	// what says the daemon is up.
	// The test waits for the daemon itself, so h.daemon stays nil: the
	// topology's cleanup has no daemon to stop; this test's does.
	daemon, exited := startNotifying(t, h, path, "-addr", "10.7.0.1/24")
	var gone bool // the daemon has exited
	t.Cleanup(func() {
		if !gone {
			daemon.Process.Kill()
			<-exited
		}
	})
	pid := int32(daemon.Process.Pid) // ip netns exec execs vnic: the daemon's pid

	var ready notification
	select {
	case ready = <-notes:
	case err := <-exited:
		gone = true
		t.Fatalf("the daemon exited (%v) before notifying:\n%s", err, h.log)
	case <-time.After(20 * time.Second):
		t.Fatalf("no READY=1 within 20 s:\n%s", h.log)
	}
	if ready.err != nil {
		t.Fatalf("notify socket: %v", ready.err)
	}
	// At once: one caps request, no retry.
	out, err := h.try("caps")
	if err != nil {
		t.Errorf("READY=1 came, but a caps request at that moment failed: %v\n%s", err, out)
	}
	if !strings.HasPrefix(ready.msg, "READY=1\nSTATUS=vnic0 up: ") || !strings.Contains(ready.msg, "OID channel "+h.sock) {
		t.Errorf("first notification %q, want READY=1 and a STATUS= line", ready.msg)
	}
	if ready.pid != pid {
		t.Errorf("READY=1 came from pid %d, want the daemon's, %d", ready.pid, pid)
	}

	if err := daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		gone = true
		if err != nil {
			t.Errorf("the daemon exited with %v on SIGTERM:\n%s", err, h.log)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not stop on SIGTERM:\n%s", h.log)
	}
	// The datagram was queued by the living daemon (the kernel gives its
	// pid), so it was sent before the daemon exited.
	select {
	case st := <-notes:
		if st.err != nil || st.msg != "STOPPING=1\nSTATUS=vnic0 stopping" || st.pid != pid {
			t.Errorf("after SIGTERM: notification %q from pid %d (%v), want STOPPING=1 from %d", st.msg, st.pid, st.err, pid)
		}
	case <-time.After(time.Second):
		t.Errorf("no STOPPING=1 before the daemon exited:\n%s", h.log)
	}
	select {
	case st := <-notes:
		t.Errorf("another notification: %q", st.msg)
	default:
	}
	logs := h.log.String()
	for _, bad := range []string{"DATA RACE", "panic:", "cannot tell the service manager", "does not answer"} {
		if strings.Contains(logs, bad) {
			t.Errorf("daemon log says %q:\n%s", bad, logs)
		}
	}
}

// TestNotifyNotReadyWhileSettingUp holds the daemon in its setup, after
// the socket and vnic0 but before it serves (its key history is a FIFO it
// waits on for good): no READY=1 may come then, however long it takes.
func TestNotifyNotReadyWhileSettingUp(t *testing.T) {
	tp := newTopology(t)
	h := tp.a
	path, notes := notifySocket(t)
	fifo := filepath.Join(t.TempDir(), "keys")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	daemon, exited := startNotifying(t, h, path, "-key-history", fifo)
	t.Cleanup(func() {
		daemon.Process.Kill() // stuck for good: SIGTERM would not end it
		<-exited
	})
	// Set up as far as the key history: vnic0 is there.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := tryCmd("ip", "-n", h.ns, "link", "show", "vnic0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no vnic0 within 20 s:\n%s", h.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case n := <-notes:
		t.Errorf("notification %q from a daemon still setting up:\n%s", n.msg, h.log)
	case err := <-exited:
		t.Fatalf("the daemon exited (%v) instead of waiting on its FIFO key history:\n%s", err, h.log)
	case <-time.After(2 * time.Second):
	}
}
