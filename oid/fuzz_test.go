package oid

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"vnic/ndis"
)

// FuzzDecodeRequest feeds arbitrary lines to the request decoder and
// dispatcher: it must not panic, and every response must be JSON with a
// valid NDIS status name (and a reason on failure), and never contain the
// key of the request outside the echoed id.
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
	dev := newFakeDev(64)
	s := NewServer(dev, slog.New(slog.DiscardHandler))
	key := []byte("00112233445566778899aabbccddeeff01020304")
	f.Fuzz(func(t *testing.T, line []byte) {
		r := s.handle(bytes.Clone(line))
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
		if h.Status != "NDIS_STATUS_SUCCESS" && h.Reason == "" {
			t.Fatalf("failure without a reason: %s", out)
		}
		// The id is echoed as sent, whatever it holds; nothing else may
		// carry the key.
		var m map[string]json.RawMessage
		json.Unmarshal(out, &m)
		delete(m, "id")
		rest, _ := json.Marshal(m)
		if bytes.Contains(line, key) && bytes.Contains(rest, key) {
			t.Fatalf("response contains the key: %s", out)
		}
		// Keep the table from filling up for good.
		if dev.table.Len() > 32 {
			var hs []uint64
			for _, sa := range dev.table.List() {
				hs = append(hs, uint64(sa.Handle))
			}
			s.handle([]byte(mustJSON(t, DeleteSARequest{Request: Request{OID: OIDDeleteSA}, Handles: hs})))
		}
	})
}
