package eval

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// The frontier (docs/design.md, "The SLO rule"): for any
// SLO, DP stays inside it and CP gets more than every fixed policy
// (static, dynamic, OVS's own sleep) that also stays inside it. A frontier
// puts each cell of one comparable slice of a report (the highest
// density, one load) at its DP latency and its CP figure; taichi's cells,
// one per SLO, are judged against the fixed policies' cells.

// frontierPoint is one cell on a frontier, each figure over its repeats.
type frontierPoint struct {
	name   string // as tables show it (variantName)
	policy scheduler.PolicyName
	sloUS  float64 // taichi's bound; 0 for the fixed policies
	// x is the DP latency the figure shows, budget what the SLO is judged
	// on (RX residence p99 where measured, else x), y the CP figure.
	x, budget, y spread
}

// frontier is one slice of a report as a frontier.
type frontier struct {
	at             string // the slice ("32 VMs", "load 0.3"); "" for the whole report
	xLabel, yLabel string // the figure's axes
	// budgetName is what the SLO is judged on, yName and yUnit the CP
	// figure, as the Markdown names them.
	budgetName, yName, yUnit string
	// residence: the budget is the DP loop's RX residence p99, what the
	// SLO bounds; otherwise a round trip stands in for it. xIsBudget: the
	// figure's x is the budget (not ping's round trip beside it).
	residence, xIsBudget bool
	lowerIsBetter        bool // y: startup latency (lower) or harvested CP (higher)
	fixed                []frontierPoint
	taichi               []frontierPoint // ascending SLO
}

// hasFrontier: the report swept the SLO, or holds taichi at more than one.
func hasFrontier(r *Report) bool {
	if r.Params["slo_sweep_us"] != nil {
		return true
	}
	var slos []float64
	for _, run := range r.Runs {
		if run.Policy == scheduler.PolicyTaichi && run.SLOUS > 0 && !slices.Contains(slos, run.SLOUS) {
			slos = append(slos, run.SLOUS)
		}
	}
	return len(slos) > 1
}

// frontiersOf cuts a report into its frontiers: the highest density of a
// VM-startup report, each load of a dataplane report, a ping report whole.
// The reference (static without CP) is no policy's point.
func frontiersOf(r *Report) []frontier {
	base := frontier{residence: slices.ContainsFunc(r.Runs, func(run Run) bool { return run.DP.ResidenceUS.N > 0 })}
	x, budget := residenceP99, residenceP99
	base.xLabel, base.budgetName = "DP RX residence p99 (µs)", "RX residence p99"
	if !base.residence {
		x, budget = rttP99, rttP99
		base.xLabel, base.budgetName = "DP round trip p99 (µs, generator)", "round trip p99"
	}
	base.xIsBudget = true
	if r.Experiment == ExperimentPing {
		x, base.xLabel, base.xIsBudget = rttP99, "ping p99 (µs)", !base.residence
	}
	y := harvestedCP
	base.yLabel, base.yName, base.yUnit = "harvested CP s (CP time on DP cores)", "harvested CP time", "s"
	if r.Experiment == ExperimentVMStartup {
		y, base.lowerIsBetter = startupP50, true
		base.yLabel, base.yName, base.yUnit = "VM startup p50 (ms)", "VM startup p50", "ms"
	}
	type cut struct {
		at string
		in func(cellKey) bool
	}
	var cuts []cut
	switch r.Experiment {
	case ExperimentVMStartup:
		top := slices.Max(append(densities(r), 0))
		cuts = append(cuts, cut{fmt.Sprintf("%d VMs", int(top)), func(k cellKey) bool { return float64(k.VMs) == top }})
	case ExperimentDataplane:
		for _, l := range loadsOf(r) {
			cuts = append(cuts, cut{"DP load " + num(l), func(k cellKey) bool { return k.Load == l }})
		}
	default:
		cuts = append(cuts, cut{"", func(cellKey) bool { return true }})
	}
	var out []frontier
	for _, c := range cuts {
		f := base
		f.at = c.at
		for _, cl := range cellsOf(r) {
			if !c.in(cl.key) || cl.key.CPLoad == "none" {
				continue
			}
			p := frontierPoint{name: cl.key.name(), policy: cl.key.Policy, sloUS: cl.key.SLOUS,
				x: aggregate(cl.runs, x), budget: aggregate(cl.runs, budget), y: aggregate(cl.runs, y)}
			switch {
			case cl.key.Policy != scheduler.PolicyTaichi:
				f.fixed = append(f.fixed, p)
			case cl.key.SLOUS > 0: // a taichi run without its bound cannot be judged
				f.taichi = append(f.taichi, p)
			}
		}
		slices.SortFunc(f.taichi, func(a, b frontierPoint) int { return cmpFloat(a.sloUS, b.sloUS) })
		if len(f.taichi) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func startupP50(run Run) float64 {
	return known(run.StartupMS, func(p Percentiles) float64 { return p.P50 })
}

// sloVerdict is what one taichi point did against its SLO.
type sloVerdict struct {
	taichi frontierPoint
	// met: taichi's budget median is within its SLO.
	met bool
	// within are the fixed policies whose budget median is within the same
	// SLO; taichi beat those in beaten (a better CP median), not those in
	// notBeaten; unknown lack a CP figure on either side.
	within                     []frontierPoint
	beaten, notBeaten, unknown []string
}

// verdicts judges each taichi point of f.
func (f frontier) verdicts() []sloVerdict {
	var out []sloVerdict
	for _, t := range f.taichi {
		v := sloVerdict{taichi: t, met: t.budget.N > 0 && t.budget.Median <= t.sloUS}
		for _, p := range f.fixed {
			if p.budget.N == 0 || p.budget.Median > t.sloUS {
				continue
			}
			v.within = append(v.within, p)
			switch {
			case t.y.N == 0 || p.y.N == 0:
				v.unknown = append(v.unknown, p.name)
			case f.lowerIsBetter && t.y.Median < p.y.Median, !f.lowerIsBetter && t.y.Median > p.y.Median:
				v.beaten = append(v.beaten, p.name)
			default:
				v.notBeaten = append(v.notBeaten, p.name)
			}
		}
		out = append(out, v)
	}
	return out
}

// kept: taichi met its SLO and beat every fixed policy that met it too.
func (v sloVerdict) kept() bool { return v.met && len(v.notBeaten) == 0 && len(v.unknown) == 0 }

// writeFrontier writes the report's Frontier section when it has one: per
// SLO, whether taichi met it and which fixed policies within the same
// budget it beat.
func writeFrontier(w io.Writer, r *Report) {
	if !hasFrontier(r) {
		return
	}
	frs := frontiersOf(r)
	if len(frs) == 0 {
		return
	}
	f0 := frs[0]
	better := "more"
	if f0.lowerIsBetter {
		better = "a lower"
	}
	fmt.Fprintf(w, "\n### Frontier\n\nPer SLO: did taichi keep its %s within the SLO, and did it give CP %s %s than each fixed policy "+
		"(%s) that also kept within it? Medians over repeats; the promise is kept when both hold.\n", f0.budgetName, better, f0.yName, fixedNames(frs))
	if !f0.residence {
		fmt.Fprintln(w, "\nNo RX residence was measured (the DP is not taichi's loop): the round trip stands in for it, and it also crosses the generator's core.")
	}
	for _, f := range frs {
		if f.at != "" {
			fmt.Fprintf(w, "\nAt %s:\n", f.at)
		}
		fmt.Fprintf(w, "\n| SLO | taichi %s µs | met | taichi %s %s | fixed policies within the SLO (%s µs, %s %s) | beaten | not beaten | promise |\n",
			f.budgetName, f.yName, f.yUnit, f.budgetName, f.yName, f.yUnit)
		fmt.Fprintln(w, "|---|---:|---|---:|---|---|---|---|")
		for _, v := range f.verdicts() {
			var within []string
			for _, p := range v.within {
				within = append(within, fmt.Sprintf("%s (%s, %s)", p.name, num(p.budget.Median), num(p.y.Median)))
			}
			notBeaten := v.notBeaten
			for _, u := range v.unknown {
				notBeaten = append(notBeaten, u+" (no CP figure)")
			}
			promise := "kept"
			if !v.kept() {
				promise = "not kept"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", sloText(time.Duration(v.taichi.sloUS*1e3)),
				v.taichi.budget, yesNo(v.met), v.taichi.y, orDash(within), orDash(v.beaten), orDash(notBeaten), promise)
		}
	}
}

// fixedNames lists the fixed policies on the frontiers.
func fixedNames(frs []frontier) string {
	var names []string
	for _, f := range frs {
		for _, p := range f.fixed {
			if !slices.Contains(names, p.name) {
				names = append(names, p.name)
			}
		}
	}
	return orDash(names)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s []string) string {
	if len(s) == 0 {
		return "–"
	}
	return strings.Join(s, ", ")
}
