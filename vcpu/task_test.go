package vcpu

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSetPolicyKeepsNice changes the policy of a thread of its own through
// sched_setattr and back, without privileges (SCHED_NORMAL <-> SCHED_BATCH
// at a raised nice value), so the sched_attr round trip also runs as arm64
// under qemu-user: policy and nice must come back as written.
func TestSetPolicyKeepsNice(t *testing.T) {
	type result struct {
		batch, normal *unix.SchedAttr
		err           error
	}
	done := make(chan result)
	go func() {
		// The thread stays locked: it exits with the goroutine, and its
		// changed nice value with it.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		tid := unix.Gettid()
		if r.err = unix.Setpriority(unix.PRIO_PROCESS, tid, 7); r.err != nil {
			return
		}
		if r.err = setPolicy(tid, unix.SCHED_BATCH); r.err != nil {
			return
		}
		if r.batch, r.err = unix.SchedGetAttr(tid, 0); r.err != nil {
			return
		}
		if r.err = setPolicy(tid, unix.SCHED_NORMAL); r.err != nil {
			return
		}
		r.normal, r.err = unix.SchedGetAttr(tid, 0)
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.batch.Policy != unix.SCHED_BATCH || r.batch.Nice != 7 {
		t.Errorf("after setPolicy(SCHED_BATCH): policy %d nice %d, want %d and 7", r.batch.Policy, r.batch.Nice, unix.SCHED_BATCH)
	}
	if r.normal.Policy != unix.SCHED_NORMAL || r.normal.Nice != 7 {
		t.Errorf("after setPolicy(SCHED_NORMAL): policy %d nice %d, want %d and 7", r.normal.Policy, r.normal.Nice, unix.SCHED_NORMAL)
	}
}
