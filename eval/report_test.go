package eval

import (
	"github.com/taichi-sched/taichi/internal/stats"

	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/scheduler"
)

func TestCapacityBound(t *testing.T) {
	if got := CapacityBound(0.7, 1, 1); math.Abs(got-1.7) > 1e-9 {
		t.Fatalf("got %v", got)
	}
	if got := CapacityBound(0.5, 4, 2); got != 2 {
		t.Fatalf("got %v", got)
	}
	if got := CapacityBound(1.5, 1, 1); got != 2 {
		t.Fatalf("idle share is clamped to 1: got %v", got)
	}
	if !math.IsNaN(CapacityBound(0.5, 1, 0)) {
		t.Fatal("no CP cores must not give a number")
	}
}

func TestParsePreempt(t *testing.T) {
	if got := parsePreempt("none voluntary (full) lazy\n"); got != "full" {
		t.Fatalf("got %q", got)
	}
	if got := preemptFromConfig("CONFIG_PREEMPT_BUILD=y\nCONFIG_PREEMPT_NONE=y\n"); got != "none (kernel config default)" {
		t.Fatalf("config: got %q", got)
	}
	if got := parsePreempt("garbage"); got != "" {
		t.Fatalf("got %q", got)
	}
}

func sampleReport(exp string) *Report {
	r := &Report{Experiment: exp, Machine: ReadMachine([]int{1}, []int{0}), Params: map[string]any{"dp_load": 0.3}}
	for rep := range sampleRepeats {
		for _, pol := range []scheduler.PolicyName{scheduler.PolicyStatic, scheduler.PolicyTaichi} {
			for i, n := range []int{1, 4} {
				s := stats.Summarize([]float64{float64(10 * n), float64(12 * n), float64(20 * n)})
				r.Runs = append(r.Runs, Run{
					Policy: pol, Repeat: rep, VMs: n, Load: 0.1 * float64(i+1), CPLoad: "vm-startup", StartupMS: &s, VMsOK: n,
					DP: DP{OfferedPPS: 1000, PPS: 990, Loss: 0.01, LatUS: Percentiles{N: 10, P50: 40, P99: 90, Max: 200},
						ResidenceUS: Percentiles{N: 10, P50: 5, P99: float64(20 + 10*rep), Max: 50}},
					CyclictestUS:  &Percentiles{N: 100, P50: 30, P99: 70, Max: 120},
					CapacityBound: 1.7, LentS: 1.5, HarvestedCPS: knownSeconds(0.4), CPCPUS: 2,
					WallS: 2, DaemonCPUS: knownSeconds(0.02 * float64(rep+1)),
				})
			}
		}
	}
	r.Runs[0].Failures = []string{"vm 0: vport: boom"}
	return finish(r)
}

// sampleRepeats is how many repeats sampleReport holds of each cell.
const sampleRepeats = 3

// TestJSONSchema checks the keys docs/design.md ("What an eval writes") promises, not the values.
func TestJSONSchema(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport(ExperimentVMStartup)); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"experiment", "machine", "runs"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("missing top-level key %q", k)
		}
	}
	m := doc["machine"].(map[string]any)
	for _, k := range []string{"cores", "kernel", "dp_cores", "cp_cores"} {
		if _, ok := m[k]; !ok {
			t.Errorf("machine: missing %q", k)
		}
	}
	runs := doc["runs"].([]any)
	if len(runs) != 4*sampleRepeats {
		t.Fatalf("%d runs, want every repeat kept", len(runs))
	}
	for _, k := range []string{"valid", "checks"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("missing top-level key %q", k)
		}
	}
	run := runs[0].(map[string]any)
	for _, k := range []string{"policy", "repeat", "vms", "startup_ms", "dp", "lent_s", "harvested_cp_s", "daemon_cpu_s", "wall_s", "capacity_bound"} {
		if _, ok := run[k]; !ok {
			t.Errorf("run: missing %q", k)
		}
	}
	for _, k := range []string{"p50", "p99", "max"} {
		if _, ok := run["startup_ms"].(map[string]any)[k]; !ok {
			t.Errorf("startup_ms: missing %q", k)
		}
	}
	dp := run["dp"].(map[string]any)
	for _, k := range []string{"offered_pps", "pps", "loss", "lat_us", "residence_us", "exposed_wake_us", "idle_share_source"} {
		if _, ok := dp[k]; !ok {
			t.Errorf("dp: missing %q", k)
		}
	}
	for _, k := range []string{"p50", "p99", "max"} {
		if _, ok := dp["lat_us"].(map[string]any)[k]; !ok {
			t.Errorf("dp.lat_us: missing %q", k)
		}
	}
}

func TestMarkdownTables(t *testing.T) {
	for _, exp := range []string{ExperimentVMStartup, ExperimentDataplane} {
		var buf bytes.Buffer
		r := sampleReport(exp)
		WriteMarkdown(&buf, r)
		var rows, header int
		cols := -1
		for _, line := range strings.Split(buf.String(), "\n") {
			if !strings.HasPrefix(line, "|") {
				continue
			}
			n := strings.Count(line, "|")
			if cols == -1 {
				cols = n
			} else if n != cols {
				t.Errorf("%s: row with %d separators, header has %d: %s", exp, n, cols, line)
			}
			if strings.HasPrefix(line, "|---") {
				header++
			} else {
				rows++
			}
		}
		cells := len(r.Runs) / sampleRepeats
		if header != 1 || rows != cells+1 {
			t.Errorf("%s: %d separator lines and %d rows, want 1 and one per cell, %d", exp, header, rows, cells+1)
		}
		// Residence p99 over the repeats 20, 30, 40: median and range.
		if !strings.Contains(buf.String(), "| 30.0 (20.0–40.0) |") {
			t.Errorf("%s: repeats not folded into median (min–max):\n%s", exp, buf.String())
		}
		if !strings.Contains(buf.String(), "boom") {
			t.Errorf("%s: failure not listed", exp)
		}
		checkDaemonColumns(t, exp, buf.String())
	}
}

// checkDaemonColumns: the table has the daemon's CPU beside harvested CP
// seconds, and a sampleReport cell (daemon 0.02, 0.04, 0.06 s over 2 s;
// harvested 0.4 s) reads median 0.04 s, 2% of a core, 10× harvested.
func checkDaemonColumns(t *testing.T, exp, md string) {
	t.Helper()
	if !strings.Contains(md, "| harvested CP s | daemon CPU s | daemon % of a core | harvested ÷ daemon |") {
		t.Errorf("%s: no daemon CPU columns after harvested CP s:\n%s", exp, md)
	}
	if !strings.Contains(md, "| 0.04 (0.02–0.06) | 2.00% | 10.0× |") {
		t.Errorf("%s: daemon cells not median (min–max), share of a core, harvested ÷ daemon:\n%s", exp, md)
	}
	if !strings.Contains(md, "Daemon CPU: the co-scheduler's own CPU time") {
		t.Errorf("%s: the table does not say what daemon CPU measures", exp)
	}
}

func TestWriteFilesAndPlots(t *testing.T) {
	dir := t.TempDir()
	for _, exp := range []string{ExperimentVMStartup, ExperimentDataplane} {
		r := sampleReport(exp)
		files, err := WriteFiles(dir, r)
		if err != nil {
			t.Fatal(err)
		}
		pngs, err := WritePlots(dir, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(files, pngs...) {
			if st, err := os.Stat(f); err != nil || st.Size() == 0 {
				t.Fatalf("%s: %v", f, err)
			}
		}
		for _, f := range pngs {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(fh)
			fh.Close()
			if err != nil || img.Bounds().Dx() < 100 {
				t.Fatalf("%s: not a usable PNG: %v", filepath.Base(f), err)
			}
		}
	}
}

func TestParseCyclictest(t *testing.T) {
	var b strings.Builder
	b.WriteString("# /dev/cpu_dma_latency set to 0us\n# Histogram\n")
	// 90 samples at 10 µs, 9 at 50 µs, 1 overflow.
	for i := 0; i < 100; i++ {
		c := 0
		switch i {
		case 10:
			c = 90
		case 50:
			c = 9
		}
		fmt.Fprintf(&b, "%06d %06d\n", i, c)
	}
	b.WriteString("# Total: 000000100\n# Min Latencies: 00010\n# Avg Latencies: 00017\n# Max Latencies: 04000\n# Histogram Overflows: 00001\n")
	p, err := parseCyclictest(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if p.N != 100 || p.P50 != 10 || p.P90 != 10 || p.P99 != 50 || p.Max != 4000 || p.Mean != 17 {
		t.Fatalf("got %+v", p)
	}
	if _, err := parseCyclictest(strings.NewReader("# Histogram\n")); err == nil {
		t.Fatal("empty output accepted")
	}
}

func TestHarvestUnknownIsNotANumber(t *testing.T) {
	r := sampleReport(ExperimentDataplane)
	for i := range r.Runs {
		r.Runs[i].HarvestedCPS = nil
		r.Runs[i].DaemonCPUS = nil
	}
	var buf bytes.Buffer
	WriteMarkdown(&buf, r)
	if strings.Contains(buf.String(), "-1") || !strings.Contains(buf.String(), "n/a") {
		t.Fatalf("unknown harvest not shown as n/a:\n%s", buf.String())
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"harvested_cp_s": null`) || !strings.Contains(js.String(), `"daemon_cpu_s": null`) {
		t.Fatal("unknown harvest or daemon CPU not null in JSON")
	}
}

// dataplaneReport is one load with the reference cell, static and a
// lending policy under CP load, each with three repeats.
func dataplaneReport(refP99, dynP99 float64, harvest float64) *Report {
	r := &Report{Experiment: ExperimentDataplane}
	for rep := range 3 {
		for _, c := range []struct {
			pol, load string
			p99       float64
		}{{"static", "none", refP99}, {"static", "mixed", refP99 * 1.2}, {"dynamic", "mixed", dynP99}} {
			run := Run{Policy: scheduler.PolicyName(c.pol), Repeat: rep, Load: 0.3, CPLoad: c.load, CPCPUS: 3,
				DP: DP{ResidenceUS: Percentiles{N: 1000, P99: c.p99 + float64(rep)}}}
			if c.pol == "dynamic" {
				run.HarvestedCPS = knownSeconds(harvest)
			}
			r.Runs = append(r.Runs, run)
		}
	}
	return finish(r)
}

func TestSelfCheck(t *testing.T) {
	if r := dataplaneReport(40, 400, 2); !r.Valid {
		t.Fatalf("a sound report failed its self-check: %+v", r.Checks)
	}
	// The reference is worse than a cell with CP on the DP core: the
	// yardstick is broken (e.g. a throttled static loop).
	r := dataplaneReport(500, 100, 2)
	if r.Valid || !failed(r, "static without CP has the lowest residence p99") {
		t.Errorf("reference above another cell not caught: %+v", r.Checks)
	}
	// Static with CP leaves the DP core to DP as the reference does: a
	// bucket below it is the same cell, not a broken yardstick.
	r = dataplaneReport(40, 400, 2)
	for i := range r.Runs {
		if r.Runs[i].CPLoad == "mixed" && r.Runs[i].Policy == scheduler.PolicyStatic {
			r.Runs[i].DP.ResidenceUS.P99 = 40 * 0.9
		}
	}
	if r = finish(r); !r.Valid {
		t.Errorf("static with CP a bucket under the reference failed the self-check: %+v", r.Checks)
	}
	r = dataplaneReport(40, 400, 0)
	if r.Valid || !failed(r, "lending policies harvest CP time") {
		t.Errorf("lending policy without harvest not caught: %+v", r.Checks)
	}
	r = dataplaneReport(40, 400, 2)
	r.Runs[1].CPLoadErrors = []string{"stress-ng: place pid 7 in CP pool: boom"}
	r.Runs[2].CPCPUS = 0
	SelfCheck(r)
	if r.Valid || !failed(r, "CP load ran and was placed") {
		t.Errorf("CP load failure not caught: %+v", r.Checks)
	}
	var buf bytes.Buffer
	WriteMarkdown(&buf, r)
	if !strings.Contains(buf.String(), "Self-check FAILED") || !strings.Contains(buf.String(), "boom") {
		t.Errorf("failed self-check not shown:\n%s", buf.String())
	}
}

func failed(r *Report, name string) bool {
	for _, c := range r.Checks {
		if c.Name == name && !c.OK {
			return true
		}
	}
	return false
}

// A cell whose generator fell more than 5% short of its requested rate
// fails the self-check, naming the cell and both rates; 96% passes.
func TestCheckOfferedAsRequested(t *testing.T) {
	const name = "every cell offered the requested DP load"
	for _, c := range []struct {
		share float64
		ok    bool
	}{{0.96, true}, {0.94, false}} {
		r := dataplaneReport(40, 400, 2)
		for i := range r.Runs {
			r.Runs[i].DP.RequestedPPS, r.Runs[i].DP.OfferedPPS = 28400, 28400
		}
		r.Runs[2].DP.OfferedPPS = c.share * 28400 // dynamic, repeat 0
		SelfCheck(r)
		i := slices.IndexFunc(r.Checks, func(ch Check) bool { return ch.Name == name })
		if i < 0 {
			t.Fatalf("%v: no check %q in %+v", c.share, name, r.Checks)
		}
		got := r.Checks[i]
		if got.OK != c.ok || r.Valid != c.ok {
			t.Errorf("offered %.0f%%: ok %v (report valid %v), want %v: %s", 100*c.share, got.OK, r.Valid, c.ok, got.Detail)
		}
		if !c.ok {
			for _, want := range []string{"dynamic load 0.30 repeat 0", "offered 26696 pps", "28400 requested", "(94%)"} {
				if !strings.Contains(got.Detail, want) {
					t.Errorf("detail %q lacks %q", got.Detail, want)
				}
			}
		}
	}
	// Runs without the generator (ping) are not judged.
	r := dataplaneReport(40, 400, 2)
	if i := slices.IndexFunc(SelfCheck(r), func(ch Check) bool { return ch.Name == name }); i >= 0 {
		t.Errorf("runs without a requested rate failed: %+v", r.Checks)
	}
}
