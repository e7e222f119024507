package blocker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// cpCore and dpCore follow this machine's layout: CPU 0 for CP, CPU 1 DP.
const cpCore, dpCore = 0, 1

// Helper modes: the test binary re-executes itself to play a kernel-heavy
// CP process, or a child it forks.
const helperEnv = "TAICHI_BLOCKER_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "storm":
		stormHelper()
		os.Exit(0)
	case "sleep":
		// A forked child: lives until its parent's stdin pipe closes.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(3)
}

// stormHelper runs system calls that spend long stretches in the kernel:
// a dentry storm (STORM=mmap: large populated mmap/munmap instead). It stops when stdin
// closes (the test ended or died) or after a minute. The line "fork" on
// stdin makes it start a child and print "child PID".
func stormHelper() {
	stop := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		var children []*exec.Cmd
		for sc.Scan() {
			if sc.Text() != "fork" {
				continue
			}
			c := exec.Command(os.Args[0])
			c.Env = append(os.Environ(), helperEnv+"=sleep")
			in, _ := c.StdinPipe()
			_ = in // closed when this process exits
			if err := c.Start(); err != nil {
				fmt.Println("error:", err)
				continue
			}
			children = append(children, c)
			fmt.Println("child", c.Process.Pid)
		}
		for _, c := range children {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		close(stop)
	}()
	dir, err := os.MkdirTemp("", "taichi-blocker-storm-")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	fmt.Println("ready")
	deadline := time.Now().Add(time.Minute)
	for round := 0; time.Now().Before(deadline); round++ {
		select {
		case <-stop:
			return
		default:
		}
		if os.Getenv("STORM") == "mmap" {
			b, err := unix.Mmap(-1, 0, 64<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
			if err == nil {
				_ = unix.Munmap(b)
			}
			continue
		}
		dentryRound(dir, round)
	}
}

// dentryRound creates, unlinks and looks up (now negative) dentries in a
// directory of their own and removes it: stress-ng's dentry storm, whose
// kernel paths hold the CPU for long stretches.
func dentryRound(parent string, round int) {
	dir := filepath.Join(parent, strconv.Itoa(round))
	if err := unix.Mkdir(dir, 0o700); err != nil {
		return
	}
	const n = 2048
	for i := range n {
		if fd, err := unix.Open(filepath.Join(dir, strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY, 0o600); err == nil {
			_ = unix.Close(fd)
		}
	}
	var st unix.Stat_t
	for i := range n {
		_ = unix.Unlink(filepath.Join(dir, strconv.Itoa(i)))
		_ = unix.Stat(filepath.Join(dir, "x"+strconv.Itoa(i)), &st)
	}
	_ = unix.Rmdir(dir)
}

// storm is a running stormHelper pinned to one CPU.
type storm struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	pid   int
}

// startStorm runs the storm helper pinned to cpu with taskset, and stops
// it at cleanup.
func startStorm(t testing.TB, cpu int) *storm {
	t.Helper()
	taskset := testenv.NeedTool(t, "taskset", "util-linux")
	c := exec.Command(taskset, "-c", strconv.Itoa(cpu), os.Args[0])
	c.Env = append(os.Environ(), helperEnv+"=storm")
	c.Stderr = os.Stderr
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	s := &storm{cmd: c, stdin: in, lines: bufio.NewScanner(out), pid: c.Process.Pid}
	t.Cleanup(func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	})
	if line := s.line(t); line != "ready" {
		t.Fatalf("storm helper: %q, want ready", line)
	}
	return s
}

func (s *storm) line(t testing.TB) string {
	t.Helper()
	if !s.lines.Scan() {
		t.Fatalf("storm helper %d ended: %v", s.pid, s.lines.Err())
	}
	return s.lines.Text()
}

// fork makes the storm start a child and returns the child's pid.
func (s *storm) fork(t testing.TB) int {
	t.Helper()
	if _, err := fmt.Fprintln(s.stdin, "fork"); err != nil {
		t.Fatal(err)
	}
	line := s.line(t)
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "child "))
	if err != nil {
		t.Fatalf("storm helper: %q, want child PID", line)
	}
	return pid
}

// dpThread is a SCHED_FIFO thread pinned to a CPU that sleeps a period and
// wakes, as a DP loop waiting for packets does. It records how late each
// wake ran (its own measurement, beside the tracer's).
type dpThread struct {
	tid  int
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	lateness []time.Duration
}

func startDPThread(t testing.TB, cpu int, period time.Duration) *dpThread {
	t.Helper()
	d := &dpThread{stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(d.done)
		runtime.LockOSThread() // never unlocked: the thread exits with its policy
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ready <- fmt.Errorf("pin DP thread to CPU %d: %w", cpu, err)
			return
		}
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			ready <- fmt.Errorf("make DP thread SCHED_FIFO: %w", err)
			return
		}
		d.tid = unix.Gettid()
		ready <- nil
		for {
			select {
			case <-d.stop:
				return
			default:
			}
			var now unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
			due := time.Duration(now.Nano()) + period
			ts := unix.NsecToTimespec(int64(due))
			for {
				err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
			d.mu.Lock()
			d.lateness = append(d.lateness, time.Duration(now.Nano())-due)
			d.mu.Unlock()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d
}

func (d *dpThread) close() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

// takeLateness returns the lateness recorded since the last call.
func (d *dpThread) takeLateness() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lateness
	d.lateness = nil
	return l
}

func percentile(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

// requireTracer opens a tracer or skips when the test cannot load one.
func requireTracer(t testing.TB, opts Options) *Tracer {
	t.Helper()
	testenv.NeedRoot(t, "loading BPF programs")
	tr, err := Open(opts)
	if errors.Is(err, ErrNotSupported) {
		testenv.Require(t, "kernel cannot run the tracer: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}
