package oid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vnic/event"
	"vnic/ndis"
)

// Defaults for a Server's timeouts and connection limit.
const (
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxConns bounds the connections served at once, and with
	// them the server's memory: each holds a 64 KiB buffer and may hold a
	// request line of up to MaxRequest bytes, and a line being handled
	// costs as much again in the JSON decoder (about 3 MiB at worst, 200
	// MiB for all). A host stack needs a handful; the CLI holds one for
	// the length of a command.
	DefaultMaxConns = 64
)

// ReasonPermission is the reason given to a peer that may not use the
// channel (not root).
const ReasonPermission = "permission denied: the vnic control socket is for root only"

// reasonTooLong is the reason given for a request line over MaxRequest.
var reasonTooLong = fmt.Sprintf("the request line is longer than %d bytes: it is skipped up to its newline", MaxRequest)

// Server serves the OID channel over a Device. Create it with NewServer;
// set the exported fields, if at all, before Serve.
type Server struct {
	// IdleTimeout closes a connection that sends no complete request for
	// this long; 0 means never. Event subscriptions have no idle timeout.
	IdleTimeout time.Duration
	// WriteTimeout closes a connection whose peer does not take a
	// response or event within this long; 0 means never.
	WriteTimeout time.Duration
	// MaxConns is how many connections are served at once (event
	// subscriptions included); 0 means no limit. A connection over the
	// limit gets one NDIS_STATUS_RESOURCES line and is closed.
	MaxConns int

	dev Device
	log *slog.Logger
	// peerOK decides whether a peer may use the channel.
	peerOK func(*unix.Ucred) error
}

// NewServer returns a server for dev that logs to log (nil: discard).
// What happens to each request and each SA (added, refused, deleted,
// updated) is logged at debug level only: a host that churns a thousand
// SAs a second would otherwise bury the rest of the log. Info and above
// are for the channel itself (refused connections, accept failures).
func NewServer(dev Device, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		IdleTimeout:  DefaultIdleTimeout,
		WriteTimeout: DefaultWriteTimeout,
		MaxConns:     DefaultMaxConns,
		dev:          dev,
		log:          log,
		peerOK:       func(c *unix.Ucred) error { return checkPeer(c, os.Geteuid()) },
	}
}

// Listen prepares the OID channel's socket at path: it creates the parent
// directory (mode 0700) if needed, replaces a stale socket that nobody
// listens on, refuses when a live daemon answers there, listens, and makes
// the socket mode 0600.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("OID channel: create the socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("OID channel: %s exists and is not a socket: remove it or choose another -socket path", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another vnic daemon is serving %s", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("OID channel: cannot tell whether a daemon serves %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("OID channel: remove the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("OID channel: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("OID channel: %w", err)
	}
	return ln, nil
}

// Serve accepts connections on ln and serves each in its own goroutine
// until ctx is cancelled; it then closes ln and every connection, waits
// for their goroutines and returns nil. Any other failure of ln is
// returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var (
		delay    time.Duration
		active   atomic.Int64 // connections being served
		refused  uint64       // connections refused over MaxConns
		lastWarn time.Time
	)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("OID channel: accept failed, retrying", "err", err, "in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("OID channel: accept: %w", err)
		}
		delay = 0
		if s.MaxConns > 0 && active.Load() >= int64(s.MaxConns) {
			refused++
			if now := time.Now(); now.Sub(lastWarn) >= time.Second { // a flood must not flood the log
				lastWarn = now
				s.log.Warn("OID channel: connection refused: too many connections", "limit", s.MaxConns, "refused_so_far", refused)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s.write(c, s.fail(nil, ndis.Errorf(ndis.StatusResources,
					"too many connections: the vnic control socket serves %d at once; try again when one closes", s.MaxConns)).body)
			}()
			continue
		}
		active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			s.serveConn(ctx, c)
		}()
	}
}

// temporary reports whether an Accept error may go away by itself.
func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR)
}

// serveConn serves one connection: request lines in, response lines out,
// in order, until the peer closes, goes idle, or ctx ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	cred, err := peerCred(c)
	if err == nil {
		err = s.peerOK(cred)
	}
	if err != nil {
		s.log.Warn("OID channel: connection refused", "reason", err, "uid", credUID(cred), "pid", credPID(cred))
		s.write(c, s.fail(nil, err).body)
		return
	}
	log := s.log.With("pid", cred.Pid, "uid", cred.Uid)
	log.Debug("OID channel: connected")

	lr := &lineReader{r: c, max: MaxRequest}
	defer lr.wipe()
	var line []byte
	for {
		if s.IdleTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		}
		var tooLong bool
		var rerr error
		line, tooLong, rerr = lr.next(line[:0])
		switch {
		case tooLong:
			log.Debug("OID channel: request refused", "reason", "line too long")
			r := s.fail(nil, invalidData("%s", reasonTooLong))
			if !s.write(c, r.body) {
				return
			}
		case len(bytes.TrimSpace(line)) > 0:
			t0 := time.Now()
			r := s.handle(line)
			clear(line)
			log.Debug("OID request", "oid", r.oid, "status", r.body.header().Status, "took", time.Since(t0))
			if r.subscribe {
				s.stream(ctx, c, r.body, log)
				return
			}
			if !s.write(c, r.body) {
				return
			}
		}
		if rerr != nil {
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() {
				log.Debug("OID channel: idle connection closed")
			}
			return
		}
	}
}

// write sends one response or event line; it reports whether it worked.
func (s *Server) write(c net.Conn, v any) bool {
	b, err := json.Marshal(v)
	if err != nil { // not reached: every response marshals
		s.log.Error("OID channel: cannot encode a response", "err", err)
		return false
	}
	b = append(b, '\n')
	if s.WriteTimeout > 0 {
		c.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	}
	_, err = c.Write(b)
	return err == nil
}

// stream turns the connection into an event stream after the response
// resp: it subscribes first, so that no event published after the
// response is missed, and ends when the peer closes its end (anything it
// sends is ignored), a write fails, or ctx ends.
func (s *Server) stream(ctx context.Context, c net.Conn, resp response, log *slog.Logger) {
	sub := s.dev.Events().Subscribe()
	defer sub.Close()
	if !s.write(c, resp) {
		return
	}
	log.Debug("OID channel: event subscription started")
	c.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(done)
	}()
	defer func() {
		c.Close()
		<-done
		log.Debug("OID channel: event subscription ended")
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case ev, ok := <-sub.C:
			if !ok || !s.write(c, eventMessage(ev, sub)) {
				return
			}
		}
	}
}

func eventMessage(ev event.Event, sub *event.Subscription) EventMessage {
	return EventMessage{Event: ev, Lost: sub.Dropped()}
}

// peerCred returns the credentials of the process at the other end of c.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, ndis.Errorf(ndis.StatusFailure, "permission denied: the peer is not on a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, ndis.Errorf(ndis.StatusFailure, "permission denied: cannot read the peer's credentials: %v", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		return nil, ndis.Errorf(ndis.StatusFailure, "permission denied: cannot read the peer's credentials: %v", cerr)
	}
	return cred, nil
}

// checkPeer allows root, and the user the server itself runs as (the
// same user could take over the daemon anyway; it is root for a real
// daemon).
func checkPeer(cred *unix.Ucred, self int) error {
	if cred == nil {
		return ndis.Errorf(ndis.StatusFailure, ReasonPermission)
	}
	if cred.Uid == 0 || int64(cred.Uid) == int64(self) {
		return nil
	}
	return ndis.Errorf(ndis.StatusFailure, ReasonPermission)
}

func credUID(c *unix.Ucred) int64 {
	if c == nil {
		return -1
	}
	return int64(c.Uid)
}

func credPID(c *unix.Ucred) int64 {
	if c == nil {
		return -1
	}
	return int64(c.Pid)
}

// lineReader reads newline-terminated lines of at most max bytes into
// buffers it can wipe: request lines carry keys. Its memory is bounded
// whatever the peer sends: a 64 KiB buffer and a line of at most max
// bytes.
type lineReader struct {
	r          io.Reader
	max        int
	buf        []byte
	start, end int  // buf[start:end] is read but not yet returned
	skipping   bool // the rest of an over-long line is being discarded
}

// next appends the next line, without its newline, to line and returns
// it. A line longer than max is reported as soon as it passes max, with
// tooLong true and line empty, so that it can be refused without waiting
// for its end; the following calls discard the rest of it up to its
// newline (returning an empty line there). At the end of the input (or a
// read error), a last line without a newline is returned with the error.
func (lr *lineReader) next(line []byte) (_ []byte, tooLong bool, err error) {
	if lr.buf == nil {
		lr.buf = make([]byte, 64<<10)
	}
	for {
		chunk := lr.buf[lr.start:lr.end]
		i := bytes.IndexByte(chunk, '\n')
		take := chunk
		if i >= 0 {
			take = chunk[:i]
		}
		switch {
		case lr.skipping:
		case len(line)+len(take) > lr.max:
			tooLong = true
			clear(line)
			line = line[:0]
			if i < 0 {
				clear(take)
				lr.start, lr.end = 0, 0
				lr.skipping = true
				return line, true, nil
			}
		default:
			line = appendWiping(line, take)
		}
		clear(take)
		if i >= 0 {
			lr.start += i + 1
			lr.skipping = false
			return line, tooLong, nil
		}
		lr.start, lr.end = 0, 0
		n, err := lr.r.Read(lr.buf)
		lr.end = n
		if err != nil && n == 0 {
			return line, tooLong, err
		}
	}
}

// appendWiping appends b to line, and when line must grow, wipes the old
// array that append would leave behind with part of a request (and maybe
// a key) in it.
func appendWiping(line, b []byte) []byte {
	if len(line)+len(b) <= cap(line) {
		return append(line, b...)
	}
	grown := append(make([]byte, 0, max(2*cap(line), len(line)+len(b))), line...)
	clear(line[:cap(line)])
	return append(grown, b...)
}

// wipe clears the buffer.
func (lr *lineReader) wipe() { clear(lr.buf) }
