package eval

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// checkDaemonCPU: a run on the real daemon has its CPU figure, and it is
// well under the core the in-process, busy-polling DP loop burns under
// static (that loop is the DP's, not the daemon's). Whether it is above 0
// depends on the run's length (100 Hz samples of a daemon at ~1% of a
// core); TestDaemonCPUCountsOnlyLabelled checks the counting.
func checkDaemonCPU(t *testing.T, name string, r Run) {
	t.Helper()
	if r.DaemonCPUS == nil {
		t.Errorf("%s: no daemon CPU figure", name)
		return
	}
	if d := *r.DaemonCPUS; d < 0 || d >= 0.5*r.WallS {
		t.Errorf("%s: daemon CPU %.3f s over %.2f s: want within [0, half a core) (DP loop host samples must be left out)", name, d, r.WallS)
	}
}

// spin burns CPU on this goroutine for d of wall time.
func spin(d time.Duration) int {
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
	}
	return n
}

// TestDaemonCPUCountsOnlyLabelled: with the real profiler, a goroutine the
// labelled call starts is counted, an unlabelled spinner is not.
func TestDaemonCPUCountsOnlyLabelled(t *testing.T) {
	m := &DaemonCPU{}
	if err := m.Start(); err != nil {
		t.Skipf("CPU profiler taken: %v", err)
	}
	defer m.Stop()
	begun := time.Now()
	spin(300 * time.Millisecond) // unlabelled: the harness
	got, covered, err := m.Read()
	if err != nil || got > 0.05 {
		t.Fatalf("unlabelled spinner counted as daemon: %.3f s, %v", got, err)
	}
	if elapsed := time.Since(begun).Seconds(); covered < 0.25 || covered > elapsed {
		t.Fatalf("profiler covered %.3f s of %.3f s", covered, elapsed)
	}
	done := make(chan struct{})
	withDaemonLabel(context.Background(), func(context.Context) {
		go func() { spin(300 * time.Millisecond); close(done) }() // inherits the label
	})
	<-done
	got, _, err = m.Read()
	if err != nil || got < 0.05 || got > 0.5 {
		t.Fatalf("labelled goroutine's 300 ms spin read as %.3f s daemon CPU, %v", got, err)
	}
}

// TestDaemonCPUOfLeavesOutDPHosts: of a profile's samples, only the
// daemon-labelled ones count, and not those on a DP loop host's stack nor
// those without a stack of the program's code.
func TestDaemonCPUOfLeavesOutDPHosts(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	pump := fn(1, "github.com/taichi-sched/taichi/daemon.(*Daemon).pump")
	loop := fn(2, "github.com/taichi-sched/taichi/dataplane.(*Loop).worker")
	gen := fn(3, "github.com/taichi-sched/taichi/trafficgen.(*Sender).Run")
	sys := fn(4, "runtime._System")
	loc := func(id uint64, f *profile.Function) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
	}
	lp, ll, lg, ls := loc(1, pump), loc(2, loop), loc(3, gen), loc(4, sys)
	daemon := map[string][]string{daemonLabelKey: {daemonLabelValue}}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Function:   []*profile.Function{pump, loop, gen, sys},
		Location:   []*profile.Location{lp, ll, lg, ls},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lp}, Value: []int64{3, 30e6}, Label: daemon},
			{Location: []*profile.Location{ll}, Value: []int64{50, 500e6}, Label: daemon},
			{Location: []*profile.Location{lg}, Value: []int64{70, 700e6}},
			{Location: []*profile.Location{ls}, Value: []int64{9, 90e6}, Label: daemon}, // no stack to tell
		},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 10e6,
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := daemonCPUOf(buf.Bytes())
	if err != nil || got != 30*time.Millisecond {
		t.Fatalf("got %v, %v; want 30ms (the pump's labelled samples only)", got, err)
	}
	if _, err := daemonCPUOf([]byte("not a profile")); err == nil {
		t.Fatal("garbage accepted")
	}
}

// TestDaemonCPUScaledFromCoverage: a run whose profiler covered half of
// it reports the daemon's rate over the covered half for the whole run;
// unknown stays unknown.
func TestDaemonCPUScaledFromCoverage(t *testing.T) {
	at := time.Now()
	before := Snapshot{At: at, CPCPUS: -1, CPOnDPS: -1, DPBusyS: -1, DaemonCPUS: 1.0, DaemonCoveredS: 10}
	after := before
	after.At, after.DaemonCPUS, after.DaemonCoveredS = at.Add(2*time.Second), 1.01, 11
	var r Run
	r.measured(&plainSystem{}, before, after, nil, nil, 0)
	if r.DaemonCPUS == nil || math.Abs(*r.DaemonCPUS-0.02) > 1e-9 || r.DaemonCoveredS != 1 || math.Abs(daemonShare(r)-0.01) > 1e-9 {
		t.Fatalf("daemon CPU %v over %v covered, share %v; want 0.02 s (10 ms per covered second over 2 s), 1%% of a core", r.DaemonCPUS, r.DaemonCoveredS, daemonShare(r))
	}
	after.DaemonCPUS, after.DaemonCoveredS = -1, -1
	r = Run{}
	r.measured(&plainSystem{}, before, after, nil, nil, 0)
	if r.DaemonCPUS != nil {
		t.Fatalf("unknown daemon CPU reported as %v", *r.DaemonCPUS)
	}
}
