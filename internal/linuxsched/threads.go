package linuxsched

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoProcess means the process (or thread) is gone.
var ErrNoProcess = errors.New("process not running")

// Thread is one task as the kernel reports it right now.
type Thread struct {
	TID      int
	Comm     string
	Affinity []int // sorted
	Class    Class
	LastCPU  int // the CPU it last ran on (/proc stat field 39)
}

// Threads lists every thread of pid. Threads that exit while being read are
// left out; a missing process is ErrNoProcess.
func Threads(pid int) ([]Thread, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	out := make([]Thread, 0, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, err := ReadThread(pid, tid)
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, t)
	}
	return out, nil
}

// ReadThread reads thread tid of process pid (pid 0: whichever process
// tid belongs to).
func ReadThread(pid, tid int) (Thread, error) {
	stat, err := os.ReadFile(filepath.Join(taskDir(pid, tid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Thread{}, fmt.Errorf("thread %d: %w", tid, ErrNoProcess)
		}
		return Thread{}, err
	}
	comm, last, err := ParseStat(stat)
	if err != nil {
		return Thread{}, fmt.Errorf("thread %d: %w", tid, err)
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return Thread{}, fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	aff, err := Affinity(tid)
	if err != nil {
		return Thread{}, err
	}
	return Thread{TID: tid, Comm: comm, Affinity: aff, Class: classOf(attr), LastCPU: last}, nil
}

// taskDir is thread tid's /proc directory; pid 0: whichever process tid
// belongs to (/proc/TID serves any thread, though it is not listed).
func taskDir(pid, tid int) string {
	if pid > 0 {
		return fmt.Sprintf("/proc/%d/task/%d", pid, tid)
	}
	return fmt.Sprintf("/proc/%d", tid)
}

// ParseStat returns the command name and last CPU (field 39) of a
// /proc/PID/stat line. The name sits in parentheses and may itself hold
// spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (comm string, lastCPU int, err error) {
	s := string(b)
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("stat %q: no (comm)", truncate(s))
	}
	fields := strings.Fields(s[end+1:])
	const processorField = 39 // 1-based; fields here start at field 3
	if len(fields) < processorField-2 {
		return "", 0, fmt.Errorf("stat %q: %d fields, want at least %d", truncate(s), len(fields)+2, processorField)
	}
	lastCPU, err = strconv.Atoi(fields[processorField-3])
	if err != nil {
		return "", 0, fmt.Errorf("stat: processor field: %w", err)
	}
	return s[open+1 : end], lastCPU, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// RunTime is how long thread tid of pid has run on a CPU in total
// (/proc/PID/task/TID/schedstat, first field).
func RunTime(pid, tid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("thread %d: empty schedstat", tid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("thread %d: schedstat: %w", tid, err)
	}
	return time.Duration(ns), nil
}
