package eval

import (
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// histOf builds a residence histogram from samples in ns, in the loop's
// buckets.
func histOf(ns ...int64) dataplane.Histogram {
	var h dataplane.Histogram
	for _, v := range ns {
		i := sort.Search(dataplane.HistBuckets, func(i int) bool { return dataplane.HistUpper(i) > v })
		h.Buckets[min(i, dataplane.HistBuckets-1)]++
		h.Count++
		h.SumNs += uint64(v)
		h.MaxNs = max(h.MaxNs, uint64(v))
	}
	return h
}

// residenceSamples draws n log-normal residences around median ns with a
// tail of spikes, seeded so every run of the test draws the same.
func residenceSamples(seed uint64, n int, median, spike float64) []int64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]int64, n)
	for i := range out {
		v := median * math.Exp(0.6*rng.NormFloat64())
		if rng.Float64() < 0.005 {
			v = spike * (1 + rng.Float64())
		}
		out[i] = int64(v)
	}
	return out
}

// dataplanePlotReport is a dataplane report as the eval writes it: the
// reference and three policies with CP at three loads, each with repeats
// and residence histograms.
func dataplanePlotReport(repeats int) *Report {
	r := &Report{Experiment: ExperimentDataplane, Params: map[string]any{"cp_load": "mixed"}}
	const mixed = "mixed: stress-ng --dentry 1 + mmap storm + Go + Python busy helpers"
	cells := []struct {
		pol, cp       string
		median, spike float64
	}{{"static", "none", 8e3, 40e3}, {"static", mixed, 9e3, 50e3}, {"dynamic", mixed, 12e3, 4e6}, {"taichi", mixed, 10e3, 200e3}}
	for li, load := range []float64{0.1, 0.3, 0.5} {
		for rep := range repeats {
			for ci, c := range cells {
				h := histOf(residenceSamples(uint64(100*li+10*rep+ci), 4000, c.median*(1+float64(li)/2), c.spike)...)
				p := histUS(h)
				r.Runs = append(r.Runs, Run{Policy: scheduler.PolicyName(c.pol), Repeat: rep, Load: load, CPLoad: c.cp, CPCPUS: 2,
					DP:           DP{ResidenceUS: p, ResidenceHist: &h},
					CyclictestUS: &Percentiles{N: 100, P50: 10, P99: 30 + 5*float64(rep+ci), Max: 90}})
			}
		}
	}
	return finish(r)
}

// pngSize decodes a PNG and returns its size.
func pngSize(t *testing.T, path string) image.Point {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	return img.Bounds().Size()
}

// 96 dots per inch: vgimg's default.
var (
	wideFigure   = image.Point{X: 13 * 96, Y: 528}
	narrowFigure = image.Point{X: 9 * 96, Y: 528}
)

func TestWritePlotsWithRepeats(t *testing.T) {
	for _, c := range []struct {
		r    *Report
		want map[string]image.Point
	}{
		{sampleReport(ExperimentVMStartup), map[string]image.Point{"vm-startup.png": wideFigure}},
		{dataplanePlotReport(3), map[string]image.Point{"dataplane.png": wideFigure, "dataplane-cyclictest.png": narrowFigure}},
	} {
		dir := t.TempDir()
		paths, err := WritePlots(dir, c.r)
		if err != nil {
			t.Fatalf("%s: %v", c.r.Experiment, err)
		}
		if len(paths) != len(c.want) {
			t.Fatalf("%s: wrote %v, want %d files", c.r.Experiment, paths, len(c.want))
		}
		for _, p := range paths {
			want, ok := c.want[filepath.Base(p)]
			if !ok {
				t.Fatalf("unexpected file %s", p)
			}
			if got := pngSize(t, p); got != want {
				t.Errorf("%s: %v, want %v", filepath.Base(p), got, want)
			}
		}
	}
}

// TestWritePlotsSparse: one repeat of two policies (the demo), and runs
// that measured no residence, no startup or no cyclictest, still plot.
func TestWritePlotsSparse(t *testing.T) {
	vm := sampleReport(ExperimentVMStartup)
	var one []Run
	for _, run := range vm.Runs {
		if run.Repeat == 0 {
			one = append(one, run)
		}
	}
	vm.Runs = one
	vm.Runs[0].DP.ResidenceUS = Percentiles{}
	vm.Runs[1].StartupMS = nil
	// A density a log axis cannot show is left out, not an error.
	zero := vm.Runs[2]
	zero.VMs = 0
	vm.Runs = append(vm.Runs, zero)

	dp := dataplanePlotReport(1)
	for i := range dp.Runs {
		dp.Runs[i].DP.ResidenceHist = nil // a report from before histograms
		if i%2 == 0 {
			dp.Runs[i].DP.ResidenceUS = Percentiles{}
			dp.Runs[i].CyclictestUS = nil
		}
	}
	empty := dataplanePlotReport(2)
	for i := range empty.Runs {
		empty.Runs[i].DP = DP{}
		empty.Runs[i].CyclictestUS = nil
	}
	for _, r := range []*Report{vm, dp, empty, {Experiment: ExperimentVMStartup}, {Experiment: ExperimentDataplane}} {
		paths, err := WritePlots(t.TempDir(), r)
		if err != nil {
			t.Fatalf("%s with %d runs: %v", r.Experiment, len(r.Runs), err)
		}
		for _, p := range paths {
			if got := pngSize(t, p); got.X < 800 {
				t.Errorf("%s: %v", filepath.Base(p), got)
			}
		}
	}
	if _, err := WritePlots(t.TempDir(), &Report{Experiment: "no-such-experiment"}); err == nil {
		t.Error("an experiment without plots was accepted")
	}
}

func TestResidenceCDF(t *testing.T) {
	if residenceCDF(dataplane.Histogram{}) != nil {
		t.Fatal("an empty histogram gave a curve")
	}
	for name, h := range map[string]dataplane.Histogram{
		"spread":    histOf(residenceSamples(1, 5000, 20e3, 3e6)...),
		"one value": histOf(7000, 7000, 7000),
		"below 256": histOf(50, 100, 3000),
		"first ns":  histOf(0),
	} {
		cdf := residenceCDF(h)
		if len(cdf) < 2 {
			t.Fatalf("%s: %d points", name, len(cdf))
		}
		if first, last := cdf[0], cdf[len(cdf)-1]; first.Y != 0 || last.Y != 1 {
			t.Errorf("%s: runs from %v to %v, want 0 to 1", name, first.Y, last.Y)
		}
		if cdf[0].X <= 0 {
			t.Errorf("%s: starts at %v µs, not on a log axis", name, cdf[0].X)
		}
		for i := 1; i < len(cdf); i++ {
			if cdf[i].X < cdf[i-1].X || cdf[i].Y < cdf[i-1].Y {
				t.Fatalf("%s: not monotone at %d: %v after %v", name, i, cdf[i], cdf[i-1])
			}
		}
		// The curve ends on the largest sample, not past its bucket.
		if last := cdf[len(cdf)-1].X; h.MaxNs > 0 && last != float64(h.MaxNs)/1e3 {
			t.Errorf("%s: ends at %v µs, max is %v ns", name, last, h.MaxNs)
		}
	}
	// Half the samples are at most 7 µs's bucket edge.
	cdf := residenceCDF(histOf(1000, 7000))
	if got := cdf[1]; got.Y != 0.5 || got.X < 1 || got.X > 1.2 {
		t.Errorf("first edge %v, want half the samples at ~1 µs", got)
	}
	tail := tailXYs(cdf, 1e-3)
	if tail[0].Y != 1 || tail[len(tail)-1].Y != 1e-3 {
		t.Errorf("tail %v: want from 1 down to the floor", tail)
	}
	if f := tailFloor(4000); f != 1e-4 {
		t.Errorf("floor for 4000 samples %v, want 1e-4", f)
	}
}

func TestPlotLoad(t *testing.T) {
	for _, c := range []struct {
		loads []float64
		want  float64
	}{{[]float64{0.1, 0.3, 0.5}, 0.3}, {[]float64{0.1, 0.25, 0.7}, 0.25}, {[]float64{0.6, 0.7, 0.9}, 0.7}, {[]float64{0.05}, 0.05}} {
		r := &Report{}
		for _, l := range c.loads {
			r.Runs = append(r.Runs, Run{Load: l})
		}
		if got, ok := plotLoad(r); !ok || got != c.want {
			t.Errorf("loads %v: %v, want %v", c.loads, got, c.want)
		}
	}
	if _, ok := plotLoad(&Report{}); ok {
		t.Error("a load picked from no runs")
	}
}

func TestTickLabel(t *testing.T) {
	for v, want := range map[float64]string{0.05: "0.05", 20: "20", 5000: "5000", 1e5: "1e5", 1e-4: "0.0001", 1e-5: "1e-5"} {
		if got := tickLabel(v); got != want {
			t.Errorf("%v: %q, want %q", v, got, want)
		}
	}
}
