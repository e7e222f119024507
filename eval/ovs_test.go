package eval

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/scheduler"
)

// The OVS bench forwards ping through a private OVS-DPDK under each setup
// (the reference, ovs-maxsleep, taichi), and once closed leaves nothing:
// no OVS daemon of its run directory, no DPDK runtime directory, no
// namespace, no cgroup of the daemon or of the PMD's core.
func TestOVSBenchPingsAndLeavesNothing(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat(ovs.VswitchdBinary); err != nil {
		testenv.Require(t, "ovs-vswitchd-dpdk not installed (Debian package openvswitch-switch-dpdk)")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpuset/cpuset.cpus"); err != nil {
		testenv.Require(t, "needs the v1 cpuset controller")
	}
	prefix := fmt.Sprintf("tov%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := StartBench(ctx, BenchOptions{Prefix: prefix, InProcessLoops: true, DP: DPOVS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	exe, _ := os.Executable()
	b.Env.GoHelper = []string{exe}
	b.Env.GoHelperEnv = []string{helperEnv + "=1"}
	runDir, filePrefix := b.ovs.RunDir(), b.ovs.FilePrefix()
	group := b.Daemon.Config().VCPU.CgroupName
	if b.Env.CapacityPPS < 100 {
		t.Fatalf("capacity through OVS: %d pps", b.Env.CapacityPPS)
	}

	rep, err := RunPing(ctx, b.Env, PingConfig{Policies: []scheduler.PolicyName{SetupOVSMaxSleep, scheduler.PolicyTaichi},
		Count: 50, Interval: 10 * time.Millisecond, CPLoad: CPLoadUser})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 3 {
		t.Fatalf("%d runs, want the reference and two setups", len(rep.Runs))
	}
	for _, r := range rep.Runs {
		if r.Error != "" || len(r.CPLoadErrors) > 0 || r.Ping == nil || r.Ping.Received != 50 {
			t.Errorf("%s (cp %s): ping %+v, error %q, CP load %v", r.Policy, r.CPLoad, r.Ping, r.Error, r.CPLoadErrors)
		}
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if pids, err := ovs.StrayPIDs(runDir); err != nil || len(pids) > 0 {
		t.Errorf("OVS daemons of %s still running: %v %v", runDir, pids, err)
	}
	for _, p := range []string{runDir, filepath.Join("/var/run/dpdk", filePrefix)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	assertNoLeftovers(t, prefix)
	ents, _ := os.ReadDir("/sys/fs/cgroup/cpu")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), group) {
			t.Errorf("cpu cgroup %s left behind", e.Name())
		}
	}
}
