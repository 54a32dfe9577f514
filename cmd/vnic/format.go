package main

import (
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"vnic/algo"
	"vnic/ndis"
	"vnic/oid"
)

// printCaps prints the capabilities as name/value lines.
func printCaps(w io.Writer, c *oid.Capabilities) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, v any) { fmt.Fprintf(tw, "%s\t%v\n", name, v) }
	row("Encapsulation", fmt.Sprintf("0x%x%s", c.Encapsulation, names(c.Encapsulation, encapNames)))
	row("IPv6Supported", c.IPv6Supported)
	row("IPv4Options", c.IPv4Options)
	row("IPv6NonIPsecExtensionHeaders", c.IPv6NonIPsecExtensionHeaders)
	row("Ah", c.Ah)
	row("Esp", c.Esp)
	row("AhEspCombined", c.AhEspCombined)
	row("Transport", c.Transport)
	row("Tunnel", c.Tunnel)
	row("TransportTunnelCombined", c.TransportTunnelCombined)
	row("LsoSupported", c.LsoSupported)
	row("ExtendedSequenceNumbers", c.ExtendedSequenceNumbers)
	row("UdpEsp", fmt.Sprintf("0x%x%s", c.UdpEsp, names(c.UdpEsp, udpEspNames)))
	row("AuthenticationAlgorithms", fmt.Sprintf("0x%x%s", c.AuthenticationAlgorithms, authMaskNames(c.AuthenticationAlgorithms)))
	row("EncryptionAlgorithms", fmt.Sprintf("0x%x%s", c.EncryptionAlgorithms, encMaskNames(c.EncryptionAlgorithms)))
	row("SaOffloadCapacity", c.SaOffloadCapacity)
	fmt.Fprintln(tw, "vnic extensions:")
	v := &c.Vnic
	row("  AuthenticationAlgorithms", fmt.Sprintf("0x%x%s", v.AuthenticationAlgorithms, authMaskNames(v.AuthenticationAlgorithms)))
	row("  EncryptionAlgorithms", fmt.Sprintf("0x%x%s", v.EncryptionAlgorithms, encMaskNames(v.EncryptionAlgorithms)))
	icvs := make([]string, len(v.AesGcmIcvLengths))
	for i, n := range v.AesGcmIcvLengths {
		icvs[i] = strconv.Itoa(n)
	}
	row("  AesGcmIcvLengths", strings.Join(icvs, ", ")+" bytes")
	row("  ReplayWindow", fmt.Sprintf("%d to %d packets", v.MinReplayWindow, v.MaxReplayWindow))
	row("  TrafficSelectors", v.TrafficSelectors)
	row("  Lifetimes", v.Lifetimes)
	row("  PassUnknownSpi", v.PassUnknownSPI)
	row("  SaCount", v.SaCount)
	row("  Generation", v.Generation)
	tw.Flush()
}

var encapNames = map[uint32]string{
	0x01: "NULL", 0x02: "IEEE_802_3", 0x04: "IEEE_802_3_P_AND_Q", 0x08: "IEEE_802_3_P_AND_Q_IN_OOB", 0x10: "IEEE_LLC_SNAP_ROUTED",
}

var udpEspNames = map[uint32]string{
	ndis.UDPESPTransport: "transport", ndis.UDPESPTunnel: "tunnel",
	ndis.UDPESPTransportOverTunnel: "transport over tunnel", ndis.UDPESPTransportOverUDPTunnel: "transport over UDP tunnel",
}

// names lists the names of the bits set in mask.
func names(mask uint32, n map[uint32]string) string {
	var out []string
	for m := mask; m != 0; m &= m - 1 {
		bit := uint32(1) << bits.TrailingZeros32(m)
		if s, ok := n[bit]; ok {
			out = append(out, s)
		} else {
			out = append(out, fmt.Sprintf("0x%x", bit))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, ", ") + ")"
}

func encMaskNames(mask uint32) string {
	n := map[uint32]string{}
	for m := mask; m != 0; m &= m - 1 {
		bit := uint32(1) << bits.TrailingZeros32(m)
		if a, ok := algo.EncryptionAlgorithm(ndis.EncryptionID(bit)); ok {
			n[bit] = algoLabel(a)
		}
	}
	return names(mask, n)
}

func authMaskNames(mask uint32) string {
	n := map[uint32]string{}
	for m := mask; m != 0; m &= m - 1 {
		bit := uint32(1) << bits.TrailingZeros32(m)
		if a, ok := algo.AuthenticationAlgorithm(ndis.AuthenticationID(bit)); ok {
			n[bit] = algoLabel(a)
		}
	}
	return names(mask, n)
}

// algoLabel names an algorithm with its key size (salt left out) where the
// name alone does not say it: where several identifiers share the name,
// or the algorithm is a combined mode.
func algoLabel(a algo.Algorithm) string {
	if a.Combined || len(algo.Named(a.Name)) > 1 {
		return fmt.Sprintf("%s-%d", a.Name, (a.KeyLen-a.SaltLen)*8)
	}
	return a.Name
}

// algorithmOf names an SA's transform briefly: the AEAD, or encryption
// and integrity joined with "+".
func algorithmOf(sa *oid.SAInfo) string {
	var parts []string
	if e := sa.Encryption; e != nil && !(e.Name == "ecb(cipher_null)" && sa.Authentication != nil && strings.HasPrefix(sa.Authentication.Name, "rfc4543")) {
		parts = append(parts, e.Name)
	}
	if a := sa.Authentication; a != nil {
		parts = append(parts, a.Name)
	}
	return strings.Join(parts, "+")
}

// keyOf describes the SA's keys, redacted.
func keyOf(sa *oid.SAInfo) string {
	n := 0
	if sa.Encryption != nil {
		n += sa.Encryption.KeyBits
	}
	if sa.Authentication != nil {
		n += sa.Authentication.KeyBits
	}
	return oid.Redacted(n / 8)
}

func shortDir(d string) string {
	switch d {
	case "inbound":
		return "in"
	case "outbound":
		return "out"
	}
	return d
}

func encapOf(sa *oid.SAInfo) string {
	if sa.UDP != nil {
		return fmt.Sprintf("udp %d:%d", sa.UDP.SPort, sa.UDP.DPort)
	}
	return "esp"
}

func flagsOf(sa *oid.SAInfo) string {
	var f []string
	if sa.ESN {
		f = append(f, "esn")
	}
	if sa.DeleteRequested {
		f = append(f, "delete-requested")
	}
	if sa.SoftExpired {
		f = append(f, "soft-expired")
	}
	if sa.HardExpired {
		f = append(f, "hard-expired")
	}
	if len(f) == 0 {
		return "-"
	}
	return strings.Join(f, ",")
}

// printSAList prints one line per SA.
func printSAList(w io.Writer, sas []oid.SAInfo) {
	if len(sas) == 0 {
		fmt.Fprintln(w, "no SAs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HANDLE\tDIR\tSPI\tMODE\tENDPOINTS\tENCAP\tALGORITHM\tSEQ\tSELECTORS\tPACKETS\tBYTES\tKEY\tFLAGS")
	for i := range sas {
		sa := &sas[i]
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s -> %s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n",
			sa.Handle, shortDir(sa.Direction), sa.SPIHex, sa.Mode, sa.Src, sa.Dst, encapOf(sa),
			algorithmOf(sa), sa.Seq, selectorsOf(sa), sa.Packets, sa.Bytes, keyOf(sa), flagsOf(sa))
	}
	tw.Flush()
}

// printSA prints one SA in detail.
func printSA(w io.Writer, sa *oid.SAInfo) {
	fmt.Fprintf(w, "SA %d\n", sa.Handle)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	row("direction", "%s", sa.Direction)
	row("spi", "%s (%d)", sa.SPIHex, sa.SPI)
	row("mode", "%s", sa.Mode)
	row("endpoints", "%s -> %s", sa.Src, sa.Dst)
	if sa.UDP != nil {
		row("encapsulation", "espinudp, ports %d -> %d", sa.UDP.SPort, sa.UDP.DPort)
		if k := sa.UDP.KeepaliveInterval; k != 0 {
			row("nat keepalive", "after %d s idle, then every %d s", k, k)
		}
	} else {
		row("encapsulation", "esp")
	}
	row("transform", "%s", sa.Transform)
	for _, a := range []struct {
		name string
		u    *oid.AlgorithmUsed
	}{{"encryption", sa.Encryption}, {"authentication", sa.Authentication}} {
		if a.u == nil {
			continue
		}
		s := fmt.Sprintf("%s  %s (0x%x)  key %s", a.u.Name, a.u.NDIS, a.u.Identifier, a.u.Key)
		if a.u.ICVBits != 0 {
			s += fmt.Sprintf("  ICV %d bits", a.u.ICVBits)
		}
		row(a.name, "%s", s)
	}
	row("esn", "%s", yesNo(sa.ESN))
	if sa.Direction == "outbound" {
		row("seq", "%d last sent (high-order bits %d)", sa.Seq, sa.SeqHigh)
	} else {
		row("seq", "%d highest received (high-order bits %d)", sa.Seq, sa.SeqHigh)
		if sa.ReplayWindow == 0 {
			row("replay window", "off")
		} else {
			row("replay window", "%d packets", sa.ReplayWindow)
		}
	}
	var sels []string
	for _, s := range sa.Selectors {
		sels = append(sels, selectorString(s))
	}
	row("selectors", "%s", strings.Join(sels, "; "))
	row("lifetime", "%s", lifetimeString(sa.Lifetime))
	row("used", "%d bytes, %d packets, %s", sa.Used.Bytes, sa.Used.Packets, time.Duration(sa.Used.Seconds)*time.Second)
	row("packets", "%d", sa.Packets)
	row("bytes", "%d", sa.Bytes)
	if len(sa.Drops) == 0 {
		row("drops", "none")
	} else {
		var d []string
		for _, k := range sortedKeys(sa.Drops) {
			d = append(d, fmt.Sprintf("%s %d", k, sa.Drops[k]))
		}
		row("drops", "%s", strings.Join(d, ", "))
	}
	row("flags", "%s", flagsOf(sa))
	if sa.Pair != 0 {
		row("pair", "%d", sa.Pair)
	} else {
		row("pair", "none")
	}
	row("added", "%s", sa.Added.Local().Format(time.RFC3339))
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// selectorsOf returns an SA's selectors on one line: "any" when they
// admit every packet (none, or one that admits everything), else each,
// numbered from 0 as vnic.selectors[i] is.
func selectorsOf(sa *oid.SAInfo) string {
	var parts []string
	for i, s := range sa.Selectors {
		if anyIfEmpty(s.Src) == "any" && anyIfEmpty(s.Dst) == "any" && s.Proto == 0 && s.SPort == 0 && s.DPort == 0 {
			return "any"
		}
		parts = append(parts, fmt.Sprintf("%d: %s", i, selectorString(s)))
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, "; ")
}

func selectorString(s oid.Selector) string {
	out := fmt.Sprintf("%s -> %s", anyIfEmpty(s.Src), anyIfEmpty(s.Dst))
	if s.Proto != 0 {
		out += " proto " + s.Proto.String()
	}
	if s.SPort != 0 {
		out += fmt.Sprintf(" sport %d", s.SPort)
	}
	if s.DPort != 0 {
		out += fmt.Sprintf(" dport %d", s.DPort)
	}
	return out
}

func anyIfEmpty(s string) string {
	if s == "" {
		return "any"
	}
	return s
}

func lifetimeString(l oid.Lifetime) string {
	var parts []string
	add := func(what string, soft, hard uint64) {
		if soft != 0 {
			parts = append(parts, fmt.Sprintf("soft %d %s", soft, what))
		}
		if hard != 0 {
			parts = append(parts, fmt.Sprintf("hard %d %s", hard, what))
		}
	}
	add("bytes", l.SoftBytes, l.HardBytes)
	add("packets", l.SoftPackets, l.HardPackets)
	add("s", l.SoftSeconds, l.HardSeconds)
	if len(parts) == 0 {
		return "no limit"
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// printStats prints the non-zero counters, or with all every counter,
// the non-zero ones first.
func printStats(w io.Writer, stats map[string]uint64, all bool) {
	keys := sortedKeys(stats)
	sort.SliceStable(keys, func(i, j int) bool { return stats[keys[i]] != 0 && stats[keys[j]] == 0 })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	shown := 0
	for _, k := range keys {
		if stats[k] == 0 && !all {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\n", k, stats[k])
		shown++
	}
	tw.Flush()
	if shown == 0 {
		fmt.Fprintln(w, "all counters are zero (--all lists them)")
	}
}

// printEvent prints one event as a line.
func printEvent(w io.Writer, m *oid.EventMessage) {
	e := &m.Event
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"), e.Type)
	if e.Handle != 0 {
		fmt.Fprintf(&b, " handle %d", e.Handle)
	}
	if e.Direction != "" {
		fmt.Fprintf(&b, " %s", e.Direction)
	}
	if e.SPI != 0 {
		fmt.Fprintf(&b, " spi 0x%08x", e.SPI)
	}
	if e.Src != "" || e.Dst != "" {
		fmt.Fprintf(&b, " %s -> %s", anyIfEmpty(e.Src), anyIfEmpty(e.Dst))
	}
	if e.Mode != "" {
		fmt.Fprintf(&b, " %s", e.Mode)
	}
	if e.Pair != 0 {
		fmt.Fprintf(&b, " pair %d", e.Pair)
	}
	if e.SeqHigh != 0 {
		fmt.Fprintf(&b, " seq-hi %d", e.SeqHigh)
	}
	if e.CryptoStatus != "" {
		fmt.Fprintf(&b, " %s", e.CryptoStatus)
	}
	if e.Counter != "" {
		fmt.Fprintf(&b, " %s", e.Counter)
	}
	if e.Count != 0 {
		fmt.Fprintf(&b, " count %d", e.Count)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	fmt.Fprintln(w, b.String())
}
