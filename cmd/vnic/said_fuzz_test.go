package main

import (
	"strings"
	"testing"
)

// FuzzParseSAID: any words after sa del or sa show are refused with a
// usage error, or name an SA by a valid destination and an SPI, with a
// direction only of in or out.
func FuzzParseSAID(f *testing.F) {
	for _, s := range []string{"dst 192.0.2.2 spi 0x1000", "src 2001:db8::1 dst 2001:db8::2 proto esp spi 7 dir in",
		"dst 192.0.2.2", "spi 1 spi 2", "dst", "dir sideways dst 1.2.3.4 spi 1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		id, err := parseSAID("sa del", strings.Fields(line))
		if err != nil {
			if _, ok := err.(*errUsage); !ok {
				t.Fatalf("parseSAID(%q): %T %v, want a usage error", line, err, err)
			}
			return
		}
		if !id.dst.IsValid() || id.dst.Is4In6() || id.src.Is4In6() || (id.dir != "" && id.dir != "in" && id.dir != "out") {
			t.Fatalf("parseSAID(%q) = %+v", line, id)
		}
	})
}
