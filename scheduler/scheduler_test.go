package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedRecorder is a recorder safe to read while Run calls it.
type lockedRecorder struct {
	mu sync.Mutex
	r  recorder
}

func (l *lockedRecorder) Lend(cpu int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Lend(cpu)
}
func (l *lockedRecorder) Reclaim(cpu int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Reclaim(cpu)
}
func (l *lockedRecorder) SetYield(cpu int, after int64, slice time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.SetYield(cpu, after, slice)
}
func (l *lockedRecorder) Wake(cpu int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Wake(cpu)
}
func (l *lockedRecorder) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.take()
}

type running struct {
	s     *Scheduler
	clock *FakeClock
	act   *lockedRecorder
	stop  func() error
}

func startScheduler(t *testing.T, policy PolicyName, tweak func(*Params)) *running {
	t.Helper()
	p := DefaultParams()
	p.Policy = policy
	if tweak != nil {
		tweak(&p)
	}
	clock := NewFakeClock(t0)
	act := &lockedRecorder{}
	s, err := New([]int{1, 3}, act, p, WithClock(clock), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	r := &running{s: s, clock: clock, act: act}
	r.stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { r.stop() })
	r.sync(t)
	return r
}

func (r *running) sync(t *testing.T) {
	t.Helper()
	// Run may not have started yet: retry until it answers.
	for {
		err := r.s.Sync(context.Background())
		if err == nil {
			return
		}
		if !errors.Is(err, ErrNotRunning) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPolicySwitchAtRunTimeReappliesSlowPath(t *testing.T) {
	r := startScheduler(t, PolicyStatic, nil)
	eq(t, "static start", r.act.take(), []string{"reclaim 1", "yield 1 -1 50µs", "reclaim 3", "yield 3 -1 50µs"})

	if err := r.s.SetPolicy(PolicyTaichi); err != nil {
		t.Fatal(err)
	}
	eq(t, "to taichi", r.act.take(), []string{"lend 1", "yield 1 1 5ms", "lend 3", "yield 3 1 5ms"})
	r.s.Yielded(1, at(ms(1)))
	r.s.Yielded(3, at(ms(1)))
	r.s.Woke(3, at(ms(1)+us(400)), WakeRx, us(20))
	r.sync(t)
	if s := r.s.Snapshot(); s.Cores[0].State != Lent || s.Cores[1].State != DPActive || s.Policy != PolicyTaichi {
		t.Fatalf("before switch: %v %v %s", s.Cores[0].State, s.Cores[1].State, s.Policy)
	}
	r.act.take()

	// Back to static while core 1 is lent: stop yielding, wake it, then
	// shrink the cpuset; core 3 only needs the cpuset write.
	if err := r.s.SetPolicy(PolicyStatic); err != nil {
		t.Fatal(err)
	}
	eq(t, "to static", r.act.take(), []string{"reclaim 1", "yield 1 -1 50µs", "wake 1", "reclaim 3", "yield 3 -1 50µs"})
	r.s.Woke(1, at(ms(2)), WakeProbe, 0)
	r.sync(t)
	s := r.s.Snapshot()
	if s.Cores[0].State != DPActive || s.Cores[0].Reclaims["policy"] != 1 || s.Cores[0].LentTotal != ms(1) {
		t.Errorf("core 1 after switch: %v reclaims %v lent %v", s.Cores[0].State, s.Cores[0].Reclaims, s.Cores[0].LentTotal)
	}
	if s.Cores[0].CPUSetReclaims != 1 || s.Cores[1].CPUSetReclaims != 1 || s.Cores[0].CPUSetLends != 1 {
		t.Errorf("cpuset counters %+v", s.Cores)
	}
	if err := r.s.SetPolicy("fifo"); err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("unknown policy error %v", err)
	}
	if r.s.Policy() != PolicyStatic {
		t.Errorf("policy changed by a bad name: %s", r.s.Policy())
	}
}

func TestRunFiresTimersFromTheClock(t *testing.T) {
	r := startScheduler(t, PolicyTaichi, func(p *Params) { p.SLO, p.SLOMinSamples = us(100), 1 })
	r.act.take()
	r.s.Yielded(1, at(0))
	r.s.Woke(1, at(us(500)), WakeRx, ms(1))
	r.s.ResidenceSample(1, at(us(500)), lateResidence(10, 1, ms(1)))
	r.sync(t)
	eq(t, "trip", r.act.take(), []string{"reclaim 1", "yield 1 -1 50µs"})
	r.clock.Advance(time.Second + us(499))
	r.sync(t)
	eq(t, "not yet", r.act.take(), nil)
	r.clock.Advance(us(1))
	r.sync(t)
	eq(t, "resume", r.act.take(), []string{"lend 1", "yield 1 64 50µs"})
}

// The same script gives the same actions and snapshot every time.
func TestRunIsDeterministic(t *testing.T) {
	script := func(r *running) {
		for i := range 50 {
			base := ms(i)
			cpu := []int{1, 3}[i%2]
			r.s.Idle(cpu, at(base), 100)
			r.s.Yielded(cpu, at(base+us(10)))
			switch i % 5 {
			case 0:
				r.s.Probe(cpu, at(base+us(40)))
				r.s.Woke(cpu, at(base+us(50)), WakeProbe, 0)
			case 1:
				r.s.Woke(cpu, at(base+us(60)), WakeTimeout, 0)
			default:
				r.s.Woke(cpu, at(base+us(300)), WakeRx, us(10*i))
				r.s.ResidenceSample(cpu, at(base+us(300)), lateResidence(1, uint64(i/32), us(10*i)))
			}
			r.s.Load(cpu, at(base+us(900)), LoadSample{Interval: ms(1), BusyFraction: 0.2, Packets: 10})
		}
		r.s.Harvested(1, at(ms(60)), ms(42))
	}
	var runs [2]string
	for i := range runs {
		r := startScheduler(t, PolicyTaichi, func(p *Params) { p.SLO, p.SLOMinSamples = us(300), 5 })
		script(r)
		r.sync(t)
		snap := r.s.Snapshot()
		snap.At = time.Time{}
		runs[i] = fmt.Sprintf("%q\n%+v", r.act.take(), snap)
		if err := r.stop(); err != nil {
			t.Fatalf("Run returned %v on cancel", err)
		}
		// CPU 1's 15th latency sample (i=32, 320µs) is its first above the
		// 300µs SLO and the p99 of 15 is their maximum: the guard benches it,
		// so its last 8 yields (i=34..48) are not lent: 25-8 lends.
		if c := snap.Cores[0]; snap.HarvestedTotal != ms(42) || c.Lends != 17 || c.GuardTrips != 1 {
			t.Errorf("harvested %v lends %d guard trips %d", snap.HarvestedTotal, c.Lends, c.GuardTrips)
		}
	}
	if runs[0] != runs[1] {
		t.Errorf("two runs differ:\n%s\n---\n%s", runs[0], runs[1])
	}
}

func TestSnapshotAndPostAreSafeConcurrently(t *testing.T) {
	r := startScheduler(t, PolicyTaichi, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				cpu := []int{1, 3}[g%2]
				r.s.Yielded(cpu, time.Time{})
				r.s.Woke(cpu, time.Time{}, WakeRx, us(i%50))
				_ = r.s.Snapshot()
			}
		}()
	}
	wg.Wait()
	r.sync(t)
	s := r.s.Snapshot()
	var handled uint64
	for _, c := range s.Cores {
		handled += c.WakeLatency.Count
	}
	if handled+s.DroppedEvents < 2000 {
		t.Errorf("wakes handled %d + dropped %d < 2000 posted", handled, s.DroppedEvents)
	}
}

func TestPostDropsWhenQueueFull(t *testing.T) {
	s, err := New([]int{1}, &recorder{}, DefaultParams(), WithClock(NewFakeClock(t0)), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	for range QueueSize {
		if !s.Probe(1, time.Time{}) {
			t.Fatal("dropped before the queue was full")
		}
	}
	if s.Probe(1, time.Time{}) {
		t.Fatal("posted into a full queue")
	}
	if got := s.Snapshot().DroppedEvents; got != 1 {
		t.Errorf("dropped %d, want 1", got)
	}
	if err := s.Sync(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Sync without Run: %v", err)
	}
	// Before Run, SetPolicy just records the choice.
	if err := s.SetPolicy(PolicyDynamic); err != nil || s.Policy() != PolicyDynamic {
		t.Errorf("SetPolicy before Run: %v, policy %s", err, s.Policy())
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	bad := DefaultParams()
	bad.SliceMin = 0
	cases := []struct {
		name string
		cpus []int
		act  Actuator
		p    Params
		want string
	}{
		{"params", []int{1}, &recorder{}, bad, "scheduler.slice_min"},
		{"no actuator", []int{1}, nil, DefaultParams(), "nil Actuator"},
		{"no cpus", nil, &recorder{}, DefaultParams(), "no DP cores"},
		{"dup cpu", []int{1, 1}, &recorder{}, DefaultParams(), "twice"},
		{"negative cpu", []int{-1}, &recorder{}, DefaultParams(), "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cpus, tc.act, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// A batch is handled like the same events posted one by one, in order, and
// each yield or wake in it is timed from its At to the engine's decision.
func TestHandleBatchHandlesInOrderAndTimesDecisions(t *testing.T) {
	r := startScheduler(t, PolicyDynamic, nil)
	r.act.take()
	start := r.clock.Now()
	r.clock.Advance(3 * time.Millisecond) // the events reach the engine 3 ms after they happened
	if !r.s.HandleBatch([]Event{
		{Kind: EvYield, CPU: 1, At: start},
		{Kind: EvWake, CPU: 1, At: start.Add(time.Millisecond), Wake: WakeRx},
		{Kind: EvYield, CPU: 3, At: start.Add(2 * time.Millisecond)},
		{Kind: EvProbe, CPU: 3, At: start.Add(2 * time.Millisecond)},
	}) {
		t.Fatal("batch dropped by an empty queue")
	}
	r.sync(t)
	snap := r.s.Snapshot()
	for _, c := range snap.Cores {
		if c.Lends != 1 {
			t.Errorf("cpu %d: %d lends, want 1 (yield handled)", c.CPU, c.Lends)
		}
	}
	if want := Lent; snap.Cores[0].State == want {
		t.Errorf("cpu 1 still %s after its wake: the batch's order was lost", want)
	}
	d := snap.DecisionLatency
	if d.Count != 3 {
		t.Fatalf("decisions timed %d, want 3 (two yields and a wake; probes are not DP loop events)", d.Count)
	}
	// Waits of 3, 2 and 1 ms: the histogram's bounds never underestimate.
	if d.Max != 3*time.Millisecond || d.Sum != 6*time.Millisecond || d.P99 < 3*time.Millisecond {
		t.Errorf("decision latency max %v sum %v p99 %v, want 3ms, 6ms, >=3ms", d.Max, d.Sum, d.P99)
	}
}

// A batch handled outside Run's goroutine that sets a timer (a probe's
// reclaim arms the reclaim timeout) gets that timer run by Run: the
// timeout fires once the clock passes it, with no other message to wake Run.
func TestHandleBatchTimersRunWithoutAnotherMessage(t *testing.T) {
	r := startScheduler(t, PolicyTaichi, nil)
	start := r.clock.Now()
	r.s.HandleBatch([]Event{
		{Kind: EvYield, CPU: 1, At: start},
		{Kind: EvProbe, CPU: 1, At: start},
	})
	if st := r.s.Snapshot().Cores[0].State; st != Reclaiming {
		t.Fatalf("cpu 1 %s after yield and probe, want %s", st, Reclaiming)
	}
	timeout := r.s.Params().ReclaimTimeout
	deadline := time.Now().Add(time.Minute)
	for r.s.Snapshot().Cores[0].ReclaimTimeouts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reclaim timeout never fired: Run did not pick up the batch's timer")
		}
		r.clock.Advance(timeout) // Run may not have re-armed yet: advance again until it fires
		time.Sleep(time.Millisecond)
	}
}
