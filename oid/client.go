package oid

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"vnic/ndis"
)

// DefaultSocket is the OID channel of the default device, vnic0.
const DefaultSocket = "/run/vnic/vnic0.sock"

// SocketPath returns the OID channel socket of device name.
func SocketPath(name string) string { return "/run/vnic/" + name + ".sock" }

// Client is a connection to a daemon's OID channel. Its methods may be
// called from several goroutines; requests are sent one at a time.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	path   string
	nextID uint64
	broken error // set once the connection is unusable
}

// Dial connects to the OID channel at path.
func Dial(path string) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("no vnic daemon at %s: the socket does not exist (is `vnic up` running?)", path)
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("no vnic daemon is listening on %s", path)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("permission denied on %s: the vnic control socket is for root", path)
		}
		return nil, fmt.Errorf("connect to the vnic daemon at %s: %w", path, err)
	}
	return &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends req, which must encode as a JSON object with an "oid" field,
// and decodes the response into resp (which may be nil, or a
// *json.RawMessage for the raw line). When req has no "id", Do numbers it.
// A response whose status is not NDIS_STATUS_SUCCESS is still decoded into
// resp, and Do then returns an *ndis.Error with its status and reason.
func (c *Client) Do(ctx context.Context, req any, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode the request: %w", err)
	}
	if len(b) < 2 || b[0] != '{' {
		return fmt.Errorf("encode the request: a request must be a JSON object, got %T", req)
	}
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	json.Unmarshal(b, &probe)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	id := probe.ID
	if len(id) == 0 {
		c.nextID++
		id = strconv.AppendUint(nil, c.nextID, 10)
		nb := append([]byte(`{"id":`), id...)
		if len(b) > 2 {
			nb = append(nb, ',')
		}
		b = append(nb, b[1:]...)
	}
	line, err := c.roundTrip(ctx, append(b, '\n'))
	clear(b)
	if err != nil {
		return err
	}
	var h Header
	if err := json.Unmarshal(line, &h); err != nil {
		return c.fail(fmt.Errorf("the daemon sent a response that is not JSON: %w", err))
	}
	st, ok := ndis.ParseStatus(h.Status)
	if !ok {
		st = ndis.StatusFailure
		if h.Reason == "" {
			h.Reason = fmt.Sprintf("the daemon answered with an unknown status %q", h.Status)
		}
	}
	if !sameID(h.ID, id) {
		if st != ndis.StatusSuccess && isNull(h.ID) {
			// A refusal of the connection (permission) or of a line
			// the daemon could not read.
			c.broken = &ndis.Error{Status: st, Reason: h.Reason}
			return c.broken
		}
		return c.fail(fmt.Errorf("the daemon answered request %s instead of %s", h.ID, id))
	}
	if resp != nil {
		if err := json.Unmarshal(line, resp); err != nil {
			return fmt.Errorf("decode the daemon's response: %w", err)
		}
	}
	if st != ndis.StatusSuccess {
		e := &ndis.Error{Status: st, Reason: h.Reason}
		if h.Element != nil {
			e = e.At(*h.Element)
		}
		return e
	}
	return nil
}

// roundTrip writes b and reads one response line, honouring ctx.
func (c *Client) roundTrip(ctx context.Context, b []byte) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(d)
		defer c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.conn.Write(b); err != nil {
		// A daemon that refuses the connection (a peer that is not
		// root, too many connections) writes one line and closes,
		// maybe before the request went out: that line says why.
		if ctx.Err() == nil {
			c.conn.SetReadDeadline(time.Now().Add(time.Second))
			if line, rerr := c.r.ReadBytes('\n'); rerr == nil {
				c.fail(c.ioError(ctx, "send the request", err))
				return line, nil
			}
		}
		return nil, c.fail(c.ioError(ctx, "send the request", err))
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return nil, c.fail(c.ioError(ctx, "read the response", err))
	}
	return line, nil
}

func (c *Client) ioError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: the vnic daemon at %s closed the connection", what, c.path)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// fail marks the connection unusable (a response may be half read) and
// returns err.
func (c *Client) fail(err error) error {
	c.broken = fmt.Errorf("the connection to the vnic daemon is unusable after an earlier error: %w", err)
	c.conn.Close()
	return err
}

func sameID(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return false
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

func isNull(id json.RawMessage) bool {
	return len(bytes.TrimSpace(id)) == 0 || string(bytes.TrimSpace(id)) == "null"
}

// Capabilities queries OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES.
func (c *Client) Capabilities(ctx context.Context) (Capabilities, error) {
	var r CapabilitiesResponse
	err := c.Do(ctx, Request{OID: OIDCapabilities}, &r)
	return r.Capabilities, err
}

// AddSA offloads bundles with ADD_SA. The results (one per bundle) are
// returned also when the error is not nil: no bundle was added then.
func (c *Client) AddSA(ctx context.Context, sas ...SA) ([]AddResult, error) {
	var r AddSAResponse
	err := c.Do(ctx, AddSARequest{Request: Request{OID: OIDAddSA}, SAs: sas}, &r)
	return r.Results, err
}

// AddSAEx offloads one bundle with ADD_SA_EX and returns its handle.
func (c *Client) AddSAEx(ctx context.Context, sa SA) (uint64, error) {
	var r AddSAExResponse
	err := c.Do(ctx, AddSAExRequest{Request: Request{OID: OIDAddSAEx}, SA: sa}, &r)
	return r.Handle, err
}

// DeleteSA deletes SAs with DELETE_SA. The results (one per handle) are
// returned also when the error is not nil.
func (c *Client) DeleteSA(ctx context.Context, handles ...uint64) ([]DeleteResult, error) {
	var r DeleteSAResponse
	err := c.Do(ctx, DeleteSARequest{Request: Request{OID: OIDDeleteSA}, Handles: handles}, &r)
	return r.Results, err
}

// UpdateSA sets the ESN high-order bits of an ESP SA with UPDATE_SA.
func (c *Client) UpdateSA(ctx context.Context, handle uint64, spi, seqHigh uint32) error {
	return c.Do(ctx, UpdateSARequest{
		Request: Request{OID: OIDUpdateSA}, Handle: handle,
		Operation: uint32(ndis.OperationESP), Spi: &spi, SequenceNumberHighOrder: &seqHigh,
	}, nil)
}

// QuerySA describes the SA with the given handle, or all SAs for handle 0.
func (c *Client) QuerySA(ctx context.Context, handle uint64) ([]SAInfo, error) {
	var r QuerySAResponse
	err := c.Do(ctx, HandleRequest{Request: Request{OID: OIDQuerySA}, Handle: handle}, &r)
	return r.SAs, err
}

// Stats returns the daemon's global counters.
func (c *Client) Stats(ctx context.Context) (map[string]uint64, error) {
	var r StatisticsResponse
	err := c.Do(ctx, Request{OID: OIDStatistics}, &r)
	return r.Stats, err
}

// RequestDelete asks the device to raise SaDeleteReq for an SA.
func (c *Client) RequestDelete(ctx context.Context, handle uint64) error {
	return c.Do(ctx, HandleRequest{Request: Request{OID: OIDRequestDelete}, Handle: handle}, nil)
}

// Subscribe subscribes to the device's events and calls fn with each
// until ctx ends (it then returns nil) or the daemon closes the stream.
// The connection carries nothing else afterwards: close the Client when
// Subscribe returns.
func (c *Client) Subscribe(ctx context.Context, fn func(EventMessage)) error {
	return c.SubscribeRaw(ctx, func(line []byte) error {
		var m EventMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("the daemon sent an event that is not JSON: %w", err)
		}
		fn(m)
		return nil
	})
}

// SubscribeRaw is Subscribe with each event line as the daemon sent it
// (without its newline). An error from fn ends the subscription and is
// returned.
func (c *Client) SubscribeRaw(ctx context.Context, fn func(line []byte) error) error {
	if err := c.Do(ctx, Request{OID: OIDSubscribeEvents}, nil); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broken = errors.New("the connection carries an event subscription")
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return c.ioError(ctx, "read events", err)
		}
		if err := fn(bytes.TrimRight(line, "\r\n")); err != nil {
			return err
		}
	}
}
