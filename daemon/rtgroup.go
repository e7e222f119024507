package daemon

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// escapeRTGroup moves the daemon into the root of the v1 cpu hierarchy when
// RT group scheduling would forbid SCHED_FIFO where it is (a child cpu
// cgroup with cpu.rt_runtime_us 0, e.g. a systemd service's). The cpuset
// writer and the DP hosts it starts need SCHED_FIFO; they inherit the move.
func (d *Daemon) escapeRTGroup() {
	const root = "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(root, "cpu.rt_runtime_us")); err != nil {
		return // no v1 cpu hierarchy or no RT group scheduling
	}
	own := ownCgroup("cpu")
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
	if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		d.log.Warn("cannot leave a cpu cgroup without RT runtime; SCHED_FIFO may fail", "cgroup", own, "err", err)
		return
	}
	d.log.Info("moved to the root cpu cgroup: RT group scheduling gave no RT runtime in the service's", "was", own)
}

// ownCgroup is this process's path in the v1 hierarchy with controller ctrl.
func ownCgroup(ctrl string) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == ctrl {
				return parts[2]
			}
		}
	}
	return ""
}

// warnRTThrottling tells operators when the kernel's RT throttling will
// stop a busy-polling SCHED_FIFO thread for 1 - runtime/period of every
// period (tens of ms every second by default). taichi's own loops are
// SCHED_FIFO only while their core is lent, when they yield on idle, so it
// applies to DPDK lcores, which are pinned SCHED_FIFO and poll without
// pause.
func (d *Daemon) warnRTThrottling() {
	if len(d.cfg.Dataplane.DPDK) == 0 {
		return
	}
	b, err := os.ReadFile("/proc/sys/kernel/sched_rt_runtime_us")
	if err != nil {
		return
	}
	rt, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || rt < 0 {
		return
	}
	d.log.Warn("RT throttling is on: a DPDK lcore pinned SCHED_FIFO that busy-polls is stopped for part of every second; on DP hosts set kernel.sched_rt_runtime_us=-1",
		"sched_rt_runtime_us", rt)
}
