// Command vnic is the virtual IPsec-offload NIC: `vnic up` runs the device
// (the daemon), and the other commands talk to a running daemon over its
// OID channel, the Unix socket /run/vnic/NAME.sock.
//
//	vnic up [flags]                      run the daemon (vnic up -h)
//	vnic caps                            OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES
//	vnic sa add WORDS...                 ADD_SA, in `ip xfrm state add` words
//	vnic sa del HANDLE... | ID           DELETE_SA (ID: dst ADDR spi SPI ...)
//	vnic sa flush [dir in|out]           DELETE_SA of every SA (of one direction)
//	vnic sa update HANDLE seq-hi N       UPDATE_SA
//	vnic sa list | show HANDLE | ID      the offloaded SAs, keys redacted
//	vnic sa request-delete HANDLE        make the device raise SaDeleteReq
//	vnic stats [--all]                   global counters
//	vnic events                          stream the device's events
//	vnic genkey ALGORITHM [BITS]         a fresh key for sa add
//	vnic wait [--timeout DURATION]       wait until the daemon answers
//	vnic version | --version             the version, commit and Go version
//
// Every command but up takes --socket PATH (or --dev NAME for
// /run/vnic/NAME.sock) and --json (print the daemon's raw JSON).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"vnic/ndis"
	"vnic/oid"
	"vnic/xfrm"
)

const usage = `usage: vnic [--socket PATH | --dev NAME] [--json] COMMAND [ARGS]

commands:
  up [flags]                       run the device daemon (see vnic up -h)
  caps                             show the offload capabilities
  sa add WORDS...                  offload an SA (see vnic sa add -h)
  sa del HANDLE... | ID            delete SAs, by handle or by ID: [src ADDR] dst ADDR
                                   [proto esp] spi SPI [dir in|out], as ip xfrm names them
  sa flush [dir in|out]            delete every SA, or those of one direction
  sa update HANDLE seq-hi N [spi SPI]
                                   set the ESN high-order bits of an SA
  sa list                          list the SAs, one per line
  sa show HANDLE | ID              show one SA in detail
  sa request-delete HANDLE         make the device ask for the SA's deletion
  stats [--all]                    show the non-zero counters (--all: every one)
  events                           print the device's events until interrupted
  genkey ALGORITHM [BITS]          print a fresh random key for ALGORITHM (and AES key size)
  wait [--timeout DURATION]        wait until the daemon answers, 10s at most by default
  version                          print vnic's version, commit and Go version

options (anywhere on the line):
  --socket PATH   the daemon's OID channel (default /run/vnic/vnic0.sock)
  --dev NAME      the daemon of device NAME: /run/vnic/NAME.sock
  --json          print the daemon's JSON responses as they are
  --esp-sa-file PATH
                  sa add: append each SA's line of Wireshark's ESP SA table,
                  keys included, to PATH (mode 0600; default $VNIC_ESP_SA_FILE)
  --version       print the version line and exit
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli is one invocation of a client command.
type cli struct {
	ctx    context.Context
	socket string
	json   bool
	all    bool
	// version is --version: print the version and nothing else.
	version bool
	// timeout is --timeout's value, for wait ("": its default).
	timeout string
	// espSAFile is --esp-sa-file's value ("": VNIC_ESP_SA_FILE's).
	espSAFile string
	stdout    io.Writer
	stderr    io.Writer
}

// errUsage is an error after which the usage is worth showing.
type errUsage struct{ msg string }

func (e *errUsage) Error() string { return e.msg }

func usageErr(format string, args ...any) error { return &errUsage{fmt.Sprintf(format, args...)} }

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, socket: oid.DefaultSocket, stdout: stdout, stderr: stderr}
	rest, help, err := c.options(args)
	if err != nil {
		fmt.Fprintf(stderr, "vnic: %v\n", err)
		return 2
	}
	if c.version || len(rest) > 0 && rest[0] == "version" {
		if !c.version && len(rest) > 1 {
			fmt.Fprintf(stderr, "vnic: version: unexpected argument %s\n\n%s", xfrm.QuoteWord(rest[1]), usage)
			return 2
		}
		fmt.Fprintln(stdout, version())
		return 0
	}
	if len(rest) > 0 && rest[0] == "up" {
		if err := runUp(rest[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "vnic: %v\n", err)
			return 1
		}
		return 0
	}
	if len(rest) == 0 || rest[0] == "help" {
		if help || len(rest) > 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	if help {
		if len(rest) > 1 && rest[0] == "sa" && rest[1] == "add" {
			fmt.Fprintln(stdout, xfrm.StateUsage)
		} else {
			fmt.Fprint(stdout, usage)
		}
		return 0
	}
	err = c.command(rest)
	if err == nil {
		return 0
	}
	if errors.Is(err, errReported) {
		return 1
	}
	var ue *errUsage
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "vnic: %v\n\n%s", err, usage)
		return 2
	}
	fmt.Fprintf(stderr, "vnic: %v\n", explain(err))
	return 1
}

// options takes the global options out of args, wherever they are, up to
// the word "up" (whose flags belong to the daemon).
func (c *cli) options(args []string) (rest []string, help bool, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(rest) == 0 && a == "up" {
			return append(rest, args[i:]...), help, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "socket", "dev", "timeout", "esp-sa-file":
			if !hasValue {
				if i+1 >= len(args) {
					return nil, false, fmt.Errorf("--%s: expected a value", name)
				}
				i++
				value = args[i]
			}
			if value == "" {
				return nil, false, fmt.Errorf("--%s: expected a value", name)
			}
			switch name {
			case "timeout":
				c.timeout = value
			case "esp-sa-file":
				c.espSAFile = value
			case "dev":
				if strings.ContainsRune(value, '/') {
					return nil, false, fmt.Errorf("--dev: expected an interface name like vnic0, got %s", xfrm.QuoteWord(value))
				}
				c.socket = oid.SocketPath(value)
			default:
				c.socket = value
			}
		case "json":
			c.json = true
		case "all":
			c.all = true
		case "version":
			c.version = true
		case "h", "help":
			help = true
		default:
			return nil, false, fmt.Errorf("unknown option %s (options: --socket PATH, --dev NAME, --json, --all, --timeout DURATION, --esp-sa-file PATH, --version)", xfrm.QuoteWord(a))
		}
	}
	return rest, help, nil
}

// explain words an error for the user: NDIS failures with their status.
func explain(err error) string {
	var ne *ndis.Error
	if errors.As(err, &ne) {
		return fmt.Sprintf("%s (%s)", err, ne.Status)
	}
	return err.Error()
}
