package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// confiningRecorder is a recorder that also carries out the SLO rule's
// confinements: candidates[cpu] are the CP commands blamed on cpu, most
// costly first; confined ones are released in the order they were
// confined.
type confiningRecorder struct {
	*recorder
	candidates map[int][]string
	confined   []string
	budgets    []float64
}

func (r *confiningRecorder) ConfineWorst(cpu int, window time.Duration, budget float64) bool {
	c := r.candidates[cpu]
	if len(c) == 0 {
		r.calls = append(r.calls, fmt.Sprintf("confine %d: none", cpu))
		return false
	}
	r.candidates[cpu] = c[1:]
	r.confined = append(r.confined, c[0])
	r.budgets = append(r.budgets, budget)
	r.calls = append(r.calls, fmt.Sprintf("confine %d %s", cpu, c[0]))
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

// sloHarness runs the engine with SLO 100µs, 100 packets to judge and a
// 1s window, over cpus, with candidates to confine.
func sloHarness(t *testing.T, policy PolicyName, candidates map[int][]string, cpus ...int) (*harness, *confiningRecorder) {
	t.Helper()
	p := DefaultParams()
	p.Policy = policy
	p.SLO, p.SLOMinSamples, p.SLOWindow, p.ReleaseQuiet = us(100), 100, time.Second, 5*time.Second
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

// A window whose p99 is above the high-water mark but within the SLO
// confines the most costly CP task once, clears the window, and benches
// nothing; taichi lends with care from then on.
func TestSLORuleConfinesAboveHighWaterMark(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"nft", "ip"}})
	h.residenceWaited(1, ms(100), 200, 4, waitHigh) // 2% above 75µs
	eq(t, "confine", only(act.take(), "confine", "reclaim"), []string{"confine 1 nft"})
	c := h.core(1)
	if c.slo.packets != 0 || c.reclaims[CauseGuard] != 0 || !h.taichi(1).pressed || c.confines != 1 {
		t.Fatalf("window %d packets, trips %d, pressed %v, confines %d", c.slo.packets, c.reclaims[CauseGuard], h.taichi(1).pressed, c.confines)
	}
	if act.budgets[0] != 0.875 {
		t.Errorf("budget handed with the confinement %v, want 0.875 (p99 between 75µs and 87.5µs)", act.budgets[0])
	}
	// Only as many as needed: the next window within the high mark confines
	// nothing more.
	h.residenceWaited(1, ms(200), 200, 4, waitMiddle)
	eq(t, "no second confinement", only(act.take(), "confine"), nil)
	if s := h.snap(1, ms(200)); s.Verdict != VerdictCalm || s.Budget != 0.625 || !s.Pressed || s.Confines != 1 {
		t.Errorf("snapshot verdict %v budget %v pressed %v confines %d", s.Verdict, s.Budget, s.Pressed, s.Confines)
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
	h.residenceWaited(1, ms(200), 200, 10, waitBreach)
	eq(t, "second breach", only(act.take(), "confine", "reclaim"), []string{"confine 1: none", "reclaim 1"})
	if s := h.snap(1, ms(200)); !s.Benched || s.GuardTrips != 1 || s.ConfineMisses != 1 || s.Hold != HoldGuard {
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
// core's p99 stayed at or below the low-water mark for the quiet period; a
// window between the marks holds releases back.
func TestSLORuleReleasesOneAtATimeAfterQuiet(t *testing.T) {
	h, act := sloHarness(t, PolicyTaichi, map[int][]string{1: {"nft", "ip"}, 2: {"tc"}}, 1, 2)
	h.residenceWaited(1, ms(100), 200, 4, waitHigh)
	h.residenceWaited(1, ms(200), 200, 4, waitHigh)
	h.residenceWaited(2, ms(300), 200, 4, waitHigh)
	eq(t, "confined", only(act.take(), "confine"), []string{"confine 1 nft", "confine 1 ip", "confine 2 tc"})

	feed := func(cpu int, from, to time.Duration, wait time.Duration) {
		for tm := from; tm <= to; tm += ms(100) {
			h.residenceWaited(cpu, tm, 200, 4, wait)
		}
	}
	// Core 1 calms down at once, core 2 only sits between the marks.
	feed(1, ms(400), ms(6000), waitLow)
	feed(2, ms(400), ms(6000), waitMiddle)
	eq(t, "core 2 between the marks: nothing released", only(act.take(), "release"), nil)
	// Core 2 calms down at 6.1s; its window forgets the last sample above
	// the low mark at 7s: quiet since then on both.
	for tm := ms(6100); tm <= ms(17000); tm += ms(100) {
		h.residenceWaited(1, tm, 200, 4, waitLow)
		h.residenceWaited(2, tm, 200, 4, waitLow)
		if got := only(act.take(), "release"); len(got) > 0 {
			t.Logf("%v: %v", tm, got)
			eq(t, fmt.Sprintf("release at %v", tm), got, []string{"release " + []string{"nft", "ip", "tc"}[h.e.releases-1]})
			if want := ms(7000) + time.Duration(h.e.releases)*5*time.Second; tm != want {
				t.Errorf("release %d at %v, want %v (one quiet period each)", h.e.releases, tm, want)
			}
		}
	}
	if h.e.releases != 2 {
		t.Errorf("%d releases by 17s, want 2 (at 12s and 17s)", h.e.releases)
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
	h.advance(ms(1300)) // the window forgets both
	h.residenceWaited(1, ms(1300), 200, 4, waitMiddle)
	eq(t, "between the marks: still pressed", yieldCalls(), nil)
	h.advance(ms(2400))
	h.residenceWaited(1, ms(2400), 200, 4, waitLow)
	eq(t, "below the low mark: eager again", yieldCalls(), []string{"yield 1 1 5ms"})
}
