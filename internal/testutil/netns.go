package testutil

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnterNetns moves the test's goroutine, locked to its thread, into a new
// network namespace with its loopback up, and returns the loopback. The
// thread is never unlocked: it dies with the goroutine, and the namespace
// with it, leaving nothing behind and no other test inside. Without root
// it skips the test (or fails it, with VNIC_REQUIRE_ROOT_TESTS=1).
func EnterNetns(t *testing.T) netlink.Link {
	t.Helper()
	NeedRoot(t, "a network namespace of its own")
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return lo
}
