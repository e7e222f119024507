package linuxsched

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/taichi-sched/taichi/internal/cpuset"
)

// OnlineCPUs returns the online CPUs (/sys/devices/system/cpu/online).
func OnlineCPUs() ([]int, error) { return OnlineCPUsUnder("/sys") }

// OnlineCPUsUnder reads the online CPUs under a sysfs mount root.
func OnlineCPUsUnder(sysfs string) ([]int, error) {
	path := filepath.Join(sysfs, "devices/system/cpu/online")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	cpus, err := cpuset.Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %s: %w", path, err)
	}
	return cpus, nil
}
