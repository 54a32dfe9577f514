package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"vnic/device"
	"vnic/esn"
	"vnic/internal/memlimit"
	"vnic/internal/sdnotify"
	"vnic/keyhist"
	"vnic/metrics"
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
	level        slog.Level // -log-level, parsed
	cpuProfile   string
	metrics      string // -metrics, as metrics.ParseAddr returns it; "": off
	metricsPerSA bool
}

// The MTUs -mtu takes.
const (
	// minMTU is the least MTU an IPv4 interface takes (RFC 791).
	minMTU = 68
	// minMTU6 is the least an interface with IPv6 takes (RFC 8200).
	minMTU6 = 1280
	// maxMTU is the largest packet that, with its ESP overhead, still
	// fits in an IP packet (65535 bytes at most).
	maxMTU = 65535 - offload.MaxOverhead
)

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
	fs.IntVar(&c.mtu, "mtu", 0, fmt.Sprintf("interface MTU, %d to %d (default: the underlay interface's MTU minus the largest ESP overhead)", minMTU, maxMTU))
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
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics over HTTP at /metrics on ADDR: a port like 9477 listens on 127.0.0.1, "+
		"HOST:PORT on that host (default: off)")
	fs.BoolVar(&c.metricsPerSA, "metrics-per-sa", true, "with -metrics, export each SA's counters too (two series or more per SA: "+
		"with a very large table, most of a scrape)")
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
	if err := c.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("vnic up: -log-level: expected debug, info, warn or error, got %q", c.logLevel)
	}
	if err := checkName(c.name); err != nil {
		return nil, err
	}
	if err := checkMTU(c); err != nil {
		return nil, err
	}
	if c.socket == "" {
		c.socket = "/run/vnic/" + c.name + ".sock"
	}
	if c.keyHistory == "" {
		c.keyHistory = strings.TrimSuffix(c.socket, ".sock") + ".keys"
	}
	if c.metrics != "" {
		addr, err := metrics.ParseAddr(c.metrics)
		if err != nil {
			return nil, fmt.Errorf("vnic up: -metrics: %w", err)
		}
		c.metrics = addr
	}
	return c, nil
}

// defaultWorkers is the default of -crypto-workers: one core for each
// direction's packet loop, and a crypto worker for every core beyond. On a
// 2-core machine that is none: there, handing ranges to workers on cores
// the loops, the peer and the applications already keep busy costs more
// than it saves (scripts/bench.sh measures both in one run).
func defaultWorkers() int { return max(0, runtime.GOMAXPROCS(0)-2) }

// checkName refuses an interface name the kernel would refuse (its
// dev_valid_name), before the name makes a socket path.
func checkName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f") {
		return fmt.Errorf("vnic up: -name: expected an interface name of 1 to %d characters without /, : or spaces, like vnic1, got %q",
			unix.IFNAMSIZ-1, name)
	}
	return nil
}

// checkMTU refuses an -mtu no IP packet path can use: below IPv4's
// least (or IPv6's, for an interface with IPv6 addresses or routes), or
// too large to carry in ESP in one IP packet.
func checkMTU(c *upConfig) error {
	if c.mtu == 0 {
		return nil // the default, from the underlay
	}
	if c.mtu < minMTU {
		return fmt.Errorf("vnic up: -mtu must be %d to %d, got %d: no IP path takes an MTU below %d", minMTU, maxMTU, c.mtu, minMTU)
	}
	if c.mtu > maxMTU {
		return fmt.Errorf("vnic up: -mtu must be %d to %d, got %d: a larger packet, with up to %d bytes of ESP around it, "+
			"would not fit in an IP packet (65535 bytes at most)", minMTU, maxMTU, c.mtu, offload.MaxOverhead)
	}
	if c.mtu < minMTU6 {
		for _, p := range append(append([]netip.Prefix(nil), c.addrs...), c.routes...) {
			if p.Addr().Is6() {
				return fmt.Errorf("vnic up: -mtu %d is below %d, the least IPv6 takes, and %s is IPv6: give -mtu %d or more", c.mtu, minMTU6, p, minMTU6)
			}
		}
	}
	return nil
}

// runUp is `vnic up`: the daemon.
func runUp(args []string) error {
	cfg, err := parseUp(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.level}))

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
// Under a service manager ($NOTIFY_SOCKET) it says READY=1 once the socket
// answers, and STOPPING=1 when it begins to shut down.
func serve(ctx context.Context, cfg *upConfig, log *slog.Logger) error {
	// The socket first: a second daemon for the same device stops here,
	// before it touches any interface.
	ln, err := oid.Listen(cfg.socket)
	if err != nil {
		return listenError(ctx, cfg, err)
	}
	defer os.Remove(cfg.socket)
	defer ln.Close()
	// The metrics endpoint's port next: one that is taken stops the
	// daemon before it touches an interface too.
	var metricsLn net.Listener
	if cfg.metrics != "" {
		if metricsLn, err = metrics.Listen(cfg.metrics); err != nil {
			return metricsError(cfg, err)
		}
		defer metricsLn.Close()
	}

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
		return underlayError(cfg, err)
	}
	defer ul.Close()

	ulMTU, mtuErr := linkMTU(ul.Device())
	if cfg.mtu == 0 {
		// The largest that needs no fragmenting once protected.
		cfg.mtu = ulMTU - offload.MaxOverhead
	} else if mtuErr == nil {
		warnMTU(log, cfg.mtu, ul.Device(), ulMTU)
	}
	tunDev, err := tun.Open(tun.Config{Name: cfg.name, MTU: cfg.mtu, Addrs: cfg.addrs, Routes: cfg.routes})
	if err != nil {
		return tunError(ctx, cfg, oid.SocketPath(cfg.name), err)
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
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		notifyManager(ctx, cfg, fmt.Sprintf("%s up: MTU %d, underlay %v on %s, OID channel %s",
			cfg.name, cfg.mtu, cfg.underlay, ul.Device(), cfg.socket), log)
	}()
	metricsDone := make(chan struct{})
	go func() {
		defer close(metricsDone)
		serveMetrics(ctx, cfg, metricsLn, dev, log)
	}()
	err = dev.Run(ctx)
	cancel()
	<-notified
	<-metricsDone
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

// serveMetrics serves dev's metrics on ln (-metrics; nil: none) until ctx
// ends. An endpoint that fails is logged, and the device goes on without
// it.
func serveMetrics(ctx context.Context, cfg *upConfig, ln net.Listener, dev *device.Device, log *slog.Logger) {
	if ln == nil {
		return
	}
	reg := metrics.NewRegistry(dev, metrics.Options{PerSA: cfg.metricsPerSA})
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics", "per_sa", cfg.metricsPerSA)
	if err := metrics.Serve(ctx, ln, metrics.NewHandler(reg, log), log); err != nil {
		log.Error("the metrics endpoint failed: the device goes on without it", "err", err)
	}
}

// readyTimeout bounds the wait for the daemon's own socket to answer
// before it tells the service manager it is ready.
const readyTimeout = 30 * time.Second

// notifyManager tells the service manager, when there is one
// ($NOTIFY_SOCKET), that the daemon is ready (with status as its STATUS=)
// once its OID channel answers a capabilities request, and that it is
// stopping once ctx ends; it returns after that. A failure to notify is
// logged, and the daemon goes on.
func notifyManager(ctx context.Context, cfg *upConfig, status string, log *slog.Logger) {
	if os.Getenv(sdnotify.EnvSocket) == "" {
		return
	}
	if err := awaitDaemon(ctx, cfg.socket, readyTimeout); err != nil {
		if ctx.Err() == nil {
			log.Error("the OID channel does not answer: not telling the service manager that vnic is ready", "socket", cfg.socket, "err", err)
		}
	} else if _, err := sdnotify.Notify(sdnotify.Ready, sdnotify.Status(status)); err != nil {
		log.Warn("cannot tell the service manager that vnic is ready", "err", err)
	} else {
		log.Debug("told the service manager that vnic is ready", "status", status)
	}
	<-ctx.Done()
	if _, err := sdnotify.Notify(sdnotify.Stopping, sdnotify.Status(cfg.name+" stopping")); err != nil {
		log.Warn("cannot tell the service manager that vnic is stopping", "err", err)
	}
}

// probeTimeout bounds the question, when a start fails, whether another
// daemon answers.
const probeTimeout = 2 * time.Second

// answers reports whether a vnic daemon answers on socket.
func answers(ctx context.Context, socket string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return probe(ctx, socket) == nil
}

// cliFor is the vnic command line that talks to the daemon at socket, for
// messages that show one.
func cliFor(socket string) string {
	if name, ok := strings.CutPrefix(socket, "/run/vnic/"); ok && oid.SocketPath(strings.TrimSuffix(name, ".sock")) == socket &&
		!strings.Contains(name, "/") {
		return "vnic --dev " + strings.TrimSuffix(name, ".sock")
	}
	return "vnic --socket " + socket
}

// listenError explains why the OID channel's socket did not open: when a
// daemon answers there, that one runs already and what to do about it.
func listenError(ctx context.Context, cfg *upConfig, err error) error {
	if !answers(ctx, cfg.socket) {
		return err
	}
	return fmt.Errorf("another vnic daemon is serving %s (`%s caps` asks it): stop it first, or give this one another -name "+
		"(its socket is then /run/vnic/NAME.sock) or -socket PATH", cfg.socket, cliFor(cfg.socket))
}

// underlayError explains an underlay that did not open: a UDP port
// another socket holds.
func underlayError(cfg *upConfig, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: another socket holds UDP port %d on that address, probably another vnic daemon with the same "+
			"-underlay or an IKE daemon's NAT-T socket (ss -ulpn shows which): give this one another -udp-port or -underlay address",
			err, cfg.udpPort)
	}
	return err
}

// metricsError explains why the metrics endpoint could not listen: its
// port is taken, or its address is not this machine's.
func metricsError(cfg *upConfig, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("vnic up: -metrics %s: %w: another socket holds that TCP port (ss -tlpn shows which): "+
			"give -metrics another port", cfg.metrics, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("vnic up: -metrics %s: %w: no interface in this network namespace holds that address: "+
			"give one that an interface holds, or only a port for 127.0.0.1", cfg.metrics, err)
	}
	return fmt.Errorf("vnic up: -metrics %s: %w", cfg.metrics, err)
}

// tunError explains why the TUN interface was not created: its name is
// taken by a TUN interface another process holds, most likely another
// vnic daemon (which is asked on other, the default socket for the
// name), or by an interface of another kind.
func tunError(ctx context.Context, cfg *upConfig, other string, err error) error {
	switch {
	case errors.Is(err, unix.EBUSY):
		if other != cfg.socket && answers(ctx, other) {
			return fmt.Errorf("interface %s is already in use by another vnic daemon, which answers on %s (`%s caps` asks it): "+
				"give this one another interface name with -name (%w)", cfg.name, other, cliFor(other), err)
		}
		return fmt.Errorf("interface %s is already in use, probably by another vnic daemon (none answers on %s: one started "+
			"with -socket PATH answers `vnic --socket PATH caps`): give this one another interface name with -name (%w)",
			cfg.name, other, err)
	case errors.Is(err, unix.EINVAL):
		if _, lerr := netlink.LinkByName(cfg.name); lerr == nil {
			return fmt.Errorf("an interface named %s exists and is not a TUN interface vnic can use: give this one another "+
				"interface name with -name (%w)", cfg.name, err)
		}
	}
	return err
}

// warnMTU logs a warning when the interface's MTU is larger than what
// the underlay carries in one piece: the larger packets travel in
// fragments, which works, but is slower.
func warnMTU(log *slog.Logger, mtu int, underlayDev string, underlayMTU int) {
	if whole := underlayMTU - offload.MaxOverhead; mtu > whole {
		log.Warn("-mtu is above what the underlay carries in one piece: larger packets will travel in fragments on the underlay "+
			"(that works, but is slower)", "mtu", mtu, "unfragmented_up_to", whole, "underlay", underlayDev, "underlay_mtu", underlayMTU,
			"esp_overhead", offload.MaxOverhead)
	}
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

// linkMTU returns the MTU of interface dev: 1500, and the error, when it
// cannot be read.
func linkMTU(dev string) (int, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 1500, fmt.Errorf("MTU of %s: %w", dev, err)
	}
	return l.Attrs().MTU, nil
}
