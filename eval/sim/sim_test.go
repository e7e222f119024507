package sim

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// run simulates n cores of pattern traffic at rate packets/s per core.
func run(t *testing.T, pol scheduler.PolicyName, p Pattern, rate float64, n int, d time.Duration, rec *TraceWriter) Result {
	t.Helper()
	cfg := Config{Policy: pol, Duration: d, Costs: DefaultCosts, Record: rec}
	for i := range n {
		cfg.Cores = append(cfg.Cores, i+1)
		cfg.Arrivals = append(cfg.Arrivals, gen(t, p, rate, uint64(i)))
	}
	r, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Clamped != 0 {
		t.Fatalf("%s/%s: %d events reached the engine stamped before its time", pol, p, r.Clamped)
	}
	return r
}

// TestStaticNeverLends: under static the engine never lets the loop
// yield, whatever the traffic.
func TestStaticNeverLends(t *testing.T) {
	for _, p := range Patterns {
		r := run(t, scheduler.PolicyStatic, p, 2000, 2, time.Second, nil)
		if r.LentS != 0 || r.LoopLentS != 0 || len(r.Reclaims) != 0 || len(r.Wakes) != 0 {
			t.Errorf("%s: static lent %v s (loop %v s), reclaims %v, wakes %v", p, r.LentS, r.LoopLentS, r.Reclaims, r.Wakes)
		}
		if r.Events == 0 || r.Packets == 0 {
			t.Errorf("%s: %d events, %d packets: the samples did not reach the engine", p, r.Events, r.Packets)
		}
	}
}

// TestOnOffHarvestsMoreThanPoisson: at the same mean rate, traffic that
// comes in bursts with long silences between them leaves longer idle
// gaps: taichi lends more core-seconds, with far fewer switches.
func TestOnOffHarvestsMoreThanPoisson(t *testing.T) {
	const rate = 25000
	onoff := run(t, scheduler.PolicyTaichi, OnOff, rate, 2, time.Second, nil)
	poisson := run(t, scheduler.PolicyTaichi, Poisson, rate, 2, time.Second, nil)
	total := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	if onoff.LentS <= poisson.LentS {
		t.Errorf("on/off lent %.4f core-s, Poisson %.4f: want on/off more", onoff.LentS, poisson.LentS)
	}
	if a, b := total(onoff.Reclaims), total(poisson.Reclaims); a == 0 || 2*a > b {
		t.Errorf("on/off reclaims %d, Poisson %d: want on/off at most half", a, b)
	}
}

// TestProbeGateReachesTheLoop: taichi lets the probe wake the lent loop
// (reclaims by probe), dynamic does not (only the packet wakes it).
func TestProbeGateReachesTheLoop(t *testing.T) {
	tc := run(t, scheduler.PolicyTaichi, Poisson, 2000, 1, time.Second, nil)
	dy := run(t, scheduler.PolicyDynamic, Poisson, 2000, 1, time.Second, nil)
	if tc.Reclaims["probe"] == 0 || tc.Reclaims["rx"] != 0 {
		t.Errorf("taichi reclaims %v: want by probe, none by rx", tc.Reclaims)
	}
	if dy.Reclaims["probe"] != 0 || dy.Reclaims["rx"] == 0 {
		t.Errorf("dynamic reclaims %v: want by rx only", dy.Reclaims)
	}
}

// TestRunDeterministic: the same inputs give the same run (all but the
// real time the engine took).
func TestRunDeterministic(t *testing.T) {
	a := run(t, scheduler.PolicyTaichi, Diurnal, 5000, 3, 500*time.Millisecond, nil)
	b := run(t, scheduler.PolicyTaichi, Diurnal, 5000, 3, 500*time.Millisecond, nil)
	a.EngineNs, b.EngineNs = 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs differ:\n%+v\n%+v", a, b)
	}
	if a.Events == 0 || b.Timers == 0 {
		t.Fatalf("events %d timers %d", a.Events, a.Timers)
	}
}

// TestRecordedTraceRoundTrip: a run recorded in the trace format, read
// back and replayed, matches the recording (the self-check passes); a
// recording that lost a fifth of its wakes fails it, naming reclaims.
func TestRecordedTraceRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewTraceWriter(&buf, []int{1, 2}, DefaultCosts)
	orig := run(t, scheduler.PolicyTaichi, OnOff, 5000, 2, time.Second, w)
	if err := w.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	tr, err := ReadTrace(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if s, o := tr.Summary(), orig.Summary(); math.Abs(s.LentS-o.LentS) > 1e-9 || !reflect.DeepEqual(s.Wakes, o.Wakes) {
		t.Fatalf("trace summary %+v, run %+v", s, orig.Summary())
	}
	res, checks, err := Replay(tr, scheduler.PolicyTaichi)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if !WriteSelfCheck(&out, checks) || res.LentS != orig.LentS {
		t.Fatalf("replay lent %v (recorded run %v):\n%s", res.LentS, orig.LentS, out.String())
	}
	for i := range tr.Cores {
		var kept []LoopEvent
		wakes := 0
		for _, ev := range tr.Cores[i].Events {
			if ev.Cause != scheduler.WakeNone {
				if wakes++; wakes%5 == 0 {
					continue
				}
			}
			kept = append(kept, ev)
		}
		tr.Cores[i].Events = kept
	}
	_, checks, _ = Replay(tr, scheduler.PolicyTaichi)
	out.Reset()
	if WriteSelfCheck(&out, checks) || !strings.Contains(out.String(), "FAIL: reclaims (wakes of lent loops)") {
		t.Fatalf("a recording missing 20%% of its wakes passed:\n%s", out.String())
	}
}

func TestRunRejects(t *testing.T) {
	a := gen(t, Poisson, 1000, 1)
	for field, cfg := range map[string]Config{
		"cores":    {Duration: time.Second, Costs: DefaultCosts},
		"arrivals": {Cores: []int{1, 2}, Arrivals: []Arrivals{a}, Duration: time.Second, Costs: DefaultCosts},
		"duration": {Cores: []int{1}, Arrivals: []Arrivals{a}, Costs: DefaultCosts},
		"costs":    {Cores: []int{1}, Arrivals: []Arrivals{a}, Duration: time.Second},
		"policy":   {Policy: "fast", Cores: []int{1}, Arrivals: []Arrivals{a}, Duration: time.Second, Costs: DefaultCosts},
	} {
		if _, err := Run(cfg); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
}
