package dpdk

import (
	"errors"
	"fmt"
	"slices"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"golang.org/x/sys/unix"
)

// SetLending follows the lending policy: off, idle lcores are never
// demoted, any lent one is reclaimed before SetLending returns, and every
// lcore becomes static (SCHED_OTHER at the top weight: a core CP never gets
// needs no real-time class, and RT throttling cannot stop it); on, lcores
// are SCHED_FIFO and idle demotion works as configured.
func (m *Manager) SetLending(on bool) error {
	m.mu.Lock()
	m.lendingOff.Store(!on)
	w, sl := m.watcher, m.sleep
	m.mu.Unlock()
	var errs []error
	if w != nil {
		errs = append(errs, w.SetAllowed(on))
	}
	if sl != nil {
		sl.set(on) // written in the background; reclaiming never waits for OVS
	}
	errs = append(errs, m.applyStates())
	return errors.Join(errs...)
}

// stateLocked is what tid's core is doing. Called with schedMu held.
func (m *Manager) stateLocked(tid int) coreyield.State {
	switch {
	case m.demoted[tid]:
		return coreyield.Lent
	case m.lendingOff.Load():
		return coreyield.Static
	}
	return coreyield.Ready
}

// applyStates gives every lcore the class and group state its state wants.
func (m *Manager) applyStates() error {
	p := m.lcores.Load()
	if p == nil || m.yield == nil {
		return nil
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	var errs []error
	for tid, cpu := range *p {
		if _, err := m.yield.Apply(tid, cpu, m.stateLocked(tid), m.cfg.Priority); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}
	return nil
}

// LcoreTIDs returns the managed lcore threads that have a DP core.
func (m *Manager) LcoreTIDs() []int {
	p := m.lcores.Load()
	if p == nil {
		return nil
	}
	tids := make([]int, 0, len(*p))
	for tid := range *p {
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	return tids
}

// lcoreCPU is tid's DP core (ok false for a thread that is not a managed lcore).
func (m *Manager) lcoreCPU(tid int) (int, bool) {
	p := m.lcores.Load()
	if p == nil || m.yield == nil {
		return 0, false
	}
	cpu, ok := (*p)[tid]
	return cpu, ok
}

// Demote lends tid's core to CP: the core's group goes idle and the thread
// drops to SCHED_OTHER in it (SCHED_IDLE where there is no group). It keeps
// its affinity, so it still polls, but only when CP leaves the core idle.
func (m *Manager) Demote(tid int) error {
	cpu, ok := m.lcoreCPU(tid)
	if !ok {
		return fmt.Errorf("dpdk %q: demote tid %d: %w", m.cfg.Name, tid, ErrNotLcore)
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	// Tell the guard first: a crash right after lending must find the record.
	if m.guard != nil {
		group := ""
		if g, ok := m.yield.Group(cpu); ok {
			group = g.Dir
		}
		if err := m.guard.send("%s", lendRecord(tid, m.cfg.Priority, group)); err != nil {
			return fmt.Errorf("dpdk %q: demote tid %d: guard unreachable, not lending: %w", m.cfg.Name, tid, err)
		}
	}
	if err := m.yield.Lend(tid, cpu); err != nil {
		if m.guard != nil {
			_ = m.guard.send("reclaim %d", tid)
		}
		return fmt.Errorf("dpdk %q: demote: %w", m.cfg.Name, err)
	}
	m.demoted[tid] = true
	return nil
}

// Promote reclaims tid's core: one sched_setattr back to SCHED_FIFO, which
// preempts whatever CP task runs there at once; the group's idleness is
// cleared after. With lending off the thread goes to the static class.
func (m *Manager) Promote(tid int) error {
	cpu, ok := m.lcoreCPU(tid)
	if !ok {
		return fmt.Errorf("dpdk %q: promote tid %d: %w", m.cfg.Name, tid, ErrNotLcore)
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	var err error
	if m.lendingOff.Load() {
		_, err = m.yield.Apply(tid, cpu, coreyield.Static, m.cfg.Priority)
	} else {
		err = m.yield.Reclaim(tid, cpu, m.cfg.Priority)
	}
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			delete(m.demoted, tid) // the thread is gone: nothing left to reclaim
		}
		return fmt.Errorf("dpdk %q: promote: %w", m.cfg.Name, err)
	}
	delete(m.demoted, tid)
	if m.guard != nil {
		_ = m.guard.send("reclaim %d", tid) // after the reclaim: off the hot path
	}
	return nil
}

// promoteAll gives every lent core back; used on shutdown and on errors.
func (m *Manager) promoteAll() error {
	m.schedMu.Lock()
	tids := make([]int, 0, len(m.demoted))
	for tid := range m.demoted {
		tids = append(tids, tid)
	}
	m.schedMu.Unlock()
	var errs []error
	for _, tid := range tids {
		if err := m.Promote(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetProbe hands the idle watcher the workload probe's warnings for the
// application's DP cores (the policy uses the probe), or takes them away
// (none): a lent core is then reclaimed at the next counter poll only.
func (m *Manager) SetProbe(sources ...WakeSource) {
	m.mu.Lock()
	m.probe = slices.Clone(sources)
	w := m.watcher
	m.mu.Unlock()
	if w != nil {
		w.SetProbe(sources...)
	}
}
