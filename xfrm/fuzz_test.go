package xfrm

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"vnic/internal/testutil"
	"vnic/oid"
)

// hexRun matches a word that might be a key: it holds 16 or more hex
// digits in a row.
var hexRun = regexp.MustCompile(`[0-9a-fA-F]{16}`)

// FuzzParseState feeds arbitrary word lists to the `sa add` parser: it
// must not panic, must either fail with a message or build a bundle with
// one SecAssoc that the daemon reads back unchanged (checkSentAsIs), and
// must never quote in an error a word holding a run of hex digits long
// enough to be a key. Seeds: testdata/fuzz/FuzzParseState.
func FuzzParseState(f *testing.F) {
	key := "0x" + strings.Repeat("7e", 20)
	for _, s := range []string{
		"dir out src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000 mode tunnel aead rfc4106(gcm(aes)) " + key + " 128",
		"dir in spi 300 aead rfc4543(gcm(aes)) " + key + " 128 replay-window 64 flag esn seq-hi 1",
		"dir out dst ::1 spi 1 enc cbc(aes) 0x00112233445566778899aabbccddeeff auth-trunc hmac(sha256) " + key + " 96",
		"dir out spi 4096 enc ecb(cipher_null) '' auth sha1 " + key + " encap espinudp 4500 4500 0.0.0.0",
		"dir in spi 1 aead rfc7539esp(chacha20,poly1305) " + key + " 128 limit byte-soft 1 byte-hard 2 limit time-hard 3",
		"sel src 10.0.0.0/8 dst 10.1.0.0/16 proto tcp sport 1 dport 2 sel proto 58 pair 3 allow-legacy",
		"flag esn esn seq 1 replay-oseq 4294967295 replay-seq-hi 2",
		"spi", "aead", "encap espinudp", "limit", "sel sel sel", "flag", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		b, _, err := ParseState(testutil.Words(line))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			for _, w := range testutil.Words(line) {
				if hexRun.MatchString(w) && strings.Contains(err.Error(), strconv.Quote(w)) {
					t.Fatalf("error quotes a possible key %q: %v", w, err)
				}
			}
			return
		}
		if len(b.SecAssoc) != 1 || b.Direction == "" {
			t.Fatalf("bundle without a direction or SecAssoc: %+v", b)
		}
		checkSentAsIs(t, b)
		b.Config() // must not panic either
	})
}

// checkSentAsIs fails t unless the bundle b, as the CLI sends it, reads
// back unchanged in the daemon's strict decoding (unknown fields refused):
// the parser can only build what the OID channel takes.
func checkSentAsIs(t *testing.T, b oid.SA) {
	t.Helper()
	sent, err := json.Marshal(b)
	if err != nil {
		t.Fatalf("the bundle does not encode: %v", err)
	}
	var got oid.SA
	d := json.NewDecoder(bytes.NewReader(sent))
	d.DisallowUnknownFields()
	if err := d.Decode(&got); err != nil {
		t.Fatalf("the daemon cannot read the bundle: %v", err)
	}
	again, _ := json.Marshal(got)
	if !bytes.Equal(again, sent) {
		t.Fatalf("the bundle changes on its way to the daemon:\nsent %s\nread %s", sent, again)
	}
}
