package vcpu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// cpCore and dpCore follow this machine's layout: CPU 0 for CP, CPU 1 DP.
const cpCore, dpCore = 0, 1

var nonName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// uniqueName gives every test its own cgroup and process names, so that
// tests of other packages running at the same time never collide.
func uniqueName(t testing.TB) string {
	n := nonName.ReplaceAllString(strings.TrimPrefix(t.Name(), "Test"), "")
	if len(n) > 24 {
		n = n[:24]
	}
	return fmt.Sprintf("taichi-t%d-%s", os.Getpid(), n)
}

// requireCgroups skips unless the test can change real cgroups: root, two
// online CPUs and a usable cpuset+cpu layout.
func requireCgroups(t testing.TB) Mounts {
	t.Helper()
	testenv.NeedRoot(t, "cgroups and a SCHED_FIFO writer")
	online, err := linuxsched.OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(online, cpCore) || !slices.Contains(online, dpCore) {
		testenv.Require(t, "needs CPUs %d and %d online (online: %s)", cpCore, dpCore, cpuset.Format(online))
	}
	m, err := DetectMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.choose(); err != nil {
		testenv.Require(t, "no usable cgroup layout: %v", err)
	}
	return m
}

// startPool starts a pool named after the test and destroys it at cleanup.
func startPool(t testing.TB, o Options) *cgroupPool {
	t.Helper()
	if o.Name == "" {
		o.Name = uniqueName(t)
	}
	if o.CPCores == nil {
		o.CPCores = []int{cpCore}
	}
	if o.DPCores == nil {
		o.DPCores = []int{dpCore}
	}
	p, err := newCgroupPool(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p
}

func procStatus(t testing.TB, pid int) procfs.ProcStatus {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.NewStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func allowedCPUs(t testing.TB, pid int) []int {
	t.Helper()
	var cpus []int
	for _, c := range procStatus(t, pid).CpusAllowedList {
		cpus = append(cpus, int(c))
	}
	return cpus
}

// procStat is pid's /proc/PID/stat.
func procStat(t testing.TB, pid int) procfs.ProcStat {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// lastCPU is field 39 of /proc/PID/stat: the CPU the task last ran on.
func lastCPU(t testing.TB, pid int) int {
	t.Helper()
	return int(procStat(t, pid).Processor)
}

// eventually polls cond for a few seconds: migrations happen at the load
// balancer's pace, and this VM is sometimes descheduled for milliseconds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func skipErrors(err error) []*SkipError {
	var out []*SkipError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if s, ok := e.(*SkipError); ok {
			out = append(out, s)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		walk(errors.Unwrap(e))
	}
	walk(err)
	return out
}

func itoa(n int) string { return fmt.Sprint(n) }

// requireRunning checks that a hog is alive, not stopped, and still
// getting CPU time (a process-wide figure: the spinning goroutine may be on
// any of its threads).
func requireRunning(t testing.TB, pid int) {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	first, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(first.State, "TtZX") {
		t.Fatalf("pid %d is in state %q, want runnable", pid, first.State)
	}
	eventually(t, fmt.Sprintf("pid %d gets CPU time", pid), func() bool {
		now, err := p.Stat()
		return err == nil && now.UTime+now.STime > first.UTime+first.STime
	})
}

// parentProc is a running "parent" helper: a process that forks a child
// when told to.
type parentProc struct {
	pid  int
	fork func() int // starts the child and returns its pid
}

// startParent runs the parent helper and kills it and its child at cleanup.
func startParent(t *testing.T) parentProc {
	t.Helper()
	cmd := testenv.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=parent")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var kid int
	t.Cleanup(func() {
		if kid > 0 {
			_ = syscall.Kill(kid, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	fork := func() int {
		t.Helper()
		if _, err := fmt.Fprintln(in, "fork now"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if _, serr := fmt.Sscan(line, &kid); err != nil || serr != nil {
			t.Fatalf("parent said %q, %v", line, err)
		}
		return kid
	}
	return parentProc{pid: cmd.Process.Pid, fork: fork}
}
