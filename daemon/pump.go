package daemon

import (
	"context"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// Pump periods: DP loop events are forwarded promptly (they drive the
// per-gap decisions), load and harvested CP time are trends.
const (
	eventPeriod = 200 * time.Microsecond
	loadPeriod  = 100 * time.Millisecond
)

// pump feeds the scheduler: yield/wake events from every DP loop's
// segment, load samples from their counters, and CP CPU time harvested on
// DP cores from the pool's per-CPU usage.
func (d *Daemon) pump(ctx context.Context) {
	t := time.NewTicker(eventPeriod)
	defer t.Stop()
	lastLoad := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.pumpBeat.Store(d.stamp())
		for _, l := range d.loops {
			cpu := l.cfg.CPU
			if _, err := l.client.Events(func(ev dataplane.Event) {
				at := d.mono.Time(ev.AtNs)
				switch ev.Kind {
				case dataplane.KindYield:
					d.sched.Yielded(cpu, at)
				case dataplane.KindWake:
					// A valid cause: the client rejects (counts and
					// reports) records without one.
					d.sched.Woke(cpu, at, ev.Cause, time.Duration(ev.ExposedNs))
				}
			}); err != nil {
				d.log.Warn("DP loop event", "loop", l.cfg.Name, "err", err)
			}
		}
		if time.Since(lastLoad) >= loadPeriod {
			lastLoad = time.Now()
			d.sampleLoad()
			d.superviseBeat.Store(d.stamp())
		}
	}
}

func (d *Daemon) sampleLoad() {
	now := time.Now()
	for _, l := range d.loops {
		snap, err := l.client.Snapshot()
		if err != nil {
			continue
		}
		at := time.Duration(snap.Published)
		if l.lastAt != 0 && at > l.lastAt {
			interval := at - l.lastAt
			busy := float64(snap.Loop.Busy-l.lastBusy) / float64(interval)
			d.sched.Load(l.cfg.CPU, d.mono.Time(snap.Published), scheduler.LoadSample{
				Interval: interval, BusyFraction: min(max(busy, 0), 1), Packets: int64(snap.Loop.Packets - l.lastPackets),
			})
			// What packets felt in the interval; the scheduler judges it
			// against the SLO's marks (a packet in the bucket that
			// straddles a mark counts within it).
			if r := snap.Loop.Residence; r.Count >= l.lastResidence.Count {
				delta := r.Sub(l.lastResidence)
				d.sched.ResidenceSample(l.cfg.CPU, d.mono.Time(snap.Published), scheduler.Residence{
					Packets: delta.Count, P99: delta.Quantile(0.99), Above: delta.Above,
				})
			}
		}
		l.lastAt, l.lastBusy, l.lastPackets, l.lastResidence = at, snap.Loop.Busy, snap.Loop.Packets, snap.Loop.Residence
	}
	d.sampleDPDKResidence(now)
	per, _ := d.harvestedPerDPCore()
	for cpu, t := range per {
		d.sched.Harvested(cpu, now, t)
	}
}
