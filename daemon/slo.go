package daemon

import (
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// Auto SLO: the guard's bound on per-packet RX residence p99 is a multiple
// of what waking a thread on a DP core costs on this host with nothing
// lent. Packets that arrive while a lent core's loop sleeps pay about one
// such wake; CP that holds the core longer than a few wakes is what the
// guard is for. The clamp keeps a noisy calibration from disabling the
// guard or from tripping it on a quiet host's jitter.
const (
	sloWakeFactor = 3
	sloFloor      = 250 * time.Microsecond
	sloCeiling    = 2 * time.Millisecond
	sloWakes      = 1000
	sloWakePeriod = 200 * time.Microsecond
)

// SLOStatus says what the guard's bound is and where it came from.
type SLOStatus struct {
	Value time.Duration `json:"value_ns"`
	// Source is "config" or "auto".
	Source string `json:"source"`
	// Why explains an auto value (the measurement and the rule).
	Why string `json:"why,omitempty"`
	// Horizon is the span the SLO is judged over (the scheduler's budget
	// horizon).
	Horizon time.Duration `json:"horizon_ns,omitempty"`
	// WakeP50/WakeP99: the measured wake cost an auto value came from.
	WakeP50 time.Duration `json:"wake_p50_ns,omitempty"`
	WakeP99 time.Duration `json:"wake_p99_ns,omitempty"`
}

// deriveSLO measures the DP cores' wake cost when scheduler.slo is auto and
// hands the bound to the scheduler (before it runs).
func (d *Daemon) deriveSLO() error {
	if !d.cfg.Scheduler.SLO.Auto() {
		d.slo = SLOStatus{Value: d.cfg.Scheduler.SLO.D(), Source: "config"}
		return nil
	}
	var worst dataplane.WakeCost
	worstCPU := -1
	for _, cpu := range d.cfg.DPCPUs {
		// One above the loop's priority: a FIFO loop busy-polling there (a core
		// adopted while lent) must not stand in the measurement's way.
		wc, err := dataplane.MeasureWakeCost(cpu, min(d.dpPriority(cpu)+1, linuxsched.MaxFIFOPriority), sloWakes, sloWakePeriod)
		if err != nil {
			return fmt.Errorf("scheduler.slo: auto: %w (set scheduler.slo to a duration to skip the measurement)", err)
		}
		if worstCPU < 0 || wc.P99 > worst.P99 {
			worst, worstCPU = wc, cpu
		}
	}
	slo := min(max(sloWakeFactor*worst.P99, sloFloor), sloCeiling)
	d.slo = SLOStatus{Value: slo, Source: "auto", WakeP50: worst.P50, WakeP99: worst.P99, Why: fmt.Sprintf(
		"%d x the wake-to-run p99 of a SCHED_FIFO thread on DP core %d (%v over %d wakes, p50 %v; nothing lent), within %v..%v",
		sloWakeFactor, worstCPU, worst.P99, worst.Samples, worst.P50, sloFloor, sloCeiling)}
	d.log.Info("slo guard: residence p99 bound derived", "slo", slo, "why", d.slo.Why)
	return d.sched.SetSLO(slo)
}

// dpPriority is the SCHED_FIFO priority of cpu's DP loop (the default
// without a loop of ours).
func (d *Daemon) dpPriority(cpu int) int {
	if l := d.loopOn(cpu); l != nil && l.cfg.Priority > 0 {
		return l.cfg.Priority
	}
	return dataplane.DefaultPriority
}

// sloStatus is the SLO as status shows it: its value and where it came
// from, and the horizon the scheduler judges it over.
func (d *Daemon) sloStatus() SLOStatus {
	st := d.SLO()
	st.Horizon = d.sched.Params().BudgetHorizon
	return st
}
