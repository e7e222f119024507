package scheduler

import (
	"slices"
	"time"
)

// LatencyBuckets are the upper bounds of the exposed wake latency histogram.
var LatencyBuckets = []time.Duration{
	1 * time.Microsecond, 2 * time.Microsecond, 5 * time.Microsecond,
	10 * time.Microsecond, 20 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 200 * time.Microsecond, 500 * time.Microsecond,
	1 * time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond,
}

// histogram counts latencies in LatencyBuckets (last slot: above all bounds).
type histogram struct {
	counts [17]uint64
	count  uint64
	sum    time.Duration
	max    time.Duration
}

func (h *histogram) add(d time.Duration) {
	i, _ := slices.BinarySearch(LatencyBuckets, d)
	h.counts[i]++
	h.count++
	h.sum += d
	h.max = max(h.max, d)
}

// quantile returns the upper bound of the bucket holding the q-quantile
// (nearest rank), or the maximum for the overflow bucket: never an
// underestimate.
func (h *histogram) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := nearestRank(q, int(h.count))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= uint64(rank) {
			if i < len(LatencyBuckets) {
				return min(LatencyBuckets[i], h.max)
			}
			return h.max
		}
	}
	return h.max
}

// nearestRank is the 1-based rank of the q-quantile among n samples.
func nearestRank(q float64, n int) int {
	r := int(q*float64(n) + 0.999999999)
	return max(1, min(r, n))
}

// ring is a bounded FIFO; pushing onto a full ring drops the oldest entry.
// Its storage grows on demand up to the bound.
type ring[T any] struct {
	buf   []T
	head  int
	n     int
	limit int
}

func newRing[T any](limit int) ring[T] { return ring[T]{buf: make([]T, min(limit, 16)), limit: limit} }

func (r *ring[T]) push(v T) (dropped T, wasFull bool) {
	if r.n == len(r.buf) && len(r.buf) < r.limit {
		grown := make([]T, min(2*len(r.buf), r.limit))
		for i := range r.n {
			grown[i] = r.at(i)
		}
		r.buf, r.head = grown, 0
	}
	if r.n == len(r.buf) {
		dropped = r.buf[r.head]
		r.buf[r.head] = v
		r.head = (r.head + 1) % len(r.buf)
		return dropped, true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
	return dropped, false
}

func (r *ring[T]) len() int   { return r.n }
func (r *ring[T]) front() T   { return r.buf[r.head] }
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)%len(r.buf)] }
func (r *ring[T]) popFront() T {
	v := r.buf[r.head]
	var zero T
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}
func (r *ring[T]) clear() {
	for r.n > 0 {
		r.popFront()
	}
}

type latencySample struct {
	at  time.Time
	lat time.Duration
}

// sloWindow keeps the latency samples of the last window and how many exceed
// the SLO, so "p99 > SLO" is an O(1) exact test.
type sloWindow struct {
	samples  ring[latencySample]
	exceeded int
}

const sloWindowCap = 8192

func (w *sloWindow) add(at time.Time, lat, slo time.Duration) {
	if old, full := w.samples.push(latencySample{at, lat}); full && old.lat > slo {
		w.exceeded--
	}
	if lat > slo {
		w.exceeded++
	}
}

func (w *sloWindow) expire(now time.Time, window, slo time.Duration) {
	for w.samples.len() > 0 && !w.samples.front().at.After(now.Add(-window)) {
		if w.samples.popFront().lat > slo {
			w.exceeded--
		}
	}
}

// p99Exceeds reports whether the nearest-rank p99 of the window is above the
// SLO: fewer samples are within the SLO than the p99's rank.
func (w *sloWindow) p99Exceeds() bool {
	n := w.samples.len()
	return n > 0 && n-w.exceeded < nearestRank(0.99, n)
}

func (w *sloWindow) p99() time.Duration {
	n := w.samples.len()
	if n == 0 {
		return 0
	}
	lats := make([]time.Duration, n)
	for i := range n {
		lats[i] = w.samples.at(i).lat
	}
	slices.Sort(lats)
	return lats[nearestRank(0.99, n)-1]
}

func (w *sloWindow) reset() {
	w.samples.clear()
	w.exceeded = 0
}

type loadSample struct {
	at       time.Time
	interval time.Duration
	busy     float64
}

// loadWindow is the time-weighted mean busy fraction over the last window.
type loadWindow struct {
	samples ring[loadSample]
}

const loadWindowCap = 1024

func (w *loadWindow) add(s loadSample) { w.samples.push(s) }

func (w *loadWindow) expire(now time.Time, window time.Duration) {
	for w.samples.len() > 0 && !w.samples.front().at.After(now.Add(-window)) {
		w.samples.popFront()
	}
}

// mean returns the mean busy fraction and how much time the samples cover.
func (w *loadWindow) mean() (busy float64, covered time.Duration) {
	var weighted float64
	for i := range w.samples.len() {
		s := w.samples.at(i)
		weighted += s.busy * float64(s.interval)
		covered += s.interval
	}
	if covered == 0 {
		return 0, 0
	}
	return weighted / float64(covered), covered
}
