package probe_test

import (
	"context"
	"fmt"
	"log"

	"github.com/taichi-sched/taichi/probe"
)

// An XDP probe on eth1 warns DP core 1 of packets before its loop sees
// them: the loop waits on the wake source's FD beside its socket. Needs
// root and BPF, so it has no checked output.
func Example() {
	p, err := probe.New(probe.BackendXDP, probe.Options{Iface: "eth1", Core: 1})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer p.Stop()
	ws, err := p.WakeSource(1)
	if err != nil {
		log.Fatal(err)
	}
	ws.Arm() // the DP loop is about to block: report the next packet
	// ... poll ws.FD() beside the loop's socket ...
	if stamp, ok := ws.Disarm(); ok {
		fmt.Println("a packet arrived at", stamp)
	}
}

// PercentilesNs summarises nanosecond samples in microseconds, nearest-rank:
// every value printed is one that was measured.
func ExamplePercentilesNs() {
	p := probe.PercentilesNs([]int64{12_000, 3_000, 5_000, 4_000})
	fmt.Printf("n=%d p50=%vµs p99=%vµs min=%vµs\n", p.N, p.P50, p.P99, p.Min)
	// Output:
	// n=4 p50=4µs p99=12µs min=3µs
}
