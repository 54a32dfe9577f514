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
	"testing"
	"time"
)

// TestTsharkESPSAFile: the lines `vnic sa add --esp-sa-file` writes let
// tshark decrypt a capture of the underlay. Host A adds its two SAs with
// the option, pings B through vnic0 while tcpdump captures A's underlay,
// and tshark, given the file as the esp_sa table of a profile (and again
// as -o uat:esp_sa lines), must show every echo request and reply, with
// the inner addresses, decrypted and their ICVs checked; with an empty
// table it must show none.
func TestTsharkESPSAFile(t *testing.T) {
	needTool(t, "ping", "tcpdump", "tshark")
	tp := newTopology(t)
	tp.startPair(t)
	cases := []struct {
		name string
		udp  bool
		algo string
		esn  bool
	}{
		{"aes-gcm-128", false, "aead rfc4106(gcm(aes)) 0xKEY20 128", false},
		{"aes-gcm-128-udp", true, "aead rfc4106(gcm(aes)) 0xKEY20 128", false},
		{"aes-cbc-sha256", false, "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha256) 0xKEY32 128", false},
		{"aes-cbc-sha256-udp", true, "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha256) 0xKEY32 128", false},
		// The line of an ESN SA has two columns more, which tshark 4.0
		// ignores with a warning: it still decrypts.
		{"aes-gcm-128-esn", false, "aead rfc4106(gcm(aes)) 0xKEY20 128", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			profile := t.TempDir()
			saFile := filepath.Join(profile, "esp_sa")
			spi := 0x5000 + 16*i
			del := tp.installWithESPSAFile(t, saFile, spi, c.udp, c.esn, c.algo)
			defer del()

			capture := startPcap(t, tp.a.ns, "ula")
			out, _ := tp.ping(tp.a, "10.7.0.2", 5)
			sent, received := pingCounts(t, out)
			if received == 0 {
				t.Fatalf("no reply to ping through vnic0:\n%s\nA stats: %v\nB stats: %v", out, tp.a.stats(t), tp.b.stats(t))
			}
			capture.stop(t)

			lines := readESPSAFile(t, saFile)
			if len(lines) != 2 {
				t.Fatalf("%s has %d lines, want 2 (A's two SAs):\n%s", saFile, len(lines), redact(strings.Join(lines, "\n")))
			}

			want := echoCounts{requests: sent, replies: received}
			got := tsharkEchoes(t, capture.file, profile, nil, c.udp, !c.esn)
			if got != want {
				t.Errorf("tshark with %s as the profile's esp_sa decrypted %+v, want %+v (ping: %s)", saFile, got, want, strings.TrimSpace(out))
			}
			// The same lines given on the command line.
			empty := t.TempDir()
			var opts []string
			for _, l := range lines {
				opts = append(opts, "-o", "uat:esp_sa:"+l)
			}
			if got := tsharkEchoes(t, capture.file, empty, opts, c.udp, !c.esn); got != want {
				t.Errorf("tshark with -o uat:esp_sa:LINE decrypted %+v, want %+v", got, want)
			}
			// The control: without the lines, the ESP is there but
			// nothing in it can be read.
			if err := os.WriteFile(filepath.Join(empty, "esp_sa"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := tsharkEchoes(t, capture.file, empty, nil, c.udp, false); got != (echoCounts{}) {
				t.Errorf("tshark with an empty esp_sa decrypted %+v, want nothing", got)
			}
			if n := tsharkESPFrames(t, capture.file, empty, spi); n < sent+received {
				t.Errorf("the capture has %d ESP frames of SPIs 0x%x and 0x%x, want at least %d", n, spi, spi+1, sent+received)
			}
		})
	}
}

// installWithESPSAFile adds a tunnel-mode SA pair between A and B (SPI
// spi from A to B, spi+1 back), A's with --esp-sa-file saFile, and returns
// a function that deletes them.
func (tp *topology) installWithESPSAFile(t *testing.T, saFile string, spi int, udp, esn bool, algo string) func() {
	t.Helper()
	common := []string{"proto", "esp", "mode", "tunnel"}
	if udp {
		common = append(common, "encap", "espinudp", "4500", "4500", "0.0.0.0")
	}
	if esn {
		common = append(common, "flag", "esn")
	}
	keysAB, keysBA := withKeys(algo), withKeys(algo)
	add := func(h *host, file, dir, src, dst string, spi int, keys []string) string {
		args := []string{"sa", "add", "dir", dir, "src", src, "dst", dst, "spi", fmt.Sprintf("0x%x", spi)}
		args = append(append(args, common...), keys...)
		if dir == "in" {
			args = append(args, "replay-window", "128")
		}
		if file != "" {
			args = append([]string{"--esp-sa-file", file}, args...)
		}
		out := h.vnic(t, args...)
		m := handleRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("sa add printed no handle: %q", out)
		}
		return m[1]
	}
	a, b := tp.a.u4, tp.b.u4
	hAout := add(tp.a, saFile, "out", a, b, spi, keysAB)
	hBin := add(tp.b, "", "in", a, b, spi, keysAB)
	hBout := add(tp.b, "", "out", b, a, spi+1, keysBA)
	hAin := add(tp.a, saFile, "in", b, a, spi+1, keysBA)
	return func() {
		tp.a.vnic(t, "sa", "del", hAout, hAin)
		tp.b.vnic(t, "sa", "del", hBin, hBout)
	}
}

var pingCountsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// pingCounts reads how many echo requests ping sent and how many replies
// it received.
func pingCounts(t *testing.T, out string) (sent, received int) {
	t.Helper()
	m := pingCountsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping printed no counts:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// readESPSAFile returns the lines of the file --esp-sa-file wrote, and
// fails the test unless the file is private to its owner.
func readESPSAFile(t *testing.T, path string) []string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("--esp-sa-file wrote no file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want -rw-------", path, fi.Mode())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return lines(string(b))
}

// echoCounts is how many ICMP echo requests from 10.7.0.1 to 10.7.0.2 and
// replies back tshark decrypted.
type echoCounts struct{ requests, replies int }

// tshark runs tshark with the Wireshark configuration directory profile
// (where it reads esp_sa) and ESP decryption and ICV checks on, and
// returns its standard output.
func tshark(t *testing.T, profile string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tshark", append([]string{"-n",
		"-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE"}, args...)...)
	cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+profile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", redact(strings.Join(args, " ")), err, redact(stderr.String()))
	}
	return string(out)
}

// tsharkEchoes counts the echo requests and replies tshark decrypts in
// pcap with the esp_sa of profile and the extra options opts. Each must be
// in ESP-in-UDP from port 4500 when udp is set, in raw ESP otherwise, and
// have its ICV checked good when checkICV is set.
func tsharkEchoes(t *testing.T, pcap, profile string, opts []string, udp, checkICV bool) echoCounts {
	t.Helper()
	args := append(append([]string{}, opts...), "-r", pcap, "-Y", "icmp", "-T", "fields", "-E", "occurrence=l",
		"-e", "frame.number", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "esp.spi", "-e", "udp.srcport", "-e", "esp.icv_good")
	var got echoCounts
	for _, l := range lines(tshark(t, profile, args...)) {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("tshark printed %q: want 7 fields", l)
		}
		switch {
		case f[1] == "10.7.0.1" && f[2] == "10.7.0.2" && f[3] == "8":
			got.requests++
		case f[1] == "10.7.0.2" && f[2] == "10.7.0.1" && f[3] == "0":
			got.replies++
		default:
			t.Errorf("tshark decrypted frame %s: ICMP type %s from %s to %s, not an echo between 10.7.0.1 and 10.7.0.2", f[0], f[3], f[1], f[2])
			continue
		}
		if f[4] == "" {
			t.Errorf("frame %s: ICMP outside ESP: %q", f[0], l)
		}
		if udp && f[5] != "4500" || !udp && f[5] != "" {
			t.Errorf("frame %s: UDP source port %q, want ESP-in-UDP: %v", f[0], f[5], udp)
		}
		if checkICV && f[6] != "1" {
			t.Errorf("frame %s: ICV not checked good (esp.icv_good %q)", f[0], f[6])
		}
	}
	return got
}

// tsharkESPFrames counts the frames of SPI spi or spi+1 in pcap.
func tsharkESPFrames(t *testing.T, pcap, profile string, spi int) int {
	t.Helper()
	filter := fmt.Sprintf("esp.spi == 0x%x || esp.spi == 0x%x", spi, spi+1)
	return len(lines(tshark(t, profile, "-r", pcap, "-Y", filter, "-T", "fields", "-e", "frame.number")))
}
