package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"vnic/device"
	"vnic/esn"
	"vnic/internal/memlimit"
	"vnic/keyhist"
	"vnic/offload"
	"vnic/oid"
	"vnic/sadb"
	"vnic/tun"
	"vnic/underlay"
)

// upConfig is everything `vnic up` takes from its flags.
type upConfig struct {
	name         string
	mtu          int
	addrs        prefixList
	routes       prefixList
	underlay     addrList
	underlayDev  string
	udpPort      uint
	socket       string
	keyHistory   string
	capacity     int
	replayWindow int
	passUnknown  bool
	workers      int
	logLevel     string
	cpuProfile   string
}

type prefixList []netip.Prefix

func (p *prefixList) String() string { return fmt.Sprint(*p) }
func (p *prefixList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		x, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("expected an address with prefix length like 10.0.0.1/24, got %q", f)
		}
		*p = append(*p, x)
	}
	return nil
}

type addrList []netip.Addr

func (a *addrList) String() string { return fmt.Sprint(*a) }
func (a *addrList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		x, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("expected an IP address like 192.0.2.1, got %q", f)
		}
		*a = append(*a, x)
	}
	return nil
}

func parseUp(args []string) (*upConfig, error) {
	c := &upConfig{}
	fs := flag.NewFlagSet("vnic up", flag.ContinueOnError)
	fs.StringVar(&c.name, "name", "vnic0", "interface name")
	fs.IntVar(&c.mtu, "mtu", 0, "interface MTU (default: the underlay interface's MTU minus the largest ESP overhead)")
	fs.Var(&c.addrs, "addr", "interface address with prefix, e.g. 10.0.0.1/24 (repeatable, or comma-separated)")
	fs.Var(&c.routes, "route", "route into the interface, e.g. 10.2.0.0/16 (repeatable)")
	fs.Var(&c.underlay, "underlay", "local underlay address, IPv4 and/or IPv6 (repeatable; required)")
	fs.StringVar(&c.underlayDev, "underlay-dev", "", "underlay interface (default: the one holding the underlay address)")
	fs.UintVar(&c.udpPort, "udp-port", 4500, "local ESP-in-UDP port: every ESP-in-UDP SA sends from it and receives on it")
	fs.StringVar(&c.socket, "socket", "", "OID channel socket (default /run/vnic/NAME.sock)")
	fs.StringVar(&c.keyHistory, "key-history", "", "file that remembers the keys outbound SAs used, so that none is used twice, across restarts too (default: the socket's path with .keys for .sock)")
	fs.IntVar(&c.capacity, "capacity", 1024, "SaOffloadCapacity: how many SAs the device holds")
	fs.IntVar(&c.replayWindow, "replay-window", 64, "replay window for inbound SAs that do not give one")
	fs.BoolVar(&c.passUnknown, "pass-unknown-spi", false, "pass ESP with no inbound SA up to the device unprocessed (NDIS behaviour) instead of dropping it")
	fs.IntVar(&c.workers, "crypto-workers", defaultWorkers(), "goroutines that encrypt and decrypt batches in parallel with the packet loops (0: each loop does its own; default: the CPUs beyond two)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon's life to this file (for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("vnic up: unexpected argument %q (flags start with -)", fs.Arg(0))
	}
	if len(c.underlay) == 0 {
		return nil, errors.New("vnic up: give the local underlay address with -underlay ADDR")
	}
	if c.udpPort == 0 || c.udpPort > 65535 {
		return nil, fmt.Errorf("vnic up: -udp-port %d is not a port", c.udpPort)
	}
	if c.capacity < 1 {
		return nil, fmt.Errorf("vnic up: -capacity must be at least 1, got %d", c.capacity)
	}
	if c.replayWindow != 0 && (c.replayWindow < esn.MinWindow || c.replayWindow > esn.MaxWindow) {
		return nil, fmt.Errorf("vnic up: -replay-window must be 0 or %d to %d, got %d", esn.MinWindow, esn.MaxWindow, c.replayWindow)
	}
	if c.workers < 0 {
		return nil, fmt.Errorf("vnic up: -crypto-workers must be 0 or more, got %d", c.workers)
	}
	if c.socket == "" {
		c.socket = "/run/vnic/" + c.name + ".sock"
	}
	if c.keyHistory == "" {
		c.keyHistory = strings.TrimSuffix(c.socket, ".sock") + ".keys"
	}
	return c, nil
}

// defaultWorkers is the default of -crypto-workers: one core for each
// direction's packet loop, and a crypto worker for every core beyond. On a
// 2-core machine that is none: there, handing ranges to workers on cores
// the loops, the peer and the applications already keep busy costs more
// than it saves (scripts/bench.sh measures both in one run).
func defaultWorkers() int { return max(0, runtime.GOMAXPROCS(0)-2) }

// runUp is `vnic up`: the daemon.
func runUp(args []string) error {
	cfg, err := parseUp(args)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("vnic up: -log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go memlimit.Run(ctx) // the collector for a table-sized heap
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("vnic up: -cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("vnic up: -cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	return serve(ctx, cfg, log)
}

// serve runs the daemon: the OID channel's socket, the underlay, vnic0 and
// the key history, handed to a device.Device that it runs until ctx ends.
func serve(ctx context.Context, cfg *upConfig, log *slog.Logger) error {
	// The socket first: a second daemon for the same device stops here,
	// before it touches any interface.
	ln, err := oid.Listen(cfg.socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.socket)
	defer ln.Close()

	var ucfg underlay.Config
	for _, a := range cfg.underlay {
		if a.Unmap().Is4() {
			ucfg.Local4 = a.Unmap()
		} else {
			ucfg.Local6 = a
		}
	}
	ucfg.Device, ucfg.UDPPort, ucfg.BufferBytes = cfg.underlayDev, uint16(cfg.udpPort), 4<<20
	ul, err := underlay.Open(ctx, ucfg)
	if err != nil {
		return err
	}
	defer ul.Close()

	if cfg.mtu == 0 {
		cfg.mtu = defaultMTU(ul.Device())
	}
	tunDev, err := tun.Open(tun.Config{Name: cfg.name, MTU: cfg.mtu, Addrs: cfg.addrs, Routes: cfg.routes})
	if err != nil {
		return err
	}
	defer tunDev.Close()

	keys, err := keyhist.Open(cfg.keyHistory, 0)
	if err != nil {
		return err
	}
	defer keys.Close()

	dev := device.New(tunDev, ul, deviceConfig(cfg, keys), log)
	log.Info("vnic up", "device", cfg.name, "mtu", cfg.mtu, "underlay", cfg.underlay, "udp_port", cfg.udpPort,
		"socket", cfg.socket, "capacity", cfg.capacity, "generation", dev.Generation())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvErr := make(chan error, 1)
	go func() {
		srvErr <- oid.NewServer(dev, log).Serve(ctx, ln)
		cancel()
	}()
	err = dev.Run(ctx)
	cancel()
	if serr := <-srvErr; err == nil {
		err = serr
	}
	if err != nil {
		log.Info("vnic down", "device", cfg.name, "after", err)
		return err
	}
	log.Info("vnic down", "device", cfg.name)
	return nil
}

// deviceConfig is the device the flags ask for, whose table records
// outbound keys in keys (nil: none).
func deviceConfig(cfg *upConfig, keys *keyhist.History) device.Config {
	dc := device.Config{
		Table: sadb.TableConfig{Capacity: cfg.capacity, DefaultReplayWindow: cfg.replayWindow,
			// The one ESP-in-UDP socket's port: SAs with another
			// local port would not be sent from, or receive on, the
			// port they show.
			UDPPort: uint16(cfg.udpPort)},
		PassUnknownSPI: cfg.passUnknown,
		CryptoWorkers:  cfg.workers,
	}
	if keys != nil {
		dc.Table.Keys = keys
	}
	return dc
}

// defaultMTU is the underlay interface's MTU minus the largest ESP
// overhead, so that no protected packet needs fragmenting.
func defaultMTU(underlayDev string) int {
	mtu := 1500
	if l, err := netlink.LinkByName(underlayDev); err == nil {
		mtu = l.Attrs().MTU
	}
	return mtu - offload.MaxOverhead
}
