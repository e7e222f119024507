package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
)

// withTestbedLoop brings up a testbed and adds one DP loop named loop (with
// the XDP probe on the testbed's NIC hop) to e's config.
func withTestbedLoop(t testing.TB, ctx context.Context, e *daemonEnv, prefix, loop string) *testbed.Testbed {
	t.Helper()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)})
	if err != nil {
		testenv.Require(t, "testbed: %v", err)
	}
	t.Cleanup(func() { tb.Down() })
	dp := e.dp[0]
	extra := fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: %s, netns: %s, cpu: %d}]
dataplane:
  loops: [{name: %s, cpu: %d, iface: %s, netns: %s}]
`, tb.NICIn, tb.NICNS, dp, loop, dp, tb.DPIface, tb.DPNS)
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", extra, 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return tb
}

// A second `taichi run` on the same config exits non-zero naming the running
// daemon's pid, and changes nothing: the first daemon's DP host keeps
// running, the pool keeps its cores, the first daemon keeps answering.
func TestSecondRunChangesNothing(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("cp2r%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	withTestbedLoop(t, ctx, e, "s", "sdp")
	spawnCP(t, name)
	first := e.start(t)
	waitFor(t, "CP process adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	st := e.status(t)
	if len(st.Loops) != 1 || !st.Loops[0].Alive {
		t.Fatalf("loop not running: %+v", st.Loops)
	}
	hostPID := st.Loops[0].PID
	cpusBefore := e.groupCPUs(t)

	out, err := exec.Command(e.bin, "run", "--config", e.cfgPath).CombinedOutput()
	var exit *exec.ExitError
	if err == nil || !errors.As(err, &exit) {
		t.Fatalf("second taichi run: err = %v, want a non-zero exit\n%s", err, out)
	}
	if !strings.Contains(string(out), "pid "+strconv.Itoa(first.Process.Pid)) {
		t.Errorf("second taichi run does not name the holder (pid %d):\n%s", first.Process.Pid, out)
	}
	if err := syscall.Kill(hostPID, 0); err != nil || processState(hostPID) == "Z" {
		t.Fatalf("the second taichi run stopped the first daemon's DP host (pid %d): %v\n%s", hostPID, err, out)
	}
	after := e.status(t)
	if after.PID != first.Process.Pid || len(after.Loops) != 1 || after.Loops[0].PID != hostPID || !after.Loops[0].Alive {
		t.Errorf("first daemon after the second run: pid %d loops %+v", after.PID, after.Loops)
	}
	if got := e.groupCPUs(t); !slices.Equal(got, cpusBefore) {
		t.Errorf("pool cpus changed from %v to %v", cpusBefore, got)
	}
}
