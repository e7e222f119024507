package eval

import (
	"math"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/trafficgen"
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

// The requested rate of an on/off run is what its schedule asks for over
// the time it sent, wherever in a cycle the run ended.
func TestOfferedScheduledRate(t *testing.T) {
	burst, on, off := shapeOnOff(28400, 94000) // load 0.3: bursts at half capacity
	o := trafficgen.Options{Pattern: trafficgen.PatternOnOff, Rate: burst, On: on, Off: off}
	period := on + off
	for _, c := range []struct {
		d    time.Duration
		want float64
	}{
		{10 * period, 28400}, // whole cycles: the average
		{10*period + on, float64(burst) * 11 * on.Seconds() / (10*period + on).Seconds()}, // ended after a burst
		{on / 2, float64(burst)}, // inside the first burst
		{0, 0},
	} {
		if got := scheduledPPS(o, c.d); math.Abs(got-c.want) > 0.005*c.want+1e-9 {
			t.Errorf("after %v: %.0f pps, want %.0f", c.d, got, c.want)
		}
	}
	if got := scheduledPPS(trafficgen.Options{Pattern: trafficgen.PatternConstant, Rate: 70000}, time.Second); got != 70000 {
		t.Errorf("constant: %v", got)
	}
}
