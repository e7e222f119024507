package eval

import (
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot/plotter"
)

// frontierPlot is the frontier PNG's path for experiment exp.
func frontierPlot(dir, exp string) string { return filepath.Join(dir, exp+"-frontier.png") }

// frontierFigure draws one frontier: x the DP latency p99, y the CP
// figure, both on log axes (y linear when a value is 0: static harvests
// nothing); the fixed policies as labelled points, taichi's SLO sweep as a
// line through its points in SLO order, each labelled with its SLO, and a
// dashed mark at each SLO where x is what the SLO bounds. Points are
// medians over repeats, bars their min–max.
func frontierFigure(r *Report, f frontier) *figure {
	title := "Frontier: DP latency vs CP, taichi per SLO"
	better := "better: left and up"
	if f.lowerIsBetter {
		better = "better: left and down"
	}
	if f.at != "" {
		better = f.at + "; " + better
	}
	title += "\n(" + better + ")"
	p := newPanel(title, f.xLabel+" (log scale)", f.yLabel)
	fig := newFigure(narrowW, p)
	names := variantsOf(r)
	shown := func(pt frontierPoint) bool {
		return pt.x.N > 0 && pt.y.N > 0 && pt.x.Min > 0
	}
	var ys []float64
	for _, pt := range f.fixed {
		if !shown(pt) {
			continue
		}
		sty := seriesStyle(names, pt.name)
		p.addXY([]xyPoint{{pt.x, pt.y}}, []string{pt.name}, sty)
		fig.legend.Add(pt.name, sty.thumbs()[1])
		ys = append(ys, pt.y.Min, pt.y.Max)
	}
	var sweep []xyPoint
	var labels []string
	var slos []float64
	for _, pt := range f.taichi {
		if !shown(pt) {
			continue
		}
		sweep = append(sweep, xyPoint{pt.x, pt.y})
		labels = append(labels, sloText(time.Duration(pt.sloUS*1e3)))
		slos = append(slos, pt.sloUS)
		ys = append(ys, pt.y.Min, pt.y.Max)
	}
	if len(sweep) > 0 {
		// taichi's color in the report's other figures: its first cell's.
		first := names[slices.IndexFunc(names, func(n string) bool {
			return slices.ContainsFunc(f.taichi, func(p frontierPoint) bool { return p.name == n })
		})]
		sty := seriesStyle(names, first)
		p.addXY(sweep, labels, sty)
		fig.legend.Add("taichi, one point per SLO", sty.thumbs()...)
	}
	p.xLog = true
	if p.yLog = len(ys) > 0 && slices.Min(ys) > 0; p.yLog {
		p.yLabel = strings.Replace(p.yLabel, ")", ", log scale)", 1)
	}
	if f.xIsBudget && len(ys) > 0 {
		// The budget each taichi point ran under, across the data's height.
		lo, hi := slices.Min(ys), slices.Max(ys)
		if p.yLog {
			lo, hi = lo/1.1, hi*1.1
		} else {
			lo, hi = math.Min(0, lo), hi*1.05
		}
		mark := seriesStyleOf(color.Gray{Y: 0x80}, nil).dashed()
		mark.line.Width /= 2
		for _, slo := range slos {
			p.addCurve(plotter.XYs{{X: slo, Y: lo}, {X: slo, Y: hi}}, mark)
		}
		if len(slos) > 0 {
			fig.legend.Add("dashed: each SLO", mark.lineThumb())
		}
	}
	fig.noteRepeats(r)
	return fig
}

// writeFrontierPlot writes the frontier PNG of a report that has one (see
// hasFrontier): at the highest density, at the dataplane's plotted load,
// or the whole ping report. It returns the path, or "" when there is none.
func writeFrontierPlot(dir string, r *Report) (string, error) {
	if !hasFrontier(r) {
		return "", nil
	}
	frs := frontiersOf(r)
	if len(frs) == 0 {
		return "", nil
	}
	f := frs[0]
	if load, ok := plotLoad(r); ok && r.Experiment == ExperimentDataplane {
		for _, fr := range frs {
			if fr.at == "DP load "+num(load) {
				f = fr
			}
		}
	}
	path := frontierPlot(dir, r.Experiment)
	return path, frontierFigure(r, f).save(path)
}
