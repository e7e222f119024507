package eval

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/taichi-sched/taichi/scheduler"
)

// Check is one self-check of a report: a claim the table rests on.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// lendingPolicies may lend DP cores to CP.
var lendingPolicies = []scheduler.PolicyName{scheduler.PolicyDynamic, scheduler.PolicyTaichi}

// minBackloggedVMs is the density from which the VM-startup pipeline keeps
// more CP work queued than the CP cores can run, so a lending policy must
// show harvest.
const minBackloggedVMs = 4

// finish completes a report once its runs are in: the DP loop's class per
// policy as observed, the speedups, and the self-check.
func finish(r *Report) *Report {
	classes := map[string][]string{}
	var order []string
	for _, run := range r.Runs {
		pol := string(run.Policy)
		if run.CPLoad == "none" {
			pol += " without CP"
		}
		if run.DP.LoopClass == "" || slices.Contains(classes[pol], run.DP.LoopClass) {
			continue
		}
		if classes[pol] == nil {
			order = append(order, pol)
		}
		classes[pol] = append(classes[pol], run.DP.LoopClass)
	}
	var parts []string
	for _, pol := range order {
		parts = append(parts, pol+" "+strings.Join(classes[pol], "/"))
	}
	r.Machine.DPLoopClass = strings.Join(parts, ", ")
	var stamps []string
	for _, run := range r.Runs {
		if run.DP.RXStamp != "" && !slices.Contains(stamps, run.DP.RXStamp) {
			stamps = append(stamps, run.DP.RXStamp)
		}
	}
	r.Machine.RXStamp = strings.Join(stamps, ", ")
	if note := probeLeadNote(r); note != "" {
		r.Notes = append(r.Notes, note)
	}
	fillSpeedups(r)
	SelfCheck(r)
	return r
}

// probeLeadNote reads the probe's lead against the host's wake cost: the
// share of a wake the probe hides (a lead at least the wake cost hides it
// all).
func probeLeadNote(r *Report) string {
	wake, ok := r.Params["wake_cost_p50_us"].(float64)
	if !ok || wake <= 0 {
		return ""
	}
	var parts []string
	for _, c := range cellsOf(r) {
		lead := aggregate(c.runs, func(run Run) float64 {
			if run.DP.ProbeLeadUS.N == 0 {
				return math.NaN()
			}
			return run.DP.ProbeLeadUS.P50
		})
		if lead.N == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s: lead p50 %s µs (hides %.0f%% of a wake)",
			c.key.name(), cellName(c.runs[0]), num(lead.Median), 100*min(1, lead.Median/wake)))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("Probe lead against this host's wake cost (p50 %s µs, measured at start with nothing lent): %s.",
		num(wake), strings.Join(parts, "; "))
}

// SelfCheck evaluates the claims a report's table rests on, sets Checks
// and Valid, and returns the failed checks.
func SelfCheck(r *Report) []Check {
	var checks []Check
	add := func(ok bool, name, format string, a ...any) {
		checks = append(checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, a...)})
	}
	for _, run := range r.Runs {
		if len(run.CPLoadErrors) > 0 {
			add(false, "CP load ran and was placed", "%s %s: %v", run.name(), cellName(run), run.CPLoadErrors)
		}
		if run.CPLoad != "none" && run.CPLoad != "" && run.CPCPUS == 0 {
			add(false, "CP load ran and was placed", "%s %s: the CP pool used no CPU time", run.name(), cellName(run))
		}
		if slices.Contains(lendingPolicies, run.Policy) && backlogged(run) {
			switch {
			case run.HarvestedCPS == nil:
				add(false, "lending policies harvest CP time", "%s %s: harvest unknown (no per-CPU CP usage)", run.name(), cellName(run))
			case *run.HarvestedCPS <= 0:
				add(false, "lending policies harvest CP time", "%s %s repeat %d: harvested %.3f CP s with CP backlogged",
					run.name(), cellName(run), run.Repeat, *run.HarvestedCPS)
			}
		}
	}
	if r.Experiment == ExperimentDataplane {
		checks = append(checks, referenceIsLowest(r)...)
	}
	checks = append(checks, offeredAsRequested(r))
	if !slices.ContainsFunc(checks, func(c Check) bool { return c.Name == "CP load ran and was placed" }) {
		add(true, "CP load ran and was placed", "every CP load ran for its whole run and used CPU")
	}
	if !slices.ContainsFunc(checks, func(c Check) bool { return c.Name == "lending policies harvest CP time" }) {
		add(true, "lending policies harvest CP time", "every lending run with CP backlogged ran CP on a DP core")
	}
	r.Checks = checks
	r.Valid = true
	var failed []Check
	for _, c := range checks {
		if !c.OK {
			r.Valid = false
			failed = append(failed, c)
		}
	}
	return failed
}

// FailedRuns counts runs that failed, lost VMs, or lost their CP load.
func FailedRuns(r *Report) int {
	n := 0
	for _, run := range r.Runs {
		if run.Error != "" || run.VMsFailed > 0 || len(run.CPLoadErrors) > 0 {
			n++
		}
	}
	return n
}

func backlogged(run Run) bool {
	if run.VMs > 0 {
		return run.VMs >= minBackloggedVMs
	}
	return run.CPLoad != "none" && run.CPLoad != ""
}

func cellName(run Run) string {
	if run.VMs > 0 {
		return fmt.Sprintf("%d VMs", run.VMs)
	}
	return fmt.Sprintf("load %s", num(run.Load))
}

// referenceIsLowest: at each load, static without CP (nothing lent, nothing
// else on the CP core's side of the DP core) must have the lowest RX
// residence p99, within the spread across repeats and referenceSlack: its
// best repeat is at most every other cell's worst times the slack.
func referenceIsLowest(r *Report) []Check {
	var out []Check
	for _, c := range cellsOf(r) {
		ref := c.runs[0]
		if ref.Policy != scheduler.PolicyStatic || ref.CPLoad != "none" {
			continue
		}
		best := aggregate(c.runs, func(run Run) float64 { return residenceP99(run) }).Min
		if math.IsNaN(best) {
			out = append(out, Check{Name: "static without CP has the lowest residence p99", Detail: fmt.Sprintf("load %s: no residence measured", num(ref.Load))})
			continue
		}
		for _, o := range cellsOf(r) {
			if o.key == c.key || o.key.Load != c.key.Load {
				continue
			}
			worst := aggregate(o.runs, func(run Run) float64 { return residenceP99(run) }).Max
			ok := !math.IsNaN(worst) && best <= worst*referenceSlack
			out = append(out, Check{Name: "static without CP has the lowest residence p99", OK: ok,
				Detail: fmt.Sprintf("load %s: static without CP best %s µs vs %s (%s) worst %s µs",
					num(c.key.Load), num(best), o.key.name(), o.key.CPLoad, num(worst))})
		}
	}
	return out
}

// referenceSlack: static with CP leaves the DP core to DP alone, as the
// reference does, so the two are equal cells and either may come out a
// histogram bucket lower (two repeats each: static with CP 11.3 µs, the
// reference 12.3-22.5 µs). A quarter is more than a bucket and far less
// than any lending cell's gap (10x and more).
const referenceSlack = 1.25

func residenceP99(run Run) float64 {
	if run.DP.ResidenceUS.N == 0 {
		return math.NaN()
	}
	return run.DP.ResidenceUS.P99
}

// minOfferedShare is the least share of its requested rate the generator
// must offer in a run: under it, that cell's DP carried less traffic than
// the others and its figures do not compare.
const minOfferedShare = 0.95

// offeredAsRequested: every run with a generator offered at least
// minOfferedShare of the rate it asked for, so every cell saw the same
// load (the generator shares the CP core with whatever CP runs there).
func offeredAsRequested(r *Report) Check {
	const name = "every cell offered the requested DP load"
	var short []string
	checked := 0
	for _, run := range r.Runs {
		if run.DP.RequestedPPS <= 0 {
			continue
		}
		checked++
		if share := run.DP.OfferedPPS / run.DP.RequestedPPS; share < minOfferedShare {
			short = append(short, fmt.Sprintf("%s %s repeat %d: offered %s pps of %s requested (%.0f%%)",
				run.name(), cellName(run), run.Repeat, num(run.DP.OfferedPPS), num(run.DP.RequestedPPS), 100*share))
		}
	}
	switch {
	case len(short) > 0:
		return Check{Name: name, Detail: fmt.Sprintf("under %.0f%% of the requested rate: %s", 100*minOfferedShare, strings.Join(short, "; "))}
	case checked == 0:
		return Check{Name: name, OK: true, Detail: "no run used the traffic generator"}
	}
	return Check{Name: name, OK: true, Detail: fmt.Sprintf("all %d runs with the generator offered at least %.0f%% of the requested rate", checked, 100*minOfferedShare)}
}
