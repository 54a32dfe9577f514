package integration

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// TestKeyGrepFullSession runs a whole session against two daemons with
// known keys — SAs of several algorithms added (AEAD and CBC+HMAC, one
// with ESN), listed, shown, updated, asked to delete, used by traffic
// (some with a wrong key, so that crypto errors are raised and logged),
// bad requests that quote what they were given, every command with and
// without --json, events streamed — and then looks for the key bytes in
// everything the CLI printed, every answer on the socket, every event and
// both daemons' logs at debug level: hex (either case, whole or in part),
// base64, and raw.
func TestKeyGrepFullSession(t *testing.T) {
	needTool(t, "ping")
	tp := newTopology(t)
	a, b := tp.a, tp.b
	tp.startPair(t)

	// Known, distinctive keys, one for each label.
	keys := map[string][]byte{}
	key := func(label string, n int) string {
		keys[label] = testutil.KnownKey(label, n)
		return "0x" + hex.EncodeToString(keys[label])
	}
	gcm128, gcm256 := key("gcm128", 20), key("gcm256", 36)
	chacha, chachaWrong := key("chacha", 36), key("chacha-wrong", 36)
	cbc256, sha256k := key("cbc256", 32), key("hmac-sha256", 32)
	cbc128, sha1k := key("cbc128", 16), key("hmac-sha1", 20)
	gmac, sha512k := key("gmac", 20), key("hmac-sha512", 64)
	keyHex := func(label string) string { return hex.EncodeToString(keys[label]) }

	var transcript bytes.Buffer
	cli := func(h *host, wantOK bool, args ...string) string {
		t.Helper()
		out, err := h.try(args...)
		// The command line holds keys: only what vnic printed is searched.
		fmt.Fprintf(&transcript, "$ vnic %s\n%s", redact(strings.Join(args, " ")), out)
		if wantOK && err != nil {
			t.Fatalf("vnic %s: %v\n%s", redact(strings.Join(args, " ")), err, redact(out))
		}
		if !wantOK && err == nil {
			t.Errorf("vnic %s succeeded, want a failure:\n%s", redact(strings.Join(args, " ")), redact(out))
		}
		return out
	}
	handle := func(out string) string {
		m := handleRE.FindStringSubmatch(out)
		if m == nil {
			m = handleJSON.FindStringSubmatch(out)
		}
		if m == nil {
			t.Fatalf("no handle in %q", redact(out))
		}
		return m[1]
	}
	udp := []string{"encap", "espinudp", "4500", "4500", "0.0.0.0"}
	sa := func(h *host, dir, src, dst, spi string, words ...string) []string {
		w := []string{"sa", "add", "dir", dir, "src", src, "dst", dst, "proto", "esp", "spi", spi, "mode", "tunnel"}
		return append(append(w, words...), udp...)
	}

	// Event streams, with and without --json, on both daemons.
	var streams []*eventStream
	for _, h := range []*host{a, b} {
		streams = append(streams, startEvents(t, h), startEvents(t, h, "--json"))
	}

	cli(a, true, "caps")
	cli(a, true, "--json", "caps")

	// A to B: AES-GCM-128 for 10.7.0.2; ChaCha20-Poly1305 for 10.7.0.3,
	// which B holds with the wrong key; AES-CBC-256 with HMAC-SHA-256 for
	// 10.7.0.4; AES-CBC-128 with HMAC-SHA-1 and ESN for 10.7.0.5. B to A:
	// AES-GCM-256. A also holds an AES-GMAC and a NULL with HMAC-SHA-512
	// inbound SA.
	sel := func(dst string) []string { return []string{"sel", "src", "10.7.0.1/32", "dst", dst + "/32"} }
	hGCM := handle(cli(a, true, append(sa(a, "out", a.u4, b.u4, "0x6000", "aead", "rfc4106(gcm(aes))", gcm128, "128"), sel("10.7.0.2")...)...))
	cli(b, true, sa(b, "in", a.u4, b.u4, "0x6000", "aead", "rfc4106(gcm(aes))", gcm128, "128", "replay-window", "128")...)
	cli(b, true, append(sa(b, "out", b.u4, a.u4, "0x6001", "aead", "rfc4106(gcm(aes))", gcm256, "128"), "sel", "src", "10.7.0.2/32", "dst", "10.7.0.0/24")...)
	hIn := handle(cli(a, true, append([]string{"--json"}, sa(a, "in", b.u4, a.u4, "0x6001", "aead", "rfc4106(gcm(aes))", gcm256, "128", "replay-window", "128")...)...))
	cli(a, true, append(sa(a, "out", a.u4, b.u4, "0x6002", "aead", "rfc7539esp(chacha20,poly1305)", chacha, "128"), sel("10.7.0.3")...)...)
	cli(b, true, sa(b, "in", a.u4, b.u4, "0x6002", "aead", "rfc7539esp(chacha20,poly1305)", chachaWrong, "128")...)
	hCBC := handle(cli(a, true, append(sa(a, "out", a.u4, b.u4, "0x6003", "enc", "cbc(aes)", cbc256, "auth-trunc", "hmac(sha256)", sha256k, "128"), sel("10.7.0.4")...)...))
	cli(b, true, sa(b, "in", a.u4, b.u4, "0x6003", "enc", "cbc(aes)", cbc256, "auth-trunc", "hmac(sha256)", sha256k, "128")...)
	hESN := handle(cli(a, true, append(sa(a, "out", a.u4, b.u4, "0x6004", "enc", "cbc(aes)", cbc128, "auth-trunc", "hmac(sha1)", sha1k, "96", "flag", "esn"), sel("10.7.0.5")...)...))
	cli(b, true, sa(b, "in", a.u4, b.u4, "0x6004", "enc", "cbc(aes)", cbc128, "auth-trunc", "hmac(sha1)", sha1k, "96", "flag", "esn", "replay-window", "64")...)
	cli(a, true, sa(a, "in", b.u4, a.u4, "0x6005", "aead", "rfc4543(gcm(aes))", gmac, "128")...)
	cli(a, true, sa(a, "in", b.u4, a.u4, "0x6006", "enc", "ecb(cipher_null)", "", "auth-trunc", "hmac(sha512)", sha512k, "256")...)

	// Traffic: good, with the wrong key, and on the others.
	pingUntil(t, tp, a, "10.7.0.2", 60*time.Second)
	for _, dst := range []string{"10.7.0.3", "10.7.0.4", "10.7.0.5"} {
		tryCmd("ip", "netns", "exec", a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst)
	}

	for _, h := range []*host{a, b} {
		cli(h, true, "sa", "list")
		cli(h, true, "--json", "sa", "list")
		cli(h, true, "stats")
		cli(h, true, "stats", "--all")
		cli(h, true, "--json", "stats")
	}
	for _, hd := range []string{hGCM, hIn, hCBC, hESN} {
		cli(a, true, "sa", "show", hd)
		cli(a, true, "--json", "sa", "show", hd)
	}
	cli(a, true, "sa", "update", hESN, "seq-hi", "3")
	cli(a, true, "--json", "sa", "update", hESN, "seq-hi", "4")
	tryCmd("ip", "netns", "exec", a.ns, "ping", "-c", "1", "-W", "1", "10.7.0.5")
	cli(a, true, "sa", "request-delete", hIn)
	cli(a, true, "--json", "sa", "request-delete", hCBC)

	// Bad requests that quote what they were given.
	k := keyHex("gcm128")
	base := []string{"sa", "add", "dir", "out", "src", a.u4, "dst", b.u4, "spi", "0x6100", "mode", "tunnel"}
	for _, words := range [][]string{
		append(base, "aead", "rfc4106(gcm(aes))", "0x"+k[:38], "128"), // 19 bytes
		append(base, "aead", "rfc4106(gcm(aes))", "0x"+k+"zz", "128"), // not hex
		append(base, "aead", "rfc4106(gcm(aes))", "0x"+k[:39], "128"), // odd length
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, "127"),      // ICV bits
		append(base, "aead", "rfc4106(gcm(aes)", gcm128, "128"),       // algorithm name
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, k),          // key as ICV bits
		append(base, "aead", "rfc4106(gcm(aes))", gcm128),             // missing bits
		append(base, "enc", "cbc(aes)", cbc256, "auth-trunc", "hmac(sha256)", sha256k, "127"),
		append(base, "enc", "cbc(aes)", cbc256[:40], "auth-trunc", "hmac(sha256)", sha256k, "128"),
		append(base, "enc", "cbc(aes)", cbc256), // no authentication
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, "128", "sel", "src", k),
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, "128", "replay-window", k),
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, "128", "bogus", k),
		append(base, "aead", "rfc4106(gcm(aes))", gcm128, "128", "encap", "espinudp", k, "4500", "0.0.0.0"),
		{"sa", "add", "dir", "out", "src", k, "dst", b.u4, "spi", "0x6100", "aead", "rfc4106(gcm(aes))", gcm128, "128"},
		{"sa", "add", "dir", "out", "dst", b.u4, "spi", "0x" + k, "aead", "rfc4106(gcm(aes))", gcm128, "128"},
		{"sa", "add", "dir", k, "dst", b.u4, "spi", "0x6100", "aead", "rfc4106(gcm(aes))", gcm128, "128"},
		{"sa", "add", "dir", "out", "dst", b.u4, "spi", "0x6100", "mode", k, "aead", "rfc4106(gcm(aes))", gcm128, "128"},
		// Refused by the daemon: a duplicate, AH, a reserved SPI.
		append(sa(a, "out", a.u4, b.u4, "0x6000", "aead", "rfc4106(gcm(aes))", gcm128, "128"), sel("10.7.0.2")...),
		{"sa", "add", "dir", "out", "dst", b.u4, "proto", "ah", "spi", "0x6101", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", gcm128, "128"},
		{"sa", "add", "dir", "out", "dst", b.u4, "spi", "7", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", gcm128, "128"},
	} {
		cli(a, false, words...)
		cli(a, false, append([]string{"--json"}, words...)...)
	}
	for _, words := range [][]string{
		{"sa", "show", k}, {"sa", "del", k}, {"sa", "update", k, "seq-hi", "1"}, {"sa", "update", hESN, "seq-hi", k},
		{"sa", "request-delete", k}, {k}, {"sa", k}, {"caps", k}, {"stats", k}, {"--" + k},
	} {
		cli(a, false, words...)
	}
	// The same on the socket itself.
	raw := rawExchange(t, a.sock,
		`{"id":1,"oid":"`+k+`"}`,
		`{"id":2,"oid":"VNIC_STATISTICS","`+k+`":1}`,
		`{"id":3,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"`+k+`","SecAssoc":[{"Spi":24832,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"`+k+`"}]}`,
		`{"id":4,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.9","SecAssoc":[{"Spi":24832,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"`+k+`","Bogus":1}]}`,
		`{"id":5,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out","DestAddr":"192.0.2.9","SecAssoc":[{"Spi":24832,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"`+k[:38]+`"}]}`,
		`{"id":6,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"KeyData":"`+k+`q"}]}`,
		`{"id":7,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":["`+k+`"]}`,
		`{"id":8,"oid":"VNIC_STATISTICS"}`+k,
	)
	for _, m := range raw {
		fmt.Fprintf(&transcript, "%v\n", m)
	}

	// Delete everything (and a handle that does not exist).
	cli(a, false, "sa", "del", "99999")
	for _, h := range []*host{a, b} {
		out := cli(h, true, "--json", "sa", "list")
		for _, m := range handleJSON.FindAllStringSubmatch(out, -1) {
			cli(h, true, "sa", "del", m[1])
		}
		cli(h, true, "sa", "list")
	}

	// Everything the session produced.
	var events []string
	for _, s := range streams {
		events = append(events, s.stop(t))
	}
	aLog, bLog := a.log, b.log
	a.stop(t)
	b.stop(t)
	sources := map[string]string{
		"the CLI's output and the socket's answers": transcript.String(),
		"A's log": aLog.String(),
		"B's log": bLog.String(),
	}
	for i, e := range events {
		sources[fmt.Sprintf("event stream %d", i)] = e
	}

	// The session did what it should, so that finding nothing means
	// something.
	all := strings.Join([]string{transcript.String(), events[0], events[1], events[2], events[3]}, "\n")
	for _, want := range []string{"[redacted 160 bits]", "[redacted 288 bits]", "[redacted 256 bits]", "[redacted 512 bits]",
		"SaDeleteReq", "CryptoError", "NDIS_STATUS_INVALID_PARAMETER", "NDIS_STATUS_NOT_SUPPORTED", "NDIS_STATUS_INVALID_DATA", "deleted "} {
		if !strings.Contains(all, want) {
			t.Errorf("the session never showed %q: the key grep may prove nothing", want)
		}
	}
	if !strings.Contains(bLog.String(), "level=DEBUG") {
		t.Error("B's log has no debug lines")
	}

	for label, k := range keys {
		for src, text := range sources {
			for _, f := range testutil.KeyForms(k) {
				if i := bytes.Index([]byte(text), f.Text); i >= 0 {
					lo, hi := max(0, i-80), min(len(text), i+len(f.Text)+80)
					t.Errorf("the %s key (%s) is in %s: ...%s...", label, f.Name, src,
						strings.ReplaceAll(text[lo:hi], string(f.Text), "<KEY>"))
				}
			}
		}
	}
}

var handleJSON = regexp.MustCompile(`"handle":(\d+)`)

// eventStream is `vnic events` running against a daemon.
type eventStream struct {
	cmd  *exec.Cmd
	out  bytes.Buffer // read it only once done is closed
	done chan struct{}
	err  error
}

func startEvents(t *testing.T, h *host, flags ...string) *eventStream {
	t.Helper()
	s := &eventStream{done: make(chan struct{})}
	s.cmd = exec.Command(vnicBin, append(append([]string{"--socket", h.sock}, flags...), "events")...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	time.Sleep(200 * time.Millisecond) // let it subscribe
	return s
}

// stop interrupts the stream, as a user would, and returns what it
// printed.
func (s *eventStream) stop(t *testing.T) string {
	t.Helper()
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
		if s.err != nil {
			t.Errorf("vnic events after SIGINT: %v\n%s", s.err, redact(s.out.String()))
		}
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Errorf("vnic events did not stop on SIGINT")
	}
	return s.out.String()
}
