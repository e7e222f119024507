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

// newTraffic returns the generator driving the testbed's DP loop (reflect
// mode) and the path's capacity: the packet rate that comes back when the
// generator offers far more than the path carries.
func newTraffic(ctx context.Context, tb *testbed.Testbed, forward bool) (Traffic, int, error) {
	base := trafficgen.Options{NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP}
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
			OfferedPPS: rep.OfferedPPS, PPS: rep.AchievedPPS, Loss: rep.Loss,
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
