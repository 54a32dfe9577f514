package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"vnic/ndis"
	"vnic/oid"
	"vnic/xfrm"
)

// errReported ends a command whose failures were already printed.
var errReported = errors.New("failures reported above")

// command runs a client command.
func (c *cli) command(args []string) error {
	switch args[0] {
	case "caps", "capabilities":
		return c.caps(args[1:])
	case "sa":
		return c.sa(args[1:])
	case "stats", "statistics":
		return c.stats(args[1:])
	case "events":
		return c.events(args[1:])
	case "genkey":
		return c.genkey(args[1:])
	case "wait":
		return c.wait(args[1:], c.timeout)
	}
	return usageErr("unknown command %s", xfrm.QuoteWord(args[0]))
}

// dial connects to the daemon.
func (c *cli) dial() (*oid.Client, error) {
	return oid.Dial(c.socket)
}

// do sends req and decodes the response into resp; with --json it prints
// the response as the daemon sent it instead.
func (c *cli) do(req, resp any) error {
	cl, err := c.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	var raw json.RawMessage
	err = cl.Do(c.ctx, req, &raw)
	if len(raw) > 0 {
		if c.json {
			fmt.Fprintf(c.stdout, "%s\n", bytes.TrimSpace(raw))
		}
		// Decoded in both modes: the exit status follows the results.
		if resp != nil {
			if derr := json.Unmarshal(raw, resp); derr != nil && err == nil {
				err = fmt.Errorf("decode the daemon's response: %w", derr)
			}
		}
	}
	return err
}

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return usageErr("%s: unexpected argument %s", cmd, xfrm.QuoteWord(args[0]))
	}
	return nil
}

func (c *cli) caps(args []string) error {
	if err := noArgs("caps", args); err != nil {
		return err
	}
	var r oid.CapabilitiesResponse
	if err := c.do(oid.Request{OID: oid.OIDCapabilities}, &r); err != nil {
		return fmt.Errorf("caps: %w", err)
	}
	if !c.json {
		printCaps(c.stdout, &r.Capabilities)
	}
	return nil
}

const saUsage = "sa: expected add, del, flush, update, list, show or request-delete"

func (c *cli) sa(args []string) error {
	if len(args) == 0 {
		return usageErr(saUsage)
	}
	switch args[0] {
	case "add":
		return c.saAdd(args[1:])
	case "del", "delete":
		return c.saDel(args[1:])
	case "update":
		return c.saUpdate(args[1:])
	case "list", "ls":
		if err := noArgs("sa list", args[1:]); err != nil {
			return err
		}
		return c.saList(0)
	case "flush":
		return c.saFlush(args[1:])
	case "show", "get":
		if len(args) > 2 && isSAIDWord(args[1]) {
			h, err := c.handleOf("sa show", args[1:])
			if err != nil {
				return err
			}
			return c.saList(h)
		}
		if len(args) != 2 {
			return usageErr("sa show: expected one handle, like: vnic sa show 3, or src ADDR dst ADDR proto esp spi SPI")
		}
		h, err := parseHandle("sa show", args[1])
		if err != nil {
			return err
		}
		return c.saList(h)
	case "request-delete":
		if len(args) != 2 {
			return usageErr("sa request-delete: expected one handle, like: vnic sa request-delete 3")
		}
		h, err := parseHandle("sa request-delete", args[1])
		if err != nil {
			return err
		}
		if err := c.do(oid.HandleRequest{Request: oid.Request{OID: oid.OIDRequestDelete}, Handle: h}, nil); err != nil {
			return fmt.Errorf("sa request-delete: %w", err)
		}
		if !c.json {
			fmt.Fprintf(c.stdout, "delete requested for SA %d: the device raised SaDeleteReq\n", h)
		}
		return nil
	}
	return usageErr("%s, got %s", saUsage, xfrm.QuoteWord(args[0]))
}

func parseHandle(cmd, s string) (uint64, error) {
	h, err := xfrm.ParseNumber(s, 64)
	if err != nil || h == 0 {
		return 0, fmt.Errorf("%s: expected a handle like 3, got %s", cmd, xfrm.QuoteWord(s))
	}
	return h, nil
}

func (c *cli) saAdd(words []string) error {
	b, notes, err := xfrm.ParseState(words)
	if err != nil {
		return fmt.Errorf("sa add: %w (vnic sa add -h lists the words)", err)
	}
	for _, n := range notes {
		fmt.Fprintf(c.stderr, "vnic: sa add: note: %s\n", n)
	}
	defer b.KeyData.Wipe()
	// --esp-sa-file: its file is checked now, its line written only once
	// the SA is added.
	esp, err := c.prepareESPSA(&b)
	if err != nil {
		return fmt.Errorf("sa add: %w", err)
	}
	defer esp.discard()
	var r oid.AddSAResponse
	if err := c.do(oid.AddSARequest{Request: oid.Request{OID: oid.OIDAddSA}, SAs: []oid.SA{b}}, &r); err != nil {
		var ne *ndis.Error
		if errors.As(err, &ne) {
			err = ne.WithoutElement() // the one element sent: its index says nothing
		}
		return fmt.Errorf("sa add: %w", err)
	}
	if !c.json {
		for _, res := range r.Results {
			fmt.Fprintf(c.stdout, "handle %d\n", res.Handle)
		}
	}
	if len(r.Results) == 1 && r.Results[0].Handle != 0 {
		if err := esp.commit(c.stderr); err != nil {
			return fmt.Errorf("sa add: SA %d is added, but its line is not: %w", r.Results[0].Handle, err)
		}
	}
	return nil
}

func (c *cli) saDel(args []string) error {
	if len(args) == 0 {
		return usageErr("sa del: expected one or more handles, like: vnic sa del 3 4")
	}
	var hs []uint64
	if isSAIDWord(args[0]) {
		// ip xfrm state delete's words: the SA by what names it.
		h, err := c.handleOf("sa del", args)
		if err != nil {
			return err
		}
		hs = []uint64{h}
	} else {
		hs = make([]uint64, len(args))
		for i, a := range args {
			h, err := parseHandle("sa del", a)
			if err != nil {
				return err
			}
			hs[i] = h
		}
	}
	return c.deleteHandles("sa del", hs)
}

// deleteHandles deletes the SAs hs with one DELETE_SA, and fails when any
// of them was not deleted (with --json too: the response's status is
// success once one handle went).
func (c *cli) deleteHandles(what string, hs []uint64) error {
	var r oid.DeleteSAResponse
	err := c.do(oid.DeleteSARequest{Request: oid.Request{OID: oid.OIDDeleteSA}, Handles: hs}, &r)
	if len(r.Results) == 0 {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	failed := false
	for _, res := range r.Results {
		if res.Status == ndis.StatusSuccess.String() {
			if !c.json {
				fmt.Fprintf(c.stdout, "deleted %d\n", res.Handle)
			}
			continue
		}
		failed = true
		fmt.Fprintf(c.stderr, "vnic: %s: %s (%s)\n", what, res.Reason, res.Status)
	}
	if failed {
		return errReported
	}
	return nil
}

func (c *cli) saUpdate(args []string) error {
	const want = "sa update: expected HANDLE seq-hi N [spi SPI], like: vnic sa update 3 seq-hi 1"
	if len(args) == 0 {
		return usageErr(want)
	}
	h, err := parseHandle("sa update", args[0])
	if err != nil {
		return err
	}
	var spi, hi *uint32
	for i := 1; i < len(args); i += 2 {
		w := args[i]
		if i+1 >= len(args) {
			return fmt.Errorf("sa update: %s: expected a number, got nothing", w)
		}
		n, err := xfrm.ParseNumber(args[i+1], 32)
		v := uint32(n)
		switch w {
		case "seq-hi", "replay-seq-hi", "replay-oseq-hi":
			if err != nil {
				return fmt.Errorf("sa update: %s: expected the high-order 32 bits, a number from 0 to 4294967295, got %s", w, xfrm.QuoteWord(args[i+1]))
			}
			hi = &v
		case "spi":
			if err != nil {
				return fmt.Errorf("sa update: spi: expected a number like 0x1000, got %s", xfrm.QuoteWord(args[i+1]))
			}
			spi = &v
		default:
			return usageErr("%s; got %s", want, xfrm.QuoteWord(w))
		}
	}
	if hi == nil {
		return usageErr(want)
	}
	if spi == nil {
		// NDIS names the SA by handle and SPI: look the SPI up.
		var q oid.QuerySAResponse
		cl := *c
		cl.json = false
		if err := cl.do(oid.HandleRequest{Request: oid.Request{OID: oid.OIDQuerySA}, Handle: h}, &q); err != nil {
			return fmt.Errorf("sa update: %w", err)
		}
		spi = &q.SAs[0].SPI
	}
	req := oid.UpdateSARequest{Request: oid.Request{OID: oid.OIDUpdateSA}, Handle: h,
		Operation: uint32(ndis.OperationESP), Spi: spi, SequenceNumberHighOrder: hi}
	if err := c.do(req, nil); err != nil {
		return fmt.Errorf("sa update: %w", err)
	}
	if !c.json {
		fmt.Fprintf(c.stdout, "updated %d: seq-hi %d\n", h, *hi)
	}
	return nil
}

// listSAs returns every SA the daemon holds, printing nothing (with
// --json too: the command prints what it does with them).
func (c *cli) listSAs(what string) ([]oid.SAInfo, error) {
	cl, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var r oid.QuerySAResponse
	if err := cl.Do(c.ctx, oid.HandleRequest{Request: oid.Request{OID: oid.OIDQuerySA}}, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return r.SAs, nil
}

// saID is what `ip xfrm state delete` and `get` name an SA by: its
// destination, protocol and SPI, and optionally its source; vnic adds
// dir, for an inbound and an outbound SA that share the three.
type saID struct {
	src, dst netip.Addr
	spi      uint32
	dir      string
}

// isSAIDWord reports whether w starts the words of an saID.
func isSAIDWord(w string) bool {
	switch w {
	case "src", "dst", "proto", "spi", "dir":
		return true
	}
	return false
}

// parseSAID reads `[src ADDR] dst ADDR [proto esp] spi SPI [dir in|out]`.
func parseSAID(what string, words []string) (saID, error) {
	var id saID
	var haveSPI bool
	seen := map[string]bool{}
	const want = "src ADDR dst ADDR proto esp spi SPI [dir in|out], as ip xfrm state delete takes them"
	for i := 0; i < len(words); i += 2 {
		w := words[i]
		if i+1 >= len(words) {
			return id, usageErr("%s: %s: expected a value, got nothing (%s)", what, w, want)
		}
		v := words[i+1]
		if seen[w] {
			return id, usageErr("%s: %s: given twice", what, w)
		}
		seen[w] = true
		var err error
		switch w {
		case "src", "dst":
			var a netip.Addr
			if a, err = netip.ParseAddr(v); err != nil {
				return id, usageErr("%s: %s: expected an IP address like 192.0.2.1, got %s", what, w, xfrm.QuoteWord(v))
			}
			if w == "src" {
				id.src = a.Unmap()
			} else {
				id.dst = a.Unmap()
			}
		case "proto":
			if v != "esp" {
				return id, usageErr("%s: proto: expected esp, got %s", what, xfrm.QuoteWord(v))
			}
		case "spi":
			n, perr := xfrm.ParseNumber(v, 32)
			if perr != nil {
				return id, usageErr("%s: spi: expected a number like 0x1000, got %s", what, xfrm.QuoteWord(v))
			}
			id.spi, haveSPI = uint32(n), true
		case "dir":
			if v != "in" && v != "out" {
				return id, usageErr("%s: dir: expected in or out, got %s", what, xfrm.QuoteWord(v))
			}
			id.dir = v
		default:
			return id, usageErr("%s: unknown word %s: expected %s", what, xfrm.QuoteWord(w), want)
		}
	}
	if !id.dst.IsValid() || !haveSPI {
		return id, usageErr("%s: give at least dst ADDR and spi SPI (%s)", what, want)
	}
	return id, nil
}

// matches reports whether sa is the SA id names.
func (id *saID) matches(sa *oid.SAInfo) bool {
	addr := func(s string) netip.Addr { a, _ := netip.ParseAddr(s); return a.Unmap() }
	return sa.SPI == id.spi && addr(sa.Dst) == id.dst &&
		(!id.src.IsValid() || addr(sa.Src) == id.src) &&
		(id.dir == "" || shortDir(sa.Direction) == id.dir)
}

// handleOf returns the handle of the one SA the words name (see saID).
func (c *cli) handleOf(what string, words []string) (uint64, error) {
	id, err := parseSAID(what, words)
	if err != nil {
		return 0, err
	}
	sas, err := c.listSAs(what)
	if err != nil {
		return 0, err
	}
	var hs []uint64
	for i := range sas {
		if id.matches(&sas[i]) {
			hs = append(hs, sas[i].Handle)
		}
	}
	switch {
	case len(hs) == 0:
		return 0, fmt.Errorf("%s: no SA with %s", what, strings.Join(words, " "))
	case len(hs) > 1:
		return 0, fmt.Errorf("%s: SAs %s all match %s: add dir in or dir out, or give a handle", what, joinHandles(hs), strings.Join(words, " "))
	}
	return hs[0], nil
}

func joinHandles(hs []uint64) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = strconv.FormatUint(h, 10)
	}
	return strings.Join(s, ", ")
}

// saFlush deletes every SA, or every SA of one direction, as `ip xfrm
// state flush` does: `vnic sa flush [dir in|out] [proto esp]`.
func (c *cli) saFlush(args []string) error {
	const want = "sa flush: expected nothing, dir in, dir out or proto esp"
	dir := ""
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return usageErr("%s, got %s alone", want, xfrm.QuoteWord(args[i]))
		}
		switch w, v := args[i], args[i+1]; {
		case w == "dir" && (v == "in" || v == "out") && dir == "":
			dir = v
		case w == "proto" && v == "esp":
		default:
			return usageErr("%s, got %s %s", want, xfrm.QuoteWord(w), xfrm.QuoteWord(v))
		}
	}
	sas, err := c.listSAs("sa flush")
	if err != nil {
		return err
	}
	var hs []uint64
	for i := range sas {
		if dir == "" || shortDir(sas[i].Direction) == dir {
			hs = append(hs, sas[i].Handle)
		}
	}
	if len(hs) == 0 {
		if !c.json {
			fmt.Fprintln(c.stdout, "no SAs to flush")
		}
		return nil
	}
	return c.deleteHandles("sa flush", hs)
}

// saList lists all SAs (handle 0) or shows one.
func (c *cli) saList(h uint64) error {
	var r oid.QuerySAResponse
	what := "sa list"
	if h != 0 {
		what = "sa show"
	}
	if err := c.do(oid.HandleRequest{Request: oid.Request{OID: oid.OIDQuerySA}, Handle: h}, &r); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if c.json {
		return nil
	}
	if h != 0 {
		for i := range r.SAs {
			printSA(c.stdout, &r.SAs[i])
		}
		return nil
	}
	printSAList(c.stdout, r.SAs)
	return nil
}

func (c *cli) stats(args []string) error {
	if err := noArgs("stats", args); err != nil {
		return err
	}
	var r oid.StatisticsResponse
	if err := c.do(oid.Request{OID: oid.OIDStatistics}, &r); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if !c.json {
		printStats(c.stdout, r.Stats, c.all)
	}
	return nil
}

func (c *cli) events(args []string) error {
	if err := noArgs("events", args); err != nil {
		return err
	}
	cl, err := c.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	var lost uint64
	err = cl.SubscribeRaw(c.ctx, func(line []byte) error {
		if c.json {
			_, err := fmt.Fprintf(c.stdout, "%s\n", line)
			return err
		}
		var m oid.EventMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("the daemon sent an event that is not JSON: %w", err)
		}
		if m.Lost > lost {
			fmt.Fprintf(c.stdout, "(%d events lost: this client fell behind)\n", m.Lost-lost)
			lost = m.Lost
		}
		printEvent(c.stdout, &m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}
