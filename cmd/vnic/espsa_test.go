package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"vnic/internal/testutil"
	"vnic/oid"
	"vnic/xfrm"
)

// espKeys fills the key placeholders 0xKEYn of words, the i-th with the
// known key "espsa i" of n bytes, and returns the words and the keys' hex.
func espKeys(line string) ([]string, []string) {
	var keys []string
	i := 0
	filled := testutil.FillKeys(line, func(n int) []byte {
		k := testutil.KnownKey(fmt.Sprint("espsa ", i), n)
		i++
		keys = append(keys, hex.EncodeToString(k))
		return k
	})
	return testutil.Words(filled), keys
}

// keyRef stands for the hex of the i-th key in a wanted line: {0}, {1}.
var keyRef = regexp.MustCompile(`\{(\d)\}`)

// withKeyHex replaces {i} in want with the i-th key's hex digits.
func withKeyHex(want string, keys []string) string {
	return keyRef.ReplaceAllStringFunc(want, func(m string) string {
		return keys[m[1]-'0']
	})
}

const (
	gcm16 = `"AES-GCM with 16 octet ICV [RFC4106]"`
	cbc   = `"AES-CBC [RFC3602]"`
)

// TestWiresharkESPSA: the line of each algorithm family, of both address
// families, with wildcards, raw and in UDP, with ESN, and none (with a
// note saying why) for what Wireshark cannot decrypt.
func TestWiresharkESPSA(t *testing.T) {
	const v4 = "dir out src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel "
	const v4Head = `"IPv4","192.0.2.1","192.0.2.2","0x00001001",`
	tests := []struct {
		name  string
		words string
		want  string   // the line less its newline, {i} for key i's hex; "" for none
		notes []string // substrings of the notes, in order
	}{
		{name: "aes-gcm-128", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: v4Head + gcm16 + `,"0x{0}","NULL",""`},
		{name: "aes-gcm-192 icv 96", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY28 96",
			want: v4Head + `"AES-GCM with 12 octet ICV [RFC4106]","0x{0}","NULL",""`},
		{name: "aes-gcm-256 icv 64", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY36 64",
			want: v4Head + `"AES-GCM with 8 octet ICV [RFC4106]","0x{0}","NULL",""`},
		{name: "aes-cbc-128 hmac-sha1-96", words: v4 + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20 96",
			want: v4Head + cbc + `,"0x{0}","HMAC-SHA-1-96 [RFC2404]","0x{1}"`},
		{name: "aes-cbc-192 hmac-sha256-128", words: v4 + "enc cbc(aes) 0xKEY24 auth-trunc hmac(sha256) 0xKEY32 128",
			want: v4Head + cbc + `,"0x{0}","HMAC-SHA-256-128 [RFC4868]","0x{1}"`},
		{name: "hmac-sha256 as ip xfrm's auth: 96 bits", words: v4 + "enc cbc(aes) 0xKEY16 auth hmac(sha256) 0xKEY32",
			want: v4Head + cbc + `,"0x{0}","HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]","0x{1}"`},
		{name: "aes-cbc-256 hmac-sha384-192", words: v4 + "enc cbc(aes) 0xKEY32 auth-trunc hmac(sha384) 0xKEY48 192",
			want: v4Head + cbc + `,"0x{0}","HMAC-SHA-384-192 [RFC4868]","0x{1}"`},
		{name: "aes-cbc-256 hmac-sha512-256", words: v4 + "enc cbc(aes) 0xKEY32 auth-trunc hmac(sha512) 0xKEY64 256",
			want: v4Head + cbc + `,"0x{0}","HMAC-SHA-512-256 [RFC4868]","0x{1}"`},
		{name: "null encryption", words: v4 + "enc ecb(cipher_null) '' auth-trunc hmac(sha256) 0xKEY32 128",
			want: v4Head + `"NULL","","HMAC-SHA-256-128 [RFC4868]","0x{0}"`},
		{name: "legacy 3des hmac-md5", words: v4 + "enc des3_ede 0xKEY24 auth hmac(md5) 0xKEY16 allow-legacy",
			want: v4Head + `"TripleDES-CBC [RFC2451]","0x{0}","HMAC-MD5-96 [RFC2403]","0x{1}"`},
		{name: "an ICV Wireshark does not check", words: v4 + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20 128",
			want:  v4Head + cbc + `,"0x{0}","ANY 128 bit authentication [no checking]","0x{1}"`,
			notes: []string{`Wireshark does not check the ICVs of hmac(sha1) with a 128-bit ICV: the line says "ANY 128 bit authentication [no checking]"`}},
		{name: "sha512 truncated to 192", words: v4 + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha512) 0xKEY64 192",
			want:  v4Head + cbc + `,"0x{0}","ANY 192 bit authentication [no checking]","0x{1}"`,
			notes: []string{"hmac(sha512) with a 192-bit ICV"}},
		{name: "an ICV the table has no entry for", words: v4 + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha1) 0xKEY20 160",
			notes: []string{"no line for this SA: Wireshark's ESP SA table has no entry for a 160-bit ICV (hmac(sha1))"}},
		{name: "chacha20-poly1305", words: v4 + "aead rfc7539esp(chacha20,poly1305) 0xKEY36 128",
			notes: []string{"no line for this SA: Wireshark 4.0 cannot decrypt rfc7539esp(chacha20,poly1305)"}},
		{name: "aes-gmac", words: v4 + "aead rfc4543(gcm(aes)) 0xKEY20 128",
			notes: []string{"no line for this SA: Wireshark cannot decode rfc4543(gcm(aes)) (AES-GMAC) ESP"}},
		{name: "esp-in-udp on 4500", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY20 128 encap espinudp 4500 4500 0.0.0.0",
			want: v4Head + gcm16 + `,"0x{0}","NULL",""`},
		{name: "esp-in-udp on 4500 one way", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY20 128 encap espinudp 4600 4500 0.0.0.0",
			want: v4Head + gcm16 + `,"0x{0}","NULL",""`},
		{name: "esp-in-udp elsewhere", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY20 128 encap espinudp 4600 4700 0.0.0.0",
			want:  v4Head + gcm16 + `,"0x{0}","NULL",""`,
			notes: []string{"UDP ports 4600 and 4700, which Wireshark does not decode as ESP unless told: tshark -d udp.port==4700,udpencap"}},
		{name: "esp-in-udp elsewhere, inbound", words: "dir in src 192.0.2.2 dst 192.0.2.1 spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128 encap espinudp 4700 4600 0.0.0.0",
			want:  `"IPv4","192.0.2.2","192.0.2.1","0x00001002",` + gcm16 + `,"0x{0}","NULL",""`,
			notes: []string{"UDP ports 4600 and 4700, which Wireshark does not decode as ESP unless told: tshark -d udp.port==4700,udpencap"}},
		{name: "ipv6", words: "dir out src 2001:db8::1 dst 2001:db8::2 spi 0xabcdef12 mode transport enc cbc(aes) 0xKEY16 auth-trunc hmac(sha256) 0xKEY32 128",
			want: `"IPv6","2001:db8::1","2001:db8::2","0xabcdef12",` + cbc + `,"0x{0}","HMAC-SHA-256-128 [RFC4868]","0x{1}"`},
		{name: "ipv6 in udp", words: "dir in src 2001:DB8:0:0::2 dst 2001:db8::1 spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128 encap espinudp 4500 4500 0.0.0.0",
			want: `"IPv6","2001:db8::2","2001:db8::1","0x00001002",` + gcm16 + `,"0x{0}","NULL",""`},
		{name: "any source", words: "dir in dst 192.0.2.1 spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: `"IPv4","*","192.0.2.1","0x00001002",` + gcm16 + `,"0x{0}","NULL",""`},
		{name: "any source, ipv6", words: "dir in src any dst 2001:db8::1 spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128",
			want: `"IPv6","*","2001:db8::1","0x00001002",` + gcm16 + `,"0x{0}","NULL",""`},
		{name: "no address", words: "dir in spi 0x1002 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128",
			want:  `"IPv4","*","*","0x00001002",` + gcm16 + `,"0x{0}","NULL",""`,
			notes: []string{`the SA names neither address, so its line is for IPv4`}},
		{name: "esn", words: v4 + "aead rfc4106(gcm(aes)) 0xKEY20 128 flag esn seq-hi 0x1f",
			want:  v4Head + gcm16 + `,"0x{0}","NULL","","64-bit","1f"`,
			notes: []string{`the SA uses ESN: its line ends with the columns newer Wireshark releases have for it`}},
		{name: "esn from 0, hmac", words: v4 + "enc cbc(aes) 0xKEY16 auth-trunc hmac(sha256) 0xKEY32 128 flag esn",
			want:  v4Head + cbc + `,"0x{0}","HMAC-SHA-256-128 [RFC4868]","0x{1}","64-bit","0"`,
			notes: []string{"the SA uses ESN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			words, keys := espKeys(tt.words)
			b, _, err := xfrm.ParseState(words)
			if err != nil {
				t.Fatalf("ParseState: %v", err)
			}
			line, notes := wiresharkESPSA(&b)
			want := ""
			if tt.want != "" {
				want = withKeyHex(tt.want, keys) + "\n"
			}
			if string(line) != want {
				t.Errorf("line\n%s\nwant\n%s", line, want)
			}
			if len(notes) != len(tt.notes) {
				t.Errorf("notes %q, want %d like %q", notes, len(tt.notes), tt.notes)
			}
			for i := range min(len(notes), len(tt.notes)) {
				if !strings.Contains(notes[i], tt.notes[i]) {
					t.Errorf("note %q lacks %q", notes[i], tt.notes[i])
				}
			}
			for _, n := range notes {
				for _, k := range keys {
					kb, _ := hex.DecodeString(k)
					if testutil.ContainsKey([]byte(n), kb) {
						t.Errorf("note %q holds a key", n)
					}
				}
			}
		})
	}
}

// TestWiresharkESPSARefused: a bundle the daemon would refuse gets no line
// and no note: the daemon says what is wrong.
func TestWiresharkESPSARefused(t *testing.T) {
	for _, b := range []oid.SA{
		{Flags: 2, SecAssoc: []oid.SecAssoc{{Spi: 0x1001}}},
		{SecAssoc: []oid.SecAssoc{{Spi: 0x1001, Operation: 1}}},
		{DestAddr: "192.0.2.1", Flags: 0x10, SecAssoc: []oid.SecAssoc{{Spi: 0x1001, EncryptionAlgorithm: oid.AlgorithmInfo{Identifier: 8}}}, KeyData: make(oid.Key, 20)},
	} {
		if line, notes := wiresharkESPSA(&b); line != nil || notes != nil {
			t.Errorf("%+v: line %q, notes %q; want neither", b, line, notes)
		}
	}
}

// TestAppendUATString: fields are escaped as Wireshark's uat_esc escapes
// them, which its UAT loader undoes.
func TestAppendUATString(t *testing.T) {
	for in, want := range map[string]string{
		"":                  `""`,
		"AES-CBC [RFC3602]": `"AES-CBC [RFC3602]"`,
		`a"b\c`:             `"a\x22b\x5cc"`,
		"tab\there\n":       `"tab\x09here\x0a"`,
		"\x7f\xff":          `"\x7f\xff"`,
	} {
		if got := string(appendUATString(nil, in)); got != want {
			t.Errorf("appendUATString(%q) = %s, want %s", in, got, want)
		}
	}
	if got := string(appendUATKey([]byte("x,"), []byte{0xab, 0x01})); got != `x,"0xab01"` {
		t.Errorf("appendUATKey = %s", got)
	}
}

func TestESPSAOptions(t *testing.T) {
	t.Setenv(espSAEnv, "")
	for _, tt := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"sa", "add"}, "", ""},
		{[]string{"sa", "add"}, "/env/esp_sa", "/env/esp_sa"},
		{[]string{"--esp-sa-file", "/opt/esp_sa", "sa", "add"}, "/env/esp_sa", "/opt/esp_sa"},
		{[]string{"sa", "add", "--esp-sa-file=/opt/esp_sa"}, "", "/opt/esp_sa"},
		{[]string{"-esp-sa-file", "/opt/esp_sa", "sa", "add"}, "", "/opt/esp_sa"},
	} {
		t.Setenv(espSAEnv, tt.env)
		c := &cli{}
		rest, _, err := c.options(tt.args)
		if err != nil || strings.Join(rest, " ") != "sa add" || c.espSAPath() != tt.want {
			t.Errorf("%v with %s=%q: rest %v, file %q, err %v; want file %q", tt.args, espSAEnv, tt.env, rest, c.espSAPath(), err, tt.want)
		}
	}
	for _, bad := range [][]string{{"sa", "add", "--esp-sa-file"}, {"--esp-sa-file=", "sa", "add"}} {
		if _, _, err := (&cli{}).options(bad); err == nil || !strings.Contains(err.Error(), "--esp-sa-file: expected a value") {
			t.Errorf("%v: err %v, want --esp-sa-file: expected a value", bad, err)
		}
	}
}

// espAdd runs `vnic --socket sock [extra...] sa add WORDS` and fails the
// test if its output holds one of the keys.
func espAdd(t *testing.T, sock string, extra []string, words []string, keys []string) (int, string, string) {
	t.Helper()
	args := append(append([]string{"--socket", sock}, extra...), "sa", "add")
	code, out, errs := vnic(context.Background(), append(args, words...)...)
	for _, k := range keys {
		kb, _ := hex.DecodeString(k)
		if testutil.ContainsKey([]byte(out+errs), kb) {
			t.Errorf("sa add printed a key:\n%s%s", out, errs)
		}
	}
	return code, out, errs
}

// readPrivate returns the file's contents, failing the test unless it is a
// file of mode 0600.
func readPrivate(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("%s has mode %v, want -rw-------", path, fi.Mode())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestESPSAFile: sa add appends the line once the daemon added the SA, to
// a file of mode 0600 it creates, never for a refused SA, and refuses a
// file unfit for keys before it sends the SA.
func TestESPSAFile(t *testing.T) {
	t.Setenv(espSAEnv, "")
	d, sock := startTestDaemon(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "esp_sa")
	opt := []string{"--esp-sa-file", path}

	out1, keys1 := espKeys("dir out src 192.0.2.1 dst 192.0.2.2 spi 0x1001 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128")
	line1 := `"IPv4","192.0.2.1","192.0.2.2","0x00001001",` + gcm16 + `,"0x` + keys1[0] + `","NULL",""` + "\n"
	if code, out, errs := espAdd(t, sock, opt, out1, keys1); code != 0 || out != "handle 1\n" || errs != "" {
		t.Fatalf("sa add: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got := readPrivate(t, path); got != line1 {
		t.Fatalf("%s holds\n%s\nwant\n%s", path, got, line1)
	}

	// VNIC_ESP_SA_FILE stands for the option, which overrides it.
	in1, keysIn := espKeys("dir in src 192.0.2.2 dst 192.0.2.1 spi 0x1002 mode tunnel enc cbc(aes) 0xKEY16 auth-trunc hmac(sha256) 0xKEY32 128 encap espinudp 4500 4500 0.0.0.0")
	line2 := `"IPv4","192.0.2.2","192.0.2.1","0x00001002",` + cbc + `,"0x` + keysIn[0] + `","HMAC-SHA-256-128 [RFC4868]","0x` + keysIn[1] + `"` + "\n"
	t.Setenv(espSAEnv, path)
	if code, _, errs := espAdd(t, sock, nil, in1, keysIn); code != 0 || errs != "" {
		t.Fatalf("sa add with %s: exit %d, %s", espSAEnv, code, errs)
	}
	other := filepath.Join(dir, "other")
	t.Setenv(espSAEnv, other)
	out2, keys2 := espKeys("dir out src 192.0.2.1 dst 192.0.2.3 spi 0x1003 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 96")
	line3 := `"IPv4","192.0.2.1","192.0.2.3","0x00001003","AES-GCM with 12 octet ICV [RFC4106]","0x` + keys2[0] + `","NULL",""` + "\n"
	if code, _, errs := espAdd(t, sock, []string{"--esp-sa-file=" + path}, out2, keys2); code != 0 || errs != "" {
		t.Fatalf("sa add: exit %d, %s", code, errs)
	}
	t.Setenv(espSAEnv, "")
	if _, err := os.Stat(other); err == nil {
		t.Errorf("%s was written: the option overrides %s", other, espSAEnv)
	}
	want := line1 + line2 + line3
	if got := readPrivate(t, path); got != want {
		t.Fatalf("%s holds\n%s\nwant\n%s", path, got, want)
	}

	// A refused SA gets no line, and no file when it would have been the
	// first line.
	if code, _, errs := espAdd(t, sock, opt, out1, keys1); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("duplicate sa add: exit %d, %s", code, errs)
	}
	fresh := filepath.Join(dir, "fresh")
	if code, _, errs := espAdd(t, sock, []string{"--esp-sa-file", fresh}, out1, keys1); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("duplicate sa add: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Errorf("%s exists after a refused SA", fresh)
	}
	if got := readPrivate(t, path); got != want {
		t.Fatalf("after a refused SA, %s holds\n%s\nwant\n%s", path, got, want)
	}

	// An SA Wireshark cannot decrypt is added, with a note and no line.
	cc, keysCC := espKeys("dir out src 192.0.2.1 dst 192.0.2.4 spi 0x1004 mode tunnel aead rfc7539esp(chacha20,poly1305) 0xKEY36 128")
	code, out, errs := espAdd(t, sock, []string{"--esp-sa-file", fresh}, cc, keysCC)
	if code != 0 || out != "handle 4\n" || !strings.Contains(errs, "vnic: sa add: note: --esp-sa-file: no line for this SA: Wireshark 4.0 cannot decrypt") {
		t.Fatalf("chacha20 sa add: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Errorf("%s was created for an SA without a line", fresh)
	}

	// A file that does not end its last line gets a newline first.
	hand := filepath.Join(dir, "hand")
	if err := os.WriteFile(hand, []byte("# written by hand"), 0o600); err != nil {
		t.Fatal(err)
	}
	out5, keys5 := espKeys("dir out src 192.0.2.1 dst 192.0.2.5 spi 0x1005 mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128")
	if code, _, errs := espAdd(t, sock, []string{"--esp-sa-file", hand}, out5, keys5); code != 0 {
		t.Fatalf("sa add: exit %d, %s", code, errs)
	}
	line5 := `"IPv4","192.0.2.1","192.0.2.5","0x00001005",` + gcm16 + `,"0x` + keys5[0] + `","NULL",""` + "\n"
	if got := readPrivate(t, hand); got != "# written by hand\n"+line5 {
		t.Errorf("%s holds %q", hand, got)
	}
	if n := len(d.table.List()); n != 5 {
		t.Fatalf("the daemon has %d SAs, want 5", n)
	}
}

// TestESPSAFileRefused: a path that is not a regular file of the user's
// own, private to them, is refused before the SA is sent, and left as it
// was.
func TestESPSAFileRefused(t *testing.T) {
	t.Setenv(espSAEnv, "")
	d, sock := startTestDaemon(t)
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte("# mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// withMode creates a file of mode m, whatever the umask.
	withMode := func(m os.FileMode) func(string) error {
		return func(p string) error {
			if err := os.WriteFile(p, nil, m); err != nil {
				return err
			}
			return os.Chmod(p, m)
		}
	}
	type bad struct {
		name string
		make func(path string) error
		err  string
	}
	bads := []bad{
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "is a directory: give a file, like"},
		{"symlink", func(p string) error { return os.Symlink(private, p) }, "is a symbolic link: give the file itself"},
		{"dangling symlink", func(p string) error { return os.Symlink(filepath.Join(dir, "nowhere"), p) }, "is a symbolic link"},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "is not a regular file (p---------): give a file"},
		{"world-readable", withMode(0o644), "has mode 0644: others may read or write it, and it would hold keys: chmod 600 it"},
		{"group-readable", withMode(0o640), "has mode 0640"},
		{"group-writable", withMode(0o620), "has mode 0620"},
		{"world-writable", withMode(0o602), "has mode 0602"},
		{"in no directory", func(string) error { return nil }, "no such file or directory"},
	}
	if os.Geteuid() == 0 {
		bads = append(bads, bad{"someone else's", func(p string) error {
			if err := withMode(0o600)(p); err != nil {
				return err
			}
			return os.Chown(p, 65534, 65534)
		}, "belongs to uid 65534, not to you (uid 0): vnic writes keys only to a file of your own"})
	}
	for i, b := range bads {
		t.Run(b.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint("bad", i))
			if b.name == "in no directory" {
				path = filepath.Join(dir, "nodir", "esp_sa")
			}
			if err := b.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			words, keys := espKeys(fmt.Sprintf("dir out dst 192.0.2.2 spi %d mode tunnel aead rfc4106(gcm(aes)) 0xKEY20 128", 0x2000+i))
			code, out, errs := espAdd(t, sock, []string{"--esp-sa-file", path}, words, keys)
			if code != 1 || out != "" || !strings.Contains(errs, "vnic: sa add: --esp-sa-file") || !strings.Contains(errs, b.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errs, b.err)
			}
			if n := len(d.table.List()); n != 0 {
				t.Errorf("the daemon has %d SAs: the SA was sent", n)
			}
			after, _ := os.Lstat(path)
			if (before == nil) != (after == nil) || before != nil && (before.Mode() != after.Mode() || before.Size() != after.Size()) {
				t.Errorf("the file changed: %v, now %v", before, after)
			}
		})
	}
	if b, _ := os.ReadFile(private); string(b) != "# mine\n" {
		t.Errorf("the symlink's target changed: %q", b)
	}
	// An SA without a line refuses a bad file too.
	words, keys := espKeys("dir out dst 192.0.2.2 spi 0x3000 mode tunnel aead rfc4543(gcm(aes)) 0xKEY20 128")
	if code, _, errs := espAdd(t, sock, []string{"--esp-sa-file", filepath.Join(dir, "bad0")}, words, keys); code != 1 || !strings.Contains(errs, "is a directory") {
		t.Errorf("aes-gmac to a directory: exit %d, %s", code, errs)
	}
}
