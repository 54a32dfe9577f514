package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"vnic/header"

	"vnic/algo"
	"vnic/esn"
	"vnic/ndis"
	"vnic/sadb"
)

// Bits of a FuzzDecapsulate input's opts: which SA receives the packet,
// and what the packet bytes mean.
const (
	fuzzUDP       = 1 << iota // the SA is ESP-in-UDP
	fuzzESN                   // the SA has ESN, its window top just below 2^32 with high bits 7
	fuzzSealed                // data is plaintext for sealFuzzPacket, not an underlay packet
	fuzzSelectors             // the SA admits only UDP from the inner source to the inner destination
)

// fuzzHead is where a FuzzDecapsulate packet starts in its buffer. The
// bytes before it hold fuzzCanary, which nothing may overwrite.
const (
	fuzzHead   = 32
	fuzzCanary = 0xa5
)

// decapFuzz is what FuzzDecapsulate picks an SA from: every algorithm of
// allSpecs, in name order, and every topology; and the inbound SAs it
// installed, by the (alg, top, opts) that name them.
type decapFuzz struct {
	names []string
	specs []algo.Spec
	topos []topo
	sas   map[[3]uint8]fuzzSA
}

// fuzzSA is an inbound SA and the top its window started at.
type fuzzSA struct {
	sa  *sadb.SA
	top uint64
}

// newDecapFuzz returns a decapFuzz with no SA installed yet.
func newDecapFuzz() *decapFuzz {
	all := allSpecs()
	fz := &decapFuzz{names: slices.Sorted(maps.Keys(all)), topos: topologies(), sas: map[[3]uint8]fuzzSA{}}
	for _, n := range fz.names {
		fz.specs = append(fz.specs, all[n])
	}
	return fz
}

// inbound returns the inbound SA that alg, top and opts name, as
// fuzzInbound installs it, with a fresh replay window: each input meets
// the same SA whatever ran before it, so that a finding reproduces.
// Installing an SA costs tens of microseconds, a new window next to
// nothing, hence the cache. The SA's counters carry over, which changes
// nothing: it has no lifetimes.
func (fz *decapFuzz) inbound(t testing.TB, alg, top, opts uint8) *sadb.SA {
	t.Helper()
	k := [3]uint8{alg % uint8(len(fz.specs)), top % uint8(len(fz.topos)), opts & (fuzzUDP | fuzzESN | fuzzSelectors)}
	c, ok := fz.sas[k]
	if !ok {
		cfg, _ := fz.config(alg, top, opts)
		c.sa = fuzzInbound(t, cfg)
		c.top = c.sa.In.Top()
		fz.sas[k] = c
		return c.sa
	}
	w, err := esn.NewWindow(c.sa.In.Size(), c.sa.In.ESN(), c.top)
	if err != nil {
		t.Fatal(err)
	}
	c.sa.In = w
	return c.sa
}

// config returns the configuration of the outbound SA that an input's
// alg, top and opts name (its inbound twin is fuzzInbound's), and the
// topology.
func (fz *decapFuzz) config(alg, top, opts uint8) (sadb.Config, topo) {
	tp := fz.topos[int(top)%len(fz.topos)]
	spec := fz.specs[int(alg)%len(fz.specs)]
	spec.ESN = opts&fuzzESN != 0
	cfg := sadb.Config{Mode: tp.mode, Src: tp.outerA, Dst: tp.outerB, SPI: 0x2000, Algo: spec,
		Encap: sadb.Encap{UDP: opts&fuzzUDP != 0}}
	if spec.ESN {
		cfg.SeqHigh, cfg.InitialSeq = 7, 0xfffffffe
	}
	if opts&fuzzSelectors != 0 {
		cfg.Selectors = []sadb.Selector{{
			Src:   netip.PrefixFrom(tp.innerA, tp.innerA.BitLen()),
			Dst:   netip.PrefixFrom(tp.innerB, tp.innerB.BitLen()),
			Proto: header.ProtoUDP,
		}}
	}
	return cfg, tp
}

// fuzzInbound installs, in a table of its own, the inbound SA that pair
// would install for cfg.
func fuzzInbound(t testing.TB, cfg sadb.Config) *sadb.SA {
	t.Helper()
	cfg.Direction = sadb.Inbound
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = 64
	}
	if cfg.InitialSeq > 0 {
		cfg.InitialSeq--
	}
	tab := sadb.New(sadb.TableConfig{Capacity: 1})
	res, st := tab.Add([]sadb.Config{cfg})
	if st != ndis.StatusSuccess {
		t.Fatalf("add inbound: %v", res[0].Err)
	}
	return tab.Get(res[0].Handle)
}

// fuzzBuffer returns a buffer for a packet of n bytes at fuzzHead: the
// canary before it and Tailroom of zeros after it.
func fuzzBuffer(n int) []byte {
	buf := make([]byte, fuzzHead+n+Tailroom)
	for i := range fuzzHead {
		buf[i] = fuzzCanary
	}
	return buf
}

// sealFuzzPacket turns data into an underlay packet for sa whose ICV is
// valid, so that fuzzing reaches what Decapsulate does after the integrity
// check. data[0] (an int8) moves the sequence number away from the one
// after the window's top; data[1]&3 is how many 8-byte units of outer
// IPv4 options, or of an IPv6 destination-options header, follow (their
// first two bytes are set for IPv6); the rest is the ESP plaintext:
// payload, padding, pad length, next header. For a block cipher, zeros
// are inserted before the last two bytes to make whole blocks. It reports
// false when data is too short or the packet too long.
func sealFuzzPacket(sa *sadb.SA, data []byte) (p sealedPacket, ok bool) {
	if len(data) < 2 {
		return p, false
	}
	delta, units := int8(data[0]), int(data[1]&3)
	data = data[2:]
	if len(data) < 8*units+espTrailer {
		return p, false
	}
	opt, plain := data[:8*units], data[8*units:]
	c, cfg := sa.Cipher, &sa.Config
	if a := c.Align(); a > 4 && len(plain)%a != 0 {
		n := len(plain)
		plain = slices.Concat(plain[:n-espTrailer], make([]byte, a-n%a), plain[n-espTrailer:])
	}
	v6 := cfg.Dst.Is6()
	ipLen := ipv4MinHeader + len(opt)
	if v6 {
		ipLen = ipv6Header + len(opt)
	}
	udpLen, proto := 0, byte(header.ProtoESP)
	if cfg.Encap.UDP {
		udpLen, proto = udpHeader, header.ProtoUDP
	}
	start := fuzzHead
	esp := start + ipLen + udpLen
	ps := esp + espHeader + c.IVLen()
	end := ps + len(plain) + c.ICVLen()
	if end-start > 0xffff {
		return p, false
	}
	buf := fuzzBuffer(end - start)
	pkt := buf[start:end]
	if v6 {
		h := header.IPv6(pkt)
		h[0] = 6 << 4
		h.SetPayloadLen(len(pkt) - ipv6Header)
		h[6], h[7] = proto, header.DefaultTTL
		s, d := cfg.Src.As16(), cfg.Dst.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		if units > 0 {
			h[6] = header.ProtoDstOpts
			x := pkt[ipv6Header:ipLen]
			copy(x, opt)
			x[0], x[1] = proto, byte(units-1)
		}
	} else {
		h := header.IPv4(pkt)
		h[0] = 0x40 | byte(ipLen/4)
		h.SetTotalLen(len(pkt))
		h[8], h[9] = header.DefaultTTL, proto
		s, d := cfg.Src.As4(), cfg.Dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		copy(h[ipv4MinHeader:], opt)
		h.SetChecksum()
	}
	if udpLen > 0 {
		u := pkt[ipLen:]
		binary.BigEndian.PutUint16(u[0:], 4500)
		binary.BigEndian.PutUint16(u[2:], 4500)
		binary.BigEndian.PutUint16(u[4:], uint16(len(pkt)-ipLen))
	}
	seq := sa.In.Top() + 1 + uint64(int64(delta))
	binary.BigEndian.PutUint32(buf[esp:], cfg.SPI)
	binary.BigEndian.PutUint32(buf[esp+4:], uint32(seq))
	copy(buf[ps:], plain)
	p = sealedPacket{buf: buf, start: start, end: end, ip: slices.Clone(pkt[:ipLen]), plain: plain}
	c.Seal(buf[:end], esp, seq)
	return p, true
}

// sealedPacket is what sealFuzzPacket made: the packet buf[start:end],
// its outer IP header (with IPv4 options or IPv6 extension header) and
// the plaintext it protects.
type sealedPacket struct {
	buf        []byte
	start, end int
	ip, plain  []byte
}

// want returns the packet that Decapsulate must deliver, if it delivers
// one, computed independently from the plaintext: in tunnel mode the
// inner packet its own header delimits (TFC padding after it dropped); in
// transport mode the outer IP header (without IPv4 options or IPv6
// extension headers under ESP-in-UDP, which the UDP socket keeps), naming
// the next header of the trailer and with its length (and IPv4 checksum)
// fixed, then the payload; with ESP-in-UDP, a TCP or UDP payload's checksum is the one
// refChecksum finds for the delivered addresses (RFC 3948 §3.1.2). It
// reports false when the trailer does not delimit a payload.
func (p *sealedPacket) want(cfg *sadb.Config) ([]byte, bool) {
	n := len(p.plain)
	padLen, next := int(p.plain[n-2]), p.plain[n-1]
	if n-espTrailer-padLen < 0 {
		return nil, false
	}
	payload := p.plain[:n-espTrailer-padLen]
	if cfg.Mode == sadb.Tunnel {
		switch {
		case len(payload) >= ipv4MinHeader && payload[0]>>4 == 4 && header.IPv4(payload).TotalLen() <= len(payload):
			return payload[:header.IPv4(payload).TotalLen()], true
		case len(payload) >= ipv6Header && payload[0]>>4 == 6 && ipv6Header+header.IPv6(payload).PayloadLen() <= len(payload):
			return payload[:ipv6Header+header.IPv6(payload).PayloadLen()], true
		}
		return nil, false
	}
	ip := p.ip
	if cfg.Encap.UDP {
		// A UDP socket hands over no IP options or extension headers:
		// the delivered header has none.
		if ip[0]>>4 == 4 {
			ip = slices.Clone(ip[:ipv4MinHeader])
			ip[0] = 0x45
		} else {
			ip = slices.Clone(ip[:ipv6Header])
		}
	}
	out := slices.Concat(ip, payload)
	if out[0]>>4 == 4 {
		out[9] = next
		header.IPv4(out).SetTotalLen(len(out))
		header.IPv4(out).SetChecksum()
	} else {
		if len(ip) > ipv6Header {
			out[ipv6Header] = next
		} else {
			out[6] = next
		}
		header.IPv6(out).SetPayloadLen(len(out) - ipv6Header)
	}
	if cfg.Encap.UDP {
		setRefChecksum(out[:len(ip)], next, out[len(ip):])
	}
	return out, true
}

// setRefChecksum is the test's own model of the NAT-T fix-up: it sets the
// checksum of a TCP segment or UDP datagram (up to its UDP length) seg to
// the RFC 1071 sum over the pseudo-header of ip, computed from scratch
// 16 bits at a time; it leaves alone what Decapsulate must leave alone (a
// zero UDP checksum, a segment too short, a UDP length that does not fit).
func setRefChecksum(ip []byte, proto byte, seg []byte) {
	at := map[byte]int{header.ProtoTCP: 16, header.ProtoUDP: 6}
	off, ok := at[proto]
	if !ok || len(seg) < off+2 {
		return
	}
	if proto == header.ProtoUDP {
		n := int(seg[4])<<8 | int(seg[5])
		if n < 8 || n > len(seg) || seg[6] == 0 && seg[7] == 0 {
			return
		}
		seg = seg[:n]
	}
	var pseudo []byte
	if ip[0]>>4 == 4 {
		pseudo = append(pseudo, ip[12:20]...)
	} else {
		pseudo = append(pseudo, ip[8:40]...)
	}
	pseudo = append(pseudo, byte(len(seg)>>24), byte(len(seg)>>16), byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, proto)
	seg[off], seg[off+1] = 0, 0
	all := append(pseudo, seg...)
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var acc uint32
	for i := 0; i < len(all); i += 2 {
		acc += uint32(all[i])<<8 | uint32(all[i+1])
		acc = acc&0xffff + acc>>16
	}
	c := ^uint16(acc)
	if c == 0 && proto == header.ProtoUDP {
		c = 0xffff
	}
	seg[off], seg[off+1] = byte(c>>8), byte(c)
}

// decapResult is what one pass of a packet through Parse and Decapsulate
// gave.
type decapResult struct {
	parseErr error
	kind     Kind
	err      error // Decapsulate's
	sp       Span  // where the delivered packet lies, if err is nil
}

// decapOnce passes the packet buf[start:end] through Parse and, if it is
// ESP, Decapsulate with sa, and fails t unless every error is a
// classified drop, nothing before start was written, and a delivered
// packet is a well-formed IP packet inside the ESP packet that the SA's
// selectors admit.
func decapOnce(t *testing.T, sa *sadb.SA, buf []byte, start, end int) decapResult {
	t.Helper()
	var r decapResult
	var h Header
	h, r.kind, r.parseErr = parseWire(buf, start, end)
	if r.parseErr != nil {
		if _, ok := ReasonOf(r.parseErr); !ok && !isOuterErr(r.parseErr) {
			t.Fatalf("unclassified Parse error %v", r.parseErr)
		}
		return r
	}
	if r.kind != KindESP {
		return r
	}
	if h.ESP < start || h.End > end || h.ESP+espHeader > h.End {
		t.Fatalf("Parse returned offsets outside the packet [%d, %d): %+v", start, end, h)
	}
	sp, _, err := Decapsulate(sa, &h, buf)
	r.err = err
	for i, b := range buf[:start] {
		if b != fuzzCanary {
			t.Fatalf("Decapsulate wrote byte %d before the packet start %d", i, start)
		}
	}
	if err != nil {
		if _, ok := ReasonOf(err); !ok {
			t.Fatalf("unclassified Decapsulate error %v", err)
		}
		return r
	}
	checkDelivered(t, sa, &h, buf, start, sp)
	r.sp = sp
	return r
}

// checkDelivered fails t unless the packet Decapsulate delivered at sp
// lies within the ESP packet h (in tunnel mode, within its payload), is a
// well-formed IPv4 or IPv6 packet whose length fields match the span (in
// transport mode, with the outer addresses and a valid IPv4 checksum), and
// is admitted by the SA's selectors.
func checkDelivered(t *testing.T, sa *sadb.SA, h *Header, buf []byte, start int, sp Span) {
	t.Helper()
	lo := start
	if sa.Config.Mode == sadb.Tunnel {
		lo = h.ESP + espHeader + sa.Cipher.IVLen()
	}
	if sp.Start < lo || sp.End > h.End-sa.Cipher.ICVLen() || sp.Len() < ipv4MinHeader {
		t.Fatalf("delivered span %+v is not within [%d, %d) of the ESP packet", sp, lo, h.End-sa.Cipher.ICVLen())
	}
	pkt := buf[sp.Start:sp.End]
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		if hl := ip.HeaderLen(); hl < ipv4MinHeader || hl > len(pkt) || ip.TotalLen() != len(pkt) {
			t.Fatalf("delivered IPv4 packet of %d bytes with header length %d and total length %d", len(pkt), hl, ip.TotalLen())
		}
		if sa.Config.Mode == sadb.Transport && header.Fold(header.Sum(pkt[:ip.HeaderLen()], 0)) != 0xffff {
			t.Fatalf("delivered transport-mode IPv4 packet with a bad header checksum: %x", pkt[:ip.HeaderLen()])
		}
	case 6:
		if len(pkt) < ipv6Header || ipv6Header+header.IPv6(pkt).PayloadLen() != len(pkt) {
			t.Fatalf("delivered IPv6 packet of %d bytes whose payload length says otherwise: %x", len(pkt), pkt[:min(len(pkt), ipv6Header)])
		}
	default:
		t.Fatalf("delivered packet is not IPv4 or IPv6: %x", pkt)
	}
	if sa.Config.Mode == sadb.Transport {
		var src, dst netip.Addr
		if pkt[0]>>4 == 4 {
			src, dst = header.IPv4(pkt).Src(), header.IPv4(pkt).Dst()
		} else {
			src, dst = header.IPv6(pkt).Src(), header.IPv6(pkt).Dst()
		}
		if src != h.Src || dst != h.Dst {
			t.Fatalf("transport mode delivered %v -> %v from an ESP packet %v -> %v", src, dst, h.Src, h.Dst)
		}
	}
	if !sa.MatchesAll() {
		if f, ok := FlowOf(pkt); !ok || !sa.Match(f) {
			t.Fatalf("delivered a packet the SA's selectors refuse: flow %+v (%v): %x", f, ok, pkt)
		}
	}
}

// windowMoved reports whether Decapsulate returning err means that the
// packet passed its integrity check and its sequence number was marked as
// received: it succeeded or failed on the trailer or inner packet.
func windowMoved(err error) bool {
	switch err {
	case nil, ErrBadPadding, ErrDummy, ErrBadNextHeader, ErrBadInner, ErrSelector:
		return true
	}
	return false
}

// FuzzDecapsulate feeds packets through Parse and Decapsulate for an
// inbound SA of any algorithm of allSpecs, either mode, any family pair,
// raw or UDP, ESN off or on (the window just below 2^32), with or without
// selectors; the SA's replay window is fresh for every input. An input is
// alg, top (the topology) and opts (the fuzz* bits) choosing the SA, and
// data: an underlay packet, or with fuzzSealed the plaintext that
// sealFuzzPacket protects with a valid ICV, so that the trailer,
// inner-packet, transport and selector checks are fuzzed too. Seeds are
// valid packets of every combination from Encapsulate;
// testdata/fuzz/FuzzDecapsulate holds more (see TestWriteFuzzCorpus).
//
// Nothing may panic; every drop must be classified; nothing may be written
// before the packet; a delivered packet must pass checkDelivered and, for
// a sealed input, equal what sealedPacket.want computes on its own. The
// same bytes are then given to the SA again: a packet that moved the
// window must now be a replay, any other must meet the same fate as
// before.
func FuzzDecapsulate(f *testing.F) {
	fz := newDecapFuzz()
	for alg := range fz.specs {
		for top := range fz.topos {
			for _, opts := range []uint8{0, fuzzUDP, fuzzESN, fuzzUDP | fuzzESN} {
				cfg, tp := fz.config(uint8(alg), uint8(top), opts)
				out, _ := pair(f, cfg)
				buf := newBuf()
				end := udpPacket(buf, Headroom, tp.innerA, tp.innerB, 1, 2, 33)
				sp, _, err := encapWire(out, buf, Headroom, end)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(uint8(alg), uint8(top), opts, buf[sp.Start:sp.End])
			}
		}
	}
	f.Fuzz(func(t *testing.T, alg, top, opts uint8, data []byte) {
		sa := fz.inbound(t, alg, top, opts)
		var buf []byte
		var start, end int
		var sealed sealedPacket
		if opts&fuzzSealed != 0 {
			var ok bool
			if sealed, ok = sealFuzzPacket(sa, data); !ok {
				return
			}
			buf, start, end = sealed.buf, sealed.start, sealed.end
		} else {
			buf, start, end = fuzzBuffer(len(data)), fuzzHead, fuzzHead+len(data)
			copy(buf[start:], data)
		}
		orig := bytes.Clone(buf)
		first := decapOnce(t, sa, buf, start, end)
		if first.err == nil && sealed.buf != nil {
			got := buf[first.sp.Start:first.sp.End]
			if want, ok := sealed.want(&sa.Config); !ok || !bytes.Equal(got, want) {
				t.Fatalf("delivered %x\nwant      %x (%v)", got, want, ok)
			}
		}
		copy(buf, orig)
		again := decapOnce(t, sa, buf, start, end)
		switch {
		case first.parseErr != nil || first.kind != KindESP:
			if again.parseErr != first.parseErr || again.kind != first.kind {
				t.Fatalf("Parse gave %v, kind %d, then %v, kind %d for the same bytes", first.parseErr, first.kind, again.parseErr, again.kind)
			}
		case windowMoved(first.err):
			if again.err != ErrReplay {
				t.Fatalf("a packet that passed the integrity check (then: %v) was not refused as a replay the second time: %v", first.err, again.err)
			}
		case again.err != first.err:
			t.Fatalf("the same packet gave %v, then %v", first.err, again.err)
		}
	})
}

// TestWriteFuzzCorpus writes the named seeds of FuzzDecapsulate and
// FuzzFlowOf to testdata/fuzz when VNIC_WRITE_FUZZ_CORPUS=1; it skips
// otherwise. For FuzzDecapsulate: valid packets across 2^32 with ESN,
// valid packets behind outer IPv4 options and IPv6 extension headers,
// sealed plaintexts of every algorithm and topology, sealed plaintexts
// with each trailer or inner fault, and underlay packets that are not ESP
// or are malformed. For FuzzFlowOf: extension headers, fragments,
// truncated transport headers. Every SA draws a random IV mask, so the
// packets differ from one run to the next: regenerate only when the seeds
// must change.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("VNIC_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set VNIC_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	writeFlowOfCorpus(t, corpusWriter(t, "FuzzFlowOf"))
	fz := newDecapFuzz()
	writeSeed := corpusWriter(t, "FuzzDecapsulate")
	write := func(name string, alg, top, opts uint8, data []byte) { writeSeed(name, alg, top, opts, data) }
	// wire returns the nth packet (from 1) that the outbound SA of alg,
	// top and opts sends for a UDP packet between the inner addresses.
	wire := func(alg, top, opts uint8, nth int) []byte {
		cfg, tp := fz.config(alg, top, opts)
		out, _ := pair(t, cfg)
		for i := 1; ; i++ {
			buf := newBuf()
			end := udpPacket(buf, Headroom, tp.innerA, tp.innerB, 1000, 2000, 21)
			sp, _, err := encapWire(out, buf, Headroom, end)
			if err != nil {
				t.Fatal(err)
			}
			if i == nth {
				return buf[sp.Start:sp.End]
			}
		}
	}
	// sealed returns sealFuzzPacket's input for plaintext plain, no outer
	// options.
	sealed := func(delta int8, plain []byte) []byte { return append([]byte{byte(delta), 0}, plain...) }
	// Every algorithm: ESN across 2^32 (the third packet of an SA that
	// starts at 7:fffffffe is 8:00000000), a sealed valid inner packet
	// that the selectors admit, and a valid packet behind outer IPv4
	// options or an IPv6 destination-options header, which the ICV does
	// not cover; in tunnel and transport mode, over both families.
	for a, name := range fz.names {
		alg := uint8(a)
		for _, top := range []uint8{2, 5} { // tunnel-4in6, transport-6
			tp := fz.topos[top]
			write(fmt.Sprintf("%s-%s-esn-cross", name, tp.name), alg, top, fuzzESN|fuzzUDP, wire(alg, top, fuzzESN|fuzzUDP, 3))
		}
		for _, top := range []uint8{1, 4} { // tunnel-6in4, transport-4
			tp := fz.topos[top]
			inner, next := fuzzInner(tp, header.ProtoUDP)
			write(fmt.Sprintf("%s-%s-sealed", name, tp.name), alg, top, fuzzSealed|fuzzSelectors,
				sealed(0, espPlaintext(inner, next, 0, 16)))
		}
		for _, c := range []struct{ top, opts uint8 }{{0, 0}, {5, fuzzUDP}} { // tunnel-4in4 raw, transport-6 UDP
			tp := fz.topos[c.top]
			write(fmt.Sprintf("%s-%s-outer-options", name, tp.name), alg, c.top, c.opts, withOuterOptions(wire(alg, c.top, c.opts, 1), 2))
		}
	}
	// Trailer and inner faults, sealed with a valid ICV: an AEAD in both
	// modes and families, and a block cipher.
	for _, c := range []struct {
		name string
		top  uint8
	}{{"gcm128", 0}, {"gcm128", 5}, {"cbc128-sha1", 3}} {
		alg := uint8(slices.Index(fz.names, c.name))
		top, tp := c.top, fz.topos[c.top]
		inner, next := fuzzInner(tp, header.ProtoUDP)
		tcp, tcpNext := fuzzInner(tp, header.ProtoTCP)
		pt := func(inner []byte, next byte, tfc int) []byte { return espPlaintext(inner, next, tfc, 16) }
		good := pt(inner, next, 0)
		cases := map[string][]byte{
			"tfc-padding":   pt(inner, next, 24),
			"dummy":         pt(inner, header.ProtoNoNext, 0),
			"next-header":   pt(inner, 99, 0),
			"pad-bytes":     flip(good, len(good)-3),
			"pad-length":    withByte(good, len(good)-2, 0xff),
			"selector":      pt(tcp, tcpNext, 0),
			"inner-short":   pt(inner[:ipv4MinHeader-1], next, 0),
			"empty-payload": pt(nil, next, 0),
		}
		if tp.mode == sadb.Tunnel {
			// The inner length field, IPv4 total or IPv6 payload
			// length, claims 40 bytes more than there are.
			i := 3
			if tp.innerA.Is6() {
				i = 5
			}
			cases["inner-length"] = pt(withByte(inner, i, inner[i]+40), next, 0)
		}
		for what, plain := range cases {
			write(fmt.Sprintf("%s-%s-sealed-%s", c.name, tp.name, what), alg, top, fuzzSealed|fuzzSelectors, sealed(0, plain))
		}
		write(fmt.Sprintf("%s-%s-sealed-esn-cross", c.name, tp.name), alg, top, fuzzSealed|fuzzESN, sealed(3, good))
		write(fmt.Sprintf("%s-%s-sealed-esn-behind", c.name, tp.name), alg, top, fuzzSealed|fuzzESN, sealed(-100, good))
		write(fmt.Sprintf("%s-%s-sealed-seq-zero", c.name, tp.name), alg, top, fuzzSealed, sealed(-1, good))
		write(fmt.Sprintf("%s-%s-sealed-outer-options", c.name, tp.name), alg, top, fuzzSealed|fuzzUDP,
			append([]byte{0, 3}, append(bytes.Repeat([]byte{1}, 24), good...)...))
	}
	// Underlay packets that are not ESP, or malformed.
	buf := newBuf()
	end := udpPacket(buf, 0, v4a, v4b, 4500, 4500, 1)
	buf[end-1] = 0xff
	write("keepalive", 0, 0, fuzzUDP, buf[:end])
	end = udpPacket(buf, 0, v6a, v6b, 4500, 4500, 12)
	clear(buf[ipv6Header+udpHeader : ipv6Header+udpHeader+4])
	write("ike-marker", 0, 3, fuzzUDP, buf[:end])
	w := bytes.Clone(wire(0, 0, 0, 1))
	binary.BigEndian.PutUint16(w[6:], 0x2001) // more fragments, offset 8
	write("fragment-v4", 0, 0, 0, w)
	w = withOuterOptions(wire(0, 3, 0, 1), 1)
	w[6] = header.ProtoFragment
	write("fragment-v6", 0, 3, 0, w)
	w = bytes.Clone(wire(0, 4, 0, 1))
	w[9] = header.ProtoTCP
	write("not-esp", 0, 4, 0, w)
	w = wire(0, 1, fuzzUDP, 1)
	write("udp-length", 0, 1, fuzzUDP, withByte(w, ipv4MinHeader+5, w[ipv4MinHeader+5]+1))
	write("truncated", 0, 0, 0, wire(0, 0, 0, 1)[:ipv4MinHeader+espHeader+3])
	write("encap-mismatch", 0, 0, fuzzUDP, wire(0, 0, 0, 1))
}

// corpusWriter returns a function that writes one seed of the fuzz
// target to testdata/fuzz/target/name, in the "go test fuzz v1" format.
func corpusWriter(t *testing.T, target string) func(name string, vals ...any) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return func(name string, vals ...any) {
		t.Helper()
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case uint8:
				fmt.Fprintf(&b, "byte(%q)\n", v)
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			default:
				t.Fatalf("seed %s: no encoding for %T", name, v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeFlowOfCorpus writes FuzzFlowOf's seeds: IPv6 extension header
// chains, fragments of both families, protocols with and without ports,
// and headers cut short.
func writeFlowOfCorpus(t *testing.T, write func(string, ...any)) {
	buf := newBuf()
	v4 := bytes.Clone(buf[:udpPacket(buf, 0, in4a, in4b, 1000, 2000, 8)])
	v6 := bytes.Clone(buf[:udpPacket(buf, 0, in6a, in6b, 1000, 2000, 8)])
	// ext inserts IPv6 extension headers of the given types, each 8
	// bytes, between the fixed header and the UDP header.
	ext := func(types ...byte) []byte {
		out := slices.Clone(v6[:ipv6Header])
		next := &out[6]
		for _, typ := range types {
			*next = typ
			h := make([]byte, 8)
			h[0] = header.ProtoUDP
			out = append(out, h...)
			next = &out[len(out)-8]
		}
		out = append(out, v6[ipv6Header:]...)
		header.IPv6(out).SetPayloadLen(len(out) - ipv6Header)
		return out
	}
	write("v6-hop-routing-dstopts", ext(header.ProtoHopByHop, header.ProtoRouting, header.ProtoDstOpts))
	first := ext(header.ProtoFragment)
	first[ipv6Header+3] = 1 // M flag, offset 0
	write("v6-first-fragment", first)
	later := ext(header.ProtoFragment)
	later[ipv6Header+2] = 0x01 // offset 32
	write("v6-later-fragment", later)
	write("v6-ext-cut-short", ext(header.ProtoHopByHop, header.ProtoDstOpts)[:ipv6Header+12])
	frag := withByte(v4, 6, 0x20) // more fragments, offset 0: ports present
	frag[7] = 0
	write("v4-first-fragment", frag)
	write("v4-later-fragment", withByte(v4, 7, 0x10))
	write("v4-options", withOuterOptions(v4, 1))
	write("v4-icmp", withByte(v4, 9, 1))
	write("v4-sctp", withByte(v4, 9, header.ProtoSCTP))
	write("v4-udp-cut-short", v4[:ipv4MinHeader+3])
	write("v4-ihl-too-long", withByte(v4[:24], 0, 0x4f))
	write("v6-tcp", withByte(v6, 6, header.ProtoTCP))
	write("v6-header-only", v6[:ipv6Header])
	write("not-ip", withByte(v4, 0, 0x55))
}

// fuzzInner returns a packet from tp.innerA to tp.innerB, UDP or (with
// header.ProtoTCP) numbered TCP, as ESP carries it in tp's mode: the whole packet
// with next header 4 or 41 in tunnel mode, what follows its IP header with
// next header proto in transport mode.
func fuzzInner(tp topo, proto uint8) ([]byte, byte) {
	buf := newBuf()
	end := udpPacket(buf, 0, tp.innerA, tp.innerB, 1000, 2000, 9)
	pkt := buf[:end]
	hl := ipv6Header
	if tp.innerA.Is4() {
		hl = ipv4MinHeader
		pkt[9] = proto
		header.IPv4(pkt).SetChecksum()
	} else {
		pkt[6] = proto
	}
	switch {
	case tp.mode == sadb.Transport:
		return pkt[hl:], proto
	case tp.innerA.Is4():
		return pkt, header.ProtoIPv4
	}
	return pkt, header.ProtoIPv6
}

// espPlaintext returns the ESP plaintext payload || tfc zero bytes ||
// padding 1, 2, ... to a multiple of align || pad length || next.
func espPlaintext(payload []byte, next byte, tfc, align int) []byte {
	p := append(slices.Clone(payload), make([]byte, tfc)...)
	for i := 1; (len(p)+espTrailer)%align != 0; i++ {
		p = append(p, byte(i))
	}
	return append(p, byte(len(p)-len(payload)-tfc), next)
}

// withOuterOptions returns the valid ESP packet pkt with 8*units bytes of
// outer header added: IPv4 NOP options or an IPv6 destination-options
// header of PadN. Neither is covered by the ICV.
func withOuterOptions(pkt []byte, units int) []byte {
	n := 8 * units
	if pkt[0]>>4 == 4 {
		out := slices.Concat(pkt[:ipv4MinHeader], bytes.Repeat([]byte{1}, n), pkt[ipv4MinHeader:])
		h := header.IPv4(out)
		h[0] = 0x40 | byte((ipv4MinHeader+n)/4)
		h.SetTotalLen(len(out))
		h.SetChecksum()
		return out
	}
	x := make([]byte, n)
	x[0], x[1], x[2], x[3] = pkt[6], byte(units-1), 1, byte(n-4)
	out := slices.Concat(pkt[:ipv6Header], x, pkt[ipv6Header:])
	out[6] = header.ProtoDstOpts
	header.IPv6(out).SetPayloadLen(len(out) - ipv6Header)
	return out
}

// flip returns b with byte i inverted.
func flip(b []byte, i int) []byte { return withByte(b, i, ^b[i]) }

// withByte returns a copy of b with byte i set to v.
func withByte(b []byte, i int, v byte) []byte {
	b = slices.Clone(b)
	b[i] = v
	return b
}

// TestDecapsulateFuzzHarness checks that the fuzz harness itself works:
// each valid sealed plaintext is delivered, and each fault is dropped
// under the reason it stands for (a harness that never reached them would
// fuzz nothing behind the integrity check).
func TestDecapsulateFuzzHarness(t *testing.T) {
	fz := newDecapFuzz()
	for a, name := range fz.names {
		for top, tp := range fz.topos {
			inner, next := fuzzInner(tp, header.ProtoUDP)
			tcp, tcpNext := fuzzInner(tp, header.ProtoTCP)
			good := espPlaintext(inner, next, 0, 16)
			authErr := ErrAuthTunnel
			if tp.mode == sadb.Transport {
				authErr = ErrAuthTransport
			}
			for _, c := range []struct {
				what  string
				opts  uint8
				delta int8
				plain []byte
				want  error
			}{
				{"valid", fuzzSelectors, 0, good, nil},
				{"esn-cross", fuzzESN, 3, good, nil},
				{"tfc", fuzzUDP | fuzzSelectors, 0, espPlaintext(inner, next, 24, 16), nil},
				{"dummy", 0, 0, espPlaintext(inner, header.ProtoNoNext, 0, 16), ErrDummy},
				{"pad-bytes", 0, 0, flip(good, len(good)-3), ErrBadPadding},
				{"selector", fuzzSelectors, 0, espPlaintext(tcp, tcpNext, 0, 16), ErrSelector},
				{"seq-zero", 0, -1, good, ErrReplay},
				// Below the window, the RFC 4303 A.2 inference takes
				// the next 2^32 subspace: the ICV, made over the
				// number sent, fails.
				{"esn-behind", fuzzESN, -100, good, authErr},
			} {
				t.Run(fmt.Sprintf("%s/%s/%s", name, tp.name, c.what), func(t *testing.T) {
					cfg, _ := fz.config(uint8(a), uint8(top), fuzzSealed|c.opts)
					sa := fuzzInbound(t, cfg)
					p, ok := sealFuzzPacket(sa, append([]byte{byte(c.delta), 0}, c.plain...))
					if !ok {
						t.Fatal("sealFuzzPacket refused a valid plaintext")
					}
					r := decapOnce(t, sa, p.buf, p.start, p.end)
					if r.parseErr != nil || r.err != c.want {
						t.Fatalf("Parse: %v, Decapsulate: %v, want %v", r.parseErr, r.err, c.want)
					}
					if want, _ := p.want(&cfg); r.err == nil && !bytes.Equal(p.buf[r.sp.Start:r.sp.End], want) {
						t.Fatalf("delivered %x\nwant      %x", p.buf[r.sp.Start:r.sp.End], want)
					}
				})
			}
		}
	}
}

// FuzzFlowOf reads arbitrary plaintext packets: no panic, and ports only
// for protocols that have them. Seeds: a UDP packet of each family here,
// fragments and extension headers in testdata/fuzz/FuzzFlowOf.
func FuzzFlowOf(f *testing.F) {
	buf := newBuf()
	end := udpPacket(buf, 0, in4a, in4b, 1, 2, 10)
	f.Add(buf[:end])
	end = udpPacket(buf, 0, in6a, in6b, 1, 2, 10)
	f.Add(buf[:end])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fl, ok := FlowOf(pkt)
		if !ok {
			return
		}
		switch fl.Proto {
		case header.ProtoTCP, header.ProtoUDP, header.ProtoSCTP, header.ProtoUDPLite:
		default:
			if fl.SrcPort != 0 || fl.DstPort != 0 {
				t.Fatalf("ports for protocol %d: %+v", fl.Proto, fl)
			}
		}
		if !fl.Src.IsValid() || !fl.Dst.IsValid() {
			t.Fatalf("flow without addresses: %+v", fl)
		}
	})
}
