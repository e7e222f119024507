package linuxsched

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Class is a thread's scheduling class: a policy with its real-time
// priority (SCHED_FIFO, SCHED_RR) or nice value (SCHED_OTHER, SCHED_BATCH).
type Class struct {
	Policy   uint32 // unix.SCHED_*
	Priority int    // 1..99 for real-time policies, else 0
	Nice     int    // -20..19 for SCHED_OTHER and SCHED_BATCH, else 0
}

// The real-time priorities of SCHED_FIFO and SCHED_RR (sched(7)).
const (
	MinFIFOPriority = 1
	MaxFIFOPriority = 99
)

// CheckFIFOPriority is the one check of a configured SCHED_FIFO priority:
// nil for 1..99.
func CheckFIFOPriority(prio int) error {
	if prio < MinFIFOPriority || prio > MaxFIFOPriority {
		return fmt.Errorf("%d is not a SCHED_FIFO priority (%d..%d)", prio, MinFIFOPriority, MaxFIFOPriority)
	}
	return nil
}

// FIFO is SCHED_FIFO at prio.
func FIFO(prio int) Class { return Class{Policy: unix.SCHED_FIFO, Priority: prio} }

// Other is SCHED_OTHER at nice.
func Other(nice int) Class { return Class{Policy: unix.SCHED_NORMAL, Nice: nice} }

// Idle is SCHED_IDLE.
func Idle() Class { return Class{Policy: unix.SCHED_IDLE} }

// String renders the class as status shows it: "SCHED_FIFO/50",
// "SCHED_OTHER nice -20", "SCHED_IDLE".
func (c Class) String() string {
	name := PolicyName(c.Policy)
	switch c.Policy {
	case unix.SCHED_FIFO, unix.SCHED_RR:
		return name + "/" + strconv.Itoa(c.Priority)
	case unix.SCHED_NORMAL, unix.SCHED_BATCH:
		if c.Nice != 0 {
			return name + " nice " + strconv.Itoa(c.Nice)
		}
	}
	return name
}

// PolicyName names a scheduling policy as sched(7) does.
func PolicyName(p uint32) string {
	switch p {
	case unix.SCHED_NORMAL:
		return "SCHED_OTHER"
	case unix.SCHED_FIFO:
		return "SCHED_FIFO"
	case unix.SCHED_RR:
		return "SCHED_RR"
	case unix.SCHED_BATCH:
		return "SCHED_BATCH"
	case unix.SCHED_IDLE:
		return "SCHED_IDLE"
	case unix.SCHED_DEADLINE:
		return "SCHED_DEADLINE"
	}
	return "SCHED_" + strconv.Itoa(int(p))
}

// Set gives thread tid (0: the calling thread) class c with one
// sched_setattr, so it is cheap enough for a reclaim path. Threads it forks
// start with the normal policy (reset-on-fork): a real-time thread's helpers
// must not inherit its priority.
func Set(tid int, c Class) error {
	attr := unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   c.Policy,
		Priority: uint32(c.Priority),
		Nice:     int32(c.Nice),
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
	}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		if errors.Is(err, unix.EPERM) && (c.Policy == unix.SCHED_FIFO || c.Policy == unix.SCHED_RR) {
			return fmt.Errorf("tid %d: sched_setattr %s: %w (needs CAP_SYS_NICE, and with RT group scheduling a cpu cgroup with cpu.rt_runtime_us > 0, e.g. the root)", tid, c, err)
		}
		return fmt.Errorf("tid %d: sched_setattr %s: %w", tid, c, err)
	}
	return nil
}

// Get reads thread tid's class.
func Get(tid int) (Class, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return Class{}, fmt.Errorf("tid %d: sched_getattr: %w", tid, err)
	}
	return classOf(attr), nil
}

func classOf(attr *unix.SchedAttr) Class {
	c := Class{Policy: attr.Policy}
	switch attr.Policy {
	case unix.SCHED_FIFO, unix.SCHED_RR:
		c.Priority = int(attr.Priority)
	case unix.SCHED_NORMAL, unix.SCHED_BATCH:
		c.Nice = int(attr.Nice)
	}
	return c
}

// Swap sets thread tid's class to c and returns the class it had, for the
// caller to put back with Set.
func Swap(tid int, c Class) (was Class, err error) {
	if was, err = Get(tid); err != nil {
		return Class{}, err
	}
	return was, Set(tid, c)
}

// Apply sets class c and reads it back; an error names what the kernel
// reports instead.
func Apply(tid int, c Class) error {
	if err := Set(tid, c); err != nil {
		return err
	}
	return Verify(tid, c)
}

// Verify reports an error when thread tid's class is not c.
func Verify(tid int, c Class) error {
	got, err := Get(tid)
	if err != nil {
		return err
	}
	if got != c {
		return fmt.Errorf("tid %d: class is %s, want %s", tid, got, c)
	}
	return nil
}

// Pin restricts thread tid (0: the calling thread) to cpus.
func Pin(tid int, cpus ...int) error {
	if len(cpus) == 0 {
		return fmt.Errorf("tid %d: pin to no CPU", tid)
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		return fmt.Errorf("tid %d: sched_setaffinity to CPUs %v: %w", tid, cpus, err)
	}
	return nil
}

// Affinity returns the CPUs thread tid may run on, sorted.
func Affinity(tid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, fmt.Errorf("tid %d: sched_getaffinity: %w", tid, err)
	}
	return setCPUs(&set), nil
}

func setCPUs(set *unix.CPUSet) []int {
	var cpus []int
	for cpu := 0; cpu < len(set)*64; cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// SetAutogroupNice sets the calling process's autogroup nice. With
// sched_autogroup_enabled every session is one scheduling group at the top
// level, and a thread's own nice only counts inside it. Without autogroups
// (the file is missing) there is nothing to do.
func SetAutogroupNice(nice int) error {
	err := os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(nice)), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
