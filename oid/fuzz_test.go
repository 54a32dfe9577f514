package oid

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"vnic/ndis"
	"vnic/sadb"
)

// fuzzCapacity is the SaOffloadCapacity of the fuzzed devices: small, so
// that inputs reach NDIS_STATUS_RESOURCES.
const fuzzCapacity = 4

// fuzzServer is a server over a fresh fake device with a capacity of
// fuzzCapacity, and the buffer its log goes to: each fuzz input gets its
// own, so that it means the same whatever ran before it.
func fuzzServer() (*Server, *fakeDev, *bytes.Buffer) {
	dev := newFakeDev(sadb.TableConfig{Capacity: fuzzCapacity, DefaultReplayWindow: 64})
	var log bytes.Buffer
	return NewServer(dev, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))), dev, &log
}

// FuzzDecodeRequest feeds one arbitrary line to the request decoder and
// dispatcher of a fresh device: nothing may panic, and the response must
// pass checkReply.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"oid":"OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"}`,
		`{"id":2,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Operation":2,"Spi":4096,"EncryptionAlgorithm":{"Identifier":8,"AdditionalInfo":16}}],"KeyData":"00112233445566778899aabbccddeeff01020304"}]}`,
		`{"id":3,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA_EX","sa":{"Flags":17,"SecAssoc":[{"Flags":1,"Spi":300,"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32}}],"KeyData":"0x0000000000000000000000000000000000000000000000000000000000000000","vnic":{"mode":"transport","selectors":[{"src":"10.0.0.0/8","proto":"tcp","dport":22}],"replay_window":64,"lifetime":{"hard_seconds":10}}}}`,
		`{"id":4,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[1,2,3]}`,
		`{"id":5,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":4096,"SequenceNumberHighOrder":1}`,
		`{"id":6,"oid":"VNIC_QUERY_SA"}`,
		`{"id":7,"oid":"VNIC_QUERY_SA","handle":1}`,
		`{"id":8,"oid":"VNIC_STATISTICS"}`,
		`{"id":9,"oid":"VNIC_REQUEST_DELETE","handle":1}`,
		`{"id":10,"oid":"VNIC_SUBSCRIBE_EVENTS"}`,
		`{"id":[1,{"a":null}],"oid":"OID_FOO"}`,
		`not json`, `[]`, `{}`, `null`, `{"oid":null}`, `{"id":1e999,"oid":"VNIC_STATISTICS"}`,
		`{"id":1e999,"oid":"VNIC_QUERY_SA","handle":1e0}`,
		`{"id":1,"ID":2,"oid":"VNIC_STATISTICS","Oid":"VNIC_STATISTICS"}`,
		`{"id":11,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4096,"\u017fpi":4097,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"00112233445566778899aabbccddeeff01020304","keydata":"ffeeddccbbaa99887766554433221100a0b0c0d0","vnic":{"selectors":[{"dport":1,"DPORT":2}]}}]}`,
		`{"id":12,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[-1,1.5,1e2,-0,12.0,18446744073709551616]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		s, dev, log := fuzzServer()
		r := s.handle(bytes.Clone(line))
		checkReply(t, dev, line, r, log.Bytes())
		checkTable(t, dev.table)
	})
}

// FuzzDispatch runs the lines of the input, one request each, through the
// dispatcher of a fresh device with a real SA table, as one connection
// would: sequences of adds, updates, queries and deletes. Each response
// must pass checkReply and checkEffects, and the table checkTable, after
// every line. Seeds: testdata/fuzz/FuzzDispatch.
func FuzzDispatch(f *testing.F) {
	f.Add([]byte(`{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"in","DestAddr":"192.0.2.1","SecAssoc":[{"Flags":1,"Spi":4096,"EncryptionAlgorithm":{"Identifier":8,"AdditionalInfo":16}}],"KeyData":"a0a7aeb5bcc3cad1d8dfe6edf4fb020910171e25"}]}
{"id":2,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":4096,"SequenceNumberHighOrder":7}
{"id":3,"oid":"VNIC_QUERY_SA"}
{"id":4,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[1,1,2]}`))
	f.Fuzz(func(t *testing.T, input []byte) {
		s, dev, log := fuzzServer()
		lines := bytes.Split(input, []byte("\n"))
		if len(lines) > 64 {
			lines = lines[:64]
		}
		var last sadb.Handle // the highest handle issued so far
		for _, line := range lines {
			if len(bytes.TrimSpace(line)) == 0 {
				continue // as serveConn does
			}
			before := map[sadb.Handle]*sadb.SA{}
			for _, sa := range dev.table.List() {
				before[sa.Handle] = sa
			}
			log.Reset()
			r := s.handle(bytes.Clone(line))
			checkReply(t, dev, line, r, log.Bytes())
			last = checkEffects(t, dev.table, line, r, before, last)
			checkTable(t, dev.table)
		}
	})
}

// FuzzLineReader reads the input with lineReader under a small limit (0
// to 63 bytes, from limit) five ways: in one read, a byte a read, and in
// reads of the sizes in sizes (each byte b a read of up to b+1 bytes, in
// turn) ending in io.EOF by itself, in io.EOF with the last bytes, or in
// a read error. Each reading must match a model that splits the input on
// '\n' (see checkLineReader), so chunking cannot change what the server
// sees. Seeds: testdata/fuzz/FuzzLineReader.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("short\nexactly8\n123456789 and more\n\nafter\ntoolong-at-eof-no-newline"), uint8(8), []byte{0})
	f.Add([]byte("123456789\n\nnext\n"), uint8(8), []byte{8, 0})
	f.Add([]byte(`{"id":1,"oid":"VNIC_STATISTICS"}`+"\r\n"+`{"id":2,"oid":"VNIC_QUERY_SA"}`+"\r\n"), uint8(33), []byte{3, 40, 0})
	f.Fuzz(func(t *testing.T, input []byte, limit uint8, sizes []byte) {
		max := int(limit % 64)
		want := splitLines(input)
		for _, c := range []struct {
			how string
			r   *chunkReader
		}{
			{"in one read", &chunkReader{data: input, end: io.EOF}},
			{"a byte a read", &chunkReader{data: input, sizes: []byte{0}, end: io.EOF}},
			{"in fuzzed reads", &chunkReader{data: input, sizes: sizes, end: io.EOF}},
			{"in fuzzed reads, io.EOF with the last bytes", &chunkReader{data: input, sizes: sizes, end: io.EOF, endWithData: true}},
			{"in fuzzed reads, then a read error", &chunkReader{data: input, sizes: sizes, end: errReadFailed}},
		} {
			checkLineReader(t, c.how, c.r, max, want)
		}
	})
}

// errReadFailed ends the input of a chunkReader that fails instead of
// reaching io.EOF.
var errReadFailed = errors.New("read failed")

// chunkReader gives data in reads of the sizes given (each byte b a read
// of at most b+1 bytes, in turn; as much as is asked when sizes is
// empty), then end by itself, or with the last bytes when endWithData
// (io.Reader allows both), and end again on every later read. It counts
// the bytes it has given.
type chunkReader struct {
	data        []byte
	sizes       []byte
	end         error
	endWithData bool
	reads       int
	given       int // bytes given so far
	givenBefore int // bytes given before the latest Read
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.givenBefore = r.given
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, int(r.sizes[r.reads%len(r.sizes)])+1)
	}
	r.reads++
	n = copy(p[:n], r.data[r.given:])
	r.given += n
	if r.given == len(r.data) && (n == 0 || r.endWithData) {
		return n, r.end
	}
	return n, nil
}

// modelLine is a line of the input as the model of lineReader sees it:
// its bytes without the newline, the offset of its first byte, and that
// of its newline (-1 for the last line, which has none: it may be empty).
type modelLine struct {
	data           []byte
	start, newline int
}

// splitLines splits in into its lines, the model of lineReader.
func splitLines(in []byte) []modelLine {
	var lines []modelLine
	start := 0
	for {
		i := bytes.IndexByte(in[start:], '\n')
		if i < 0 {
			return append(lines, modelLine{in[start:], start, -1})
		}
		lines = append(lines, modelLine{in[start : start+i], start, start + i})
		start += i + 1
	}
}

// checkLineReader reads r to its end with a lineReader of limit max, as
// serveConn does (reusing one buffer, wiped after each line), and fails t
// (saying it read the input how) unless the calls match want, the lines
// of the input, in order:
//   - a line of at most max bytes is returned whole, not reported too
//     long, and without an error unless it is the last line (the one
//     without a newline, returned with the input's final error);
//   - a longer line is never returned, even in part: it is reported too
//     long, with an empty line and no error, as soon as it passes max (the
//     reader had not read more than max bytes of it before its latest
//     read), and what of it was gathered is wiped; if its newline had not
//     been read by then, the next call skips to it and returns an empty
//     line there (with the final error if the input ends first);
//   - no line is longer than max, and no error but the input's comes out;
//   - a line ending in a newline is returned without reading past it, so
//     that a peer waiting for the response is answered;
//   - in the end, the reader's buffer holds nothing but zeros and newlines.
func checkLineReader(t *testing.T, how string, r *chunkReader, max int, want []modelLine) {
	t.Helper()
	lr := &lineReader{r: r, max: max}
	var buf []byte
	k := 0        // want[k] is the line expected next
	tail := false // the next call skips the rest of want[k-1], which is too long
	for calls := 0; ; calls++ {
		if calls > 2*len(want) {
			t.Fatalf("%s, limit %d: %d calls for %d lines, and still no end of the input", how, max, calls, len(want))
		}
		line, tooLong, err := lr.next(buf[:0])
		if len(line) > max {
			t.Fatalf("%s, limit %d: returned a line of %d bytes: %q", how, max, len(line), line)
		}
		if err != nil && err != r.end {
			t.Fatalf("%s, limit %d: returned the error %q; the input ended with %q", how, max, err, r.end)
		}
		switch {
		case tail:
			w := want[k-1]
			tail = false
			switch {
			case tooLong || len(line) > 0:
				t.Fatalf("%s, limit %d: after reporting line %d (%d bytes) too long, returned %q (too long: %v) instead of an empty line at its end", how, max, k, len(w.data), line, tooLong)
			case w.newline < 0 && err == nil:
				t.Fatalf("%s, limit %d: skipped the rest of the last line (%d bytes, no newline) but did not return the end of the input", how, max, len(w.data))
			case w.newline >= 0 && err != nil:
				t.Fatalf("%s, limit %d: returned %q while skipping line %d, which has a newline", how, max, err, k)
			case w.newline >= 0 && r.givenBefore > w.newline:
				t.Fatalf("%s, limit %d: read past the newline of line %d (at byte %d) before returning from skipping it", how, max, k, w.newline)
			}
		case k == len(want):
			t.Fatalf("%s, limit %d: returned %q (too long: %v, error: %v) after the last line", how, max, line, tooLong, err)
		default:
			w := want[k]
			k++
			if len(w.data) > max {
				switch {
				case !tooLong || len(line) > 0:
					t.Fatalf("%s, limit %d: line %d is %d bytes long, but was returned as %q (too long: %v)", how, max, k, len(w.data), line, tooLong)
				case err != nil:
					t.Fatalf("%s, limit %d: reported line %d too long together with the error %q", how, max, k, err)
				case r.givenBefore > w.start+max:
					t.Fatalf("%s, limit %d: line %d was not reported too long as soon as it passed the limit: %d bytes of it had been read before the latest read", how, max, k, r.givenBefore-w.start)
				case bytes.ContainsFunc(line[:cap(line)], nonZero):
					t.Fatalf("%s, limit %d: the part of line %d gathered before it was found too long was not wiped: %q", how, max, k, bytes.Trim(line[:cap(line)], "\x00"))
				}
				tail = w.newline < 0 || r.given <= w.newline
				break
			}
			switch {
			case tooLong || !bytes.Equal(line, w.data):
				t.Fatalf("%s, limit %d: line %d is %q, but was returned as %q (too long: %v)", how, max, k, w.data, line, tooLong)
			case w.newline < 0 && err == nil:
				t.Fatalf("%s, limit %d: returned the last line, which has no newline, without the end of the input", how, max)
			case w.newline >= 0 && err != nil:
				t.Fatalf("%s, limit %d: returned line %d, which has a newline, with the error %q", how, max, k, err)
			case w.newline >= 0 && r.givenBefore > w.newline:
				t.Fatalf("%s, limit %d: read past the newline of line %d (at byte %d, %d bytes read before the latest read) before returning it", how, max, k, w.newline, r.givenBefore)
			}
		}
		if err != nil {
			break
		}
		clear(line) // as serveConn does once it has handled the line
		buf = line
	}
	for i, b := range lr.buf {
		if b != 0 && b != '\n' {
			t.Fatalf("%s, limit %d: byte %d of the read buffer still holds %q after the end of the input", how, max, i, b)
		}
	}
}

// checkReply fails t unless the response r to line encodes as JSON with a
// valid NDIS status name and the device's generation, carries a reason
// when it fails, gives every ADD_SA and DELETE_SA element a status and
// (on failure) a reason, with a handle exactly for the elements added, and
// shows keys only as "[redacted N bits]". Neither the response (outside
// the echoed id) nor the log may hold a run of hex digits long enough to
// be a key that the request held (see hexWindows).
func checkReply(t *testing.T, dev *fakeDev, line []byte, r reply, log []byte) {
	t.Helper()
	out, err := json.Marshal(r.body)
	if err != nil {
		t.Fatalf("response does not encode: %v", err)
	}
	var h Header
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, out)
	}
	if _, ok := ndis.ParseStatus(h.Status); !ok {
		t.Fatalf("invalid status %q in %s", h.Status, out)
	}
	if h.Status != ndis.StatusSuccess.String() && h.Reason == "" {
		t.Fatalf("failure without a reason: %s", out)
	}
	if h.Generation != dev.Generation() {
		t.Fatalf("response with generation %d, the device's is %d: %s", h.Generation, dev.Generation(), out)
	}
	switch b := r.body.(type) {
	case *AddSAResponse:
		added := false
		for i, res := range b.Results {
			checkElement(t, i, res.Status, res.Reason, res.Handle != 0, out)
			added = added || res.Handle != 0
		}
		if len(b.Results) == 0 || added != (b.Status == ndis.StatusSuccess.String()) {
			t.Fatalf("ADD_SA status %s with %d results, any added: %v: %s", b.Status, len(b.Results), added, out)
		}
	case *AddSAExResponse:
		if (b.Handle != 0) != (b.Status == ndis.StatusSuccess.String()) {
			t.Fatalf("ADD_SA_EX status %s with handle %d: %s", b.Status, b.Handle, out)
		}
	case *DeleteSAResponse:
		deleted := false
		for i, res := range b.Results {
			ok := res.Status == ndis.StatusSuccess.String()
			checkElement(t, i, res.Status, res.Reason, ok, out)
			deleted = deleted || ok
		}
		if len(b.Results) == 0 || deleted != (b.Status == ndis.StatusSuccess.String()) {
			t.Fatalf("DELETE_SA status %s with %d results, any deleted: %v: %s", b.Status, len(b.Results), deleted, out)
		}
	case *QuerySAResponse:
		for _, sa := range b.SAs {
			for _, a := range []*AlgorithmUsed{sa.Encryption, sa.Authentication} {
				if a != nil && a.Key != Redacted(a.KeyBits/8) && a.Key != "[none]" {
					t.Fatalf("SA %d shows key %q: %s", sa.Handle, a.Key, out)
				}
			}
		}
	}
	secrets := hexWindows(line)
	if len(secrets) == 0 {
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("response is not a JSON object: %s", out)
	}
	delete(m, "id") // echoed as sent, whatever it holds
	rest, _ := json.Marshal(m)
	for w := range hexWindows(rest) {
		if secrets[w] {
			t.Fatalf("the response holds %q, which the request held:\nrequest  %s\nresponse %s", w, line, out)
		}
	}
	for w := range hexWindows(log) {
		if secrets[w] {
			t.Fatalf("the log holds %q, which the request held:\nrequest %s\nlog     %s", w, line, log)
		}
	}
}

// checkElement fails t unless result i of ADD_SA or DELETE_SA has a valid
// status, success exactly when ok, and a reason when it failed.
func checkElement(t *testing.T, i int, status, reason string, ok bool, out []byte) {
	t.Helper()
	if _, valid := ndis.ParseStatus(status); !valid {
		t.Fatalf("element %d: invalid status %q: %s", i, status, out)
	}
	if ok != (status == ndis.StatusSuccess.String()) || !ok && reason == "" {
		t.Fatalf("element %d: status %s, reason %q, succeeded: %v: %s", i, status, reason, ok, out)
	}
}

// hexWindows returns, lowercased, every 16-character window of the runs
// of 16 or more hex digits in b that holds a letter: a key, or part of
// one, as the response would show it. Windows of decimal digits only are
// left out: a response rightly repeats numbers of the request (a handle,
// a sequence number), and 16 decimal digits cannot be told from a key.
func hexWindows(b []byte) map[string]bool {
	var ws map[string]bool
	run := 0
	for i := 0; i <= len(b); i++ {
		if i < len(b) && isHex(b[i]) {
			run++
			continue
		}
		for s := i - run; s+16 <= i; s++ {
			w := strings.ToLower(string(b[s : s+16]))
			if strings.ContainsAny(w, "abcdef") {
				if ws == nil {
					ws = make(map[string]bool)
				}
				ws[w] = true
			}
		}
		run = 0
	}
	return ws
}

// checkEffects fails t unless the table shows what the response r to
// line says was done: an added SA is there, with a handle above every
// handle issued before (last: handles are never reused); a deleted SA is
// gone, dead and its keys zeroed; an updated SA has the new high-order
// bits; an SA whose deletion was requested is still there, marked. It
// returns the highest handle issued so far.
func checkEffects(t *testing.T, tab *sadb.Table, line []byte, r reply, before map[sadb.Handle]*sadb.SA, last sadb.Handle) sadb.Handle {
	t.Helper()
	added := func(h uint64) {
		t.Helper()
		if h == 0 {
			return
		}
		if sadb.Handle(h) <= last {
			t.Fatalf("handle %d issued again or out of order (the last was %d)", h, last)
		}
		last = sadb.Handle(h)
		if tab.Get(last) == nil {
			t.Fatalf("ADD_SA returned handle %d, which the table does not hold", h)
		}
	}
	switch b := r.body.(type) {
	case *AddSAResponse:
		for _, res := range b.Results {
			added(res.Handle)
		}
	case *AddSAExResponse:
		added(b.Handle)
	case *DeleteSAResponse:
		for _, res := range b.Results {
			if res.Status != ndis.StatusSuccess.String() {
				continue
			}
			sa := before[sadb.Handle(res.Handle)]
			switch {
			case sa == nil:
				t.Fatalf("DELETE_SA deleted handle %d, which the table did not hold", res.Handle)
			case tab.Get(sa.Handle) != nil || sa.Alive():
				t.Fatalf("DELETE_SA deleted handle %d, but it is still there or alive", res.Handle)
			case bytes.ContainsFunc(sa.Config.Algo.EncryptionKey, nonZero) || bytes.ContainsFunc(sa.Config.Algo.AuthenticationKey, nonZero):
				t.Fatalf("DELETE_SA deleted handle %d without wiping its keys", res.Handle)
			}
		}
	}
	if r.body.header().Status != ndis.StatusSuccess.String() {
		return last
	}
	switch r.oid {
	case OIDUpdateSA:
		var req UpdateSARequest
		if err := json.Unmarshal(line, &req); err != nil || req.SequenceNumberHighOrder == nil {
			t.Fatalf("UPDATE_SA succeeded for a request that does not decode: %v", err)
		}
		sa, hi := tab.Get(sadb.Handle(req.Handle)), *req.SequenceNumberHighOrder
		switch {
		case sa == nil:
			t.Fatalf("UPDATE_SA succeeded for handle %d, which the table does not hold", req.Handle)
		case sa.In != nil && uint32(sa.In.Top()>>32) != hi:
			t.Fatalf("UPDATE_SA to high bits %d left inbound SA %d at %#x", hi, req.Handle, sa.In.Top())
		case sa.Out != nil && uint32(-sa.Out.Remaining()>>32) != hi:
			t.Fatalf("UPDATE_SA to high bits %d left outbound SA %d sending %#x next", hi, req.Handle, -sa.Out.Remaining())
		}
	case OIDRequestDelete:
		var req HandleRequest
		if err := json.Unmarshal(line, &req); err != nil {
			t.Fatalf("VNIC_REQUEST_DELETE succeeded for a request that does not decode: %v", err)
		}
		if sa := tab.Get(sadb.Handle(req.Handle)); sa == nil || !sa.DeleteRequested.Load() {
			t.Fatalf("VNIC_REQUEST_DELETE succeeded for handle %d, but the table has no such SA marked", req.Handle)
		}
	}
	return last
}

func nonZero(r rune) bool { return r != 0 }

// checkTable fails t unless the table's invariants hold (see Table.Check).
func checkTable(t *testing.T, tab *sadb.Table) {
	t.Helper()
	if err := tab.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestHexWindows checks the leak detector of the fuzz targets: it must
// see a key-like run of hex digits whatever its case and wherever it is
// cut, and ignore shorter runs and runs of decimal digits.
func TestHexWindows(t *testing.T) {
	tests := []struct {
		in   string
		want []string // some of the windows expected
		none bool     // no window at all
	}{
		// Lowercased; the all-decimal first window is left out.
		{in: `"KeyData":"00112233445566778899AABBCCDDEEFF"`, want: []string{"233445566778899a", "8899aabbccddeeff"}},
		{in: `x0123456789abcdefx`, want: []string{"0123456789abcdef"}},
		{in: `0123456789abcde`, none: true},          // 15 digits
		{in: `12345678901234567890`, none: true},     // a number
		{in: `a value of 40 characters`, none: true}, // words
	}
	for _, tt := range tests {
		got := hexWindows([]byte(tt.in))
		if tt.none && len(got) != 0 {
			t.Errorf("hexWindows(%q) = %v, want none", tt.in, got)
		}
		for _, w := range tt.want {
			if !got[w] {
				t.Errorf("hexWindows(%q) lacks %q: %v", tt.in, w, got)
			}
		}
	}
}
