package dpdk

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// cgroupMounts is read once: hierarchies are not remounted under a running
// daemon.
var cgroupMounts = sync.OnceValue(func() linuxsched.CgroupMounts {
	m, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		return linuxsched.CgroupMounts{}
	}
	return m
})

// toRootCgroups moves tid into the root of the v1 hierarchies with
// controllers ctrls when it is elsewhere. A DP thread must not sit in the
// CP cpuset (a cpuset write there would overwrite its affinity), and
// without a DP core group a SCHED_FIFO thread needs the root cpu cgroup's
// RT runtime. It reports which hierarchies it moved the thread in.
func toRootCgroups(pid, tid int, ctrls ...string) ([]string, error) {
	cg, err := linuxsched.TaskCgroups(pid, tid)
	if err != nil {
		return nil, err
	}
	mounts := cgroupMounts()
	var moved []string
	var errs []error
	for _, ctrl := range ctrls {
		path, mp := cg.V1(ctrl), mounts.V1Path(ctrl)
		if path == "" || path == "/" || mp == "" {
			continue
		}
		if err := linuxsched.MoveThread(mp, tid); err != nil {
			errs = append(errs, fmt.Errorf("root %s cgroup: %w", ctrl, err))
			continue
		}
		moved = append(moved, ctrl+":"+path)
	}
	return slices.Compact(moved), errors.Join(errs...)
}
