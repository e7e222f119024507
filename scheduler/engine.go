package scheduler

import (
	"log/slog"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	EvIdle      EventKind = iota // empty-poll streak (EmptyPolls)
	EvBusy                       // the loop handled packets again
	EvYield                      // the loop blocked
	EvWake                       // the loop runs again (Wake, Latency = exposed wake latency)
	EvProbe                      // the probe warns packets are coming for CPU
	EvLoad                       // load sample (Interval, BusyFraction, Packets)
	EvResidence                  // per-packet RX residence over an interval (Residence)
	EvHarvested                  // cumulative CP CPU time on CPU while lent (Harvested)
	EvProbeDown                  // the core's probe failed (ProbeDown true) or runs again (false)
	numEventKinds
)

var eventKindNames = [numEventKinds]string{"idle", "busy", "yield", "wake", "probe", "load", "residence", "harvested", "probe-down"}

func (k EventKind) String() string {
	if k >= 0 && k < numEventKinds {
		return eventKindNames[k]
	}
	return "EventKind(?)"
}

// Event is one input. At is when it happened (zero: stamped on receipt).
type Event struct {
	Kind EventKind
	CPU  int
	At   time.Time

	EmptyPolls   int64         // EvIdle
	Wake         WakeCause     // EvWake
	Latency      time.Duration // EvWake: exposed wake latency (negative: none)
	Residence    Residence     // EvResidence
	Interval     time.Duration // EvLoad: the interval the sample covers
	BusyFraction float64       // EvLoad: 0..1 (DPDK: non-idle share of the interval)
	Packets      int64         // EvLoad: packets in the interval
	Harvested    time.Duration // EvHarvested: cumulative CP CPU time
	ProbeDown    bool          // EvProbeDown
}

// engine is the deterministic core: no goroutines, no clock reads. Time only
// comes from event timestamps and advance.
type engine struct {
	p     Params
	act   Actuator
	gate  RuleGate
	ctl   BlockerControl
	log   *slog.Logger
	pol   Policy
	now   time.Time
	cores []*core
	byCPU map[int]*core

	unknownCPU uint64
	clamped    uint64
	started    bool
	// releases: confined commands released by the SLO rule.
	releases uint64

	// onTransition, if set, sees every state change (tests record sequences).
	onTransition func(cpu int, from, to State, at time.Time)
}

// newEngine wants validated Params (a known policy).
func newEngine(p Params, cpus []int, act Actuator, log *slog.Logger, now time.Time) *engine {
	pol, _ := lookupPolicy(p.Policy)
	e := &engine{p: p, act: act, log: log, pol: pol, now: now, byCPU: map[int]*core{}}
	e.gate, _ = act.(RuleGate)
	e.ctl, _ = act.(BlockerControl)
	for _, cpu := range cpus {
		c := &core{cpu: cpu, machine: machine{state: DPActive, since: now}}
		c.quietSince = now
		c.pol = e.newCorePolicy(c)
		c.slo.samples = newRing[residenceSample](sloWindowCap)
		c.horizon.samples = newRing[residenceSample](sloWindowCap)
		c.benched.samples = newRing[residenceSample](sloWindowCap)
		c.load.samples = newRing[loadSample](loadWindowCap)
		e.cores = append(e.cores, c)
		e.byCPU[cpu] = c
	}
	return e
}

// start applies the policy to every core, including the slow path: the
// cpuset's real contents are unknown until then.
func (e *engine) start(now time.Time) {
	e.advance(now)
	e.started = true
	e.log.Info("scheduler start", "policy", e.pol.Name(), "cpus", len(e.cores))
	for _, c := range e.cores {
		e.apply(c, true)
	}
	e.refreshAllDue()
}

// setPolicy switches policy and re-applies every core's slow path.
func (e *engine) setPolicy(pol Policy, now time.Time) {
	e.advance(now)
	old := e.pol.Name()
	e.pol = pol
	e.log.Info("scheduler policy", "from", old, "to", pol.Name())
	if old != pol.Name() {
		// What a policy learnt (the guard's evidence and back-off above
		// all) was about lending under the old one.
		e.freshStart()
	}
	e.reapply()
	e.refreshAllDue()
}

// setSLO changes the bound. Like a new policy, a new contract starts from
// a clean slate: the windows were judged against the old bound, and what
// the policy learnt (bench back-offs, adaptation) was learnt under it.
func (e *engine) setSLO(d time.Duration, now time.Time) {
	e.advance(now)
	e.p.SLO = d
	e.freshStart()
	e.log.Info("scheduler slo", "slo", d)
	e.reapply()
	e.refreshAllDue()
}

// freshStart gives every core a new policy state and empty windows
// (counters stay).
func (e *engine) freshStart() {
	for _, c := range e.cores {
		c.pol = e.newCorePolicy(c)
		c.slo.reset()
		c.horizon.reset()
		c.benched.reset()
		c.benchFutile = false
		c.verdict = VerdictUnknown
		c.rt.forget()
		c.rt.heldUntil = time.Time{}
	}
}

// reapply applies the policy to every core, slow path included (once Run
// has started).
func (e *engine) reapply() {
	if !e.started {
		return
	}
	for _, c := range e.cores {
		e.apply(c, true)
		e.trackRealtime(c)
	}
}

func (e *engine) newCorePolicy(c *core) CorePolicy {
	return e.pol.newCore(CoreEnv{CPU: c.cpu, Params: &e.p, Log: e.log})
}

// advance moves engine time to t (never backwards), firing due timers at
// their own times, earliest first, lowest CPU first on ties.
func (e *engine) advance(t time.Time) {
	if t.Before(e.now) {
		t = e.now
	}
	for {
		c, at, ok := e.nextDue()
		if !ok || at.After(t) {
			break
		}
		e.now = at
		e.fire(c)
	}
	e.now = t
}

// deadline returns a core's earliest pending timer.
func (e *engine) deadline(c *core) (time.Time, bool) {
	var best time.Time
	found := false
	consider := func(t time.Time) {
		if !found || t.Before(best) {
			best, found = t, true
		}
	}
	if t, ok := c.pol.Deadline(); ok {
		consider(t)
	}
	if c.state == Reclaiming {
		consider(c.reclaimBy)
	}
	if t, ok := e.realtimeDeadline(c); ok {
		consider(t)
	}
	if e.started && !c.retryAt.IsZero() && e.planFor(c).InCPUSet != c.inCPUSet {
		consider(c.retryAt)
	}
	return best, found
}

func (e *engine) nextDue() (*core, time.Time, bool) {
	var best *core
	var bestAt time.Time
	for _, c := range e.cores {
		if c.hasDue && (best == nil || c.due.Before(bestAt)) {
			best, bestAt = c, c.due
		}
	}
	return best, bestAt, best != nil
}

// refreshDue recomputes c's pending timer: after anything that may change
// c's state (an event or a timer on c), and for every core after
// engine-wide changes (start, a policy, an SLO).
func (e *engine) refreshDue(c *core) { c.due, c.hasDue = e.deadline(c) }

func (e *engine) refreshAllDue() {
	for _, c := range e.cores {
		e.refreshDue(c)
	}
}

// nextDeadline is when Run must wake up next, if ever.
func (e *engine) nextDeadline() (time.Time, bool) {
	_, at, ok := e.nextDue()
	return at, ok
}

func (e *engine) fire(c *core) {
	now := e.now
	if c.state == Reclaiming && !now.Before(c.reclaimBy) {
		// The wake report was lost; the loop's own bounded wait has long
		// ended, so DP runs.
		c.timeouts++
		e.step(c, inReclaimTimeout, now)
	}
	c.pol.Expire(now)
	if !c.retryAt.IsZero() && !now.Before(c.retryAt) {
		c.retryAt = time.Time{}
	}
	e.apply(c, false)
	e.realtime(c)
	e.refreshDue(c)
}

// handle processes one event at its timestamp.
func (e *engine) handle(ev Event) {
	c, ok := e.byCPU[ev.CPU]
	if !ok {
		e.unknownCPU++
		return
	}
	at := ev.At
	if at.Before(e.now) {
		e.clamped++
		at = e.now
	}
	e.advance(at)
	switch ev.Kind {
	case EvIdle, EvBusy, EvYield, EvWake:
		c.rt.seen = true
	}
	switch ev.Kind {
	case EvIdle:
		c.emptyPolls = ev.EmptyPolls
		e.step(c, inIdle, at)
	case EvBusy:
		c.emptyPolls = 0
		c.pol.Busy()
		e.step(c, inBusy, at)
	case EvYield:
		e.step(c, inYield, at)
	case EvWake:
		if ev.Wake != WakeTimeout && ev.Latency >= 0 { // negative: no sample
			c.wakeHist.add(ev.Latency)
		}
		e.wake(c, ev.Wake, at)
	case EvProbe:
		c.probes++
		if e.pol.UsesProbe() && c.state == Lent {
			c.reclaims[CauseProbe]++
			e.requestReclaim(c, CauseProbe, at)
		}
	case EvLoad:
		e.loadSample(c, ev, at)
	case EvResidence:
		e.sloSample(c, at, ev.Residence)
	case EvHarvested:
		c.harvest = ev.Harvested
	case EvProbeDown:
		if c.probeDown != ev.ProbeDown {
			c.probeDown = ev.ProbeDown
			e.apply(c, false)
		}
	default:
		return
	}
	if e.started {
		e.apply(c, false)
		e.realtime(c)
	}
	e.refreshDue(c)
}

// move changes state if the table allows it; otherwise it counts an invalid
// transition and reports false.
func (e *engine) move(c *core, to State, at time.Time) bool {
	from := c.state
	if !transitionAllowed(from, to) {
		c.invalid++
		e.log.Debug("invalid transition", "cpu", c.cpu, "from", from, "to", to)
		return false
	}
	switch {
	case to == Lent:
		c.lentAt = at
		c.lends++
	case from == Reclaiming:
		c.lentTotal += at.Sub(c.lentAt)
	}
	c.state, c.since = to, at
	c.transitions++
	if e.onTransition != nil {
		e.onTransition(c.cpu, from, to, at)
	}
	return true
}

func (e *engine) invalid(c *core, in input) {
	c.invalid++
	e.log.Debug("invalid input", "cpu", c.cpu, "state", c.state, "input", int(in))
}

// step applies the input table (see state.go).
func (e *engine) step(c *core, in input, at time.Time) {
	switch c.state {
	case DPActive:
		switch in {
		case inIdle:
			e.move(c, Idle, at)
		case inYield:
			// The streak report was not seen (sampled or dropped): the loop
			// was idle before it yielded.
			e.move(c, Idle, at)
			e.step(c, inYield, at)
		case inWake:
			e.invalid(c, in)
		}
	case Idle:
		switch in {
		case inBusy:
			c.blocked = false
			e.move(c, DPActive, at)
		case inYield:
			if c.inCPUSet && !c.blocked {
				e.move(c, Lent, at)
				if c.pol.Lent(at) {
					c.flapsHeld++
				}
			} else {
				c.blocked = true
			}
		case inWake:
			c.blocked = false
			e.move(c, DPActive, at)
		}
	case Lent:
		switch in {
		case inIdle, inBusy, inYield:
			e.invalid(c, in)
		case inReclaim:
			c.reclaimBy = at.Add(e.p.ReclaimTimeout)
			e.move(c, Reclaiming, at)
		}
	case Reclaiming:
		switch in {
		case inIdle, inBusy, inYield:
			e.invalid(c, in)
		case inWake, inReclaimTimeout:
			e.move(c, DPActive, at)
		}
	}
}

// requestReclaim asks a lent core's loop to wake now.
func (e *engine) requestReclaim(c *core, cause Cause, at time.Time) {
	if c.state != Lent {
		return
	}
	c.pending = cause
	e.step(c, inReclaim, at)
	e.act.Wake(c.cpu)
}

// wake handles the loop's report that it runs again.
func (e *engine) wake(c *core, cause WakeCause, at time.Time) {
	var why Cause
	switch c.state {
	case Lent:
		switch cause {
		case WakeRx:
			why = CauseRx
		case WakeProbe:
			why = CauseProbe
		default:
			why = CauseSliceEnd
		}
		c.reclaims[why]++
		c.pending = why
		c.reclaimBy = at.Add(e.p.ReclaimTimeout)
		e.move(c, Reclaiming, at)
	case Reclaiming:
		why = c.pending
	default:
		e.step(c, inWake, at)
		return
	}
	lent := at.Sub(c.lentAt)
	e.step(c, inWake, at)
	c.pol.Returned(why, lent)
}

// loadSample feeds the policy's load hold.
func (e *engine) loadSample(c *core, ev Event, at time.Time) {
	c.packets += ev.Packets
	busy := min(max(ev.BusyFraction, 0), 1)
	c.load.expire(at, e.p.LoadWindow)
	c.load.add(loadSample{at: at, interval: ev.Interval, busy: busy})
	mean, covered := c.load.mean()
	c.loadMean = mean
	if c.pol.Load(at, mean, covered) {
		c.reclaims[CauseLoad]++
	}
}

// planFor is the policy's plan for c, except that a core whose probe
// failed, or whose loop ran real-time too long (realtime.go), is not lent,
// whatever the policy.
func (e *engine) planFor(c *core) Plan {
	plan := c.pol.Plan()
	switch {
	case c.probeDown:
		plan = Plan{InCPUSet: false, YieldAfter: -1, Slice: plan.Slice, Hold: HoldProbe}
	case !c.rt.heldUntil.IsZero():
		plan = heldPlan(plan.Slice, HoldRealtime)
	}
	return plan
}

// apply brings a core to the policy's plan. force re-issues everything
// (policy start or switch). Slow-path calls happen only when membership
// changes, and not again before ActuatorRetry after a failure.
//
// A core the plan takes out of the cpuset leaves it first, and only then
// does its loop stop yielding (and a lent core's loop wake). The other
// order let a SCHED_FIFO loop spin while CP tasks stayed queued on its
// core for as long as the cpuset write took, up to a second behind a
// fork-heavy CP load, and the kernel then ran them there for up to 50 ms
// while packets waited. Until the write returns, the loop keeps lending by
// the fast path, its probe and packets reclaiming it as usual. A write
// that failed does not hold DP back: the loop stops yielding at once.
func (e *engine) apply(c *core, force bool) {
	plan := e.planFor(c)
	// The rules first: a Lend below carries them out (DPDK lending, the
	// probe's wake-ups). Only a policy switch changes them, and it applies
	// every core with force.
	if e.gate != nil && force {
		e.gate.SetCoreRules(c.cpu, rulesOf(e.pol))
	}
	if (plan.InCPUSet != c.inCPUSet || force) && (force || c.retryAt.IsZero() || !e.now.Before(c.retryAt)) {
		e.writeCPUSet(c, plan.InCPUSet)
	}
	yield := plan.YieldAfter
	if !c.inCPUSet || !plan.InCPUSet {
		// Out, or to be out but its write failed (retried later): either
		// way DP takes the core now.
		yield = -1
		if c.state == Lent {
			e.setKnobs(c, yield, plan.Slice, force)
			e.requestReclaim(c, e.holdCause(c, plan.Hold), e.now)
			force = false
		}
	}
	e.setKnobs(c, yield, plan.Slice, force)
}

// holdCause is the reclaim cause of a lent core the plan holds, counted
// here unless the policy's report already counted it.
func (e *engine) holdCause(c *core, h Hold) Cause {
	switch h {
	case HoldGuard:
		return CauseGuard // counted at the trip
	case HoldLoad:
		return CauseLoad // counted when the hold began
	}
	c.reclaims[CausePolicy]++
	return CausePolicy
}

// writeCPUSet adds the core to the CP cpuset (in) or removes it. A failed
// write is retried after ActuatorRetry; it changes nothing once the
// cpuset's contents are known, and before that the engine assumes the
// worse case for DP: not lendable after a failed Lend, CP possibly there
// after a failed Reclaim.
func (e *engine) writeCPUSet(c *core, in bool) {
	write, what := e.act.Reclaim, "reclaim"
	if in {
		write, what = e.act.Lend, "lend"
	}
	wasIn := c.inCPUSet
	if err := write(c.cpu); err != nil {
		c.actErrors++
		if !c.cpusetKnown {
			c.inCPUSet = !in
		}
		c.retryAt = e.now.Add(e.p.ActuatorRetry)
		e.log.Warn(what+" failed", "cpu", c.cpu, "err", err, "retry_at", c.retryAt)
		return
	}
	c.inCPUSet, c.cpusetKnown = in, true
	c.retryAt = time.Time{}
	switch {
	case in:
		c.cpusetLends++
	case wasIn:
		c.cpusetBacks++
	}
}

func (e *engine) setKnobs(c *core, yield int64, slice time.Duration, force bool) {
	if c.knobsSet && !force && c.yield == yield && c.knobSlice == slice {
		return
	}
	e.act.SetYield(c.cpu, yield, slice)
	c.yield, c.knobSlice, c.knobsSet = yield, slice, true
}
