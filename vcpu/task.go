package vcpu

import (
	"fmt"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// pfKthread is PF_KTHREAD in /proc/PID/stat's flags: a kernel thread.
const pfKthread = 0x00200000

// isRealtime reports the policies of DP threads: they must stay outside the
// pool (a cpuset write would overwrite their affinity; with
// CONFIG_RT_GROUP_SCHED they cannot even join a child cpu cgroup).
func isRealtime(policy uint) bool {
	return policy == unix.SCHED_FIFO || policy == unix.SCHED_RR || policy == unix.SCHED_DEADLINE
}

type threadState struct {
	tid    int
	policy uint
}

// processState is what Adopt needs to know about a process.
type processState struct {
	tgid    int
	kernel  bool
	threads []threadState
}

// inspectProcess resolves pid (a thread group id or any thread's id) to its
// thread group and reads each thread's scheduling policy.
func inspectProcess(fs procfs.FS, pid int) (processState, error) {
	p, err := fs.Proc(pid)
	if err != nil {
		return processState{}, err
	}
	status, err := p.NewStatus()
	if err != nil {
		return processState{}, err
	}
	st := processState{tgid: status.TGID}
	if st.tgid == 0 {
		st.tgid = pid
	}
	leader, err := fs.Proc(st.tgid)
	if err != nil {
		return processState{}, err
	}
	stat, err := leader.Stat()
	if err != nil {
		return processState{}, err
	}
	st.kernel = stat.Flags&pfKthread != 0
	threads, err := fs.AllThreads(st.tgid)
	if err != nil {
		return processState{}, err
	}
	for _, t := range threads {
		ts, err := t.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		st.threads = append(st.threads, threadState{tid: t.PID, policy: ts.Policy})
	}
	if len(st.threads) == 0 {
		// An exiting process (its threads gone, the leader a zombie) is
		// gone for every caller: ESRCH, as the kernel says of it.
		return processState{}, fmt.Errorf("vcpu: pid %d has no threads left: %w", st.tgid, unix.ESRCH)
	}
	return st, nil
}

// setPolicy sets a SCHED_OTHER-family policy (SCHED_IDLE or SCHED_NORMAL)
// on one thread, keeping its nice value.
func setPolicy(tid int, policy uint32) error {
	cur, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("vcpu: read scheduling policy of thread %d: %w", tid, err)
	}
	attr := unix.SchedAttr{Policy: policy, Nice: cur.Nice}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("vcpu: set scheduling policy %d on thread %d: %w", policy, tid, err)
	}
	return nil
}
