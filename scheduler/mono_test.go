package scheduler

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMonotonicBaseMapsOntoRealClock(t *testing.T) {
	b, err := NewMonotonicBase()
	if err != nil {
		t.Fatal(err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	got := b.Time(ts.Nano())
	// Not a timing claim: a wrong clock (CLOCK_REALTIME read as monotonic)
	// is off by decades; one second absorbs any scheduling delay here.
	if d := time.Since(got); d < -time.Second || d > time.Second {
		t.Errorf("converted now is %v away from time.Now", d)
	}
	if got := b.Time(ts.Nano() + 1500).Sub(b.Time(ts.Nano())); got != 1500*time.Nanosecond {
		t.Errorf("differences not kept: %v", got)
	}
}
