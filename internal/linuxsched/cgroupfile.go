package linuxsched

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Every write to a cgroup control file goes through WriteCgroupFile, so
// each error names the file and the value and keeps the errno for
// errors.Is (ESRCH: the task exited; ENOENT: no such file).

// WriteCgroupFile writes value to an existing cgroup control file. It never
// creates the file: a missing control file means the kernel lacks the
// feature.
func WriteCgroupFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, unwrapPathError(err))
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, unwrapPathError(err))
	}
	return nil
}

// ReadCgroupFile reads a cgroup control file, trimmed.
func ReadCgroupFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, unwrapPathError(err))
	}
	return strings.TrimSpace(string(b)), nil
}

// MoveProcess moves every thread of process pid into the cgroup directory
// dir (its cgroup.procs file).
func MoveProcess(dir string, pid int) error {
	return WriteCgroupFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
}

// unwrapPathError drops the *PathError layer (it repeats the path) but keeps
// the errno for errors.Is.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// CPUGroup is a cpu cgroup directory (v1 cpu or cgroup2) and whether its
// kernel has cpu.idle (Linux 5.15+), the file that makes a whole group
// idle against its siblings.
type CPUGroup struct {
	Dir     string
	HasIdle bool
}

// OpenCPUGroup returns the group at dir, looking once for cpu.idle.
func OpenCPUGroup(dir string) CPUGroup {
	_, err := os.Stat(filepath.Join(dir, "cpu.idle"))
	return CPUGroup{Dir: dir, HasIdle: err == nil}
}

// SetIdle writes cpu.idle (1 idle, 0 not). Without cpu.idle it writes
// nothing and reports false: the caller stands in (a small cpu.shares, or
// SCHED_IDLE threads).
func (g CPUGroup) SetIdle(idle bool) (bool, error) {
	if !g.HasIdle {
		return false, nil
	}
	v := "0"
	if idle {
		v = "1"
	}
	return true, WriteCgroupFile(filepath.Join(g.Dir, "cpu.idle"), v)
}

// SetWeight makes the group compete by weight: cpu.idle=0 first (the
// kernel refuses a weight on an idle group), then weight in weightFile
// (cpu.shares on v1, cpu.weight on cgroup2).
func (g CPUGroup) SetWeight(weightFile string, weight int) error {
	if _, err := g.SetIdle(false); err != nil {
		return err
	}
	return WriteCgroupFile(filepath.Join(g.Dir, weightFile), strconv.Itoa(weight))
}

// IsIdle reads cpu.idle back (false without it).
func (g CPUGroup) IsIdle() (bool, error) {
	if !g.HasIdle {
		return false, nil
	}
	v, err := ReadCgroupFile(filepath.Join(g.Dir, "cpu.idle"))
	return v == "1", err
}

// MakeCgroup creates the cgroup directory dir; one that exists is kept.
func MakeCgroup(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", dir, unwrapPathError(err))
	}
	return nil
}

// UnifiedControllers lists the controllers the cgroup2 directory dir
// offers its children (cgroup.controllers).
func UnifiedControllers(dir string) ([]string, error) {
	v, err := ReadCgroupFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(v), nil
}

// EnableControllers enables ctrls for the children of the cgroup2
// directory dir (cgroup.subtree_control), writing only those not enabled.
func EnableControllers(dir string, ctrls ...string) error {
	ctl := filepath.Join(dir, "cgroup.subtree_control")
	enabled, err := ReadCgroupFile(ctl)
	if err != nil {
		return err
	}
	var add []string
	for _, c := range ctrls {
		if !slices.Contains(strings.Fields(enabled), c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return WriteCgroupFile(ctl, strings.Join(add, " "))
}
