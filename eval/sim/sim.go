package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// SamplePeriod is how often the model reports load and residence to the
// engine, as the daemon's pump does (its loadPeriod).
const SamplePeriod = 100 * time.Millisecond

// start is the simulated clock's zero (any fixed instant: runs repeat).
var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Config is one simulated run.
type Config struct {
	Policy scheduler.PolicyName
	// Params tweaks the engine's defaults (nil: scheduler.DefaultParams
	// with Policy).
	Params func(*scheduler.Params)
	// Cores are the DP cores' CPU numbers; Arrivals one source per core.
	Cores    []int
	Arrivals []Arrivals
	Duration time.Duration
	Costs    Costs
	// Record, if set, receives the model's loop events and arrivals (the
	// recorded-trace format), as a dp-host recorder would write them.
	Record *TraceWriter
}

// Result is what a run did.
type Result struct {
	Policy   scheduler.PolicyName `json:"policy"`
	Cores    int                  `json:"cores"`
	Duration time.Duration        `json:"duration_ns"`
	// Events: engine events handled (yields, wakes, load and residence
	// samples, harvested updates); Timers: Advance calls for engine timers
	// due between events.
	Events uint64 `json:"events"`
	Timers uint64 `json:"timer_advances"`
	// LentS: DP-core seconds the engine had lent (its LentTotal, summed):
	// the harvest, as the model's CP is always runnable.
	LentS float64 `json:"lent_core_s"`
	// Reclaims: lent periods the engine ended, by cause.
	Reclaims map[string]uint64 `json:"reclaims"`
	// Wakes: the loop model's wakes by cause; LoopLentS: the loop's blocked
	// time (the recorded trace's view, for the self-check).
	Wakes     map[string]uint64 `json:"wakes"`
	LoopLentS float64           `json:"loop_lent_core_s"`
	// Breaches: sampling intervals whose residence p99 was above the SLO
	// (of Intervals with packets); GuardTrips: the guard's benches.
	Breaches   int           `json:"slo_breaches"`
	Intervals  int           `json:"intervals"`
	GuardTrips uint64        `json:"guard_trips"`
	SLO        time.Duration `json:"slo_ns"`
	Packets    int64         `json:"packets"`
	// EngineNs: real time spent in the engine's calls (Handle, Advance);
	// see Cost.
	EngineNs time.Duration `json:"engine_ns"`
	// Clamped: events the engine saw stamped before its time (0 in a
	// correct run).
	Clamped uint64 `json:"clamped"`
}

// NsPerEvent is the engine's real time per event.
func (r Result) NsPerEvent() float64 {
	if r.Events == 0 {
		return 0
	}
	return float64(r.EngineNs) / float64(r.Events)
}

// CoreShare is the engine's real time per simulated second: the share of
// one core the engine needs to keep up with the trace.
func (r Result) CoreShare() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.EngineNs) / float64(r.Duration)
}

// EventsPerCoreS is the engine's input rate per DP core.
func (r Result) EventsPerCoreS() float64 {
	if r.Duration <= 0 || r.Cores == 0 {
		return 0
	}
	return float64(r.Events) / r.Duration.Seconds() / float64(r.Cores)
}

func (c Config) check() error {
	switch {
	case len(c.Cores) == 0:
		return errors.New("cores: none")
	case len(c.Arrivals) != len(c.Cores):
		return fmt.Errorf("arrivals: %d sources for %d cores", len(c.Arrivals), len(c.Cores))
	case c.Duration <= 0:
		return fmt.Errorf("duration: must be positive, got %v", c.Duration)
	case c.Costs.Poll <= 0 || c.Costs.Packet <= 0 || c.Costs.Wake < 0 || c.Costs.Lead < 0:
		return fmt.Errorf("costs: poll and packet must be positive, wake and lead not negative: %+v", c.Costs)
	}
	return nil
}

// Run simulates c: the loops and the engine in simulated time order. The
// engine's cost is measured on twins: every call the run makes is
// replayed, in batches, into twinCount more engines built the same way,
// each batch timed with the real clock around it (a clock read per call
// would cost as much as the call). All engines see the same calls in the
// same order, so they do the same work; a batch counts at its fastest
// twin's time, as other work on the machine (the sim's own included) only
// ever adds to it.
func Run(c Config) (Result, error) {
	if err := c.check(); err != nil {
		return Result{}, err
	}
	p := scheduler.DefaultParams()
	p.Policy = c.Policy
	if c.Params != nil {
		c.Params(&p)
	}
	r := &runner{cfg: c, res: Result{Policy: c.Policy, Cores: len(c.Cores), Duration: c.Duration, SLO: p.SLO}}
	act := &actuator{r: r, loops: map[int]*loop{}}
	var err error
	if r.eng, err = scheduler.NewStepper(c.Cores, act, p, start); err != nil {
		return Result{}, err
	}
	for range twinCount {
		twin, err := scheduler.NewStepper(c.Cores, nopActuator{}, p, start)
		if err != nil {
			return Result{}, err
		}
		r.twins = append(r.twins, twin)
	}
	// The engine set the knobs at start; the loops take them when built.
	for i, cpu := range c.Cores {
		src := c.Arrivals[i]
		if c.Record != nil {
			src = &recordingArrivals{src: src, w: c.Record, cpu: cpu}
		}
		l := newLoop(cpu, src, c.Costs)
		if k, ok := act.knobs[cpu]; ok {
			l.yieldAfter, l.slice, l.probeWake = k.yieldAfter, k.slice, k.probeWake
		}
		act.loops[cpu] = l
		r.loops = append(r.loops, l)
	}
	r.run()
	return r.finish(), nil
}

// call is one engine call, kept for the twin.
type call struct {
	ev      scheduler.Event
	advance bool
}

// twinBatch calls are timed at once, on each of twinCount twins.
const (
	twinBatch = 4096
	twinCount = 3
)

type runner struct {
	cfg        Config
	res        Result
	eng        *scheduler.Stepper
	twins      []*scheduler.Stepper
	loops      []*loop
	now        time.Duration
	pending    []call
	harvested  map[int]time.Duration
	nextSample time.Duration
	advanced   bool // the engine was advanced to now
}

func (r *runner) at(d time.Duration) time.Time { return start.Add(d) }

func (r *runner) handle(ev scheduler.Event) {
	ev.At = r.at(r.now)
	r.eng.Handle(ev)
	r.res.Events++
	r.pending = append(r.pending, call{ev: ev})
	if len(r.pending) >= twinBatch {
		r.flushTwin()
	}
}

func (r *runner) advance() {
	r.eng.Advance(r.at(r.now))
	r.advanced = true
	r.res.Timers++
	r.pending = append(r.pending, call{ev: scheduler.Event{At: r.at(r.now)}, advance: true})
}

// flushTwin replays the pending calls into every twin, timed, and adds
// the fastest replay to the engine's cost.
func (r *runner) flushTwin() {
	best := time.Duration(-1)
	for _, twin := range r.twins {
		t0 := time.Now()
		for i := range r.pending {
			if c := &r.pending[i]; c.advance {
				twin.Advance(c.ev.At)
			} else {
				twin.Handle(c.ev)
			}
		}
		if d := time.Since(t0); best < 0 || d < best {
			best = d
		}
	}
	r.res.EngineNs += best
	clear(r.pending)
	r.pending = r.pending[:0]
}

// run steps whatever is due first: a sample, an engine timer or a loop
// (lowest CPU first on ties), until the duration ends.
func (r *runner) run() {
	r.nextSample = SamplePeriod
	r.harvested = map[int]time.Duration{}
	for {
		next, which := r.nextSample, -1
		for i, l := range r.loops {
			if at, ok := l.due(); ok && max(at, r.now) < next {
				next, which = max(at, r.now), i
			}
		}
		timer := false
		// A deadline the engine kept after advancing to it would come
		// back forever: each instant is advanced to once.
		if t, ok := r.eng.NextDeadline(); ok && !(r.advanced && t.Sub(start) <= r.now) {
			if d := t.Sub(start); d < next {
				next, which, timer = max(d, r.now), -1, true
			}
		}
		if next > r.cfg.Duration {
			break
		}
		r.advanced = r.advanced && next == r.now
		r.now = next
		switch {
		case timer:
			r.advance()
		case which >= 0:
			l := r.loops[which]
			if ev, ok := l.step(r.now); ok {
				r.record(l, ev)
				r.handle(ev)
			}
		default:
			r.sample()
			r.nextSample += SamplePeriod
		}
	}
	r.now = r.cfg.Duration
	r.advance()
	r.flushTwin()
}

// sample posts each loop's interval to the engine, as the daemon's pump
// does every SamplePeriod: load, residence, harvested CP time.
func (r *runner) sample() {
	for _, l := range r.loops {
		load, res, p99 := l.sample(SamplePeriod)
		r.res.Packets += load.Packets
		if res.Residence.Packets > 0 {
			r.res.Intervals++
			if p99 > r.res.SLO {
				r.res.Breaches++
			}
		}
		if r.cfg.Record != nil {
			r.cfg.Record.Residence(l.cpu, r.now, res.Residence.Packets, p99)
		}
		r.handle(load)
		r.handle(res)
		r.handle(scheduler.Event{Kind: scheduler.EvHarvested, CPU: l.cpu, Harvested: l.lent})
	}
}

func (r *runner) record(l *loop, ev scheduler.Event) {
	if r.cfg.Record == nil {
		return
	}
	switch ev.Kind {
	case scheduler.EvYield:
		r.cfg.Record.Yield(l.cpu, r.now)
	case scheduler.EvWake:
		r.cfg.Record.Wake(l.cpu, r.now, ev.Wake, ev.Latency)
	}
}

func (r *runner) finish() Result {
	snap := r.eng.Snapshot()
	res := r.res
	res.Reclaims, res.Wakes = map[string]uint64{}, map[string]uint64{}
	res.Clamped = snap.ClampedEvents
	for _, c := range snap.Cores {
		res.LentS += c.LentTotal.Seconds()
		res.GuardTrips += c.GuardTrips
		for cause, n := range c.Reclaims {
			if n > 0 {
				res.Reclaims[cause] += n
			}
		}
	}
	for _, l := range r.loops {
		res.LoopLentS += l.lent.Seconds()
		for cause, n := range l.wakes {
			res.Wakes[cause.String()] += n
		}
	}
	return res
}

// actuator carries the engine's decisions to the loop models.
type actuator struct {
	r     *runner
	loops map[int]*loop
	// knobs set before the loops exist (the engine's start).
	knobs map[int]knobs
}

type knobs struct {
	yieldAfter int64
	slice      time.Duration
	probeWake  bool
}

func (a *actuator) Lend(int) error    { return nil }
func (a *actuator) Reclaim(int) error { return nil }

func (a *actuator) SetYield(cpu int, after int64, slice time.Duration) {
	if l := a.loops[cpu]; l != nil {
		l.yieldAfter, l.slice = after, slice
		return
	}
	k := a.knob(cpu)
	k.yieldAfter, k.slice = after, slice
	a.knobs[cpu] = k
}

func (a *actuator) SetCoreRules(cpu int, r scheduler.CoreRules) {
	if l := a.loops[cpu]; l != nil {
		l.probeWake = r.ProbeWake
		return
	}
	k := a.knob(cpu)
	k.probeWake = r.ProbeWake
	a.knobs[cpu] = k
}

func (a *actuator) knob(cpu int) knobs {
	if a.knobs == nil {
		a.knobs = map[int]knobs{}
	}
	k, ok := a.knobs[cpu]
	if !ok {
		k.yieldAfter = -1
	}
	return k
}

func (a *actuator) Wake(cpu int) {
	if l := a.loops[cpu]; l != nil && l.blocked && l.engineWake < 0 {
		l.engineWake = a.r.now
	}
}

// nopActuator is the twin's: the same interfaces, nothing carried out.
type nopActuator struct{}

func (nopActuator) Lend(int) error                        { return nil }
func (nopActuator) Reclaim(int) error                     { return nil }
func (nopActuator) SetYield(int, int64, time.Duration)    {}
func (nopActuator) Wake(int)                              {}
func (nopActuator) SetCoreRules(int, scheduler.CoreRules) {}

// recordingArrivals writes each arrival into the trace as the loop takes it.
type recordingArrivals struct {
	src Arrivals
	w   *TraceWriter
	cpu int
}

func (r *recordingArrivals) Next() (time.Duration, bool) {
	at, ok := r.src.Next()
	if ok {
		r.w.Arrival(r.cpu, at)
	}
	return at, ok
}
