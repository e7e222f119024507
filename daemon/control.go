package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
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
// status; only root peers (SO_PEERCRED uid 0) may change state.
type controlServer struct {
	d  *Daemon
	ln *net.UnixListener
	wg sync.WaitGroup
}

func listenControl(d *Daemon, path string) (*controlServer, error) {
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
	s := &controlServer{d: d, ln: ln}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
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
	b, _ := json.Marshal(resp)
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
		st := s.d.Status()
		return Response{OK: true, Status: &st}
	case "set-policy":
		if uid != 0 {
			return Response{Error: "set-policy: permission denied (only root may change state)"}
		}
		if err := s.d.SetPolicy(req.Policy); err != nil {
			return Response{Error: "set-policy: " + err.Error()}
		}
		st := s.d.Status()
		return Response{OK: true, Status: &st}
	case "blockers":
		return Response{OK: true, Blockers: s.d.Blockers()}
	default:
		return Response{Error: fmt.Sprintf("cmd: unknown command %q (want status, set-policy or blockers)", req.Cmd)}
	}
}

func (s *controlServer) close() {
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
