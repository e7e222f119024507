package scheduler

import (
	"fmt"
	"time"
)

// Policy is one of the built-in lending policies. Get one with PolicyByName;
// the engine asks it, after every event and timer, what a core's target is
// and applies only the difference (the cpuset only when membership changes).
type Policy interface {
	// Name is static, dynamic or taichi.
	Name() string
	// UsesProbe reports whether probe warnings reclaim a lent core early.
	UsesProbe() bool
	// adaptive: admission, slice growth, flap limiter, SLO guard and load hold.
	adaptive() bool
	plan(c *core, p *Params) Plan
}

// Plan is a core's target configuration.
type Plan struct {
	InCPUSet   bool          // slow path: the core belongs in the CP cpuset
	YieldAfter int64         // fast path: empty polls before the loop yields; <0 never
	Slice      time.Duration // fast path: the loop's bounded wait when it yields
	Hold       Hold          // why the core is not lending, if it is not
}

// PolicyByName returns the policy called name.
func PolicyByName(name string) (Policy, error) { return policyByName(name) }

func policyByName(name string) (Policy, error) {
	switch name {
	case PolicyStatic:
		return staticPolicy{}, nil
	case PolicyDynamic:
		return dynamicPolicy{}, nil
	case PolicyTaichi:
		return taichiPolicy{}, nil
	}
	return nil, fmt.Errorf("unknown policy %q (want static, dynamic or taichi)", name)
}

// staticPolicy is today's practice: DP cores are never lent.
type staticPolicy struct{}

func (staticPolicy) Name() string    { return PolicyStatic }
func (staticPolicy) UsesProbe() bool { return false }
func (staticPolicy) adaptive() bool  { return false }
func (staticPolicy) plan(c *core, p *Params) Plan {
	return Plan{InCPUSet: false, YieldAfter: -1, Slice: p.SliceMin, Hold: HoldPolicy}
}

// dynamicPolicy lends on every idle poll and leaves reclaiming to the packet
// itself: no probe, no admission, no guard.
type dynamicPolicy struct{}

func (dynamicPolicy) Name() string    { return PolicyDynamic }
func (dynamicPolicy) UsesProbe() bool { return false }
func (dynamicPolicy) adaptive() bool  { return false }
func (dynamicPolicy) plan(c *core, p *Params) Plan {
	return Plan{InCPUSet: true, YieldAfter: 1, Slice: p.DynamicSlice}
}

// taichiPolicy lends after an adaptive empty-poll threshold with growing
// slices, reclaims early on probe warnings, and holds cores whose lending
// hurts (SLO guard, flapping) or that DP needs (high load).
type taichiPolicy struct{}

func (taichiPolicy) Name() string    { return PolicyTaichi }
func (taichiPolicy) UsesProbe() bool { return true }
func (taichiPolicy) adaptive() bool  { return true }
func (taichiPolicy) plan(c *core, p *Params) Plan {
	switch {
	case c.benched:
		return Plan{InCPUSet: false, YieldAfter: -1, Slice: c.slice, Hold: HoldGuard}
	case c.loadHeld:
		return Plan{InCPUSet: false, YieldAfter: -1, Slice: c.slice, Hold: HoldLoad}
	case c.flapHeld:
		// Out of the cpuset, like every hold: a loop that may not yield
		// while CP shares its core is a SCHED_FIFO spinner starving CP,
		// which the kernel's RT throttling (fair server) then interrupts
		// for milliseconds. The hold is rare (FlapLimit cycles a window),
		// so its cpuset writes are too.
		return Plan{InCPUSet: false, YieldAfter: -1, Slice: c.slice, Hold: HoldFlap}
	}
	return Plan{InCPUSet: true, YieldAfter: c.threshold, Slice: c.slice}
}
