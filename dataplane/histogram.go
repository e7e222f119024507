package dataplane

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/internal/stats"
)

// Log-linear buckets: values below 2^(histSubBits+histMinShift) ns fall in
// linear buckets 2^histMinShift ns wide; above that, each power of two is
// cut into 2^histSubBits equal buckets (a relative error under 12.5%), up
// to 2^histTopBit ns (~68 s), where the last bucket takes everything.
const (
	histMinShift = 8 // 256 ns: the finest width, below what one wake costs
	histSubBits  = 3
	histSub      = 1 << histSubBits
	histTopBit   = 36
	// HistBuckets is the fixed number of buckets.
	HistBuckets = (histTopBit-histSubBits-histMinShift+1)*histSub + histSub
)

// histIndex returns the bucket of v ns (v < 0 counts as 0).
func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 1<<(histSubBits+histMinShift) {
		return int(u >> histMinShift)
	}
	e := bits.Len64(u) - 1 // floor(log2 u) >= histSubBits+histMinShift
	if e > histTopBit {
		return HistBuckets - 1
	}
	sub := int(u>>(e-histSubBits)) & (histSub - 1)
	return (e-histSubBits-histMinShift+1)*histSub + sub
}

// HistLower returns bucket i's lower bound in ns (inclusive).
func HistLower(i int) int64 {
	if i < histSub {
		return int64(i) << histMinShift
	}
	oct := i/histSub - 1 // 0 for the first log octave
	e := oct + histSubBits + histMinShift
	sub := i % histSub
	return int64(1)<<e + int64(sub)<<(e-histSubBits)
}

// HistUpper returns bucket i's upper bound in ns (exclusive).
func HistUpper(i int) int64 {
	if i+1 >= HistBuckets {
		return int64(1) << (histTopBit + 1)
	}
	return HistLower(i + 1)
}

// latencyHist is a fixed-memory histogram the loop thread writes with
// atomic adds (no allocation, no lock) and anyone may read.
type latencyHist struct {
	buckets [HistBuckets]atomic.Uint64
	sumNs   atomic.Uint64
	maxNs   atomic.Uint64
}

// record adds one sample of v ns. Only one writer (the loop thread) calls
// it, so the max needs no compare-and-swap.
func (h *latencyHist) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.buckets[histIndex(v)].Add(1)
	h.sumNs.Add(uint64(v))
	if uint64(v) > h.maxNs.Load() {
		h.maxNs.Store(uint64(v))
	}
}

func (h *latencyHist) snapshot() Histogram {
	// Count is the sum of the buckets read, so a snapshot taken while the
	// loop records is consistent with itself.
	var s Histogram
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
		s.Count += s.Buckets[i]
	}
	s.SumNs, s.MaxNs = h.sumNs.Load(), h.maxNs.Load()
	return s
}

// Histogram is a snapshot of a latency histogram: counts per bucket (bounds
// HistLower/HistUpper), their number, sum and largest sample. Snapshots of
// one histogram subtract (Sub) into the samples between them.
type Histogram struct {
	Buckets [HistBuckets]uint64
	Count   uint64
	SumNs   uint64
	// MaxNs is the largest sample since the loop started (a later snapshot's
	// Sub keeps it only when samples were added in between).
	MaxNs uint64
}

// Sub returns the samples recorded between before and h. The maximum of
// that interval is not known exactly: it is the later maximum when it grew,
// else the upper bound of the highest bucket that gained samples.
func (h Histogram) Sub(before Histogram) Histogram {
	var d Histogram
	top := -1
	for i := range h.Buckets {
		if h.Buckets[i] >= before.Buckets[i] {
			d.Buckets[i] = h.Buckets[i] - before.Buckets[i]
		}
		if d.Buckets[i] > 0 {
			top = i
		}
	}
	if h.Count >= before.Count {
		d.Count = h.Count - before.Count
	}
	if h.SumNs >= before.SumNs {
		d.SumNs = h.SumNs - before.SumNs
	}
	switch {
	case top < 0:
	case h.MaxNs > before.MaxNs:
		d.MaxNs = h.MaxNs
	default:
		d.MaxNs = min(uint64(HistUpper(top)), h.MaxNs)
	}
	return d
}

// Record adds one sample of d to a snapshot (not for concurrent use: the
// loop records into its own atomic histogram).
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.Buckets[histIndex(v)]++
	h.Count++
	h.SumNs += uint64(v)
	h.MaxNs = max(h.MaxNs, uint64(v))
}

// Add merges o into h (e.g. several loops' histograms).
func (h *Histogram) Add(o Histogram) {
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
	h.Count += o.Count
	h.SumNs += o.SumNs
	h.MaxNs = max(h.MaxNs, o.MaxNs)
}

// Quantile returns the q-quantile (0 < q <= 1) as the upper bound of the
// bucket holding that rank, capped by the maximum: never an underestimate
// by more than the maximum allows. 0 without samples.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	if i, ok := stats.QuantileBucket(h.Buckets[:], h.Count, q); ok {
		return time.Duration(min(uint64(HistUpper(i)), max(h.MaxNs, uint64(HistLower(i)))))
	}
	return time.Duration(h.MaxNs)
}

// Above returns how many samples were at least d (counting whole buckets
// whose lower bound is >= d, so it never counts a sample below d).
func (h Histogram) Above(d time.Duration) uint64 {
	var n uint64
	for i := HistBuckets - 1; i >= 0 && HistLower(i) >= int64(d); i-- {
		n += h.Buckets[i]
	}
	return n
}

// AtMost returns how many samples were at most d (counting whole buckets
// that end at or below d, so it never counts a sample above d).
func (h Histogram) AtMost(d time.Duration) uint64 {
	var n uint64
	for i := 0; i < HistBuckets && HistUpper(i) <= int64(d)+1; i++ {
		n += h.Buckets[i]
	}
	return n
}

// Mean returns the average sample, 0 without samples.
func (h Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return time.Duration(h.SumNs / h.Count)
}

// histJSON is the wire form: only non-empty buckets, as [index, count]
// pairs, so a snapshot fits the dp-host segment.
type histJSON struct {
	Count   uint64      `json:"count"`
	SumNs   uint64      `json:"sum_ns"`
	MaxNs   uint64      `json:"max_ns"`
	Buckets [][2]uint64 `json:"buckets,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (h Histogram) MarshalJSON() ([]byte, error) {
	w := histJSON{Count: h.Count, SumNs: h.SumNs, MaxNs: h.MaxNs}
	for i, c := range h.Buckets {
		if c > 0 {
			w.Buckets = append(w.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON implements json.Unmarshaler; an index outside the bucket
// range or counts that do not add up are errors.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var w histJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*h = Histogram{Count: w.Count, SumNs: w.SumNs, MaxNs: w.MaxNs}
	var total uint64
	for _, p := range w.Buckets {
		if p[0] >= HistBuckets {
			return fmt.Errorf("histogram: bucket %d out of range (%d buckets)", p[0], HistBuckets)
		}
		h.Buckets[p[0]] += p[1]
		total += p[1]
	}
	if total != w.Count {
		return fmt.Errorf("histogram: buckets hold %d samples, count says %d", total, w.Count)
	}
	return nil
}
