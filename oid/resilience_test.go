package oid

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"

	"vnic/internal/testutil"
	"vnic/ndis"
)

// The control socket under clients that misbehave: silent, endless,
// deaf, or too many. Each test checks that the others are still served
// and that the server's memory stays bounded.

// heapSampler records the largest live heap seen while it runs.
type heapSampler struct {
	base, total0 uint64
	max          atomic.Uint64
	stop         chan struct{}
	done         chan struct{}
}

func sampleHeap() *heapSampler {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h := &heapSampler{base: m.HeapAlloc, total0: m.TotalAlloc, stop: make(chan struct{}), done: make(chan struct{})}
	h.max.Store(m.HeapAlloc)
	go func() {
		defer close(h.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > h.max.Load() {
					h.max.Store(m.HeapAlloc)
				}
			}
		}
	}()
	return h
}

// end stops sampling and returns the largest growth of the live heap over
// the start, and the bytes allocated in all meanwhile.
func (h *heapSampler) end() (peak, allocated uint64) {
	close(h.stop)
	<-h.done
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if m.HeapAlloc > h.max.Load() {
		h.max.Store(m.HeapAlloc)
	}
	return h.max.Load() - h.base, m.TotalAlloc - h.total0
}

const mib = 1 << 20

// TestSilentClient: a client that connects and never sends does not stop
// others from being served, and is closed after the idle timeout.
func TestSilentClient(t *testing.T) {
	ts := startServer(t, 16, func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })
	silent, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closed := make(chan error, 1)
	go func() {
		silent.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := silent.Read(make([]byte, 1))
		closed <- err
	}()
	// Others are served while it sits there (each request resets the
	// other connection's own idle timer, not the silent one's).
	c := ts.client(t)
	for range 3 {
		if _, err := c.Capabilities(context.Background()); err != nil {
			t.Fatalf("a client next to a silent one: %v", err)
		}
	}
	select {
	case err := <-closed:
		if !errors.Is(err, io.EOF) {
			t.Errorf("silent client: read %v, want EOF (closed by the server)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the silent client was not closed after the idle timeout")
	}
	for range 500 {
		if strings.Contains(ts.log.String(), "idle connection closed") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(ts.log.String(), "idle connection closed") {
		t.Errorf("idle close not logged:\n%s", ts.log.String())
	}
}

// TestHugeLine sends a 100 MB line without a newline: the server answers
// NDIS_STATUS_INVALID_DATA once the line passes MaxRequest, without
// waiting for the rest, skips the rest with bounded memory, and serves
// the next line.
func TestHugeLine(t *testing.T) {
	const total = 100 << 20
	ts := startServer(t, 16)
	other := ts.client(t)
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	hs := sampleHeap()
	sent := make(chan error, 1)
	var written atomic.Int64
	go func() {
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		copy(chunk, `{"id":1,"oid":"VNIC_STATISTICS","pad":"`)
		c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
		for written.Load() < total {
			n, err := c.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer to an over-long line: %v", err)
	}
	if w := written.Load(); w >= total {
		t.Logf("the answer came after all %d bytes were written (the sender was faster than the server)", w)
	}
	m := decodeLine(t, line)
	if m["status"] != "NDIS_STATUS_INVALID_DATA" || m["id"] != nil || m["generation"] != float64(42) ||
		!strings.Contains(str(m["reason"]), "longer than 1048576 bytes") {
		t.Errorf("answer to a 100 MB line: %s", line)
	}
	// Another client is served meanwhile.
	if _, err := other.Stats(context.Background()); err != nil {
		t.Errorf("another client during a 100 MB line: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending 100 MB: %v", err)
	}
	peak, allocated := hs.end()
	t.Logf("100 MB line: live heap grew by at most %.1f MiB, %.1f MiB allocated in all", float64(peak)/mib, float64(allocated)/mib)
	// The server holds a 64 KiB read buffer and a line of at most 1 MiB
	// (grown by append: about 2 MiB allocated in all); 16 MiB leaves room
	// for the test's own sampling and the runtime.
	if peak > 16*mib || allocated > 16*mib {
		t.Errorf("a 100 MB line made the heap grow by %d bytes (%d allocated): want less than 16 MiB", peak, allocated)
	}

	// The rest of the line is skipped up to its newline; the connection
	// then serves the next line, and closes when the client does.
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("\n" + `{"id":2,"oid":"VNIC_STATISTICS"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err = r.ReadBytes('\n')
	if m := decodeLine(t, line); err != nil || m["id"] != float64(2) || m["status"] != "NDIS_STATUS_SUCCESS" {
		t.Errorf("after a 100 MB line: %v %s", err, line)
	}
	c.(*net.UnixConn).CloseWrite()
	if b, err := r.ReadByte(); err != io.EOF {
		t.Errorf("server did not close after the client did: %q %v", b, err)
	}
}

// TestHugeLineThenClose: a client that sends more than MaxRequest bytes
// without a newline and closes its end gets its answer, then EOF.
func TestHugeLineThenClose(t *testing.T) {
	ts := startServer(t, 16)
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.SetWriteDeadline(time.Now().Add(time.Minute))
		c.Write(bytes.Repeat([]byte("z"), MaxRequest+1))
		c.(*net.UnixConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(all)), "\n")
	if len(lines) != 1 || decodeLine(t, []byte(lines[0]))["status"] != "NDIS_STATUS_INVALID_DATA" {
		t.Errorf("got %q, want one NDIS_STATUS_INVALID_DATA line, then EOF", all)
	}
}

// TestDeafClient: a client that sends requests and never reads the
// answers is disconnected after the write timeout; others are served.
func TestDeafClient(t *testing.T) {
	ts := startServer(t, 256, func(s *Server) { s.WriteTimeout = 200 * time.Millisecond })
	c := ts.client(t)
	var sas []SA
	for i := range 200 {
		sas = append(sas, gcmSA("out", uint32(0x1000+i), "192.0.2.2", keyBytes(20, byte(i))))
	}
	if _, err := c.AddSA(context.Background(), sas...); err != nil {
		t.Fatal(err)
	}
	deaf, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.Close()
	// Each answer lists 200 SAs (over 100 KB): a few fill the socket.
	req := bytes.Repeat([]byte(`{"oid":"VNIC_QUERY_SA"}`+"\n"), 100)
	deaf.SetWriteDeadline(time.Now().Add(30 * time.Second))
	deaf.Write(req) // may fail once the server gives up: fine
	time.Sleep(time.Second)
	if _, err := c.Stats(context.Background()); err != nil {
		t.Errorf("a client next to a deaf one: %v", err)
	}
	// Read what was sent before the server gave up: fewer than 100
	// answers, then the end of the connection.
	deaf.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReaderSize(deaf, 1<<20)
	n := 0
	for {
		_, err := r.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the deaf client's connection is still open after %d answers", n)
			}
			break
		}
		n++
	}
	if n >= 100 {
		t.Errorf("the deaf client got all %d answers: the write timeout did not close it", n)
	}
}

// TestConnectionLimit: over MaxConns, a connection gets one
// NDIS_STATUS_RESOURCES line and is closed; subscriptions count; a freed
// slot serves again.
func TestConnectionLimit(t *testing.T) {
	ts := startServer(t, 16, func(s *Server) { s.MaxConns = 3 })
	ctx := context.Background()
	a, b := ts.raw(t), ts.raw(t)
	a.do(`{"oid":"VNIC_STATISTICS"}`)
	b.do(`{"oid":"VNIC_STATISTICS"}`)
	sub := ts.raw(t)
	if m := sub.do(`{"oid":"VNIC_SUBSCRIBE_EVENTS"}`); m["status"] != "NDIS_STATUS_SUCCESS" {
		t.Fatalf("subscribe: %v", m)
	}
	// The fourth: refused, with the reason, through the raw protocol and
	// through the Go client (which reads the refusal also when it comes
	// before its request is sent).
	over := ts.raw(t)
	m := over.recv()
	if m["status"] != "NDIS_STATUS_RESOURCES" || m["id"] != nil || m["generation"] != float64(42) ||
		!strings.Contains(str(m["reason"]), "too many connections") || !strings.Contains(str(m["reason"]), "3 at once") {
		t.Errorf("connection over the limit got %v", m)
	}
	if _, err := over.r.ReadByte(); err == nil {
		t.Error("a connection over the limit was left open")
	}
	c, err := Dial(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the refusal is in before the request goes out
	_, err = c.Capabilities(ctx)
	var ne *ndis.Error
	if !errors.As(err, &ne) || ne.Status != ndis.StatusResources || !strings.Contains(ne.Reason, "too many connections") {
		t.Errorf("Go client over the limit: %v", err)
	}
	c.Close()
	if !strings.Contains(ts.log.String(), "too many connections") {
		t.Errorf("refusal not logged:\n%s", ts.log.String())
	}
	// The served ones still work; when one closes, its slot serves again.
	a.do(`{"oid":"VNIC_STATISTICS"}`)
	b.c.Close()
	waitServed(t, ts.path)
}

// waitServed dials until a connection is served (the server frees a slot
// once it has seen a connection close).
func waitServed(t *testing.T, path string) {
	t.Helper()
	var err error
	for range 200 {
		var c *Client
		if c, err = Dial(path); err == nil {
			_, err = c.Stats(context.Background())
			c.Close()
			if err == nil {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("no connection served after a slot was freed: %v", err)
}

// TestThousandClients holds 1000 connections open at once, each in the
// middle of a 64 KiB request: DefaultMaxConns are served, the rest refused
// with NDIS_STATUS_RESOURCES, the heap stays bounded, and once they are
// gone the server serves again.
func TestThousandClients(t *testing.T) {
	const clients = 1000
	ts := startServer(t, 16)
	hs := sampleHeap()
	crowd := testutil.NewCrowd(ts.path, clients, 64<<10, 30*time.Second)
	time.Sleep(200 * time.Millisecond) // let the server read what is on its sockets
	served, refused, other := crowd.Finish()
	peak, _ := hs.end()
	t.Logf("%d clients: %d served, %d refused; live heap grew by at most %.1f MiB", clients, served, refused, float64(peak)/mib)
	for _, o := range other {
		t.Errorf("a client got neither an answer nor a refusal: %s", o)
	}
	if served != DefaultMaxConns || refused != clients-DefaultMaxConns {
		t.Errorf("served %d, refused %d: want %d and %d", served, refused, DefaultMaxConns, clients-DefaultMaxConns)
	}
	// A served connection holds a 64 KiB buffer and a 64 KiB line (128
	// KiB as append grows it), and its answer decodes a copy: under 256
	// KiB, 16 MiB for 64. The test's own clients add their readers (4 MiB)
	// and connections. Without the limit the server alone would hold over
	// 190 MiB.
	if peak > 64*mib {
		t.Errorf("1000 clients made the heap grow by %.1f MiB, want less than 64 MiB", float64(peak)/mib)
	}
	crowd.Close()
	waitServed(t, ts.path)
}

// TestRefusedBeforeSending: the Go client reports the daemon's refusal
// (here: not root) also when the daemon closed before the request went
// out, instead of a broken pipe.
func TestRefusedBeforeSending(t *testing.T) {
	ts := startServer(t, 16, func(s *Server) {
		s.peerOK = func(*unix.Ucred) error { return checkPeer(&unix.Ucred{Uid: 1000}, 0) }
	})
	for _, wait := range []time.Duration{0, 100 * time.Millisecond} {
		c, err := Dial(ts.path)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(wait)
		_, err = c.Capabilities(context.Background())
		if err == nil || err.Error() != ReasonPermission || ndis.StatusOf(err) != ndis.StatusFailure {
			t.Errorf("after %v: %v, want %q", wait, err, ReasonPermission)
		}
		// And the connection stays refused.
		if _, err := c.Stats(context.Background()); err == nil || err.Error() != ReasonPermission {
			t.Errorf("second request on a refused connection: %v", err)
		}
		c.Close()
	}
}

// TestKeysNotEchoed puts a key where a value of another kind belongs, in
// every place an error names the value, and checks that no answer and no
// log line quotes it.
func TestKeysNotEchoed(t *testing.T) {
	ts := startServer(t, 16)
	rc := ts.raw(t)
	key := keyBytes(32, 0xc3)
	k := hex.EncodeToString(key)
	K := strings.ToUpper(k)
	for _, line := range []string{
		`{"id":1,"oid":"` + k + `"}`,
		`{"id":2,"oid":"OID_` + K + `"}`,
		`{"id":3,"oid":"VNIC_STATISTICS","` + k + `":1}`,
		`{"id":4,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"` + k + `"}]}`,
		`{"id":5,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"` + k + `","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k[:40] + `"}]}`,
		`{"id":6,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.1","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k[:40] + `","vnic":{"mode":"` + k + `"}}]}`,
		`{"id":7,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.1","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k[:40] + `","vnic":{"selectors":[{"src":"` + k + `","proto":"` + K + `"}]}}]}`,
		`{"id":8,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.1","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k + `"}]}`,
		`{"id":9,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.1","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k + `z"}]}`,
		`{"id":10,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.1","SecAssoc":[{"Spi":"` + k + `"}]}]}`,
		`{"id":11,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA_EX","sa":{"KeyData":"` + k + `","` + k + `":0}}`,
		`{"id":12,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":["` + k + `"]}`,
		`{"id":13,"oid":"VNIC_QUERY_SA","handle":"` + k + `"}`,
		`{"id":14,"oid":"VNIC_STATISTICS"` + k + `}`,
		`{"id":15,"oid":"VNIC_STATISTICS"} ` + k,
		k,
	} {
		m := rc.do(line)
		if m["status"] == "NDIS_STATUS_SUCCESS" && m["id"] != float64(8) {
			t.Errorf("%s: succeeded: %v", redactHex(line), m)
		}
	}
	if out := rc.seen.Bytes(); testutil.ContainsKey(out, key) {
		t.Errorf("a key appears in an answer:\n%s", out)
	}
	if log := ts.log.String(); testutil.ContainsKey([]byte(log), key) {
		t.Errorf("a key appears in the log:\n%s", log)
	}
}

func redactHex(s string) string {
	var b strings.Builder
	run := 0
	for i := 0; i < len(s); i++ {
		if isHex(s[i]) {
			run++
		} else {
			run = 0
		}
		if run > 8 {
			b.WriteByte('*')
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func decodeLine(t *testing.T, line []byte) map[string]any {
	t.Helper()
	m := decodeLineErr(line)
	if m == nil {
		t.Fatalf("not a JSON line: %q", line)
	}
	return m
}

func decodeLineErr(line []byte) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return nil
	}
	return m
}

// TestLineReader reads lines around the limit through a reader that
// returns one byte at a time and one that returns everything at once: an
// over-long line is reported before its end and skipped to its newline;
// the lines around it are intact.
func TestLineReader(t *testing.T) {
	const max = 8
	in := "short\n" + "exactly8\n" + "123456789 and more\n" + "\n" + "after\n" + "toolong-at-eof-no-newline"
	type got struct {
		line    string
		tooLong bool
	}
	// Blank lines (which the server ignores) are left out: where the end
	// of a skipped line shows as one depends on the reads.
	want := []got{{"short", false}, {"exactly8", false}, {"", true}, {"after", false}, {"", true}}
	for name, r := range map[string]func() io.Reader{
		"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(in)) },
		"all":      func() io.Reader { return strings.NewReader(in) },
	} {
		lr := &lineReader{r: r(), max: max}
		var lines []got
		for {
			line, tooLong, err := lr.next(nil)
			if len(line) > 0 || tooLong {
				lines = append(lines, got{string(line), tooLong})
			}
			if err != nil {
				if err != io.EOF {
					t.Errorf("%s: %v", name, err)
				}
				break
			}
		}
		if fmt.Sprint(lines) != fmt.Sprint(want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, lines, want)
		}
		if bytes.ContainsFunc(lr.buf, func(r rune) bool { return r != 0 && r != '\n' }) {
			t.Errorf("%s: the read buffer was not wiped as it went: %q", name, bytes.Trim(lr.buf, "\x00"))
		}
	}
}

// TestLineGrowthWiped: when a line outgrows its array, the old array,
// which held the start of the request, is wiped rather than left to the
// garbage collector with a key in it.
func TestLineGrowthWiped(t *testing.T) {
	secret := "sa add ... aead rfc4106(gcm(aes)) 0x" + strings.Repeat("5a", 20) + " 128"
	lr := &lineReader{r: iotest.OneByteReader(strings.NewReader(secret + "\n")), max: 1 << 20}
	start := make([]byte, 0, 4)
	// Hold on to the first array the way the garbage collector would.
	old := start[:cap(start)]
	line, tooLong, err := lr.next(start)
	if err != nil || tooLong || string(line) != secret {
		t.Fatalf("next = %q, %v, %v", line, tooLong, err)
	}
	if &line[0] == &old[0] {
		t.Fatal("the line never outgrew its first array: the test proves nothing")
	}
	if bytes.ContainsFunc(old, func(r rune) bool { return r != 0 }) {
		t.Errorf("the array the line outgrew still holds %q", old)
	}
}
