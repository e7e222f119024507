package dpdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Lender is what an IdleWatcher acts on: the lcore threads of one
// application and the two moves that lend and reclaim their cores.
// *Manager implements it.
type Lender interface {
	LcoreTIDs() []int
	Demote(tid int) error
	Promote(tid int) error
}

// CounterFunc returns a counter that grows while the lcores have work
// (packets received on the queues they poll).
type CounterFunc func() (uint64, error)

// NetDevCounter sums rx_packets of ifaces as seen from process pid's
// network namespace (/proc/PID/net/dev): the kernel counts a packet there
// when it reaches the interface, before an af_packet/af_xdp lcore polls it,
// so the watcher can reclaim before the lcore would have seen the packet.
func NetDevCounter(pid int, ifaces ...string) CounterFunc {
	return func() (uint64, error) {
		p, err := procfs.NewProc(pid)
		if err != nil {
			return 0, err
		}
		dev, err := p.NetDev()
		if err != nil {
			return 0, err
		}
		var sum uint64
		for _, name := range ifaces {
			line, ok := dev[name]
			if !ok {
				return 0, fmt.Errorf("interface %q not in the namespace of pid %d", name, pid)
			}
			sum += line.RxPackets
		}
		return sum, nil
	}
}

// IdleWatcherOptions tune an IdleWatcher.
type IdleWatcherOptions struct {
	Interval  time.Duration // counter polling period (default DefaultIdleInterval)
	IdleAfter int           // idle intervals before demoting (default DefaultIdleAfter)
	Logger    *slog.Logger
}

// IdleStats counts what an IdleWatcher did.
type IdleStats struct {
	Demoted       bool   `json:"demoted"`
	Demotions     uint64 `json:"demotions"`
	Promotions    uint64 `json:"promotions"`
	CounterErrors uint64 `json:"counter_errors"`
	// LastPromoteNs and MaxPromoteNs time the reclaim syscalls (all lcores).
	LastPromoteNs int64 `json:"last_promote_ns"`
	MaxPromoteNs  int64 `json:"max_promote_ns"`
}

// IdleWatcher lends a busy-polling application's cores while its queues are
// idle: after IdleAfter intervals without a counter change it demotes every
// lcore (SCHED_IDLE); on the first change it promotes them (SCHED_FIFO).
// A demoted lcore still polls at idle weight, so CP gets most of the core
// and the lcore still notices packets itself, only late. Any doubt (a
// counter error, shutdown) reclaims the cores.
type IdleWatcher struct {
	lender  Lender
	counter CounterFunc
	opts    IdleWatcherOptions

	mu      sync.Mutex
	lent    []int // tids this watcher demoted
	demoted atomic.Bool

	demotions, promotions, counterErrors atomic.Uint64
	lastPromoteNs, maxPromoteNs          atomic.Int64
}

// NewIdleWatcher returns a watcher; Run starts it.
func NewIdleWatcher(l Lender, counter CounterFunc, opts IdleWatcherOptions) *IdleWatcher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultIdleInterval
	}
	if opts.IdleAfter <= 0 {
		opts.IdleAfter = DefaultIdleAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &IdleWatcher{lender: l, counter: counter, opts: opts}
}

// Stats returns the counters so far.
func (w *IdleWatcher) Stats() IdleStats {
	return IdleStats{
		Demoted:       w.demoted.Load(),
		Demotions:     w.demotions.Load(),
		Promotions:    w.promotions.Load(),
		CounterErrors: w.counterErrors.Load(),
		LastPromoteNs: w.lastPromoteNs.Load(),
		MaxPromoteNs:  w.maxPromoteNs.Load(),
	}
}

// Run polls the counter until ctx ends, then reclaims any lent core.
func (w *IdleWatcher) Run(ctx context.Context) error {
	defer func() {
		if err := w.reclaim(); err != nil {
			w.opts.Logger.Error("reclaiming lent cores on exit", "err", err)
		}
	}()
	last, err := w.counter()
	haveLast := err == nil
	idle := 0
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		v, err := w.counter()
		if err != nil {
			if w.counterErrors.Add(1) == 1 || haveLast {
				w.opts.Logger.Warn("idle counter unreadable: not lending", "err", err)
			}
			haveLast, idle = false, 0
			if err := w.reclaim(); err != nil {
				w.opts.Logger.Error("reclaim after counter error", "err", err)
			}
			continue
		}
		if !haveLast || v != last {
			last, haveLast, idle = v, true, 0
			if err := w.reclaim(); err != nil {
				w.opts.Logger.Error("reclaim", "err", err)
			}
			continue
		}
		idle++
		if idle >= w.opts.IdleAfter && !w.demoted.Load() {
			if err := w.lend(); err != nil {
				w.opts.Logger.Warn("lend", "err", err)
			}
		}
	}
}

// lend demotes every lcore; those that fail stay SCHED_FIFO.
func (w *IdleWatcher) lend() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, tid := range w.lender.LcoreTIDs() {
		if err := w.lender.Demote(tid); err != nil {
			errs = append(errs, err)
			continue
		}
		w.lent = append(w.lent, tid)
	}
	if len(w.lent) > 0 {
		w.demoted.Store(true)
		w.demotions.Add(1)
	}
	return errors.Join(errs...)
}

// reclaim promotes every lcore this watcher demoted.
func (w *IdleWatcher) reclaim() error {
	if !w.demoted.Load() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	var errs []error
	var keep []int
	for _, tid := range w.lent {
		// A thread that is gone (ESRCH) or no longer an lcore has nothing to reclaim.
		if err := w.lender.Promote(tid); err != nil && !errors.Is(err, ErrNotLcore) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
			keep = append(keep, tid) // try again next interval
		}
	}
	d := time.Since(start).Nanoseconds()
	w.lent = keep
	w.demoted.Store(len(keep) > 0)
	w.promotions.Add(1)
	w.lastPromoteNs.Store(d)
	if d > w.maxPromoteNs.Load() {
		w.maxPromoteNs.Store(d)
	}
	return errors.Join(errs...)
}
