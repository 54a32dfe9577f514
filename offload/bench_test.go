package offload

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net/netip"
	"testing"

	"vnic/header"
	"vnic/sadb"
)

var benchSizes = []int{64, 512, 1400, 8192}

// benchRing is how many distinct packets the receive benchmarks cycle
// through: the replay window accepts each sequence number once.
const benchRing = 4096

// BenchmarkEncapsulate measures the engine's per-packet outbound work
// (tunnel mode, IPv4 in IPv4, raw ESP, AES-GCM-128); compare it with
// BenchmarkRawAEADSeal at the same size.
func BenchmarkEncapsulate(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			benchEncapsulate(b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x1000, Algo: gcm128()}, n)
		})
	}
}

// BenchmarkEncapsulateOuter measures Encapsulate at 1400 bytes for each
// outer header: IPv4 and IPv6, raw ESP and ESP-in-UDP (tunnel mode,
// AES-GCM-128). The outer header is fields for the underlay, so the
// family and the encapsulation should cost the same.
func BenchmarkEncapsulateOuter(b *testing.B) {
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
		udp      bool
	}{{"v4-raw", v4a, v4b, false}, {"v4-udp", v4a, v4b, true}, {"v6-raw", v6a, v6b, false}, {"v6-udp", v6a, v6b, true}} {
		b.Run(c.name, func(b *testing.B) {
			benchEncapsulate(b, sadb.Config{Mode: sadb.Tunnel, Src: c.src, Dst: c.dst, SPI: 0x1000, Algo: gcm128(),
				Encap: sadb.Encap{UDP: c.udp}}, 1400)
		})
	}
}

// benchEncapsulate measures Encapsulate of an n-byte IPv4 UDP packet with
// an outbound SA of cfg.
func benchEncapsulate(b *testing.B, cfg sadb.Config, n int) {
	out, _ := pair(b, cfg)
	buf := make([]byte, Headroom+n+Tailroom)
	end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, n-28)
	plain := append([]byte(nil), buf[Headroom:end]...)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		// Only the header must be plaintext again: re-encrypting
		// ciphertext costs the same as encrypting plaintext.
		copy(buf[Headroom:], plain[:28])
		if _, _, err := Encapsulate(out, buf, Headroom, end); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecapsulate measures the engine's per-packet inbound work
// (parse, replay check, open, window update, trailer and selector checks)
// on ESP bytes as the underlay delivers them; compare it with
// BenchmarkRawAEADOpen at the same size.
func BenchmarkDecapsulate(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x1000, Algo: gcm128(), ReplayWindow: 1024}
			out, in := pair(b, cfg)
			// Encrypt a ring of packets ahead of time, and start a fresh
			// inbound SA (untimed) each time round the ring.
			wires := make([][]byte, benchRing)
			var o header.Outer
			for i := range wires {
				buf := make([]byte, Headroom+n+Tailroom)
				end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, n-28)
				j, _, err := Encapsulate(out, buf, Headroom, end)
				if err != nil {
					b.Fatal(err)
				}
				wires[i], o = buf[j.Start:j.End], j.Outer
			}
			buf := make([]byte, Headroom+n+Tailroom+64)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == benchRing {
					b.StopTimer()
					_, in = pair(b, cfg)
					i = 0
					b.StartTimer()
				}
				w := wires[i]
				copy(buf[Headroom:], w)
				h, _, err := Parse(buf, Headroom, Headroom+len(w), &o)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Decapsulate(in, &h, buf[:Headroom+len(w)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func rawGCM(b *testing.B) cipher.AEAD {
	k := gcm128().EncryptionKey
	blk, _ := aes.NewCipher(k[:16])
	a, err := cipher.NewGCM(blk)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkRawAEADSeal is AES-GCM-128 Seal of the same number of bytes,
// in place: the floor under BenchmarkEncapsulate.
func BenchmarkRawAEADSeal(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a := rawGCM(b)
			buf := make([]byte, n+16)
			nonce, aad := make([]byte, 12), make([]byte, 8)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				a.Seal(buf[:0], nonce, buf[:n], aad)
			}
		})
	}
}

// BenchmarkRawAEADOpen is AES-GCM-128 Open of the same number of bytes,
// copied into place from a ring as cold in cache as BenchmarkDecapsulate's:
// the floor under BenchmarkDecapsulate.
func BenchmarkRawAEADOpen(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a := rawGCM(b)
			nonce, aad := make([]byte, 12), make([]byte, 8)
			wires := make([][]byte, benchRing)
			for i := range wires {
				wires[i] = a.Seal(nil, nonce, make([]byte, n), aad)
			}
			buf := make([]byte, n+16)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				copy(buf, wires[i%benchRing])
				if _, err := a.Open(buf[:0], nonce, buf, aad); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
