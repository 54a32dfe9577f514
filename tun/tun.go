// Package tun is vnic's device: the TUN interface (vnic0) that stands in
// for the NIC. It creates the interface with golang.zx2c4.com/wireguard/tun
// (virtio-net header, TSO/USO on read, GRO on write) and configures its
// MTU, addresses and routes with netlink.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Config says how to set up the device.
type Config struct {
	// Name is the interface name (default "vnic0").
	Name string
	// MTU is the interface MTU.
	MTU int
	// Addrs are the interface addresses, with their prefix lengths.
	Addrs []netip.Prefix
	// Routes are sent into the device (and so through the offload
	// engine).
	Routes []netip.Prefix
}

// Device is an open, configured TUN interface.
type Device struct {
	wgtun.Device
	link netlink.Link
}

// Open creates the TUN interface in the calling thread's network
// namespace, configures it and brings it up. IPv6 is disabled on it when
// no IPv6 address or route is configured, so the kernel sends no router
// solicitations or MLD reports into it.
func Open(cfg Config) (*Device, error) {
	if cfg.Name == "" {
		cfg.Name = "vnic0"
	}
	dev, err := wgtun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN interface %s: %w", cfg.Name, err)
	}
	d := &Device{Device: dev}
	go func() {
		for range dev.Events() { // drain, as the package requires
		}
	}()
	if err := d.configure(cfg); err != nil {
		dev.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) configure(cfg Config) error {
	name, err := d.Name()
	if err != nil {
		return fmt.Errorf("TUN interface name: %w", err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	d.link = link
	v6 := false
	for _, p := range append(append([]netip.Prefix(nil), cfg.Addrs...), cfg.Routes...) {
		v6 = v6 || p.Addr().Is6()
	}
	if !v6 {
		// Best effort: without the sysctl the kernel's IPv6 chatter is
		// counted as packets without an SA.
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	}
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(p.Masked()), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s dev %s: %w", p, name, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// SetMTU changes the interface MTU.
func (d *Device) SetMTU(mtu int) error {
	if err := netlink.LinkSetMTU(d.link, mtu); err != nil {
		return fmt.Errorf("set MTU %d: %w", mtu, err)
	}
	return nil
}
