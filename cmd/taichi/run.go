package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/scheduler"
)

func init() {
	rootCmd.AddCommand(newRunCmd(), newStatusCmd(), newPolicyCmd())
}

// newRunCmd is `taichi run`: the daemon in the foreground until a signal.
func newRunCmd() *cobra.Command {
	var cfgPath string
	runCmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon (embedded defaults without --config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log, os.Stderr)
			slog.SetDefault(log)
			d, err := daemon.New(cfg, daemon.WithLogger(log))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				// A shutdown that hangs must not keep the service from restarting:
				// a second signal, or 20s, ends the process (the next start reconciles).
				<-ctx.Done()
				stop()
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
				select {
				case <-sig:
				case <-time.After(20 * time.Second):
				}
				log.Error("shutdown did not finish; exiting (the next start reconciles)")
				os.Exit(1)
			}()
			log.Info("taichi starting", "policy", cfg.Policy, "dp", cfg.DPCPUs, "cp", cfg.CPCPUs, "config", orDefault(cfgPath))
			if err := d.Run(ctx); err != nil {
				return err
			}
			log.Info("taichi stopped; DP cores reclaimed, CP pool on CP cores")
			return nil
		},
	}
	runCmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file (default: embedded defaults)")
	return runCmd
}

// newStatusCmd is `taichi status`: the running daemon's state, once or
// watched.
func newStatusCmd() *cobra.Command {
	var socket string
	var asJSON bool
	var watch time.Duration
	statusCmd := &cobra.Command{
		Use:   "status [--watch [INTERVAL]]",
		Short: "Show the running daemon's cores, pool, policy and probe",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("watch") {
				iv, err := watchInterval(watch, args)
				if err != nil {
					return err
				}
				return watchStatus(cmd.OutOrStdout(), socket, iv, asJSON)
			}
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q (an interval goes after --watch)", args[0])
			}
			resp, err := daemon.Call(socket, daemon.Request{Cmd: "status"})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(resp.Status)
			}
			printStatus(cmd.OutOrStdout(), resp.Status)
			return nil
		},
	}
	statusCmd.Flags().StringVar(&socket, "socket", "/run/taichi/taichi.sock", "control socket of the daemon")
	statusCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --watch: one line per refresh)")
	statusCmd.Flags().DurationVar(&watch, "watch", time.Second, "refresh every INTERVAL until interrupted, with per-interval rates")
	statusCmd.Flags().Lookup("watch").NoOptDefVal = "1s"
	return statusCmd
}

// newPolicyCmd is `taichi policy set`: switch the running daemon's policy.
func newPolicyCmd() *cobra.Command {
	var socket string
	policyCmd := &cobra.Command{Use: "policy", Short: "Change the running daemon's lending policy"}
	setCmd := &cobra.Command{
		Use:       "set " + strings.Join(scheduler.PolicyNameStrings(), "|"),
		Short:     "Switch the policy at run time (kept across restarts while the config's policy is unchanged)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: scheduler.PolicyNameStrings(),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := scheduler.ParsePolicyName(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			resp, err := daemon.Call(socket, daemon.Request{Cmd: "set-policy", Policy: string(name)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy: %s\n", resp.Status.Policy)
			return nil
		},
	}
	setCmd.Flags().StringVar(&socket, "socket", "/run/taichi/taichi.sock", "control socket of the daemon")
	policyCmd.AddCommand(setCmd)
	return policyCmd
}

func orDefault(path string) string {
	if path == "" {
		return "(embedded default)"
	}
	return path
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func printStatus(w io.Writer, st *daemon.Status) {
	fmt.Fprintf(w, "taichi %s  pid %d  up %s  policy %s", st.Version, st.PID, st.Uptime, st.Policy)
	if st.Override {
		fmt.Fprint(w, " (set at run time)")
	}
	fmt.Fprintf(w, "  daemon cpu %.2f%% of a core (last %s), %.1fs in all", 100*st.Daemon.Share, st.Daemon.Window, st.Daemon.Seconds)
	if d := st.Scheduler.DecisionLatency; d.Count > 0 {
		fmt.Fprintf(w, "  decisions p50 %s p99 %s", d.P50, d.P99)
	}
	fmt.Fprintln(w)
	harvest := "n/a"
	if st.Pool.HarvestedCPSeconds >= 0 {
		harvest = fmt.Sprintf("%.2fs", st.Pool.HarvestedCPSeconds)
	}
	fmt.Fprintf(w, "CP pool  %s  group %s  cpus %v  members %d  harvested on DP cores %s\n",
		st.Pool.Backend, st.Pool.Group, st.Pool.CPUs, st.Pool.Members, harvest)
	if st.Pool.AdoptErr != "" {
		fmt.Fprintf(w, "  adopt: %s\n", st.Pool.AdoptErr)
	}
	fmt.Fprintf(w, "probe    %s  %s %s %s\n", st.Probe.Backend, st.Probe.State, st.Probe.Mode, st.Probe.Error)
	if b := st.Blockers; b != nil {
		fmt.Fprintf(w, "blockers %s  confined %d  blames %d  wake->run p99 <%.0fus %s\n", b.State, b.Confined, b.Blames+b.KmodBlame, b.WakeRunP99us, b.Error)
	}
	if st.Kmod != nil {
		for _, k := range st.Kmod.Stats {
			fmt.Fprintf(w, "kmod     cpu %d  dp tid %d  kicks %d  wakes %d  timeouts %d  blockers %d  kick->run p99 %v\n",
				k.CPU, k.DPTid, k.Kicks, k.Wakes, k.Timeouts, k.Blockers, k.Latency.Quantile(0.99))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CPU\tROLE\tSTATE\tIN POOL\tHOLD\tLENT\tWAKE P99\tSLO BUDGET\tCONFINES\tRECLAIMS")
	for _, c := range st.Cores {
		var rc []string
		for cause, n := range c.Reclaims {
			rc = append(rc, fmt.Sprintf("%s=%d", cause, n))
		}
		sort.Strings(rc)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\t%.2fs\t%.0fus\t%s\t%d\t%s\n", c.CPU, c.Role, c.State, c.InPool, c.Hold, c.LentSeconds,
			c.WakeP99us, budgetText(c), c.Confines, strings.Join(rc, " "))
	}
	tw.Flush()
	if st.SLO.Value > 0 {
		fmt.Fprintf(w, "slo      %v (%s): budget is the residence p99 over the last %v / SLO; confine above %g, release below %g\n",
			st.SLO.Value, st.SLO.Source, st.SLO.Horizon, scheduler.HighWater, scheduler.LowWater)
	}
	if len(st.Loops) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LOOP\tCPU\tPID\tALIVE\tPACKETS\tRESIDENCE p50/p99/max\tYIELDS\tWAKES rx/probe/timeout\tEXPOSED p99")
		for _, l := range st.Loops {
			s := l.Stats
			r := s.Residence
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%d\t%s/%s/%s\t%d\t%d/%d/%d\t%s\n", l.Name, l.CPU, l.PID, l.Alive, s.Packets,
				r.Quantile(0.5), r.Quantile(0.99), time.Duration(r.MaxNs), s.Yields, s.WakesRX, s.WakesProbe, s.WakesTimeout, s.Exposed.Quantile(0.99))
		}
		tw.Flush()
	}
	for _, a := range st.DPDK {
		fmt.Fprintf(w, "\nDPDK %s  pid %d  running %v  reapplied %d %s\n", a.Name, a.PID, a.Running, a.Reapplied, a.Error)
		for _, th := range a.Threads {
			fmt.Fprintf(w, "  lcore %-14s tid %-7d cpu %d  %s/%d  pinned %v  lent %v\n", th.Name, th.TID, th.CPU, th.Policy, th.Priority, th.Pinned, th.Demoted)
		}
	}
}

// budgetText is a DP core's SLO budget in use (an upper bound on the
// window's residence p99 / SLO) and the rule's verdict, as one word.
func budgetText(c daemon.CoreStatus) string {
	if c.Role != "dp" || c.Verdict == "" {
		return "-"
	}
	b := fmt.Sprintf("%.3gx/%s", c.Budget, c.Verdict)
	if c.Budget >= 99 {
		b = ">4x/" + c.Verdict
	}
	if c.Pressed {
		b += ",pressed"
	}
	return b
}
