package eval

import (
	"github.com/taichi-sched/taichi/internal/stats"

	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/controlplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// Env is what both experiments run in.
type Env struct {
	System  System
	Traffic Traffic
	// GenNS and DPIP are the generator's network namespace and the address
	// clients other than Traffic (ping) reach through the DP: the DP loop's
	// own (it reflects), or the sink's behind OVS (the sink's kernel answers).
	GenNS string
	DPIP  netip.Addr
	// DP is the data plane under test (DPLoop or DPOVS).
	DP string
	// CapacityPPS is the DP loop's packet rate at full utilisation on this
	// testbed; a load of 0.3 offers 0.3 × CapacityPPS on average.
	CapacityPPS int
	// Prefix makes every namespace and state dir unique (include a pid).
	Prefix string
	// WorkDir holds per-run state dirs (created and removed by each run).
	WorkDir string
	// GoHelper / GoHelperEnv run controlplane.HelperMain (see controlplane.Options).
	GoHelper    []string
	GoHelperEnv []string
	// Progress, if set, is advanced once per run.
	Progress *Progress
	// Facts are added to every report's params (e.g. the CP class in use).
	Facts map[string]any
	// Settle is the pause after a policy change and after a teardown, so one
	// run's leftovers (namespace cleanup runs in kernel workers) do not land
	// in the next. Default 500ms.
	Settle time.Duration
}

func (e *Env) settle(ctx context.Context) {
	d := e.Settle
	if d == 0 {
		d = 500 * time.Millisecond
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// VMStartupConfig selects a vm-startup experiment.
type VMStartupConfig struct {
	VMs      []int                  // densities, VMs requested at once
	Policies []scheduler.PolicyName // run interleaved: for each density, each policy
	DPLoad   float64                // average DP utilisation the generator offers (onoff bursts)
	VMSize   int                    // vCPUs per VM (work per VM scales with it); default 1
	Work     float64                // scales every VM's work; default 1
	// FailVM, when >= 0, gives that VM index an invalid vport request in
	// every run (tests use it to check failures are reported per VM).
	FailVM int
	// Repeat runs every density this many times, the policies interleaved
	// within each repeat; default 1.
	Repeat int
	// SLOs, when set, run taichi once per value (SLODefault: the daemon's
	// own bound), interleaved with the other policies.
	SLOs []time.Duration
	// SweepTopOnly runs the SLO values other than SLODefault only at the
	// highest density, the frontier's (a short sweep, as in the demo).
	SweepTopOnly bool
}

// armsAt are the runs of one repeat at density n.
func (c *VMStartupConfig) armsAt(n int) []arm {
	arms := armsOf(c.Policies, c.SLOs)
	if !c.SweepTopOnly || n == slices.Max(c.VMs) {
		return arms
	}
	return slices.DeleteFunc(arms, func(a arm) bool { return a.slo != SLODefault })
}

// Runs is how many runs the experiment makes.
func (c *VMStartupConfig) Runs() int {
	n := 0
	for _, vms := range c.VMs {
		n += len(c.armsAt(vms))
	}
	return n * max(c.Repeat, 1)
}

// Validate names the first bad field.
func (c *VMStartupConfig) Validate() error {
	if len(c.VMs) == 0 {
		return errors.New("vms: empty")
	}
	for _, n := range c.VMs {
		if n < 1 || n > 1024 {
			return fmt.Errorf("vms: %d: want 1..1024", n)
		}
	}
	if err := validatePolicies(c.Policies); err != nil {
		return err
	}
	if c.DPLoad < 0 || c.DPLoad > 1 {
		return fmt.Errorf("dp-load: %v: want 0..1", c.DPLoad)
	}
	if c.VMSize < 0 || c.VMSize > 64 {
		return fmt.Errorf("vm-size: %d: want 1..64", c.VMSize)
	}
	if c.Work < 0 {
		return fmt.Errorf("work: %v: want > 0", c.Work)
	}
	if c.Repeat < 0 || c.Repeat > 100 {
		return fmt.Errorf("repeat: %d: want 1..100", c.Repeat)
	}
	return validateSLOs(c.SLOs, c.Policies)
}

func validatePolicies(ps []scheduler.PolicyName) error {
	if len(ps) == 0 {
		return errors.New("policies: empty")
	}
	for _, p := range ps {
		if p == SetupOVSMaxSleep {
			continue
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("policies: %w (or %s with the OVS data plane)", err, SetupOVSMaxSleep)
		}
	}
	return nil
}

// ParsePolicies turns the CLI's policy names into policies, naming the
// valid ones on a bad name.
func ParsePolicies(names []string) ([]scheduler.PolicyName, error) {
	var out []scheduler.PolicyName
	for _, n := range names {
		if n == string(SetupOVSMaxSleep) {
			out = append(out, SetupOVSMaxSleep)
			continue
		}
		p, err := scheduler.ParsePolicyName(n)
		if err != nil {
			return nil, fmt.Errorf("policies: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// setup is one cell of the dataplane and ping experiments: an arm with
// the CP load, or the reference (static without it).
type setup struct {
	arm
	withCP bool
}

func (s setup) String() string {
	if !s.withCP {
		return "reference"
	}
	return s.arm.String()
}

// setupsWithReference leads the arms with the reference every arm's run
// is compared with.
func setupsWithReference(arms []arm) []setup {
	out := []setup{{arm: arm{policy: scheduler.PolicyStatic}}}
	for _, a := range arms {
		out = append(out, setup{arm: a, withCP: true})
	}
	return out
}

// RunVMStartup runs the density experiment: for each density N and each
// policy, N VMs are requested at once through the CP pipeline (its processes
// placed in the CP pool) while the generator drives the DP loop.
func RunVMStartup(ctx context.Context, env *Env, cfg VMStartupConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.VMSize == 0 {
		cfg.VMSize = 1
	}
	if cfg.Work == 0 {
		cfg.Work = 1
	}
	cfg.Repeat = max(cfg.Repeat, 1)
	sys := env.System
	rep := &Report{
		Experiment: ExperimentVMStartup,
		Started:    time.Now().UTC(),
		Machine:    ReadMachine(sys.DPCores(), sys.CPCores()),
		Params: map[string]any{"vms": cfg.VMs, "policies": cfg.Policies, "dp_load": cfg.DPLoad,
			"vm_size": cfg.VMSize, "work": cfg.Work, "capacity_pps": env.CapacityPPS, "traffic": "onoff"},
		Notes: []string{"Startup = request to last step done, all VMs of a row requested at once; their CP processes run in the CP pool. " +
			"The traffic generator runs on the CP core here (2 cores), its sender pinned there in every run so that every cell offers the same load: " +
			"under static it competes with the CP pipeline for the only CP core, so speedups can exceed the capacity bound. DP loss includes packets still in flight when the traffic stops at the last VM's completion."},
	}
	rep.Params["repeat"] = cfg.Repeat
	if len(cfg.SLOs) > 0 {
		rep.Params["slo_sweep_us"] = sloParam(cfg.SLOs)
		rep.Params["slo_sweep_top_only"] = cfg.SweepTopOnly
	}
	maps.Copy(rep.Params, env.Facts)
	for _, n := range cfg.VMs {
		for r := range cfg.Repeat {
			for _, a := range cfg.armsAt(n) {
				if ctx.Err() != nil {
					return finish(rep), ctx.Err()
				}
				label := fmt.Sprintf("%s, %d VMs, repeat %d/%d", a, n, r+1, cfg.Repeat)
				if env.Progress != nil {
					env.Progress.Show(label)
				}
				run := vmStartupRun(ctx, env, cfg, a, n, len(rep.Runs))
				run.Repeat = r
				rep.Runs = append(rep.Runs, run)
				if env.Progress != nil {
					env.Progress.Step(fmt.Sprintf("%s: p50 %s ms", label, num(pNum(run.StartupMS).P50)))
				}
			}
		}
	}
	return finish(rep), nil
}

func pNum(p *Percentiles) Percentiles {
	if p == nil {
		return Percentiles{}
	}
	return *p
}

// fillSpeedups sets each run's startup speedup over static at its density,
// in the same repeat (the runs of a repeat are interleaved: same conditions).
func fillSpeedups(rep *Report) {
	for i := range rep.Runs {
		r := &rep.Runs[i]
		if r.StartupMS == nil || r.StartupMS.P50 <= 0 {
			continue
		}
		for _, s := range rep.Runs {
			if s.Policy == scheduler.PolicyStatic && s.VMs == r.VMs && s.Repeat == r.Repeat && s.StartupMS != nil && s.StartupMS.P50 > 0 {
				r.SpeedupVsStatic = s.StartupMS.P50 / r.StartupMS.P50
			}
		}
	}
}

func vmStartupRun(ctx context.Context, env *Env, cfg VMStartupConfig, a arm, n, seq int) (run Run) {
	run = Run{Policy: a.policy, VMs: n, Load: cfg.DPLoad, CPLoad: "vm-startup"}
	sys := env.System
	restoreSLO, ok := applyArm(ctx, sys, &run, a)
	if !ok {
		return run
	}
	defer restoreSLO()
	env.settle(ctx)

	p, err := controlplane.New(controlplane.Options{
		Prefix:      fmt.Sprintf("%s%d", env.Prefix, seq),
		StateDir:    filepath.Join(env.WorkDir, fmt.Sprintf("vm-startup-%d", seq)),
		Placer:      controlplane.PlacerFunc(sys.Place),
		GoHelper:    env.GoHelper,
		GoHelperEnv: env.GoHelperEnv,
		Work:        cfg.Work,
	})
	if err != nil {
		run.Error = err.Error()
		return run
	}
	defer func() {
		if err := p.Teardown(); err != nil && run.Error == "" {
			run.Error = fmt.Sprintf("teardown: %v", err)
		}
		if left := p.Leftovers(); len(left) > 0 && run.Error == "" {
			run.Error = fmt.Sprintf("teardown left %v", left)
		}
		env.settle(ctx)
	}()
	if err := p.Setup(ctx); err != nil {
		run.Error = err.Error()
		return run
	}
	vms := vmsToStart(n, cfg)

	// Traffic runs for the whole startup and a little before it, so the DP
	// loop is in its steady on/off pattern when the requests arrive.
	trafCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	type trafResult struct {
		dp  DP
		err error
	}
	trafDone := make(chan trafResult, 1)
	rate := int(cfg.DPLoad * float64(env.CapacityPPS))
	before, serr := sys.Snapshot()
	if rate > 0 && env.Traffic != nil {
		go func() {
			dp, err := env.Traffic(trafCtx, TrafficSpec{Rate: rate, Pattern: "onoff", Capacity: env.CapacityPPS, Duration: 10 * time.Minute})
			trafDone <- trafResult{dp, err}
		}()
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	} else {
		trafDone <- trafResult{}
	}

	results, err := p.Start(ctx, vms)
	stopTraffic()
	tr := <-trafDone
	after, aerr := sys.Snapshot()
	if err != nil {
		run.addErr(err)
	}
	if tr.err != nil {
		run.addErr(fmt.Errorf("traffic: %w", tr.err))
	}
	run.DP = tr.dp
	run.addStartups(results)
	run.measured(sys, before, after, serr, aerr, cfg.DPLoad)
	return run
}

// vmsToStart is the run's n VMs; cfg.FailVM, if one of them, asks for an
// MTU no device takes, so its startup fails on purpose.
func vmsToStart(n int, cfg VMStartupConfig) []controlplane.VM {
	vms := make([]controlplane.VM, n)
	for i := range vms {
		vms[i] = controlplane.VM{ID: i, Size: cfg.VMSize}
		if i == cfg.FailVM {
			vms[i].MTU = 1 << 20
		}
	}
	return vms
}

// addStartups records the VMs' startup times, failures and mean step
// durations.
func (r *Run) addStartups(results []controlplane.Result) {
	var lat []float64
	stepSum, stepN := map[string]float64{}, map[string]int{}
	for _, res := range results {
		for _, st := range res.Steps {
			stepSum[st.Step] += st.MS
			stepN[st.Step]++
		}
		if res.OK {
			r.VMsOK++
			lat = append(lat, res.StartupMS)
		} else {
			r.VMsFailed++
			r.Failures = append(r.Failures, fmt.Sprintf("vm %d: %s: %s", res.ID, res.Failed, res.Error))
		}
	}
	s := stats.Summarize(lat)
	r.StartupMS = &s
	if len(stepSum) > 0 {
		r.StepMS = map[string]float64{}
		for k, v := range stepSum {
			r.StepMS[k] = v / float64(stepN[k])
		}
	}
}

// SelfHelper returns the argv that runs this binary's cp-helper subcommand.
func SelfHelper() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "cp-helper"}, nil
}

func (r *Run) addErr(err error) {
	if r.Error == "" {
		r.Error = err.Error()
	} else {
		r.Error += "; " + err.Error()
	}
}
