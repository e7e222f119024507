package dpdk

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// ThreadStatus is one lcore thread as last verified.
type ThreadStatus struct {
	TID      int    `json:"tid"`
	Name     string `json:"name"`
	CPU      int    `json:"cpu"`      // configured DP core; -1 when cpus ran out
	Affinity []int  `json:"affinity"` // read back with sched_getaffinity
	LastCPU  int    `json:"last_cpu"` // where it last ran (/proc stat)
	Policy   string `json:"policy"`   // read back with sched_getattr
	Priority int    `json:"priority"`
	Nice     int    `json:"nice"`
	State    string `json:"state"`           // static, ready or lent (coreyield.State)
	Group    string `json:"group,omitempty"` // the DP core's cpu cgroup the thread lives in
	Demoted  bool   `json:"demoted"`         // lent to CP on purpose
	Pinned   bool   `json:"pinned"`          // affinity and class are what the state wants
	Error    string `json:"error,omitempty"`
}

// Status is what `taichi status` shows for one DPDK application.
type Status struct {
	Name          string         `json:"name"`
	PID           int            `json:"pid"`
	Launched      bool           `json:"launched"`
	Readopted     bool           `json:"readopted,omitempty"` // launched by an earlier run, adopted back
	Running       bool           `json:"running"`
	Threads       []ThreadStatus `json:"threads"`
	Reapplied     uint64         `json:"reapplied"` // corrections after the first pinning
	LastReconcile time.Time      `json:"last_reconcile"`
	Error         string         `json:"error,omitempty"`
	Idle          *IdleStats     `json:"idle,omitempty"`
	// Yield is how a lent lcore gives way (coreyield.Mechanism);
	// YieldDegraded says why it is not a per-core cpu group.
	Yield         string `json:"yield"`
	YieldDegraded string `json:"yield_degraded,omitempty"`
	// OVSMaxSleep is OVS's pmd-maxsleep as taichi last wrote it
	// (ovs_pmd_maxsleep set), or nil.
	OVSMaxSleep *OVSMaxSleepStatus `json:"ovs_maxsleep,omitempty"`
}

// OVSMaxSleepStatus reports the governing of OVS's PMD sleep.
type OVSMaxSleepStatus struct {
	AppliedUs int64  `json:"applied_us"` // -1 before the first write
	Writes    int    `json:"writes"`
	Error     string `json:"error,omitempty"`
}

// Reconcile finds the lcore threads, gives new ones a DP core, and makes
// every thread's affinity and policy what they should be, re-applying
// whatever drifted (a cpuset write, another tool). It returns the problems
// found; threads that could not be fixed are reported in Status too.
func (m *Manager) Reconcile() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pid := m.pid
	m.status.Name, m.status.PID, m.status.Launched = m.cfg.Name, pid, m.cmd != nil || m.readopted
	m.status.Readopted = m.readopted
	m.status.LastReconcile = time.Now()
	if !m.running(pid) {
		m.status.Running = false
		m.status.Threads = nil
		err := fmt.Errorf("dpdk %q: process %d: %w", m.cfg.Name, pid, ErrNoProcess)
		m.status.Error = err.Error()
		return err
	}
	m.status.Running = true
	if m.released || m.yield == nil {
		return nil
	}
	threads, err := listThreads(pid, m.re)
	if err != nil {
		m.status.Error = err.Error()
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}

	// Forget threads that are gone; hand free cores to new ones in order.
	live := map[int]bool{}
	for _, t := range threads {
		live[t.TID] = true
	}
	for tid := range m.assign {
		if !live[tid] {
			delete(m.assign, tid)
			delete(m.applied, tid)
			m.schedMu.Lock()
			delete(m.demoted, tid)
			m.schedMu.Unlock()
		}
	}
	used := map[int]bool{}
	for _, cpu := range m.assign {
		used[cpu] = true
	}
	for _, t := range threads {
		if _, ok := m.assign[t.TID]; ok {
			continue
		}
		for _, cpu := range m.cfg.CPUs {
			if !used[cpu] {
				m.assign[t.TID] = cpu
				used[cpu] = true
				break
			}
		}
	}

	snapshot := make(map[int]int, len(m.assign))
	for tid, cpu := range m.assign {
		snapshot[tid] = cpu
	}
	m.lcores.Store(&snapshot)

	var errs []error
	out := make([]ThreadStatus, 0, len(threads))
	for _, t := range threads {
		ts, err := m.apply(pid, t)
		if err != nil {
			ts.Error = err.Error()
			errs = append(errs, err)
		}
		out = append(out, ts)
	}
	m.status.Threads = out
	m.status.Reapplied = m.reapplied
	err = errors.Join(errs...)
	if err != nil {
		m.status.Error = err.Error()
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}
	m.status.Error = ""
	return nil
}

// apply brings one thread to its assigned core and policy and reads back
// the result. Called with m.mu held.
func (m *Manager) apply(pid int, t linuxsched.Thread) (ThreadStatus, error) {
	ts := ThreadStatus{TID: t.TID, Name: t.Comm, CPU: -1}
	cpu, ok := m.assign[t.TID]
	if !ok {
		ts.Affinity, ts.LastCPU, ts.Policy, ts.Priority = t.Affinity, t.LastCPU, PolicyName(t.Class.Policy), t.Class.Priority
		return ts, fmt.Errorf("lcore %s (tid %d): no DP core left (cpus has %d entries)", t.Comm, t.TID, len(m.cfg.CPUs))
	}
	ts.CPU = cpu
	first := !m.applied[t.TID]
	changed := false
	var errs []error

	// Cgroups first: affinity is bounded by the cpuset, and the class a
	// state wants needs the thread in its core's cpu group.
	ctrls := []string{"cpuset"}
	if m.yield.Mechanism() == coreyield.SchedIdle {
		ctrls = append(ctrls, "cpu") // FIFO needs RT runtime: the root has it
	}
	moved, err := toRootCgroups(pid, t.TID, ctrls...)
	if err != nil {
		errs = append(errs, err)
	}
	if from, err := m.yield.Place(pid, t.TID, cpu); err != nil {
		errs = append(errs, err)
	} else if from != "" {
		moved = append(moved, "cpu:"+from)
	}
	if len(moved) > 0 {
		changed = true
		if !first {
			m.log.Warn("lcore thread had left its cgroups; moved back", "tid", t.TID, "from", moved)
		}
	}
	if !slices.Equal(t.Affinity, []int{cpu}) {
		changed = true
		if err := linuxsched.Pin(t.TID, cpu); err != nil {
			errs = append(errs, err)
		}
	}

	// Class under schedMu, so a concurrent Promote/Demote is never undone.
	m.schedMu.Lock()
	st := m.stateLocked(t.TID)
	if drift, err := m.yield.Apply(t.TID, cpu, st, m.cfg.Priority); err != nil {
		errs = append(errs, err)
	} else if drift {
		changed = true
	}
	// Read back under schedMu too: a lend or reclaim in between would
	// look like drift.
	now, rerr := linuxsched.ReadThread(pid, t.TID)
	m.schedMu.Unlock()

	// The status reports what the kernel says, not what we asked.
	if rerr != nil {
		errs = append(errs, rerr)
		now = t
	}
	want := m.yield.Mechanism().Class(st, m.cfg.Priority)
	m.fillThreadStatus(&ts, now.Class, st)
	ts.Affinity, ts.LastCPU = now.Affinity, now.LastCPU
	ts.Pinned = slices.Equal(now.Affinity, []int{cpu}) && now.Class == want
	if rerr == nil && !ts.Pinned && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("lcore %s (tid %d): read back affinity %v %s, want CPU %d %s", t.Comm, t.TID, now.Affinity, now.Class, cpu, want))
	}
	if first {
		m.applied[t.TID] = true
		m.log.Info("pinned lcore", "tid", t.TID, "name", t.Comm, "cpu", cpu, "priority", m.cfg.Priority, "ok", ts.Pinned)
	} else if changed {
		m.reapplied++
		m.log.Warn("re-applied lcore pinning", "tid", t.TID, "name", t.Comm, "cpu", cpu)
	}
	return ts, errors.Join(errs...)
}

// Status returns the last verified state (see Reconcile).
func (m *Manager) Status() Status {
	m.mu.Lock()
	s := m.status
	s.Threads = slices.Clone(s.Threads)
	w := m.watcher
	m.mu.Unlock()
	// Lending changes classes between reconciles: report them live.
	m.schedMu.Lock()
	for i := range s.Threads {
		ts := &s.Threads[i]
		if ts.CPU < 0 || m.yield == nil {
			continue
		}
		st := m.stateLocked(ts.TID)
		if c, err := linuxsched.Get(ts.TID); err == nil {
			m.fillThreadStatus(ts, c, st)
			ts.Pinned = slices.Equal(ts.Affinity, []int{ts.CPU}) && c == m.yield.Mechanism().Class(st, m.cfg.Priority)
		}
	}
	m.schedMu.Unlock()
	if w != nil {
		st := w.Stats()
		s.Idle = &st
	}
	if sl := m.ovsSleepOf(); sl != nil {
		applied, n, lastErr := sl.state()
		us := int64(-1)
		if applied >= 0 {
			us = applied.Microseconds()
		}
		s.OVSMaxSleep = &OVSMaxSleepStatus{AppliedUs: us, Writes: n, Error: lastErr}
	}
	return s
}

// fillThreadStatus reports class c and state st in ts.
func (m *Manager) fillThreadStatus(ts *ThreadStatus, c linuxsched.Class, st coreyield.State) {
	ts.Policy, ts.Priority, ts.Nice = linuxsched.PolicyName(c.Policy), c.Priority, c.Nice
	ts.State, ts.Demoted = st.String(), st == coreyield.Lent
	if g, ok := m.yield.Group(ts.CPU); ok {
		ts.Group = g.Dir
	}
}
