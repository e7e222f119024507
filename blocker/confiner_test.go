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

// worst runs the SLO rule's confinement for cpu 1 over a 1s window and
// reports whether it confined someone.
func worst(t *testing.T, c *Confiner) bool {
	t.Helper()
	_, ok, err := c.ConfineWorst(1, time.Second, 0, 0, 0.875)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// release runs the SLO rule's release and reports whether it released.
func release(t *testing.T, c *Confiner) bool {
	t.Helper()
	_, ok, err := c.ReleaseOne()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func blameOn(cpu, tgid int, comm string, delay time.Duration) Event {
	ev := blame(tgid, comm, delay, inKernel)
	ev.CPU = cpu
	return ev
}

func tick(t *testing.T, c *Confiner) {
	t.Helper()
	if err := c.Tick(); err != nil {
		t.Fatal(err)
	}
}

// Blame alone moves nothing; ConfineWorst confines the process whose
// in-kernel paths delayed that core's DP threads most within the window,
// one per call, and only with at least MinBlames blames there.
func TestConfinerConfinesTheMostBlamedOnTheCore(t *testing.T) {
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Window: time.Second}, nil)
	observe(t, c, blameOn(1, 10, "storm", time.Millisecond), blameOn(1, 10, "storm", time.Millisecond))
	observe(t, c, blame(10, "storm", 5*time.Millisecond, 0)) // user mode: recorded, not counted
	observe(t, c, blameOn(1, 20, "mild", 200*time.Microsecond))
	observe(t, c, blameOn(2, 30, "elsewhere", 9*time.Millisecond))
	if len(act.confined) != 0 {
		t.Fatalf("blame alone confined %v", act.pids())
	}
	why, ok, err := c.ConfineWorst(1, time.Second, 0, 0, 0.875)
	if err != nil || !ok || !slices.Equal(act.pids(), []int{10}) {
		t.Fatalf("ConfineWorst = %v %v, confined %v; want [10], the most blamed on cpu 1", ok, err, act.pids())
	}
	if why.TGID != 10 || why.CPU != 1 || why.Blamed != 2*time.Millisecond || why.Blames != 2 || why.Budget != 0.875 {
		t.Errorf("reason %+v, want pid 10, 2 blames, 2ms, budget 0.875", why)
	}
	if cmd := c.Commands()[0]; cmd.Comm != "storm" || cmd.Why != why {
		t.Errorf("command %+v does not keep the reason", cmd)
	}
	if !worst(t, c) || !slices.Equal(act.pids(), []int{10, 20}) {
		t.Fatalf("second call confined %v, want 20 next", act.pids())
	}
	if worst(t, c) {
		t.Fatalf("third call confined %v: pid 30 was blamed on cpu 2 only", act.pids())
	}
	// Blame older than the window does not count.
	clk.Advance(1500 * time.Millisecond)
	if _, ok, _ := c.ConfineWorst(2, time.Second, 0, 0, 1); ok {
		t.Fatal("blame from 1.5s ago confined pid 30")
	}
	bs := c.Blockers()
	if len(bs) != 3 {
		t.Fatalf("Blockers() = %+v", bs)
	}
	b := bs[0]
	if b.TGID != 30 || bs[1].TGID != 10 || bs[1].Count != 3 || bs[1].InKernel != 2 || bs[1].Worst != 5*time.Millisecond ||
		bs[1].Total != 7*time.Millisecond || bs[1].CgroupID != 7 || !bs[1].ConfinedUntil.Equal(t0.Add(DefaultBackoff)) {
		t.Fatalf("Blockers() = %+v", bs)
	}
	if c.ConfinedCount() != 2 || !slices.Equal(c.WatchedCommands(), []string{"mild", "storm"}) {
		t.Fatalf("ConfinedCount %d, WatchedCommands %v", c.ConfinedCount(), c.WatchedCommands())
	}
}

// MinBlames is a floor: a process with fewer blames on the core is no
// candidate, however long its one delay.
func TestConfinerMinBlamesFloor(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 2}, nil)
	observe(t, c, blameOn(1, 10, "once", 50*time.Millisecond), blameOn(1, 20, "twice", time.Millisecond), blameOn(1, 20, "twice", time.Millisecond))
	if !worst(t, c) || !slices.Equal(act.pids(), []int{20}) || worst(t, c) {
		t.Fatalf("confined %v, want only [20]", act.pids())
	}
}

// A process none of whose delays reached minDelay is no candidate,
// however many it caused: only a long hold puts packets above the mark.
func TestConfinerMinDelay(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, nil)
	for range 20 {
		observe(t, c, blameOn(1, 10, "many-short", 150*time.Microsecond))
	}
	observe(t, c, blameOn(1, 20, "one-long", 800*time.Microsecond))
	if _, ok, _ := c.ConfineWorst(1, time.Second, 750*time.Microsecond, 0, 1); !ok || !slices.Equal(act.pids(), []int{20}) {
		t.Fatalf("confined %v, want [20]: 10's 3ms in all came in holds of 150µs", act.pids())
	}
	if _, ok, _ := c.ConfineWorst(1, time.Second, 750*time.Microsecond, 0, 1); ok {
		t.Fatalf("confined %v, want 10 left alone", act.pids())
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
		if !worst(t, c) || !act.confined[10] {
			t.Fatalf("round %d: not confined", i)
		}
		cmd := c.Commands()[0]
		if cmd.Backoff != want || cmd.Strikes != i+1 {
			t.Fatalf("round %d: back-off %v strikes %d, want %v and %d", i, cmd.Backoff, cmd.Strikes, want, i+1)
		}
		clk.Advance(want - time.Millisecond)
		tick(t, c)
		if release(t, c) || !act.confined[10] {
			t.Fatalf("round %d: released before its back-off ended", i)
		}
		clk.Advance(time.Millisecond)
		tick(t, c)
		if !act.confined[10] {
			t.Fatalf("round %d: released by the clock; only the SLO rule releases", i)
		}
		if !release(t, c) || act.confined[10] || len(c.WatchedCommands()) != 0 {
			t.Fatalf("round %d: still confined (%v, watched %v) after the release", i, act.pids(), c.WatchedCommands())
		}
		if b := c.Blockers()[0]; !b.ConfinedUntil.IsZero() {
			t.Fatalf("round %d: released blocker still shows confined until %v", i, b.ConfinedUntil)
		}
	}
	if len(told) != 8 || !told[0].Confined || told[0].TGID != 10 || !told[0].Until.Equal(t0.Add(time.Second)) || told[1].Confined {
		t.Fatalf("told %+v, want confined/released pairs for pid 10", told)
	}
	if rel := c.Released(); len(rel) != 4 || rel[0].Comm != "storm" || rel[0].Confined != time.Second || rel[3].Confined != 4*time.Second {
		t.Fatalf("Released() = %+v", rel)
	}
	// Clear for longer than the longest back-off: the next one starts over.
	clk.Advance(p.MaxBackoff + time.Second)
	tick(t, c)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	worst(t, c)
	if cmd := c.Commands()[0]; cmd.Backoff != time.Second || cmd.Strikes != 1 {
		t.Fatalf("after a long clear spell: back-off %v strikes %d, want 1s and 1", cmd.Backoff, cmd.Strikes)
	}
}

// Two commands due: the one whose back-off ended first goes first, one
// per call.
func TestConfinerReleasesOneAtATime(t *testing.T) {
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Backoff: time.Second}, nil)
	observe(t, c, blameOn(1, 10, "first", time.Millisecond))
	worst(t, c)
	clk.Advance(100 * time.Millisecond)
	observe(t, c, blameOn(1, 20, "second", time.Millisecond))
	worst(t, c)
	clk.Advance(2 * time.Second)
	if !release(t, c) || !slices.Equal(act.pids(), []int{20}) {
		t.Fatalf("after one release: confined %v, want [20]", act.pids())
	}
	if !release(t, c) || len(act.confined) != 0 || release(t, c) {
		t.Fatalf("after two releases: confined %v", act.pids())
	}
}

func TestConfinerSiblings(t *testing.T) {
	procs := fakeProcs{"storm": {10, 11, 12}, "other": {20}}
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Backoff: time.Second}, procs)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	worst(t, c)
	if !slices.Equal(act.pids(), []int{10, 11, 12}) {
		t.Fatalf("confined %v, want the blocker and its same-command siblings [10 11 12]", act.pids())
	}
	// A sibling that appears while confined is caught at the next check.
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
	release(t, c)
	if len(act.confined) != 0 {
		t.Fatalf("confined %v after the release, want all released, the forked child too", act.pids())
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
	// Two instances blamed: the command's habit (one exited instance alone
	// is not learned: TestConfineWorstSkipsAnExitedOneOff).
	observe(t, c, blame(10, "vm-step", time.Millisecond, inKernel), blame(11, "vm-step", 500*time.Microsecond, inKernel))
	if len(act.confined) != 0 {
		t.Fatalf("exec of an unconfined command, or blame alone, confined %v", act.pids())
	}
	act.gone[10], act.gone[11] = true, true // short-lived: they finished before any move
	worst(t, c)
	observe(t, c, exec(31, "vm-step", 7), exec(32, "vm-step", 0), exec(33, "vm-step", 8), exec(34, "other", 7))
	if !slices.Equal(act.pids(), []int{31, 32}) {
		t.Fatalf("confined %v, want 31 (same command and cgroup) and 32 (cgroup unknown); not 33 (other cgroup) nor 34", act.pids())
	}
	// Past its back-off a command stays confined until the rule releases it.
	clk.Advance(time.Second)
	tick(t, c)
	observe(t, c, exec(35, "vm-step", 7))
	if !act.confined[35] {
		t.Fatal("exec before the release escaped confinement")
	}
	release(t, c)
	observe(t, c, exec(36, "vm-step", 7))
	if act.confined[36] {
		t.Fatal("exec after the release was confined")
	}
}

func TestConfinerKernelThreadsNeverMoved(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, fakeProcs{"kworker/1:2": {40}})
	for range 5 {
		observe(t, c, blame(40, "kworker/1:2", time.Millisecond, FlagInKernel|FlagKernelThread|FlagPreempted))
	}
	if worst(t, c) || len(act.calls) != 0 {
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
	// 51 delayed the DP thread too: the command's habit, not one exited
	// instance's, so it is learned and its living sibling tried.
	observe(t, c, blame(50, "svc", time.Millisecond, inKernel), blame(51, "svc", 200*time.Microsecond, inKernel))
	_, _, err := c.ConfineWorst(1, time.Second, 0, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "pid 51") {
		t.Fatalf("ConfineWorst = %v, want the refusal of sibling 51 named", err)
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
	worst(t, c)
	if err := c.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if len(act.confined) != 0 || c.ConfinedCount() != 0 {
		t.Fatalf("inactive: still confined %v", act.pids())
	}
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if worst(t, c) || len(act.confined) != 0 {
		t.Fatalf("inactive confiner confined %v", act.pids())
	}
	if b := c.Blockers(); len(b) != 1 || b[0].Count != 2 {
		t.Fatalf("inactive: blame not recorded: %+v", b)
	}
	if err := c.SetActive(true); err != nil {
		t.Fatal(err)
	}
	if !worst(t, c) || !act.confined[10] {
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
	observe(t, c, blame(60, "go", time.Millisecond, inKernel))
	if _, ok, err := c.ConfineWorst(1, time.Second, 0, 0, 1); ok || err == nil || !strings.Contains(err.Error(), "pid 60") {
		t.Fatalf("ConfineWorst = %v %v, want the refusal named", ok, err)
	}
	if cmds := c.Commands(); len(cmds) != 0 || len(act.confined) != 0 {
		t.Fatalf("after a refusal: commands %+v, confined %v; want none (sibling 61 untouched)", cmds, act.pids())
	}
	calls := len(act.calls)
	observe(t, c, blame(60, "go", time.Millisecond, inKernel))
	if worst(t, c) || len(act.calls) != calls {
		t.Fatalf("retried a refused process at once: %v", act.calls[calls:])
	}
	clk.Advance(11 * time.Second)
	observe(t, c, blame(60, "go", time.Millisecond, inKernel))
	_, _, _ = c.ConfineWorst(1, time.Second, 0, 0, 1)
	if len(act.calls) != calls+1 {
		t.Fatalf("calls %v, want one retry after MaxBackoff", act.calls)
	}
}

// A policy switch starts the SLO rule afresh, as it starts the budget
// horizon afresh: every process is released and every command forgotten
// (strikes too), so nothing is confined again when confinement is back.
func TestConfinerForgetsAcrossDeactivation(t *testing.T) {
	procs := fakeProcs{"storm": {10}}
	c, clk, act := newTestConfiner(t, Policy{MinBlames: 1, Backoff: 10 * time.Second}, procs)
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if !worst(t, c) || !act.confined[10] {
		t.Fatal("not confined")
	}
	if err := c.SetActive(false); err != nil {
		t.Fatal(err)
	}
	if len(act.confined) != 0 || len(c.Commands()) != 0 || len(c.WatchedCommands()) != 0 {
		t.Fatalf("inactive: confined %v, commands %+v", act.pids(), c.Commands())
	}
	clk.Advance(time.Second)
	if err := c.SetActive(true); err != nil {
		t.Fatal(err)
	}
	procs["storm"] = []int{10, 11}
	tick(t, c)
	if len(act.confined) != 0 {
		t.Fatalf("re-activated: confined %v without new evidence", act.pids())
	}
	// Blame from before the switch still counts as evidence (it is what
	// happened); a new confinement starts at the first back-off.
	observe(t, c, blame(10, "storm", time.Millisecond, inKernel))
	if !worst(t, c) || c.Commands()[0].Strikes != 1 || c.Commands()[0].Backoff != 10*time.Second {
		t.Fatalf("after re-activation: confined %v, commands %+v", act.pids(), c.Commands())
	}
}

// Worst names the task ConfineWorst then confines, and moves nothing
// itself.
func TestWorstNamesTheNextConfinementWithoutMoving(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, fakeProcs{})
	if _, ok := c.Worst(1, time.Second, 0, 0); ok {
		t.Fatal("Worst named a task before any blame")
	}
	observe(t, c, blame(10, "mild", 200*time.Microsecond, inKernel), blame(20, "storm", 900*time.Microsecond, inKernel))
	why, ok := c.Worst(1, time.Second, 0, 0)
	if !ok || why.TGID != 20 || why.Comm != "storm" {
		t.Fatalf("Worst = %+v, %v; want the storm (pid 20)", why, ok)
	}
	if len(act.calls) != 0 {
		t.Fatalf("Worst moved something: %v", act.calls)
	}
	if _, ok := c.Worst(1, time.Second, time.Millisecond, 0); ok {
		t.Fatal("Worst named a task that never held a DP thread for minDelay")
	}
	got, ok, err := c.ConfineWorst(1, time.Second, 0, 0, 1)
	if err != nil || !ok || got.TGID != why.TGID {
		t.Fatalf("ConfineWorst = %+v, %v, %v; want pid %d as Worst named", got, ok, err, why.TGID)
	}
}

// The worst blocker exited, and no other process of its command delayed
// the DP threads in the window: its command is not learned (its living
// namesakes are not confined), and the next candidate is confined instead.
func TestConfineWorstSkipsAnExitedOneOff(t *testing.T) {
	procs := fakeProcs{"ip": {60, 61}, "storm": {70}}
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, procs)
	act.gone[60] = true
	observe(t, c, blame(60, "ip", 2*time.Millisecond, inKernel), blame(70, "storm", time.Millisecond, inKernel))
	why, ok, err := c.ConfineWorst(1, time.Second, 0, 0, 1)
	if !ok || err != nil || why.TGID != 70 {
		t.Fatalf("ConfineWorst = %+v, %v, %v; want the storm (70) confined after the exited ip (60)", why, ok, err)
	}
	for _, call := range act.calls {
		if strings.Contains(call, "61") {
			t.Errorf("ip's living namesake 61 was confined: %v", act.calls)
		}
	}
	for _, cmd := range c.Commands() {
		if cmd.Comm == "ip" && !cmd.Until.IsZero() {
			t.Errorf("ip learned and under back-off after one exited instance: %+v", cmd)
		}
	}
}

// A task whose holds add up to less than minTotal over the window is not a
// candidate, however long its longest hold.
func TestConfineWorstNeedsMinTotal(t *testing.T) {
	c, _, act := newTestConfiner(t, Policy{MinBlames: 1}, fakeProcs{})
	observe(t, c, blame(10, "mild", 300*time.Microsecond, inKernel), blame(10, "mild", 150*time.Microsecond, inKernel))
	if _, ok := c.Worst(1, time.Second, 0, 500*time.Microsecond); ok {
		t.Fatal("Worst named a task blamed 450µs in all against a 500µs minimum")
	}
	if _, ok, err := c.ConfineWorst(1, time.Second, 0, 500*time.Microsecond, 1); ok || err != nil || len(act.calls) != 0 {
		t.Fatalf("ConfineWorst confined a task under the minimum: %v %v %v", ok, err, act.calls)
	}
	if _, ok, err := c.ConfineWorst(1, time.Second, 0, 400*time.Microsecond, 1); !ok || err != nil {
		t.Fatalf("ConfineWorst at a 400µs minimum: %v %v, want the task confined", ok, err)
	}
}
