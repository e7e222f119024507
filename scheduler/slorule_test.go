package scheduler

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// confiningRecorder is a recorder that also carries out the SLO rule's
// confinements: candidates[cpu] are the CP commands blamed on cpu, most
// costly first; confined ones are released in the order they were
// confined. A candidate's longest hold (holds, default 1ms) must reach the
// minimum delay the engine asks for.
type confiningRecorder struct {
	*recorder
	candidates map[int][]string
	holds      map[string]time.Duration
	confined   []string
	budgets    []float64
	minDelays  []time.Duration
}

func (r *confiningRecorder) ConfineWorst(cpu int, window, minDelay, minTotal time.Duration, budget float64) bool {
	if minDelay != us(75) && minDelay != 37500*time.Nanosecond {
		panic(fmt.Sprintf("ConfineWorst asked for delays of %v, want a mark of the SLO (75µs or 37.5µs)", minDelay))
	}
	if minTotal != us(100) {
		panic(fmt.Sprintf("ConfineWorst asked for %v of delay in all, want the SLO (100µs)", minTotal))
	}
	r.minDelays = append(r.minDelays, minDelay)
	c := r.candidates[cpu]
	i := slices.IndexFunc(c, func(name string) bool {
		hold, ok := r.holds[name]
		return !ok || hold >= minDelay
	})
	if i < 0 {
		r.calls = append(r.calls, fmt.Sprintf("confine %d: none", cpu))
		return false
	}
	name := c[i]
	r.candidates[cpu] = slices.Delete(slices.Clone(c), i, i+1)
	r.confined = append(r.confined, name)
	r.budgets = append(r.budgets, budget)
	r.calls = append(r.calls, fmt.Sprintf("confine %d %s", cpu, name))
	return true
}

func (r *confiningRecorder) ReleaseOne() bool {
	if len(r.confined) == 0 {
		return false
	}
	r.calls = append(r.calls, "release "+r.confined[0])
	r.confined = r.confined[1:]
	return true
}

// sloHarness runs the engine with SLO 100µs, 100 packets to judge, a 1s
// window and a 3s budget horizon, over cpus, with candidates to confine.
func sloHarness(t *testing.T, policy PolicyName, candidates map[int][]string, cpus ...int) (*harness, *confiningRecorder) {
	t.Helper()
	p := DefaultParams()
	p.Policy = policy
	p.SLO, p.SLOMinSamples, p.SLOWindow, p.BudgetHorizon, p.ReleaseQuiet = us(100), 100, time.Second, 3*time.Second, 5*time.Second
	if len(cpus) == 0 {
		cpus = []int{1}
	}
	act := &confiningRecorder{recorder: &recorder{}, candidates: candidates}
	h := &harness{t: t, act: act.recorder}
	h.e = newEngine(p, cpus, act, quietLogger(), t0)
	h.e.start(t0)
	act.take()
	return h, act
}

// only keeps the calls that start with one of prefixes.
func only(calls []string, prefixes ...string) []string {
	var out []string
	for _, c := range calls {
		for _, p := range prefixes {
			if len(c) >= len(p) && c[:len(p)] == p {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Waits per mark of SLO 100µs: within the low-water mark (37.5µs), between
// low and high (75µs), between high and the SLO, and beyond it.
var (
	waitLow    = us(30)
	waitMiddle = us(60)
	waitHigh   = us(80)
	waitBreach = us(150)
)

// A p99 above the high-water mark but within the SLO, over the horizon
// and the window alike, confines the most costly CP task, one a window,
// and benches nothing; taichi lends with care from then on. A window that
// calmed down confines nothing more, although the horizon remembers.
func TestSLORuleConfinesAboveHighWaterMark(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"nft", "ip", "tc"}})
	h.residenceWaited(1, ms(100), 200, 4, waitHigh) // 2% above 75µs
	eq(t, "confine", only(act.take(), "confine", "reclaim"), []string{"confine 1 nft"})
	if c := h.core(1); c.reclaims[CauseGuard] != 0 || !h.taichi(1).pressed || c.confines != 1 {
		t.Fatalf("trips %d, pressed %v, confines %d", c.reclaims[CauseGuard], h.taichi(1).pressed, c.confines)
	}
	if act.budgets[0] != 0.875 {
		t.Errorf("budget handed with the confinement %v, want 0.875 (p99 between 75µs and 87.5µs)", act.budgets[0])
	}
	h.residenceWaited(1, ms(600), 200, 4, waitHigh)
	eq(t, "one a window", only(act.take(), "confine"), nil)
	h.residenceWaited(1, ms(1100), 200, 4, waitHigh)
	eq(t, "the next window", only(act.take(), "confine"), []string{"confine 1 ip"})
	// The window calms down (the old samples expire), the horizon still
	// holds them: nothing more is confined.
	h.advance(ms(2200))
	h.residenceWaited(1, ms(2200), 200, 0, 0)
	eq(t, "calm window", only(act.take(), "confine"), nil)
	if s := h.snap(1, ms(2200)); s.Verdict != VerdictHigh || s.Budget != 0.875 || s.WindowBudget != 0.125 || !s.Pressed || s.Confines != 2 {
		t.Errorf("snapshot verdict %v budget %v window %v pressed %v confines %d", s.Verdict, s.Budget, s.WindowBudget, s.Pressed, s.Confines)
	}
}

// A breach confines rather than benches while a CP task can be confined,
// and benches the core only when none can (kernel threads, unknown
// blockers).
func TestSLORuleBenchesOnlyWhenNothingCanBeConfined(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"stress-ng-dentry"}})
	h.residenceWaited(1, ms(100), 200, 10, waitBreach)
	eq(t, "first breach", only(act.take(), "confine", "reclaim"), []string{"confine 1 stress-ng-dentry"})
	if h.taichi(1).benched {
		t.Fatal("benched although a CP task was confined")
	}
	h.residenceWaited(1, ms(1200), 200, 10, waitBreach)
	eq(t, "second breach", only(act.take(), "confine", "reclaim"), []string{"confine 1: none", "reclaim 1"})
	if s := h.snap(1, ms(1200)); !s.Benched || s.GuardTrips != 1 || s.ConfineMisses != 1 || s.Hold != HoldGuard {
		t.Errorf("benched %v trips %d misses %d hold %q", s.Benched, s.GuardTrips, s.ConfineMisses, s.Hold)
	}
}

// Above the high-water mark with nothing to confine and within the SLO,
// the core keeps lending (with care): benching is for breaches only.
func TestSLORuleHighWithNothingToConfineKeepsLending(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, nil)
	h.residenceWaited(1, ms(100), 200, 4, waitHigh)
	if calls := act.take(); !slices.Equal(only(calls, "confine", "reclaim"), []string{"confine 1: none"}) ||
		!slices.Contains(calls, "yield 1 64 50µs") {
		t.Fatalf("calls %q: want one confine attempt and careful admission (64 polls, 50µs)", calls)
	}
	if s := h.snap(1, ms(100)); s.Benched || !s.InCPUSet || s.Verdict != VerdictHigh {
		t.Errorf("benched %v in cpuset %v verdict %v", s.Benched, s.InCPUSet, s.Verdict)
	}
}

// Confined commands are released one at a time, each after every lending
// core's horizon p99 stayed at or below the low-water mark for the quiet
// period; a core between the marks holds releases back.
func TestSLORuleReleasesOneAtATimeAfterQuiet(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, nil, 1, 2)
	act.confined = []string{"nft", "ip", "tc"}
	// Core 1 is quiet from the start, core 2 only sits between the marks.
	for tm := ms(100); tm <= ms(6000); tm += ms(100) {
		h.residenceWaited(1, tm, 200, 4, waitLow)
		h.residenceWaited(2, tm, 200, 4, waitMiddle)
	}
	eq(t, "core 2 between the marks: nothing released", only(act.take(), "release"), nil)
	// Core 2 calms down at 6.1s; from 7.5s its horizon holds at most 15 of
	// its 30 samples with 2% above the low mark, 1% in all: its p99 is
	// within the mark, quiet since then on both.
	for tm := ms(6100); tm <= ms(20000); tm += ms(100) {
		h.residenceWaited(1, tm, 200, 4, waitLow)
		h.residenceWaited(2, tm, 200, 4, waitLow)
		if got := only(act.take(), "release"); len(got) > 0 {
			eq(t, fmt.Sprintf("release at %v", tm), got, []string{"release " + []string{"nft", "ip", "tc"}[h.e.releases-1]})
			if want := ms(7500) + time.Duration(h.e.releases)*5*time.Second; tm != want {
				t.Errorf("release %d at %v, want %v (one quiet period each)", h.e.releases, tm, want)
			}
		}
	}
	if h.e.releases != 2 {
		t.Errorf("%d releases by 20s, want 2 (at 12.5s and 17.5s)", h.e.releases)
	}
}

// The rule is taichi's: under dynamic, windows above the SLO neither
// confine nor bench.
func TestSLORuleIsTaichis(t *testing.T) {
	h, act := sloHarness(t, PolicyDynamic, map[int][]string{1: {"nft"}})
	for tm := ms(100); tm <= ms(10000); tm += ms(100) {
		h.residenceWaited(1, tm, 200, 10, waitBreach)
	}
	if got := only(act.take(), "confine", "release", "reclaim"); len(got) != 0 {
		t.Errorf("dynamic: %q", got)
	}
}

// Within budget taichi yields at the first empty poll and sleeps the
// longest slice; under pressure admission adapts, and pressure ends only at
// the low-water mark.
func TestSLORuleAdmissionFollowsPressure(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, nil)
	yieldCalls := func() []string { return only(act.take(), "yield") }
	h.residenceWaited(1, ms(100), 200, 1, waitBreach) // calm: 0.5% late
	eq(t, "calm", yieldCalls(), nil)
	if p := h.e.planFor(h.core(1)); p.YieldAfter != 1 || p.Slice != h.e.p.SliceMax {
		t.Fatalf("calm plan %+v, want yield after 1 with the longest slice", p)
	}
	h.residenceWaited(1, ms(200), 200, 4, waitHigh) // 5 of 400 above 75µs
	eq(t, "pressed", yieldCalls(), []string{"yield 1 64 50µs"})
	h.advance(ms(3300)) // the horizon forgets both
	h.residenceWaited(1, ms(3300), 200, 4, waitMiddle)
	eq(t, "between the marks: still pressed", yieldCalls(), nil)
	h.advance(ms(6400))
	h.residenceWaited(1, ms(6400), 200, 4, waitLow)
	eq(t, "below the low mark: eager again", yieldCalls(), []string{"yield 1 1 5ms"})
}

// A bench is judged by its effect: when packets waited beyond the SLO
// while the core was benched too, the delay is not lending's, and the next
// breaches with nothing to confine keep the core lending (counted as
// skips) until GuardForgive has passed.
func TestSLORuleStopsBenchingWhenBenchingDoesNotHelp(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, nil)
	h.residenceWaited(1, ms(100), 200, 10, waitBreach)
	if !h.taichi(1).benched {
		t.Fatal("first breach did not bench")
	}
	h.residenceWaited(1, ms(500), 200, 10, waitBreach) // benched, and as late
	h.advance(ms(1200))                                // the bench (1s) ends
	act.take()
	h.residenceWaited(1, ms(1300), 200, 10, waitBreach)
	h.residenceWaited(1, ms(2400), 200, 10, waitBreach)
	if got := only(act.take(), "reclaim"); len(got) != 0 {
		t.Fatalf("benched again (%q) although benching had not helped", got)
	}
	s := h.snap(1, ms(2400))
	if !s.BenchFutile || s.BenchSkips != 2 || s.GuardTrips != 1 || !s.InCPUSet {
		t.Errorf("futile %v skips %d trips %d in cpuset %v", s.BenchFutile, s.BenchSkips, s.GuardTrips, s.InCPUSet)
	}
	// After GuardForgive the experiment is tried again.
	at := ms(1200) + h.e.p.GuardForgive + ms(100)
	h.residenceWaited(1, at, 200, 10, waitBreach)
	if !h.taichi(1).benched {
		t.Error("no bench after GuardForgive: the experiment is never retried")
	}
}

// Packets beyond the last mark (4× the SLO) confine with a finite budget:
// the reason is shown in status as JSON, which has no +Inf.
func TestSLORuleHandsAFiniteBudgetBeyondTheLastMark(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"nft"}})
	h.residenceWaited(1, ms(100), 200, 10, us(1000)) // 5% at 10× the SLO
	eq(t, "confine", only(act.take(), "confine"), []string{"confine 1 nft"})
	if b := act.budgets[0]; math.IsInf(b, 0) || b != budgetOver {
		t.Errorf("budget handed with the confinement %v, want %v", b, float64(budgetOver))
	}
}

// A new SLO is a new contract: a core benched under the old bound lends
// again at once, with an empty horizon and a fresh back-off; the counters
// stay.
func TestSLORuleNewSLOStartsFromACleanSlate(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, nil)
	h.residenceWaited(1, ms(100), 200, 10, waitBreach)
	if s := h.snap(1, ms(100)); !s.Benched || s.GuardTrips != 1 {
		t.Fatalf("breach with nothing to confine: benched %v trips %d", s.Benched, s.GuardTrips)
	}
	act.take()
	h.e.setSLO(us(500), at(ms(200)))
	s := h.snap(1, ms(200))
	if s.Benched || s.Hold != HoldNone || !s.InCPUSet || s.Verdict != VerdictUnknown || s.Budget != 0 {
		t.Errorf("after a new SLO: benched %v hold %q in cpuset %v verdict %v budget %v",
			s.Benched, s.Hold, s.InCPUSet, s.Verdict, s.Budget)
	}
	if s.GuardTrips != 1 || h.e.p.SLO != us(500) {
		t.Errorf("trips %d (counters stay), slo %v", s.GuardTrips, h.e.p.SLO)
	}
	if h.taichi(1).nextBackoff != h.e.p.GuardBackoff {
		t.Errorf("back-off %v carried over, want a fresh %v", h.taichi(1).nextBackoff, h.e.p.GuardBackoff)
	}
}

// Above the high-water mark only a task that held the DP thread off for
// 3/4 of the SLO is confined; at a breach, one that held it for 3/8 is, and
// the core is not benched.
func TestSLORuleConfinesShorterHoldsAtABreach(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"tc"}})
	act.holds = map[string]time.Duration{"tc": us(50)}
	h.residenceWaited(1, ms(100), 200, 4, waitHigh)
	eq(t, "high: holds under 75µs stay", only(act.take(), "confine", "reclaim"), []string{"confine 1: none"})
	h.residenceWaited(1, ms(1200), 200, 10, waitBreach)
	eq(t, "breach: a 50µs holder goes", only(act.take(), "confine", "reclaim"), []string{"confine 1 tc"})
	if got := act.minDelays; len(got) != 2 || got[0] != us(75) || got[1] != 37500*time.Nanosecond {
		t.Errorf("minimum delays asked %v, want [75µs 37.5µs]", got)
	}
	if s := h.snap(1, ms(1200)); s.Benched || s.GuardTrips != 0 {
		t.Errorf("benched %v, trips %d: confining should have spared the bench", s.Benched, s.GuardTrips)
	}
}
