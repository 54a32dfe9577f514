package header

import (
	"testing"

	"vnic/internal/packettest"
)

func BenchmarkOuterEncode(b *testing.B) {
	const espLen = 1400
	for _, bb := range []struct {
		name string
		o    Outer
	}{
		{"v4-raw", Outer{Src: packettest.V4A, Dst: packettest.V4B, TOS: 0xb8, DF: true, ID: 1}},
		{"v4-udp", Outer{Src: packettest.V4A, Dst: packettest.V4B, UDP: true, SrcPort: 4500, DstPort: 4500, DF: true}},
		{"v6-raw", Outer{Src: packettest.V6A, Dst: packettest.V6B, TOS: 0xb8, FlowLabel: 0x12345}},
		{"v6-udp", Outer{Src: packettest.V6A, Dst: packettest.V6B, UDP: true, SrcPort: 4500, DstPort: 4500}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			const esp = 64
			buf := make([]byte, esp+espLen)
			copy(buf[esp:], espPayload(espLen))
			o := bb.o
			b.SetBytes(espLen)
			b.ReportAllocs()
			for b.Loop() {
				o.Encode(buf, esp, len(buf))
			}
		})
	}
}
