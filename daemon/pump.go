package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

const (
	// eventWaitMax bounds an event pump's sleep on its loop's doorbell: a
	// quiet loop's pump still shows the watchdog it is alive, and a
	// shutdown waits at most this long for it.
	eventWaitMax = 100 * time.Millisecond
	// eventBatch: while a loop's events keep coming, its pump drains them
	// this often instead of waking for each (a wake costs tens of µs on a
	// VM; the decisions they feed are accounting and trends, and the
	// reclaim itself never waits for the daemon).
	eventBatch = 10 * time.Millisecond
	// loadPeriod: load, residence and harvested CP time are trends.
	loadPeriod = 100 * time.Millisecond
)

// pump feeds the scheduler: each DP loop's yield/wake events as they come
// (one goroutine per loop, asleep on the segment's doorbell until the host
// queues one), and every loadPeriod the load samples from the loops'
// counters and the CP CPU time harvested on DP cores. Nothing ticks faster
// than loadPeriod on an idle loop.
func (d *Daemon) pump(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, l := range d.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.pumpEvents(ctx, l)
		}()
	}
	t := time.NewTicker(loadPeriod)
	defer t.Stop()
	for n := 0; ; n++ {
		d.pumpBeat.Store(d.stamp())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.sampleLoad(n%harvestEvery == 0)
		d.superviseBeat.Store(d.stamp())
	}
}

// harvestEvery: harvested CP time is read every this many load passes (a
// second): it is shown, not decided on, and reading the cgroup's per-CPU
// usage was a tenth of the daemon's CPU at every pass.
const harvestEvery = 10

// pumpEvents forwards one loop's events to the scheduler, a drained ring
// at a time. The first event after a quiet spell is taken at once (the
// host rings the doorbell); while events keep coming the pump drains every
// eventBatch (a pacing host's rings, host.BellGap apart, or a timer for a
// host that does not pace them), and once a drain finds nothing it sleeps
// on the doorbell again.
func (d *Daemon) pumpEvents(ctx context.Context, l *dpLoop) {
	for ctx.Err() == nil {
		l.eventBeat.Store(d.stamp())
		if d.drainEvents(l) > 0 {
			if !l.client.BellPaced() {
				sleepCtx(ctx, eventBatch)
				continue
			}
			// A pacing host rings again once host.BellGap has passed: the
			// pump sleeps on the doorbell, not on a timer (a timer also
			// wakes the runtime's monitor thread).
			if err := l.client.WaitRing(eventWaitMax); err != nil {
				d.log.Warn("DP loop event wait", "loop", l.cfg.Name, "err", err)
				sleepCtx(ctx, eventBatch)
			}
			continue
		}
		if err := l.client.WaitEvents(eventWaitMax); err != nil {
			// Not expected (futex(2) on our own mapping); polling at the
			// bound keeps events flowing, late, rather than spinning.
			d.log.Warn("DP loop event wait", "loop", l.cfg.Name, "err", err)
			sleepCtx(ctx, eventWaitMax)
		}
	}
}

// drainEvents hands the loop's queued yields and wakes to the scheduler as
// one batch and returns how many there were.
func (d *Daemon) drainEvents(l *dpLoop) int {
	cpu := l.cfg.CPU
	batch := l.batch[:0]
	if _, err := l.client.Events(func(ev dataplane.Event) {
		at := d.mono.Time(ev.AtNs)
		switch ev.Kind {
		case dataplane.KindYield:
			batch = append(batch, scheduler.Event{Kind: scheduler.EvYield, CPU: cpu, At: at})
		case dataplane.KindWake:
			// A valid cause: the client rejects (counts and reports)
			// records without one.
			batch = append(batch, scheduler.Event{Kind: scheduler.EvWake, CPU: cpu, At: at,
				Wake: ev.Cause, Latency: time.Duration(ev.ExposedNs)})
		}
	}); err != nil {
		d.log.Warn("DP loop event", "loop", l.cfg.Name, "err", err)
	}
	d.sched.HandleBatch(batch)
	l.batch = batch // HandleBatch is done with it: reused, not garbage
	return len(batch)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (d *Daemon) sampleLoad(harvest bool) {
	now := time.Now()
	for _, l := range d.loops {
		cur, last := &l.load, &l.lastLoad
		if err := l.client.ReadLoad(cur); err != nil {
			continue
		}
		if last.Published != 0 && cur.Published > last.Published {
			at := d.mono.Time(cur.Published)
			interval := time.Duration(cur.Published - last.Published)
			busy := float64(cur.Busy-last.Busy) / float64(interval)
			d.sched.Load(l.cfg.CPU, at, scheduler.LoadSample{
				Interval: interval, BusyFraction: min(max(busy, 0), 1), Packets: int64(cur.Packets - last.Packets),
			})
			// What packets felt in the interval; the scheduler judges it
			// against the SLO's marks (a packet in the bucket that
			// straddles a mark counts within it).
			if cur.Residence.Count >= last.Residence.Count {
				delta := cur.Residence.Sub(last.Residence)
				d.sched.ResidenceSample(l.cfg.CPU, at, scheduler.Residence{
					Packets: delta.Count, P99: delta.Quantile(0.99), Above: delta.Above,
				})
			}
		}
		*last = *cur
	}
	d.sampleDPDKResidence(now)
	if !harvest {
		return
	}
	per, _ := d.harvestedPerDPCore()
	for cpu, t := range per {
		d.sched.Harvested(cpu, now, t)
	}
}
