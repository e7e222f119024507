package blocker

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ReleaseOne releases the confined command whose back-off ended first, if
// any has: the SLO rule's move once the packets' budget is quiet.
func (c *Confiner) ReleaseOne() (Release, bool, error) {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	var due *Command
	for _, cmd := range c.commands {
		if cmd.Until.IsZero() || now.Before(cmd.Until) {
			continue
		}
		if due == nil || cmd.Until.Before(due.Until) || (cmd.Until.Equal(due.Until) && cmd.Comm < due.Comm) {
			due = cmd
		}
	}
	if due == nil {
		return Release{}, false, nil
	}
	rel := Release{Comm: due.Comm, At: now, Confined: now.Sub(due.Until.Add(-due.Backoff)), Why: due.Why}
	err := c.releaseCommand(due.Comm)
	due.Released = now
	c.released = append(c.released, rel)
	if len(c.released) > historyLen {
		c.released = slices.Delete(c.released, 0, len(c.released)-historyLen)
	}
	return rel, true, err
}

// learn starts (or extends) a back-off for comm: doubling on repeat.
func (c *Confiner) learn(comm string, cgroup uint64, now time.Time) *Command {
	cmd := c.commands[comm]
	if cmd == nil {
		cmd = &Command{Comm: comm}
		c.commands[comm] = cmd
	}
	if cgroup != 0 && !slices.Contains(cmd.CgroupIDs, cgroup) {
		cmd.CgroupIDs = append(cmd.CgroupIDs, cgroup)
	}
	if !cmd.Until.IsZero() {
		return cmd // already under back-off: this process joins it
	}
	if !cmd.Released.IsZero() && now.Sub(cmd.Released) > c.policy.MaxBackoff {
		cmd.Strikes = 0 // clear long enough: start over
	}
	cmd.Backoff = c.policy.Backoff
	for i := 0; i < cmd.Strikes && cmd.Backoff < c.policy.MaxBackoff; i++ {
		cmd.Backoff *= 2
	}
	cmd.Backoff = min(cmd.Backoff, c.policy.MaxBackoff)
	cmd.Strikes++
	cmd.Until = now.Add(cmd.Backoff)
	return cmd
}

// confine moves tgid under cmd's back-off. A vanished process is dropped.
func (c *Confiner) confine(tgid int, cmd *Command) error {
	if _, ok := c.owner[tgid]; ok || cmd.refused[tgid] {
		return nil
	}
	ok, err := c.act.Confine(tgid)
	if err != nil {
		if b := c.blockers[tgid]; b != nil {
			b.Error = err.Error()
		}
		if cmd.refused == nil {
			cmd.refused = map[int]bool{}
		}
		cmd.refused[tgid] = true
		return fmt.Errorf("blocker: confine pid %d (%s): %w", tgid, cmd.Comm, err)
	}
	if !ok {
		delete(c.blockers, tgid) // vanished
		return nil
	}
	c.own(tgid, cmd)
	return nil
}

// own records tgid as confined under cmd's back-off.
func (c *Confiner) own(tgid int, cmd *Command) {
	c.groupMayHold = true
	c.owner[tgid] = cmd.Comm
	cmd.PIDs = append(cmd.PIDs, tgid)
	c.changes = append(c.changes, Change{TGID: tgid, Comm: cmd.Comm, Confined: true, Until: cmd.Until})
	if b := c.blockers[tgid]; b != nil {
		b.ConfinedUntil = cmd.Until
		b.Error = ""
	}
}

// confineSiblings confines the live processes that run cmd's command.
func (c *Confiner) confineSiblings(cmd *Command) error {
	if c.procs == nil {
		return nil
	}
	pids, err := c.procs.ByCommand(cmd.Comm)
	if err != nil {
		return fmt.Errorf("blocker: find processes running %q: %w", cmd.Comm, err)
	}
	var errs []error
	for _, pid := range pids {
		if b := c.blockers[pid]; b != nil && b.Kernel {
			continue
		}
		errs = append(errs, c.confine(pid, cmd))
	}
	return errors.Join(errs...)
}

func (c *Confiner) onExec(ev Event, now time.Time) error {
	cmd := c.commands[ev.Comm]
	if !c.active || cmd == nil || cmd.Until.IsZero() {
		return nil
	}
	if ev.CgroupID != 0 && len(cmd.CgroupIDs) > 0 && !slices.Contains(cmd.CgroupIDs, ev.CgroupID) {
		return nil // same name, another kind of process
	}
	return c.confine(ev.TGID, cmd)
}

// adoptChildren accounts for confined processes the Confiner did not move
// itself: children forked by confined processes start confined. Each joins
// the back-off that ends last (its parent's, or a longer one), so it is
// released with it; with no back-off running it is released now.
func (c *Confiner) adoptChildren() error {
	pids, err := c.act.Confined()
	if err != nil {
		return fmt.Errorf("blocker: list confined processes: %w", err)
	}
	var latest *Command
	for _, cmd := range c.commands {
		if !cmd.Until.IsZero() && (latest == nil || cmd.Until.After(latest.Until)) {
			latest = cmd
		}
	}
	c.groupMayHold = len(pids) > 0
	var errs []error
	for _, pid := range pids {
		if _, ok := c.owner[pid]; ok {
			continue
		}
		if latest == nil || !c.active {
			if err := c.act.Release(pid); err != nil {
				errs = append(errs, fmt.Errorf("blocker: release pid %d: %w", pid, err))
			}
			continue
		}
		c.owner[pid] = latest.Comm
		latest.PIDs = append(latest.PIDs, pid)
	}
	return errors.Join(errs...)
}

// releaseCommand releases every process confined under comm and ends its
// back-off (keeping the strikes).
func (c *Confiner) releaseCommand(comm string) error {
	cmd := c.commands[comm]
	var errs []error
	for _, pid := range cmd.PIDs {
		if err := c.act.Release(pid); err != nil {
			errs = append(errs, fmt.Errorf("blocker: release pid %d (%s): %w", pid, comm, err))
			if b := c.blockers[pid]; b != nil {
				b.Error = err.Error()
			}
		}
		delete(c.owner, pid)
		c.changes = append(c.changes, Change{TGID: pid, Comm: comm})
		if b := c.blockers[pid]; b != nil {
			b.ConfinedUntil = time.Time{}
		}
	}
	cmd.PIDs = nil
	cmd.refused = nil
	cmd.Until = time.Time{}
	return errors.Join(errs...)
}
