package kmod

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestBucketBoundsCoverEverything(t *testing.T) {
	// Consecutive buckets must tile [0, inf) without gaps or overlaps.
	var prevHi int64
	for i := 0; i < HistBuckets; i++ {
		lo, hi := BucketBounds(i)
		if int64(lo) != prevHi {
			t.Fatalf("bucket %d starts at %v, previous ended at %v", i, lo, prevHi)
		}
		if i == HistBuckets-1 {
			if hi != 0 {
				t.Fatalf("last bucket should be open-ended, got hi %v", hi)
			}
			break
		}
		if hi <= lo {
			t.Fatalf("bucket %d: hi %v <= lo %v", i, hi, lo)
		}
		prevHi = int64(hi)
	}
}

func TestHistogramQuantile(t *testing.T) {
	var h Histogram
	h.Buckets[0] = 90 // < 1.024µs
	h.Buckets[5] = 10 // [16.384, 32.768) µs
	h.Count, h.MaxNs = 100, 20_000
	if q := h.Quantile(0.5); q != 1024 {
		t.Errorf("p50 = %v, want the first bucket's bound 1.024µs", q)
	}
	if q := h.Quantile(0.99); q != 20_000 {
		t.Errorf("p99 = %v, want capped at max 20µs", q)
	}
	// Nearest rank: the p90 of 100 samples is the 90th, still in the
	// first bucket (the rule before internal/stats took the 91st).
	if q := h.Quantile(0.9); q != 1024 {
		t.Errorf("p90 = %v, want the first bucket's bound 1.024µs", q)
	}
}

func TestOpenMissingDeviceIsNotSupported(t *testing.T) {
	_, err := OpenPath(filepath.Join(t.TempDir(), "taichi"))
	if err == nil || !errors.Is(err, ErrNotSupported) {
		t.Fatalf("want ErrNotSupported, got %v", err)
	}
}
