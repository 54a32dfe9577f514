package testutil

import (
	"fmt"
	"os"
	"testing"
)

// Unavailable skips t because something it needs is missing (root, a
// program, an oracle), saying what, or fails it when
// VNIC_REQUIRE_ROOT_TESTS=1, as in CI, where nothing that should run may
// pass by skipping.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("VNIC_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatalf("%s, and VNIC_REQUIRE_ROOT_TESTS=1 forbids skipping", msg)
	}
	t.Skipf("%s (set VNIC_REQUIRE_ROOT_TESTS=1 to fail instead of skipping)", msg)
}

// NeedRoot calls Unavailable unless the test runs as root; why says what
// for.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root: %s", why)
	}
}
