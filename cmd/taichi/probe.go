package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/probe"
)

func init() {
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Workload probes: see packets coming before the DP loop does",
	}
	cmd.AddCommand(probeWatchCmd())
	rootCmd.AddCommand(cmd)
}

// probeWatchReport is the JSON `taichi probe watch --json` prints.
type probeWatchReport struct {
	probe.Stats
	DurationS float64 `json:"duration_s"`
	// Events counts wake events the watcher consumed: it re-arms each core
	// right after an event, so this is the number of idle->traffic
	// transitions as the watcher saw them.
	Events int `json:"events"`
	// WakeLagUs: probe stamp -> the watcher blocked in epoll running again.
	WakeLagUs probe.Percentiles `json:"wake_lag_us"`
	// LeadUs: probe stamp -> the same packet's kernel receive stamp on the
	// receive interface (only with --rx-iface); LeadUserUs: -> a blocked
	// reader there getting it.
	LeadUs     *probe.Percentiles `json:"lead_us,omitempty"`
	LeadUserUs *probe.Percentiles `json:"lead_user_us,omitempty"`
	Matched    int                `json:"matched,omitempty"`
	Received   int                `json:"received,omitempty"`
}

func probeWatchCmd() *cobra.Command {
	var (
		opts           probe.Options
		backend        string
		queueMap       []string
		duration       time.Duration
		asJSON         bool
		rxNetNS, rxIfc string
	)
	cmd := &cobra.Command{
		Use:   "watch --iface IF [--netns NS] --duration D [--json]",
		Short: "Attach a probe, count packets and wake events, measure lead time",
		Long: `Attach a probe to IF (for the testbed: --netns <prefix>-nic --iface nic-in),
arm every DP core continuously (as an always-idle DP loop would), and after
--duration print per-queue counters, wake events and attach mode. With
--rx-iface (the DP loop's interface, e.g. --rx-netns <prefix>-dp --rx-iface dp0)
it also reads the packets there and reports lead time per packet, matched by
the sequence number trafficgen writes into each payload.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := parseQueueMap(queueMap)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts.Queues = q
			if duration <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("duration: must be positive")}
			}
			if rxNetNS != "" && rxIfc == "" {
				return &exitError{code: 2, err: fmt.Errorf("rx-netns: needs --rx-iface")}
			}
			p, err := probe.New(backend, opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			_ = rlimit.RemoveMemlock()
			rep, err := runProbeWatch(cmd.Context(), p, opts, duration, rxNetNS, rxIfc)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printProbeReport(cmd, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Iface, "iface", "", "interface where packets enter (required)")
	f.StringVar(&opts.NetNS, "netns", "", "network namespace of --iface")
	f.StringVar(&backend, "backend", probe.BackendXDP, "probe backend: xdp or counters")
	f.IntVar(&opts.Core, "core", 1, "DP core every RX queue maps to")
	f.StringSliceVar(&queueMap, "queue-core", nil, "RX queue to DP core, e.g. 0=1,1=2 (xdp)")
	f.DurationVar(&opts.Interval, "interval", 0, "counters backend polling interval (default 10ms)")
	f.IntVar(&opts.TagOffset, "tag-offset", 0, "UDP payload offset of the senders' 8-byte sequence number (default 8, trafficgen)")
	f.StringVar(&opts.PinDir, "pin-dir", "", "bpffs directory for the pinned link (default "+probe.DefaultPinDir+")")
	f.DurationVar(&duration, "duration", 10*time.Second, "how long to watch")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.StringVar(&rxNetNS, "rx-netns", "", "network namespace of --rx-iface")
	f.StringVar(&rxIfc, "rx-iface", "", "interface of the DP loop: measure lead time to packets arriving there")
	_ = cmd.MarkFlagRequired("iface")
	return cmd
}

func parseQueueMap(pairs []string) (map[int]int, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[int]int, len(pairs))
	for _, p := range pairs {
		qs, cs, ok := strings.Cut(p, "=")
		q, err1 := strconv.Atoi(qs)
		c, err2 := strconv.Atoi(cs)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("queue-core: %q: want QUEUE=CORE", p)
		}
		m[q] = c
	}
	return m, nil
}

func runProbeWatch(ctx context.Context, p probe.Waker, opts probe.Options, d time.Duration, rxNetNS, rxIfc string) (*probeWatchReport, error) {
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	defer p.Stop()

	var rx *probe.PacketReceiver
	if rxIfc != "" {
		var err error
		if rx, err = probe.ListenPacket(rxNetNS, rxIfc); err != nil {
			return nil, err
		}
		defer rx.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()

	var (
		mu       sync.Mutex
		lags     []int64
		stamps   = map[uint64]int64{} // sequence number -> probe stamp
		arrivals []probe.Arrival
		wg       sync.WaitGroup
		errs     = make(chan error, 8)
	)
	cores := map[int]bool{opts.Core: true}
	for _, c := range opts.Queues {
		cores[c] = true
	}
	for core := range cores {
		ws, err := p.WakeSource(core)
		if err != nil {
			return nil, err
		}
		es, ok := ws.(probe.EventSource)
		if !ok {
			return nil, fmt.Errorf("probe: core %d: wake source gives no events", core)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- probe.WatchEvents(ctx, es, func(ev probe.Event, woke int64) {
				mu.Lock()
				defer mu.Unlock()
				lags = append(lags, woke-ev.StampNs)
				if len(stamps) < 1<<20 {
					stamps[ev.TagSeq()] = ev.StampNs
				}
			})
		}()
	}
	if rx != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a, ok, err := rx.RecvWait(50 * time.Millisecond)
				if err != nil {
					errs <- err
					return
				}
				if ok && len(arrivals) < 1<<20 {
					arrivals = append(arrivals, a)
				}
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	rep := &probeWatchReport{Stats: p.Stats(), DurationS: time.Since(start).Seconds(), Events: len(lags),
		WakeLagUs: probe.PercentilesNs(lags)}
	if rx != nil {
		var lead, leadUser []int64
		for _, a := range arrivals {
			if s, ok := stamps[a.Seq]; ok {
				if a.KernelNs != 0 {
					lead = append(lead, a.KernelNs-s)
				}
				leadUser = append(leadUser, a.UserNs-s)
			}
		}
		l, lu := probe.PercentilesNs(lead), probe.PercentilesNs(leadUser)
		rep.LeadUs, rep.LeadUserUs, rep.Matched, rep.Received = &l, &lu, len(leadUser), len(arrivals)
	}
	return rep, nil
}

func printProbeReport(cmd *cobra.Command, r *probeWatchReport) {
	w := cmd.OutOrStdout()
	where := r.Iface
	if r.NetNS != "" {
		where = r.NetNS + "/" + r.Iface
	}
	fmt.Fprintf(w, "probe %s on %s, mode %s, %.1fs\n", r.Backend, where, r.Mode, r.DurationS)
	for _, q := range r.Queues {
		fmt.Fprintf(w, "  queue %3d -> core %2d: %d packets, %d bytes\n", q.Queue, q.Core, q.Packets, q.Bytes)
	}
	for _, c := range r.Cores {
		fmt.Fprintf(w, "  core %2d: fired %d, delivered %d, lost %d, missed %d, garbled %d\n",
			c.Core, c.Fired, c.Delivered, c.Lost, c.Missed, c.Garbled)
	}
	pct := func(p probe.Percentiles) string {
		return fmt.Sprintf("p50 %.1f p90 %.1f p99 %.1f max %.1f µs (n=%d)", p.P50, p.P90, p.P99, p.Max, p.N)
	}
	fmt.Fprintf(w, "  events %d, wake lag %s\n", r.Events, pct(r.WakeLagUs))
	if r.LeadUs != nil {
		fmt.Fprintf(w, "  lead to kernel arrival: %s\n", pct(*r.LeadUs))
		fmt.Fprintf(w, "  lead to reader:         %s (%d of %d packets matched)\n", pct(*r.LeadUserUs), r.Matched, r.Received)
	}
}
