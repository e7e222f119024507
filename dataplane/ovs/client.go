package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Client talks to an OVS daemon's unixctl socket directly, with the
// JSON-RPC 1.0 protocol ovs-appctl speaks (one JSON object per message, no
// other framing), so a daemon can poll it every few milliseconds without
// spawning ovs-appctl. The connection stays open between calls and is
// re-dialled after an error. Calls are serialised; a Client is safe for
// concurrent use.
type Client struct {
	path string

	mu     sync.Mutex
	conn   net.Conn
	dec    *json.Decoder
	nextID uint64
}

// DefaultCallTimeout bounds a call whose context has no deadline.
const DefaultCallTimeout = 5 * time.Second

// NewClient returns a client for the unixctl socket at path; it connects on
// the first call.
func NewClient(path string) *Client { return &Client{path: path} }

// CommandError is an error the daemon answered with (an unknown command,
// bad arguments); the connection stays usable.
type CommandError struct {
	Method, Message string
}

func (e *CommandError) Error() string { return fmt.Sprintf("ovs unixctl %s: %s", e.Method, e.Message) }

type request struct {
	Method string   `json:"method"`
	Params []string `json:"params"`
	ID     uint64   `json:"id"`
}

type response struct {
	ID     *uint64         `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// Call runs one unixctl command (for example "dpif-netdev/pmd-stats-show")
// and returns its text output.
func (c *Client) Call(ctx context.Context, method string, params ...string) (string, error) {
	if params == nil {
		params = []string{} // the protocol wants an array, never null
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	reused := c.conn != nil
	out, sent, err := c.call(ctx, method, params)
	if err != nil && reused && !sent && ctx.Err() == nil {
		// The daemon closed the idle connection (restart): the request
		// never reached it, so sending it once more on a fresh one is safe.
		out, _, err = c.call(ctx, method, params)
	}
	return out, err
}

// call sends one request; sent reports whether the request was written
// (after that, a retry could run a command twice).
func (c *Client) call(ctx context.Context, method string, params []string) (out string, sent bool, err error) {
	if c.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", c.path)
		if err != nil {
			return "", false, fmt.Errorf("ovs unixctl: %w", err)
		}
		c.conn, c.dec = conn, json.NewDecoder(conn)
	}
	conn := c.conn
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	// Cancellation interrupts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.nextID++
	id := c.nextID
	req, err := json.Marshal(request{Method: method, Params: params, ID: id})
	if err != nil {
		return "", false, fmt.Errorf("ovs unixctl %s: %w", method, err)
	}
	if _, err := conn.Write(req); err != nil {
		c.closeLocked()
		return "", false, fmt.Errorf("ovs unixctl %s: %w", method, ctxErr(ctx, err))
	}
	var resp response
	if err := c.dec.Decode(&resp); err != nil {
		c.closeLocked()
		return "", true, fmt.Errorf("ovs unixctl %s: %w", method, ctxErr(ctx, err))
	}
	if resp.ID == nil || *resp.ID != id {
		c.closeLocked() // out of step: a fresh connection resynchronises
		got := "none"
		if resp.ID != nil {
			got = fmt.Sprint(*resp.ID)
		}
		return "", true, fmt.Errorf("ovs unixctl %s: reply id %s, want %d", method, got, id)
	}
	if len(resp.Error) > 0 && string(resp.Error) != "null" {
		var msg string
		if json.Unmarshal(resp.Error, &msg) != nil {
			msg = string(resp.Error)
		}
		return "", true, &CommandError{Method: method, Message: strings.TrimRight(msg, "\n")}
	}
	var result string
	if err := json.Unmarshal(resp.Result, &result); err != nil {
		return "", true, fmt.Errorf("ovs unixctl %s: result is not a string: %.100s", method, resp.Result)
	}
	return result, true, nil
}

// ctxErr turns a connection deadline error into the context's error: the
// deadline is only ever set from ctx, which expires at the same instant.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (c *Client) closeLocked() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.dec = nil, nil
	}
}

// Close closes the connection; a later call opens a new one.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
	return nil
}

// PMDStats returns the statistics of every PMD thread
// (dpif-netdev/pmd-stats-show), in OVS's order.
func (c *Client) PMDStats(ctx context.Context) ([]PMDStats, error) {
	out, err := c.Call(ctx, "dpif-netdev/pmd-stats-show")
	if err != nil {
		return nil, err
	}
	return ParsePMDStats(out)
}

// PMDPacketsCounter returns a counter of data-plane activity for lending
// decisions: the sum of "packets received" of the PMD threads on cores. It
// fails when one of the cores has no PMD thread. The sum restarts from zero
// when OVS recreates a PMD or its statistics are cleared; callers comparing
// successive readings should treat a decrease as activity.
func (c *Client) PMDPacketsCounter(cores []int) func() (uint64, error) {
	want := append([]int(nil), cores...)
	return func() (uint64, error) {
		stats, err := c.PMDStats(context.Background())
		if err != nil {
			return 0, err
		}
		var sum uint64
		for _, core := range want {
			found := false
			for _, s := range stats {
				if s.CoreID == core {
					sum += s.PacketsReceived
					found = true
				}
			}
			if !found {
				return 0, fmt.Errorf("ovs: no PMD thread on core %d", core)
			}
		}
		return sum, nil
	}
}
