package vcpu

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// All cgroup file access goes through internal/linuxsched's helpers, so
// every error names the file and the value; these add the package's name.

// writeValue writes value to an existing cgroup file (never creating it).
func writeValue(path, value string) error {
	if err := linuxsched.WriteCgroupFile(path, value); err != nil {
		return fmt.Errorf("vcpu: %w", err)
	}
	return nil
}

func writeInt(path string, v int) error { return writeValue(path, strconv.Itoa(v)) }

func readString(path string) (string, error) {
	s, err := linuxsched.ReadCgroupFile(path)
	if err != nil {
		return "", fmt.Errorf("vcpu: %w", err)
	}
	return s, nil
}

func readCPUList(path string) ([]int, error) {
	s, err := readString(path)
	if err != nil {
		return nil, err
	}
	cpus, err := cpuset.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("vcpu: %s: %w", path, err)
	}
	return cpus, nil
}

// readIDs reads a cgroup.procs or tasks file: one id per line.
func readIDs(path string) ([]int, error) {
	s, err := readString(path)
	if err != nil {
		return nil, err
	}
	var ids []int
	for _, f := range strings.Fields(s) {
		id, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("vcpu: %s: bad id %q", path, f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// isGone reports an error that means the task exited meanwhile.
func isGone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, os.ErrNotExist)
}

// applyClass sets a group's CP class in its cpu directory dir: cpu.idle=1
// for ClassIdle, else cpu.idle=0 (the kernel rejects a weight on an idle
// group) and weightFile=weight. It reports whether cpu.idle is missing
// (before Linux 5.15), so idle must be set per thread with SCHED_IDLE.
func applyClass(dir, class, weightFile string, weight int) (perThreadIdle bool, err error) {
	g := linuxsched.OpenCPUGroup(dir)
	if class == ClassIdle {
		done, err := g.SetIdle(true)
		return !done && err == nil, prefixed(err)
	}
	return false, prefixed(g.SetWeight(weightFile, weight))
}

// prefixed names the package in a linuxsched error.
func prefixed(err error) error {
	if err != nil {
		return fmt.Errorf("vcpu: %w", err)
	}
	return nil
}
