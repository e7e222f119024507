package vcpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/safename"
)

// cgroupPool is the cgroup backend of Pool.
type cgroupPool struct {
	opts Options
	h    hierarchy
	// confined is the sibling group of confined processes (Confine): same
	// CP class, CPU set = the CP cores, never touched by Lend/Reclaim.
	confined hierarchy
	proc     procfs.FS
	self     int

	// mu serialises state changes and cpuset writes, so that the order of
	// writes is the order of Lend/Reclaim calls.
	mu            sync.Mutex
	started       bool
	closed        bool
	lent          map[int]bool
	writer        *cpusetWriter
	perThreadIdle bool

	lastWrite atomic.Int64 // ns spent in the last cpuset write, for benchmarks
}

// NewCgroup validates opts, detects the cgroup layout and returns a pool
// that changes nothing until Start.
func NewCgroup(opts Options) (Pool, error) {
	return newCgroupPool(opts)
}

func newCgroupPool(opts Options) (*cgroupPool, error) {
	opts = withDefaults(opts)
	online, err := linuxsched.OnlineCPUs()
	if err != nil {
		return nil, err
	}
	if err := validateOptions(opts, online); err != nil {
		return nil, err
	}
	var m Mounts
	if opts.Mounts != nil {
		m = *opts.Mounts
	} else if m, err = DetectMounts(); err != nil {
		return nil, err
	}
	version, err := m.choose()
	if err != nil {
		return nil, err
	}
	h, confined := newHierarchy(version, m, opts.Name), newHierarchy(version, m, ConfinedName(opts.Name))
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("vcpu: open /proc: %w", err)
	}
	return &cgroupPool{opts: opts, h: h, confined: confined, proc: fs, self: selfPID(), lent: map[int]bool{}}, nil
}

func newHierarchy(version string, m Mounts, name string) hierarchy {
	if version == "v2" {
		return newCgroupV2(m, name)
	}
	return newCgroupV1(m, name)
}

// ConfinedName is the name of a pool's group of confined processes: a
// sibling of the pool's group, so that it can hold processes on cgroup v2
// too (no processes in inner groups) and the pool's cpuset writes never
// reach it.
func ConfinedName(pool string) string { return pool + confinedSuffix }

const confinedSuffix = "-confined"

func selfPID() int { return os.Getpid() }

func withDefaults(o Options) Options {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Class == "" {
		o.Class = DefaultClass
	}
	if o.Weight == 0 {
		o.Weight = DefaultWeight
	}
	if o.WriterPriority == 0 {
		o.WriterPriority = DefaultWriterPriority
	}
	o.CPCores = slices.Clone(o.CPCores)
	o.DPCores = slices.Clone(o.DPCores)
	slices.Sort(o.CPCores)
	slices.Sort(o.DPCores)
	return o
}

// Validate checks the fields that do not depend on the host (name,
// class, weight, writer_priority), each problem a *fielderr.Error; the
// config validates its vcpu keys with it.
func (o Options) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, fielderr.New(key, format, args...)) }
	if err := safename.Check(o.Name); err != nil {
		bad("name", "%v", err)
	}
	switch o.Class {
	case ClassIdle, ClassLowWeight:
	default:
		bad("class", "%q is not %q or %q", o.Class, ClassIdle, ClassLowWeight)
	}
	if o.Weight < MinWeight || o.Weight > MaxWeight {
		bad("weight", "%d is outside %d..%d", o.Weight, MinWeight, MaxWeight)
	}
	if o.WriterPriority > 0 {
		// 0 and below: a SCHED_OTHER writer.
		if err := linuxsched.CheckFIFOPriority(o.WriterPriority); err != nil {
			bad("writer_priority", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// validateOptions names the offending field for every problem.
func validateOptions(o Options, online []int) error {
	var errs []error
	if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(o.CPCores) == 0 {
		errs = append(errs, errors.New("cp_cores: empty: CP needs at least one core"))
	}
	for _, f := range []struct {
		field string
		cpus  []int
	}{{"cp_cores", o.CPCores}, {"dp_cores", o.DPCores}} {
		field, cpus := f.field, f.cpus
		for i, c := range cpus {
			if i > 0 && cpus[i-1] == c {
				errs = append(errs, fmt.Errorf("%s: CPU %d listed twice", field, c))
			}
			if !slices.Contains(online, c) {
				errs = append(errs, fmt.Errorf("%s: CPU %d is not online (online: %s)", field, c, cpuset.Format(online)))
			}
		}
	}
	for _, c := range o.DPCores {
		if slices.Contains(o.CPCores, c) {
			errs = append(errs, fmt.Errorf("dp_cores: CPU %d is also a CP core", c))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vcpu: bad options: %w", errors.Join(errs...))
	}
	return nil
}

func (p *cgroupPool) Backend() string { return "cgroup-" + p.h.version() }

func (p *cgroupPool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	parent, err := p.h.parentCPUs()
	if err != nil {
		return err
	}
	for _, c := range append(slices.Clone(p.opts.CPCores), p.opts.DPCores...) {
		if !slices.Contains(parent, c) {
			return fmt.Errorf("vcpu: CPU %d is not allowed by the parent cgroup (cpus %s)", c, cpuset.Format(parent))
		}
	}
	steps := []func() error{
		p.h.create,
		p.h.prepare,
		func() error {
			if p.writer != nil {
				return nil
			}
			w, err := startWriter(p.opts.CPCores, p.opts.WriterPriority)
			p.writer = w
			return err
		},
		// Reconcile: whatever a previous run lent is taken back.
		func() error {
			p.lent = map[int]bool{}
			return p.writeCPUs()
		},
		func() error {
			p.perThreadIdle, err = p.h.applyClass(p.opts.Class, p.opts.Weight)
			return err
		},
		p.confined.create,
		p.confined.prepare,
		func() error {
			return p.writer.write(p.confined.cpusFile(), cpuset.Format(p.opts.CPCores)).err
		},
		func() error {
			_, err := p.confined.applyClass(p.opts.Class, confinedWeight(p.opts.Weight))
			return err
		},
		// Reconcile: processes a previous run confined go back to the
		// pool; the blocker policy confines them again if they still block.
		p.releaseAll,
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	if p.perThreadIdle {
		// Existing members of an adopted group get the class too.
		members, err := p.h.procs()
		if err != nil {
			return err
		}
		for _, pid := range members {
			p.setThreadsIdle(pid)
		}
	}
	p.started = true
	return nil
}

// desired is the CPU set for the current state: CP cores + lent DP cores.
func (p *cgroupPool) desired() []int {
	cpus := slices.Clone(p.opts.CPCores)
	for c := range p.lent {
		cpus = append(cpus, c)
	}
	slices.Sort(cpus)
	return cpus
}

// writeCPUs writes desired() through the writer thread. Callers hold mu.
func (p *cgroupPool) writeCPUs() error {
	res := p.writer.write(p.h.cpusFile(), cpuset.Format(p.desired()))
	p.lastWrite.Store(int64(res.took))
	return res.err
}

func (p *cgroupPool) usable() error {
	switch {
	case p.closed:
		return ErrClosed
	case !p.started:
		return ErrNotStarted
	}
	return nil
}

func (p *cgroupPool) checkDP(op string, cpu int) error {
	if !slices.Contains(p.opts.DPCores, cpu) {
		return fmt.Errorf("vcpu: %s(%d): CPU %d is not a DP core (dp_cores: %s)", op, cpu, cpu, cpuset.Format(p.opts.DPCores))
	}
	return nil
}

func (p *cgroupPool) Lend(cpu int) error { return p.setLent("Lend", cpu, true) }

func (p *cgroupPool) Reclaim(cpu int) error { return p.setLent("Reclaim", cpu, false) }

// setLent writes the pool's CPU set with cpu lent or not; on a failed write
// the core keeps the membership it had (as far as the kernel knows).
func (p *cgroupPool) setLent(op string, cpu int, lend bool) error {
	if err := p.checkDP(op, cpu); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	was := p.lent[cpu]
	p.setMember(cpu, lend)
	if err := p.writeCPUs(); err != nil {
		p.setMember(cpu, was)
		return err
	}
	return nil
}

func (p *cgroupPool) setMember(cpu int, lent bool) {
	if lent {
		p.lent[cpu] = true
	} else {
		delete(p.lent, cpu)
	}
}

func (p *cgroupPool) CPUs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.desired()
}

func (p *cgroupPool) Adopt(pids []int) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return 0, err
	}
	adopted := 0
	var errs []error
	seen := map[int]bool{}
	// Confined processes stay confined: a selector that matches them again
	// must not pull them back into the pool before their back-off ends.
	confined, err := p.confined.procs()
	if err != nil {
		return 0, err
	}
	for _, id := range confined {
		seen[id] = true
	}
	for _, pid := range pids {
		ok, err := p.moveOne(p.h, pid, seen)
		if ok {
			adopted++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return adopted, errors.Join(errs...)
}

// moveOne moves one process into group h (the pool's or the confined
// one); ok reports that it is a member afterwards.
func (p *cgroupPool) moveOne(h hierarchy, pid int, seen map[int]bool) (ok bool, err error) {
	if pid <= 0 {
		return false, &SkipError{PID: pid, Reason: "not a process id"}
	}
	st, err := inspectProcess(p.proc, pid)
	if err != nil {
		if isGone(err) {
			return false, nil
		}
		return false, fmt.Errorf("vcpu: inspect pid %d: %w", pid, err)
	}
	if seen[st.tgid] {
		return false, nil // the same process named twice counts once
	}
	seen[st.tgid] = true
	switch {
	case st.kernel:
		return false, &SkipError{PID: st.tgid, Reason: "kernel thread"}
	case st.tgid == p.self:
		return false, &SkipError{PID: st.tgid, Reason: "taichi's own process"}
	case st.tgid == 1:
		return false, &SkipError{PID: st.tgid, Reason: "init"}
	}
	var tids []int // nil = the whole thread group
	var skips []error
	for _, t := range st.threads {
		if isRealtime(t.policy) {
			skips = append(skips, &SkipError{PID: st.tgid, TID: t.tid,
				Reason: fmt.Sprintf("real-time thread (policy %d): DP threads stay outside the CP pool", t.policy)})
		}
	}
	if len(skips) > 0 {
		if !p.h.threadGranular() {
			return false, errors.Join(append(skips, &SkipError{PID: st.tgid,
				Reason: "cgroup " + p.h.version() + " moves whole processes and this one has real-time threads"})...)
		}
		tids = []int{}
		for _, t := range st.threads {
			if !isRealtime(t.policy) {
				tids = append(tids, t.tid)
			}
		}
		if len(tids) == 0 {
			return false, errors.Join(skips...)
		}
	}
	if err := h.addProcess(st.tgid, tids); err != nil {
		if isGone(err) {
			return false, errors.Join(skips...)
		}
		return false, errors.Join(append(skips, err)...)
	}
	if p.perThreadIdle {
		p.setThreadsIdle(st.tgid)
	}
	return true, errors.Join(skips...)
}

// setThreadsIdle gives SCHED_IDLE to a member's non-real-time threads where
// the group cannot say cpu.idle. Best effort: threads come and go.
func (p *cgroupPool) setThreadsIdle(pid int) {
	st, err := inspectProcess(p.proc, pid)
	if err != nil {
		return
	}
	for _, t := range st.threads {
		if !isRealtime(t.policy) && t.policy != unix.SCHED_IDLE {
			_ = setPolicy(t.tid, unix.SCHED_IDLE)
		}
	}
}

func (p *cgroupPool) Members() ([]int, error) {
	ids, err := p.h.procs()
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

func (p *cgroupPool) Usage() (Usage, error) { return p.h.usage() }

func (p *cgroupPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closeLocked()
}

func (p *cgroupPool) closeLocked() error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.writer == nil {
		return nil
	}
	var errs []error
	if p.started {
		p.lent = map[int]bool{}
		errs = append(errs, p.writeCPUs(), p.releaseAll())
	}
	p.writer.stop()
	p.writer = nil
	return errors.Join(errs...)
}

func (p *cgroupPool) Destroy() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := []error{p.closeLocked()}
	if p.perThreadIdle {
		p.restoreThreadPolicies()
	}
	errs = append(errs, p.confined.destroy(), p.h.destroy())
	return errors.Join(errs...)
}

// restoreThreadPolicies returns members' SCHED_IDLE threads (set by us
// where the group has no cpu.idle) to SCHED_OTHER. Best effort.
func (p *cgroupPool) restoreThreadPolicies() {
	members, err := p.h.procs()
	if err != nil {
		return
	}
	for _, pid := range members {
		st, err := inspectProcess(p.proc, pid)
		if err != nil {
			continue
		}
		for _, t := range st.threads {
			if t.policy == unix.SCHED_IDLE {
				_ = setPolicy(t.tid, unix.SCHED_NORMAL)
			}
		}
	}
}

// abandon stops the writer without touching the cgroup, as a SIGKILL would.
// Tests use it to simulate a crashed daemon inside one process.
func (p *cgroupPool) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.writer != nil {
		p.writer.stop()
		p.writer = nil
	}
	p.closed = true
}

// lastWriteDuration is how long the last cpuset write took on the writer
// thread (open+write+close), without the hand-off to it.
func (p *cgroupPool) lastWriteDuration() time.Duration { return time.Duration(p.lastWrite.Load()) }

// DestroyGroup removes a pool group left behind by a previous run without
// needing its options: its tasks go back to the parent (v1) or root (v2)
// group, and the group is removed. A missing group is not an error. mounts
// nil means detect. Threads a previous run set to SCHED_IDLE one by one
// (kernels without cpu.idle) keep that policy: use Pool.Destroy for those.
func DestroyGroup(name string, mounts *Mounts) error {
	if err := safename.Check(name); err != nil {
		return fmt.Errorf("vcpu: name: %w", err)
	}
	var m Mounts
	var err error
	if mounts != nil {
		m = *mounts
	} else if m, err = DetectMounts(); err != nil {
		return err
	}
	version, err := m.choose()
	if err != nil {
		return err
	}
	return errors.Join(newHierarchy(version, m, ConfinedName(name)).destroy(), newHierarchy(version, m, name).destroy())
}
