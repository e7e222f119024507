package daemon

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/taichi-sched/taichi/dataplane"
)

func TestConstHistogramKeepsCountsAndBounds(t *testing.T) {
	var h dataplane.Histogram
	for _, v := range []time.Duration{3 * time.Microsecond, 40 * time.Microsecond, 40 * time.Microsecond, 3 * time.Millisecond} {
		h.Record(v)
	}
	desc := prometheus.NewDesc("x_seconds", "x", []string{"loop", "cpu"}, nil)
	var m dto.Metric
	if err := constHistogram(desc, h, "dp1", "1").Write(&m); err != nil {
		t.Fatal(err)
	}
	ph := m.GetHistogram()
	if ph.GetSampleCount() != 4 || ph.GetSampleSum() < 0.003 || ph.GetSampleSum() > 0.0031 {
		t.Fatalf("count %d sum %v", ph.GetSampleCount(), ph.GetSampleSum())
	}
	want := map[float64]uint64{1e-6: 0, 5e-6: 1, 5e-5: 3, 1e-3: 3, 5e-3: 4, 1: 4}
	for _, b := range ph.GetBucket() {
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
}
