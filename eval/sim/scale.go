package sim

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/internal/stats"
	"github.com/taichi-sched/taichi/scheduler"
)

// ScaleConfig is a grid of runs: every core count at every rate.
type ScaleConfig struct {
	Policy  scheduler.PolicyName
	Pattern Pattern
	Shape   Shape
	Cores   []int
	// Rates are the target engine events per second per DP core. Each idle
	// gap the loop lends costs the engine two events (the yield and the
	// wake), so the traffic offers Rate/2 packets per second per core; the
	// engine gets what the policy makes of it (Point.EventsPerCoreS).
	Rates    []float64
	Duration time.Duration
	Costs    Costs
	Seed     uint64
}

// Validate names the setting at fault, as the CLI names its flags.
func (c ScaleConfig) Validate() error {
	if _, err := scheduler.LookupPolicy(c.Policy); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if _, err := ParsePattern(string(c.Pattern)); err != nil {
		return fmt.Errorf("pattern: %w", err)
	}
	if len(c.Cores) == 0 {
		return errors.New("cores: none given")
	}
	for _, n := range c.Cores {
		if n < 1 || n > 1024 {
			return fmt.Errorf("cores: %d: want 1 to 1024 DP cores", n)
		}
	}
	if len(c.Rates) == 0 {
		return errors.New("rate: none given")
	}
	for _, r := range c.Rates {
		if !(r > 0) || math.IsInf(r, 0) {
			return fmt.Errorf("rate: %v: want a positive number of events per second per core", r)
		}
	}
	if c.Duration < SamplePeriod {
		return fmt.Errorf("duration: %v: want at least %v (one sampling interval)", c.Duration, SamplePeriod)
	}
	return nil
}

// Point is one run of the grid.
type Point struct {
	Rate    float64 `json:"rate_events_per_core_s"`
	Pattern Pattern `json:"pattern"`
	Result
	NsPerEvent     float64 `json:"engine_ns_per_event"`
	CoreShare      float64 `json:"engine_core_share"`
	NominalShare   float64 `json:"engine_core_share_at_rate"`
	EventsPerCoreS float64 `json:"events_per_core_s"`
}

// Scale runs the grid, core counts outer, rates inner. Core i of a run
// has seed Seed+i, so a core count's first cores see the same traffic in
// every run.
func Scale(c ScaleConfig) ([]Point, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var out []Point
	for _, n := range c.Cores {
		for _, rate := range c.Rates {
			cfg := Config{Policy: c.Policy, Duration: c.Duration, Costs: c.Costs}
			for i := range n {
				src, err := Synthetic(c.Pattern, rate/2, c.Shape, c.Seed+uint64(i))
				if err != nil {
					return nil, err
				}
				cfg.Cores = append(cfg.Cores, i+1)
				cfg.Arrivals = append(cfg.Arrivals, src)
			}
			runtime.GC() // the previous run's garbage is not this run's cost
			res, err := Run(cfg)
			if err != nil {
				return nil, err
			}
			out = append(out, NewPoint(rate, c.Pattern, res))
		}
	}
	return out, nil
}

// NewPoint derives a point's figures from its run.
func NewPoint(rate float64, p Pattern, r Result) Point {
	pt := Point{Rate: rate, Pattern: p, Result: r, NsPerEvent: r.NsPerEvent(), CoreShare: r.CoreShare(), EventsPerCoreS: r.EventsPerCoreS()}
	pt.NominalShare = pt.NsPerEvent * rate * float64(r.Cores) / 1e9
	return pt
}

// Saturation is where one engine thread would be busy all the time, at
// one core count: its measured ns per event (median over the rates) and
// the events per second per DP core that fill a core with them.
type Saturation struct {
	Cores          int     `json:"cores"`
	NsPerEvent     float64 `json:"engine_ns_per_event"`
	EventsPerCoreS float64 `json:"saturating_events_per_core_s"`
}

// Saturations derives the saturation point of each core count.
func Saturations(points []Point) []Saturation {
	byCores := map[int][]float64{}
	for _, p := range points {
		if p.Events > 0 {
			byCores[p.Cores] = append(byCores[p.Cores], p.NsPerEvent)
		}
	}
	var out []Saturation
	for n, ns := range byCores {
		slices.Sort(ns)
		med := ns[len(ns)/2]
		if len(ns)%2 == 0 {
			med = (ns[len(ns)/2-1] + ns[len(ns)/2]) / 2
		}
		out = append(out, Saturation{Cores: n, NsPerEvent: med, EventsPerCoreS: 1e9 / med / float64(n)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cores < out[j].Cores })
	return out
}

// WriteTable writes the grid as Markdown: one row per run, then the
// saturation points.
func WriteTable(w io.Writer, c ScaleConfig, points []Point) {
	fmt.Fprintf(w, "Engine: policy %s on simulated time, %s traffic, %v simulated per run; loop model: poll %v, packet %v, wake %v, probe lead %v. %s\n\n",
		c.Policy, c.Pattern, c.Duration, c.Costs.Poll, c.Costs.Packet, c.Costs.Wake, c.Costs.Lead, machineNote())
	fmt.Fprintln(w, "| DP cores | rate events/s/core | got events/s/core | engine ns/event | engine % of a core | % of a core at rate | lent core-s | reclaims by cause | SLO breaches | guard trips |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
	for _, p := range points {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %d/%d | %d |\n",
			p.Cores, num(p.Rate), num(p.EventsPerCoreS), num(p.NsPerEvent), pct(p.CoreShare), pct(p.NominalShare),
			num(p.LentS), stats.FormatCounts(p.Reclaims), p.Breaches, p.Intervals, p.GuardTrips)
	}
	fmt.Fprintln(w, "\n| DP cores | engine ns/event | one engine thread saturates at events/s/core |")
	fmt.Fprintln(w, "|---:|---:|---:|")
	for _, s := range Saturations(points) {
		fmt.Fprintf(w, "| %d | %s | %s |\n", s.Cores, num(s.NsPerEvent), num(s.EventsPerCoreS))
	}
	fmt.Fprintln(w, "\n"+CostNote)
}

// CostNote says what the cost columns measure.
const CostNote = "Engine cost: real time in the engine's calls (scheduler.Stepper: the daemon's engine and policies), replayed on three twin engines in batches of " +
	"4096 calls, each batch at its fastest replay, per event and per simulated second (% of a core). Not included: the daemon's way in (Scheduler.HandleBatch: a lock, a clock read for the decision latency and two deadline scans per batch; or Post's queue), the pump and its I/O. " +
	"\"% of a core at rate\" scales ns/event to the requested rate when the policy turned the traffic into fewer events. " +
	"SLO breaches: 100 ms intervals whose residence p99 was above the SLO, of those with packets. Other work on the machine only adds to the cost: compare the load average above."

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

// machineNote says what the cost was measured on: the engine's ns/event
// move with whatever else the machine runs.
func machineNote() string {
	note := fmt.Sprintf("Cost measured on %d CPUs (%s)", runtime.NumCPU(), runtime.GOARCH)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			note += ", load average " + f[0] + " when the table was written"
		}
	}
	return note + "."
}
