package eval

import (
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// histUS summarises a latency histogram in µs (bucket upper bounds capped
// by the maximum, see dataplane.Histogram.Quantile).
func histUS(h dataplane.Histogram) Percentiles {
	if h.Count == 0 {
		return Percentiles{}
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Percentiles{
		N: int(h.Count), P50: us(h.Quantile(0.50)), P90: us(h.Quantile(0.90)), P99: us(h.Quantile(0.99)),
		Max: float64(h.MaxNs) / 1e3, Mean: us(h.Mean()),
	}
}

// knownSeconds turns a measurement that may be unknown (negative) into a
// JSON value that is null when unknown.
func knownSeconds(v float64) *float64 {
	if v < 0 {
		return nil
	}
	return &v
}

// measured fills a run's system-side figures from the snapshots around it:
// lending, CP time, reclaims, the DP loop's residence and wake latency, its
// idle share and the capacity bound. offeredLoad is the generator's
// average DP utilisation, the fallback for the idle share.
func (r *Run) measured(sys System, before, after Snapshot, beforeErr, afterErr error, offeredLoad float64) {
	r.DP.IdleShare, r.DP.IdleShareSource = 1-offeredLoad, "derived"
	if beforeErr == nil && afterErr == nil {
		d := after.Sub(before)
		r.WallS = d.WallS
		r.LentS, r.CPCPUS, r.Reclaims = d.LentS, d.CPCPUS, d.Reclaims
		r.GuardBenches = int(d.Reclaims[scheduler.CauseGuard.String()])
		r.Confined = d.Confined
		r.HarvestedCPS = knownSeconds(d.CPOnDPS)
		if d.DaemonCPUS >= 0 && d.DaemonCoveredS > 0 {
			// The profiler covered most of the run (it pauses while a
			// snapshot reads it): the run's figure at the covered rate.
			cpu := d.DaemonCPUS / d.DaemonCoveredS * d.WallS
			r.DaemonCPUS, r.DaemonCoveredS = &cpu, d.DaemonCoveredS
		}
		if d.DPBusyS >= 0 && d.WallS > 0 && len(sys.DPCores()) > 0 {
			r.DP.IdleShare = max(0, 1-d.DPBusyS/(d.WallS*float64(len(sys.DPCores()))))
			r.DP.IdleShareSource = "measured"
		}
		if d.HaveDPHist {
			r.DP.ResidenceUS = histUS(d.Residence)
			r.DP.ResidenceHist = &d.Residence
			r.DP.ExposedWakeUS = histUS(d.Exposed)
			r.DP.ProbeLeadUS = histUS(d.Lead)
		}
		r.DP.LoopClass = after.LoopClass
		r.DP.RXStamp = after.RXStamp
		if d.DPStealS >= 0 {
			ms := 1e3 * d.DPStealS
			r.DP.StealMS = &ms
		}
	} else {
		for _, err := range []error{beforeErr, afterErr} {
			if err != nil {
				r.addErr(err)
			}
		}
	}
	r.CapacityBound = CapacityBound(r.DP.IdleShare, len(sys.DPCores()), len(sys.CPCores()))
}
