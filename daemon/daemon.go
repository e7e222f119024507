// Package daemon is `taichi run`: it applies a validated configuration to
// the machine (the CP pool, DP loops, DPDK lcores, the probe and the
// scheduler), serves status and run-time changes on the control socket and
// metrics over HTTP, and undoes its lending on exit so that neither DP nor CP
// is stranded.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/internal/sdnotify"
	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/vcpu"
)

// Option adjusts a Daemon (tests and the eval use them).
type Option func(*Daemon)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(d *Daemon) { d.log = l } }

// WithoutControlSocket skips the control socket (in-process users such as the eval).
func WithoutControlSocket() Option { return func(d *Daemon) { d.noControl = true } }

// WithoutMetrics skips the metrics HTTP endpoint.
func WithoutMetrics() Option { return func(d *Daemon) { d.noMetrics = true } }

// WithInProcessLoops hosts DP loops inside this process instead of in
// `taichi dp-host` processes (the eval and tests, whose binary is not taichi).
// Such loops stop with the daemon.
func WithInProcessLoops() Option { return func(d *Daemon) { d.inProcessLoops = true } }

// WithDPDir puts the DP loops' segments and logs in dir (default: "dp"
// beside the control socket, i.e. /run/taichi/dp).
func WithDPDir(dir string) Option { return func(d *Daemon) { d.dpDir = dir } }

// Daemon is one running taichi.
type Daemon struct {
	cfg            *config.Config
	log            *slog.Logger
	noControl      bool
	noMetrics      bool
	inProcessLoops bool
	dpDir          string
	// softirq is each DP core's ksoftirqd this run raised, to put back.
	softirq []softirqThread
	// harvestBase is the CP group's CPU time per DP core when this run
	// started: harvest is counted from there.
	harvestBase map[int]time.Duration

	// rules is what the policy in force asks of each DP core, as the
	// scheduler handed it over (SetCoreRules); rulesMu alone guards it, as
	// the scheduler holds its own lock while it hands them.
	rulesMu sync.Mutex
	rules   map[int]scheduler.CoreRules

	mu       sync.Mutex
	started  time.Time
	override bool
	// policyOverride is a run-time policy restored from the checkpoint.
	policyOverride scheduler.PolicyName
	// probeDown keeps why a DP core's probe failed, for status; the
	// scheduler holds such a core static.
	probeDown map[int]string
	adoptErr  string

	pool    vcpu.Pool
	scanner *vcpu.Scanner // the adoption rescan's (its goroutine only)
	sched   *scheduler.Scheduler
	kmod    *kmod.Device // nil without /dev/taichi
	mono    scheduler.MonotonicBase
	loops   []*dpLoop
	dpdk    []*dpdk.Manager
	control *controlServer
	metrics *metricsServer
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
	lock    *instanceLock
	ckMu    sync.Mutex
	// ckDue: a lend or reclaim changed what the checkpoint records; the
	// checkpoint writer saves it off the scheduler's path (checkpointLoop).
	ckDue chan struct{}
	// actuators write each DP core's pool membership off the engine's
	// path (actuate.go); nil before Start and after Close.
	actuators map[int]*coreActuator

	// Watchdog: progress stamps (stamp()) and a scheduler barrier in flight.
	pumpBeat, superviseBeat atomic.Int64
	schedProbe              chan error
	unhealthy               bool

	selfCPU selfCPU
	// startFailed: Close undoes only what this process started (a DP host
	// or DPDK app adopted from an earlier run keeps running).
	startFailed bool

	// slo is the guard's residence bound and where it came from.
	slo SLOStatus

	blockers *blockerWatch // blocker-aware lending; nil when off

	// dpdkHold keeps DPDK lending off whatever the policy (HoldDPDKLending).
	dpdkHold atomic.Bool
	// dpdkProbes warn DPDK cores; dpdkWake is each application's share.
	dpdkProbes []probe.Waker
	dpdkWake   map[*dpdk.Manager][]dpdk.WakeSource
}

// New prepares a daemon for cfg, which must come from config.Load (already
// validated). Nothing on the machine changes until Start.
func New(cfg *config.Config, opts ...Option) (*Daemon, error) {
	if cfg == nil || len(cfg.CPCPUs) == 0 {
		return nil, errors.New("daemon: configuration not loaded/validated (no CP cores resolved)")
	}
	if _, err := scheduler.LookupPolicy(cfg.Policy); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{
		cfg:       cfg,
		rules:     map[int]scheduler.CoreRules{},
		log:       slog.Default(),
		probeDown: map[int]string{},
		ckDue:     make(chan struct{}, 1),
		// Segments live beside the control socket (/run/taichi/dp by default).
		dpDir: filepath.Join(filepath.Dir(cfg.Control.Socket), "dp"),
	}
	for _, o := range opts {
		o(d)
	}
	sel, err := selectorFrom(cfg.VCPU.Adopt)
	if err != nil {
		return nil, err
	}
	if d.scanner, err = vcpu.NewScanner(sel); err != nil {
		return nil, fmt.Errorf("vcpu.adopt: %w", err)
	}
	if d.mono, err = scheduler.NewMonotonicBase(); err != nil {
		return nil, err
	}
	d.sched, err = scheduler.New(cfg.DPCPUs, d, cfg.SchedulerParams(), scheduler.WithLogger(d.log))
	if err != nil {
		return nil, err
	}
	return d, nil
}

func selectorFrom(a config.Adopt) (vcpu.Selector, error) {
	sel := vcpu.Selector{Units: a.Units, Cgroups: a.Cgroups, PIDs: a.PIDs}
	for i, s := range a.Commands {
		re, err := regexp.Compile(s)
		if err != nil {
			return sel, fmt.Errorf("vcpu.adopt.commands[%d]: %w", i, err)
		}
		sel.Commands = append(sel.Commands, re)
	}
	return sel, nil
}

// Config returns the configuration the daemon runs.
func (d *Daemon) Config() *config.Config { return d.cfg }

// Pool returns the CP pool (nil before Start).
func (d *Daemon) Pool() vcpu.Pool { return d.pool }

// Start applies the configuration. It reconciles whatever a previous run
// left (the CP group is adopted and shrunk to CP cores first), then starts
// every part. If any part fails, everything started so far is undone.
func (d *Daemon) Start(ctx context.Context) (err error) {
	d.started = time.Now()
	// One daemon per state: taken before anything is looked at or changed.
	if d.lock, err = acquireInstanceLock(d.cfg.StateDir); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.startFailed = true
			d.Close()
		}
	}()
	if cp, cerr := loadCheckpoint(d.cfg.StateDir); cerr != nil {
		d.log.Warn("ignoring unreadable checkpoint; starting fresh", "err", cerr)
	} else if cp != nil {
		d.reconcileCheckpoint(cp)
	}
	pinToCores(d.cfg.CPCPUs, d.log)
	d.escapeRTGroup()
	if err := d.openKmod(); err != nil {
		return err
	}

	pool, err := vcpu.NewCgroup(vcpu.Options{
		Name:           d.cfg.VCPU.CgroupName,
		CPCores:        d.cfg.CPCPUs,
		DPCores:        d.cfg.DPCPUs,
		Class:          d.cfg.VCPU.Class,
		Weight:         d.cfg.VCPU.Weight,
		WriterPriority: d.cfg.VCPU.WriterPriority,
	})
	if err != nil {
		return fmt.Errorf("vcpu: %w", err)
	}
	if err := pool.Start(ctx); err != nil {
		return fmt.Errorf("vcpu: %w", err)
	}
	d.pool = pool
	d.readHarvestBase()
	d.log.Info("CP pool ready", "backend", pool.Backend(), "cpus", pool.CPUs(), "group", d.cfg.VCPU.CgroupName)

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.rescan()
	d.wg.Add(3)
	go d.rescanLoop(runCtx)
	go d.checkpointLoop(runCtx)
	go func() {
		defer d.wg.Done()
		d.selfCPU.run(runCtx)
	}()

	d.raiseSoftirq()
	if err := d.startLoops(ctx); err != nil {
		return err
	}
	if err := d.startDPDK(ctx, runCtx); err != nil {
		return err
	}
	if err := d.deriveSLO(); err != nil {
		return err
	}
	d.startBlockers(runCtx)
	if d.override {
		if err := d.switchPolicy(d.policyOverride); err != nil {
			return err
		}
	}
	d.startActuators(runCtx)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.sched.Run(runCtx)
	}()
	go func() {
		defer d.wg.Done()
		d.pump(runCtx)
	}()
	// Ready once the scheduler has applied the policy to every core.
	if err := d.syncScheduler(ctx); err != nil {
		return err
	}
	if !d.noMetrics && d.cfg.Metrics.Listen != "" {
		if d.metrics, err = startMetrics(d, d.cfg.Metrics.Listen); err != nil {
			return err
		}
	}
	if !d.noControl {
		if d.control, err = listenControl(d, d.cfg.Control.Socket, d.cfg.Control.Group); err != nil {
			return err
		}
	}
	d.checkpoint()
	return nil
}

func (d *Daemon) syncScheduler(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := d.sched.Sync(ctx)
		if !errors.Is(err, scheduler.ErrNotRunning) {
			if err != nil {
				return fmt.Errorf("scheduler: %w", err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scheduler did not start: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// reconcileCheckpoint restores a run-time policy override if the config's
// policy did not change since it was saved, and says what changed otherwise.
func (d *Daemon) reconcileCheckpoint(cp *Checkpoint) {
	if len(cp.Lent) > 0 {
		d.log.Info("previous run left cores lent; they are reclaimed by the pool reconcile", "pid", cp.PID, "lent", cp.Lent)
	}
	if !cp.Override {
		return
	}
	if cp.Config == d.cfg.Policy && cp.Policy.Validate() == nil {
		d.policyOverride, d.override = cp.Policy, true
		d.log.Info("restoring policy set at run time", "policy", cp.Policy, "config_policy", d.cfg.Policy)
	} else {
		d.log.Info("config policy changed since the run-time override; using the config", "override", cp.Policy, "was", cp.Config, "now", d.cfg.Policy)
	}
}

// Run starts the daemon, tells systemd it is ready, pets the watchdog, and
// shuts down cleanly when ctx ends (SIGTERM/SIGINT in `taichi run`).
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	if ok, err := sdnotify.Notify("READY=1\nSTATUS=lending per policy " + string(d.Policy())); ok && err != nil {
		d.log.Warn("systemd notify failed", "err", err)
	}
	var tick <-chan time.Time
	iv := sdnotify.WatchdogInterval()
	if iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			sdnotify.Notify("STOPPING=1")
			return d.Close()
		case <-tick:
			d.petWatchdog(iv)
		}
	}
}

// Policy returns the name of the policy in force, as the scheduler has it.
// Not from an actuator call: the scheduler holds its lock during those.
func (d *Daemon) Policy() scheduler.PolicyName { return d.sched.Policy() }

// SetCoreRules implements scheduler.RuleGate: what the policy in force asks
// of cpu. The scheduler hands them over before a plan that needs them, so
// the actuator calls that follow (Lend, DPDK lending) read them here.
func (d *Daemon) SetCoreRules(cpu int, r scheduler.CoreRules) {
	d.rulesMu.Lock()
	d.rules[cpu] = r
	d.rulesMu.Unlock()
	if l := d.loopOn(cpu); l != nil {
		l.client.SetProbeWake(r.ProbeWake)
	}
}

// rulesOf is what the policy in force asks of cpu (nothing before the
// scheduler said).
func (d *Daemon) rulesOf(cpu int) scheduler.CoreRules {
	d.rulesMu.Lock()
	defer d.rulesMu.Unlock()
	return d.rules[cpu]
}

// confining: the policy in force confines blockers on some DP core.
func (d *Daemon) confining() bool {
	d.rulesMu.Lock()
	defer d.rulesMu.Unlock()
	for _, r := range d.rules {
		if r.ConfineBlockers {
			return true
		}
	}
	return false
}

// SetPolicy switches the lending policy at run time and checkpoints it.
func (d *Daemon) SetPolicy(s string) error {
	name, err := scheduler.ParsePolicyName(s)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if err := d.switchPolicy(name); err != nil {
		return err
	}
	d.log.Info("policy changed", "policy", name)
	d.checkpoint()
	return nil
}

// switchPolicy makes name the policy in force. The scheduler hands each
// core's new rules to the actuator before it applies them (DPDK lending
// follows), and blocker confinement restarts under them.
func (d *Daemon) switchPolicy(name scheduler.PolicyName) error {
	if err := d.sched.SetPolicy(name); err != nil {
		return err
	}
	d.mu.Lock()
	d.override = name != d.cfg.Policy
	d.mu.Unlock()
	d.blockers.restart(d.confining())
	return nil
}

// Lend implements scheduler.Actuator: add a DP core to the CP cpuset (by
// the core's actuator goroutine once the daemon runs, see actuate.go).
func (d *Daemon) Lend(cpu int) error {
	if d.wantLent(cpu, true) {
		return nil
	}
	return d.setLent(cpu, true)
}

// Reclaim implements scheduler.Actuator: take a DP core out of the CP
// cpuset (by the core's actuator goroutine once the daemon runs).
func (d *Daemon) Reclaim(cpu int) error {
	if d.wantLent(cpu, false) {
		return nil
	}
	return d.setLent(cpu, false)
}

// setLent writes the pool and checkpoints when membership changed. The
// core's DP loop is SCHED_FIFO before CP may run there and goes back to
// SCHED_OTHER only once CP has left (setLoopClass).
func (d *Daemon) setLent(cpu int, lend bool) error {
	was := slices.Contains(d.pool.CPUs(), cpu)
	write := d.pool.Reclaim
	if lend {
		if err := d.setLoopClass(cpu, true); err != nil {
			return fmt.Errorf("cpu %d: DP loop to SCHED_FIFO before lending: %w", cpu, err)
		}
		write = d.pool.Lend
	} else if err := d.setDPDKLending(cpu, false); err != nil {
		// DP first: lent lcores run again before the cpuset shrinks.
		return fmt.Errorf("cpu %d: reclaiming DPDK lcores: %w", cpu, err)
	}
	if err := write(cpu); err != nil {
		return err
	}
	if lend {
		if err := d.setDPDKLending(cpu, true); err != nil {
			d.log.Warn("DPDK idle lending stays off on a lent core", "cpu", cpu, "err", err)
		}
	} else if err := d.setLoopClass(cpu, false); err != nil {
		d.log.Warn("DP loop stays SCHED_FIFO on a reclaimed core", "cpu", cpu, "err", err)
	}
	if was != lend {
		d.checkpointSoon()
	}
	return nil
}

// SetYield implements scheduler.Actuator: the DP loop's fast-path knobs.
// Cores without a taichi loop (idle cores, DPDK lcores) have none. While
// the core's reclaim is still being written, the knobs wait for it
// (actuate.go).
func (d *Daemon) SetYield(cpu int, after int64, slice time.Duration) {
	k := yieldKnobs{after: after, slice: slice}
	if a := d.actuators[cpu]; a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.reclaimPending() {
			a.held = &k
			return
		}
		a.held = nil
	}
	d.setKnobs(cpu, k)
}

// Wake implements scheduler.Actuator: one kick through the kernel module
// when it is there (the wake-up preempts CP on that core at once), else a
// wake request through the loop's segment.
func (d *Daemon) Wake(cpu int) {
	if d.kmod != nil {
		if n, err := d.kmod.Kick(cpu); err == nil && n > 0 {
			return
		}
	}
	if l := d.loopOn(cpu); l != nil {
		l.client.Wake()
	}
}

func (d *Daemon) rescanLoop(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.VCPU.Rescan.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.rescan()
		}
	}
}

// rescan adopts processes the selectors match (new CP tasks appear all the time).
func (d *Daemon) rescan() {
	pids, err := d.scanner.Scan()
	if err == nil && len(pids) > 0 {
		_, err = d.pool.Adopt(pids)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		msg := err.Error()
		if msg != d.adoptErr {
			d.log.Warn("adopting CP tasks", "err", err)
		}
		d.adoptErr = msg
	} else {
		d.adoptErr = ""
	}
}

// Adopt puts processes into the CP pool now (the eval and tests place the
// CP workload they spawn).
func (d *Daemon) Adopt(pids []int) (int, error) { return d.pool.Adopt(pids) }

// Close stops lending: every DP core goes back to DP and the CP pool shrinks
// to the CP cores, its tasks left in place and runnable. Idempotent.
func (d *Daemon) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
	}
	var errs []error
	if d.control != nil {
		d.control.close()
	}
	if d.metrics != nil {
		errs = append(errs, d.metrics.close())
	}
	d.wg.Wait()
	// DP first: loops stop yielding (lcores are promoted) before the cores
	// leave the CP cpuset.
	d.stopLoops()
	d.stopDPDK()
	d.restoreSoftirq()
	if d.kmod != nil {
		d.kmod.Close()
	}
	d.actuators = nil // stopped with the other goroutines: write here
	if d.pool != nil {
		for _, cpu := range d.cfg.DPCPUs {
			if err := d.setLent(cpu, false); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, d.pool.Close())
		d.checkpoint()
	}
	d.lock.release()
	return errors.Join(errs...)
}

func buildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
