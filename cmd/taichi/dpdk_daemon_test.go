package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// dpdkDaemonEnv is a daemon env whose config launches the real
// dpdk-testpmd on the testbed's DP interfaces, its worker lcore on the DP
// core; it returns the env and testpmd's EAL file prefix.
func dpdkDaemonEnv(t *testing.T, ctx context.Context, policy string) (*daemonEnv, string) {
	t.Helper()
	needRootCgroups(t)
	testenv.NeedTool(t, "dpdk-testpmd", "dpdk-dev")
	tb := upTestbed(t, ctx, "dd")
	e := newDaemonEnv(t, policy, "^no-such-cp-task$")
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
	return e, prefix
}

// waitDPDKPinned waits until status shows the app's worker lcore pinned to
// the DP core in the class of its state (static: SCHED_OTHER, lending
// allowed: SCHED_FIFO), and returns the app's status.
func waitDPDKPinned(t *testing.T, e *daemonEnv) dpdk.Status {
	t.Helper()
	var app dpdk.Status
	waitFor(t, "lcore pinned", func() bool {
		st := e.status(t)
		if len(st.DPDK) != 1 {
			return false
		}
		app = st.DPDK[0]
		for _, th := range app.Threads {
			class := map[string]string{"static": "SCHED_OTHER", "ready": "SCHED_FIFO", "lent": "SCHED_OTHER"}[th.State]
			if th.CPU == e.dp[0] && th.Pinned && th.Policy == class && app.Yield != "" {
				return true
			}
		}
		return false
	})
	return app
}

// waitGone waits until pid has exited (or is a zombie awaiting its reaper).
func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	waitFor(t, what, func() bool { return syscall.Kill(pid, 0) != nil || processState(pid) == "Z" })
}

// The daemon launches a configured DPDK application (the real dpdk-testpmd
// on the testbed's DP interfaces), pins its worker lcore to the DP core with
// SCHED_FIFO, reports it in status, and stops it on SIGTERM.
func TestDaemonLaunchesAndPinsDPDK(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, _ := dpdkDaemonEnv(t, ctx, "static")
	d := e.start(t)
	app := waitDPDKPinned(t, e)
	if !app.Running || !app.Launched || app.PID == 0 {
		t.Fatalf("DPDK app status %+v", app)
	}
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	waitGone(t, "SIGTERM to stop the launched DPDK application", app.PID)
}

// pidsRunning lists processes whose command line contains every part.
func pidsRunning(t *testing.T, parts ...string) []int {
	t.Helper()
	dirs, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || processState(pid) == "Z" {
			continue
		}
		b, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		match := len(b) > 0
		for _, p := range parts {
			match = match && strings.Contains(cmdline, p)
		}
		if match {
			pids = append(pids, pid)
		}
	}
	return pids
}

// kill -9 of the daemon, then a restart: the application the first daemon
// launched is adopted back (not launched twice), exactly one copy and one
// guard run, and its lcore is pinned again; SIGTERM then stops it.
func TestDaemonReadoptsDPDKAfterKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, prefix := dpdkDaemonEnv(t, ctx, "static")
	d := e.start(t)
	first := waitDPDKPinned(t, e)
	guards := pidsRunning(t, e.bin, "dpdk guard")
	if len(guards) != 1 {
		t.Fatalf("guards before the kill: %v, want one", guards)
	}

	d.Process.Signal(syscall.SIGKILL)
	d.Wait()
	// The old guard sees the daemon's pipe close and ends by itself.
	waitGone(t, "the dead daemon's guard to exit", guards[0])
	if syscall.Kill(first.PID, 0) != nil {
		t.Fatal("the DPDK application died with the daemon")
	}

	d = e.start(t)
	again := waitDPDKPinned(t, e)
	if again.PID != first.PID || !again.Readopted {
		t.Errorf("after restart: pid %d readopted %v; want the first launch (pid %d) adopted back", again.PID, again.Readopted, first.PID)
	}
	if apps := pidsRunning(t, "dpdk-testpmd", prefix); len(apps) != 1 {
		t.Errorf("dpdk-testpmd processes with prefix %s: %v, want exactly one", prefix, apps)
	}
	if g := pidsRunning(t, e.bin, "dpdk guard"); len(g) != 1 || g[0] == guards[0] {
		t.Errorf("guards after restart: %v, want one new guard (old %d)", g, guards[0])
	}

	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	waitGone(t, "SIGTERM to stop the re-adopted DPDK application", first.PID)
}
