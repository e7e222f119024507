package eval

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
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
	Runs       []Run          `json:"runs"`
	Notes      []string       `json:"notes,omitempty"`
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
}

// DP is the data plane's side of a run, measured by the traffic generator.
type DP struct {
	OfferedPPS float64     `json:"offered_pps"`
	PPS        float64     `json:"pps"`
	Loss       float64     `json:"loss"` // fraction of sent packets not received back
	LatUS      Percentiles `json:"lat_us"`
	// IdleShare is the DP loop's idle share during the run (empty polls and
	// yielded time over its run time), the input of the capacity bound.
	IdleShare float64 `json:"idle_share"`
}

// Run is one (policy, density or load) cell.
type Run struct {
	Policy string  `json:"policy"`
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

	LentS float64 `json:"lent_s"` // DP-core seconds lent to CP
	// Reclaims counts lent periods ended during the run, by cause.
	Reclaims     map[string]uint64 `json:"reclaims,omitempty"`
	HarvestedCPS float64           `json:"harvested_cp_s"` // CP CPU seconds that ran on DP cores
	CPCPUS       float64           `json:"cp_cpu_s"`       // CP CPU seconds in total
	WallS        float64           `json:"wall_s"`
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

// WriteMarkdown writes a table a person can read, one row per run.
func WriteMarkdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "## %s\n\n", r.Experiment)
	m := r.Machine
	pre := m.Preempt
	if pre == "" {
		pre = "unknown"
	}
	fmt.Fprintf(w, "Machine: %d cores (%s), kernel %s, preempt %s; DP cores %v, CP cores %v.",
		m.Cores, m.Arch, m.Kernel, pre, m.DPCores, m.CPCores)
	if m.RTRuntimeUS > 0 && m.RTPeriodUS > m.RTRuntimeUS {
		fmt.Fprintf(w, " RT throttling is on (sched_rt_runtime_us %d of %d): a busy-polling DP loop (static) is stopped for %d ms in every %d ms, which shows in its DP tail latency.",
			m.RTRuntimeUS, m.RTPeriodUS, (m.RTPeriodUS-m.RTRuntimeUS)/1000, m.RTPeriodUS/1000)
	}
	fmt.Fprint(w, "\n\n")
	switch r.Experiment {
	case ExperimentVMStartup:
		fmt.Fprintln(w, "| policy | VMs | ok/failed | startup p50 ms | p99 ms | max ms | speedup vs static | bound | DP pps (offered) | loss | DP p50 µs | DP p99 µs | DP max µs | lent s | harvested CP s |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, run := range r.Runs {
			s := Percentiles{}
			if run.StartupMS != nil {
				s = *run.StartupMS
			}
			fmt.Fprintf(w, "| %s | %d | %d/%d | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s |\n",
				run.Policy, run.VMs, run.VMsOK, run.VMsFailed, num(s.P50), num(s.P99), num(s.Max),
				ratio(run.SpeedupVsStatic), ratio(run.CapacityBound), num(run.DP.PPS), num(run.DP.OfferedPPS),
				pct(run.DP.Loss), num(run.DP.LatUS.P50), num(run.DP.LatUS.P99), num(run.DP.LatUS.Max),
				num(run.LentS), num(run.HarvestedCPS))
		}
	default:
		fmt.Fprintln(w, "| policy | load | CP load | DP pps (offered) | loss | DP p50 µs | DP p99 µs | DP max µs | cyclictest p50 µs | p99 µs | max µs | lent s | harvested CP s | reclaims by cause |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, run := range r.Runs {
			c := Percentiles{}
			if run.CyclictestUS != nil {
				c = *run.CyclictestUS
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				run.Policy, num(run.Load), run.CPLoad, num(run.DP.PPS), num(run.DP.OfferedPPS), pct(run.DP.Loss),
				num(run.DP.LatUS.P50), num(run.DP.LatUS.P99), num(run.DP.LatUS.Max),
				num(c.P50), num(c.P99), num(c.Max), num(run.LentS), num(run.HarvestedCPS), causes(run.Reclaims))
		}
	}
	var errs []string
	for _, run := range r.Runs {
		if run.Error != "" {
			errs = append(errs, fmt.Sprintf("%s/%d/%s: %s", run.Policy, run.VMs, num(run.Load), run.Error))
		}
		for _, f := range run.Failures {
			errs = append(errs, fmt.Sprintf("%s/%d: %s", run.Policy, run.VMs, f))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nErrors:")
		for _, e := range errs {
			fmt.Fprintf(w, "* %s\n", e)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

// num prints a measurement with precision fitting its size.
func num(v float64) string {
	switch {
	case v != v: // NaN
		return "–"
	case v == 0:
		return "0"
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(v float64) string {
	if v == 0 || v != v {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

// causes renders reclaim counts as "probe=3 rx=1", sorted by cause.
func causes(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
