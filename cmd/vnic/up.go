package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"

	"vnic/algo"
	"vnic/esn"
	"vnic/event"
	"vnic/keyhist"
	"vnic/ndis"
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

// daemon is the running device: what the OID channel controls.
type daemon struct {
	cfg    *upConfig
	table  *sadb.Table
	bus    *event.Bus
	engine *offload.Engine
	wire   *underlay.Conn
	gen    uint64
}

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
	dev, err := tun.Open(tun.Config{Name: cfg.name, MTU: cfg.mtu, Addrs: cfg.addrs, Routes: cfg.routes})
	if err != nil {
		return err
	}
	defer dev.Close()

	keys, err := keyhist.Open(cfg.keyHistory, 0)
	if err != nil {
		return err
	}
	defer keys.Close()

	d := &daemon{cfg: cfg, table: newTable(cfg, keys), bus: &event.Bus{}, wire: ul, gen: newGeneration()}
	d.engine = offload.NewEngine(d.table, d.bus, log, offload.Options{
		PassUnknownSPI: cfg.passUnknown, CryptoWorkers: cfg.workers})

	log.Info("vnic up", "device", cfg.name, "mtu", cfg.mtu, "underlay", cfg.underlay, "udp_port", cfg.udpPort,
		"socket", cfg.socket, "capacity", cfg.capacity, "generation", d.gen)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	goRun := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
			}
			cancel()
		}()
	}
	goRun(func() error { return oid.NewServer(d, log).Serve(ctx, ln) })
	goRun(func() error { return d.engine.RunOutbound(ctx, dev, ul) })
	goRun(func() error { ul.Run(ctx, log, d.receive(dev)); return nil })
	goRun(func() error { d.engine.RunTimers(ctx, ul); return nil })
	goRun(func() error { d.engine.RunCrypto(ctx); return nil })

	<-ctx.Done()
	// Unblock the device read, then wait for every loop.
	dev.Close()
	ul.Close()
	wg.Wait()
	close(errc)
	for err := range errc {
		if !errors.Is(err, os.ErrClosed) {
			log.Info("vnic down", "device", cfg.name, "after", err)
			return err
		}
	}
	log.Info("vnic down", "device", cfg.name)
	return nil
}

// newTable returns the daemon's empty SA table, set up from the flags,
// that records outbound keys in keys (nil: none).
func newTable(cfg *upConfig, keys *keyhist.History) *sadb.Table {
	tc := sadb.TableConfig{Capacity: cfg.capacity, DefaultReplayWindow: cfg.replayWindow,
		// The one ESP-in-UDP socket's port: SAs with another local
		// port would not be sent from, or receive on, the port they
		// show.
		UDPPort: uint16(cfg.udpPort)}
	if keys != nil {
		tc.Keys = keys
	}
	return sadb.New(tc)
}

// receive returns the underlay's delivery function: each reader gets its
// own Receiver, which writes a batch to the device in one call.
func (d *daemon) receive(dev offload.TUN) func() underlay.Deliver {
	return func() underlay.Deliver {
		rx := d.engine.NewReceiver(dev)
		return func(pkts []underlay.Packet) {
			for _, p := range pkts {
				rx.Add(p.Buf, p.Start, p.End)
			}
			rx.Flush()
		}
	}
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

func newGeneration() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) &^ (1 << 63)
}

// The oid.Device methods.

func (d *daemon) Table() *sadb.Table { return d.table }
func (d *daemon) Stats() map[string]uint64 {
	m := d.engine.Stats()
	m["VnicInReadError"] = d.wire.ReadErrors()
	return m
}
func (d *daemon) Events() *event.Bus { return d.bus }
func (d *daemon) Generation() uint64 { return d.gen }

func (d *daemon) RequestDelete(h sadb.Handle) error {
	sa := d.table.Get(h)
	if sa == nil {
		return ndis.Errorf(ndis.StatusInvalidParameter, "unknown handle %d", h)
	}
	d.engine.RequestDeleteSA(sa, "operator request")
	return nil
}

func (d *daemon) Capabilities() oid.Capabilities {
	return capabilities(d.cfg.capacity, d.table.Len(), d.cfg.passUnknown, d.gen)
}

// capabilities reports what really works: an algorithm, mode or feature
// is listed only when the data path does it (docs/oid-channel.md); the
// algorithms are the catalogue's (algo.Offered).
func capabilities(capacity, count int, passUnknown bool, gen uint64) oid.Capabilities {
	algs := algo.Offered()
	gcm, _ := algo.EncryptionAlgorithm(ndis.EncryptionAESGCM128)
	return oid.Capabilities{
		Encapsulation:                0x01, // NDIS_ENCAPSULATION_NULL: a TUN device has no link header
		IPv6Supported:                true,
		IPv4Options:                  true,
		IPv6NonIPsecExtensionHeaders: true,
		Esp:                          true,
		Transport:                    true,
		Tunnel:                       true,
		LsoSupported:                 true,
		ExtendedSequenceNumbers:      true,
		UdpEsp:                       ndis.UDPESPTransport | ndis.UDPESPTunnel,
		AuthenticationAlgorithms:     algs.Authentication,
		EncryptionAlgorithms:         algs.Encryption,
		SaOffloadCapacity:            uint32(capacity),
		Vnic: oid.Extensions{
			AuthenticationAlgorithms: algs.VnicAuthentication,
			EncryptionAlgorithms:     algs.VnicEncryption,
			AesGcmIcvLengths:         slices.Sorted(slices.Values(gcm.ICVs)),
			MinReplayWindow:          esn.MinWindow,
			MaxReplayWindow:          esn.MaxWindow,
			TrafficSelectors:         true,
			Lifetimes:                true,
			PassUnknownSPI:           passUnknown,
			SaCount:                  count,
			Generation:               gen,
		},
	}
}
