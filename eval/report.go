package eval

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/stats"
	"github.com/taichi-sched/taichi/scheduler"
)

// Experiment names, also the base names of the output files.
const (
	ExperimentVMStartup = "vm-startup"
	ExperimentDataplane = "dataplane"
)

// Report is one experiment's output (DIR/<experiment>.json).
type Report struct {
	Experiment string         `json:"experiment"`
	Started    time.Time      `json:"started"`
	Machine    Machine        `json:"machine"`
	Params     map[string]any `json:"params"`
	// Runs holds every run of every repeat; the Markdown table folds the
	// repeats of a cell into their median and min–max.
	Runs []Run `json:"runs"`
	// Valid is false when a self-check failed (Checks says which): the
	// numbers were measured but do not mean what the table claims.
	Valid  bool     `json:"valid"`
	Checks []Check  `json:"checks,omitempty"`
	Notes  []string `json:"notes,omitempty"`
}

// Machine records what the numbers were measured on.
type Machine struct {
	Cores   int    `json:"cores"`
	Kernel  string `json:"kernel"`
	Arch    string `json:"arch"`
	Preempt string `json:"preempt,omitempty"` // e.g. "none"; empty when unreadable
	DPCores []int  `json:"dp_cores"`
	CPCores []int  `json:"cp_cores"`
	// RTRuntimeUS/RTPeriodUS: real-time throttling (-1 runtime = off). With
	// throttling on, a busy-polling SCHED_FIFO loop is stopped for
	// period-runtime every period, which shows in DP tail latency.
	RTRuntimeUS int `json:"rt_runtime_us"`
	RTPeriodUS  int `json:"rt_period_us"`
	// TstampPrequeue is net.core.netdev_tstamp_prequeue during the runs:
	// 0 means a packet's RX stamp is taken when the softirq delivers it to
	// the DP loop's socket (what residence needs), 1 when it was queued on
	// the sending CPU (residence then includes that CPU's softirq wait).
	TstampPrequeue int `json:"netdev_tstamp_prequeue"`
	// DPLoopClass is the DP loop's scheduling class in each state, as the
	// runs observed it (see Run.DP.LoopClass).
	DPLoopClass string `json:"dp_loop_class,omitempty"`
	// RXStamp is where the runs' residence stamps came from (Run.DP.RXStamp).
	RXStamp string `json:"rx_stamp,omitempty"`
}

// DP is the data plane's side of a run.
type DP struct {
	// OfferedPPS is what the generator sent over its sending time;
	// RequestedPPS what its schedule asked for over that time (0 when the
	// run had no generator, e.g. ping). The self-check holds them equal.
	OfferedPPS   float64 `json:"offered_pps"`
	RequestedPPS float64 `json:"requested_pps,omitempty"`
	PPS          float64 `json:"pps"`
	Loss         float64 `json:"loss"` // fraction of sent packets not received back
	// ResidenceUS is the headline DP latency: per packet, from the kernel's
	// RX stamp to the DP loop picking it up, measured in the loop. It is the
	// delay the DP core adds, whatever the generator's CPU is doing.
	ResidenceUS Percentiles `json:"residence_us"`
	// ResidenceHist is the run's residence histogram (the loop's buckets,
	// see dataplane.HistLower), for CDFs and for merging repeats.
	ResidenceHist *dataplane.Histogram `json:"residence_hist,omitempty"`
	// ExposedWakeUS: per wake of the loop, how long the first waiting packet
	// had been in the ring (0 when the probe woke the loop first).
	ExposedWakeUS Percentiles `json:"exposed_wake_us"`
	// LatUS is the generator's end-to-end round trip: it also measures the
	// generator's own core (shared with CP here), so it is secondary.
	LatUS Percentiles `json:"lat_us"`
	// IdleShare is the DP loop's idle share during the run, the input of
	// the capacity bound; IdleShareSource says whether it was "measured"
	// (the loop's busy time) or "derived" (1 - offered load).
	IdleShare       float64 `json:"idle_share"`
	IdleShareSource string  `json:"idle_share_source"`
	// ProbeLeadUS: per probe wake that came before its packet, how long
	// before the packet the probe fired (compare with the wake cost in the
	// report's params: the share of a wake the probe hides).
	ProbeLeadUS Percentiles `json:"probe_lead_us"`
	// StealMS is how long the hypervisor took the DP core away during the
	// run (steal time; a stolen core holds every packet waiting); null when
	// unknown.
	StealMS *float64 `json:"dp_core_steal_ms"`
	// LoopClass is the DP loop thread's scheduling class seen at the end of
	// the run ("SCHED_FIFO/50", "SCHED_OTHER"), empty when not read.
	LoopClass string `json:"loop_class,omitempty"`
	// RXStamp is where the residence's RX stamps came from: "kernel" (the
	// AF_PACKET ring), "xdp-meta" or "xdp-head" (AF_XDP); empty without a
	// taichi loop.
	RXStamp string `json:"rx_stamp,omitempty"`
}

// Run is one (policy, density or load) cell.
type Run struct {
	Policy scheduler.PolicyName `json:"policy"`
	// SLOUS is the guard's bound (RX residence p99, µs) a taichi run ran
	// with: a value of an SLO sweep, or the daemon's own; 0 for policies
	// without the guard.
	SLOUS  float64 `json:"slo_us,omitempty"`
	Repeat int     `json:"repeat"` // 0-based repeat of this cell
	VMs    int     `json:"vms,omitempty"`
	Load   float64 `json:"load,omitempty"`    // DP utilisation the generator aimed at
	CPLoad string  `json:"cp_load,omitempty"` // "none", "vm-startup", "stress-ng --dentry ..."

	StartupMS *Percentiles `json:"startup_ms,omitempty"`
	VMsOK     int          `json:"vms_ok,omitempty"`
	VMsFailed int          `json:"vms_failed,omitempty"`
	Failures  []string     `json:"failures,omitempty"` // "vm 3: vport: ip ...: mtu ..."
	// StepMS is each pipeline step's mean duration over the run's VMs.
	StepMS map[string]float64 `json:"step_ms,omitempty"`

	DP DP `json:"dp"`
	// CyclictestUS: rt-tests' cyclictest on the DP core at the DP priority,
	// run beside the CP load: an independent view of the same question.
	CyclictestUS *Percentiles `json:"cyclictest_us,omitempty"`
	// Ping: iputils ping's own summary (experiment ping).
	Ping *PingStats `json:"ping,omitempty"`

	LentS float64 `json:"lent_s"` // DP-core seconds lent to CP
	// Reclaims counts lent periods ended during the run, by cause.
	Reclaims map[string]uint64 `json:"reclaims,omitempty"`
	// GuardBenches: how often the SLO guard benched a DP core during the
	// run (reclaims by cause guard, summed over DP cores).
	GuardBenches int `json:"guard_benches"`
	// Confined: the commands blocker-aware lending blamed or confined
	// during the run (see ConfinedCommand).
	Confined []ConfinedCommand `json:"confined,omitempty"`
	// HarvestedCPS: CP CPU seconds that ran on DP cores; null where the
	// kernel reports no per-CPU usage (cgroup v2).
	HarvestedCPS *float64 `json:"harvested_cp_s"`
	CPCPUS       float64  `json:"cp_cpu_s"` // CP CPU seconds in total (-1 unknown)
	WallS        float64  `json:"wall_s"`
	// DaemonCPUS: the co-scheduler's own CPU seconds over the run (the
	// daemon's goroutines, see DaemonCPU); its share of one core is
	// DaemonCPUS / WallS. Static runs the daemon too: its figure is the
	// daemon's fixed cost. Null when unknown.
	DaemonCPUS *float64 `json:"daemon_cpu_s"`
	// DaemonCoveredS: the part of the run the CPU profiler sampled
	// (DaemonCPUS is the daemon's CPU rate over it, times WallS).
	DaemonCoveredS float64 `json:"daemon_cpu_covered_s,omitempty"`
	// CPLoadErrors: a CP load process that could not be placed or that
	// ended before the run did (the run's CP side did not run as claimed).
	CPLoadErrors []string `json:"cp_load_errors,omitempty"`
	// CapacityBound = 1 + DP idle share × DP cores / CP cores: the best CP
	// speedup borrowing could give; SpeedupVsStatic is what this run got
	// (static's startup p50 at the same density over this run's).
	CapacityBound   float64 `json:"capacity_bound"`
	SpeedupVsStatic float64 `json:"speedup_vs_static,omitempty"`
	Error           string  `json:"error,omitempty"`
}

// ReadMachine collects the machine facts the report carries.
func ReadMachine(dpCores, cpCores []int) Machine {
	m := Machine{Cores: runtime.NumCPU(), Arch: runtime.GOARCH, DPCores: dpCores, CPCores: cpCores}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.Preempt = readPreempt()
	m.RTRuntimeUS = readInt("/proc/sys/kernel/sched_rt_runtime_us")
	m.TstampPrequeue = readInt(tstampPrequeue)
	m.RTPeriodUS = readInt("/proc/sys/kernel/sched_rt_period_us")
	return m
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return v
}

// readPreempt returns the active preemption mode: debugfs shows the choices
// with the active one in parentheses; without debugfs, a preempt= boot
// parameter or else the kernel config's built-in model says it.
func readPreempt() string {
	for _, p := range []string{"/sys/kernel/debug/sched/preempt", "/sys/kernel/debug/sched_preempt"} {
		if b, err := os.ReadFile(p); err == nil {
			if mode := parsePreempt(string(b)); mode != "" {
				return mode
			}
		}
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(f, "preempt="); ok {
				return v + " (boot parameter)"
			}
		}
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return ""
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		return ""
	}
	return preemptFromConfig(string(raw))
}

// preemptFromConfig names the preemption model a kernel config builds in.
func preemptFromConfig(cfg string) string {
	for _, m := range []struct{ key, mode string }{
		{"CONFIG_PREEMPT_NONE=y", "none"}, {"CONFIG_PREEMPT_VOLUNTARY=y", "voluntary"},
		{"CONFIG_PREEMPT=y", "full"}, {"CONFIG_PREEMPT_LAZY=y", "lazy"}, {"CONFIG_PREEMPT_RT=y", "rt"},
	} {
		for _, line := range strings.Split(cfg, "\n") {
			if strings.TrimSpace(line) == m.key {
				return m.mode + " (kernel config default)"
			}
		}
	}
	return ""
}

// parsePreempt picks "(full)" style active mode from "none voluntary (full) lazy".
func parsePreempt(s string) string {
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, "(") && strings.HasSuffix(f, ")") {
			return strings.Trim(f, "()")
		}
	}
	return ""
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteFiles writes DIR/<experiment>.json and .md (and returns their paths).
func WriteFiles(dir string, r *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var js, md bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		return nil, err
	}
	WriteMarkdown(&md, r)
	jp := filepath.Join(dir, r.Experiment+".json")
	mp := filepath.Join(dir, r.Experiment+".md")
	if err := os.WriteFile(jp, js.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(mp, md.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return []string{jp, mp}, nil
}

// WriteMarkdown writes a table a person can read: one row per cell, each
// figure the median over the cell's repeats with their min–max beside it.
// The DP columns lead with RX residence (measured in the DP loop); the
// generator's round trip is secondary.
func WriteMarkdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "## %s\n\n", r.Experiment)
	writeMachine(w, r.Machine)
	switch r.Experiment {
	case ExperimentVMStartup:
		writeVMStartupTable(w, r)
	case ExperimentPing:
		writePingTable(w, r)
	default:
		writeDataplaneTable(w, r)
	}
	fmt.Fprintf(w, "\n%s\n", daemonCPUNote)
	writeFrontier(w, r)
	writeTail(w, runErrors(r), r.Checks, r.Valid, r.Notes)
}

// writeMachine says what the numbers were measured on, and what of the
// machine bends them (RT throttling, where RX stamps are taken).
func writeMachine(w io.Writer, m Machine) {
	pre := m.Preempt
	if pre == "" {
		pre = "unknown"
	}
	fmt.Fprintf(w, "Machine: %d cores (%s), kernel %s, preempt %s; DP cores %v, CP cores %v.",
		m.Cores, m.Arch, m.Kernel, pre, m.DPCores, m.CPCores)
	if m.RTRuntimeUS > 0 && m.RTPeriodUS > m.RTRuntimeUS {
		fmt.Fprintf(w, " RT throttling is on (sched_rt_runtime_us %d of %d): a SCHED_FIFO thread that never sleeps is stopped for %d ms in every %d ms; "+
			"DP loops are SCHED_FIFO only while their core is lent, so a static core never meets it.",
			m.RTRuntimeUS, m.RTPeriodUS, (m.RTPeriodUS-m.RTRuntimeUS)/1000, m.RTPeriodUS/1000)
	}
	if m.DPLoopClass != "" {
		fmt.Fprintf(w, " DP loop class: %s.", m.DPLoopClass)
	}
	if m.RXStamp != "" {
		fmt.Fprintf(w, " RX stamps: %s.", m.RXStamp)
	}
	if m.TstampPrequeue != 0 {
		fmt.Fprint(w, " RX stamps are taken when a packet is queued on the sending CPU (net.core.netdev_tstamp_prequeue=1): residence includes that CPU's softirq wait.")
	}
	fmt.Fprint(w, "\n\n")
}

// writeVMStartupTable renders the vm-startup experiment: CP startup times
// and the speedup over static per density, beside the DP's residence.
func writeVMStartupTable(w io.Writer, r *Report) {
	fmt.Fprintln(w, "| policy | VMs | repeats | ok/failed | startup p50 ms | startup p99 ms | speedup vs static | bound | DP residence p50 µs | residence p99 µs | residence max µs | RTT p99 µs | loss | lent s | harvested CP s |"+daemonColumns)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cellsOf(r) {
		ok, failed := 0, 0
		for _, run := range c.runs {
			ok, failed = ok+run.VMsOK, failed+run.VMsFailed
		}
		speed := aggregate(c.runs, func(r Run) float64 {
			if r.SpeedupVsStatic == 0 {
				return math.NaN()
			}
			return r.SpeedupVsStatic
		})
		fmt.Fprintf(w, "| %s | %d | %d | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s\n",
			c.key.name(), c.key.VMs, len(c.runs), ok, failed,
			medianCell(c.runs, startupMS(pickP50)),
			medianNum(c.runs, startupMS(pickP99)),
			ratio(speed.Median), ratio(aggregate(c.runs, func(r Run) float64 { return r.CapacityBound }).Median),
			medianNum(c.runs, residenceUS(pickP50)),
			medianCell(c.runs, residenceUS(pickP99)),
			medianNum(c.runs, residenceUS(pickMax)),
			medianNum(c.runs, rttP99), lossCell(c.runs),
			medianNum(c.runs, runLentS), medianCell(c.runs, harvestedCP), daemonCells(c.runs))
	}
}

// writeDataplaneTable renders the dataplane experiment: per load and CP
// load, the DP's residence, steal, wakes and cyclictest beside what was
// lent and harvested, and why lent cores came back.
func writeDataplaneTable(w io.Writer, r *Report) {
	fmt.Fprintln(w, "| policy | load | CP load | repeats | DP pps (offered) | loss | DP residence p50 µs | residence p99 µs | residence max µs | DP core steal ms | exposed wake p99 µs | RTT p99 µs | cyclictest p99 µs | cyclictest max µs | lent s | harvested CP s |"+daemonColumns+" idle share | reclaims by cause |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, c := range cellsOf(r) {
		last := c.runs[len(c.runs)-1]
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s %s %s | %s |\n",
			c.key.name(), num(c.key.Load), c.key.CPLoad, len(c.runs),
			medianNum(c.runs, func(r Run) float64 { return r.DP.PPS }), medianNum(c.runs, func(r Run) float64 { return r.DP.OfferedPPS }),
			lossCell(c.runs),
			medianNum(c.runs, residenceUS(pickP50)),
			medianCell(c.runs, residenceUS(pickP99)),
			medianCell(c.runs, residenceUS(pickMax)),
			medianCell(c.runs, func(r Run) float64 {
				if r.DP.StealMS == nil {
					return math.NaN()
				}
				return *r.DP.StealMS
			}),
			medianNum(c.runs, func(r Run) float64 {
				if r.DP.ExposedWakeUS.N == 0 {
					return math.NaN()
				}
				return r.DP.ExposedWakeUS.P99
			}),
			medianNum(c.runs, rttP99),
			medianCell(c.runs, cyclictestUS(pickP99)),
			medianNum(c.runs, cyclictestUS(pickMax)),
			medianNum(c.runs, runLentS), medianCell(c.runs, harvestedCP), daemonCells(c.runs),
			medianNum(c.runs, func(r Run) float64 { return r.DP.IdleShare }), last.DP.IdleShareSource,
			stats.FormatCounts(last.Reclaims))
	}
}

// runErrors lists what went wrong in the runs, each under its run's name.
func runErrors(r *Report) []string {
	var errs []string
	for _, run := range r.Runs {
		if run.Error != "" {
			errs = append(errs, fmt.Sprintf("%s/%s/repeat %d: %s", run.name(), cellName(run), run.Repeat, run.Error))
		}
		for _, f := range run.Failures {
			errs = append(errs, fmt.Sprintf("%s/%s/repeat %d: %s", run.name(), cellName(run), run.Repeat, f))
		}
		for _, f := range run.CPLoadErrors {
			errs = append(errs, fmt.Sprintf("%s/%s/repeat %d: CP load: %s", run.name(), cellName(run), run.Repeat, f))
		}
	}
	return errs
}

// writeTail closes a report's Markdown: its errors, its self-checks with
// the verdict, and its notes.
func writeTail(w io.Writer, errs []string, checks []Check, valid bool, notes []string) {
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nErrors:")
		for _, e := range errs {
			fmt.Fprintf(w, "* %s\n", e)
		}
	}
	if len(checks) > 0 {
		verdict := "passed"
		if !valid {
			verdict = "FAILED: the table does not mean what it claims"
		}
		fmt.Fprintf(w, "\nSelf-check %s:\n", verdict)
		for _, c := range checks {
			mark := "ok"
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "* %s: %s (%s)\n", mark, c.Name, c.Detail)
		}
	}
	for _, n := range notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}
