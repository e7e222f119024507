package eval

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// DataplaneConfig selects a dataplane experiment.
type DataplaneConfig struct {
	Policies []scheduler.PolicyName
	Loads    []float64     // DP utilisations to offer
	Duration time.Duration // traffic per cell; default 5s
	// Cyclictest is how long cyclictest runs per cell after the traffic,
	// beside the same CP load; 0 = default 5s, negative = skip.
	Cyclictest time.Duration
	// Repeat runs every cell this many times, the policies interleaved
	// within each repeat; default 1.
	Repeat int
	// CPLoad is the backlogged CP workload: mixed (default), kernel or user.
	CPLoad string
	// SLOs, when set, run taichi once per value (SLODefault: the daemon's
	// own bound), interleaved with the other policies.
	SLOs []time.Duration
}

// Runs is how many runs the experiment makes (the reference included).
func (c *DataplaneConfig) Runs() int {
	return len(c.Loads) * (len(armsOf(c.Policies, c.SLOs)) + 1) * max(c.Repeat, 1)
}

// Validate names the first bad field.
func (c *DataplaneConfig) Validate() error {
	if err := validatePolicies(c.Policies); err != nil {
		return err
	}
	if len(c.Loads) == 0 {
		return fmt.Errorf("loads: empty")
	}
	for _, l := range c.Loads {
		if l <= 0 || l > 1 {
			return fmt.Errorf("loads: %v: want 0 < load <= 1", l)
		}
	}
	if c.Duration < 0 || c.Duration > time.Hour {
		return fmt.Errorf("duration: %v: want 0..1h", c.Duration)
	}
	if c.Repeat < 0 || c.Repeat > 100 {
		return fmt.Errorf("repeat: %d: want 1..100", c.Repeat)
	}
	if c.CPLoad != "" && !slices.Contains(CPLoads, c.CPLoad) {
		return fmt.Errorf("cp-load: unknown %q (want %s, %s or %s)", c.CPLoad, CPLoadMixed, CPLoadKernel, CPLoadUser)
	}
	return validateSLOs(c.SLOs, c.Policies)
}

// RunDataplane measures what a backlogged CP workload on a lent DP core
// does to packets, under each policy and load, beside a reference cell
// (static, no CP load) per load. The headline is the DP loop's per-packet
// RX residence; rt-tests' cyclictest runs on the DP core after each cell's
// traffic, beside the same CP load.
func RunDataplane(ctx context.Context, env *Env, cfg DataplaneConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Cyclictest == 0 {
		cfg.Cyclictest = 5 * time.Second
	}
	cfg.Repeat = max(cfg.Repeat, 1)
	if cfg.CPLoad == "" {
		cfg.CPLoad = CPLoadMixed
	}
	sys := env.System
	rep := &Report{
		Experiment: ExperimentDataplane,
		Started:    time.Now().UTC(),
		Machine:    ReadMachine(sys.DPCores(), sys.CPCores()),
		Params: map[string]any{"policies": cfg.Policies, "loads": cfg.Loads, "duration_s": cfg.Duration.Seconds(),
			"cyclictest_s": max(0, cfg.Cyclictest.Seconds()), "capacity_pps": env.CapacityPPS, "cp_load": cfg.CPLoad,
			"repeat": cfg.Repeat, "traffic": "onoff", "cyclictest_priority": sys.DPPriority() + 1},
		Notes: []string{
			"DP residence is measured in the DP loop for every packet: from the kernel's RX stamp to the loop picking the packet up. " +
				"RTT is the generator's round trip, which also runs through the generator's core (shared with CP here).",
			fmt.Sprintf("cyclictest runs at SCHED_FIFO %d (the DP loop's priority + 1) on DP core %v, 200 µs period, after each cell's traffic with the CP load still running.",
				sys.DPPriority()+1, sys.DPCores()),
		},
	}
	if len(cfg.SLOs) > 0 {
		rep.Params["slo_sweep_us"] = sloParam(cfg.SLOs)
	}
	maps.Copy(rep.Params, env.Facts)
	if _, err := exec.LookPath("stress-ng"); err != nil && cfg.CPLoad != CPLoadUser {
		return nil, fmt.Errorf("stress-ng not found (Debian package stress-ng)")
	}
	for _, load := range cfg.Loads {
		for r := range cfg.Repeat {
			for _, s := range setupsWithReference(armsOf(cfg.Policies, cfg.SLOs)) {
				if ctx.Err() != nil {
					return finish(rep), ctx.Err()
				}
				label := fmt.Sprintf("%s, load %.2f, repeat %d/%d", s, load, r+1, cfg.Repeat)
				if env.Progress != nil {
					env.Progress.Show(label)
				}
				run := dataplaneRun(ctx, env, cfg, s, load)
				run.Repeat = r
				rep.Runs = append(rep.Runs, run)
				if env.Progress != nil {
					env.Progress.Step(fmt.Sprintf("%s: residence p99 %s µs", label, num(run.DP.ResidenceUS.P99)))
				}
			}
		}
	}
	return finish(rep), nil
}

// beginRun applies arm a (policy, and taichi's SLO) and, when cpLoad is
// not empty, starts that CP load for at most bound. It returns the end of
// the run (stop the load, record its failures, settle, put the SLO back),
// or false with the failure in run.
func beginRun(ctx context.Context, env *Env, run *Run, a arm, cpLoad string, bound time.Duration) (end func(), ok bool) {
	restoreSLO, ok := applyArm(ctx, env.System, run, a)
	if !ok {
		return nil, false
	}
	if cpLoad == "" {
		return func() {
			env.settle(ctx)
			restoreSLO()
		}, true
	}
	l, name, err := startCPLoad(ctx, env, cpLoad, bound)
	if err != nil {
		run.addErr(err)
		env.settle(ctx)
		restoreSLO()
		return nil, false
	}
	run.CPLoad = name
	return func() {
		run.CPLoadErrors = append(run.CPLoadErrors, l.stop()...)
		env.settle(ctx)
		restoreSLO()
	}, true
}

func dataplaneRun(ctx context.Context, env *Env, cfg DataplaneConfig, s setup, load float64) (run Run) {
	run = Run{Policy: s.policy, Load: load, CPLoad: "none"}
	sys := env.System
	cpLoad := ""
	if s.withCP {
		cpLoad = cfg.CPLoad
	}
	end, ok := beginRun(ctx, env, &run, s.arm, cpLoad, cfg.Duration+max(0, cfg.Cyclictest)+30*time.Second)
	if !ok {
		return run
	}
	defer end()
	env.settle(ctx)

	before, serr := sys.Snapshot()
	rate := int(load * float64(env.CapacityPPS))
	if env.Traffic != nil && rate > 0 {
		dp, err := env.Traffic(ctx, TrafficSpec{Rate: rate, Pattern: "onoff", Capacity: env.CapacityPPS, Duration: cfg.Duration})
		if err != nil {
			run.addErr(fmt.Errorf("traffic: %w", err))
		}
		run.DP = dp
	}
	after, aerr := sys.Snapshot()
	run.measured(sys, before, after, serr, aerr, load)

	run.cyclictest(ctx, sys, cfg.Cyclictest)
	return run
}

// cyclictest runs cyclictest for d (when positive) on the first DP core,
// one priority above the DP, and records its percentiles or its error.
func (r *Run) cyclictest(ctx context.Context, sys System, d time.Duration) {
	if d <= 0 || len(sys.DPCores()) == 0 {
		return
	}
	ct, err := Cyclictest(ctx, sys.DPCores()[0], sys.DPPriority()+1, d)
	if err != nil {
		r.addErr(err)
		return
	}
	r.CyclictestUS = &ct
}
