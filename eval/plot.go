package eval

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg/draw"

	"github.com/taichi-sched/taichi/dataplane"
)

// residenceLabel names the headline DP latency on every axis that shows it.
const residenceLabel = "RX residence (kernel RX stamp to DP loop)"

// WritePlots writes the experiment's PNGs into dir and returns their paths:
//   - vm-startup.png: CP VM-startup p50/p99 against density beside DP RX
//     residence p99 against density, per policy, so CP gains and DP cost
//     are seen together;
//   - dataplane.png: the RX residence tail (1 − CDF) per cell at one load
//     beside residence p99 against load;
//   - dataplane-cyclictest.png: cyclictest p99 on the DP core against load;
//   - <experiment>-frontier.png, when the report swept taichi's SLO: DP
//     latency p99 against the CP figure, the fixed policies as points and
//     taichi's sweep as a line (see frontierFigure).
//
// Lines are medians over repeats; bars span the repeats' min–max.
func WritePlots(dir string, r *Report) ([]string, error) {
	var paths []string
	switch r.Experiment {
	case ExperimentPing:
		// The table is the result, and the frontier of a sweep.
	case ExperimentVMStartup:
		path := filepath.Join(dir, "vm-startup.png")
		if err := vmStartupFigure(r).save(path); err != nil {
			return nil, err
		}
		paths = append(paths, path)
	case ExperimentDataplane:
		p1 := filepath.Join(dir, "dataplane.png")
		p2 := filepath.Join(dir, "dataplane-cyclictest.png")
		if err := dataplaneFigure(r).save(p1); err != nil {
			return nil, err
		}
		if err := cyclictestFigure(r).save(p2); err != nil {
			return nil, err
		}
		paths = append(paths, p1, p2)
	default:
		return nil, fmt.Errorf("eval: no plots for experiment %q", r.Experiment)
	}
	fp, err := writeFrontierPlot(dir, r)
	if err != nil {
		return nil, err
	}
	if fp != "" {
		paths = append(paths, fp)
	}
	return paths, nil
}

// vmStartupFigure: left CP startup p50 (solid) and p99 (dashed), right DP
// residence p99, both against density, one color per policy.
func vmStartupFigure(r *Report) *figure {
	cells := cellsOf(r)
	density := func(k cellKey) float64 { return float64(k.VMs) }
	cp := newPanel("CP: VM startup latency vs density", "VMs started at once (log scale)", "VM startup latency (ms)")
	dp := newPanel("DP: "+residenceLabel+" p99 vs density"+atLoad(r), "VMs started at once (log scale)",
		"RX residence p99 (µs)\n(kernel RX stamp to DP loop)")
	f := newFigure(wideW, cp, dp)
	pols := variantsOf(r)
	for i, pol := range pols {
		of := func(k cellKey) bool { return k.name() == pol }
		p50 := seriesPoints(cells, of, density, startupMS(pickP50))
		p99 := seriesPoints(cells, of, density, startupMS(pickP99))
		sty := seriesStyle(pols, pol)
		cp.add(p50, sty, dodgeSlot(2*i, 2*len(pols)))
		cp.add(p99, sty.dashed(), dodgeSlot(2*i+1, 2*len(pols)))
		dp.add(seriesPoints(cells, of, density, residenceP99), sty, dodgeSlot(i, len(pols)))
		f.legend.Add(pol, sty.thumbs()...)
	}
	f.legend.Add("")
	black := seriesStyleOf(color.Black, nil)
	f.legend.Add("solid: startup p50", black.lineThumb())
	f.legend.Add("dashed: startup p99", black.dashed().lineThumb())
	f.noteRepeats(r)
	for _, p := range []*panel{cp, dp} {
		p.xLog, p.xTicks, p.yAuto = true, densities(r), true
	}
	return f
}

// dataplaneFigure: left the residence tail per cell at one load (repeats
// merged), right residence p99 against load per cell.
func dataplaneFigure(r *Report) *figure {
	load, ok := plotLoad(r)
	var at []string
	if ok {
		at = append(at, "at DP load "+strconv.FormatFloat(load, 'g', 3, 64))
	}
	if kind := cpLoadKind(r); kind != "" {
		at = append(at, "CP load "+kind)
	}
	tailTitle := "DP: " + residenceLabel + ", tail"
	if len(at) > 0 {
		tailTitle += "\n" + strings.Join(at, ", ")
	}
	tail := newPanel(tailTitle, "RX residence x (µs, log scale)", "fraction of packets with residence > x\n(log scale; crossing 0.01 = p99)")
	p99 := newPanel("DP: "+residenceLabel+" p99 vs load", loadLabel, "RX residence p99 (µs)\n(kernel RX stamp to DP loop)")
	f := newFigure(wideW, tail, p99)
	keys := seriesOf(r)
	cells := cellsOf(r)
	type curve struct {
		cdf plotter.XYs
		sty style
	}
	var curves []curve
	var most uint64
	for i, key := range keys {
		sty := dataplaneStyle(r, key)
		of := inSeries(key)
		p99.add(seriesPoints(cells, of, cellLoad, residenceP99), sty, dodgeSlot(i, len(keys)))
		f.legend.Add(key, sty.thumbs()...)
		var h dataplane.Histogram
		for _, c := range cells {
			if !ok || !of(c.key) || c.key.Load != load {
				continue
			}
			for _, run := range c.runs {
				if run.DP.ResidenceHist != nil {
					h.Add(*run.DP.ResidenceHist)
				}
			}
		}
		if cdf := residenceCDF(h); cdf != nil {
			curves = append(curves, curve{cdf, sty})
			most = max(most, h.Count)
		}
	}
	if len(curves) == 0 {
		tail.title += "\n(no residence histograms in this report)"
	} else {
		floor := tailFloor(most)
		for _, c := range curves {
			tail.addCurve(tailXYs(c.cdf, floor), c.sty)
		}
		tail.xLog, tail.yLog = true, true
		tail.yMin, tail.yMax, tail.yTicks = floor, 1.5, tailTicks(floor)
		tail.grid = true
		f.legend.Add("")
		f.legend.Add("tail: repeats merged;")
		f.legend.Add("a curve meets the bottom")
		f.legend.Add("at its max")
	}
	f.noteRepeats(r)
	p99.xTicks, p99.yAuto = loadsOf(r), true
	return f
}

// cpLoadKind names the report's CP load by its kind ("mixed"), the part
// of the runs' load name before its description.
func cpLoadKind(r *Report) string {
	for _, run := range r.Runs {
		if run.CPLoad != "none" && run.CPLoad != "" {
			kind, _, _ := strings.Cut(run.CPLoad, ":")
			return kind
		}
	}
	return ""
}

const loadLabel = "DP load (offered share of capacity)"

// cyclictestFigure: cyclictest p99 on the DP core against load per cell.
func cyclictestFigure(r *Report) *figure {
	p := newPanel("cyclictest p99 on the DP core vs load (beside the CP load)", loadLabel, "cyclictest p99 (µs)")
	f := newFigure(narrowW, p)
	keys := seriesOf(r)
	for i, key := range keys {
		sty := dataplaneStyle(r, key)
		of := inSeries(key)
		p.add(seriesPoints(cellsOf(r), of, cellLoad, func(run Run) float64 {
			return known(run.CyclictestUS, func(p Percentiles) float64 { return p.P99 })
		}), sty, dodgeSlot(i, len(keys)))
		f.legend.Add(key, sty.thumbs()...)
	}
	f.noteRepeats(r)
	p.xTicks, p.yAuto = loadsOf(r), true
	return f
}

// residenceCDF is h's empirical CDF at its bucket edges, x in µs: the lower
// edge of the first non-empty bucket at 0, then the upper edge of each
// non-empty bucket at the fraction of samples at most that edge, ending at
// 1 on the maximum. x never decreases; a bucket starting at 0 ns starts the
// curve at half its width so a log axis can show it. nil without samples.
func residenceCDF(h dataplane.Histogram) plotter.XYs {
	var total uint64
	for _, c := range h.Buckets {
		total += c
	}
	if total == 0 {
		return nil
	}
	var out plotter.XYs
	var seen uint64
	x := 0.0
	for i, c := range h.Buckets {
		if c == 0 {
			continue
		}
		if out == nil {
			x = histLowerUS(i)
			if x == 0 {
				x = float64(dataplane.HistUpper(i)) / 2 / 1e3
			}
			out = append(out, plotter.XY{X: x, Y: 0})
		}
		seen += c
		edge := float64(dataplane.HistUpper(i)) / 1e3
		if seen == total && h.MaxNs > 0 {
			// The last bucket ends at the largest sample, not its edge.
			edge = math.Max(math.Min(edge, float64(h.MaxNs)/1e3), histLowerUS(i))
		}
		x = math.Max(x, edge)
		out = append(out, plotter.XY{X: x, Y: float64(seen) / float64(total)})
	}
	return out
}

// histLowerUS is bucket i's lower edge in µs.
func histLowerUS(i int) float64 { return float64(dataplane.HistLower(i)) / 1e3 }

// tailXYs turns a CDF into 1 − CDF for a log axis: 0 (past the maximum)
// becomes floor, so the curve drops to the axis at the maximum.
func tailXYs(cdf plotter.XYs, floor float64) plotter.XYs {
	out := make(plotter.XYs, len(cdf))
	for i, p := range cdf {
		out[i] = plotter.XY{X: p.X, Y: math.Max(1-p.Y, floor)}
	}
	return out
}

// tailFloor is the power of ten below half a sample of the largest curve:
// under every fraction a curve can reach before its maximum.
func tailFloor(samples uint64) float64 {
	return math.Pow(10, math.Floor(math.Log10(0.5/float64(max(samples, 1)))))
}

// tailTicks labels the tail's powers of ten with the percentile each
// fraction stands for: 0.01 is p99.
func tailTicks(floor float64) []plot.Tick {
	var ticks []plot.Tick
	for e := 0; math.Pow(10, -float64(e)) >= floor*0.999; e++ {
		v := math.Pow(10, -float64(e))
		label := tickLabel(v)
		switch {
		case e == 0:
			label = "1 (all)"
		case e <= 4:
			label += " (p" + strconv.FormatFloat(100*(1-v), 'f', max(e-2, 0), 64) + ")"
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: label})
	}
	return ticks
}

// noteRepeats explains the bars when there are repeats to span.
func (f *figure) noteRepeats(r *Report) {
	n := 0
	for _, c := range cellsOf(r) {
		n = max(n, len(c.runs))
	}
	if n > 1 {
		f.legend.Add("")
		f.legend.Add(fmt.Sprintf("line: median of %d repeats", n))
		f.legend.Add("bars: min–max of the repeats")
	}
}

// dataplaneStyle: the policy's style with CP; black squares for the
// reference without CP.
func dataplaneStyle(r *Report, key string) style {
	if strings.HasSuffix(key, noCPSuffix) {
		return seriesStyleOf(color.Black, draw.SquareGlyph{}).dashed()
	}
	return seriesStyle(variantsOf(r), strings.TrimSuffix(key, withCPSuffix))
}

// seriesPoints gives the cells of one series (match) as points sorted by
// x, skipping cells where f knows nothing in any repeat.
func seriesPoints(cells []cell, match func(cellKey) bool, x func(cellKey) float64, f func(Run) float64) []point {
	var out []point
	for _, c := range cells {
		if !match(c.key) {
			continue
		}
		if s := aggregate(c.runs, f); s.N > 0 {
			out = append(out, point{x: x(c.key), s: s})
		}
	}
	slices.SortFunc(out, func(a, b point) int { return cmpFloat(a.x, b.x) })
	return out
}

func cellLoad(k cellKey) float64 { return k.Load }

// variantsOf lists the runs' policies as tables name them (taichi once
// per SLO, see variantName) in first-seen order.
func variantsOf(r *Report) []string {
	var out []string
	for _, run := range r.Runs {
		if !slices.Contains(out, run.name()) {
			out = append(out, run.name())
		}
	}
	return out
}

const (
	noCPSuffix   = ", no CP (reference)"
	withCPSuffix = " + CP"
)

// seriesKey separates the no-CP reference from the same policy under CP load.
func seriesKey(run Run) string {
	if run.CPLoad == "none" {
		return run.name() + noCPSuffix
	}
	return run.name() + withCPSuffix
}

// inSeries matches the cells of the series named key.
func inSeries(key string) func(cellKey) bool {
	return func(k cellKey) bool { return seriesKey(Run{Policy: k.Policy, SLOUS: k.SLOUS, CPLoad: k.CPLoad}) == key }
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

// densities lists the VMs counts measured, ascending.
func densities(r *Report) []float64 {
	var out []float64
	for _, run := range r.Runs {
		if x := float64(run.VMs); x > 0 && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

func loadsOf(r *Report) []float64 {
	var out []float64
	for _, run := range r.Runs {
		if !slices.Contains(out, run.Load) {
			out = append(out, run.Load)
		}
	}
	slices.Sort(out)
	return out
}

// plotLoad picks the load of the tail panel: the one nearest 0.3 (the
// paper's operating point) when one lies within 0.1 of it, else the middle.
func plotLoad(r *Report) (float64, bool) {
	loads := loadsOf(r)
	if len(loads) == 0 {
		return 0, false
	}
	best := loads[len(loads)/2]
	for _, l := range loads {
		if math.Abs(l-0.3) <= 0.1+1e-9 && math.Abs(l-0.3) < math.Abs(best-0.3) {
			best = l
		}
	}
	if math.Abs(best-0.3) > 0.1+1e-9 {
		best = loads[len(loads)/2]
	}
	return best, true
}

// atLoad names the DP load of a VM-startup report's runs.
func atLoad(r *Report) string {
	if loads := loadsOf(r); len(loads) == 1 && loads[0] > 0 {
		return "\n(DP load " + strconv.FormatFloat(loads[0], 'g', 3, 64) + ")"
	}
	return ""
}
