package metrics

import (
	"net"
	"strconv"
	"testing"
)

// FuzzParseAddr: any -metrics value is refused or becomes a host and a
// port from 1 to 65535 that net.SplitHostPort reads back, a bare port
// on loopback.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"9477", ":9477", "0.0.0.0:9477", "[::1]:9477", "localhost:1", "::1", "0", "65536", "", "a:b", "[::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, err := ParseAddr(s)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("ParseAddr(%q) = %q, which does not split: %v", s, addr, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			t.Fatalf("ParseAddr(%q) = %q: port %q", s, addr, port)
		}
		if _, err := strconv.Atoi(s); err == nil && host != DefaultHost {
			t.Fatalf("ParseAddr(%q) = %q: a bare port not on %s", s, addr, DefaultHost)
		}
	})
}
