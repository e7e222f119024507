// Package stats summarises samples: the one Percentiles type and the one
// rank rule (nearest rank) behind every quantile taichi reports or judges:
// the eval's reports, the probe's measurements, the wake-cost calibration
// behind the auto SLO, and the bucketed histograms of the DP loops, the
// scheduler's SLO window, the blocker tracer and the kernel module.
package stats

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Percentiles summarises a sample. Units are the caller's (ms, µs).
//
// Every percentile is nearest-rank: the smallest sample with at least
// q·N samples at or below it (rank ⌈q·N⌉, rank 1 for q = 0). Nearest-rank
// was chosen over interpolation because each reported value is one that
// was observed: a latency p99 never names a delay no packet or VM saw, and
// with fewer than 100 samples the p99 is honestly the maximum. It is also
// the rule of dataplane.Histogram.Quantile (a bucket picked by rank), so
// exact and bucketed summaries agree in kind.
type Percentiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarize returns the percentiles of values (left unchanged). An empty
// sample gives the zero value.
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
		P50:  QuantileSorted(s, 0.50),
		P90:  QuantileSorted(s, 0.90),
		P99:  QuantileSorted(s, 0.99),
		Min:  s[0],
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// NearestRank is the 1-based rank of the q-quantile among n samples:
// ⌈q·n⌉, with q clamped to 0..1 and the rank to 1..n (0 when n is 0).
func NearestRank(q float64, n uint64) uint64 {
	if n == 0 {
		return 0
	}
	q = math.Min(1, math.Max(0, q))
	// The small slack keeps q·n that is an integer in exact arithmetic
	// (0.99·100) from rounding up a rank in floating point.
	rank := uint64(max(0, math.Ceil(q*float64(n)-1e-9)))
	return max(1, min(rank, n))
}

// QuantileSorted is the nearest-rank q-quantile of the sorted, non-empty
// sample s.
func QuantileSorted[T cmp.Ordered](s []T, q float64) T {
	return s[NearestRank(q, uint64(len(s)))-1]
}

// QuantileBucket is the index of the histogram bucket holding the
// nearest-rank q-quantile of total samples counted in buckets (in order).
// ok is false when total is 0 or the buckets hold fewer samples than the
// rank; the caller then answers with its maximum.
func QuantileBucket(buckets []uint64, total uint64, q float64) (i int, ok bool) {
	rank := NearestRank(q, total)
	if rank == 0 {
		return 0, false
	}
	var seen uint64
	for i, n := range buckets {
		seen += n
		if seen >= rank {
			return i, true
		}
	}
	return 0, false
}

// FormatCounts renders counts by name as "probe=3 rx=1", sorted by name;
// "-" when there are none (the reports' reclaims-by-cause cells).
func FormatCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatUint(m[k], 10)
	}
	return strings.Join(parts, " ")
}
