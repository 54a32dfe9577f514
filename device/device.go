// Package device is the NIC: vnic's IPsec-offload network card. A Device
// owns the host side (a TUN device, vnic0), the wire side (a Bind: the
// underlay sockets) and the offloaded SAs (sadb), and runs, side by side:
//
//   - the outbound loop (outbound.go): read plaintext packets from vnic0
//     in batches, protect each with its outbound SA, send the batch;
//   - an inbound loop per underlay socket (inbound.go): receive ESP in
//     batches, verify and decrypt each with its inbound SA, write the
//     batch to vnic0;
//   - the crypto workers that both loops hand ranges of a batch to
//     (crypto.go);
//   - the timers (timers.go): time lifetimes and NAT keepalives;
//   - the event policy (events.go): SaDeleteReq, lifetimes, ESN and
//     rate-limited crypto errors on the event bus.
//
// The OID channel (package oid) controls a Device through its Table,
// Capabilities, Stats, Events, Generation and RequestDelete methods. The
// per-packet transforms are package offload's; every drop is counted under
// a name that says why (stats.go).
package device

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"vnic/algo"
	"vnic/esn"
	"vnic/event"
	"vnic/ndis"
	"vnic/oid"
	"vnic/sadb"
	"vnic/underlay"
)

// TUN is the host side of the device: golang.zx2c4.com/wireguard/tun's
// Device (package tun opens vnic0), or an in-memory one in tests.
type TUN interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Close() error
}

// Wire is the sending half of the underlay: it sends ESP packets, each
// with its outer header as fields, in batches.
type Wire interface {
	// SendBatch sends pkts, sets failed[i] (len(failed) >= len(pkts))
	// to whether pkts[i] failed to go, and returns how many went and the
	// first error. It may write into the buffers before each packet's
	// Start (the raw sockets' IP header).
	SendBatch(pkts []underlay.Packet, failed []bool) (sent int, err error)
}

// Bind is the underlay: underlay.Conn, or an in-memory one in tests.
type Bind interface {
	Wire
	// Receivers returns one receive function per socket; the device
	// runs each in a loop of its own.
	Receivers() []underlay.ReceiveFunc
	// Close closes the sockets: pending and later receives return
	// net.ErrClosed.
	Close() error
}

// Config is how a device is built.
type Config struct {
	// Table configures the SA table (SaOffloadCapacity, default replay
	// window, ESP-in-UDP port, key history). Its OnAdd is the device's
	// own: the timers learn of new SAs through it.
	Table sadb.TableConfig
	// PassUnknownSPI passes ESP packets for which no inbound SA exists up
	// to the device unprocessed, as NDIS does, instead of dropping them.
	PassUnknownSPI bool
	// CryptoEventInterval is the least time between two CryptoError
	// events for one SA and counter (1 s when zero).
	CryptoEventInterval time.Duration
	// CryptoWorkers is how many goroutines seal and open packets in
	// parallel with the loops (none when zero: each loop does its own
	// cryptography).
	CryptoWorkers int
}

// maxPacket is the largest packet a device read returns: vnic0's MTU can
// be raised at any time up to the IP limit, and a buffer too small for a
// read is an error (or, for a segmented one, a panic) in the TUN layer.
const maxPacket = 65535

// tunOffset is where a decrypted packet must start in the buffer handed
// to TUN.Write: room for the virtio-net header.
const tunOffset = 16

// Device is one vnic NIC. Create it with New and start it with Run.
type Device struct {
	cfg   Config
	log   *slog.Logger
	table *sadb.Table
	bus   *event.Bus
	gen   uint64
	tun   TUN
	bind  Bind

	drops  [sadb.NumReasons]atomic.Uint64
	crypto [ndis.CryptoInvalidProtocol + 1]atomic.Uint64
	counts [numCounts]atomic.Uint64

	// dropLogs rate-limits the debug lines about drops, per counter, to
	// one per dropLogEvery (a test shortens it); sendLog those about
	// send errors.
	dropLogs     [sadb.NumReasons]dropLog
	sendLog      dropLog // the same for packets the underlay did not send
	dropLogEvery time.Duration

	errMu   sync.Mutex
	errSeen map[errKey]*errState

	timers timers

	// work carries ranges of packets to the crypto workers.
	work chan cryptoRange
}

// New returns a device over tun and bind, with an empty SA table. The
// device owns tun and bind from now on: Run closes them when it ends.
func New(tun TUN, bind Bind, cfg Config, log *slog.Logger) *Device {
	d := newDevice(cfg, log)
	d.tun, d.bind = tun, bind
	return d
}

// newDevice returns a device with an empty SA table and no TUN or Bind
// yet: tests run its loops one by one.
func newDevice(cfg Config, log *slog.Logger) *Device {
	if cfg.CryptoEventInterval == 0 {
		cfg.CryptoEventInterval = time.Second
	}
	d := &Device{cfg: cfg, log: log, bus: &event.Bus{}, gen: newGeneration(),
		errSeen: map[errKey]*errState{}, work: make(chan cryptoRange, 4*cfg.CryptoWorkers)}
	d.timers.epoch = time.Now()
	d.dropLogEvery = dropLogEvery
	cfg.Table.OnAdd = d.saAdded
	cfg.Table.OnDelete = d.saDeleted
	cfg.Table.OnUpdate = d.saUpdated
	d.table = sadb.New(cfg.Table)
	return d
}

// Run runs the device's loops until ctx ends or the TUN device fails,
// then closes the TUN device and the Bind, waits for every loop and
// returns why it stopped (nil when ctx ended).
func (d *Device) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	run := func(f func(ctx context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				select {
				case errc <- err:
				default:
				}
			}
			cancel()
		}()
	}
	run(func(ctx context.Context) error { return d.runOutbound(ctx, d.tun, d.bind) })
	for _, recv := range d.bind.Receivers() {
		run(func(ctx context.Context) error { d.runInbound(ctx, recv); return nil })
	}
	run(func(ctx context.Context) error { d.runTimers(ctx, d.bind); return nil })
	run(func(ctx context.Context) error { d.runCrypto(ctx); return nil })

	<-ctx.Done()
	// Unblock the device read and the socket reads, then wait for every
	// loop.
	d.tun.Close()
	d.bind.Close()
	wg.Wait()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			return err
		}
	default:
	}
	return nil
}

func newGeneration() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) &^ (1 << 63)
}

// The oid.Device methods.

// Table returns the device's SAs.
func (d *Device) Table() *sadb.Table { return d.table }

// Events returns the bus the device publishes its events on.
func (d *Device) Events() *event.Bus { return d.bus }

// Generation returns the device's generation: a random number drawn when
// it was made, so that a host sees a restart.
func (d *Device) Generation() uint64 { return d.gen }

// RequestDelete raises SaDeleteReq for the SA with handle h (and its
// twin), as the device does itself when an SA nears its end.
func (d *Device) RequestDelete(h sadb.Handle) error {
	sa := d.table.Get(h)
	if sa == nil {
		return ndis.Errorf(ndis.StatusInvalidParameter, "unknown handle %d", h)
	}
	d.requestDeleteSA(sa, "operator request")
	return nil
}

// Capabilities reports what really works: an algorithm, mode or feature
// is listed only when the data path does it (docs/oid-channel.md); the
// algorithms are the catalogue's (algo.Offered).
func (d *Device) Capabilities() oid.Capabilities {
	return capabilities(d.table.Capacity(), d.table.Len(), d.cfg.PassUnknownSPI, d.gen)
}

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
