package oid

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"vnic/internal/testutil"
)

// handleLine answers line with s, as a connection would, and returns the
// response as sent.
func handleLine(t *testing.T, s *Server, line string) (map[string]any, []byte) {
	t.Helper()
	r := s.handle([]byte(line))
	out, err := json.Marshal(r.body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m, out
}

// bundle is an ADD_SA element: an outbound AES-GCM-128 SA with SPI spi,
// and more fields (with a leading comma) or "".
func bundle(spi int, more string) string {
	return fmt.Sprintf(`{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":%d,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"%x"%s}`,
		spi, keyBytes(20, byte(spi)), more)
}

// TestDuplicateFields sends requests that name a field twice in one
// object, by the same name or in another case: each is refused with the
// field's path, the request as a whole, or inside ADD_SA its element
// alone. The same name in different objects is no duplicate.
func TestDuplicateFields(t *testing.T) {
	key1, key2 := fmt.Sprintf("%x", keyBytes(20, 0xa1)), fmt.Sprintf("%x", keyBytes(20, 0xb2))
	const (
		addSA   = `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[`
		addSAEx = `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA_EX","sa":`
		gcm     = `"EncryptionAlgorithm":{"Identifier":8}`
	)
	tests := []struct {
		name   string
		line   string
		id     any    // the response's id
		status string // the response's status
		reason string // the reason, whole; "" for none
		// elements: for ADD_SA, whether each element was added; the
		// first refused one has the reason.
		elements []bool
	}{
		{name: "oid twice", line: `{"id":1,"oid":"VNIC_STATISTICS","OID":"VNIC_STATISTICS"}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "oid" given twice`},
		{name: "oid twice, the second unknown", line: `{"id":1,"oid":"VNIC_STATISTICS","oid":"OID_NOPE"}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "oid" given twice`},
		{name: "id twice: no id", line: `{"id":1,"Id":2,"oid":"VNIC_STATISTICS"}`, id: nil,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "id" given twice`},
		{name: "DELETE_SA handles", line: `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[1],"Handles":[2]}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "handles" given twice`},
		{name: "UPDATE_SA Spi", line: `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":4097,"spi":4098,"SequenceNumberHighOrder":1}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "Spi" given twice`},
		{name: "QUERY_SA handle", line: `{"id":1,"oid":"VNIC_QUERY_SA","handle":1,"HANDLE":2}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "handle" given twice`},
		{name: "REQUEST_DELETE handle", line: `{"id":1,"oid":"VNIC_REQUEST_DELETE","handle":1,"handle":1}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "handle" given twice`},
		{name: "ADD_SA sas", line: addSA + bundle(4097, "") + `],"SAS":[` + bundle(4098, "") + `]}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "sas" given twice`},
		{name: "SecAssoc.Spi in another case, the other element added", line: addSA + `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4097,"spi":4098,` + gcm + `}],"KeyData":"` + key1 + `"},` + bundle(4099, "") + `]}`,
			id: 1.0, status: "NDIS_STATUS_SUCCESS", reason: `field "SecAssoc.Spi" given twice`, elements: []bool{false, true}},
		{name: "SecAssoc.Spi, Unicode case folding as encoding/json does it", line: addSA + `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4097,"ſpi":4098,` + gcm + `}],"KeyData":"` + key1 + `"}]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "SecAssoc.Spi" given twice`, elements: []bool{false}},
		{name: "SecAssoc.Spi, escaped", line: addSA + `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4097,"\u0053pi":4097,` + gcm + `}],"KeyData":"` + key1 + `"}]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "SecAssoc.Spi" given twice`, elements: []bool{false}},
		{name: "KeyData twice: no key shown", line: addSA + bundle(4097, "") + `,{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4098,` + gcm + `}],"KeyData":"` + key1 + `","keydata":"` + key2 + `"}]}`,
			id: 1.0, status: "NDIS_STATUS_SUCCESS", reason: `field "KeyData" given twice`, elements: []bool{true, false}},
		{name: "algorithm identifier, same value twice", line: addSA + `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4097,"EncryptionAlgorithm":{"Identifier":8,"identifier":8}}],"KeyData":"` + key1 + `"}]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "SecAssoc.EncryptionAlgorithm.Identifier" given twice`, elements: []bool{false}},
		{name: "SecAssoc twice", line: addSA + bundle(4097, `,"secassoc":[{"Spi":4098}]`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "SecAssoc" given twice`, elements: []bool{false}},
		{name: "vnic twice", line: addSA + bundle(4097, `,"vnic":{},"VNIC":{"mode":"transport"}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "vnic" given twice`, elements: []bool{false}},
		{name: "vnic.mode", line: addSA + bundle(4097, `,"vnic":{"mode":"tunnel","Mode":"transport"}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "vnic.mode" given twice`, elements: []bool{false}},
		{name: "vnic.selectors, second selector", line: addSA + bundle(4097, `,"vnic":{"selectors":[{"src":"10.0.0.0/8"},{"proto":"tcp","dport":22,"DPort":23}]}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "vnic.selectors.dport" given twice`, elements: []bool{false}},
		{name: "vnic.lifetime", line: addSA + bundle(4097, `,"vnic":{"lifetime":{"hard_seconds":10,"Hard_Seconds":0}}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "vnic.lifetime.hard_seconds" given twice`, elements: []bool{false}},
		{name: "vnic.udp", line: addSA + bundle(4097, `,"UdpEspEncapsulation":2,"vnic":{"udp":{"dport":4500,"dport":4501}}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "vnic.udp.dport" given twice`, elements: []bool{false}},
		{name: "ADD_SA_EX", line: addSAEx + `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4097,"SPI":4098,` + gcm + `}],"KeyData":"` + key1 + `"}}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `sa: field "SecAssoc.Spi" given twice`},
		{name: "ADD_SA_EX sa twice", line: addSAEx + bundle(4097, "") + `,"Sa":` + bundle(4098, "") + `}`,
			id: 1.0, status: "NDIS_STATUS_INVALID_PARAMETER", reason: `field "sa" given twice`},

		// No duplicates.
		{name: "Flags of the bundle and of SecAssoc", line: addSA + `{"Flags":0,"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Flags":0,"Spi":4097,` + gcm + `}],"KeyData":"` + key1 + `"}]}`,
			id: 1.0, status: "NDIS_STATUS_SUCCESS", elements: []bool{true}},
		{name: "two selectors, two algorithms", line: addSA + bundle(4097, `,"vnic":{"selectors":[{"src":"10.0.0.0/8","dst":"10.1.0.0/16"},{"src":"10.2.0.0/16","dst":"10.3.0.0/16"}]}`) + `]}`,
			id: 1.0, status: "NDIS_STATUS_SUCCESS", elements: []bool{true}},
		{name: "an id is any JSON value", line: `{"id":{"a":1,"a":2},"oid":"VNIC_QUERY_SA"}`,
			id: map[string]any{"a": 2.0}, status: "NDIS_STATUS_SUCCESS"},
		{name: "an unknown field twice is unknown", line: `{"id":1,"oid":"VNIC_STATISTICS","verbose":1,"verbose":2}`, id: 1.0,
			status: "NDIS_STATUS_INVALID_PARAMETER", reason: `unknown field "verbose"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, log := fuzzServer()
			m, out := handleLine(t, s, tt.line)
			reason := str(m["reason"])
			if !reflect.DeepEqual(m["id"], tt.id) || m["status"] != tt.status {
				t.Errorf("got %s\nwant id %v, %s", out, tt.id, tt.status)
			}
			if tt.elements == nil {
				if !strings.HasPrefix(reason, tt.reason) || (tt.reason == "") != (reason == "") {
					t.Errorf("reason %q, want %q...", reason, tt.reason)
				}
			} else {
				results, _ := m["results"].([]any)
				if len(results) != len(tt.elements) {
					t.Fatalf("%d results, want %d: %s", len(results), len(tt.elements), out)
				}
				first := true
				for i, added := range tt.elements {
					r, _ := results[i].(map[string]any)
					if (r["handle"] != 0.0) != added {
						t.Errorf("element %d: %v, want added %v", i, r, added)
					}
					if !added && first {
						first = false
						if r["status"] != "NDIS_STATUS_INVALID_PARAMETER" || !strings.HasPrefix(str(r["reason"]), tt.reason) {
							t.Errorf("element %d: %v, want NDIS_STATUS_INVALID_PARAMETER %q...", i, r, tt.reason)
						}
					}
				}
			}
			for _, k := range [][]byte{keyBytes(20, 0xa1), keyBytes(20, 0xb2)} {
				if testutil.ContainsKey(out, k) || testutil.ContainsKey(log.Bytes(), k) {
					t.Errorf("a key is shown:\n%s\n%s", out, log)
				}
			}
		})
	}
}

// TestDuplicateFieldStops walks every prefix of a request, and the
// request with each byte replaced by a delimiter, none of which is
// valid JSON: the walk must end, and never panic.
func TestDuplicateFieldStops(t *testing.T) {
	line := `{"id":[1,{"x":"\"}"}],"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[` + bundle(4097, `,"vnic":{"selectors":[{"src":"any"}],"udp":{"sport":1}}`) + `]}`
	types := []reflect.Type{reflect.TypeFor[envelope](), reflect.TypeFor[AddSARequest](), reflect.TypeFor[SA]()}
	for n := range len(line) + 1 {
		for _, typ := range types {
			duplicateField([]byte(line[:n]), typ)
			for _, c := range []byte(`{}[]",: x\`) {
				b := []byte(line)
				if n < len(b) {
					b[n] = c
				}
				duplicateField(b, typ)
			}
		}
	}
}

// TestNumberErrors sends numbers that fields cannot hold: the reason
// quotes the number as written and says what is wrong with it. Other
// type errors keep their wording.
func TestNumberErrors(t *testing.T) {
	const (
		del    = `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[%s]}`
		update = `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":%s,"SequenceNumberHighOrder":%s}`
		add    = `{"id":1,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[%s]}`
		u64    = "expected a number from 0 to 18446744073709551615, got "
		u32    = "expected a number from 0 to 4294967295, got "
		u16    = "expected a number from 0 to 65535, got "
	)
	sa := func(spi, more string) string {
		return fmt.Sprintf(add, `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":`+spi+`,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"00"`+more+`}`)
	}
	tests := []struct {
		line   string
		reason string
	}{
		{fmt.Sprintf(del, "-1"), `field "handles": ` + u64 + `-1`},
		{fmt.Sprintf(del, "1.5"), `field "handles": ` + u64 + `1.5 (not a whole number)`},
		{fmt.Sprintf(del, "1e2"), `field "handles": ` + u64 + `1e2 (write whole numbers without an exponent, like 100)`},
		{fmt.Sprintf(del, "1.25E+2"), `field "handles": ` + u64 + `1.25E+2 (write whole numbers without an exponent, like 125)`},
		{fmt.Sprintf(del, "1000e-1"), `field "handles": ` + u64 + `1000e-1 (write whole numbers without an exponent, like 100)`},
		{fmt.Sprintf(del, "12.0"), `field "handles": ` + u64 + `12.0 (write whole numbers without a decimal point, like 12)`},
		{fmt.Sprintf(del, "-0"), `field "handles": ` + u64 + `-0 (write 0 without a minus sign)`},
		{fmt.Sprintf(del, "1e999"), `field "handles": ` + u64 + `1e999`},
		{fmt.Sprintf(del, "2e-999"), `field "handles": ` + u64 + `2e-999 (not a whole number)`},
		// Too many digits to tell from a key: described, not shown.
		{fmt.Sprintf(del, "18446744073709551616"), `field "handles": ` + u64 + `a number of 20 characters (not shown: it may hold a key)`},
		{fmt.Sprintf(update, "-1", "0"), `field "Spi": ` + u32 + `-1`},
		{fmt.Sprintf(update, "4294967296", "0"), `field "Spi": ` + u32 + `4294967296`},
		{fmt.Sprintf(update, "4097", "0.5"), `field "SequenceNumberHighOrder": ` + u32 + `0.5 (not a whole number)`},
		{`{"id":1,"oid":"VNIC_QUERY_SA","handle":1e0}`, `field "handle": ` + u64 + `1e0 (write whole numbers without an exponent, like 1)`},
		{`{"id":1,"oid":"VNIC_REQUEST_DELETE","handle":-7}`, `field "handle": ` + u64 + `-7`},
		{sa("-1", ""), `field "SecAssoc.Spi": ` + u32 + `-1`},
		{sa("4097.5", ""), `field "SecAssoc.Spi": ` + u32 + `4097.5 (not a whole number)`},
		{sa("4097", `,"KeyLength":2e1`), `field "KeyLength": ` + u32 + `2e1 (write whole numbers without an exponent, like 20)`},
		{sa("4097", `,"vnic":{"udp":{"dport":70000}}`), `field "vnic.udp.dport": ` + u16 + `70000`},
		{sa("4097", `,"vnic":{"initial_seq":-2}`), `field "vnic.initial_seq": ` + u64 + `-2`},
		{sa("4097", `,"vnic":{"lifetime":{"hard_bytes":1.5e3}}`), `field "vnic.lifetime.hard_bytes": ` + u64 + `1.5e3 (write whole numbers without an exponent, like 1500)`},
		{sa("4097", `,"vnic":{"pair":0.1}`), `field "vnic.pair": ` + u64 + `0.1 (not a whole number)`},
		{sa("4097", `,"vnic":{"replay_window":6.4e1}`), `field "vnic.replay_window": expected a whole number, got 6.4e1 (write whole numbers without an exponent, like 64)`},
		{sa("4097", `,"vnic":{"replay_window":64.5}`), `field "vnic.replay_window": expected a whole number, got 64.5`},
		{sa("4097", `,"vnic":{"replay_window":1e30}`), `field "vnic.replay_window": expected a whole number, got 1e30 (too large)`},
		{sa("4097", `,"vnic":{"replay_window":-1e30}`), `field "vnic.replay_window": expected a whole number, got -1e30 (too small)`},
		{sa("4097", `,"vnic":{"selectors":[{"proto":256}]}`), `selector proto: expected a protocol number from 0 to 255 or a name such as "tcp", got 256`},
		{sa("4097", `,"vnic":{"selectors":[{"proto":6.0}]}`), `selector proto: expected a protocol number from 0 to 255 or a name such as "tcp", got 6.0 (write whole numbers without a decimal point, like 6)`},
		// Other type errors are as before.
		{sa(`"x"`, ""), `field "SecAssoc.Spi": ` + u32 + `a JSON string`},
		{fmt.Sprintf(del, "true"), `field "handles": ` + u64 + `a JSON bool`},
		{sa("4097", `,"direction":5`), `field "direction": expected a string, got a JSON number`},
		{sa("4097", `,"vnic":5`), `field "vnic": expected a JSON object, got a JSON number`},
		{sa("4097", `,"vnic":{"selectors":[{"proto":true}]}`), `selector proto: expected a protocol number from 0 to 255 or a name such as "tcp"`},
	}
	s, _, _ := fuzzServer()
	for _, tt := range tests {
		m, out := handleLine(t, s, tt.line)
		if m["status"] != "NDIS_STATUS_INVALID_PARAMETER" || m["reason"] != tt.reason {
			t.Errorf("%s:\n got %s\nwant reason %q", tt.line, out, tt.reason)
		}
	}
}

// TestAnyJSONID sends requests whose id is a number that no Go number
// holds: it is a valid id, echoed as sent, whatever the request.
func TestAnyJSONID(t *testing.T) {
	s, _, _ := fuzzServer()
	for _, line := range []string{
		`{"id":1e999,"oid":"VNIC_STATISTICS"}`,
		`{"id":1e999,"oid":"VNIC_QUERY_SA"}`,
		`{"id":-1e999,"oid":"VNIC_REQUEST_DELETE","handle":1}`,
		`{"id":1e999,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":4097,"SequenceNumberHighOrder":1}`,
	} {
		r := s.handle([]byte(line))
		out, _ := json.Marshal(r.body)
		var h struct {
			ID     json.RawMessage `json:"id"`
			Reason string          `json:"reason"`
		}
		json.Unmarshal(out, &h)
		want := strings.TrimPrefix(strings.SplitN(line, ",", 2)[0], `{"id":`)
		if string(h.ID) != want || strings.Contains(h.Reason, "field") {
			t.Errorf("%s: got %s, want the id %s echoed and no complaint about it", line, out, want)
		}
	}
}

// TestServerRequestTypes checks that the structs the server reads
// UPDATE_SA, VNIC_QUERY_SA and VNIC_REQUEST_DELETE into take the fields
// of the request types the protocol documents, no more and no fewer.
func TestServerRequestTypes(t *testing.T) {
	for _, c := range []struct{ server, documented reflect.Type }{
		{reflect.TypeFor[updateSARequest](), reflect.TypeFor[UpdateSARequest]()},
		{reflect.TypeFor[handleRequest](), reflect.TypeFor[HandleRequest]()},
	} {
		got, want := map[string]string{}, map[string]string{}
		for _, f := range fieldsOf(c.server) {
			got[f.name] = f.typ.String()
		}
		for _, f := range fieldsOf(c.documented) {
			want[f.name] = f.typ.String()
		}
		for _, m := range []map[string]string{got, want} {
			for _, name := range []string{"id", "oid"} { // the envelope's, read as they are
				if _, ok := m[name]; ok {
					m[name] = "envelope"
				}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v has the fields %v; %v has %v", c.server, got, c.documented, want)
		}
	}
}
