package vcpu

import (
	"errors"
	"fmt"
	"slices"
)

// Confinement keeps single CP processes (blockers: tasks whose kernel paths
// delay DP threads) on the CP cores while the rest of CP keeps borrowing DP
// cores. Confined processes live in a sibling group (ConfinedName) with the
// pool's CP class and the CP cores as CPU set; Lend and Reclaim never write
// it. Children a confined process forks start in its group (cgroup
// semantics) and threads follow their process.
//
// Nothing is stranded: Release, Close and Destroy move confined processes
// back into the pool's group, and Start does the same with whatever a
// previous run (even a killed one) left confined. A restarted daemon thus
// starts with nothing confined and confines again what still blocks; the
// back-off state is not carried over.

// Confinement narrows CP; it does not widen it. With processes confined, the
// pool's group and the confined group are two siblings on the CP cores,
// and each had the pool's whole weight: CP weighed twice as much there as
// before, and the tasks that share the CP cores outside CP (ksoftirqd, a
// traffic generator, system services) lost a third of their share (eval
// dataplane, CP weight 100: under taichi the generator offered 60-71% of
// its rate). So while the confined group holds processes, the two groups
// share the pool's weight, half each (balanceWeights); the confined group
// always has half, which only counts while it holds processes.

// confinedWeight is each group's weight while processes are confined.
func confinedWeight(w int) int { return max(MinWeight, w/2) }

// balanceWeights gives the pool's group its whole weight while nothing is
// confined and half of it otherwise (idle class: nothing to share). Called
// with p.mu held after confined membership may have changed; confinements
// are rare (one a window at most), so it writes every time.
func (p *cgroupPool) balanceWeights() error {
	if p.opts.Class == ClassIdle {
		return nil
	}
	ids, err := p.confined.procs()
	if err != nil {
		return err
	}
	w := p.opts.Weight
	if len(ids) > 0 {
		w = confinedWeight(w)
	}
	_, err = p.h.applyClass(p.opts.Class, w)
	return err
}

// Confine moves a pool member (a whole process: every thread, on v1 the
// non-real-time ones as Adopt does) into the confined group. A process
// already confined is left as is; one that vanished meanwhile is not an
// error (false, nil). It refuses processes outside the pool (*SkipError):
// confinement narrows CP, it does not adopt.
func (p *cgroupPool) Confine(pid int) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return false, err
	}
	tgid, in, err := p.locate(pid)
	switch {
	case err != nil || tgid == 0:
		return false, err
	case in == p.confined:
		return true, nil
	case in == nil:
		return false, &SkipError{PID: tgid, Reason: "not in the CP pool"}
	}
	moved, err := p.moveOne(p.confined, tgid, map[int]bool{})
	return moved, errors.Join(err, p.balanceWeights())
}

// Release moves a confined process back into the pool's group. A process
// that is not confined (or vanished) is left as is: Release is idempotent.
func (p *cgroupPool) Release(pid int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	tgid, in, err := p.locate(pid)
	if err != nil || tgid == 0 || in != p.confined {
		return err
	}
	_, err = p.moveOne(p.h, tgid, map[int]bool{})
	return errors.Join(err, p.balanceWeights())
}

// Confined returns the confined processes (thread group ids), sorted.
func (p *cgroupPool) Confined() ([]int, error) {
	ids, err := p.confined.procs()
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// locate resolves pid to its thread group and the group holding it: the
// pool's, the confined one, or nil for neither. tgid 0: it vanished.
func (p *cgroupPool) locate(pid int) (tgid int, in hierarchy, err error) {
	if pid <= 0 {
		return 0, nil, &SkipError{PID: pid, Reason: "not a process id"}
	}
	st, err := inspectProcess(p.proc, pid)
	if err != nil {
		if isGone(err) {
			return 0, nil, nil
		}
		return 0, nil, fmt.Errorf("vcpu: inspect pid %d: %w", pid, err)
	}
	for _, h := range []hierarchy{p.confined, p.h} {
		ids, err := h.procs()
		if err != nil {
			return 0, nil, err
		}
		if slices.Contains(ids, st.tgid) {
			return st.tgid, h, nil
		}
	}
	return st.tgid, nil, nil
}

// releaseAll moves every confined process back into the pool's group.
// Callers hold mu (or are Start).
func (p *cgroupPool) releaseAll() error {
	if !p.confined.groupExists() {
		return nil
	}
	ids, err := p.confined.procs()
	if err != nil {
		return err
	}
	var errs []error
	seen := map[int]bool{}
	for _, id := range ids {
		if _, err := p.moveOne(p.h, id, seen); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vcpu: release confined processes: %w", errors.Join(errs...))
	}
	return p.balanceWeights()
}
