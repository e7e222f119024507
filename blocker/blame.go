package blocker

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// maxWindowBlames bounds the blames kept per process (oldest dropped).
const maxWindowBlames = 4096

// windowBlame is one in-kernel blame kept for ConfineWorst.
type windowBlame struct {
	at    time.Time
	cpu   int
	delay time.Duration
}

type tracked struct {
	Blocker
	recent []windowBlame // in-kernel blames within the kept window, oldest first
	// refusedUntil: the actuator refused it (outside the pool, real-time
	// threads); not tried again before then.
	refusedUntil time.Time
}

func (c *Confiner) onBlame(ev Event, now time.Time) error {
	b := c.blockers[ev.TGID]
	if b == nil {
		c.evict()
		b = &tracked{Blocker: Blocker{TGID: ev.TGID, First: now}}
		c.blockers[ev.TGID] = b
	}
	b.Comm = ev.Comm
	if ev.CgroupID != 0 {
		b.CgroupID = ev.CgroupID
	}
	b.Kernel = b.Kernel || ev.KernelThread()
	b.Count++
	b.Worst = max(b.Worst, ev.Delay)
	b.Total += ev.Delay
	b.Last = now
	if !ev.InKernel() {
		return nil
	}
	b.InKernel++
	if b.Kernel {
		return nil // reported, never moved
	}
	b.recent = append(b.recent, windowBlame{at: now, cpu: ev.CPU, delay: ev.Delay})
	b.prune(now, c.keep)
	return nil
}

// prune drops blames older than keep, and the oldest beyond the bound.
func (b *tracked) prune(now time.Time, keep time.Duration) {
	cut := 0
	for cut < len(b.recent) && now.Sub(b.recent[cut].at) > keep {
		cut++
	}
	cut = max(cut, len(b.recent)-maxWindowBlames)
	if cut > 0 {
		b.recent = slices.Delete(b.recent, 0, cut)
	}
}

// blamedOn sums b's in-kernel blames on cpu within window, with the
// longest of them.
func (b *tracked) blamedOn(now time.Time, cpu int, window time.Duration) (total, worst time.Duration, n int) {
	for _, r := range b.recent {
		if r.cpu == cpu && now.Sub(r.at) <= window {
			total += r.delay
			worst = max(worst, r.delay)
			n++
		}
	}
	return total, worst, n
}

// ConfineWorst is the SLO rule's move: it confines the process whose
// in-kernel paths delayed cpu's DP threads most within window, and its
// command's other processes, under a back-off. A candidate has at least
// MinBlames blames there, one of them minDelay or longer (a shorter delay
// cannot have put a packet above the mark the rule defends), minTotal in
// all; kernel
// threads, confined and refused processes are none. budget (the core's
// share of the SLO) is kept as the reason. It reports whether a process
// was confined; a refused candidate is skipped for the next one.
func (c *Confiner) ConfineWorst(cpu int, window, minDelay, minTotal time.Duration, budget float64) (Reason, bool, error) {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	c.keep = max(c.keep, window)
	if !c.active {
		return Reason{}, false, nil
	}
	var errs []error
	for {
		worst, why := c.pickWorst(now, cpu, window, minDelay, minTotal)
		why.Budget = budget
		if worst == nil {
			return Reason{}, false, errors.Join(errs...)
		}
		// Move it first: a process the pool refuses must not start a
		// back-off for its command (nothing of it could be confined).
		ok, err := c.act.Confine(worst.TGID)
		if err != nil {
			worst.Error = err.Error()
			worst.refusedUntil = now.Add(c.policy.MaxBackoff)
			errs = append(errs, fmt.Errorf("blocker: confine pid %d (%s): %w", worst.TGID, worst.Comm, err))
			continue
		}
		if !ok && !c.blamedElsewhere(worst, now, cpu, window) {
			// It exited, and no other process of its command delayed cpu's
			// DP threads in the window: nothing of it is left to confine,
			// and one exited instance's holds are no evidence of its
			// command's habit. (At 32 VMs each confinement of `ip` came
			// from one exited instance with 1-2 holds; the command then
			// stayed confined for its back-off, the whole run.)
			delete(c.blockers, worst.TGID)
			continue
		}
		worst.recent = nil
		cmd := c.learn(worst.Comm, worst.CgroupID, now)
		cmd.Why = why
		if ok {
			c.own(worst.TGID, cmd)
		} else {
			delete(c.blockers, worst.TGID) // it vanished; its command is still learned
		}
		errs = append(errs, c.confineSiblings(cmd))
		return why, true, errors.Join(errs...)
	}
}

// blamedElsewhere: another process of b's command delayed cpu's DP threads
// in kernel within window. Called with c.mu held.
func (c *Confiner) blamedElsewhere(b *tracked, now time.Time, cpu int, window time.Duration) bool {
	for _, o := range c.blockers {
		if o != b && o.Comm == b.Comm && !o.Kernel {
			if _, _, n := o.blamedOn(now, cpu, window); n > 0 {
				return true
			}
		}
	}
	return false
}

// pickWorst is the CP task that delayed cpu's DP threads most over the
// window among those that may be confined and held one off for minDelay or
// more, and for minTotal in all (nil: none). Called with c.mu held.
func (c *Confiner) pickWorst(now time.Time, cpu int, window, minDelay, minTotal time.Duration) (*tracked, Reason) {
	var worst *tracked
	var why Reason
	for _, b := range c.blockers {
		if b.Kernel || !b.ConfinedUntil.IsZero() || now.Before(b.refusedUntil) {
			continue
		}
		total, longest, n := b.blamedOn(now, cpu, window)
		if n < c.policy.MinBlames || total <= 0 || total < minTotal || longest < minDelay {
			continue
		}
		if worst == nil || total > why.Blamed || (total == why.Blamed && b.TGID < worst.TGID) {
			worst = b
			why = Reason{At: now, CPU: cpu, TGID: b.TGID, Comm: b.Comm, Blamed: total, Blames: n, Window: window}
		}
	}
	return worst, why
}

// Worst names the task ConfineWorst would confine now, without moving it
// (false: none), so a caller can answer at once and move it off its own
// path.
func (c *Confiner) Worst(cpu int, window, minDelay, minTotal time.Duration) (Reason, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keep = max(c.keep, window)
	if !c.active {
		return Reason{}, false
	}
	worst, why := c.pickWorst(c.clock.Now(), cpu, window, minDelay, minTotal)
	return why, worst != nil
}

// evict drops the least recently blamed unconfined process when the table
// is full.
func (c *Confiner) evict() {
	if len(c.blockers) < c.policy.MaxTracked {
		return
	}
	victim := 0
	var oldest time.Time
	for tgid, b := range c.blockers {
		if !b.ConfinedUntil.IsZero() {
			continue
		}
		if victim == 0 || b.Last.Before(oldest) {
			victim, oldest = tgid, b.Last
		}
	}
	if victim != 0 {
		delete(c.blockers, victim)
	}
}
