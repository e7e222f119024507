package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
)

func init() { rootCmd.AddCommand(newDemoCmd()) }

// newDemoCmd is the README's first command: the testbed, the daemon on the
// embedded defaults, and a short VM-startup comparison, all torn down again.
func newDemoCmd() *cobra.Command {
	var vms, policies, out, logFile string
	var dpLoad float64
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Testbed + daemon + a short VM-startup comparison: prints the table, writes the plot, cleans up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := eval.VMStartupConfig{DPLoad: dpLoad, FailVM: -1, Repeat: 1}
			var err error
			if cfg.VMs, err = parseInts("vms", vms); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.Policies, err = eval.ParsePolicies(splitList(policies)); err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "taichi demo: VM startup at %v VMs under %v, DP loop on its core with %.0f%% on/off traffic\n",
				cfg.VMs, cfg.Policies, 100*dpLoad)
			start := time.Now()
			err = runExperiment(cmd, out, logFile, len(cfg.VMs)*len(cfg.Policies), func(ctx context.Context, env *eval.Env) (*eval.Report, error) {
				return eval.RunVMStartup(ctx, env, cfg)
			})
			fmt.Fprintf(cmd.OutOrStdout(), "demo took %s; testbed, daemon cgroup and VM namespaces removed\n", time.Since(start).Round(time.Second))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&vms, "vms", "1,8,32", "densities: VMs requested at once")
	f.StringVar(&policies, "policies", "static,taichi", "policies, run interleaved per density")
	f.Float64Var(&dpLoad, "dp-load", 0.3, "average DP utilisation offered by the generator")
	f.StringVar(&out, "out", "out/demo", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	addCPFlags(cmd)
	return cmd
}
