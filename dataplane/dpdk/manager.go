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
	"strings"
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

// ThreadStatus is one lcore thread as last verified.
type ThreadStatus struct {
	TID      int    `json:"tid"`
	Name     string `json:"name"`
	CPU      int    `json:"cpu"`      // configured DP core; -1 when cpus ran out
	Affinity []int  `json:"affinity"` // read back with sched_getaffinity
	LastCPU  int    `json:"last_cpu"` // where it last ran (/proc stat)
	Policy   string `json:"policy"`   // read back with sched_getattr
	Priority int    `json:"priority"`
	Nice     int    `json:"nice"`
	State    string `json:"state"`           // static, ready or lent (coreyield.State)
	Group    string `json:"group,omitempty"` // the DP core's cpu cgroup the thread lives in
	Demoted  bool   `json:"demoted"`         // lent to CP on purpose
	Pinned   bool   `json:"pinned"`          // affinity and class are what the state wants
	Error    string `json:"error,omitempty"`
}

// Status is what `taichi status` shows for one DPDK application.
type Status struct {
	Name          string         `json:"name"`
	PID           int            `json:"pid"`
	Launched      bool           `json:"launched"`
	Readopted     bool           `json:"readopted,omitempty"` // launched by an earlier run, adopted back
	Running       bool           `json:"running"`
	Threads       []ThreadStatus `json:"threads"`
	Reapplied     uint64         `json:"reapplied"` // corrections after the first pinning
	LastReconcile time.Time      `json:"last_reconcile"`
	Error         string         `json:"error,omitempty"`
	Idle          *IdleStats     `json:"idle,omitempty"`
	// Yield is how a lent lcore gives way (coreyield.Mechanism);
	// YieldDegraded says why it is not a per-core cpu group.
	Yield         string `json:"yield"`
	YieldDegraded string `json:"yield_degraded,omitempty"`
	// OVSMaxSleep is OVS's pmd-maxsleep as taichi last wrote it
	// (ovs_pmd_maxsleep set), or nil.
	OVSMaxSleep *OVSMaxSleepStatus `json:"ovs_maxsleep,omitempty"`
}

// OVSMaxSleepStatus reports the governing of OVS's PMD sleep.
type OVSMaxSleepStatus struct {
	AppliedUs int64  `json:"applied_us"` // -1 before the first write
	Writes    int    `json:"writes"`
	Error     string `json:"error,omitempty"`
}

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

// Reconcile finds the lcore threads, gives new ones a DP core, and makes
// every thread's affinity and policy what they should be, re-applying
// whatever drifted (a cpuset write, another tool). It returns the problems
// found; threads that could not be fixed are reported in Status too.
func (m *Manager) Reconcile() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pid := m.pid
	m.status.Name, m.status.PID, m.status.Launched = m.cfg.Name, pid, m.cmd != nil || m.readopted
	m.status.Readopted = m.readopted
	m.status.LastReconcile = time.Now()
	if !m.running(pid) {
		m.status.Running = false
		m.status.Threads = nil
		err := fmt.Errorf("dpdk %q: process %d: %w", m.cfg.Name, pid, ErrNoProcess)
		m.status.Error = err.Error()
		return err
	}
	m.status.Running = true
	if m.released || m.yield == nil {
		return nil
	}
	threads, err := listThreads(pid, m.re)
	if err != nil {
		m.status.Error = err.Error()
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}

	// Forget threads that are gone; hand free cores to new ones in order.
	live := map[int]bool{}
	for _, t := range threads {
		live[t.TID] = true
	}
	for tid := range m.assign {
		if !live[tid] {
			delete(m.assign, tid)
			delete(m.applied, tid)
			m.schedMu.Lock()
			delete(m.demoted, tid)
			m.schedMu.Unlock()
		}
	}
	used := map[int]bool{}
	for _, cpu := range m.assign {
		used[cpu] = true
	}
	for _, t := range threads {
		if _, ok := m.assign[t.TID]; ok {
			continue
		}
		for _, cpu := range m.cfg.CPUs {
			if !used[cpu] {
				m.assign[t.TID] = cpu
				used[cpu] = true
				break
			}
		}
	}

	snapshot := make(map[int]int, len(m.assign))
	for tid, cpu := range m.assign {
		snapshot[tid] = cpu
	}
	m.lcores.Store(&snapshot)

	var errs []error
	out := make([]ThreadStatus, 0, len(threads))
	for _, t := range threads {
		ts, err := m.apply(pid, t)
		if err != nil {
			ts.Error = err.Error()
			errs = append(errs, err)
		}
		out = append(out, ts)
	}
	m.status.Threads = out
	m.status.Reapplied = m.reapplied
	err = errors.Join(errs...)
	if err != nil {
		m.status.Error = err.Error()
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}
	m.status.Error = ""
	return nil
}

// apply brings one thread to its assigned core and policy and reads back
// the result. Called with m.mu held.
func (m *Manager) apply(pid int, t linuxsched.Thread) (ThreadStatus, error) {
	ts := ThreadStatus{TID: t.TID, Name: t.Comm, CPU: -1}
	cpu, ok := m.assign[t.TID]
	if !ok {
		ts.Affinity, ts.LastCPU, ts.Policy, ts.Priority = t.Affinity, t.LastCPU, PolicyName(t.Class.Policy), t.Class.Priority
		return ts, fmt.Errorf("lcore %s (tid %d): no DP core left (cpus has %d entries)", t.Comm, t.TID, len(m.cfg.CPUs))
	}
	ts.CPU = cpu
	first := !m.applied[t.TID]
	changed := false
	var errs []error

	// Cgroups first: affinity is bounded by the cpuset, and the class a
	// state wants needs the thread in its core's cpu group.
	ctrls := []string{"cpuset"}
	if m.yield.Mechanism() == coreyield.SchedIdle {
		ctrls = append(ctrls, "cpu") // FIFO needs RT runtime: the root has it
	}
	moved, err := toRootCgroups(pid, t.TID, ctrls...)
	if err != nil {
		errs = append(errs, err)
	}
	if from, err := m.yield.Place(t.TID, cpu); err != nil {
		errs = append(errs, err)
	} else if from != "" {
		moved = append(moved, "cpu:"+from)
	}
	if len(moved) > 0 {
		changed = true
		if !first {
			m.log.Warn("lcore thread had left its cgroups; moved back", "tid", t.TID, "from", moved)
		}
	}
	if !slices.Equal(t.Affinity, []int{cpu}) {
		changed = true
		if err := linuxsched.Pin(t.TID, cpu); err != nil {
			errs = append(errs, err)
		}
	}

	// Class under schedMu, so a concurrent Promote/Demote is never undone.
	m.schedMu.Lock()
	st := m.stateLocked(t.TID)
	if drift, err := m.yield.Apply(t.TID, cpu, st, m.cfg.Priority); err != nil {
		errs = append(errs, err)
	} else if drift {
		changed = true
	}
	// Read back under schedMu too: a lend or reclaim in between would
	// look like drift.
	now, rerr := linuxsched.ReadThread(pid, t.TID)
	m.schedMu.Unlock()

	// The status reports what the kernel says, not what we asked.
	if rerr != nil {
		errs = append(errs, rerr)
		now = t
	}
	want := m.yield.Mechanism().Class(st, m.cfg.Priority)
	m.fillThreadStatus(&ts, now.Class, st)
	ts.Affinity, ts.LastCPU = now.Affinity, now.LastCPU
	ts.Pinned = slices.Equal(now.Affinity, []int{cpu}) && now.Class == want
	if rerr == nil && !ts.Pinned && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("lcore %s (tid %d): read back affinity %v %s, want CPU %d %s", t.Comm, t.TID, now.Affinity, now.Class, cpu, want))
	}
	if first {
		m.applied[t.TID] = true
		m.log.Info("pinned lcore", "tid", t.TID, "name", t.Comm, "cpu", cpu, "priority", m.cfg.Priority, "ok", ts.Pinned)
	} else if changed {
		m.reapplied++
		m.log.Warn("re-applied lcore pinning", "tid", t.TID, "name", t.Comm, "cpu", cpu)
	}
	return ts, errors.Join(errs...)
}

// Status returns the last verified state (see Reconcile).
func (m *Manager) Status() Status {
	m.mu.Lock()
	s := m.status
	s.Threads = slices.Clone(s.Threads)
	w := m.watcher
	m.mu.Unlock()
	// Lending changes classes between reconciles: report them live.
	m.schedMu.Lock()
	for i := range s.Threads {
		ts := &s.Threads[i]
		if ts.CPU < 0 || m.yield == nil {
			continue
		}
		st := m.stateLocked(ts.TID)
		if c, err := linuxsched.Get(ts.TID); err == nil {
			m.fillThreadStatus(ts, c, st)
			ts.Pinned = slices.Equal(ts.Affinity, []int{ts.CPU}) && c == m.yield.Mechanism().Class(st, m.cfg.Priority)
		}
	}
	m.schedMu.Unlock()
	if w != nil {
		st := w.Stats()
		s.Idle = &st
	}
	if sl := m.ovsSleepOf(); sl != nil {
		applied, n, lastErr := sl.state()
		us := int64(-1)
		if applied >= 0 {
			us = applied.Microseconds()
		}
		s.OVSMaxSleep = &OVSMaxSleepStatus{AppliedUs: us, Writes: n, Error: lastErr}
	}
	return s
}

// SetLending follows the lending policy: off, idle lcores are never
// demoted, any lent one is reclaimed before SetLending returns, and every
// lcore becomes static (SCHED_OTHER at the top weight: a core CP never gets
// needs no real-time class, and RT throttling cannot stop it); on, lcores
// are SCHED_FIFO and idle demotion works as configured.
func (m *Manager) SetLending(on bool) error {
	m.mu.Lock()
	m.lendingOff.Store(!on)
	w, sl := m.watcher, m.sleep
	m.mu.Unlock()
	var errs []error
	if w != nil {
		errs = append(errs, w.SetAllowed(on))
	}
	if sl != nil {
		sl.set(on) // written in the background; reclaiming never waits for OVS
	}
	errs = append(errs, m.applyStates())
	return errors.Join(errs...)
}

// stateLocked is what tid's core is doing. Called with schedMu held.
func (m *Manager) stateLocked(tid int) coreyield.State {
	switch {
	case m.demoted[tid]:
		return coreyield.Lent
	case m.lendingOff.Load():
		return coreyield.Static
	}
	return coreyield.Ready
}

// fillThreadStatus reports class c and state st in ts.
func (m *Manager) fillThreadStatus(ts *ThreadStatus, c linuxsched.Class, st coreyield.State) {
	ts.Policy, ts.Priority, ts.Nice = linuxsched.PolicyName(c.Policy), c.Priority, c.Nice
	ts.State, ts.Demoted = st.String(), st == coreyield.Lent
	if g, ok := m.yield.Group(ts.CPU); ok {
		ts.Group = g.Dir
	}
}

// applyStates gives every lcore the class and group state its state wants.
func (m *Manager) applyStates() error {
	p := m.lcores.Load()
	if p == nil || m.yield == nil {
		return nil
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	var errs []error
	for tid, cpu := range *p {
		if _, err := m.yield.Apply(tid, cpu, m.stateLocked(tid), m.cfg.Priority); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dpdk %q: %w", m.cfg.Name, err)
	}
	return nil
}

// LcoreTIDs returns the managed lcore threads that have a DP core.
func (m *Manager) LcoreTIDs() []int {
	p := m.lcores.Load()
	if p == nil {
		return nil
	}
	tids := make([]int, 0, len(*p))
	for tid := range *p {
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	return tids
}

// lcoreCPU is tid's DP core (ok false for a thread that is not a managed lcore).
func (m *Manager) lcoreCPU(tid int) (int, bool) {
	p := m.lcores.Load()
	if p == nil || m.yield == nil {
		return 0, false
	}
	cpu, ok := (*p)[tid]
	return cpu, ok
}

// Demote lends tid's core to CP: the core's group goes idle and the thread
// drops to SCHED_OTHER in it (SCHED_IDLE where there is no group). It keeps
// its affinity, so it still polls, but only when CP leaves the core idle.
func (m *Manager) Demote(tid int) error {
	cpu, ok := m.lcoreCPU(tid)
	if !ok {
		return fmt.Errorf("dpdk %q: demote tid %d: %w", m.cfg.Name, tid, ErrNotLcore)
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	// Tell the guard first: a crash right after lending must find the record.
	if m.guard != nil {
		group := ""
		if g, ok := m.yield.Group(cpu); ok {
			group = g.Dir
		}
		if err := m.guard.send("%s", lendRecord(tid, m.cfg.Priority, group)); err != nil {
			return fmt.Errorf("dpdk %q: demote tid %d: guard unreachable, not lending: %w", m.cfg.Name, tid, err)
		}
	}
	if err := m.yield.Lend(tid, cpu); err != nil {
		if m.guard != nil {
			_ = m.guard.send("reclaim %d", tid)
		}
		return fmt.Errorf("dpdk %q: demote: %w", m.cfg.Name, err)
	}
	m.demoted[tid] = true
	return nil
}

// Promote reclaims tid's core: one sched_setattr back to SCHED_FIFO, which
// preempts whatever CP task runs there at once; the group's idleness is
// cleared after. With lending off the thread goes to the static class.
func (m *Manager) Promote(tid int) error {
	cpu, ok := m.lcoreCPU(tid)
	if !ok {
		return fmt.Errorf("dpdk %q: promote tid %d: %w", m.cfg.Name, tid, ErrNotLcore)
	}
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	var err error
	if m.lendingOff.Load() {
		_, err = m.yield.Apply(tid, cpu, coreyield.Static, m.cfg.Priority)
	} else {
		err = m.yield.Reclaim(tid, cpu, m.cfg.Priority)
	}
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			delete(m.demoted, tid) // the thread is gone: nothing left to reclaim
		}
		return fmt.Errorf("dpdk %q: promote: %w", m.cfg.Name, err)
	}
	delete(m.demoted, tid)
	if m.guard != nil {
		_ = m.guard.send("reclaim %d", tid) // after the reclaim: off the hot path
	}
	return nil
}

func (m *Manager) ovsSleepOf() *ovsSleep {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sleep
}

// promoteAll gives every lent core back; used on shutdown and on errors.
func (m *Manager) promoteAll() error {
	m.schedMu.Lock()
	tids := make([]int, 0, len(m.demoted))
	for tid := range m.demoted {
		tids = append(tids, tid)
	}
	m.schedMu.Unlock()
	var errs []error
	for _, tid := range tids {
		if err := m.Promote(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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

// SetProbe hands the idle watcher the workload probe's warnings for the
// application's DP cores (the policy uses the probe), or takes them away
// (none): a lent core is then reclaimed at the next counter poll only.
func (m *Manager) SetProbe(sources ...WakeSource) {
	m.mu.Lock()
	m.probe = slices.Clone(sources)
	w := m.watcher
	m.mu.Unlock()
	if w != nil {
		w.SetProbe(sources...)
	}
}

// ovsCounterPeriod is how often OVS's PMD counters are read: a read is a
// round trip through ovs-vswitchd's main thread (~150 µs when it runs at
// once), while the interface counters are read every idle interval.
const ovsCounterPeriod = 10 * time.Millisecond

// ovsCounterStale is how old the last good PMD counter read may be before
// the watcher treats the counter as unreadable (and stops lending).
const ovsCounterStale = 2 * time.Second

// activityCounter is what the idle watcher watches: the interfaces'
// rx_packets and, for Open vSwitch, the packets its PMDs on the
// application's cores received (every port, not only the watched
// interfaces). The PMD counters are read by a goroutine of their own until
// ctx ends: ovs-vswitchd's main thread shares the CP cores with CP work and
// may answer late (seconds, under a CP backlog), and the watcher must
// never wait for it while a core is lent.
func (m *Manager) activityCounter(ctx context.Context, ifaces []string) CounterFunc {
	netdev := NetDevCounter(m.PID(), ifaces...)
	if m.cfg.OVSUnixctl == "" {
		return netdev
	}
	pmds := newPolledCounter(ctx, ovs.NewClient(m.cfg.OVSUnixctl).PMDPacketsCounter(m.cfg.CPUs), ovsCounterPeriod, ovsCounterStale)
	return func() (uint64, error) {
		a, err := netdev()
		if err != nil {
			return 0, err
		}
		b, err := pmds()
		if err != nil {
			return 0, fmt.Errorf("ovs pmd counters: %w", err)
		}
		return a + b, nil
	}
}

// newPolledCounter reads f every period in a goroutine until ctx ends and
// returns its last value without waiting; an error, or no good read for
// longer than stale, is returned as an error.
func newPolledCounter(ctx context.Context, f CounterFunc, period, stale time.Duration) CounterFunc {
	type reading struct {
		v   uint64
		err error
		at  time.Time
	}
	var last atomic.Pointer[reading]
	read := func() {
		v, err := f()
		r := &reading{v: v, err: err, at: time.Now()}
		if err != nil {
			if p := last.Load(); p != nil {
				r.v, r.at = p.v, p.at // keep the last good value's age
			}
		}
		last.Store(r)
	}
	read()
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() (uint64, error) {
		r := last.Load()
		switch {
		case r.err != nil:
			return 0, r.err
		case time.Since(r.at) > stale:
			return 0, fmt.Errorf("no answer for %v", time.Since(r.at).Round(time.Millisecond))
		}
		return r.v, nil
	}
}

// idleIfaces returns the interfaces whose counters show the lcores' work:
// the configured ones, or the --vdev iface= arguments of the command line
// (read from /proc/PID/cmdline for an adopted process).
func (m *Manager) idleIfaces() ([]string, error) {
	if len(m.cfg.IdleIfaces) > 0 {
		return m.cfg.IdleIfaces, nil
	}
	argv := m.cfg.Command
	if len(argv) == 0 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID()))
		if err != nil {
			return nil, fmt.Errorf("dpdk %q: idle_ifaces: reading the command line: %w", m.cfg.Name, err)
		}
		argv = strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	}
	ifaces := VdevIfaces(argv)
	if len(ifaces) == 0 {
		return nil, fmt.Errorf("dpdk %q: idle_ifaces: none given and no --vdev ...,iface=X on the command line", m.cfg.Name)
	}
	return ifaces, nil
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
