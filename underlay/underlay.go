// Package underlay is vnic's wire: the sockets that carry ESP between this
// device and its peers, raw (IP protocol 50) and encapsulated in UDP
// (RFC 3948, port 4500), over IPv4 and IPv6.
//
// It carries ESP and nothing else, as wireguard-go's conn.Bind carries its
// messages: a Packet is the ESP bytes in a buffer with headroom and their
// outer header as fields (header.Outer: addresses, ports, TOS, TTL). On
// send, the UDP sockets build the IP and UDP headers themselves; for raw
// ESP the underlay writes the IP header in the headroom (header.Outer's
// Encode) and sends it on an IP_HDRINCL / IPV6_HDRINCL socket. On
// receive, the outer header comes from the socket's address and control
// messages, or, on raw IPv4, from the header the socket hands over; no
// header is rebuilt to be parsed again.
//
// The UDP socket does not set the kernel's UDP_ENCAP option: the kernel
// would take the ESP packets for itself.
package underlay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Headroom is how much room a receive leaves before each packet: for the
// outer headers, should the device pass the packet up whole, and the room
// the device's TUN writes need.
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
	send   sender
	// mtu is the MTU of the interface the sockets are bound to, as last
	// read (0: unknown); raw packets larger than it are fragmented.
	mtu atomic.Int64
	// fragID numbers the IPv6 packets the underlay fragments.
	fragID atomic.Uint32
	// batch[k] sends a batch on the socket of kind k (sendmmsg); made
	// once in Open.
	batch [numKinds]func([]ipv4.Message, int) (int, error)
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
	if c.raw4 != nil {
		c.batch[kindRaw4] = ipv4.NewPacketConn(c.raw4).WriteBatch
	}
	if c.raw6 != nil {
		c.batch[kindRaw6] = ipv6.NewPacketConn(c.raw6).WriteBatch
	}
	if c.udp4 != nil {
		c.batch[kindUDP4] = ipv4.NewPacketConn(c.udp4).WriteBatch
	}
	if c.udp6 != nil {
		c.batch[kindUDP6] = ipv6.NewPacketConn(c.udp6).WriteBatch
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	c.fragID.Store(binary.NativeEndian.Uint32(id[:]))
	c.readMTU()
	return c, nil
}

// readMTU reads the MTU of the interface the sockets are bound to, keeps
// it for SendBatch, and returns it (the last one read if reading fails).
func (c *Conn) readMTU() int {
	var pc *net.IPConn
	switch {
	case c.raw4 != nil:
		pc = c.raw4
	case c.raw6 != nil:
		pc = c.raw6
	default:
		return int(c.mtu.Load()) // only raw packets are fragmented here
	}
	ifr, err := unix.NewIfreq(c.cfg.Device)
	if err != nil {
		return int(c.mtu.Load())
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		return int(c.mtu.Load())
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.SIOCGIFMTU, ifr) }); err != nil || ierr != nil {
		return int(c.mtu.Load())
	}
	mtu := int64(ifr.Uint32())
	c.mtu.Store(mtu)
	return int(mtu)
}

// Device returns the name of the interface the sockets are bound to.
func (c *Conn) Device() string { return c.cfg.Device }

func (c *Conn) fail(err error) error {
	c.Close()
	return err
}

// deviceOf returns the name of the interface that holds one of the
// addresses (the invalid ones are ignored). When none does, the error names
// the addresses and lists those this network namespace has.
func deviceOf(addrs ...netip.Addr) (string, error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("underlay: list addresses: %w", err)
	}
	var wanted []string
	for _, want := range addrs {
		if want.IsValid() {
			wanted = append(wanted, want.Unmap().String())
		}
	}
	type held struct {
		ip    netip.Addr
		index int
	}
	var others []held // for the error: the addresses that are here
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, want := range addrs {
			if want.IsValid() && ip == want.Unmap() {
				link, err := netlink.LinkByIndex(a.LinkIndex)
				if err != nil {
					return "", fmt.Errorf("underlay: interface of %s: %w", want, err)
				}
				return link.Attrs().Name, nil
			}
		}
		if !ip.IsLinkLocalUnicast() { // a link-local address needs a zone: no underlay
			others = append(others, held{ip, a.LinkIndex})
		}
	}
	const maxShown = 8
	var have []string
	for _, h := range others[:min(len(others), maxShown)] {
		name := fmt.Sprint("interface ", h.index)
		if link, err := netlink.LinkByIndex(h.index); err == nil {
			name = link.Attrs().Name
		}
		have = append(have, h.ip.String()+" on "+name)
	}
	var its string
	switch {
	case len(others) == 0:
		its = "it has no address to use"
	case len(others) > maxShown:
		its = "its addresses include " + strings.Join(have, ", ")
	default:
		its = "its addresses: " + strings.Join(have, ", ")
	}
	return "", fmt.Errorf("underlay: no interface in this network namespace holds %s (%s): give a local address that one of its interfaces holds",
		strings.Join(wanted, " or "), its)
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
	opts := [][2]int{{level, opt}}
	if network == "ip6:50" {
		opts = append(opts, recvOptions6...)
	}
	lc := net.ListenConfig{Control: c.control(opts...)}
	pc, err := lc.ListenPacket(ctx, network, local.String())
	if err != nil {
		return nil, fmt.Errorf("underlay: open raw ESP socket on %s: %w", local, err)
	}
	return pc.(*net.IPConn), nil
}

// recvOptions4 and recvOptions6 ask the kernel for the control messages
// that give back what a datagram socket takes off a packet (parseAncillary
// reads them): the header's destination address, TTL or hop limit, and TOS
// or traffic class, whose ECN bits the engine carries to the inner packet
// (RFC 6040).
var (
	recvOptions4 = [][2]int{{unix.IPPROTO_IP, unix.IP_PKTINFO}, {unix.IPPROTO_IP, unix.IP_RECVTTL}, {unix.IPPROTO_IP, unix.IP_RECVTOS}}
	recvOptions6 = [][2]int{{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO}, {unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT}, {unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS}}
)

func (c *Conn) listenUDP(ctx context.Context, network string, local netip.Addr) (*net.UDPConn, error) {
	opts := recvOptions4
	if network == "udp6" {
		opts = recvOptions6
	}
	lc := net.ListenConfig{Control: c.control(opts...)}
	addr := net.JoinHostPort(local.String(), strconv.Itoa(int(c.port)))
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("underlay: open ESP-in-UDP socket on %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
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
