package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/internal/sdnotify"
)

// The watchdog pets systemd only while the parts that keep DP safe made
// progress: the scheduler goroutine answers a barrier, the pump and every
// loop's event pump ran (those wake at least every eventWaitMax), and DP
// host supervision (the pump's load pass over every host's segment) ran. A daemon stuck in any of them stops petting, and systemd
// restarts it; the DP hosts keep forwarding meanwhile.

// stamp records progress now (time since start, on the monotonic clock).
func (d *Daemon) stamp() int64 { return int64(time.Since(d.started)) }

// healthy reports what made no progress within the last `within`. It is
// called from one goroutine (Run's); a scheduler barrier that has not come
// back is carried over instead of piling up goroutines.
func (d *Daemon) healthy(within time.Duration) error {
	now := time.Duration(d.stamp())
	if age := now - time.Duration(d.pumpBeat.Load()); age > within+loadPeriod {
		return fmt.Errorf("pump: no progress for %v", age.Round(time.Millisecond))
	}
	for _, l := range d.loops {
		if age := now - time.Duration(l.eventBeat.Load()); age > within+eventWaitMax {
			return fmt.Errorf("event pump of DP loop %s: no progress for %v", l.cfg.Name, age.Round(time.Millisecond))
		}
	}
	if age := now - time.Duration(d.superviseBeat.Load()); age > within+loadPeriod {
		return fmt.Errorf("DP host supervision: no progress for %v", age.Round(time.Millisecond))
	}
	if d.schedProbe != nil {
		select {
		case <-d.schedProbe:
			d.schedProbe = nil
		default:
			return fmt.Errorf("scheduler: still not answering")
		}
	}
	probe := make(chan error, 1)
	go func() { probe <- d.sched.Sync(context.Background()) }()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case err := <-probe:
		if err != nil {
			return fmt.Errorf("scheduler: %w", err)
		}
		return nil
	case <-t.C:
		d.schedProbe = probe
		return fmt.Errorf("scheduler: no answer within %v", within)
	}
}

// petWatchdog sends WATCHDOG=1 if the daemon is healthy and reports
// whether it did; the first failure after a healthy stretch is logged.
func (d *Daemon) petWatchdog(within time.Duration) bool {
	if err := d.healthy(within); err != nil {
		if !d.unhealthy {
			d.log.Error("not petting the systemd watchdog", "err", err)
		}
		d.unhealthy = true
		return false
	}
	d.unhealthy = false
	sdnotify.Notify("WATCHDOG=1")
	return true
}
