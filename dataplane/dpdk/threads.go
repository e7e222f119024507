package dpdk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// threadInfo is one task of a process as the kernel reports it right now.
type threadInfo struct {
	TID      int
	Name     string
	LastCPU  int
	Policy   uint32
	Priority uint32
	Affinity []int
}

// PolicyName names a scheduling policy as sched(7) does.
func PolicyName(p uint32) string {
	switch p {
	case unix.SCHED_NORMAL:
		return "SCHED_OTHER"
	case unix.SCHED_FIFO:
		return "SCHED_FIFO"
	case unix.SCHED_RR:
		return "SCHED_RR"
	case unix.SCHED_BATCH:
		return "SCHED_BATCH"
	case unix.SCHED_IDLE:
		return "SCHED_IDLE"
	case unix.SCHED_DEADLINE:
		return "SCHED_DEADLINE"
	}
	return "SCHED_" + strconv.Itoa(int(p))
}

// lcoreOrder sorts matched threads by the number at the end of their name
// (the lcore id in "rte-worker-3"), then by TID, so CPUs are handed out in
// lcore order whatever order /proc lists the tasks in.
func lcoreOrder(ts []threadInfo) {
	num := func(name string) int {
		i := len(name)
		for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
			i--
		}
		n, err := strconv.Atoi(name[i:])
		if err != nil {
			return -1
		}
		return n
	}
	sort.SliceStable(ts, func(a, b int) bool {
		na, nb := num(ts[a].Name), num(ts[b].Name)
		if na != nb {
			return na < nb
		}
		return ts[a].TID < ts[b].TID
	})
}

// listThreads returns the threads of pid whose comm matches re, with their
// current placement. Threads that exit while being read are skipped.
func listThreads(pid int, re *regexp.Regexp) ([]threadInfo, error) {
	tasks, err := procfs.AllThreads(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	var out []threadInfo
	for _, task := range tasks {
		comm, err := task.Comm()
		if err != nil || !re.MatchString(comm) {
			continue
		}
		ti, err := readThread(pid, task.PID)
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, ti)
	}
	lcoreOrder(out)
	return out, nil
}

// readThread reads one thread's name, last CPU, policy and affinity.
func readThread(pid, tid int) (threadInfo, error) {
	task, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return threadInfo{}, err
	}
	p, err := task.Thread(pid, tid)
	if err != nil {
		return threadInfo{}, err
	}
	comm, err := p.Comm()
	if err != nil {
		return threadInfo{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return threadInfo{}, err
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return threadInfo{}, fmt.Errorf("sched_getattr %d: %w", tid, err)
	}
	aff, err := affinity(tid)
	if err != nil {
		return threadInfo{}, err
	}
	return threadInfo{TID: tid, Name: comm, LastCPU: int(st.Processor), Policy: attr.Policy, Priority: attr.Priority, Affinity: aff}, nil
}

// affinity returns the CPUs tid may run on.
func affinity(tid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity %d: %w", tid, err)
	}
	var cpus []int
	for cpu := 0; cpu < len(set)*64; cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

// pin restricts tid to exactly one CPU.
func pin(tid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		return fmt.Errorf("sched_setaffinity tid %d to CPU %d: %w", tid, cpu, err)
	}
	return nil
}

// setFIFO makes tid SCHED_FIFO at prio. Reset-on-fork keeps any thread the
// lcore creates from inheriting real-time priority.
func setFIFO(tid, prio int) error {
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio), Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("sched_setattr tid %d SCHED_FIFO %d: %w (with RT group scheduling the thread must be in a cpu cgroup with rt_runtime_us, e.g. the root)", tid, prio, err)
		}
		return fmt.Errorf("sched_setattr tid %d SCHED_FIFO %d: %w", tid, prio, err)
	}
	return nil
}

// setIdle makes tid SCHED_IDLE: it keeps its core but runs only when
// nothing else there wants to (at the lowest fair weight).
func setIdle(tid int) error {
	attr := unix.SchedAttr{Policy: unix.SCHED_IDLE, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr tid %d SCHED_IDLE: %w", tid, err)
	}
	return nil
}

// cgroupV1Mounts maps a v1 controller (cpu, cpuset) to its mount point.
var cgroupV1Mounts = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	mounts, err := procfs.GetMounts()
	if err != nil {
		return out
	}
	for _, m := range mounts {
		if m.FSType != "cgroup" {
			continue
		}
		for _, ctrl := range []string{"cpu", "cpuset"} {
			if _, ok := m.SuperOptions[ctrl]; ok && out[ctrl] == "" {
				out[ctrl] = m.MountPoint
			}
		}
	}
	return out
})

// toRootCgroups moves tid into the root of the v1 cpu and cpuset
// hierarchies when it is elsewhere. A DP thread must not sit in the CP
// cgroup (a cpuset write there would overwrite its affinity), and with RT
// group scheduling a SCHED_FIFO thread needs a cpu cgroup with RT runtime.
// It reports which hierarchies it moved the thread in.
func toRootCgroups(pid, tid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid))
	if err != nil {
		return nil, err
	}
	mounts := cgroupV1Mounts()
	var moved []string
	var errs []error
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" {
			continue
		}
		for ctrl := range strings.SplitSeq(parts[1], ",") {
			if ctrl != "cpu" && ctrl != "cpuset" {
				continue
			}
			mp := mounts[ctrl]
			if mp == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(mp, "tasks"), []byte(strconv.Itoa(tid)), 0); err != nil {
				errs = append(errs, fmt.Errorf("move tid %d to root %s cgroup: %w", tid, ctrl, err))
				continue
			}
			moved = append(moved, ctrl+":"+parts[2])
		}
	}
	return slices.Compact(moved), errors.Join(errs...)
}

// ThreadInfo is one thread of a process as `taichi dpdk inspect` shows it.
type ThreadInfo struct {
	TID      int      `json:"tid"`
	Name     string   `json:"name"`
	Lcore    bool     `json:"lcore"` // matches the lcore pattern
	Affinity []int    `json:"affinity"`
	LastCPU  int      `json:"last_cpu"`
	Policy   string   `json:"policy"`
	Priority int      `json:"priority"`
	Cgroups  []string `json:"cgroups"` // v1 cpu and cpuset membership, "cpu:/path"
}

// Inspect lists every thread of pid with its placement, marking those whose
// name matches the lcore pattern re. It changes nothing.
func Inspect(pid int, re *regexp.Regexp) ([]ThreadInfo, error) {
	all, err := listThreads(pid, regexp.MustCompile(""))
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(a, b int) bool { return all[a].TID < all[b].TID })
	out := make([]ThreadInfo, 0, len(all))
	for _, t := range all {
		ti := ThreadInfo{TID: t.TID, Name: t.Name, Lcore: re.MatchString(t.Name), Affinity: t.Affinity,
			LastCPU: t.LastCPU, Policy: PolicyName(t.Policy), Priority: int(t.Priority)}
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, t.TID)); err == nil {
			for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
				parts := strings.SplitN(line, ":", 3)
				if len(parts) != 3 {
					continue
				}
				for ctrl := range strings.SplitSeq(parts[1], ",") {
					if ctrl == "cpu" || ctrl == "cpuset" {
						ti.Cgroups = append(ti.Cgroups, ctrl+":"+parts[2])
					}
				}
			}
		}
		out = append(out, ti)
	}
	return out, nil
}
