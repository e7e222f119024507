package probe

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

// Both backends' wake sources are what a DP loop waits on.
var (
	_ dataplane.WakeSource = (*XDPWakeSource)(nil)
	_ dataplane.WakeSource = (*CountersWakeSource)(nil)
	_ dataplane.WakeSource = WakeSource(nil)
)

// dpCPU is the default DP core of this machine (CPU 0 is the CP core).
const dpCPU = 1

// runLoop starts a yield-on-idle reflect loop on the testbed's DP interface,
// optionally waiting on ws too; the returned stop ends it.
func runLoop(t testing.TB, tb *testbed.Testbed, ws dataplane.WakeSource) (*dataplane.Loop, func()) {
	t.Helper()
	l, err := dataplane.NewLoop(dataplane.LoopConfig{CPU: dpCPU, Iface: tb.DPIface, NetNS: tb.DPNS, Mode: dataplane.ModeReflect})
	if err != nil {
		t.Fatal(err)
	}
	if ws != nil {
		l.AddWakeSource(ws)
	}
	l.Control().SetYieldAfter(64)
	l.Control().SetSlice(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	select {
	case <-l.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("loop: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("loop: %v", err)
		}
		_ = l.Close()
	}
	t.Cleanup(stop)
	return l, stop
}

// A real DP loop, blocked with its core yielded, is woken by the probe at
// the nic hop: the wake is attributed to the probe, whose stamp precedes
// the packet's arrival in the loop's ring.
func TestDPLoopWokenByProbe(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, dpCPU)
	ws, err := p.XDPWakeSource(dpCPU)
	if err != nil {
		t.Fatal(err)
	}
	l, stop := runLoop(t, tb, ws)
	s := sender(t, tb)
	const n = 40
	for i := 1; i <= n; i++ {
		// Send only into a yielded loop, so every packet is a transition.
		waitFor(t, "loop yielded and armed", func() bool { return atomic.LoadUint64(ws.state) == coreArmed })
		sendN(t, s, uint64(i), 1)
		time.Sleep(time.Millisecond)
	}
	st, ok := l.WaitStats(5*time.Second, func(st dataplane.Stats) bool { return st.Packets == n })
	if !ok {
		t.Fatalf("loop received %d of %d packets", st.Packets, n)
	}
	stop()
	if st.WakesProbe == 0 {
		t.Fatalf("no wake attributed to the probe: %+v", st)
	}
	probeWakes, withLead := 0, 0
	for {
		select {
		case ev := <-l.Events():
			if ev.Kind == dataplane.KindWake && ev.Cause == scheduler.WakeProbe {
				probeWakes++
				if ev.LeadNs > 0 {
					withLead++
				}
			}
			continue
		default:
		}
		break
	}
	cs := ws.Stats()
	if cs.Delivered < st.WakesProbe || cs.Fired < cs.Delivered {
		t.Fatalf("probe delivered %d, fired %d; loop counted %d probe wakes", cs.Delivered, cs.Fired, st.WakesProbe)
	}
	if withLead == 0 {
		t.Fatalf("%d probe wakes, none with the probe's stamp before the packet's", probeWakes)
	}
	t.Logf("%d packets: loop wakes probe %d rx %d timeout %d; %d probe wakes with measured lead",
		n, st.WakesProbe, st.WakesRX, st.WakesTimeout, withLead)
}

// BenchmarkDPLoopRTT: round trip through a yield-on-idle reflect loop at a
// low rate (every packet finds the loop blocked), interleaved in three
// setups: no probe; the probe attached at the nic hop but not waking the
// loop (the XDP path's own effect); the probe waking the loop.
func BenchmarkDPLoopRTT(b *testing.B) {
	tb := upTestbed(b)
	const rounds = 3
	setups := []string{"none", "attached", "wake"}
	var p50, p99 [3][]float64
	var probeWakes, rxWakes uint64
	for r := 0; r < len(setups)*rounds; r++ {
		i := r % len(setups)
		var ws dataplane.WakeSource
		var p *XDP
		if i > 0 {
			p = startXDP(b, tb, dpCPU)
		}
		if i == 2 {
			ws, _ = p.WakeSource(dpCPU)
		}
		l, stop := runLoop(b, tb, ws)
		rep, err := trafficgen.Run(context.Background(), trafficgen.Options{
			NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, Rate: 500, Count: 1000})
		stop()
		if p != nil {
			_ = p.Stop()
		}
		if err != nil {
			b.Fatal(err)
		}
		st := l.Stats()
		p50[i] = append(p50[i], rep.LatencyUs.P50)
		p99[i] = append(p99[i], rep.LatencyUs.P99)
		if i == 2 {
			probeWakes += st.WakesProbe
			rxWakes += st.WakesRX
		}
		b.Logf("%-8s rtt p50 %.1f p99 %.1f µs, loss %.3f, wakes probe %d rx %d timeout %d",
			setups[i], rep.LatencyUs.P50, rep.LatencyUs.P99, rep.Loss, st.WakesProbe, st.WakesRX, st.WakesTimeout)
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for i, name := range setups {
		b.ReportMetric(median(p50[i]), "rtt_p50_us_"+name)
		b.ReportMetric(median(p99[i]), "rtt_p99_us_"+name)
	}
	b.ReportMetric(median(p50[2])/median(p50[0]), "rtt_p50_ratio_wake_vs_none")
	b.ReportMetric(median(p50[2])/median(p50[1]), "rtt_p50_ratio_wake_vs_attached")
	b.ReportMetric(float64(probeWakes)/float64(probeWakes+rxWakes), "probe_wake_frac")
}
