package sadb

import (
	"fmt"
	"net/netip"
)

// Flow is what outbound SA selection looks at in an inner packet.
type Flow struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// IP protocol numbers whose selectors may name ports (RFC 4301 §4.4.1.1).
const (
	protoTCP     = 6
	protoUDP     = 17
	protoSCTP    = 132
	protoUDPLite = 136
)

// hasPorts reports whether packets of IP protocol p carry the ports that a
// selector may name.
func hasPorts(p uint8) bool {
	return p == protoTCP || p == protoUDP || p == protoSCTP || p == protoUDPLite
}

// matchL4 is the protocol and port half of a selector match: proto 0
// matches any protocol, a port 0 any port. Validation guarantees that
// ports are only set for a protocol that has them.
func matchL4(proto uint8, sport, dport uint16, f *Flow) bool {
	if proto == 0 {
		return true
	}
	if proto != f.Proto {
		return false
	}
	return (sport == 0 || sport == f.SrcPort) && (dport == 0 || dport == f.DstPort)
}

// Match reports whether the flow f is one of the packets s describes. A
// zero prefix matches any address of the other prefix's family, or any
// address when both are zero; f's addresses must be valid and of one
// family; IPv6 zones are ignored. It does not allocate.
func (s Selector) Match(f Flow) bool {
	if !f.Src.IsValid() || !f.Dst.IsValid() || f.Src.Is4() != f.Dst.Is4() {
		return false
	}
	f.Src, f.Dst = f.Src.WithZone(""), f.Dst.WithZone("")
	switch {
	case s.Dst.IsValid():
		if !s.Dst.Contains(f.Dst) {
			return false
		}
	case s.Src.IsValid():
		if s.Src.Addr().Is4() != f.Dst.Is4() {
			return false
		}
	}
	if s.Src.IsValid() && !s.Src.Contains(f.Src) {
		return false
	}
	return matchL4(s.Proto, s.SrcPort, s.DstPort, &f)
}

// checkPrefix validates one prefix of a selector: zero (any), or a valid,
// masked prefix without a zone.
func checkPrefix(name string, p netip.Prefix) error {
	if p == (netip.Prefix{}) {
		return nil
	}
	if !p.IsValid() {
		return fmt.Errorf("%s prefix %v is not a valid prefix", name, p)
	}
	if p.Addr().Zone() != "" {
		return fmt.Errorf("%s prefix %v must not have an IPv6 zone", name, p)
	}
	if p != p.Masked() {
		return fmt.Errorf("%s prefix %v has host bits set: write %v", name, p, p.Masked())
	}
	return nil
}

// checkSelector validates a selector: masked prefixes of one family, ports
// only with a protocol that has them.
func checkSelector(s *Selector) error {
	if err := checkPrefix("source", s.Src); err != nil {
		return err
	}
	if err := checkPrefix("destination", s.Dst); err != nil {
		return err
	}
	if s.Src.IsValid() && s.Dst.IsValid() && s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		return fmt.Errorf("source %v and destination %v are of different address families", s.Src, s.Dst)
	}
	if (s.SrcPort != 0 || s.DstPort != 0) && !hasPorts(s.Proto) {
		return fmt.Errorf("ports need protocol TCP (6), UDP (17), SCTP (132) or UDP-Lite (136), got protocol %d", s.Proto)
	}
	return nil
}

// hostPrefix returns a's /32 or /128, or the zero prefix for the wildcard.
func hostPrefix(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// anySelector is the implied selector of every tunnel-mode SA without
// selectors, shared by all of them.
var anySelector = []Selector{{}}

// effectiveSelectors returns c's selectors or, when it has none, the one
// its mode implies: any packet (both families) in tunnel mode, packets
// from Src to Dst in transport mode.
func effectiveSelectors(c *Config) []Selector {
	if len(c.Selectors) > 0 {
		return c.Selectors
	}
	if c.Mode == Tunnel {
		return anySelector
	}
	return []Selector{{Src: hostPrefix(c.Src), Dst: hostPrefix(c.Dst)}}
}
