// Package underlay is vnic's wire: the sockets that carry ESP between this
// device and its peers, raw (IP protocol 50) and encapsulated in UDP
// (RFC 3948, port 4500), over IPv4 and IPv6.
//
// The engine works on whole outer packets, as they are on the wire. On
// send, raw packets go out as they are (IP_HDRINCL / IPV6_HDRINCL) and UDP
// packets lose their IP and UDP headers to the UDP socket. On receive,
// where a socket does not hand over the headers (raw IPv6, UDP) they are
// rebuilt in the buffer's headroom from the socket's addresses.
//
// The UDP socket does not set the kernel's UDP_ENCAP option: the kernel
// would take the ESP packets for itself.
package underlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Config says which sockets to open.
type Config struct {
	// Local4 and Local6 are the local underlay addresses; the sockets of
	// a family bind to its address. At least one must be valid.
	Local4, Local6 netip.Addr
	// Device binds the sockets to an interface (SO_BINDTODEVICE), so that
	// ESP never loops back through vnic0's own routes. Empty: the
	// interface that holds Local4 or Local6.
	Device string
	// UDPPort is the local ESP-in-UDP port (4500 when zero).
	UDPPort uint16
	// NoRaw and NoUDP leave out the raw ESP or the UDP sockets.
	NoRaw, NoUDP bool
	// BufferBytes sizes the socket buffers (SO_RCVBUFFORCE/SO_SNDBUFFORCE).
	BufferBytes int
}

// Headroom is how much room Receive leaves before each packet so that the
// outer headers can be rebuilt and the engine has scratch space.
const Headroom = 128

// bufSize is one receive buffer: headroom, the largest IP packet, and
// tailroom for in-place decryption.
const bufSize = Headroom + 65535 + 64

// Conn is an open underlay.
type Conn struct {
	cfg    Config
	raw4   *net.IPConn
	raw6   *net.IPConn
	udp4   *net.UDPConn
	udp6   *net.UDPConn
	local4 netip.Addr
	local6 netip.Addr
	port   uint16
	closed sync.Once
}

// Open opens the sockets cfg asks for.
func Open(ctx context.Context, cfg Config) (*Conn, error) {
	if !cfg.Local4.IsValid() && !cfg.Local6.IsValid() {
		return nil, errors.New("underlay: give at least one local address (IPv4 or IPv6)")
	}
	if cfg.UDPPort == 0 {
		cfg.UDPPort = 4500
	}
	if cfg.Device == "" {
		dev, err := deviceOf(cfg.Local4, cfg.Local6)
		if err != nil {
			return nil, err
		}
		cfg.Device = dev
	}
	c := &Conn{cfg: cfg, local4: cfg.Local4, local6: cfg.Local6, port: cfg.UDPPort}
	var err error
	if c.local4.IsValid() {
		if !cfg.NoRaw {
			if c.raw4, err = c.listenIP(ctx, "ip4:50", c.local4, unix.IPPROTO_IP, unix.IP_HDRINCL); err != nil {
				return nil, c.fail(err)
			}
		}
		if !cfg.NoUDP {
			if c.udp4, err = c.listenUDP(ctx, "udp4", c.local4); err != nil {
				return nil, c.fail(err)
			}
		}
	}
	if c.local6.IsValid() {
		if !cfg.NoRaw {
			if c.raw6, err = c.listenIP(ctx, "ip6:50", c.local6, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL); err != nil {
				return nil, c.fail(err)
			}
		}
		if !cfg.NoUDP {
			if c.udp6, err = c.listenUDP(ctx, "udp6", c.local6); err != nil {
				return nil, c.fail(err)
			}
		}
	}
	return c, nil
}

func (c *Conn) fail(err error) error {
	c.Close()
	return err
}

// deviceOf returns the name of the interface that holds one of the
// addresses.
func deviceOf(addrs ...netip.Addr) (string, error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("underlay: list addresses: %w", err)
	}
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		for _, want := range addrs {
			if want.IsValid() && ip.Unmap() == want.Unmap() {
				link, err := netlink.LinkByIndex(a.LinkIndex)
				if err != nil {
					return "", fmt.Errorf("underlay: interface of %s: %w", want, err)
				}
				return link.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("underlay: no interface holds %v: give a local address of this namespace", addrs)
}

// control sets the options every underlay socket gets, and extra ones.
func (c *Conn) control(extra ...[2]int) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if c.cfg.Device != "" {
				if serr = unix.BindToDevice(int(fd), c.cfg.Device); serr != nil {
					serr = fmt.Errorf("bind to device %s: %w", c.cfg.Device, serr)
					return
				}
			}
			if n := c.cfg.BufferBytes; n > 0 {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n)
			}
			for _, o := range extra {
				if serr = unix.SetsockoptInt(int(fd), o[0], o[1], 1); serr != nil {
					serr = fmt.Errorf("setsockopt %d/%d: %w", o[0], o[1], serr)
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

func (c *Conn) listenIP(ctx context.Context, network string, local netip.Addr, level, opt int) (*net.IPConn, error) {
	lc := net.ListenConfig{Control: c.control([2]int{level, opt})}
	pc, err := lc.ListenPacket(ctx, network, local.String())
	if err != nil {
		return nil, fmt.Errorf("underlay: open raw ESP socket on %s: %w", local, err)
	}
	conn := pc.(*net.IPConn)
	if network == "ip6:50" {
		if err := ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst|ipv6.FlagTrafficClass|ipv6.FlagHopLimit, true); err != nil {
			conn.Close()
			return nil, fmt.Errorf("underlay: IPv6 control messages: %w", err)
		}
	}
	return conn, nil
}

func (c *Conn) listenUDP(ctx context.Context, network string, local netip.Addr) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: c.control()}
	addr := net.JoinHostPort(local.String(), strconv.Itoa(int(c.port)))
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("underlay: open ESP-in-UDP socket on %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	if network == "udp6" {
		err = ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst|ipv6.FlagTrafficClass|ipv6.FlagHopLimit, true)
	} else {
		err = ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst|ipv4.FlagTTL, true)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("underlay: control messages on %s: %w", addr, err)
	}
	return conn, nil
}

// Close closes every socket; blocked receives return.
func (c *Conn) Close() error {
	c.closed.Do(func() {
		if c.raw4 != nil {
			c.raw4.Close()
		}
		if c.raw6 != nil {
			c.raw6.Close()
		}
		if c.udp4 != nil {
			c.udp4.Close()
		}
		if c.udp6 != nil {
			c.udp6.Close()
		}
	})
	return nil
}

// ErrNoSocket: no socket is open for the packet's family and framing.
var ErrNoSocket = errors.New("underlay: no socket for this address family and encapsulation")

// Send transmits one outer packet as the engine built it: an IPv4 or IPv6
// header, then ESP or UDP and ESP.
func (c *Conn) Send(pkt []byte) error {
	if len(pkt) < 20 {
		return errors.New("underlay: packet too short")
	}
	switch pkt[0] >> 4 {
	case 4:
		hl := int(pkt[0]&0x0f) * 4
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		if pkt[9] == unix.IPPROTO_UDP {
			return c.sendUDP(c.udp4, pkt[hl:], dst)
		}
		if c.raw4 == nil {
			return ErrNoSocket
		}
		_, err := c.raw4.WriteToIP(pkt, &net.IPAddr{IP: dst.AsSlice()})
		return err
	case 6:
		if len(pkt) < 40 {
			return errors.New("underlay: packet too short")
		}
		dst := netip.AddrFrom16([16]byte(pkt[24:40]))
		if udp, ok := udpOffset6(pkt); ok {
			return c.sendUDP(c.udp6, pkt[udp:], dst)
		}
		if c.raw6 == nil {
			return ErrNoSocket
		}
		if netip.AddrFrom16([16]byte(pkt[8:24])).IsUnspecified() {
			src := c.local6.As16()
			copy(pkt[8:24], src[:])
		}
		_, err := c.raw6.WriteToIP(pkt, &net.IPAddr{IP: dst.AsSlice()})
		return err
	}
	return errors.New("underlay: not an IP packet")
}

// udpOffset6 returns the offset of the UDP header of an IPv6 packet, if the
// packet is UDP after any hop-by-hop, routing or destination options.
func udpOffset6(pkt []byte) (int, bool) {
	off, next := 40, pkt[6]
	for next == 0 || next == 43 || next == 60 {
		if off+8 > len(pkt) {
			return 0, false
		}
		next, off = pkt[off], off+int(pkt[off+1])*8+8
	}
	return off, next == unix.IPPROTO_UDP && off+8 <= len(pkt)
}

func (c *Conn) sendUDP(conn *net.UDPConn, seg []byte, dst netip.Addr) error {
	if conn == nil {
		return ErrNoSocket
	}
	dport := binary.BigEndian.Uint16(seg[2:])
	_, err := conn.WriteToUDPAddrPort(seg[8:], netip.AddrPortFrom(dst, dport))
	return err
}

// Deliver receives each packet read from the underlay: buf[start:end] is
// the whole outer packet, and buf has Headroom bytes before it. The buffer
// belongs to the caller only for the duration of the call.
type Deliver func(buf []byte, start, end int)

// Run reads every socket until ctx ends or the sockets close, calling
// deliver for each packet from one goroutine per socket.
func (c *Conn) Run(ctx context.Context, log *slog.Logger, deliver Deliver) {
	var wg sync.WaitGroup
	run := func(name string, f func([]byte) (int, int, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bufSize)
			for {
				start, end, err := f(buf)
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
						return
					}
					log.Debug("underlay read", "socket", name, "err", err)
					continue
				}
				deliver(buf, start, end)
			}
		}()
	}
	if c.raw4 != nil {
		run("raw4", c.readRaw4)
	}
	if c.raw6 != nil {
		p := ipv6.NewPacketConn(c.raw6)
		run("raw6", func(b []byte) (int, int, error) { return c.readV6(p, b, false) })
	}
	if c.udp4 != nil {
		p := ipv4.NewPacketConn(c.udp4)
		run("udp4", func(b []byte) (int, int, error) { return c.readUDP4(p, b) })
	}
	if c.udp6 != nil {
		p := ipv6.NewPacketConn(c.udp6)
		run("udp6", func(b []byte) (int, int, error) { return c.readV6(p, b, true) })
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	wg.Wait()
}

// readRaw4 reads from the IPv4 raw socket with read(2), which returns the
// packet with its IP header as it was on the wire (the net package would
// strip the header).
func (c *Conn) readRaw4(buf []byte) (int, int, error) {
	rc, err := c.raw4.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf[Headroom:])
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, err
	}
	return Headroom, Headroom + n, nil
}

// readV6 reads an ESP packet (raw) or UDP payload from an IPv6 socket and
// rebuilds the headers the socket took off.
func (c *Conn) readV6(p *ipv6.PacketConn, buf []byte, udp bool) (int, int, error) {
	n, cm, src, err := p.ReadFrom(buf[Headroom:])
	if err != nil {
		return 0, 0, err
	}
	dst := c.local6
	var tclass, hops int = 0, 64
	if cm != nil {
		if d, ok := netip.AddrFromSlice(cm.Dst); ok && d.IsValid() {
			dst = d
		}
		tclass, hops = cm.TrafficClass, cm.HopLimit
	}
	var srcIP netip.Addr
	var sport uint16
	switch a := src.(type) {
	case *net.IPAddr:
		srcIP, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ap := a.AddrPort()
		srcIP, sport = ap.Addr(), ap.Port()
	}
	start := Headroom
	if udp {
		start -= 8
		putUDP(buf[start:], sport, c.port, n)
	}
	start -= 40
	h := buf[start:]
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(tclass&0xff)<<20)
	binary.BigEndian.PutUint16(h[4:], uint16(Headroom+n-start-40))
	h[6] = unix.IPPROTO_ESP
	if udp {
		h[6] = unix.IPPROTO_UDP
	}
	h[7] = byte(hops)
	s, d := srcIP.Unmap().As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return start, Headroom + n, nil
}

// readUDP4 reads a UDP payload from the IPv4 socket and rebuilds the IPv4
// and UDP headers.
func (c *Conn) readUDP4(p *ipv4.PacketConn, buf []byte) (int, int, error) {
	n, cm, src, err := p.ReadFrom(buf[Headroom:])
	if err != nil {
		return 0, 0, err
	}
	dst := c.local4
	ttl := 64
	if cm != nil {
		if d, ok := netip.AddrFromSlice(cm.Dst); ok && d.Unmap().Is4() {
			dst = d.Unmap()
		}
		ttl = cm.TTL
	}
	ap := src.(*net.UDPAddr).AddrPort()
	start := Headroom - 8
	putUDP(buf[start:], ap.Port(), c.port, n)
	start -= 20
	h := buf[start:]
	h[0], h[1] = 0x45, 0
	binary.BigEndian.PutUint16(h[2:], uint16(20+8+n))
	binary.BigEndian.PutUint32(h[4:], 0)
	h[8], h[9] = byte(ttl), unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(h[10:], 0)
	s, d := ap.Addr().Unmap().As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return start, Headroom + n, nil
}

func putUDP(h []byte, sport, dport uint16, payload int) {
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+payload))
	binary.BigEndian.PutUint16(h[6:], 0)
}
