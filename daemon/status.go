package daemon

import (
	"os"
	"slices"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/scheduler"
)

// Core states shown in status.
const (
	StateDPActive = "dp-active"
	StateIdle     = "idle"
	StateLent     = "lent"
	StateCP       = "cp"
)

// Status is what `taichi status` shows.
type Status struct {
	Version  string               `json:"version"`
	PID      int                  `json:"pid"`
	Uptime   string               `json:"uptime"`
	Policy   scheduler.PolicyName `json:"policy"`
	Override bool                 `json:"policy_override,omitempty"`
	Pool     PoolStatus           `json:"pool"`
	Cores    []CoreStatus         `json:"cores"`
	Loops    []LoopStatus         `json:"loops,omitempty"`
	DPDK     []dpdk.Status        `json:"dpdk,omitempty"`
	Probe    ProbeStatus          `json:"probe"`
	Kmod     *KmodStatus          `json:"kmod,omitempty"`
	// Daemon is taichi's own CPU cost.
	Daemon SelfCPU `json:"daemon"`
	// SLO is the guard's bound on per-packet RX residence p99.
	SLO SLOStatus `json:"slo"`
	// Blockers: who delays DP threads and which of them are confined.
	Blockers *BlockersStatus `json:"blockers,omitempty"`
	// Scheduler is the policy engine's full snapshot (per-core knobs,
	// latency histograms, guard and flap state).
	Scheduler scheduler.Snapshot `json:"scheduler"`
}

// PoolStatus describes the CP pool.
type PoolStatus struct {
	Backend  string `json:"backend"`
	Group    string `json:"group"`
	CPUs     []int  `json:"cpus"`
	Members  int    `json:"members"`
	AdoptErr string `json:"adopt_error,omitempty"`
	// HarvestedCPSeconds is CP CPU time spent on DP cores (per-CPU usage;
	// -1 where the kernel reports only a total).
	HarvestedCPSeconds float64 `json:"harvested_cp_s"`
}

// CoreStatus is one CPU's role and state.
type CoreStatus struct {
	CPU         int               `json:"cpu"`
	Role        string            `json:"role"` // "dp" or "cp"
	State       string            `json:"state"`
	InPool      bool              `json:"in_pool"`
	Hold        string            `json:"hold,omitempty"` // why a DP core is not lent
	LentSeconds float64           `json:"lent_s"`
	Reclaims    map[string]uint64 `json:"reclaims,omitempty"`
	WakeP99us   float64           `json:"wake_p99_us"`
	// ResidenceP99us is the core's DP loop's RX residence p99 since it
	// started (0 without a loop of ours or packets).
	ResidenceP99us float64 `json:"residence_p99_us,omitempty"`
	GuardTrips     uint64  `json:"guard_trips,omitempty"`
	// Budget is the share of the SLO the core's residence p99 over the
	// budget horizon uses (an upper bound; 0 without packets), WindowBudget
	// the same over the last window; Verdict is the SLO rule's last
	// judgement (calm, high, breach, unknown); Confines: CP processes
	// confined for this core's windows.
	Budget       float64 `json:"budget"`
	WindowBudget float64 `json:"window_budget"`
	Verdict      string  `json:"verdict,omitempty"`
	Pressed      bool    `json:"pressed,omitempty"`
	Confines     uint64  `json:"confines,omitempty"`
}

// LoopStatus is one DP loop.
type LoopStatus struct {
	Name      string          `json:"name"`
	CPU       int             `json:"cpu"`
	PID       int             `json:"pid"`
	TID       int             `json:"tid"`
	Alive     bool            `json:"alive"`
	InProcess bool            `json:"in_process,omitempty"`
	Stats     dataplane.Stats `json:"stats"`
	Dropped   uint64          `json:"events_dropped"`
	Rejected  uint64          `json:"events_rejected,omitempty"` // garbled records (unknown kind or wake cause)
	Error     string          `json:"error,omitempty"`
}

// ProbeStatus describes the workload probe.
type ProbeStatus struct {
	Backend string        `json:"backend"`
	Mode    string        `json:"mode,omitempty"`
	State   string        `json:"state"`
	Error   string        `json:"error,omitempty"`
	Stats   []probe.Stats `json:"stats,omitempty"`
}

// stateName maps the engine's states onto status words.
func stateName(s scheduler.State) string {
	switch s {
	case scheduler.DPActive:
		return StateDPActive
	case scheduler.Idle:
		return StateIdle
	case scheduler.Lent:
		return StateLent
	default:
		return strings.ToLower(s.String())
	}
}

// Status reports the daemon's state now.
func (d *Daemon) Status() Status {
	st := Status{
		Version:   buildVersion(),
		PID:       os.Getpid(),
		Uptime:    time.Since(d.started).Round(time.Second).String(),
		Probe:     ProbeStatus{Backend: d.cfg.Probe.Backend, State: "off"},
		Scheduler: d.sched.Snapshot(),
		Kmod:      d.kmodStatus(),
		DPDK:      d.dpdkStatus(),
		Daemon:    d.selfCPU.status(),
		SLO:       d.sloStatus(),
		Blockers:  d.blockersStatus(),
	}
	st.Policy = st.Scheduler.Policy
	var poolCPUs []int
	if d.pool != nil {
		poolCPUs = d.pool.CPUs()
		st.Pool.Backend = d.pool.Backend()
		if m, err := d.pool.Members(); err == nil {
			st.Pool.Members = len(m)
		}
		st.Pool.HarvestedCPSeconds = d.harvested()
	}
	st.Pool.Group = d.cfg.VCPU.CgroupName
	st.Pool.CPUs = poolCPUs

	var probeErrs []string
	for _, l := range d.loops {
		ls := LoopStatus{Name: l.cfg.Name, CPU: l.cfg.CPU, PID: l.client.PID(), TID: l.client.TID(), Alive: l.client.Alive(), InProcess: l.inproc != nil, Dropped: l.client.EventsDropped(), Rejected: l.client.EventsRejected()}
		if snap, err := l.client.Snapshot(); err != nil {
			ls.Error = err.Error()
		} else {
			ls.Stats = snap.Loop
			if snap.Probe != nil {
				st.Probe.Stats = append(st.Probe.Stats, *snap.Probe)
				st.Probe.Mode = snap.Probe.Mode
			}
			if snap.ProbeErr != "" {
				probeErrs = append(probeErrs, l.cfg.Name+": "+snap.ProbeErr)
			}
		}
		st.Loops = append(st.Loops, ls)
	}
	switch {
	case len(probeErrs) > 0:
		st.Probe.State, st.Probe.Error = "failed", strings.Join(probeErrs, "; ")
	case len(st.Probe.Stats) > 0:
		st.Probe.State = "attached"
	}

	d.mu.Lock()
	st.Override = d.override
	st.Pool.AdoptErr = d.adoptErr
	d.mu.Unlock()
	for _, cpu := range d.cfg.CPCPUs {
		st.Cores = append(st.Cores, CoreStatus{CPU: cpu, Role: "cp", State: StateCP, InPool: true})
	}
	for _, c := range st.Scheduler.Cores {
		cs := CoreStatus{
			CPU: c.CPU, Role: "dp", State: stateName(c.State), InPool: slices.Contains(poolCPUs, c.CPU),
			Hold: c.Hold.String(), LentSeconds: c.LentTotal.Seconds(), GuardTrips: c.GuardTrips,
			Budget: c.Budget, WindowBudget: c.WindowBudget, Verdict: c.Verdict.String(), Pressed: c.Pressed, Confines: c.Confines,
			WakeP99us: float64(c.WakeLatency.P99) / float64(time.Microsecond),
		}
		d.mu.Lock()
		if why, down := d.probeDown[c.CPU]; down {
			cs.Hold = "probe-failed: " + why
		}
		d.mu.Unlock()
		if cs.InPool && d.loopOn(c.CPU) == nil && !d.dpdkOn(c.CPU) {
			// No DP loop runs there: the whole core is CP's while it is in the pool.
			cs.State = StateLent
		}
		for _, l := range st.Loops {
			if l.CPU == c.CPU {
				cs.ResidenceP99us = float64(l.Stats.Residence.Quantile(0.99)) / float64(time.Microsecond)
			}
		}
		if len(c.Reclaims) > 0 {
			cs.Reclaims = map[string]uint64{}
			for k, v := range c.Reclaims {
				if v > 0 {
					cs.Reclaims[k] = v
				}
			}
		}
		st.Cores = append(st.Cores, cs)
	}
	slices.SortFunc(st.Cores, func(a, b CoreStatus) int { return a.CPU - b.CPU })
	return st
}

// harvested sums CP CPU time on DP cores, or -1 when unknown.
func (d *Daemon) harvested() float64 {
	per, ok := d.harvestedPerDPCore()
	if !ok {
		return -1
	}
	var sum time.Duration
	for _, t := range per {
		sum += t
	}
	return sum.Seconds()
}

// harvestedPerDPCore is the CP cgroup's CPU time on each DP core since this
// daemon started (the group's counter runs across restarts: it is read once
// at start as the base); false where the kernel reports only a total
// (cgroup v2).
func (d *Daemon) harvestedPerDPCore() (map[int]time.Duration, bool) {
	per, ok := d.dpCoreUsage()
	for cpu, t := range per {
		// A counter below its base means the group was made anew.
		if base := d.harvestBase[cpu]; t >= base {
			per[cpu] = t - base
		}
	}
	return per, ok
}

// dpCoreUsage is the CP cgroup's lifetime CPU time on each DP core; false
// where the kernel reports only a total (cgroup v2).
func (d *Daemon) dpCoreUsage() (map[int]time.Duration, bool) {
	u, err := d.pool.Usage()
	if err != nil || !u.PerCPUAvailable {
		return nil, false
	}
	per := map[int]time.Duration{}
	for _, cpu := range d.cfg.DPCPUs {
		if cpu < len(u.PerCPU) {
			per[cpu] = u.PerCPU[cpu]
		}
	}
	return per, true
}

// readHarvestBase records the CP group's per-DP-core usage at start.
func (d *Daemon) readHarvestBase() { d.harvestBase, _ = d.dpCoreUsage() }
