package scheduler

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recorder is an Actuator that writes down every call, in order.
type recorder struct {
	calls      []string
	lendErr    error
	reclaimErr error
	gate       bool
}

func (r *recorder) Lend(cpu int) error {
	r.calls = append(r.calls, fmt.Sprintf("lend %d", cpu))
	return r.lendErr
}

func (r *recorder) Reclaim(cpu int) error {
	r.calls = append(r.calls, fmt.Sprintf("reclaim %d", cpu))
	return r.reclaimErr
}

func (r *recorder) SetYield(cpu int, after int64, slice time.Duration) {
	r.calls = append(r.calls, fmt.Sprintf("yield %d %d %v", cpu, after, slice))
}

func (r *recorder) Wake(cpu int) { r.calls = append(r.calls, fmt.Sprintf("wake %d", cpu)) }

// gatedRecorder also implements RuleGate.
type gatedRecorder struct{ *recorder }

func (g gatedRecorder) SetCoreRules(cpu int, r CoreRules) {
	g.calls = append(g.calls, fmt.Sprintf("rules %d probe=%v dpdk=%v confine=%v", cpu, r.ProbeWake, r.LendDPDK, r.ConfineBlockers))
}

func (r *recorder) take() []string {
	c := r.calls
	r.calls = nil
	return c
}

var errInjected = errors.New("injected")

// harness drives an engine synchronously with a scripted trace.
type harness struct {
	t   *testing.T
	e   *engine
	act *recorder
	seq []string // "cpu FROM->TO" in order
}

func newHarness(t *testing.T, policy PolicyName, tweak func(*Params), cpus ...int) *harness {
	t.Helper()
	p := DefaultParams()
	p.Policy = policy
	if tweak != nil {
		tweak(&p)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("params: %v", err)
	}
	if len(cpus) == 0 {
		cpus = []int{1}
	}
	h := &harness{t: t, act: &recorder{}}
	h.e = newEngine(p, cpus, h.act, quietLogger(), t0)
	h.e.onTransition = func(cpu int, from, to State, at time.Time) {
		h.seq = append(h.seq, fmt.Sprintf("%d %v->%v", cpu, from, to))
	}
	h.e.start(t0)
	return h
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func (h *harness) ev(e Event)                     { h.e.handle(e) }
func (h *harness) yield(cpu int, d time.Duration) { h.ev(Event{Kind: EvYield, CPU: cpu, At: at(d)}) }
func (h *harness) idle(cpu int, d time.Duration) {
	h.ev(Event{Kind: EvIdle, CPU: cpu, At: at(d), EmptyPolls: 10})
}
func (h *harness) busy(cpu int, d time.Duration)  { h.ev(Event{Kind: EvBusy, CPU: cpu, At: at(d)}) }
func (h *harness) probe(cpu int, d time.Duration) { h.ev(Event{Kind: EvProbe, CPU: cpu, At: at(d)}) }
func (h *harness) advance(d time.Duration)        { h.e.advance(at(d)) }
func (h *harness) core(cpu int) *core             { return h.e.byCPU[cpu] }

// press puts taichi's core under pressure, as a window above the SLO's
// high-water mark does: admission, slices and the flap limiter apply.
func (h *harness) press(cpu int) {
	h.t.Helper()
	h.taichi(cpu).pressed = true
	h.e.apply(h.core(cpu), false)
}

// taichi is the taichi policy's state for cpu.
func (h *harness) taichi(cpu int) *taichiCore {
	h.t.Helper()
	tc, ok := h.core(cpu).pol.(*taichiCore)
	if !ok {
		h.t.Fatalf("cpu %d: policy state %T, not taichi's", cpu, h.core(cpu).pol)
	}
	return tc
}
func (h *harness) snap(cpu int, d time.Duration) CoreSnapshot {
	return h.e.coreSnapshot(h.core(cpu), at(d))
}
func (h *harness) wake(cpu int, d time.Duration, cause WakeCause, lat time.Duration) {
	h.ev(Event{Kind: EvWake, CPU: cpu, At: at(d), Wake: cause, Latency: lat})
}
func (h *harness) residence(cpu int, d time.Duration, packets, late uint64) {
	h.ev(Event{Kind: EvResidence, CPU: cpu, At: at(d), Residence: lateResidence(packets, late, ms(100))})
}

// residenceWaited reports packets, late of which waited wait and the rest
// nothing.
func (h *harness) residenceWaited(cpu int, d time.Duration, packets, late uint64, wait time.Duration) {
	h.ev(Event{Kind: EvResidence, CPU: cpu, At: at(d), Residence: lateResidence(packets, late, wait)})
}

// lateResidence is an interval of packets of which late waited wait and
// the rest nothing.
func lateResidence(packets, late uint64, wait time.Duration) Residence {
	p99 := time.Duration(0)
	if late*100 > packets {
		p99 = wait
	}
	return Residence{Packets: packets, P99: p99, Above: func(d time.Duration) uint64 {
		if d <= wait {
			return late
		}
		return 0
	}}
}
func (h *harness) load(cpu int, d time.Duration, busy float64, interval time.Duration) {
	h.ev(Event{Kind: EvLoad, CPU: cpu, At: at(d), BusyFraction: busy, Interval: interval, Packets: 100})
}

func (h *harness) takeSeq() []string {
	s := h.seq
	h.seq = nil
	return s
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func us(n int) time.Duration { return time.Duration(n) * time.Microsecond }
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }
