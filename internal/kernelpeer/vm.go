package kernelpeer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed init.sh
var initScript []byte

// Config describes a VM to boot.
type Config struct {
	// Image is what Prepare returned.
	Image *Image
	// Agent is a binary whose main calls AgentMain first (this
	// repository's cmd/kernel-peer is one); it runs in the guest, so it
	// must be built for linux/amd64, best with CGO_ENABLED=0.
	Agent string
	// Netns is the network namespace, made by the caller, in which Boot
	// creates the tap device Tap (the guest's eth0) and runs qemu.
	Netns, Tap string
	// MemoryMiB is the guest's memory (384 when zero), CPUs its
	// processors (1 when zero).
	MemoryMiB, CPUs int
	// CPUModel is qemu's -cpu (max when empty: AES-NI and PCLMUL, which
	// the guest's crypto uses; qemu64 leaves it the generic C code).
	CPUModel string
	// Console receives the guest's console: the kernel log, and the
	// shell when Shell is set. Nil keeps only its last 64 KiB, for
	// errors.
	Console io.Writer
	// Shell gives the console a root shell (for a person at a terminal:
	// Stdin is then read as its input).
	Shell bool
	Stdin io.Reader
}

// VM is a running kernel peer.
type VM struct {
	cfg     Config
	dir     string
	qemu    *exec.Cmd
	exited  chan struct{}
	waitErr error
	console *tailBuffer

	tapMade bool // Boot made the tap device: Close removes it

	mu     sync.Mutex // one command at a time
	conn   net.Conn
	lines  *bufio.Reader
	nextID uint64
	// Release is the guest kernel's release.
	Release string
}

// Boot creates the tap device in cfg.Netns, starts qemu there and waits
// until the agent in the guest answers (the guest has loaded its modules
// and brought up lo and eth0, with no addresses).
func Boot(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 384
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.CPUModel == "" {
		cfg.CPUModel = "max"
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("kernel peer: qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)")
	}
	dir, err := os.MkdirTemp("", "vnic-kernel-peer-")
	if err != nil {
		return nil, err
	}
	vm := &VM{cfg: cfg, dir: dir, exited: make(chan struct{}), console: &tailBuffer{max: 64 << 10}}
	fail := func(err error) (*VM, error) {
		vm.Close()
		return nil, fmt.Errorf("kernel peer: %w", err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := withAgent(cfg.Image.Initrd, cfg.Agent, initrd); err != nil {
		return fail(err)
	}
	if err := run(ctx, "", "ip", "-n", cfg.Netns, "tuntap", "add", "dev", cfg.Tap, "mode", "tap"); err != nil {
		return fail(err)
	}
	vm.tapMade = true
	if err := run(ctx, "", "ip", "-n", cfg.Netns, "link", "set", cfg.Tap, "up"); err != nil {
		return fail(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	appendArgs := "console=ttyS0 panic=-1 quiet loglevel=4 ipv6.disable=0 net.ifnames=0"
	if cfg.Shell {
		appendArgs += " kernelpeer.shell=1"
	}
	args := []string{"netns", "exec", cfg.Netns, qemu,
		"-machine", "pc", "-accel", "tcg", "-cpu", cfg.CPUModel, "-smp", fmt.Sprint(cfg.CPUs), "-m", fmt.Sprint(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Image.Kernel, "-initrd", initrd, "-append", appendArgs,
		"-serial", "stdio",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "isa-serial,chardev=agent",
		"-netdev", "tap,id=net0,ifname=" + cfg.Tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56",
		"-device", "virtio-rng-pci",
	}
	vm.qemu = exec.Command("ip", args...)
	// qemu dies with its parent, also when the parent is killed (a test
	// binary at its timeout runs no cleanup). ip netns exec execs qemu in
	// its place, so the setting reaches qemu; it is tied to the thread
	// that starts the process, which stays locked meanwhile.
	vm.qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out io.Writer = vm.console
	if cfg.Console != nil {
		out = io.MultiWriter(vm.console, cfg.Console)
	}
	vm.qemu.Stdout, vm.qemu.Stderr, vm.qemu.Stdin = out, out, cfg.Stdin
	runtime.LockOSThread()
	err = vm.qemu.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return fail(err)
	}
	go func() {
		vm.waitErr = vm.qemu.Wait()
		close(vm.exited)
	}()

	// qemu makes the socket before the guest runs; connect at once, so
	// that the agent's first line is not lost.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			vm.conn = c
			break
		}
		select {
		case <-vm.exited:
			return fail(fmt.Errorf("qemu exited: %v\n%s", vm.waitErr, vm.console))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("qemu made no agent socket: %w\n%s", err, vm.console))
		}
	}
	vm.lines = bufio.NewReaderSize(vm.conn, 1<<20)
	ready, err := vm.read(ctx, 90*time.Second, func(r *response) bool { return r.Ready != "" })
	if err != nil {
		return fail(fmt.Errorf("the guest did not come up: %w\nconsole:\n%s", err, vm.console))
	}
	vm.Release = ready.Ready
	return vm, nil
}

// withAgent writes initrd: base followed by a second gzip'd cpio that adds
// the agent binary (the kernel unpacks both in turn).
func withAgent(base, agent, initrd string) error {
	if agent == "" {
		return errors.New("no agent binary given")
	}
	data, err := os.ReadFile(agent)
	if err != nil {
		return err
	}
	out, err := os.Create(initrd)
	if err != nil {
		return err
	}
	in, err := os.Open(base)
	if err != nil {
		out.Close()
		return err
	}
	_, err = io.Copy(out, in)
	in.Close()
	if err != nil {
		out.Close()
		return err
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	cw := newCpioWriter(zw)
	cw.entry(strings.TrimPrefix(guestBinary, "/"), 0o100755, data)
	return errors.Join(cw.close(), zw.Close(), out.Close())
}

// Result is what a command in the guest did.
type Result struct {
	// Out is its standard output and error, together.
	Out string
	// Code is its exit status, -1 when it was killed at its timeout.
	Code int
}

// Run runs cmd under bash in the guest and waits up to timeout for it (a
// minute when zero). An error means the command could not be run or did
// not finish; a command that ran and failed is a Result with Code != 0.
func (vm *VM) Run(ctx context.Context, cmd string, timeout time.Duration) (Result, error) {
	if timeout <= 0 {
		timeout = time.Minute
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.nextID++
	id := vm.nextID
	b, _ := json.Marshal(request{ID: id, Cmd: cmd, Timeout: timeout.Seconds()})
	if _, err := vm.conn.Write(append(b, '\n')); err != nil {
		return Result{}, fmt.Errorf("kernel peer: send command: %w", err)
	}
	resp, err := vm.read(ctx, timeout+30*time.Second, func(r *response) bool { return r.ID == id })
	if err != nil {
		return Result{}, fmt.Errorf("kernel peer: %q: %w", cmd, err)
	}
	if resp.Err != "" && resp.Code == -1 {
		return Result{Out: string(resp.Out), Code: -1}, fmt.Errorf("kernel peer: %q: %s", cmd, resp.Err)
	}
	return Result{Out: string(resp.Out), Code: resp.Code}, nil
}

// read returns the first response for which want is true, skipping
// anything else on the line, within d.
func (vm *VM) read(ctx context.Context, d time.Duration, want func(*response) bool) (*response, error) {
	_ = vm.conn.SetReadDeadline(time.Now().Add(d))
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		_ = vm.conn.SetReadDeadline(dl)
	}
	for {
		line, err := vm.lines.ReadBytes('\n')
		if err != nil {
			select {
			case <-vm.exited:
				return nil, fmt.Errorf("qemu exited (%v)", vm.waitErr)
			default:
			}
			return nil, err
		}
		var r response
		if json.Unmarshal(bytes.TrimSpace(line), &r) == nil && want(&r) {
			return &r, nil
		}
	}
}

// Console returns the end of what the guest printed on its console.
func (vm *VM) Console() string { return vm.console.String() }

// Wait waits for qemu to exit (the guest powered off or Close was called).
func (vm *VM) Wait() error {
	<-vm.exited
	return vm.waitErr
}

// Close stops the VM and removes the tap device and its files.
func (vm *VM) Close() error {
	if vm.conn != nil {
		vm.conn.Close()
	}
	if vm.qemu != nil && vm.qemu.Process != nil {
		// SIGTERM first: qemu puts back the terminal it may hold.
		vm.qemu.Process.Signal(syscall.SIGTERM) // our own child
		select {
		case <-vm.exited:
		case <-time.After(3 * time.Second):
			vm.qemu.Process.Kill()
			<-vm.exited
		}
	}
	if vm.tapMade {
		_ = exec.Command("ip", "-n", vm.cfg.Netns, "link", "del", vm.cfg.Tap).Run()
	}
	return os.RemoveAll(vm.dir)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
