package eval

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/trafficgen"
)

// ExperimentSoak runs each policy for minutes per cell, the way a daemon
// runs for days: RX residence, lending, harvest and the guard per 1 s
// window.
const ExperimentSoak = "soak"

// Soak limits and shape.
const (
	// MinSoakDuration is the shortest cell: under it a cell is no soak
	// and its window series says nothing about recovery.
	MinSoakDuration = 10 * time.Second
	// soakWindow is the sampling window.
	soakWindow = time.Second
	// soakChunk is the longest generator run a cell asks for at once: a
	// longer cell chains runs back to back (the generator bounds one run
	// at 5 minutes, the eval's Traffic at 4).
	soakChunk = 4 * time.Minute
	// soakCellOverhead is a cell's time besides its traffic (policy
	// switch, CP load start, settles, the generator's drains); soakSetup
	// the bench's (testbed, daemon, capacity probe). Both only feed the
	// expected total printed at start; measured here on 12-07: 1.6 s a
	// cell and 5.4 s.
	soakCellOverhead = 2 * time.Second
	soakSetup        = 10 * time.Second
	// soakBudget is what the default soak must fit in.
	soakBudget = 30 * time.Minute
)

// SoakTraffic are the generator patterns a soak runs, in order.
var SoakTraffic = []string{trafficgen.PatternOnOff, trafficgen.PatternPoisson}

// SoakConfig selects a soak.
type SoakConfig struct {
	Policies []scheduler.PolicyName
	// Traffic patterns (onoff, poisson), CP loads (user, kernel, mixed)
	// and packet-processing placements (SoftirqCP, SoftirqDP) each make a
	// cell group; the policies run interleaved within each group.
	Traffic []string
	CPLoads []string
	Softirq []string
	// Duration is the traffic per cell (at least MinSoakDuration).
	Duration time.Duration
	// Repeat runs every group this many times.
	Repeat int
	// Load is the DP utilisation offered (share of the path's capacity).
	Load float64
}

// DefaultSoakConfig is `taichi eval soak` without flags: every policy,
// both patterns, a user-mode and a kernel-heavy CP load, both placements,
// one repeat, with a duration that keeps the whole soak within 30 min.
func DefaultSoakConfig() SoakConfig {
	return SoakConfig{
		Policies: []scheduler.PolicyName{scheduler.PolicyStatic, scheduler.PolicyDynamic, scheduler.PolicyTaichi},
		Traffic:  slices.Clone(SoakTraffic), CPLoads: []string{CPLoadUser, CPLoadKernel},
		Softirq: []string{SoftirqCP, SoftirqDP}, Duration: time.Minute, Repeat: 1, Load: 0.3,
	}
}

// Validate names the first bad field (as the command's flag).
func (c SoakConfig) Validate() error {
	if err := validatePolicies(c.Policies); err != nil {
		return err
	}
	if slices.Contains(c.Policies, SetupOVSMaxSleep) {
		return fmt.Errorf("policies: %s needs the OVS data plane, which the soak does not run", SetupOVSMaxSleep)
	}
	if err := oneOfEach("traffic", c.Traffic, SoakTraffic); err != nil {
		return err
	}
	if err := oneOfEach("cp-load", c.CPLoads, CPLoads); err != nil {
		return err
	}
	if err := oneOfEach("softirq", c.Softirq, []string{SoftirqCP, SoftirqDP}); err != nil {
		return err
	}
	switch {
	case c.Duration < MinSoakDuration:
		return fmt.Errorf("duration: %v: want at least %v per cell", c.Duration, MinSoakDuration)
	case c.Duration > 24*time.Hour:
		return fmt.Errorf("duration: %v: want at most 24h per cell", c.Duration)
	case c.Repeat < 1 || c.Repeat > 100:
		return fmt.Errorf("repeat: %d: want 1..100", c.Repeat)
	case !(c.Load > 0 && c.Load <= 1):
		return fmt.Errorf("load: %v: want 0 < load <= 1", c.Load)
	}
	return nil
}

// oneOfEach checks a list flag: not empty, each value known, none twice.
func oneOfEach(key string, got, known []string) error {
	if len(got) == 0 {
		return fmt.Errorf("%s: empty", key)
	}
	for i, v := range got {
		if !slices.Contains(known, v) {
			return fmt.Errorf("%s: unknown %q (want one or more of %v)", key, v, known)
		}
		if slices.Contains(got[:i], v) {
			return fmt.Errorf("%s: %q listed twice", key, v)
		}
	}
	return nil
}

// Cells is how many cells (runs) the soak makes.
func (c SoakConfig) Cells() int {
	return len(c.Policies) * len(c.Traffic) * len(c.CPLoads) * len(c.Softirq) * max(c.Repeat, 1)
}

// Expected is how long the whole soak should take: every cell's traffic
// and overhead, and the bench's setup.
func (c SoakConfig) Expected() time.Duration {
	return soakSetup + time.Duration(c.Cells())*(c.Duration+soakCellOverhead)
}

// SoakBench is what a soak runs on: the eval's environment, the daemon's
// status read each window, and the switch of where packets are processed.
type SoakBench struct {
	env    *Env
	sample func() soakSample
	steer  func(ctx context.Context, softirq string) error
}

// NewSoakBench soaks a started bench (the daemon's DP loop on the
// testbed; not the OVS data plane).
func NewSoakBench(b *Bench) (*SoakBench, error) {
	if b.ovs != nil {
		return nil, errors.New("soak: runs on taichi's DP loop, not --dp ovs")
	}
	d, tb := b.Daemon, b.Testbed
	dp := d.Config().DPCPUs[0]
	return &SoakBench{
		env:    b.Env,
		sample: func() soakSample { return sampleDaemon(d) },
		steer: func(ctx context.Context, softirq string) error {
			if softirq == SoftirqDP {
				return tb.SteerRX(ctx, dp)
			}
			return tb.SteerRX(ctx, -1)
		},
	}, nil
}

// soakCell is one run of a soak.
type soakCell struct {
	policy                   scheduler.PolicyName
	traffic, cpLoad, softirq string
	repeat                   int
}

// RunSoak runs every cell of cfg: per repeat, per placement, pattern and
// CP load, each policy for cfg.Duration, sampling the daemon every second.
func RunSoak(ctx context.Context, sb *SoakBench, cfg SoakConfig) (*SoakReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	env := sb.env
	sys := env.System
	if env.Traffic == nil || env.CapacityPPS <= 0 {
		return nil, errors.New("soak: no traffic generator (the bench measured no capacity)")
	}
	if _, err := exec.LookPath("stress-ng"); err != nil && slices.ContainsFunc(cfg.CPLoads, func(l string) bool { return l != CPLoadUser }) {
		return nil, fmt.Errorf("stress-ng not found (Debian package stress-ng)")
	}
	rate := int(cfg.Load * float64(env.CapacityPPS))
	rep := &SoakReport{
		Experiment: ExperimentSoak,
		Started:    time.Now().UTC(),
		Machine:    ReadMachine(sys.DPCores(), sys.CPCores()),
		Params:     map[string]any{},
	}
	maps.Copy(rep.Params, env.Facts)
	maps.Copy(rep.Params, map[string]any{
		"policies": cfg.Policies, "traffic": cfg.Traffic, "cp_loads": cfg.CPLoads, "softirq": cfg.Softirq,
		"duration_s": cfg.Duration.Seconds(), "repeat": cfg.Repeat, "load": cfg.Load, "rate_pps": rate,
		"capacity_pps": env.CapacityPPS, "window_s": soakWindow.Seconds(), "expected_s": cfg.Expected().Seconds(),
	})
	rep.Notes = soakNotes()
	defer func() {
		// Leave the testbed as the bench set it up: packets processed
		// where the sender runs.
		_ = sb.steer(context.WithoutCancel(ctx), SoftirqCP)
	}()
	for r := range cfg.Repeat {
		for _, place := range cfg.Softirq {
			if err := sb.steer(ctx, place); err != nil {
				return finishSoak(rep), fmt.Errorf("softirq %s: %w", place, err)
			}
			for _, tr := range cfg.Traffic {
				for _, load := range cfg.CPLoads {
					for _, pol := range cfg.Policies {
						if ctx.Err() != nil {
							return finishSoak(rep), ctx.Err()
						}
						c := soakCell{policy: pol, traffic: tr, cpLoad: load, softirq: place, repeat: r}
						label := fmt.Sprintf("%s, %s traffic, %s CP, softirq %s, repeat %d/%d", pol, tr, load, place, r+1, cfg.Repeat)
						if env.Progress != nil {
							env.Progress.Show(label)
						}
						run := soakRun(ctx, sb, cfg, c, rate)
						rep.Runs = append(rep.Runs, run)
						if env.Progress != nil {
							env.Progress.Step(fmt.Sprintf("%s: residence p99 %s µs, harvested %s s", label,
								num(run.DP.ResidenceUS.P99), num(harvestedCP(run.Run))))
						}
					}
				}
			}
		}
	}
	return finishSoak(rep), nil
}

// soakNotes say what the process-wide figures cover.
func soakNotes() []string {
	return []string{
		"The daemon runs inside the eval process (in `taichi eval`, its DP loops run in their own dp-host processes), as do the traffic generator's sender " +
			"and receiver and the soak's sampler: the thread check samples every thread of the eval process each second " +
			"(/proc/self/task/*/stat fields 3, 14, 15 and 39, and sched_getaffinity; a thread counts when it ran on a DP core since the last sample " +
			"or may run there). Daemon CPU is " + DaemonCPUSource + "; the eval process CPU (per window in the JSON) is the daemon's own status " +
			"figure (utime+stime of the whole process: daemon, generator, sampler).",
		"Windows are 1 s: residence p99 from the difference of the DP loops' histograms (a bucket's upper bound, never an underestimate), " +
			"late share the packets above the SLO (the bucket holding the SLO counts as late), lent share per DP core, harvest the CP CPU time " +
			"on DP cores, benched when a DP core was benched at the window's end or the guard tripped in it.",
	}
}

// soakRun runs one cell: the policy and CP load, the generator chained
// over the duration, the sampler beside it.
func soakRun(ctx context.Context, sb *SoakBench, cfg SoakConfig, c soakCell, rate int) SoakRun {
	env := sb.env
	sys := env.System
	run := SoakRun{Run: Run{Policy: c.policy, Repeat: c.repeat, Load: cfg.Load, CPLoad: "none"},
		Traffic: c.traffic, CPLoadKind: c.cpLoad, Softirq: c.softirq, RatePPS: rate}
	end, ok := beginRun(ctx, env, &run.Run, arm{policy: c.policy}, c.cpLoad, cfg.Duration+time.Minute)
	if !ok {
		return run
	}
	defer end()
	env.settle(ctx)
	slo := sys.SLO()
	run.LateSLOUS = float64(slo) / 1e3
	before, berr := sys.Snapshot()
	limit := int(cfg.Duration/soakWindow) + 30
	sampler := startSoakSampler(sb.sample, sys.DPCores(), slo, soakWindow, limit)
	spec := TrafficSpec{Rate: rate, Pattern: c.traffic, Capacity: env.CapacityPPS}
	for _, d := range soakChunks(cfg.Duration) {
		spec.Duration = d
		dp, err := env.Traffic(ctx, spec)
		run.Chunks = append(run.Chunks, SoakChunk{DurationS: d.Seconds(), DP: dp})
		if err != nil {
			run.addErr(fmt.Errorf("traffic: %w", err))
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	windows, first, last, dropped := sampler.finish()
	after, aerr := sys.Snapshot()
	run.DP = combineChunks(run.Chunks)
	run.measured(sys, before, after, berr, aerr, cfg.Load)
	run.summarise(windows, first, last, dropped, slo)
	return run
}

// soakChunks splits a cell's traffic into generator runs of at most
// soakChunk each.
func soakChunks(d time.Duration) []time.Duration {
	var out []time.Duration
	for d > 0 {
		c := min(d, soakChunk)
		out = append(out, c)
		d -= c
	}
	return out
}

// combineChunks folds chained generator runs into one: rates and loss
// weighted by each run's duration, the round trip of the run with the
// worst p99 (with every run's reply count).
func combineChunks(chunks []SoakChunk) DP {
	var out DP
	var total float64
	n := 0
	for _, c := range chunks {
		w := c.DurationS
		total += w
		out.OfferedPPS += w * c.DP.OfferedPPS
		out.RequestedPPS += w * c.DP.RequestedPPS
		out.PPS += w * c.DP.PPS
		out.Loss += w * c.DP.Loss
		n += c.DP.LatUS.N
		if c.DP.LatUS.P99 >= out.LatUS.P99 {
			out.LatUS = c.DP.LatUS
		}
	}
	if total > 0 {
		out.OfferedPPS /= total
		out.RequestedPPS /= total
		out.PPS /= total
		out.Loss /= total
	}
	out.LatUS.N = n
	return out
}
