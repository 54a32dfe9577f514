package oid

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"vnic/algo"
	"vnic/ndis"
	"vnic/sadb"
)

func invalid(format string, args ...any) *ndis.Error {
	return ndis.Errorf(ndis.StatusInvalidParameter, format, args...)
}

func invalidData(format string, args ...any) *ndis.Error {
	return ndis.Errorf(ndis.StatusInvalidData, format, args...)
}

func notSupported(format string, args ...any) *ndis.Error {
	return ndis.Errorf(ndis.StatusNotSupported, format, args...)
}

// Config turns a bundle into the SA configuration the SA database takes.
// The keys in the result share memory with b.KeyData. Errors are
// *ndis.Error values whose reason names the field, not the element.
func (b *SA) Config() (sadb.Config, error) {
	var c sadb.Config
	if bad := b.Flags &^ (ndis.FlagInbound | ndis.FlagIPv6); bad != 0 {
		return c, invalid("Flags 0x%x has unknown bits 0x%x: use IPSEC_OFFLOAD_V2_INBOUND (0x1) and IPSEC_OFFLOAD_V2_IPv6 (0x10)", b.Flags, bad)
	}
	dir, err := direction(b.Direction, b.Flags&ndis.FlagInbound != 0)
	if err != nil {
		return c, err
	}
	c.Direction = dir
	v6 := b.Flags&ndis.FlagIPv6 != 0
	if c.Src, err = endpoint("SrcAddr", b.SrcAddr, v6); err != nil {
		return c, err
	}
	if c.Dst, err = endpoint("DestAddr", b.DestAddr, v6); err != nil {
		return c, err
	}

	ext := b.Vnic
	if ext == nil {
		ext = &SAExtensions{}
	}
	if c.Mode, c.Encap.UDP, err = modeAndEncap(ext.Mode, b.UdpEspEncapsulation); err != nil {
		return c, err
	}
	if ext.UDP != nil {
		c.Encap.SrcPort, c.Encap.DstPort = ext.UDP.SPort, ext.UDP.DPort
		c.Encap.KeepaliveInterval = time.Duration(ext.UDP.KeepaliveInterval) * time.Second
	}

	sa, err := secAssoc(b)
	if err != nil {
		return c, err
	}
	c.Proto = ndis.OperationESP
	c.SPI = sa.Spi
	c.SeqHigh = sa.SequenceNumberHighOrder
	if c.Algo, err = spec(b, sa); err != nil {
		return c, err
	}
	c.Algo.AllowLegacy = ext.AllowLegacy

	if err := extensions(&c, ext); err != nil {
		return c, err
	}
	return c, nil
}

// direction reads the direction from the "direction" word and the
// IPSEC_OFFLOAD_V2_INBOUND flag.
func direction(word string, inbound bool) (sadb.Direction, error) {
	flag := sadb.Outbound
	if inbound {
		flag = sadb.Inbound
	}
	var d sadb.Direction
	switch strings.ToLower(word) {
	case "":
		return flag, nil
	case "in", "inbound":
		d = sadb.Inbound
	case "out", "outbound":
		d = sadb.Outbound
	default:
		return 0, invalid("direction: expected \"in\" or \"out\", got %s", quote(word))
	}
	if inbound && d == sadb.Outbound {
		return 0, invalid("direction is \"%s\" but Flags has IPSEC_OFFLOAD_V2_INBOUND (0x1): give one or the other", word)
	}
	return d, nil
}

// endpoint reads SrcAddr or DestAddr: empty, 0.0.0.0 and :: are the
// wildcard (the invalid Addr).
func endpoint(name, s string, v6 bool) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, invalid("%s: expected an IPv4 or IPv6 address, got %s", name, quote(s))
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	if v6 && a.Is4() {
		return a, invalid("%s %v is an IPv4 address but Flags has IPSEC_OFFLOAD_V2_IPv6 (0x10)", name, a)
	}
	return a, nil
}

// modeAndEncap reads vnic.mode and UdpEspEncapsulation together: the
// NDIS encapsulation types name the mode too.
func modeAndEncap(mode string, encap uint32) (sadb.Mode, bool, error) {
	m, given := sadb.Tunnel, true
	switch strings.ToLower(mode) {
	case "":
		given = false
		if encap == ndis.UDPESPTransport {
			m = sadb.Transport
		}
	case "tunnel":
	case "transport":
		m = sadb.Transport
	default:
		return 0, false, invalid("vnic.mode: expected \"tunnel\" or \"transport\", got %s", quote(mode))
	}
	switch encap {
	case ndis.UDPESPNone:
		return m, false, nil
	case ndis.UDPESPTransport:
		if given && m != sadb.Transport {
			return 0, false, invalid("UdpEspEncapsulation 1 (IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT) is for transport mode, but vnic.mode is %q: use 2 for a tunnel", mode)
		}
		return m, true, nil
	case ndis.UDPESPTunnel:
		if given && m != sadb.Tunnel {
			return 0, false, invalid("UdpEspEncapsulation 2 (IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL) is for tunnel mode, but vnic.mode is %q: use 1 for transport mode", mode)
		}
		return m, true, nil
	case ndis.UDPESPTransportOverTunnel, ndis.UDPESPTransportOverUDPTunnel:
		return 0, false, notSupported("UdpEspEncapsulation %d (a transport SA combined with a tunnel) is not supported: use 0 (none), 1 (transport) or 2 (tunnel)", encap)
	}
	return 0, false, invalid("UdpEspEncapsulation %d is not an encapsulation type: use 0 (none), 1 (transport) or 2 (tunnel)", encap)
}

// secAssoc checks NumExtHdrs and SecAssoc and returns the one ESP element.
func secAssoc(b *SA) (*SecAssoc, error) {
	n := len(b.SecAssoc)
	switch {
	case n > 2:
		return nil, invalid("SecAssoc has %d elements: NDIS allows at most 2 (IPSEC_OFFLOAD_V2_MAX_EXTENSION_HEADERS)", n)
	case b.NumExtHdrs == 2 || n == 2:
		return nil, notSupported("AH plus ESP bundles (NumExtHdrs 2) are not implemented: offload one ESP SecAssoc element")
	case b.NumExtHdrs > 2:
		return nil, invalid("NumExtHdrs %d: must be 1 (one ESP element)", b.NumExtHdrs)
	case n == 0:
		return nil, invalid("SecAssoc is missing: give one element with Operation 2 (ESP), Spi and the algorithms")
	}
	sa := &b.SecAssoc[0]
	if bad := sa.Flags &^ ndis.FlagESN; bad != 0 {
		return nil, invalid("SecAssoc[0].Flags 0x%x has unknown bits 0x%x: use IPSEC_OFFLOAD_V2_ESN_SA (0x1)", sa.Flags, bad)
	}
	switch ndis.Operation(sa.Operation) {
	case 0, ndis.OperationESP:
	case ndis.OperationAH:
		return nil, notSupported("SecAssoc[0].Operation 1 (AH) is not implemented: offload ESP (Operation 2)")
	default:
		return nil, invalid("SecAssoc[0].Operation %d: expected 2 (ESP)", sa.Operation)
	}
	if sa.Spi == 0 {
		return nil, invalid("SecAssoc[0].Spi is missing or 0: give the SPI, 256 or above")
	}
	return sa, nil
}

// spec builds the algorithm Spec, finding each key in KeyData.
func spec(b *SA, sa *SecAssoc) (algo.Spec, error) {
	var s algo.Spec
	ea, aa := &sa.EncryptionAlgorithm, &sa.AuthenticationAlgorithm
	const (
		encPath  = "SecAssoc[0].EncryptionAlgorithm"
		authPath = "SecAssoc[0].AuthenticationAlgorithm"
	)
	s.Encryption = ndis.EncryptionID(ea.Identifier)
	s.Authentication = ndis.AuthenticationID(aa.Identifier)
	s.ESN = sa.Flags&ndis.FlagESN != 0
	if s.Encryption == 0 && s.Authentication == 0 {
		return s, invalid("SecAssoc[0] has no algorithm: give EncryptionAlgorithm.Identifier and/or AuthenticationAlgorithm.Identifier")
	}
	if s.Encryption == 0 {
		s.Encryption = ndis.EncryptionNone // ESP with integrity only
	}
	enc, ok := algo.EncryptionAlgorithm(s.Encryption)
	if !ok {
		return s, notSupported("%s.Identifier 0x%x is not an encryption algorithm vnic knows", encPath, ea.Identifier)
	}
	if s.Authentication != 0 {
		if _, ok := algo.AuthenticationAlgorithm(s.Authentication); !ok {
			return s, notSupported("%s.Identifier 0x%x is not an authentication algorithm vnic knows", authPath, aa.Identifier)
		}
	}

	// The ICV length comes from the algorithm that provides integrity.
	if enc.Combined {
		if aa.AdditionalInfo != 0 {
			return s, invalid("%s.AdditionalInfo is %d but %s is a combined-mode cipher: give the ICV length in %s.AdditionalInfo", authPath, aa.AdditionalInfo, enc.Name, encPath)
		}
		s.ICVLen = int(ea.AdditionalInfo)
	} else {
		if ea.AdditionalInfo != 0 {
			return s, invalid("%s.AdditionalInfo is %d: only a combined-mode cipher (AES-GCM) takes one; give an HMAC's truncation in %s.AdditionalInfo", encPath, ea.AdditionalInfo, authPath)
		}
		s.ICVLen = int(aa.AdditionalInfo)
	}

	key := b.KeyData
	if b.KeyLength != 0 && int(b.KeyLength) != len(key) {
		return s, invalidData("KeyLength is %d but KeyData holds %d bytes", b.KeyLength, len(key))
	}
	if ea.KeyLength != 0 || aa.KeyLength != 0 {
		// The NDIS layout: each key at its KeyOffsetBytes.
		var err error
		if s.EncryptionKey, err = keyAt(key, encPath, ea); err != nil {
			return s, err
		}
		if s.AuthenticationKey, err = keyAt(key, authPath, aa); err != nil {
			return s, err
		}
		if ea.KeyLength != 0 && aa.KeyLength != 0 &&
			uint64(ea.KeyOffsetBytes) < uint64(aa.KeyOffsetBytes)+uint64(aa.KeyLength) &&
			uint64(aa.KeyOffsetBytes) < uint64(ea.KeyOffsetBytes)+uint64(ea.KeyLength) {
			return s, invalidData("the keys of %s and %s overlap in KeyData", encPath, authPath)
		}
		return s, nil
	}
	if ea.KeyOffsetBytes != 0 || aa.KeyOffsetBytes != 0 {
		return s, invalidData("KeyOffsetBytes is set but KeyLength is 0: give both, or neither")
	}
	// The simple layout: the encryption key, then the authentication key.
	switch {
	case enc.Combined:
		s.EncryptionKey = key
	case s.Encryption == ndis.EncryptionNone:
		s.AuthenticationKey = key
	default:
		if len(key) < enc.KeyLen {
			return s, invalidData("KeyData has %d bytes, fewer than the %d-byte key of %s", len(key), enc.KeyLen, enc.NDIS)
		}
		s.EncryptionKey, s.AuthenticationKey = key[:enc.KeyLen:enc.KeyLen], key[enc.KeyLen:]
	}
	return s, nil
}

// keyAt returns the key that a (NDIS layout) locates in data.
func keyAt(data Key, path string, a *AlgorithmInfo) ([]byte, error) {
	end := uint64(a.KeyOffsetBytes) + uint64(a.KeyLength)
	if end > uint64(len(data)) {
		return nil, invalidData("%s: the key at KeyOffsetBytes %d with KeyLength %d runs past the end of KeyData (%d bytes)", path, a.KeyOffsetBytes, a.KeyLength, len(data))
	}
	if a.KeyLength == 0 {
		return nil, nil
	}
	return data[a.KeyOffsetBytes:end:end], nil
}

// maxSeconds is the longest lifetime a time.Duration holds.
const maxSeconds = math.MaxInt64 / uint64(time.Second)

// extensions applies the vnic object.
func extensions(c *sadb.Config, ext *SAExtensions) error {
	if w := ext.ReplayWindow; w != nil {
		switch {
		case *w < 0:
			return invalid("vnic.replay_window: expected 0 (off) or a window size in packets, got %d", *w)
		case *w == 0 && c.Direction == sadb.Inbound:
			c.ReplayWindow = sadb.ReplayOff
		default:
			c.ReplayWindow = *w
		}
	}
	if l := ext.Lifetime; l != nil {
		if l.SoftSeconds > maxSeconds || l.HardSeconds > maxSeconds {
			return invalid("vnic.lifetime: seconds must be at most %d", maxSeconds)
		}
		c.Lifetime = sadb.Lifetime{
			SoftBytes: l.SoftBytes, HardBytes: l.HardBytes,
			SoftPackets: l.SoftPackets, HardPackets: l.HardPackets,
			SoftAdd: time.Duration(l.SoftSeconds) * time.Second,
			HardAdd: time.Duration(l.HardSeconds) * time.Second,
		}
	}
	c.InitialSeq = ext.InitialSeq
	c.Pair = sadb.Handle(ext.Pair)
	for i, s := range ext.Selectors {
		src, err := prefix(s.Src)
		if err != nil {
			return invalid("vnic.selectors[%d].src: %v", i, err)
		}
		dst, err := prefix(s.Dst)
		if err != nil {
			return invalid("vnic.selectors[%d].dst: %v", i, err)
		}
		c.Selectors = append(c.Selectors, sadb.Selector{Src: src, Dst: dst, Proto: uint8(s.Proto), SrcPort: s.SPort, DstPort: s.DPort})
	}
	return nil
}

// prefix reads a selector prefix: empty or "any" for any, a prefix, or an
// address (a host prefix).
func prefix(s string) (netip.Prefix, error) {
	if s == "" || strings.EqualFold(s, "any") {
		return netip.Prefix{}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("expected a prefix like 10.0.0.0/24, got %s", quote(s))
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("expected a prefix like 10.0.0.0/24 or an address, got %s", quote(s))
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// quote quotes a value in a reason, shortened; a value holding a run of
// 16 or more hex digits, which may be a key in the wrong place, is
// described and not shown.
func quote(s string) string {
	if LooksLikeKey(s) {
		return fmt.Sprintf("a value of %d characters (not shown: it may hold a key)", len(s))
	}
	if len(s) > 64 {
		s = s[:61] + "..."
	}
	return strconv.Quote(s)
}

// LooksLikeKey reports whether s holds a run of 16 or more hex digits:
// more than any number takes, so possibly a key in the wrong place, which
// an error must not show.
func LooksLikeKey(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			run = 0
			continue
		}
		if run++; run >= 16 {
			return true
		}
	}
	return false
}

// describe reports an SA as VNIC_QUERY_SA shows it, keys redacted.
func describe(t *sadb.Table, sa *sadb.SA, now time.Time) SAInfo {
	c := &sa.Config
	in := SAInfo{
		Handle:    uint64(sa.Handle),
		Direction: c.Direction.String(),
		SPI:       c.SPI,
		SPIHex:    fmt.Sprintf("0x%08x", c.SPI),
		Mode:      c.Mode.String(),
		Src:       addrString(c.Src),
		Dst:       addrString(c.Dst),
		ESN:       c.Algo.ESN,
		Lifetime: Lifetime{
			SoftBytes: c.Lifetime.SoftBytes, HardBytes: c.Lifetime.HardBytes,
			SoftPackets: c.Lifetime.SoftPackets, HardPackets: c.Lifetime.HardPackets,
			SoftSeconds: uint64(c.Lifetime.SoftAdd / time.Second),
			HardSeconds: uint64(c.Lifetime.HardAdd / time.Second),
		},
		Packets:         sa.Counters.Packets.Load(),
		Bytes:           sa.Counters.Bytes.Load(),
		DeleteRequested: sa.DeleteRequested.Load(),
		SoftExpired:     sa.SoftExpired.Load(),
		HardExpired:     sa.HardExpired.Load(),
		Added:           sa.Added(),
	}
	in.Used = Usage{Bytes: in.Bytes, Packets: in.Packets}
	if age := now.Sub(sa.Added()); age > 0 {
		in.Used.Seconds = uint64(age / time.Second)
	}
	in.Encapsulation = "esp"
	if c.Encap.UDP {
		in.Encapsulation = "espinudp"
		in.UDP = &UDPPorts{SPort: c.Encap.SrcPort, DPort: c.Encap.DstPort,
			KeepaliveInterval: uint32(c.Encap.KeepaliveInterval / time.Second)}
	}
	icvBits := 0
	if sa.Cipher != nil {
		in.Transform = sa.Cipher.Name()
		icvBits = sa.Cipher.ICVLen() * 8
	}
	enc, _ := algo.EncryptionAlgorithm(c.Algo.Encryption)
	auth, hasAuth := algo.AuthenticationAlgorithm(c.Algo.Authentication)
	if c.Algo.Encryption != 0 && !(c.Algo.Encryption == ndis.EncryptionNone && auth.Combined) {
		in.Encryption = used(enc, uint32(c.Algo.Encryption), len(c.Algo.EncryptionKey))
		if enc.Combined {
			in.Encryption.ICVBits = icvBits
		}
	}
	if hasAuth {
		in.Authentication = used(auth, uint32(c.Algo.Authentication), len(c.Algo.AuthenticationKey))
		in.Authentication.ICVBits = icvBits
	}
	switch {
	case sa.Out != nil:
		in.Seq = sa.Out.Last()
	case sa.In != nil:
		in.Seq = sa.In.Top()
		in.ReplayWindow = sa.In.Size()
	}
	in.SeqHigh = uint32(in.Seq >> 32)
	for _, s := range sa.Selectors() {
		in.Selectors = append(in.Selectors, Selector{
			Src: prefixString(s.Src), Dst: prefixString(s.Dst),
			Proto: IPProto(s.Proto), SPort: s.SrcPort, DPort: s.DstPort,
		})
	}
	in.Drops = make(map[string]uint64) // {} when nothing was dropped
	for r := range sadb.NumReasons {
		if n := sa.Counters.Dropped(r); n > 0 {
			in.Drops[r.String()] = n
		}
	}
	if p := t.Paired(sa); p != nil {
		in.Pair = uint64(p.Handle)
	}
	return in
}

// used describes one algorithm of an SA with a key of n bytes.
func used(a algo.Algorithm, id uint32, n int) *AlgorithmUsed {
	u := &AlgorithmUsed{Name: a.Name, NDIS: a.NDIS, Identifier: id, KeyBits: 8 * n, Key: Redacted(n)}
	if u.Name == "" {
		u.Name = fmt.Sprintf("0x%x", id)
	}
	if n == 0 {
		u.Key = "[none]"
	}
	return u
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "any"
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return "any"
	}
	return p.String()
}
