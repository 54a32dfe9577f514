package header

import (
	"bytes"
	"errors"
	"testing"

	"vnic/internal/packettest"
)

// FuzzParseOuter checks that ParseOuter never panics nor writes to its
// input, that what it accepts is within the input, and that an accepted
// packet's Outer, encoded again in front of the same ESP bytes (and the
// same options or extension headers), parses back the same.
func FuzzParseOuter(f *testing.F) {
	esp := espPayload(40)
	f.Add(ipv4Pkt(nil, ProtoESP, flagDF, esp))
	f.Add(ipv6Pkt(ProtoUDP, nil, udpSeg(4500, 4500, esp)))
	f.Add(ipv4Pkt(nil, ProtoUDP, 0, udpSeg(4500, 4500, esp)))
	f.Add(ipv4Pkt(v4Opts(8), ProtoESP, 0, esp))
	f.Add(ipv6Pkt(ProtoESP, nil, esp))
	f.Add(ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8}, ext{ProtoRouting, 24}), esp))
	f.Add(ipv6Pkt(ProtoFragment, extChain(ProtoESP, ext{ProtoFragment, 8}), esp))
	f.Add([]byte("garbage, not a packet at all......"))
	f.Add([]byte{0x45})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		o, payload, end, err := ParseOuter(data)
		if !bytes.Equal(in, data) {
			t.Fatal("ParseOuter wrote to its input")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFragment) && !errors.Is(err, ErrNotESP) {
				t.Fatalf("ParseOuter: unexpected error %v", err)
			}
			return
		}
		if payload < 0 || payload > end || end > len(data) {
			t.Fatalf("payload %d, end %d, input %d bytes", payload, end, len(data))
		}
		if o.UDP && (o.Opts != 0 || o.OptsNext != 0) {
			t.Fatalf("ESP-in-UDP with Opts %d, OptsNext %d", o.Opts, o.OptsNext)
		}
		if o.Opts == 0 && o.OptsNext != 0 {
			t.Fatalf("OptsNext %d without Opts", o.OptsNext)
		}
		if !o.UDP && o.Size() != payload {
			t.Fatalf("raw ESP: Size() = %d, ESP at %d (%+v)", o.Size(), payload, o)
		}

		esp := o.Size()
		buf := make([]byte, esp+end-payload)
		copy(buf[esp:], data[payload:end])
		if !o.UDP {
			copy(buf[esp-o.Opts:esp], data[payload-o.Opts:payload])
		}
		if start := o.Encode(buf, esp, len(buf)); start != 0 {
			t.Fatalf("Encode = %d, want 0", start)
		}
		want := o
		got, p2, e2, err := ParseOuter(buf)
		if err != nil {
			t.Fatalf("ParseOuter of the encoded %+v: %v", o, err)
		}
		if got != want {
			t.Fatalf("re-encoded Outer parsed as %+v\nwant                        %+v", got, want)
		}
		if p2 != esp || e2 != len(buf) {
			t.Fatalf("re-encoded: payload, end = %d, %d, want %d, %d", p2, e2, esp, len(buf))
		}
		if o.Is6() {
			if o.UDP {
				u := buf[40:]
				if c := packettest.Checksum(u, packettest.PseudoHeader(buf, ProtoUDP, len(u))); c != 0 {
					t.Fatalf("re-encoded UDP checksum does not verify: %#x", c)
				}
			}
		} else if c := packettest.Checksum(buf[:IPv4MinSize+o.Opts], 0); !o.UDP && c != 0 {
			t.Fatalf("re-encoded IPv4 header checksum does not verify: %#x", c)
		}
	})
}
