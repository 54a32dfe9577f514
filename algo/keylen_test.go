package algo

import (
	"strings"
	"testing"
)

func TestKeyLen(t *testing.T) {
	tests := []struct {
		name string
		bits int
		want int
		err  string
	}{
		{"rfc4106(gcm(aes))", 0, 20, ""},
		{"rfc4106(gcm(aes))", 128, 20, ""},
		{"rfc4106(gcm(aes))", 192, 28, ""},
		{"rfc4106(gcm(aes))", 256, 36, ""},
		{"rfc4106(gcm(aes))", 64, 0, "rfc4106(gcm(aes)): key sizes are 128, 192, 256 bits, got 64"},
		{"rfc4543(gcm(aes))", 256, 36, ""},
		{"rfc7539esp(chacha20,poly1305)", 0, 36, ""},
		{"cbc(aes)", 0, 16, ""},
		{"aes", 256, 32, ""},
		{"hmac(sha256)", 0, 32, ""},
		{"sha512", 512, 64, ""},
		{"hmac(sha1)", 128, 0, "hmac(sha1): keys are 160 bits (its digest's length), got 128"},
		{"ecb(cipher_null)", 0, 0, "ecb(cipher_null) takes no key"},
		{"cbc(des3_ede)", 0, 0, "cbc(des3_ede) is a legacy algorithm"},
		{"twofish", 0, 0, `unknown algorithm "twofish": expected rfc4106(gcm(aes)), cbc(aes), rfc7539esp(chacha20,poly1305), hmac(sha1), hmac(sha256), rfc4543(gcm(aes)), hmac(sha384), hmac(sha512)`},
	}
	for _, tt := range tests {
		got, err := KeyLen(tt.name, tt.bits)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("KeyLen(%q, %d) = %d, %v; want %d, %q", tt.name, tt.bits, got, err, tt.want, tt.err)
		}
	}
}
