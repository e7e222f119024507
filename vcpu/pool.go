package vcpu

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pool is the vCPU pool: which CPUs CP work may use, and which processes are
// CP work. Methods are safe for concurrent use.
type Pool interface {
	// Start creates the pool's group, or adopts one of the same name left by
	// a previous run, and reconciles it: CPU set = CP cores (nothing lent),
	// scheduling class re-applied, existing members kept. Idempotent: a
	// second Start reconciles again. ctx bounds Start itself, not the pool.
	Start(ctx context.Context) error
	// Lend adds DP core cpu to the pool's CPU set and returns after the
	// cpuset write. Idempotent: lending a lent core rewrites the same set.
	Lend(cpu int) error
	// Reclaim removes DP core cpu from the pool's CPU set and returns after
	// the write completed, i.e. after the kernel moved CP tasks off it.
	// Idempotent: reclaiming a core that is not lent rewrites the same set.
	// On error the core still counts as lent.
	Reclaim(cpu int) error
	// CPUs returns the pool's current CPU set (CP cores + lent DP cores),
	// sorted.
	CPUs() []int
	// Adopt moves the given processes (whole thread groups) into the pool
	// without modifying them otherwise. It returns how many are members
	// afterwards. Idempotent: a member is counted again, not moved twice.
	// Processes that vanished meanwhile are ignored; refused ones (kernel
	// threads, taichi itself, real-time threads) are reported in the error
	// as *SkipError values (errors.As), beside the valid count. Confined
	// processes (Confine) stay confined and are not counted.
	Adopt(pids []int) (int, error)
	// Members returns the process ids (thread group ids) in the pool, sorted.
	// Confined processes are not members while confined.
	Members() ([]int, error)
	// Confine moves a member (the whole process) into the pool's confined
	// group, which runs on the CP cores only, with the pool's CP class, and
	// is never changed by Lend or Reclaim. Its children start there too.
	// It reports whether the process is confined afterwards: false with a
	// nil error when it vanished meanwhile. Processes outside the pool are
	// refused with a *SkipError. Idempotent.
	Confine(pid int) (bool, error)
	// Release moves a confined process back into the pool. Idempotent; a
	// process that is not confined or vanished is not an error.
	Release(pid int) error
	// Confined returns the confined processes (thread group ids), sorted.
	// Start, Close and Destroy release them all: nothing stays confined
	// across a restart.
	Confined() ([]int, error)
	// Usage returns the CPU time CP work used, per CPU where the kernel
	// reports it.
	Usage() (Usage, error)
	// Close shrinks the pool to the CP cores, releases confined processes
	// into it and stops its writer; the group and its tasks stay in place
	// and runnable so that a restart adopts them. Idempotent.
	Close() error
	// Destroy closes the pool, moves its tasks back to the parent group and
	// removes the group and the confined group. Idempotent.
	Destroy() error
	// Backend names the mechanism, e.g. "cgroup-v1" or "cgroup-v2".
	Backend() string
}

// Usage is CP CPU time since the group was created.
type Usage struct {
	Total time.Duration
	// PerCPU is indexed by CPU id; nil when PerCPUAvailable is false
	// (cgroup v2 reports only a total).
	PerCPU          []time.Duration
	PerCPUAvailable bool
}

// Scheduling classes for CP tasks.
const (
	// ClassIdle runs CP as SCHED_IDLE: cpu.idle=1 on the group where the
	// kernel has it (v2, and v1 since 5.15), else SCHED_IDLE per thread.
	ClassIdle = "idle"
	// ClassLowWeight runs CP as SCHED_OTHER with a low cpu weight/shares.
	ClassLowWeight = "low-weight"
)

// Defaults applied by NewCgroup to zero fields of Options.
const (
	DefaultName           = "taichi.cp"
	DefaultClass          = ClassLowWeight
	DefaultWeight         = 20 // cgroup v2 scale MinWeight..MaxWeight, 100 = a normal task
	MinWeight             = 1
	MaxWeight             = 10000
	DefaultWriterPriority = 50
)

// Options configure a cgroup pool.
type Options struct {
	// Name of the group, one path component; default DefaultName. It is
	// created at the top of each hierarchy.
	Name string
	// CPCores are always in the pool; at least one, all online.
	CPCores []int
	// DPCores may be lent; disjoint from CPCores, all online.
	DPCores []int
	// Class is ClassIdle or ClassLowWeight (default).
	Class string
	// Weight is the cpu weight for ClassLowWeight on the v2 scale 1..10000
	// (v1 shares = Weight*1024/100); default DefaultWeight.
	Weight int
	// WriterPriority is the SCHED_FIFO priority (1..99) of the cpuset
	// writer thread; 0 means DefaultWriterPriority; negative means a plain
	// SCHED_OTHER writer, for comparisons only (reclaim gets ~50x slower).
	WriterPriority int
	// Mounts overrides where the hierarchies are; nil = detect from
	// /proc/self/mountinfo. Tests point it at their own trees.
	Mounts *Mounts
}

// Errors callers can test for with errors.Is.
var (
	ErrNotStarted   = errors.New("vcpu: pool not started")
	ErrClosed       = errors.New("vcpu: pool closed")
	ErrNotSupported = errors.New("vcpu: not supported by this kernel/mount layout")
)

// SkipError reports a process (or one of its threads) Adopt refused.
type SkipError struct {
	PID    int // thread group id
	TID    int // the offending thread; 0 when the whole process is meant
	Reason string
}

func (e *SkipError) Error() string {
	if e.TID != 0 && e.TID != e.PID {
		return fmt.Sprintf("vcpu: not adopting pid %d thread %d: %s", e.PID, e.TID, e.Reason)
	}
	return fmt.Sprintf("vcpu: not adopting pid %d: %s", e.PID, e.Reason)
}
