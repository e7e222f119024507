package vcpu

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// cgroupV1 keeps the pool in a group of the same name in the cpuset, cpu
// and cpuacct hierarchies (cpu and cpuacct may share one mount).
type cgroupV1 struct {
	name                    string
	cpusetRoot, cpuRoot     string
	cpuacctRoot             string // "" when cpuacct is not mounted: no Usage
	cpusetDir, cpuDir, acct string
}

func newCgroupV1(m Mounts, name string) *cgroupV1 {
	h := &cgroupV1{name: name, cpusetRoot: m.CPUSet, cpuRoot: m.CPU, cpuacctRoot: m.CPUAcct}
	h.cpusetDir = filepath.Join(m.CPUSet, name)
	h.cpuDir = filepath.Join(m.CPU, name)
	if m.CPUAcct != "" {
		h.acct = filepath.Join(m.CPUAcct, name)
	}
	return h
}

func (h *cgroupV1) version() string { return "v1" }

// dirs lists the group's directories, cpuset first: a task must be confined
// to the pool's CPUs before anything else changes for it.
func (h *cgroupV1) dirs() []string {
	d := []string{h.cpusetDir, h.cpuDir}
	if h.acct != "" && h.acct != h.cpuDir {
		d = append(d, h.acct)
	}
	return d
}

func (h *cgroupV1) groupExists() bool {
	for _, d := range h.dirs() {
		if !exists(d) {
			return false
		}
	}
	return true
}

func (h *cgroupV1) create() error {
	for _, d := range h.dirs() {
		if err := linuxsched.MakeCgroup(d); err != nil {
			return prefixed(err)
		}
	}
	return nil
}

// prepare copies the parent's memory nodes: a v1 cpuset with empty
// cpuset.mems refuses tasks.
func (h *cgroupV1) prepare() error {
	mems, err := readString(filepath.Join(h.cpusetRoot, "cpuset.effective_mems"))
	if err != nil {
		if mems, err = readString(filepath.Join(h.cpusetRoot, "cpuset.mems")); err != nil {
			return err
		}
	}
	return writeValue(filepath.Join(h.cpusetDir, "cpuset.mems"), mems)
}

func (h *cgroupV1) parentCPUs() ([]int, error) {
	cpus, err := readCPUList(filepath.Join(h.cpusetRoot, "cpuset.effective_cpus"))
	if err != nil {
		return readCPUList(filepath.Join(h.cpusetRoot, "cpuset.cpus"))
	}
	return cpus, nil
}

func (h *cgroupV1) cpusFile() string { return filepath.Join(h.cpusetDir, "cpuset.cpus") }

func (h *cgroupV1) applyClass(class string, weight int) (bool, error) {
	return applyClass(h.cpuDir, class, "cpu.shares", weightToShares(weight))
}

// weightToShares maps cgroup v2 weight (1..10000, 100 normal) onto v1
// shares (2..262144, 1024 normal) the way systemd does.
func weightToShares(weight int) int {
	return max(2, min(262144, weight*1024/100))
}

func (h *cgroupV1) threadGranular() bool { return true }

// addProcess writes cpuset first, then cpu and cpuacct. Should a later
// write fail, the task is already confined to the pool's CPUs (the safe
// half) and a repeated Adopt completes the move.
func (h *cgroupV1) addProcess(pid int, tids []int) error {
	for _, d := range h.dirs() {
		if tids == nil {
			if err := writeInt(filepath.Join(d, "cgroup.procs"), pid); err != nil {
				return err
			}
			continue
		}
		for _, tid := range tids {
			if err := writeInt(filepath.Join(d, "tasks"), tid); err != nil && !isGone(err) {
				return err
			}
		}
	}
	return nil
}

func (h *cgroupV1) procs() ([]int, error) { return readIDs(filepath.Join(h.cpusetDir, "cgroup.procs")) }

func (h *cgroupV1) usage() (Usage, error) {
	if h.acct == "" {
		return Usage{}, fmt.Errorf("%w: no cgroup v1 cpuacct hierarchy mounted", ErrNotSupported)
	}
	s, err := readString(filepath.Join(h.acct, "cpuacct.usage_percpu"))
	if err != nil {
		return Usage{}, err
	}
	u := Usage{PerCPUAvailable: true}
	for i, f := range strings.Fields(s) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("vcpu: %s: bad value %q for CPU %d", filepath.Join(h.acct, "cpuacct.usage_percpu"), f, i)
		}
		u.PerCPU = append(u.PerCPU, time.Duration(ns))
		u.Total += time.Duration(ns)
	}
	return u, nil
}

func (h *cgroupV1) destroy() error {
	var errs []error
	for _, d := range h.dirs() {
		if err := drainAndRemove(d, filepath.Join(filepath.Dir(d), "tasks"), "tasks"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// drainAndRemove moves every task listed in dir/list to target and removes
// dir, retrying while tasks fork in and while the kernel still counts
// exiting tasks (EBUSY).
func drainAndRemove(dir, target, list string) error {
	if !exists(dir) {
		return nil
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		ids, err := readIDs(filepath.Join(dir, list))
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := writeInt(target, id); err != nil && !isGone(err) {
				lastErr = err
			}
		}
		err = syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("vcpu: remove cgroup %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lastErr != nil {
		return fmt.Errorf("vcpu: remove cgroup %s: tasks remain: %w", dir, lastErr)
	}
	return fmt.Errorf("vcpu: remove cgroup %s: still busy after retries", dir)
}
