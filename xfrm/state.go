// Package xfrm is the vocabulary of `ip xfrm state add`: it turns the
// words a person types (dir, src, dst, spi, mode, aead, enc, auth-trunc,
// encap, replay-window, flag esn, limit, sel, ...) into the SA bundle the
// OID channel takes, with algorithm names, key lengths and ICV sizes from
// algo.Catalogue. What the words alone can say is checked here, in their
// own terms (a name, a number, a unit, a word that needs another); the
// daemon checks the SA itself and answers with the reason.
package xfrm

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"vnic/algo"
	"vnic/ndis"
	"vnic/oid"
)

// StateUsage is the usage of `vnic sa add`. Its words follow `ip xfrm
// state add` where it has a word for the thing, plus vnic's own (dir, sel,
// pair, allow-legacy).
const StateUsage = `vnic sa add dir in|out [src ADDR] [dst ADDR] [proto esp] spi SPI mode tunnel|transport
    ALGORITHM [encap espinudp SPORT DPORT 0.0.0.0 [nat-keepalive-interval SECONDS]]
    [replay-window N] [flag esn]
    [seq-hi N] [replay-oseq N | replay-seq N | seq N] [limit NAME N]...
    [sel [src PREFIX] [dst PREFIX] [proto PROTO] [sport N] [dport N]]... [pair HANDLE] [allow-legacy]
ALGORITHM is one of
    aead rfc4106(gcm(aes)) 0xKEYSALT 64|96|128         (AES-GCM; key 20, 28 or 36 bytes with the salt)
    aead rfc4543(gcm(aes)) 0xKEYSALT 128               (AES-GMAC, integrity only)
    aead rfc7539esp(chacha20,poly1305) 0xKEYSALT 128   (key 36 bytes with the salt)
    enc cbc(aes) 0xKEY  auth-trunc hmac(sha1|sha256|sha384|sha512) 0xKEY BITS
    enc ecb(cipher_null) ''  auth-trunc hmac(...) 0xKEY BITS
    (auth NAME 0xKEY instead of auth-trunc uses Linux's default truncation)
replay-oseq N and replay-seq N mean what they mean in ip xfrm: N is the last sequence number
    sent (dir out: the SA sends N+1 next) or the highest one received (dir in).
seq N is vnic's own word, NOT ip xfrm's seq (there the key manager's message number, which
    vnic has no use for): N is the first number to send (dir out) or the highest one
    received (dir in). All three give the low-order 32 bits; seq-hi the high-order ones (ESN).
limit NAME is byte-soft, byte-hard, packet-soft, packet-hard, time-soft or time-hard (seconds).
nat-keepalive-interval (dir out, with encap): an SA idle that long sends a NAT keepalive, and
    one per interval while it stays idle (RFC 3948).
mode is required: ip xfrm's default (transport) and the OID channel's (tunnel) differ.
ip xfrm words vnic has no use for but that change nothing it does (reqid, tfcpad, offload,
    flag af-unspec, flag noecn, flag align4, replay-window on dir out) are taken with a note
    on stderr; those that would change what the SA does (mark, if_id, ctx, flag decap-dscp,
    ...) are refused, all in one message.`

// saAdd collects the words of `vnic sa add`.
type saAdd struct {
	words []string
	i     int
	seen  map[string]bool

	sa        oid.SA
	ext       oid.SAExtensions
	dir       string
	mode      string
	encap     bool
	keepalive uint32 // nat-keepalive-interval, seconds
	aead      *algWords
	enc, auth *algWords
	hasExt    bool
	window    *int // replay-window as given
	// notes are the harmless ip xfrm words taken and ignored, foreign
	// those refused, as written.
	notes, foreign []string
}

// algWords is one algorithm as the words gave it.
type algWords struct {
	word string // aead, enc, auth or auth-trunc
	name string
	key  []byte
	bits uint64 // ICV or truncation bits; 0 for the default
}

// ParseState turns `vnic sa add` words into an SA bundle, and returns
// notes on the ip xfrm words it took and ignored (for the user's
// stderr). Its errors name the word that is wrong and what was expected,
// and list together every ip xfrm word vnic does not support; they never
// quote a key.
func ParseState(words []string) (oid.SA, []string, error) {
	p := &saAdd{words: words, seen: map[string]bool{}}
	if err := p.parse(); err != nil {
		return oid.SA{}, nil, err
	}
	if len(p.foreign) > 0 {
		return oid.SA{}, nil, fmt.Errorf("not supported by vnic: %s: remove them (vnic sa add -h lists the words it takes)",
			strings.Join(p.foreign, ", "))
	}
	b, err := p.bundle()
	if err != nil {
		return oid.SA{}, nil, err
	}
	return b, p.notes, nil
}

func (p *saAdd) next() (string, bool) {
	if p.i >= len(p.words) {
		return "", false
	}
	w := p.words[p.i]
	p.i++
	return w, true
}

func (p *saAdd) peek() string {
	if p.i >= len(p.words) {
		return ""
	}
	return p.words[p.i]
}

// arg returns the argument of word, or an error saying what was expected.
func (p *saAdd) arg(word, expected string) (string, error) {
	w, ok := p.next()
	if !ok {
		return "", fmt.Errorf("%s: expected %s, got nothing", word, expected)
	}
	return w, nil
}

// once refuses a word given twice.
func (p *saAdd) once(word string) error {
	if p.seen[word] {
		return fmt.Errorf("%s: given twice", word)
	}
	p.seen[word] = true
	return nil
}

// foreignWords are the `ip xfrm state add` words that vnic has no word
// of its own for, with the number of arguments each takes. A word with a
// note changes nothing vnic does: it is taken, and the note goes to the
// user. The others would change what the SA does: they are refused.
var foreignWords = map[string]struct {
	args int
	note string
}{
	"reqid":  {1, "vnic matches no key manager requests: ignored"},
	"tfcpad": {1, "vnic sends no TFC padding: ignored"},
	// offload is handled by offloadWords: vnic is the offload.
	"mark":        {1, ""},
	"output-mark": {1, ""},
	"if_id":       {1, ""},
	"ctx":         {1, ""},
	"coa":         {1, ""},
	"extra-flag":  {1, ""},
	"comp":        {1, ""},
}

// harmlessFlags are the `ip xfrm state` flags that change nothing vnic
// does, with the note for the user.
var harmlessFlags = map[string]string{
	"af-unspec": "vnic carries either inner family in a tunnel: ignored",
	"noecn":     "vnic decapsulates ECN as RFC 6040 says: ignored",
	"align4":    "vnic aligns ESP as RFC 4303 says: ignored",
}

const wordList = "dir, src, dst, proto, spi, mode, aead, enc, auth, auth-trunc, encap, nat-keepalive-interval, replay-window, flag, seq, replay-seq, replay-oseq, seq-hi, replay-seq-hi, replay-oseq-hi, limit, sel, pair or allow-legacy"

func (p *saAdd) parse() error {
	for {
		w, ok := p.next()
		if !ok {
			return nil
		}
		var err error
		switch w {
		case "dir":
			err = p.direction()
		case "src", "dst":
			err = p.endpoint(w)
		case "proto":
			err = p.proto()
		case "spi":
			err = p.spi()
		case "mode":
			err = p.modeWord()
		case "aead", "enc", "auth", "auth-trunc":
			err = p.algorithm(w)
		case "encap":
			err = p.encapWord()
		case "nat-keepalive-interval":
			err = p.keepaliveWord()
		case "replay-window":
			err = p.replayWindow()
		case "flag":
			err = p.flags()
		case "seq", "replay-seq", "replay-oseq":
			err = p.seq(w)
		case "seq-hi", "replay-seq-hi", "replay-oseq-hi":
			err = p.seqHi(w)
		case "limit":
			err = p.limits()
		case "sel":
			err = p.selector()
		case "pair":
			err = p.pair()
		case "allow-legacy":
			if err = p.once(w); err == nil {
				p.ext.AllowLegacy, p.hasExt = true, true
			}
		case "offload":
			err = p.offloadWords()
		default:
			fw, ok := foreignWords[w]
			if !ok {
				return fmt.Errorf("unknown word %s: expected %s", QuoteWord(w), wordList)
			}
			err = p.foreignWord(w, fw.args, fw.note)
		}
		if err != nil {
			return err
		}
	}
}

// foreignWord takes an ip xfrm word vnic has no use for and its
// arguments (mark and output-mark may have "mask M" after theirs): with a
// note it is harmless and noted, without one it is refused at the end.
func (p *saAdd) foreignWord(w string, args int, note string) error {
	given := []string{w}
	for range args {
		v, err := p.arg(w, "its argument, as ip xfrm takes it")
		if err != nil {
			return err
		}
		given = append(given, echoWord(v))
	}
	if (w == "mark" || w == "output-mark") && p.peek() == "mask" {
		p.next()
		v, err := p.arg(w+" mask", "a mask")
		if err != nil {
			return err
		}
		given = append(given, "mask", echoWord(v))
	}
	if note != "" {
		p.notes = append(p.notes, strings.Join(given, " ")+": "+note)
	} else {
		p.foreign = append(p.foreign, strings.Join(given, " "))
	}
	return nil
}

// offloadWords takes ip xfrm's `offload [crypto|packet] dev DEV dir in|out`:
// vnic is the offload, so the device is noted and ignored; its dir is the
// SA's direction.
func (p *saAdd) offloadWords() error {
	if v := p.peek(); v == "crypto" || v == "packet" {
		p.next()
	}
	if v, _ := p.next(); v != "dev" {
		return fmt.Errorf("offload: expected dev DEV dir in|out, got %s", QuoteWord(v))
	}
	dev, err := p.arg("offload dev", "an interface name")
	if err != nil {
		return err
	}
	p.notes = append(p.notes, "offload dev "+echoWord(dev)+": vnic is the offload device: ignored")
	if p.peek() == "dir" {
		p.next()
		return p.direction()
	}
	return nil
}

func (p *saAdd) direction() error {
	if err := p.once("dir"); err != nil {
		return err
	}
	v, err := p.arg("dir", "in or out")
	if err != nil {
		return err
	}
	switch v {
	case "in", "out":
		p.dir = v
		return nil
	}
	return fmt.Errorf("dir: expected in or out, got %s", QuoteWord(v))
}

func (p *saAdd) endpoint(word string) error {
	if err := p.once(word); err != nil {
		return err
	}
	v, err := p.arg(word, "an IP address like 192.0.2.1")
	if err != nil {
		return err
	}
	if v == "any" {
		return nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%s: expected an IP address like 192.0.2.1, got %s", word, QuoteWord(v))
	}
	if word == "src" {
		p.sa.SrcAddr = a.String()
	} else {
		p.sa.DestAddr = a.String()
	}
	return nil
}

func (p *saAdd) proto() error {
	if err := p.once("proto"); err != nil {
		return err
	}
	v, err := p.arg("proto", "esp")
	if err != nil {
		return err
	}
	switch v {
	case "esp":
		p.saAssoc().Operation = uint32(ndis.OperationESP)
	case "ah":
		// The daemon refuses AH with NDIS_STATUS_NOT_SUPPORTED.
		p.saAssoc().Operation = uint32(ndis.OperationAH)
	default:
		return fmt.Errorf("proto: expected esp, got %s", QuoteWord(v))
	}
	return nil
}

// saAssoc returns the bundle's one SecAssoc element.
func (p *saAdd) saAssoc() *oid.SecAssoc {
	if len(p.sa.SecAssoc) == 0 {
		p.sa.SecAssoc = []oid.SecAssoc{{Operation: uint32(ndis.OperationESP)}}
	}
	return &p.sa.SecAssoc[0]
}

func (p *saAdd) spi() error {
	if err := p.once("spi"); err != nil {
		return err
	}
	v, err := p.arg("spi", "a number like 0x1000")
	if err != nil {
		return err
	}
	n, err := ParseNumber(v, 32)
	if err != nil {
		return fmt.Errorf("spi: expected a number like 0x1000, got %s", QuoteWord(v))
	}
	p.saAssoc().Spi = uint32(n)
	return nil
}

func (p *saAdd) modeWord() error {
	if err := p.once("mode"); err != nil {
		return err
	}
	v, err := p.arg("mode", "tunnel or transport")
	if err != nil {
		return err
	}
	if v != "tunnel" && v != "transport" {
		return fmt.Errorf("mode: expected tunnel or transport, got %s", QuoteWord(v))
	}
	p.mode = v
	return nil
}

func (p *saAdd) algorithm(word string) error {
	if err := p.once(word); err != nil {
		return err
	}
	a := &algWords{word: word}
	var err error
	if a.name, err = p.arg(word, "an algorithm name"); err != nil {
		return err
	}
	if oid.LooksLikeKey(a.name) {
		return fmt.Errorf("%s: expected an algorithm name before the key, got %s", word, QuoteWord(a.name))
	}
	keyWord := word + " " + a.name + " key"
	k, ok := p.next()
	if !ok {
		return fmt.Errorf("%s: expected 0x followed by hex digits, got nothing", keyWord)
	}
	if a.key, err = parseKey(keyWord, k); err != nil {
		return err
	}
	if word == "aead" || word == "auth-trunc" {
		what := "the ICV length in bits, like 128"
		if word == "auth-trunc" {
			what = "the truncation length in bits, like 128"
		}
		v, err := p.arg(word+" "+a.name, what)
		if err != nil {
			return err
		}
		if a.bits, err = ParseNumber(v, 16); err != nil || a.bits == 0 || a.bits%8 != 0 {
			return fmt.Errorf("%s %s: expected %s (a multiple of 8), got %s", word, a.name, what, QuoteWord(v))
		}
	}
	switch word {
	case "aead":
		p.aead = a
	case "enc":
		p.enc = a
	default:
		if p.auth != nil {
			return fmt.Errorf("%s: give auth or auth-trunc, not both", word)
		}
		p.auth = a
	}
	return nil
}

func (p *saAdd) encapWord() error {
	if err := p.once("encap"); err != nil {
		return err
	}
	v, err := p.arg("encap", "espinudp")
	if err != nil {
		return err
	}
	switch v {
	case "espinudp":
	case "espinudp-nonike", "espintcp":
		return fmt.Errorf("encap: %s is not supported: use espinudp (RFC 3948)", v)
	default:
		return fmt.Errorf("encap: expected espinudp, got %s", QuoteWord(v))
	}
	var ports [2]uint16
	for i, name := range []string{"source port", "destination port"} {
		v, err := p.arg("encap espinudp", "the "+name+", like 4500")
		if err != nil {
			return err
		}
		n, err := ParseNumber(v, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("encap espinudp: expected the %s, a number from 1 to 65535 like 4500, got %s", name, QuoteWord(v))
		}
		ports[i] = uint16(n)
	}
	v, err = p.arg("encap espinudp", "the original address, like 0.0.0.0")
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("encap espinudp: expected the original address, like 0.0.0.0, got %s", QuoteWord(v))
	}
	p.encap = true
	p.ext.UDP, p.hasExt = &oid.UDPPorts{SPort: ports[0], DPort: ports[1]}, true
	return nil
}

// keepaliveWord reads nat-keepalive-interval SECONDS; bundle puts it with
// the encap ports.
func (p *saAdd) keepaliveWord() error {
	if err := p.once("nat-keepalive-interval"); err != nil {
		return err
	}
	v, err := p.arg("nat-keepalive-interval", "seconds, like 20")
	if err != nil {
		return err
	}
	n, err := ParseNumber(v, 32)
	if err != nil || n == 0 {
		return fmt.Errorf("nat-keepalive-interval: expected seconds, a number from 1 to 86400 like 20, got %s", QuoteWord(v))
	}
	p.keepalive = uint32(n)
	return nil
}

func (p *saAdd) replayWindow() error {
	if err := p.once("replay-window"); err != nil {
		return err
	}
	v, err := p.arg("replay-window", "a window size in packets, like 128 (0 turns replay protection off)")
	if err != nil {
		return err
	}
	n, err := ParseNumber(v, 31)
	if err != nil {
		return fmt.Errorf("replay-window: expected a window size in packets, like 128 (0 turns replay protection off), got %s", QuoteWord(v))
	}
	w := int(n)
	p.window = &w // dir decides, in bundle
	return nil
}

// xfrmFlags are the `ip xfrm state` flag names.
var xfrmFlags = map[string]bool{
	"esn": true, "noecn": true, "decap-dscp": true, "nopmtudisc": true, "wildrecv": true,
	"icmp": true, "af-unspec": true, "align4": true,
}

func (p *saAdd) flags() error {
	v, err := p.arg("flag", "esn")
	if err != nil {
		return err
	}
	for {
		switch {
		case v == "esn":
			p.saAssoc().Flags |= ndis.FlagESN
		case harmlessFlags[v] != "":
			p.notes = append(p.notes, "flag "+v+": "+harmlessFlags[v])
		case xfrmFlags[v]:
			p.foreign = append(p.foreign, "flag "+v)
		default:
			return fmt.Errorf("flag: expected esn, got %s", QuoteWord(v))
		}
		if !xfrmFlags[p.peek()] {
			return nil
		}
		v, _ = p.next()
	}
}

func (p *saAdd) seq(word string) error {
	if err := p.once("seq"); err != nil {
		return fmt.Errorf("%s: give one of seq, replay-seq and replay-oseq", word)
	}
	v, err := p.arg(word, "a sequence number")
	if err != nil {
		return err
	}
	n, err := ParseNumber(v, 32)
	if err != nil {
		return fmt.Errorf("%s: expected a sequence number from 0 to 4294967295, got %s", word, QuoteWord(v))
	}
	if word == "replay-oseq" {
		// ip xfrm's replay-oseq is the last number sent; vnic's
		// initial_seq is the next one.
		n++
	}
	p.ext.InitialSeq, p.hasExt = n, true
	return nil
}

func (p *saAdd) seqHi(word string) error {
	if err := p.once("seq-hi"); err != nil {
		return fmt.Errorf("%s: give one of seq-hi, replay-seq-hi and replay-oseq-hi", word)
	}
	v, err := p.arg(word, "the high-order 32 bits of the sequence number")
	if err != nil {
		return err
	}
	n, err := ParseNumber(v, 32)
	if err != nil {
		return fmt.Errorf("%s: expected the high-order 32 bits of the sequence number, a number from 0 to 4294967295, got %s", word, QuoteWord(v))
	}
	p.saAssoc().SequenceNumberHighOrder = uint32(n)
	return nil
}

var limitNames = map[string]bool{
	"byte-soft": true, "byte-hard": true, "packet-soft": true, "packet-hard": true,
	"time-soft": true, "time-hard": true, "time-use-soft": true, "time-use-hard": true,
}

const limitList = "byte-soft, byte-hard, packet-soft, packet-hard, time-soft or time-hard"

func (p *saAdd) limits() error {
	name, err := p.arg("limit", limitList)
	if err != nil {
		return err
	}
	if p.ext.Lifetime == nil {
		p.ext.Lifetime, p.hasExt = &oid.Lifetime{}, true
	}
	l := p.ext.Lifetime
	for {
		if !limitNames[name] {
			return fmt.Errorf("limit: expected %s, got %s", limitList, QuoteWord(name))
		}
		if name == "time-use-soft" || name == "time-use-hard" {
			return fmt.Errorf("limit %s: not supported by vnic; use time-soft or time-hard (seconds since the SA was added)", name)
		}
		if err := p.once("limit " + name); err != nil {
			return err
		}
		v, err := p.arg("limit "+name, "a number")
		if err != nil {
			return err
		}
		n, err := ParseNumber(v, 64)
		if err != nil {
			return fmt.Errorf("limit %s: expected a number, got %s", name, QuoteWord(v))
		}
		switch name {
		case "byte-soft":
			l.SoftBytes = n
		case "byte-hard":
			l.HardBytes = n
		case "packet-soft":
			l.SoftPackets = n
		case "packet-hard":
			l.HardPackets = n
		case "time-soft":
			l.SoftSeconds = n
		case "time-hard":
			l.HardSeconds = n
		}
		if !limitNames[p.peek()] {
			return nil
		}
		name, _ = p.next()
	}
}

// selector reads `sel [src PREFIX] [dst PREFIX] [proto P] [sport N]
// [dport N]`: it takes words while they belong to it.
func (p *saAdd) selector() error {
	n := len(p.ext.Selectors)
	s := oid.Selector{}
	seen := map[string]bool{}
	for {
		w := p.peek()
		switch w {
		case "src", "dst", "proto", "sport", "dport", "dev":
		default:
			p.ext.Selectors, p.hasExt = append(p.ext.Selectors, s), true
			return nil
		}
		p.next()
		word := fmt.Sprintf("sel %d %s", n, w) // numbered from 0, as the OID channel's vnic.selectors[i]
		if seen[w] {
			return fmt.Errorf("%s: given twice", word)
		}
		seen[w] = true
		switch w {
		case "src", "dst":
			v, err := p.arg(word, "a prefix like 10.0.0.0/24")
			if err != nil {
				return err
			}
			if v != "any" {
				if err := checkPrefix(v); err != nil {
					return fmt.Errorf("%s: %v", word, err)
				}
			}
			if w == "src" {
				s.Src = v
			} else {
				s.Dst = v
			}
		case "proto":
			v, err := p.arg(word, "a protocol like tcp, udp, icmp or a number")
			if err != nil {
				return err
			}
			pr, err := oid.ParseIPProto(v)
			if err != nil {
				return fmt.Errorf("%s: %v", word, err)
			}
			s.Proto = pr
		case "sport", "dport":
			v, err := p.arg(word, "a port number")
			if err != nil {
				return err
			}
			port, err := ParseNumber(v, 16)
			if err != nil {
				return fmt.Errorf("%s: expected a port number from 0 to 65535, got %s", word, QuoteWord(v))
			}
			if w == "sport" {
				s.SPort = uint16(port)
			} else {
				s.DPort = uint16(port)
			}
		case "dev":
			return fmt.Errorf("%s: not supported by vnic: selectors name addresses, protocols and ports", word)
		}
	}
}

// checkPrefix accepts a prefix like 10.0.0.0/24 or an address.
func checkPrefix(v string) error {
	if strings.Contains(v, "/") {
		if _, err := netip.ParsePrefix(v); err != nil {
			return fmt.Errorf("expected a prefix like 10.0.0.0/24, got %s", QuoteWord(v))
		}
		return nil
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("expected a prefix like 10.0.0.0/24, got %s", QuoteWord(v))
	}
	return nil
}

func (p *saAdd) pair() error {
	if err := p.once("pair"); err != nil {
		return err
	}
	v, err := p.arg("pair", "the handle of the opposite-direction SA")
	if err != nil {
		return err
	}
	h, err := ParseNumber(v, 64)
	if err != nil || h == 0 {
		return fmt.Errorf("pair: expected the handle of the opposite-direction SA, like 3, got %s", QuoteWord(v))
	}
	p.ext.Pair, p.hasExt = h, true
	return nil
}

// The kinds of algorithm each word takes, as algo.Catalogue describes
// them: `aead` a combined mode, `enc` an encryption algorithm that needs
// an integrity one, `auth` and `auth-trunc` an HMAC.
func isAEAD(a algo.Algorithm) bool { return a.Combined }
func isEnc(a algo.Algorithm) bool  { return a.Encryption != 0 && !a.Combined }
func isHMAC(a algo.Algorithm) bool { return a.Authentication != 0 && !a.Combined }

// catalogued returns the catalogue entries that the name (Linux's or ip
// xfrm's short one) stands for among those of a kind.
func catalogued(name string, kind func(algo.Algorithm) bool) []algo.Algorithm {
	var out []algo.Algorithm
	for _, a := range algo.Named(name) {
		if kind(a) {
			out = append(out, a)
		}
	}
	return out
}

// offered lists, for messages, the names of the algorithms of a kind that
// vnic offers (legacy ones are not), sorted, each once.
func offered(kind func(algo.Algorithm) bool) string {
	var names []string
	for _, a := range algo.Catalogue {
		if kind(a) && !a.Legacy && !slices.Contains(names, a.Name) {
			names = append(names, a.Name)
		}
	}
	slices.Sort(names)
	return joinOr(names)
}

// bundle assembles the SA from the words read.
func (p *saAdd) bundle() (oid.SA, error) {
	if p.dir == "" {
		return oid.SA{}, errors.New(`missing "dir in" or "dir out": vnic needs the SA's direction`)
	}
	if !p.seen["spi"] {
		return oid.SA{}, errors.New(`missing "spi SPI", like spi 0x1000`)
	}
	p.sa.Direction = p.dir
	if p.window != nil {
		if p.dir == "out" {
			// The kernel wants one on every ESN state, outbound too.
			p.notes = append(p.notes, fmt.Sprintf("replay-window %d: an outbound SA has no replay window: ignored", *p.window))
		} else {
			p.ext.ReplayWindow, p.hasExt = p.window, true
		}
	}
	sa := p.saAssoc()
	p.ext.Mode, p.hasExt = p.mode, true
	if p.encap {
		p.sa.UdpEspEncapsulation = ndis.UDPESPTunnel
		if p.mode == "transport" {
			p.sa.UdpEspEncapsulation = ndis.UDPESPTransport
		}
		p.ext.UDP.KeepaliveInterval = p.keepalive
	} else if p.keepalive != 0 {
		// Sent for the server to refuse: keepalives go in UDP.
		p.ext.UDP = &oid.UDPPorts{KeepaliveInterval: p.keepalive}
	}

	var encKey, authKey []byte
	switch {
	case p.aead != nil:
		if p.enc != nil || p.auth != nil {
			return oid.SA{}, errors.New("aead: cannot be combined with enc, auth or auth-trunc: an AEAD encrypts and authenticates")
		}
		a := p.aead
		as := catalogued(a.name, isAEAD)
		if len(as) == 0 {
			return oid.SA{}, fmt.Errorf("aead: expected %s, got %s", offered(isAEAD), QuoteWord(a.name))
		}
		alg, err := byKeyLen(a, as)
		if err != nil {
			return oid.SA{}, err
		}
		info := oid.AlgorithmInfo{KeyLength: uint32(len(a.key)), AdditionalInfo: uint32(a.bits / 8)}
		if alg.Encryption != 0 {
			info.Identifier = uint32(alg.Encryption)
			sa.EncryptionAlgorithm = info
			encKey = a.key
		} else { // AES-GMAC: integrity only
			info.Identifier = uint32(alg.Authentication)
			sa.EncryptionAlgorithm = oid.AlgorithmInfo{Identifier: uint32(ndis.EncryptionNone)}
			sa.AuthenticationAlgorithm = info
			authKey = a.key
		}
	case p.enc != nil || p.auth != nil:
		if p.enc != nil {
			id, err := encAlgorithm(p.enc)
			if err != nil {
				return oid.SA{}, err
			}
			sa.EncryptionAlgorithm = oid.AlgorithmInfo{Identifier: id, KeyLength: uint32(len(p.enc.key))}
			encKey = p.enc.key
		} else {
			sa.EncryptionAlgorithm = oid.AlgorithmInfo{Identifier: uint32(ndis.EncryptionNone)}
		}
		a := p.auth
		if a == nil {
			break // the server refuses ESP without integrity
		}
		as := catalogued(a.name, isHMAC)
		if len(as) == 0 {
			return oid.SA{}, fmt.Errorf("%s: expected %s, got %s", a.word, offered(isHMAC), QuoteWord(a.name))
		}
		alg := as[0]
		bits := a.bits
		if a.word == "auth" {
			bits = uint64(alg.XfrmAuthBits) // Linux's default for `auth`
		}
		sa.AuthenticationAlgorithm = oid.AlgorithmInfo{Identifier: uint32(alg.Authentication),
			KeyLength: uint32(len(a.key)), KeyOffsetBytes: uint32(len(encKey)), AdditionalInfo: uint32(bits / 8)}
		authKey = a.key
	default:
		return oid.SA{}, errors.New("missing an algorithm: give aead rfc4106(gcm(aes)) 0xKEYSALT 128, or enc cbc(aes) 0xKEY with auth-trunc hmac(sha256) 0xKEY 128")
	}
	if err := p.checkLastSeq(sa); err != nil {
		return oid.SA{}, err
	}
	if p.mode == "" {
		// The two vocabularies differ here: ip xfrm's default is
		// transport, the OID channel's (without vnic.mode) tunnel.
		// Neither is guessed.
		return oid.SA{}, errors.New(`missing "mode tunnel" or "mode transport": ip xfrm's default is transport, the OID channel's tunnel, so vnic takes neither without being told`)
	}
	p.sa.KeyData = append(append(oid.Key{}, encKey...), authKey...)
	p.sa.KeyLength = uint32(len(p.sa.KeyData))
	if p.hasExt {
		p.sa.Vnic = &p.ext
	}
	return p.sa, nil
}

// checkLastSeq refuses replay-oseq 4294967295, the one number whose next
// does not fit in initial_seq's 32 bits, in ip xfrm's terms: without ESN
// it is the last number an SA may send, so none would be left; with ESN
// the next one has low-order bits 0, where vnic cannot start an SA (its
// initial_seq 0 means the default, 1).
func (p *saAdd) checkLastSeq(sa *oid.SecAssoc) error {
	if p.ext.InitialSeq <= 1<<32-1 {
		return nil
	}
	const last = "replay-oseq 4294967295"
	hi := sa.SequenceNumberHighOrder
	switch {
	case sa.Flags&ndis.FlagESN == 0:
		return errors.New(last + ": the SA would have no sequence numbers left (without ESN the last one is 4294967295)")
	case hi == 1<<32-1:
		return errors.New(last + ": the SA would have no sequence numbers left (with ESN the last one is 4294967295 with replay-oseq-hi 4294967295)")
	}
	return fmt.Errorf("%s: the next number would be the first of replay-oseq-hi %d, whose low-order bits are 0, and vnic cannot start an SA there: "+
		"give replay-oseq-hi %d replay-oseq 0 to start at the number after it", last, uint64(hi)+1, uint64(hi)+1)
}

// byKeyLen picks, among the entries a's name stands for, the one its key's
// length says (AES-GCM-128, -192 and -256 share a name).
func byKeyLen(a *algWords, as []algo.Algorithm) (algo.Algorithm, error) {
	for _, alg := range as {
		if alg.KeyLen == len(a.key) {
			return alg, nil
		}
	}
	var lens, keys []string
	for _, alg := range as {
		lens = append(lens, strconv.Itoa(alg.KeyLen))
		keys = append(keys, strconv.Itoa(alg.KeyLen-alg.SaltLen))
	}
	note := ""
	if salt := as[0].SaltLen; salt > 0 {
		note = fmt.Sprintf(" (%s-byte key and %d-byte salt)", joinOr(keys), salt)
	}
	return algo.Algorithm{}, fmt.Errorf("%s %s key: expected %s bytes%s, got %d bytes", a.word, a.name, joinOr(lens), note, len(a.key))
}

// encAlgorithm returns the identifier of an `enc` algorithm.
func encAlgorithm(a *algWords) (uint32, error) {
	as := catalogued(a.name, isEnc)
	if len(as) == 0 {
		return 0, fmt.Errorf("enc: expected %s, got %s", offered(isEnc), QuoteWord(a.name))
	}
	if as[0].KeyLen == 0 {
		return uint32(as[0].Encryption), nil // a key is the server's to refuse
	}
	alg, err := byKeyLen(a, as)
	return uint32(alg.Encryption), err
}

// joinOr joins words as "a, b or c".
func joinOr(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// ParseNumber reads a decimal number, or a hex one with 0x, of at most bits
// bits.
func ParseNumber(s string, bits int) (uint64, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		return strconv.ParseUint(s[2:], 16, bits)
	}
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, bits)
}

// parseKey reads a key written as 0x and hex digits (” is the empty key).
// Its errors never quote the key.
func parseKey(word, s string) ([]byte, error) {
	if s == "" || s == "''" || s == `""` {
		return nil, nil
	}
	if len(s) < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return nil, fmt.Errorf("%s: expected 0x followed by hex digits (vnic takes no text keys)", word)
	}
	h := s[2:]
	if len(h)%2 != 0 {
		return nil, fmt.Errorf("%s: expected an even number of hex digits after 0x, got %d digits", word, len(h))
	}
	k := make([]byte, len(h)/2)
	for i := 0; i < len(h); i += 2 {
		hi, ok1 := unhex(h[i])
		lo, ok2 := unhex(h[i+1])
		if !ok1 || !ok2 {
			pos := i + 1
			if ok1 {
				pos++
			}
			return nil, fmt.Errorf("%s: expected 0x followed by hex digits; character %d after 0x is not one", word, pos)
		}
		k[i/2] = hi<<4 | lo
	}
	return k, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// echoWord returns a word to repeat back in a list of words as given: as
// it is when it is short and plain, else as QuoteWord words it.
func echoWord(s string) string {
	if len(s) <= 40 && !oid.LooksLikeKey(s) && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r > '~' }) {
		return s
	}
	return QuoteWord(s)
}

// QuoteWord quotes a word in an error, shortened; a word holding a run of 16
// or more hex digits, which may be a key in the wrong place, is described
// and not shown.
func QuoteWord(s string) string {
	if oid.LooksLikeKey(s) {
		return fmt.Sprintf("a word of %d characters (not shown: it may hold a key)", len(s))
	}
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return strconv.Quote(s)
}
