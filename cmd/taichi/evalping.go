package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
	"github.com/taichi-sched/taichi/scheduler"
)

func newEvalPingCmd() *cobra.Command {
	var policies, out, logFile, cpLoad string
	var count, repeat, clientFIFO int
	var interval, timeout, ct time.Duration
	cmd := &cobra.Command{
		Use:   "ping",
		Short: "The paper's ping table: iputils ping against the DP loop, static without CP and each policy with a backlogged CP load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pols, err := dpPolicies(cmd, splitList(policies))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg := eval.PingConfig{Policies: pols, Count: count, Interval: interval, Timeout: timeout,
				Repeat: repeat, CPLoad: cpLoad, ClientFIFO: clientFIFO, Cyclictest: max(0, ct)}
			if cfg.SLOs, err = sloFlag(cmd); err != nil {
				return &exitError{code: 2, err: err}
			}
			// The config reads zero as "default"; on the command line it is a mistake.
			for key, v := range map[string]int64{"count": int64(count), "interval": int64(interval), "timeout": int64(timeout), "repeat": int64(repeat)} {
				if v <= 0 {
					return &exitError{code: 2, err: fmt.Errorf("%s: must be positive", key)}
				}
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return runExperiment(cmd, out, logFile, cfg.Runs(), func(ctx context.Context, env *eval.Env) (*eval.Report, error) {
				return eval.RunPing(ctx, env, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&count, "count", 10000, "echoes per run (ping -c)")
	f.DurationVar(&interval, "interval", time.Millisecond, "between echoes (ping -i; below 2ms needs root)")
	f.DurationVar(&timeout, "timeout", time.Second, "wait per reply (ping -W)")
	f.IntVar(&repeat, "repeat", 1, "runs per setup, setups interleaved within each repeat (the table shows the median and min–max)")
	f.DurationVar(&ct, "cyclictest", 5*time.Second, "cyclictest on the DP core after each run's ping, CP load still running (0: skip)")
	f.IntVar(&clientFIFO, "client-fifo", 1, "SCHED_FIFO priority for ping, which shares its core with the CP load (0: normal priority)")
	f.StringVar(&cpLoad, "cp-load", eval.CPLoadMixed, "backlogged CP workload: mixed (kernel-heavy and user-mode), kernel or user")
	f.StringVar(&policies, "policies", strings.Join(scheduler.PolicyNameStrings(), ","), "policies run with the CP load (a static run without CP load leads as the reference)")
	f.StringVar(&out, "out", "out/eval", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	addCPFlags(cmd)
	addSLOFlag(cmd, "")
	return cmd
}
