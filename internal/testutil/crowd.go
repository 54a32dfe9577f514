package testutil

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Crowd is many clients of a control socket at once, each in the middle
// of a capabilities request: the load that shows whether the server
// limits its connections, and its memory with them.
type Crowd struct {
	conns           []net.Conn
	wg              sync.WaitGroup
	finish          chan struct{}
	served, refused atomic.Int64
	mu              sync.Mutex
	other           []string
}

// NewCrowd connects n clients to the Unix socket at path. Client i sends
// the head of a capabilities request with id i, then pad blanks, and waits
// for Finish. NewCrowd returns once every client has sent that much or
// failed to connect. A client waits up to wait to connect, and twice that
// for the rest of its exchange.
func NewCrowd(path string, n, pad int, wait time.Duration) *Crowd {
	c := &Crowd{conns: make([]net.Conn, n), finish: make(chan struct{})}
	blanks := bytes.Repeat([]byte(" "), pad)
	var begun sync.WaitGroup
	begun.Add(n)
	for i := range n {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			conn, err := net.DialTimeout("unix", path, wait)
			if err != nil {
				begun.Done()
				c.note("dial: " + err.Error())
				return
			}
			c.conns[i] = conn
			conn.SetDeadline(time.Now().Add(2 * wait))
			// A refused client's writes fail once the server has closed:
			// its answer is there to read all the same.
			conn.Write(fmt.Appendf(nil, `{"id":%d,"oid":"OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"`, i))
			conn.Write(blanks)
			begun.Done()
			<-c.finish
			conn.Write([]byte("}\n"))
			line, err := bufio.NewReader(conn).ReadBytes('\n')
			var m map[string]any
			json.Unmarshal(line, &m)
			reason, _ := m["reason"].(string)
			switch {
			case err == nil && m["status"] == "NDIS_STATUS_SUCCESS" && m["id"] == float64(i):
				c.served.Add(1)
			case err == nil && m["status"] == "NDIS_STATUS_RESOURCES" && strings.Contains(reason, "too many connections"):
				c.refused.Add(1)
			default:
				c.note(fmt.Sprintf("%v %q", err, line))
			}
		}()
	}
	begun.Wait()
	return c
}

func (c *Crowd) note(s string) {
	c.mu.Lock()
	c.other = append(c.other, s)
	c.mu.Unlock()
}

// Finish has every client send the end of its request and read the
// answer. It returns how many were served, how many were refused with
// NDIS_STATUS_RESOURCES for too many connections, and what each of the
// others got instead.
func (c *Crowd) Finish() (served, refused int64, other []string) {
	close(c.finish)
	c.wg.Wait()
	return c.served.Load(), c.refused.Load(), c.other
}

// Close closes the clients' connections.
func (c *Crowd) Close() {
	for _, conn := range c.conns {
		if conn != nil {
			conn.Close()
		}
	}
}
