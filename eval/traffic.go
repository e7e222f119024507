package eval

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"

	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

// onoffPeriod is one on+off cycle of the generator's bursts.
const onoffPeriod = 100 * time.Millisecond

// burstShare is the rate during a burst relative to the path's capacity:
// below saturation, so a burst's latency measures the DP loop, not a queue
// the generator built.
const burstShare = 0.5

// GeneratorFIFO is the SCHED_FIFO priority of the generator's sender
// thread during a run: above every CP task (SCHED_OTHER or idle) on the CP
// core it shares with them, below the DP loops. Without it the generator
// offered 28.4 kpps at load 0.3 under static and dynamic but 21.8 kpps
// under taichi, whose confined blockers run on the CP core.
const GeneratorFIFO = 1

// newTraffic returns the generator driving the testbed's DP loop (reflect
// mode) and the path's capacity: the packet rate that comes back when the
// generator offers far more than the path carries. During a run the
// generator's sender runs on senderCPU at SCHED_FIFO GeneratorFIFO.
func newTraffic(ctx context.Context, tb *testbed.Testbed, forward bool, senderCPU int) (Traffic, int, error) {
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
		var rep trafficgen.Report
		err := onFIFOThread(senderCPU, GeneratorFIFO, func() error {
			var err error
			rep, err = trafficgen.Run(ctx, o)
			return err
		})
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

// onFIFOThread runs f on a thread of its own pinned to cpu at SCHED_FIFO
// prio: trafficgen.Run sends on its caller's thread, so that is the
// sender's class. The thread's class and CPUs are put back afterwards; a
// thread that cannot be put back ends with its goroutine instead of
// returning to the runtime's pool.
func onFIFOThread(cpu, prio int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		class, err := linuxsched.Get(tid)
		if err != nil {
			errc <- err
			return
		}
		cpus, err := linuxsched.Affinity(tid)
		if err != nil {
			errc <- err
			return
		}
		if err := linuxsched.Pin(tid, cpu); err != nil {
			errc <- fmt.Errorf("generator: %w", err)
			return
		}
		if err := linuxsched.Set(tid, linuxsched.FIFO(prio)); err != nil {
			errc <- errors.Join(fmt.Errorf("generator: %w", err), linuxsched.Pin(tid, cpus...))
			return
		}
		ferr := f()
		if err := errors.Join(linuxsched.Set(tid, class), linuxsched.Pin(tid, cpus...)); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("generator: restoring its thread: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
