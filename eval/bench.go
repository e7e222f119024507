package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/testbed"
)

// BenchOptions select the machine setup shared by every experiment.
type BenchOptions struct {
	// Prefix names the testbed, the CP cgroup and the pipeline namespaces;
	// default "te<pid>".
	Prefix string
	// Policy the daemon starts with (each run sets its own); default static.
	Policy scheduler.PolicyName
	// Log receives the daemon's log; nil discards it.
	Log io.Writer
	// Progress, if set, is handed to the experiments.
	Progress *Progress
	// InProcessLoops runs the daemon's DP loops inside this process instead
	// of in `taichi dp-host` processes (tests: the test binary is no taichi).
	InProcessLoops bool
	// CPClass and CPWeight override vcpu.class and vcpu.weight; empty/0
	// keep the embedded defaults. On a 2-core testbed the traffic generator
	// shares the only CP core with CP work: with class idle, CP gets next to
	// nothing there while the generator runs, so the eval defaults to
	// low-weight at a normal task's weight (DefaultCPClass, DefaultCPWeight).
	CPClass  string
	CPWeight int
	// DP is the data plane: DPLoop (default) or DPOVS.
	DP string
	// Softirq is where the kernel processes the generator's packets past
	// the probe: SoftirqCP (default) or SoftirqDP.
	Softirq string
}

// Where the generator's packets are processed (BenchOptions.Softirq).
const (
	// SoftirqDP: on the DP core (RPS from the NIC namespace's first hop),
	// as on a host whose NIC queue interrupts its DP core. The generator's
	// kernel path is then not paid from the CP core's capacity.
	SoftirqDP = "dp"
	// SoftirqCP: where the sender runs (the CP core).
	SoftirqCP = "cp"
)

// The CP placement the eval uses unless told otherwise (see BenchOptions).
const (
	DefaultCPClass  = "low-weight"
	DefaultCPWeight = 100
)

// Bench is a running testbed + daemon + traffic generator.
type Bench struct {
	Env     *Env
	Testbed *testbed.Testbed
	Daemon  *daemon.Daemon
	ovs     *ovs.Instance // the private OVS of a DPOVS bench
	workDir string
	// cpu measures the daemon's own CPU time (nil when the process's CPU
	// profiler was taken: cpuErr says why).
	cpu    *DaemonCPU
	cpuErr error
	// prequeue is net.core.netdev_tstamp_prequeue before the bench set it
	// (restored by Close); -1 when untouched.
	prequeue int
	// restoreSenderSoftirq gives the sender CPU's ksoftirqd back the class
	// it had before the bench raised it (Close); nil when untouched.
	restoreSenderSoftirq func() error
}

// tstampPrequeue is the sysctl that says where the kernel stamps received
// packets once any socket asked for timestamps (the generator does): 1 when
// the packet is queued to the receiving CPU's backlog, 0 when that CPU's
// softirq delivers it. On veth the backlog is the sender's CPU, which here
// is the CP core: with 1, a packet's "RX residence" would include the CP
// core's softirq wait. The bench sets 0, so residence starts when the packet
// reaches the DP loop's socket.
const tstampPrequeue = "/proc/sys/net/core/netdev_tstamp_prequeue"

// StartBench brings the testbed up, starts the daemon on the embedded
// defaults (with a private cgroup name and state dir, and a DP loop on the
// testbed), and measures the DP loop's capacity. Close undoes all of it.
func StartBench(ctx context.Context, o BenchOptions) (_ *Bench, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("eval: needs root (network namespaces, cgroups, SCHED_FIFO)")
	}
	o = o.withDefaults()
	if err := CheckDP(o.DP); err != nil {
		return nil, err
	}
	helper, err := SelfHelper()
	if err != nil {
		return nil, err
	}
	b := &Bench{prequeue: -1}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if old := readInt(tstampPrequeue); old != 0 {
		if werr := os.WriteFile(tstampPrequeue, []byte("0"), 0o644); werr == nil {
			b.prequeue = old
		}
	}
	b.workDir, err = os.MkdirTemp("", "taichi-eval-")
	if err != nil {
		return nil, err
	}
	if b.Testbed, err = testbed.Up(ctx, testbed.Options{Prefix: o.Prefix}); err != nil {
		return nil, err
	}
	name, stateDir := "taichi.eval."+o.Prefix, filepath.Join(b.workDir, "daemon")
	var cfg *config.Config
	if o.DP == DPOVS {
		cfg, err = b.startOVS(ctx, name, stateDir, o)
	} else {
		cfg, err = DaemonConfig(b.Testbed, name, stateDir, o.Policy, o.CPClass, o.CPWeight)
	}
	if err != nil {
		return nil, err
	}
	if err := b.startDaemon(ctx, cfg, o); err != nil {
		return nil, err
	}
	b.Env = b.newEnv(cfg, o, helper)
	if err := b.steerSoftirq(ctx, cfg, o.Softirq); err != nil {
		return nil, err
	}
	b.raiseSenderSoftirq(cfg.CPCPUs[0])
	b.Env.Traffic, b.Env.CapacityPPS, err = newTraffic(ctx, b.Testbed, b.ovs != nil, cfg.CPCPUs[0])
	if err != nil {
		return nil, err
	}
	return b, nil
}

// withDefaults fills the options a bench cannot run without.
func (o BenchOptions) withDefaults() BenchOptions {
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("te%d", os.Getpid())
	}
	if o.Policy == "" {
		o.Policy = scheduler.PolicyStatic
	}
	if o.DP == "" {
		o.DP = DPLoop
	}
	return o
}

// startDaemon starts the daemon on cfg, in this process, with its CPU
// metered.
func (b *Bench) startDaemon(ctx context.Context, cfg *config.Config, o BenchOptions) (err error) {
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	dopts := []daemon.Option{daemon.WithoutControlSocket(), daemon.WithoutMetrics(),
		daemon.WithLogger(slog.New(slog.NewTextHandler(logw, nil))),
		daemon.WithDPDir(filepath.Join(b.workDir, "dp"))}
	if o.InProcessLoops {
		dopts = append(dopts, daemon.WithInProcessLoops())
	}
	// The daemon CPU meter must be running, and the daemon labelled,
	// before the daemon starts its goroutines (see DaemonCPU).
	b.cpu = &DaemonCPU{}
	if cerr := b.cpu.Start(); cerr != nil {
		b.cpu = nil
		b.cpuErr = cerr
	}
	var d *daemon.Daemon
	withDaemonLabel(ctx, func(ctx context.Context) {
		if d, err = daemon.New(cfg, dopts...); err == nil {
			err = d.Start(ctx)
		}
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	b.Daemon = d
	// The daemon pinned this process to the CP cores, and the Go runtime
	// follows CPU affinity: GOMAXPROCS would drop to the number of CP cores,
	// and a busy-polling DP loop goroutine holds one P for good, leaving the
	// generator's sender and receiver waiting for a P (milliseconds, not
	// microseconds). Fixing GOMAXPROCS keeps a P for each of them.
	if n := runtime.NumCPU() + 4; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	return nil
}

// newEnv is what the experiments run against: the daemon's system (OVS's
// when it is the data plane), the testbed's namespaces, and the facts a
// report records about the setup.
func (b *Bench) newEnv(cfg *config.Config, o BenchOptions, helper []string) *Env {
	ds := &DaemonSystem{D: b.Daemon, CPU: b.cpu}
	var sys System = ds
	pingDst := b.Testbed.DPIP
	if b.ovs != nil {
		sys, pingDst = &ovsSystem{DaemonSystem: ds, inst: b.ovs}, b.Testbed.SinkIP
	}
	env := &Env{
		System:   sys,
		DP:       o.DP,
		GenNS:    b.Testbed.GenNS,
		DPIP:     pingDst,
		Prefix:   o.Prefix + "c",
		WorkDir:  b.workDir,
		GoHelper: helper,
		Progress: o.Progress,
		Settle:   500 * time.Millisecond,
		Facts:    map[string]any{"cp_class": cfg.VCPU.Class, "cp_weight": cfg.VCPU.Weight, "dp": o.DP},
	}
	env.Facts["daemon_cpu"] = DaemonCPUSource
	if b.cpuErr != nil {
		env.Facts["daemon_cpu"] = "unknown: " + b.cpuErr.Error()
	}
	if b.ovs != nil {
		env.Facts["ovs"] = ovsVersion()
		env.Facts["ovs_pmd_maxsleep_peer_us"] = OVSPeerMaxSleep.Microseconds()
		env.Facts["ovs_pmd_maxsleep_lending_us"] = OVSLendingMaxSleep.Microseconds()
		env.Facts["ovs_idle_after_ms"] = OVSIdleAfter
	}
	// The guard's bound and the wake cost it came from: the probe's lead
	// is read against that cost (how much of a wake the probe hides).
	slo := b.Daemon.Status().SLO
	env.Facts["slo_us"] = float64(slo.Value) / 1e3
	env.Facts["slo_source"] = slo.Source
	if slo.WakeP50 > 0 {
		env.Facts["wake_cost_p50_us"] = float64(slo.WakeP50) / 1e3
		env.Facts["wake_cost_p99_us"] = float64(slo.WakeP99) / 1e3
	}
	env.Facts["generator_sender"] = fmt.Sprintf("SCHED_OTHER at nice %d pinned to CPU %d", senderNice, cfg.CPCPUs[0])
	return env
}

// steerSoftirq puts the testbed's receive softirq on the DP core or leaves
// it on the CP core with the sender, and records which in the facts.
func (b *Bench) steerSoftirq(ctx context.Context, cfg *config.Config, softirq string) error {
	switch softirq {
	case SoftirqDP:
		err := b.Testbed.SteerRX(ctx, cfg.DPCPUs[0])
		b.Env.Facts["softirq"] = fmt.Sprintf("dp (CPU %d)", cfg.DPCPUs[0])
		return err
	case "", SoftirqCP:
		b.Env.Facts["softirq"] = fmt.Sprintf("cp (CPU %d, with the sender)", cfg.CPCPUs[0])
		return nil
	}
	return fmt.Errorf("softirq: %q, want %s or %s", softirq, SoftirqDP, SoftirqCP)
}

// raiseSenderSoftirq runs the sender CPU's ksoftirqd at senderNice for the
// bench, as the sender: the packets it sends are processed on its CPU,
// deferred to ksoftirqd under load, and at nice 0 that thread shared the
// CP core with CP evenly (eval dataplane, load 0.7: static with CP offered
// 72-79% of the rate, dynamic 93%, taichi 51%). A failure is recorded in
// the facts, not fatal: the self-check judges the load offered.
func (b *Bench) raiseSenderSoftirq(cpu int) {
	tid, err := linuxsched.KsoftirqdTID(cpu)
	var was linuxsched.Class
	if err == nil {
		was, err = linuxsched.Swap(tid, linuxsched.Other(senderNice))
	}
	if err != nil {
		b.Env.Facts["sender_softirq"] = fmt.Sprintf("ksoftirqd/%d left as it was: %v", cpu, err)
		return
	}
	b.restoreSenderSoftirq = func() error { return linuxsched.Set(tid, was) }
	b.Env.Facts["sender_softirq"] = fmt.Sprintf("ksoftirqd/%d at nice %d (was %s)", cpu, senderNice, was)
}

// Close stops the daemon, removes its CP cgroup, and tears the testbed down.
func (b *Bench) Close() error {
	var errs []error
	if b.restoreSenderSoftirq != nil {
		errs = append(errs, b.restoreSenderSoftirq())
		b.restoreSenderSoftirq = nil
	}
	if b.prequeue >= 0 {
		errs = append(errs, os.WriteFile(tstampPrequeue, []byte(strconv.Itoa(b.prequeue)), 0o644))
		b.prequeue = -1
	}
	if b.cpu != nil {
		b.cpu.Stop()
		b.cpu = nil
	}
	if b.Daemon != nil {
		errs = append(errs, b.Daemon.Close())
		if p := b.Daemon.Pool(); p != nil {
			errs = append(errs, p.Destroy())
		}
		b.Daemon = nil
	}
	// After the daemon: it gave the PMD back (an adopted application is
	// released, not stopped).
	if b.ovs != nil {
		errs = append(errs, b.ovs.Stop())
		b.ovs = nil
	}
	if b.Testbed != nil {
		errs = append(errs, b.Testbed.Down())
		b.Testbed = nil
	}
	if b.workDir != "" {
		errs = append(errs, os.RemoveAll(b.workDir))
		b.workDir = ""
	}
	return errors.Join(errs...)
}

// startOVS starts the private OVS on the testbed and returns the daemon
// config that adopts it.
func (b *Bench) startOVS(ctx context.Context, name, stateDir string, o BenchOptions) (*config.Config, error) {
	base, err := DaemonConfig(nil, name, stateDir, o.Policy, o.CPClass, o.CPWeight)
	if err != nil {
		return nil, err
	}
	if len(base.CPCPUs) == 0 {
		return nil, errors.New("eval: no CP core for OVS's control threads")
	}
	dpCPU := base.DPCPUs[0]
	if b.ovs, err = StartOVS(ctx, b.Testbed, filepath.Join(b.workDir, "ovs"), dpCPU, base.CPCPUs[0]); err != nil {
		return nil, err
	}
	return daemonConfigWith(nil, name, stateDir, o.Policy, o.CPClass, o.CPWeight, OVSDataplaneYAML(b.ovs, b.Testbed, dpCPU))
}
