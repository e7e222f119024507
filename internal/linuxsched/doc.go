// Package linuxsched is the one place taichi talks to the Linux scheduler
// and the cgroup filesystem about single threads: pin a thread to CPUs, set
// its class (SCHED_FIFO, SCHED_IDLE, SCHED_OTHER with a nice value) and read
// it back, list a process's threads with where and how they run, find the
// cgroup mounts from /proc/self/mountinfo, parse /proc/PID/task/TID/cgroup,
// move a thread between v1 cgroups, and read the online CPUs. It is also the
// one cgroup file layer: every write to a cgroup control file (vcpu's pool,
// coreyield's per-core groups, the daemon's RT escape) goes through
// WriteCgroupFile, and CPUGroup holds the one cpu.idle / weight rule.
//
// CPU lists ("0-3,5") are parsed and formatted by internal/cpuset. Parsers
// take bytes so tests feed them real and tricky files; the functions that
// read /proc and /sys are thin wrappers around them.
package linuxsched
