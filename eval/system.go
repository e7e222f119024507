package eval

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/procfs"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// System is the machine under test as the benchmarks see it: whatever runs
// the DP loop, owns the CP pool and applies co-scheduling policies (the
// taichi daemon in `taichi eval`). Keeping it this small lets the tests of
// the runner use a plain implementation and the CLI wire the daemon in a few
// lines.
type System interface {
	// SetPolicy applies a policy (static|dynamic|taichi) and returns once
	// the slow path (the CP pool's CPU set) reflects it.
	SetPolicy(ctx context.Context, name scheduler.PolicyName) error
	// Place puts a freshly started CP process into the CP pool.
	Place(pid int) error
	// Snapshot reads cumulative counters; runs report their differences.
	Snapshot() (Snapshot, error)
	// DPCores and CPCores name the cores (for the report and cyclictest).
	DPCores() []int
	CPCores() []int
	// DPPriority is the DP loop's SCHED_FIFO priority.
	DPPriority() int
	// SLO is the taichi guard's bound on RX residence p99 now.
	SLO() time.Duration
	// SetSLO changes that bound (an SLO sweep's value); restore puts back
	// the bound, and where it came from, as it was before the call.
	SetSLO(v time.Duration) (restore func() error, err error)
}

// Snapshot holds cumulative counters at one instant. Unknown values are
// negative, and differences involving them stay unknown.
type Snapshot struct {
	At time.Time
	// LentS: DP-core seconds lent to CP (summed over DP cores).
	LentS float64
	// CPCPUS: CP CPU seconds in total; CPOnDPS: of those, on DP cores.
	CPCPUS, CPOnDPS float64
	// DPBusyS: seconds the DP loops spent handling packets (summed over
	// loops); negative when the loop does not report it.
	DPBusyS float64
	// Reclaims counts lent periods ended, by cause (probe, rx, slice_end,
	// guard, load, policy), summed over DP cores.
	Reclaims map[string]uint64
	// Residence and Exposed are the DP loops' cumulative RX residence and
	// exposed wake latency histograms (merged over loops); HaveDPHist says
	// the system reports them.
	Residence, Exposed, Lead dataplane.Histogram
	HaveDPHist               bool
	// LoopClass is the first DP loop thread's scheduling class now.
	LoopClass string
	// RXStamp is where the first DP loop's residence stamps come from
	// (dataplane.StampKernel, XDPStampMeta or XDPStampHead).
	RXStamp string
	// DPStealS is the time the hypervisor took the DP cores away (steal,
	// summed over DP cores); negative when unknown.
	DPStealS float64
	// Blockers is blocker-aware lending's record per command so far
	// (cumulative blame, strikes and back-off); nil when it is off.
	Blockers []ConfinedCommand
	// DaemonCPUS is the co-scheduler's own CPU time so far (see
	// DaemonCPU for what it counts) and DaemonCoveredS the wall time its
	// count covered; negative when unknown.
	DaemonCPUS, DaemonCoveredS float64
}

// pollSnapshotter is a System with a cheaper Snapshot for loops that poll
// for a condition: it may leave costly figures unknown (DaemonSystem: the
// daemon's CPU, whose read pauses the CPU profiler).
type pollSnapshotter interface {
	PollSnapshot() (Snapshot, error)
}

// pollSnapshot takes a snapshot for one turn of a polling loop; the
// figures of a run come from Snapshot.
func pollSnapshot(sys System) (Snapshot, error) {
	if p, ok := sys.(pollSnapshotter); ok {
		return p.PollSnapshot()
	}
	return sys.Snapshot()
}

// ConfinedCommand is one command blocker-aware lending dealt with: the DP
// delay blamed on its processes, how often it was confined (its back-off
// doubles with each strike), its current back-off, and whether it was
// confined when the snapshot was taken.
type ConfinedCommand struct {
	Comm     string  `json:"comm"`
	BlamedMs float64 `json:"blamed_ms"`
	Strikes  int     `json:"strikes"`
	Backoff  string  `json:"backoff,omitempty"`
	Confined bool    `json:"confined"`
}

// Delta is what happened between two snapshots.
type Delta struct {
	WallS, LentS, CPCPUS, CPOnDPS, DPBusyS float64
	Reclaims                               map[string]uint64
	Residence, Exposed, Lead               dataplane.Histogram
	HaveDPHist                             bool
	DPStealS                               float64
	DaemonCPUS, DaemonCoveredS             float64
	// Confined: the commands blamed, struck or confined in the interval
	// (strikes, back-off and confinement as at its end).
	Confined []ConfinedCommand
}

// Sub returns s - before, keeping unknown (negative) values unknown.
func (s Snapshot) Sub(before Snapshot) Delta {
	d := func(a, b float64) float64 {
		if a < 0 || b < 0 {
			return -1
		}
		return a - b
	}
	return Delta{
		WallS:    s.At.Sub(before.At).Seconds(),
		LentS:    d(s.LentS, before.LentS),
		CPCPUS:   d(s.CPCPUS, before.CPCPUS),
		CPOnDPS:  d(s.CPOnDPS, before.CPOnDPS),
		DPBusyS:  d(s.DPBusyS, before.DPBusyS),
		Reclaims: subCounts(s.Reclaims, before.Reclaims),
		// Counters restart with a loop: a shrinking count is no interval.
		DPStealS:       d(s.DPStealS, before.DPStealS),
		DaemonCPUS:     d(s.DaemonCPUS, before.DaemonCPUS),
		DaemonCoveredS: d(s.DaemonCoveredS, before.DaemonCoveredS),
		HaveDPHist:     s.HaveDPHist && before.HaveDPHist && s.Residence.Count >= before.Residence.Count,
		Residence:      s.Residence.Sub(before.Residence),
		Exposed:        s.Exposed.Sub(before.Exposed),
		Lead:           s.Lead.Sub(before.Lead),
		Confined:       subConfined(s.Blockers, before.Blockers),
	}
}

// subConfined is what blocker-aware lending did between two records: per
// command, the blame added (a process that left the record takes its
// blame with it: never below 0), kept when the command was blamed,
// struck or is confined now.
func subConfined(after, before []ConfinedCommand) []ConfinedCommand {
	var out []ConfinedCommand
	for _, a := range after {
		c := a
		if i := slices.IndexFunc(before, func(b ConfinedCommand) bool { return b.Comm == a.Comm }); i >= 0 {
			c.BlamedMs = max(0, a.BlamedMs-before[i].BlamedMs)
			if a.Strikes == before[i].Strikes && c.BlamedMs == 0 && !a.Confined {
				continue
			}
		} else if a.Strikes == 0 && a.BlamedMs == 0 && !a.Confined {
			continue
		}
		out = append(out, c)
	}
	return out
}

// stealSeconds sums the steal time of cpus from /proc/stat; -1 when it
// cannot be read.
func stealSeconds(cpus []int) float64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return -1
	}
	st, err := fs.Stat()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, cpu := range cpus {
		c, ok := st.CPU[int64(cpu)]
		if !ok {
			return -1
		}
		sum += c.Steal
	}
	return sum
}

// TrafficSpec asks the generator for a load on the DP loop.
type TrafficSpec struct {
	Rate     int           // average packets per second
	Pattern  string        // constant|poisson|onoff
	Duration time.Duration // upper bound; the run also ends when ctx ends
	Capacity int           // the path's measured capacity (pps), shapes bursts
}

// Traffic drives the DP loop and reports what came back. It must return
// (with what it measured so far) when ctx ends, and stop by itself after
// spec.Duration.
type Traffic func(ctx context.Context, spec TrafficSpec) (DP, error)

// subCounts is a - b per key, dropping keys that did not move.
func subCounts(a, b map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range a {
		if v > b[k] {
			out[k] = v - b[k]
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
