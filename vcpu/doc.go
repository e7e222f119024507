// Package vcpu is taichi's vCPU pool: the set of physical CPUs that
// control-plane (CP) work may run on right now, and the placement of CP
// processes onto it without modifying them.
//
// The pool's CPU set is the CP cores plus the data-plane (DP) cores that are
// currently lent. The cgroup backend (NewCgroup) keeps CP processes in one
// cgroup whose cpuset is that set; Lend and Reclaim rewrite the cpuset from a
// single SCHED_FIFO writer thread pinned to the CP cores, because a cpuset
// shrink done by a real-time writer returns in tens of microseconds instead
// of milliseconds. It works on cgroup v2 (cpuset and cpu controllers,
// cpu.idle, cpu.weight) and on cgroup v1 (separate cpuset, cpu and cpuacct
// hierarchies), detected at run time.
//
// DP threads never live in the pool's cgroup: a cpuset write overwrites the
// affinity of every task in it, and on kernels with CONFIG_RT_GROUP_SCHED a
// SCHED_FIFO thread cannot live in a child cpu cgroup anyway. Adopt refuses
// real-time threads for that reason.
//
// Crash safety: the cgroup outlives the daemon. Start adopts a group left by a
// previous run (even one killed with SIGKILL) and shrinks it back to the CP
// cores; Close shrinks it and leaves its tasks runnable; Destroy removes it.
package vcpu
