// Package sim drives the real scheduler engine (scheduler.Stepper: the
// same state machine and policies the daemon runs) on simulated time with
// per-core packet traces, through a model of the DP loop that yields, blocks
// and wakes as the engine's knobs say. It reports what the engine would
// lend, why it reclaimed, how packets fared against the SLO, and what the
// engine itself costs per event on this machine's real clock.
//
// The model is the DP loop's side only (polling, yield after N empty polls,
// a bounded wait, wake by packet, probe, engine or timeout, per-packet
// residence); every decision is the engine's.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Arrivals yields one core's packet arrival times (from the trace's start)
// in order; ok is false when the trace has no more packets.
type Arrivals interface {
	Next() (at time.Duration, ok bool)
}

// Pattern names a synthetic arrival process (Synthetic).
type Pattern string

// Synthetic patterns.
const (
	// Poisson: exponential gaps at the mean rate.
	Poisson Pattern = "poisson"
	// OnOff: Poisson bursts for On, silence for Off; the mean over a cycle
	// is the rate (so the on rate is rate × (On+Off)/On).
	OnOff Pattern = "onoff"
	// Diurnal: Poisson whose rate ramps from 10% of the peak up to
	// the peak and back over Period (a compressed day); the mean is the rate.
	Diurnal Pattern = "diurnal"
	// LeadBursts: bursts of Burst packets, each packet Lead after the one
	// before (the probe's lead time: a packet's warning comes as its
	// predecessor arrives), Poisson gaps between bursts so the mean is the
	// rate.
	LeadBursts Pattern = "leadbursts"
)

// Patterns are the synthetic patterns, in the order help texts list them.
var Patterns = []Pattern{Poisson, OnOff, Diurnal, LeadBursts}

// Shape holds the patterns' shape parameters; zero fields take
// DefaultShape's.
type Shape struct {
	On, Off time.Duration // OnOff
	Period  time.Duration // Diurnal
	Burst   int           // LeadBursts: packets per burst
	Lead    time.Duration // LeadBursts: gap inside a burst
}

// DefaultShape: the traffic generator's on/off (20 ms on, 80 ms off), a
// 10 s day, bursts of 8 packets 3 µs apart (the paper's probe lead).
var DefaultShape = Shape{On: 20 * time.Millisecond, Off: 80 * time.Millisecond, Period: 10 * time.Second, Burst: 8, Lead: 3 * time.Microsecond}

func (s Shape) withDefaults() Shape {
	d := DefaultShape
	if s.On > 0 {
		d.On = s.On
	}
	if s.Off > 0 {
		d.Off = s.Off
	}
	if s.Period > 0 {
		d.Period = s.Period
	}
	if s.Burst > 0 {
		d.Burst = s.Burst
	}
	if s.Lead > 0 {
		d.Lead = s.Lead
	}
	return d
}

// ParsePattern checks a pattern name.
func ParsePattern(s string) (Pattern, error) {
	for _, p := range Patterns {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown pattern %q (want poisson, onoff, diurnal or leadbursts)", s)
}

// Synthetic returns a deterministic arrival process: the same pattern,
// rate (mean packets per second), shape and seed give the same times.
func Synthetic(p Pattern, rate float64, shape Shape, seed uint64) (Arrivals, error) {
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		return nil, fmt.Errorf("rate: must be a positive number of packets per second, got %v", rate)
	}
	sh := shape.withDefaults()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	exp := func(r float64) time.Duration { return time.Duration(rng.ExpFloat64() / r * 1e9) }
	switch p {
	case Poisson:
		return &gapArrivals{next: func(time.Duration) time.Duration { return exp(rate) }}, nil
	case OnOff:
		cycle := sh.On + sh.Off
		onRate := rate * float64(cycle) / float64(sh.On)
		return &gapArrivals{next: func(t time.Duration) time.Duration {
			at := t + exp(onRate)
			if in := at % cycle; in >= sh.On { // fell into the silence: next cycle's start
				at += cycle - in
			}
			return at - t
		}}, nil
	case Diurnal:
		// Thinning: candidates at the peak rate, kept with rate(t)/peak.
		// The profile 0.1 + 0.9·(1-cos)/2 averages 0.55 of the peak.
		peak := rate / 0.55
		return &gapArrivals{next: func(t time.Duration) time.Duration {
			at := t
			for {
				at += exp(peak)
				phase := 2 * math.Pi * float64(at%sh.Period) / float64(sh.Period)
				if rng.Float64() < 0.1+0.9*(1-math.Cos(phase))/2 {
					return at - t
				}
			}
		}}, nil
	case LeadBursts:
		// A burst spans (Burst-1) leads; the quiet gap before it makes up
		// the rest of the mean cycle, Burst/rate.
		quiet := float64(sh.Burst)/rate - float64(sh.Burst-1)*sh.Lead.Seconds()
		if quiet <= 0 {
			return nil, fmt.Errorf("rate: %v packets/s is more than bursts of %d packets %v apart can carry", rate, sh.Burst, sh.Lead)
		}
		burstRate := 1 / quiet
		left := 0
		return &gapArrivals{next: func(time.Duration) time.Duration {
			if left > 0 {
				left--
				return sh.Lead
			}
			left = sh.Burst - 1
			return exp(burstRate)
		}}, nil
	}
	return nil, fmt.Errorf("pattern: %w", func() error { _, err := ParsePattern(string(p)); return err }())
}

// gapArrivals turns a gap function (given the last arrival) into Arrivals.
type gapArrivals struct {
	t    time.Duration
	next func(last time.Duration) time.Duration
}

func (g *gapArrivals) Next() (time.Duration, bool) {
	g.t += g.next(g.t)
	return g.t, true
}

// Recorded replays a recorded core's arrival times.
type Recorded struct {
	times []time.Duration
	i     int
}

// NewRecorded replays times (sorted; the trace reader checks it).
func NewRecorded(times []time.Duration) *Recorded { return &Recorded{times: times} }

// Next returns the next recorded arrival.
func (r *Recorded) Next() (time.Duration, bool) {
	if r.i >= len(r.times) {
		return 0, false
	}
	r.i++
	return r.times[r.i-1], true
}
