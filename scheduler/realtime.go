package scheduler

import "time"

// A DP loop is SCHED_FIFO while its core is in the CP cpuset, so that it
// preempts CP at once when packets come. Should it then run there without
// blocking for most of a second (packets whose gaps are shorter than its
// yield threshold, or no gaps at all), the kernel's real-time throttling or
// its fair server runs the CFS tasks queued on the core, CP among them, for
// up to 50 ms while packets wait: eval ping's residence max was 50.7 ms in
// every taichi repeat, with the loop real-time for 889 ms of the second
// before. Such a core lends CP nothing anyway, so the engine holds it in
// DP before the kernel steps in: out of the cpuset and the loop back to
// SCHED_OTHER, as a static core, for RealtimeHold. This is the engine's
// rule, under every policy, like the probe-down hold.

// rtBuckets divide RealtimeWindow; one more holds the bucket in progress.
const rtBuckets = 10

// realtimeRun accounts a core's DP loop's real-time running.
type realtimeRun struct {
	// seen: the loop reports yields and wakes (a taichi loop; DPDK lcores
	// and OVS PMDs do not, and are never held by this rule).
	seen bool
	// since: running real-time since (zero: not running real-time).
	since time.Time
	// ran[i] is the running time in bucket slot[i] (a bucket number).
	ran  [rtBuckets + 1]time.Duration
	slot [rtBuckets + 1]int64
	// due: while running, when the running would reach the limit if the
	// loop ran on (a timer; expired buckets only make it early).
	due time.Time
	// heldUntil: held in DP until then (zero: not held).
	heldUntil time.Time
	holds     uint64
}

// forget drops the running account (not the hold, nor the counters).
func (r *realtimeRun) forget() {
	r.since = time.Time{}
	r.ran, r.slot = [rtBuckets + 1]time.Duration{}, [rtBuckets + 1]int64{}
}

// add counts the running time [from, to) into its buckets.
func (r *realtimeRun) add(from, to time.Time, width time.Duration) {
	for from.Before(to) {
		n := from.UnixNano() / int64(width)
		end := time.Unix(0, (n+1)*int64(width))
		if to.Before(end) {
			end = to
		}
		i := n % int64(len(r.ran))
		if r.slot[i] != n {
			r.slot[i], r.ran[i] = n, 0
		}
		r.ran[i] += end.Sub(from)
		from = end
	}
}

// used is the running time over the window ending at now, counted in whole
// buckets (so up to one bucket more than the window: the rule errs towards
// holding early), the run in progress included.
func (r *realtimeRun) used(now time.Time, window time.Duration) time.Duration {
	width := window / rtBuckets
	n := now.UnixNano() / int64(width)
	var sum time.Duration
	for i := range r.ran {
		if r.slot[i] > n-int64(len(r.ran)) && r.slot[i] <= n {
			sum += r.ran[i]
		}
	}
	if !r.since.IsZero() {
		sum += min(now.Sub(r.since), window)
	}
	return sum
}

// runsRealtime reports whether c's loop runs SCHED_FIFO now: it is in the
// cpuset and has not blocked (a lent core's loop blocked; a reclaiming
// one has not reported running yet).
func (c *core) runsRealtime() bool {
	return c.rt.seen && c.inCPUSet && !c.blocked && (c.state == DPActive || c.state == Idle)
}

// trackRealtime brings the running account up to e.now.
func (e *engine) trackRealtime(c *core) {
	now := e.now
	switch running := c.runsRealtime(); {
	case running && c.rt.since.IsZero():
		c.rt.since = now
		c.rt.due = now.Add(max(e.realtimeLimit()-c.rt.used(now, e.p.RealtimeWindow), 0))
	case !running && !c.rt.since.IsZero():
		c.rt.add(c.rt.since, now, e.p.RealtimeWindow/rtBuckets)
		c.rt.since = time.Time{}
	}
}

// realtime accounts c's loop up to now, ends a hold that is over and holds
// the core when its loop ran real-time for RealtimeShare of the window.
func (e *engine) realtime(c *core) {
	e.trackRealtime(c)
	if !c.rt.heldUntil.IsZero() {
		if e.now.Before(c.rt.heldUntil) {
			return
		}
		c.rt.heldUntil = time.Time{}
		e.apply(c, false)
		e.trackRealtime(c)
		return
	}
	// Only a loop still running can reach the limit, and not before its
	// due time (set when it started): nothing to sum on every event.
	if c.rt.since.IsZero() || e.now.Before(c.rt.due) {
		return
	}
	used := c.rt.used(e.now, e.p.RealtimeWindow)
	if left := e.realtimeLimit() - used; left > 0 {
		c.rt.due = e.now.Add(left) // buckets expired since: later
		return
	}
	c.rt.holds++
	c.rt.heldUntil = e.now.Add(e.p.RealtimeHold)
	e.log.Info("DP loop ran real-time too long: holding the core in DP", "cpu", c.cpu,
		"ran", used, "window", e.p.RealtimeWindow, "until", c.rt.heldUntil)
	e.apply(c, false)
	// The kernel's account starts over while the loop is SCHED_OTHER.
	c.rt.forget()
}

func (e *engine) realtimeLimit() time.Duration {
	return time.Duration(e.p.RealtimeShare * float64(e.p.RealtimeWindow))
}

// realtimeDeadline is when c's hold ends, or when its loop, running on,
// would reach the limit.
func (e *engine) realtimeDeadline(c *core) (time.Time, bool) {
	switch {
	case !c.rt.heldUntil.IsZero():
		return c.rt.heldUntil, true
	case !c.rt.since.IsZero():
		return c.rt.due, true
	}
	return time.Time{}, false
}
