package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

func init() { rootCmd.AddCommand(newGenCmd()) }

func newGenCmd() *cobra.Command {
	var (
		o                 trafficgen.Options
		dst, recvAddr, tb string
		forward, asJSON   bool
		senderCPU         int
	)
	cmd := &cobra.Command{
		Use:   "gen --rate PPS --count N",
		Short: "Send timestamped UDP traffic and report throughput, loss and latency",
		Long: `Send --count UDP packets at --rate from a network namespace toward a DP loop and
measure the reflected (or forwarded) packets. --testbed P fills in the namespace,
interface and addresses of testbed P (--forward: send through the DP loop to
the sink namespace). Bounded by --count and --deadline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tb != "" {
				t, err := testbed.Layout(testbed.Options{Prefix: tb})
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				o.NetNS, o.Iface, o.Dst = orStr(o.NetNS, t.GenNS), orStr(o.Iface, t.GenIface), t.DPIP
				if forward {
					o.Dst, o.RecvNetNS, o.RecvAddr = t.SinkIP, orStr(o.RecvNetNS, t.SinkNS), t.SinkIP
				}
			}
			if dst != "" {
				a, err := netip.ParseAddr(dst)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("dst: %w", err)}
				}
				o.Dst = a
			}
			if recvAddr != "" {
				a, err := netip.ParseAddr(recvAddr)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("recv-addr: %w", err)}
				}
				o.RecvAddr = a
			}
			if senderCPU >= 0 {
				o.PinSender, o.SenderCPU = true, senderCPU
			}
			if err := o.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := trafficgen.Run(ctx, o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Fprintf(w, "sent %d received %d lost %d (%.4f%%) offered %.0f pps achieved %.0f pps\n",
				rep.Sent, rep.Received, rep.Lost, 100*rep.Loss, rep.OfferedPPS, rep.AchievedPPS)
			l := rep.LatencyUs
			fmt.Fprintf(w, "latency µs: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n", l.P50, l.P90, l.P99, l.P999, l.Max)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tb, "testbed", "", "take namespace, interface and addresses from testbed prefix P")
	f.BoolVar(&forward, "forward", false, "with --testbed: send to the sink through a forwarding DP loop")
	f.StringVar(&o.NetNS, "netns", "", "network namespace to send from")
	f.StringVar(&o.Iface, "iface", "", "interface to send on")
	f.StringVar(&dst, "dst", "", "destination IPv4 address (the DP loop's address)")
	f.IntVar(&o.DstPort, "port", 9000, "destination UDP port")
	f.StringVar(&o.RecvNetNS, "recv-netns", "", "receive in this namespace instead (forward mode)")
	f.StringVar(&recvAddr, "recv-addr", "", "address to receive on with --recv-netns")
	f.IntVar(&o.Rate, "rate", 10000, "packets per second (during bursts for onoff)")
	f.IntVar(&o.Count, "count", 10000, "packets to send")
	f.StringVar(&o.Pattern, "pattern", trafficgen.PatternConstant, "constant, poisson or onoff")
	f.DurationVar(&o.On, "on", 0, "onoff: burst length (default 20ms)")
	f.DurationVar(&o.Off, "off", 0, "onoff: gap length (default 80ms)")
	f.IntVar(&o.PayloadSize, "payload", 32, "UDP payload bytes (32-1472)")
	f.DurationVar(&o.Deadline, "deadline", 0, "bound on the whole run (default: 2x the sending time + 2s)")
	f.IntVar(&senderCPU, "sender-cpu", -1, "pin the sending thread to this CPU (-1: unpinned)")
	f.BoolVar(&o.KernelStamps, "kernel-stamps", false, "use kernel receive timestamps")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func orStr(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
