package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"vnic/ndis"
	"vnic/oid"
)

// defaultWaitTimeout is how long `vnic wait` waits without --timeout.
const defaultWaitTimeout = 10 * time.Second

// Polling intervals of awaitDaemon: the first retry comes soon (a daemon
// being started answers within milliseconds), later ones further apart.
const (
	firstRetry = 10 * time.Millisecond
	maxRetry   = 500 * time.Millisecond
)

// wait is `vnic wait [--timeout DURATION]`: it returns once the daemon
// answers a capabilities request on its socket, or fails after the timeout
// (timeout is the option's value, "" when not given).
func (c *cli) wait(args []string, timeout string) error {
	if err := noArgs("wait", args); err != nil {
		return err
	}
	d, err := parseTimeout(timeout)
	if err != nil {
		return usageErr("wait: %v", err)
	}
	if err := awaitDaemon(c.ctx, c.socket, d); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	return nil
}

// parseTimeout reads --timeout: a Go duration like 10s or 1m30s, or a
// number of seconds; "" is the default.
func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return defaultWaitTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(secs) || secs > (1<<63-1)/float64(time.Second) {
			return 0, fmt.Errorf("--timeout: expected a duration like 10s, 500ms or 2m, got %q", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, fmt.Errorf("--timeout: expected a duration above zero, got %q", s)
	}
	return d, nil
}

// awaitDaemon asks the daemon at socket for its capabilities until it
// answers, polling with backoff, for timeout at most. A daemon that
// answers with a failure (a caller who is not root) ends the wait at once:
// waiting would change nothing. While the daemon sets its device up, its
// socket accepts connections that it answers once it serves: a request
// waits for that.
func awaitDaemon(ctx context.Context, socket string, timeout time.Duration) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := firstRetry
	for {
		err := probe(tctx, socket)
		if err == nil {
			return nil
		}
		if ne := (*ndis.Error)(nil); errors.As(err, &ne) && ne.Status != ndis.StatusResources {
			return fmt.Errorf("the vnic daemon at %s answered, refusing: %w", socket, err)
		}
		if tctx.Err() == nil {
			select {
			case <-time.After(delay):
				delay = min(2*delay, maxRetry)
				continue
			case <-tctx.Done():
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted before the vnic daemon at %s answered: %w", socket, ctx.Err())
		}
		// The connection's deadline is the context's: either may say so.
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("the vnic daemon at %s took the connection but did not answer within %v: "+
				"it is still setting its device up, or stuck", socket, timeout)
		}
		return fmt.Errorf("no vnic daemon answered on %s within %v (last attempt: %w)", socket, timeout, err)
	}
}

// probe asks the daemon at socket for its capabilities once.
func probe(ctx context.Context, socket string) error {
	cl, err := oid.Dial(socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = cl.Capabilities(ctx)
	return err
}
