package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHostileUnderlay injects bad ESP at A's underlay address from B's
// namespace while ping runs between two vnic daemons, and checks that
// every bad packet is dropped and counted under its own name (exactly as
// many as were sent), that none reaches A's vnic0, that ping keeps working
// and that the daemon stays up.
func TestHostileUnderlay(t *testing.T) {
	needRoot(t)
	needPython(t, "cryptography")
	quickRaceExit(t)
	inject := testdataScript(t, "esp_inject.py")
	s := newHostileSAs(t, 0x4000)
	a, b := s.tp.a, s.tp.b
	spiBA, spiInj := s.spiBA, s.spiInj
	kBA, kInj := s.kBA, s.kInj
	bOut, aIn, aInj := s.bOut, s.aIn, s.aInj

	const (
		perKind = 5
		pings   = 40
	)

	// Warm up: once this passes, B's outbound SA has used numbers
	// 1..perKind, which the injected "old number" replays reuse.
	if got, out := pingN(t, a, "10.7.0.2", perKind, "0.05"); got != perKind {
		t.Fatalf("warm-up ping: %d of %d answered:\n%s\nA stats: %v\nB stats: %v", got, perKind, out, nonZero(counters(t, a)), nonZero(counters(t, b)))
	}

	// Watch vnic0 for the injected inner packets' payload, if tcpdump is
	// here (the rx_packets check below works without it).
	var capture *nsProc
	if tcpdumpAvailable() {
		capture = startInNS(t, a.ns, "tcpdump", "-i", "vnic0", "-n", "-l", "-A", "-U", "icmp")
		waitCapture(t, capture)
	}

	before := counters(t, a)
	rxBefore := rxPackets(t, a)
	ping := startInNS(t, a.ns, pingArgs(t, "10.7.0.2", pings, "0.05")...)
	time.Sleep(300 * time.Millisecond) // the attack lands while ping runs
	gen := startInNS(t, b.ns, python, inject, "--src", b.u4, "--dst", a.u4,
		"--spi", fmt.Sprint(spiBA), "--key", kBA, "--inj-spi", fmt.Sprint(spiInj), "--inj-key", kInj,
		"--seq-base", "1000000", "--n", fmt.Sprint(perKind))
	var sent map[string]uint64
	line := gen.finish(t, "{", 20*time.Second)
	if err := json.Unmarshal([]byte(line), &sent); err != nil {
		t.Fatalf("esp_inject.py summary %q: %v", line, err)
	}
	during := parsePing(t, ping.finish(t, "{", 25*time.Second))
	if during.Received != pings || during.Duplicates != 0 {
		t.Errorf("ping during the attack: %+v, want all %d answered once", during, pings)
	}
	// And after it.
	got, out := pingN(t, a, "10.7.0.2", 3, "0.05")
	if got != 3 {
		t.Errorf("ping after the attack: %d of 3 answered:\n%s", got, out)
	}
	received := during.Received + got
	rxAfter := rxPackets(t, a)
	after := counters(t, a)
	d := delta(before, after)
	t.Logf("injected %v; A's counters moved by %v", sent, nonZero(d))

	for _, kind := range []string{"unknown", "badicv", "replayold", "replaydup", "truncated", "badpad", "selector",
		"udp_unknown", "udp_encap", "udp_truncated"} {
		if sent[kind] != perKind {
			t.Errorf("esp_inject.py sent %d %s packets, want %d", sent[kind], kind, perKind)
		}
	}
	want := map[string]uint64{
		"XfrmInNoStates":                sent["unknown"] + sent["udp_unknown"],
		"XfrmInStateProtoError":         sent["badicv"] + sent["badpad"],
		"CRYPTO_TUNNEL_ESP_AUTH_FAILED": sent["badicv"],
		"XfrmInStateSeqError":           sent["replayold"] + sent["replaydup"],
		"VnicInDummy":                   sent["replaydup"], // the first copy of each duplicated packet
		"XfrmInHdrError":                sent["truncated"] + sent["udp_truncated"],
		"XfrmInTmplMismatch":            sent["selector"],
		"XfrmInStateMismatch":           sent["udp_encap"], // ESP-in-UDP for a raw-ESP SA
	}
	checkInboundDrops(t, after, d, want, 0)

	// The same, SA by SA; and the live SA's window holds only what B sent.
	for _, c := range []struct {
		handle, what string
		want         map[string]uint64
	}{
		{aIn, "live inbound SA", map[string]uint64{"XfrmInStateProtoError": sent["badicv"], "XfrmInStateSeqError": sent["replayold"],
			"XfrmInStateMismatch": sent["udp_encap"]}},
		{aInj, "injection SA", map[string]uint64{"XfrmInStateProtoError": sent["badpad"], "XfrmInStateSeqError": sent["replaydup"],
			"XfrmInTmplMismatch": sent["selector"], "VnicInDummy": sent["replaydup"]}},
	} {
		info := saInfo(t, a, c.handle)
		for k, v := range c.want {
			if info.Drops[k] != v {
				t.Errorf("%s %s: %s is %d, want %d (drops %v)", c.what, c.handle, k, info.Drops[k], v, info.Drops)
			}
		}
	}
	if in, out := saInfo(t, a, aIn).Seq, saInfo(t, b, bOut).Seq; in != out {
		t.Errorf("A's live inbound SA has accepted up to %d, but B has sent up to %d", in, out)
	}

	// Nothing injected reached vnic0: it received the ping replies and no
	// more.
	if rx := rxAfter - rxBefore; rx != uint64(received) {
		t.Errorf("vnic0 received %d packets, want %d (the ping replies)", rx, received)
	}
	if capture != nil {
		time.Sleep(200 * time.Millisecond)
		if out := capture.output(); strings.Contains(out, "VNIC-INJECTED") || strings.Contains(out, "10.9.9.9") {
			t.Errorf("an injected inner packet reached vnic0:\n%s", out)
		}
	}

	// The daemon is still up and answering.
	if _, err := a.try("caps"); err != nil {
		t.Errorf("A's daemon stopped answering: %v\n%s", err, a.log)
	}
}

// rxPackets is vnic0's received-packet count in h's namespace.
func rxPackets(t *testing.T, h *host) uint64 {
	t.Helper()
	out := sh(t, "ip", "netns", "exec", h.ns, "ip", "-s", "-j", "link", "show", "vnic0")
	var links []struct {
		Stats64 struct {
			Rx struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show vnic0: %v\n%s", err, out)
	}
	return links[0].Stats64.Rx.Packets
}

func tcpdumpAvailable() bool {
	_, err := tryCmd("tcpdump", "--version")
	return err == nil
}

// waitCapture waits until tcpdump says it listens.
func waitCapture(t *testing.T, p *nsProc) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.output(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkInboundDrops fails t unless the daemon's counters moved (d, with
// after the counters now) as want says, each by its value or at most slack
// less (packets the kernel dropped before the daemon read them), no other
// XfrmIn counter moved, and the CRYPTO_* counters moved by one per XfrmIn
// drop (dummies, keepalives and IKE are dropped without a CryptoStatus).
func checkInboundDrops(t *testing.T, after, d, want map[string]uint64, slack uint64) {
	t.Helper()
	for k, v := range want {
		if _, ok := after[k]; !ok {
			t.Errorf("vnic stats has no counter %s", k)
		} else if d[k] > v || d[k]+slack < v {
			t.Errorf("%s moved by %d, want %d", k, d[k], v)
		}
	}
	var crypto, drops uint64
	for k, v := range d {
		if _, ok := want[k]; !ok && strings.HasPrefix(k, "XfrmIn") && v != 0 {
			t.Errorf("%s moved by %d, want 0", k, v)
		}
		if strings.HasPrefix(k, "CRYPTO_") && k != "CRYPTO_SUCCESS" {
			crypto += v
		}
		if strings.HasPrefix(k, "XfrmIn") {
			drops += v
		}
	}
	if crypto != drops {
		t.Errorf("the CRYPTO_* counters moved by %d in all, want one per dropped packet: %d", crypto, drops)
	}
}
