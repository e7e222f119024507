package eval

import (
	"math"
	"slices"

	"github.com/taichi-sched/taichi/scheduler"
)

// cellKey identifies one cell of an experiment: the runs that differ only
// by repeat.
type cellKey struct {
	Policy scheduler.PolicyName
	SLOUS  float64 // the guard's bound taichi ran with; 0 for the others
	VMs    int
	Load   float64
	CPLoad string
}

// name is the cell's policy as tables and legends show it: taichi with
// its SLO ("taichi@250µs"), so each value of a sweep is its own row.
func (k cellKey) name() string { return variantName(k.Policy, k.SLOUS) }

type cell struct {
	key  cellKey
	runs []Run
}

// cellsOf groups a report's runs by cell, in order of first appearance.
func cellsOf(r *Report) []cell {
	var cells []cell
	for _, run := range r.Runs {
		k := cellKey{run.Policy, run.SLOUS, run.VMs, run.Load, run.CPLoad}
		i := slices.IndexFunc(cells, func(c cell) bool { return c.key == k })
		if i < 0 {
			cells = append(cells, cell{key: k})
			i = len(cells) - 1
		}
		cells[i].runs = append(cells[i].runs, run)
	}
	return cells
}

// spread is a figure over a cell's repeats.
type spread struct {
	Median, Min, Max float64
	N                int
}

// aggregate folds f over runs, skipping NaN (unknown) values; all NaN when
// nothing is known.
func aggregate(runs []Run, f func(Run) float64) spread {
	var v []float64
	for _, r := range runs {
		if x := f(r); !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN(), 0}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return spread{Median: med, Min: v[0], Max: v[len(v)-1], N: len(v)}
}

// String prints the median, and the min–max across repeats when they differ.
func (s spread) String() string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 || s.Min == s.Max {
		return num(s.Median)
	}
	return num(s.Median) + " (" + num(s.Min) + "–" + num(s.Max) + ")"
}
