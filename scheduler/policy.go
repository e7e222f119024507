package scheduler

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// PolicyName names a lending policy. The config, the daemon, the control
// socket, the eval and the CLI all speak of policies by this type; the
// names a build knows are those registered (static, dynamic, taichi).
type PolicyName string

// ParsePolicyName returns the registered policy called s, or an error that
// lists the valid names.
func ParsePolicyName(s string) (PolicyName, error) {
	n := PolicyName(s)
	return n, n.Validate()
}

// Validate reports an unknown name, listing the valid ones.
func (n PolicyName) Validate() error {
	if _, ok := lookupPolicy(n); !ok {
		return fmt.Errorf("unknown policy %q (want one of %s)", string(n), strings.Join(PolicyNameStrings(), ", "))
	}
	return nil
}

// PolicyNames lists the registered policies in registration order.
func PolicyNames() []PolicyName {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := make([]PolicyName, len(registry.order))
	for i, p := range registry.order {
		out[i] = p.Name()
	}
	return out
}

// PolicyNameStrings is PolicyNames as strings (flag help, config messages).
func PolicyNameStrings() []string {
	var out []string
	for _, n := range PolicyNames() {
		out = append(out, string(n))
	}
	return out
}

// LookupPolicy returns the registered policy called n.
func LookupPolicy(n PolicyName) (Policy, error) {
	if p, ok := lookupPolicy(n); ok {
		return p, nil
	}
	return nil, n.Validate()
}

// Policy decides how DP cores are lent. It holds no per-core state: the
// engine asks it for a CorePolicy per core (at start and on every switch to
// it), keeps that beside its own state, and passes the facts in. The engine
// keeps the state machine, the timers and the actuation; a policy decides
// admission (when the loop may yield), the slice, the SLO guard, the holds,
// blocker confinement and DPDK lending.
//
// A policy lives in its own file (policy_<name>.go) and registers itself
// from init with registerPolicy.
type Policy interface {
	Name() PolicyName
	// UsesProbe: probe warnings reclaim a lent core early, and the DP loop
	// takes probe wake-ups (dynamic waits for the packet itself).
	UsesProbe() bool
	// ConfinesBlockers: tasks that delay DP threads are kept off DP cores.
	ConfinesBlockers() bool
	// LendsDPDK: an idle DPDK lcore on a core in the CP cpuset may yield it.
	LendsDPDK() bool
	// newCore returns the policy's state for one core, fresh.
	newCore(env CoreEnv) CorePolicy
}

// CoreEnv is what a policy's per-core state is made with.
type CoreEnv struct {
	CPU    int
	Params *Params // the engine's; read-only
	Log    *slog.Logger
}

// CorePolicy is one core's policy state. Every call comes from the engine's
// goroutine, with engine time; none touches the actuator. Methods report
// what happened (a trip, a hold) so the engine counts and actuates it.
type CorePolicy interface {
	// Plan is the core's target configuration now.
	Plan() Plan
	// Deadline is when Plan changes by itself (a hold ending), if ever.
	Deadline() (time.Time, bool)
	// Expire ends what is due at now (called at or after Deadline).
	Expire(now time.Time)
	// Lent: the loop yielded a lendable core at at. A true result means the
	// core is now held (a flap hold).
	Lent(at time.Time) (held bool)
	// Returned: a lent period of length lent ended for why.
	Returned(why Cause, lent time.Duration)
	// Busy: the loop handled packets again (an idle gap ended).
	Busy()
	// Guard judges the budget horizon after a sample taken while lendable
	// (the SLO rule: see Verdict). The engine confines on High and Breach
	// while the window is above the mark too, and calls Bench on a Breach
	// that no confinement can answer.
	Guard(at time.Time, horizon SLOWindow) Verdict
	// Bench takes the core out of lending for a back-off: the SLO is
	// breached, the window too, and no CP task could be confined for it.
	// The engine counts the trip and clears the window.
	Bench(at time.Time, window SLOWindow)
	// Load judges the mean busy fraction over the load window, covering
	// covered of it. A true result means a load hold began.
	Load(at time.Time, mean float64, covered time.Duration) (held bool)
	// Describe fills the policy's part of the core's snapshot.
	Describe(cs *CoreSnapshot)
}

// SLOWindow is the guard's evidence: per-packet RX residence over a
// sliding window (the budget horizon or SLOWindow), while the core was
// lendable.
type SLOWindow interface {
	Packets() uint64
	Late() uint64
	WorstP99() time.Duration
	// P99Exceeds: more than 1% of the window's packets waited the SLO.
	P99Exceeds() bool
	// Budget: the share of the SLO the window's p99 uses (an upper bound
	// at BudgetMarks; 0 when empty).
	Budget() float64
	exceeds(mark int) bool
}

// Verdict is the SLO rule's judgement of a window.
type Verdict int

// Verdicts, by rising pressure.
const (
	// VerdictUnknown: too few packets to judge; nothing changes.
	VerdictUnknown Verdict = iota
	// VerdictCalm: the p99 is at or below the high-water mark: lend as
	// eagerly as dynamic.
	VerdictCalm
	// VerdictHigh: above the high-water mark, within the SLO: confine the
	// CP task that delayed packets most, and admit lending with care.
	VerdictHigh
	// VerdictBreach: above the SLO: confine; bench the core if no CP task
	// can be confined (kernel threads, unknown blockers).
	VerdictBreach
	numVerdicts
)

var verdictNames = [numVerdicts]string{"unknown", "calm", "high", "breach"}

func (v Verdict) String() string { return enumName(verdictNames[:], v, "Verdict") }

// MarshalText makes verdicts readable in JSON status.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads a verdict back.
func (v *Verdict) UnmarshalText(b []byte) error { return parseEnum(verdictNames[:], b, "verdict", v) }

// judge is the SLO rule: a window of at least minSamples packets is
// judged by its p99 against the high-water mark and the SLO.
func judge(w SLOWindow, minSamples int) Verdict {
	switch {
	case w.Packets() < uint64(minSamples):
		return VerdictUnknown
	case w.exceeds(markSLO):
		return VerdictBreach
	case w.exceeds(markHigh):
		return VerdictHigh
	}
	return VerdictCalm
}

// Plan is a core's target configuration.
type Plan struct {
	InCPUSet   bool          // slow path: the core belongs in the CP cpuset
	YieldAfter int64         // fast path: empty polls before the loop yields; <0 never
	Slice      time.Duration // fast path: the loop's bounded wait when it yields
	Hold       Hold          // why the core is not lending, if it is not
}

// heldPlan keeps a core in DP: out of the cpuset and never yielding. Every
// hold is out of the cpuset: a loop that may not yield while CP shares its
// core is a SCHED_FIFO spinner starving CP.
func heldPlan(slice time.Duration, why Hold) Plan {
	return Plan{InCPUSet: false, YieldAfter: -1, Slice: slice, Hold: why}
}

// fixedCore is the per-core state of a policy without adaptation: the same
// plan always. Policies embed it and override what they adapt.
type fixedCore struct{ plan Plan }

func (f fixedCore) Plan() Plan                                { return f.plan }
func (fixedCore) Deadline() (time.Time, bool)                 { return time.Time{}, false }
func (fixedCore) Expire(time.Time)                            {}
func (fixedCore) Lent(time.Time) bool                         { return false }
func (fixedCore) Returned(Cause, time.Duration)               {}
func (fixedCore) Busy()                                       {}
func (fixedCore) Guard(time.Time, SLOWindow) Verdict          { return VerdictUnknown }
func (fixedCore) Bench(time.Time, SLOWindow)                  {}
func (fixedCore) Load(time.Time, float64, time.Duration) bool { return false }
func (fixedCore) Describe(*CoreSnapshot)                      {}

var registry struct {
	mu    sync.RWMutex
	order []Policy // by rank
	ranks []int
}

// registerPolicy adds p. rank orders the listings (help texts, the eval's
// runs: static first, as the reference). A second policy of the same name
// is a programming error.
func registerPolicy(rank int, p Policy) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if slices.ContainsFunc(registry.order, func(q Policy) bool { return q.Name() == p.Name() }) {
		panic("scheduler: policy " + string(p.Name()) + " registered twice")
	}
	i := 0
	for i < len(registry.ranks) && registry.ranks[i] <= rank {
		i++
	}
	registry.order = slices.Insert(registry.order, i, p)
	registry.ranks = slices.Insert(registry.ranks, i, rank)
}

// unregisterPolicy removes the policy called n (tests).
func unregisterPolicy(n PolicyName) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if i := slices.IndexFunc(registry.order, func(q Policy) bool { return q.Name() == n }); i >= 0 {
		registry.order = slices.Delete(registry.order, i, i+1)
		registry.ranks = slices.Delete(registry.ranks, i, i+1)
	}
}

func lookupPolicy(n PolicyName) (Policy, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	for _, p := range registry.order {
		if p.Name() == n {
			return p, true
		}
	}
	return nil, false
}
