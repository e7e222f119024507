package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// SoakReport is a soak's output (DIR/soak.json).
type SoakReport struct {
	Experiment string         `json:"experiment"`
	Started    time.Time      `json:"started"`
	Machine    Machine        `json:"machine"`
	Params     map[string]any `json:"params"`
	Runs       []SoakRun      `json:"runs"`
	Valid      bool           `json:"valid"`
	Checks     []Check        `json:"checks,omitempty"`
	Notes      []string       `json:"notes,omitempty"`
}

// SoakRun is one cell of a soak: the figures every eval run has (over the
// whole cell) and the per-window series.
type SoakRun struct {
	Run
	Traffic    string `json:"traffic"`
	CPLoadKind string `json:"cp_load_kind"`
	Softirq    string `json:"softirq"`
	RatePPS    int    `json:"rate_pps"`
	// LateSLOUS is the bound late packets and windows are judged
	// against: the daemon's SLO during the cell, whatever the policy.
	LateSLOUS float64 `json:"late_slo_us"`
	// Chunks are the generator runs chained over the cell.
	Chunks  []SoakChunk  `json:"generator_runs"`
	Windows []SoakWindow `json:"windows"`
	// WindowsDropped: windows past the sampler's bound (none expected).
	WindowsDropped int `json:"windows_dropped,omitempty"`
	// GuardTrips over the cell; BenchedWindows: windows with a bench.
	GuardTrips     uint64 `json:"guard_trips"`
	BenchedWindows int    `json:"benched_windows"`
	// WindowsWithinSLO: the share of windows with packets whose residence
	// p99 was at most the SLO; LateShare: packets above the SLO over the
	// whole cell.
	WindowsWithinSLO *float64 `json:"windows_within_slo"`
	LateShare        *float64 `json:"late_share"`
	// ProcessCPUS and ProcessCPUShare: the eval process's CPU time over
	// the cell (the daemon's own status figure: the daemon, the traffic
	// generator and the sampler; Run.DaemonCPUS is the daemon's alone).
	ProcessCPUS     float64 `json:"process_cpu_s"`
	ProcessCPUShare float64 `json:"process_cpu_share"`
	// ThreadsOnDP: each thread of the eval process seen on a DP core (or
	// allowed there) at some sample, once; OnDPWindows how many samples.
	ThreadsOnDP []string `json:"threads_on_dp,omitempty"`
	OnDPWindows int      `json:"threads_on_dp_windows"`
}

// SoakChunk is one generator run of a cell.
type SoakChunk struct {
	DurationS float64 `json:"duration_s"`
	DP        DP      `json:"dp"`
}

// maxThreadNames bounds the offending threads a run lists.
const maxThreadNames = 10

// summarise fills the run's window-derived figures.
func (r *SoakRun) summarise(windows []SoakWindow, first, last soakSample, dropped int, slo time.Duration) {
	r.Windows, r.WindowsDropped = windows, dropped
	if last.GuardTrips > first.GuardTrips {
		r.GuardTrips = last.GuardTrips - first.GuardTrips
	}
	judged, within := 0, 0
	for _, w := range windows {
		if w.Benched {
			r.BenchedWindows++
		}
		if w.ResidenceP99US != nil {
			judged++
			if *w.ResidenceP99US <= float64(slo)/1e3 {
				within++
			}
		}
		if len(w.ThreadsOnDP) > 0 {
			r.OnDPWindows++
		}
		for _, t := range w.ThreadsOnDP {
			if len(r.ThreadsOnDP) < maxThreadNames && !slices.Contains(r.ThreadsOnDP, t) {
				r.ThreadsOnDP = append(r.ThreadsOnDP, t)
			}
		}
	}
	if judged > 0 {
		s := float64(within) / float64(judged)
		r.WindowsWithinSLO = &s
	}
	if h := r.DP.ResidenceHist; h != nil && h.Count > 0 {
		s := float64(lateCount(*h, slo)) / float64(h.Count)
		r.LateShare = &s
	}
	r.ProcessCPUS = max(0, last.SelfCPUS-first.SelfCPUS)
	if span := last.At.Sub(first.At).Seconds(); span > 0 {
		r.ProcessCPUShare = r.ProcessCPUS / span
	}
}

// The soak's bars (issue #21's done-when).
const (
	soakWithinSLOShare  = 0.99 // taichi's windows with residence p99 within the SLO
	soakHarvestVsDyn    = 0.6  // taichi's harvest against dynamic's in the same cell
	soakMinWindowsShare = 0.9  // windows sampled against the cell's seconds
)

// soakGroup is a cell group: the runs that differ only by policy.
type soakGroup struct {
	softirq, traffic, cpLoad string
	repeat                   int
}

func (g soakGroup) String() string {
	return fmt.Sprintf("softirq %s, %s traffic, %s CP, repeat %d", g.softirq, g.traffic, g.cpLoad, g.repeat+1)
}

func groupOf(r SoakRun) soakGroup { return soakGroup{r.Softirq, r.Traffic, r.CPLoadKind, r.Repeat} }

// groupsOf lists the report's groups in order of first appearance.
func groupsOf(rep *SoakReport) []soakGroup {
	var out []soakGroup
	for _, r := range rep.Runs {
		if g := groupOf(r); !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// finishSoak runs the self-checks and sets Valid.
func finishSoak(rep *SoakReport) *SoakReport {
	var checks []Check
	add := func(name string, fails []string, okDetail string) {
		if len(fails) > 0 {
			checks = append(checks, Check{Name: name, Detail: strings.Join(fails, "; ")})
		} else {
			checks = append(checks, Check{Name: name, OK: true, Detail: okDetail})
		}
	}
	var slo, harvest, offered, threads, cp, windows []string
	for _, g := range groupsOf(rep) {
		tai, dyn := soakRunOf(rep, g, scheduler.PolicyTaichi), soakRunOf(rep, g, scheduler.PolicyDynamic)
		if tai != nil && (tai.WindowsWithinSLO == nil || *tai.WindowsWithinSLO < soakWithinSLOShare) {
			slo = append(slo, fmt.Sprintf("%s: %s of windows within %s µs", g, pctOf(tai.WindowsWithinSLO), num(tai.LateSLOUS)))
		}
		if tai != nil && dyn != nil {
			th, dh := harvestedCP(tai.Run), harvestedCP(dyn.Run)
			if !(th >= soakHarvestVsDyn*dh) {
				harvest = append(harvest, fmt.Sprintf("%s: taichi %s CP s, dynamic %s", g, num(th), num(dh)))
			}
		}
	}
	for _, r := range rep.Runs {
		name := fmt.Sprintf("%s (%s)", r.name(), groupOf(r))
		for i, c := range r.Chunks {
			if c.DP.RequestedPPS > 0 && c.DP.OfferedPPS < minOfferedShare*c.DP.RequestedPPS {
				offered = append(offered, fmt.Sprintf("%s generator run %d: offered %s of %s pps", name, i+1, num(c.DP.OfferedPPS), num(c.DP.RequestedPPS)))
			}
		}
		if r.OnDPWindows > 0 {
			threads = append(threads, fmt.Sprintf("%s: %d samples, %s", name, r.OnDPWindows, strings.Join(r.ThreadsOnDP, ", ")))
		}
		if len(r.CPLoadErrors) > 0 || r.CPCPUS == 0 {
			cp = append(cp, fmt.Sprintf("%s: CP used %s CPU s, errors %v", name, num(r.CPCPUS), r.CPLoadErrors))
		}
		if float64(len(r.Windows)) < soakMinWindowsShare*soakSeconds(r) {
			windows = append(windows, fmt.Sprintf("%s: %d windows in %s s", name, len(r.Windows), num(soakSeconds(r))))
		}
	}
	add(fmt.Sprintf("taichi's residence p99 within the SLO in >= %.0f%% of windows", 100*soakWithinSLOShare), slo, "every cell")
	add(fmt.Sprintf("taichi harvests >= %.1f× dynamic's CP time", soakHarvestVsDyn), harvest, "every cell with both")
	add("every generator run offered the requested DP load", offered,
		fmt.Sprintf("every run offered at least %.0f%% of its requested rate", 100*minOfferedShare))
	add("no thread of the eval process (daemon included) on a DP core", threads, "at no sample, in no cell")
	add("CP load ran and was placed", cp, "every CP load ran for its whole cell and used CPU")
	add("a window every second", windows, fmt.Sprintf("every cell has at least %.0f%% of its seconds as windows", 100*soakMinWindowsShare))
	rep.Checks = checks
	rep.Valid = !slices.ContainsFunc(checks, func(c Check) bool { return !c.OK })
	return rep
}

// soakSeconds is a run's traffic time.
func soakSeconds(r SoakRun) float64 {
	s := 0.0
	for _, c := range r.Chunks {
		s += c.DurationS
	}
	return s
}

func soakRunOf(rep *SoakReport, g soakGroup, p scheduler.PolicyName) *SoakRun {
	for i := range rep.Runs {
		if groupOf(rep.Runs[i]) == g && rep.Runs[i].Policy == p {
			return &rep.Runs[i]
		}
	}
	return nil
}

func pctOf(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return pct(*v)
}

// FailedSoakRuns counts runs that failed or lost their CP load.
func FailedSoakRuns(rep *SoakReport) int {
	n := 0
	for _, r := range rep.Runs {
		if r.Error != "" || len(r.CPLoadErrors) > 0 {
			n++
		}
	}
	return n
}

// WriteSoakFiles writes DIR/soak.json and DIR/soak.md and returns their
// paths.
func WriteSoakFiles(dir string, rep *SoakReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var js, md bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return nil, err
	}
	WriteSoakMarkdown(&md, rep)
	var paths []string
	for ext, b := range map[string][]byte{".json": js.Bytes(), ".md": md.Bytes()} {
		p := filepath.Join(dir, rep.Experiment+ext)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return paths, nil
}

// WriteSoakMarkdown writes one row per cell, grouped, then the checks.
func WriteSoakMarkdown(w io.Writer, rep *SoakReport) {
	fmt.Fprintf(w, "## %s\n\n", rep.Experiment)
	m := rep.Machine
	fmt.Fprintf(w, "Machine: %d cores (%s), kernel %s, preempt %s; DP cores %v, CP cores %v. ", m.Cores, m.Arch, m.Kernel, m.Preempt, m.DPCores, m.CPCores)
	fmt.Fprintf(w, "Each cell: %v s of traffic at %v pps (load %v of %v pps), 1 s windows.\n\n",
		rep.Params["duration_s"], rep.Params["rate_pps"], rep.Params["load"], rep.Params["capacity_pps"])
	fmt.Fprintln(w, "| softirq | traffic | CP load | policy | repeat | windows | residence p99 µs | residence max µs | windows p99 ≤ SLO | late share | lent share | harvested CP s | guard trips | benched windows | daemon CPU s (share) | eval process CPU s (share) | offered / requested pps | threads on DP |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rep.Runs {
		lent := math.NaN()
		if r.WallS > 0 && len(m.DPCores) > 0 {
			lent = r.LentS / (r.WallS * float64(len(m.DPCores)))
		}
		daemonCPU, daemonShare := math.NaN(), math.NaN()
		if r.DaemonCPUS != nil && r.WallS > 0 {
			daemonCPU, daemonShare = *r.DaemonCPUS, *r.DaemonCPUS/r.WallS
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %d | %d | %s (%s) | %s (%s) | %s / %s | %d |\n",
			r.Softirq, r.Traffic, r.CPLoadKind, r.name(), r.Repeat+1, len(r.Windows),
			num(residenceP99(r.Run)), num(nanIfEmpty(r.DP.ResidenceUS)), pctOf(r.WindowsWithinSLO), pctOf(r.LateShare),
			pctNaN(lent), num(harvestedCP(r.Run)), r.GuardTrips, r.BenchedWindows, num(daemonCPU), pctNaN(daemonShare),
			num(r.ProcessCPUS), pct(r.ProcessCPUShare), num(r.DP.OfferedPPS), num(r.DP.RequestedPPS), r.OnDPWindows)
	}
	var errs []string
	for _, r := range rep.Runs {
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("%s (%s): %s", r.name(), groupOf(r), r.Error))
		}
		for _, e := range r.CPLoadErrors {
			errs = append(errs, fmt.Sprintf("%s (%s): CP load: %s", r.name(), groupOf(r), e))
		}
	}
	writeTail(w, errs, rep.Checks, rep.Valid, rep.Notes)
}

func nanIfEmpty(p Percentiles) float64 {
	if p.N == 0 {
		return math.NaN()
	}
	return p.Max
}

func pctNaN(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return pct(v)
}
