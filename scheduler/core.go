package scheduler

import "time"

// core is one DP core: the engine's state machine, what it last actuated,
// its counters and measurements, and the policy's own state for it. Only
// the engine touches it.
type core struct {
	cpu int
	machine
	actuated
	counters
	measured
	pol CorePolicy  // the current policy's state for this core
	rt  realtimeRun // the loop's real-time running (realtime.go)

	// due is the core's earliest pending timer (hasDue: one is pending),
	// kept by refreshDue whenever the core's state may have changed, so
	// that finding the engine's next timer reads a field per core instead
	// of asking each core's policy and plan on every event.
	due    time.Time
	hasDue bool
}

// machine is the core's place in the state machine (state.go).
type machine struct {
	state State
	since time.Time
	// blocked: the loop yielded while the core was not lendable (IDLE).
	blocked bool
	// probeDown: the core's probe failed; every policy holds it static.
	probeDown bool
	lentAt    time.Time
	pending   Cause     // why the engine asked a lent core to wake
	reclaimBy time.Time // RECLAIMING: taken as running after this
}

// actuated is what the engine last carried out on the core, so that it
// issues only differences.
type actuated struct {
	inCPUSet bool
	// cpusetKnown: a Lend or Reclaim has succeeded, so inCPUSet is fact; a
	// failed write then changes nothing. Before that, failures assume the
	// worse case for DP.
	cpusetKnown bool
	knobsSet    bool
	yield       int64
	knobSlice   time.Duration
	retryAt     time.Time // slow path: no new attempt before this after an error
}

// counters only grow (snapshots and metrics).
type counters struct {
	lentTotal   time.Duration
	lends       uint64
	reclaims    [numCauses]uint64 // [CauseGuard]: guard trips
	timeouts    uint64
	transitions uint64
	invalid     uint64
	actErrors   uint64
	cpusetLends uint64
	cpusetBacks uint64
	probes      uint64
	flapsHeld   uint64
	sloSeen     uint64
	// confines: CP tasks confined for this core's windows; confineMisses:
	// windows above the high-water mark with nothing to confine.
	confines      uint64
	confineMisses uint64
	// benchSkips: breaches with nothing to confine that did not bench the
	// core, because benching it had not helped.
	benchSkips uint64
}

// measured is what the loop and the probe report, kept for every policy.
type measured struct {
	emptyPolls int64
	wakeHist   histogram
	slo        sloWindow // per-packet residence while lendable, over SLOWindow
	horizon    sloWindow // the same over BudgetHorizon: what the SLO is judged on
	verdict    Verdict   // the SLO rule's last judgement of the horizon
	// lastConfine: when the rule last confined a CP task for this core.
	lastConfine time.Time
	// benched: residence while the guard benched the core (the bench's
	// effect); benchFutile: the last bench did not bring the p99 within
	// the SLO, judged at benchJudged.
	benched     sloWindow
	benchFutile bool
	benchJudged time.Time
	// quietSince: the window's p99 has been at or below the low-water mark
	// since then (zero: it is not).
	quietSince time.Time
	load       loadWindow
	loadMean   float64
	packets    int64
	harvest    time.Duration
}
