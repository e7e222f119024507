package scheduler_test

import (
	"context"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// printActuator stands in for the daemon's adapter over the vCPU pool
// (Lend/Reclaim) and the DP loops (Control knobs, wake source).
type printActuator struct{}

func (printActuator) Lend(cpu int) error    { fmt.Println("cpuset += cpu", cpu); return nil }
func (printActuator) Reclaim(cpu int) error { fmt.Println("cpuset -= cpu", cpu); return nil }
func (printActuator) SetYield(cpu int, after int64, slice time.Duration) {
	fmt.Println("cpu", cpu, "yield after", after, "slice", slice)
}
func (printActuator) Wake(cpu int) { fmt.Println("wake cpu", cpu) }

func Example() {
	clock := scheduler.NewFakeClock(time.Unix(0, 0))
	s, err := scheduler.New([]int{1}, printActuator{}, scheduler.DefaultParams(), scheduler.WithClock(clock))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	for s.Sync(ctx) != nil { // wait until Run has started
		time.Sleep(time.Millisecond)
	}

	// The daemon forwards the DP loop's events (dataplane.Loop.Events()).
	t := clock.Now()
	s.Yielded(1, t)
	s.Woke(1, t.Add(40*time.Microsecond), scheduler.WakeRx, 25*time.Microsecond)
	_ = s.Sync(ctx)

	c := s.Snapshot().Cores[0]
	fmt.Println(c.State, c.Reclaims["rx"], c.Threshold, c.LentTotal)
	cancel()
	<-done
	// Output:
	// cpuset += cpu 1
	// cpu 1 yield after 1 slice 5ms
	// DP_ACTIVE 1 64 40µs
}
