package xfrm

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/sadb"
)

// saKey is the n bytes of key that fill the 0xKEYn placeholders of the
// test lines: each is a prefix of saKey(64).
func saKey(n int) []byte { return testutil.KnownKey("sa add", n) }

// saWords splits a test line into words, its 0xKEYn placeholders filled
// with saKey.
func saWords(line string) []string { return testutil.Words(testutil.FillKeys(line, saKey)) }

// quotesKey reports whether s holds, in hex of either case, 4 bytes in a
// row of a key of the test lines.
func quotesKey(s string) bool {
	s = strings.ToLower(s)
	k := saKey(64)
	for i := 0; i+4 <= len(k); i++ {
		if strings.Contains(s, hex.EncodeToString(k[i:i+4])) {
			return true
		}
	}
	return false
}

func TestParseStateGood(t *testing.T) {
	base := "dir out src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000 mode tunnel "
	tests := []struct {
		name  string
		line  string
		check func(t *testing.T, b map[string]any)
		// want holds JSON fragments the encoded bundle must contain.
		want []string
	}{
		{name: "aes-gcm-128", line: base + "aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"EncryptionAlgorithm":{"Identifier":8,"KeyLength":20,"AdditionalInfo":16}`, `"KeyLength":20`, `"Spi":4096`, `"direction":"out"`, `"mode":"tunnel"`}},
		{name: "aes-gcm-192 icv 96", line: base + "aead rfc4106(gcm(aes)) 0xKEY28 96",
			want: []string{`"EncryptionAlgorithm":{"Identifier":16,"KeyLength":28,"AdditionalInfo":12}`}},
		{name: "aes-gcm-256 icv 64", line: base + "aead rfc4106(gcm(aes)) 0xKEY36 64",
			want: []string{`"EncryptionAlgorithm":{"Identifier":32,"KeyLength":36,"AdditionalInfo":8}`}},
		{name: "aes-gmac-128", line: base + "aead rfc4543(gcm(aes)) 0xKEY20 128",
			want: []string{`"AuthenticationAlgorithm":{"Identifier":8,"KeyLength":20,"AdditionalInfo":16}`, `"EncryptionAlgorithm":{"Identifier":1}`}},
		{name: "aes-gmac-256", line: base + "aead rfc4543(gcm(aes)) 0xKEY36 128",
			want: []string{`"AuthenticationAlgorithm":{"Identifier":32,"KeyLength":36,"AdditionalInfo":16}`}},
		{name: "chacha20-poly1305", line: base + "aead rfc7539esp(chacha20,poly1305) 0xKEY36 128",
			want: []string{`"EncryptionAlgorithm":{"Identifier":65536,"KeyLength":36,"AdditionalInfo":16}`}},
		{name: "cbc-aes-128 hmac-sha1", line: base + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20 96",
			want: []string{`"EncryptionAlgorithm":{"Identifier":64,"KeyLength":16}`, `"AuthenticationAlgorithm":{"Identifier":2,"KeyLength":20,"KeyOffsetBytes":16,"AdditionalInfo":12}`, `"KeyLength":36`}},
		{name: "cbc-aes-192 hmac-sha256", line: base + "enc cbc(aes) 0xKEY24 auth-trunc hmac(sha256) 0xKEY32 128",
			want: []string{`"Identifier":128,"KeyLength":24`, `"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32,"KeyOffsetBytes":24,"AdditionalInfo":16}`}},
		{name: "cbc-aes-256 hmac-sha384", line: base + "enc aes 0xKEY32 auth-trunc sha384 0xKEY48 192",
			want: []string{`"Identifier":256,"KeyLength":32`, `"AuthenticationAlgorithm":{"Identifier":65536,"KeyLength":48,"KeyOffsetBytes":32,"AdditionalInfo":24}`}},
		{name: "cbc-aes-256 hmac-sha512", line: base + "enc cbc(aes) 0xKEY32 auth-trunc hmac(sha512) 0xKEY64 256",
			want: []string{`"AuthenticationAlgorithm":{"Identifier":131072,"KeyLength":64,"KeyOffsetBytes":32,"AdditionalInfo":32}`}},
		{name: "null with hmac-sha256", line: base + "enc ecb(cipher_null) '' auth-trunc hmac(sha256) 0xKEY32 128",
			want: []string{`"EncryptionAlgorithm":{"Identifier":1}`, `"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32,"AdditionalInfo":16}`}},
		{name: "auth uses Linux truncation", line: base + "enc cbc(aes) 0xKEY16 auth hmac(sha256) 0xKEY32",
			want: []string{`"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32,"KeyOffsetBytes":16,"AdditionalInfo":12}`}},
		{name: "auth only", line: base + "auth hmac(sha1) 0xKEY20",
			want: []string{`"EncryptionAlgorithm":{"Identifier":1}`, `"AuthenticationAlgorithm":{"Identifier":2,"KeyLength":20,"AdditionalInfo":12}`}},
		{name: "legacy allowed", line: base + "enc des3_ede 0xKEY24 auth hmac(md5) 0xKEY16 allow-legacy",
			want: []string{`"Identifier":4,"KeyLength":24`, `"AuthenticationAlgorithm":{"Identifier":1,"KeyLength":16,"KeyOffsetBytes":24,"AdditionalInfo":12}`, `"allow_legacy":true`}},
		{name: "transport, inbound, every option",
			line: "dir in src 2001:db8::1 dst 2001:db8::2 spi 4097 mode transport aead rfc4106(gcm(aes)) 0xKEY20 128 " +
				"encap espinudp 4501 4500 0.0.0.0 replay-window 256 flag esn seq-hi 3 replay-seq 7 " +
				"limit byte-soft 1000 byte-hard 2000 limit packet-soft 10 packet-hard 20 time-soft 30 limit time-hard 60 " +
				"sel src 10.0.0.0/24 dst 10.1.0.0/16 proto tcp dport 443 sel proto 58 pair 5",
			want: []string{`"direction":"in"`, `"SrcAddr":"2001:db8::1"`, `"DestAddr":"2001:db8::2"`, `"UdpEspEncapsulation":1`,
				`"Flags":1`, `"Spi":4097`, `"SequenceNumberHighOrder":3`, `"mode":"transport"`, `"replay_window":256`,
				`"lifetime":{"soft_bytes":1000,"hard_bytes":2000,"soft_packets":10,"hard_packets":20,"soft_seconds":30,"hard_seconds":60}`,
				`"initial_seq":7`, `"udp":{"sport":4501,"dport":4500}`, `"pair":5`,
				`"selectors":[{"src":"10.0.0.0/24","dst":"10.1.0.0/16","proto":6,"dport":443},{"proto":58}]`}},
		{name: "NAT keepalives", line: base + "nat-keepalive-interval 20 encap espinudp 4500 4500 0.0.0.0 aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"udp":{"sport":4500,"dport":4500,"nat_keepalive_interval":20}`}},
		{name: "tunnel with UDP", line: base + "encap espinudp 4500 4500 0.0.0.0 aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"UdpEspEncapsulation":2`}},
		{name: "replay-oseq is the last number sent", line: base + "replay-oseq 99 aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"initial_seq":100`}},
		{name: "replay-oseq with one number left", line: base + "replay-oseq 4294967294 aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"initial_seq":4294967295`}},
		{name: "replay-oseq with ESN", line: base + "replay-oseq 4294967294 replay-oseq-hi 3 flag esn aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"initial_seq":4294967295`, `"SequenceNumberHighOrder":3`, `"Flags":1`}},
		{name: "what the refusal of replay-oseq 4294967295 seq-hi 3 suggests", line: base + "replay-oseq-hi 4 replay-oseq 0 flag esn aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"initial_seq":1`, `"SequenceNumberHighOrder":4`}},
		{name: "seq and any endpoints", line: "dir in src any dst any spi 300 mode tunnel seq 5 replay-window 0 aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"initial_seq":5`, `"replay_window":0`}},
		{name: "sel with any and an address", line: base + "sel src any dst 10.0.0.1 sport 53 proto udp aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: []string{`"selectors":[{"src":"any","dst":"10.0.0.1","proto":17,"sport":53}]`}},
		{name: "decimal SPI, uppercase hex", line: "dir out dst 192.0.2.2 spi 4096 mode tunnel aead rfc4106(gcm(aes)) 0X" + strings.Repeat("AB", 20) + " 128",
			want: []string{`"Spi":4096`, `"KeyData":"` + strings.Repeat("ab", 20) + `"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, err := ParseState(saWords(tt.line))
			if err != nil {
				t.Fatalf("ParseState: %v", err)
			}
			js, _ := json.Marshal(b)
			for _, w := range tt.want {
				if !strings.Contains(string(js), w) {
					t.Errorf("bundle lacks %s:\n%s", w, js)
				}
			}
			// What the CLI builds, the daemon accepts (pair aside).
			if b.Vnic != nil {
				b.Vnic.Pair = 0
			}
			c, err := b.Config()
			if err != nil {
				t.Fatalf("the daemon would refuse it: %v", err)
			}
			tab := sadb.New(sadb.TableConfig{Capacity: 4, DefaultReplayWindow: 64})
			if res, st := tab.Add([]sadb.Config{c}); st != ndis.StatusSuccess {
				t.Errorf("sadb refuses it: %v", res[0].Err)
			}
		})
	}
}

func TestParseStateBad(t *testing.T) {
	gcm := " aead rfc4106(gcm(aes)) 0xKEY20 128"
	base := "dir out dst 192.0.2.2 spi 0x1000"
	tests := []struct {
		line string
		want string
	}{
		{"spi zz", `spi: expected a number like 0x1000, got "zz"`},
		{"spi", `spi: expected a number like 0x1000, got nothing`},
		{"spi 0x100000000", `spi: expected a number like 0x1000, got "0x100000000"`},
		{"spi -1", `spi: expected a number like 0x1000, got "-1"`},
		{"spi 1 spi 2", `spi: given twice`},
		{"dir sideways", `dir: expected in or out, got "sideways"`},
		{"dir", `dir: expected in or out, got nothing`},
		{"spi 300" + gcm, `missing "dir in" or "dir out": vnic needs the SA's direction`},
		{"dir out" + gcm, `missing "spi SPI", like spi 0x1000`},
		{base + gcm, `missing "mode tunnel" or "mode transport": ip xfrm's default is transport, the OID channel's tunnel, so vnic takes neither without being told`},
		{base, `missing an algorithm: give aead rfc4106(gcm(aes)) 0xKEYSALT 128, or enc cbc(aes) 0xKEY with auth-trunc hmac(sha256) 0xKEY 128`},
		{"src 192.0.2", `src: expected an IP address like 192.0.2.1, got "192.0.2"`},
		{"dst fe80::1%eth0", `dst: expected an IP address like 192.0.2.1, got "fe80::1%eth0"`},
		{"proto udp", `proto: expected esp, got "udp"`},
		{"mode beet", `mode: expected tunnel or transport, got "beet"`},
		{"frobnicate", `unknown word "frobnicate": expected dir, src, dst, proto, spi, mode, aead, enc, auth, auth-trunc, encap, nat-keepalive-interval, replay-window, flag, seq, replay-seq, replay-oseq, seq-hi, replay-seq-hi, replay-oseq-hi, limit, sel, pair or allow-legacy`},
		{base + gcm + " mode tunnel mark 7 mask 0xff flag decap-dscp reqid 1 if_id 3 flag noecn wildrecv",
			`not supported by vnic: mark 7 mask 0xff, flag decap-dscp, if_id 3, flag wildrecv: remove them (vnic sa add -h lists the words it takes)`},
		{base + gcm + " mark", `mark: expected its argument, as ip xfrm takes it, got nothing`},
		{base + gcm + " offload eth0", `offload: expected dev DEV dir in|out, got "eth0"`},
		{base + " aead rfc4106(gcm(aes)) 0xKEY19 128", `aead rfc4106(gcm(aes)) key: expected 20, 28 or 36 bytes (16, 24 or 32-byte key and 4-byte salt), got 19 bytes`},
		{base + " aead rfc4106(gcm(aes)) 0xKEY20 100", `aead rfc4106(gcm(aes)): expected the ICV length in bits, like 128 (a multiple of 8), got "100"`},
		{base + " aead rfc4106(gcm(aes)) 0xKEY20", `aead rfc4106(gcm(aes)): expected the ICV length in bits, like 128, got nothing`},
		{base + " aead rfc4106(gcm(aes))", `aead rfc4106(gcm(aes)) key: expected 0x followed by hex digits, got nothing`},
		{base + " aead", `aead: expected an algorithm name, got nothing`},
		{base + " aead rfc7539esp(chacha20,poly1305) 0xKEY32 128", `aead rfc7539esp(chacha20,poly1305) key: expected 36 bytes (32-byte key and 4-byte salt), got 32 bytes`},
		{base + " aead gcm(aes) 0xKEY20 128", `aead: expected rfc4106(gcm(aes)), rfc4543(gcm(aes)) or rfc7539esp(chacha20,poly1305), got "gcm(aes)"`},
		{base + " aead rfc4106(gcm(aes)) secretpassword 128", `aead rfc4106(gcm(aes)) key: expected 0x followed by hex digits (vnic takes no text keys)`},
		{base + " aead rfc4106(gcm(aes)) 0xabc 128", `aead rfc4106(gcm(aes)) key: expected an even number of hex digits after 0x, got 3 digits`},
		{base + " aead rfc4106(gcm(aes)) 0xabcg 128", `aead rfc4106(gcm(aes)) key: expected 0x followed by hex digits; character 4 after 0x is not one`},
		{base + gcm + " enc cbc(aes) 0xKEY16", `aead: cannot be combined with enc, auth or auth-trunc: an AEAD encrypts and authenticates`},
		{base + " enc cbc(aes) 0xKEY15 auth sha1 0xKEY20", `enc cbc(aes) key: expected 16, 24 or 32 bytes, got 15 bytes`},
		{base + " enc twofish 0xKEY16 auth sha1 0xKEY20", `enc: expected cbc(aes) or ecb(cipher_null), got "twofish"`},
		{base + " enc cbc(aes) 0xKEY16 auth hmac(whirlpool) 0xKEY20", `auth: expected hmac(sha1), hmac(sha256), hmac(sha384) or hmac(sha512), got "hmac(whirlpool)"`},
		{base + " enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20", `auth-trunc hmac(sha1): expected the truncation length in bits, like 128, got nothing`},
		{base + " enc cbc(aes) 0xKEY16 auth sha1 0xKEY20 auth-trunc sha1 0xKEY20 96", `auth-trunc: give auth or auth-trunc, not both`},
		{base + gcm + " encap espinudp 4500", `encap espinudp: expected the destination port, like 4500, got nothing`},
		{base + gcm + " encap espinudp 0 4500 0.0.0.0", `encap espinudp: expected the source port, a number from 1 to 65535 like 4500, got "0"`},
		{base + gcm + " encap espinudp 4500 4500 nowhere", `encap espinudp: expected the original address, like 0.0.0.0, got "nowhere"`},
		{base + gcm + " encap espinudp-nonike 4500 4500 0.0.0.0", `encap: espinudp-nonike is not supported: use espinudp (RFC 3948)`},
		{base + gcm + " encap gre", `encap: expected espinudp, got "gre"`},
		{base + gcm + " replay-window lots", `replay-window: expected a window size in packets, like 128 (0 turns replay protection off), got "lots"`},
		{base + gcm + " flag nopmtudisc", `not supported by vnic: flag nopmtudisc: remove them (vnic sa add -h lists the words it takes)`},
		{base + gcm + " flag fast", `flag: expected esn, got "fast"`},
		{base + gcm + " seq-hi x", `seq-hi: expected the high-order 32 bits of the sequence number, a number from 0 to 4294967295, got "x"`},
		{base + gcm + " seq 1 replay-seq 2", `replay-seq: give one of seq, replay-seq and replay-oseq`},
		{base + gcm + " seq 4294967296", `seq: expected a sequence number from 0 to 4294967295, got "4294967296"`},
		// ip xfrm's replay-oseq is the last number sent: 4294967295 leaves none.
		{base + gcm + " replay-oseq 4294967295", `replay-oseq 4294967295: the SA would have no sequence numbers left (without ESN the last one is 4294967295)`},
		{base + gcm + " replay-oseq 4294967295 flag esn replay-oseq-hi 4294967295", `replay-oseq 4294967295: the SA would have no sequence numbers left (with ESN the last one is 4294967295 with replay-oseq-hi 4294967295)`},
		{base + gcm + " replay-oseq 4294967295 seq-hi 3 flag esn", `replay-oseq 4294967295: the next number would be the first of replay-oseq-hi 4, whose low-order bits are 0, and vnic cannot start an SA there: give replay-oseq-hi 4 replay-oseq 0 to start at the number after it`},
		{base + gcm + " encap espinudp 4500 4500 0.0.0.0 nat-keepalive-interval 0", `nat-keepalive-interval: expected seconds, a number from 1 to 86400 like 20, got "0"`},
		{base + gcm + " encap espinudp 4500 4500 0.0.0.0 nat-keepalive-interval soon", `nat-keepalive-interval: expected seconds, a number from 1 to 86400 like 20, got "soon"`},
		{base + gcm + " limit bytes 5", `limit: expected byte-soft, byte-hard, packet-soft, packet-hard, time-soft or time-hard, got "bytes"`},
		{base + gcm + " limit byte-soft", `limit byte-soft: expected a number, got nothing`},
		{base + gcm + " limit byte-soft 1k", `limit byte-soft: expected a number, got "1k"`},
		{base + gcm + " limit time-use-soft 5", `limit time-use-soft: not supported by vnic; use time-soft or time-hard (seconds since the SA was added)`},
		{base + gcm + " limit byte-soft 1 limit byte-soft 2", `limit byte-soft: given twice`},
		{base + gcm + " sel src 10.0.0.0/33", `sel 0 src: expected a prefix like 10.0.0.0/24, got "10.0.0.0/33"`},
		{base + gcm + " sel src 10.0.0.0/8 sel dst ten", `sel 1 dst: expected a prefix like 10.0.0.0/24, got "ten"`},
		{base + gcm + " sel proto tcpp", `sel 0 proto: expected a protocol number from 0 to 255 or a name (tcp, udp, icmp, ipv6-icmp, sctp, ...), got "tcpp"`},
		{base + gcm + " sel dport 70000", `sel 0 dport: expected a port number from 0 to 65535, got "70000"`},
		{base + gcm + " sel src 10.0.0.0/8 src 10.0.0.0/8", `sel 0 src: given twice`},
		{base + gcm + " sel dev eth0", `sel 0 dev: not supported by vnic: selectors name addresses, protocols and ports`},
		{base + gcm + " pair 0", `pair: expected the handle of the opposite-direction SA, like 3, got "0"`},
		{base + gcm + " allow-legacy allow-legacy", `allow-legacy: given twice`},
	}
	for _, tt := range tests {
		_, _, err := ParseState(saWords(tt.line))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\n got %v\nwant %s", tt.line, err, tt.want)
		}
		if err != nil && quotesKey(err.Error()) {
			t.Errorf("%s: the error quotes a key: %v", tt.line, err)
		}
	}
}

// TestServerRefuses: what the words say well but the SA cannot be is the
// server's to refuse (oid.SA.Config, then the SA table, as the daemon
// runs them): the words parse, and the server's reason says what is
// wrong.
func TestServerRefuses(t *testing.T) {
	base := "dir out dst 192.0.2.2 spi 0x1000 mode tunnel"
	tests := []struct {
		line string
		want string
	}{
		{base + " aead rfc4106(gcm(aes)) 0xKEY20 120", "AES-GCM ICV length must be 8, 12 or 16 bytes, got 15"},
		{base + " aead rfc4543(gcm(aes)) 0xKEY20 96", "AES-GMAC has a 16-byte ICV, got 12"},
		{base + " enc cbc(aes) 0xKEY16", "cbc(aes) needs an integrity algorithm: ESP without integrity is not offered"},
		{base + " enc cipher_null 0xKEY4 auth sha1 0xKEY20", "ecb(cipher_null) takes no key, got 4 bytes"},
		{base + " aead rfc4106(gcm(aes)) 0xKEY20 128 nat-keepalive-interval 20", "a NAT keepalive interval applies to outbound ESP-in-UDP SAs only"},
	}
	for _, tt := range tests {
		b, _, err := ParseState(saWords(tt.line))
		if err != nil {
			t.Errorf("%s: ParseState: %v; the words are fine", tt.line, err)
			continue
		}
		c, err := b.Config()
		if err == nil {
			tab := sadb.New(sadb.TableConfig{Capacity: 4, DefaultReplayWindow: 64})
			res, _ := tab.Add([]sadb.Config{c})
			err = res[0].Err
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || ndis.StatusOf(err) != ndis.StatusInvalidParameter {
			t.Errorf("%s:\n server says %v (%v)\n want %q (NDIS_STATUS_INVALID_PARAMETER)", tt.line, err, ndis.StatusOf(err), tt.want)
		}
		if err != nil && quotesKey(err.Error()) {
			t.Errorf("%s: the reason quotes a key: %v", tt.line, err)
		}
	}
}

// TestParseStateNotes: a line as strongSwan or a script writes it for ip
// xfrm, with words that change nothing vnic does, is taken whole: each
// such word gets a note for the user, and the bundle is what the line
// means to vnic (no replay window on an outbound SA, the offload's dir
// as the SA's direction).
func TestParseStateNotes(t *testing.T) {
	line := "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xc0ffee01 reqid 1 mode tunnel flag af-unspec noecn " +
		"replay-window 32 flag esn aead rfc4106(gcm(aes)) 0xKEY20 128 tfcpad 0 offload dev eth0 dir out"
	b, notes, err := ParseState(saWords(line))
	if err != nil {
		t.Fatalf("ParseState: %v", err)
	}
	want := []string{
		"reqid 1: vnic matches no key manager requests: ignored",
		"flag af-unspec: vnic carries either inner family in a tunnel: ignored",
		"flag noecn: vnic decapsulates ECN as RFC 6040 says: ignored",
		"tfcpad 0: vnic sends no TFC padding: ignored",
		`offload dev eth0: vnic is the offload device: ignored`,
		"replay-window 32: an outbound SA has no replay window: ignored",
	}
	if strings.Join(notes, "\n") != strings.Join(want, "\n") {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
	if b.Direction != "out" || b.Vnic == nil || b.Vnic.ReplayWindow != nil || b.SecAssoc[0].Flags&ndis.FlagESN == 0 {
		t.Errorf("bundle: direction %q, extensions %+v, flags %#x", b.Direction, b.Vnic, b.SecAssoc[0].Flags)
	}
	// Inbound, the replay window is the SA's.
	_, notes, err = ParseState(saWords("dir in dst 192.0.2.2 spi 0x1000 mode tunnel replay-window 32 aead rfc4106(gcm(aes)) 0xKEY20 128"))
	if err != nil || len(notes) != 0 {
		t.Errorf("inbound replay-window: notes %q, %v", notes, err)
	}
}
