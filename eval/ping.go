package eval

import (
	"github.com/taichi-sched/taichi/internal/stats"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// ExperimentPing is the paper's ping table, measured with Debian's iputils
// ping against the DP loop.
const ExperimentPing = "ping"

// PingConfig selects a ping experiment.
type PingConfig struct {
	// Policies run with the CP load; a static run without CP load (the
	// reference every ratio divides by) leads each repeat.
	Policies []scheduler.PolicyName
	Count    int           // echoes per run; default 10000
	Interval time.Duration // between echoes (ping -i); default 1ms
	Timeout  time.Duration // per reply (ping -W); default 1s
	// Repeat runs every setup this many times, interleaved; default 1.
	Repeat int
	// CPLoad is the backlogged CP workload: mixed (default), kernel or user.
	CPLoad string
	// ClientFIFO, when > 0, runs ping at this SCHED_FIFO priority (chrt):
	// it shares its core with the CP load, which would otherwise stretch
	// its pace. 0 runs it at normal priority.
	ClientFIFO int
	// Cyclictest, when > 0, runs rt-tests' cyclictest this long on the DP
	// core after each run's ping, with the CP load still running.
	Cyclictest time.Duration
	// SLOs, when set, run taichi once per value (SLODefault: the daemon's
	// own bound), interleaved with the other policies.
	SLOs []time.Duration
}

// Runs is how many runs the experiment makes (the reference included).
func (c *PingConfig) Runs() int {
	return (len(armsOf(c.Policies, c.SLOs)) + 1) * max(c.Repeat, 1)
}

// Validate names the first bad field.
func (c *PingConfig) Validate() error {
	if err := validatePolicies(c.Policies); err != nil {
		return err
	}
	if c.Count < 0 || c.Count > 1_000_000 {
		return fmt.Errorf("count: %d: want 1..1000000", c.Count)
	}
	if c.Interval != 0 && (c.Interval < 100*time.Microsecond || c.Interval > 10*time.Second) {
		return fmt.Errorf("interval: %v: want 100µs..10s", c.Interval)
	}
	if c.Timeout != 0 && (c.Timeout < time.Millisecond || c.Timeout > time.Minute) {
		return fmt.Errorf("timeout: %v: want 1ms..1m", c.Timeout)
	}
	if c.Repeat < 0 || c.Repeat > 100 {
		return fmt.Errorf("repeat: %d: want 1..100", c.Repeat)
	}
	if c.CPLoad != "" && !slices.Contains(CPLoads, c.CPLoad) {
		return fmt.Errorf("cp-load: unknown %q (want %s, %s or %s)", c.CPLoad, CPLoadMixed, CPLoadKernel, CPLoadUser)
	}
	if c.Cyclictest < 0 || c.Cyclictest > 10*time.Minute {
		return fmt.Errorf("cyclictest: %v: want 0 (skip) up to 10m", c.Cyclictest)
	}
	if c.ClientFIFO < 0 || c.ClientFIFO > 99 {
		return fmt.Errorf("client-fifo: %d: want 0 (normal) or 1..99", c.ClientFIFO)
	}
	return validateSLOs(c.SLOs, c.Policies)
}

// PingStats is what ping itself reported for one run: its summary lines.
// The percentiles of the per-reply times are the run's DP.LatUS, the loss
// its DP.Loss.
type PingStats struct {
	Transmitted int `json:"transmitted"`
	Received    int `json:"received"`
	Duplicates  int `json:"duplicates,omitempty"`
	Corrupted   int `json:"corrupted,omitempty"`
	Errors      int `json:"errors,omitempty"` // ICMP errors instead of replies
	// ping's rtt summary (min/avg/max/mdev), in µs; zero when no reply came.
	MinUS  float64 `json:"min_us"`
	AvgUS  float64 `json:"avg_us"`
	MaxUS  float64 `json:"max_us"`
	MdevUS float64 `json:"mdev_us"`
}

var (
	pingReplyRE   = regexp.MustCompile(`^\d+ bytes from [^ ]+: icmp_seq=\d+ .*\btime=([0-9.]+) ms(.*)$`)
	pingSummaryRE = regexp.MustCompile(`^(\d+) packets transmitted, (\d+) received(.*), [0-9.]+% packet loss`)
	pingExtraRE   = regexp.MustCompile(`\+(\d+) (duplicates|corrupted|errors)`)
	pingRTTRE     = regexp.MustCompile(`^(?:rtt|round-trip) min/avg/max/mdev = ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)
)

// parsePing reads iputils ping's output: the per-reply lines ("64 bytes
// from …: icmp_seq=1 ttl=64 time=0.053 ms", duplicates marked "(DUP!)") and
// the summary. It returns the summary and the round trip of every reply
// that is not a duplicate, in µs. Output without a summary, or whose reply
// lines disagree with it, is an error.
func parsePing(out string) (PingStats, []float64, error) {
	var st PingStats
	var times []float64
	dups, summary, rtt := 0, false, false
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if m := pingReplyRE.FindStringSubmatch(line); m != nil {
			ms, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return st, nil, fmt.Errorf("ping output: %q: bad time", line)
			}
			if strings.Contains(m[2], "DUP!") {
				dups++
				continue
			}
			times = append(times, ms*1000)
			continue
		}
		if m := pingSummaryRE.FindStringSubmatch(line); m != nil {
			summary = true
			st.Transmitted, _ = strconv.Atoi(m[1])
			st.Received, _ = strconv.Atoi(m[2])
			for _, x := range pingExtraRE.FindAllStringSubmatch(m[3], -1) {
				n, _ := strconv.Atoi(x[1])
				switch x[2] {
				case "duplicates":
					st.Duplicates = n
				case "corrupted":
					st.Corrupted = n
				case "errors":
					st.Errors = n
				}
			}
			continue
		}
		if m := pingRTTRE.FindStringSubmatch(line); m != nil {
			rtt = true
			for i, p := range []*float64{&st.MinUS, &st.AvgUS, &st.MaxUS, &st.MdevUS} {
				ms, err := strconv.ParseFloat(m[i+1], 64)
				if err != nil {
					return st, nil, fmt.Errorf("ping output: %q: bad rtt", line)
				}
				*p = ms * 1000
			}
		}
	}
	switch {
	case !summary:
		return st, nil, errors.New(`ping output: no "packets transmitted" summary`)
	case st.Received > st.Transmitted:
		return st, nil, fmt.Errorf("ping output: %d received of %d transmitted", st.Received, st.Transmitted)
	case len(times) != st.Received || dups != st.Duplicates:
		return st, nil, fmt.Errorf("ping output: %d reply lines (%d duplicates), but the summary says %d received (+%d duplicates)",
			len(times), dups, st.Received, st.Duplicates)
	case st.Received > 0 && !rtt:
		return st, nil, errors.New("ping output: replies but no rtt min/avg/max/mdev line")
	}
	return st, times, nil
}

// runPing runs iputils ping from the generator's namespace against the DP
// loop's address. ping stops by itself after Count echoes (the last one
// waits Timeout); the deadline is a backstop, after which ping is
// interrupted (it still prints its summary) and the run reports it.
func runPing(ctx context.Context, env *Env, cfg PingConfig) (PingStats, []float64, error) {
	if env.GenNS == "" || !env.DPIP.IsValid() {
		return PingStats{}, nil, errors.New("ping: no generator namespace or DP address in the bench")
	}
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
	deadline := pingBound(cfg)
	pctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	// ip netns exec and chrt replace themselves with ping: the signal
	// reaches ping.
	argv := []string{"netns", "exec", env.GenNS}
	if cfg.ClientFIFO > 0 {
		argv = append(argv, "chrt", "-f", strconv.Itoa(cfg.ClientFIFO))
	}
	argv = append(argv, "ping", "-n", "-c", strconv.Itoa(cfg.Count), "-i", secs(cfg.Interval), "-W", secs(cfg.Timeout), env.DPIP.String())
	cmd := exec.CommandContext(pctx, "ip", argv...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	st, times, err := parsePing(stdout.String())
	if err != nil {
		return st, nil, fmt.Errorf("%w (ping: %v: %s)", err, runErr, strings.TrimSpace(stderr.String()))
	}
	if pctx.Err() != nil {
		return st, times, fmt.Errorf("ping: interrupted after %d of %d echoes (deadline %v or stop)", st.Transmitted, cfg.Count, deadline)
	}
	// Exit status 1 means some replies are missing: that is the loss column.
	if ee := (*exec.ExitError)(nil); runErr != nil && (!errors.As(runErr, &ee) || ee.ExitCode() != 1) {
		return st, times, fmt.Errorf("ping: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return st, times, nil
}

// pingBound is how long one ping run may take: three times its nominal
// length (a client that falls behind its pace still finishes), plus the
// wait for the last reply and a margin.
func pingBound(cfg PingConfig) time.Duration {
	return 3*time.Duration(cfg.Count)*cfg.Interval + cfg.Timeout + 30*time.Second
}

// RunPing measures the DP loop's round trip with the real ping, beside the
// paper's ping table: a static run without CP load, then each policy with
// the backlogged CP load, interleaved per repeat. The DP loop's RX
// residence for the ping packets is recorded per run.
func RunPing(ctx context.Context, env *Env, cfg PingConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Count == 0 {
		cfg.Count = 10000
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	cfg.Repeat = max(cfg.Repeat, 1)
	if cfg.CPLoad == "" {
		cfg.CPLoad = CPLoadMixed
	}
	if _, err := exec.LookPath("ping"); err != nil {
		return nil, errors.New("ping not found (Debian package iputils-ping)")
	}
	if _, err := exec.LookPath("stress-ng"); err != nil && cfg.CPLoad != CPLoadUser {
		return nil, errors.New("stress-ng not found (Debian package stress-ng)")
	}
	sys := env.System
	rep := &Report{
		Experiment: ExperimentPing,
		Started:    time.Now().UTC(),
		Machine:    ReadMachine(sys.DPCores(), sys.CPCores()),
		Params: map[string]any{"policies": cfg.Policies, "count": cfg.Count, "cyclictest_s": cfg.Cyclictest.Seconds(), "interval_s": cfg.Interval.Seconds(),
			"timeout_s": cfg.Timeout.Seconds(), "repeat": cfg.Repeat, "cp_load": cfg.CPLoad, "client": pingVersion(),
			"client_fifo": cfg.ClientFIFO},
		Notes: []string{
			"RTT is iputils ping's (its kernel receive stamp minus its send time) from the generator namespace to the DP address, " +
				"answered by the DP loop in reflect mode. DP residence is measured in the DP loop for the same packets. " +
				pingClientNote(cfg.ClientFIFO),
			"The paper's figures were measured on its own hardware: absolute times do not compare across machines, only ratios to static do.",
		},
	}
	if cfg.Cyclictest > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("cyclictest runs %v at SCHED_FIFO %d (the DP's priority + 1) on DP core %v, 200 µs period, after each run's ping with the CP load still running.",
			cfg.Cyclictest, sys.DPPriority()+1, sys.DPCores()))
	}
	if env.DP == DPOVS {
		rep.Notes[0] = "RTT is iputils ping's (its kernel receive stamp minus its send time) from the generator namespace to the sink, " +
			"through Open vSwitch with DPDK (its PMD on the DP core), answered by the sink's kernel. " + pingClientNote(cfg.ClientFIFO)
	}
	if len(cfg.SLOs) > 0 {
		rep.Params["slo_sweep_us"] = sloParam(cfg.SLOs)
	}
	maps.Copy(rep.Params, env.Facts)
	for r := range cfg.Repeat {
		for _, s := range setupsWithReference(armsOf(cfg.Policies, cfg.SLOs)) {
			if ctx.Err() != nil {
				return finish(rep), ctx.Err()
			}
			label := fmt.Sprintf("%s, repeat %d/%d", pingSetupName(s.arm.String(), s.withCP), r+1, cfg.Repeat)
			if env.Progress != nil {
				env.Progress.Show(label)
			}
			run := pingRun(ctx, env, cfg, s)
			run.Repeat = r
			rep.Runs = append(rep.Runs, run)
			if env.Progress != nil {
				env.Progress.Step(fmt.Sprintf("%s: ping avg %s µs, p99 %s µs", label, num(pingAvg(run)), num(run.DP.LatUS.P99)))
			}
		}
	}
	return finish(rep), nil
}

func pingRun(ctx context.Context, env *Env, cfg PingConfig, s setup) (run Run) {
	run = Run{Policy: s.policy, CPLoad: "none"}
	sys := env.System
	cpLoad := ""
	if s.withCP {
		cpLoad = cfg.CPLoad
	}
	end, ok := beginRun(ctx, env, &run, s.arm, cpLoad, pingBound(cfg)+cfg.Cyclictest+10*time.Second)
	if !ok {
		return run
	}
	defer end()
	if s.withCP {
		if err := waitCPRunning(ctx, sys, 15*time.Second); err != nil {
			run.addErr(err)
			return run
		}
	}
	env.settle(ctx)

	before, serr := sys.Snapshot()
	st, times, err := runPing(ctx, env, cfg)
	after, aerr := snapshotCounted(ctx, sys, before, uint64(st.Received), time.Second)
	if err != nil {
		run.addErr(err)
	}
	offered := 1 / cfg.Interval.Seconds()
	run.DP.OfferedPPS = offered
	if st.Transmitted > 0 {
		run.Ping = &st
		run.DP.Loss = float64(st.Transmitted-st.Received) / float64(st.Transmitted)
		run.DP.LatUS = stats.Summarize(times)
	}
	load := 0.0
	if env.CapacityPPS > 0 {
		load = offered / float64(env.CapacityPPS)
	}
	run.measured(sys, before, after, serr, aerr, load)
	if run.Ping != nil && run.WallS > 0 {
		run.DP.PPS = float64(st.Received) / run.WallS
	}
	run.cyclictest(ctx, sys, cfg.Cyclictest)
	return run
}

// snapshotCounted takes the snapshot that ends a run once the DP loop's
// published residence counts at least want more packets than before (its
// stats reach the daemon a few milliseconds late), or after bound.
func snapshotCounted(ctx context.Context, sys System, before Snapshot, want uint64, bound time.Duration) (Snapshot, error) {
	deadline := time.Now().Add(bound)
	for {
		s, err := pollSnapshot(sys)
		if err != nil || !s.HaveDPHist || !before.HaveDPHist || s.Residence.Count >= before.Residence.Count+want ||
			ctx.Err() != nil || time.Now().After(deadline) {
			if err != nil {
				return s, err
			}
			return sys.Snapshot() // the run's figures: counts only grow
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func pingClientNote(fifo int) string {
	if fifo > 0 {
		return fmt.Sprintf("ping runs at SCHED_FIFO %d on the generator's core, which it shares with the CP load, so that it keeps its pace.", fifo)
	}
	return "ping runs at normal priority on the generator's core, shared with the CP load."
}

// cpRunningCPU is how much CPU time the CP pool must have used since a CP
// load started before it counts as running: its processes are past their
// start-up (placement, exec) and competing for the CPU.
const cpRunningCPU = 50 * time.Millisecond

// waitCPRunning waits until the CP pool's CPU time has grown by
// cpRunningCPU, so a short measurement does not start before its CP load
// does. Without a CP usage figure it returns at once.
func waitCPRunning(ctx context.Context, sys System, bound time.Duration) error {
	start, err := pollSnapshot(sys)
	if err != nil || start.CPCPUS < 0 {
		return nil
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(bound)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return fmt.Errorf("CP load: the CP pool used under %v of CPU in %v", cpRunningCPU, bound)
		case <-tick.C:
		}
		now, err := pollSnapshot(sys)
		if err == nil && now.CPCPUS-start.CPCPUS >= cpRunningCPU.Seconds() {
			return nil
		}
	}
}

// pingVersion is the client's own version line ("ping from iputils 20221126").
func pingVersion() string {
	out, err := exec.Command("ping", "-V").Output()
	if err != nil {
		return "ping (version unknown)"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// pingSetupName names a setup: a policy as tables show it (see
// variantName), with or without the CP load.
func pingSetupName(policy string, withCP bool) string {
	if withCP {
		return policy + " with CP"
	}
	return policy + " without CP"
}

// paperCounterpart is the paper's ping-table row a setup corresponds to:
// static cores, sharing without the workload probe (dynamic), or Tai Chi.
func paperCounterpart(policy scheduler.PolicyName) string {
	switch policy {
	case scheduler.PolicyDynamic:
		return "without the probe"
	case scheduler.PolicyTaichi:
		return "Tai Chi"
	case "static":
		return "static"
	}
	return "" // no row in the paper (ovs-maxsleep)
}

// paperPing is the paper's ping table, in µs.
var paperPing = []struct {
	Setup          string
	Min, Avg, Max  float64
	AvgRatio, MaxR float64
}{
	{"static", 26, 30, 38, 1, 1},
	{"without the probe", 32, 37, 115, 37.0 / 30, 115.0 / 38},
	{"Tai Chi", 27, 30, 38, 1, 1},
}

func pingAvg(r Run) float64 {
	if r.Ping == nil || r.Ping.Received == 0 {
		return math.NaN()
	}
	return r.Ping.AvgUS
}

// writePingTable renders the ping experiment: ping's own figures per setup
// with their ratios to static without CP and the paper's ratios beside
// them, the DP loop's residence for the same packets, then the paper's
// table for reference.
func writePingTable(w io.Writer, r *Report) {
	pingFig := func(f func(PingStats) float64) func(Run) float64 {
		return func(r Run) float64 {
			if r.Ping == nil || r.Ping.Received == 0 {
				return math.NaN()
			}
			return f(*r.Ping)
		}
	}
	maxUS := pingFig(func(p PingStats) float64 { return p.MaxUS })
	cells := cellsOf(r)
	var ref *cell
	for i := range cells {
		if cells[i].key.Policy == scheduler.PolicyStatic && cells[i].key.CPLoad == "none" {
			ref = &cells[i]
			break
		}
	}
	ratioTo := func(c cell, f func(Run) float64) string {
		if ref == nil {
			return "–"
		}
		return ratio(aggregate(c.runs, f).Median / aggregate(ref.runs, f).Median)
	}
	paperRatios := func(setup string) string {
		for _, p := range paperPing {
			if p.Setup == setup {
				return fmt.Sprintf("%s: %s / %s", setup, ratio(p.AvgRatio), ratio(p.MaxR))
			}
		}
		return "–"
	}
	fmt.Fprintln(w, "| setup | repeats | replies/sent | loss | min µs | avg µs | max µs | mdev µs | p99 µs | avg ÷ ref | p99 ÷ ref | max ÷ ref | paper avg ÷ / max ÷ static | DP residence p50 µs | residence p99 µs | residence max µs | cyclictest p99 µs | cyclictest max µs | lent s | harvested CP s |"+daemonColumns)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cells {
		sent, got := 0, 0
		for _, run := range c.runs {
			if run.Ping != nil {
				sent, got = sent+run.Ping.Transmitted, got+run.Ping.Received
			}
		}
		setup := pingSetupName(c.key.name(), c.key.CPLoad != "none")
		if c.key.CPLoad != "none" {
			setup += " (" + c.key.CPLoad + ")"
		}
		fmt.Fprintf(w, "| %s | %d | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s\n",
			setup, len(c.runs), got, sent, lossCell(c.runs),
			aggregate(c.runs, pingFig(func(p PingStats) float64 { return p.MinUS })),
			aggregate(c.runs, pingAvg), aggregate(c.runs, maxUS),
			aggregate(c.runs, pingFig(func(p PingStats) float64 { return p.MdevUS })),
			aggregate(c.runs, rttP99),
			ratioTo(c, pingAvg), ratioTo(c, rttP99), ratioTo(c, maxUS), paperRatios(paperCounterpart(c.key.Policy)),
			aggregate(c.runs, residenceUS(pickP50)),
			aggregate(c.runs, residenceUS(pickP99)),
			aggregate(c.runs, residenceUS(pickMax)),
			aggregate(c.runs, cyclictestUS(pickP99)),
			aggregate(c.runs, cyclictestUS(pickMax)),
			aggregate(c.runs, runLentS),
			aggregate(c.runs, harvestedCP), daemonCells(c.runs))
	}
	fmt.Fprintln(w, "\nThe paper's ping table (its hardware; compare the ratios, not the µs):")
	fmt.Fprintln(w, "\n| paper setup | min µs | avg µs | max µs | avg ÷ static | max ÷ static |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, p := range paperPing {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", p.Setup, num(p.Min), num(p.Avg), num(p.Max), ratio(p.AvgRatio), ratio(p.MaxR))
	}
	fmt.Fprintln(w, "\nref = static without CP; static with CP corresponds to the paper's static, dynamic (lending without the probe) to \"without the probe\", taichi to Tai Chi.")
}
