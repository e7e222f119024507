package daemon

import (
	"fmt"
	"time"
)

// SLOSourceSet is the SLO status source of a bound set at run time
// (SetSLO), e.g. by an eval sweeping the SLO.
const SLOSourceSet = "set"

// SLO returns the guard's bound and where it came from.
func (d *Daemon) SLO() SLOStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slo
}

// SetSLO changes the guard's bound on per-packet RX residence p99 at run
// time. The packets of the current window are judged against the new bound
// from the next residence interval on. Nothing changes when the scheduler
// refuses the value.
func (d *Daemon) SetSLO(v time.Duration) error {
	if v <= 0 {
		return fmt.Errorf("slo: must be positive, got %v", v)
	}
	return d.RestoreSLO(SLOStatus{Value: v, Source: SLOSourceSet})
}

// RestoreSLO puts back a bound and its provenance as SLO returned it
// (e.g. the auto value with its measurement, after a sweep).
func (d *Daemon) RestoreSLO(st SLOStatus) error {
	if err := d.sched.SetSLO(st.Value); err != nil {
		return err
	}
	d.blockers.restart(d.confining())
	d.mu.Lock()
	d.slo = st
	d.mu.Unlock()
	d.log.Info("slo guard: bound set", "slo", st.Value, "source", st.Source)
	return nil
}
