package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
)

func newEvalSoakCmd() *cobra.Command {
	def := eval.DefaultSoakConfig()
	var policies, traffic, cpLoads, softirq, out, logFile, cpClass string
	var cpWeight int
	cfg := def
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Long runs per policy: RX residence, lending, harvest and the SLO guard per 1 s window (JSON, Markdown, PNG per cell group)",
		Long: "Runs each policy for --duration per cell, interleaved, for each traffic pattern, CP load and packet-processing placement, " +
			"sampling the daemon every second. The defaults run in about " + def.Expected().Round(time.Minute).String() + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Policies, err = eval.ParsePolicies(splitList(policies)); err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg.Traffic, cfg.CPLoads, cfg.Softirq = splitList(traffic), splitList(cpLoads), splitList(softirq)
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "soak: %d cells × %v of traffic; expected total %v (finishing about %s)\n",
				cfg.Cells(), cfg.Duration, cfg.Expected().Round(time.Second), time.Now().Add(cfg.Expected()).Format("15:04"))
			return runSoak(cmd, cfg, out, logFile, eval.BenchOptions{CPClass: cpClass, CPWeight: cpWeight})
		},
	}
	f := cmd.Flags()
	f.StringVar(&policies, "policies", joinPolicies(def), "policies, run interleaved within each cell group")
	f.StringVar(&traffic, "traffic", strings.Join(def.Traffic, ","), "generator patterns, one cell group each: onoff, poisson")
	f.StringVar(&cpLoads, "cp-load", strings.Join(def.CPLoads, ","), "backlogged CP loads in turn: user (Go and Python busy helpers), kernel (dentry and mmap storms), mixed")
	f.StringVar(&softirq, "softirq", strings.Join(def.Softirq, ","), "where the kernel processes the generator's packets past the probe: cp (with the sender), dp (the DP core)")
	f.DurationVar(&cfg.Duration, "duration", def.Duration, "traffic per cell (at least 10s)")
	f.IntVar(&cfg.Repeat, "repeat", def.Repeat, "runs per cell, the policies interleaved within each repeat")
	f.Float64Var(&cfg.Load, "load", def.Load, "average DP utilisation the generator offers (share of the measured capacity)")
	f.StringVar(&out, "out", "out/eval", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	f.StringVar(&cpClass, "cp-class", eval.DefaultCPClass, "vcpu.class for CP work: idle or low-weight")
	f.IntVar(&cpWeight, "cp-weight", eval.DefaultCPWeight, "vcpu.weight with --cp-class low-weight (100 = a normal task)")
	return cmd
}

func joinPolicies(c eval.SoakConfig) string {
	names := make([]string, len(c.Policies))
	for i, p := range c.Policies {
		names[i] = string(p)
	}
	return strings.Join(names, ",")
}

// runSoak sets the bench up (packets processed with the sender; each cell
// steers them), soaks, tears down, and writes the files; SIGINT/SIGTERM
// stop it and still write what was measured.
func runSoak(cmd *cobra.Command, cfg eval.SoakConfig, out, logFile string, opts eval.BenchOptions) error {
	opts.Progress = eval.NewProgress(os.Stdout, cfg.Cells())
	var rep *eval.SoakReport
	err := onBench(cmd, opts, logFile, func(ctx context.Context, b *eval.Bench) error {
		sb, err := eval.NewSoakBench(b)
		if err != nil {
			return err
		}
		rep, err = eval.RunSoak(ctx, sb, cfg)
		return err
	})
	if rep == nil {
		return err
	}
	return writeSoakReport(cmd, out, rep, err)
}

// writeSoakReport writes the files and prints the table; failed checks
// warn, failed runs exit 1.
func writeSoakReport(cmd *cobra.Command, out string, rep *eval.SoakReport, runErr error) error {
	files, err := eval.WriteSoakFiles(out, rep)
	if err != nil {
		return err
	}
	pngs, err := eval.WriteSoakPlots(out, rep)
	if err != nil {
		return err
	}
	eval.WriteSoakMarkdown(cmd.OutOrStdout(), rep)
	return finishReport(cmd, append(files, pngs...), rep.Checks, runErr, eval.FailedSoakRuns(rep), len(rep.Runs))
}
