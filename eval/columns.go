package eval

import (
	"fmt"
	"math"
)

// The columns the experiments' Markdown tables share: a figure of one run
// (NaN where unknown), folded over a cell's repeats by aggregate and
// printed with the precision its size wants.

// pickP50, pickP99 and pickMax choose one figure of a Percentiles.
func pickP50(p Percentiles) float64 { return p.P50 }
func pickP99(p Percentiles) float64 { return p.P99 }
func pickMax(p Percentiles) float64 { return p.Max }

// residenceUS is figure f of a run's RX residence (NaN without samples).
func residenceUS(f func(Percentiles) float64) func(Run) float64 {
	return func(r Run) float64 { return known(&r.DP.ResidenceUS, f) }
}

// cyclictestUS is figure f of a run's cyclictest latency (NaN without one).
func cyclictestUS(f func(Percentiles) float64) func(Run) float64 {
	return func(r Run) float64 { return known(r.CyclictestUS, f) }
}

// startupMS is figure f of a run's VM startup times (NaN without any).
func startupMS(f func(Percentiles) float64) func(Run) float64 {
	return func(r Run) float64 { return known(r.StartupMS, f) }
}

func runLoss(r Run) float64  { return r.DP.Loss }
func runLentS(r Run) float64 { return r.LentS }

// medianCell prints f's median over runs with the repeats' min–max beside it.
func medianCell(runs []Run, f func(Run) float64) string { return aggregate(runs, f).String() }

// medianNum prints f's median over runs alone ("n/a" when nothing is known).
func medianNum(runs []Run, f func(Run) float64) string {
	a := aggregate(runs, f)
	if a.N == 0 {
		return "n/a"
	}
	return num(a.Median)
}

// lossCell prints the median share of packets lost over runs.
func lossCell(runs []Run) string { return pct(aggregate(runs, runLoss).Median) }

// num prints a measurement with precision fitting its size.
func num(v float64) string {
	switch {
	case v != v: // NaN
		return "–"
	case v == 0:
		return "0"
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(v float64) string {
	if v == 0 || v != v {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

// known applies f to p, NaN when p holds no samples.
func known(p *Percentiles, f func(Percentiles) float64) float64 {
	if p == nil || p.N == 0 {
		return math.NaN()
	}
	return f(*p)
}

// rttP99 is the generator's round-trip p99 (NaN without replies).
func rttP99(run Run) float64 {
	if run.DP.LatUS.N == 0 {
		return math.NaN()
	}
	return run.DP.LatUS.P99
}

// harvestedCP is the CP CPU time run on DP cores (NaN where unknown).
func harvestedCP(run Run) float64 {
	if run.HarvestedCPS == nil {
		return math.NaN()
	}
	return *run.HarvestedCPS
}
