package main

// --esp-sa-file: the SAs that `vnic sa add` adds, as lines of Wireshark's
// ESP SA table, so that Wireshark and tshark can decrypt a capture of the
// underlay. The keys go to that file only, and only from the CLI: the
// daemon never returns a key and never sees the file.
//
// The table is Wireshark's "esp_sa" UAT (user accessible table), which it
// reads from the profile directory (~/.config/wireshark/esp_sa) and tshark
// also takes as `-o uat:esp_sa:LINE`. Its format, from Wireshark's
// epan/dissectors/packet-ipsec.c (esp_uat_flds, esp_encryption_type_vals,
// esp_authentication_type_vals) and epan/uat.c (putfld, uat_esc), and
// checked against tshark 4.0:
//
//   - one record a line, its fields separated by commas, each a string in
//     double quotes in which '"', '\' and unprintable bytes are written
//     \xNN;
//   - the fields: Protocol ("IPv4" or "IPv6"), Src IP, Dest IP (an address,
//     or "*" for any), SPI ("0x" and hex, or decimal), Encryption (one of
//     Wireshark's names, matched exactly), Encryption Key ("0x" and hex:
//     AES-GCM's key with its 4-byte salt after it), Authentication,
//     Authentication Key;
//   - newer releases add SN ("32-bit" or "64-bit", for ESN) and ESN High
//     Bits (hex), and fill them with "32-bit" and 0 when a line lacks them;
//     Wireshark 4.0 takes a line that has them with a warning ("More fields
//     than required") and ignores them. vnic adds them to the lines of ESN
//     SAs only.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"syscall"

	"vnic/algo"
	"vnic/ndis"
	"vnic/oid"
	"vnic/sadb"
)

// espSAEnv names the environment variable that stands for --esp-sa-file
// when the option is not given.
const espSAEnv = "VNIC_ESP_SA_FILE"

// espSAPath returns the file that --esp-sa-file, or else VNIC_ESP_SA_FILE,
// names: "" for none.
func (c *cli) espSAPath() string {
	if c.espSAFile != "" {
		return c.espSAFile
	}
	return os.Getenv(espSAEnv)
}

// Wireshark's names in the ESP SA table (esp_encryption_type_vals and
// esp_authentication_type_vals in packet-ipsec.c), matched exactly.
const (
	wsNull   = "NULL"
	wsAESCBC = "AES-CBC [RFC3602]"
	wsDESCBC = "DES-CBC [RFC2405]"
	ws3DES   = "TripleDES-CBC [RFC2451]"
)

// wsAESGCM names AES-GCM by its ICV length in bytes (any key size: the key
// says which). The ICV comes with the cipher: the authentication must be
// NULL, or Wireshark reports a dissector bug.
var wsAESGCM = map[int]string{
	16: "AES-GCM with 16 octet ICV [RFC4106]",
	12: "AES-GCM with 12 octet ICV [RFC4106]",
	8:  "AES-GCM with 8 octet ICV [RFC4106]",
}

// wsHMAC names the HMACs whose ICVs Wireshark checks, by algorithm and ICV
// length in bytes.
var wsHMAC = map[ndis.AuthenticationID]map[int]string{
	ndis.AuthenticationMD5:    {12: "HMAC-MD5-96 [RFC2403]"},
	ndis.AuthenticationSHA1:   {12: "HMAC-SHA-1-96 [RFC2404]"},
	ndis.AuthenticationSHA256: {12: "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]", 16: "HMAC-SHA-256-128 [RFC4868]"},
	ndis.AuthenticationSHA384: {24: "HMAC-SHA-384-192 [RFC4868]"},
	ndis.AuthenticationSHA512: {32: "HMAC-SHA-512-256 [RFC4868]"},
}

// wsAnyAuth names, by ICV length in bytes, the entries with which
// Wireshark skips an ICV it does not check and still decrypts.
var wsAnyAuth = map[int]string{
	8:  "ANY 64 bit authentication [no checking]",
	12: "ANY 96 bit authentication [no checking]",
	16: "ANY 128 bit authentication [no checking]",
	24: "ANY 192 bit authentication [no checking]",
	32: "ANY 256 bit authentication [no checking]",
}

// natTPort is the UDP port that Wireshark decodes as ESP-in-UDP
// (its udpencap dissector's).
const natTPort = 4500

// wiresharkESPSA returns the line of Wireshark's ESP SA table for the SA
// bundle b, newline included, and notes for the user (which hold no key).
// The line is nil when Wireshark cannot decrypt the SA (a note says why)
// or b is not an SA the daemon takes (the daemon says why). The caller
// wipes the line.
func wiresharkESPSA(b *oid.SA) (line []byte, notes []string) {
	cfg, err := b.Config()
	if err != nil || cfg.Proto != ndis.OperationESP {
		return nil, nil
	}
	s := &cfg.Algo
	encName, authName, note := wiresharkAlgorithms(s)
	if encName == "" {
		return nil, []string{"no line for this SA: " + note}
	}
	if note != "" {
		notes = append(notes, note)
	}

	proto := "IPv4"
	switch {
	case cfg.Src.IsValid():
		if cfg.Src.Is6() {
			proto = "IPv6"
		}
	case cfg.Dst.IsValid():
		if cfg.Dst.Is6() {
			proto = "IPv6"
		}
	case b.Flags&ndis.FlagIPv6 != 0:
		proto = "IPv6"
	default:
		notes = append(notes, `the SA names neither address, so its line is for IPv4 ("*" both ways); for an IPv6 underlay, make it IPv6`)
	}
	if n := udpPortNote(&cfg); n != "" {
		notes = append(notes, n)
	}

	// Room enough for the whole line: appending never copies the keys to
	// a new array that would not be wiped.
	line = make([]byte, 0, 512+2*(len(s.EncryptionKey)+len(s.AuthenticationKey)))
	line = appendUATString(line, proto)
	line = append(line, ',')
	line = appendUATString(line, wsAddr(cfg.Src))
	line = append(line, ',')
	line = appendUATString(line, wsAddr(cfg.Dst))
	line = append(line, ',')
	line = appendUATString(line, fmt.Sprintf("0x%08x", cfg.SPI))
	line = append(line, ',')
	line = appendUATString(line, encName)
	line = append(line, ',')
	line = appendUATKey(line, s.EncryptionKey)
	line = append(line, ',')
	line = appendUATString(line, authName)
	line = append(line, ',')
	if authName == wsNull {
		line = appendUATKey(line, nil)
	} else {
		line = appendUATKey(line, s.AuthenticationKey)
	}
	if s.ESN {
		line = append(line, ',')
		line = appendUATString(line, "64-bit")
		line = append(line, ',')
		line = appendUATString(line, fmt.Sprintf("%x", cfg.SeqHigh))
		notes = append(notes, `the SA uses ESN: its line ends with the columns newer Wireshark releases have for it, SN "64-bit" and ESN High Bits; `+
			`Wireshark 4.0 warns that they are "more fields than required", ignores them and decrypts, but reports the ICVs incorrect when it checks them`)
	}
	return append(line, '\n'), notes
}

// wiresharkAlgorithms returns Wireshark's names for the SA's encryption
// and authentication, and a note: why there is no line (encName ""), or
// what the line cannot do.
func wiresharkAlgorithms(s *algo.Spec) (encName, authName, note string) {
	enc, _ := algo.EncryptionAlgorithm(s.Encryption)
	switch s.Encryption {
	case ndis.EncryptionAESGCM128, ndis.EncryptionAESGCM192, ndis.EncryptionAESGCM256:
		icv := s.ICVLen
		if icv == 0 {
			icv = enc.ICVs[0]
		}
		if name := wsAESGCM[icv]; name != "" {
			return name, wsNull, ""
		}
		return "", "", fmt.Sprintf("Wireshark's ESP SA table has no AES-GCM with a %d-bit ICV", icv*8)
	case ndis.EncryptionChaCha20Poly1305:
		return "", "", fmt.Sprintf("Wireshark 4.0 cannot decrypt %s, and the entry newer releases have for it makes older ones refuse the line", enc.Name)
	case ndis.EncryptionAESCBC128, ndis.EncryptionAESCBC192, ndis.EncryptionAESCBC256:
		encName = wsAESCBC
	case ndis.EncryptionDESCBC:
		encName = wsDESCBC
	case ndis.Encryption3DESCBC:
		encName = ws3DES
	case ndis.EncryptionNone:
		encName = wsNull
	default:
		return "", "", fmt.Sprintf("Wireshark's ESP SA table has no %s", enc.Name)
	}

	auth, ok := algo.AuthenticationAlgorithm(s.Authentication)
	switch {
	case !ok:
		return "", "", "Wireshark's ESP SA table has no ESP without integrity"
	case auth.Combined: // AES-GMAC: integrity only, with an IV
		return "", "", fmt.Sprintf("Wireshark cannot decode %s (AES-GMAC) ESP: its ESP SA table has no entry for it", auth.Name)
	}
	icv := s.ICVLen
	if icv == 0 {
		icv = auth.DefaultICV
	}
	if name := wsHMAC[s.Authentication][icv]; name != "" {
		return encName, name, ""
	}
	if name := wsAnyAuth[icv]; name != "" {
		return encName, name, fmt.Sprintf("Wireshark does not check the ICVs of %s with a %d-bit ICV: the line says %q, which decrypts without checking them",
			auth.Name, icv*8, name)
	}
	return "", "", fmt.Sprintf("Wireshark's ESP SA table has no entry for a %d-bit ICV (%s)", icv*8, auth.Name)
}

// wsAddr is an endpoint as the table writes it: the wildcard as "*".
func wsAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// udpPortNote says, for ESP-in-UDP that Wireshark would not decode as ESP
// by itself (neither port is 4500), how to make it. A local port of 0 is
// the daemon's -udp-port, 4500 unless changed; the peer's is 4500.
func udpPortNote(cfg *sadb.Config) string {
	if !cfg.Encap.UDP {
		return ""
	}
	local, peer := cfg.Encap.SrcPort, cfg.Encap.DstPort
	if cfg.Direction == sadb.Inbound {
		local, peer = peer, local
	}
	if local == 0 || peer == 0 || local == natTPort || peer == natTPort {
		return ""
	}
	return fmt.Sprintf("the SA's ESP-in-UDP uses UDP ports %d and %d, which Wireshark does not decode as ESP unless told: tshark -d udp.port==%d,udpencap",
		local, peer, peer)
}

// appendUATString appends s as a quoted field of a UAT file, escaped as
// Wireshark's uat_esc escapes it.
func appendUATString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c > 0x7e {
			b = fmt.Appendf(b, `\x%02x`, c)
		} else {
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendUATKey appends a key as a quoted field: "0x" and its hex digits,
// or "" for none.
func appendUATKey(b, key []byte) []byte {
	b = append(b, '"')
	if len(key) > 0 {
		b = append(b, "0x"...)
		b = hex.AppendEncode(b, key)
	}
	return append(b, '"')
}

// espSAPending is --esp-sa-file's part of one `sa add`: the line, ready
// before the SA is sent and written only once the daemon has added it.
type espSAPending struct {
	path  string
	line  []byte   // nil when the SA gets none
	notes []string // printed once the SA is added
	file  *os.File // open for the line, nil when there is none
	// created is true when vnic created the file for this line (and
	// removes it again if the SA is refused).
	created bool
}

// prepareESPSA builds the SA's line for --esp-sa-file and opens the file
// for it, refusing a file that must not hold keys, all before the SA is
// sent. It returns nil when no file is asked for.
func (c *cli) prepareESPSA(b *oid.SA) (*espSAPending, error) {
	path := c.espSAPath()
	if path == "" {
		return nil, nil
	}
	p := &espSAPending{path: path}
	p.line, p.notes = wiresharkESPSA(b)
	if p.line == nil {
		// Nothing to write: refuse only a file that could not take a line.
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("--esp-sa-file: %w", err)
		default:
			if err := checkESPSAFile(path, fi); err != nil {
				return nil, err
			}
		}
		return p, nil
	}
	var err error
	if p.file, p.created, err = openESPSAFile(path); err != nil {
		clear(p.line)
		return nil, err
	}
	return p, nil
}

// openESPSAFile opens path to append to it, creating it with mode 0600,
// once it has checked that the file is fit to hold keys: a regular file of
// the user's own that no one else may read or write. It says whether it
// created the file.
func openESPSAFile(path string) (*os.File, bool, error) {
	fi, err := os.Lstat(path)
	exists := err == nil
	switch {
	case exists:
		if err := checkESPSAFile(path, fi); err != nil {
			return nil, false, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("--esp-sa-file: %w", err)
	}
	// O_NOFOLLOW and O_EXCL: what is opened is what was checked, or a new
	// file; it is checked again below all the same.
	flags := os.O_RDWR | os.O_APPEND | syscall.O_NOFOLLOW
	if !exists {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, false, fmt.Errorf("--esp-sa-file %s is a symbolic link: give the file itself", path)
	case !exists && errors.Is(err, fs.ErrExist), exists && errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("--esp-sa-file %s was created or removed meanwhile by someone else: check it and try again", path)
	case err != nil:
		return nil, false, fmt.Errorf("--esp-sa-file: %w", err)
	}
	if !exists {
		// The umask may have taken bits of 0600 away.
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, fmt.Errorf("--esp-sa-file: %w", err)
		}
	}
	if fi, err = f.Stat(); err == nil {
		err = checkESPSAFile(path, fi)
	}
	if err != nil {
		f.Close()
		if !exists {
			os.Remove(path)
		}
		return nil, false, err
	}
	return f, !exists, nil
}

// checkESPSAFile refuses a file that must not take keys: anything but a
// regular file, a file of someone else's, or one that others may read or
// write.
func checkESPSAFile(path string, fi fs.FileInfo) error {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return fmt.Errorf("--esp-sa-file %s is a symbolic link: give the file itself", path)
	case m.IsDir():
		return fmt.Errorf("--esp-sa-file %s is a directory: give a file, like %s/esp_sa", path, path)
	case !m.IsRegular():
		return fmt.Errorf("--esp-sa-file %s is not a regular file (%s): give a file", path, m.Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("--esp-sa-file %s belongs to uid %d, not to you (uid %d): vnic writes keys only to a file of your own", path, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("--esp-sa-file %s has mode %04o: others may read or write it, and it would hold keys: chmod 600 it, or give another file", path, perm)
	}
	return nil
}

// commit writes the line, now that the daemon has added the SA, and prints
// the notes.
func (p *espSAPending) commit(stderr io.Writer) error {
	if p == nil {
		return nil
	}
	for _, n := range p.notes {
		fmt.Fprintf(stderr, "vnic: sa add: note: --esp-sa-file: %s\n", n)
	}
	if p.file == nil {
		return nil
	}
	f := p.file
	p.file = nil
	defer clear(p.line)
	err := appendLine(f, p.line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--esp-sa-file %s: %w", p.path, err)
	}
	return nil
}

// appendLine appends line to f, after a newline when the file does not
// end with one, under an exclusive lock so that two `sa add` do not mix
// their lines.
func appendLine(f *os.File, line []byte) error {
	fd := int(f.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer syscall.Flock(fd, syscall.LOCK_UN)
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if n := fi.Size(); n > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, n-1); err != nil {
			return err
		}
		if last[0] != '\n' {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
	}
	_, err = f.Write(line)
	return err
}

// discard drops what commit has not written: the line, and the file if
// vnic created it for this SA and it is still empty.
func (p *espSAPending) discard() {
	if p == nil {
		return
	}
	clear(p.line)
	if p.file == nil {
		return
	}
	if fi, err := p.file.Stat(); err == nil && p.created && fi.Size() == 0 {
		os.Remove(p.path)
	}
	p.file.Close()
	p.file = nil
}
