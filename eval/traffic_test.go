package eval

import (
	"math"
	"testing"
)

func TestShapeOnOffKeepsTheAverage(t *testing.T) {
	for _, c := range []struct{ rate, capacity int }{{1000, 100000}, {30000, 100000}, {49000, 100000}, {70000, 100000}, {500, 0}} {
		burst, on, off := shapeOnOff(c.rate, c.capacity)
		if on < 0 || off < 0 || on+off != onoffPeriod {
			t.Fatalf("%+v: on %v off %v, want a %v period", c, on, off, onoffPeriod)
		}
		avg := float64(burst) * on.Seconds() / onoffPeriod.Seconds()
		if math.Abs(avg-float64(c.rate)) > 0.01*float64(c.rate) {
			t.Errorf("%+v: bursts of %d pps for %v average %.0f pps, want %d", c, burst, on, avg, c.rate)
		}
		if c.capacity > 0 && float64(burst) > math.Max(float64(c.rate), burstShare*float64(c.capacity))+1 {
			t.Errorf("%+v: burst %d above both the rate and %.0f%% of capacity", c, burst, 100*burstShare)
		}
	}
}
