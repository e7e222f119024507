package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// A probe that cannot attach must not leave its DP core lendable: the core
// falls back to static and status says why.
func TestProbeFailureHoldsCoreStatic(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "pf")
	e := newDaemonEnv(t, "dynamic", "^no-such-cp-task$")
	dp := e.dp[0]
	extra := fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: nosuch0, netns: %s, cpu: %d}]
dataplane:
  loops: [{name: pf, cpu: %d, iface: %s, netns: %s}]
`, tb.NICNS, dp, dp, tb.DPIface, tb.DPNS)
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", extra, 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.start(t)
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()

	st := e.status(t)
	if st.Probe.State != "failed" || !strings.Contains(st.Probe.Error, "nosuch0") {
		t.Errorf("probe state %q error %q, want failed naming the interface", st.Probe.State, st.Probe.Error)
	}
	for _, c := range st.Cores {
		if c.CPU != dp {
			continue
		}
		if !strings.HasPrefix(c.Hold, "probe-failed") {
			t.Errorf("DP core hold = %q, want probe-failed", c.Hold)
		}
		if c.InPool {
			t.Error("DP core with a failed probe is in the CP pool")
		}
	}
	if slices.Contains(e.groupCPUs(t), dp) {
		t.Errorf("CP cpuset %v includes the held DP core", e.groupCPUs(t))
	}
	if len(st.Loops) != 1 || !st.Loops[0].Alive {
		t.Errorf("the DP loop must still run without its probe: %+v", st.Loops)
	}
}
