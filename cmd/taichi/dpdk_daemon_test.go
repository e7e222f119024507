package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/testbed"
)

// The daemon launches a configured DPDK application (the real dpdk-testpmd
// on the testbed's DP interfaces), pins its worker lcore to the DP core with
// SCHED_FIFO, reports it in status, and stops it on SIGTERM.
func TestDaemonLaunchesAndPinsDPDK(t *testing.T) {
	needRootCgroups(t)
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		t.Skip("dpdk-testpmd not installed (Debian package dpdk-dev)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("dd%d", os.Getpid()%100000)})
	if err != nil {
		t.Skipf("testbed: %v", err)
	}
	t.Cleanup(func() { tb.Down() })
	e := newDaemonEnv(t, "static", "^no-such-cp-task$")
	dp, cp := e.dp[0], e.cp[0]
	prefix := fmt.Sprintf("taichi-dd-%d", os.Getpid())
	t.Cleanup(func() { dpdk.RemoveRuntimeDir(prefix) })
	extra := fmt.Sprintf(`probe: {backend: none}
dataplane:
  dpdk:
    - name: pmd
      netns: %s
      cpus: [%d]
      priority: 10
      command: [dpdk-testpmd, --no-huge, -m, "512", --no-pci, --file-prefix, %s,
        "--vdev=net_af_packet0,iface=%s", "--vdev=net_af_packet1,iface=%s",
        -l, "%d,%d", --, --forward-mode=io, --total-num-mbufs=8192, -a, --stats-period, "1"]
`, tb.DPNS, dp, prefix, tb.DPIface, tb.DPOutIface, cp, dp)
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", extra, 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.start(t)

	var app dpdk.Status
	waitFor(t, "lcore pinned", func() bool {
		st := e.status(t)
		if len(st.DPDK) != 1 {
			return false
		}
		app = st.DPDK[0]
		for _, th := range app.Threads {
			if th.CPU == dp && th.Pinned && th.Policy == "SCHED_FIFO" {
				return true
			}
		}
		return false
	})
	if !app.Running || !app.Launched || app.PID == 0 {
		t.Fatalf("DPDK app status %+v", app)
	}
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(app.PID, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(app.PID, 0) == nil {
		syscall.Kill(app.PID, syscall.SIGKILL)
		t.Error("SIGTERM left the launched DPDK application running")
	}
}
