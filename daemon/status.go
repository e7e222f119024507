package daemon

import (
	"os"
	"slices"
	"time"
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
	Version  string       `json:"version"`
	PID      int          `json:"pid"`
	Uptime   string       `json:"uptime"`
	Policy   string       `json:"policy"`
	Override bool         `json:"policy_override,omitempty"`
	Pool     PoolStatus   `json:"pool"`
	Cores    []CoreStatus `json:"cores"`
	Probe    ProbeStatus  `json:"probe"`
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
	LentSeconds float64           `json:"lent_s"`
	Reclaims    map[string]uint64 `json:"reclaims,omitempty"`
}

// ProbeStatus describes the workload probe.
type ProbeStatus struct {
	Backend string `json:"backend"`
	Mode    string `json:"mode,omitempty"`
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
}

// Status reports the daemon's state now.
func (d *Daemon) Status() Status {
	st := Status{
		Version: buildVersion(),
		PID:     os.Getpid(),
		Uptime:  time.Since(d.started).Round(time.Second).String(),
		Probe:   ProbeStatus{Backend: d.cfg.Probe.Backend, State: "off"},
	}
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

	d.mu.Lock()
	defer d.mu.Unlock()
	st.Policy, st.Override = d.policy, d.override
	st.Pool.AdoptErr = d.adoptErr
	for _, cpu := range d.cfg.CPCPUs {
		st.Cores = append(st.Cores, CoreStatus{CPU: cpu, Role: "cp", State: StateCP, InPool: true})
	}
	for _, cpu := range d.cfg.DPCPUs {
		cs := CoreStatus{CPU: cpu, Role: "dp", State: StateDPActive, InPool: slices.Contains(poolCPUs, cpu)}
		lent := d.lentSum[cpu]
		if d.lent[cpu] {
			cs.State = StateLent
			lent += time.Since(d.lentAt[cpu])
		}
		cs.LentSeconds = lent.Seconds()
		if r := d.reclaims[cpu]; len(r) > 0 {
			cs.Reclaims = map[string]uint64{}
			for k, v := range r {
				cs.Reclaims[k] = v
			}
		}
		st.Cores = append(st.Cores, cs)
	}
	slices.SortFunc(st.Cores, func(a, b CoreStatus) int { return a.CPU - b.CPU })
	return st
}

// harvested sums CP CPU time on DP cores, or -1 when unknown.
func (d *Daemon) harvested() float64 {
	u, err := d.pool.Usage()
	if err != nil || !u.PerCPUAvailable {
		return -1
	}
	var sum time.Duration
	for _, cpu := range d.cfg.DPCPUs {
		if cpu < len(u.PerCPU) {
			sum += u.PerCPU[cpu]
		}
	}
	return sum.Seconds()
}
