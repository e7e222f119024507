// Package eval runs taichi's benchmarks on this machine — VM startup under
// growing VM density (the paper's density experiment) and data-plane impact
// of a backlogged control plane — policy beside policy in one invocation,
// and writes the results as JSON, a Markdown table and PNG plots.
package eval

import (
	"math"

	"github.com/taichi-sched/taichi/internal/stats"
)

// Percentiles summarises a sample (nearest-rank; see stats.Percentiles).
type Percentiles = stats.Percentiles

// CapacityBound is the most CP can speed up by borrowing DP cores: the CP
// cores plus the idle share of the DP cores, relative to the CP cores alone.
func CapacityBound(dpIdleShare float64, dpCores, cpCores int) float64 {
	if cpCores <= 0 {
		return math.NaN()
	}
	idle := math.Min(1, math.Max(0, dpIdleShare))
	return 1 + idle*float64(dpCores)/float64(cpCores)
}
