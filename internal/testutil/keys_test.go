package testutil

import (
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

func TestFillKeysWords(t *testing.T) {
	key := func(n int) []byte { return KnownKey("t", n) }
	got := Words(FillKeys("enc ecb(cipher_null) '' auth hmac(sha1) 0xKEY20 96 x 0xKEY4", key))
	want := []string{"enc", "ecb(cipher_null)", "", "auth", "hmac(sha1)", "0x" + hex.EncodeToString(key(20)), "96", "x", "0x" + hex.EncodeToString(key(4))}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestKnownKey(t *testing.T) {
	long, short := KnownKey("a", 64), KnownKey("a", 20)
	if len(long) != 64 || len(short) != 20 || !slices.Equal(long[:20], short) {
		t.Errorf("KnownKey lengths or prefix: %x %x", long, short)
	}
	if slices.Equal(KnownKey("b", 20), short) {
		t.Error("two labels, one key")
	}
}

func TestContainsKey(t *testing.T) {
	k := KnownKey("leak", 20)
	for _, text := range []string{
		"key=" + strings.ToUpper(hex.EncodeToString(k)),
		"prefix " + hex.EncodeToString(k[:8]) + "...",
		base64.StdEncoding.EncodeToString(k),
		"raw " + string(k),
		"mixed " + strings.ToUpper(hex.EncodeToString(k)[:10]) + hex.EncodeToString(k)[10:],
	} {
		if !ContainsKey([]byte(text), k) {
			t.Errorf("ContainsKey(%q) = false", text)
		}
	}
	if ContainsKey([]byte("[redacted 160 bits] "+hex.EncodeToString(KnownKey("other", 20))), k) {
		t.Error("ContainsKey finds a key that is not there")
	}
	if ContainsKey([]byte("anything"), nil) {
		t.Error("ContainsKey finds an empty key")
	}
}
