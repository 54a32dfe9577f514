package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// TestHostileUnderlayMix is issue #5's attack in full: while ping and a
// TCP transfer run through vnic0 (B to A, the direction under attack),
// esp_inject.py in B's namespace sends, for a bounded time and spread over
// it, every kind of hostile underlay packet it knows: random bytes,
// truncated ESP, valid SPIs with bad ICVs, replays of real packets it
// captured from B's daemon, correct packets far below the window,
// oversized packets (which the kernel fragments and reassembles), bad
// padding, selector violations, ESP-in-UDP for a raw SA, UDP garbage, IKE
// and NAT keepalives. It checks that:
//   - A's daemon stays up and both flows keep going: every ping answered
//     once, the TCP transfer completes;
//   - nothing injected reaches vnic0: a capture of what A's daemon writes
//     to vnic0 holds only B's ping replies and TCP segments, none with the
//     injected packets' mark or source; every packet A delivered came
//     through the live SA, and all B sent on it arrived;
//   - the counters account for every injected packet, by reason, exactly
//     (per kind, the injector reports how many it sent).
//
// The counts are exact because the veth between the namespaces loses
// nothing; the one place the kernel may drop is a full socket receive
// buffer, which the test reads from /proc/net (the drops column) and
// allows for, should it ever happen on a loaded machine.
func TestHostileUnderlayMix(t *testing.T) {
	needRoot(t)
	needPython(t, "cryptography")
	needTool(t, "iperf3", "tcpdump", "ss")
	quickRaceExit(t)
	inject := testdataScript(t, "esp_inject.py")
	s := newHostileSAs(t, 0x4100)
	a, b := s.tp.a, s.tp.b
	spiBA, spiInj := s.spiBA, s.spiInj
	kBA, kInj := s.kBA, s.kInj
	bOut, aIn, aInj := s.bOut, s.aIn, s.aInj

	const (
		perKind   = 20
		pings     = 120 // 6 s, one every 50 ms
		iperfPort = "5201"
	)

	// Warm up: B's outbound SA uses numbers 1..perKind, which the
	// injected "replayold" packets reuse.
	if got, out := pingN(t, a, "10.7.0.2", perKind, "0.02"); got != perKind {
		t.Fatalf("warm-up ping: %d of %d answered:\n%s\nA: %v\nB: %v", got, perKind, out, nonZero(counters(t, a)), nonZero(counters(t, b)))
	}

	// What A's daemon writes to vnic0 (-Q in: the packets the kernel
	// receives on it), the first 256 bytes of each.
	vcap := startPcap(t, a.ns, "vnic0", "-Q", "in", "-s", "256")

	before, bBefore := counters(t, a), counters(t, b)
	inBefore, outBefore := saInfo(t, a, aIn).Packets, saInfo(t, b, bOut).Packets
	ipBefore := procSNMP(t, a.ns, "Ip")
	sockDropsBefore := procNetDrops(t, a.ns)

	// The TCP transfer: B sends to A (iperf3 -R), at a bounded rate.
	server := startInNS(t, b.ns, "iperf3", "-s", "-1", "-p", iperfPort, "-B", "10.7.0.2")
	if !pollUntil(10*time.Second, func() bool {
		out, _ := tryCmd("ip", "netns", "exec", b.ns, "ss", "-Hltn")
		return strings.Contains(out, ":"+iperfPort+" ")
	}) {
		t.Fatalf("iperf3 server did not listen:\n%s", server.output())
	}
	client := startInNS(t, a.ns, "iperf3", "-c", "10.7.0.2", "-p", iperfPort, "-R", "-t", "8", "-b", "20M", "-J",
		"--connect-timeout", "10000")
	ping := startInNS(t, a.ns, pingArgs(t, "10.7.0.2", pings, "0.05")...)
	time.Sleep(500 * time.Millisecond) // the attack lands while both flow

	gen := startInNS(t, b.ns, python, inject, "--src", b.u4, "--dst", a.u4,
		"--spi", fmt.Sprint(spiBA), "--key", kBA, "--inj-spi", fmt.Sprint(spiInj), "--inj-key", kInj,
		"--seq-base", "1000000", "--n", fmt.Sprint(perKind), "--gap", "0.003",
		"--kinds", "all", "--interleave", "--capture-dev", b.veth)
	var sent map[string]uint64
	line := gen.finish(t, "{", 90*time.Second)
	if err := json.Unmarshal([]byte(line), &sent); err != nil {
		t.Fatalf("esp_inject.py summary %q: %v", line, err)
	}
	during := parsePing(t, ping.finish(t, "{", 60*time.Second))
	if err := client.exit(60 * time.Second); err != nil {
		t.Errorf("iperf3 client: %v\n%s", err, client.output())
	}
	server.exit(10 * time.Second)
	var iperf struct {
		End struct {
			SumReceived struct {
				Bytes uint64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.Join(client.stdoutLines(), "\n")), &iperf); err != nil || iperf.Error != "" ||
		iperf.End.SumReceived.Bytes == 0 {
		t.Errorf("the TCP transfer through vnic0 under attack failed (%v, %q):\n%s", err, iperf.Error, client.output())
	}
	got, out := pingN(t, a, "10.7.0.2", 3, "0.05")
	if got != 3 {
		t.Errorf("ping after the attack: %d of 3 answered:\n%s", got, out)
	}

	// Packets the kernel could not queue on a socket of A's (none, unless
	// the machine is starved): each may be any packet, injected or not.
	slack := procNetDrops(t, a.ns) - sockDropsBefore
	if slack > 0 {
		t.Logf("the kernel dropped %d packets at full sockets in A: counts are checked to within that", slack)
	}
	// Settle: everything B sent on the live SA is through A's daemon.
	var aInNow, bOutNow, delivered uint64
	settled := pollUntil(20*time.Second, func() bool {
		aInNow, bOutNow = saInfo(t, a, aIn).Packets-inBefore, saInfo(t, b, bOut).Packets-outBefore
		delivered = counters(t, a)["InPackets"] - before["InPackets"]
		return delivered == aInNow && aInNow+slack >= bOutNow
	})
	after, bAfter := counters(t, a), counters(t, b)
	d, bd := delta(before, after), delta(bBefore, bAfter)
	ipAfter := procSNMP(t, a.ns, "Ip")
	t.Logf("injected %v; A's counters moved by %v", sent, nonZero(d))
	if !settled || aInNow > bOutNow {
		t.Errorf("A delivered %d packets to vnic0 and its live inbound SA took %d, but B sent %d on it: "+
			"every delivered packet must come from the live SA, and every packet B sent must arrive", delivered, aInNow, bOutNow)
	}
	if bd["VnicOutSendError"] != 0 {
		t.Errorf("B failed to send %d packets", bd["VnicOutSendError"])
	}

	// Liveness of the flows.
	if during.Received+int(slack) < pings || during.Duplicates != 0 {
		t.Errorf("ping during the attack: %+v, want all %d answered once", during, pings)
	}

	// Every kind was sent, as many as asked.
	kinds := []string{"unknown", "badicv", "replayold", "replaydup", "truncated", "badpad", "selector",
		"udp_unknown", "udp_encap", "udp_truncated", "random", "farold", "replaycap", "oversized",
		"oversized_sel", "udp_oversized", "udp_garbage", "ike", "keepalive"}
	for _, k := range kinds {
		if sent[k] != perKind {
			t.Errorf("esp_inject.py sent %d %s packets, want %d", sent[k], k, perKind)
		}
	}
	if len(sent) != len(kinds) {
		t.Errorf("esp_inject.py sent kinds %v, want exactly %v", sent, kinds)
	}

	// The oversized packets came in fragments, which A's kernel
	// reassembled before vnic's sockets read them: vnic sees whole
	// datagrams (its parser would count a fragment as XfrmInHdrError).
	if n, want := ipAfter["ReasmOKs"]-ipBefore["ReasmOKs"], sent["oversized"]+sent["oversized_sel"]+sent["udp_oversized"]; n != want {
		t.Errorf("A's kernel reassembled %d datagrams, want %d (the oversized ones)", n, want)
	}
	if n := ipAfter["ReasmFails"] - ipBefore["ReasmFails"]; n != 0 {
		t.Errorf("A's kernel failed to reassemble %d datagrams", n)
	}

	// The drop counters, by reason.
	want := map[string]uint64{
		"XfrmInNoStates":                sent["unknown"] + sent["udp_unknown"] + sent["random"] + sent["udp_garbage"] + sent["udp_oversized"],
		"XfrmInStateProtoError":         sent["badicv"] + sent["badpad"] + sent["oversized"],
		"CRYPTO_TUNNEL_ESP_AUTH_FAILED": sent["badicv"] + sent["oversized"],
		"XfrmInStateSeqError":           sent["replayold"] + sent["replaydup"] + sent["farold"] + sent["replaycap"],
		"VnicInDummy":                   sent["replaydup"], // the first copy of each duplicated packet
		"XfrmInHdrError":                sent["truncated"] + sent["udp_truncated"],
		"XfrmInTmplMismatch":            sent["selector"] + sent["oversized_sel"],
		"XfrmInStateMismatch":           sent["udp_encap"], // ESP-in-UDP for a raw-ESP SA
		"VnicInNatKeepalive":            sent["keepalive"],
		"VnicInIkeDropped":              sent["ike"],
		"VnicInPassedUp":                0,
	}
	checkInboundDrops(t, after, d, want, slack)
	// The same, SA by SA.
	for _, c := range []struct {
		handle, what string
		want         map[string]uint64
	}{
		{aIn, "live inbound SA", map[string]uint64{
			"XfrmInStateProtoError": sent["badicv"] + sent["oversized"],
			"XfrmInStateSeqError":   sent["replayold"] + sent["replaycap"],
			"XfrmInStateMismatch":   sent["udp_encap"]}},
		{aInj, "injection SA", map[string]uint64{
			"XfrmInStateProtoError": sent["badpad"],
			"XfrmInStateSeqError":   sent["replaydup"] + sent["farold"],
			"XfrmInTmplMismatch":    sent["selector"] + sent["oversized_sel"],
			"VnicInDummy":           sent["replaydup"]}},
	} {
		info := saInfo(t, a, c.handle)
		for k, v := range c.want {
			if info.Drops[k] > v || info.Drops[k]+slack < v {
				t.Errorf("%s %s: %s is %d, want %d (drops %v)", c.what, c.handle, k, info.Drops[k], v, info.Drops)
			}
		}
	}
	if in, out := saInfo(t, a, aIn).Seq, saInfo(t, b, bOut).Seq; in != out {
		t.Errorf("A's live inbound SA has accepted up to %d, but B has sent up to %d", in, out)
	}

	// Nothing injected reached vnic0: what A's daemon wrote there is B's
	// ping replies and TCP segments, and nothing else.
	link, frames := vcap.stop(t)
	replies, bad := 0, 0
	for i, f := range frames {
		why := legitOnVnic0(link, f)
		if why == "echo reply" {
			replies++
			continue
		}
		if why != "" {
			if bad++; bad <= 10 {
				t.Errorf("vnic0 received packet %d that B never sent (%s): % x", i, why, f[:min(len(f), 64)])
			}
		}
	}
	if bad > 10 {
		t.Errorf("vnic0 received %d packets that B never sent in all", bad)
	}
	if want := during.Received + got; replies < want || replies > during.Sent+3 {
		t.Errorf("the capture on vnic0 holds %d echo replies; %d came back of %d requests", replies, want, during.Sent+3)
	}

	// The daemon is still up and answering.
	if _, err := a.try("caps"); err != nil {
		t.Errorf("A's daemon stopped answering: %v\n%s", err, a.log)
	}
}

var (
	injectedMark = []byte("VNIC-INJECTED-PACKET") // esp_inject.py's MARK
	mixInnerA    = netip.MustParseAddr("10.7.0.1")
	mixInnerB    = netip.MustParseAddr("10.7.0.2")
)

// legitOnVnic0 classifies a packet captured entering A's vnic0: "echo
// reply" for B's answer to A's ping, "" for a TCP segment of the iperf3
// transfer, and otherwise why it cannot be something B sent.
func legitOnVnic0(link uint32, f []byte) string {
	if bytes.Contains(f, injectedMark) {
		return "it carries the injected packets' mark"
	}
	ip, et := ipOf(link, f)
	if et != 0x0800 || len(ip) < 20 || ip[0]>>4 != 4 {
		return "not IPv4"
	}
	hl := int(ip[0]&0x0f) * 4
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if src != mixInnerB || dst != mixInnerA {
		return fmt.Sprintf("%s to %s", src, dst)
	}
	if len(ip) < hl+4 {
		return "truncated"
	}
	l4 := ip[hl:]
	switch ip[9] {
	case 1:
		if l4[0] == 0 {
			return "echo reply"
		}
		return fmt.Sprintf("ICMP type %d", l4[0])
	case 6:
		if binary.BigEndian.Uint16(l4) == 5201 || binary.BigEndian.Uint16(l4[2:]) == 5201 {
			return ""
		}
		return "TCP, not iperf3's"
	}
	return fmt.Sprintf("IP protocol %d", ip[9])
}

// hostileSAs is the scene of the hostile-underlay tests: two daemons with
// AES-GCM tunnel SAs between 10.7.0.1 (A) and 10.7.0.2 (B), selectors
// included, and at A a third inbound SA (SPI spiInj, from B) that only
// esp_inject.py sends with, so that the packets it forges correctly
// (dummies, bad padding, selector violations) do not move the live SA's
// window.
type hostileSAs struct {
	tp                   *topology
	spiAB, spiBA, spiInj int
	kAB, kBA, kInj       string
	bOut, aIn, aInj      string // handles
}

// newHostileSAs sets the scene up with SPIs spiAB, spiAB+1 (B to A) and
// spiAB+2 (injection); when the test ends, no key may be in the logs.
func newHostileSAs(t *testing.T, spiAB int) *hostileSAs {
	t.Helper()
	s := &hostileSAs{spiAB: spiAB, spiBA: spiAB + 1, spiInj: spiAB + 2, kAB: randHex(20), kBA: randHex(20), kInj: randHex(20)}
	// Registered before the topology's cleanup, so it runs after the
	// daemons have stopped (the crypto errors are logged at debug level).
	t.Cleanup(func() { keysNotLogged(t, s.tp, s.kAB, s.kBA, s.kInj) })
	s.tp = newTopology(t)
	a, b := s.tp.a, s.tp.b
	a.start(t, "-addr", "10.7.0.1/24")
	b.start(t, "-addr", "10.7.0.2/24")
	sa := func(h *host, dir, src, dst string, spi int, key string, extra ...string) string {
		w := []string{"dir", dir, "src", src, "dst", dst, "proto", "esp", "spi", fmt.Sprintf("0x%x", spi), "mode", "tunnel",
			"aead", "rfc4106(gcm(aes))", "0x" + key, "128"}
		return h.addSA(t, append(w, extra...)...)
	}
	selAB := []string{"sel", "src", "10.7.0.1/32", "dst", "10.7.0.2/32"}
	selBA := []string{"sel", "src", "10.7.0.2/32", "dst", "10.7.0.1/32"}
	win := []string{"replay-window", "64"}
	sa(a, "out", a.u4, b.u4, s.spiAB, s.kAB, selAB...)
	sa(b, "in", a.u4, b.u4, s.spiAB, s.kAB, append(win, selAB...)...)
	s.bOut = sa(b, "out", b.u4, a.u4, s.spiBA, s.kBA, selBA...)
	s.aIn = sa(a, "in", b.u4, a.u4, s.spiBA, s.kBA, append(win, selBA...)...)
	s.aInj = sa(a, "in", b.u4, a.u4, s.spiInj, s.kInj, append(win, selBA...)...)
	return s
}

// keysNotLogged fails t if one of keys (in hex) is in the log of tp's
// daemons.
func keysNotLogged(t *testing.T, tp *topology, keys ...string) {
	if tp == nil {
		return
	}
	for _, h := range []*host{tp.a, tp.b} {
		if h.log == nil {
			continue
		}
		log := []byte(h.log.String())
		for _, k := range keys {
			key, err := hex.DecodeString(k)
			if err != nil {
				t.Errorf("key %q: %v", k, err)
				continue
			}
			if testutil.ContainsKey(log, key) {
				t.Errorf("a key is in the log of vnic in %s", h.ns)
			}
		}
	}
}
