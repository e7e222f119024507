package scheduler

import "time"

// The SLO rule's side of the engine: residence samples judged against the
// SLO's marks, confinement of the worst blocker, the bench and its
// judgement, and releases after quiet windows.

// sloSample feeds the SLO rule with what packets felt: per-packet RX
// residence, counted at the SLO's marks over the window (what packets feel
// now) and over the budget horizon (the contract: the p99 the operator
// judges). A wake's latency is not the signal: a probe that fires early is
// never latency, and only packets that waited count.
func (e *engine) sloSample(c *core, at time.Time, r Residence) {
	c.sloSeen++
	c.slo.expire(at, e.p.SLOWindow)
	c.horizon.expire(at, e.p.BudgetHorizon)
	s := residenceSample{at: at, packets: r.Packets, p99: r.P99}
	if r.Above != nil {
		for m, f := range BudgetMarks {
			s.over[m] = min(r.Above(time.Duration(f*float64(e.p.SLO))), r.Packets)
		}
	}
	if !c.inCPUSet {
		// Not lendable (static, benched, held): what packets felt then says
		// nothing about lending, and must not bench the core when it
		// resumes. While benched it says whether benching helps.
		if e.planFor(c).Hold == HoldGuard {
			c.benched.add(s)
		}
		return
	}
	if c.benched.samples.len() > 0 {
		e.judgeBench(c)
	}
	c.slo.add(s)
	c.horizon.add(s)
	c.verdict = c.pol.Guard(at, &c.horizon)
	switch c.verdict {
	case VerdictHigh, VerdictBreach:
		c.quietSince = time.Time{}
		// Act on what packets feel now: the window must be above the mark
		// too (the horizon remembers a storm long after it is confined),
		// and one confinement a window is as many as its evidence supports.
		mark := markHigh
		if c.verdict == VerdictBreach {
			mark = markSLO
		}
		if !c.slo.exceeds(mark) || c.slo.Packets() < uint64(e.p.SLOMinSamples)/10 {
			break
		}
		if !c.lastConfine.IsZero() && at.Sub(c.lastConfine) < e.p.SLOWindow {
			break
		}
		if e.confineWorst(c, at) {
			break
		}
		if c.verdict == VerdictBreach {
			if c.benchFutile && at.Sub(c.benchJudged) < e.p.GuardForgive {
				// Packets waited as long while the core was benched: the
				// delay is not lending's, and benching only costs CP.
				c.benchSkips++
				break
			}
			c.pol.Bench(at, &c.slo)
			c.reclaims[CauseGuard]++
			c.slo.reset()
		}
	case VerdictCalm:
		if c.horizon.exceeds(markLow) {
			c.quietSince = time.Time{}
		} else if c.quietSince.IsZero() {
			c.quietSince = at
		}
	}
	e.maybeRelease(at)
}

// judgeBench ends a bench's experiment: if the packets' p99 while the core
// was benched was above the SLO as well, benching did not help (kernel
// threads, the host itself), and breaches with nothing to confine do not
// bench the core again for GuardForgive.
func (e *engine) judgeBench(c *core) {
	w := &c.benched
	futile := w.Packets() >= uint64(e.p.SLOMinSamples)/10 && w.exceeds(markSLO)
	if futile != c.benchFutile {
		e.log.Info("slo guard: judged benching by its effect", "cpu", c.cpu, "benched_packets", w.Packets(),
			"benched_budget", w.Budget(), "helps", !futile)
	}
	c.benchFutile, c.benchJudged = futile, e.now
	w.reset()
}

// confineWorst asks for the CP task that delayed c's packets most over the
// window to be confined.
func (e *engine) confineWorst(c *core, at time.Time) bool {
	if e.ctl == nil || !e.pol.ConfinesBlockers() {
		return false
	}
	// Only a task that held a DP thread off its core for as long as the
	// high-water mark can have put packets above it on its own. At a
	// breach packets also wait behind several shorter holds in a row
	// (seen at 32 VMs with a 1 ms SLO: benches with no task held 750 µs),
	// and confining the worst of those, down to the low-water mark, costs
	// CP far less than benching the core.
	floor := HighWater
	if c.verdict == VerdictBreach {
		floor = LowWater
	}
	minDelay := time.Duration(floor * float64(e.p.SLO))
	// A task whose holds add up to less than the SLO over the window cannot
	// be what kept packets past it (a mild one that started up beside a
	// storm, or one beside kernel threads nothing can confine).
	if !e.ctl.ConfineWorst(c.cpu, e.p.SLOWindow, minDelay, e.p.SLO, min(c.horizon.Budget(), budgetOver)) {
		c.confineMisses++
		return false
	}
	c.confines++
	c.lastConfine = at
	// The next judgement reads packets from here on: those the window
	// still holds waited behind what was just confined, and would name
	// the next worst task in the window after (a mild one that merely
	// started up beside the storm).
	c.slo.reset()
	return true
}

// maybeRelease releases one confined command once every lendable core's
// residence p99 stayed at or below the low-water mark for ReleaseQuiet; the
// next release waits for another quiet period.
func (e *engine) maybeRelease(at time.Time) {
	if e.ctl == nil || !e.pol.ConfinesBlockers() {
		return
	}
	for _, c := range e.cores {
		switch {
		case e.planFor(c).Hold == HoldGuard:
			return // benched: the budget is spent
		case !c.inCPUSet:
			continue // not lending: no say
		case c.quietSince.IsZero() || at.Sub(c.quietSince) < e.p.ReleaseQuiet:
			return
		}
	}
	if !e.ctl.ReleaseOne() {
		return
	}
	e.releases++
	for _, c := range e.cores {
		if !c.quietSince.IsZero() {
			c.quietSince = at
		}
	}
}
