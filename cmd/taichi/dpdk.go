package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/taichi-sched/taichi/dataplane/dpdk"
)

// `taichi dpdk` looks at and pins a running DPDK application's lcore
// threads without the daemon, for debugging a deployment.
func init() {
	dpdkCmd := &cobra.Command{
		Use:   "dpdk",
		Short: "Inspect or pin a running DPDK application's lcore threads",
	}
	dpdkCmd.AddCommand(newDPDKInspectCmd(), newDPDKPinCmd(), newDPDKGuardCmd())
	rootCmd.AddCommand(dpdkCmd)
}

// newDPDKInspectCmd is `taichi dpdk inspect`: the process's threads as the
// kernel sees them.
func newDPDKInspectCmd() *cobra.Command {
	var inspectPID int
	var inspectPattern string
	var inspectJSON bool
	inspect := &cobra.Command{
		Use:   "inspect --pid PID",
		Short: "List the process's threads: lcore match, CPUs, policy, cgroups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inspectPID <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("--pid: must be a process id")}
			}
			re, err := regexp.Compile(inspectPattern)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--pattern: %w", err)}
			}
			threads, err := dpdk.Inspect(inspectPID, re)
			if err != nil {
				return err
			}
			if inspectJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(threads)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TID\tNAME\tLCORE\tCPUS\tLAST\tPOLICY\tPRIO\tCGROUPS")
			for _, t := range threads {
				fmt.Fprintf(tw, "%d\t%s\t%v\t%s\t%d\t%s\t%d\t%s\n", t.TID, t.Name, t.Lcore, cpuList(t.Affinity), t.LastCPU, t.Policy, t.Priority, strings.Join(t.Cgroups, " "))
			}
			return tw.Flush()
		},
	}
	inspect.Flags().IntVar(&inspectPID, "pid", 0, "process id of the DPDK application")
	inspect.Flags().StringVar(&inspectPattern, "pattern", dpdk.DefaultThreadPattern, "regular expression on thread names selecting lcores")
	inspect.Flags().BoolVar(&inspectJSON, "json", false, "print JSON")
	return inspect
}

// newDPDKPinCmd is `taichi dpdk pin`: pin once, or hold (and lend) for a
// while, then release.
func newDPDKPinCmd() *cobra.Command {
	var cfg dpdk.Config
	var hold time.Duration
	pin := &cobra.Command{
		Use:   "pin --pid PID --cpus 1[,2] --priority N",
		Short: "Pin the lcore threads to DP cores with SCHED_FIFO (optionally keep reconciling and lending)",
		Long: "Pins once (each lcore SCHED_FIFO in its DP core's cpu cgroup) and prints the status; the\n" +
			"application keeps running, pinned. With --hold it keeps re-applying the pinning (and with\n" +
			"--idle-demote lends idle lcores' cores) until the duration ends or SIGINT/SIGTERM, then\n" +
			"reclaims every lent core and releases the lcores (original cgroup, SCHED_OTHER).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Name = fmt.Sprintf("pid%d", cfg.PID)
			cfg.IdleDemote = cfg.IdleDemote || len(cfg.IdleIfaces) > 0
			var opts []dpdk.Option
			if cfg.IdleDemote {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				opts = append(opts, dpdk.WithGuard(exe, "dpdk", "guard"))
			}
			m, err := dpdk.New(cfg, opts...)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := m.Start(ctx); err != nil {
				return err
			}
			runErr := m.Reconcile()
			if hold > 0 {
				hctx, cancel := context.WithTimeout(ctx, hold)
				runErr = m.Run(hctx)
				cancel()
			}
			st := m.Status()
			if hold > 0 || cfg.IdleDemote {
				if err := m.Stop(); err != nil && runErr == nil {
					runErr = err
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				return err
			}
			return runErr
		},
	}
	f := pin.Flags()
	f.IntVar(&cfg.PID, "pid", 0, "process id of the DPDK application")
	f.IntSliceVar(&cfg.CPUs, "cpus", nil, "DP cores, given to the lcores in lcore order")
	f.IntVar(&cfg.Priority, "priority", 0, "SCHED_FIFO priority 1..99")
	f.StringVar(&cfg.ThreadPattern, "pattern", "", "regular expression on thread names (default "+dpdk.DefaultThreadPattern+")")
	f.DurationVar(&hold, "hold", 0, "keep reconciling for this long (0: pin once and exit)")
	f.BoolVar(&cfg.IdleDemote, "idle-demote", false, "with --hold, lend the lcores' cores while their interfaces receive nothing")
	f.StringSliceVar(&cfg.IdleIfaces, "idle-ifaces", nil, "interfaces (in the app's netns) whose rx counters show the lcores' work (default: the --vdev iface= arguments)")
	f.DurationVar(&cfg.IdleInterval, "idle-interval", 0, "rx counter polling period (default 1ms)")
	f.IntVar(&cfg.IdleAfter, "idle-after", 0, "idle polls before lending (default 50)")
	return pin
}

// newDPDKGuardCmd is the hidden `taichi dpdk guard` the daemon starts
// beside it (see dpdk.WithGuard).
func newDPDKGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "guard",
		Short:  "Reclaim lent lcores when the process feeding stdin dies (started by the daemon)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Only the end of stdin ends the guard: a SIGTERM sent to the
			// whole service must not take it down before the daemon's exit
			// closes the pipe and it can reclaim.
			signal.Ignore(os.Interrupt, syscall.SIGHUP, syscall.SIGTERM)
			return dpdk.RunGuard(cmd.InOrStdin())
		},
	}
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, ",")
}
