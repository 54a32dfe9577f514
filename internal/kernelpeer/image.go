// Package kernelpeer runs the Linux kernel's own IPsec (XFRM) as a test
// peer: Debian's kernel, booted under qemu (TCG, no KVM) with a busybox
// userland, on a tap device in a network namespace of the caller's, with
// a command channel on a serial port that does not depend on the network.
//
// Prepare builds the VM's image once from Debian packages that it only
// downloads and unpacks (the kernel and busybox; nothing is installed)
// and keeps it in a cache outside the repository; Boot starts a VM from
// it; VM.Run runs a shell command in the guest and returns its output and
// exit status. The guest side of the channel, and the helpers a peer
// needs (a UDP socket with the kernel's ESP-in-UDP decapsulation, frame
// capture and injection), are this package's Agent, built into the
// binary the caller names.
package kernelpeer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Image is a prepared VM image: a kernel and the base initramfs.
type Image struct {
	// Dir holds the image's files.
	Dir string
	// Kernel is the kernel to boot, Initrd the gzip'd cpio it unpacks.
	Kernel, Initrd string
	// Release is the kernel's release (uname -r), Package the Debian
	// package it came from.
	Release, Package string
}

// PrepareOptions tune Prepare.
type PrepareOptions struct {
	// CacheDir keeps prepared images (DefaultCacheDir when empty).
	CacheDir string
	// Log receives progress lines (nothing when nil).
	Log io.Writer
}

// DefaultCacheDir is where prepared images are kept: $VNIC_KERNEL_PEER_CACHE,
// or vnic/kernel-peer under the user's cache folder.
func DefaultCacheDir() string {
	if d := os.Getenv("VNIC_KERNEL_PEER_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "vnic", "kernel-peer")
}

// HostTools are the host programs copied into the guest, with the shared
// libraries they use, and the Debian packages they come from.
var HostTools = map[string]string{
	"bash":    "bash",
	"ip":      "iproute2",
	"tc":      "iproute2",
	"ping":    "iputils-ping",
	"iperf3":  "iperf3",
	"tcpdump": "tcpdump",
}

// imageFormat names what an image holds: a change to moduleRoots,
// HostTools or init.sh takes a new one, and the cache builds it anew.
const imageFormat = "v3"

// moduleRoots are the kernel modules the guest needs, as paths under
// kernel/ (a folder stands for every module in it): ESP and AH for both
// families, xfrm_user, every crypto template and cipher (the kernel loads
// algorithms on demand), the default RNG the IV generators need, and
// virtio for the network card.
var moduleRoots = []string{
	"crypto", "arch/x86/crypto", "lib/crypto", "net/xfrm",
	"net/ipv4/esp4.ko", "net/ipv4/esp4_offload.ko", "net/ipv4/ah4.ko", "net/ipv4/ipcomp.ko", "net/ipv4/xfrm4_tunnel.ko",
	"net/ipv6/esp6.ko", "net/ipv6/esp6_offload.ko", "net/ipv6/ah6.ko", "net/ipv6/ipcomp6.ko", "net/ipv6/xfrm6_tunnel.ko",
	"drivers/virtio/virtio_pci.ko", "drivers/net/virtio_net.ko",
}

// Prepare returns the image for the kernel Debian's linux-image-amd64
// currently depends on, building it on first use: it downloads that
// kernel's package and busybox-static with apt-get download, unpacks them
// with dpkg-deb, and writes an initramfs with busybox, the kernel modules
// a peer needs and HostTools. It needs root, apt and Debian's package
// lists (apt-get update).
func Prepare(ctx context.Context, opts PrepareOptions) (*Image, error) {
	cache := opts.CacheDir
	if cache == "" {
		cache = DefaultCacheDir()
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "kernel peer: "+format+"\n", args...)
		}
	}
	pkg, err := kernelPackage(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("kernel peer: cache folder: %w", err)
	}
	// One builder at a time (test binaries may start together).
	lock, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel peer: lock the cache: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("kernel peer: lock the cache: %w", err)
	}
	dir := filepath.Join(cache, pkg+"-"+imageFormat)
	if img, err := readImage(dir); err == nil {
		return img, nil
	}
	logf("building the image for %s in %s (once)", pkg, dir)
	img, err := build(ctx, pkg, cache, dir, logf)
	if err != nil {
		return nil, fmt.Errorf("kernel peer: %w", err)
	}
	logf("image ready: %s", img.Dir)
	return img, nil
}

// kernelPackage returns the concrete kernel package linux-image-amd64
// depends on, as apt sees it.
func kernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kernel peer: apt-cache depends linux-image-amd64: %w: %s", err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-amd64)`).FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("kernel peer: apt knows no linux-image-amd64 (run apt-get update): %s", bytes.TrimSpace(out))
	}
	return string(m[1]), nil
}

// readImage returns the image in dir if it is complete.
func readImage(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return nil, err
	}
	img := &Image{Dir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "base.cpio.gz"),
		Release: strings.TrimSpace(string(b)), Package: strings.TrimSuffix(filepath.Base(dir), "-"+imageFormat)}
	for _, f := range []string{img.Kernel, img.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	return img, nil
}

func build(ctx context.Context, pkg, cache, dir string, logf func(string, ...any)) (*Image, error) {
	work, err := os.MkdirTemp(cache, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	debs := filepath.Join(work, "debs")
	if err := os.Mkdir(debs, 0o755); err != nil {
		return nil, err
	}
	// apt's download runs as _apt, which must be able to write there.
	if u, err := user.Lookup("_apt"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		_ = os.Chown(debs, uid, -1)
	}
	logf("apt-get download %s busybox-static", pkg)
	if err := run(ctx, debs, "apt-get", "download", "-q", pkg, "busybox-static"); err != nil {
		return nil, err
	}
	unpacked := filepath.Join(work, "unpacked")
	entries, err := os.ReadDir(debs)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".deb") {
			if err := run(ctx, "", "dpkg-deb", "-x", filepath.Join(debs, e.Name()), unpacked); err != nil {
				return nil, err
			}
		}
	}
	mods, err := os.ReadDir(filepath.Join(unpacked, "lib/modules"))
	if err != nil || len(mods) != 1 {
		return nil, fmt.Errorf("%s holds no single module tree (%v)", pkg, err)
	}
	release := mods[0].Name()
	busybox := filepath.Join(unpacked, "bin/busybox")

	tree := filepath.Join(work, "tree")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var/run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := copyFile(busybox, filepath.Join(tree, "bin/busybox"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink("/bin/busybox", filepath.Join(tree, "sbin/modprobe")); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tree, "init"), initScript, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		return nil, err
	}
	logf("kernel %s: choosing modules", release)
	if err := copyModules(ctx, busybox, unpacked, tree, release); err != nil {
		return nil, err
	}
	for tool, apt := range HostTools {
		path, err := exec.LookPath(tool)
		if err != nil {
			return nil, fmt.Errorf("%s is not installed (apt-get install -y %s): the guest runs the host's", tool, apt)
		}
		if err := copyWithLibs(ctx, path, filepath.Join(tree, "usr/bin", tool), tree); err != nil {
			return nil, err
		}
	}

	// Assemble the result beside dir and move it in place whole.
	staged := filepath.Join(work, "image")
	if err := os.Mkdir(staged, 0o755); err != nil {
		return nil, err
	}
	if err := writeInitramfs(tree, filepath.Join(staged, "base.cpio.gz")); err != nil {
		return nil, err
	}
	if err := copyFile(filepath.Join(unpacked, "boot", "vmlinuz-"+release), filepath.Join(staged, "vmlinuz"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(staged, "release"), []byte(release+"\n"), 0o644); err != nil {
		return nil, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(staged, dir); err != nil {
		return nil, err
	}
	return readImage(dir)
}

// copyModules copies the modules of moduleRoots and everything they depend
// on from the unpacked kernel package into tree, with the module index
// busybox's modprobe reads. The package ships no modules.dep: busybox
// depmod makes one, first for the whole package (to follow the
// dependencies) and then for what was copied.
func copyModules(ctx context.Context, busybox, unpacked, tree, release string) error {
	if err := run(ctx, "", busybox, "depmod", "-b", unpacked, release); err != nil {
		return err
	}
	base := filepath.Join(unpacked, "lib/modules", release)
	deps, err := readModulesDep(filepath.Join(base, "modules.dep"))
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var add func(string)
	add = func(m string) {
		if want[m] {
			return
		}
		want[m] = true
		for _, d := range deps[m] {
			add(d)
		}
	}
	for _, root := range moduleRoots {
		root = "kernel/" + root
		if strings.HasSuffix(root, ".ko") {
			if _, ok := deps[root]; !ok {
				return fmt.Errorf("the kernel package has no %s", root)
			}
			add(root)
			continue
		}
		for m := range deps {
			if strings.HasPrefix(m, root+"/") {
				add(m)
			}
		}
	}
	dst := filepath.Join(tree, "lib/modules", release)
	for m := range want {
		if err := copyFile(filepath.Join(base, m), filepath.Join(dst, m), 0o644); err != nil {
			return err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.order"} {
		if err := copyFile(filepath.Join(base, f), filepath.Join(dst, f), 0o644); err != nil {
			return err
		}
	}
	return run(ctx, "", busybox, "depmod", "-b", tree, release)
}

// readModulesDep parses modules.dep: each module's path and the paths of
// the modules it needs.
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if ok {
			deps[mod] = strings.Fields(rest)
		}
	}
	return deps, sc.Err()
}

// copyWithLibs copies the program at path to dst and the shared libraries
// ldd says it loads to the same paths under tree.
func copyWithLibs(ctx context.Context, path, dst, tree string) error {
	if err := copyFile(path, dst, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ldd", path).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil
		}
		return fmt.Errorf("ldd %s: %w: %s", path, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)".
		f := strings.Fields(l)
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		default:
			continue
		}
		if err := copyFile(lib, filepath.Join(tree, lib), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src (following links) to dst, making dst's folder.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeInitramfs writes the tree as a gzip'd newc cpio archive.
func writeInitramfs(tree, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	cw := newCpioWriter(zw)
	err = errors.Join(cw.addTree(tree), cw.close(), zw.Close())
	return errors.Join(err, f.Close())
}

// run runs a command in dir and returns its output in the error.
func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
