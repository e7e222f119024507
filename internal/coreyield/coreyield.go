// Package coreyield makes a busy-polling data-plane thread (a DPDK lcore,
// an OVS PMD thread) really give its core to control-plane work while the
// core is lent, and take it back with one system call.
//
// # Why a cgroup per DP core
//
// The obvious demotion, making the thread SCHED_IDLE, is not enough where
// sched_autogroup_enabled=1 (the default on desktop and many server
// kernels): SCHED_IDLE only lowers the thread's weight inside its own
// scheduling group, and every session is a group of its own at the top
// level. Against a CP task from another session a demoted testpmd lcore
// still took close to half of the core here (measured with
// internal/cpushare: the CP hog won 0.56-0.60 of the hog+lcore time, where
// 0.5 is an even split; TestTestpmdYieldCosts). cpu.idle=1 on a cpu cgroup
// makes the whole group idle relative to its siblings; CP's autogroups and
// groups are children of the root, so the group must be one too, and then
// the hog wins 0.997-1.000. Where cpu.idle is missing, a group cpu.shares of
// 2 does almost as well (0.997 against a spinning thread).
//
// Each DP core gets one root-level v1 cpu group, <prefix>-dp<cpu>, and the
// thread lives in it for good: moving a thread between cgroups costs a
// write that can wait for an RCU grace period (14 ms seen here once,
// ~25 µs usually), which must not sit on the reclaim path. What changes is
// the thread's class and the group's idleness, "class per state":
//
//   - Static (lending not allowed): SCHED_OTHER nice -20 in the group with
//     cpu.idle=0 and the largest cpu.shares, so stray tasks cannot take the
//     core; never RT-throttled, because it is not real-time.
//   - Ready (lending allowed, not lent): SCHED_FIFO at the configured
//     priority, so reclaiming is one sched_setattr that preempts CP at once.
//     A poller that never sleeps then meets RT throttling (a 50 ms stall a
//     second at the default sched_rt_runtime_us) while CP is runnable
//     there. The alternatives measured worse with OVS's PMD under a
//     kernel-heavy CP load on a PREEMPT_NONE kernel: SCHED_OTHER nice -20
//     in the heavy group lets CP run whole slices on the core (ping p99
//     4.7-23.7 ms instead of ~0.1 ms), and a 1 ms RT period for the group
//     lets it in every millisecond (p99 2-3 ms).
//   - Lent: SCHED_OTHER in the group with cpu.idle=1 (or cpu.shares=2).
//
// Lending writes cpu.idle=1 first and then drops the class; reclaiming
// raises the class first (the reclaim itself) and clears cpu.idle after,
// when a real-time thread no longer cares about its group's weight.
//
// With RT group scheduling a new v1 group has cpu.rt_runtime_us 0 and
// refuses SCHED_FIFO threads. The groups share what budget the root has
// left over its other children (all of it, on a host with one DP core);
// the kernel's global RT throttling, if on, limits a FIFO poller anyway.
//
// # cgroup v2
//
// On a host without a v1 cpu hierarchy (cgroup v2 only: Debian's 6.12
// kernels have no v1 cpuset, and systemd hosts mount v2 alone) the groups
// are threaded children of the cgroup2 root, <root>/<prefix>-dp<cpu> with
// cgroup.type "threaded". v2 keeps all threads of a process inside one
// domain, the nearest non-threaded ancestor, and the only domain whose
// threaded children sit beside CP's groups is the root itself. So the DP
// process joins the root cgroup when its first thread is placed (its
// memory and io are then charged at the root, as a process started
// outside systemd would be), and goes back to the cgroup it came from
// when its last placed thread is released. cpu.idle and cpu.weight work in
// threaded groups; RT group scheduling does not exist on v2 (where the
// kernel has it compiled in, a SCHED_FIFO thread outside the root is
// refused, and Apply says so).
//
// Only without either (no cpu controller anywhere, or groups that cannot
// be made) the mechanism degrades to making the thread SCHED_IDLE while
// lent; the caller reports Mechanism and warns.
package coreyield

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// Mechanism names how a lent thread yields.
type Mechanism string

const (
	// CgroupIdle: a root-level cpu group per DP core, cpu.idle=1 while lent.
	CgroupIdle Mechanism = "cgroup-idle"
	// CgroupShares: the same group, cpu.shares=2 while lent (no cpu.idle).
	CgroupShares Mechanism = "cgroup-shares"
	// SchedIdle: degraded, the thread alone becomes SCHED_IDLE while lent;
	// against CP in another autogroup it keeps about half of the core.
	SchedIdle Mechanism = "sched-idle"
)

// State is what a DP thread's core is doing.
type State int

const (
	// Static: lending is not allowed.
	Static State = iota
	// Ready: lending is allowed, the core is not lent.
	Ready
	// Lent: CP may use the core.
	Lent
)

func (s State) String() string {
	switch s {
	case Static:
		return "static"
	case Ready:
		return "ready"
	case Lent:
		return "lent"
	}
	return "state" + strconv.Itoa(int(s))
}

// StaticNice is a static DP thread's nice value: the largest weight inside
// its group.
const StaticNice = -20

// Largest and smallest v1 cpu.shares and cgroup2 cpu.weight.
const (
	maxShares = 262144
	minShares = 2
	maxWeight = 10000
	minWeight = 1
)

// Class is the scheduling class a thread has in state s.
func (m Mechanism) Class(s State, prio int) linuxsched.Class {
	switch s {
	case Ready:
		return linuxsched.FIFO(prio)
	case Lent:
		if m == SchedIdle {
			return linuxsched.Idle()
		}
	}
	return linuxsched.Other(StaticNice)
}

// Group is one DP core's cpu cgroup (v1, or a threaded cgroup2 group);
// its Dir is the absolute path. cpu.idle makes it idle where the kernel
// has it; else the smallest weight stands in.
type Group struct {
	linuxsched.CPUGroup
	// weightFile is cpu.shares (v1) or cpu.weight (cgroup2).
	weightFile string
}

// weights are the group's heavy and light values of its weight file.
func (g Group) weights() (heavy, light int) {
	if g.weightFile == "cpu.weight" {
		return maxWeight, minWeight
	}
	return maxShares, minShares
}

// SetLent makes the group idle (lent) or heavy (not lent).
func (g Group) SetLent(lent bool) error {
	if done, err := g.SetIdle(lent); done || err != nil {
		return err
	}
	heavy, light := g.weights()
	v := heavy
	if lent {
		v = light
	}
	return linuxsched.WriteCgroupFile(filepath.Join(g.Dir, g.weightFile), strconv.Itoa(v))
}

// setHeavy gives the group the largest weight, for every state where
// cpu.idle alone lends.
func (g Group) setHeavy() error {
	heavy, _ := g.weights()
	return linuxsched.WriteCgroupFile(filepath.Join(g.Dir, g.weightFile), strconv.Itoa(heavy))
}

// IsLent reads back whether the group is idle.
func (g Group) IsLent() (bool, error) {
	if g.HasIdle {
		return g.IsIdle()
	}
	_, light := g.weights()
	v, err := linuxsched.ReadCgroupFile(filepath.Join(g.Dir, g.weightFile))
	return v == strconv.Itoa(light), err
}

// OpenGroup returns the group at dir as it is (for a guard that only has
// the path): cpu.idle is used when the file exists, and the weight file
// is the one the directory has.
func OpenGroup(dir string) Group {
	g := Group{CPUGroup: linuxsched.OpenCPUGroup(dir), weightFile: "cpu.shares"}
	if _, err := os.Stat(filepath.Join(dir, "cpu.shares")); err != nil {
		g.weightFile = "cpu.weight"
	}
	return g
}

// Restore gives a thread its core back after the process that lent it
// died: the group (when dir is not "") loses its idleness, then the thread
// becomes SCHED_FIFO at prio. A thread already gone is not an error.
func Restore(dir string, tid, prio int) error {
	var errs []error
	if dir != "" {
		if err := OpenGroup(dir).SetLent(false); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := linuxsched.Set(tid, linuxsched.FIFO(prio)); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
