package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Request is one control-socket request (a JSON line).
type Request struct {
	Cmd    string `json:"cmd"`              // "status" | "set-policy" | "blockers"
	Policy string `json:"policy,omitempty"` // for set-policy
}

// Response answers a Request (a JSON line).
type Response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Blockers answers "blockers".
	Blockers *BlockersStatus `json:"blockers,omitempty"`
}

// controlServer serves the control socket. Anyone who can connect may read
// status (root, or members of control.group when set); only root peers
// (SO_PEERCRED uid 0) may change state.
type controlServer struct {
	t     controlTarget
	log   *slog.Logger
	ln    *net.UnixListener
	wg    sync.WaitGroup
	slots chan struct{} // one per client being served
	done  chan struct{}
	// acceptErrs counts failed accepts (transient ones the loop survived).
	acceptErrs atomic.Int64
}

// controlTarget is what the socket serves: the Daemon.
type controlTarget interface {
	Status() Status
	SetPolicy(name string) error
	Blockers() *BlockersStatus
}

// maxControlClients caps clients served at once; more get a busy answer.
const maxControlClients = 16

func listenControl(d *Daemon, path, group string) (*controlServer, error) {
	return serveControl(d, d.log, path, group, maxControlClients)
}

func serveControl(t controlTarget, log *slog.Logger, path, group string, maxClients int) (*controlServer, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("control.group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("control.group: gid %q: %w", g.Gid, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control.socket: %w", err)
	}
	// A socket file left by a killed daemon: remove it only if nobody answers.
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control.socket: %s is in use by a running daemon", path)
		}
		os.Remove(path)
	}
	old := unix.Umask(0o177) // the socket is created 0600
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control.socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if gid >= 0 {
		// Group first, then the mode: the group never sees a socket it should not.
		if err := os.Chown(path, 0, gid); err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("control.group: %w", err)
		}
	}
	s := &controlServer{t: t, log: log, ln: ln, slots: make(chan struct{}, maxClients), done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// serve accepts until the listener closes. Any other accept error (EMFILE,
// ENFILE, ECONNABORTED, ENOBUFS) is transient: back off and keep serving,
// as net/http does, instead of leaving a running daemon without its socket.
func (s *controlServer) serve() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.acceptErrs.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("control socket accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-s.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.refuse(c)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.handle(c)
		}()
	}
}

// refuse answers a client over the cap. It reads the request first (briefly:
// this runs in the accept loop) so the client's write does not fail before
// it can read the answer.
func (s *controlServer) refuse(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	bufio.NewReader(io.LimitReader(c, 64<<10)).ReadBytes('\n')
	b, _ := json.Marshal(Response{Error: fmt.Sprintf("busy: %d clients are being served; try again", cap(s.slots))})
	c.Write(append(b, '\n'))
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}

func (s *controlServer) handle(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	uid, err := peerUID(c)
	if err != nil {
		return
	}
	line, err := bufio.NewReader(io.LimitReader(c, 64<<10)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	resp := s.dispatch(line, uid)
	b, err := json.Marshal(resp)
	if err != nil {
		// Say so rather than close silently (the client would read EOF).
		s.log.Error("control answer not encodable", "err", err)
		b, _ = json.Marshal(Response{Error: "daemon could not encode its answer: " + err.Error()})
	}
	c.Write(append(b, '\n'))
}

func (s *controlServer) dispatch(line []byte, uid uint32) Response {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Response{Error: "bad request: " + err.Error()}
	}
	switch req.Cmd {
	case "status":
		st := s.t.Status()
		return Response{OK: true, Status: &st}
	case "set-policy":
		if uid != 0 {
			return Response{Error: "set-policy: permission denied (only root may change state)"}
		}
		if err := s.t.SetPolicy(req.Policy); err != nil {
			return Response{Error: "set-policy: " + err.Error()}
		}
		st := s.t.Status()
		return Response{OK: true, Status: &st}
	case "blockers":
		return Response{OK: true, Blockers: s.t.Blockers()}
	default:
		return Response{Error: fmt.Sprintf("cmd: unknown command %q (want status, set-policy or blockers)", req.Cmd)}
	}
}

func (s *controlServer) close() {
	close(s.done)
	s.ln.Close()
	s.wg.Wait()
}

// ErrNotRunning means no daemon answers on the control socket.
var ErrNotRunning = errors.New("taichi daemon is not running")

// Call sends one request to the daemon at socket and returns its response.
func Call(socket string, req Request) (*Response, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no answer on %s)", ErrNotRunning, socket)
		}
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
