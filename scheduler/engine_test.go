package scheduler

import (
	"slices"
	"testing"
	"time"
)

func TestStaticNeverLends(t *testing.T) {
	h := newHarness(t, PolicyStatic, nil)
	eq(t, "start", h.act.take(), []string{"reclaim 1", "yield 1 -1 50µs"})
	// A yield racing the knob change: the loop blocks, but the core is not in
	// the cpuset, so it is IDLE (blocked), never LENT.
	h.idle(1, 0)
	h.yield(1, us(1))
	h.probe(1, us(2))
	h.wake(1, us(30), WakeRx, us(25))
	eq(t, "states", h.takeSeq(), []string{"1 DP_ACTIVE->IDLE", "1 IDLE->DP_ACTIVE"})
	eq(t, "actions", h.act.take(), nil)
	s := h.snap(1, us(40))
	if s.Lends != 0 || s.LentTotal != 0 || s.Hold != HoldPolicy || s.InCPUSet {
		t.Errorf("static core snapshot: lends=%d lent=%v hold=%q in_cpuset=%v", s.Lends, s.LentTotal, s.Hold, s.InCPUSet)
	}
}

func TestDynamicLendsEveryIdlePollAndIgnoresProbe(t *testing.T) {
	h := newHarness(t, PolicyDynamic, func(p *Params) { p.SLO = us(10); p.SLOMinSamples = 1 })
	h.residence(1, 0, 100, 100) // every packet late: dynamic has no guard
	eq(t, "start", h.act.take(), []string{"lend 1", "yield 1 1 5ms"})
	h.yield(1, 0)
	h.probe(1, us(10)) // no probe under dynamic: stays LENT
	h.wake(1, us(40), WakeRx, us(35))
	h.yield(1, us(50))
	h.wake(1, us(50)+ms(5), WakeTimeout, 0)
	eq(t, "states", h.takeSeq(), []string{
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
	})
	// No adaptation, no guard even though 35µs > SLO: the knobs never move.
	eq(t, "actions", h.act.take(), nil)
	s := h.snap(1, ms(10))
	if s.Reclaims["rx"] != 1 || s.Reclaims["slice_end"] != 1 || s.Reclaims["probe"] != 0 || s.GuardTrips != 0 || s.Probes != 1 {
		t.Errorf("reclaims %v guard trips %d probes %d", s.Reclaims, s.GuardTrips, s.Probes)
	}
	if want := us(40) + ms(5); s.LentTotal != want {
		t.Errorf("lent total %v, want %v", s.LentTotal, want)
	}
}

func TestTaichiTrickleGrowsSlicesAndLowersThreshold(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	eq(t, "start", h.act.take(), []string{"lend 1", "yield 1 1 5ms"})
	h.press(1)
	eq(t, "pressed", h.act.take(), []string{"yield 1 64 50µs"})
	h.idle(1, 0)
	h.yield(1, us(1))
	h.wake(1, us(51), WakeTimeout, 0) // slice 50µs expired undisturbed
	h.yield(1, us(52))
	h.wake(1, us(152), WakeTimeout, 0)
	h.yield(1, us(153))
	h.wake(1, us(353), WakeTimeout, 0)
	h.yield(1, us(354))
	h.wake(1, us(700), WakeRx, us(30)) // the trickle's packet
	eq(t, "actions", h.act.take(), []string{
		// Doubling slices; the threshold falls once for the whole gap.
		"yield 1 48 100µs", "yield 1 48 200µs", "yield 1 48 400µs",
		"yield 1 48 50µs", // reset by the packet; a long lend does not raise the threshold
	})
	eq(t, "states", h.takeSeq(), []string{
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
	})
	s := h.snap(1, ms(1))
	if s.Reclaims["slice_end"] != 3 || s.Reclaims["rx"] != 1 || s.Lends != 4 {
		t.Errorf("reclaims %v lends %d", s.Reclaims, s.Lends)
	}
	if want := us(50 + 100 + 200 + 346); s.LentTotal != want {
		t.Errorf("lent %v, want %v", s.LentTotal, want)
	}
	if s.WakeLatency.Count != 1 || s.WakeLatency.P99 != us(30) || s.WakeLatency.Buckets[5].Count != 1 || s.WakeLatency.Buckets[4].Count != 0 {
		t.Errorf("wake latency %+v", s.WakeLatency)
	}
	if s.Threshold != 48 || s.CurrentSlice != us(50) || s.State != DPActive {
		t.Errorf("threshold %d slice %v state %v", s.Threshold, s.CurrentSlice, s.State)
	}
}

func TestTaichiBurstsWithShortGapsRaiseThreshold(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.act.take()
	h.press(1)
	h.act.take()
	// Gaps of 20µs: each lend is cut short by the next burst.
	for i := range 3 {
		base := us(100 * i)
		h.yield(1, base)
		h.wake(1, base+us(20), WakeRx, us(15))
	}
	// Then a long quiet gap: the slice expires and the threshold eases.
	h.yield(1, us(400))
	h.wake(1, us(450), WakeTimeout, 0)
	eq(t, "actions", h.act.take(), []string{
		"yield 1 128 50µs", "yield 1 256 50µs", "yield 1 512 50µs",
		"yield 1 384 100µs",
	})
	s := h.snap(1, us(500))
	if s.Reclaims["rx"] != 3 || s.Reclaims["slice_end"] != 1 {
		t.Errorf("reclaims %v", s.Reclaims)
	}
}

func TestThresholdBounds(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.IdleThreshold, p.IdleThresholdMin, p.IdleThresholdMax = 16, 10, 40 })
	h.press(1)
	var got []int64
	tm := time.Duration(0)
	for range 3 { // rise: 32, 40 (cap), 40
		h.yield(1, tm)
		h.wake(1, tm+us(5), WakeRx, us(5))
		got = append(got, h.taichi(1).threshold)
		tm += us(100)
	}
	longGap := func() { // two slices expire, then a packet: one fall
		for range 2 {
			h.yield(1, tm)
			tm += time.Second
			h.wake(1, tm, WakeTimeout, 0)
		}
		h.yield(1, tm)
		tm += time.Second
		h.wake(1, tm, WakeRx, us(5))
		got = append(got, h.taichi(1).threshold)
	}
	for range 4 { // fall by a quarter per gap: 30, 23, 18, 14
		longGap()
	}
	for range 3 { // floor at 10: 11, 10, 10
		longGap()
	}
	h.yield(1, tm) // a short lend: 20
	h.wake(1, tm+us(5), WakeRx, us(5))
	tm += ms(1)
	for range 2 { // one gap of two slices: 15, 15
		h.yield(1, tm)
		tm += time.Second
		h.wake(1, tm, WakeTimeout, 0)
		got = append(got, h.taichi(1).threshold)
	}
	h.busy(1, tm) // DP work ends the gap: the next expiry counts again: 12
	h.yield(1, tm)
	tm += time.Second
	h.wake(1, tm, WakeTimeout, 0)
	got = append(got, h.taichi(1).threshold)
	if want := []int64{32, 40, 40, 30, 23, 18, 14, 11, 10, 10, 15, 15, 12}; !slices.Equal(got, want) {
		t.Errorf("threshold sequence %v, want %v", got, want)
	}
}

func TestSliceDoublesToMaxAndResets(t *testing.T) {
	for _, reset := range []WakeCause{WakeRx, WakeProbe} {
		t.Run(reset.String(), func(t *testing.T) {
			h := newHarness(t, PolicyTaichi, func(p *Params) { p.SliceMax = us(3200) })
			h.press(1)
			var slicesSeen []time.Duration
			tm := time.Duration(0)
			for range 8 {
				h.yield(1, tm)
				tm += h.taichi(1).slice
				h.wake(1, tm, WakeTimeout, 0)
				slicesSeen = append(slicesSeen, h.taichi(1).slice)
			}
			want := []time.Duration{us(100), us(200), us(400), us(800), us(1600), us(3200), us(3200), us(3200)}
			if !slices.Equal(slicesSeen, want) {
				t.Errorf("slices %v, want %v", slicesSeen, want)
			}
			h.yield(1, tm)
			h.wake(1, tm+ms(1), reset, us(10))
			if got := h.taichi(1).slice; got != us(50) {
				t.Errorf("slice after %v reclaim %v, want 50µs", reset, got)
			}
		})
	}
}

func TestProbeEarlyReclaim(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.act.take()
	h.press(1)
	h.act.take()
	h.yield(1, 0)
	h.probe(1, us(30))
	eq(t, "probe actions", h.act.take(), []string{"wake 1"})
	if st := h.core(1).state; st != Reclaiming {
		t.Fatalf("state after probe %v, want RECLAIMING", st)
	}
	h.probe(1, us(32)) // a second warning while reclaiming: nothing more to do
	h.wake(1, us(40), WakeProbe, 0)
	// Lent 40µs < ShortLend: the gap did not pay, wait longer next time.
	eq(t, "after wake", h.act.take(), []string{"yield 1 128 50µs"})
	eq(t, "states", h.takeSeq(), []string{"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE"})
	s := h.snap(1, us(50))
	if s.Reclaims["probe"] != 1 || s.Reclaims["rx"] != 0 || s.Probes != 2 || s.LentTotal != us(40) {
		t.Errorf("reclaims %v probes %d lent %v", s.Reclaims, s.Probes, s.LentTotal)
	}
}

func TestProbeSilenceReclaimsByRxOnly(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	tm := time.Duration(0)
	for range 20 {
		h.yield(1, tm)
		h.wake(1, tm+us(300), WakeRx, us(40))
		tm += ms(1)
	}
	s := h.snap(1, tm)
	if s.Reclaims["rx"] != 20 || s.Reclaims["probe"] != 0 || s.Reclaims["slice_end"] != 0 || s.Probes != 0 {
		t.Errorf("reclaims %v probes %d", s.Reclaims, s.Probes)
	}
	if s.WakeLatency.Count != 20 || s.WakeLatency.P50 != us(40) {
		t.Errorf("latency %+v", s.WakeLatency)
	}
}

// outlastRealtime keeps the realtime rule out of a test whose loop wakes
// and then reports nothing for longer than RealtimeWindow (the rule has
// its own tests).
func outlastRealtime(p *Params) { p.RealtimeWindow = time.Hour }

func TestSustainedLoadTakesCoreOutOfCPUSet(t *testing.T) {
	h := newHarness(t, PolicyTaichi, outlastRealtime)
	h.act.take()
	var heldAt, freedAt time.Duration
	for i := 1; i <= 20; i++ {
		busy := 0.95
		if i > 5 {
			busy = 0.1
		}
		h.load(1, ms(100*i), busy, ms(100))
		if h.taichi(1).loadHeld && heldAt == 0 {
			heldAt = ms(100 * i)
			// A yield racing the hold: blocked, not lent.
			h.yield(1, heldAt+us(1))
			h.wake(1, heldAt+us(20), WakeRx, us(2))
		}
		if heldAt != 0 && !h.taichi(1).loadHeld && freedAt == 0 {
			freedAt = ms(100 * i)
		}
	}
	// Held once half the window is covered (500ms) with mean 0.95; freed when
	// the mean over (100ms, 1100ms] drops to 0.44 < LowLoad.
	if heldAt != ms(500) || freedAt != ms(1100) {
		t.Errorf("held at %v freed at %v, want 500ms and 1.1s", heldAt, freedAt)
	}
	eq(t, "actions", h.act.take(), []string{"reclaim 1", "yield 1 -1 50µs", "lend 1", "yield 1 1 5ms"})
	eq(t, "states", h.takeSeq(), []string{"1 DP_ACTIVE->IDLE", "1 IDLE->DP_ACTIVE"})
	s := h.snap(1, ms(2000))
	if s.Reclaims["load"] != 1 || s.CPUSetReclaims != 1 || s.CPUSetLends != 2 || s.Lends != 0 || s.Packets != 2000 {
		t.Errorf("reclaims %v cpuset reclaims %d lends %d fast lends %d packets %d", s.Reclaims, s.CPUSetReclaims, s.CPUSetLends, s.Lends, s.Packets)
	}
}

func TestFlapLimiterHoldsCoreOutOfTheCPUSet(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.FlapLimit, p.FlapWindow, p.FlapHold = 3, ms(10), ms(100) })
	h.act.take()
	h.press(1)
	h.act.take()
	for i := range 4 {
		h.yield(1, ms(i))
		h.wake(1, ms(i)+us(200), WakeRx, us(10))
	}
	eq(t, "hold", h.act.take(), []string{"reclaim 1", "yield 1 -1 50µs", "wake 1"})
	if s := h.snap(1, ms(5)); s.FlapsHeld != 1 || !s.FlapHeld || s.Hold != HoldFlap || s.InCPUSet {
		t.Errorf("flap snapshot held=%v flaps=%d hold=%q in_cpuset=%v", s.FlapHeld, s.FlapsHeld, s.Hold, s.InCPUSet)
	}
	h.advance(ms(3) + ms(100) - 1)
	eq(t, "still held", h.act.take(), nil)
	h.advance(ms(3) + ms(100))
	eq(t, "released", h.act.take(), []string{"lend 1", "yield 1 64 50µs"})
	// Cycles spread wider than the window do not trip it.
	for i := range 8 {
		h.yield(1, ms(200+20*i))
		h.wake(1, ms(200+20*i)+us(200), WakeRx, us(10))
	}
	if s := h.snap(1, ms(400)); s.FlapsHeld != 1 {
		t.Errorf("flaps held %d after spread cycles, want 1", s.FlapsHeld)
	}
	eq(t, "no slow path", h.act.take(), nil)
}

func TestSLOGuardBackoffDoublesAndResumes(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) {
		p.SLO, p.SLOMinSamples, p.SLOWindow = us(100), 3, time.Second
		p.GuardBackoff, p.GuardBackoffMax, p.GuardForgive = time.Second, 4*time.Second, time.Minute
		outlastRealtime(p)
	})
	h.act.take()
	// A wake's latency, however high, is not what the guard judges.
	h.yield(1, 0)
	h.wake(1, us(200), WakeRx, ms(50))
	if h.taichi(1).benched {
		t.Fatal("a slow wake benched the core: the guard must judge packets' residence")
	}
	h.act.take()
	breach := func(from time.Duration) time.Duration {
		h.residence(1, from, 100, 2) // 2 of 100 packets late: p99 above the SLO
		return from
	}
	var backoffs []time.Duration
	tm := ms(1)
	for trip := 1; trip <= 4; trip++ {
		tripAt := breach(tm)
		c := h.taichi(1)
		if trips := h.core(1).reclaims[CauseGuard]; !c.benched || trips != uint64(trip) {
			t.Fatalf("trip %d: benched=%v trips=%d", trip, c.benched, trips)
		}
		backoffs = append(backoffs, c.benchedUntil.Sub(at(tripAt)))
		eq(t, "bench", h.act.take(), []string{"reclaim 1", "yield 1 -1 50µs"})
		// Benched: yields do not lend, nothing touches the cpuset, and
		// packets are on time (benching helps: the next breach benches
		// again, for twice as long).
		h.yield(1, tripAt+ms(1))
		h.wake(1, tripAt+ms(2), WakeRx, us(10))
		h.residence(1, tripAt+ms(3), 100, 0)
		h.advance(c.benchedUntil.Sub(t0) - 1)
		eq(t, "benched", h.act.take(), nil)
		h.advance(c.benchedUntil.Sub(t0))
		eq(t, "resume", h.act.take(), []string{"lend 1", "yield 1 64 50µs"})
		h.residence(1, c.benchedUntil.Sub(t0)+ms(1), 10, 0) // on time while lent again
		if c.benched {
			t.Fatalf("trip %d: late packets from the benched period benched the core again", trip)
		}
		tm = c.benchedUntil.Sub(t0) + ms(10)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}; !slices.Equal(backoffs, want) {
		t.Errorf("backoffs %v, want %v", backoffs, want)
	}
	// A breach long after the last bench starts over at GuardBackoff.
	tripAt := breach(tm + 2*time.Minute)
	if got := h.taichi(1).benchedUntil.Sub(at(tripAt)); got != time.Second {
		t.Errorf("backoff after forgive %v, want 1s", got)
	}
	s := h.snap(1, tripAt+ms(1))
	if s.GuardTrips != 5 || s.Reclaims["guard"] != 5 || !s.Benched || s.Hold != HoldGuard || s.InCPUSet {
		t.Errorf("snapshot trips=%d reclaims=%v benched=%v hold=%q", s.GuardTrips, s.Reclaims, s.Benched, s.Hold)
	}
}

func TestSLOGuardNeedsP99NotOneOutlier(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.SLO, p.SLOMinSamples = us(100), 100 })
	// Too few packets to judge: even all of them late does not trip.
	h.residence(1, 0, 50, 50)
	if h.core(1).reclaims[CauseGuard] != 0 {
		t.Fatal("50 packets, fewer than slo_min_samples, tripped the guard")
	}
	h.advance(2 * time.Second) // the window forgets them
	tm := 2 * time.Second
	for i := range 20 { // 200 packets, 2 late (1%): p99 within the SLO
		h.residence(1, tm, 10, uint64(i%10/9))
		tm += ms(10)
	}
	if h.core(1).reclaims[CauseGuard] != 0 {
		t.Fatalf("1%% late packets tripped the guard: window %d/%d", h.core(1).slo.Late(), h.core(1).slo.packets)
	}
	h.residence(1, tm, 10, 1) // 3 of 210 late: the p99 crosses
	if h.core(1).reclaims[CauseGuard] != 1 {
		t.Fatalf("3 of 210 late: trips %d", h.core(1).reclaims[CauseGuard])
	}
}

// A guard trip on a lent core takes the core out of the cpuset first and
// then stops the loop yielding and wakes it: a loop that spun SCHED_FIFO
// while a slow cpuset write kept CP queued on its core was stopped by the
// kernel for up to 50 ms.
func TestGuardWhileLentLeavesTheCPUSetThenWakesTheLoop(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.SLO, p.SLOMinSamples = us(100), 1 })
	h.act.take()
	h.yield(1, 0)
	// Late packets are reported while the core is lent.
	h.residence(1, us(10), 100, 5)
	eq(t, "order", h.act.take(), []string{"reclaim 1", "yield 1 -1 50µs", "wake 1"})
	h.wake(1, us(30), WakeProbe, 0)
	eq(t, "states", h.takeSeq(), []string{"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE"})
	if s := h.snap(1, us(40)); s.Reclaims["guard"] != 1 || s.Reclaims["probe"] != 0 {
		t.Errorf("reclaims %v", s.Reclaims)
	}
}

func TestReclaimTimeoutWhenWakeReportIsLost(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.yield(1, 0)
	h.probe(1, us(10))
	h.advance(us(10) + ms(20))
	eq(t, "states", h.takeSeq(), []string{"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE"})
	h.wake(1, ms(21), WakeProbe, 0) // the late report
	s := h.snap(1, ms(30))
	if s.ReclaimTimeouts != 1 || s.InvalidTransitions != 1 || s.LentTotal != us(10)+ms(20) {
		t.Errorf("timeouts %d invalid %d lent %v", s.ReclaimTimeouts, s.InvalidTransitions, s.LentTotal)
	}
}

func TestEveryTransitionTaken(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.idle(1, 0)
	h.busy(1, us(1)) // IDLE -> DP_ACTIVE
	h.idle(1, us(2))
	h.yield(1, us(3))
	h.wake(1, us(300), WakeRx, us(1))
	seen := map[string]bool{}
	for _, s := range h.seq {
		seen[s[2:]] = true
	}
	for from, tos := range Transitions {
		for _, to := range tos {
			if !seen[from.String()+"->"+to.String()] {
				t.Errorf("transition %v->%v not taken", from, to)
			}
		}
	}
	if n := h.core(1).invalid; n != 0 {
		t.Errorf("invalid transitions %d", n)
	}
}

func TestInvalidTransitionsCountedNotFatal(t *testing.T) {
	cases := []struct {
		name  string
		setup func(h *harness)
		event Event
		state State
	}{
		{"wake while DP_ACTIVE", func(h *harness) {}, Event{Kind: EvWake, Wake: WakeRx}, DPActive},
		{"idle while LENT", func(h *harness) { h.yield(1, 0) }, Event{Kind: EvIdle}, Lent},
		{"busy while LENT", func(h *harness) { h.yield(1, 0) }, Event{Kind: EvBusy}, Lent},
		{"yield while LENT", func(h *harness) { h.yield(1, 0) }, Event{Kind: EvYield}, Lent},
		{"idle while RECLAIMING", func(h *harness) { h.yield(1, 0); h.probe(1, 0) }, Event{Kind: EvIdle}, Reclaiming},
		{"busy while RECLAIMING", func(h *harness) { h.yield(1, 0); h.probe(1, 0) }, Event{Kind: EvBusy}, Reclaiming},
		{"yield while RECLAIMING", func(h *harness) { h.yield(1, 0); h.probe(1, 0) }, Event{Kind: EvYield}, Reclaiming},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, PolicyTaichi, nil)
			tc.setup(h)
			tc.event.CPU, tc.event.At = 1, at(us(5))
			h.ev(tc.event)
			s := h.snap(1, us(6))
			if s.InvalidTransitions != 1 || s.State != tc.state {
				t.Errorf("invalid %d state %v, want 1 and %v", s.InvalidTransitions, s.State, tc.state)
			}
		})
	}
	h := newHarness(t, PolicyTaichi, nil)
	h.yield(7, 0)
	h.ev(Event{Kind: EventKind(99), CPU: 1, At: at(0)})
	if snap := h.e.snapshot(at(0)); snap.UnknownCPUEvents != 1 || snap.InvalidTransitions != 0 {
		t.Errorf("unknown cpu events %d invalid %d", snap.UnknownCPUEvents, snap.InvalidTransitions)
	}
}

func TestActuatorErrorsRetryAfterDelay(t *testing.T) {
	act := &recorder{lendErr: errInjected}
	p := DefaultParams()
	e := newEngine(p, []int{1}, act, quietLogger(), t0)
	e.start(t0)
	eq(t, "start", act.take(), []string{"lend 1", "yield 1 -1 5ms"})
	e.handle(Event{Kind: EvYield, CPU: 1, At: at(us(1))}) // not in the cpuset: not lent
	e.advance(at(p.ActuatorRetry - 1))
	eq(t, "no retry storm", act.take(), nil)
	act.lendErr = nil
	e.advance(at(p.ActuatorRetry))
	eq(t, "retry", act.take(), []string{"lend 1", "yield 1 1 5ms"})
	if s := e.coreSnapshot(e.byCPU[1], at(time.Second)); s.ActuatorErrors != 1 || s.State != Idle || !s.InCPUSet {
		t.Errorf("errors %d state %v in_cpuset %v", s.ActuatorErrors, s.State, s.InCPUSet)
	}
}

// The rules of the policy in force reach the actuator before the plan
// that needs them (a Lend carries out DPDK lending and the probe's
// wake-ups), and again on a switch.
func TestRuleGateFollowsPolicy(t *testing.T) {
	act := gatedRecorder{&recorder{}}
	p := DefaultParams()
	p.Policy = PolicyDynamic
	e := newEngine(p, []int{2, 3}, act, quietLogger(), t0)
	e.start(t0)
	eq(t, "dynamic", act.take(), []string{
		"rules 2 probe=false dpdk=true confine=false", "lend 2", "yield 2 1 5ms",
		"rules 3 probe=false dpdk=true confine=false", "lend 3", "yield 3 1 5ms",
	})
	e.setPolicy(taichiPolicy{}, at(ms(1)))
	eq(t, "taichi", act.take(), []string{
		"rules 2 probe=true dpdk=true confine=true", "lend 2", "yield 2 1 5ms",
		"rules 3 probe=true dpdk=true confine=true", "lend 3", "yield 3 1 5ms",
	})
	e.setPolicy(staticPolicy{}, at(ms(2)))
	eq(t, "static", act.take(), []string{
		"rules 2 probe=false dpdk=false confine=false", "reclaim 2", "yield 2 -1 50µs",
		"rules 3 probe=false dpdk=false confine=false", "reclaim 3", "yield 3 -1 50µs",
	})
}

// A policy switch starts the guard afresh: no bench or doubled back-off
// carries over from lending under another policy.
func TestPolicySwitchClearsTheGuard(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.SLO, p.SLOMinSamples = us(100), 10 })
	h.residence(1, ms(1), 100, 50)
	if c := h.taichi(1); !c.benched || c.nextBackoff != 2*time.Second {
		t.Fatalf("not benched: benched=%v next backoff %v", c.benched, c.nextBackoff)
	}
	h.e.setPolicy(dynamicPolicy{}, at(ms(2)))
	h.e.setPolicy(taichiPolicy{}, at(ms(3)))
	c, tc := h.core(1), h.taichi(1)
	if tc.benched || tc.nextBackoff != time.Second || c.slo.packets != 0 || c.reclaims[CauseGuard] != 1 {
		t.Fatalf("after a switch: benched=%v next backoff %v window %d trips %d", tc.benched, tc.nextBackoff, c.slo.packets, c.reclaims[CauseGuard])
	}
	if s := h.snap(1, ms(4)); !s.InCPUSet || s.Hold != HoldNone {
		t.Fatalf("taichi again: in cpuset %v hold %q", s.InCPUSet, s.Hold)
	}
}

// A snapshot says how far the engine's decisions trail the clock: its
// EngineAt is the latest event or timer the engine decided on.
func TestSnapshotShowsTheEngineTime(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.yield(1, ms(5))
	snap := h.e.snapshot(at(ms(900)))
	if !snap.EngineAt.Equal(at(ms(5))) || !snap.At.Equal(at(ms(900))) {
		t.Fatalf("snapshot at %v engine at %v, want %v and %v", snap.At.Sub(t0), snap.EngineAt.Sub(t0), ms(900), ms(5))
	}
}

// flap_limit 0 (the default) turns the flap limiter off: a pressed core
// that cycles thousands of times a second keeps lending.
func TestFlapLimitZeroNeverHolds(t *testing.T) {
	h := newHarness(t, PolicyTaichi, func(p *Params) { p.FlapLimit, p.FlapWindow = 0, ms(10) })
	h.press(1)
	for i := range 100 {
		h.yield(1, us(100*i))
		h.wake(1, us(100*i)+us(50), WakeRx, us(10))
	}
	if s := h.snap(1, ms(10)); s.FlapsHeld != 0 || s.Hold != HoldNone || !s.InCPUSet || s.Lends != 100 {
		t.Fatalf("flaps held %d, hold %q, in cpuset %v, lends %d; want no hold and 100 lends", s.FlapsHeld, s.Hold, s.InCPUSet, s.Lends)
	}
	if DefaultParams().FlapLimit != 0 {
		t.Errorf("default flap limit %d, want 0 (off)", DefaultParams().FlapLimit)
	}
}
