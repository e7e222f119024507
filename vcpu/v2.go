package vcpu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// cgroupV2 keeps the pool in one group of the unified hierarchy, directly
// under its root, with the cpuset and cpu controllers enabled for it.
type cgroupV2 struct {
	root, dir string
}

func newCgroupV2(m Mounts, name string) *cgroupV2 {
	return &cgroupV2{root: m.Unified, dir: filepath.Join(m.Unified, name)}
}

func (h *cgroupV2) version() string   { return "v2" }
func (h *cgroupV2) groupExists() bool { return exists(h.dir) }

// neededControllers must be enabled in the root's subtree_control for the
// group to get cpuset.* and cpu.* files.
var neededControllers = []string{"cpuset", "cpu"}

func (h *cgroupV2) create() error {
	if err := linuxsched.EnableControllers(h.root, neededControllers...); err != nil {
		return fmt.Errorf("%w (are cpuset/cpu bound to a cgroup v1 hierarchy?)", prefixed(err))
	}
	return prefixed(linuxsched.MakeCgroup(h.dir))
}

// prepare: an empty cpuset.mems in v2 means "the parent's", nothing to do.
func (h *cgroupV2) prepare() error { return nil }

func (h *cgroupV2) parentCPUs() ([]int, error) {
	return readCPUList(filepath.Join(h.root, "cpuset.cpus.effective"))
}

func (h *cgroupV2) cpusFile() string { return filepath.Join(h.dir, "cpuset.cpus") }

func (h *cgroupV2) applyClass(class string, weight int) (bool, error) {
	return applyClass(h.dir, class, "cpu.weight", weight)
}

// threadGranular: v2 moves whole processes (threaded mode is not used: it
// would forbid the cpu controller's weight on the group's domain).
func (h *cgroupV2) threadGranular() bool { return false }

func (h *cgroupV2) addProcess(pid int, tids []int) error {
	if tids != nil {
		return fmt.Errorf("vcpu: cgroup v2 moves whole processes only (pid %d)", pid)
	}
	return writeInt(filepath.Join(h.dir, "cgroup.procs"), pid)
}

func (h *cgroupV2) procs() ([]int, error) { return readIDs(filepath.Join(h.dir, "cgroup.procs")) }

// usage: v2's cpu.stat has only a total (usage_usec); per-CPU time is not
// reported by the kernel.
func (h *cgroupV2) usage() (Usage, error) {
	path := filepath.Join(h.dir, "cpu.stat")
	s, err := readString(path)
	if err != nil {
		return Usage{}, err
	}
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, " ")
		if k != "usage_usec" {
			continue
		}
		us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("vcpu: %s: bad usage_usec %q", path, v)
		}
		return Usage{Total: time.Duration(us) * time.Microsecond}, nil
	}
	return Usage{}, fmt.Errorf("vcpu: %s: no usage_usec line", path)
}

// destroy moves the processes to the root group (the only v2 group exempt
// from the no-internal-processes rule) and removes the group.
func (h *cgroupV2) destroy() error {
	return drainAndRemove(h.dir, filepath.Join(h.root, "cgroup.procs"), "cgroup.procs")
}
