package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vnic/internal/kernelpeer"
	"vnic/internal/testutil"
)

// The kernel peer: Linux's own IPsec in a VM (internal/kernelpeer), on a
// tap device in a namespace where a vnic daemon runs. One VM serves every
// kernel test of this binary (it takes seconds to boot under TCG); a test
// takes it whole with kernelPeer and leaves it without states or
// policies.

// Addresses of the kernel-peer network: the underlay between the
// namespace's tap device (vnic's side) and the guest's eth0, and the
// inner addresses tunnel mode carries (vnic0's and the guest's lo).
const (
	kpHost4, kpGuest4           = "192.168.78.1", "192.168.78.2"
	kpHost6, kpGuest6           = "fd78::1", "fd78::2"
	kpInnerHost4, kpInnerGuest4 = "10.7.0.1", "10.7.0.2"
	kpInnerHost6, kpInnerGuest6 = "fd07::1", "fd07::2"
	kpGuestMAC                  = "52:54:00:12:34:56"
)

// kernelPeer is the VM and the namespace it is attached to.
type kernelPeer struct {
	vm *kernelpeer.VM
	h  *host // vnic's side: the namespace with the tap device kp0
}

var kpShared struct {
	once sync.Once
	mu   sync.Mutex // held by the test that uses the peer
	kp   *kernelPeer
	err  error
	skip bool // err says something is missing, not broken
}

// closeKernelPeer stops the shared VM, if one was booted (TestMain).
func closeKernelPeer() {
	if kp := kpShared.kp; kp != nil {
		kp.vm.Close()
		exec.Command("ip", "netns", "del", kp.h.ns).Run()
		os.RemoveAll(filepath.Dir(kp.h.sock))
	}
}

// kernelPeerFor returns the shared kernel peer for t's exclusive use,
// booting it on first use, with vnic started in its namespace with flags.
// Without root, qemu or the image's packages the test is skipped, or fails
// with VNIC_REQUIRE_ROOT_TESTS=1 (CI).
func kernelPeerFor(t *testing.T, flags ...string) *kernelPeer {
	t.Helper()
	needRoot(t)
	needTool(t, "qemu-system-x86_64", "ping", "iperf3")
	kpShared.once.Do(func() { kpShared.kp, kpShared.skip, kpShared.err = bootKernelPeer() })
	if kpShared.err != nil {
		if kpShared.skip {
			testutil.Unavailable(t, "no kernel peer: %v", kpShared.err)
		}
		t.Fatalf("no kernel peer: %v", kpShared.err)
	}
	kpShared.mu.Lock()
	kp := kpShared.kp
	t.Cleanup(func() {
		defer kpShared.mu.Unlock() // also when reset fails the test
		kp.h.stop(t)
		kp.reset(t)
	})
	kp.reset(t)
	kp.h.start(t, append([]string{"-addr", kpInnerHost4 + "/24", "-addr", kpInnerHost6 + "/64",
		"-route", kpGuest4 + "/32", "-route", kpGuest6 + "/128"}, flags...)...)
	return kp
}

// bootKernelPeer prepares the image, builds the guest agent and boots the
// VM on a tap device in a new namespace, addressed and with static
// neighbour entries both ways (transport-mode policies would otherwise
// catch ARP's IPv6 counterpart, neighbour discovery).
func bootKernelPeer() (kp *kernelPeer, missing bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := kernelpeer.Prepare(ctx, kernelpeer.PrepareOptions{Log: os.Stderr})
	if err != nil {
		return nil, true, err
	}
	agent := filepath.Join(filepath.Dir(vnicBin), "kernel-peer")
	build := exec.Command("go", "build", "-o", agent, "vnic/cmd/kernel-peer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, false, fmt.Errorf("build the guest agent: %v\n%s", err, out)
	}
	h := &host{ns: "vnicK-" + randHex(3), veth: "kp0", u4: kpHost4, u6: kpHost6}
	h.sock = filepath.Join("/run/vnic-it", h.ns, "vnic0.sock")
	if out, err := exec.Command("ip", "netns", "add", h.ns).CombinedOutput(); err != nil {
		return nil, false, fmt.Errorf("ip netns add: %v %s", err, out)
	}
	cpus, _ := strconv.Atoi(os.Getenv("VNIC_KERNEL_PEER_CPUS"))
	vm, err := kernelpeer.Boot(ctx, kernelpeer.Config{Image: img, Agent: agent, Netns: h.ns, Tap: h.veth, CPUs: cpus,
		CPUModel: os.Getenv("VNIC_KERNEL_PEER_CPU_MODEL")})
	if err != nil {
		exec.Command("ip", "netns", "del", h.ns).Run()
		return nil, false, err
	}
	kp = &kernelPeer{vm: vm, h: h}
	defer func() {
		if err != nil {
			kp.vm.Close()
			exec.Command("ip", "netns", "del", h.ns).Run()
		}
	}()
	setup := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", kpHost4 + "/24", "dev", h.veth},
		{"ip", "addr", "add", kpHost6 + "/64", "dev", h.veth, "nodad"},
		{"ip", "neigh", "replace", kpGuest4, "lladdr", kpGuestMAC, "dev", h.veth, "nud", "permanent"},
		{"ip", "neigh", "replace", kpGuest6, "lladdr", kpGuestMAC, "dev", h.veth, "nud", "permanent"},
	}
	for _, k := range []string{"all", "default", h.veth} {
		setup = append(setup, []string{"sysctl", "-qw", "net.ipv4.conf." + k + ".rp_filter=0"})
	}
	for _, c := range setup {
		if out, cerr := exec.Command("ip", append([]string{"netns", "exec", h.ns}, c...)...).CombinedOutput(); cerr != nil {
			err = fmt.Errorf("%v: %v %s", c, cerr, out)
			return nil, false, err
		}
	}
	out, err := exec.Command("ip", "-n", h.ns, "-br", "link", "show", h.veth).CombinedOutput()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 3 {
		err = fmt.Errorf("the tap device's address: %v %s", err, out)
		return nil, false, err
	}
	tapMAC := f[2]
	guest := strings.Join([]string{
		"set -e",
		"sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0",
		"ip addr add " + kpGuest4 + "/24 dev eth0",
		"ip addr add " + kpGuest6 + "/64 dev eth0 nodad",
		"ip addr add " + kpInnerGuest4 + "/32 dev lo",
		"ip addr add " + kpInnerGuest6 + "/128 dev lo",
		"ip route add 10.7.0.0/24 via " + kpHost4,
		"ip -6 route add fd07::/64 via " + kpHost6,
		"ip neigh replace " + kpHost4 + " lladdr " + tapMAC + " dev eth0 nud permanent",
		"ip neigh replace " + kpHost6 + " lladdr " + tapMAC + " dev eth0 nud permanent",
		// The kernel decapsulates ESP-in-UDP only on a socket with
		// UDP_ENCAP: the agent holds one on 4500 for each family.
		"kernel-peer guest-espinudp 4500 >/dev/null 2>&1 &",
	}, "\n")
	if r, rerr := vm.Run(ctx, guest, 0); rerr != nil || r.Code != 0 {
		err = fmt.Errorf("guest setup: %v %s", rerr, r.Out)
		return nil, false, err
	}
	return kp, false, nil
}

// guest runs cmd in the guest and fails the test unless it succeeds.
func (kp *kernelPeer) guest(t *testing.T, cmd string) string {
	t.Helper()
	r, err := kp.vm.Run(context.Background(), cmd, time.Minute)
	if err != nil || r.Code != 0 {
		t.Fatalf("guest: %s: exit %d, %v\n%s", redact(cmd), r.Code, err, r.Out)
	}
	return r.Out
}

// tryGuest runs cmd in the guest and returns its output and whether it
// succeeded.
func (kp *kernelPeer) tryGuest(cmd string, timeout time.Duration) (string, bool) {
	r, err := kp.vm.Run(context.Background(), cmd, timeout)
	return r.Out, err == nil && r.Code == 0
}

// reset removes every state and policy from the guest.
func (kp *kernelPeer) reset(t *testing.T) {
	t.Helper()
	kp.guest(t, "ip xfrm policy flush; ip xfrm state flush")
}

// xfrmStat returns the guest's /proc/net/xfrm_stat.
func (kp *kernelPeer) xfrmStat(t *testing.T) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, l := range lines(kp.guest(t, "cat /proc/net/xfrm_stat")) {
		f := strings.Fields(l)
		if len(f) == 2 {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("xfrm_stat line %q", l)
			}
			m[f[0]] = n
		}
	}
	if len(m) < 20 {
		t.Fatalf("xfrm_stat has %d counters", len(m))
	}
	return m
}

// kernelSA is what `ip -s xfrm state` says of one state.
type kernelSA struct {
	spi                  uint32
	bytes, packets       uint64 // lifetime current
	replayWindow, replay uint64 // stats: out-of-window and replayed packets
	failed               uint64 // stats: integrity failures
	seq, oseq            uint64 // highest received and last sent, with the high bits under ESN
	raw                  string
}

var (
	reSPI      = regexp.MustCompile(`spi 0x([0-9a-f]+)`)
	reCurrent  = regexp.MustCompile(`lifetime current:\s+(\d+)\(bytes\), (\d+)\(packets\)`)
	reStats    = regexp.MustCompile(`stats:\s+replay-window (\d+) replay (\d+) failed (\d+)`)
	reESN      = regexp.MustCompile(`seq-hi 0x([0-9a-f]+), seq 0x([0-9a-f]+), oseq-hi 0x([0-9a-f]+), oseq 0x([0-9a-f]+)`)
	reNonESN   = regexp.MustCompile(`anti-replay context:\s+seq 0x([0-9a-f]+), oseq 0x([0-9a-f]+)`)
	reStateHdr = regexp.MustCompile(`(?m)^src `)
)

// kernelSAs returns the guest's states by SPI.
func (kp *kernelPeer) kernelSAs(t *testing.T) map[uint32]kernelSA {
	t.Helper()
	out := kp.guest(t, "ip -s xfrm state")
	m := map[uint32]kernelSA{}
	idx := reStateHdr.FindAllStringIndex(out, -1)
	for i, loc := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		s := out[loc[0]:end]
		var k kernelSA
		k.raw = s
		hexv := func(x string) uint64 { v, _ := strconv.ParseUint(x, 16, 64); return v }
		dec := func(x string) uint64 { v, _ := strconv.ParseUint(x, 10, 64); return v }
		mm := reSPI.FindStringSubmatch(s)
		c := reCurrent.FindStringSubmatch(s)
		st := reStats.FindStringSubmatch(s)
		if mm == nil || c == nil || st == nil {
			t.Fatalf("cannot read this state of ip -s xfrm state:\n%s", s)
		}
		k.spi = uint32(hexv(mm[1]))
		k.bytes, k.packets = dec(c[1]), dec(c[2])
		k.replayWindow, k.replay, k.failed = dec(st[1]), dec(st[2]), dec(st[3])
		if e := reESN.FindStringSubmatch(s); e != nil {
			k.seq, k.oseq = hexv(e[1])<<32|hexv(e[2]), hexv(e[3])<<32|hexv(e[4])
		} else if e := reNonESN.FindStringSubmatch(s); e != nil {
			k.seq, k.oseq = hexv(e[1]), hexv(e[2])
		}
		m[k.spi] = k
	}
	return m
}
