package stats

import (
	"math"
	"testing"
)

func TestSummarizeNearestRank(t *testing.T) {
	s := Summarize([]float64{5, 1, 4, 2, 3})
	if s.N != 5 || s.P50 != 3 || s.P90 != 5 || s.P99 != 5 || s.Min != 1 || s.Max != 5 || s.Mean != 3 {
		t.Fatalf("got %+v", s)
	}
	// 1..100: rank q·N exactly, no rounding up past an integer rank.
	var hundred []float64
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, float64(i))
	}
	if h := Summarize(hundred); h.P50 != 50 || h.P90 != 90 || h.P99 != 99 || h.Max != 100 {
		t.Fatalf("1..100: %+v", h)
	}
	// An even sample's median is an observed value (the lower middle).
	if got := Summarize([]float64{2, 1}); got.P50 != 1 {
		t.Fatalf("even sample p50 %v, want 1", got.P50)
	}
	// Fewer than 100 samples: p99 is the maximum.
	if got := Summarize([]float64{10, 12, 20}); got.P99 != 20 || got.P50 != 12 {
		t.Fatalf("three samples: %+v", got)
	}
	if got := Summarize(nil); got != (Percentiles{}) {
		t.Fatalf("empty sample: %+v", got)
	}
	if got := Summarize([]float64{7}); got.P50 != 7 || got.P99 != 7 || got.Min != 7 {
		t.Fatalf("one sample: %+v", got)
	}
	if got := Summarize([]float64{4, 4, 4, 4}); got.P50 != 4 || got.P99 != 4 || got.Mean != 4 {
		t.Fatalf("ties: %+v", got)
	}
	in := []float64{3, 1, 2}
	Summarize(in)
	if in[0] != 3 {
		t.Fatal("Summarize reordered its input")
	}
}

func TestQuantileEdges(t *testing.T) {
	vals := []float64{0.5, 1, 3, 3, 7, 8, 9, 12} // sorted
	if QuantileSorted(vals, 0) != 0.5 || QuantileSorted(vals, -1) != 0.5 {
		t.Fatal("q <= 0 is not the minimum")
	}
	if QuantileSorted(vals, 1) != 12 || QuantileSorted(vals, 2) != 12 {
		t.Fatal("q >= 1 is not the maximum")
	}
	prev := math.Inf(-1)
	for q := 0.0; q <= 1; q += 0.01 {
		v := QuantileSorted(vals, q)
		if v < prev {
			t.Fatalf("quantile not monotone at q=%v: %v < %v", q, v, prev)
		}
		found := false
		for _, x := range vals {
			found = found || x == v
		}
		if !found {
			t.Fatalf("q=%v gave %v, not a sample", q, v)
		}
		prev = v
	}
}

func TestFormatCounts(t *testing.T) {
	if got := FormatCounts(map[string]uint64{"rx": 1, "probe": 3}); got != "probe=3 rx=1" {
		t.Fatalf("got %q", got)
	}
	if got := FormatCounts(nil); got != "-" {
		t.Fatalf("none: got %q", got)
	}
}

func TestNearestRank(t *testing.T) {
	for _, c := range []struct {
		q    float64
		n    uint64
		want uint64
	}{
		{0.99, 100, 99}, {0.99, 1000, 990}, {0.5, 1000, 500}, {0.5, 3, 2},
		{0.99, 3, 3}, {0, 10, 1}, {-1, 10, 1}, {2, 10, 10}, {0.5, 0, 0},
	} {
		if got := NearestRank(c.q, c.n); got != c.want {
			t.Errorf("NearestRank(%v, %d) = %d, want %d", c.q, c.n, got, c.want)
		}
	}
}

func TestQuantileBucket(t *testing.T) {
	buckets := []uint64{90, 0, 10}
	for _, c := range []struct {
		q    float64
		want int
	}{{0.5, 0}, {0.9, 0}, {0.91, 2}, {0.99, 2}, {1, 2}} {
		if i, ok := QuantileBucket(buckets, 100, c.q); !ok || i != c.want {
			t.Errorf("q %v: bucket %d %v, want %d", c.q, i, ok, c.want)
		}
	}
	if _, ok := QuantileBucket(buckets, 0, 0.5); ok {
		t.Error("no samples: want ok false")
	}
	if _, ok := QuantileBucket(buckets, 200, 0.99); ok {
		t.Error("buckets short of the rank: want ok false")
	}
}
