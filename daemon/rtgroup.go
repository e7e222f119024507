package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// escapeRTGroup moves the daemon into the root of the v1 cpu hierarchy when
// RT group scheduling would forbid SCHED_FIFO where it is (a child cpu
// cgroup with cpu.rt_runtime_us 0, e.g. a systemd service's). The cpuset
// writer and the DP hosts it starts need SCHED_FIFO; they inherit the move.
func (d *Daemon) escapeRTGroup() {
	mounts, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		return
	}
	root := mounts.V1Path("cpu")
	if root == "" {
		return // no v1 cpu hierarchy
	}
	if _, err := os.Stat(filepath.Join(root, "cpu.rt_runtime_us")); err != nil {
		return // no RT group scheduling
	}
	cg, err := linuxsched.TaskCgroups(0, os.Getpid())
	if err != nil {
		return
	}
	own := cg.V1("cpu")
	if own == "" || own == "/" {
		return
	}
	b, err := os.ReadFile(filepath.Join(root, own, "cpu.rt_runtime_us"))
	if err != nil {
		return
	}
	if rt, _ := strconv.Atoi(strings.TrimSpace(string(b))); rt != 0 {
		return
	}
	if err := linuxsched.MoveProcess(root, os.Getpid()); err != nil {
		d.log.Warn("cannot leave a cpu cgroup without RT runtime; SCHED_FIFO may fail", "cgroup", own, "err", err)
		return
	}
	d.log.Info("moved to the root cpu cgroup: RT group scheduling gave no RT runtime in the service's", "was", own)
}
