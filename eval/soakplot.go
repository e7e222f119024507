package eval

import (
	"fmt"
	"image/color"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// soakFigH is a soak figure's height: two time-series panels stacked.
const soakFigH = 9 * vg.Inch

// benchAlpha is the opacity of a bench period's shading, drawn over the
// lines: light enough to read them through it.
const benchAlpha = 0x40

// WriteSoakPlots writes one PNG per cell group (placement, pattern, CP
// load; the first repeat) and returns the paths:
// soak-<softirq>-<traffic>-<cp load>.png. Top: residence p99 per window
// per policy, the SLO dashed, the windows a policy's core was benched
// shaded in its color; bottom: CP time harvested on DP cores per window.
func WriteSoakPlots(dir string, rep *SoakReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, g := range groupsOf(rep) {
		if g.repeat != 0 {
			continue
		}
		var runs []SoakRun
		for _, r := range rep.Runs {
			if groupOf(r) == g {
				runs = append(runs, r)
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s-%s.png", rep.Experiment, g.softirq, g.traffic, g.cpLoad))
		if err := soakFigure(g, runs, rep.Repeats()).save(path); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// Repeats is how many repeats the report's params say it ran.
func (rep *SoakReport) Repeats() int {
	switch v := rep.Params["repeat"].(type) {
	case int:
		return v
	case float64: // read back from JSON
		return int(v)
	}
	return 1
}

// soakFig is a soak figure: panels stacked, shading per panel added after
// the panel is built (its axis range is known only then).
type soakFig struct {
	*figure
	// benches per policy name: the [from, to] seconds its core was benched.
	benches map[string][][2]float64
	colors  map[string]color.Color
}

func soakFigure(g soakGroup, runs []SoakRun, repeats int) *soakFig {
	title := fmt.Sprintf("DP: %s p99 per 1 s window\nsoftirq on %s, %s traffic, %s CP load", residenceLabel, g.softirq, g.traffic, g.cpLoad)
	if repeats > 1 {
		title += fmt.Sprintf(" (repeat 1 of %d)", repeats)
	}
	res := newPanel(title, "seconds since the cell's traffic began", "RX residence p99 per window (µs, log scale)")
	harv := newPanel("CP: time harvested on DP cores per 1 s window", "seconds since the cell's traffic began",
		"CP CPU seconds on DP cores per window")
	f := &soakFig{figure: newFigure(wideW, res, harv), benches: map[string][][2]float64{}, colors: map[string]color.Color{}}
	var pols []string
	for _, r := range runs {
		pols = append(pols, string(r.Policy))
	}
	var slo, end, most float64
	for _, r := range runs {
		sty := seriesStyle(pols, string(r.Policy))
		var p99, h plotter.XYs
		from := 0.0
		for _, w := range r.Windows {
			if w.ResidenceP99US != nil {
				p99 = append(p99, plotter.XY{X: w.EndS, Y: *w.ResidenceP99US})
			}
			if w.HarvestedCPS != nil {
				h = append(h, plotter.XY{X: w.EndS, Y: *w.HarvestedCPS})
				most = max(most, *w.HarvestedCPS)
			}
			if w.Benched {
				f.benches[r.name()] = appendSpan(f.benches[r.name()], from, w.EndS)
			}
			from, end = w.EndS, max(end, w.EndS)
		}
		res.addCurve(p99, sty)
		harv.addCurve(h, sty)
		f.legend.Add(r.name(), sty.lineThumb())
		f.colors[r.name()] = sty.color
		slo = max(slo, r.LateSLOUS)
	}
	if slo > 0 && end > 0 {
		mark := seriesStyleOf(color.Gray{Y: 0x60}, nil).dashed()
		res.addCurve(plotter.XYs{{X: 0, Y: slo}, {X: end, Y: slo}}, mark)
		f.legend.Add("")
		f.legend.Add("dashed: SLO "+sloText(time.Duration(slo*1e3)), mark.lineThumb())
	}
	for _, name := range slices.Sorted(maps.Keys(f.benches)) {
		n := len(f.benches[name])
		f.legend.Add(fmt.Sprintf("shaded: %s benched (%d %s)", name, n, map[bool]string{true: "span", false: "spans"}[n == 1]), shade(f.colors[name]))
	}
	res.yLog = true
	harv.yMin, harv.yMax = 0, max(1, most)*1.05
	return f
}

// appendSpan adds [from, to] to spans, joining it to the last span when
// they touch.
func appendSpan(spans [][2]float64, from, to float64) [][2]float64 {
	if n := len(spans); n > 0 && spans[n-1][1] >= from {
		spans[n-1][1] = to
		return spans
	}
	return append(spans, [2]float64{from, to})
}

// shade is a translucent fill in c, no outline.
func shade(c color.Color) *plotter.Polygon {
	r, g, b, _ := c.RGBA()
	p := &plotter.Polygon{Color: color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: benchAlpha}}
	p.LineStyle.Width = 0
	return p
}

// save builds the panels, shades the bench spans across the top panel's
// height, and draws the panels stacked with the legend to their right.
func (f *soakFig) save(path string) (err error) {
	plots := make([][]*plot.Plot, len(f.panels))
	for i, p := range f.panels {
		pl, err := p.build()
		if err != nil {
			return err
		}
		plots[i] = []*plot.Plot{pl}
	}
	top := plots[0][0]
	for _, name := range slices.Sorted(maps.Keys(f.benches)) {
		if len(f.panels[0].series) == 0 {
			break // nothing drawn: no axis to shade across
		}
		for _, s := range f.benches[name] {
			poly := shade(f.colors[name])
			poly.XYs = []plotter.XYs{{{X: s[0], Y: top.Y.Min}, {X: s[1], Y: top.Y.Min}, {X: s[1], Y: top.Y.Max}, {X: s[0], Y: top.Y.Max}}}
			top.Add(poly)
		}
	}
	// One time axis for both panels (the shading may have widened the top one).
	lo, hi := top.X.Min, top.X.Max
	for _, row := range plots {
		lo, hi = min(lo, row[0].X.Min), max(hi, row[0].X.Max)
	}
	for _, row := range plots {
		row[0].X.Min, row[0].X.Max = lo, hi
	}
	img := vgimg.New(f.w, soakFigH)
	dc := draw.New(img)
	pad := vg.Points(12)
	area := dc
	area.Max.X -= f.legend.Rectangle(dc).Size().X + 2*pad
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Points(30), PadTop: pad, PadBottom: pad / 2, PadLeft: pad / 2}
	for i, row := range plot.Align(plots, tiles, area) {
		plots[i][0].Draw(row[0])
	}
	lc := dc
	lc.Min.X = area.Max.X + pad
	lc.Max.Y -= 3 * pad
	f.legend.Draw(lc)
	return savePNG(img, path)
}
