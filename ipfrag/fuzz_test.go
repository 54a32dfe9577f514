package ipfrag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var fuzzMaxBytes = []int{0, 2108, 4216, 8000, 70000, 140000, 300000, 1 << 20}

// fuzzDatagrams is the data of the datagrams FuzzReassembler's fragments
// come from, one per identification, so that fragments agree unless the
// input alters them.
var fuzzDatagrams = func() [][]byte {
	d := make([][]byte, 4)
	for i := range d {
		d[i] = pattern(65536, byte(i*61))
	}
	return d
}()

// FuzzReassembler runs a sequence of IPv4 and IPv6 fragments and timer
// ticks derived from the input on a Reassembler and on refReassembler, and
// demands the same results, dropped counts, datagrams held, bytes held
// (never over MaxBytes) and reassembled packets; a reassembled packet must
// stay intact until released. Input: byte 0 picks MaxDatagrams (1 to 4)
// and MaxBytes, byte 1 the headroom and tailroom; then 6-byte operations.
//
// An operation's byte 0 picks what it does: below 12, add a fragment; 12
// and 13, advance the time by byte 1 seconds and expire; 14 and 15,
// release the oldest datagram held by the test. For a fragment, byte 1's
// bits: 0-1 the datagram, 2 offsets anywhere (else in the first 256
// bytes), 3 any length (else a multiple of 8), 4 lengths 64 times larger,
// 5 the last fragment, 6 IPv6 (else IPv4), 7 (IPv4) protocol 0 (else 17);
// bytes 2-3 the offset, byte 4 the length. Byte 5: for IPv4, bits 0-1 the
// options (none, copied, a 60-byte header) and the others the TTL; for
// IPv6, bits 0-1 the extension headers before the Fragment header (none,
// Hop-by-Hop, Hop-by-Hop, Destination Options and Routing, a 256-byte
// Hop-by-Hop: the longest unfragmentable part taken), bits 2-3 the
// Fragment header's next header (No Next Header, UDP, TCP, Destination
// Options) and the others the hop limit. Byte 0 10 alters the data, 11
// damages the headers. IPv6 datagrams have the addresses of IPv4's (as
// their first 4 bytes) and the same identifications, so that only the
// family (and the protocol) tells them apart.
func FuzzReassembler(f *testing.F) {
	op := func(b ...byte) []byte { return b }
	seed := func(cfg, room byte, ops ...[]byte) []byte {
		b := []byte{cfg, room}
		for _, o := range ops {
			b = append(b, append(o, make([]byte, 6-len(o))...)...)
		}
		return b
	}
	f.Add(seed(0, 0, op(0, 0, 0, 0, 1), op(0, 0x20, 2, 0, 3), op(14)))                          // in order
	f.Add(seed(0, 0, op(0, 0x20, 2, 0, 3), op(0, 0, 1, 0, 0), op(0, 0, 0, 0, 0)))               // reversed
	f.Add(seed(0, 5, op(0, 0, 0, 0, 1, 2), op(0, 0, 0, 0, 1, 5), op(0, 0x20, 2, 0, 3), op(14))) // a duplicate first fragment
	f.Add(seed(1, 0, op(0, 0, 0, 0, 1), op(0, 1, 0, 0, 1), op(0, 2, 0, 0, 1), op(0, 0x21, 2, 0, 3), op(0, 2, 0, 0, 1)))
	f.Add(seed(3<<2, 0x41, op(0, 0x14, 0, 0, 7), op(0, 0x14, 2, 0, 0)))                            // cannot grow
	f.Add(seed(0, 0x41, op(0, 0x14, 0, 0, 7), op(0, 0x34, 2, 0, 0), op(15), op(0, 0x14, 0, 0, 7))) // grows
	f.Add(seed(0, 0, op(0, 0, 0, 0, 1), op(12, 29), op(12, 1), op(0, 0, 0, 0, 1), op(13, 30)))     // expires
	f.Add(seed(2, 0x80, op(0, 0, 0, 0, 3), op(10, 0, 0, 0, 3), op(0, 0, 0, 0, 3), op(11, 0, 4, 0, 0, 1), op(11, 0, 4, 0, 0, 2)))
	f.Add(seed(0, 0, op(0, 0x28, 3, 0, 4), op(0, 0x28, 3, 0, 4), op(0, 0, 0, 0, 2))) // last, partial block, first
	f.Add(seed(0, 0, op(0, 0x2c, 0x1f, 0xf9, 23), op(0, 0, 0, 0, 0, 2)))             // too long with a 60-byte header
	f.Add(seed(0, 0, op(0, 0x34, 0x1f, 0xf0, 10), op(0, 0x04, 0, 0, 0, 2), op(0, 0x14, 0, 0, 0xff)))
	f.Add(seed(0, 0, op(0, 0x40, 0, 0, 1, 1), op(0, 0x60, 2, 0, 3, 2), op(14)))                               // IPv6, in order
	f.Add(seed(0, 0, op(0, 0x60, 2, 0, 3, 3), op(0, 0x40, 1, 0, 0, 7), op(0, 0x40, 0, 0, 0, 4), op(14)))      // IPv6, reversed
	f.Add(seed(1, 0, op(0, 0x80, 0, 0, 1), op(0, 0x40, 0, 0, 1), op(0, 0xa0, 2, 0, 3), op(0, 0x60, 2, 0, 3))) // both families, same key bytes
	f.Add(seed(0, 0, op(0, 0x40, 0, 0, 0, 8), op(0, 0x40, 0, 0, 2, 8), op(0, 0x40, 0, 0, 1, 12)))             // TCP, too short then long enough
	f.Add(seed(0, 0, op(0, 0x40, 0, 0, 0, 0x2c), op(0, 0x41, 0, 0, 7, 0x0d), op(0, 0x61, 8, 0, 3, 0)))        // Destination Options after the Fragment header
	f.Add(seed(0, 0, op(11, 0x40, 0, 0, 1, 0), op(11, 0x40, 0, 0, 1, 0x10), op(11, 0x40, 0, 0, 1, 0x20), op(11, 0x40, 0, 0, 1, 0x30)))
	f.Add(seed(0, 0, op(0, 0x74, 0x1f, 0xff, 0, 1), op(0, 0x54, 0x1f, 0xf0, 0xff, 0), op(0, 0x40, 0, 0, 0, 1))) // too long with a Hop-by-Hop header
	f.Add(seed(0, 0, op(0, 0x40, 0, 0, 1, 3), op(10, 0x40, 0, 0, 1, 3), op(0, 0x61, 2, 0, 3, 3)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		cfg := Config{
			MaxDatagrams: 1 + int(data[0]&3),
			MaxBytes:     fuzzMaxBytes[data[0]>>2&7],
			Headroom:     int(data[1] & 0x3f),
			Tailroom:     int(data[1]>>6) * 20,
		}
		r := NewReassembler(cfg)
		m := newRefReassembler(cfg)
		maxBytes := m.maxBytes
		now := t0
		type outstanding struct {
			d    Datagram
			want []byte
		}
		var out []outstanding
		data = data[2:]
		for step := 0; len(data) >= 6 && step < 2000; step++ {
			o := data[:6]
			data = data[6:]
			switch kind := o[0] % 16; {
			case kind < 12:
				pkt := fuzzFragment(o)
				d, res, n := r.Add(pkt, now)
				wres, wn, want := m.add(pkt, now)
				if res != wres || n != wn {
					t.Fatalf("step %d: % x: %v, %d dropped; want %v, %d", step, o, res, n, wres, wn)
				}
				if res == Complete {
					if !bytes.Equal(d.Packet(), want) {
						t.Fatalf("step %d: reassembled\n% x\nwant\n% x", step, d.Packet(), want)
					}
					if d.Start < cfg.Headroom || cap(d.Buf)-d.End < cfg.Tailroom {
						t.Fatalf("step %d: room %d before, %d after", step, d.Start, cap(d.Buf)-d.End)
					}
					out = append(out, outstanding{d, want})
				}
			case kind < 14:
				now = now.Add(time.Duration(o[1]) * time.Second)
				dg, fr := r.Expire(now)
				wdg, wfr := m.expire(now)
				if dg != wdg || fr != wfr {
					t.Fatalf("step %d: expired %d, %d; want %d, %d", step, dg, fr, wdg, wfr)
				}
			default:
				if len(out) > 0 {
					if !bytes.Equal(out[0].d.Packet(), out[0].want) {
						t.Fatalf("step %d: a datagram changed before its release", step)
					}
					r.Release(out[0].d)
					out = out[1:]
				}
			}
			if r.Len() != len(m.held) || r.Bytes() != m.bytes || r.Bytes() > maxBytes {
				t.Fatalf("step %d: %d datagrams in %d bytes; want %d in %d, at most %d", step, r.Len(), r.Bytes(), len(m.held), m.bytes, maxBytes)
			}
		}
		for _, o := range out {
			if !bytes.Equal(o.d.Packet(), o.want) {
				t.Fatal("a datagram changed before its release")
			}
		}
	})
}

// fuzzFragment builds the fragment of a FuzzReassembler operation.
func fuzzFragment(o []byte) []byte {
	id := int(o[1] & 3)
	off := int(o[2]) * 8
	if o[1]&4 != 0 {
		off = int(binary.BigEndian.Uint16(o[2:])) * 8 % 65536
	}
	n := (int(o[4])%8 + 1) * 8
	if o[1]&8 != 0 {
		n = int(o[4]) + 1
	}
	if o[1]&0x10 != 0 {
		n *= 64
	}
	n = min(n, 65536-off)
	if o[1]&0x40 != 0 {
		return fuzzFragment6(o, id, off, n)
	}
	var opts []opt
	switch o[5] & 3 {
	case 1:
		opts = []opt{optRA}
	case 2:
		opts = []opt{nop, optRR, optRA, optTS, optSec}
	}
	proto := byte(17)
	if o[1]&0x80 != 0 {
		proto = 0
	}
	p := ipv4Packet(opts, proto, uint16(id), fuzzDatagrams[id][off:off+n])
	if len(p) > 65535 {
		p = p[:65535]
		binary.BigEndian.PutUint16(p[2:], 65535)
	}
	setFrag4(p, off, o[1]&0x20 == 0)
	p[8] = o[5] >> 2 // TTL: duplicates may differ in it
	fixChecksum4(p)
	switch o[0] % 16 {
	case 10:
		p[len(p)-1-int(o[5])%(len(p)-int(p[0]&15)*4)]++
	case 11:
		switch o[5] % 4 {
		case 0:
			p[10]++ // checksum
		case 1:
			p[0] = 0x40 | byte(o[5]>>2)&15
		case 2:
			binary.BigEndian.PutUint16(p[2:], uint16(o[5])*37)
		case 3:
			p = p[:int(o[5])%min(len(p), 24)]
		}
	}
	return p
}

// The extension headers before the Fragment header, and the Fragment
// header's next headers, of FuzzReassembler's IPv6 fragments.
var (
	fuzzUnfrag = [][]ext{nil, {{0, 8}}, {{0, 8}, {60, 8}, {43, 24}}, {{0, 256}}}
	fuzzNext6  = []byte{59, 17, 6, 60}
)

// fuzzFragment6 builds the IPv6 fragment of a FuzzReassembler operation:
// the data of datagram id from off, n bytes of it.
func fuzzFragment6(o []byte, id, off, n int) []byte {
	exts := fuzzUnfrag[o[5]&3]
	damage := -1
	if o[0]%16 == 11 {
		damage = int(o[5]>>4) % 4
	}
	if damage == 2 {
		exts = []ext{{0, 264}} // a 304-byte unfragmentable part
	}
	p := frag6(exts, fuzzNext6[o[5]>>2&3], uint32(id), fuzzDatagrams[id][off:off+n], off, o[1]&0x20 == 0)
	copy(p[8:24], make([]byte, 16))
	copy(p[8:], testSrc4[:])
	copy(p[24:40], make([]byte, 16))
	copy(p[24:], testDst4[:])
	if len(p) > 40+65535 {
		p = p[:40+65535]
		n = len(p) - (40 + unfragLen(exts) + 8)
	}
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	p[7] = o[5] >> 4 // hop limit: duplicates may differ in it
	switch {
	case o[0]%16 == 10:
		p[len(p)-1-int(o[5])%n]++
	case damage == 0:
		binary.BigEndian.PutUint16(p[4:], uint16(o[5])*37)
	case damage == 1 && o[4]&1 == 0:
		p[0] = o[4]&0xf0 | p[0]&15 // the version
	case damage == 1:
		at := 6 // the next header field that names the Fragment header
		if len(exts) > 0 {
			at = unfragLen(exts[:len(exts)-1])
		}
		p[at] = o[2]
	case damage == 3:
		p = p[:int(o[4])%min(len(p), 64)]
	}
	return p
}

// FuzzFragment builds an IPv4 or IPv6 packet from the input (or takes the
// input as one), fragments it at an MTU from the input, checks the
// fragments with checkFragments4 or checkFragments6, and reassembles them
// with a Reassembler, in an order from the input, into the packet (but an
// IPv4 packet that is itself a fragment; and a Reassembler must refuse
// the fragments of an IPv6 packet whose unfragmentable part is longer than
// 296 bytes). Input: byte 0 bit 0 IPv6, bit 1 raw packet; bytes 1-2 the MTU;
// then, for a built packet, bytes 3-4 the payload length, byte 5 (IPv4)
// the fragment flags or (IPv6) the upper-layer protocol, byte 6 the order
// of arrival, and the rest options or extension headers (2 bytes each);
// for a raw packet, the packet from byte 3.
func FuzzFragment(f *testing.F) {
	f.Add([]byte{0, 0x05, 0xdc, 0x1f, 0x40, 0, 0})
	f.Add([]byte{0, 0x00, 0x44, 0x03, 0xe8, 0, 1, 1, 0, 2, 0, 3, 0, 4, 0})
	f.Add([]byte{0, 0x02, 0x40, 0x0b, 0xb8, 3, 2, 2, 0, 1, 0})
	f.Add([]byte{0, 0x00, 0x4b, 0xff, 0xff, 0, 3, 3, 0, 3, 0, 3, 0})
	f.Add([]byte{1, 0x05, 0x00, 0x1f, 0x40, 17, 0})
	f.Add([]byte{1, 0x05, 0x00, 0x1f, 0x40, 50, 0, 0, 0, 43, 2, 60, 0})
	f.Add([]byte{1, 0x00, 0x80, 0x07, 0xd0, 6, 0, 60, 1, 51, 3, 43, 0})
	f.Add(append([]byte{2, 0x00, 0x40}, ipv4Packet([]opt{optRA, optRR}, 6, 3, pattern(200, 1))...))
	f.Add(append([]byte{3, 0x00, 0x80}, ipv6Packet([]ext{{0, 8}, {43, 16}}, 17, pattern(300, 1))...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		mtu := int(binary.BigEndian.Uint16(data[1:]))
		v6, raw := data[0]&1 != 0, data[0]&2 != 0
		switch {
		case raw && !v6:
			fuzzRaw4(t, bytes.Clone(data[3:]), mtu)
		case raw:
			fuzzRaw6(t, bytes.Clone(data[3:]), mtu)
		case len(data) < 7:
		case !v6:
			fuzzBuilt4(t, data, mtu)
		default:
			fuzzBuilt6(t, data, mtu)
		}
	})
}

var fuzzOpts = []opt{nop, optRA, optRR, optTS, optSec, {0x1e, []byte{1}}, {0x9e, []byte{1, 2, 3}}, {0x44, nil}}

func fuzzBuilt4(t *testing.T, data []byte, mtu int) {
	var opts []opt
	n := 0
	for b := data[7:]; len(b) >= 2; b = b[2:] {
		o := fuzzOpts[int(b[0])%len(fuzzOpts)]
		if n+len(o.encode()) > 40 {
			break
		}
		n += len(o.encode())
		opts = append(opts, o)
	}
	hl := 20 + len(encodeOpts(opts, false))
	size := int(binary.BigEndian.Uint16(data[3:])) % (65536 - hl)
	pkt := ipv4Packet(opts, 17, 0x1234, pattern(size, data[6]))
	fragment := data[5]&3 != 0
	if fragment {
		off := int(data[5]>>2) * 8 * 97 % 65536
		if off+size > 65515 {
			off = 0
		}
		setFrag4(pkt, off, data[5]&1 != 0)
	}
	bound := 60 // enough for any header, where it fits
	if mtu < 68 {
		bound = hl
	}
	frags, err := FragmentIPv4(pkt, mtu, make([]byte, ScratchSizeIPv4(len(pkt), mtu, bound)), nil)
	switch {
	case len(pkt) <= mtu:
		if err != nil || len(frags) != 1 || &frags[0][0] != &pkt[0] {
			t.Fatalf("a packet that fits: %d fragments, %v", len(frags), err)
		}
		return
	case mtu < hl+8:
		if !errors.Is(err, ErrMTU) {
			t.Fatalf("mtu %d, header %d: %v, want ErrMTU", mtu, hl, err)
		}
		return
	case err != nil:
		t.Fatal(err)
	}
	if _, err := FragmentIPv4(pkt, mtu, make([]byte, ScratchSizeIPv4(len(pkt), mtu, hl)), nil); err != nil {
		t.Fatalf("with the scratch for its own header length: %v", err)
	}
	if err := checkFragments4(pkt, mtu, frags); err != nil {
		t.Fatal(err)
	}
	if fragment {
		return
	}
	checkReassembly(t, pkt, frags, uint64(data[6]), false)
}

// checkReassembly gives frags, the fragments of pkt, to a Reassembler in
// an order from seed, and checks that it reassembles pkt, or, if refused,
// that it refuses every fragment as Invalid.
func checkReassembly(t *testing.T, pkt []byte, frags [][]byte, seed uint64, refused bool) {
	t.Helper()
	r := NewReassembler(Config{})
	frags = slices.Clone(frags)
	rand.New(rand.NewPCG(seed, 0)).Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
	for i, p := range frags {
		if !IsFragment(p) {
			t.Fatalf("fragment %d of %d: not a fragment", i, len(frags))
		}
		d, res, _ := r.Add(p, t0)
		switch {
		case refused:
			if res != Invalid || r.Len() != 0 {
				t.Fatalf("fragment %d of %d: %v, want invalid", i, len(frags), res)
			}
		case i < len(frags)-1 && res != Held || i == len(frags)-1 && (res != Complete || !bytes.Equal(d.Packet(), pkt)):
			t.Fatalf("fragment %d of %d: %v", i, len(frags), res)
		}
	}
}

// refOptionsOK reports whether the IPv4 options field o is well formed.
func refOptionsOK(o []byte) bool {
	for i := 0; i < len(o); {
		switch o[i] {
		case 0:
			return true
		case 1:
			i++
			continue
		}
		if i+1 >= len(o) || o[i+1] < 2 || i+int(o[i+1]) > len(o) {
			return false
		}
		i += int(o[i+1])
	}
	return true
}

func fuzzRaw4(t *testing.T, pkt []byte, mtu int) {
	if len(pkt) >= 20 && len(pkt) <= 65535 {
		pkt[0] = 0x40 | pkt[0]&15
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[6] &^= 0x40
	}
	frags, err := FragmentIPv4(pkt, mtu, make([]byte, ScratchSizeIPv4(len(pkt), mtu, 60)), nil)
	if err != nil {
		if errors.Is(err, ErrMalformed) && len(pkt) >= 20 && len(pkt) <= 65535 {
			hl := int(pkt[0]&15) * 4
			if hl >= 20 && hl <= len(pkt) && refOptionsOK(pkt[20:hl]) && int(binary.BigEndian.Uint16(pkt[6:])&0x1fff)*8+len(pkt)-hl <= 65515 {
				t.Fatalf("a well-formed packet refused: % x", pkt[:hl])
			}
		}
		return
	}
	if len(pkt) <= mtu {
		return
	}
	if err := checkFragments4(pkt, mtu, frags); err != nil {
		t.Fatal(err)
	}
}

var fuzzExts = []byte{0, 43, 60, 51}

func fuzzBuilt6(t *testing.T, data []byte, mtu int) {
	var exts []ext
	total := 0
	for b := data[7:]; len(b) >= 2 && len(exts) < 6; b = b[2:] {
		e := ext{typ: fuzzExts[int(b[0])%len(fuzzExts)], len: 8 * (int(b[1]%32) + 1)}
		if e.typ == 51 {
			e.len = 4 * (int(b[1]%64) + 3)
		}
		exts = append(exts, e)
		total += e.len
	}
	proto := data[5]
	if proto == 0 || proto == 43 || proto == 60 || proto == 51 || proto == 44 {
		proto = 59
	}
	size := int(binary.BigEndian.Uint16(data[3:])) % (65536 - total)
	pkt := ipv6Packet(exts, proto, pattern(size, data[6]))
	unfrag, nextAt, ok := refUnfrag(pkt)
	if !ok {
		t.Fatal("the test's walk failed on a packet it built")
	}
	chain := 40 + total - unfrag
	switch proto {
	case 6:
		chain += 20
	case 17, 50, 58:
		chain += 8
	}
	chain = min(chain, len(pkt)-unfrag)
	id := binary.BigEndian.Uint32(data[3:7])
	frags, err := FragmentIPv6(pkt, mtu, id, make([]byte, ScratchSizeIPv6(len(pkt), mtu, unfrag)), nil)
	switch {
	case len(pkt) <= mtu:
		if err != nil || len(frags) != 1 || &frags[0][0] != &pkt[0] {
			t.Fatalf("a packet that fits: %d fragments, %v", len(frags), err)
		}
		return
	case mtu < unfrag+16 || chain > (mtu-unfrag-8)&^7:
		if !errors.Is(err, ErrMTU) {
			t.Fatalf("mtu %d, unfragmentable part %d, chain %d: %v, want ErrMTU", mtu, unfrag, chain, err)
		}
		return
	case err != nil:
		t.Fatal(err)
	}
	if err := checkFragments6(pkt, mtu, id, unfrag, nextAt, frags); err != nil {
		t.Fatal(err)
	}
	checkReassembly(t, pkt, frags, uint64(data[6]), unfrag > 296)
}

// true40 is refUnfrag's result, or 40 for an unfragmentable part that
// cannot be walked.
func true40(unfrag, nextAt int, ok bool) (int, int, bool) {
	if !ok {
		return 40, 6, false
	}
	return unfrag, nextAt, true
}

func fuzzRaw6(t *testing.T, pkt []byte, mtu int) {
	if len(pkt) < 40 || len(pkt) > 65535+40 {
		if _, err := FragmentIPv6(pkt, mtu, 5, nil, nil); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%d bytes: %v, want ErrMalformed", len(pkt), err)
		}
		return
	}
	pkt[0] = 0x60 | pkt[0]&15
	binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
	unfrag, nextAt, ok := true40(refUnfrag(pkt))
	frags, err := FragmentIPv6(pkt, mtu, 5, make([]byte, ScratchSizeIPv6(len(pkt), mtu, unfrag)), nil)
	if err != nil || len(pkt) <= mtu {
		if errors.Is(err, ErrScratch) {
			t.Fatalf("scratch for %d bytes of unfragmentable part: %v", unfrag, err)
		}
		return
	}
	if !ok {
		t.Fatal("fragmented a packet whose extension headers the test cannot walk")
	}
	if err := checkFragments6(pkt, mtu, 5, unfrag, nextAt, frags); err != nil {
		t.Fatal(err)
	}
	checkReassembly(t, pkt, frags, uint64(mtu), unfrag > 296)
}
