package sim

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestScaleConfigValidate(t *testing.T) {
	good := ScaleConfig{Policy: "taichi", Pattern: Poisson, Cores: []int{1}, Rates: []float64{1000}, Duration: time.Second, Costs: DefaultCosts}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, spoil := range map[string]func(*ScaleConfig){
		"policy":   func(c *ScaleConfig) { c.Policy = "fast" },
		"pattern":  func(c *ScaleConfig) { c.Pattern = "bursty" },
		"cores":    func(c *ScaleConfig) { c.Cores = []int{0} },
		"rate":     func(c *ScaleConfig) { c.Rates = []float64{math.NaN()} },
		"duration": func(c *ScaleConfig) { c.Duration = time.Millisecond },
	} {
		c := good
		spoil(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), field+":") {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

// TestScaleTable: one row per run, every row as wide as the header, and
// the saturation point is 1e9 / (ns per event × cores).
func TestScaleTable(t *testing.T) {
	c := ScaleConfig{Policy: "taichi", Pattern: Poisson, Cores: []int{1, 2}, Rates: []float64{1000, 4000}, Duration: 300 * time.Millisecond, Costs: DefaultCosts, Seed: 3}
	pts, err := Scale(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 4 || pts[3].Cores != 2 || pts[3].Rate != 4000 {
		t.Fatalf("points %+v", pts)
	}
	for _, p := range pts {
		if p.Events == 0 || p.NsPerEvent <= 0 || p.LentS <= 0 {
			t.Errorf("%d cores at %v: events %d, ns/event %v, lent %v", p.Cores, p.Rate, p.Events, p.NsPerEvent, p.LentS)
		}
	}
	var buf bytes.Buffer
	WriteTable(&buf, c, pts)
	rows, cols := 0, -1
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| DP cores | engine") {
			if strings.HasPrefix(line, "| DP cores | engine") {
				break
			}
			continue
		}
		rows++
		if n := strings.Count(line, "|"); cols < 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row with %d separators, header %d: %s", n, cols, line)
		}
	}
	if rows != 5 {
		t.Errorf("%d rows, want a header and 4 runs:\n%s", rows, buf.String())
	}
	sat := Saturations([]Point{{Result: Result{Cores: 4, Events: 1}, NsPerEvent: 250}, {Result: Result{Cores: 4, Events: 1}, NsPerEvent: 350}})
	if len(sat) != 1 || sat[0].NsPerEvent != 300 || math.Abs(sat[0].EventsPerCoreS-1e9/300/4) > 1e-6 {
		t.Errorf("saturation %+v: want 300 ns/event, %v events/s/core", sat, 1e9/300/4)
	}
}
