// Package sdnotify tells the service manager about the daemon's state, with
// systemd's notification protocol (sd_notify(3)): the manager passes the
// address of a Unix datagram socket in $NOTIFY_SOCKET, and the service sends
// it datagrams of newline-separated VARIABLE=VALUE assignments, such as
// READY=1 once it is ready to serve (a unit of Type=notify is started only
// then) and STOPPING=1 when it begins to shut down. An address that starts
// with '@' is in the abstract namespace (of the network namespace the
// manager created it in).
//
// The protocol is one datagram on one socket, so vnic speaks it here
// rather than depend on github.com/coreos/go-systemd: that would add a
// module to go.mod (and its go.sum entries, and its updates to follow)
// for one function, daemon.SdNotify, no longer than this package;
// the rest of that module (journal, D-Bus, activation, unit files) vnic
// does not use.
//
// Unlike sd_notify(3) with unset_environment non-zero, and go-systemd's
// SdNotify(true, ...), Notify leaves $NOTIFY_SOCKET set. Unsetting it
// guards against child processes that would inherit it and speak for the
// service; vnic starts no processes, a unit's default NotifyAccess=main
// makes systemd ignore any other sender anyway, and the daemon needs the
// address again to send STOPPING=1 at the end. Unsetting it would also
// change process-wide state behind the caller's back, for no gain.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// EnvSocket is the environment variable that holds the notification
// socket's address.
const EnvSocket = "NOTIFY_SOCKET"

// States the daemon sends.
const (
	// Ready says the service is up and serving.
	Ready = "READY=1"
	// Stopping says the service has begun to shut down.
	Stopping = "STOPPING=1"
)

// writeTimeout bounds a send: the manager reads its socket promptly, and a
// daemon must not hang on a full one.
const writeTimeout = time.Second

// Status is a STATUS= assignment: a one-line description of the service's
// state that `systemctl status` shows. Line breaks in s become spaces.
func Status(s string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// Notify sends the states (assignments like Ready or Status("...")) in one
// datagram to the socket $NOTIFY_SOCKET names. When it is unset or empty
// the service is not run by a manager that listens (or by one that does not
// ask for notifications): Notify does nothing and returns false, nil.
// Otherwise it returns true and any error sending; the datagram is
// delivered or not at all, and an error leaves nothing to undo.
func Notify(states ...string) (sent bool, err error) {
	addr := os.Getenv(EnvSocket)
	if addr == "" {
		return false, nil
	}
	return true, send(addr, states)
}

// send sends states to the socket at addr.
func send(addr string, states []string) error {
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return fmt.Errorf("%s=%q: expected the path of a Unix socket or an abstract name starting with @", EnvSocket, addr)
	}
	if len(states) == 0 {
		return errors.New("sdnotify: nothing to send")
	}
	for _, s := range states {
		if !strings.Contains(s, "=") || strings.ContainsAny(s, "\n\x00") {
			return fmt.Errorf("sdnotify: %q is not one VARIABLE=VALUE line", s)
		}
	}
	// The net package maps a leading '@' to the abstract namespace's NUL.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify the service manager at %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("notify the service manager at %s: %w", addr, err)
	}
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("notify the service manager at %s: %w", addr, err)
	}
	return nil
}
