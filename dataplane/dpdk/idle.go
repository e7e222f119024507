package dpdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
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
// The file stays open and is re-read with pread (the kernel regenerates it
// at offset 0), which costs a fraction of reopening and parsing it fully
// on every poll.
func NetDevCounter(pid int, ifaces ...string) CounterFunc {
	path := fmt.Sprintf("/proc/%d/net/dev", pid)
	var (
		f   *os.File // closed by its finalizer when the counter is dropped
		rc  syscall.RawConn
		buf = make([]byte, 64<<10)
	)
	return func() (uint64, error) {
		if f == nil {
			var err error
			if f, err = os.Open(path); err != nil {
				return 0, err
			}
			if rc, err = f.SyscallConn(); err != nil {
				f.Close()
				f = nil
				return 0, err
			}
		}
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Pread(int(fd), buf, 0)
			return true
		}); err != nil {
			rerr = err
		}
		if rerr != nil {
			f.Close()
			f = nil
			return 0, fmt.Errorf("read %s: %w", path, rerr)
		}
		var sum uint64
		for _, name := range ifaces {
			v, ok := rxPackets(buf[:n], name)
			if !ok {
				return 0, fmt.Errorf("interface %q not in the namespace of pid %d", name, pid)
			}
			sum += v
		}
		return sum, nil
	}
}

// rxPackets finds "name:" at the start of a /proc/net/dev line and returns
// its second number (receive packets; the first is receive bytes).
func rxPackets(data []byte, name string) (uint64, bool) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(key)) != name {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) < 2 {
			return 0, false
		}
		v, err := strconv.ParseUint(string(fields[1]), 10, 64)
		return v, err == nil
	}
	return 0, false
}

// WakeSource is a workload probe's early warning for a DP core (the method
// set of probe.WakeSource): once armed, FD turns readable when a packet for
// the core passes the probe, a hop before it reaches the application's
// port.
type WakeSource interface {
	FD() int
	Arm()
	Disarm() (stampNs int64, ok bool)
}

// IdleWatcherOptions tune an IdleWatcher.
type IdleWatcherOptions struct {
	Interval  time.Duration // counter polling period (default DefaultIdleInterval)
	IdleAfter int           // idle intervals before demoting (default DefaultIdleAfter)
	Priority  int           // SCHED_FIFO priority of the watcher's thread; 0 leaves it SCHED_OTHER
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
	// LastReclaimAt is when the last reclaim started (CLOCK_MONOTONIC ns).
	LastReclaimAt int64 `json:"last_reclaim_at"`
	// ProbeReclaims counts reclaims the probe triggered before the
	// counters showed the packet.
	ProbeReclaims uint64 `json:"probe_reclaims"`
	// LentSeconds is how long the lcores' cores have been lent in total.
	LentSeconds float64 `json:"lent_seconds"`
}

// IdleWatcher lends a busy-polling application's cores while its queues are
// idle: after IdleAfter intervals without a counter change it demotes every
// lcore (lends its core); on the first change it promotes them (SCHED_FIFO).
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
	// forbidden: the lending policy keeps these cores out of CP's reach
	// (static, a benched core): the watcher never lends them.
	forbidden atomic.Bool
	// probe, when set, reclaims lent cores at the probe's warning (SetProbe).
	probe atomic.Pointer[probeSet]

	demotions, promotions, counterErrors, probeReclaims atomic.Uint64
	lastPromoteNs, maxPromoteNs                         atomic.Int64
	lastReclaimAt                                       atomic.Int64
	// lentSince is when the current lend began (0: not lent); lentNs sums
	// the lends that ended (CLOCK_MONOTONIC ns).
	lentSince, lentNs atomic.Int64
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

// SetAllowed lets the watcher lend idle lcores (the default) or forbids it.
// Forbidding reclaims every lent lcore before it returns, so a caller that
// then takes the core out of the CP cpuset finds the lcore running.
func (w *IdleWatcher) SetAllowed(on bool) error {
	w.forbidden.Store(!on)
	if on {
		return nil
	}
	return w.reclaim()
}

// SetProbe makes the probe's warnings (one source per DP core of the
// application) reclaim lent cores at once, as when the policy uses the
// probe; with none, reclaiming is left to the counters. It takes effect at
// the watcher's next interval.
func (w *IdleWatcher) SetProbe(sources ...WakeSource) {
	sources = slices.DeleteFunc(slices.Clone(sources), func(ws WakeSource) bool { return ws == nil })
	if len(sources) == 0 {
		w.probe.Store(nil)
		return
	}
	w.probe.Store(&probeSet{sources: sources})
}

// probeSet is one SetProbe call's sources (compared by identity).
type probeSet struct{ sources []WakeSource }

// Stats returns the counters so far.
func (w *IdleWatcher) Stats() IdleStats {
	return IdleStats{
		Demoted:       w.demoted.Load(),
		Demotions:     w.demotions.Load(),
		Promotions:    w.promotions.Load(),
		CounterErrors: w.counterErrors.Load(),
		LastPromoteNs: w.lastPromoteNs.Load(),
		MaxPromoteNs:  w.maxPromoteNs.Load(),
		LastReclaimAt: w.lastReclaimAt.Load(),
		ProbeReclaims: w.probeReclaims.Load(),
		LentSeconds:   float64(w.lentTotalNs()) / 1e9,
	}
}

// Run polls the counter until ctx ends, then reclaims any lent core.
// The loop owns a locked OS thread that sleeps with clock_nanosleep, so
// sub-millisecond intervals are honoured (Go timers round up to ~1 ms), and
// with Priority set that thread is SCHED_FIFO: a watcher starved by CP work
// on the CP core would reclaim late, so it outranks CP.
func (w *IdleWatcher) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: a thread made SCHED_FIFO exits with this goroutine
		// instead of returning to the Go runtime's pool.
		runtime.LockOSThread()
		if w.opts.Priority > 0 {
			if err := linuxsched.Set(0, linuxsched.FIFO(w.opts.Priority)); err != nil {
				w.opts.Logger.Warn("idle watcher stays SCHED_OTHER", "err", err)
			}
		}
		done <- w.loop(ctx)
	}()
	return <-done
}

func (w *IdleWatcher) loop(ctx context.Context) error {
	defer func() {
		if err := w.reclaim(); err != nil {
			w.opts.Logger.Error("reclaiming lent cores on exit", "err", err)
		}
	}()
	last, err := w.counter()
	haveLast := err == nil
	idle := 0
	interval := w.opts.Interval.Nanoseconds()
	next := monotonicNs() + interval
	var armed *probeSet // the probe armed while the cores are lent
	disarm := func() {
		for _, ws := range armed.sources {
			ws.Disarm()
		}
		armed = nil
	}
	defer func() {
		if armed != nil {
			disarm()
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil
		}
		// Arm the probe while lent, disarm it otherwise (another goroutine
		// may have reclaimed, or the policy switched the probe off).
		lent, p := w.demoted.Load(), w.probe.Load()
		if armed != nil && (!lent || p != armed) {
			disarm()
		}
		if armed == nil && lent && p != nil {
			armed = p
			for _, ws := range armed.sources {
				ws.Arm()
			}
		}
		if waitUntil(next, armed) {
			disarm()
			idle = 0
			if err := w.reclaim(); err != nil {
				w.opts.Logger.Error("reclaim at the probe's warning", "err", err)
			}
			w.probeReclaims.Add(1) // after the reclaim: a reader sees it done

		}
		next += interval
		if now := monotonicNs(); next <= now { // fell behind: do not burst
			next = now + interval
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
		if idle >= w.opts.IdleAfter && !w.demoted.Load() && !w.forbidden.Load() {
			if err := w.lend(); err != nil {
				w.opts.Logger.Warn("lend", "err", err)
			}
		}
	}
}

func monotonicNs() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// sleepUntil blocks the calling thread until the CLOCK_MONOTONIC deadline.
func sleepUntil(deadlineNs int64) {
	ts := unix.NsecToTimespec(deadlineNs)
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// lentTotalNs is the time lent so far, the current lend included.
func (w *IdleWatcher) lentTotalNs() int64 {
	total := w.lentNs.Load()
	if since := w.lentSince.Load(); since != 0 {
		total += monotonicNs() - since
	}
	return total
}

// waitUntil blocks until the CLOCK_MONOTONIC deadline or, with a probe
// armed, until the probe warns of a packet (true).
func waitUntil(deadlineNs int64, armed *probeSet) bool {
	if armed == nil {
		sleepUntil(deadlineNs)
		return false
	}
	fds := make([]unix.PollFd, len(armed.sources))
	for i, ws := range armed.sources {
		fds[i] = unix.PollFd{Fd: int32(ws.FD()), Events: unix.POLLIN}
	}
	for {
		left := deadlineNs - monotonicNs()
		if left <= 0 {
			return false
		}
		ts := unix.NsecToTimespec(left)
		n, err := unix.Ppoll(fds, &ts, nil)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// lend demotes every lcore; those that fail stay SCHED_FIFO.
func (w *IdleWatcher) lend() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.forbidden.Load() { // checked under mu: SetAllowed(false) reclaims after us
		return nil
	}
	var errs []error
	for _, tid := range w.lender.LcoreTIDs() {
		if err := w.lender.Demote(tid); err != nil {
			errs = append(errs, err)
			continue
		}
		w.lent = append(w.lent, tid)
	}
	if len(w.lent) > 0 {
		if w.lentSince.Load() == 0 {
			w.lentSince.Store(monotonicNs())
		}
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
	startNs := monotonicNs()
	w.lastReclaimAt.Store(startNs)
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
	if since := w.lentSince.Load(); len(keep) == 0 && since != 0 {
		w.lentNs.Add(monotonicNs() - since)
		w.lentSince.Store(0)
	}
	w.promotions.Add(1)
	w.lastPromoteNs.Store(d)
	if d > w.maxPromoteNs.Load() {
		w.maxPromoteNs.Store(d)
	}
	return errors.Join(errs...)
}
