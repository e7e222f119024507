package dataplane_test

// Benchmarks on the real testbed (root). They run one generator pass per
// configuration, interleaved so that machine noise hits every
// configuration alike, and print a side-by-side table; only the ratios in
// one run mean anything on a shared VM. Run them with -benchtime 1x:
//
//	go test -run '^$' -bench 'YieldVsBusy|MaxPPS|RingFormat' -benchtime 1x ./dataplane/

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
	"golang.org/x/sys/unix"
)

// runLoop starts a loop and returns a function that stops it and returns
// its final stats.
func runLoop(b *testing.B, cfg dataplane.LoopConfig, yieldAfter int) (*dataplane.Loop, func() dataplane.Stats) {
	b.Helper()
	l, err := dataplane.NewLoop(cfg)
	if err != nil {
		b.Fatal(err)
	}
	l.Control().SetYieldAfter(yieldAfter)
	l.Control().SetSlice(10 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	select {
	case <-l.Ready():
	case err := <-done:
		b.Fatalf("loop: %v", err)
	}
	go func() {
		for range l.Events() { // keep the channel drained; counters carry the totals
		}
	}()
	return l, func() dataplane.Stats {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("loop: %v", err)
		}
		return l.Stats()
	}
}

type benchRow struct {
	name               string
	rate               int
	rep                trafficgen.Report
	st                 dataplane.Stats
	wall               time.Duration
	loopPPS, lentShare float64
	// medianResP99 is set on rows of medians, which have no histogram.
	medianResP99 float64
}

// residenceP99us is the loop's per-packet RX residence p99 in µs.
func (r benchRow) residenceP99us() float64 {
	if r.medianResP99 != 0 {
		return r.medianResP99
	}
	return float64(r.st.Residence.Quantile(0.99)) / 1e3
}

// seenRT collects foreign real-time threads seen during measurements.
var seenRT = map[string]bool{}

func noteForeignRT() {
	for _, f := range foreignRT() {
		seenRT[f] = true
	}
}

func takeSeenRT() []string {
	var out []string
	for f := range seenRT {
		out = append(out, f)
	}
	sort.Strings(out)
	seenRT = map[string]bool{}
	return out
}

func measure(b *testing.B, tb *testbed.Testbed, cfg dataplane.LoopConfig, yieldAfter, rate, count int) benchRow {
	noteForeignRT()
	defer noteForeignRT()
	_, stop := runLoop(b, cfg, yieldAfter)
	start := time.Now()
	rep, err := trafficgen.Run(context.Background(), genOptions(tb, rate, count, trafficgen.PatternConstant))
	wall := time.Since(start)
	st := stop()
	if err != nil {
		b.Fatal(err)
	}
	row := benchRow{rate: rate, rep: rep, st: st, wall: wall}
	if rep.SendTime > 0 {
		row.loopPPS = float64(st.Packets) / rep.SendTime.Seconds()
	}
	row.lentShare = st.Blocked.Seconds() / wall.Seconds()
	return row
}

// foreignRT lists other processes' real-time threads allowed on the DP
// core: they preempt or share the loop's core and void the numbers.
func foreignRT() []string {
	var out []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*")
	for _, task := range tasks {
		if strings.HasPrefix(task, fmt.Sprintf("/proc/%d/", os.Getpid())) {
			continue
		}
		var tid int
		if _, err := fmt.Sscanf(filepath.Base(task), "%d", &tid); err != nil {
			continue
		}
		ts, err := linuxsched.ReadThread(0, tid)
		if err != nil || (ts.Class.Policy != unix.SCHED_FIFO && ts.Class.Policy != unix.SCHED_RR) || !slices.Equal(ts.Affinity, []int{dpCPU}) {
			continue
		}
		comm, _ := os.ReadFile(task + "/comm")
		if kernelThread(string(comm)) {
			continue
		}
		out = append(out, fmt.Sprintf("%s(tid %d, prio %d)", strings.TrimSpace(string(comm)), tid, ts.Class.Priority))
	}
	return out
}

// kernelThread reports per-CPU kernel threads that are always there.
func kernelThread(comm string) bool {
	for _, p := range []string{"migration/", "irq/", "watchdog/", "idle_inject/", "cpuhp/"} {
		if strings.HasPrefix(comm, p) {
			return true
		}
	}
	return false
}

func printTable(b *testing.B, title string, rows []benchRow) {
	var sb strings.Builder
	if f := takeSeenRT(); len(f) > 0 {
		fmt.Fprintf(&sb, "\nWARNING: other real-time threads pinned to CPU %d during this run: %s\n", dpCPU, strings.Join(f, ", "))
	}
	fmt.Fprintf(&sb, "\n%s\n%-12s %9s %10s %10s %8s %9s %9s %9s %8s %7s %10s\n", title,
		"config", "rate", "sent", "recv_pps", "loss%", "p50_us", "p99_us", "max_us", "lent%", "yields", "resid_p99_us")
	for _, r := range rows {
		fmt.Fprintf(&sb, "%-12s %9d %10d %10.0f %8.3f %9.1f %9.1f %9.1f %8.1f %7d %10.1f\n",
			r.name, r.rate, r.rep.Sent, r.rep.AchievedPPS, 100*r.rep.Loss, r.rep.LatencyUs.P50, r.rep.LatencyUs.P99,
			r.rep.LatencyUs.Max, 100*r.lentShare, r.st.Yields, r.residenceP99us())
	}
	if med := medians(rows); len(med) < len(rows) {
		fmt.Fprintf(&sb, "medians over rounds:\n")
		for _, r := range med {
			fmt.Fprintf(&sb, "%-12s %9d %10s %10.0f %8.3f %9.1f %9.1f %9.1f %8.1f %7d %10.1f\n",
				r.name, r.rate, "", r.rep.AchievedPPS, 100*r.rep.Loss, r.rep.LatencyUs.P50, r.rep.LatencyUs.P99,
				r.rep.LatencyUs.Max, 100*r.lentShare, r.st.Yields, r.residenceP99us())
		}
	}
	// Straight to stdout: the benchmark log truncates long tables.
	fmt.Println(sb.String())
}

// medians folds rows of the same config and rate into one row of medians.
func medians(rows []benchRow) []benchRow {
	type key struct {
		name string
		rate int
	}
	var order []key
	groups := map[key][]benchRow{}
	for _, r := range rows {
		k := key{r.name, r.rate}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	med := func(g []benchRow, f func(benchRow) float64) float64 {
		v := make([]float64, len(g))
		for i, r := range g {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	var out []benchRow
	for _, k := range order {
		g := groups[k]
		var m benchRow
		m.name, m.rate = k.name, k.rate
		m.rep.AchievedPPS = med(g, func(r benchRow) float64 { return r.rep.AchievedPPS })
		m.rep.Loss = med(g, func(r benchRow) float64 { return r.rep.Loss })
		m.rep.LatencyUs.P50 = med(g, func(r benchRow) float64 { return r.rep.LatencyUs.P50 })
		m.rep.LatencyUs.P99 = med(g, func(r benchRow) float64 { return r.rep.LatencyUs.P99 })
		m.rep.LatencyUs.Max = med(g, func(r benchRow) float64 { return r.rep.LatencyUs.Max })
		m.lentShare = med(g, func(r benchRow) float64 { return r.lentShare })
		m.st.Yields = uint64(med(g, func(r benchRow) float64 { return float64(r.st.Yields) }))
		m.medianResP99 = med(g, func(r benchRow) float64 { return r.residenceP99us() })
		out = append(out, m)
	}
	return out
}

// BenchmarkYieldVsBusy compares a busy-polling loop (YieldAfter -1) with a
// yield-on-idle loop (YieldAfter 200) at three rates, interleaved.
func BenchmarkYieldVsBusy(b *testing.B) {
	tb := needTestbed(b, "by")
	cfg := reflectConfig(tb)
	rates := []int{1000, 10000, 50000}
	var rows []benchRow
	for b.Loop() {
		rows = rows[:0]
		for round := 0; round < 3; round++ {
			for _, rate := range rates {
				count := max(rate, 3000)
				for _, m := range []struct {
					name string
					ya   int
				}{{"busy", -1}, {"yield200", 200}} {
					r := measure(b, tb, cfg, m.ya, rate, count)
					r.name = m.name
					rows = append(rows, r)
				}
			}
		}
	}
	printTable(b, "busy-poll vs yield-on-idle (reflect, constant rate, 1 s per run, three interleaved rounds)", rows)
	for _, r := range medians(rows) {
		b.ReportMetric(r.rep.LatencyUs.P99, fmt.Sprintf("p99us_%s_%d", r.name, r.rate))
	}
}

// BenchmarkMaxPPS offers far more than the loop can take and reports what
// the loop handled per second (busy-poll), plus what came back.
func BenchmarkMaxPPS(b *testing.B) {
	tb := needTestbed(b, "mx")
	var rows []benchRow
	for b.Loop() {
		for _, ring := range []string{dataplane.RingV2, dataplane.RingV3} {
			cfg := reflectConfig(tb)
			cfg.Ring = ring
			r := measure(b, tb, cfg, -1, 2_000_000, 1_000_000)
			r.name = "busy-" + ring
			rows = append(rows, r)
		}
	}
	var sb strings.Builder
	if f := takeSeenRT(); len(f) > 0 {
		fmt.Fprintf(&sb, "WARNING: other real-time threads pinned to CPU %d during this run: %s\n", dpCPU, strings.Join(f, ", "))
	}
	for _, r := range rows {
		capacity := float64(r.st.Packets) / r.st.Busy.Seconds()
		fmt.Fprintf(&sb, "%s: generator sent %d at %.0f pps; loop handled %d (%.0f pps over the send time, busy %.1f%%); back %d (%.0f pps), tx_drops %d; loop capacity %.0f pps (packets / busy time, %.0f ns per packet)\n",
			r.name, r.rep.Sent, r.rep.OfferedPPS, r.st.Packets, r.loopPPS, 100*r.st.Busy.Seconds()/r.rep.SendTime.Seconds(),
			r.rep.Received, r.rep.AchievedPPS, r.st.TxDrops, capacity, 1e9/capacity)
		b.ReportMetric(r.loopPPS, "loop_pps_"+r.name)
		b.ReportMetric(capacity, "capacity_pps_"+r.name)
	}
	fmt.Println(sb.String())
}

// BenchmarkRingFormat compares TPACKET_V2 (per-frame hand-off) with
// TPACKET_V3 (per-block hand-off, 1 ms retire timer) at a low and a
// moderate rate, busy-polling: the choice of the default ring.
func BenchmarkRingFormat(b *testing.B) {
	tb := needTestbed(b, "rf")
	var rows []benchRow
	for b.Loop() {
		for round := 0; round < 3; round++ {
			for _, rate := range []int{1000, 50000} {
				for _, ring := range []string{dataplane.RingV2, dataplane.RingV3} {
					cfg := reflectConfig(tb)
					cfg.Ring = ring
					r := measure(b, tb, cfg, -1, rate, max(rate, 3000))
					r.name = ring
					rows = append(rows, r)
				}
			}
		}
	}
	printTable(b, "RX ring format, busy-poll (reflect)", rows)
}

// BenchmarkIOPath compares the receive paths, AF_PACKET (TPACKET_V2 ring)
// and AF_XDP (copy mode), busy-polling and yielding, interleaved over two
// rounds: the choice of the default.
func BenchmarkIOPath(b *testing.B) {
	tb := needTestbed(b, "io")
	var rows []benchRow
	for b.Loop() {
		for round := 0; round < 3; round++ {
			for _, ya := range []int{-1, 200} {
				for _, io := range []string{dataplane.IOPacket, dataplane.IOXDP} {
					cfg := reflectConfig(tb)
					cfg.IO = io
					r := measure(b, tb, cfg, ya, 10000, 10000)
					r.name = io
					if ya >= 0 {
						r.name += "-yield"
					}
					rows = append(rows, r)
				}
			}
		}
	}
	printTable(b, "receive path: AF_PACKET v2 vs AF_XDP copy mode (reflect, 10 kpps constant, three interleaved rounds, 1 s each)", rows)
}
