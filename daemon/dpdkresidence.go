package daemon

import (
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// sampleDPDKResidence feeds the SLO rule for DP cores that run DPDK lcores
// or OVS PMDs instead of a loop of ours. Their packets wait while the
// lcore waits to run, so the tracer's wake->run delays of the DP threads
// on the core stand in for RX residence: one lcore wake is one sample,
// judged against the same SLO by the same rule as our loops' packets.
func (d *Daemon) sampleDPDKResidence(at time.Time) {
	w := d.blockers
	if w == nil || w.tracer == nil {
		return
	}
	for _, cpu := range d.cfg.DPCPUs {
		if d.loopOn(cpu) != nil || !d.dpdkOn(cpu) {
			continue
		}
		st, err := w.tracer.StatsOn(cpu)
		if err != nil {
			w.note("blocker tracer stats", err)
			continue
		}
		w.mu.Lock()
		last, seen := w.coreStats[cpu]
		w.coreStats[cpu] = st
		w.mu.Unlock()
		if !seen || st.Measured() < last.Measured() {
			continue
		}
		delta := st.Sub(last)
		d.sched.ResidenceSample(cpu, at, scheduler.Residence{
			Packets: delta.Measured(), P99: delta.Quantile(0.99), Above: delta.Above,
		})
	}
}
