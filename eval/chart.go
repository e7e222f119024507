package eval

import (
	"errors"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Figure sizes: two panels and a legend column, or one panel and a legend.
const (
	wideW, narrowW, figH = 13 * vg.Inch, 9 * vg.Inch, 5.5 * vg.Inch
)

// figure is one PNG: panels side by side and one legend to their right,
// outside every data area.
type figure struct {
	w      vg.Length
	panels []*panel
	legend plot.Legend
}

func newFigure(w vg.Length, panels ...*panel) *figure {
	l := plot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = vg.Points(11)
	return &figure{w: w, panels: panels, legend: l}
}

// save draws the panels aligned in one row and the legend to their right.
func (f *figure) save(path string) (err error) {
	plots := make([]*plot.Plot, len(f.panels))
	for i, p := range f.panels {
		if plots[i], err = p.build(); err != nil {
			return err
		}
	}
	img := vgimg.New(f.w, figH)
	dc := draw.New(img)
	pad := vg.Points(12)
	legendW := f.legend.Rectangle(dc).Size().X + 2*pad
	area := dc
	area.Max.X -= legendW
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Points(30), PadTop: pad, PadBottom: pad / 2, PadLeft: pad / 2}
	for i, c := range plot.Align([][]*plot.Plot{plots}, tiles, area)[0] {
		plots[i].Draw(c)
	}
	lc := dc
	lc.Min.X = area.Max.X + pad
	lc.Max.Y -= 3 * pad
	f.legend.Draw(lc)
	return savePNG(img, path)
}

// panel is one plot of a figure, kept in data units until build. A log
// axis is drawn as a linear axis over log10 of the data with ticks at the
// data's values: gonum sizes a log axis's label around the arithmetic
// midpoint, which squeezes the data area.
type panel struct {
	title, xLabel, yLabel string
	series                []series
	xLog, yLog            bool
	// yAuto: log Y when the data span more than 20×, so one slow policy
	// does not flatten the others into the axis.
	yAuto bool
	// xTicks: a tick at each of these (densities, loads); else 1-2-5.
	xTicks []float64
	// yMin, yMax, yTicks fix the Y axis (0: from the data).
	yMin, yMax float64
	yTicks     []plot.Tick
	grid       bool
}

// series is one line: points with optional min–max bars (vertical, and
// horizontal where x is a measurement too) and optional point labels.
type series struct {
	xys      plotter.XYs
	lo, hi   []float64 // per point, nil for none
	xlo, xhi []float64 // per point, nil for none
	labels   []string  // per point, nil for none
	sty      style
	slot     float64 // sideways shift in dodge widths (0: none)
}

func newPanel(title, x, y string) *panel { return &panel{title: title, xLabel: x, yLabel: y} }

// add draws pts as a line through the medians with a bar over each
// point's min–max, shifted sideways by slot so bars do not overlap.
func (p *panel) add(pts []point, sty style, slot float64) {
	if len(pts) == 0 {
		return
	}
	s := series{sty: sty, slot: slot}
	spans := false
	for _, pt := range pts {
		s.xys = append(s.xys, plotter.XY{X: pt.x, Y: pt.s.Median})
		s.lo, s.hi = append(s.lo, pt.s.Min), append(s.hi, pt.s.Max)
		spans = spans || pt.s.Min < pt.s.Max
	}
	if !spans {
		s.lo, s.hi = nil, nil
	}
	p.series = append(p.series, s)
}

// addXY draws pts, each measured in x and y, as a line in their order
// with bars over both spreads and a label beside each point (labels nil:
// none); a single point is a glyph.
func (p *panel) addXY(pts []xyPoint, labels []string, sty style) {
	if len(pts) == 0 {
		return
	}
	s := series{sty: sty, labels: labels}
	xSpans, ySpans := false, false
	for _, pt := range pts {
		s.xys = append(s.xys, plotter.XY{X: pt.x.Median, Y: pt.y.Median})
		s.lo, s.hi = append(s.lo, pt.y.Min), append(s.hi, pt.y.Max)
		s.xlo, s.xhi = append(s.xlo, pt.x.Min), append(s.xhi, pt.x.Max)
		xSpans, ySpans = xSpans || pt.x.Min < pt.x.Max, ySpans || pt.y.Min < pt.y.Max
	}
	if !ySpans {
		s.lo, s.hi = nil, nil
	}
	if !xSpans {
		s.xlo, s.xhi = nil, nil
	}
	p.series = append(p.series, s)
}

// xyPoint is a cell measured on both axes, each over its repeats.
type xyPoint struct{ x, y spread }

// addCurve draws a line without points or bars.
func (p *panel) addCurve(xys plotter.XYs, sty style) {
	sty.glyph = nil
	p.series = append(p.series, series{xys: xys, sty: sty})
}

// dodgeSlot centres n series' shifts around 0.
func dodgeSlot(i, n int) float64 { return float64(i) - float64(n-1)/2 }

// dodgeShare is one dodge width as a share of the X axis: about two
// glyphs' width on a panel.
const dodgeShare = 0.015

func (p *panel) build() (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = p.title
	pl.Title.TextStyle.Font.Size = vg.Points(12)
	pl.X.Label.Text, pl.Y.Label.Text = p.xLabel, p.yLabel
	p.dropUnshowable()
	xs, ys := p.values()
	if p.yAuto && len(ys) > 0 && ys[0] > 0 && ys[len(ys)-1]/ys[0] > 20 {
		p.yLog = true
		pl.Y.Label.Text = strings.Replace(pl.Y.Label.Text, ")", ", log scale)", 1)
	}
	fx, fy := scaleOf(p.xLog), scaleOf(p.yLog)
	xlo, xhi := p.xRange(xs)
	shift := dodgeShare * (fx(xhi) - fx(xlo) + 2*xMargin(fx(xlo), fx(xhi)))
	for _, s := range p.series {
		xys := make(plotter.XYs, len(s.xys))
		for i, pt := range s.xys {
			xys[i] = plotter.XY{X: fx(pt.X) + s.slot*shift, Y: fy(pt.Y)}
		}
		if s.lo != nil {
			errs := make(plotter.YErrors, len(xys))
			for i := range errs {
				errs[i].Low, errs[i].High = xys[i].Y-fy(s.lo[i]), fy(s.hi[i])-xys[i].Y
			}
			bars, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{xys, errs})
			if err != nil {
				return nil, err
			}
			bars.LineStyle.Color, bars.LineStyle.Width = s.sty.color, vg.Points(1)
			pl.Add(bars)
		}
		if s.xlo != nil {
			errs := make(plotter.XErrors, len(xys))
			for i := range errs {
				errs[i].Low, errs[i].High = xys[i].X-fx(s.xlo[i]), fx(s.xhi[i])-xys[i].X
			}
			bars, err := plotter.NewXErrorBars(struct {
				plotter.XYs
				plotter.XErrors
			}{xys, errs})
			if err != nil {
				return nil, err
			}
			bars.LineStyle.Color, bars.LineStyle.Width = s.sty.color, vg.Points(1)
			pl.Add(bars)
		}
		if s.labels != nil {
			ls, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: s.labels})
			if err != nil {
				return nil, err
			}
			for i := range ls.TextStyle {
				ls.TextStyle[i].Color = s.sty.color
				ls.TextStyle[i].Font.Size = vg.Points(9)
			}
			ls.Offset = vg.Point{X: vg.Points(5), Y: vg.Points(3)}
			pl.Add(ls)
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.LineStyle = s.sty.line
		pl.Add(l)
		if s.sty.glyph != nil {
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return nil, err
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: s.sty.color, Radius: vg.Points(3), Shape: s.sty.glyph}
			pl.Add(sc)
		}
	}
	if p.grid {
		pl.Add(plotter.NewGrid())
	}
	if len(p.series) == 0 {
		// Nothing measured: say so, and no ticks that would read as values.
		if !strings.Contains(pl.Title.Text, "(no ") {
			pl.Title.Text += "\n(nothing measured)"
		}
		pl.X.Tick.Marker, pl.Y.Tick.Marker = plot.ConstantTicks(nil), plot.ConstantTicks(nil)
		return pl, nil
	}
	p.xAxis(pl, xlo, xhi)
	p.yAxis(pl, ys)
	return pl, nil
}

// dropUnshowable drops the points a log axis cannot show (x <= 0, or
// y <= 0 with any bar) rather than failing the whole figure.
func (p *panel) dropUnshowable() {
	var kept []series
	for _, s := range p.series {
		var out series
		out.sty, out.slot = s.sty, s.slot
		for i, pt := range s.xys {
			if p.xLog && (pt.X <= 0 || s.xlo != nil && s.xlo[i] <= 0) || p.yLog && (pt.Y <= 0 || s.lo != nil && s.lo[i] <= 0) {
				continue
			}
			out.xys = append(out.xys, pt)
			if s.lo != nil {
				out.lo, out.hi = append(out.lo, s.lo[i]), append(out.hi, s.hi[i])
			}
			if s.xlo != nil {
				out.xlo, out.xhi = append(out.xlo, s.xlo[i]), append(out.xhi, s.xhi[i])
			}
			if s.labels != nil {
				out.labels = append(out.labels, s.labels[i])
			}
		}
		if len(out.xys) > 0 {
			kept = append(kept, out)
		}
	}
	p.series = kept
}

// values returns every X and every Y (bars included) of the panel, sorted.
func (p *panel) values() (xs, ys []float64) {
	for _, s := range p.series {
		for i, pt := range s.xys {
			xs, ys = append(xs, pt.X), append(ys, pt.Y)
			if s.lo != nil {
				ys = append(ys, s.lo[i], s.hi[i])
			}
			if s.xlo != nil {
				xs = append(xs, s.xlo[i], s.xhi[i])
			}
		}
	}
	slices.Sort(xs)
	slices.Sort(ys)
	return xs, ys
}

// xRange is the X axis' extent in data units: the ticks' or the data's.
func (p *panel) xRange(xs []float64) (lo, hi float64) {
	if len(p.xTicks) > 0 {
		xs = slices.Sorted(slices.Values(p.xTicks))
	}
	if len(xs) == 0 {
		return 0, 1
	}
	return xs[0], xs[len(xs)-1]
}

func (p *panel) xAxis(pl *plot.Plot, lo, hi float64) {
	fx := scaleOf(p.xLog)
	if len(p.xTicks) > 0 {
		var ticks []plot.Tick
		for _, v := range p.xTicks {
			ticks = append(ticks, plot.Tick{Value: fx(v), Label: tickLabel(v)})
		}
		pl.X.Tick.Marker = plot.ConstantTicks(ticks)
	} else if p.xLog {
		pl.X.Tick.Marker = logTicks{}
	}
	if lo <= 0 && p.xLog {
		return // no data
	}
	margin := xMargin(fx(lo), fx(hi))
	pl.X.Min, pl.X.Max = fx(lo)-margin, fx(hi)+margin
}

// xMargin is the room beside the outermost points for their bars and
// glyphs, in axis units.
func xMargin(lo, hi float64) float64 { return 0.06 * math.Max(hi-lo, 0.5) }

func (p *panel) yAxis(pl *plot.Plot, ys []float64) {
	fy := scaleOf(p.yLog)
	switch {
	case p.yTicks != nil:
		ticks := slices.Clone(p.yTicks)
		for i := range ticks {
			ticks[i].Value = fy(ticks[i].Value)
		}
		pl.Y.Tick.Marker = plot.ConstantTicks(ticks)
	case p.yLog:
		pl.Y.Tick.Marker = logTicks{}
	default:
		pl.Y.Tick.Marker = linearTicks{}
	}
	switch {
	case p.yMax > 0:
		pl.Y.Min, pl.Y.Max = fy(p.yMin), fy(p.yMax)
	case len(ys) == 0:
	case p.yLog:
		pl.Y.Min, pl.Y.Max = fy(ys[0]/1.3), fy(ys[len(ys)-1]*1.3)
	default:
		// A linear latency axis starts at 0, so ratios read true.
		pl.Y.Min, pl.Y.Max = math.Min(0, ys[0]), ys[len(ys)-1]*1.08
	}
}

// scaleOf maps data to axis units: log10 on a log axis.
func scaleOf(log bool) func(float64) float64 {
	if log {
		return math.Log10
	}
	return func(v float64) float64 { return v }
}

// linearTicks are gonum's default ticks, labelled without trailing zeros
// (50, not 50.00).
type linearTicks struct{}

// Ticks implements plot.Ticker.
func (linearTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = tickLabel(ticks[i].Value)
		}
	}
	return ticks
}

// logTicks marks an axis in log10 units at 1-2-5 of the data's values.
type logTicks struct{}

// Ticks implements plot.Ticker.
func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := ticks125{}.Ticks(math.Pow(10, lo), math.Pow(10, hi))
	for i := range ticks {
		ticks[i].Value = math.Log10(ticks[i].Value)
	}
	return ticks
}

// style is one series' look, shared by every panel of a figure.
type style struct {
	color color.Color
	line  draw.LineStyle
	glyph draw.GlyphDrawer
}

func seriesStyleOf(c color.Color, g draw.GlyphDrawer) style {
	return style{color: c, glyph: g, line: draw.LineStyle{Color: c, Width: vg.Points(1.8)}}
}

func (s style) dashed() style {
	s.line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	return s
}

func (s style) lineThumb() plot.Thumbnailer {
	return &plotter.Line{LineStyle: s.line}
}

func (s style) thumbs() []plot.Thumbnailer {
	return []plot.Thumbnailer{s.lineThumb(),
		&plotter.Scatter{GlyphStyle: draw.GlyphStyle{Color: s.color, Radius: vg.Points(3), Shape: s.glyph}}}
}

// palette is Okabe and Ito's color-blind-safe set, without black (the
// reference cell's) and yellow (too light on white).
var palette = []color.Color{
	color.RGBA{0x00, 0x72, 0xB2, 0xff}, // blue
	color.RGBA{0xD5, 0x5E, 0x00, 0xff}, // vermillion
	color.RGBA{0x00, 0x9E, 0x73, 0xff}, // bluish green
	color.RGBA{0xCC, 0x79, 0xA7, 0xff}, // reddish purple
	color.RGBA{0xE6, 0x9F, 0x00, 0xff}, // orange
	color.RGBA{0x56, 0xB4, 0xE9, 0xff}, // sky blue
}

// seriesStyle gives a policy (as variantsOf names it) the same color and
// glyph in every panel.
func seriesStyle(pols []string, pol string) style {
	i := max(slices.Index(pols, pol), 0)
	return seriesStyleOf(palette[i%len(palette)], plotutil.Shape(i))
}

// point is one cell on a figure: its x and the spread over its repeats.
type point struct {
	x float64
	s spread
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ticks125 labels a log axis at 1, 2 and 5 times each power of ten, or
// only at powers of ten (2 and 5 unlabelled) over more than four decades.
type ticks125 struct{}

// Ticks implements plot.Ticker.
func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	if lo <= 0 || hi <= lo {
		return out
	}
	sparse := hi/lo > 1e4
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || !sparse {
				t.Label = tickLabel(v)
			}
			out = append(out, t)
		}
	}
	return out
}

// tickLabel prints v with three significant digits, plainly from 0.0001
// to 99999 (5000, 0.05) and as 1e5 or 1e-5 beyond.
func tickLabel(v float64) string {
	s := strconv.FormatFloat(v, 'g', 3, 64)
	i := strings.Index(s, "e")
	if i < 0 {
		return s
	}
	if a := math.Abs(v); a >= 1e-4 && a < 1e5 {
		r, _ := strconv.ParseFloat(s, 64)
		return strconv.FormatFloat(r, 'f', -1, 64)
	}
	exp := s[i+1:]
	sign := ""
	if exp[0] == '-' {
		sign = "-"
	}
	return s[:i] + "e" + sign + strings.TrimLeft(exp[1:], "0")
}

// savePNG writes a drawn canvas to path as PNG.
func savePNG(img *vgimg.Canvas, path string) (err error) {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fh.Close()) }()
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(fh)
	return err
}
