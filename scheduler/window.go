package scheduler

import (
	"math"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/internal/stats"
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
	if i, ok := stats.QuantileBucket(h.counts[:], h.count, q); ok && i < len(LatencyBuckets) {
		return min(LatencyBuckets[i], h.max)
	}
	return h.max
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

// BudgetMarks are the fractions of the SLO at which the guard counts
// packets: the window's p99 is known to lie between two neighbouring marks,
// and the high- and low-water marks of the SLO rule are among them.
var BudgetMarks = [...]float64{0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1, 1.5, 2, 4}

const numMarks = len(BudgetMarks)

// The SLO rule's marks (indices into BudgetMarks), judged on the p99 over
// the budget horizon. Above the high-water mark the rule confines the CP
// task that delayed packets most in the current window (while that window
// is above the mark too); the loop yields as eagerly as dynamic until the
// high mark and adapts again below the low one. Below the low-water mark
// for a quiet period, a confined command is released. The high mark keeps
// a quarter of the budget for what a confinement takes to show (a window);
// the low mark is half the high one, so a release may double the p99
// without reaching the high mark.
const (
	markLow  = 2 // 0.375
	markHigh = 5 // 0.75
	markSLO  = 7 // 1
)

// The SLO rule's high- and low-water marks as fractions of the SLO (for
// status and docs: they are BudgetMarks' own entries).
var (
	HighWater = BudgetMarks[markHigh]
	LowWater  = BudgetMarks[markLow]
)

// residenceSample is one interval of a DP loop's per-packet RX residence.
type residenceSample struct {
	at      time.Time
	packets uint64
	over    [numMarks]uint64 // packets that waited more than each mark
	p99     time.Duration
}

// sloWindow holds the residence intervals of the last window with their
// totals, so "the window's p99 is above a mark" is an O(1) exact test on
// packet counts: more than 1% of the packets waited longer.
type sloWindow struct {
	samples ring[residenceSample]
	packets uint64
	over    [numMarks]uint64
}

const sloWindowCap = 1024

func (w *sloWindow) add(s residenceSample) {
	if old, full := w.samples.push(s); full {
		w.sub(old)
	}
	w.packets += s.packets
	for i := range w.over {
		w.over[i] += s.over[i]
	}
}

func (w *sloWindow) sub(old residenceSample) {
	w.packets -= old.packets
	for i := range w.over {
		w.over[i] -= old.over[i]
	}
}

func (w *sloWindow) expire(now time.Time, window time.Duration) {
	for w.samples.len() > 0 && !w.samples.front().at.After(now.Add(-window)) {
		w.sub(w.samples.popFront())
	}
}

// exceeds reports whether the nearest-rank p99 of the window's packets is
// above mark m: fewer packets were within it than the p99's rank.
func (w *sloWindow) exceeds(m int) bool {
	n := w.packets
	return n > 0 && n-w.over[m] < stats.NearestRank(0.99, n)
}

// P99Exceeds reports whether the window's p99 is above the SLO.
func (w *sloWindow) P99Exceeds() bool { return w.exceeds(markSLO) }

// budgetOver stands for a budget beyond the last mark where a number must
// be finite (snapshots, JSON, a confinement's reason).
const budgetOver = 99

// Budget is the share of the SLO the window's p99 uses, as the lowest
// mark it does not exceed (an upper bound); 0 for an empty window, and
// +Inf above the highest mark (budgetOver where it must be finite).
func (w *sloWindow) Budget() float64 {
	if w.packets == 0 {
		return 0
	}
	for m, f := range BudgetMarks {
		if !w.exceeds(m) {
			return f
		}
	}
	return math.Inf(1)
}

// WorstP99 is the highest interval p99 in the window (status only).
func (w *sloWindow) WorstP99() time.Duration {
	var worst time.Duration
	for i := range w.samples.len() {
		worst = max(worst, w.samples.at(i).p99)
	}
	return worst
}

// Packets and Late are the window's totals (Late: waited more than the SLO).
func (w *sloWindow) Packets() uint64 { return w.packets }
func (w *sloWindow) Late() uint64    { return w.over[markSLO] }

func (w *sloWindow) reset() {
	w.samples.clear()
	w.packets, w.over = 0, [numMarks]uint64{}
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
