// Package scheduler is taichi's policy engine: it decides, per data-plane (DP)
// core, when control-plane (CP) work may borrow the core and when DP takes it
// back.
//
// Every DP core runs a small state machine (see Transitions):
//
//	DP_ACTIVE -> IDLE -> LENT -> RECLAIMING -> DP_ACTIVE
//
// driven by events the daemon feeds in (empty-poll streaks, the DP loop's
// yields and wakes with their exposed wake latency, probe warnings, load
// samples, latency measurements) and by timers. Decisions go out through an
// Actuator the daemon implements, at two speeds:
//
//   - fast, per idle gap: SetYield tunes when the DP loop blocks and for how
//     long (lock-free knobs in the loop), Wake wakes a blocked loop now;
//   - slow, per trend: Lend/Reclaim add or remove the core from the CP
//     cpuset, only when a policy starts or changes, when the SLO guard benches
//     or resumes a core, and when sustained DP load starts or ends.
//
// The engine (engine.go) keeps the state machine, the timers and the
// actuation; what to lend is the policy's (Policy, policy.go). Each policy
// is one file that registers itself: static (never lend), dynamic (lend on
// every idle poll, reclaim only when the packet wakes the loop) and taichi
// (adaptive admission, growing slices, probe-driven early reclaim, a flap
// limiter, an SLO guard, a high-load hold, blocker confinement). A policy
// keeps its per-core state in the CorePolicy it creates for each core.
//
// All state belongs to one goroutine (Run); time comes only from event
// timestamps and a Clock, so the same events with a FakeClock produce the same
// actions every time. The package imports no other taichi package.
package scheduler
