package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vnic/event"
	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/oid"
	"vnic/sadb"
	"vnic/xfrm"
)

// testDevice is an oid.Device over a real SA table.
type testDevice struct {
	table *sadb.Table
	bus   event.Bus
}

func (d *testDevice) Table() *sadb.Table { return d.table }
func (d *testDevice) Capabilities() oid.Capabilities {
	return oid.Capabilities{Esp: true, Tunnel: true, UdpEsp: 3, EncryptionAlgorithms: 0x1e9, AuthenticationAlgorithms: 0x3e,
		SaOffloadCapacity: uint32(d.table.Capacity()), Vnic: oid.Extensions{AesGcmIcvLengths: []int{8, 12, 16}, MinReplayWindow: 32, MaxReplayWindow: 4096}}
}
func (d *testDevice) Stats() map[string]uint64 {
	return map[string]uint64{"XfrmInNoStates": 2, "XfrmInError": 0, "CRYPTO_TUNNEL_ESP_AUTH_FAILED": 5}
}
func (d *testDevice) RequestDelete(h sadb.Handle) error {
	sa := d.table.Get(h)
	if sa == nil {
		return ndis.Errorf(ndis.StatusInvalidParameter, "unknown handle %d", h)
	}
	sa.DeleteRequested.Store(true)
	d.bus.Publish(event.Event{Type: event.SaDeleteReq, Handle: h, SPI: sa.Config.SPI, Direction: "inbound", Reason: "operator request"})
	return nil
}
func (d *testDevice) Events() *event.Bus { return &d.bus }
func (d *testDevice) Generation() uint64 { return 1 }

// startTestDaemon runs an OID server in the test and returns its socket.
func startTestDaemon(t *testing.T) (*testDevice, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "vnic")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "vnic0.sock")
	d, err := serveOID(t, path)
	if err != nil {
		t.Fatal(err)
	}
	return d, path
}

// serveOID runs an OID server over a fresh testDevice on path until the
// test ends. It does not stop the test, so that a goroutine may call it.
func serveOID(t *testing.T, path string) (*testDevice, error) {
	ln, err := oid.Listen(path)
	if err != nil {
		return nil, err
	}
	d := &testDevice{table: sadb.New(sadb.TableConfig{Capacity: 8, DefaultReplayWindow: 64})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		oid.NewServer(d, nil).Serve(ctx, ln)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d, nil
}

// vnic runs the CLI and returns its exit code, stdout and stderr.
func vnic(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	_, sock := startTestDaemon(t)
	ctx := context.Background()
	k := testutil.KnownKey("cli", 20)
	key := hex.EncodeToString(k)
	steps := []struct {
		args []string
		code int
		out  []string // substrings of stdout
		err  string   // substring of stderr
	}{
		{args: []string{"--socket", sock, "caps"}, out: []string{"SaOffloadCapacity", "8\n", "UdpEsp", "0x3 (transport, tunnel)", "rfc4106(gcm(aes))-128", "hmac(sha256)"}},
		{args: []string{"caps", "--json", "--socket=" + sock}, out: []string{`"status":"NDIS_STATUS_SUCCESS"`, `"SaOffloadCapacity":8`}},
		{args: []string{"--socket", sock, "sa", "add", "dir", "out", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1001",
			"mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + key, "128", "encap", "espinudp", "4500", "4500", "0.0.0.0"}, out: []string{"handle 1\n"}},
		{args: []string{"--socket", sock, "sa", "add", "dir", "in", "src", "192.0.2.2", "dst", "192.0.2.1", "spi", "0x1002",
			"mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + key, "128", "flag", "esn", "replay-window", "128", "pair", "1"}, out: []string{"handle 2\n"}},
		{args: []string{"--socket", sock, "sa", "add", "dir", "out", "dst", "192.0.2.2", "spi", "0x1001", "mode", "tunnel",
			"aead", "rfc4106(gcm(aes))", "0x" + key, "128"}, code: 1, err: "vnic: sa add: an outbound SA with SPI 4097 (0x00001001) and destination 192.0.2.2 already exists (handle 1) (NDIS_STATUS_INVALID_PARAMETER)"},
		{args: []string{"--socket", sock, "sa", "add", "dir", "out", "spi", "0x1001"}, code: 1, err: "vnic: sa add: missing an algorithm"},
		{args: []string{"--socket", sock, "sa", "add", "dir", "out", "dst", "192.0.2.2", "spi", "0x1003", "proto", "ah", "mode", "tunnel", "auth", "sha1", "0x" + key},
			code: 1, err: "SecAssoc[0].Operation 1 (AH) is not implemented: offload ESP (Operation 2) (NDIS_STATUS_NOT_SUPPORTED)"},
		{args: []string{"--socket", sock, "sa", "list"}, out: []string{"HANDLE", "1  ", "out", "0x00001001", "tunnel", "192.0.2.1 -> 192.0.2.2", "udp 4500:4500", "rfc4106(gcm(aes))", "[redacted 160 bits]", "2  ", "in"}},
		{args: []string{"--socket", sock, "sa", "show", "2"}, out: []string{"SA 2", "direction", "inbound", "0x00001002 (4098)", "esn", "yes", "replay window", "128 packets", "pair", "key [redacted 160 bits]", "ICV 128 bits"}},
		{args: []string{"--socket", sock, "--json", "sa", "show", "2"}, out: []string{`"handle":2`, `"key":"[redacted 160 bits]"`}},
		{args: []string{"--socket", sock, "sa", "show", "9"}, code: 1, err: "vnic: sa show: unknown handle 9 (NDIS_STATUS_INVALID_PARAMETER)"},
		{args: []string{"--socket", sock, "sa", "update", "2", "seq-hi", "4"}, out: []string{"updated 2: seq-hi 4"}},
		{args: []string{"--socket", sock, "sa", "update", "1", "seq-hi", "4"}, code: 1, err: "does not use extended sequence numbers"},
		{args: []string{"--socket", sock, "sa", "update", "2", "seq-hi", "5", "spi", "0x1"}, code: 1, err: "SA 2 has SPI 4098"},
		{args: []string{"--socket", sock, "sa", "request-delete", "2"}, out: []string{"delete requested for SA 2"}},
		{args: []string{"--socket", sock, "sa", "list"}, out: []string{"delete-requested"}},
		{args: []string{"--socket", sock, "stats"}, out: []string{"CRYPTO_TUNNEL_ESP_AUTH_FAILED  5\nXfrmInNoStates                 2\n"}},
		{args: []string{"--socket", sock, "stats", "--all"}, out: []string{"CRYPTO_TUNNEL_ESP_AUTH_FAILED  5\nXfrmInNoStates                 2\nXfrmInError                    0\n"}},
		{args: []string{"--socket", sock, "stats", "--json"}, out: []string{`"stats":{`}},
		// A partial failure fails the command, in both output modes.
		{args: []string{"--socket", sock, "--json", "sa", "del", "1", "88"}, code: 1, out: []string{`"handle":1,"status":"NDIS_STATUS_SUCCESS"`, `"handle":88`}, err: "vnic: sa del: unknown handle 88 (NDIS_STATUS_INVALID_PARAMETER)"},
		{args: []string{"--socket", sock, "sa", "del", "7", "2"}, code: 1, out: []string{"deleted 2\n"}, err: "vnic: sa del: unknown handle 7 (NDIS_STATUS_INVALID_PARAMETER)"},
		{args: []string{"--socket", sock, "sa", "list"}, out: []string{"no SAs"}},
		// ip xfrm words that change nothing: taken, with a note each.
		{args: []string{"--socket", sock, "sa", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1005", "reqid", "7",
			"mode", "tunnel", "flag", "af-unspec", "esn", "replay-window", "32", "aead", "rfc4106(gcm(aes))", "0x" + key, "128", "offload", "dev", "eth0", "dir", "out"},
			out: []string{"handle "}, err: "vnic: sa add: note: reqid 7: vnic matches no key manager requests: ignored\n" +
				"vnic: sa add: note: flag af-unspec: vnic carries either inner family in a tunnel: ignored\n" +
				"vnic: sa add: note: offload dev eth0: vnic is the offload device: ignored\n" +
				"vnic: sa add: note: replay-window 32: an outbound SA has no replay window: ignored\n"},
		{args: []string{"--socket", sock, "sa", "add", "dir", "out", "dst", "192.0.2.2", "spi", "0x1006", "mode", "tunnel", "mark", "1", "if_id", "2",
			"aead", "rfc4106(gcm(aes))", "0x" + key, "128"}, code: 1, err: "vnic: sa add: not supported by vnic: mark 1, if_id 2: remove them"},
		// SAs by the words of ip xfrm state get/delete, and flush.
		{args: []string{"--socket", sock, "sa", "add", "dir", "in", "src", "192.0.2.1", "dst", "192.0.2.2", "spi", "0x1005", "mode", "tunnel",
			"aead", "rfc4106(gcm(aes))", "0x" + key, "128", "sel", "src", "10.1.0.0/16", "dst", "10.2.0.0/16", "proto", "tcp"}, out: []string{"handle "}},
		{args: []string{"--socket", sock, "sa", "list"}, out: []string{"0: 10.1.0.0/16 -> 10.2.0.0/16 proto tcp", "  any  ", "  esn"}},
		{args: []string{"--socket", sock, "sa", "show", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1005"}, code: 1,
			err: "all match dst 192.0.2.2 proto esp spi 0x1005: add dir in or dir out, or give a handle"},
		{args: []string{"--socket", sock, "sa", "show", "src", "192.0.2.1", "dst", "192.0.2.2", "spi", "0x1005", "dir", "in"}, out: []string{"direction      inbound", "0x00001005"}},
		{args: []string{"--socket", sock, "sa", "del", "dst", "192.0.2.9", "spi", "0x1005"}, code: 1, err: "vnic: sa del: no SA with dst 192.0.2.9 spi 0x1005"},
		{args: []string{"--socket", sock, "sa", "del", "dst", "192.0.2.2"}, code: 2, err: "sa del: give at least dst ADDR and spi SPI"},
		{args: []string{"--socket", sock, "sa", "flush", "dir", "in"}, out: []string{"deleted "}},
		{args: []string{"--socket", sock, "sa", "show", "dst", "192.0.2.2", "spi", "0x1005"}, out: []string{"direction      outbound"}},
		{args: []string{"--socket", sock, "sa", "flush", "dir", "sideways"}, code: 2, err: "sa flush: expected nothing, dir in, dir out or proto esp"},
		{args: []string{"--socket", sock, "--json", "sa", "flush"}, out: []string{`"status":"NDIS_STATUS_SUCCESS"`, `"results":[{"handle":`}},
		{args: []string{"--socket", sock, "sa", "flush"}, out: []string{"no SAs to flush"}},
		{args: []string{"--socket", sock, "sa", "del", "x"}, code: 1, err: `sa del: expected a handle like 3, got "x"`},
		{args: []string{"--socket", sock, "sa"}, code: 2, err: "sa: expected add, del, flush, update, list, show or request-delete"},
		{args: []string{"--socket", sock, "frob"}, code: 2, err: `unknown command "frob"`},
		{args: []string{"--socket", sock, "--bogus", "caps"}, code: 2, err: `unknown option "--bogus"`},
		{args: []string{"--dev", "nosuch0", "caps"}, code: 1, err: "no vnic daemon at /run/vnic/nosuch0.sock"},
		{args: []string{"--socket", sock + ".none", "stats"}, code: 1, err: "no vnic daemon at"},
		{args: []string{"genkey", "rfc4106(gcm(aes))", "256"}, out: []string{"0x"}},
		{args: []string{"genkey", "twofish"}, code: 1, err: `vnic: genkey: unknown algorithm "twofish"`},
		{args: []string{"genkey", "cbc(aes)", "lots"}, code: 2, err: `genkey: expected the key size in bits, like 256, got "lots"`},
		{args: []string{"genkey"}, code: 2, err: "genkey: expected an algorithm"},
		{args: []string{"--socket", sock, "wait"}},
		{args: []string{"wait", "--timeout", "2s", "--socket", sock}},
		{args: []string{"--socket", sock + ".none", "wait", "--timeout=200ms"}, code: 1,
			err: "vnic: wait: no vnic daemon answered on " + sock + ".none within 200ms (last attempt: no vnic daemon at"},
		{args: []string{"--socket", sock, "wait", "--timeout", "soon"}, code: 2, err: "vnic: wait: --timeout: expected a duration like 10s"},
		{args: []string{"--socket", sock, "wait", "--timeout"}, code: 2, err: "vnic: --timeout: expected a value"},
		{args: []string{"help"}, out: []string{"usage: vnic"}},
		{args: []string{"sa", "add", "-h"}, out: []string{"vnic sa add dir in|out"}},
		{args: []string{}, code: 2, err: "usage: vnic"},
	}
	for _, s := range steps {
		code, out, errs := vnic(ctx, s.args...)
		if code != s.code || !strings.Contains(errs, s.err) {
			t.Errorf("vnic %s: exit %d, stderr %q; want exit %d, stderr containing %q", strings.Join(s.args, " "), code, errs, s.code, s.err)
		}
		for _, o := range s.out {
			if !strings.Contains(out, o) {
				t.Errorf("vnic %s: stdout lacks %q:\n%s", strings.Join(s.args, " "), o, out)
			}
		}
		if testutil.ContainsKey([]byte(out+errs), k) {
			t.Errorf("vnic %s printed the key", strings.Join(s.args, " "))
		}
	}
}

func TestCLIEvents(t *testing.T) {
	d, sock := startTestDaemon(t)
	for _, asJSON := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var out testutil.LockedBuffer
		done := make(chan int, 1)
		args := []string{"--socket", sock, "events"}
		if asJSON {
			args = append(args, "--json")
		}
		go func() { done <- run(ctx, args, &out, &out) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), "SaDeleteReq") && time.Now().Before(deadline) {
			d.bus.Publish(event.Event{Type: event.SaDeleteReq, Handle: 3, Pair: 4, Direction: "inbound", SPI: 0x1002, Reason: "hard lifetime"})
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("events exited %d: %s", code, out.String())
		}
		line, _, _ := strings.Cut(out.String(), "\n")
		if asJSON {
			var m oid.EventMessage
			if err := json.Unmarshal([]byte(line), &m); err != nil || m.Event.Type != event.SaDeleteReq || m.Event.Pair != 4 {
				t.Errorf("events --json line %q: %v", line, err)
			}
		} else if !strings.Contains(line, "SaDeleteReq handle 3 inbound spi 0x00001002 pair 4: hard lifetime") {
			t.Errorf("events line = %q", line)
		}
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		args   []string
		socket string
		rest   []string
		json   bool
	}{
		{[]string{"caps"}, oid.DefaultSocket, []string{"caps"}, false},
		{[]string{"--dev", "vnic7", "caps"}, "/run/vnic/vnic7.sock", []string{"caps"}, false},
		{[]string{"-dev=vnic7", "caps", "-json"}, "/run/vnic/vnic7.sock", []string{"caps"}, true},
		{[]string{"sa", "add", "spi", "1", "--socket", "/x.sock"}, "/x.sock", []string{"sa", "add", "spi", "1"}, false},
		{[]string{"up", "-socket", "/y.sock", "-name", "vnic1"}, oid.DefaultSocket, []string{"up", "-socket", "/y.sock", "-name", "vnic1"}, false},
	}
	for _, tt := range tests {
		c := &cli{socket: oid.DefaultSocket}
		rest, _, err := c.options(tt.args)
		if err != nil || c.socket != tt.socket || c.json != tt.json || strings.Join(rest, " ") != strings.Join(tt.rest, " ") {
			t.Errorf("%v: socket %s json %v rest %v err %v", tt.args, c.socket, c.json, rest, err)
		}
	}
	for _, bad := range [][]string{{"--socket"}, {"--dev", "a/b"}, {"--nope"}} {
		c := &cli{}
		if _, _, err := c.options(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestGenkey: each key is fresh, as long as the algorithm's (salt
// included), in the 0x form sa add takes, and sa add takes it.
func TestGenkey(t *testing.T) {
	for _, tc := range []struct {
		args []string
		n    int
	}{{[]string{"rfc4106(gcm(aes))"}, 20}, {[]string{"rfc4106(gcm(aes))", "256"}, 36}, {[]string{"cbc(aes)", "192"}, 24}, {[]string{"hmac(sha256)"}, 32}} {
		var keys []string
		for range 2 {
			var out, errs bytes.Buffer
			if code := run(context.Background(), append([]string{"genkey"}, tc.args...), &out, &errs); code != 0 {
				t.Fatalf("genkey %v: exit %d, %s", tc.args, code, errs.String())
			}
			k := strings.TrimSpace(out.String())
			if b, err := hex.DecodeString(strings.TrimPrefix(k, "0x")); err != nil || len(b) != tc.n || !strings.HasPrefix(k, "0x") {
				t.Fatalf("genkey %v printed %q: want 0x and %d bytes in hex", tc.args, k, tc.n)
			}
			keys = append(keys, k)
		}
		if keys[0] == keys[1] {
			t.Errorf("genkey %v printed the same key twice", tc.args)
		}
	}
	var out, errs bytes.Buffer
	run(context.Background(), []string{"genkey", "rfc4106(gcm(aes))"}, &out, &errs)
	words := []string{"dir", "out", "dst", "192.0.2.2", "spi", "0x1000", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", strings.TrimSpace(out.String()), "128"}
	if _, _, err := xfrm.ParseState(words); err != nil {
		t.Errorf("sa add does not take genkey's key: %v", err)
	}
}
