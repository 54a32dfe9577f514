package integration

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Reading what tcpdump wrote (pcap, not pcapng), and the captures that
// prove what did and did not cross an interface.

// pcap link types the captures here produce.
const (
	linkEthernet = 1
	linkRaw      = 101 // LINKTYPE_RAW: a TUN device, no link header
	linkRawOld   = 12  // DLT_RAW as some systems write it
	linkRawIPv4  = 228
)

// readPcap returns the link type and frames of a pcap file.
func readPcap(path string) (uint32, [][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 24 {
		return 0, nil, fmt.Errorf("%s: %d bytes, no pcap header", path, len(b))
	}
	var bo binary.ByteOrder
	switch m := binary.LittleEndian.Uint32(b); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return 0, nil, fmt.Errorf("%s: magic %#x is not pcap", path, m)
	}
	link := bo.Uint32(b[20:]) & 0x0fffffff
	var frames [][]byte
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			return 0, nil, fmt.Errorf("%s: truncated record header at %d", path, off)
		}
		n := int(bo.Uint32(b[off+8:]))
		off += 16
		if off+n > len(b) {
			return 0, nil, fmt.Errorf("%s: truncated record at %d", path, off)
		}
		frames = append(frames, b[off:off+n])
		off += n
	}
	return link, frames, nil
}

// ipOf returns the IP packet in a frame of the given link type (nil for a
// frame that carries no IP: ARP, say) and the EtherType.
func ipOf(link uint32, f []byte) ([]byte, uint16) {
	switch link {
	case linkEthernet:
		if len(f) < 14 {
			return nil, 0
		}
		et := binary.BigEndian.Uint16(f[12:])
		if et == 0x0800 || et == 0x86dd {
			return f[14:], et
		}
		return nil, et
	case linkRaw, linkRawOld, linkRawIPv4:
		if len(f) == 0 {
			return nil, 0
		}
		switch f[0] >> 4 {
		case 4:
			return f, 0x0800
		case 6:
			return f, 0x86dd
		}
	}
	return nil, 0
}

// pcapCapture is tcpdump writing an interface's packets to a file.
type pcapCapture struct {
	p    *nsProc
	file string
	what string
}

// startPcap runs tcpdump on dev in namespace ns with the options opts,
// writing every packet to a file of its own, and waits until it listens.
// -Z root: tcpdump would otherwise write as the user tcpdump, who cannot
// write in the test's directory. --immediate-mode: every packet is read as
// it comes, not when a ring block fills up. There is no filter on purpose:
// libpcap runs a kernel filter in user space on the first packets, and a
// filter on the direction ("inbound") then fails on a TUN device and loses
// them; -Q in works.
func startPcap(t *testing.T, ns, dev string, opts ...string) *pcapCapture {
	t.Helper()
	needTool(t, "tcpdump")
	file := filepath.Join(t.TempDir(), dev+".pcap")
	args := append([]string{"tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-Z", "root", "-B", "8192",
		"-w", file}, opts...)
	c := &pcapCapture{p: startInNS(t, ns, args...), file: file, what: dev + " in " + ns}
	waitCapture(t, c.p)
	return c
}

var tcpdumpStat = regexp.MustCompile(`(\d+) packets? (captured|received by filter|dropped by kernel)`)

// stats asks tcpdump for its statistics (SIGUSR1: it prints them and goes
// on) and returns them.
func (c *pcapCapture) stats(t *testing.T) map[string]int {
	t.Helper()
	n := strings.Count(c.p.output(), "captured")
	c.p.cmd.Process.Signal(syscall.SIGUSR1) // our own child, by its pid
	if !pollUntil(10*time.Second, func() bool { return strings.Count(c.p.output(), "captured") > n }) {
		t.Fatalf("capture on %s: tcpdump printed no statistics on SIGUSR1:\n%s", c.what, c.p.output())
	}
	return tcpdumpStats(c.p.output())
}

// tcpdumpStats is the last statistics tcpdump printed.
func tcpdumpStats(out string) map[string]int {
	got := map[string]int{}
	for _, m := range tcpdumpStat.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		got[m[2]] = n
	}
	return got
}

// stop ends tcpdump, once the traffic has stopped, and returns what it
// captured. It fails the test unless the capture is complete: the kernel
// dropped no packet for want of room in tcpdump's ring, and tcpdump had
// read everything in the ring before it stopped (its count of captured
// packets stood still for a while first). ("Received by filter" says
// nothing here: the kernel counts packets that libpcap then discards, such
// as loopback's outgoing copies.)
func (c *pcapCapture) stop(t *testing.T) (uint32, [][]byte) {
	t.Helper()
	last := -1
	if !pollUntil(20*time.Second, func() bool {
		n := c.stats(t)["captured"]
		if n == last {
			return true
		}
		last = n
		time.Sleep(200 * time.Millisecond)
		return false
	}) {
		t.Fatalf("capture on %s: packets kept coming:\n%s", c.what, c.p.output())
	}
	c.p.terminate(0)
	out := c.p.output()
	got := tcpdumpStats(out)
	if len(got) != 3 || got["captured"] < last {
		t.Fatalf("capture on %s: no final tcpdump statistics:\n%s", c.what, out)
	}
	if got["dropped by kernel"] != 0 {
		t.Fatalf("capture on %s is incomplete, so it proves nothing:\n%s", c.what, out)
	}
	link, frames, err := readPcap(c.file)
	if err != nil {
		t.Fatalf("capture on %s: %v", c.what, err)
	}
	if len(frames) != got["captured"] {
		t.Fatalf("capture on %s: %d frames in the file, tcpdump says %d:\n%s", c.what, len(frames), got["captured"], out)
	}
	return link, frames
}

// procNetDrops is the sum of the drops column of every IPv4 raw and UDP
// socket in ns: packets the kernel had for a socket but could not queue
// (a full receive buffer).
func procNetDrops(t *testing.T, ns string) uint64 {
	t.Helper()
	var sum uint64
	for _, f := range []string{"/proc/net/raw", "/proc/net/udp"} {
		out := sh(t, "ip", "netns", "exec", ns, "cat", f)
		for i, l := range lines(out) {
			fs := strings.Fields(l)
			if i == 0 || len(fs) == 0 {
				continue
			}
			n, err := strconv.ParseUint(fs[len(fs)-1], 10, 64)
			if err != nil {
				t.Fatalf("%s in %s: %q: %v", f, ns, l, err)
			}
			sum += n
		}
	}
	return sum
}

// procSNMP returns the counters of one protocol line of /proc/net/snmp in ns
// ("Ip", "Udp", ...).
func procSNMP(t *testing.T, ns, proto string) map[string]uint64 {
	t.Helper()
	out := sh(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	var names []string
	for _, l := range lines(out) {
		fs := strings.Fields(l)
		if len(fs) == 0 || fs[0] != proto+":" {
			continue
		}
		if names == nil {
			names = fs[1:]
			continue
		}
		m := map[string]uint64{}
		for i, v := range fs[1:] {
			if i < len(names) {
				n, _ := strconv.ParseInt(v, 10, 64)
				m[names[i]] = uint64(n)
			}
		}
		return m
	}
	t.Fatalf("/proc/net/snmp in %s has no %s lines:\n%s", ns, proto, out)
	return nil
}

// linkPackets is the packet counters of dev in ns.
func linkPackets(t *testing.T, ns, dev string) (rx, tx uint64) {
	t.Helper()
	out := sh(t, "ip", "netns", "exec", ns, "ip", "-s", "-j", "link", "show", dev)
	var links []struct {
		Stats64 struct {
			Rx struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			Tx struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s: %v\n%s", dev, err, out)
	}
	return links[0].Stats64.Rx.Packets, links[0].Stats64.Tx.Packets
}

// pollUntil polls cond every 50 ms until it holds or d has passed, and
// says whether it held. It waits for the system to settle; the tests never
// assert on how long that takes, so d is generous.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
