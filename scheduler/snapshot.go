package scheduler

import "time"

// Snapshot is a consistent copy of the scheduler's state.
type Snapshot struct {
	At time.Time `json:"at"`
	// EngineAt is the engine's own time: the latest event or timer it has
	// decided on (At minus EngineAt is how far decisions trail the clock).
	EngineAt           time.Time      `json:"engine_at"`
	Policy             PolicyName     `json:"policy"`
	Cores              []CoreSnapshot `json:"cores"`
	DroppedEvents      uint64         `json:"dropped_events"`        // Post found the queue full
	UnknownCPUEvents   uint64         `json:"unknown_cpu_events"`    // events for CPUs not managed
	ClampedEvents      uint64         `json:"clamped_events"`        // events stamped before engine time
	InvalidTransitions uint64         `json:"invalid_transitions"`   // sum over cores
	ActuatorErrors     uint64         `json:"actuator_errors"`       // sum over cores
	HarvestedTotal     time.Duration  `json:"harvested_cp_total_ns"` // sum over cores
	SLO                time.Duration  `json:"slo_ns"`                // the bound in use
	// Releases: confined commands the SLO rule released (quiet windows).
	Releases uint64 `json:"releases"`
	// DecisionLatency is the reaction time: from a DP loop's yield or wake
	// to the engine's decision on it (the event's trip through the daemon
	// and the scheduler's queue).
	DecisionLatency LatencySnapshot `json:"decision_latency"`
}

// CoreSnapshot is one DP core.
type CoreSnapshot struct {
	CPU        int           `json:"cpu"`
	State      State         `json:"state"`
	Since      time.Time     `json:"since"`
	Policy     PolicyName    `json:"policy"`
	Hold       Hold          `json:"hold"` // why it is not lending, "" if it may
	InCPUSet   bool          `json:"in_cpuset"`
	YieldAfter int64         `json:"yield_after"` // as last set on the loop; <0 never
	Slice      time.Duration `json:"slice_ns"`    // as last set on the loop

	Threshold    int64         `json:"threshold"`    // taichi's adaptive empty-poll threshold
	CurrentSlice time.Duration `json:"cur_slice_ns"` // taichi's next lent slice
	EmptyPolls   int64         `json:"empty_polls"`  // last reported streak

	LentTotal time.Duration `json:"lent_ns"` // includes the current lent period
	Lends     uint64        `json:"lends"`   // fast-path lends (entries into LENT)
	// Reclaims counts lent periods ended by cause name (probe, rx,
	// slice_end, policy) plus guard trips and load holds (guard, load).
	Reclaims        map[string]uint64 `json:"reclaims"`
	ReclaimTimeouts uint64            `json:"reclaim_timeouts"` // wake reports lost
	CPUSetLends     uint64            `json:"cpuset_lends"`     // slow-path Lend calls that succeeded
	CPUSetReclaims  uint64            `json:"cpuset_reclaims"`  // slow-path Reclaims of a lent-in core
	Probes          uint64            `json:"probes"`

	WakeLatency LatencySnapshot `json:"wake_latency"`
	// The SLO guard's window of per-packet RX residence: its worst
	// interval p99, its packets and how many of them waited at least the SLO.
	SLOWindowP99     time.Duration `json:"slo_window_p99_ns"`
	SLOWindowPackets uint64        `json:"slo_window_packets"`
	SLOWindowLate    uint64        `json:"slo_window_late"`
	// Budget is the share of the SLO the p99 over the budget horizon uses
	// (an upper bound at the next of BudgetMarks; 0: no packets; above the
	// highest mark shows as 99); WindowBudget the same over SLOWindow.
	Budget       float64 `json:"budget"`
	WindowBudget float64 `json:"window_budget"`
	// Verdict is the SLO rule's last judgement; Pressed: taichi admits
	// lending with care (the last judged window was above the high mark).
	Verdict Verdict `json:"verdict"`
	Pressed bool    `json:"pressed"`
	// Confines: CP tasks confined for this core's windows; ConfineMisses:
	// judgements above the high mark that found nothing to confine.
	Confines      uint64 `json:"confines"`
	ConfineMisses uint64 `json:"confine_misses"`
	// BenchFutile: the last bench did not bring the p99 within the SLO
	// (the delay is not lending's); BenchSkips: breaches that therefore did
	// not bench the core.
	BenchFutile bool   `json:"bench_futile,omitempty"`
	BenchSkips  uint64 `json:"bench_skips,omitempty"`

	GuardTrips   uint64        `json:"guard_trips"`
	Benched      bool          `json:"benched"`
	BenchedUntil time.Time     `json:"benched_until"`
	NextBackoff  time.Duration `json:"next_backoff_ns"`

	FlapsHeld     uint64    `json:"flaps_held"`
	FlapHeld      bool      `json:"flap_held"`
	FlapHeldUntil time.Time `json:"flap_held_until"`

	// RealtimeHolds: times the core was held in DP because its loop ran
	// real-time for RealtimeShare of a window; RealtimeRun: how long it ran
	// real-time over the last window.
	RealtimeHolds uint64        `json:"realtime_holds"`
	RealtimeRun   time.Duration `json:"realtime_run_ns"`

	LoadHeld bool    `json:"load_held"`
	Load     float64 `json:"load"` // mean busy fraction over the load window
	Packets  int64   `json:"packets"`

	Harvested          time.Duration `json:"harvested_cp_ns"`
	Transitions        uint64        `json:"transitions"`
	InvalidTransitions uint64        `json:"invalid_transitions"`
	ActuatorErrors     uint64        `json:"actuator_errors"`
}

// LatencySnapshot is a latency histogram: a core's exposed wake latency,
// or the scheduler's decision latency.
type LatencySnapshot struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	P50   time.Duration `json:"p50_ns"` // bucket upper bound: never an underestimate
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
	// Buckets are cumulative counts per upper bound (LatencyBuckets);
	// samples above the last bound are only in Count.
	Buckets []Bucket `json:"buckets"`
}

// Bucket is a cumulative histogram bucket.
type Bucket struct {
	Le    time.Duration `json:"le_ns"`
	Count uint64        `json:"count"`
}

// Snapshot returns the current state; safe from any goroutine.
func (s *Scheduler) Snapshot() Snapshot {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.e.snapshot(now)
	snap.DroppedEvents = s.dropped.Load()
	snap.DecisionLatency = s.decision.snapshot()
	return snap
}

func (e *engine) snapshot(now time.Time) Snapshot {
	if now.Before(e.now) {
		now = e.now
	}
	snap := Snapshot{At: now, EngineAt: e.now, Policy: e.pol.Name(), UnknownCPUEvents: e.unknownCPU, ClampedEvents: e.clamped,
		SLO: e.p.SLO, Releases: e.releases}
	for _, c := range e.cores {
		cs := e.coreSnapshot(c, now)
		snap.InvalidTransitions += cs.InvalidTransitions
		snap.ActuatorErrors += cs.ActuatorErrors
		snap.HarvestedTotal += cs.Harvested
		snap.Cores = append(snap.Cores, cs)
	}
	return snap
}

func (e *engine) coreSnapshot(c *core, now time.Time) CoreSnapshot {
	lent := c.lentTotal
	if c.state == Lent || c.state == Reclaiming {
		lent += now.Sub(c.lentAt)
	}
	reclaims := make(map[string]uint64, numCauses)
	for i, n := range c.reclaims {
		reclaims[Cause(i).String()] = n
	}
	lat := c.wakeHist.snapshot()
	cs := CoreSnapshot{
		CPU: c.cpu, State: c.state, Since: c.since, Policy: e.pol.Name(),
		Hold: e.planFor(c).Hold, InCPUSet: c.inCPUSet, YieldAfter: c.yield, Slice: c.knobSlice,
		EmptyPolls: c.emptyPolls,
		LentTotal:  lent, Lends: c.lends, Reclaims: reclaims, ReclaimTimeouts: c.timeouts,
		CPUSetLends: c.cpusetLends, CPUSetReclaims: c.cpusetBacks, Probes: c.probes,
		WakeLatency: lat, SLOWindowP99: c.slo.WorstP99(), SLOWindowPackets: c.slo.packets, SLOWindowLate: c.slo.Late(),
		Budget: min(c.horizon.Budget(), budgetOver), WindowBudget: min(c.slo.Budget(), budgetOver), Verdict: c.verdict, Confines: c.confines, ConfineMisses: c.confineMisses,
		BenchFutile: c.benchFutile, BenchSkips: c.benchSkips,
		GuardTrips: c.reclaims[CauseGuard], FlapsHeld: c.flapsHeld,
		RealtimeHolds: c.rt.holds, RealtimeRun: c.rt.used(now, e.p.RealtimeWindow),
		Load: c.loadMean, Packets: c.packets,
		Harvested: c.harvest, Transitions: c.transitions, InvalidTransitions: c.invalid, ActuatorErrors: c.actErrors,
	}
	c.pol.Describe(&cs)
	return cs
}

func (h *histogram) snapshot() LatencySnapshot {
	lat := LatencySnapshot{Count: h.count, Sum: h.sum, P50: h.quantile(0.50), P99: h.quantile(0.99), Max: h.max}
	var cum uint64
	for i, le := range LatencyBuckets {
		cum += h.counts[i]
		lat.Buckets = append(lat.Buckets, Bucket{Le: le, Count: cum})
	}
	return lat
}
