package scheduler

import (
	"log/slog"
	"time"
)

// Stepper is the engine Run drives (the same state machine, policies and
// timers), driven synchronously on the caller's goroutine instead: no
// queue, no clock, time comes only from event timestamps and Advance. The
// simulator (taichi eval sim) replays traces through it and measures what
// the engine itself costs per event; the daemon uses Scheduler.
type Stepper struct {
	e *engine
}

// NewStepper builds the engine for the DP cores cpus at start and applies
// the policy to every core (slow path included), as Run does when it
// starts. Arguments are checked as New checks them.
func NewStepper(cpus []int, act Actuator, p Params, start time.Time) (*Stepper, error) {
	sorted, err := checkNew(cpus, act, p)
	if err != nil {
		return nil, err
	}
	s := &Stepper{e: newEngine(p, sorted, act, slog.New(slog.DiscardHandler), start)}
	s.e.start(start)
	return s, nil
}

// Handle processes one event at its timestamp, first firing the timers due
// by then (an event stamped before the engine's time counts as clamped).
func (s *Stepper) Handle(ev Event) { s.e.handle(ev) }

// Advance moves engine time to t, firing every timer due by then.
func (s *Stepper) Advance(t time.Time) { s.e.advance(t) }

// NextDeadline is when the engine's next timer is due, if any.
func (s *Stepper) NextDeadline() (time.Time, bool) { return s.e.nextDeadline() }

// Snapshot is the engine's state at its current time.
func (s *Stepper) Snapshot() Snapshot { return s.e.snapshot(s.e.now) }
