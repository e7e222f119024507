// Package eval runs taichi's benchmarks on this machine — VM startup under
// growing VM density (the paper's density experiment) and data-plane impact
// of a backlogged control plane — policy beside policy in one invocation,
// and writes the results as JSON, a Markdown table and PNG plots.
package eval

import (
	"math"
	"slices"
)

// Percentiles summarises a sample. Units are the caller's (ms, µs).
type Percentiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarize returns the percentiles of values (linear interpolation between
// closest ranks, so p50 of an even sample is the mean of the middle two).
// An empty sample gives the zero value.
func Summarize(values []float64) Percentiles {
	if len(values) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Percentiles{
		N:    len(s),
		P50:  quantileSorted(s, 0.50),
		P90:  quantileSorted(s, 0.90),
		P99:  quantileSorted(s, 0.99),
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// Quantile returns the q-quantile (0..1) of values; NaN for an empty sample.
func Quantile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	return quantileSorted(s, q)
}

func quantileSorted(s []float64, q float64) float64 {
	q = math.Min(1, math.Max(0, q))
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return s[lo]
	}
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// CapacityBound is the most CP can speed up by borrowing DP cores: the CP
// cores plus the idle share of the DP cores, relative to the CP cores alone.
func CapacityBound(dpIdleShare float64, dpCores, cpCores int) float64 {
	if cpCores <= 0 {
		return math.NaN()
	}
	idle := math.Min(1, math.Max(0, dpIdleShare))
	return 1 + idle*float64(dpCores)/float64(cpCores)
}
