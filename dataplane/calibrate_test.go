package dataplane

import (
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// MeasureWakeCost wakes a pinned SCHED_FIFO thread and reports sane
// percentiles of every wake it saw; bad arguments are refused.
func TestMeasureWakeCost(t *testing.T) {
	if _, err := MeasureWakeCost(1, 51, 0, time.Millisecond); err == nil {
		t.Fatal("n = 0 accepted")
	}
	testenv.NeedRoot(t, "SCHED_FIFO on CPU 1")
	w, err := MeasureWakeCost(1, 51, 200, 200*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	if w.Samples < 1 || w.Samples > 200 || w.P50 <= 0 || w.P99 < w.P50 || w.Max < w.P99 {
		t.Fatalf("wake cost %+v", w)
	}
}
