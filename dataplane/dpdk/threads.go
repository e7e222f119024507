package dpdk

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// PolicyName names a scheduling policy as sched(7) does.
func PolicyName(p uint32) string { return linuxsched.PolicyName(p) }

// lcoreOrder sorts matched threads by the number at the end of their name
// (the lcore id in "rte-worker-3"), then by TID, so CPUs are handed out in
// lcore order whatever order /proc lists the tasks in.
func lcoreOrder(ts []linuxsched.Thread) {
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
		na, nb := num(ts[a].Comm), num(ts[b].Comm)
		if na != nb {
			return na < nb
		}
		return ts[a].TID < ts[b].TID
	})
}

// listThreads returns the threads of pid whose comm matches re, with their
// current placement, in lcore order.
func listThreads(pid int, re *regexp.Regexp) ([]linuxsched.Thread, error) {
	all, err := linuxsched.Threads(pid)
	if err != nil {
		if errors.Is(err, linuxsched.ErrNoProcess) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	var out []linuxsched.Thread
	for _, t := range all {
		if re.MatchString(t.Comm) {
			out = append(out, t)
		}
	}
	lcoreOrder(out)
	return out, nil
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
		ti := ThreadInfo{TID: t.TID, Name: t.Comm, Lcore: re.MatchString(t.Comm), Affinity: t.Affinity,
			LastCPU: t.LastCPU, Policy: PolicyName(t.Class.Policy), Priority: t.Class.Priority}
		if cg, err := linuxsched.TaskCgroups(pid, t.TID); err == nil {
			for _, ctrl := range []string{"cpu", "cpuset"} {
				if p := cg.V1(ctrl); p != "" {
					ti.Cgroups = append(ti.Cgroups, ctrl+":"+p)
				}
			}
		}
		out = append(out, ti)
	}
	return out, nil
}
