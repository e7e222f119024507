package sim

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// LoopSummary is what a DP loop did over a trace, from its yields and
// wakes: the time it was blocked (lent to CP) and its wakes by cause.
type LoopSummary struct {
	LentS float64
	Wakes map[string]uint64
}

// Summary sums a recorded trace's loop events: each wake ends the lent
// period its core's last yield began.
func (t *Trace) Summary() LoopSummary {
	s := LoopSummary{Wakes: map[string]uint64{}}
	for _, c := range t.Cores {
		var yieldAt time.Duration = -1
		for _, ev := range c.Events {
			if ev.Cause == scheduler.WakeNone {
				yieldAt = ev.At
				continue
			}
			s.Wakes[ev.Cause.String()]++
			if yieldAt >= 0 {
				s.LentS += (ev.At - yieldAt).Seconds()
				yieldAt = -1
			}
		}
	}
	return s
}

// Summary is a simulated run's loop view, comparable with a trace's.
func (r Result) Summary() LoopSummary {
	return LoopSummary{LentS: r.LoopLentS, Wakes: r.Wakes}
}

// SelfCheckTolerance: the sim's harvest and reclaims must be within 10% of
// the recorded run's.
const SelfCheckTolerance = 0.10

// Check is one comparison of the self-check.
type Check struct {
	Name   string  `json:"name"`
	Real   float64 `json:"real"`
	Sim    float64 `json:"sim"`
	OK     bool    `json:"ok"`
	Detail string  `json:"detail"`
}

// SelfCheck compares a simulated run of a recorded trace with the recorded
// run: lent core-seconds, all wakes, and each cause's wakes (a cause is
// judged against the total, so a cause seen a handful of times does not
// fail the check on noise).
func SelfCheck(real, sim LoopSummary, tol float64) []Check {
	total := func(w map[string]uint64) float64 {
		n := uint64(0)
		for _, v := range w {
			n += v
		}
		return float64(n)
	}
	check := func(name string, r, s, scale float64) Check {
		c := Check{Name: name, Real: r, Sim: s}
		dev := math.Abs(s - r)
		c.OK = dev <= tol*scale
		c.Detail = fmt.Sprintf("real %s, sim %s: off by %.1f%% of %s (limit %.0f%%)", num(r), num(s), 100*dev/math.Max(scale, 1e-12), num(scale), 100*tol)
		return c
	}
	out := []Check{
		check("harvest (lent core-seconds)", real.LentS, sim.LentS, real.LentS),
		check("reclaims (wakes of lent loops)", total(real.Wakes), total(sim.Wakes), total(real.Wakes)),
	}
	causes := map[string]bool{}
	for k := range real.Wakes {
		causes[k] = true
	}
	for k := range sim.Wakes {
		causes[k] = true
	}
	keys := make([]string, 0, len(causes))
	for k := range causes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, check("reclaims by "+k, float64(real.Wakes[k]), float64(sim.Wakes[k]), total(real.Wakes)))
	}
	return out
}

// num prints a figure with precision fitting its size.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// Replay simulates a recorded trace under policy with the trace's cores,
// arrivals and loop costs, and checks the simulation against the recorded
// loop events.
func Replay(t *Trace, policy scheduler.PolicyName) (Result, []Check, error) {
	res, err := Run(Config{Policy: policy, Cores: t.Header.Cores, Arrivals: t.Sources(), Duration: t.Duration, Costs: t.Costs()})
	if err != nil {
		return Result{}, nil, err
	}
	return res, SelfCheck(t.Summary(), res.Summary(), SelfCheckTolerance), nil
}

// WriteSelfCheck writes the checks as a list and reports whether all passed.
func WriteSelfCheck(w io.Writer, checks []Check) bool {
	ok := true
	for _, c := range checks {
		ok = ok && c.OK
	}
	verdict := "passed"
	if !ok {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "\nSelf-check against the recorded run %s:\n", verdict)
	for _, c := range checks {
		mark := "ok"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "* %s: %s (%s)\n", mark, c.Name, c.Detail)
	}
	return ok
}
