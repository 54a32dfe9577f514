package sadb

import (
	"net/netip"
	"testing"
	"time"

	"vnic/ndis"
)

// fuzzReader hands out the fuzzer's bytes, zeros once they run out.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fuzzReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }

// spi returns an SPI from 250 to 265: six reserved ones (below 256), ten
// valid ones. The sum is taken in 32 bits: in 8 bits 250+6 wraps to 0,
// and every SPI would be reserved, so that no SA was ever added.
func (r *fuzzReader) spi() uint32 { return 250 + uint32(r.u8()%16) }

func (r *fuzzReader) addr() netip.Addr {
	switch r.u8() % 6 {
	case 0:
		return netip.Addr{}
	case 1:
		return netip.AddrFrom4([4]byte{10, 0, r.u8() % 4, r.u8() % 4})
	case 2:
		return netip.AddrFrom4([4]byte{r.u8(), r.u8(), r.u8(), r.u8()})
	case 3:
		return netip.AddrFrom16([16]byte{0x20, 0x01, 15: r.u8() % 4})
	case 4:
		return netip.MustParseAddr("fe80::1%eth0")
	default:
		return netip.MustParseAddr("::ffff:10.0.0.1")
	}
}

func (r *fuzzReader) prefix() netip.Prefix {
	a := r.addr()
	bits := int(r.u8()%140) - 4
	if r.u8()%2 == 0 && a.IsValid() {
		p, _ := a.Prefix(min(max(bits, 0), a.BitLen()))
		return p
	}
	return netip.PrefixFrom(a, bits) // possibly unmasked or invalid
}

// FuzzTable drives a table with operations decoded from the input (see
// fuzzReader and the cases below) and checks that nothing panics, that
// every Add element gets a handle or an error, that the lookups agree with
// the brute-force reference, and that checkFuzzTable holds after every
// operation. Seeds: testdata/fuzz/FuzzTable.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 1, 1, 2, 3, 0, 0, 4, 4, 1, 2, 3, 4})
	f.Add([]byte("\x00\x00\x00\x01\x01\x01\x05\x00\x00\x00\x04\x00\x00\x01\x01\x02\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		withFakeCipher(t)
		r := &fuzzReader{data}
		tab := New(TableConfig{Capacity: int(r.u8() % 16)})
		for len(r.b) > 0 {
			switch r.u8() % 6 {
			case 0:
				var cfgs []Config
				for n := r.u8() % 4; n > 0; n-- {
					c := Config{
						Direction: Direction(r.u8() % 3), Mode: Mode(r.u8() % 3),
						Src: r.addr(), Dst: r.addr(), SPI: r.spi(),
						Encap: Encap{UDP: r.u8()%2 == 0, SrcPort: r.u16() % 3, DstPort: r.u16() % 3},
						Algo:  gcm128(), SeqHigh: uint32(r.u8() % 3), ReplayWindow: []int{0, 16, 32, 64, -1}[r.u8()%5],
						InitialSeq: uint64(r.u8()%3) << (r.u8() % 40), Pair: Handle(r.u8() % 12),
						Proto:    []ndis.Operation{0, 1, 2, 3}[r.u8()%4],
						Lifetime: Lifetime{SoftBytes: uint64(r.u8()), HardBytes: uint64(r.u8()), SoftAdd: time.Duration(int8(r.u8()))},
					}
					c.Algo.ESN = r.u8()%2 == 0
					for k := r.u8() % 3; k > 0; k-- {
						c.Selectors = append(c.Selectors, Selector{Src: r.prefix(), Dst: r.prefix(),
							Proto: []uint8{0, 1, 6, 17}[r.u8()%4], SrcPort: r.u16() % 3, DstPort: r.u16() % 3})
					}
					cfgs = append(cfgs, c)
				}
				res, _ := tab.Add(cfgs)
				if len(res) != len(cfgs) {
					t.Fatalf("%d results for %d elements", len(res), len(cfgs))
				}
				for _, x := range res {
					if (x.Handle == 0) == (x.Err == nil) {
						t.Fatalf("result %+v: a handle xor an error expected", x)
					}
				}
			case 1:
				tab.Delete([]Handle{Handle(r.u8() % 12), Handle(r.u8() % 12)})
			case 2:
				_ = tab.UpdateESN(Handle(r.u8()%12), r.spi(), uint32(r.u8()%4))
			case 3:
				spi, dst := r.spi(), r.addr()
				// A hard-expired SA is still found (its packets are
				// counted as XfrmInStateExpired); a deleted one never.
				if sa := tab.LookupInbound(spi, dst); sa != nil && (sa.Config.SPI != spi || sa.Config.Direction != Inbound || sa.dead.Load()) {
					t.Fatalf("LookupInbound(%d, %v) = SA %d with SPI %d, deleted %v", spi, dst, sa.Handle, sa.Config.SPI, sa.dead.Load())
				}
			case 4:
				f := Flow{Src: r.addr(), Dst: r.addr(), Proto: []uint8{0, 1, 6, 17}[r.u8()%4], SrcPort: r.u16() % 3, DstPort: r.u16() % 3}
				if got, want := tab.LookupOutbound(f), refLookup(tab, f); got != want {
					t.Fatalf("LookupOutbound(%+v) = %v, reference %v", f, handleOf(got), handleOf(want))
				}
			case 5: // an SA's state changes as the data path would change it
				if sa := tab.Get(Handle(r.u8() % 12)); sa != nil {
					switch r.u8() % 4 {
					case 0:
						sa.SoftExpired.Store(true)
					case 1:
						sa.HardExpired.Store(true)
					case 2:
						sa.DeleteRequested.Store(true)
					case 3:
						if sa.Out != nil {
							for n := r.u8(); n > 0; n-- {
								sa.Out.Next()
							}
						}
					}
				}
			}
			checkFuzzTable(t, tab)
		}
	})
}

// checkFuzzTable fails t unless the table's invariants hold (see Table.Check).
func checkFuzzTable(t *testing.T, tab *Table) {
	t.Helper()
	if err := tab.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestFuzzReaderSPI keeps FuzzTable from going vacuous again: its SPIs
// once summed in 8 bits, all came out reserved (below 256), and no input
// ever added an SA. Every SPI from 250 to 265 must be reachable.
func TestFuzzReaderSPI(t *testing.T) {
	seen := map[uint32]bool{}
	for b := range 256 {
		seen[(&fuzzReader{[]byte{byte(b)}}).spi()] = true
	}
	for spi := uint32(250); spi <= 265; spi++ {
		if !seen[spi] {
			t.Errorf("fuzzReader.spi never returns %d", spi)
		}
	}
	if len(seen) != 16 {
		t.Errorf("fuzzReader.spi returns %d distinct SPIs, want 16", len(seen))
	}
}
