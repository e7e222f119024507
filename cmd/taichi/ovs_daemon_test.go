package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/eval"
	"github.com/taichi-sched/taichi/internal/cpushare"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
)

// pingSink sends count echoes from the generator to the sink through OVS,
// interval apart, and returns how many came back.
func pingSink(t *testing.T, tb *testbed.Testbed, count int, interval time.Duration) int {
	t.Helper()
	n, _, err := tb.PingSink(context.Background(), count, interval)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitEcho waits until one echo gets through OVS (a fresh port may not be
// polled yet).
func waitEcho(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	if err := tb.WaitSinkEcho(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
}

// pmdOnCore returns the OVS app's status and its thread on cpu, if any.
func pmdOnCore(t *testing.T, e *daemonEnv, cpu int) (dpdk.Status, *dpdk.ThreadStatus) {
	t.Helper()
	st := e.status(t)
	if len(st.DPDK) != 1 {
		return dpdk.Status{}, nil
	}
	app := st.DPDK[0]
	for i := range app.Threads {
		if th := &app.Threads[i]; th.CPU == cpu && th.Pinned {
			return app, th
		}
	}
	return app, nil
}

// The daemon adopts a private Open vSwitch with DPDK on the testbed under
// the taichi policy: it pins the PMD thread to the DP core, lends the core
// while no packet comes and reclaims it at the probe's warning for the next
// one, follows the PMD when OVS recreates it, and a real ping through OVS
// gets every reply in every phase.
func TestDaemonAdoptsOVSAndLendsItsPMD(t *testing.T) {
	needRootCgroups(t)
	if _, err := os.Stat(ovs.VswitchdBinary); err != nil {
		testenv.Require(t, "ovs-vswitchd-dpdk not installed (Debian package openvswitch-switch-dpdk)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "od")
	e := newDaemonEnv(t, "taichi", "^no-such-cp-task$")
	dp, cp := e.dp[0], e.cp[0]
	inst, err := eval.StartOVS(ctx, tb, filepath.Join(t.TempDir(), "ovs"), dp, cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("ovs stop: %v", err)
		}
	})
	// The bench's config lends after a few ms without packets, so the core
	// is lent between the echoes of the sparse pings below.
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", eval.OVSDataplaneYAML(inst, tb, dp), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.start(t)

	var first *dpdk.ThreadStatus
	waitFor(t, "the PMD pinned to the DP core", func() bool { _, first = pmdOnCore(t, e, dp); return first != nil })
	if !regexp.MustCompile(ovs.PMDThreadPattern).MatchString(first.Name) {
		t.Fatalf("pinned thread %q is no PMD", first.Name)
	}
	waitEcho(t, tb)
	if got := pingSink(t, tb, 100, 10*time.Millisecond); got != 100 {
		t.Fatalf("busy PMD: %d of 100 echoes answered", got)
	}

	// Idle: the core is lent. Sparse echoes: each finds it lent and is
	// answered after a reclaim.
	waitFor(t, "the idle PMD's core lent", func() bool {
		app, _ := pmdOnCore(t, e, dp)
		return app.Idle != nil && app.Idle.Demoted
	})
	checkLentPMDShare(t, e, inst, dp, first.TID)
	checkSparseEchoesReclaimed(t, e, tb, dp)

	// OVS recreates its PMD (the last port goes and comes back): the
	// daemon pins the new thread and lends it again.
	second := recreatePMD(t, ctx, e, inst, tb, first.TID)
	waitEcho(t, tb)
	if got := pingSink(t, tb, 100, 10*time.Millisecond); got != 100 {
		t.Fatalf("recreated PMD: %d of 100 echoes answered", got)
	}
	waitFor(t, "the new PMD's core lent", func() bool {
		app, th := pmdOnCore(t, e, dp)
		return app.Idle != nil && app.Idle.Demoted && th != nil && th.TID == second.TID
	})
	if got := pingSink(t, tb, 10, 100*time.Millisecond); got != 10 {
		t.Fatalf("lent recreated PMD: %d of 10 echoes answered", got)
	}

	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	// Released, not stopped: OVS keeps forwarding without taichi.
	if err := syscall.Kill(inst.PID(), 0); err != nil {
		t.Fatalf("ovs-vswitchd gone after the daemon stopped: %v", err)
	}
	if got := pingSink(t, tb, 20, 10*time.Millisecond); got != 20 {
		t.Fatalf("after the daemon stopped: %d of 20 echoes answered", got)
	}
}

// checkLentPMDShare: lent, the core is CP's: a CP hog in a session of its
// own (another autogroup) gets at least 90% of what it and the PMD (pmdTID)
// ran, by the hog's own clock (the idle group lends to any session, which
// SCHED_IDLE alone did not).
func checkLentPMDShare(t *testing.T, e *daemonEnv, inst *ovs.Instance, dp, pmdTID int) {
	t.Helper()
	hog, err := cpushare.StartHog(dp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hog.Sample(); err != nil {
		t.Fatal(err)
	}
	pmdRun0, err := linuxsched.RunTime(inst.PID(), pmdTID)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	win, err := hog.Sample()
	pmdRun1, _ := linuxsched.RunTime(inst.PID(), pmdTID)
	hog.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if app, _ := pmdOnCore(t, e, dp); app.Idle == nil || !app.Idle.Demoted {
		t.Fatalf("the core was reclaimed during the share window, with no traffic sent: %+v", app.Idle)
	}
	if share := win.Against(pmdRun1 - pmdRun0); share < 0.9 {
		t.Fatalf("lent PMD core: the CP hog got %.3f of the hog+PMD time (%v), want >= 0.9", share, win)
	} else {
		t.Logf("lent PMD core: CP hog got %.3f of the hog+PMD time (whole-core share %.3f)", share, win.Share())
	}
}

// checkSparseEchoesReclaimed: 20 sparse echoes are all answered, most of
// them finding the core lent, and the probe's warning reclaims some.
func checkSparseEchoesReclaimed(t *testing.T, e *daemonEnv, tb *testbed.Testbed, dp int) {
	t.Helper()
	before, _ := pmdOnCore(t, e, dp)
	if got := pingSink(t, tb, 20, 100*time.Millisecond); got != 20 {
		t.Fatalf("lent PMD: %d of 20 echoes answered", got)
	}
	after, _ := pmdOnCore(t, e, dp)
	if after.Idle.Promotions-before.Idle.Promotions < 10 || after.Idle.Demotions-before.Idle.Demotions < 10 {
		t.Fatalf("20 sparse echoes: %d reclaims and %d lends, want each echo to find the core lent (>= 10 each)",
			after.Idle.Promotions-before.Idle.Promotions, after.Idle.Demotions-before.Idle.Demotions)
	}
	if after.Idle.ProbeReclaims == before.Idle.ProbeReclaims {
		t.Fatalf("no reclaim came from the probe under the taichi policy: %+v", after.Idle)
	}
}

// recreatePMD unpatches and repatches OVS's bridge, so OVS recreates its
// PMD, and returns the new PMD once the daemon pinned it.
func recreatePMD(t *testing.T, ctx context.Context, e *daemonEnv, inst *ovs.Instance, tb *testbed.Testbed, oldTID int) *dpdk.ThreadStatus {
	t.Helper()
	if err := inst.Unpatch(ctx, "br-eval"); err != nil {
		t.Fatal(err)
	}
	if err := inst.Patch(ctx, "br-eval",
		ovs.Port{Iface: tb.DPIface, PeerMAC: tb.GenMAC}, ovs.Port{Iface: tb.DPOutIface, PeerMAC: tb.SinkMAC}); err != nil {
		t.Fatal(err)
	}
	var pmd *dpdk.ThreadStatus
	waitFor(t, "the new PMD pinned", func() bool {
		_, pmd = pmdOnCore(t, e, e.dp[0])
		return pmd != nil && pmd.TID != oldTID
	})
	return pmd
}

// TestMain lets the test binary serve as the CP hog of the share test.
func TestMain(m *testing.M) {
	cpushare.RunHogIfRequested()
	os.Exit(m.Run())
}
