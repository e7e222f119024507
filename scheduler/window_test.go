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
	w := sloWindow{samples: newRing[residenceSample](sloWindowCap)}
	// 10 intervals of 10 packets; the first holds 2 late packets.
	for i := range 10 {
		s := residenceSample{at: t0.Add(time.Duration(i) * time.Millisecond), packets: 10, p99: 10 * time.Microsecond}
		if i == 0 {
			s.over[markSLO], s.p99 = 2, time.Millisecond
		}
		w.add(s)
	}
	// 2 of 100 late: the 99th smallest is above the SLO.
	if !w.P99Exceeds() || w.WorstP99() != time.Millisecond {
		t.Fatalf("2/100: exceeds=%v worst p99=%v", w.P99Exceeds(), w.WorstP99())
	}
	// 1 of 100 late is within the p99.
	w.over[markSLO] = 1
	if w.P99Exceeds() {
		t.Fatal("1/100 late: p99 must be within the SLO")
	}
	w.over[markSLO] = 2
	w.expire(t0.Add(time.Second), time.Second)
	if w.samples.len() != 9 || w.packets != 90 || w.Late() != 0 || w.P99Exceeds() {
		t.Fatalf("after expiry: n=%d packets=%d late=%d exceeds=%v", w.samples.len(), w.packets, w.Late(), w.P99Exceeds())
	}
}
