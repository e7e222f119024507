package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/kmod/internal/uapi"
	"golang.org/x/sys/unix"
)

// blocker: a CP thread on the DP core spins in the kernel with a spinlock
// held while CPU 0 kicks the DP thread; the IPI must catch it.
func blocker(d *kmod.Device) {
	found := produceBlocker(d)
	if found == nil {
		return
	}
	out, _ := json.Marshal(found)
	fmt.Printf("BLOCKER %s\n", out)
	if !found.Waited || found.WaitNs <= 0 {
		failf("blocker record has no kick->run wait: %+v", found)
	}
	switch {
	case os.Getenv(noPreemptCountEnv) == "1":
		// Without CONFIG_PREEMPT_COUNT (Debian's arm64 kernels, voluntary
		// preemption) a spinlock does not raise preempt_count: what kept the
		// DP thread waiting is the kernel's preemption model, and the record
		// must say that.
		if found.Flags&kmod.BlockerNoKPreempt == 0 {
			failf("blocker record on a kernel without preempt counting should show no kernel preemption: %+v", found)
		}
		logf("blocker: kernel without CONFIG_PREEMPT_COUNT: record flags no-kernel-preemption (preempt count %d)", found.PreemptCount)
	case found.PreemptCount&0xff == 0 || found.Flags&kmod.BlockerPreemptOff == 0:
		failf("blocker record should show preemption off (spinlock held): %+v", found)
	}
	if found.Comm != "qemutest" || found.CPU != dpCPU || found.Tgid != os.Getpid() {
		failf("blocker record names the wrong task: %+v", found)
	}

	// A copy-out to a bad pointer fails and consumes nothing.
	held, _ := d.Blockers(dpCPU, false)
	b := uapi.Blockers{CPU: dpCPU, Max: 4, Records: 0x1000, Flags: uapi.BlockersConsume}
	wantErrno("BLOCKERS bad records pointer", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EFAULT)
	if again, _ := d.Blockers(dpCPU, false); len(again) != len(held) {
		failf("failed BLOCKERS consumed records: %d before, %d after", len(held), len(again))
	}
	got, err := d.Blockers(dpCPU, true)
	if err != nil || len(got) != len(held) {
		failf("consume: %d records err %v, want %d", len(got), err, len(held))
	}
	if left, _ := d.Blockers(dpCPU, false); len(left) != 0 {
		failf("%d records left after consume", len(left))
	}
	logf("blocker ok")
}

// blockerAttempts bounds produceBlocker's tries; each holds the DP CPU
// holdsPerAttempt times 8 ms in a row.
const (
	blockerAttempts = 100
	holdsPerAttempt = 5
)

// produceBlocker kicks the DP core while a CP thread holds the test
// spinlock there until a record names it (at most blockerAttempts tries).
func produceBlocker(d *kmod.Device) *kmod.Blocker {
	dp, err := startDP(d)
	if err != nil {
		failf("%v", err)
		return nil
	}
	defer func() {
		if err := dp.stop(); err != nil {
			failf("%v", err)
		}
	}()
	holdCmd := make(chan struct{})
	holdDone := make(chan error)
	cpTid := make(chan int, 1)
	cp := thread(dpCPU, false, func() error {
		cpTid <- unix.Gettid()
		for range holdCmd {
			// Back-to-back holds, each within the module's limit: the
			// kick must land in one of them, and under TCG the kicking
			// vCPU may not run again for tens of milliseconds.
			var err error
			for i := 0; i < holdsPerAttempt && err == nil; i++ {
				err = d.TestHold(8 * time.Millisecond)
			}
			holdDone <- err
		}
		return nil
	})
	defer func() {
		close(holdCmd)
		if err := await("CP thread", cp, 5*time.Second); err != nil {
			failf("CP thread: %v", err)
		}
	}()
	tid := <-cpTid

	// Under TCG the kick's IPI often lands after the holds ended (one
	// host thread runs both vCPUs): a miss costs ~40 ms, so try often.
	for attempt := 0; attempt < blockerAttempts; attempt++ {
		dp.cmd <- 2 * time.Second
		time.Sleep(time.Millisecond)
		holdCmd <- struct{}{}
		time.Sleep(2 * time.Millisecond) // the CP thread is now spinning on CPU 1
		if _, err := d.Kick(dpCPU); err != nil {
			failf("kick: %v", err)
			return nil
		}
		if _, ok := dp.result("blocker kick"); !ok {
			return nil
		}
		if err := <-holdDone; err != nil {
			failf("TEST_HOLD: %v", err)
			return nil
		}
		recs, err := d.Blockers(dpCPU, false)
		if err != nil {
			failf("blockers: %v", err)
			return nil
		}
		for i := range recs {
			// The IP may be in a helper the hold loop calls (under TCG
			// often read_hpet): then the hold is among the callers.
			path := recs[i].Symbol + " " + strings.Join(recs[i].Callers, " ")
			if recs[i].Pid == tid && strings.Contains(path, "taichi_test_hold_spin") {
				return &recs[i]
			}
		}
	}
	st, _ := d.Stats(dpCPU)
	recs, _ := d.Blockers(dpCPU, false)
	failf("no blocker record naming taichi_test_hold_spin for tid %d after %d kicks (stats %+v, records %+v)", tid, blockerAttempts, st, recs)
	return nil
}
