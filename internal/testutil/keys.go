package testutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// KnownKey returns n bytes of key named by label: SHA-256 of the label
// and a counter, the same in every run and distinctive enough that
// finding them in a program's output means it leaked them. A label's
// shorter key is a prefix of its longer ones.
func KnownKey(label string, n int) []byte {
	var k []byte
	for i := 0; len(k) < n; i++ {
		s := sha256.Sum256(fmt.Appendf(nil, "vnic test key %s %d", label, i))
		k = append(k, s[:]...)
	}
	return k[:n]
}

// KeyForm is one way in which a key can show in text.
type KeyForm struct {
	Name string // like "hex first 8"
	Text []byte
}

// KeyForms returns the forms in which key would show in text that leaked
// it: raw; hex in either case, whole, its first 8 bytes and its last 8;
// base64 (standard, of its first 12 bytes, and URL); and its first 8
// bytes as Go prints a byte slice. An empty key has none.
func KeyForms(key []byte) []KeyForm {
	if len(key) == 0 {
		return nil
	}
	head, tail := key[:min(8, len(key))], key[max(0, len(key)-8):]
	text := fmt.Sprint(head)
	return []KeyForm{
		{"raw", key},
		{"hex", []byte(hex.EncodeToString(key))},
		{"HEX", []byte(strings.ToUpper(hex.EncodeToString(key)))},
		{"hex first 8", []byte(hex.EncodeToString(head))},
		{"HEX first 8", []byte(strings.ToUpper(hex.EncodeToString(head)))},
		{"hex last 8", []byte(hex.EncodeToString(tail))},
		{"base64", []byte(base64.StdEncoding.EncodeToString(key))},
		{"base64 first", []byte(base64.RawStdEncoding.EncodeToString(key[:min(12, len(key))]))},
		{"base64url", []byte(base64.RawURLEncoding.EncodeToString(key))},
		{"bytes as text", []byte(text[1 : len(text)-1])},
	}
}

// ContainsKey reports whether text holds key in one of its KeyForms, the
// hex ones in any mix of cases.
func ContainsKey(text, key []byte) bool {
	lower := bytes.ToLower(text)
	for _, f := range KeyForms(key) {
		if bytes.Contains(text, f.Text) {
			return true
		}
		if strings.EqualFold(f.Name[:3], "hex") && bytes.Contains(lower, bytes.ToLower(f.Text)) {
			return true
		}
	}
	return false
}

// keyPlaceholder is a key in `vnic sa add` words: 0xKEYn stands for n
// bytes.
var keyPlaceholder = regexp.MustCompile(`0xKEY(\d+)`)

// FillKeys replaces each placeholder 0xKEYn in line, n a number of bytes,
// with 0x and the hex digits of key(n).
func FillKeys(line string, key func(n int) []byte) string {
	return keyPlaceholder.ReplaceAllStringFunc(line, func(m string) string {
		n, _ := strconv.Atoi(m[len("0xKEY"):])
		return "0x" + hex.EncodeToString(key(n))
	})
}

// Words splits a line of command words at blanks, as a shell would for
// the plain lines tests write: a word of two single quotes is the empty
// word.
func Words(line string) []string {
	var out []string
	for _, w := range strings.Fields(line) {
		if w == "''" {
			w = ""
		}
		out = append(out, w)
	}
	return out
}
