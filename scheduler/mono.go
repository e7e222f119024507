package scheduler

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// MonotonicBase turns CLOCK_MONOTONIC nanoseconds (the stamps on DP loop
// and probe events) into times on RealClock's timeline. Pass the loop's own
// stamps rather than stamping on receipt: a forwarder that reads a yield
// and its wake together would otherwise see a zero-length lend, and
// admission would learn from it.
type MonotonicBase struct {
	wall time.Time
	mono int64
}

// NewMonotonicBase reads both clocks back to back.
func NewMonotonicBase() (MonotonicBase, error) {
	var ts unix.Timespec
	wall := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return MonotonicBase{}, fmt.Errorf("scheduler: clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return MonotonicBase{wall: wall, mono: ts.Nano()}, nil
}

// Time converts a CLOCK_MONOTONIC stamp.
func (b MonotonicBase) Time(monoNs int64) time.Time {
	return b.wall.Add(time.Duration(monoNs - b.mono))
}
