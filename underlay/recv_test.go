package underlay

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// groCmsg builds a UDP_GRO control message carrying size.
func groCmsg(level, typ int32, size uint32) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafePointer(b))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], size)
	return b
}

// FuzzGROSize reads arbitrary control-message bytes: no panic, and a size
// only when a whole UDP_GRO message holds it.
func FuzzGROSize(f *testing.F) {
	f.Add(groCmsg(unix.SOL_UDP, unix.UDP_GRO, 1400))
	f.Add(append(groCmsg(unix.SOL_IP, unix.IP_TTL, 64), groCmsg(unix.SOL_UDP, unix.UDP_GRO, 9000)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, oob []byte) {
		n := groSize(oob)
		if n != 0 && len(oob) < unix.CmsgLen(4) {
			t.Fatalf("size %d from %d bytes, less than one UDP_GRO message", n, len(oob))
		}
	})
}
