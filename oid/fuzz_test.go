package oid

import (
	"bytes"
	"encoding/json"
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
	dev := newFakeDev(fuzzCapacity)
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
