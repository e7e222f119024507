package dataplane

import (
	"encoding/json"
	"testing"
	"time"
)

func TestHistBucketEdges(t *testing.T) {
	// Edges are contiguous, increasing, and every value maps into its bucket.
	if HistLower(0) != 0 {
		t.Fatalf("first bucket starts at %d", HistLower(0))
	}
	for i := 0; i < HistBuckets-1; i++ {
		lo, hi := HistLower(i), HistUpper(i)
		if hi <= lo || HistLower(i+1) != hi {
			t.Fatalf("bucket %d: [%d, %d), next starts at %d", i, lo, hi, HistLower(i+1))
		}
		for _, v := range []int64{lo, hi - 1, (lo + hi) / 2} {
			if got := histIndex(v); got != i {
				t.Fatalf("histIndex(%d) = %d, want %d (bucket [%d, %d))", v, got, i, lo, hi)
			}
		}
		// Relative width stays within one sub-bucket of an octave.
		if lo >= 1<<(histSubBits+histMinShift) && float64(hi-lo)/float64(lo) > 1.0/histSub+1e-9 {
			t.Fatalf("bucket %d [%d, %d) wider than 1/%d of its lower bound", i, lo, hi, histSub)
		}
	}
	for _, c := range []struct {
		v    int64
		want int
	}{
		{-5, 0}, {0, 0}, {255, 0}, {256, 1}, {2047, 7}, {2048, 8}, {2303, 8}, {2304, 9}, {4095, 15}, {4096, 16},
		{1 << 40, HistBuckets - 1}, {1<<63 - 1, HistBuckets - 1},
	} {
		if got := histIndex(c.v); got != c.want {
			t.Errorf("histIndex(%d) = %d, want %d", c.v, got, c.want)
		}
	}
	// 100 µs lands in a bucket no wider than 12.5% of it.
	i := histIndex(100_000)
	if HistLower(i) > 100_000 || HistUpper(i) <= 100_000 || HistUpper(i)-HistLower(i) > 12_500 {
		t.Fatalf("100 µs in bucket [%d, %d)", HistLower(i), HistUpper(i))
	}
}

func TestHistRecordDoesNotAllocate(t *testing.T) {
	var h latencyHist
	v := int64(0)
	if a := testing.AllocsPerRun(10000, func() { v += 1013; h.record(v) }); a != 0 {
		t.Fatalf("%v allocations per record", a)
	}
}

func TestHistQuantilesAndSub(t *testing.T) {
	var h latencyHist
	for i := 0; i < 990; i++ {
		h.record(int64(10 * time.Microsecond))
	}
	before := h.snapshot()
	for i := 0; i < 10; i++ {
		h.record(int64(5 * time.Millisecond))
	}
	s := h.snapshot()
	if s.Count != 1000 || s.MaxNs != uint64(5*time.Millisecond) {
		t.Fatalf("count %d max %d", s.Count, s.MaxNs)
	}
	p50, p99, p999 := s.Quantile(0.5), s.Quantile(0.99), s.Quantile(0.999)
	if p50 < 10*time.Microsecond || p50 > 11250*time.Nanosecond {
		t.Errorf("p50 %v, want 10 µs within a bucket", p50)
	}
	if p99 != p50 {
		t.Errorf("p99 %v: 990 of 1000 samples are 10 µs, want %v", p99, p50)
	}
	if p999 != 5*time.Millisecond {
		t.Errorf("p99.9 %v, want the 5 ms max (capped by it)", p999)
	}
	if n := s.Above(time.Millisecond); n != 10 {
		t.Errorf("Above(1ms) = %d, want 10", n)
	}
	d := s.Sub(before)
	if d.Count != 10 || d.Quantile(0.5) != 5*time.Millisecond || d.MaxNs != uint64(5*time.Millisecond) {
		t.Errorf("delta: count %d p50 %v max %d", d.Count, d.Quantile(0.5), d.MaxNs)
	}
	// A delta whose samples did not raise the max bounds it by its top bucket.
	for i := 0; i < 5; i++ {
		h.record(int64(20 * time.Microsecond))
	}
	d2 := h.snapshot().Sub(s)
	if d2.Count != 5 || d2.MaxNs < uint64(20*time.Microsecond) || d2.MaxNs > uint64(23*time.Microsecond) {
		t.Errorf("delta without a new max: count %d max %d", d2.Count, d2.MaxNs)
	}
	if (Histogram{}).Quantile(0.99) != 0 {
		t.Error("empty histogram quantile not 0")
	}
}

func TestHistJSONRoundTrip(t *testing.T) {
	var h latencyHist
	for _, v := range []int64{0, 300, 40_000, 40_001, 9_000_000} {
		h.record(v)
	}
	s := h.snapshot()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 200 {
		t.Errorf("wire form %d bytes for 5 samples: not sparse: %s", len(b), b)
	}
	var back Histogram
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Fatalf("round trip changed the histogram: %s", b)
	}
	for _, bad := range []string{
		`{"count":1,"buckets":[[9999,1]]}`,
		`{"count":2,"buckets":[[3,1]]}`,
	} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestHistAtMostNeverCountsAbove(t *testing.T) {
	var h latencyHist
	for _, v := range []int64{500, 1_000, 1_001, 2_000_000} {
		h.record(v)
	}
	s := h.snapshot()
	for _, c := range []struct {
		d    time.Duration
		want uint64
	}{{0, 0}, {768 * time.Nanosecond, 1}, {time.Millisecond, 3}, {2 * time.Millisecond, 3}, {time.Second, 4}} {
		if got := s.AtMost(c.d); got != c.want {
			t.Errorf("AtMost(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestHistogramRecordMatchesTheLoopsHistogram(t *testing.T) {
	var live latencyHist
	var snap Histogram
	for _, v := range []int64{-3, 0, 300, 40_000, 9_000_000} {
		live.record(v)
		snap.Record(time.Duration(v))
	}
	if live.snapshot() != snap {
		t.Fatalf("Record built %+v, the loop's histogram %+v", snap, live.snapshot())
	}
}
