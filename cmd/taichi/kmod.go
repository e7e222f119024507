package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/kmod"
)

func init() {
	rootCmd.AddCommand(newKmodCmd())
}

func newKmodCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kmod",
		Short: "Inspect the taichi kernel module (/dev/taichi): stats and blocker records",
	}
	var devPath string
	cmd.PersistentFlags().StringVar(&devPath, "device", kmod.DevicePath, "the module's device node")

	var statsCPU int
	var statsJSON bool
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Kick/wake counters and the kick->DP-running latency histogram measured in the kernel",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if statsCPU < kmod.AllCPUs {
				return &exitError{code: 2, err: fmt.Errorf("cpu: %d is not a CPU (-1 for all)", statsCPU)}
			}
			d, err := openKmod(devPath)
			if err != nil {
				return err
			}
			defer d.Close()
			st, err := d.Stats(statsCPU)
			if err != nil {
				return err
			}
			if statsJSON {
				return writeJSON(c.OutOrStdout(), st)
			}
			printKmodStats(c.OutOrStdout(), st)
			return nil
		},
	}
	stats.Flags().IntVar(&statsCPU, "cpu", kmod.AllCPUs, "CPU to show (-1: sum over all)")
	stats.Flags().BoolVar(&statsJSON, "json", false, "print JSON")

	var blkCPU int
	var blkJSON, blkConsume bool
	var blkMinWait time.Duration
	blockers := &cobra.Command{
		Use:   "blockers",
		Short: "Control-plane kernel paths that were non-preemptible when a DP core was kicked",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if blkCPU < kmod.AllCPUs {
				return &exitError{code: 2, err: fmt.Errorf("cpu: %d is not a CPU (-1 for all)", blkCPU)}
			}
			d, err := openKmod(devPath)
			if err != nil {
				return err
			}
			defer d.Close()
			if blkMinWait < 0 {
				return &exitError{code: 2, err: fmt.Errorf("min-wait: %v is negative", blkMinWait)}
			}
			recs, err := d.Blockers(blkCPU, blkConsume)
			if err != nil {
				return err
			}
			recs = filterBlockers(recs, blkMinWait)
			if blkJSON {
				if recs == nil {
					recs = []kmod.Blocker{}
				}
				return writeJSON(c.OutOrStdout(), recs)
			}
			printBlockers(c.OutOrStdout(), recs)
			return nil
		},
	}
	blockers.Flags().IntVar(&blkCPU, "cpu", kmod.AllCPUs, "CPU to show (-1: all)")
	blockers.Flags().BoolVar(&blkJSON, "json", false, "print JSON")
	blockers.Flags().BoolVar(&blkConsume, "consume", false, "remove the records read from the kernel's rings")
	blockers.Flags().DurationVar(&blkMinWait, "min-wait", 0, "show only records whose DP thread waited at least this long")

	cmd.AddCommand(stats, blockers)
	return cmd
}

// filterBlockers keeps the records whose kick->run wait is known and at
// least minWait (all records when minWait is 0).
func filterBlockers(recs []kmod.Blocker, minWait time.Duration) []kmod.Blocker {
	if minWait == 0 {
		return recs
	}
	var out []kmod.Blocker
	for _, r := range recs {
		if r.Waited && time.Duration(r.WaitNs) >= minWait {
			out = append(out, r)
		}
	}
	return out
}

func openKmod(path string) (*kmod.Device, error) {
	d, err := kmod.OpenPath(path)
	if errors.Is(err, kmod.ErrNotSupported) {
		return nil, fmt.Errorf("%s is missing: load the taichi kernel module first (kmod/module: make && insmod taichi.ko) (%w)", path, kmod.ErrNotSupported)
	}
	return d, err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printKmodStats(w io.Writer, st kmod.Stats) {
	cpu := fmt.Sprint(st.CPU)
	if st.CPU == kmod.AllCPUs {
		cpu = "all"
	}
	fmt.Fprintf(w, "cpu %s", cpu)
	if st.CPU != kmod.AllCPUs {
		fmt.Fprintf(w, "  dp thread %d", st.DPTid)
	}
	fmt.Fprintf(w, "\nkicks %d (no DP thread: %d)  wakes %d  timeouts %d\n", st.Kicks, st.KicksNoDP, st.Wakes, st.Timeouts)
	fmt.Fprintf(w, "blocker IPIs %d (skipped busy: %d)  blockers %d (dropped: %d)\n", st.IPIs, st.IPIsBusy, st.Blockers, st.BlockersDropped)
	h := st.Latency
	fmt.Fprintf(w, "kick->run latency: %d samples  mean %v  p50<=%v  p99<=%v  max %v\n", h.Count, h.Mean(),
		h.Quantile(0.5), h.Quantile(0.99), time.Duration(h.MaxNs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	for i, n := range h.Buckets {
		if n == 0 {
			continue
		}
		lo, hi := kmod.BucketBounds(i)
		upper := hi.String()
		if hi == 0 {
			upper = "inf"
		}
		fmt.Fprintf(tw, "  [%v,\t%s)\t%d\t\n", lo, upper, n)
	}
	tw.Flush()
}

func printBlockers(w io.Writer, recs []kmod.Blocker) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no blocker records")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CPU\tSEQ\tPID\tCOMM\tPREEMPT\tDP WAITED\tKERNEL PATH (innermost first)")
	for _, r := range recs {
		waited := "-"
		if r.Waited {
			waited = time.Duration(r.WaitNs).String()
		}
		path := strings.Join(append([]string{r.Symbol}, r.Callers...), " < ")
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%#x\t%s\t%s\n", r.CPU, r.Seq, r.Pid, r.Comm, r.PreemptCount, waited, path)
	}
	tw.Flush()
}
