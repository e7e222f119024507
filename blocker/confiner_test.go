package blocker

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// fakeActuator records moves; a seam beside the real pool (see the
// integration test in confine_test.go).
type fakeActuator struct {
	confined map[int]bool
	gone     map[int]bool
	refuse   map[int]bool
	calls    []string
}

func newFakeActuator() *fakeActuator {
	return &fakeActuator{confined: map[int]bool{}, gone: map[int]bool{}, refuse: map[int]bool{}}
}

func (a *fakeActuator) Confine(pid int) (bool, error) {
	a.calls = append(a.calls, "confine "+itoa(pid))
	switch {
	case a.gone[pid]:
		return false, nil
	case a.refuse[pid]:
		return false, errors.New("not in the CP pool")
	}
	a.confined[pid] = true
	return true, nil
}

func (a *fakeActuator) Release(pid int) error {
	a.calls = append(a.calls, "release "+itoa(pid))
	delete(a.confined, pid)
	return nil
}

func (a *fakeActuator) Confined() ([]int, error) { return a.pids(), nil }

func (a *fakeActuator) pids() []int {
	var out []int
	for p := range a.confined {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

type fakeProcs map[string][]int

func (f fakeProcs) ByCommand(comm string) ([]int, error) { return f[comm], nil }

func itoa(n int) string { return strconv.Itoa(n) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func blame(tgid int, comm string, delay time.Duration, flags uint32) Event {
	return Event{Kind: KindBlame, CPU: 1, DPTID: 99, StampNs: 1, Delay: delay, PID: tgid, TGID: tgid, Flags: flags, Comm: comm, CgroupID: 7}
}

var inKernel = FlagInKernel | FlagSyscall

func newTestConfiner(t *testing.T, p Policy, procs Processes) (*Confiner, *scheduler.FakeClock, *fakeActuator) {
	t.Helper()
	clk := scheduler.NewFakeClock(t0)
	act := newFakeActuator()
	c, err := NewConfiner(p, clk, act, procs)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk, act
}

func observe(t *testing.T, c *Confiner, evs ...Event) {
	t.Helper()
	for _, ev := range evs {
		if err := c.Observe(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func tick(t *testing.T, c *Confiner) {
	t.Helper()
	if err := c.Tick(); err != nil {
		t.Fatal(err)
	}
}

func TestConfinerThreshold(t *testing.T) {
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 3, Window: time.Second}, nil)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel), blame(10, "storm", time.Millisecond, inKernel))
	observe(t, c, blame(10, "storm", 5*time.Millisecond, 0)) // user mode: recorded, not counted
	if len(act.confined) != 0 {
		t.Fatalf("confined %v after 2 in-kernel blames, want none", act.pids())
	}
	clk.Advance(1500 * time.Millisecond) // the first two fall out of the window
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel), blame(10, "storm", time.Millisecond, inKernel))
	if len(act.confined) != 0 {
		t.Fatalf("confined %v with blames spread over more than the window", act.pids())
	}
	observe(t, c, blame(10, "storm", 2*time.Millisecond, inKernel))
	if !slices.Equal(act.pids(), []int{10}) {
		t.Fatalf("confined %v, want [10] after 3 in-kernel blames within the window", act.pids())
	}
	bs := c.Blockers()
	if len(bs) != 1 {
		t.Fatalf("Blockers() = %+v", bs)
	}
	b := bs[0]
	if b.Count != 6 || b.InKernel != 5 || b.Worst != 5*time.Millisecond || b.Total != 11*time.Millisecond ||
		b.Comm != "storm" || b.CgroupID != 7 || !b.ConfinedUntil.Equal(clk.Now().Add(DefaultBackoff)) ||
		!b.First.Equal(t0) || !b.Last.Equal(clk.Now()) {
		t.Fatalf("Blocker = %+v", b)
	}
	if c.ConfinedCount() != 1 || !slices.Equal(c.WatchedCommands(), []string{"storm"}) {
		t.Fatalf("ConfinedCount %d, WatchedCommands %v", c.ConfinedCount(), c.WatchedCommands())
	}
}

func TestConfinerBackoffDoublesAndReleases(t *testing.T) {
	p := Policy{MinBlames: 1, Backoff: time.Second, MaxBackoff: 4 * time.Second}
	c, clk, act := newTestConfiner(t, p, nil)
	var told []Change
	c.OnChange(func(ch Change) {
		_ = c.ConfinedCount() // may call back in: told after the lock is gone
		told = append(told, ch)
	})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
		if !act.confined[10] {
			t.Fatalf("round %d: not confined", i)
		}
		cmd := c.Commands()[0]
		if cmd.Backoff != want || cmd.Strikes != i+1 {
			t.Fatalf("round %d: back-off %v strikes %d, want %v and %d", i, cmd.Backoff, cmd.Strikes, want, i+1)
		}
		clk.Advance(want - time.Millisecond)
		tick(t, c)
		if !act.confined[10] {
			t.Fatalf("round %d: released before its back-off ended", i)
		}
		clk.Advance(time.Millisecond)
		tick(t, c)
		if act.confined[10] || len(c.WatchedCommands()) != 0 {
			t.Fatalf("round %d: still confined (%v, watched %v) after the back-off", i, act.pids(), c.WatchedCommands())
		}
		if b := c.Blockers()[0]; !b.ConfinedUntil.IsZero() {
			t.Fatalf("round %d: released blocker still shows confined until %v", i, b.ConfinedUntil)
		}
	}
	if len(told) != 8 || !told[0].Confined || told[0].TGID != 10 || !told[0].Until.Equal(t0.Add(time.Second)) || told[1].Confined {
		t.Fatalf("told %+v, want confined/released pairs for pid 10", told)
	}
	// Clear for longer than the longest back-off: the next one starts over.
	clk.Advance(p.MaxBackoff + time.Second)
	tick(t, c)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if cmd := c.Commands()[0]; cmd.Backoff != time.Second || cmd.Strikes != 1 {
		t.Fatalf("after a long clear spell: back-off %v strikes %d, want 1s and 1", cmd.Backoff, cmd.Strikes)
	}
}

func TestConfinerSiblings(t *testing.T) {
	procs := fakeProcs{"storm": {10, 11, 12}, "other": {20}}
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Backoff: time.Second}, procs)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if !slices.Equal(act.pids(), []int{10, 11, 12}) {
		t.Fatalf("confined %v, want the blocker and its same-command siblings [10 11 12]", act.pids())
	}
	// A sibling that appears during the back-off is caught at the next check.
	procs["storm"] = append(procs["storm"], 13)
	clk.Advance(100 * time.Millisecond)
	tick(t, c)
	if !slices.Equal(act.pids(), []int{10, 11, 12, 13}) {
		t.Fatalf("confined %v after a recheck, want 13 added", act.pids())
	}
	if n := len(c.Blockers()); n != 4 {
		t.Fatalf("Blockers() lists %d, want the blamed one and 3 siblings", n)
	}
	// A child forked by a confined process starts confined (cgroup
	// semantics): it joins the back-off and is released with it.
	act.confined[14] = true
	tick(t, c)
	clk.Advance(time.Second)
	tick(t, c)
	if len(act.confined) != 0 {
		t.Fatalf("confined %v after the back-off, want all released, the forked child too", act.pids())
	}
	// One nobody accounts for with no back-off running is released at once.
	act.confined[15] = true
	tick(t, c)
	if len(act.confined) != 0 {
		t.Fatalf("confined %v with no back-off running, want it released", act.pids())
	}
}

func TestConfinerExec(t *testing.T) {
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Backoff: time.Second}, nil)
	exec := func(tgid int, comm string, cgroup uint64) Event {
		return Event{Kind: KindExec, CPU: 0, StampNs: 1, PID: tgid, TGID: tgid, Comm: comm, CgroupID: cgroup}
	}
	observe(t, c, exec(30, "vm-step", 7))
	if len(act.confined) != 0 {
		t.Fatalf("exec of an unknown command confined %v", act.pids())
	}
	observe(t, c, blame(10, "vm-step", time.Millisecond, inKernel))
	act.gone[10] = true // short-lived: it finished before any move
	observe(t, c, exec(31, "vm-step", 7), exec(32, "vm-step", 0), exec(33, "vm-step", 8), exec(34, "other", 7))
	if !slices.Equal(act.pids(), []int{10, 31, 32}) {
		t.Fatalf("confined %v, want 31 (same command and cgroup) and 32 (cgroup unknown) next to 10; not 33 (other cgroup) nor 34", act.pids())
	}
	clk.Advance(time.Second)
	tick(t, c)
	observe(t, c, exec(35, "vm-step", 7))
	if act.confined[35] {
		t.Fatal("exec after the back-off ended was confined")
	}
}

func TestConfinerKernelThreadsNeverMoved(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, fakeProcs{"kworker/1:2": {40}})
	for range 5 {
		observe(t, c, blame(40, "kworker/1:2", time.Millisecond, FlagInKernel|FlagKernelThread|FlagPreempted))
	}
	if len(act.calls) != 0 {
		t.Fatalf("actuator called for a kernel thread: %v", act.calls)
	}
	bs := c.Blockers()
	if len(bs) != 1 || !bs[0].Kernel || bs[0].Count != 5 || !bs[0].ConfinedUntil.IsZero() {
		t.Fatalf("Blockers() = %+v, want the kernel thread reported, not confined", bs)
	}
}

func TestConfinerVanishedAndRefused(t *testing.T) {
	procs := fakeProcs{"svc": {50, 51}}
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1}, procs)
	act.gone[50] = true
	act.refuse[51] = true
	err := c.Observe(blame(50, "svc", time.Millisecond, inKernel))
	if err == nil || !strings.Contains(err.Error(), "pid 51") {
		t.Fatalf("Observe = %v, want the refusal of sibling 51 named", err)
	}
	for _, b := range c.Blockers() {
		if b.TGID == 50 {
			t.Fatalf("vanished pid 50 still listed: %+v", b)
		}
	}
	procs["svc"] = []int{51} // 50 is gone from /proc too
	calls := len(act.calls)
	clk.Advance(100 * time.Millisecond)
	tick(t, c)
	if len(act.calls) != calls {
		t.Fatalf("recheck retried a refused process: %v", act.calls[calls:])
	}
}

func TestConfinerSetActive(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, nil)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if err := c.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if len(act.confined) != 0 || c.ConfinedCount() != 0 {
		t.Fatalf("inactive: still confined %v", act.pids())
	}
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if len(act.confined) != 0 {
		t.Fatalf("inactive confiner confined %v", act.pids())
	}
	if b := c.Blockers(); len(b) != 1 || b[0].Count != 2 {
		t.Fatalf("inactive: blame not recorded: %+v", b)
	}
	if err := c.SetActive(true); err != nil {
		t.Fatal(err)
	}
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if !act.confined[10] {
		t.Fatal("re-activated confiner did not confine")
	}
}

func TestPolicyValidate(t *testing.T) {
	err := Policy{MinBlames: -1, Window: -1, Backoff: 2 * time.Second, MaxBackoff: time.Second, Recheck: -1, MaxTracked: -1}.Validate()
	for _, key := range []string{"min_blames", "window", "max_backoff", "recheck", "max_tracked"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %v, want %s named", err, key)
		}
	}
	if _, err := NewConfiner(Policy{}, scheduler.RealClock{}, newFakeActuator(), nil); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
}

// TestConfinerRefusedBlockerLearnsNothing: a blamed process the pool
// refuses (outside it) starts no back-off for its command and is not tried
// again before MaxBackoff has passed.
func TestConfinerRefusedBlockerLearnsNothing(t *testing.T) {
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, MaxBackoff: 10 * time.Second}, fakeProcs{"go": {60, 61}})
	act.refuse[60] = true
	if err := c.Observe(blame(60, "go", time.Millisecond, inKernel)); err == nil || !strings.Contains(err.Error(), "pid 60") {
		t.Fatalf("Observe = %v, want the refusal named", err)
	}
	if cmds := c.Commands(); len(cmds) != 0 || len(act.confined) != 0 {
		t.Fatalf("after a refusal: commands %+v, confined %v; want none (sibling 61 untouched)", cmds, act.pids())
	}
	calls := len(act.calls)
	observe(t, c, blame(60, "go", time.Millisecond, inKernel))
	if len(act.calls) != calls {
		t.Fatalf("retried a refused process at once: %v", act.calls[calls:])
	}
	clk.Advance(11 * time.Second)
	_ = c.Observe(blame(60, "go", time.Millisecond, inKernel))
	if len(act.calls) != calls+1 {
		t.Fatalf("calls %v, want one retry after MaxBackoff", act.calls)
	}
}
