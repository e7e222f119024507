package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"golang.org/x/sys/unix"
)

// A DP loop is SCHED_FIFO exactly while its core is in the CP cpuset, and
// SCHED_OTHER (busy-polling, out of RT throttling's reach) otherwise.
func TestLoopIsRealtimeOnlyWhileLent(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "lc")
	e := newDaemonEnv(t, "static", "^no-such-cp-task$")
	dp := e.dp[0]
	loops := fmt.Sprintf("dataplane:\n  loops: [{name: lc, cpu: %d, iface: %s, netns: %s}]\n", dp, tb.DPIface, tb.DPNS)
	if err := os.WriteFile(e.cfgPath, []byte(mustRead(t, e.cfgPath)+loops), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.start(t)
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()

	var tid int
	waitFor(t, "the DP loop's worker thread", func() bool {
		st := e.status(t)
		if len(st.Loops) == 1 && st.Loops[0].TID > 0 {
			tid = st.Loops[0].TID
		}
		return tid > 0
	})
	policyOf := func() uint32 {
		c, err := linuxsched.Get(tid)
		if err != nil {
			t.Fatalf("loop thread %d: %v", tid, err)
		}
		return c.Policy
	}
	inPool := func() bool {
		for _, c := range e.status(t).Cores {
			if c.CPU == dp {
				return c.InPool
			}
		}
		return false
	}
	expect := func(policy string, wantPool bool, wantClass uint32) {
		t.Helper()
		resp, err := daemon.Call(e.socket, daemon.Request{Cmd: "set-policy", Policy: policy})
		if err != nil || !resp.OK {
			t.Fatalf("set-policy %s: %v %+v", policy, err, resp)
		}
		waitFor(t, fmt.Sprintf("%s: core %d in pool %v, loop class %d", policy, dp, wantPool, wantClass), func() bool {
			return inPool() == wantPool && policyOf() == wantClass
		})
		if ts, _ := linuxsched.ReadThread(0, tid); ts.LastCPU != dp {
			t.Errorf("%s: loop thread ran on CPU %d, want %d", policy, ts.LastCPU, dp)
		}
	}
	// scheduler.slo is auto by default: derived at start, shown with why.
	if slo := e.status(t).SLO; slo.Source != "auto" || slo.Value < 250*time.Microsecond || slo.Value > 2*time.Millisecond || slo.Why == "" {
		t.Errorf("auto SLO in status: %+v", slo)
	}
	expect("static", false, unix.SCHED_NORMAL)
	expect("dynamic", true, unix.SCHED_FIFO)
	expect("static", false, unix.SCHED_NORMAL)
}
