package integration

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// algorithms is every transform vnic offers, as `vnic sa add` words with
// KEY placeholders (filled with fresh random keys per SA).
var algorithms = []struct {
	name  string
	words string
}{
	{"aes-gcm-128", "aead rfc4106(gcm(aes)) 0xKEY20 128"},
	{"aes-gcm-192-icv96", "aead rfc4106(gcm(aes)) 0xKEY28 96"},
	{"aes-gcm-256-icv64", "aead rfc4106(gcm(aes)) 0xKEY36 64"},
	{"aes-gmac-128", "aead rfc4543(gcm(aes)) 0xKEY20 128"},
	{"chacha20-poly1305", "aead rfc7539esp(chacha20,poly1305) 0xKEY36 128"},
	{"aes-cbc-128-sha1", "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20 96"},
	{"aes-cbc-192-sha256", "enc cbc(aes) 0xKEY24 auth-trunc hmac(sha256) 0xKEY32 128"},
	{"aes-cbc-256-sha384", "enc cbc(aes) 0xKEY32 auth-trunc hmac(sha384) 0xKEY48 192"},
	{"aes-cbc-256-sha512", "enc cbc(aes) 0xKEY32 auth-trunc hmac(sha512) 0xKEY64 256"},
	{"null-sha256", "enc ecb(cipher_null) '' auth-trunc hmac(sha256) 0xKEY32 128"},
}

// withKeys splits words, each 0xKEYn filled with n random bytes.
func withKeys(words string) []string {
	return testutil.Words(testutil.FillKeys(words, func(n int) []byte {
		k := make([]byte, n)
		rand.Read(k)
		return k
	}))
}

var handleRE = regexp.MustCompile(`handle (\d+)`)

// addSA installs one SA and returns its handle.
func (h *host) addSA(t *testing.T, words ...string) string {
	t.Helper()
	out := h.vnic(t, append([]string{"sa", "add"}, words...)...)
	m := handleRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("sa add printed no handle: %q", out)
	}
	return m[1]
}

// path is one way of carrying traffic between the two hosts.
type path struct {
	mode       string // tunnel or transport
	outer      int    // 4 or 6
	inner      int    // 4 or 6
	udp        bool
	algo       string // words with key placeholders
	extraWords []string
}

// install adds a matched pair of SAs in each direction for p and returns
// a function that deletes them.
func (tp *topology) install(t *testing.T, p path, spiBase int) func() {
	t.Helper()
	ua, ub := tp.a.u4, tp.b.u4
	if p.outer == 6 {
		ua, ub = tp.a.u6, tp.b.u6
	}
	common := []string{"proto", "esp", "mode", p.mode}
	if p.udp {
		common = append(common, "encap", "espinudp", "4500", "4500", "0.0.0.0")
	}
	common = append(common, p.extraWords...)
	keysAB, keysBA := withKeys(p.algo), withKeys(p.algo)
	sa := func(h *host, dir, src, dst string, spi int, keys []string) string {
		w := append([]string{"dir", dir, "src", src, "dst", dst, "spi", fmt.Sprintf("0x%x", spi)}, common...)
		w = append(w, keys...)
		if dir == "in" {
			w = append(w, "replay-window", "128")
		}
		return h.addSA(t, w...)
	}
	var handles [4]string
	handles[0] = sa(tp.a, "out", ua, ub, spiBase, keysAB)
	handles[1] = sa(tp.b, "in", ua, ub, spiBase, keysAB)
	handles[2] = sa(tp.b, "out", ub, ua, spiBase+1, keysBA)
	handles[3] = sa(tp.a, "in", ub, ua, spiBase+1, keysBA)
	return func() {
		tp.a.vnic(t, "sa", "del", handles[0], handles[3])
		tp.b.vnic(t, "sa", "del", handles[1], handles[2])
	}
}

// source is the address A sends from for p: in transport mode the
// underlay address, which the SA's implied selector names.
func (tp *topology) source(p path) []string {
	if p.mode != "transport" {
		return nil
	}
	if p.outer == 6 {
		return []string{tp.a.u6}
	}
	return []string{tp.a.u4}
}

// target is the address A pings on B for p.
func (tp *topology) target(p path) string {
	if p.mode == "transport" {
		if p.outer == 6 {
			return tp.b.u6
		}
		return tp.b.u4
	}
	if p.inner == 6 {
		return "fd07::2"
	}
	return "10.7.0.2"
}

// startPair starts a daemon in each namespace, with vnic0 addresses for
// tunnel mode and routes to the peer's underlay addresses for transport
// mode.
func (tp *topology) startPair(t *testing.T, extra ...string) {
	t.Helper()
	tp.a.start(t, append([]string{"-addr", "10.7.0.1/24", "-addr", "fd07::1/64",
		"-route", tp.b.u4 + "/32", "-route", tp.b.u6 + "/128"}, extra...)...)
	tp.b.start(t, append([]string{"-addr", "10.7.0.2/24", "-addr", "fd07::2/64",
		"-route", tp.a.u4 + "/32", "-route", tp.a.u6 + "/128"}, extra...)...)
}

// TestVnicToVnicAlgorithms pings through every algorithm (tunnel mode,
// IPv4 in IPv4, ESP-in-UDP and raw ESP alternately).
func TestVnicToVnicAlgorithms(t *testing.T) {
	needTool(t, "ping")
	tp := newTopology(t)
	tp.startPair(t)
	for i, alg := range algorithms {
		p := path{mode: "tunnel", outer: 4, inner: 4, udp: i%2 == 0, algo: alg.words}
		t.Run(alg.name, func(t *testing.T) {
			del := tp.install(t, p, 0x1000+16*i)
			defer del()
			if out, ok := tp.ping(tp.a, tp.target(p), 3); !ok {
				t.Fatalf("ping through %s failed:\n%s\nA stats: %v\nB stats: %v", alg.name, out, tp.a.stats(t), tp.b.stats(t))
			}
		})
	}
}

// TestVnicToVnicPaths pings and transfers over TCP through every mode,
// address-family combination and encapsulation (AES-GCM-128), with crypto
// workers on both daemons (the other tests run the default, which is none
// on a 2-core machine).
func TestVnicToVnicPaths(t *testing.T) {
	needTool(t, "ping", "iperf3")
	tp := newTopology(t)
	tp.startPair(t, "-crypto-workers", "2")
	var paths []path
	for _, udp := range []bool{false, true} {
		for _, fam := range [][2]int{{4, 4}, {4, 6}, {6, 4}, {6, 6}} {
			paths = append(paths, path{mode: "tunnel", outer: fam[0], inner: fam[1], udp: udp})
		}
		paths = append(paths, path{mode: "transport", outer: 4, inner: 4, udp: udp},
			path{mode: "transport", outer: 6, inner: 6, udp: udp})
	}
	for i, p := range paths {
		p.algo = algorithms[0].words
		name := fmt.Sprintf("%s-%din%d-udp=%v", p.mode, p.inner, p.outer, p.udp)
		t.Run(name, func(t *testing.T) {
			del := tp.install(t, p, 0x2000+16*i)
			defer del()
			dst := tp.target(p)
			src := tp.source(p)
			if out, ok := tp.ping(tp.a, dst, 3, src...); !ok {
				t.Fatalf("ping %s failed:\n%s\nA stats: %v\nB stats: %v", dst, out, tp.a.stats(t), tp.b.stats(t))
			}
			tp.tcpTransfer(t, dst, src...)
		})
	}
}

// tcpTransfer sends 2 MB over TCP from A to B with iperf3 and checks that
// all of it arrived.
func (tp *topology) tcpTransfer(t *testing.T, dst string, src ...string) {
	t.Helper()
	srv := fmt.Sprint(5201)
	server := startBackground(t, "ip", "netns", "exec", tp.b.ns, "iperf3", "-s", "-1", "-p", srv)
	defer server.wait(t, 15*time.Second)
	args := []string{"netns", "exec", tp.a.ns, "timeout", "10", "iperf3", "-c", dst, "-p", srv, "-n", "2M"}
	for _, s := range src {
		args = append(args, "-B", s)
	}
	if out, err := iperfClient(args...); err != nil || !strings.Contains(out, "receiver") {
		t.Fatalf("iperf3 to %s: %v\n%s", dst, err, out)
	}
}

// iperfClient runs `ip args...` (an iperf3 client in a namespace) until
// its server listens, 4 s at most, and returns its output and error.
func iperfClient(args ...string) (string, error) {
	var out string
	var err error
	for range 20 {
		if out, err = tryCmd("ip", args...); err == nil || !strings.Contains(out, "Connection refused") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return out, err
}
