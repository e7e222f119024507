package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// QueueSize is how many events may wait for the scheduler; beyond that Post
// drops (and counts) rather than block the caller: DP never waits on it.
const QueueSize = 8192

// ErrNotRunning is returned by calls that need Run and found it stopped.
var ErrNotRunning = errors.New("scheduler: not running")

// Option configures New.
type Option func(*Scheduler)

// WithClock sets the clock (default RealClock).
func WithClock(c Clock) Option { return func(s *Scheduler) { s.clock = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Scheduler) { s.log = l } }

// Scheduler runs the policy engine for a set of DP cores. Feed it events
// with the Post family of methods, run it with Run, read it with Snapshot.
type Scheduler struct {
	clock Clock
	log   *slog.Logger

	msgs    chan msg
	nudge   chan struct{} // HandleBatch moved the next timer forward
	dropped atomic.Uint64

	mu      sync.Mutex // guards e, running and decision; held by Run while it handles a message
	e       *engine
	running bool
	// decision is the reaction time: from a DP loop's yield or wake (the
	// event's At) to the engine deciding on it.
	decision histogram
	stopped  chan struct{} // closed when the current Run returns
}

type msg struct {
	ev     Event
	policy Policy        // non-nil: switch policy
	done   chan struct{} // non-nil: a barrier (Sync, SetPolicy)
}

// New builds a scheduler for the DP cores cpus, acting through act.
// Nothing is actuated until Run.
func New(cpus []int, act Actuator, p Params, opts ...Option) (*Scheduler, error) {
	sorted, err := checkNew(cpus, act, p)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{clock: RealClock{}, log: slog.Default(), msgs: make(chan msg, QueueSize), nudge: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	s.e = newEngine(p, sorted, act, s.log.With("component", "scheduler"), s.clock.Now())
	return s, nil
}

// checkNew validates New's arguments and returns the cores sorted.
func checkNew(cpus []int, act Actuator, p Params) ([]int, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if act == nil {
		return nil, errors.New("scheduler: nil Actuator")
	}
	if len(cpus) == 0 {
		return nil, errors.New("scheduler: no DP cores")
	}
	seen := map[int]bool{}
	for _, cpu := range cpus {
		if cpu < 0 {
			return nil, fmt.Errorf("scheduler: negative DP cpu %d", cpu)
		}
		if seen[cpu] {
			return nil, fmt.Errorf("scheduler: DP cpu %d listed twice", cpu)
		}
		seen[cpu] = true
	}
	sorted := slices.Clone(cpus)
	slices.Sort(sorted)
	return sorted, nil
}

// Run applies the policy to every core (slow path included) and then handles
// events and timers until ctx is done; it returns nil then. It leaves the
// cores as they are: the daemon's teardown (vCPU pool Close) restores them,
// and DP loops never depend on the scheduler to wake (their waits are bounded).
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("scheduler: Run called twice")
	}
	s.running = true
	s.stopped = make(chan struct{})
	stopped := s.stopped
	s.e.start(s.clock.Now())
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		close(stopped)
		s.mu.Unlock()
	}()

	var timer Timer
	var timerAt time.Time
	for {
		s.mu.Lock()
		next, ok := s.e.nextDeadline()
		s.mu.Unlock()
		if timer != nil && (!ok || !next.Equal(timerAt)) {
			timer.Stop()
			timer = nil
		}
		if ok && timer == nil {
			timer, timerAt = s.clock.NewTimer(next.Sub(s.clock.Now())), next
		}
		var tick <-chan time.Time
		if timer != nil {
			tick = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-s.nudge: // re-read the next deadline
		case m := <-s.msgs:
			s.mu.Lock()
			switch {
			case m.policy != nil:
				s.e.setPolicy(m.policy, s.clock.Now())
			case m.done == nil:
				s.handle(m.ev, s.clock.Now())
			default:
				// A barrier also fires timers that are due by the clock, so
				// Sync after FakeClock.Advance sees their effects.
				s.e.advance(s.clock.Now())
			}
			s.mu.Unlock()
			if m.done != nil {
				close(m.done)
			}
		case <-tick:
			timer = nil
			s.mu.Lock()
			s.e.advance(s.clock.Now())
			s.mu.Unlock()
		}
	}
}

// handle hands ev to the engine and times the decision on a loop's yield
// or wake, taken at now. Called with s.mu held.
func (s *Scheduler) handle(ev Event, now time.Time) {
	s.e.handle(ev)
	if ev.Kind == EvYield || ev.Kind == EvWake {
		s.decision.add(max(now.Sub(ev.At), 0))
	}
}

// HandleBatch hands events (in order) to the engine in the caller's
// goroutine: a drained ring costs one lock, not a hand-over per event to
// Run's goroutine (a thread wake each). Run is only nudged when the
// events brought its next timer forward. Before Run starts, or after it
// returned, the events are queued as Post does; it reports false if the
// queue was full and they were dropped. Events without a time get the
// clock's now. The caller may reuse evs once it returns.
func (s *Scheduler) HandleBatch(evs []Event) bool {
	if len(evs) == 0 {
		return true
	}
	now := s.clock.Now()
	for i := range evs {
		if evs[i].At.IsZero() {
			evs[i].At = now
		}
	}
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		ok := true
		for _, ev := range evs {
			ok = s.Post(ev) && ok
		}
		return ok
	}
	before, had := s.e.nextDeadline()
	decided := s.clock.Now() // one batch, one decision time: a clock read per batch, not per event
	for _, ev := range evs {
		s.handle(ev, decided)
	}
	after, has := s.e.nextDeadline()
	s.mu.Unlock()
	if has && (!had || after.Before(before)) {
		select {
		case s.nudge <- struct{}{}:

		default: // one is pending already
		}
	}
	return true
}

// Post queues an event; it never blocks. It reports false when the queue is
// full and the event was dropped (counted in Snapshot.DroppedEvents).
func (s *Scheduler) Post(ev Event) bool {
	if ev.At.IsZero() {
		ev.At = s.clock.Now()
	}
	select {
	case s.msgs <- msg{ev: ev}:
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

// Idle reports the DP loop on cpu has seen emptyPolls empty polls in a row.
func (s *Scheduler) Idle(cpu int, at time.Time, emptyPolls int64) bool {
	return s.Post(Event{Kind: EvIdle, CPU: cpu, At: at, EmptyPolls: emptyPolls})
}

// Busy reports the DP loop on cpu handles packets again.
func (s *Scheduler) Busy(cpu int, at time.Time) bool {
	return s.Post(Event{Kind: EvBusy, CPU: cpu, At: at})
}

// Yielded reports the DP loop on cpu blocked.
func (s *Scheduler) Yielded(cpu int, at time.Time) bool {
	return s.Post(Event{Kind: EvYield, CPU: cpu, At: at})
}

// Woke reports the DP loop on cpu runs again, why, and how long the packet
// that woke it waited because the core was lent (exposed wake latency; 0 for
// timeouts).
func (s *Scheduler) Woke(cpu int, at time.Time, cause WakeCause, exposed time.Duration) bool {
	return s.Post(Event{Kind: EvWake, CPU: cpu, At: at, Wake: cause, Latency: exposed})
}

// Probe reports the probe saw packets coming for cpu.
func (s *Scheduler) Probe(cpu int, at time.Time) bool {
	return s.Post(Event{Kind: EvProbe, CPU: cpu, At: at})
}

// LoadSample is one load measurement of a DP core over Interval.
type LoadSample struct {
	Interval time.Duration
	// BusyFraction is the share of the interval the loop did work, 0..1
	// (DP loop: non-empty polls / polls; DPDK lcore: non-idle share).
	BusyFraction float64
	Packets      int64
}

// Load reports a load sample for cpu ending at at.
func (s *Scheduler) Load(cpu int, at time.Time, l LoadSample) bool {
	return s.Post(Event{Kind: EvLoad, CPU: cpu, At: at, Interval: l.Interval, BusyFraction: l.BusyFraction, Packets: l.Packets})
}

// Residence is one interval of a DP loop's per-packet RX residence: how
// many packets it processed, how many waited at least a given time (the
// engine asks at the marks of its SLO rule), and the interval's p99 (shown
// in status). Above must never count a packet that waited less.
type Residence struct {
	Packets uint64
	P99     time.Duration
	Above   func(time.Duration) uint64
}

// ResidenceSample feeds an interval of cpu's per-packet RX residence, ending
// at at, into the SLO guard.
func (s *Scheduler) ResidenceSample(cpu int, at time.Time, r Residence) bool {
	return s.Post(Event{Kind: EvResidence, CPU: cpu, At: at, Residence: r})
}

// Harvested reports the cumulative CP CPU time spent on cpu (from the CP
// cgroup's per-CPU usage); it shows in Snapshot and metrics.
func (s *Scheduler) Harvested(cpu int, at time.Time, total time.Duration) bool {
	return s.Post(Event{Kind: EvHarvested, CPU: cpu, At: at, Harvested: total})
}

// ProbeDown reports that cpu's probe failed (down true) or runs again:
// a core without its probe falls back to static under every policy. Before
// Run it takes effect at once, so the core is never lent even briefly.
func (s *Scheduler) ProbeDown(cpu int, at time.Time, down bool) bool {
	s.mu.Lock()
	if !s.running {
		defer s.mu.Unlock()
		c, ok := s.e.byCPU[cpu]
		if ok {
			c.probeDown = down
		}
		return ok
	}
	s.mu.Unlock()
	return s.Post(Event{Kind: EvProbeDown, CPU: cpu, At: at, ProbeDown: down})
}

// SetPolicy switches the policy by name and re-applies every core's slow
// path. Running: it returns once applied. Not running: the policy is stored
// and applied when Run starts. Unknown names change nothing.
func (s *Scheduler) SetPolicy(name PolicyName) error {
	pol, err := LookupPolicy(name)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.mu.Lock()
	if !s.running {
		s.e.setPolicy(pol, s.clock.Now())
		s.mu.Unlock()
		return nil
	}
	stopped := s.stopped
	s.mu.Unlock()
	done := make(chan struct{})
	select {
	case s.msgs <- msg{policy: pol, done: done}:
	case <-stopped:
		return ErrNotRunning
	}
	select {
	case <-done:
		return nil
	case <-stopped:
		return ErrNotRunning
	}
}

// SetSLO sets the bound on per-packet RX residence p99, at start or while
// running. A new bound is a new contract: the windows' evidence and what
// the policy learnt (back-offs, adaptation) are dropped, as on a policy
// switch; counters stay.
func (s *Scheduler) SetSLO(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("scheduler: slo: must be positive, got %v", d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.e.setSLO(d, s.clock.Now())
	return nil
}

// SLO returns the guard's bound on per-packet RX residence p99.
func (s *Scheduler) SLO() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.e.p.SLO
}

// Policy returns the current policy's name.
func (s *Scheduler) Policy() PolicyName {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.e.pol.Name()
}

// Params returns the parameters in use.
func (s *Scheduler) Params() Params {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.e.p
}

// Sync waits until every event posted before it has been handled.
func (s *Scheduler) Sync(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return ErrNotRunning
	}
	stopped := s.stopped
	s.mu.Unlock()
	done := make(chan struct{})
	select {
	case s.msgs <- msg{done: done}:
	case <-stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}
