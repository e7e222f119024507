package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/scheduler"
)

// The test binary re-executes itself as a control-socket client with
// another uid: CONTROL_CLIENT=socket makes it call status and set-policy
// and print both answers as JSON lines.
func TestMain(m *testing.M) {
	if sock := os.Getenv("CONTROL_CLIENT"); sock != "" {
		for _, req := range []Request{{Cmd: "status"}, {Cmd: "set-policy", Policy: "static"}} {
			resp, err := Call(sock, req)
			if resp == nil {
				resp = &Response{Error: fmt.Sprint(err)}
			}
			b, _ := json.Marshal(resp)
			fmt.Println(string(b))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stubTarget stands in for the Daemon behind a real socket.
type stubTarget struct {
	mu     sync.Mutex
	policy string
}

func (s *stubTarget) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{PID: os.Getpid(), Policy: scheduler.PolicyName(s.policy)}
}

func (s *stubTarget) SetPolicy(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = name
	return nil
}

func (s *stubTarget) Policy() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// worldDir is a directory others may traverse (t.TempDir is 0700), for a
// socket and a binary a non-root child must reach.
func worldDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "taichi-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asUser runs the test binary as uid:gid against sock and returns the
// answers to status and set-policy.
func asUser(t *testing.T, dir, sock string, uid, gid uint32) (status, set Response) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "CONTROL_CLIENT="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid %d: %v\n%s", uid, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("client output %q", out)
	}
	if err := json.Unmarshal([]byte(lines[0]), &status); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &set); err != nil {
		t.Fatal(err)
	}
	return status, set
}

// Through the real socket: root reads and changes; with control.group a
// non-root member (a child process with another uid) reads status but may
// not change state; without it the same child cannot connect at all.
func TestControlSocketPeers(t *testing.T) {
	testenv.NeedRoot(t, "a client process under another uid")
	g, err := user.LookupGroup("nogroup")
	if err != nil {
		testenv.Require(t, "no group nogroup to test control.group with: %v", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	const nobody = 65534
	dir := worldDir(t)

	target := &stubTarget{policy: "taichi"}
	sock := filepath.Join(dir, "grp.sock")
	s, err := serveControl(target, quietLog(), sock, "nogroup", maxControlClients)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var st unix.Stat_t
	if err := unix.Stat(sock, &st); err != nil || st.Mode&0o777 != 0o660 || st.Gid != uint32(gid) {
		t.Fatalf("socket with control.group: mode %o gid %d (%v); want 0660 gid %d", st.Mode&0o777, st.Gid, err, gid)
	}
	if resp, err := Call(sock, Request{Cmd: "set-policy", Policy: "dynamic"}); err != nil || resp.Status.Policy != "dynamic" {
		t.Fatalf("root set-policy: %+v, %v", resp, err)
	}
	status, set := asUser(t, dir, sock, nobody, uint32(gid))
	if !status.OK || status.Status == nil || status.Status.Policy != "dynamic" {
		t.Errorf("group member status: %+v", status)
	}
	if set.OK || !strings.Contains(set.Error, "permission denied") {
		t.Errorf("group member set-policy: %+v, want permission denied", set)
	}
	if got := target.Policy(); got != "dynamic" {
		t.Errorf("policy after a non-root set-policy = %s, want dynamic (unchanged)", got)
	}

	rootOnly := filepath.Join(dir, "root.sock")
	s2, err := serveControl(target, quietLog(), rootOnly, "", maxControlClients)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close()
	status, _ = asUser(t, dir, rootOnly, nobody, uint32(gid))
	if status.OK || !strings.Contains(status.Error, "permission denied") {
		t.Errorf("non-root status on a root-only socket: %+v, want permission denied", status)
	}
}

// More clients than the cap: the extra one gets a clear busy answer, and
// once a slot frees the next client is served.
func TestControlSocketBusyAnswer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	s, err := serveControl(&stubTarget{policy: "taichi"}, quietLog(), sock, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c) // connected, never asking: holds a slot
	}
	// Wait until both are being served (their slots taken).
	for len(s.slots) < 2 {
		time.Sleep(time.Millisecond)
	}
	if _, err := Call(sock, Request{Cmd: "status"}); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("third client: err = %v, want a busy answer", err)
	}
	for _, c := range held {
		c.Close()
	}
	for len(s.slots) > 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := Call(sock, Request{Cmd: "status"}); err != nil {
		t.Fatalf("after the slots freed: %v", err)
	}
}

// An accept that fails with EMFILE (descriptor limit reached) does not end
// the accept loop: once descriptors are available again, the waiting
// client is served.
func TestControlSocketSurvivesEMFILE(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	s, err := serveControl(&stubTarget{policy: "taichi"}, quietLog(), sock, "", maxControlClients)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// The client's socket exists before the limit is reached: connect
	// needs no new descriptor, the server's accept does.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	client := os.NewFile(uintptr(fd), "client")
	defer client.Close()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	limited := old
	limited.Cur = 256
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &limited); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	release := func() {
		for _, f := range fill {
			f.Close()
		}
		fill = nil
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	}
	defer release()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, unix.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		fill = append(fill, f)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		release()
		t.Fatal(err)
	}
	for s.acceptErrs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	release()
	conn, err := net.FileConn(client) // a net.Conn, so the deadline works
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(`{"cmd":"status"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil || !resp.OK {
		t.Fatalf("after %d failed accepts: %+v, %v; the accept loop gave up", s.acceptErrs.Load(), resp, err)
	}
}

func (s *stubTarget) Blockers() *BlockersStatus { return nil }
