package dataplane

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PinThread restricts thread tid (0: the calling thread) to one CPU.
func PinThread(tid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		return fmt.Errorf("cpu %d: sched_setaffinity: %w", cpu, err)
	}
	return nil
}

// SetFIFO makes thread tid (0: the calling thread) SCHED_FIFO at prio.
// Threads it forks start with the normal policy (reset-on-fork). With
// CONFIG_RT_GROUP_SCHED the thread must be in a cpu cgroup with RT
// runtime (the root one); EPERM here usually means it is not.
func SetFIFO(tid, prio int) error {
	attr := unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   unix.SCHED_FIFO,
		Priority: uint32(prio),
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
	}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("priority %d: sched_setattr SCHED_FIFO: %w", prio, err)
	}
	return nil
}

// NormalNice is the nice value of a DP loop that is not real-time: the
// highest CFS weight, so a stray normal task that lands on the DP core gets
// about 1% of it instead of half.
const NormalNice = -20

// SetNormal makes thread tid (0: the calling thread) SCHED_OTHER at
// NormalNice. A DP loop whose core is not lent runs this way, busy-polling
// like an operator's data plane does: never stopped by RT throttling, which
// limits only real-time threads.
func SetNormal(tid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Nice: NormalNice}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_OTHER: %w", err)
	}
	return nil
}

// SetAutogroupNice sets the calling process's autogroup nice. With
// sched_autogroup_enabled every session is one scheduling group at the top
// level, and a thread's own nice only counts inside it: a SCHED_OTHER DP
// loop's weight must be its group's too. Without autogroups (the file is
// missing) there is nothing to do.
func SetAutogroupNice(nice int) error {
	err := os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(nice)), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ThreadSched describes where a thread runs and how it is scheduled.
type ThreadSched struct {
	LastCPU  int    // the CPU it last ran on (/proc stat field 39)
	Policy   uint32 // unix.SCHED_*
	Priority uint32
	Allowed  unix.CPUSet
}

// ReadThreadSched reads thread tid's last CPU, policy, priority and affinity.
func ReadThreadSched(tid int) (ThreadSched, error) {
	var ts ThreadSched
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/stat", tid))
		if err != nil {
			return ts, err
		}
	}
	// Fields after the command name, which may contain spaces, start at field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ts, fmt.Errorf("thread %d: malformed stat", tid)
	}
	fields := strings.Fields(s[i+1:])
	const processorField = 39
	if len(fields) < processorField-2 {
		return ts, fmt.Errorf("thread %d: short stat", tid)
	}
	if ts.LastCPU, err = strconv.Atoi(fields[processorField-3]); err != nil {
		return ts, fmt.Errorf("thread %d: processor field: %w", tid, err)
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return ts, fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	ts.Policy, ts.Priority = attr.Policy, attr.Priority
	if err := unix.SchedGetaffinity(tid, &ts.Allowed); err != nil {
		return ts, fmt.Errorf("thread %d: sched_getaffinity: %w", tid, err)
	}
	return ts, nil
}
