package daemon

import (
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// pinToCores keeps the daemon's own threads on the CP cores (DP loop threads
// re-pin themselves to their DP core) at DaemonNice. Threads created later
// inherit both from the thread that made them, but the Go runtime may start
// one while a pass runs, from a thread not yet set: passes repeat until one
// finds every thread set already (a few at most).
func pinToCores(cpus []int, log *slog.Logger) {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for pass := 0; pass < 10; pass++ {
		if changed := pinPass(&set, log); changed == 0 {
			return
		}
	}
	log.Warn("daemon threads kept appearing off the CP cores or at another priority while being set", "cpus", cpus)
}

// DaemonNice is the daemon's threads' nice value. The daemon shares the CP
// cores with the CP work it schedules, and its decisions must not queue
// behind a backlogged CP load at nice 0; it costs about 1.5% of a core, so
// CP loses nothing to it.
const DaemonNice = -10

// pinPass pins every thread whose mask differs from set, gives every
// thread DaemonNice, and returns how many threads it changed.
func pinPass(set *unix.CPUSet, log *slog.Logger) int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	changed := 0
	for _, t := range tasks {
		var tid int
		if _, err := fmt.Sscan(t.Name(), &tid); err != nil {
			continue
		}
		did := false
		var cur unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &cur); err != nil || cur != *set {
			if err := unix.SchedSetaffinity(tid, set); err != nil {
				log.Debug("pinning daemon thread", "tid", tid, "err", err)
			} else {
				did = true
			}
		}
		// getpriority(2) returns 20 - nice.
		if prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-prio != DaemonNice {
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, DaemonNice); err != nil {
				log.Debug("daemon thread priority", "tid", tid, "err", err)
			} else {
				did = true
			}
		}
		if did {
			changed++
		}
	}
	return changed
}
