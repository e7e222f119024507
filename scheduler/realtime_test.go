package scheduler

import (
	"slices"
	"testing"
	"time"
)

// dutyCycle drives cpu's loop from `from` for span: each period it runs
// (woken by its packet) for run, then idles and yields, so it runs
// real-time run/period of the time while its core is lendable.
func (h *harness) dutyCycle(cpu int, from, span, period, run time.Duration) time.Duration {
	tm := from
	for ; tm < from+span; tm += period {
		h.wake(cpu, tm, WakeRx, us(1))
		h.idle(cpu, tm+run-us(1))
		h.yield(cpu, tm+run)
	}
	return tm
}

// A loop that stops yielding on a lendable core (here: it woke and keeps
// polling) is held in DP once it ran real-time for RealtimeShare of the
// window, under every lending policy, and lends again after RealtimeHold.
func TestRealtimeRuleHoldsALoopThatStopsYielding(t *testing.T) {
	for _, policy := range []PolicyName{PolicyDynamic, PolicyTaichi} {
		t.Run(string(policy), func(t *testing.T) {
			h := newHarness(t, policy, nil)
			p := h.e.p
			h.yield(1, ms(1))
			h.wake(1, ms(2), WakeRx, us(1))
			h.act.take()
			limit := time.Duration(p.RealtimeShare * float64(p.RealtimeWindow))
			h.advance(ms(2) + limit - 1)
			if s := h.snap(1, ms(2)+limit-1); s.Hold != HoldNone || !s.InCPUSet {
				t.Fatalf("held before the limit: hold %q in cpuset %v", s.Hold, s.InCPUSet)
			}
			h.advance(ms(2) + limit)
			s := h.snap(1, ms(2)+limit)
			if s.Hold != HoldRealtime || s.InCPUSet || s.RealtimeHolds != 1 {
				t.Fatalf("at the limit: hold %q in cpuset %v holds %d, want realtime, out, 1", s.Hold, s.InCPUSet, s.RealtimeHolds)
			}
			eq(t, "hold", h.act.take(), []string{"reclaim 1", "yield 1 -1 " + h.core(1).knobSlice.String()})
			// Held: the loop runs SCHED_OTHER, so nothing counts and nothing
			// ends the hold before RealtimeHold.
			h.advance(ms(2) + limit + p.RealtimeHold - 1)
			if got := h.act.take(); len(got) != 0 {
				t.Fatalf("actions while held: %q", got)
			}
			h.advance(ms(2) + limit + p.RealtimeHold)
			got := h.act.take()
			if !slices.Contains(got, "lend 1") {
				t.Fatalf("after the hold: %q, want the core lent again", got)
			}
			if s := h.snap(1, ms(2)+limit+p.RealtimeHold); s.Hold != HoldNone || !s.InCPUSet {
				t.Fatalf("after the hold: hold %q in cpuset %v", s.Hold, s.InCPUSet)
			}
		})
	}
}

// The rule counts running time over the window, not one run: a loop that
// yields for a moment every millisecond but runs 90% of the time is held
// within the first window; one that runs 70% of the time never is.
func TestRealtimeRuleCountsTheShareOfTheWindow(t *testing.T) {
	h := newHarness(t, PolicyDynamic, nil)
	h.dutyCycle(1, ms(1), 10*time.Second, ms(1), us(700))
	if s := h.snap(1, 10*time.Second); s.RealtimeHolds != 0 || s.RealtimeRun > ms(750) || s.RealtimeRun < ms(650) {
		t.Fatalf("70%% duty: holds %d, ran %v over the window; want 0 holds and about 700ms", s.RealtimeHolds, s.RealtimeRun)
	}
	h2 := newHarness(t, PolicyDynamic, nil)
	end := h2.dutyCycle(1, ms(1), 1200*time.Millisecond, ms(1), us(900))
	s := h2.snap(1, end)
	if s.RealtimeHolds == 0 {
		t.Fatalf("90%% duty for 1.2s: never held (ran %v over the window)", s.RealtimeRun)
	}
}

// Cores whose loop reports no yields or wakes (DPDK lcores, OVS PMDs) and
// cores outside the cpuset (static) are never held by the rule.
func TestRealtimeRuleNeedsALoopOnALendableCore(t *testing.T) {
	h := newHarness(t, PolicyDynamic, nil)
	h.load(1, ms(100), 1, ms(100))
	h.advance(time.Minute)
	if s := h.snap(1, time.Minute); s.RealtimeHolds != 0 || s.Hold != HoldNone {
		t.Fatalf("a core without loop events: holds %d hold %q", s.RealtimeHolds, s.Hold)
	}
	hs := newHarness(t, PolicyStatic, nil)
	hs.idle(1, ms(1))
	hs.busy(1, ms(2))
	hs.advance(time.Minute)
	if s := hs.snap(1, time.Minute); s.RealtimeHolds != 0 {
		t.Fatalf("static: %d realtime holds", s.RealtimeHolds)
	}
}

// A new SLO or policy starts the account afresh and ends a hold.
func TestRealtimeRuleStartsAfreshWithANewSLO(t *testing.T) {
	h := newHarness(t, PolicyTaichi, nil)
	h.yield(1, ms(1))
	h.wake(1, ms(2), WakeRx, us(1))
	h.advance(time.Second)
	if s := h.snap(1, time.Second); s.Hold != HoldRealtime {
		t.Fatalf("hold %q, want realtime", s.Hold)
	}
	h.e.setSLO(ms(1), at(time.Second+ms(1)))
	if s := h.snap(1, time.Second+ms(1)); s.Hold != HoldNone || !s.InCPUSet || s.RealtimeRun != 0 {
		t.Fatalf("after a new SLO: hold %q in cpuset %v ran %v", s.Hold, s.InCPUSet, s.RealtimeRun)
	}
}
