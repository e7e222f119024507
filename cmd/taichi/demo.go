package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
)

func init() { rootCmd.AddCommand(newDemoCmd()) }

// demoSLOs is the demo's short SLO sweep: the daemon's own bound (at every
// density) and two more at the highest density, enough for a frontier.
const demoSLOs = "default,100us,1ms"

// newDemoCmd is the README's first command: the testbed, the daemon on the
// embedded defaults, and a short VM-startup comparison with a short sweep
// of taichi's SLO, all torn down again.
func newDemoCmd() *cobra.Command {
	var vms, policies, out, logFile string
	var dpLoad float64
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Testbed + daemon + a short VM-startup comparison and SLO sweep: prints the table, writes the plots, cleans up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := eval.VMStartupConfig{DPLoad: dpLoad, FailVM: -1, Repeat: 1, SweepTopOnly: true}
			var err error
			if cfg.VMs, err = parseInts("vms", vms); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.Policies, err = eval.ParsePolicies(splitList(policies)); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.SLOs, err = sloFlag(cmd); err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "taichi demo: VM startup at %v VMs under %v, DP loop on its core with %.0f%% on/off traffic",
				cfg.VMs, cfg.Policies, 100*dpLoad)
			if len(cfg.SLOs) > 0 {
				var slos []string
				for _, v := range cfg.SLOs {
					if v == eval.SLODefault {
						slos = append(slos, "default")
					} else {
						slos = append(slos, v.String())
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "; taichi's SLO %s (beyond the default at %d VMs only)", strings.Join(slos, ", "), slices.Max(cfg.VMs))
			}
			fmt.Fprintln(cmd.OutOrStdout())
			start := time.Now()
			err = runExperiment(cmd, out, logFile, cfg.Runs(), func(ctx context.Context, env *eval.Env) (*eval.Report, error) {
				return eval.RunVMStartup(ctx, env, cfg)
			})
			fmt.Fprintf(cmd.OutOrStdout(), "demo took %s; testbed, daemon cgroup and VM namespaces removed\n", time.Since(start).Round(time.Second))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&vms, "vms", "1,8,16", "densities: VMs requested at once")
	f.StringVar(&policies, "policies", "static,dynamic,taichi", "policies, run interleaved per density")
	f.Float64Var(&dpLoad, "dp-load", 0.3, "average DP utilisation offered by the generator")
	f.StringVar(&out, "out", "out/demo", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	addCPFlags(cmd)
	addSLOFlag(cmd, demoSLOs)
	return cmd
}
