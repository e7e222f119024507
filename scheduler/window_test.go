package scheduler

import (
	"slices"
	"testing"
	"time"
)

func TestRingGrowsThenDropsOldest(t *testing.T) {
	r := newRing[int](40)
	for i := range 100 {
		old, full := r.push(i)
		if wantFull := i >= 40; full != wantFull || (full && old != i-40) {
			t.Fatalf("push %d: dropped %d full %v", i, old, full)
		}
	}
	var got []int
	for r.len() > 0 {
		got = append(got, r.popFront())
	}
	want := make([]int, 40)
	for i := range want {
		want[i] = 60 + i
	}
	if !slices.Equal(got, want) {
		t.Errorf("contents %v", got)
	}
}

func TestHistogramQuantilesNeverUnderestimate(t *testing.T) {
	var h histogram
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i) * 3 * time.Microsecond) // 3µs .. 300µs
	}
	if p50 := h.quantile(0.5); p50 < 150*time.Microsecond || p50 > 200*time.Microsecond {
		t.Errorf("p50 %v: want the bucket bound over 150µs (200µs)", p50)
	}
	if p99 := h.quantile(0.99); p99 != 300*time.Microsecond {
		t.Errorf("p99 %v: want 300µs (the max caps the 500µs bucket)", p99)
	}
	h.add(time.Second)
	if h.quantile(1) != time.Second || h.counts[len(LatencyBuckets)] != 1 {
		t.Errorf("overflow: max quantile %v", h.quantile(1))
	}
}

func TestSLOWindowExactP99(t *testing.T) {
	w := sloWindow{samples: newRing[latencySample](sloWindowCap)}
	slo := 100 * time.Microsecond
	for i := range 100 {
		lat := 10 * time.Microsecond
		if i < 2 {
			lat = time.Millisecond
		}
		w.add(t0.Add(time.Duration(i)*time.Millisecond), lat, slo)
	}
	// 2 of 100 above: the 99th smallest is above the SLO.
	if !w.p99Exceeds() || w.p99() != time.Millisecond {
		t.Fatalf("2/100: exceeds=%v p99=%v", w.p99Exceeds(), w.p99())
	}
	// Expire the first sample: 1 of 99 above, p99 (rank 99 of 99) is still it.
	w.expire(t0.Add(time.Second), time.Second, slo)
	if w.samples.len() != 99 || !w.p99Exceeds() {
		t.Fatalf("after expiry: n=%d exceeds=%v", w.samples.len(), w.p99Exceeds())
	}
	w.expire(t0.Add(time.Second+time.Millisecond), time.Second, slo)
	if w.p99Exceeds() || w.exceeded != 0 {
		t.Fatalf("all outliers expired: exceeds=%v count=%d", w.p99Exceeds(), w.exceeded)
	}
}
