package coreyield

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestClassPerState(t *testing.T) {
	for _, c := range []struct {
		m    Mechanism
		s    State
		want linuxsched.Class
	}{
		{CgroupIdle, Static, linuxsched.Other(-20)},
		{CgroupIdle, Ready, linuxsched.FIFO(7)},
		{CgroupIdle, Lent, linuxsched.Other(-20)},
		{CgroupShares, Lent, linuxsched.Other(-20)},
		{SchedIdle, Static, linuxsched.Other(-20)},
		{SchedIdle, Ready, linuxsched.FIFO(7)},
		{SchedIdle, Lent, linuxsched.Idle()},
	} {
		if got := c.m.Class(c.s, 7); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.m, c.s, got, c.want)
		}
	}
}

// writeTree builds a fake cpu hierarchy: dir -> "runtime period".
func writeTree(t *testing.T, tree map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for dir, v := range tree {
		rt, period, _ := strings.Cut(v, " ")
		d := filepath.Join(root, dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, val := range map[string]string{"cpu.rt_runtime_us": rt, "cpu.rt_period_us": period} {
			if err := os.WriteFile(filepath.Join(d, f), []byte(val+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestRTBudgetFitsUnderTheRoot(t *testing.T) {
	root := writeTree(t, map[string]string{
		".":         "950000 1000000",
		"other":     "200000 1000000",
		"half":      "250000 500000",  // ratio 0.5
		"x-dp1":     "950000 1000000", // ours from an earlier run: not counted
		"no-budget": "0 1000000",
		"x-dp2":     "0 1000000",
	})
	rt, ok, err := rtBudget(root, map[string]bool{"x-dp1": true, "x-dp2": true}, 2)
	// Free: 0.95 - 0.2 - 0.5 = 0.25, two groups: 125000 each, less the margin.
	if err != nil || !ok || rt != 124000 {
		t.Fatalf("budget %d %v %v, want 124000", rt, ok, err)
	}
	full := writeTree(t, map[string]string{".": "950000 1000000", "hog": "950000 1000000"})
	if _, _, err := rtBudget(full, nil, 1); err == nil || !strings.Contains(err.Error(), "no RT budget left") {
		t.Fatalf("no budget: %v", err)
	}
	unlimited := writeTree(t, map[string]string{".": "-1 1000000"})
	if rt, _, err := rtBudget(unlimited, nil, 1); err != nil || rt != 999000 {
		t.Fatalf("unlimited root: %d %v", rt, err)
	}
	if _, ok, err := rtBudget(t.TempDir(), nil, 1); err != nil || ok {
		t.Fatalf("no RT group scheduling: %v %v", ok, err)
	}
}

// scratchThread is an OS thread that blocks until the test ends.
func scratchThread(t *testing.T) int {
	t.Helper()
	tidc := make(chan int)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its class
		tidc <- unix.Gettid()
		<-release
	}()
	t.Cleanup(func() { close(release) })
	return <-tidc
}

func TestSetStatesOnARealGroup(t *testing.T) {
	testenv.NeedRoot(t, "cpu cgroups and SCHED_FIFO")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1")
	}
	if _, err := Setup("bad/name", []int{1}); err == nil {
		t.Fatal("a prefix with a slash accepted")
	}
	tid := scratchThread(t)
	if err := linuxsched.Pin(tid, 1); err != nil {
		t.Fatal(err)
	}
	s, err := Setup(fmt.Sprintf("tyield%d", os.Getpid()), []int{1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Release(tid); _ = s.Remove() })
	if s.Mechanism() == SchedIdle {
		if GroupsPossible() {
			t.Fatalf("a v1 cpu hierarchy is mounted, yet the per-core groups failed: %s", s.Reason())
		}
		testenv.Require(t, "no per-core group here: %s", s.Reason())
	}
	g, ok := s.Group(1)
	if !ok {
		t.Fatal("no group for CPU 1")
	}
	from, err := s.Place(os.Getpid(), tid, 1)
	if err != nil || from == "" {
		t.Fatalf("place: from %q %v", from, err)
	}
	if from, err := s.Place(os.Getpid(), tid, 1); err != nil || from != "" {
		t.Fatalf("second place moved it again: %q %v", from, err)
	}
	check := func(st State) {
		t.Helper()
		c, err := linuxsched.Get(tid)
		if err != nil || c != s.Mechanism().Class(st, 5) {
			t.Fatalf("%s: class %s %v", st, c, err)
		}
		if lent, err := g.IsLent(); err != nil || lent != (st == Lent) {
			t.Fatalf("%s: group lent %v %v", st, lent, err)
		}
	}
	for _, st := range []State{Ready, Lent, Static, Ready} {
		if changed, err := s.Apply(tid, 1, st, 5); err != nil || !changed {
			t.Fatalf("apply %s: changed %v %v", st, changed, err)
		}
		check(st)
		if changed, err := s.Apply(tid, 1, st, 5); err != nil || changed {
			t.Fatalf("apply %s again: changed %v %v", st, changed, err)
		}
	}
	if err := s.Lend(tid, 1); err != nil {
		t.Fatal(err)
	}
	check(Lent)
	if err := s.Reclaim(tid, 1, 5); err != nil {
		t.Fatal(err)
	}
	check(Ready)
	// A dead lender: Restore gives the core back from the path alone.
	if err := s.Lend(tid, 1); err != nil {
		t.Fatal(err)
	}
	if err := Restore(g.Dir, tid, 5); err != nil {
		t.Fatal(err)
	}
	check(Ready)

	if err := s.Release(tid); err != nil {
		t.Fatal(err)
	}
	if cg, err := s.CgroupOf(tid); err != nil || cg != from {
		t.Fatalf("released into %q %v, want %q", cg, err, from)
	}
	if c, _ := linuxsched.Get(tid); c != linuxsched.Other(0) {
		t.Fatalf("released class %s", c)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
		t.Fatalf("group left: %v", err)
	}
}

// TestFallbackSchedIdleOnARealThread: on a host without a v1 cpu hierarchy
// (forced here by giving Setup no mounts) lending still works, degraded: the
// lent thread alone is SCHED_IDLE, a reclaimed one SCHED_FIFO, no group is
// made, and Reason says why.
func TestFallbackSchedIdleOnARealThread(t *testing.T) {
	testenv.NeedRoot(t, "SCHED_FIFO and SCHED_IDLE on a real thread")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1")
	}
	s := setupOn(linuxsched.CgroupMounts{}, fmt.Sprintf("tyieldv2%d", os.Getpid()), []int{1})
	if s.Mechanism() != SchedIdle || s.Reason() != NoGroupsReason {
		t.Fatalf("no v1 cpu hierarchy: mechanism %s, reason %q", s.Mechanism(), s.Reason())
	}
	if _, ok := s.Group(1); ok {
		t.Fatal("a group without a hierarchy")
	}
	tid := scratchThread(t)
	if err := linuxsched.Pin(tid, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Release(tid) })
	if from, err := s.Place(os.Getpid(), tid, 1); err != nil || from != "" {
		t.Fatalf("place without groups moved the thread: %q %v", from, err)
	}
	for _, st := range []State{Ready, Lent, Static, Ready} {
		if _, err := s.Apply(tid, 1, st, 5); err != nil {
			t.Fatalf("apply %s: %v", st, err)
		}
		if c, err := linuxsched.Get(tid); err != nil || c != SchedIdle.Class(st, 5) {
			t.Fatalf("%s: class %s %v, want %s", st, c, err, SchedIdle.Class(st, 5))
		}
	}
	if err := s.Lend(tid, 1); err != nil {
		t.Fatal(err)
	}
	if c, _ := linuxsched.Get(tid); c != linuxsched.Idle() {
		t.Fatalf("lent class %s, want SCHED_IDLE", c)
	}
	if err := s.Reclaim(tid, 1, 5); err != nil {
		t.Fatal(err)
	}
	if c, _ := linuxsched.Get(tid); c != linuxsched.FIFO(5) {
		t.Fatalf("reclaimed class %s, want SCHED_FIFO 5", c)
	}
}
