package vcpu

import (
	"fmt"
	"slices"
	"strings"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// Mounts says where the cgroup hierarchies are mounted. Empty fields mean
// "not mounted".
type Mounts struct {
	// Unified is the cgroup2 mount point.
	Unified string
	// CPUSet, CPU and CPUAcct are the v1 hierarchies holding those
	// controllers (CPU and CPUAcct are often the same "cpu,cpuacct" mount).
	CPUSet, CPU, CPUAcct string
}

// DetectMounts reads /proc/self/mountinfo.
func DetectMounts() (Mounts, error) {
	cm, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		return Mounts{}, fmt.Errorf("vcpu: %w", err)
	}
	return Mounts{Unified: cm.Unified, CPUSet: cm.V1Path("cpuset"), CPU: cm.V1Path("cpu"), CPUAcct: cm.V1Path("cpuacct")}, nil
}

// unifiedControllers lists the controllers a cgroup2 mount can enable.
func unifiedControllers(root string) ([]string, error) {
	return linuxsched.UnifiedControllers(root)
}

// choose picks the hierarchy version to use: v2 when the unified mount can
// enable cpuset and cpu, else v1 when cpuset and cpu hierarchies exist. A
// cgroup2 mount whose controllers are bound to v1 hierarchies (a hybrid
// layout) is unusable and skipped.
func (m Mounts) choose() (version string, why error) {
	var reasons []string
	if m.Unified != "" {
		ctrls, err := unifiedControllers(m.Unified)
		switch {
		case err != nil:
			reasons = append(reasons, fmt.Sprintf("cgroup2 at %s: %v", m.Unified, err))
		case slices.Contains(ctrls, "cpuset") && slices.Contains(ctrls, "cpu"):
			return "v2", nil
		default:
			reasons = append(reasons, fmt.Sprintf("cgroup2 at %s lacks the cpuset and cpu controllers (cgroup.controllers: %q)",
				m.Unified, strings.Join(ctrls, " ")))
		}
	}
	if m.CPUSet != "" && m.CPU != "" {
		return "v1", nil
	}
	reasons = append(reasons, fmt.Sprintf("no cgroup v1 cpuset and cpu hierarchies (cpuset at %q, cpu at %q)", m.CPUSet, m.CPU))
	return "", fmt.Errorf("%w: %s", ErrNotSupported, strings.Join(reasons, "; "))
}
