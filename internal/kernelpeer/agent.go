package kernelpeer

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guestBinary is where the agent's binary lives in the guest.
const guestBinary = "/usr/bin/kernel-peer"

// request is one command for the agent, a JSON line on the serial port.
type request struct {
	ID      uint64  `json:"id"`
	Cmd     string  `json:"cmd"`
	Timeout float64 `json:"timeout"` // seconds
}

// response is the agent's answer: the command's combined output and exit
// status (-1 when it did not exit by itself), and why it failed to run.
type response struct {
	ID    uint64 `json:"id"`
	Ready string `json:"ready,omitempty"` // the first line: the guest's kernel release
	Out   []byte `json:"out"`
	Code  int    `json:"code"`
	Err   string `json:"err,omitempty"`
}

// maxOutput bounds the output of one command the agent sends back.
const maxOutput = 8 << 20

// AgentMain runs the guest side of the kernel peer when args (os.Args[1:]
// of the binary given as Config.Agent) name one of its commands, and
// reports whether it did, with the exit status. The commands run in the
// guest:
//
//	guest-agent TTY             serve commands on the serial port TTY
//	guest-espinudp PORT         hold UDP sockets (IPv4 and IPv6) on PORT with
//	                            the kernel's ESP-in-UDP decapsulation on
//	guest-capture IF N SECONDS  print the next N ESP frames IF sends, in hex
//	guest-inject IF HEX...      send frames out of IF
func AgentMain(args []string) (handled bool, code int) {
	if len(args) == 0 {
		return false, 0
	}
	var err error
	switch args[0] {
	case "guest-agent":
		if len(args) != 2 {
			err = errors.New("usage: guest-agent TTY")
			break
		}
		err = serveAgent(args[1])
	case "guest-espinudp":
		err = holdESPInUDP(args[1:])
	case "guest-capture":
		err = captureESP(args[1:])
	case "guest-inject":
		err = injectFrames(args[1:])
	default:
		return false, 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", args[0], err)
		return true, 1
	}
	return true, 0
}

// serveAgent answers requests on the serial port tty until it fails.
func serveAgent(tty string) error {
	f, err := os.OpenFile(tty, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	if err := makeRaw(int(f.Fd())); err != nil {
		return fmt.Errorf("raw mode on %s: %w", tty, err)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	enc := json.NewEncoder(f)
	if err := enc.Encode(response{Ready: unix.ByteSliceToString(uts.Release[:])}); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return err
		}
		var req request
		if json.Unmarshal(line, &req) != nil || req.Cmd == "" {
			continue // noise on the line
		}
		if err := enc.Encode(runCommand(req)); err != nil {
			return err
		}
	}
}

// runCommand runs one request's command under bash.
func runCommand(req request) response {
	timeout := time.Duration(req.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/bash", "-c", req.Cmd)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=dumb"}
	out := &cappedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// A program left running in the background keeps the output pipe
	// open: give up on it a moment after bash exits.
	cmd.WaitDelay = time.Second
	resp := response{ID: req.ID}
	err := cmd.Run()
	resp.Out = out.b
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		resp.Code, resp.Err = -1, fmt.Sprintf("timed out after %v", timeout)
	case errors.As(err, &ee):
		resp.Code = ee.ExitCode()
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		resp.Code, resp.Err = -1, err.Error()
	}
	return resp
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	b   []byte
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// makeRaw puts the terminal fd in raw mode: bytes pass unchanged both ways.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// holdESPInUDP opens IPv4 and IPv6 UDP sockets on the port with UDP_ENCAP
// set to ESP-in-UDP, which makes the kernel decapsulate the ESP that
// arrives on them (RFC 3948), and keeps them open until killed.
func holdESPInUDP(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: guest-espinudp PORT")
	}
	port, err := strconv.ParseUint(args[0], 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", args[0], err)
	}
	lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP)
			if serr == nil {
				serr = bypassPolicy(int(fd), network == "udp6")
			}
		})
		return errors.Join(err, serr)
	}}
	for _, network := range []string{"udp4", "udp6"} {
		c, err := lc.ListenPacket(context.Background(), network, ":"+strconv.FormatUint(port, 10))
		if err != nil {
			return err
		}
		defer c.Close()
	}
	// Wait for the signal that ends the helper (a bare select would be
	// taken for a deadlock).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGTERM, unix.SIGINT)
	<-sig
	return nil
}

// bypassPolicy gives the socket its own IPsec policies, both directions,
// that let its traffic pass unprotected, as IKE daemons do for their
// sockets (strongSwan's bypass_socket): the kernel checks a UDP datagram
// against the inbound policies before it hands it to the ESP-in-UDP
// decapsulation, so a transport-mode policy between the two hosts would
// otherwise drop the ESP-in-UDP itself (XfrmInTmplMismatch).
func bypassPolicy(fd int, v6 bool) error {
	// struct xfrm_userpolicy_info: selector (56 bytes, family at 40),
	// lifetime config (8 uint64), current lifetime (4 uint64),
	// priority, index, then dir and action (allow is 0).
	var p [168]byte
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_XFRM_POLICY
	if v6 {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_XFRM_POLICY
	}
	binary.NativeEndian.PutUint16(p[40:], uint16(family))
	for i := range 4 { // byte and packet limits: none
		binary.NativeEndian.PutUint64(p[56+8*i:], ^uint64(0))
	}
	for _, dir := range []byte{0, 1} { // XFRM_POLICY_IN, XFRM_POLICY_OUT
		p[160] = dir
		if err := unix.SetsockoptString(fd, level, opt, string(p[:])); err != nil {
			return fmt.Errorf("bypass policy: %w", err)
		}
	}
	return nil
}

// captureESP prints, in hex, the next N frames that the interface sends
// carrying ESP: raw (IP protocol 50) or in UDP (port 4500, not a
// keepalive or IKE). It fails if they do not all come within SECONDS.
func captureESP(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: guest-capture IF N SECONDS")
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	n, err1 := strconv.Atoi(args[1])
	secs, err2 := strconv.ParseFloat(args[2], 64)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return err
	}
	// Say ready only once the socket sees frames: the caller then makes
	// the kernel send.
	fmt.Println("capturing")
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	buf := make([]byte, 65536)
	for got := 0; got < n; {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("captured %d of %d ESP frames in %vs", got, n, secs)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		m, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype != unix.PACKET_OUTGOING || !isESPFrame(buf[:m]) {
			continue
		}
		fmt.Println(hex.EncodeToString(buf[:m]))
		got++
	}
	return nil
}

// isESPFrame says whether an Ethernet frame carries ESP, raw or in UDP.
func isESPFrame(f []byte) bool {
	if len(f) < 14 {
		return false
	}
	ip := f[14:]
	var proto byte
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case unix.ETH_P_IP:
		if len(ip) < 20 {
			return false
		}
		proto, l4 = ip[9], ip[int(ip[0]&0x0f)*4:]
	case unix.ETH_P_IPV6:
		if len(ip) < 40 {
			return false
		}
		proto, l4 = ip[6], ip[40:]
	default:
		return false
	}
	switch proto {
	case unix.IPPROTO_ESP:
		return true
	case unix.IPPROTO_UDP:
		return len(l4) >= 16 && (binary.BigEndian.Uint16(l4[0:]) == 4500 || binary.BigEndian.Uint16(l4[2:]) == 4500) &&
			binary.BigEndian.Uint32(l4[8:]) != 0
	}
	return false
}

// injectFrames sends each frame, given in hex, out of the interface.
func injectFrames(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: guest-inject IF FRAME [FRAME]... (frames in hex)")
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, h := range args[1:] {
		f, err := hex.DecodeString(strings.TrimSpace(h))
		if err != nil || len(f) < 14 {
			return fmt.Errorf("not a frame in hex: %.20q", h)
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(binary.BigEndian.Uint16(f[12:])), Halen: 6}
		copy(sa.Addr[:], f[0:6])
		if err := unix.Sendto(fd, f, 0, sa); err != nil {
			return err
		}
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
