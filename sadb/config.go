package sadb

import (
	"net/netip"
	"slices"
	"time"

	"vnic/ndis"
)

// DefaultUDPPort is the ESP-in-UDP port of RFC 3948: the peer's port when
// an ESP-in-UDP SA gives none, and the local one when the table's UDPPort
// is 0.
const DefaultUDPPort = 4500

// checkConfig validates the parts of in that need no table state and
// returns the copy to store: selectors deep-copied, defaults filled in
// (Proto ESP, UDP ports: see checkUDPPorts). The keys are not copied yet.
// Errors are *ndis.Error values that do not name the element.
// defaultWindow fills in an inbound SA's replay window when it gives none;
// udpPort is the table's UDPPort.
func checkConfig(in *Config, defaultWindow int, udpPort uint16) (Config, error) {
	c := *in
	c.Selectors = slices.Clone(in.Selectors)
	if c.Direction == Inbound {
		switch {
		case c.ReplayWindow == 0:
			c.ReplayWindow = defaultWindow
		case c.ReplayWindow == ReplayOff:
			c.ReplayWindow = 0
		}
	}

	switch c.Proto {
	case 0, ndis.OperationESP:
		c.Proto = ndis.OperationESP
	case ndis.OperationAH:
		return c, ndis.Errorf(ndis.StatusNotSupported, "AH is not implemented; offload ESP only")
	default:
		return c, invalid("unknown operation %d: offload ESP (%d)", uint32(c.Proto), uint32(ndis.OperationESP))
	}
	if c.Direction != Outbound && c.Direction != Inbound {
		return c, invalid("unknown direction %d: use outbound (%d) or inbound (%d)", uint8(c.Direction), uint8(Outbound), uint8(Inbound))
	}
	if c.Mode != Tunnel && c.Mode != Transport {
		return c, invalid("unknown mode %d: use tunnel (%d) or transport (%d)", uint8(c.Mode), uint8(Tunnel), uint8(Transport))
	}
	if c.SPI < 256 {
		return c, invalid("SPI %d is reserved (RFC 4303 §2.1): use 256 or above", c.SPI)
	}

	if err := checkEndpoints(&c); err != nil {
		return c, err
	}
	if c.Encap.UDP {
		if err := checkUDPPorts(&c.Encap, c.Direction, udpPort); err != nil {
			return c, err
		}
	} else if c.Encap.SrcPort != 0 || c.Encap.DstPort != 0 {
		return c, invalid("UDP ports %d and %d are given but UDP encapsulation is off", c.Encap.SrcPort, c.Encap.DstPort)
	}
	if err := checkKeepalive(&c); err != nil {
		return c, err
	}
	for i := range c.Selectors {
		if err := checkSelector(&c.Selectors[i]); err != nil {
			return c, invalid("selector %d: %v", i, err)
		}
	}

	if c.InitialSeq > 1<<32-1 {
		return c, invalid("initial sequence number %d does not fit in 32 bits: it holds the low-order bits, SequenceNumberHighOrder the high-order ones", c.InitialSeq)
	}
	if !c.Algo.ESN && c.SeqHigh != 0 {
		return c, invalid("SequenceNumberHighOrder is %d but the SA does not use extended sequence numbers: it must be 0", c.SeqHigh)
	}
	if c.Direction == Outbound {
		if c.ReplayWindow != 0 {
			return c, invalid("a replay window applies to inbound SAs only, got %d for an outbound SA", c.ReplayWindow)
		}
	} else {
		if c.Algo.ESN && c.ReplayWindow == 0 {
			return c, invalid("extended sequence numbers need an anti-replay window to infer the high-order bits: set a replay window of at least 32 packets")
		}
	}
	return c, checkLifetime(&c.Lifetime)
}

// checkEndpoints validates the outer addresses.
func checkEndpoints(c *Config) error {
	for _, e := range []struct {
		name string
		a    netip.Addr
	}{{"source", c.Src}, {"destination", c.Dst}} {
		if e.a.Zone() != "" {
			return invalid("%s address %v must not have an IPv6 zone", e.name, e.a)
		}
	}
	if c.Src.IsValid() && c.Dst.IsValid() && c.Src.Is4() != c.Dst.Is4() {
		return invalid("source %v and destination %v are of different address families", c.Src, c.Dst)
	}
	if c.Direction == Outbound && !c.Dst.IsValid() {
		return invalid("an outbound SA needs a destination address: it is where its packets go")
	}
	return nil
}

// checkUDPPorts fills in an ESP-in-UDP SA's ports and refuses a local port
// other than the device's, udpPort (0: DefaultUDPPort). The device has one
// ESP-in-UDP socket, bound to udpPort: it sends every outbound SA's packets
// from that port and receives only what is sent to it, so an SA that named
// another local port would show a port it does not use. The local end is
// an outbound SA's source and an inbound SA's destination, as in ip xfrm
// (encap espinudp SPORT DPORT); it defaults to udpPort. The peer's port
// may be any and defaults to DefaultUDPPort. dir must be valid.
func checkUDPPorts(e *Encap, dir Direction, udpPort uint16) error {
	if udpPort == 0 {
		udpPort = DefaultUDPPort
	}
	local, peer := &e.SrcPort, &e.DstPort
	if dir == Inbound {
		local, peer = peer, local
	}
	if *peer == 0 {
		*peer = DefaultUDPPort
	}
	switch *local {
	case 0:
		*local = udpPort
	case udpPort:
	default:
		end, does := "source", "sends ESP-in-UDP from"
		if dir == Inbound {
			end, does = "destination", "receives ESP-in-UDP on"
		}
		return invalid("encap %s port %d is not the port this vnic %s (%d): start vnic up -udp-port %d, or use %d",
			end, *local, does, udpPort, *local, udpPort)
	}
	return nil
}

// MaxKeepaliveInterval is the longest NAT keepalive interval: longer than
// any NAT keeps an idle UDP mapping.
const MaxKeepaliveInterval = 24 * time.Hour

// checkKeepalive allows a NAT keepalive interval on outbound ESP-in-UDP
// SAs only (as the kernel does), in whole seconds up to
// MaxKeepaliveInterval.
func checkKeepalive(c *Config) error {
	k := c.Encap.KeepaliveInterval
	switch {
	case k == 0:
		return nil
	case !c.Encap.UDP || c.Direction != Outbound:
		return invalid("a NAT keepalive interval applies to outbound ESP-in-UDP SAs only: the keepalives go where the SA's packets go")
	case k < time.Second || k > MaxKeepaliveInterval || k%time.Second != 0:
		return invalid("NAT keepalive interval %v: give whole seconds from 1 to %d", k, int(MaxKeepaliveInterval/time.Second))
	}
	return nil
}

// checkLifetime refuses negative durations and soft limits beyond hard
// ones.
func checkLifetime(l *Lifetime) error {
	if l.SoftAdd < 0 || l.HardAdd < 0 {
		return invalid("lifetimes must not be negative, got soft %v and hard %v", l.SoftAdd, l.HardAdd)
	}
	type pair struct {
		what       string
		soft, hard uint64
	}
	for _, p := range []pair{
		{"byte", l.SoftBytes, l.HardBytes},
		{"packet", l.SoftPackets, l.HardPackets},
	} {
		if p.soft != 0 && p.hard != 0 && p.soft > p.hard {
			return invalid("soft %s limit %d is above the hard limit %d", p.what, p.soft, p.hard)
		}
	}
	if l.SoftAdd != 0 && l.HardAdd != 0 && l.SoftAdd > l.HardAdd {
		return invalid("soft lifetime %v is above the hard lifetime %v", l.SoftAdd, l.HardAdd)
	}
	return nil
}
