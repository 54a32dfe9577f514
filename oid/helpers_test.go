package oid

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vnic/event"
	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/sadb"
)

// fakeDev is a Device over a real SA table, with canned statistics and
// capabilities.
type fakeDev struct {
	table *sadb.Table
	bus   event.Bus
}

func newFakeDev(cfg sadb.TableConfig) *fakeDev {
	return &fakeDev{table: sadb.New(cfg)}
}

func (f *fakeDev) Table() *sadb.Table { return f.table }
func (f *fakeDev) Capabilities() Capabilities {
	return Capabilities{
		Esp: true, Tunnel: true, Transport: true, ExtendedSequenceNumbers: true,
		EncryptionAlgorithms: uint32(ndis.EncryptionAESGCM128), SaOffloadCapacity: uint32(f.table.Capacity()),
		Vnic: Extensions{SaCount: f.table.Len(), Generation: f.Generation()},
	}
}
func (f *fakeDev) Stats() map[string]uint64 {
	return map[string]uint64{"XfrmInNoStates": 3, "XfrmInStateSeqError": 0, "CRYPTO_TUNNEL_ESP_AUTH_FAILED": 1}
}
func (f *fakeDev) RequestDelete(h sadb.Handle) error {
	sa := f.table.Get(h)
	if sa == nil {
		return ndis.Errorf(ndis.StatusInvalidParameter, "unknown handle %d", h)
	}
	sa.DeleteRequested.Store(true)
	f.bus.Publish(event.Event{Type: event.SaDeleteReq, Handle: h, SPI: sa.Config.SPI, Reason: "operator request"})
	return nil
}
func (f *fakeDev) Events() *event.Bus { return &f.bus }
func (f *fakeDev) Generation() uint64 { return 42 }

// testServer is a server on a Unix socket in a temporary directory.
type testServer struct {
	dev  *fakeDev
	srv  *Server
	path string
	log  *testutil.LockedBuffer
	stop func() error
}

// socketDir returns a short temporary directory: socket paths are limited
// to 108 bytes.
func socketDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "oid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startServer(t testing.TB, capacity int, tweak ...func(*Server)) *testServer {
	t.Helper()
	return startServerTable(t, sadb.TableConfig{Capacity: capacity, DefaultReplayWindow: 64}, tweak...)
}

// startServerTable is startServer with a device whose table is built
// with cfg.
func startServerTable(t testing.TB, cfg sadb.TableConfig, tweak ...func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{dev: newFakeDev(cfg), log: &testutil.LockedBuffer{}}
	ts.path = filepath.Join(socketDir(t), "vnic0.sock")
	ln, err := Listen(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = NewServer(ts.dev, slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, f := range tweak {
		f(ts.srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, ln) }()
	var once sync.Once
	var serr error
	ts.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return after cancel")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

func (ts *testServer) client(t testing.TB) *Client {
	t.Helper()
	c, err := Dial(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn speaks the protocol by hand, line by line.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader
	seen bytes.Buffer // every byte received
}

func (ts *testServer) raw(t testing.TB) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReaderSize(c, 1<<20)}
}

func (rc *rawConn) send(line string) {
	rc.t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write([]byte(line + "\n")); err != nil {
		rc.t.Fatalf("send: %v", err)
	}
}

// recv reads one response line and decodes it into a generic map.
func (rc *rawConn) recv() map[string]any {
	rc.t.Helper()
	m := rc.recvAny()
	if _, ok := ndis.ParseStatus(str(m["status"])); !ok {
		rc.t.Fatalf("response has no valid status: %v", m)
	}
	return m
}

// recvAny reads one line (a response or an event) into a generic map.
func (rc *rawConn) recvAny() map[string]any {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := rc.r.ReadBytes('\n')
	if err != nil {
		rc.t.Fatalf("recv: %v (got %q)", err, line)
	}
	rc.seen.Write(line)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		rc.t.Fatalf("response is not JSON: %v: %q", err, line)
	}
	return m
}

func (rc *rawConn) do(line string) map[string]any {
	rc.t.Helper()
	rc.send(line)
	return rc.recv()
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// keyHex returns n bytes of a recognisable key pattern, in hex.
func keyBytes(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

// gcmSA is an AES-GCM-128 tunnel-mode bundle.
func gcmSA(dir string, spi uint32, dst string, key []byte) SA {
	return SA{
		Direction: dir, DestAddr: dst,
		SecAssoc: []SecAssoc{{
			Operation: 2, Spi: spi,
			EncryptionAlgorithm: AlgorithmInfo{Identifier: uint32(ndis.EncryptionAESGCM128), AdditionalInfo: 16},
		}},
		KeyData: key,
	}
}

// mustJSON encodes v for a raw request.
func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
