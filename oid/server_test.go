package oid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vnic/event"
	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/sadb"
)

func TestCapabilities(t *testing.T) {
	ts := startServer(t, 7)
	c := ts.client(t)
	caps, err := c.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if caps.SaOffloadCapacity != 7 || !caps.Esp || caps.Ah || caps.Vnic.Generation != 42 {
		t.Errorf("capabilities = %+v", caps)
	}
	rc := ts.raw(t)
	m := rc.do(`{"id":"caps-1","oid":"OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"}`)
	if m["id"] != "caps-1" || m["status"] != "NDIS_STATUS_SUCCESS" || m["generation"] != float64(42) {
		t.Errorf("response = %v", m)
	}
	capsObj, _ := m["capabilities"].(map[string]any)
	if capsObj["SaOffloadCapacity"] != float64(7) || capsObj["vnic"] == nil {
		t.Errorf("capabilities object = %v", capsObj)
	}
}

func TestAddSAPartialSuccess(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	good := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1))
	dup := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 2))
	ah := gcmSA("out", 0x1001, "192.0.2.2", keyBytes(20, 3))
	ah.SecAssoc[0].Operation = 1
	both := gcmSA("in", 0x1002, "192.0.2.1", keyBytes(20, 4))
	both.NumExtHdrs = 2
	badKey := gcmSA("in", 0x1003, "192.0.2.1", keyBytes(19, 5))
	good2 := gcmSA("in", 0x1004, "", keyBytes(20, 6))

	res, err := c.AddSA(ctx, good, dup, ah, both, badKey, good2)
	if err != nil {
		t.Fatalf("AddSA: %v (results %+v)", err, res)
	}
	want := []struct {
		handle bool
		status ndis.Status
		reason string
	}{
		{true, ndis.StatusSuccess, ""},
		{false, ndis.StatusInvalidParameter, "an outbound SA with SPI 4096"},
		{false, ndis.StatusNotSupported, "SecAssoc[0].Operation 1 (AH) is not implemented"},
		{false, ndis.StatusNotSupported, "AH plus ESP bundles (NumExtHdrs 2)"},
		{false, ndis.StatusInvalidParameter, "AES-GCM-128 needs a 20-byte key"},
		{true, ndis.StatusSuccess, ""},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d", len(res), len(want))
	}
	for i, w := range want {
		r := res[i]
		// The element is the result's place: the reason does not repeat it.
		if (r.Handle != 0) != w.handle || r.Status != w.status.String() || !strings.HasPrefix(r.Reason, w.reason) ||
			strings.HasPrefix(r.Reason, "element") {
			t.Errorf("element %d: got %+v, want handle=%v %v %q...", i, r, w.handle, w.status, w.reason)
		}
	}
	if ts.dev.table.Len() != 2 {
		t.Errorf("table holds %d SAs, want 2", ts.dev.table.Len())
	}

	// No element added: the request fails with the first failure.
	res, err = c.AddSA(ctx, ah, dup)
	if ndis.StatusOf(err) != ndis.StatusNotSupported || res[0].Handle != 0 || res[1].Handle != 0 {
		t.Errorf("all-failing ADD_SA: err %v, results %+v", err, res)
	}
	// The response names the element (its "element" field) apart from
	// the reason, and the client keeps them apart.
	if e := ndis.AsError(err); !strings.HasPrefix(e.Reason, "SecAssoc[0].Operation 1") {
		t.Errorf("all-failing ADD_SA: reason %q", e.Reason)
	} else if i, ok := e.Element(); !ok || i != 0 {
		t.Errorf("all-failing ADD_SA: error about element %d (%v), want 0", i, ok)
	}
	// ADD_SA_EX: one bundle.
	h, err := c.AddSAEx(ctx, gcmSA("out", 0x2000, "192.0.2.9", keyBytes(20, 7)))
	if err != nil || h == 0 {
		t.Errorf("ADD_SA_EX: handle %d, %v", h, err)
	}
	h, err = c.AddSAEx(ctx, ah)
	if ndis.StatusOf(err) != ndis.StatusNotSupported || h != 0 || !strings.HasPrefix(err.Error(), "sa: SecAssoc[0].Operation 1") {
		t.Errorf("ADD_SA_EX of AH: handle %d, %v", h, err)
	}
}

func TestAddSACapacity(t *testing.T) {
	ts := startServer(t, 2)
	c := ts.client(t)
	ctx := context.Background()
	res, err := c.AddSA(ctx,
		gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1)),
		gcmSA("out", 0x1001, "192.0.2.2", keyBytes(20, 2)),
		gcmSA("out", 0x1002, "192.0.2.2", keyBytes(20, 3)))
	if err != nil {
		t.Fatalf("AddSA: %v", err)
	}
	if res[0].Handle == 0 || res[1].Handle == 0 {
		t.Errorf("first two elements failed: %+v", res)
	}
	if res[2].Handle != 0 || res[2].Status != "NDIS_STATUS_RESOURCES" || !strings.Contains(res[2].Reason, "device full") {
		t.Errorf("third element: %+v, want a null handle and NDIS_STATUS_RESOURCES", res[2])
	}
	res, err = c.AddSA(ctx, gcmSA("out", 0x1003, "192.0.2.2", keyBytes(20, 4)))
	if ndis.StatusOf(err) != ndis.StatusResources || res[0].Handle != 0 {
		t.Errorf("ADD_SA on a full device: %v, %+v", err, res)
	}
}

func TestDeleteSA(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	res, err := c.AddSA(ctx, gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1)), gcmSA("in", 0x1001, "", keyBytes(20, 2)))
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := res[0].Handle, res[1].Handle
	del, err := c.DeleteSA(ctx, h1, 999, h2)
	if err != nil {
		t.Fatalf("DeleteSA: %v", err)
	}
	if del[0].Status != "NDIS_STATUS_SUCCESS" || del[2].Status != "NDIS_STATUS_SUCCESS" ||
		del[1].Status != "NDIS_STATUS_INVALID_PARAMETER" || del[1].Handle != 999 || !strings.Contains(del[1].Reason, "unknown handle 999") {
		t.Errorf("results = %+v", del)
	}
	if ts.dev.table.Len() != 0 {
		t.Errorf("table holds %d SAs after delete", ts.dev.table.Len())
	}
	// Nothing deleted: failure.
	del, err = c.DeleteSA(ctx, h1)
	if ndis.StatusOf(err) != ndis.StatusInvalidParameter || del[0].Status != "NDIS_STATUS_INVALID_PARAMETER" {
		t.Errorf("second delete: %v, %+v", err, del)
	}
	if _, err := c.DeleteSA(ctx); ndis.StatusOf(err) != ndis.StatusInvalidParameter {
		t.Errorf("empty delete: %v", err)
	}
}

func TestUpdateSA(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	plain := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1))
	esnOut := gcmSA("out", 0x1001, "192.0.2.2", keyBytes(20, 2))
	esnOut.SecAssoc[0].Flags = ndis.FlagESN
	esnIn := gcmSA("in", 0x1002, "192.0.2.1", keyBytes(20, 3))
	esnIn.SecAssoc[0].Flags = ndis.FlagESN
	res, err := c.AddSA(ctx, plain, esnOut, esnIn)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		handle  uint64
		spi, hi uint32
		status  ndis.Status
		reason  string
	}{
		{"not ESN", res[0].Handle, 0x1000, 1, ndis.StatusInvalidParameter, "does not use extended sequence numbers"},
		{"unknown handle", 999, 0x1000, 1, ndis.StatusInvalidParameter, "unknown handle 999"},
		{"wrong SPI", res[1].Handle, 0x1000, 1, ndis.StatusInvalidParameter, "has SPI 4097"},
		{"outbound", res[1].Handle, 0x1001, 5, ndis.StatusSuccess, ""},
		{"outbound backwards", res[1].Handle, 0x1001, 4, ndis.StatusInvalidParameter, "never go backwards"},
		{"inbound", res[2].Handle, 0x1002, 9, ndis.StatusSuccess, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.UpdateSA(ctx, tt.handle, tt.spi, tt.hi)
			if ndis.StatusOf(err) != tt.status || (err != nil && !strings.Contains(err.Error(), tt.reason)) {
				t.Errorf("UpdateSA = %v, want %v %q", err, tt.status, tt.reason)
			}
		})
	}
	if got := ts.dev.table.Get(sadb.Handle(res[2].Handle)).In.Top() >> 32; got != 9 {
		t.Errorf("inbound high bits = %d, want 9", got)
	}
	rc := ts.raw(t)
	for _, line := range []string{
		fmt.Sprintf(`{"oid":"%s","handle":%d,"SequenceNumberHighOrder":7}`, OIDUpdateSA, res[1].Handle),
		fmt.Sprintf(`{"oid":"%s","handle":%d,"Spi":4097}`, OIDUpdateSA, res[1].Handle),
		fmt.Sprintf(`{"oid":"%s","handle":%d,"Spi":4097,"SequenceNumberHighOrder":7,"Operation":1}`, OIDUpdateSA, res[1].Handle),
	} {
		if m := rc.do(line); m["status"] != "NDIS_STATUS_INVALID_PARAMETER" {
			t.Errorf("%s: %v", line, m)
		}
	}
}

// TestMalformedLines sends bad lines on one connection, each answered
// with an error, and then a good request on the same connection.
func TestMalformedLines(t *testing.T) {
	ts := startServer(t, 16)
	rc := ts.raw(t)
	tests := []struct {
		line   string
		id     any
		status string
		reason string
	}{
		{`this is not json`, nil, "NDIS_STATUS_INVALID_DATA", "not valid JSON"},
		{`{"id":1,"oid":`, nil, "NDIS_STATUS_INVALID_DATA", "not valid JSON"},
		{`[1,2,3]`, nil, "NDIS_STATUS_INVALID_DATA", "the request is not a JSON object but a JSON array"},
		{`"just a string"`, nil, "NDIS_STATUS_INVALID_DATA", "not a JSON object but a JSON string"},
		{`{"id":2}`, float64(2), "NDIS_STATUS_INVALID_PARAMETER", `missing field "oid"`},
		{`{"id":3,"oid":5}`, float64(3), "NDIS_STATUS_INVALID_PARAMETER", "oid: expected a string"},
		{`{"id":4,"oid":"OID_GEN_FOO"}`, float64(4), "NDIS_STATUS_NOT_SUPPORTED", `unknown OID "OID_GEN_FOO"`},
		{`{"id":5,"oid":"hello"}`, float64(5), "NDIS_STATUS_NOT_SUPPORTED", "not an OID vnic answers"},
		{`{"id":6,"oid":"VNIC_STATISTICS","extra":1}`, float64(6), "NDIS_STATUS_INVALID_PARAMETER", `unknown field "extra"`},
		{`{"id":7,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":"3"}`, float64(7), "NDIS_STATUS_INVALID_PARAMETER", `field "handles": expected a JSON array, got a JSON string`},
		{`{"id":8,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[-1]}`, float64(8), "NDIS_STATUS_INVALID_PARAMETER", `field "handles": expected a number from 0`},
		{`{"id":9,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":{}}`, float64(9), "NDIS_STATUS_INVALID_PARAMETER", `field "sas": expected a JSON array`},
		{`{"id":10,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA"}`, float64(10), "NDIS_STATUS_INVALID_PARAMETER", `missing field "sas"`},
		{`{"id":11,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[]}`, float64(11), "NDIS_STATUS_INVALID_PARAMETER", `"sas" is empty`},
		{`{"id":12,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"SecAssoc":[{"Spi":"x"}]}]}`, float64(12), "NDIS_STATUS_INVALID_PARAMETER", `field "SecAssoc.Spi": expected a number`},
		{`{"id":13,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"KeyData":"0xzz"}]}`, float64(13), "NDIS_STATUS_INVALID_DATA", "KeyData: character 1 is not a hex digit"},
		{`{"id":14,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"vnic":{"selectors":[{"proto":"tcpp"}]}}]}`, float64(14), "NDIS_STATUS_INVALID_PARAMETER", `selector proto: expected a protocol number`},
		{`{"id":15,"oid":"VNIC_STATISTICS"} trailing`, nil, "NDIS_STATUS_INVALID_DATA", "not valid JSON"},
		{`{"id":{"nested":[1,2]},"oid":"VNIC_QUERY_SA","handle":77}`, map[string]any{"nested": []any{float64(1), float64(2)}}, "NDIS_STATUS_INVALID_PARAMETER", "unknown handle 77"},
		{`{"id":16,"oid":"VNIC_REQUEST_DELETE"}`, float64(16), "NDIS_STATUS_INVALID_PARAMETER", `"handle" is missing`},
	}
	// The requests whose one ADD_SA element is refused: the response
	// names it in "element", not in the reason.
	aboutElement0 := map[string]bool{"12": true, "13": true, "14": true}
	for _, tt := range tests {
		m := rc.do(tt.line)
		if fmt.Sprint(m["id"]) != fmt.Sprint(tt.id) || m["status"] != tt.status || !strings.Contains(str(m["reason"]), tt.reason) ||
			strings.HasPrefix(str(m["reason"]), "element") {
			t.Errorf("%s:\n got %v\nwant id=%v %s %q", tt.line, m, tt.id, tt.status, tt.reason)
		}
		if el, ok := m["element"]; aboutElement0[fmt.Sprint(tt.id)] != (ok && el == float64(0)) {
			t.Errorf("%s: element %v (present %v), want it only for a refused element 0", tt.line, el, ok)
		}
		if m["generation"] != float64(42) {
			t.Errorf("%s: no generation in %v", tt.line, m)
		}
	}
	// Blank lines are ignored; the connection still serves.
	rc.send("")
	m := rc.do(`{"id":"last","oid":"VNIC_STATISTICS"}`)
	if m["id"] != "last" || m["status"] != "NDIS_STATUS_SUCCESS" {
		t.Fatalf("valid request after bad ones: %v", m)
	}
	if st, _ := m["stats"].(map[string]any); st["XfrmInNoStates"] != float64(3) {
		t.Errorf("stats = %v", m["stats"])
	}
}

func TestLongLineRefused(t *testing.T) {
	ts := startServer(t, 16)
	rc := ts.raw(t)
	long := `{"id":1,"oid":"VNIC_STATISTICS","pad":"` + strings.Repeat("x", MaxRequest) + `"}`
	go rc.send(long) // the server reads while we write
	m := rc.recv()
	if m["status"] != "NDIS_STATUS_INVALID_DATA" || !strings.Contains(str(m["reason"]), "longer than 1048576 bytes") || m["id"] != nil {
		t.Errorf("over-long line: %v", m)
	}
	m = rc.do(`{"id":2,"oid":"VNIC_STATISTICS"}`)
	if m["status"] != "NDIS_STATUS_SUCCESS" || m["id"] != float64(2) {
		t.Errorf("after an over-long line: %v", m)
	}
	// A line of exactly MaxRequest bytes is read.
	exact := `{"id":3,"oid":"VNIC_STATISTICS","pad":"`
	exact += strings.Repeat("x", MaxRequest-len(exact)-2) + `"}`
	go rc.send(exact)
	if m := rc.recv(); m["id"] != float64(3) || !strings.Contains(str(m["reason"]), `unknown field "pad"`) {
		t.Errorf("line of MaxRequest bytes: %v", m)
	}
}

// TestKeysNeverShown adds SAs with known keys, good and bad, queries them,
// and checks that no response byte and no log line holds a key.
func TestKeysNeverShown(t *testing.T) {
	ts := startServer(t, 16)
	rc := ts.raw(t)
	gcmKey := keyBytes(20, 0xa0)
	cbcKey := keyBytes(32, 0x10)
	macKey := keyBytes(32, 0x55)
	shortKey := keyBytes(19, 0x33)
	cbc := SA{
		Direction: "in", SrcAddr: "192.0.2.1", DestAddr: "192.0.2.2",
		SecAssoc: []SecAssoc{{Operation: 2, Spi: 0x3000,
			EncryptionAlgorithm:     AlgorithmInfo{Identifier: uint32(ndis.EncryptionAESCBC256)},
			AuthenticationAlgorithm: AlgorithmInfo{Identifier: uint32(ndis.AuthenticationSHA256)}}},
		KeyData: append(append(Key{}, cbcKey...), macKey...),
	}
	req := AddSARequest{Request: Request{ID: 1, OID: OIDAddSA}, SAs: []SA{
		gcmSA("out", 0x1000, "192.0.2.2", gcmKey),
		cbc,
		gcmSA("out", 0x1001, "192.0.2.2", shortKey),
		gcmSA("out", 0x1000, "192.0.2.2", gcmKey), // duplicate
	}}
	m := rc.do(mustJSON(t, req))
	if m["status"] != "NDIS_STATUS_SUCCESS" {
		t.Fatalf("ADD_SA: %v", m)
	}
	rc.do(`{"id":2,"oid":"VNIC_QUERY_SA"}`)
	rc.do(`{"id":3,"oid":"VNIC_QUERY_SA","handle":1}`)
	rc.do(mustJSON(t, AddSAExRequest{Request: Request{ID: 4, OID: OIDAddSAEx}, SA: gcmSA("out", 0x1002, "192.0.2.2", shortKey)}))
	// A key in a malformed request.
	rc.do(`{"id":5,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"KeyData":"` + fmt.Sprintf("%x", gcmKey) + `","Bogus":1}]}`)
	rc.do(`{"id":6,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"KeyData":"` + fmt.Sprintf("%x", gcmKey) + `"g"}]}`)

	out := rc.seen.Bytes()
	for name, k := range map[string][]byte{"gcm": gcmKey, "cbc": cbcKey, "mac": macKey, "short": shortKey} {
		if testutil.ContainsKey(out, k) {
			t.Errorf("the %s key appears in a response:\n%s", name, out)
		}
		if testutil.ContainsKey([]byte(ts.log.String()), k) {
			t.Errorf("the %s key appears in the log:\n%s", name, ts.log.String())
		}
	}
	if !strings.Contains(string(out), `"key":"[redacted 160 bits]"`) || !strings.Contains(string(out), `"key":"[redacted 256 bits]"`) {
		t.Errorf("query shows no redacted keys:\n%s", out)
	}
	// fmt never prints a Key.
	if s := fmt.Sprintf("%v %x %s %#v %+v", Key(gcmKey), Key(gcmKey), Key(gcmKey), Key(gcmKey), cbc); testutil.ContainsKey([]byte(s), gcmKey) || testutil.ContainsKey([]byte(s), cbcKey) {
		t.Errorf("fmt shows a key: %s", s)
	}
}

func TestQuerySA(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	out := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1))
	out.SrcAddr = "192.0.2.1"
	out.UdpEspEncapsulation = 2
	out.Vnic = &SAExtensions{Selectors: []Selector{{Src: "10.0.0.0/24", Dst: "10.1.0.0/16", Proto: 6, DPort: 443}},
		Lifetime: &Lifetime{SoftBytes: 1000, HardBytes: 2000, HardSeconds: 60}, InitialSeq: 100, UDP: &UDPPorts{DPort: 4501}}
	res, err := c.AddSA(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	in := SA{Flags: ndis.FlagInbound | ndis.FlagIPv6, SrcAddr: "2001:db8::1", DestAddr: "::",
		SecAssoc: []SecAssoc{{Flags: ndis.FlagESN, Spi: 0x2000, SequenceNumberHighOrder: 3,
			AuthenticationAlgorithm: AlgorithmInfo{Identifier: uint32(ndis.AuthenticationSHA1), AdditionalInfo: 12}}},
		KeyData: keyBytes(20, 9), Vnic: &SAExtensions{Mode: "transport", ReplayWindow: ptr(128), Pair: res[0].Handle}}
	res2, err := c.AddSA(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	sa := ts.dev.table.Get(sadb.Handle(res2[0].Handle))
	sa.Counters.Drop(sadb.InStateSeqError, 2)
	sa.Counters.Packets.Add(5)

	all, err := c.QuerySA(ctx, 0)
	if err != nil || len(all) != 2 {
		t.Fatalf("QuerySA(0) = %v, %v", all, err)
	}
	o, i := all[0], all[1]
	if o.Direction != "outbound" || o.SPIHex != "0x00001000" || o.Mode != "tunnel" || o.Src != "192.0.2.1" ||
		o.Encapsulation != "espinudp" || o.UDP.SPort != 4500 || o.UDP.DPort != 4501 || o.Encryption == nil ||
		o.Encryption.Name != "rfc4106(gcm(aes))" || o.Encryption.NDIS != "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128" ||
		o.Encryption.Key != "[redacted 160 bits]" || o.Encryption.ICVBits != 128 || o.Authentication != nil ||
		o.Seq != 99 /* initial_seq 100: 99 "sent" before the first packet, as ip xfrm's oseq shows replay-oseq */ || o.Lifetime.HardBytes != 2000 || o.Lifetime.HardSeconds != 60 || o.Pair != i.Handle ||
		len(o.Selectors) != 1 || o.Selectors[0].Src != "10.0.0.0/24" || o.Selectors[0].Proto != 6 || o.Selectors[0].DPort != 443 {
		t.Errorf("outbound SA: %+v", o)
	}
	if i.Direction != "inbound" || i.Mode != "transport" || i.Src != "2001:db8::1" || i.Dst != "any" || !i.ESN ||
		i.Seq != 3<<32 || i.SeqHigh != 3 || i.ReplayWindow != 128 || i.Encryption == nil ||
		i.Encryption.Name != "ecb(cipher_null)" || i.Encryption.Key != "[none]" || i.Authentication.Name != "hmac(sha1)" ||
		i.Authentication.ICVBits != 96 || i.Packets != 5 || i.Used.Packets != 5 ||
		i.Drops["XfrmInStateSeqError"] != 2 || len(i.Drops) != 1 || i.Pair != o.Handle || i.Encapsulation != "esp" {
		t.Errorf("inbound SA: %+v", i)
	}
	one, err := c.QuerySA(ctx, o.Handle)
	if err != nil || len(one) != 1 || one[0].Handle != o.Handle {
		t.Errorf("QuerySA(%d) = %+v, %v", o.Handle, one, err)
	}
	if _, err := c.QuerySA(ctx, 99); ndis.StatusOf(err) != ndis.StatusInvalidParameter {
		t.Errorf("QuerySA(99): %v", err)
	}
	if err := c.RequestDelete(ctx, o.Handle); err != nil {
		t.Errorf("RequestDelete: %v", err)
	}
	if err := c.RequestDelete(ctx, 99); ndis.StatusOf(err) != ndis.StatusInvalidParameter {
		t.Errorf("RequestDelete(99): %v", err)
	}
	one, _ = c.QuerySA(ctx, o.Handle)
	if !one[0].DeleteRequested {
		t.Errorf("delete_requested not shown")
	}
	st, err := c.Stats(ctx)
	if err != nil || st["XfrmInNoStates"] != 3 {
		t.Errorf("Stats = %v, %v", st, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestEvents(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan EventMessage, 4)
	errc := make(chan error, 1)
	go func() { errc <- c.Subscribe(ctx, func(m EventMessage) { got <- m }) }()

	// Publish until the subscriber is in (it subscribes before its
	// response is written, so nothing after that is lost).
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var m EventMessage
wait:
	for {
		select {
		case <-tick.C:
			ts.dev.bus.Publish(event.Event{Type: event.SoftLifetime, Handle: 7, SPI: 0x1234})
		case m = <-got:
			break wait
		case <-deadline:
			t.Fatal("no event received")
		}
	}
	if m.Event.Type != event.SoftLifetime || m.Event.Handle != 7 || m.Event.SPI != 0x1234 || m.Event.Time.IsZero() {
		t.Errorf("event = %+v", m)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Subscribe returned %v after cancel", err)
	}

	// Raw: the response line, then {"event":...} lines; a request
	// through the device (VNIC_REQUEST_DELETE on another connection)
	// arrives as SaDeleteReq.
	rc := ts.raw(t)
	if m := rc.do(`{"id":"sub","oid":"VNIC_SUBSCRIBE_EVENTS"}`); m["status"] != "NDIS_STATUS_SUCCESS" || m["id"] != "sub" {
		t.Fatalf("subscribe: %v", m)
	}
	c2 := ts.client(t)
	res, err := c2.AddSA(context.Background(), gcmSA("in", 0x1000, "", keyBytes(20, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.RequestDelete(context.Background(), res[0].Handle); err != nil {
		t.Fatal(err)
	}
	for {
		line := rc.recvAny()
		ev, _ := line["event"].(map[string]any)
		if ev["type"] == "SaDeleteReq" {
			if ev["handle"] != float64(res[0].Handle) || ev["reason"] != "operator request" {
				t.Errorf("SaDeleteReq event = %v", ev)
			}
			break
		}
	}
	// The subscriber closes: the server lets go of the subscription.
	rc.c.Close()
	for range 200 {
		if !strings.Contains(ts.log.String(), "event subscription ended") {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !strings.Contains(ts.log.String(), "event subscription ended") {
		t.Errorf("subscription did not end when the client closed")
	}
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, 1000)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(ts.path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			ctx := context.Background()
			if _, err := c.Capabilities(ctx); err != nil {
				errs <- err
				return
			}
			res, err := c.AddSA(ctx, gcmSA("out", uint32(0x1000+g), "192.0.2.2", keyBytes(20, byte(g))))
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", g, err)
				return
			}
			info, err := c.QuerySA(ctx, res[0].Handle)
			if err != nil || info[0].SPI != uint32(0x1000+g) {
				errs <- fmt.Errorf("client %d: query %v %v", g, info, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := ts.dev.table.Len(); n != 50 {
		t.Errorf("table holds %d SAs, want 50", n)
	}
}

func TestListen(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "run", "vnic", "vnic0.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, %v; want a socket with 0600", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode().Perm())
	}

	// Live: refused.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(path); err == nil || err.Error() != "another vnic daemon is serving "+path {
		t.Errorf("Listen on a live socket: %v", err)
	}
	// Stale: replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket gone: %v", err)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()

	// Not a socket: refused.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen on a file: %v", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ts := startServer(t, 16)
	rc := ts.raw(t)
	rc.do(`{"oid":"VNIC_STATISTICS"}`)
	c := ts.client(t)
	done := make(chan error, 1)
	go func() { done <- c.Subscribe(context.Background(), func(EventMessage) {}) }()
	time.Sleep(50 * time.Millisecond)
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.r.ReadByte(); err == nil {
		t.Error("connection still open after cancel")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Subscribe returned nil when the daemon went away")
		}
	case <-time.After(5 * time.Second):
		t.Error("subscription still open after cancel")
	}
	if _, err := Dial(ts.path); err == nil {
		t.Error("listener still accepting after cancel")
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, 16, func(s *Server) { s.IdleTimeout = 100 * time.Millisecond })
	rc := ts.raw(t)
	rc.do(`{"oid":"VNIC_STATISTICS"}`)
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle connection not closed by the server: %v", err)
	}
}

// TestCheckPeer runs the SO_PEERCRED decision with fake credentials: a
// real non-root peer needs a second user, which a unit test does not have.
// The refusal line is then checked with a server that refuses everyone.
func TestCheckPeer(t *testing.T) {
	tests := []struct {
		uid  uint32
		self int
		ok   bool
	}{
		{0, 0, true},
		{1000, 0, false},
		{65534, 0, false},
		{1000, 1000, true}, // the daemon's own user
		{1001, 1000, false},
	}
	for _, tt := range tests {
		err := checkPeer(&unix.Ucred{Pid: 1, Uid: tt.uid, Gid: tt.uid}, tt.self)
		if (err == nil) != tt.ok {
			t.Errorf("uid %d, server uid %d: %v", tt.uid, tt.self, err)
		}
		if err != nil && (err.Error() != ReasonPermission || ndis.StatusOf(err) != ndis.StatusFailure) {
			t.Errorf("refusal = %v (%v)", err, ndis.StatusOf(err))
		}
	}
	if checkPeer(nil, 0) == nil {
		t.Error("nil credentials allowed")
	}

	// A refused peer gets one error line and a closed connection.
	ts := startServer(t, 16, func(s *Server) {
		s.peerOK = func(c *unix.Ucred) error { return checkPeer(&unix.Ucred{Uid: 1000}, 0) }
	})
	rc := ts.raw(t)
	m := rc.recv()
	if m["status"] != "NDIS_STATUS_FAILURE" || m["reason"] != ReasonPermission {
		t.Errorf("refusal line = %v", m)
	}
	if _, err := rc.r.ReadByte(); err == nil {
		t.Error("refused connection left open")
	}
}

// TestMain doubles as a helper process for TestPeerCredRefusal: with
// VNIC_OID_DIAL set it connects there, sends one request and copies what
// comes back to stdout.
func TestMain(m *testing.M) {
	if path := os.Getenv("VNIC_OID_DIAL"); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		c.Write([]byte(`{"id":1,"oid":"VNIC_STATISTICS"}` + "\n"))
		io.Copy(os.Stdout, c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPeerCredRefusal connects as user nobody (65534) through a copy of
// the test binary: the server must answer with one refusal line and close.
// It needs root to switch users, and skips otherwise.
func TestPeerCredRefusal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another user; TestCheckPeer covers the decision")
	}
	ts := startServer(t, 16)
	// Let nobody reach the socket; the peer check is what must refuse.
	os.Chmod(filepath.Dir(ts.path), 0o711)
	os.Chmod(ts.path, 0o666)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Skipf("cannot copy the test binary: %v", err)
	}
	dir := socketDir(t)
	os.Chmod(dir, 0o755)
	helper := filepath.Join(dir, "helper")
	if err := os.WriteFile(helper, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helper)
	cmd.Env = []string{"VNIC_OID_DIAL=" + ts.path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var m map[string]any
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &m) != nil ||
		m["status"] != "NDIS_STATUS_FAILURE" || m["reason"] != ReasonPermission || m["id"] != nil {
		t.Errorf("a non-root peer got %q; want one refusal line, then the connection closed", out)
	}
	if !strings.Contains(ts.log.String(), "connection refused") || !strings.Contains(ts.log.String(), "uid=65534") {
		t.Errorf("refusal not logged:\n%s", ts.log.String())
	}
}

// TestClientDo checks the generic Do: caller ids echoed, raw responses,
// failure statuses as *ndis.Error.
func TestClientDo(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	var raw json.RawMessage
	if err := c.Do(ctx, map[string]any{"id": "x-1", "oid": OIDStatistics}, &raw); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"id":"x-1","status":"NDIS_STATUS_SUCCESS"`) {
		t.Errorf("raw = %s", raw)
	}
	err := c.Do(ctx, Request{OID: "OID_NOPE"}, &raw)
	var ne *ndis.Error
	if !errors.As(err, &ne) || ne.Status != ndis.StatusNotSupported {
		t.Errorf("unknown OID: %v", err)
	}
	if err := c.Do(ctx, []int{1}, nil); err == nil {
		t.Error("Do accepted a non-object request")
	}
	// The connection still works.
	if _, err := c.Stats(ctx); err != nil {
		t.Error(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Stats(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Do: %v", err)
	}
}

// TestQuerySADrops checks that "drops" is always a JSON object: {} for an
// SA that has dropped nothing, as docs/oid-channel.md shows it, never
// left out or null.
func TestQuerySADrops(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	res, err := c.AddSA(context.Background(), gcmSA("in", 0x1000, "192.0.2.1", keyBytes(20, 1)))
	if err != nil {
		t.Fatal(err)
	}
	rc := ts.raw(t)
	drops := func() any {
		t.Helper()
		m := rc.do(fmt.Sprintf(`{"id":1,"oid":"VNIC_QUERY_SA","handle":%d}`, res[0].Handle))
		sas, _ := m["sas"].([]any)
		if len(sas) != 1 {
			t.Fatalf("query: %v", m)
		}
		d, ok := sas[0].(map[string]any)["drops"]
		if !ok {
			t.Errorf("no \"drops\" in %v", sas[0])
		}
		return d
	}
	if d := drops(); !reflect.DeepEqual(d, map[string]any{}) {
		t.Errorf("drops of an SA that dropped nothing = %#v, want {}", d)
	}
	ts.dev.table.Get(sadb.Handle(res[0].Handle)).Counters.Drop(sadb.InStateSeqError, 2)
	if d := drops(); !reflect.DeepEqual(d, map[string]any{"XfrmInStateSeqError": 2.0}) {
		t.Errorf("drops = %#v, want {\"XfrmInStateSeqError\":2}", d)
	}
}

// TestSALogLevels runs SA churn (adds, a refused element, updates,
// deletes, an operator's delete request, and an over-long line) through
// a server that logs at info level, then at debug level: at info nothing
// is logged per SA or per request; at debug each SA's lines are there,
// with their fields and without keys.
func TestSALogLevels(t *testing.T) {
	const batches, perBatch = 10, 10 // SAs added: batches × perBatch
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			log := &testutil.LockedBuffer{}
			ts := startServer(t, 1000, func(s *Server) {
				s.log = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: level}))
			})
			rc := ts.raw(t)
			var handles []uint64
			var keys [][]byte
			for b := range batches {
				req := AddSARequest{Request: Request{ID: b, OID: OIDAddSA}}
				for i := range perBatch {
					n := b*perBatch + i
					k := keyBytes(20, byte(n))
					keys = append(keys, k)
					sa := gcmSA("in", uint32(0x1000+n), "192.0.2.1", k)
					sa.SecAssoc[0].Flags = ndis.FlagESN
					req.SAs = append(req.SAs, sa)
				}
				ah := gcmSA("out", 0x9000, "192.0.2.2", keyBytes(20, 0xee))
				ah.SecAssoc[0].Operation = 1 // refused
				req.SAs = append(req.SAs, ah)
				m := rc.do(mustJSON(t, req))
				results, _ := m["results"].([]any)
				for _, r := range results[:perBatch] {
					h, _ := r.(map[string]any)["handle"].(float64)
					if h == 0 {
						t.Fatalf("ADD_SA: %v", m)
					}
					handles = append(handles, uint64(h))
				}
			}
			if m := rc.do(fmt.Sprintf(`{"oid":"%s","handle":%d,"Spi":%d,"SequenceNumberHighOrder":1}`, OIDUpdateSA, handles[0], 0x1000)); m["status"] != "NDIS_STATUS_SUCCESS" {
				t.Fatalf("UPDATE_SA: %v", m)
			}
			if m := rc.do(fmt.Sprintf(`{"oid":"VNIC_REQUEST_DELETE","handle":%d}`, handles[1])); m["status"] != "NDIS_STATUS_SUCCESS" {
				t.Fatalf("VNIC_REQUEST_DELETE: %v", m)
			}
			go rc.send(`{"oid":"VNIC_STATISTICS","pad":"` + strings.Repeat("x", MaxRequest) + `"}`)
			if m := rc.recv(); m["status"] != "NDIS_STATUS_INVALID_DATA" {
				t.Fatalf("over-long line: %v", m)
			}
			for i := 0; i < len(handles); i += perBatch {
				if m := rc.do(mustJSON(t, DeleteSARequest{Request: Request{OID: OIDDeleteSA}, Handles: handles[i : i+perBatch]})); m["status"] != "NDIS_STATUS_SUCCESS" {
					t.Fatalf("DELETE_SA: %v", m)
				}
			}
			rc.c.Close()
			ts.stop() // every connection's lines are written

			out := log.String()
			for _, k := range keys {
				if testutil.ContainsKey([]byte(out), k) {
					t.Fatalf("a key is in the log:\n%s", out)
				}
			}
			if level == slog.LevelInfo {
				if out != "" {
					t.Errorf("at info level, SA churn logged:\n%s", out)
				}
				return
			}
			added := batches * perBatch
			for _, w := range []struct {
				msg    string
				n      int
				fields []string
			}{
				{`msg="SA added"`, added, []string{"handle=", "direction=inbound", "spi=0x0000", "mode=tunnel", "dst=192.0.2.1"}},
				{`msg="SA refused"`, batches, []string{"element=10", "status=NDIS_STATUS_NOT_SUPPORTED", `reason="SecAssoc[0].Operation 1 (AH)`}},
				{`msg="SA deleted"`, added, []string{"handle="}},
				{`msg="SA updated"`, 1, []string{fmt.Sprintf("handle=%d", handles[0]), "seq_high=1"}},
				{`msg="SA delete requested by operator"`, 1, []string{fmt.Sprintf("handle=%d", handles[1])}},
				{`msg="OID channel: request refused"`, 1, []string{`reason="line too long"`}},
			} {
				n := 0
				for _, line := range strings.Split(out, "\n") {
					if !strings.Contains(line, w.msg) {
						continue
					}
					n++
					if !strings.Contains(line, "level=DEBUG") {
						t.Errorf("not at debug level: %s", line)
					}
					for _, f := range w.fields {
						if !strings.Contains(line, f) {
							t.Errorf("%s: no %s in %s", w.msg, f, line)
						}
					}
				}
				if n != w.n {
					t.Errorf("%d lines %s at debug level, want %d", n, w.msg, w.n)
				}
			}
		})
	}
}
