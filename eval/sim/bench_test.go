package sim

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkEngine reports the engine's ns per event (twin-timed) for
// simulated seconds of Poisson traffic: go test -bench Engine ./eval/sim
// (on a quiet machine; the figure is the claim, not the benchmark's ns/op).
func BenchmarkEngine(b *testing.B) {
	for _, cores := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("cores=%d/rate=5000", cores), func(b *testing.B) {
			var ns, share float64
			for b.Loop() {
				pts, err := Scale(ScaleConfig{Policy: "taichi", Pattern: Poisson, Cores: []int{cores}, Rates: []float64{5000},
					Duration: 500 * time.Millisecond, Costs: DefaultCosts, Seed: 1})
				if err != nil {
					b.Fatal(err)
				}
				ns, share = pts[0].NsPerEvent, pts[0].CoreShare
			}
			b.ReportMetric(ns, "engine-ns/event")
			b.ReportMetric(100*share, "engine-%core")
		})
	}
}
