package eval

import (
	"fmt"
	"image/color"
	"math"
	"slices"

	"gonum.org/v1/plot/plotter"

	"github.com/taichi-sched/taichi/eval/sim"
)

// WriteSimFigure draws the simulator's scale grid: the engine's cost (share
// of one core, log) against the events it handled per second over all DP
// cores (log), one line per requested rate with each point labelled by its
// core count, and dashed marks at the 1% goal and at 100%, where one
// engine thread saturates.
func WriteSimFigure(path string, points []sim.Point) error {
	if len(points) == 0 {
		return fmt.Errorf("sim figure: no points")
	}
	p := newPanel("Scheduler engine cost vs events (taichi eval sim)", "engine events per second, all DP cores (log scale)", "engine CPU, % of one core (log scale)")
	p.xLog, p.yLog = true, true
	fig := newFigure(narrowW, p)
	var rates []float64
	for _, pt := range points {
		if !slices.Contains(rates, pt.Rate) {
			rates = append(rates, pt.Rate)
		}
	}
	names := make([]string, len(rates))
	for i, r := range rates {
		names[i] = fmt.Sprintf("%s events/s/core", num(r))
	}
	xLo, xHi := math.Inf(1), math.Inf(-1)
	for i, r := range rates {
		var pts []xyPoint
		var labels []string
		for _, pt := range points {
			x, y := pt.EventsPerCoreS*float64(pt.Cores), 100*pt.CoreShare
			if pt.Rate != r || x <= 0 || y <= 0 {
				continue
			}
			pts = append(pts, xyPoint{x: one(x), y: one(y)})
			labels = append(labels, fmt.Sprintf("%d", pt.Cores))
			xLo, xHi = math.Min(xLo, x), math.Max(xHi, x)
		}
		if len(pts) == 0 {
			continue
		}
		sty := seriesStyle(names, names[i])
		p.addXY(pts, labels, sty)
		fig.legend.Add(names[i], sty.thumbs()...)
	}
	if math.IsInf(xLo, 1) {
		return fmt.Errorf("sim figure: no point with a cost to draw")
	}
	for _, mark := range []struct {
		y     float64
		label string
	}{{1, "dashed: 1% of a core (goal)"}, {100, "dashed: 100%, one thread saturates"}} {
		sty := seriesStyleOf(color.Gray{Y: 0x80}, nil).dashed()
		p.addCurve(plotter.XYs{{X: xLo / 1.5, Y: mark.y}, {X: xHi * 1.5, Y: mark.y}}, sty)
		fig.legend.Add(mark.label, sty.lineThumb())
	}
	fig.legend.Add("")
	fig.legend.Add("point labels: DP cores")
	return fig.save(path)
}

// one is a single measurement as a spread.
func one(v float64) spread { return spread{Median: v, Min: v, Max: v, N: 1} }
