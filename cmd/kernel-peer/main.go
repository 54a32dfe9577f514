// Command kernel-peer boots the Linux kernel's own IPsec as a peer to test
// vnic (or anything else that speaks ESP) against: Debian's kernel under
// qemu, its network card a tap device in a network namespace you made,
// its console a root shell on this terminal where `ip xfrm` works.
//
//	ip netns add kp && ip -n kp link set lo up
//	kernel-peer -netns kp -host-addr 192.168.78.1/24 -guest-addr 192.168.78.2/24
//
// The first run builds the VM's image from Debian packages (downloaded and
// unpacked, never installed) into a cache folder; later runs boot in
// seconds. See docs/kernel-peer.md.
//
// The same binary is the agent inside the guest (its guest-* commands).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	osexec "os/exec"
	"os/signal"
	"syscall"

	"vnic/internal/kernelpeer"
)

func main() {
	if handled, code := kernelpeer.AgentMain(os.Args[1:]); handled {
		os.Exit(code)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kernel-peer:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("kernel-peer", flag.ContinueOnError)
	netns := fs.String("netns", "", "network namespace (it must exist) in which to create the tap device and run qemu")
	tap := fs.String("tap", "kp0", "name of the tap device, the guest's eth0")
	hostAddr := fs.String("host-addr", "", "address with prefix length to give the tap device in the namespace (optional)")
	guestAddr := fs.String("guest-addr", "", "address with prefix length to give the guest's eth0 (optional)")
	cache := fs.String("cache", kernelpeer.DefaultCacheDir(), "folder that keeps the prepared image")
	prepare := fs.Bool("prepare", false, "only build the image (if needed) and print its folder")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kernel-peer -netns NS [flags]\n\nBoots Debian's kernel under qemu as an IPsec peer, with a root shell on this terminal.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	img, err := kernelpeer.Prepare(ctx, kernelpeer.PrepareOptions{CacheDir: *cache, Log: os.Stderr})
	if err != nil {
		return err
	}
	if *prepare {
		fmt.Println(img.Dir)
		return nil
	}
	if *netns == "" {
		return fmt.Errorf("give -netns: the namespace in which the peer's tap device lives")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	vm, err := kernelpeer.Boot(ctx, kernelpeer.Config{Image: img, Agent: self, Netns: *netns, Tap: *tap,
		Console: os.Stdout, Shell: true, Stdin: os.Stdin})
	if err != nil {
		return err
	}
	defer vm.Close()
	if *hostAddr != "" {
		if out, err := exec("ip", "-n", *netns, "addr", "add", *hostAddr, "dev", *tap); err != nil {
			return fmt.Errorf("host address: %v: %s", err, out)
		}
	}
	if *guestAddr != "" {
		p, err := netip.ParsePrefix(*guestAddr)
		if err != nil {
			return fmt.Errorf("-guest-addr: %w", err)
		}
		if r, err := vm.Run(ctx, "ip addr add "+p.String()+" dev eth0 nodad", 0); err != nil || r.Code != 0 {
			return fmt.Errorf("guest address: %v %s", err, r.Out)
		}
	}
	done := make(chan error, 1)
	go func() { done <- vm.Wait() }()
	select {
	case <-ctx.Done():
	case <-done:
	}
	return nil
}

// exec runs a host command and returns its output.
func exec(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
