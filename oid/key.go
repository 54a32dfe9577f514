package oid

import (
	"encoding/hex"
	"fmt"

	"vnic/ndis"
)

// Key is key material: KeyData in an SA bundle. In JSON it is a string of
// hex digits (an optional "0x" prefix is accepted); printed with fmt in any
// verb it shows only its length, "[redacted N bits]", so that it cannot end
// up in a log or an error by accident.
type Key []byte

// Redacted describes a key of n bytes without showing it.
func Redacted(n int) string { return fmt.Sprintf("[redacted %d bits]", n*8) }

// Format prints the key redacted, whatever the verb.
func (k Key) Format(f fmt.State, verb rune) { fmt.Fprint(f, Redacted(len(k))) }

// MarshalJSON writes the key as a hex string.
func (k Key) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2*len(k)+2)
	b = append(b, '"')
	b = hex.AppendEncode(b, k)
	return append(b, '"'), nil
}

// UnmarshalJSON reads a hex string. Its errors never quote the input; they
// carry NDIS_STATUS_INVALID_DATA.
func (k *Key) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*k = nil
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return ndis.Errorf(ndis.StatusInvalidData, "KeyData: expected a string of hex digits")
	}
	s := b[1 : len(b)-1]
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	if len(s)%2 != 0 {
		return ndis.Errorf(ndis.StatusInvalidData, "KeyData: expected an even number of hex digits, got %d digits", len(s))
	}
	for i, c := range s {
		if !isHex(c) {
			return ndis.Errorf(ndis.StatusInvalidData, "KeyData: character %d is not a hex digit", i+1)
		}
	}
	out := make(Key, len(s)/2)
	if _, err := hex.Decode(out, s); err != nil { // not reached: checked above
		return ndis.Errorf(ndis.StatusInvalidData, "KeyData: expected hex digits")
	}
	*k = out
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Wipe overwrites the key with zeros.
func (k Key) Wipe() { clear(k) }
