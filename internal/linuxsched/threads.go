package linuxsched

import (
	"bytes"
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
// /proc/PID/stat line.
func ParseStat(b []byte) (comm string, lastCPU int, err error) {
	name, rest, err := SplitStat(b)
	if err != nil {
		return "", 0, err
	}
	const processorField = 39
	f := StatField(rest, processorField)
	if f == nil {
		return "", 0, fmt.Errorf("stat %q: fewer than %d fields", truncate(string(b)), processorField)
	}
	lastCPU, err = strconv.Atoi(string(f))
	if err != nil {
		return "", 0, fmt.Errorf("stat: processor field: %w", err)
	}
	return string(name), lastCPU, nil
}

// SplitStat splits a /proc/PID/stat line into its command name and the
// fields after it (field 3 on), without allocating. The name sits in
// parentheses and may itself hold spaces and parentheses, so the fields
// start after the last ')'.
func SplitStat(b []byte) (comm, rest []byte, err error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return nil, nil, fmt.Errorf("stat %q: no (comm)", truncate(string(b)))
	}
	return b[open+1 : end], b[end+1:], nil
}

// StatField is field n of a stat line (1-based, as proc(5) numbers them;
// n >= 3) from the rest SplitStat returned, without its trailing newline;
// nil when the line has fewer fields.
func StatField(rest []byte, n int) []byte {
	for field := 2; len(rest) > 0; {
		rest = bytes.TrimLeft(rest, " \n")
		word := rest
		if i := bytes.IndexAny(rest, " \n"); i >= 0 {
			word, rest = rest[:i], rest[i:]
		} else {
			rest = nil
		}
		if len(word) == 0 {
			return nil
		}
		if field++; field == n {
			return word
		}
	}
	return nil
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

// KsoftirqdTID finds the kernel thread ksoftirqd/cpu: the thread that
// runs cpu's softirqs (packet receive among them) when they are deferred.
func KsoftirqdTID(cpu int) (int, error) {
	want := "ksoftirqd/" + strconv.Itoa(cpu)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == want {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s thread", want)
}
