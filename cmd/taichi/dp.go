package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/taichi-sched/taichi/dataplane"
)

func init() {
	dp := &cobra.Command{Use: "dp", Short: "Data-plane loops"}
	dp.AddCommand(newDPRunCmd())
	rootCmd.AddCommand(dp)
}

func newDPRunCmd() *cobra.Command {
	var (
		cfg        dataplane.LoopConfig
		outDstMAC  string
		yieldAfter int
		slice      time.Duration
		duration   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run --cpu N --iface IF",
		Short: "Run one pinned DP loop (standalone) and print its counters as JSON at exit",
		Long: `Run one DP loop pinned to --cpu with SCHED_FIFO, on --iface (inside --netns),
until --duration passes or SIGINT/SIGTERM. --yield-after -1 busy-polls; N >= 0
yields the core after N consecutive empty polls, waiting at most --slice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outDstMAC != "" {
				mac, err := net.ParseMAC(outDstMAC)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("out-dst-mac: %w", err)}
				}
				cfg.OutDstMAC = mac
			}
			if duration < 0 {
				return &exitError{code: 2, err: fmt.Errorf("duration: %v is negative", duration)}
			}
			if slice < 0 {
				return &exitError{code: 2, err: fmt.Errorf("slice: %v is negative", slice)}
			}
			l, err := dataplane.NewLoop(cfg)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			l.Control().SetYieldAfter(yieldAfter)
			l.Control().SetSlice(slice)

			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			go func() {
				select {
				case <-l.Ready():
					// Which stamp path runs depends on the kernel (xdp-head
					// where it refuses bpf_xdp_adjust_meta): say so.
					lc := l.Config()
					slog.Info("dp: loop ready", "loop", lc.Name, "cpu", lc.CPU, "io", lc.IO, "rx_stamp", l.Stats().RXStamp)
				case <-ctx.Done():
				}
			}()
			runErr := l.Run(ctx)
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(l.Stats()); err != nil {
				return err
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.CPU, "cpu", 1, "DP core to pin the loop to")
	f.StringVar(&cfg.Iface, "iface", "", "RX interface (required)")
	f.StringVar(&cfg.NetNS, "netns", "", "named network namespace of the interfaces")
	f.StringVar(&cfg.Mode, "mode", dataplane.ModeReflect, "reflect or forward")
	f.StringVar(&cfg.OutIface, "out-iface", "", "forward mode: TX interface")
	f.StringVar(&outDstMAC, "out-dst-mac", "", "forward mode: rewrite destination MAC to this next hop")
	f.StringVar(&cfg.IO, "io", dataplane.IOPacket, "receive path: packet (AF_PACKET mmap ring) or xdp (AF_XDP copy mode)")
	f.StringVar(&cfg.XDPStamp, "xdp-stamp", dataplane.StampAuto, "with --io xdp: force the RX stamp path, xdp-meta or xdp-head (default: the first the kernel allows)")
	f.StringVar(&cfg.Ring, "ring", dataplane.RingV2, "RX ring format: v2 (per-frame, low latency) or v3 (per-block)")
	f.IntVar(&cfg.Priority, "priority", dataplane.DefaultPriority, "SCHED_FIFO priority 1-99 (negative: keep the normal policy)")
	f.IntVar(&yieldAfter, "yield-after", -1, "empty polls before yielding the core (-1: never, busy-poll)")
	f.DurationVar(&slice, "slice", dataplane.DefaultSlice, "longest wait while yielded (bounded: the loop always comes back)")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	f.StringVar(&cfg.Name, "name", "", "loop name in stats (default dp<cpu>)")
	_ = cmd.MarkFlagRequired("iface")
	return cmd
}
