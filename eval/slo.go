package eval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// SLODefault in an SLO list stands for the daemon's own bound (configured
// or derived at start): ParseSLOs reads "default" as it.
const SLODefault time.Duration = 0

// ParseSLOs reads the --slo list: durations such as 50us, 250µs or 1ms,
// each positive, each once; "default" is the daemon's own bound. An empty
// list is an error: without the flag, the caller passes no list at all.
func ParseSLOs(names []string) ([]time.Duration, error) {
	if len(names) == 0 {
		return nil, errors.New("slo: empty list (want durations such as 100us,250us,1ms)")
	}
	var out []time.Duration
	for _, n := range names {
		v := SLODefault
		if n != "default" {
			d, err := time.ParseDuration(n)
			if err != nil {
				return nil, fmt.Errorf("slo: %q: not a duration (want e.g. 250us or 1ms, or default)", n)
			}
			if d <= 0 {
				return nil, fmt.Errorf("slo: %q: must be positive", n)
			}
			v = d
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("slo: %q listed twice", n)
		}
		out = append(out, v)
	}
	return out, nil
}

// validateSLOs checks a config's SLO sweep against its policies: the
// sweep runs taichi, so taichi must be among them.
func validateSLOs(slos []time.Duration, pols []scheduler.PolicyName) error {
	for i, v := range slos {
		if v < 0 {
			return fmt.Errorf("slo: %v: must be positive", v)
		}
		if slices.Contains(slos[:i], v) {
			return fmt.Errorf("slo: %v listed twice", sloText(v))
		}
	}
	if len(slos) > 0 && !slices.Contains(pols, scheduler.PolicyTaichi) {
		return fmt.Errorf("slo: sweeps the %s policy, which policies does not include", scheduler.PolicyTaichi)
	}
	return nil
}

// arm is one setup of a repeat: a policy, and for taichi the SLO it runs
// with (SLODefault: the daemon's own).
type arm struct {
	policy scheduler.PolicyName
	slo    time.Duration
}

// armsOf expands the policies into the runs of one repeat, in order:
// taichi once per SLO value where a sweep is given, every other policy
// once.
func armsOf(pols []scheduler.PolicyName, slos []time.Duration) []arm {
	var out []arm
	for _, p := range pols {
		if p != scheduler.PolicyTaichi || len(slos) == 0 {
			out = append(out, arm{policy: p})
			continue
		}
		for _, v := range slos {
			out = append(out, arm{policy: p, slo: v})
		}
	}
	return out
}

func (a arm) String() string { return variantName(a.policy, float64(a.slo)/1e3) }

// applyArm applies a's policy, a taichi arm's SLO first, and records the
// bound the run runs with. It returns what puts the SLO back after the run
// (recording a failure in run), or false with the failure in run.
//
// taichi starts each run from a clean slate, as it does after any other
// policy: setting the SLO (the arm's, or the one in force again for the
// default arm) drops what taichi learnt in the run before (the guard's
// back-off), so one run cannot start benched by another.
func applyArm(ctx context.Context, sys System, run *Run, a arm) (restore func(), ok bool) {
	restore = func() {}
	if a.policy == scheduler.PolicyTaichi {
		slo := a.slo
		if slo == SLODefault {
			slo = sys.SLO()
		}
		undo, err := sys.SetSLO(slo)
		if err != nil {
			run.SLOUS = float64(slo) / 1e3
			run.addErr(fmt.Errorf("set slo %v: %w", slo, err))
			return nil, false
		}
		restore = func() {
			if err := undo(); err != nil {
				run.addErr(fmt.Errorf("restore slo: %w", err))
			}
		}
	}
	if err := sys.SetPolicy(ctx, a.policy); err != nil {
		restore()
		run.addErr(fmt.Errorf("set policy: %w", err))
		return nil, false
	}
	if a.policy == scheduler.PolicyTaichi {
		run.SLOUS = float64(sys.SLO()) / 1e3
	}
	return restore, true
}

// variantName is a policy as tables and legends show it: taichi with the
// SLO it ran with ("taichi@250µs"), the others by name.
func variantName(p scheduler.PolicyName, sloUS float64) string {
	if sloUS <= 0 {
		return string(p)
	}
	return string(p) + "@" + sloText(time.Duration(sloUS*1e3))
}

// name is the run's policy as tables show it (see variantName).
func (r Run) name() string { return variantName(r.Policy, r.SLOUS) }

// sloText prints a bound as the flag takes it, to the µs: 250µs, 1ms,
// 1.5ms (a derived bound of 264.333µs shows as 264µs).
func sloText(v time.Duration) string {
	if v == SLODefault {
		return "default"
	}
	return v.Round(time.Microsecond).String()
}

// sloParam is the sweep as the report's params record it, in µs (0: the
// daemon's own bound).
func sloParam(slos []time.Duration) []float64 {
	out := make([]float64, len(slos))
	for i, v := range slos {
		out[i] = float64(v) / 1e3
	}
	return out
}
