package sadb

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"vnic/algo"
	"vnic/ndis"
)

// fakeCipher is a cheap algo.Cipher for tests that do not encrypt.
type fakeCipher struct {
	key   []byte
	wiped atomic.Bool
}

func (f *fakeCipher) Name() string                         { return "fake" }
func (f *fakeCipher) IVLen() int                           { return 8 }
func (f *fakeCipher) ICVLen() int                          { return 16 }
func (f *fakeCipher) Align() int                           { return 4 }
func (f *fakeCipher) Seal(pkt []byte, esp int, seq uint64) {}
func (f *fakeCipher) Open(pkt []byte, esp int, seq uint64) error {
	return nil
}
func (f *fakeCipher) Wipe() { clear(f.key); f.wiped.Store(true) }

// fakeNew is a stand-in for algo.New: any non-empty encryption key works.
func fakeNew(s algo.Spec) (algo.Cipher, error) {
	if len(s.EncryptionKey) == 0 {
		return nil, ndis.Errorf(ndis.StatusInvalidParameter, "fake: no key")
	}
	return &fakeCipher{key: bytes.Clone(s.EncryptionKey)}, nil
}

// withFakeCipher makes Add build fake ciphers until the test ends.
func withFakeCipher(tb testing.TB) {
	old := newCipher
	newCipher = fakeNew
	tb.Cleanup(func() { newCipher = old })
}

// gcm128 is a valid AES-GCM-128 spec: 16-byte key and 4-byte salt.
func gcm128() algo.Spec {
	return algo.Spec{
		Encryption:    ndis.EncryptionAESGCM128,
		EncryptionKey: bytes.Repeat([]byte{0x42}, 20),
	}
}

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func pfx(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s)
}

// outCfg is an outbound tunnel SA to dst with the given selectors.
func outCfg(spi uint32, dst string, sels ...Selector) Config {
	return Config{
		Direction: Outbound, Mode: Tunnel, Proto: ndis.OperationESP,
		Src: addr(""), Dst: addr(dst), SPI: spi, Algo: gcm128(), Selectors: sels,
	}
}

// inCfg is an inbound tunnel SA for (spi, dst); dst "" is the wildcard.
func inCfg(spi uint32, dst string) Config {
	return Config{
		Direction: Inbound, Mode: Tunnel, Proto: ndis.OperationESP,
		Dst: addr(dst), SPI: spi, Algo: gcm128(), ReplayWindow: 64,
	}
}

// mustAdd adds cfgs and fails the test unless every element succeeds.
func mustAdd(tb testing.TB, t *Table, cfgs ...Config) []Handle {
	tb.Helper()
	res, st := t.Add(cfgs)
	if st != ndis.StatusSuccess {
		tb.Fatalf("Add: status %v", st)
	}
	hs := make([]Handle, len(res))
	for i, r := range res {
		if r.Err != nil || r.Handle == 0 {
			tb.Fatalf("Add element %d: handle %d, %v", i, r.Handle, r.Err)
		}
		hs[i] = r.Handle
	}
	return hs
}

// wantErr fails unless err is an *ndis.Error with status st whose reason
// contains every one of subs.
func wantErr(tb testing.TB, err error, st ndis.Status, subs ...string) {
	tb.Helper()
	var e *ndis.Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T) is not an *ndis.Error", err, err)
	}
	if e.Status != st {
		tb.Errorf("status %v, want %v (reason %q)", e.Status, st, e.Reason)
	}
	for _, s := range subs {
		if !strings.Contains(e.Error(), s) {
			tb.Errorf("error %q does not contain %q", e.Error(), s)
		}
	}
}
