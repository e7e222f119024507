package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/trafficgen"
)

// When all CP on a lent core is kernel-heavy (a dentry storm nothing
// confines), packets wait past the SLO: the guard benches the core, which
// leaves the CP cpuset with its loop SCHED_OTHER, not a throttled
// SCHED_FIFO spinner.
func TestGuardBenchesCoreWhenKernelHeavyCPBreaksSLO(t *testing.T) {
	needRootCgroups(t)
	if _, err := exec.LookPath("stress-ng"); err != nil {
		t.Skip("stress-ng not installed (Debian package stress-ng)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "gd")

	// The storm waits at a gate until the daemon adopted the gate's shell
	// by pid, so every worker starts inside the CP pool.
	stressDir := t.TempDir()
	storm := exec.Command("sh", "-c", "read go; exec stress-ng --dentry 2 --temp-path "+stressDir+" --timeout 90s --quiet")
	gate, err := storm.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	storm.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-storm.Process.Pid, unix.SIGKILL); storm.Wait() })

	e := newDaemonEnv(t, "taichi", "^no-such-cp-task$")
	dp := e.dp[0]
	cfg := strings.Replace(mustRead(t, e.cfgPath), "adopt: {commands: [\"^no-such-cp-task$\"]}", fmt.Sprintf("adopt: {pids: [%d]}", storm.Process.Pid), 1)
	cfg = strings.Replace(cfg, "probe: {backend: none}\n", fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: %s, netns: %s, cpu: %d}]
dataplane:
  loops: [{name: gd, cpu: %d, iface: %s, netns: %s}]
scheduler: {slo: 300us, guard_backoff: 3s, blockers: {enabled: false}}
`, tb.NICIn, tb.NICNS, dp, dp, tb.DPIface, tb.DPNS), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.start(t)
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
	waitFor(t, "the storm's gate adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	if _, err := io.WriteString(gate, "go\n"); err != nil {
		t.Fatal(err)
	}
	gate.Close()

	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		trafficgen.Run(tctx, trafficgen.Options{
			NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: e.cp[0],
			Rate: 10000, Count: 600000, Pattern: trafficgen.PatternOnOff,
			On: 10 * time.Millisecond, Off: 30 * time.Millisecond, Deadline: 60 * time.Second,
		})
	}()
	defer func() { stopTraffic(); wg.Wait() }()

	// The claim is checked while the core is benched (3 s from the trip).
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := e.status(t)
		var core *daemon.CoreStatus
		for i, c := range st.Cores {
			if c.CPU == dp {
				core = &st.Cores[i]
			}
		}
		if core != nil && core.GuardTrips > 0 && core.Hold == "guard" {
			if core.InPool {
				t.Fatalf("benched core %d is still in the CP cpuset", dp)
			}
			c, err := linuxsched.Get(st.Loops[0].TID)
			if err != nil {
				t.Fatal(err)
			}
			if c.Policy != unix.SCHED_NORMAL {
				t.Fatalf("benched core's loop is %s, want SCHED_OTHER (a SCHED_FIFO spinner is RT-throttled)", c)
			}
			t.Logf("guard tripped %d time(s): slo %v; window p99 %v", core.GuardTrips, st.SLO.Value, st.Scheduler.Cores[0].SLOWindowP99)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guard never benched core %d under a dentry storm; status cores %+v, scheduler %+v", dp, st.Cores, st.Scheduler.Cores)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
