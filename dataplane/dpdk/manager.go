package dpdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/safename"
	"golang.org/x/sys/unix"
)

// ErrNoProcess means the DPDK process is gone.
var ErrNoProcess = errors.New("process not running")

// ErrNotLcore means a TID is not one of the managed lcore threads.
var ErrNotLcore = errors.New("not a managed lcore thread")

// Option adjusts a Manager.
type Option func(*Manager)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// WithOutput sends a launched application's stdout and stderr to w
// (default: the null device). An *os.File is handed to the application
// itself; any other writer goes through a pipe that ends with this process,
// so an application that outlives it dies on its next write.
func WithOutput(w io.Writer) Option { return func(m *Manager) { m.output = w } }

// WithGuard runs argv (a command calling RunGuard on its stdin, e.g.
// `taichi dpdk guard`) next to the daemon; it reclaims lent lcores if the
// daemon dies. With a guard configured, Demote refuses to lend when the
// guard cannot be told.
func WithGuard(argv ...string) Option { return func(m *Manager) { m.guardArgv = argv } }

// WithYieldGroup names the per-DP-core cpu cgroups, prefix-dp<cpu>
// (default "taichi-<name>"); prefix must be a safe path component.
func WithYieldGroup(prefix string) Option { return func(m *Manager) { m.yieldPrefix = prefix } }

// Manager keeps one DPDK application's lcore threads pinned to their DP
// cores, each in its core's cpu cgroup with the class its state wants
// (see internal/coreyield), and lends those cores while the lcores are idle.
type Manager struct {
	cfg    Config
	re     *regexp.Regexp
	log    *slog.Logger
	output io.Writer

	mu        sync.Mutex // scan state and status
	pid       int
	cmd       *exec.Cmd
	exited    chan struct{} // closed when a launched process has been reaped
	assign    map[int]int   // tid -> DP core
	status    Status
	reapplied uint64
	applied   map[int]bool // tids pinned at least once

	schedMu sync.Mutex   // policy reads/writes and the demoted set
	demoted map[int]bool // tids lent to CP

	// lcores is a read-only copy of assign for the reclaim path, so Promote
	// never waits for a reconcile scan holding mu.
	lcores atomic.Pointer[map[int]int]

	watcher *IdleWatcher
	// sleep governs OVS's pmd-maxsleep by lending (OVSPMDMaxSleep set).
	sleep *ovsSleep
	probe []WakeSource // the probe's warnings for the watcher (SetProbe)
	// lendingOff: the daemon's policy keeps the cores out of CP's reach.
	lendingOff atomic.Bool

	guardArgv []string
	guard     *guardProc

	pidFile string
	// readopted: launched by an earlier Manager, found through pidFile.
	readopted bool

	yieldPrefix string
	yield       *coreyield.Set // set up by Start
	released    bool           // Release ran: threads are left alone
}

// New validates cfg and returns a Manager that has not touched anything yet.
func New(cfg Config, opts ...Option) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dpdk %q: %w", cfg.Name, err)
	}
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:     cfg,
		re:      regexp.MustCompile(cfg.ThreadPattern),
		log:     slog.Default(),
		output:  io.Discard,
		assign:  map[int]int{},
		applied: map[int]bool{},
		demoted: map[int]bool{},
	}
	for _, o := range opts {
		o(m)
	}
	if m.yieldPrefix == "" {
		m.yieldPrefix = "taichi-" + cfg.Name
	}
	if err := safename.Check(m.yieldPrefix); err != nil {
		return nil, fmt.Errorf("dpdk %q: yield group: %w", cfg.Name, err)
	}
	m.log = m.log.With("dpdk", cfg.Name)
	return m, nil
}

// Config returns the configuration with defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// PID returns the application's process id (0 before Start).
func (m *Manager) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pid
}

// Start launches the command or adopts the process, then pins the lcore
// threads that exist already. Threads that appear later (EAL creates them
// during start-up) are picked up by Reconcile, which Run calls periodically.
func (m *Manager) Start(ctx context.Context) error {
	online, err := linuxsched.OnlineCPUs()
	if err != nil {
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}
	for i, cpu := range m.cfg.CPUs {
		if !slices.Contains(online, cpu) {
			return fmt.Errorf("dpdk %q: cpus[%d]: CPU %d is not online (online: %v)", m.cfg.Name, i, cpu, online)
		}
	}
	if m.yield == nil {
		y, err := coreyield.Setup(m.yieldPrefix, m.cfg.CPUs)
		if err != nil {
			return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
		}
		if y.Mechanism() == coreyield.SchedIdle {
			m.log.Warn("lent lcores yield by SCHED_IDLE alone: against CP in another session (autogroup) they keep about half of the core",
				"why", y.Reason())
		}
		if f := y.RTThrottle(); f < 1 {
			// The one warning about RT throttling: only DPDK lcores and OVS
			// PMDs busy-poll at SCHED_FIFO (taichi's loops are SCHED_FIFO
			// only while lent, and then yield on idle).
			m.log.Warn("RT throttling is on: a busy-polling SCHED_FIFO lcore is stopped for the rest of every RT period (with RT group scheduling the DP core groups also share the root's budget); on DP hosts set kernel.sched_rt_runtime_us=-1",
				"fifo_share", f, "dp_cores", len(m.cfg.CPUs))
		}
		m.mu.Lock()
		m.yield = y
		m.status.Yield, m.status.YieldDegraded = string(y.Mechanism()), y.Reason()
		m.mu.Unlock()
	}
	if len(m.guardArgv) > 0 && m.guard == nil {
		g, err := startGuard(m.guardArgv)
		if err != nil {
			return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
		}
		m.guard = g
	}
	if m.cfg.PID != 0 {
		if err := unix.Kill(m.cfg.PID, 0); err != nil {
			return fmt.Errorf("dpdk %q: pid: process %d: %w", m.cfg.Name, m.cfg.PID, err)
		}
		m.mu.Lock()
		m.pid = m.cfg.PID
		m.mu.Unlock()
		m.log.Info("adopted", "pid", m.cfg.PID)
	} else if pid, ok := m.findLaunched(); ok {
		if err := m.adoptLaunched(pid); err != nil {
			return err
		}
	} else if err := m.launch(); err != nil {
		return err
	}
	if m.cfg.OVSPMDMaxSleep > 0 && m.sleep == nil {
		sl, err := startOVSSleep(ovs.DB{Socket: m.cfg.OVSDB}, m.cfg.OVSPMDMaxSleep, m.log)
		if err != nil {
			return fmt.Errorf("dpdk %q: ovs_db: %w", m.cfg.Name, err)
		}
		m.mu.Lock()
		m.sleep = sl
		m.mu.Unlock()
	}
	if err := m.Reconcile(); err != nil && errors.Is(err, ErrNoProcess) {
		return err
	}
	return nil
}

func (m *Manager) launch() error {
	cmd := exec.Command(m.cfg.Command[0], m.cfg.Command[1:]...)
	// Discarded output goes to the null device itself: a pipe to this
	// process would close when the daemon dies, and the application's next
	// write (testpmd's periodic stats) would kill it with SIGPIPE.
	if m.output != io.Discard {
		cmd.Stdout, cmd.Stderr = m.output, m.output
	}
	// Own process group: a terminal's Ctrl-C to the daemon does not kill the
	// data plane. No parent-death signal either: DP keeps forwarding if the
	// daemon dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := cmd.Start
	if m.cfg.NetNS != "" {
		// The child is forked from the calling thread, so it inherits the
		// namespace netns.Do switched that thread into.
		start = func() error { return netns.Do(m.cfg.NetNS, cmd.Start) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("dpdk %q: command: %w", m.cfg.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		m.log.Info("application exited", "pid", cmd.Process.Pid, "err", err)
		close(exited)
	}()
	m.mu.Lock()
	m.pid, m.cmd, m.exited = cmd.Process.Pid, cmd, exited
	m.mu.Unlock()
	m.log.Info("launched", "pid", cmd.Process.Pid, "command", m.cfg.Command)
	if m.pidFile != "" {
		if err := writePIDFile(m.pidFile, cmd.Process.Pid); err != nil {
			m.log.Warn("pid file not written; a restarted daemon would launch a second copy", "path", m.pidFile, "err", err)
		}
	}
	return nil
}

// LaunchedHere reports whether this Manager started the application itself
// (not adopted by pid, not re-adopted from an earlier run).
func (m *Manager) LaunchedHere() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// Exited is closed when a launched application has exited (nil when adopted).
func (m *Manager) Exited() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exited
}

func (m *Manager) running(pid int) bool {
	if m.exited != nil {
		select {
		case <-m.exited:
			return false
		default:
		}
	}
	return pid > 0 && unix.Kill(pid, 0) == nil
}

func (m *Manager) ovsSleepOf() *ovsSleep {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sleep
}

// Run reconciles every ReconcileInterval and, with IdleDemote, lends the
// lcores' cores while their interfaces receive nothing. It returns when ctx
// ends or the application exits, with every lent core reclaimed.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if m.cfg.IdleDemote {
		ifaces, err := m.idleIfaces()
		if err != nil {
			return err
		}
		w := NewIdleWatcher(m, m.activityCounter(ctx, ifaces), IdleWatcherOptions{
			Interval: m.cfg.IdleInterval, IdleAfter: m.cfg.IdleAfter, Priority: m.cfg.Priority, Logger: m.log,
		})
		m.mu.Lock()
		w.forbidden.Store(m.lendingOff.Load())
		w.SetProbe(m.probe...)
		m.watcher = w
		m.mu.Unlock()
		wg.Go(func() { _ = w.Run(ctx) })
	}
	defer func() {
		cancel()
		wg.Wait()
		if err := m.promoteAll(); err != nil {
			m.log.Error("reclaiming lent cores", "err", err)
		}
	}()

	tick := time.NewTicker(m.cfg.ReconcileInterval)
	defer tick.Stop()
	exited := m.Exited()
	for {
		if err := m.Reconcile(); err != nil {
			if errors.Is(err, ErrNoProcess) {
				return err
			}
			m.log.Warn("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-exited:
			return fmt.Errorf("dpdk %q: %w", m.cfg.Name, ErrNoProcess)
		case <-tick.C:
		}
	}
}

// Release reclaims lent cores, ends the guard, and leaves the application
// running with its lcores where they would be without taichi: back in
// their original cpu cgroup, SCHED_OTHER (still on their CPUs); the DP
// core groups are removed. A daemon whose start failed must not stop what
// it did not start.
func (m *Manager) Release() error {
	errs := []error{m.promoteAll()}
	if m.guard != nil {
		// Later Demotes fail on the closed guard: nothing is lent after this.
		errs = append(errs, m.guard.close())
	}
	m.mu.Lock()
	m.released = true
	y, sl := m.yield, m.sleep
	m.sleep = nil
	m.mu.Unlock()
	if sl != nil {
		errs = append(errs, sl.stop()) // OVS's own setting back
	}
	if y != nil {
		m.schedMu.Lock()
		for _, tid := range m.LcoreTIDs() {
			errs = append(errs, y.Release(tid))
		}
		m.schedMu.Unlock()
		errs = append(errs, y.Remove())
	}
	return errors.Join(errs...)
}

// Stop releases (see Release); for an application taichi launched — in this
// run or an earlier one — it then sends SIGTERM, SIGKILL after StopTimeout,
// and removes its EAL runtime directory and pid file. An adopted
// application keeps running, pinned.
func (m *Manager) Stop() error {
	errs := []error{m.Release()}
	m.mu.Lock()
	pid, launched, exited := m.pid, m.cmd != nil || m.readopted, m.exited
	m.mu.Unlock()
	if !launched {
		return errors.Join(errs...)
	}
	select {
	case <-exited:
	default:
		_ = unix.Kill(pid, unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(m.cfg.StopTimeout):
			m.log.Warn("no exit after SIGTERM, killing", "pid", pid, "after", m.cfg.StopTimeout)
			_ = unix.Kill(pid, unix.SIGKILL)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("dpdk %q: pid %d survived SIGKILL", m.cfg.Name, pid))
				return errors.Join(errs...)
			}
		}
	}
	if m.pidFile != "" {
		os.Remove(m.pidFile)
	}
	errs = append(errs, RemoveRuntimeDir(FilePrefix(m.cfg.Command)))
	return errors.Join(errs...)
}

// RuntimeDir is where EAL keeps a file prefix's runtime files
// (/var/run/dpdk/<prefix> for root, as rte_eal_get_runtime_dir does).
func RuntimeDir(prefix string) string {
	base := "/var/run"
	if os.Geteuid() != 0 {
		base = os.Getenv("XDG_RUNTIME_DIR")
		if base == "" {
			base = "/tmp"
		}
	}
	return filepath.Join(base, "dpdk", prefix)
}

// RemoveRuntimeDir deletes a stopped application's EAL runtime directory.
func RemoveRuntimeDir(prefix string) error {
	if prefix == "" || prefix == "." || prefix == ".." || filepath.Base(prefix) != prefix {
		return fmt.Errorf("file prefix %q: not a plain name, not removing", prefix)
	}
	if err := os.RemoveAll(RuntimeDir(prefix)); err != nil {
		return fmt.Errorf("remove EAL runtime dir: %w", err)
	}
	return nil
}
