package dpdk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// A guard is a small separate process that reclaims lent lcores if the
// daemon dies: the daemon tells it, through a pipe, which threads it is
// about to lend and which it reclaimed; when the pipe's write end closes
// without a clean "done" (the kernel closes it when the daemon dies, even
// on SIGKILL), the guard gives every thread still lent its core back: the
// core's cpu group loses its idleness and the thread is SCHED_FIFO again.
// That bounds a crash's damage to the guard's wake-up, not the daemon's
// restart.

// lendRecord is the guard's record of a lent thread; group is the DP core's
// cpu cgroup directory ("" without one) and comes last, whole.
func lendRecord(tid, prio int, group string) string {
	if group == "" {
		return fmt.Sprintf("lend %d %d", tid, prio)
	}
	return fmt.Sprintf("lend %d %d %s", tid, prio, group)
}

type lentThread struct {
	prio  int
	group string
}

// RunGuard reads lend records from r ("lend TID PRIO [GROUP]", "reclaim
// TID", "done") until EOF, then reclaims what is still lent unless "done"
// came last. It is the body of `taichi dpdk guard`.
func RunGuard(r io.Reader) error {
	lent := map[int]lentThread{}
	clean := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		clean = false
		switch {
		case f[0] == "lend" && len(f) >= 3:
			tid, err1 := strconv.Atoi(f[1])
			prio, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil || tid <= 0 || linuxsched.CheckFIFOPriority(prio) != nil {
				return fmt.Errorf("guard: bad record %q", sc.Text())
			}
			group := ""
			if len(f) > 3 {
				group = strings.SplitN(strings.TrimSpace(sc.Text()), " ", 4)[3]
				if !filepath.IsAbs(group) {
					return fmt.Errorf("guard: bad record %q: group is not an absolute path", sc.Text())
				}
			}
			lent[tid] = lentThread{prio: prio, group: group}
		case f[0] == "reclaim" && len(f) == 2:
			tid, err := strconv.Atoi(f[1])
			if err != nil {
				return fmt.Errorf("guard: bad record %q", sc.Text())
			}
			delete(lent, tid)
		case f[0] == "done" && len(f) == 1:
			clean = true
		default:
			return fmt.Errorf("guard: bad record %q", sc.Text())
		}
	}
	if clean {
		return nil
	}
	var errs []error
	for tid, l := range lent {
		if err := coreyield.Restore(l.group, tid, l.prio); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// guardProc is the daemon's end of a running guard.
type guardProc struct {
	mu   sync.Mutex
	w    *os.File
	cmd  *exec.Cmd
	done chan struct{}
}

// startGuard runs argv (a command that calls RunGuard on its stdin, such
// as `taichi dpdk guard`) in its own process group, so a terminal's Ctrl-C
// to the daemon does not take the guard along.
func startGuard(argv []string) (*guardProc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start guard %v: %w", argv, err)
	}
	r.Close()
	g := &guardProc{w: w, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(g.done) }()
	return g, nil
}

func (g *guardProc) send(format string, args ...any) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w == nil {
		return errors.New("guard closed")
	}
	_, err := fmt.Fprintf(g.w, format+"\n", args...)
	return err
}

// close ends the guard cleanly (nothing is lent any more).
func (g *guardProc) close() error {
	err := g.send("done")
	g.mu.Lock()
	if g.w != nil {
		g.w.Close()
		g.w = nil
	}
	g.mu.Unlock()
	select {
	case <-g.done:
	case <-time.After(2 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	return err
}

// abandon closes the pipe without "done", as a daemon crash would.
func (g *guardProc) abandon() {
	g.mu.Lock()
	if g.w != nil {
		g.w.Close()
		g.w = nil
	}
	g.mu.Unlock()
}
