package eval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
)

// The eval runs the daemon inside its own process, beside the traffic
// generator, the CP pipeline's Go side and the measuring code, so the
// process's CPU time (/proc/self/stat, which the daemon's own status
// reports) would charge all of that to the daemon. DaemonCPU counts only
// the daemon's goroutines instead:
//
//   - every goroutine the daemon starts inherits a pprof label
//     (daemonLabel) from the call that started the daemon, and the calls
//     the eval makes into it the way an operator would (policy switch,
//     adopting a CP process) carry the label too;
//   - the Go CPU profiler samples each thread's CPU clock (user + system,
//     CLOCK_THREAD_CPUTIME_ID) at 100 Hz and records the running
//     goroutine's labels; DaemonCPU sums the labelled samples.
//
// What it includes: the daemon's scheduler, event pump, rescans, guard,
// blocker tracer readers, cgroup writes and its own /proc sampling, in user
// and kernel mode. What it leaves out: the Go runtime's background GC
// workers (shared by the whole process; GC assists are charged to the
// goroutine that allocates), DP loop hosts (their own processes; hosted in
// process for tests, their samples are recognised by stack and left out),
// eBPF programs (they run in softirq or tracepoint context on whatever CPU
// fires them), samples the profiler could not unwind into Go code (under
// -race: the race detector's own runtime), and the eval's status reads (an
// observer's cost). It is a
// sample count: over a cell with n samples its error is about 1/√n (a
// daemon at 1% of a core gets 1 sample a second). A cell's figure is the
// daemon's rate over the part of it the profiler sampled, times the cell's
// wall time (Read says why the two differ).
const (
	// DaemonCPUSource names the measure in reports (Env.Facts["daemon_cpu"]).
	DaemonCPUSource  = "daemon goroutines' CPU time (user+system), Go CPU profiler samples at 100 Hz by pprof label; excludes GC background workers, DP loop hosts, eBPF programs, samples without a Go stack and the eval's status reads"
	daemonLabelKey   = "taichi"
	daemonLabelValue = "daemon"
)

// withDaemonLabel runs f with the daemon's label, so goroutines f starts
// are counted as the daemon's.
func withDaemonLabel(ctx context.Context, f func(context.Context)) {
	pprof.Do(ctx, pprof.Labels(daemonLabelKey, daemonLabelValue), f)
}

// dpHostFrames are the functions of a DP loop host: a sample with one of
// them on its stack is DP work even when the daemon hosts the loop in its
// own process (BenchOptions.InProcessLoops).
var dpHostFrames = []string{
	"github.com/taichi-sched/taichi/dataplane/host.(*Host).",
	"github.com/taichi-sched/taichi/dataplane.(*Loop).",
}

// DaemonCPU keeps the CPU profiler running and sums the daemon-labelled
// CPU time. Only one CPU profile can run in a process: when another holds
// it (go test -cpuprofile), Start fails and the figure stays unknown.
//
// A profile is only readable once stopped, and stopping it switches
// sampling off until the profiler's writer drains (up to 100 ms) and the
// next profile starts: Read therefore also counts the time the profiler
// covered, and a run's figure is scaled from the covered part of it.
type DaemonCPU struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	running bool
	started time.Time     // when the current profile began sampling
	total   time.Duration // daemon CPU time of the finished profiles
	covered time.Duration // wall time the finished profiles sampled
}

// Start begins profiling.
func (m *DaemonCPU) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.startLocked()
}

func (m *DaemonCPU) startLocked() error {
	m.buf.Reset()
	if err := pprof.StartCPUProfile(&m.buf); err != nil {
		return fmt.Errorf("daemon CPU: %w", err)
	}
	m.running, m.started = true, time.Now()
	return nil
}

// Read returns the daemon's CPU time since Start and the wall time the
// profiler covered since then, both cumulative, in seconds: it ends the
// current profile, adds its daemon samples and starts the next one.
// -1, -1 and an error when unknown.
func (m *DaemonCPU) Read() (cpuS, coveredS float64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return -1, -1, errors.New("daemon CPU: not measuring")
	}
	stopped := time.Now()
	pprof.StopCPUProfile()
	m.running = false
	raw := append([]byte(nil), m.buf.Bytes()...)
	m.covered += stopped.Sub(m.started)
	if err := m.startLocked(); err != nil {
		return -1, -1, err
	}
	d, err := daemonCPUOf(raw)
	if err != nil {
		return -1, -1, err
	}
	m.total += d
	return m.total.Seconds(), m.covered.Seconds(), nil
}

// Stop ends profiling (the process may profile again afterwards).
func (m *DaemonCPU) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		pprof.StopCPUProfile()
		m.running = false
	}
}

// daemonCPUOf sums the CPU time of a profile's samples labelled as the
// daemon's, leaving out DP loop host stacks.
func daemonCPUOf(raw []byte) (time.Duration, error) {
	p, err := profile.ParseData(raw)
	if err != nil {
		return 0, fmt.Errorf("daemon CPU: profile: %w", err)
	}
	col := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			col = i
		}
	}
	if col < 0 {
		return 0, errors.New("daemon CPU: profile has no cpu/nanoseconds samples")
	}
	var sum int64
	for _, s := range p.Sample {
		if !slices.Contains(s.Label[daemonLabelKey], daemonLabelValue) || !attributable(s) || onDPHost(s) {
			continue
		}
		sum += s.Value[col]
	}
	return time.Duration(sum), nil
}

// attributable: the profiler unwound the sample into the program's Go
// code. Samples it could not (the race detector's runtime, code outside
// Go: "runtime._System", "racecall", tsan symbols) carry their
// goroutine's label but no stack to tell the daemon from an in-process DP
// loop host; they are left out (rare outside -race builds).
func attributable(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function == nil {
				continue
			}
			name := line.Function.Name
			if strings.Contains(name, ".") && !strings.HasPrefix(name, "runtime.") && !strings.HasPrefix(name, "_") {
				return true
			}
		}
	}
	return false
}

func onDPHost(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function == nil {
				continue
			}
			for _, prefix := range dpHostFrames {
				if strings.HasPrefix(line.Function.Name, prefix) {
					return true
				}
			}
		}
	}
	return false
}

// daemonCPU is a run's daemon CPU seconds (NaN where unknown).
func daemonCPU(run Run) float64 {
	if run.DaemonCPUS == nil {
		return math.NaN()
	}
	return *run.DaemonCPUS
}

// daemonShare is the daemon's CPU as a share of one core over the run.
func daemonShare(run Run) float64 {
	if run.DaemonCPUS == nil || run.WallS <= 0 {
		return math.NaN()
	}
	return *run.DaemonCPUS / run.WallS
}

// harvestPerDaemon is CP seconds harvested per daemon CPU second: what the
// co-scheduler gives CP for what it costs (NaN when either is unknown or
// the daemon used nothing measurable).
func harvestPerDaemon(run Run) float64 {
	d, h := daemonCPU(run), harvestedCP(run)
	if d <= 0 || math.IsNaN(d) || math.IsNaN(h) {
		return math.NaN()
	}
	return h / d
}

// daemonColumns are the Markdown tables' daemon cost columns, after
// harvested CP s.
const daemonColumns = " daemon CPU s | daemon % of a core | harvested ÷ daemon |"

// daemonCells renders a cell's daemon CPU seconds, its share of a core and
// harvested ÷ daemon, medians over the cell's repeats (daemonColumns).
func daemonCells(runs []Run) string {
	share := "n/a"
	if a := aggregate(runs, daemonShare); a.N > 0 {
		share = pct(a.Median)
	}
	per := "–"
	if a := aggregate(runs, harvestPerDaemon); a.N > 0 {
		per = num(a.Median) + "×"
	}
	return fmt.Sprintf(" %s | %s | %s |", aggregate(runs, daemonCPU), share, per)
}

// daemonCPUNote says what the daemon CPU columns measure.
const daemonCPUNote = "Daemon CPU: the co-scheduler's own CPU time over the cell, user+system, counted by the Go CPU profiler (100 Hz samples of each thread's CPU clock) on the daemon's goroutines (pprof label); " +
	"the eval runs the daemon in its own process, so the process's CPU would include the generator and the harness. Left out: Go's background GC workers, DP loop hosts, eBPF programs, samples without a Go stack, the eval's status reads. " +
	"Every policy runs the same daemon: static's figure is its fixed cost. A sample count: ±1/√n for n samples (1% of a core = 1 sample/s); " +
	"the profiler pauses up to 100 ms when a snapshot reads it, so the figure is the daemon's rate over the sampled part of the cell (JSON daemon_cpu_covered_s) times the cell's wall time."
