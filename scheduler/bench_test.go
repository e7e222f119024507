package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type nopActuator struct{}

func (nopActuator) Lend(int) error                     { return nil }
func (nopActuator) Reclaim(int) error                  { return nil }
func (nopActuator) SetYield(int, int64, time.Duration) {}
func (nopActuator) Wake(int)                           {}

// BenchmarkEngineYieldWake: the decision cost of one lend/reclaim cycle
// (a yield and an rx wake with a latency sample) inside the event loop.
func BenchmarkEngineYieldWake(b *testing.B) {
	for _, pol := range []PolicyName{PolicyDynamic, PolicyTaichi} {
		b.Run(string(pol), func(b *testing.B) {
			p := DefaultParams()
			p.Policy = pol
			e := newEngine(p, []int{1, 2, 3, 4}, nopActuator{}, quietLogger(), t0)
			e.start(t0)
			tm := time.Duration(0)
			b.ReportAllocs()
			for b.Loop() {
				cpu := 1 + int(tm/time.Microsecond)%4
				e.handle(Event{Kind: EvYield, CPU: cpu, At: at(tm)})
				tm += 200 * time.Microsecond
				e.handle(Event{Kind: EvWake, CPU: cpu, At: at(tm), Wake: WakeRx, Latency: 20 * time.Microsecond})
				tm += time.Microsecond
			}
		})
	}
}

// BenchmarkSchedulerPost: posting events to a running Scheduler and having
// them handled (channel hand-off to the Run goroutine included).
func BenchmarkSchedulerPost(b *testing.B) {
	s, ctx := runningForBench(b)
	b.ReportAllocs()
	for b.Loop() {
		for !s.Yielded(1, time.Time{}) {
			s.Sync(ctx)
		}
		for !s.Woke(1, time.Time{}, WakeRx, 20*time.Microsecond) {
			s.Sync(ctx)
		}
	}
	s.Sync(ctx)
}

// BenchmarkSchedulerHandleBatch: a drained ring's worth of yield/wake pairs
// (batch events) handed to a running Scheduler in the caller's goroutine,
// per event. The pump's path since it became event-driven.
func BenchmarkSchedulerHandleBatch(b *testing.B) {
	for _, n := range []int{2, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s, _ := runningForBench(b)
			at := time.Now()
			batch := make([]Event, n)
			b.ReportAllocs()
			for b.Loop() {
				for i := range batch {
					at = at.Add(10 * time.Microsecond)
					if i%2 == 0 {
						batch[i] = Event{Kind: EvYield, CPU: 1, At: at}
					} else {
						batch[i] = Event{Kind: EvWake, CPU: 1, At: at, Wake: WakeRx, Latency: 20 * time.Microsecond}
					}
				}
				s.HandleBatch(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// runningForBench is a running Scheduler for DP core 1 with the default
// parameters, stopped when b ends, and the context it runs under.
func runningForBench(b *testing.B) (*Scheduler, context.Context) {
	s, err := New([]int{1}, nopActuator{}, DefaultParams(), WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go s.Run(ctx)
	for s.Sync(ctx) != nil {
		time.Sleep(time.Millisecond)
	}
	return s, ctx
}
