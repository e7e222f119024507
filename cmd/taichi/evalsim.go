package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
	"github.com/taichi-sched/taichi/eval/sim"
	"github.com/taichi-sched/taichi/scheduler"
)

// simFlags are `taichi eval sim`'s settings as typed.
type simFlags struct {
	cores, rates, policy, pattern, out, trace, record string
	duration, wake, lead, poll                        time.Duration
	seed                                              uint64
}

func newEvalSimCmd() *cobra.Command {
	var fl simFlags
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "The real scheduler engine on simulated time: harvest, reclaims, SLO breaches and the engine's own cost from 1 to 64 DP cores",
		Long: `Drives the scheduler engine and policies the daemon runs (no copy of their
logic) with per-core packet traces through a model of the DP loop, on a
deterministic simulated clock. For every --cores × --rate it reports the
lent core-seconds, reclaims by cause, SLO breaches and what the engine
itself costs on this machine's real clock: ns per event and share of a core.
--trace replays a recorded trace instead and checks the simulation against
the recorded loop (harvest and reclaims within 10%).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fl.trace != "" {
				return runSimTrace(cmd, fl)
			}
			c, err := fl.scaleConfig()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if fl.record != "" && (len(c.Cores) != 1 || len(c.Rates) != 1) {
				return &exitError{code: 2, err: errors.New("record: needs one --cores and one --rate value")}
			}
			var points []sim.Point
			if fl.record != "" {
				points, err = recordOne(c, fl.record)
			} else {
				points, err = sim.Scale(c)
			}
			if err != nil {
				return err
			}
			sim.WriteTable(cmd.OutOrStdout(), c, points)
			return writeSimFiles(cmd, fl.out, c, points)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.cores, "cores", "1,4,16,64", "DP core counts to simulate")
	f.StringVar(&fl.rates, "rate", "1000,5000,50000", "target engine events per second per DP core (traffic offers half as many packets)")
	f.StringVar(&fl.policy, "policy", string(scheduler.PolicyTaichi), "policy: static, dynamic or taichi")
	f.StringVar(&fl.pattern, "pattern", string(sim.Poisson), "traffic: poisson, onoff, diurnal or leadbursts")
	f.DurationVar(&fl.duration, "duration", time.Second, "simulated time per run")
	f.Uint64Var(&fl.seed, "seed", 1, "traffic seed (core i uses seed+i)")
	f.DurationVar(&fl.wake, "wake-cost", sim.DefaultCosts.Wake, "loop model: time to wake a blocked DP loop")
	f.DurationVar(&fl.lead, "lead", sim.DefaultCosts.Lead, "loop model: how long before a packet the probe reports it (0: no probe)")
	f.DurationVar(&fl.poll, "poll-cost", sim.DefaultCosts.Poll, "loop model: one empty poll")
	f.StringVar(&fl.out, "out", "out/eval", "output directory (sim.json, sim.md, sim-cost.png)")
	f.StringVar(&fl.trace, "trace", "", "replay this recorded trace and self-check against it (ignores --cores, --rate, --pattern)")
	f.StringVar(&fl.record, "record", "", "write the simulated run's trace here, in the recorded-trace format (one --cores, one --rate)")
	return cmd
}

func (fl simFlags) costs() (sim.Costs, error) {
	c := sim.DefaultCosts
	c.Wake, c.Lead, c.Poll = fl.wake, fl.lead, fl.poll
	switch {
	case c.Wake < 0:
		return c, fmt.Errorf("wake-cost: %v: must not be negative", c.Wake)
	case c.Lead < 0:
		return c, fmt.Errorf("lead: %v: must not be negative", c.Lead)
	case c.Poll <= 0:
		return c, fmt.Errorf("poll-cost: %v: must be positive", c.Poll)
	}
	return c, nil
}

func (fl simFlags) scaleConfig() (sim.ScaleConfig, error) {
	c := sim.ScaleConfig{Policy: scheduler.PolicyName(fl.policy), Pattern: sim.Pattern(fl.pattern), Duration: fl.duration, Seed: fl.seed}
	var err error
	if c.Costs, err = fl.costs(); err != nil {
		return c, err
	}
	if c.Cores, err = parseInts("cores", fl.cores); err != nil {
		return c, err
	}
	for _, f := range splitList(fl.rates) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return c, fmt.Errorf("rate: %q: not a number", f)
		}
		c.Rates = append(c.Rates, v)
	}
	return c, c.Validate()
}

// recordOne runs the single point of c with its trace written to path.
func recordOne(c sim.ScaleConfig, path string) ([]sim.Point, error) {
	fh, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	defer fh.Close()
	cfg := sim.Config{Policy: c.Policy, Duration: c.Duration, Costs: c.Costs}
	for i := range c.Cores[0] {
		src, err := sim.Synthetic(c.Pattern, c.Rates[0]/2, c.Shape, c.Seed+uint64(i))
		if err != nil {
			return nil, err
		}
		cfg.Cores, cfg.Arrivals = append(cfg.Cores, i+1), append(cfg.Arrivals, src)
	}
	cfg.Record = sim.NewTraceWriter(fh, cfg.Cores, c.Costs)
	res, err := sim.Run(cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.Record.Close(c.Duration); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return []sim.Point{sim.NewPoint(c.Rates[0], c.Pattern, res)}, fh.Close()
}

// runSimTrace replays a recorded trace and prints the run and its
// self-check against the recorded loop.
func runSimTrace(cmd *cobra.Command, fl simFlags) error {
	fh, err := os.Open(fl.trace)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("trace: %w", err)}
	}
	defer fh.Close()
	tr, err := sim.ReadTrace(fh)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if _, err := scheduler.LookupPolicy(scheduler.PolicyName(fl.policy)); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("policy: %w", err)}
	}
	res, checks, err := sim.Replay(tr, scheduler.PolicyName(fl.policy))
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	c := sim.ScaleConfig{Policy: res.Policy, Pattern: "recorded", Duration: tr.Duration, Costs: tr.Costs()}
	sim.WriteTable(w, c, []sim.Point{sim.NewPoint(res.EventsPerCoreS(), c.Pattern, res)})
	if !sim.WriteSelfCheck(w, checks) {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning: self-check failed: the simulation does not reproduce the recorded run")
	}
	return nil
}

// writeSimFiles writes DIR/sim.json, sim.md and sim-cost.png.
func writeSimFiles(cmd *cobra.Command, dir string, c sim.ScaleConfig, points []sim.Point) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	doc := map[string]any{"experiment": "sim", "started": time.Now().UTC(), "config": c,
		"points": points, "saturation": sim.Saturations(points), "note": sim.CostNote}
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	paths := []string{filepath.Join(dir, "sim.json"), filepath.Join(dir, "sim.md"), filepath.Join(dir, "sim-cost.png")}
	if err := os.WriteFile(paths[0], append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := writeWith(paths[1], func(w io.Writer) { fmt.Fprint(w, "## sim\n\n"); sim.WriteTable(w, c, points) }); err != nil {
		return err
	}
	if err := eval.WriteSimFigure(paths[2], points); err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(cmd.ErrOrStderr(), "wrote", p)
	}
	return nil
}

func writeWith(path string, f func(io.Writer)) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	f(fh)
	return fh.Close()
}
