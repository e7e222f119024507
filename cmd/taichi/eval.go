package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/controlplane"
	"github.com/taichi-sched/taichi/eval"
	"github.com/taichi-sched/taichi/scheduler"
)

func init() {
	evalCmd := &cobra.Command{
		Use:   "eval",
		Short: "Benchmarks: VM startup vs density, data-plane impact (JSON, Markdown, PNG)",
	}
	evalCmd.AddCommand(newEvalVMStartupCmd(), newEvalDataplaneCmd(), newEvalPingCmd(), newEvalSimCmd(), newEvalSoakCmd())
	rootCmd.AddCommand(evalCmd, newCPHelperCmd())
}

func newEvalVMStartupCmd() *cobra.Command {
	var vms, policies, out, logFile string
	var dpLoad, work float64
	var vmSize, repeat int
	cmd := &cobra.Command{
		Use:   "vm-startup",
		Short: "VM startup latency as VM density grows, per policy, with the DP loop under on/off traffic",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := eval.VMStartupConfig{DPLoad: dpLoad, VMSize: vmSize, Work: work, FailVM: -1, Repeat: repeat}
			var err error
			if cfg.VMs, err = parseInts("vms", vms); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.Policies, err = dpPolicies(cmd, splitList(policies)); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.SLOs, err = sloFlag(cmd); err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return runExperiment(cmd, out, logFile, cfg.Runs(), func(ctx context.Context, env *eval.Env) (*eval.Report, error) {
				return eval.RunVMStartup(ctx, env, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&repeat, "repeat", 3, "runs per cell, policies interleaved within each repeat (the table shows the median and min–max)")
	f.StringVar(&vms, "vms", "1,2,4,8,16,32", "densities: VMs requested at once")
	f.StringVar(&policies, "policies", strings.Join(scheduler.PolicyNameStrings(), ","), "policies, run interleaved per density")
	f.Float64Var(&dpLoad, "dp-load", 0.3, "average DP utilisation offered by the generator (on/off bursts)")
	f.IntVar(&vmSize, "vm-size", 1, "vCPUs per VM; CP work per VM scales with it")
	f.Float64Var(&work, "work", 1, "scales every VM's CP work")
	f.StringVar(&out, "out", "out/eval", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	addCPFlags(cmd)
	addSLOFlag(cmd, "")
	return cmd
}

func newEvalDataplaneCmd() *cobra.Command {
	var policies, loads, out, logFile, cpLoad string
	var dur, ct time.Duration
	var repeat int
	cmd := &cobra.Command{
		Use:   "dataplane",
		Short: "DP latency/throughput under a backlogged kernel-heavy CP load, per policy and load, with cyclictest beside",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pols, err := dpPolicies(cmd, splitList(policies))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg := eval.DataplaneConfig{Policies: pols, Duration: dur, Cyclictest: ct, Repeat: repeat, CPLoad: cpLoad}
			if cfg.SLOs, err = sloFlag(cmd); err != nil {
				return &exitError{code: 2, err: err}
			}
			for _, s := range splitList(loads) {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("loads: %q: not a number", s)}
				}
				cfg.Loads = append(cfg.Loads, v)
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return runExperiment(cmd, out, logFile, cfg.Runs(), func(ctx context.Context, env *eval.Env) (*eval.Report, error) {
				return eval.RunDataplane(ctx, env, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&repeat, "repeat", 3, "runs per cell, policies interleaved within each repeat (the table shows the median and min–max)")
	f.StringVar(&cpLoad, "cp-load", eval.CPLoadMixed, "backlogged CP workload: mixed (kernel-heavy and user-mode), kernel or user")
	f.StringVar(&policies, "policies", strings.Join(scheduler.PolicyNameStrings(), ","), "policies (a static run without CP load is added per load as the reference)")
	f.StringVar(&loads, "loads", "0.1,0.3,0.7", "DP utilisations offered by the generator")
	f.DurationVar(&dur, "duration", 5*time.Second, "traffic per cell")
	f.DurationVar(&ct, "cyclictest", 5*time.Second, "cyclictest per cell (negative: skip)")
	f.StringVar(&out, "out", "out/eval", "output directory")
	f.StringVar(&logFile, "log", "", "write the daemon's log here (default: discard)")
	addCPFlags(cmd)
	addSLOFlag(cmd, "")
	return cmd
}

// ovsPolicies are the setups --dp ovs runs unless --policies says otherwise:
// OVS busy-polling with CP off its core, OVS's own load-based sleep with
// CP on its core, and taichi's lending policies.
var ovsPolicies = []string{string(scheduler.PolicyStatic), string(eval.SetupOVSMaxSleep), string(scheduler.PolicyDynamic), string(scheduler.PolicyTaichi)}

// dpPolicies parses --policies against --dp: --dp ovs without --policies
// runs the OVS setups, and the ovs-maxsleep setup needs --dp ovs.
func dpPolicies(cmd *cobra.Command, names []string) ([]scheduler.PolicyName, error) {
	dp, _ := cmd.Flags().GetString("dp")
	if err := eval.CheckDP(dp); err != nil {
		return nil, err
	}
	if dp == eval.DPOVS && !cmd.Flags().Changed("policies") {
		names = ovsPolicies
	}
	if dp != eval.DPOVS && slices.Contains(names, string(eval.SetupOVSMaxSleep)) {
		return nil, fmt.Errorf("policies: %s needs --dp ovs", eval.SetupOVSMaxSleep)
	}
	return eval.ParsePolicies(names)
}

// addCPFlags adds the CP placement and data plane choices every experiment takes.
func addCPFlags(cmd *cobra.Command) {
	cmd.Flags().String("dp", eval.DPLoop, "data plane: loop (taichi's DP loop) or ovs (a private Open vSwitch with DPDK, adopted by the daemon; adds the ovs-maxsleep setup)")
	cmd.Flags().String("cp-class", eval.DefaultCPClass,
		"vcpu.class for CP work: idle or low-weight (the generator shares the CP core here; with idle, CP starves behind it)")
	cmd.Flags().Int("cp-weight", eval.DefaultCPWeight, "vcpu.weight with --cp-class low-weight (100 = a normal task)")
	cmd.Flags().String("softirq", eval.SoftirqCP, "where the kernel processes the generator's packets after the probe: cp (where the "+
		"sender runs: the CP core) or dp (the DP core, as with a NIC queue interrupting it)")
}

// addSLOFlag adds --slo, taichi's SLO sweep, with def as its default
// ("": no sweep).
func addSLOFlag(cmd *cobra.Command, def string) {
	cmd.Flags().String("slo", def, "sweep taichi's SLO (its RX residence p99 bound): run taichi once per value, e.g. 50us,100us,250us,1ms "+
		"(default: the daemon's own bound), interleaved with the other policies; adds the Frontier section and figure")
}

// sloFlag parses --slo: nil without a sweep.
func sloFlag(cmd *cobra.Command) ([]time.Duration, error) {
	v, _ := cmd.Flags().GetString("slo")
	if v == "" && !cmd.Flags().Changed("slo") {
		return nil, nil
	}
	return eval.ParseSLOs(splitList(v))
}

// runExperiment sets the bench up, runs one experiment, writes its files and
// prints the table; SIGINT/SIGTERM stop it and still tear everything down.
func runExperiment(cmd *cobra.Command, out, logFile string, steps int, run func(context.Context, *eval.Env) (*eval.Report, error)) error {
	opts := eval.BenchOptions{Progress: eval.NewProgress(os.Stdout, steps)}
	opts.CPClass, _ = cmd.Flags().GetString("cp-class")
	opts.CPWeight, _ = cmd.Flags().GetInt("cp-weight")
	opts.DP, _ = cmd.Flags().GetString("dp")
	opts.Softirq, _ = cmd.Flags().GetString("softirq")
	var rep *eval.Report
	err := onBench(cmd, opts, logFile, func(ctx context.Context, b *eval.Bench) (err error) {
		rep, err = run(ctx, b.Env)
		return err
	})
	if rep == nil {
		return err
	}
	return writeReport(cmd, out, rep, err)
}

// onBench sets the bench up (the daemon's log to logFile, if given), runs
// fn on it and tears it down whatever fn returned; SIGINT/SIGTERM end fn's
// context.
func onBench(cmd *cobra.Command, opts eval.BenchOptions, logFile string, fn func(context.Context, *eval.Bench) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if logFile != "" {
		lf, err := os.Create(logFile)
		if err != nil {
			return err
		}
		defer lf.Close()
		opts.Log = lf
	}
	bench, err := eval.StartBench(ctx, opts)
	if err != nil {
		return err
	}
	err = fn(ctx, bench)
	opts.Progress.Done()
	if cerr := bench.Close(); cerr != nil {
		fmt.Fprintln(os.Stderr, "taichi: cleanup:", cerr)
	}
	return err
}

// writeReport writes the files, prints the table, warns about failed
// self-checks, and fails (exit 1) when any run or CP load failed: a table
// with failed runs must not pass for a result.
func writeReport(cmd *cobra.Command, out string, rep *eval.Report, runErr error) error {
	files, err := eval.WriteFiles(out, rep)
	if err != nil {
		return err
	}
	pngs, err := eval.WritePlots(out, rep)
	if err != nil {
		return err
	}
	eval.WriteMarkdown(cmd.OutOrStdout(), rep)
	return finishReport(cmd, append(files, pngs...), rep.Checks, runErr, eval.FailedRuns(rep), len(rep.Runs))
}

// finishReport names the files written, warns about failed self-checks and
// turns a failed experiment or failed runs into the command's error.
func finishReport(cmd *cobra.Command, files []string, checks []eval.Check, runErr error, failed, runs int) error {
	fmt.Fprintf(cmd.OutOrStdout(), "\nwrote %s\n", strings.Join(files, " "))
	for _, c := range checks {
		if !c.OK {
			fmt.Fprintf(cmd.ErrOrStderr(), "taichi: warning: self-check failed: %s: %s\n", c.Name, c.Detail)
		}
	}
	if runErr != nil {
		return runErr
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d runs failed or lost their CP load (see Errors in the table)", failed, runs)}
	}
	return nil
}

// newCPHelperCmd is the Go helper process of the VM-startup pipeline.
func newCPHelperCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "cp-helper",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := controlplane.HelperMain(args, os.Stdin, os.Stdout, os.Stderr); code != 0 {
				return &exitError{code: code, err: fmt.Errorf("")}
			}
			return nil
		},
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(key, s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: not an integer", key, f)
		}
		out = append(out, v)
	}
	return out, nil
}
