package daemon

import (
	"context"
	"sync"
	"time"
)

// The engine decides under its lock, and a Lend or Reclaim used to be a
// cpuset write inside that decision. Behind a fork-heavy CP load (eval
// ping's mixed load) one write took up to a second, and for that second
// the engine took no event and fired no timer: holds and benches were
// decided on events a second old. So each DP core has a coreActuator: Lend
// and Reclaim record what the engine wants and return, and the core's own
// goroutine writes the pool (the latest wish wins; a failed write is
// retried after the engine's ActuatorRetry).
//
// A reclaim's order stays DP-safe: until its write is done, the loop keeps
// the knobs it lent with (a SetYield that would stop it yielding is held
// back and applied right after the write), so a SCHED_FIFO loop never
// spins while CP may still be queued on its core. Wakes are never held
// back: a probe's reclaim must not wait for a cgroup.

// yieldKnobs are a DP loop's fast-path knobs (Actuator.SetYield).
type yieldKnobs struct {
	after int64
	slice time.Duration
}

// coreActuator carries out the engine's pool membership for one DP core.
type coreActuator struct {
	cpu   int
	kick  chan struct{}
	retry time.Duration // after a failed write (scheduler ActuatorRetry)

	mu sync.Mutex
	// want: in the pool, as the engine last asked; have: as last written,
	// once known (a first write always happens).
	want, have, known bool
	// held: knobs held back while a reclaim's write is pending.
	held *yieldKnobs
}

// reclaimPending reports whether the core must leave the pool and has not
// yet. Called with a.mu held.
func (a *coreActuator) reclaimPending() bool { return !a.want && (a.have || !a.known) }

// startActuators starts one goroutine per DP core; from then on Lend and
// Reclaim return at once.
func (d *Daemon) startActuators(ctx context.Context) {
	d.actuators = map[int]*coreActuator{}
	retry := d.cfg.SchedulerParams().ActuatorRetry
	for _, cpu := range d.cfg.DPCPUs {
		a := &coreActuator{cpu: cpu, kick: make(chan struct{}, 1), retry: retry}
		d.actuators[cpu] = a
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.actuate(ctx, a)
		}()
	}
}

// wantLent records the engine's wish for cpu and wakes its goroutine; false
// when cpu has none (before Start, or after Close stopped them).
func (d *Daemon) wantLent(cpu int, lend bool) bool {
	a := d.actuators[cpu]
	if a == nil {
		return false
	}
	a.mu.Lock()
	a.want = lend
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default: // a kick is pending: the goroutine reads the latest wish
	}
	return true
}

// actuate writes a's wishes until ctx ends.
func (d *Daemon) actuate(ctx context.Context, a *coreActuator) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		for ctx.Err() == nil {
			a.mu.Lock()
			want, due := a.want, !a.known || a.want != a.have
			a.mu.Unlock()
			if !due {
				break
			}
			if err := d.setLent(a.cpu, want); err != nil {
				d.log.Warn("pool write failed; retrying", "cpu", a.cpu, "lend", want, "err", err, "retry_in", a.retry)
				sleepCtx(ctx, a.retry)
				continue
			}
			a.mu.Lock()
			a.have, a.known = want, true
			if !a.reclaimPending() && a.held != nil {
				d.setKnobs(a.cpu, *a.held)
				a.held = nil
			}
			a.mu.Unlock()
		}
	}
}

// setKnobs hands cpu's loop its knobs now.
func (d *Daemon) setKnobs(cpu int, k yieldKnobs) {
	if l := d.loopOn(cpu); l != nil {
		l.client.SetYield(k.after, k.slice)
	}
}
