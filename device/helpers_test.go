package device

import (
	"io"
	"log/slog"
	"net/netip"

	"vnic/internal/packettest"
)

// quiet is a logger that writes nothing.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// The shared addresses and packets (internal/packettest).
var (
	gcm128    = packettest.GCM128
	allSpecs  = packettest.Specs
	udpPacket = packettest.UDPPacket

	v4a, v4b = packettest.V4A, packettest.V4B
	v6a, v6b = packettest.V6A, packettest.V6B
	in4a     = packettest.In4A
	in4b     = packettest.In4B
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
