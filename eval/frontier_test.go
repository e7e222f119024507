package eval

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/internal/stats"
	"github.com/taichi-sched/taichi/scheduler"
)

// sweepCell is one cell of a synthetic sweep: residence p99 (µs), the CP
// figure (startup p50 ms, or harvested CP s) at the highest density.
type sweepCell struct {
	pol   scheduler.PolicyName
	slo   float64
	res   float64
	cp    float64
	noRes bool
}

// sweepCells: static and dynamic, and taichi at four SLOs. At 50µs taichi
// misses its SLO; at 250µs dynamic (within 250µs) does better for CP.
var sweepCells = []sweepCell{
	{pol: "static", res: 20, cp: 13500},
	{pol: "dynamic", res: 150, cp: 7300},
	{pol: "taichi", slo: 50, res: 70, cp: 12000},
	{pol: "taichi", slo: 100, res: 80, cp: 11000},
	{pol: "taichi", slo: 250, res: 180, cp: 9000},
	{pol: "taichi", slo: 1000, res: 400, cp: 7000},
}

// vmSweepReport is a VM-startup sweep at 1 and 16 VMs, two repeats, the
// cells' figures at 16 VMs (repeat 1 a little worse).
func vmSweepReport(cells []sweepCell) *Report {
	r := &Report{Experiment: ExperimentVMStartup, Params: map[string]any{"slo_sweep_us": []float64{50, 100, 250, 1000}}}
	for rep := range 2 {
		for _, n := range []int{1, 16} {
			for _, c := range cells {
				scale := float64(n) / 16
				s := stats.Summarize([]float64{c.cp * scale * (1 + 0.05*float64(rep))})
				run := Run{Policy: c.pol, SLOUS: c.slo, Repeat: rep, VMs: n, Load: 0.3, CPLoad: "vm-startup", StartupMS: &s, VMsOK: n,
					HarvestedCPS: knownSeconds(1), CPCPUS: 2,
					DP: DP{ResidenceUS: Percentiles{N: 1000, P50: 10, P99: c.res * (1 + 0.1*float64(rep)), Max: 3 * c.res}}}
				r.Runs = append(r.Runs, run)
			}
		}
	}
	return finish(r)
}

func verdictOf(t *testing.T, vs []sloVerdict, sloUS float64) sloVerdict {
	t.Helper()
	i := slices.IndexFunc(vs, func(v sloVerdict) bool { return v.taichi.sloUS == sloUS })
	if i < 0 {
		t.Fatalf("no verdict for %v µs", sloUS)
	}
	return vs[i]
}

// Each SLO is its own cell and row, named with its SLO.
func TestFrontierGroupsTaichiPerSLO(t *testing.T) {
	r := vmSweepReport(sweepCells)
	var names []string
	for _, c := range cellsOf(r) {
		if c.key.VMs == 16 {
			names = append(names, c.key.name())
			if len(c.runs) != 2 {
				t.Errorf("%s: %d runs, want the 2 repeats", c.key.name(), len(c.runs))
			}
		}
	}
	if got := strings.Join(names, ","); got != "static,dynamic,taichi@50µs,taichi@100µs,taichi@250µs,taichi@1ms" {
		t.Errorf("cells at 16 VMs: %s", got)
	}
	var md bytes.Buffer
	WriteMarkdown(&md, r)
	for _, row := range []string{"| taichi@100µs | 16 |", "| taichi@1ms | 1 |", "| static | 16 |"} {
		if !strings.Contains(md.String(), row) {
			t.Errorf("table has no row %q:\n%s", row, md.String())
		}
	}
}

func TestFrontierVerdicts(t *testing.T) {
	frs := frontiersOf(vmSweepReport(sweepCells))
	if len(frs) != 1 || frs[0].at != "16 VMs" || !frs[0].lowerIsBetter || !frs[0].residence {
		t.Fatalf("frontiers %+v: want one at the highest density, judged on residence, startup lower is better", frs)
	}
	f := frs[0]
	if len(f.fixed) != 2 || len(f.taichi) != 4 {
		t.Fatalf("%d fixed, %d taichi points", len(f.fixed), len(f.taichi))
	}
	vs := f.verdicts()
	for _, c := range []struct {
		slo                 float64
		met, kept           bool
		within, beaten, not string
	}{
		// Missed its SLO (77 µs median > 50): not kept although it beat static.
		{50, false, false, "static", "static", ""},
		{100, true, true, "static", "static", ""},
		// dynamic is within 250µs too and starts VMs faster.
		{250, true, false, "static,dynamic", "static", "dynamic"},
		{1000, true, true, "static,dynamic", "static,dynamic", ""},
	} {
		v := verdictOf(t, vs, c.slo)
		var within []string
		for _, p := range v.within {
			within = append(within, p.name)
		}
		if v.met != c.met || v.kept() != c.kept || strings.Join(within, ",") != c.within ||
			strings.Join(v.beaten, ",") != c.beaten || strings.Join(v.notBeaten, ",") != c.not {
			t.Errorf("%v µs: met %v kept %v within %v beaten %v not beaten %v; want %+v", c.slo, v.met, v.kept(), within, v.beaten, v.notBeaten, c)
		}
	}
}

// For the dataplane, more harvested CP is better, each load is its own
// frontier, and a policy without a CP figure is neither beaten nor not.
func TestFrontierHarvestHigherIsBetter(t *testing.T) {
	r := &Report{Experiment: ExperimentDataplane, Params: map[string]any{"slo_sweep_us": []float64{100, 1000}}}
	for _, load := range []float64{0.1, 0.3} {
		for _, c := range []struct {
			pol     scheduler.PolicyName
			slo     float64
			res     float64
			harvest *float64
			cpLoad  string
		}{
			{"static", 0, 15, knownSeconds(0), "none"},
			{"static", 0, 20, knownSeconds(0), "mixed"},
			{"dynamic", 0, 500, knownSeconds(3), "mixed"},
			{"ovs-maxsleep", 0, 90, nil, "mixed"},
			{"taichi", 100, 60, knownSeconds(1.5), "mixed"},
			{"taichi", 1000, 450, knownSeconds(2.5), "mixed"},
		} {
			r.Runs = append(r.Runs, Run{Policy: c.pol, SLOUS: c.slo, Load: load, CPLoad: c.cpLoad, HarvestedCPS: c.harvest, CPCPUS: 1,
				DP: DP{ResidenceUS: Percentiles{N: 1000, P99: c.res}}})
		}
	}
	finish(r)
	frs := frontiersOf(r)
	if len(frs) != 2 || frs[0].at != "DP load 0.10" || frs[1].at != "DP load 0.30" || frs[0].lowerIsBetter {
		t.Fatalf("frontiers: %d, at %q; want one per load, higher harvest better", len(frs), frs[0].at)
	}
	if slices.ContainsFunc(frs[0].fixed, func(p frontierPoint) bool { return p.budget.Median == 15 }) {
		t.Error("the reference (static without CP) is on the frontier")
	}
	vs := frs[1].verdicts()
	v := verdictOf(t, vs, 100)
	if !v.met || strings.Join(v.beaten, ",") != "static" || strings.Join(v.unknown, ",") != "ovs-maxsleep" || v.kept() {
		t.Errorf("100µs: met %v beaten %v unknown %v kept %v", v.met, v.beaten, v.unknown, v.kept())
	}
	// dynamic's 500 µs are within 1ms, and it harvests more.
	v = verdictOf(t, vs, 1000)
	if !v.met || strings.Join(v.beaten, ",") != "static" || strings.Join(v.notBeaten, ",") != "dynamic" {
		t.Errorf("1ms: met %v beaten %v not beaten %v", v.met, v.beaten, v.notBeaten)
	}
	var md bytes.Buffer
	WriteMarkdown(&md, r)
	for _, want := range []string{"### Frontier", "At DP load 0.30:", "| 100µs | 60.0 | yes | 1.50 |", "ovs-maxsleep (no CP figure)", "| not kept |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

// The section and the figure come with a sweep or with taichi at more than
// one SLO, not otherwise.
func TestFrontierOnlyWithASweep(t *testing.T) {
	r := vmSweepReport(sweepCells)
	var md bytes.Buffer
	WriteMarkdown(&md, r)
	if !strings.Contains(md.String(), "### Frontier") || !strings.Contains(md.String(), "| 250µs | 189.0 (180.0–198.0) | yes |") {
		t.Errorf("sweep report without its Frontier section:\n%s", md.String())
	}
	one := vmSweepReport(sweepCells[:3]) // static, dynamic, taichi at one SLO
	delete(one.Params, "slo_sweep_us")
	md.Reset()
	WriteMarkdown(&md, one)
	if hasFrontier(one) || strings.Contains(md.String(), "Frontier") {
		t.Error("a report with taichi at one SLO and no sweep has a frontier")
	}
	paths, err := WritePlots(t.TempDir(), one)
	if err != nil || len(paths) != 1 {
		t.Errorf("no sweep: wrote %v (%v), want only vm-startup.png", paths, err)
	}
	two := vmSweepReport(sweepCells[:4])
	delete(two.Params, "slo_sweep_us")
	if !hasFrontier(two) {
		t.Error("taichi at two SLOs without the sweep param has no frontier")
	}
}

func TestPlotFrontierPNG(t *testing.T) {
	for _, r := range []*Report{vmSweepReport(sweepCells), pingSweepReport()} {
		dir := t.TempDir()
		paths, err := WritePlots(dir, r)
		if err != nil {
			t.Fatalf("%s: %v", r.Experiment, err)
		}
		want := frontierPlot(dir, r.Experiment)
		if !slices.Contains(paths, want) {
			t.Fatalf("%s: wrote %v, no %s", r.Experiment, paths, filepath.Base(want))
		}
		if got := pngSize(t, want); got != narrowFigure {
			t.Errorf("%s: %v, want %v", filepath.Base(want), got, narrowFigure)
		}
		st, err := os.Stat(want)
		if err != nil {
			t.Fatal(err)
		}
		// Axes, five points with bars, a line and labels: well beyond an
		// empty canvas's few kilobytes.
		if st.Size() < 20<<10 {
			t.Errorf("%s: %d bytes, a near-empty figure", filepath.Base(want), st.Size())
		}
	}
	// A frontier with nothing measured still draws (and says so).
	empty := vmSweepReport(sweepCells)
	for i := range empty.Runs {
		empty.Runs[i].DP = DP{}
		empty.Runs[i].StartupMS = nil
	}
	if _, err := WritePlots(t.TempDir(), empty); err != nil {
		t.Errorf("frontier without figures: %v", err)
	}
}

// pingSweepReport: ping p99 on x, harvest on y (static harvests nothing:
// a linear y axis).
func pingSweepReport() *Report {
	r := &Report{Experiment: ExperimentPing, Params: map[string]any{"slo_sweep_us": []float64{100, 1000}}}
	for rep := range 2 {
		for _, c := range []struct {
			pol      scheduler.PolicyName
			slo      float64
			ping     float64
			harvest  float64
			withLoad string
		}{{"static", 0, 60, 0, "none"}, {"static", 0, 70, 0, "mixed"}, {"dynamic", 0, 900, 4, "mixed"},
			{"taichi", 100, 120, 1, "mixed"}, {"taichi", 1000, 500, 3, "mixed"}} {
			r.Runs = append(r.Runs, Run{Policy: c.pol, SLOUS: c.slo, Repeat: rep, CPLoad: c.withLoad, CPCPUS: 1,
				HarvestedCPS: knownSeconds(c.harvest + 0.2*float64(rep)),
				DP:           DP{LatUS: Percentiles{N: 1000, P99: c.ping * (1 + 0.1*float64(rep))}, ResidenceUS: Percentiles{N: 1000, P99: c.ping / 2}}})
		}
	}
	return finish(r)
}
