package scheduler

import (
	"log/slog"
	"time"
)

// PolicyTaichi spends the SLO: while a core's RX residence p99 stays
// below the high-water mark it lends as eagerly as dynamic, with the
// probe's early reclaim on top; above it, it confines the CP tasks that
// delayed packets most and admits lending after an adaptive empty-poll
// threshold with growing slices and a flap limiter; it benches a core only
// when the SLO is breached and nothing can be confined, and holds cores
// that DP needs (high load).
const PolicyTaichi PolicyName = "taichi"

func init() { registerPolicy(2, taichiPolicy{}) }

type taichiPolicy struct{}

func (taichiPolicy) Name() PolicyName       { return PolicyTaichi }
func (taichiPolicy) UsesProbe() bool        { return true }
func (taichiPolicy) ConfinesBlockers() bool { return true }
func (taichiPolicy) LendsDPDK() bool        { return true }
func (taichiPolicy) newCore(env CoreEnv) CorePolicy {
	p := env.Params
	return &taichiCore{
		cpu: env.CPU, p: p, log: env.Log,
		threshold:   p.IdleThreshold,
		slice:       p.SliceMin,
		nextBackoff: p.GuardBackoff,
		flapCycles:  newRing[time.Time](p.FlapLimit + 1),
	}
}

// taichiCore is taichi's adaptation state for one core.
type taichiCore struct {
	cpu int
	p   *Params
	log *slog.Logger

	// admission and slice
	threshold int64
	slice     time.Duration
	// idleRun: the last lent period ended by its slice and no I/O came
	// since: the same idle gap continues.
	idleRun bool

	// SLO guard. pressed: the last judged window was above the high-water
	// mark, so admission, slices and the flap limiter apply.
	pressed      bool
	benched      bool
	benchedUntil time.Time
	benchEnded   time.Time
	nextBackoff  time.Duration

	// flap limiter
	flapCycles    ring[time.Time]
	flapHeld      bool
	flapHeldUntil time.Time

	// high-load hold
	loadHeld bool
}

func (t *taichiCore) Plan() Plan {
	switch {
	case t.benched:
		return heldPlan(t.slice, HoldGuard)
	case t.loadHeld:
		return heldPlan(t.slice, HoldLoad)
	case t.flapHeld:
		// The hold is rare (FlapLimit cycles a window), so its cpuset
		// writes are too.
		return heldPlan(t.slice, HoldFlap)
	}
	if !t.pressed {
		// Within budget: yield at the first empty poll and sleep the
		// longest slice; the probe (and the packet itself) wakes the loop.
		return Plan{InCPUSet: true, YieldAfter: 1, Slice: t.p.SliceMax}
	}
	return Plan{InCPUSet: true, YieldAfter: t.threshold, Slice: t.slice}
}

func (t *taichiCore) Deadline() (time.Time, bool) {
	switch {
	case t.benched && t.flapHeld:
		return earliest(t.benchedUntil, t.flapHeldUntil), true
	case t.benched:
		return t.benchedUntil, true
	case t.flapHeld:
		return t.flapHeldUntil, true
	}
	return time.Time{}, false
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (t *taichiCore) Expire(now time.Time) {
	if t.benched && !now.Before(t.benchedUntil) {
		t.benched = false
		t.benchEnded = t.benchedUntil
		t.log.Info("slo guard: resume lending", "cpu", t.cpu, "next_backoff", t.nextBackoff)
	}
	if t.flapHeld && !now.Before(t.flapHeldUntil) {
		t.flapHeld = false
	}
}

// Returned is taichi's admission and slice growth after a lent period.
func (t *taichiCore) Returned(why Cause, lent time.Duration) {
	if !t.pressed {
		// Within budget nothing needs learning: the loop yields at once.
		return
	}
	switch why {
	case CauseSliceEnd:
		// The gap outlasted the slice: lending pays here. One idle gap is
		// one piece of evidence, however many slices it spans.
		t.slice = min(2*t.slice, t.p.SliceMax)
		if !t.idleRun {
			t.threshold = max(t.threshold-t.threshold/4, t.p.IdleThresholdMin)
			t.idleRun = true
		}
	case CauseRx, CauseProbe:
		t.idleRun = false
		t.slice = t.p.SliceMin
		if lent < t.p.ShortLend {
			// I/O came back before the switch paid off: wait longer first.
			t.threshold = min(2*t.threshold, t.p.IdleThresholdMax)
		}
	}
}

func (t *taichiCore) Busy() { t.idleRun = false }

// Lent is the flap limiter: it counts lend cycles and holds a flapping core
// in DP.
func (t *taichiCore) Lent(at time.Time) bool {
	if t.flapHeld || !t.pressed || t.p.FlapLimit == 0 {
		return false
	}
	for t.flapCycles.len() > 0 && !t.flapCycles.front().After(at.Add(-t.p.FlapWindow)) {
		t.flapCycles.popFront()
	}
	t.flapCycles.push(at)
	if t.flapCycles.len() <= t.p.FlapLimit {
		return false
	}
	t.flapHeld = true
	t.flapHeldUntil = at.Add(t.p.FlapHold)
	t.flapCycles.clear()
	t.log.Info("flap limiter: holding core in DP", "cpu", t.cpu,
		"cycles", t.p.FlapLimit+1, "window", t.p.FlapWindow, "until", t.flapHeldUntil)
	return true
}

// Guard judges the window by the SLO rule and remembers whether lending
// is under pressure.
func (t *taichiCore) Guard(at time.Time, w SLOWindow) Verdict {
	v := judge(w, t.p.SLOMinSamples)
	// Pressure starts above the high-water mark and ends at or below the
	// low-water mark: in between, lending stays as it is.
	pressed := t.pressed
	switch {
	case v >= VerdictHigh:
		pressed = true
	case v == VerdictCalm && !w.exceeds(markLow):
		pressed = false
	}
	if pressed != t.pressed {
		t.pressed, t.slice, t.idleRun = pressed, t.p.SliceMin, false
		t.log.Info("slo rule: lending pressure", "cpu", t.cpu, "pressed", pressed, "budget", w.Budget(), "slo", t.p.SLO)
	}
	return v
}

// Bench benches the core for a back-off that doubles on each trip and
// starts over once the core behaved for GuardForgive.
func (t *taichiCore) Bench(at time.Time, w SLOWindow) {
	backoff := t.nextBackoff
	if !t.benchEnded.IsZero() && at.Sub(t.benchEnded) >= t.p.GuardForgive {
		backoff = t.p.GuardBackoff
	}
	t.benched = true
	t.benchedUntil = at.Add(backoff)
	t.nextBackoff = min(2*backoff, t.p.GuardBackoffMax)
	t.log.Warn("slo guard: benching core", "why", "SLO breached and nothing to confine", "cpu", t.cpu, "residence_p99", w.WorstP99(),
		"late", w.Late(), "packets", w.Packets(), "slo", t.p.SLO, "backoff", backoff, "until", t.benchedUntil)
}

// Load is the high-load hold, with hysteresis between HighLoad and LowLoad.
func (t *taichiCore) Load(at time.Time, mean float64, covered time.Duration) bool {
	if covered < t.p.LoadWindow/2 {
		return false
	}
	switch {
	case !t.loadHeld && mean > t.p.HighLoad:
		t.loadHeld = true
		t.log.Info("high DP load: taking core out of the CP cpuset", "cpu", t.cpu, "busy", mean)
		return true
	case t.loadHeld && mean < t.p.LowLoad:
		t.loadHeld = false
		t.log.Info("DP load fell: lending core again", "cpu", t.cpu, "busy", mean)
	}
	return false
}

func (t *taichiCore) Describe(cs *CoreSnapshot) {
	cs.Threshold, cs.CurrentSlice, cs.Pressed = t.threshold, t.slice, t.pressed
	cs.Benched, cs.BenchedUntil, cs.NextBackoff = t.benched, t.benchedUntil, t.nextBackoff
	cs.FlapHeld, cs.FlapHeldUntil = t.flapHeld, t.flapHeldUntil
	cs.LoadHeld = t.loadHeld
}
