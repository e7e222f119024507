package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/host"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// `taichi dp-host` is the process `taichi run` starts for each configured DP
// loop: the loop (and its probe) behind a shared segment, outliving the
// daemon. Hidden: operators use `taichi dp run`.
func init() {
	var spec host.Spec
	cmd := &cobra.Command{
		Use:    "dp-host",
		Short:  "Host one DP loop behind a shared-memory segment (started by taichi run)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spec.ShmPath == "" {
				return &exitError{code: 2, err: fmt.Errorf("--shm: required")}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// The host runs in a session (autogroup) of its own; with
			// autogroups a thread's nice counts only inside its group, so the
			// group itself gets the DP loop's weight (dataplane.NormalNice).
			if err := linuxsched.SetAutogroupNice(dataplane.NormalNice); err != nil {
				fmt.Fprintln(os.Stderr, "taichi dp-host: autogroup nice:", err)
			}
			h, err := host.Start(ctx, spec)
			if err != nil {
				return err
			}
			h.Wait()
			os.Remove(spec.ShmPath)
			os.Remove(host.BellPath(spec.ShmPath))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Loop.Name, "name", "", "loop name")
	f.IntVar(&spec.Loop.CPU, "cpu", 0, "DP core")
	f.StringVar(&spec.Loop.Iface, "iface", "", "RX interface")
	f.StringVar(&spec.Loop.NetNS, "netns", "", "network namespace of the interfaces")
	f.StringVar(&spec.Loop.Mode, "mode", dataplane.ModeReflect, "reflect or forward")
	f.StringVar(&spec.Loop.OutIface, "out-iface", "", "forward-mode TX interface")
	f.IntVar(&spec.Loop.Priority, "priority", dataplane.DefaultPriority, "SCHED_FIFO priority")
	f.BoolVar(&spec.Loop.StartNormal, "start-normal", false, "start SCHED_OTHER; the daemon raises the loop to SCHED_FIFO while it lends the core")
	f.StringVar(&spec.ProbeBackend, "probe", "", "probe backend: xdp, counters or empty")
	f.StringVar(&spec.Probe.Iface, "probe-iface", "", "interface the probe watches")
	f.StringVar(&spec.Probe.NetNS, "probe-netns", "", "network namespace of the probe interface")
	f.DurationVar(&spec.Probe.Interval, "probe-interval", 0, "counters probe poll interval")
	f.IntVar(&spec.Probe.RingSize, "probe-ring-size", 0, "xdp probe: wake-event ring buffer bytes (a power of two; at least the page size)")
	f.StringVar(&spec.ShmPath, "shm", "", "shared segment path")
	f.BoolVar(&spec.Kmod, "kmod", false, "also wait on /dev/taichi kicks")
	rootCmd.AddCommand(cmd)
}
