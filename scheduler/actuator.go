package scheduler

import "time"

// Actuator carries the scheduler's decisions out; the daemon implements it
// over the vCPU pool and the DP loops. Calls come from the scheduler's one
// goroutine, in order.
type Actuator interface {
	// Lend adds cpu to the CP cpuset (slow path: a cgroup write).
	Lend(cpu int) error
	// Reclaim removes cpu from the CP cpuset (slow path). An actuator may
	// write it after returning (the daemon does: a write can take a
	// second); it then keeps a following SetYield that stops the loop
	// yielding until the write is done, the order apply keeps for one
	// that writes before it returns.
	Reclaim(cpu int) error
	// SetYield sets the DP loop's fast-path knobs: yield after this many
	// empty polls (<0: never) and block at most slice when it does.
	SetYield(cpu int, yieldAfterEmptyPolls int64, slice time.Duration)
	// Wake wakes the DP loop on cpu now.
	Wake(cpu int)
}

// RuleGate is optional: an Actuator that implements it is told what the
// policy in force asks of each core beyond its cpuset and its loop's knobs
// (CoreRules) whenever the engine applies a core afresh (at start, on a
// policy switch or a new SLO), before that core's cpuset: rules follow the
// policy alone, so they change only then. The actuator keeps them; nothing
// outside the scheduler reads a policy's own answers.
type RuleGate interface {
	SetCoreRules(cpu int, r CoreRules)
}

// CoreRules is what the policy in force asks of one core's DP threads and
// its CP tasks beyond the cpuset and the loop's fast-path knobs.
type CoreRules struct {
	// ProbeWake: probe warnings wake the core's DP loop and reclaim its
	// lent DPDK lcores (dynamic waits for the packet itself).
	ProbeWake bool
	// LendDPDK: an idle DPDK lcore or OVS PMD on the core may yield it
	// while the core is in the CP cpuset.
	LendDPDK bool
	// ConfineBlockers: CP tasks whose kernel paths delay the core's DP
	// threads may be confined to the CP cores (the SLO rule).
	ConfineBlockers bool
}

// rulesOf is what pol asks of every core.
func rulesOf(pol Policy) CoreRules {
	return CoreRules{ProbeWake: pol.UsesProbe(), LendDPDK: pol.LendsDPDK(), ConfineBlockers: pol.ConfinesBlockers()}
}

// BlockerControl is optional: an Actuator that implements it carries out
// the SLO rule's confinements under a policy that confines blockers. Calls
// come from the scheduler's goroutine.
type BlockerControl interface {
	// ConfineWorst confines the CP task whose in-kernel paths delayed
	// cpu's DP threads most over the last window, among those that delayed
	// one by minDelay or more at least once there and by minTotal in all,
	// with its command's other processes; budget is the core's share of the SLO (for the
	// record). False when no CP task can be confined for cpu.
	ConfineWorst(cpu int, window, minDelay, minTotal time.Duration, budget float64) bool
	// ReleaseOne releases the confined command whose back-off ended
	// first; false when none may be released yet.
	ReleaseOne() bool
}
