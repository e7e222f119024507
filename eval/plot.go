package eval

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WritePlots writes the experiment's PNGs into dir and returns their paths:
// vm-startup.png (startup p50 solid, p99 dashed, vs VMs per policy);
// dataplane.png (DP p99 vs load per policy) and dataplane-cyclictest.png.
func WritePlots(dir string, r *Report) ([]string, error) {
	switch r.Experiment {
	case ExperimentPing:
		return nil, nil // the table is the result
	case ExperimentVMStartup:
		p := plot.New()
		p.Title.Text = "VM startup latency vs density (solid p50, dashed p99)"
		p.X.Label.Text = "VMs requested at once"
		p.Y.Label.Text = "startup latency (ms)"
		p.Legend.Top = true
		p.Legend.Left = true
		densityAxis(p, r)
		for i, pol := range policiesOf(r) {
			var p50, p99 plotter.XYs
			for _, run := range r.Runs {
				if run.Policy != pol || run.StartupMS == nil || run.StartupMS.N == 0 {
					continue
				}
				p50 = append(p50, plotter.XY{X: float64(run.VMs), Y: run.StartupMS.P50})
				p99 = append(p99, plotter.XY{X: float64(run.VMs), Y: run.StartupMS.P99})
			}
			if err := addSeries(p, i, pol+" p50", p50, false); err != nil {
				return nil, err
			}
			if err := addSeries(p, i, pol+" p99", p99, true); err != nil {
				return nil, err
			}
		}
		logY(p)
		path := filepath.Join(dir, "vm-startup.png")
		return []string{path}, p.Save(8*vg.Inch, 5*vg.Inch, path)
	case ExperimentDataplane:
		dp := plot.New()
		dp.Title.Text = "DP latency p99 vs load (backlogged CP)"
		dp.X.Label.Text = "DP load (offered share of capacity)"
		dp.Y.Label.Text = "DP round-trip p99 (µs)"
		ct := plot.New()
		ct.Title.Text = "cyclictest p99 on the DP core vs load"
		ct.X.Label.Text = "DP load (offered share of capacity)"
		ct.Y.Label.Text = "cyclictest p99 (µs)"
		for _, p := range []*plot.Plot{dp, ct} {
			p.Legend.Top = true
			p.Legend.Left = true
		}
		for i, key := range seriesOf(r) {
			var lat, cyc plotter.XYs
			for _, run := range r.Runs {
				if seriesKey(run) != key {
					continue
				}
				lat = append(lat, plotter.XY{X: run.Load, Y: run.DP.LatUS.P99})
				if run.CyclictestUS != nil && run.CyclictestUS.N > 0 {
					cyc = append(cyc, plotter.XY{X: run.Load, Y: run.CyclictestUS.P99})
				}
			}
			if err := addSeries(dp, i, key, lat, false); err != nil {
				return nil, err
			}
			if err := addSeries(ct, i, key, cyc, false); err != nil {
				return nil, err
			}
		}
		logY(dp)
		logY(ct)
		p1 := filepath.Join(dir, "dataplane.png")
		p2 := filepath.Join(dir, "dataplane-cyclictest.png")
		if err := dp.Save(8*vg.Inch, 5*vg.Inch, p1); err != nil {
			return nil, err
		}
		return []string{p1, p2}, ct.Save(8*vg.Inch, 5*vg.Inch, p2)
	}
	return nil, fmt.Errorf("eval: no plots for experiment %q", r.Experiment)
}

func addSeries(p *plot.Plot, i int, name string, xys plotter.XYs, dashed bool) error {
	if len(xys) == 0 {
		return nil
	}
	slices.SortFunc(xys, func(a, b plotter.XY) int {
		switch {
		case a.X < b.X:
			return -1
		case a.X > b.X:
			return 1
		}
		return 0
	})
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	c := plotutil.Color(i)
	l.Color, pts.Color = c, c
	l.Width = vg.Points(1.5)
	pts.Shape = plotutil.Shape(i)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		pts.Shape = draw.CrossGlyph{}
	}
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

// policiesOf lists the runs' policies in first-seen order.
func policiesOf(r *Report) []string {
	var out []string
	for _, run := range r.Runs {
		if !slices.Contains(out, run.Policy) {
			out = append(out, run.Policy)
		}
	}
	return out
}

// seriesKey separates the no-CP reference from the same policy under CP load.
func seriesKey(run Run) string {
	if run.CPLoad == "none" {
		return run.Policy + " (no CP)"
	}
	return run.Policy
}

func seriesOf(r *Report) []string {
	var out []string
	for _, run := range r.Runs {
		if k := seriesKey(run); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// densityAxis uses a log2 X axis with a tick at every density measured when
// densities span a wide range (1..32), so small densities stay readable.
func densityAxis(p *plot.Plot, r *Report) {
	var ticks []plot.Tick
	lo, hi := math.Inf(1), 0.0
	for _, run := range r.Runs {
		x := float64(run.VMs)
		if x <= 0 {
			return
		}
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == x }) {
			ticks = append(ticks, plot.Tick{Value: x, Label: strconv.Itoa(run.VMs)})
		}
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	if len(ticks) == 0 {
		return
	}
	if hi/lo >= 8 {
		p.X.Scale = plot.LogScale{}
		p.X.Label.Text += " (log scale)"
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
}

// logY switches to a log Y axis when the data span more than 20×, so one
// slow policy does not flatten the others into the axis.
func logY(p *plot.Plot) {
	if p.Y.Min > 0 && p.Y.Max/p.Y.Min > 20 {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = ticks125{}
		p.Y.Label.Text += " (log scale)"
	}
}

// ticks125 labels a log axis at 1, 2 and 5 times each power of ten.
type ticks125 struct{}

// Ticks implements plot.Ticker.
func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	if lo <= 0 || hi <= lo {
		return out
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return out
}
