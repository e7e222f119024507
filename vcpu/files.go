package vcpu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/taichi-sched/taichi/internal/cpuset"
)

// All cgroup file access goes through these helpers so that every error
// names the file and the value.

// writeValue writes value to an existing cgroup file. It never creates the
// file: a missing control file means the kernel lacks the feature.
func writeValue(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("vcpu: write %q to %s: %w", value, path, unwrapPathError(err))
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vcpu: write %q to %s: %w", value, path, unwrapPathError(err))
	}
	return nil
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

func writeInt(path string, v int) error { return writeValue(path, strconv.Itoa(v)) }

func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("vcpu: read %s: %w", path, unwrapPathError(err))
	}
	return strings.TrimSpace(string(b)), nil
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
	idle := filepath.Join(dir, "cpu.idle")
	hasIdle := exists(idle)
	if class == ClassIdle {
		if !hasIdle {
			return true, nil
		}
		return false, writeValue(idle, "1")
	}
	if hasIdle {
		if err := writeValue(idle, "0"); err != nil {
			return false, err
		}
	}
	return false, writeInt(filepath.Join(dir, weightFile), weight)
}
