package eval

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/controlplane"
)

// DataplaneConfig selects a dataplane experiment.
type DataplaneConfig struct {
	Policies []string
	Loads    []float64     // DP utilisations to offer
	Duration time.Duration // traffic per cell; default 5s
	// Cyclictest is how long cyclictest runs per cell after the traffic,
	// beside the same CP load; 0 = default 5s, negative = skip.
	Cyclictest time.Duration
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
	return nil
}

// cpLoadName describes the backlogged CP workload in the report.
const cpLoadName = "stress-ng --dentry 2 + mmap storm"

// RunDataplane measures DP latency/throughput with a backlogged,
// kernel-heavy CP workload under each policy and load, beside a reference
// cell (static, no CP load) per load; rt-tests' cyclictest runs on the DP
// core after each cell's traffic, beside the same CP load.
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
	sys := env.System
	rep := &Report{
		Experiment: ExperimentDataplane,
		Started:    time.Now().UTC(),
		Machine:    ReadMachine(sys.DPCores(), sys.CPCores()),
		Params: map[string]any{"policies": cfg.Policies, "loads": cfg.Loads, "duration_s": cfg.Duration.Seconds(),
			"cyclictest_s": max(0, cfg.Cyclictest.Seconds()), "capacity_pps": env.CapacityPPS, "cp_load": cpLoadName,
			"traffic": "onoff", "cyclictest_priority": sys.DPPriority() + 1},
		Notes: []string{fmt.Sprintf("cyclictest runs at SCHED_FIFO %d (the DP loop's priority + 1, so a DP loop that "+
			"busy-polls under static does not starve it) on DP core %v, 200 µs period, after each cell's traffic with the CP load still running.",
			sys.DPPriority()+1, sys.DPCores())},
	}
	maps.Copy(rep.Params, env.Facts)
	if _, err := exec.LookPath("stress-ng"); err != nil {
		return nil, fmt.Errorf("stress-ng not found (Debian package stress-ng)")
	}
	for _, load := range cfg.Loads {
		cells := append([]string{"reference"}, cfg.Policies...)
		for _, cell := range cells {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			policy, withCP := cell, true
			if cell == "reference" {
				policy, withCP = "static", false
			}
			if env.Progress != nil {
				env.Progress.Show(fmt.Sprintf("%s, load %.2f", cell, load))
			}
			run := dataplaneRun(ctx, env, cfg, policy, load, withCP)
			rep.Runs = append(rep.Runs, run)
			if env.Progress != nil {
				env.Progress.Step(fmt.Sprintf("%s, load %.2f: DP p99 %s µs", cell, load, num(run.DP.LatUS.P99)))
			}
		}
	}
	return rep, nil
}

func dataplaneRun(ctx context.Context, env *Env, cfg DataplaneConfig, policy string, load float64, withCP bool) (run Run) {
	run = Run{Policy: policy, Load: load, CPLoad: "none"}
	sys := env.System
	if err := sys.SetPolicy(ctx, policy); err != nil {
		run.Error = fmt.Sprintf("set policy: %v", err)
		return run
	}
	// stress-ng's dentry storm works in a directory of ours, removed after
	// (a killed stressor leaves its files behind).
	stressDir, terr := os.MkdirTemp("", "taichi-stress-")
	if terr != nil {
		run.addErr(terr)
		return run
	}
	cpCtx, stopCP := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopCP()
		wg.Wait()
		os.RemoveAll(stressDir)
		env.settle(ctx)
	}()
	if withCP {
		run.CPLoad = cpLoadName
		bound := cfg.Duration + max(0, cfg.Cyclictest) + 30*time.Second
		loads := [][]string{
			{"stress-ng", "--dentry", "2", "--temp-path", stressDir, "--timeout", strconv.Itoa(int(bound.Seconds())) + "s", "--quiet"},
			append(append([]string(nil), env.GoHelper...), "mmap", "128", "100000"),
		}
		for _, argv := range loads {
			wg.Add(1)
			go func(argv []string) {
				defer wg.Done()
				lctx, cancel := context.WithTimeout(cpCtx, bound)
				defer cancel()
				// Ends by cancellation; its exit status then says nothing.
				_, _ = controlplane.RunPlaced(lctx, controlplane.PlacerFunc(sys.Place), env.GoHelperEnv, argv...)
			}(argv)
		}
	}
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
	if serr == nil && aerr == nil {
		d := after.Sub(before)
		run.WallS = d.WallS
		run.LentS, run.CPCPUS, run.HarvestedCPS, run.Reclaims = d.LentS, d.CPCPUS, d.CPOnDPS, d.Reclaims
		run.DP.IdleShare = idleShare(d, len(sys.DPCores()), load)
	} else {
		run.DP.IdleShare = 1 - load
	}
	run.CapacityBound = CapacityBound(run.DP.IdleShare, len(sys.DPCores()), len(sys.CPCores()))

	if cfg.Cyclictest > 0 && len(sys.DPCores()) > 0 {
		ct, err := Cyclictest(ctx, sys.DPCores()[0], sys.DPPriority()+1, cfg.Cyclictest)
		if err != nil {
			run.addErr(err)
		} else {
			run.CyclictestUS = &ct
		}
	}
	return run
}
