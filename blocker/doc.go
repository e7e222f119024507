// Package blocker finds the tasks that delay data-plane (DP) threads and
// decides which of them to keep off DP cores.
//
// Tracer is an eBPF tracer on the scheduler's tp_btf tracepoints: for each
// wake of a watched DP thread it measures wake→run delay and names the task
// that held the CPU when the thread finally ran, flagging whether that task
// was in a kernel path (the paths a kernel without full preemption cannot
// interrupt). It also reports the start of processes whose command was
// learned as a blocker.
//
// Confiner is the policy, pure and driven by a clock: it aggregates blame
// per process, confines a process whose blame within a window passes a
// threshold (with a back-off that doubles on repeat), confines its
// same-command siblings and new processes of that command at exec, and
// releases each when its back-off ends. It acts through an Actuator (the
// vCPU pool's confined group).
package blocker
