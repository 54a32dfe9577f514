package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vnic/oid"
)

// TestParseTimeout: --timeout takes a duration or a number of seconds,
// above zero; none is the default.
func TestParseTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"", defaultWaitTimeout, ""},
		{"5s", 5 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"30", 30 * time.Second, ""},
		{"1.5", 1500 * time.Millisecond, ""},
		{"0", 0, `--timeout: expected a duration above zero, got "0"`},
		{"-1s", 0, "above zero"},
		{"soon", 0, `--timeout: expected a duration like 10s, 500ms or 2m, got "soon"`},
		{"NaN", 0, "expected a duration like"},
		{"1e300", 0, "expected a duration like"},
	} {
		got, err := parseTimeout(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: error %v, want one that says %q", tc.in, err, tc.err)
		}
	}
}

// serveAt runs an OID server on path until the test ends (serveOID),
// from any goroutine.
func serveAt(t *testing.T, path string) {
	if _, err := serveOID(t, path); err != nil {
		t.Error(err)
	}
}

// refuseAt answers every connection on path as a daemon answers a caller
// who is not root.
func refuseAt(t *testing.T, path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(`{"id":null,"status":"NDIS_STATUS_FAILURE","reason":"` + oid.ReasonPermission + `"}` + "\n"))
			c.Close()
		}
	}()
}

// TestWait: `vnic wait` returns once a daemon that starts late answers;
// without one it fails after the timeout, saying why; a daemon that
// refuses the caller ends the wait at once.
func TestWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, path string) // before the wait
		late    time.Duration                   // a daemon starts after this (0: none)
		args    []string
		timeout string
		err     []string // in the error ("": none)
		usage   bool     // the error is a usage error
		min     time.Duration
		max     time.Duration
	}{
		{name: "daemon starts late", late: 300 * time.Millisecond, timeout: "10s",
			min: 300 * time.Millisecond, max: 300*time.Millisecond + maxRetry + time.Second},
		{name: "daemon up already", setup: serveAt, max: time.Second},
		{name: "no daemon", timeout: "300ms", min: 300 * time.Millisecond, max: 300*time.Millisecond + time.Second,
			err: []string{"no vnic daemon answered on ", " within 300ms (last attempt: no vnic daemon at ", "the socket does not exist"}},
		{name: "stale socket", timeout: "300ms", min: 300 * time.Millisecond, max: 300*time.Millisecond + time.Second,
			setup: func(t *testing.T, path string) {
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				ln.SetUnlinkOnClose(false)
				ln.Close()
			},
			err: []string{"within 300ms (last attempt: no vnic daemon is listening on "}},
		{name: "socket open, daemon still setting up", timeout: "300ms", min: 300 * time.Millisecond, max: 300*time.Millisecond + time.Second,
			setup: func(t *testing.T, path string) {
				ln, err := oid.Listen(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
			},
			err: []string{"took the connection but did not answer within 300ms"}},
		{name: "refused", setup: refuseAt, timeout: "10s", max: time.Second,
			err: []string{"answered, refusing: permission denied"}},
		{name: "argument", args: []string{"now"}, err: []string{`wait: unexpected argument "now"`}, usage: true},
		{name: "bad timeout", timeout: "soon", err: []string{"wait: --timeout: expected a duration"}, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "vnic") // short: a socket path has room for 107 bytes
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			path := filepath.Join(dir, "vnic0.sock")
			if tc.setup != nil {
				tc.setup(t, path)
			}
			if tc.late > 0 {
				timer := time.AfterFunc(tc.late, func() { serveAt(t, path) })
				t.Cleanup(func() { timer.Stop() })
			}
			c := &cli{ctx: context.Background(), socket: path}
			start := time.Now()
			err = c.wait(tc.args, tc.timeout)
			took := time.Since(start)
			if len(tc.err) == 0 && err != nil {
				t.Fatalf("wait: %v", err)
			}
			if len(tc.err) > 0 && err == nil {
				t.Fatalf("wait returned nil, want an error that says %q", tc.err)
			}
			for _, w := range tc.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			var ue *errUsage
			if err != nil && errors.As(err, &ue) != tc.usage {
				t.Errorf("error %v: usage error %v, want %v", err, !tc.usage, tc.usage)
			}
			if took < tc.min || tc.max > 0 && took > tc.max {
				t.Errorf("took %v, want %v to %v", took, tc.min, tc.max)
			}
		})
	}
}

// TestWaitInterrupted: an interrupt (the CLI's context) ends the wait.
func TestWaitInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	c := &cli{ctx: ctx, socket: filepath.Join(t.TempDir(), "none.sock")}
	start := time.Now()
	err := c.wait(nil, "10s")
	if err == nil || !strings.Contains(err.Error(), "wait: interrupted before the vnic daemon at") || !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want an interruption", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}
