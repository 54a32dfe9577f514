package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// plainMark is the payload pattern of the pings in TestNoPlaintextOnWire
// (ping -p takes 16 bytes): on the underlay it may only ever be
// encrypted.
const plainMark = "VNIC-PLAINTEXT!!"

// churnCase is one generation of SAs in TestNoPlaintextOnWire.
type churnCase struct {
	name string
	mode string // tunnel or transport
	udp  bool   // ESP-in-UDP rather than raw ESP
	esn  bool   // extended sequence numbers, moved on with UPDATE_SA
	spis int    // the SPIs are 0x6000+0x10*spis and the next
}

var churnCases = []churnCase{
	{"tunnel-raw", "tunnel", false, false, 0},
	{"tunnel-udp", "tunnel", true, false, 1},
	{"transport-raw", "transport", false, false, 2},
	{"transport-udp", "transport", true, false, 3},
	{"tunnel-udp-esn", "tunnel", true, true, 4},
	{"transport-raw-esn", "transport", false, true, 5},
	// The first generation's SPIs again, with new keys and numbers from 1:
	// nothing of the deleted SAs may linger.
	{"tunnel-raw-again", "tunnel", false, false, 0},
}

// wireSA is what the capture check knows of the outbound SAs with one
// SPI: their encapsulation and how many times the SPI was added again
// after a delete (after which the numbers start again from 1). UPDATE_SA
// moves only the high-order bits: the low ones on the wire go on.
type wireSA struct {
	udp    bool
	readds int
}

// TestNoPlaintextOnWire captures both ends of the underlay while SAs churn
// under traffic, and checks that nothing but ESP ever crosses it. Pings
// with a recognisable payload run both ways, to the peer's inner address
// (tunnel mode) and to its underlay address through vnic0 (transport
// mode), the whole time. Meanwhile SAs come and go, one generation after
// another (tunnel and transport, raw ESP and ESP-in-UDP, with and without
// ESN, and the first generation's SPIs added again at the end): each is
// added, carries traffic both ways, has its ESN high bits moved by
// UPDATE_SA (ESN ones), gets SaDeleteReq on operator request and keeps
// working, then is deleted, outbound SA first, so that each daemon in turn
// has traffic to send and no outbound SA for it. It checks that:
//   - every captured frame is ESP (raw or in UDP on port 4500) with an SPI
//     the sender's outbound SAs had and the encapsulation it had, or ARP,
//     IPv6 neighbour discovery or MLD; and that the pings' payload is in
//     no frame at all;
//   - each outbound SA's sequence numbers are on the wire exactly once, in
//     order, from 1 (UPDATE_SA moves the high-order bits and keeps the
//     low ones, so they go on), and the ESP
//     packets each daemon sent are exactly those it counted (OutPackets):
//     the capture missed nothing;
//   - the churn costs no legitimate packet (no inbound SA drops one, but
//     for those in flight while UPDATE_SA moves the two ends in turn);
//   - while a daemon has no outbound SA, it sends nothing and counts the
//     packets it drops (XfrmOutNoStates); and over the whole test every
//     packet the host stack gave vnic0 was either sent as ESP or dropped
//     and counted.
func TestNoPlaintextOnWire(t *testing.T) {
	needRoot(t)
	needTool(t, "ping", "tcpdump")
	quickRaceExit(t)
	var keys []string
	var tp *topology
	// Before the topology's cleanup, so it runs after the daemons stopped.
	t.Cleanup(func() { keysNotLogged(t, tp, keys...) })
	tp = newTopology(t)
	a, b := tp.a, tp.b
	tp.startPair(t)
	evA, evB := a.subscribe(t), b.subscribe(t)

	capA := startPcap(t, a.ns, a.veth)
	capB := startPcap(t, b.ns, b.veth)
	hosts := []*host{a, b}
	before := map[*host]map[string]uint64{}
	txBefore := map[*host]uint64{}
	for _, h := range hosts {
		before[h] = counters(t, h)
		_, txBefore[h] = linkPackets(t, h.ns, "vnic0")
	}

	// The traffic, until the churn ends (ping's -w bounds it anyway).
	pattern := hex.EncodeToString([]byte(plainMark))
	flow := func(h *host, dst string, src ...string) *nsProc {
		args := []string{"ping", "-n", "-q", "-i", "0.02", "-s", "120", "-p", pattern, "-w", "300"}
		for _, s := range src {
			args = append(args, "-I", s)
		}
		return startInNS(t, h.ns, append(args, dst)...)
	}
	flows := []*nsProc{
		flow(a, "10.7.0.2"), flow(a, b.u4, a.u4),
		flow(b, "10.7.0.1"), flow(b, a.u4, b.u4),
	}

	// The outbound SAs each underlay address sent with, by SPI.
	sent := map[netip.Addr]map[uint32]*wireSA{netip.MustParseAddr(a.u4): {}, netip.MustParseAddr(b.u4): {}}
	for i, c := range churnCases {
		t.Logf("generation %d: %s", i, c.name)
		spiAB, spiBA := 0x6000+0x10*c.spis, 0x6001+0x10*c.spis
		kAB, kBA := randHex(20), randHex(20)
		keys = append(keys, kAB, kBA)
		sa := func(h *host, dir, src, dst string, spi int, key string) string {
			w := []string{"dir", dir, "src", src, "dst", dst, "proto", "esp", "spi", fmt.Sprintf("0x%x", spi),
				"mode", c.mode, "aead", "rfc4106(gcm(aes))", "0x" + key, "128"}
			if c.udp {
				w = append(w, "encap", "espinudp", "4500", "4500", "0.0.0.0")
			}
			if c.esn {
				w = append(w, "flag", "esn", "seq-hi", "3")
			}
			if dir == "in" {
				w = append(w, "replay-window", "128")
			}
			if c.mode == "tunnel" {
				if src == a.u4 {
					w = append(w, "sel", "src", "10.7.0.1/32", "dst", "10.7.0.2/32")
				} else {
					w = append(w, "sel", "src", "10.7.0.2/32", "dst", "10.7.0.1/32")
				}
			}
			return h.addSA(t, w...)
		}
		bIn := sa(b, "in", a.u4, b.u4, spiAB, kAB)
		aIn := sa(a, "in", b.u4, a.u4, spiBA, kBA)
		aOut := sa(a, "out", a.u4, b.u4, spiAB, kAB)
		bOut := sa(b, "out", b.u4, a.u4, spiBA, kBA)
		for _, x := range []struct {
			src string
			spi int
		}{{a.u4, spiAB}, {b.u4, spiBA}} {
			m := sent[netip.MustParseAddr(x.src)]
			if w := m[uint32(x.spi)]; w != nil {
				if w.udp != c.udp {
					t.Fatalf("%s: SPI %#x was used with the other encapsulation before", c.name, x.spi)
				}
				w.readds++
			} else {
				m[uint32(x.spi)] = &wireSA{udp: c.udp}
			}
		}

		// Traffic flows both ways through the new SAs.
		flowing := func(what string) {
			t.Helper()
			for _, x := range []struct {
				h      *host
				handle string
			}{{a, aIn}, {b, bIn}} {
				from := saInfo(t, x.h, x.handle).Packets
				if !pollUntil(30*time.Second, func() bool { return saInfo(t, x.h, x.handle).Packets >= from+3 }) {
					t.Fatalf("%s, %s: no traffic into %s through SA %s\nA: %v\nB: %v", c.name, what, x.h.ns, x.handle,
						nonZero(counters(t, a)), nonZero(counters(t, b)))
				}
			}
		}
		flowing("after ADD_SA")

		if c.esn {
			// UPDATE_SA: the receivers first, then the senders.
			for _, x := range []struct {
				h      *host
				handle string
			}{{b, bIn}, {a, aIn}, {a, aOut}, {b, bOut}} {
				x.h.vnic(t, "sa", "update", x.handle, "seq-hi", "4")
			}
			flowing("after UPDATE_SA")
			if hi := saInfo(t, a, aOut).SeqHigh; hi != 4 {
				t.Errorf("%s: A's outbound SA sends with high bits %d after UPDATE_SA to 4", c.name, hi)
			}
		}

		// The device asks for the SAs' deletion and keeps them.
		a.vnic(t, "sa", "request-delete", aIn)
		b.vnic(t, "sa", "request-delete", bOut)
		evA.wait(t, "SaDeleteReq", atoi(t, aIn))
		evB.wait(t, "SaDeleteReq", atoi(t, bOut))
		flowing("after SaDeleteReq")

		// Churn drops no legitimate packet, but those in flight while
		// UPDATE_SA moves the two ends' high bits one after the other.
		for _, x := range []struct {
			h      *host
			handle string
		}{{a, aIn}, {b, bIn}} {
			for k, v := range saInfo(t, x.h, x.handle).Drops {
				if v != 0 && !(c.esn && k == "XfrmInStateProtoError") {
					t.Errorf("%s: %s's inbound SA %s dropped %d packets as %s", c.name, x.h.ns, x.handle, v, k)
				}
			}
		}

		// A loses its outbound SA while B still sends; then B; then the
		// inbound SAs go too.
		a.vnic(t, "sa", "del", aOut)
		sendsNothing(t, a, c.name+", A without an outbound SA")
		b.vnic(t, "sa", "del", bOut)
		sendsNothing(t, b, c.name+", B without an outbound SA")
		a.vnic(t, "sa", "del", aIn)
		b.vnic(t, "sa", "del", bIn)
		sendsNothing(t, a, c.name+", no SAs")
		sendsNothing(t, b, c.name+", no SAs")
	}
	for _, f := range flows {
		f.terminate(0)
	}

	// Every packet the host stack handed to vnic0 was sent as ESP or
	// dropped and counted (pings carry no segmentation offload: one read,
	// one packet).
	after := map[*host]map[string]uint64{}
	for _, h := range hosts {
		var tx, outs, drops uint64
		if !pollUntil(20*time.Second, func() bool {
			after[h] = counters(t, h)
			_, tx = linkPackets(t, h.ns, "vnic0")
			tx -= txBefore[h]
			d := delta(before[h], after[h])
			outs, drops = d["OutPackets"], 0
			for k, v := range d {
				if strings.HasPrefix(k, "XfrmOut") || k == "VnicOutLinkLocal" {
					drops += v
				}
			}
			return tx == outs+drops
		}) {
			t.Errorf("%s: vnic0 handed the daemon %d packets; it sent %d and counted %d dropped", h.ns, tx, outs, drops)
		}
		if n := after[h]["VnicOutSendError"] - before[h]["VnicOutSendError"]; n != 0 {
			t.Errorf("%s: %d send errors", h.ns, n)
		}
		t.Logf("%s: counters moved by %v", h.ns, nonZero(delta(before[h], after[h])))
	}

	for _, c := range []struct {
		cap *pcapCapture
		h   *host
	}{{capA, a}, {capB, b}} {
		link, frames := c.cap.stop(t)
		if link != linkEthernet {
			t.Fatalf("capture on %s: link type %d, want Ethernet", c.cap.what, link)
		}
		checkUnderlay(t, c.cap.what, frames, sent, netip.MustParseAddr(c.h.u4), map[netip.Addr]uint64{
			netip.MustParseAddr(a.u4): after[a]["OutPackets"] - before[a]["OutPackets"],
			netip.MustParseAddr(b.u4): after[b]["OutPackets"] - before[b]["OutPackets"],
		})
	}
}

// sendsNothing checks that h, which has just lost the outbound SA for the
// traffic it has to send, drops and counts that traffic (XfrmOutNoStates
// grows) and sends nothing (OutPackets stands still).
func sendsNothing(t *testing.T, h *host, what string) {
	t.Helper()
	var c map[string]uint64
	grew := func(from uint64) bool {
		return pollUntil(30*time.Second, func() bool { c = counters(t, h); return c["XfrmOutNoStates"] >= from })
	}
	// Once a packet read after the deletion has been dropped, the outbound
	// loop (one goroutine) has counted every packet it sent before; from
	// then on OutPackets must stand still.
	if !grew(counters(t, h)["XfrmOutNoStates"] + 1) {
		t.Fatalf("%s: XfrmOutNoStates does not grow: %v", what, nonZero(c))
	}
	out := c["OutPackets"]
	if !grew(c["XfrmOutNoStates"] + 5) {
		t.Fatalf("%s: XfrmOutNoStates does not grow: %v", what, nonZero(c))
	}
	if c["OutPackets"] != out {
		t.Errorf("%s: %s sent %d packets with no outbound SA", what, h.ns, c["OutPackets"]-out)
	}
}

// checkUnderlay checks every frame captured on an underlay veth: ESP with
// an SPI its sender's outbound SAs had (in sent, by source address) and
// their encapsulation, ARP or IPv6 neighbour discovery, and never the
// pings' payload; on local's own SAs, every sequence number once and in
// order; and as many ESP packets from each address as it counted in
// OutPackets (out).
func checkUnderlay(t *testing.T, what string, frames [][]byte, sent map[netip.Addr]map[uint32]*wireSA,
	local netip.Addr, out map[netip.Addr]uint64) {
	t.Helper()
	bad := 0
	fail := func(i int, f []byte, format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf("%s, frame %d: %s\n% x", what, i, fmt.Sprintf(format, args...), f[:min(len(f), 128)])
		}
	}
	kinds := map[string]int{}
	esp := map[netip.Addr]uint64{}
	type seqState struct {
		next     uint32
		restarts int
		n        int
	}
	seqs := map[uint32]*seqState{}
	for i, f := range frames {
		if bytes.Contains(f, []byte(plainMark)) {
			fail(i, f, "the pings' payload in the clear")
			continue
		}
		k, p, why := classifyUnderlay(f)
		if k == "" {
			fail(i, f, "not ESP: %s", why)
			continue
		}
		kinds[k]++
		if k != "esp" {
			continue
		}
		sa := sent[p.src][p.spi]
		if sa == nil || sa.udp != p.udp {
			fail(i, f, "ESP from %s with SPI %#x (UDP %v), which is none of its outbound SAs", p.src, p.spi, p.udp)
			continue
		}
		esp[p.src]++
		if p.src != local {
			continue // the receiving end may see a sender's packets reordered
		}
		st := seqs[p.spi]
		if st == nil {
			st = &seqState{next: 1}
			seqs[p.spi] = st
		}
		st.n++
		switch {
		case p.seq == st.next:
		case p.seq == 1 && st.restarts < sa.readds:
			st.restarts++
		default:
			fail(i, f, "SPI %#x: sequence number %d, want %d", p.spi, p.seq, st.next)
		}
		st.next = p.seq + 1
	}
	if bad > 10 {
		t.Errorf("%s: %d bad frames in all", what, bad)
	}
	t.Logf("%s: %d frames: %v", what, len(frames), kinds)
	for src, n := range out {
		if esp[src] != n {
			t.Errorf("%s: %d ESP packets from %s, but it counted %d sent (OutPackets)", what, esp[src], src, n)
		}
	}
	for spi := range sent[local] {
		if seqs[spi] == nil {
			t.Errorf("%s: no packet of %s's outbound SA %#x", what, local, spi)
		}
	}
}

// underlayESP is what checkUnderlay reads of an ESP packet.
type underlayESP struct {
	src      netip.Addr
	spi, seq uint32
	udp      bool
}

// classifyUnderlay says what an Ethernet frame on the underlay is: "esp"
// (raw or in UDP on port 4500), "keepalive" or "ike" (UDP port 4500),
// "arp", "nd" (IPv6 neighbour or router discovery), "mld"; or "" and why
// it is none of those.
func classifyUnderlay(f []byte) (string, underlayESP, string) {
	var p underlayESP
	if len(f) < 14 {
		return "", p, "runt frame"
	}
	et := binary.BigEndian.Uint16(f[12:])
	ip := f[14:]
	var proto uint8
	var l4 []byte
	switch et {
	case 0x0806:
		return "arp", p, ""
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return "", p, "bad IPv4 header"
		}
		hl, tl := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if hl < 20 || tl < hl || tl > len(ip) {
			return "", p, "bad IPv4 header"
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return "", p, "an IPv4 fragment"
		}
		p.src = netip.AddrFrom4([4]byte(ip[12:16]))
		proto, l4 = ip[9], ip[hl:tl]
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return "", p, "bad IPv6 header"
		}
		end := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if end > len(ip) {
			return "", p, "bad IPv6 header"
		}
		p.src = netip.AddrFrom16([16]byte(ip[8:24]))
		proto, l4 = ip[6], ip[40:end]
		for proto == 0 || proto == 43 || proto == 60 { // hop-by-hop, routing, destination options
			if len(l4) < 8 || len(l4) < int(l4[1])*8+8 {
				return "", p, "bad IPv6 extension header"
			}
			proto, l4 = l4[0], l4[int(l4[1])*8+8:]
		}
		if proto == 58 && len(l4) > 0 {
			switch typ := l4[0]; {
			case typ >= 133 && typ <= 137:
				return "nd", p, ""
			case typ >= 130 && typ <= 132 || typ == 143:
				return "mld", p, ""
			default:
				return "", p, fmt.Sprintf("ICMPv6 type %d", typ)
			}
		}
	default:
		return "", p, fmt.Sprintf("EtherType %#04x", et)
	}
	switch proto {
	case 50:
	case 17:
		if len(l4) < 8 {
			return "", p, "truncated UDP"
		}
		sport, dport := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		if sport != 4500 && dport != 4500 {
			return "", p, fmt.Sprintf("UDP %d to %d", sport, dport)
		}
		p.udp, l4 = true, l4[8:]
		switch {
		case len(l4) == 1 && l4[0] == 0xff:
			return "keepalive", p, ""
		case len(l4) >= 4 && binary.BigEndian.Uint32(l4) == 0:
			return "ike", p, ""
		}
	default:
		return "", p, fmt.Sprintf("IP protocol %d from %s", proto, p.src)
	}
	if len(l4) < 8 {
		return "", p, "truncated ESP"
	}
	p.spi, p.seq = binary.BigEndian.Uint32(l4), binary.BigEndian.Uint32(l4[4:])
	return "esp", p, ""
}
