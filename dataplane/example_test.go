package dataplane_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
)

// A DP loop on core 1 reflecting what eth1 receives. A scheduler turns its
// knobs (Control) and reads its yield/wake events; the loop itself never
// waits on the scheduler. Needs root (SCHED_FIFO, AF_PACKET), so it has no
// checked output.
func Example() {
	l, err := dataplane.NewLoop(dataplane.LoopConfig{CPU: 1, Iface: "eth1"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	l.Control().SetYieldAfter(64)               // empty polls before it may yield the core
	l.Control().SetSlice(50 * time.Microsecond) // its bounded wait while lent

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go func() {
		for ev := range l.Events() {
			fmt.Println(ev.Kind, ev.Cause)
		}
	}()
	if err := l.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Stats().Packets, "packets")
}

// A Histogram counts latencies in buckets; Quantile answers with the upper
// bound of the bucket that holds the rank, never below the truth.
func ExampleHistogram() {
	var h dataplane.Histogram
	for _, d := range []time.Duration{3 * time.Microsecond, 4 * time.Microsecond, 5 * time.Microsecond, 900 * time.Microsecond} {
		h.Record(d)
	}
	fmt.Println(h.Count, h.Quantile(0.99), h.Above(100*time.Microsecond))
	// Output:
	// 4 900µs 1
}
