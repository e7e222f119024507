package dataplane

import (
	"fmt"
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

// SetNormal makes thread tid (0: the calling thread) SCHED_OTHER at nice 0.
// A DP loop alone on its core (its core not lent) runs this way, busy-polling
// like an operator's data plane does: never stopped by RT throttling, which
// limits only real-time threads.
func SetNormal(tid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_OTHER: %w", err)
	}
	return nil
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
