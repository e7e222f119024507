package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/daemon"
)

func init() {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "blockers",
		Short: "Show the tasks that delayed DP threads and which of them are confined to CP cores",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := daemon.Call(socket, daemon.Request{Cmd: "blockers"})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(resp.Blockers)
			}
			printBlockerTable(cmd.OutOrStdout(), resp.Blockers, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/run/taichi/taichi.sock", "control socket of the daemon")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rootCmd.AddCommand(cmd)
}

// printBlockerTable prints blocker-aware lending's state: one line of
// totals, the blamed tasks (most delay caused first) and the learned
// commands.
func printBlockerTable(w io.Writer, b *daemon.BlockersStatus, now time.Time) {
	if b == nil {
		fmt.Fprintln(w, "blockers: no answer")
		return
	}
	fmt.Fprintf(w, "blockers %s", b.State)
	if b.Error != "" {
		fmt.Fprintf(w, " (%s)", b.Error)
	}
	fmt.Fprintln(w)
	if b.State == daemon.BlockersOff {
		return
	}
	fmt.Fprintf(w, "threshold %s  dp threads %v  wakes %d  wake->run p50 <%.0fus p99 <%.0fus  blames %d  lost %d  confined %d\n",
		b.Threshold, b.DPThreads, b.Runs, b.WakeRunP50us, b.WakeRunP99us, b.Blames+b.KmodBlame, b.Lost, b.Confined)
	if len(b.Tasks) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PID\tCOMM\tCOUNT\tIN KERNEL\tWORST\tTOTAL\tCONFINED\tNOTE")
		for _, t := range b.Tasks {
			confined := "-"
			switch {
			case t.ConfinedUntil != nil && t.ConfinedUntil.After(now):
				confined = "back-off " + t.ConfinedUntil.Sub(now).Round(time.Millisecond).String()
			case t.ConfinedUntil != nil:
				confined = "until quiet"
			}
			note := t.Error
			if t.Kernel {
				note = "kernel thread (not movable)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0fus\t%.1fms\t%s\t%s\n", t.PID, t.Comm, t.Count, t.InKernel, t.WorstUs, t.TotalMs, confined, note)
		}
		tw.Flush()
	}
	if len(b.Commands) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMMAND\tBACKOFF\tSTRIKES\tUNTIL\tPIDS\tWHY")
		for _, c := range b.Commands {
			until := "-"
			switch {
			case c.Due:
				until = "due (waits for quiet windows)"
			case c.Until != nil:
				until = c.Until.Sub(now).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%v\t%s\n", c.Comm, c.Backoff, c.Strikes, until, c.PIDs, whyText(c.Why))
		}
		tw.Flush()
	}
	if len(b.Released) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RELEASED\tAGO\tCONFINED FOR\tWHY")
		for _, r := range b.Released {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Comm, now.Sub(r.At).Round(time.Second),
				(time.Duration(r.ConfinedMs * float64(time.Millisecond))).Round(time.Millisecond), whyText(&r.Why))
		}
		tw.Flush()
	}
	if b.Rule != "" {
		fmt.Fprintf(w, "\nrule: %s\n", b.Rule)
	}
}

// whyText says what a confinement answered: the blamed delay on which
// core and how much of the SLO that core's window used.
func whyText(why *daemon.WhyStatus) string {
	if why == nil {
		return "-"
	}
	return fmt.Sprintf("pid %d: %.0fus in kernel over %d blames on cpu %d in %s; window p99 <= %.3g x SLO",
		why.PID, why.BlamedUs, why.Blames, why.CPU, why.Window, why.Budget)
}
