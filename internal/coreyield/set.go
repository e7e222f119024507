package coreyield

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/safename"
)

// Set is the yield groups of one data-plane application, one per DP core.
type Set struct {
	mech   Mechanism
	reason string // why the mechanism is degraded
	root   string // v1 cpu mount or the cgroup2 mount ("" with SchedIdle)
	v2     bool   // the groups are threaded children of the cgroup2 root
	groups map[int]Group

	// rtShare is each group's RT runtime in millionths of its period (0
	// without RT group scheduling).
	rtShare int64

	mu   sync.Mutex
	home map[int]string // tid -> its cpu cgroup before it was moved in
	// On cgroup2 whole processes move: procHome is where each process was
	// before it joined the root, placed the process of each placed thread.
	procHome map[int]string
	placed   map[int]int
}

// Setup picks the mechanism and creates (or re-uses) one root-level cpu
// group per CPU, named prefix-dp<cpu>, with RT budget for a SCHED_FIFO
// thread. When groups cannot be had it returns a SchedIdle set and says
// why in Reason: the caller keeps working, degraded. An error means bad
// input.
func Setup(prefix string, cpus []int) (*Set, error) {
	if err := safename.Check(prefix); err != nil {
		return nil, fmt.Errorf("yield group prefix: %w", err)
	}
	mounts, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		s := newSet()
		s.reason = err.Error()
		return s, nil
	}
	return setupOn(mounts, prefix, cpus), nil
}

// NoGroupsReason is Reason on a host with neither a v1 cpu hierarchy nor
// a cgroup2 mount.
const NoGroupsReason = "no cgroup v1 cpu hierarchy and no cgroup2 mount"

// GroupsPossible reports whether this host has a cpu controller the
// per-core groups can live in (v1, or cgroup2 offering cpu at its root):
// where it does, a SchedIdle set is a failure to make them, not a
// property of the host.
func GroupsPossible() bool {
	m, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		return false
	}
	if m.V1Path("cpu") != "" {
		return true
	}
	return m.Unified != "" && hasController(m.Unified, "cpu")
}

// hasController reports whether the cgroup2 directory dir offers ctrl.
func hasController(dir, ctrl string) bool {
	ctrls, err := linuxsched.UnifiedControllers(dir)
	return err == nil && slices.Contains(ctrls, ctrl)
}

func newSet() *Set {
	return &Set{mech: SchedIdle, groups: map[int]Group{}, home: map[int]string{},
		procHome: map[int]string{}, placed: map[int]int{}}
}

// setupOn is Setup on the given mounts (tests force the fallback with
// none, or the cgroup2 path by leaving v1 out).
func setupOn(mounts linuxsched.CgroupMounts, prefix string, cpus []int) *Set {
	s := newSet()
	root, v2 := mounts.V1Path("cpu"), false
	if root == "" && mounts.Unified != "" {
		root, v2 = mounts.Unified, true
	}
	if root == "" {
		s.reason = NoGroupsReason
		return s
	}
	build := s.makeGroups
	if v2 {
		build = s.makeThreadedGroups
	}
	if err := build(root, prefix, cpus); err != nil {
		s.reason = err.Error()
		_ = s.Remove()
		s.groups = map[int]Group{}
		return s
	}
	s.root, s.v2 = root, v2
	s.mech = CgroupShares
	for _, g := range s.groups {
		if g.HasIdle {
			s.mech = CgroupIdle
		}
	}
	return s
}

// GroupName is the cpu group of DP core cpu.
func GroupName(prefix string, cpu int) string { return prefix + "-dp" + strconv.Itoa(cpu) }

func (s *Set) makeGroups(root, prefix string, cpus []int) error {
	ours := map[string]bool{}
	for _, cpu := range cpus {
		ours[GroupName(prefix, cpu)] = true
	}
	share, rtGroups, err := rtBudget(root, ours, len(cpus))
	if err != nil {
		return err
	}
	if rtGroups {
		s.rtShare = share
	}
	for _, cpu := range cpus {
		dir := filepath.Join(root, GroupName(prefix, cpu))
		if err := linuxsched.MakeCgroup(dir); err != nil {
			return err
		}
		g := OpenGroup(dir)
		s.groups[cpu] = g
		if rtGroups {
			_, period, err := readRT(dir)
			if err != nil {
				return err
			}
			runtime := share * period / 1_000_000
			if err := linuxsched.WriteCgroupFile(filepath.Join(dir, "cpu.rt_runtime_us"), strconv.FormatInt(runtime, 10)); err != nil {
				return fmt.Errorf("RT budget for a SCHED_FIFO thread: %w", err)
			}
		}
		if err := g.prepare(); err != nil {
			return err
		}
	}
	return nil
}

// prepare brings a new group to "not lent": the weight stays heavy in
// every state where cpu.idle alone lends.
func (g Group) prepare() error {
	if g.HasIdle {
		if err := g.setHeavy(); err != nil {
			return err
		}
	}
	return g.SetLent(false)
}

// makeThreadedGroups makes the per-core groups as threaded children of the
// cgroup2 root (see the package comment), enabling the cpu controller for
// the root's children first.
func (s *Set) makeThreadedGroups(root, prefix string, cpus []int) error {
	if !hasController(root, "cpu") {
		return fmt.Errorf("cgroup2 at %s offers no cpu controller (is it bound to a v1 hierarchy?)", root)
	}
	if err := linuxsched.EnableControllers(root, "cpu"); err != nil {
		return fmt.Errorf("enable the cpu controller for the cgroup2 root's children: %w", err)
	}
	for _, cpu := range cpus {
		dir := filepath.Join(root, GroupName(prefix, cpu))
		if err := linuxsched.MakeCgroup(dir); err != nil {
			return err
		}
		typ, err := linuxsched.ReadCgroupFile(filepath.Join(dir, "cgroup.type"))
		if err != nil {
			return err
		}
		if typ != "threaded" {
			if err := linuxsched.WriteCgroupFile(filepath.Join(dir, "cgroup.type"), "threaded"); err != nil {
				return fmt.Errorf("make %s a threaded cgroup (one DP thread per core group): %w", dir, err)
			}
		}
		g := OpenGroup(dir)
		s.groups[cpu] = g
		if err := g.prepare(); err != nil {
			return err
		}
	}
	return nil
}

// rtBudget is the RT share, in millionths of its period, each of n new
// groups under root gets: an equal part of what the root has left over its
// other children (the kernel wants children's runtime/period ratios to fit
// under the parent's). rtGroups is false without RT group scheduling.
func rtBudget(root string, ours map[string]bool, n int) (share int64, rtGroups bool, err error) {
	rootRT, rootPeriod, err := readRT(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	ratio := func(rt, period int64) int64 { return rt * 1_000_000 / period }
	free := int64(1_000_000)
	if rootRT >= 0 {
		free = ratio(rootRT, rootPeriod)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return 0, false, err
	}
	for _, e := range ents {
		if !e.IsDir() || ours[e.Name()] {
			continue
		}
		rt, period, err := readRT(filepath.Join(root, e.Name()))
		if err != nil || period <= 0 {
			continue
		}
		if rt < 0 {
			rt = period
		}
		free -= ratio(rt, period)
	}
	// Stay a little below the share so rounding never makes the kernel
	// refuse it.
	share = free/int64(max(n, 1)) - 1000
	if share <= 0 {
		return 0, true, fmt.Errorf("no RT budget left under %s for a SCHED_FIFO thread (other groups hold it all)", root)
	}
	return share, true, nil
}

func readRT(dir string) (runtime, period int64, err error) {
	rb, err := os.ReadFile(filepath.Join(dir, "cpu.rt_runtime_us"))
	if err != nil {
		return 0, 0, err
	}
	pb, err := os.ReadFile(filepath.Join(dir, "cpu.rt_period_us"))
	if err != nil {
		return 0, 0, err
	}
	runtime, err1 := strconv.ParseInt(strings.TrimSpace(string(rb)), 10, 64)
	period, err2 := strconv.ParseInt(strings.TrimSpace(string(pb)), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", dir, err)
	}
	return runtime, period, nil
}

// Mechanism is the yield mechanism in use.
func (s *Set) Mechanism() Mechanism { return s.mech }

// RTThrottle is the fraction of its core a SCHED_FIFO thread in a group
// may use per RT period while the kernel's RT throttling is on
// (kernel.sched_rt_runtime_us >= 0); 1 when nothing limits it. With RT
// group scheduling the groups share the root's budget, so with N DP cores
// each gets about 1/N of it; without, the global share limits it.
func (s *Set) RTThrottle() float64 {
	t, err := linuxsched.ReadRTThrottling()
	if err != nil || !t.On() {
		return 1
	}
	if s.rtShare <= 0 {
		return t.Share()
	}
	return float64(s.rtShare) / 1e6
}

// Reason says why the mechanism is degraded ("" when it is not).
func (s *Set) Reason() string { return s.reason }

// Group is DP core cpu's group (ok false with SchedIdle or another CPU).
func (s *Set) Group(cpu int) (Group, bool) {
	g, ok := s.groups[cpu]
	return g, ok
}

// Place moves thread tid of process pid into cpu's group when it is
// elsewhere, keeping where it came from for Release. It reports the cgroup
// it moved the thread from ("" when it did not move it). On cgroup2 the
// process first joins the root cgroup, the domain the groups belong to.
func (s *Set) Place(pid, tid, cpu int) (from string, err error) {
	g, ok := s.groups[cpu]
	if !ok {
		return "", nil
	}
	cur, err := s.CgroupOf(tid)
	if err != nil {
		return "", err
	}
	if cur == "/"+filepath.Base(g.Dir) {
		return "", nil
	}
	if s.v2 {
		return cur, s.placeThreaded(pid, tid, cur, g)
	}
	s.mu.Lock()
	if _, ok := s.home[tid]; !ok {
		s.home[tid] = cur
	}
	s.mu.Unlock()
	if err := linuxsched.MoveThread(g.Dir, tid); err != nil {
		return "", err
	}
	return cur, nil
}

// CgroupOf is thread tid's path in the hierarchy the groups live in.
func (s *Set) CgroupOf(tid int) (string, error) {
	cg, err := linuxsched.TaskCgroups(0, tid)
	if err != nil {
		return "", err
	}
	if s.v2 {
		return cg.Unified(), nil
	}
	return cg.V1("cpu"), nil
}

// ours reports whether the cgroup path (inside the hierarchy) is one of
// the set's groups.
func (s *Set) ours(path string) bool {
	for _, g := range s.groups {
		if path == "/"+filepath.Base(g.Dir) {
			return true
		}
	}
	return false
}

// placeThreaded moves a process outside the root into it, then its thread
// into the threaded group g.
func (s *Set) placeThreaded(pid, tid int, cur string, g Group) error {
	if cur != "/" && !s.ours(cur) {
		if err := keepingAffinity(pid, func() error { return linuxsched.MoveProcess(s.root, pid) }); err != nil {
			return fmt.Errorf("move process %d to the cgroup2 root, the domain of the per-core groups: %w", pid, err)
		}
		s.mu.Lock()
		if _, ok := s.procHome[pid]; !ok {
			s.procHome[pid] = cur
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.placed[tid] = pid
	s.mu.Unlock()
	return keepingAffinity(0, func() error { return linuxsched.MoveThreadV2(g.Dir, tid) }, tid)
}

// keepingAffinity runs move, a cgroup2 move of process pid's threads (or
// of the threads tids), and gives each thread the CPU affinity it had.
// Joining a cgroup2 cgroup joins its cpuset too, and kernels before 6.2
// then reset a thread's affinity to the cpuset's CPUs: a DP thread pinned
// to its core, or a DPDK main thread pinned to a CP core, would wander.
func keepingAffinity(pid int, move func() error, tids ...int) error {
	if pid != 0 {
		threads, err := linuxsched.Threads(pid)
		if err != nil {
			return err
		}
		for _, t := range threads {
			tids = append(tids, t.TID)
		}
	}
	had := map[int][]int{}
	for _, tid := range tids {
		if cpus, err := linuxsched.Affinity(tid); err == nil {
			had[tid] = cpus
		}
	}
	if err := move(); err != nil {
		return err
	}
	var errs []error
	for tid, cpus := range had {
		if now, err := linuxsched.Affinity(tid); err == nil && slices.Equal(now, cpus) {
			continue
		}
		if err := linuxsched.Pin(tid, cpus...); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Apply brings thread tid on cpu to state s: the group's idleness and the
// thread's class, in the order that never leaves a real-time thread in an
// idle group or a lent one heavy. It reports whether anything had drifted.
func (s *Set) Apply(tid, cpu int, st State, prio int) (changed bool, err error) {
	want := s.mech.Class(st, prio)
	g, grouped := s.groups[cpu]
	fixGroup := func() error {
		if !grouped {
			return nil
		}
		lent, err := g.IsLent()
		if err != nil || lent != (st == Lent) {
			changed = true
			return g.SetLent(st == Lent)
		}
		return nil
	}
	fixClass := func() error {
		cur, err := linuxsched.Get(tid)
		if err != nil {
			return err
		}
		if cur != want {
			changed = true
			return linuxsched.Apply(tid, want)
		}
		return nil
	}
	if st == Lent {
		err = errors.Join(fixGroup(), fixClass())
	} else {
		err = errors.Join(fixClass(), fixGroup())
	}
	return changed, err
}

// Lend gives cpu's core to CP: the group goes idle, then the thread drops
// its real-time class.
func (s *Set) Lend(tid, cpu int) error {
	if g, ok := s.groups[cpu]; ok {
		if err := g.SetLent(true); err != nil {
			return err
		}
	}
	if err := linuxsched.Set(tid, s.mech.Class(Lent, 0)); err != nil {
		if g, ok := s.groups[cpu]; ok {
			_ = g.SetLent(false)
		}
		return err
	}
	return nil
}

// Reclaim takes cpu's core back: one sched_setattr to SCHED_FIFO preempts
// CP at once; the group's idleness is cleared afterwards.
func (s *Set) Reclaim(tid, cpu, prio int) error {
	if err := linuxsched.Set(tid, linuxsched.FIFO(prio)); err != nil {
		return err
	}
	if g, ok := s.groups[cpu]; ok {
		return g.SetLent(false)
	}
	return nil
}

// Release puts thread tid back where it would be without taichi: in the
// cpu cgroup it came from (the root when unknown or gone) and
// SCHED_OTHER. On cgroup2 the thread goes back to the root, and its
// process to where it came from once none of its threads is placed. A
// thread already gone is not an error.
func (s *Set) Release(tid int) error {
	var errs []error
	// The class first: a real-time thread may not enter a group without
	// RT budget.
	if err := linuxsched.Set(tid, linuxsched.Other(0)); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, err)
	}
	switch {
	case s.root == "":
	case s.v2:
		errs = append(errs, s.releaseThreaded(tid))
	default:
		s.mu.Lock()
		home, ok := s.home[tid]
		delete(s.home, tid)
		s.mu.Unlock()
		dir := s.root
		if ok && home != "" {
			dir = filepath.Join(s.root, home)
		}
		err := linuxsched.MoveThread(dir, tid)
		if err != nil && dir != s.root && !errors.Is(err, unix.ESRCH) {
			err = linuxsched.MoveThread(s.root, tid) // its old group is gone
		}
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Set) releaseThreaded(tid int) error {
	s.mu.Lock()
	pid, placed := s.placed[tid]
	delete(s.placed, tid)
	last := placed
	for _, p := range s.placed {
		if p == pid {
			last = false
		}
	}
	home := s.procHome[pid]
	if last {
		delete(s.procHome, pid)
	}
	s.mu.Unlock()
	err := keepingAffinity(0, func() error { return linuxsched.MoveThreadV2(s.root, tid) }, tid)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	if !last || home == "" || home == "/" {
		return nil
	}
	err = keepingAffinity(pid, func() error { return linuxsched.MoveProcess(filepath.Join(s.root, home), pid) })
	if errors.Is(err, unix.ESRCH) || errors.Is(err, os.ErrNotExist) {
		return nil // the process or its old cgroup is gone: the root keeps it
	}
	return err
}

// Remove deletes the groups; threads still in one keep it (and an error
// says so).
func (s *Set) Remove() error {
	var errs []error
	for _, g := range s.groups {
		// Hand the RT budget back first: a removed group stays among its
		// parent's children until the kernel frees it, asynchronously, and
		// its budget would make the next group's write fail meanwhile.
		_ = linuxsched.WriteCgroupFile(filepath.Join(g.Dir, "cpu.rt_runtime_us"), "0")
		if err := os.Remove(g.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cpu group: %w", err))
		}
	}
	return errors.Join(errs...)
}
