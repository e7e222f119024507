package eval

import (
	"context"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

// onoffPeriod is one on+off cycle of the generator's bursts.
const onoffPeriod = 100 * time.Millisecond

// burstShare is the rate during a burst relative to the path's capacity:
// below saturation, so a burst's latency measures the DP loop, not a queue
// the generator built.
const burstShare = 0.5

// senderNice is the sender's nice value in every cell: at nice 0 it got a
// third of the CP core under taichi, where the pool's group and the
// confined group each weigh as much as it (eval dataplane, mixed CP load,
// load 0.3: taichi offered 60-71% of the requested rate, static and dynamic
// 100%). At -10 it weighs more than both together and takes what it asks;
// it sleeps between batches, so that is the load, not the core.
const senderNice = -10

// newTraffic returns the generator driving the testbed's DP loop (reflect
// mode) and the path's capacity: the packet rate that comes back when the
// generator offers far more than the path carries. During a run the
// generator's sender is pinned to senderCPU (a CP core): left to the
// kernel it lands on the DP core at times, where a lent core's SCHED_FIFO
// loop preempts it, and offers less under a lending policy than under
// static. It stays SCHED_OTHER: at SCHED_FIFO it starved the CP core's
// ksoftirqd and the CP pipeline (static at 32 VMs: 93 s instead of 22 s,
// residence p99 109 ms). It runs at senderNice instead, in every cell.
func newTraffic(ctx context.Context, tb *testbed.Testbed, forward bool, senderCPU int) (Traffic, int, error) {
	// The capacity probe sends from the runs' CPU too: unpinned, it spread
	// the path over both cores and measured a capacity the pinned sender's
	// core could not carry (load 0.3 then took almost all of the CP core:
	// static at 32 VMs 101 s, 8.8 s without traffic).
	base := trafficgen.Options{NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: senderCPU >= 0, SenderCPU: senderCPU, SenderNice: senderNice}
	if forward {
		// A switch in the DP: packets go through it to the sink, where
		// the generator's receive socket lives.
		base.Dst, base.RecvNetNS, base.RecvAddr = tb.SinkIP, tb.SinkNS, tb.SinkIP
	}
	traffic := func(ctx context.Context, spec TrafficSpec) (DP, error) {
		o := base
		o.Pattern = spec.Pattern
		d := min(spec.Duration, 4*time.Minute)
		o.Count = max(1, int(float64(spec.Rate)*d.Seconds()))
		o.Rate = spec.Rate
		o.Deadline = d + 10*time.Second
		if spec.Pattern == trafficgen.PatternOnOff {
			o.Rate, o.On, o.Off = shapeOnOff(spec.Rate, spec.Capacity)
			if o.Off <= 0 {
				o.Pattern, o.On, o.Off = trafficgen.PatternConstant, 0, 0
			}
		}
		rep, err := trafficgen.Run(ctx, o)
		l := rep.LatencyUs
		return DP{
			OfferedPPS: rep.OfferedPPS, RequestedPPS: scheduledPPS(o, rep.SendTime), PPS: rep.AchievedPPS, Loss: rep.Loss,
			LatUS: Percentiles{N: int(rep.Received), P50: l.P50, P90: l.P90, P99: l.P99, Max: l.Max, Mean: l.Mean},
		}, err
	}
	// Capacity: offer a constant rate well above what veth + the DP loop
	// carry here and see what returns.
	probe := base
	probe.Pattern, probe.Rate, probe.Count = trafficgen.PatternConstant, 500000, 500000
	probe.Deadline = 5 * time.Second
	rep, err := trafficgen.Run(ctx, probe)
	if err != nil {
		return nil, 0, fmt.Errorf("eval: measuring DP capacity: %w", err)
	}
	if rep.AchievedPPS < 100 {
		return nil, 0, fmt.Errorf("eval: measuring DP capacity: only %.0f pps came back (is a DP loop reflecting on %s/%s?)", rep.AchievedPPS, tb.DPNS, tb.DPIface)
	}
	return traffic, int(rep.AchievedPPS), nil
}

// shapeOnOff turns an average rate into bursts at burstShare of capacity
// with the duty cycle that keeps the average; at or above burstShare there
// is no gap left (off = 0: send constantly at rate).
func shapeOnOff(rate, capacity int) (burst int, on, off time.Duration) {
	if capacity <= 0 {
		capacity = rate
	}
	burst = max(rate, int(burstShare*float64(capacity)))
	on = time.Duration(float64(rate) / float64(burst) * float64(onoffPeriod))
	return burst, on, onoffPeriod - on
}

// scheduledPPS is the rate o's schedule asks for over a sending time of
// d: bursts at o.Rate for o.On of every o.On+o.Off (a run may end inside
// either), a steady o.Rate otherwise. 0 when nothing was sent.
func scheduledPPS(o trafficgen.Options, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	if o.Pattern != trafficgen.PatternOnOff || o.Off <= 0 {
		return float64(o.Rate)
	}
	period := o.On + o.Off
	on := time.Duration(d/period)*o.On + min(d%period, o.On)
	return float64(o.Rate) * on.Seconds() / d.Seconds()
}
