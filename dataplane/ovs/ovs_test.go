package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
)

// The integration tests run Debian's ovs-vswitchd-dpdk for real: in a
// testbed's DP namespace, its PMD on CPU 1 (the DP core) and its lcores on
// CPU 0, ports on the testbed's dp0 and dp1.

const (
	testPMDCPU   = 1
	testLcoreCPU = 0
	// testMaxSleep keeps the idle PMD from spinning on CPU 1, which other
	// privileged tests share.
	testMaxSleep = time.Millisecond
)

var pmdThreadRE = regexp.MustCompile(PMDThreadPattern)

func needOVS(t testing.TB) {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces, af_packet, DPDK runtime directory")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1 as the PMD core")
	}
	if _, err := os.Stat(VswitchdBinary); err != nil {
		testenv.Require(t, "%s missing (Debian package openvswitch-switch-dpdk)", VswitchdBinary)
	}
	for _, bin := range []string{"ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl"} {
		testenv.NeedTool(t, bin, "openvswitch-switch-dpdk")
	}
}

func testOptions(t testing.TB, ns string) Options {
	return Options{
		Name:      fmt.Sprintf("test%d", os.Getpid()),
		RunDir:    filepath.Join(t.TempDir(), "ovs"),
		NetNS:     ns,
		PMDCPUs:   []int{testPMDCPU},
		LcoreCPUs: []int{testLcoreCPU},
		MaxSleep:  testMaxSleep,
	}
}

func upTestbed(t testing.TB) *testbed.Testbed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("ovs%d", os.Getpid())})
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Down(); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	return tb
}

// startInstance starts OVS and stops it when the test ends, checking that
// nothing is left behind.
func startInstance(t testing.TB, o Options) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	begin := time.Now()
	inst, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("OVS started in %v (vswitchd pid %d)", time.Since(begin).Round(time.Millisecond), inst.PID())
	t.Cleanup(func() {
		if t.Failed() {
			logDiagnostics(t, inst)
		}
		begin := time.Now()
		if err := inst.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		t.Logf("OVS stopped in %v", time.Since(begin).Round(time.Millisecond))
		assertGone(t, inst.RunDir(), inst.FilePrefix(), inst.PID(), inst.OVSDBPID())
	})
	return inst
}

// logDiagnostics shows OVS's view when a test failed: bridges, flows,
// port counters, datapath flows and the end of the log.
func logDiagnostics(t testing.TB, inst *Instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := inst.Vsctl(ctx, "--no-wait", "show")
	t.Logf("ovs-vsctl show:\n%s", out)
	if br, _ := inst.Vsctl(ctx, "--no-wait", "list-br"); strings.TrimSpace(br) != "" {
		for _, cmd := range []string{"dump-flows", "dump-ports"} {
			o, err := inst.output(ctx, nil, "ovs-ofctl", cmd, "unix:"+inst.BridgeSocket(strings.Fields(br)[0]))
			t.Logf("ovs-ofctl %s: %v\n%s", cmd, err, o)
		}
	}
	c := NewClient(inst.UnixctlPath())
	defer c.Close()
	for _, cmd := range []string{"dpctl/dump-flows", "dpif-netdev/pmd-stats-show"} {
		o, err := c.Call(ctx, cmd)
		t.Logf("%s: %v\n%s", cmd, err, o)
	}
	if data, err := os.ReadFile(filepath.Join(inst.RunDir(), "vswitchd.log")); err == nil {
		t.Logf("vswitchd.log:\n%s", tail(string(data), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// assertGone checks that no daemon of runDir runs and that runDir and the
// DPDK runtime directory are gone.
func assertGone(t testing.TB, runDir, prefix string, pids ...int) {
	t.Helper()
	strays, err := StrayPIDs(runDir)
	if err != nil {
		t.Error(err)
	}
	if len(strays) > 0 {
		t.Errorf("processes with %s in their command line still run: %v", runDir, strays)
	}
	for _, pid := range pids {
		if pid > 0 && processRunning(pid) {
			t.Errorf("pid %d still runs", pid)
		}
	}
	for _, dir := range []string{runDir, filepath.Join(dpdkRuntimeDir, prefix)} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists (%v)", dir, err)
		}
	}
}

// processRunning reports whether pid exists and is not a zombie (a detached
// daemon's zombie waits for init to reap it).
func processRunning(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// pmdThreads returns the tids and names of pid's PMD threads.
func pmdThreads(t testing.TB, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		comm, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if pmdThreadRE.MatchString(name) {
			var tid int
			fmt.Sscan(e.Name(), &tid)
			out[tid] = name
		}
	}
	return out
}

// waitPMDThreads waits until pid has exactly n PMD threads.
func waitPMDThreads(t testing.TB, pid, n int) map[int]string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ts := pmdThreads(t, pid)
		if len(ts) == n {
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d has PMD threads %v, want %d", pid, ts, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping runs ping from the generator to the sink and returns how many of
// count echo requests were answered.
func ping(t testing.TB, tb *testbed.Testbed, count int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Right after Patch the PMD may not poll the new ports yet.
	if err := tb.WaitSinkEcho(ctx, 50); err != nil {
		t.Fatal(err)
	}
	n, out, err := tb.PingSink(ctx, count, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ping: %s", tail(out, 200))
	return n
}

// onTestbed starts an instance in a fresh testbed's DP namespace, the sink
// routing its replies back, and returns a context bounding the test.
func onTestbed(t testing.TB) (*testbed.Testbed, *Instance, context.Context) {
	t.Helper()
	needOVS(t)
	tb := upTestbed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	if err := tb.RouteSinkReplies(ctx); err != nil {
		t.Fatal(err)
	}
	return tb, startInstance(t, testOptions(t, tb.DPNS)), ctx
}

// testPorts are the testbed's DP interfaces, each with the MAC of the
// host behind it: requests leave dp1 for the sink, replies leave dp0 for
// the generator.
func testPorts(tb *testbed.Testbed) (a, b Port) {
	return Port{Iface: tb.DPIface, PeerMAC: tb.GenMAC}, Port{Iface: tb.DPOutIface, PeerMAC: tb.SinkMAC}
}

func TestPatchForwardsPingThroughOVS(t *testing.T) {
	tb, inst, ctx := onTestbed(t)
	a, b := testPorts(tb)
	if err := inst.Patch(ctx, "br0", a, b); err != nil {
		t.Fatal(err)
	}
	const count = 20
	if got := ping(t, tb, count); got != count {
		t.Fatalf("%d of %d pings answered", got, count)
	}

	pmds := waitPMDThreads(t, inst.PID(), 1)
	checkOVSThreadCPUs(t, inst, pmds)
	checkPMDCounters(t, ctx, inst, tb, count)

	if err := inst.SetMaxSleep(ctx, 100*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if out, err := inst.Vsctl(ctx, "get", "Open_vSwitch", ".", "other_config:pmd-maxsleep"); err != nil || strings.TrimSpace(out) != `"100"` {
		t.Fatalf("pmd-maxsleep after SetMaxSleep(100µs): %q, %v", out, err)
	}
	if err := inst.SetMaxSleep(ctx, 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "max_sleep") {
		t.Fatalf("SetMaxSleep(20ms): %v, want a max_sleep error", err)
	}

	// Removing the last port ends the PMD; patching again creates a new one.
	if err := inst.Unpatch(ctx, "br0"); err != nil {
		t.Fatal(err)
	}
	waitPMDThreads(t, inst.PID(), 0)
	if err := inst.Patch(ctx, "br0", a, b); err != nil {
		t.Fatal(err)
	}
	again := waitPMDThreads(t, inst.PID(), 1)
	for tid, name := range again {
		if _, old := pmds[tid]; old {
			t.Errorf("PMD %s kept tid %d across Unpatch/Patch", name, tid)
		}
	}
	t.Logf("PMD before %v, after Unpatch/Patch %v", pmds, again)
	if got := ping(t, tb, 5); got != 5 {
		t.Fatalf("after re-patching: %d of 5 pings answered", got)
	}
}

// checkOVSThreadCPUs: the PMDs (tid to name) may run only on the PMD CPU
// and are named after it; every other thread, and ovsdb-server, only on
// the lcore CPU.
func checkOVSThreadCPUs(t *testing.T, inst *Instance, pmds map[int]string) {
	t.Helper()
	for tid, name := range pmds {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(testPMDCPU) {
			t.Errorf("PMD %s (tid %d) may run on %d CPUs, want only CPU %d", name, tid, set.Count(), testPMDCPU)
		}
		if want := fmt.Sprintf("pmd-c%02d/", testPMDCPU); !strings.HasPrefix(name, want) {
			t.Errorf("PMD thread %q, want prefix %q", name, want)
		}
	}

	// Everything else stays on the lcore CPU, ovsdb-server too.
	var dbSet unix.CPUSet
	if err := unix.SchedGetaffinity(inst.OVSDBPID(), &dbSet); err != nil || dbSet.Count() != 1 || !dbSet.IsSet(testLcoreCPU) {
		t.Errorf("ovsdb-server may run on %d CPUs (%v), want only CPU %d", dbSet.Count(), err, testLcoreCPU)
	}
	threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", inst.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range threads {
		var tid int
		fmt.Sscan(e.Name(), &tid)
		if _, ok := pmds[tid]; ok {
			continue
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			continue // exited meanwhile
		}
		if set.Count() != 1 || !set.IsSet(testLcoreCPU) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", inst.PID(), tid))
			t.Errorf("thread %s (tid %d) may run on %d CPUs, want only CPU %d", strings.TrimSpace(string(comm)), tid, set.Count(), testLcoreCPU)
		}
	}
}

// checkPMDCounters: after count pings, one PMD on the PMD CPU saw every
// request and reply, spent cycles both idle and busy, and its packet
// counter grows with 5 more pings.
func checkPMDCounters(t *testing.T, ctx context.Context, inst *Instance, tb *testbed.Testbed, count int) {
	t.Helper()
	c := NewClient(inst.UnixctlPath())
	defer c.Close()
	stats, err := c.PMDStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].CoreID != testPMDCPU {
		t.Fatalf("PMD stats %+v, want one PMD on core %d", stats, testPMDCPU)
	}
	// Every request and every reply crossed the PMD.
	if stats[0].PacketsReceived < uint64(2*count) {
		t.Errorf("PMD received %d packets, want >= %d", stats[0].PacketsReceived, 2*count)
	}
	if stats[0].IdleCycles == 0 || stats[0].BusyCycles == 0 {
		t.Errorf("PMD cycles idle %d busy %d, want both > 0", stats[0].IdleCycles, stats[0].BusyCycles)
	}
	counter := c.PMDPacketsCounter([]int{testPMDCPU})
	before, err := counter()
	if err != nil || before < stats[0].PacketsReceived {
		t.Fatalf("counter %d, %v; want >= %d", before, err, stats[0].PacketsReceived)
	}
	if got := ping(t, tb, 5); got != 5 {
		t.Fatalf("%d of 5 pings answered", got)
	}
	if after, err := counter(); err != nil || after < before+10 {
		t.Fatalf("counter after 5 more pings %d, %v; want >= %d", after, err, before+10)
	}
}

func TestPatchRejectsAMissingInterfaceAndRollsBack(t *testing.T) {
	tb, inst, ctx := onTestbed(t)
	begin := time.Now()
	err := inst.Patch(ctx, "br0", Port{Iface: tb.DPIface}, Port{Iface: "nosuch0"})
	if err == nil {
		t.Fatal("Patch with a missing interface succeeded")
	}
	t.Logf("Patch failed after %v: %v", time.Since(begin).Round(time.Millisecond), err)
	if out, err := inst.Vsctl(ctx, "list-br"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("bridges after a failed Patch: %q, %v; want none", out, err)
	}
	// The instance still works.
	a, b := testPorts(tb)
	begin = time.Now()
	if err := inst.Patch(ctx, "br0", a, b); err != nil {
		t.Fatal(err)
	}
	t.Logf("second Patch took %v", time.Since(begin).Round(time.Millisecond))
	// An existing bridge is refused and left alone.
	if err := inst.Patch(ctx, "br0", Port{Iface: tb.DPIface}, Port{Iface: tb.DPOutIface}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("Patch of an existing bridge: %v, want an exists error", err)
	}
	if out, err := inst.Vsctl(ctx, "list-ports", "br0"); err != nil || strings.Join(strings.Fields(out), " ") != tb.DPIface+" "+tb.DPOutIface {
		t.Fatalf("ports of br0 after the refused Patch: %q, %v", out, err)
	}
}

func TestStopLeavesNothingAndIsIdempotent(t *testing.T) {
	needOVS(t)
	inst := startInstance(t, testOptions(t, ""))
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, inst.RunDir(), inst.FilePrefix(), inst.PID(), inst.OVSDBPID())
	if err := inst.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// A start cancelled half-way (once ovsdb-server, or ovs-vswitchd, has
// written its pidfile, while DPDK may still be initialising) leaves nothing
// behind.
func TestStartCancelledHalfWayLeavesNothing(t *testing.T) {
	needOVS(t)
	for _, pidfile := range []string{"ovsdb-server.pid", "vswitchd.pid"} {
		t.Run(pidfile, func(t *testing.T) {
			o := testOptions(t, "")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for ctx.Err() == nil {
					if _, err := os.Stat(filepath.Join(o.RunDir, pidfile)); err == nil {
						cancel()
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			inst, err := Start(ctx, o)
			if err == nil {
				// DPDK came up before the cancellation landed: nothing to check.
				_ = inst.Stop()
				t.Skip("start finished before it could be cancelled")
			}
			t.Logf("Start: %.300v", err)
			assertGone(t, o.RunDir, FilePrefix(o.Name))
		})
	}
}

func TestStartRefusesAFilePrefixInUse(t *testing.T) {
	needOVS(t)
	first := startInstance(t, testOptions(t, ""))
	// Same name, so the same DPDK file prefix, in another run dir: Stop of
	// the refused instance would remove the first one's runtime directory.
	o := testOptions(t, "")
	_, err := Start(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Start with the same file prefix: %v, want an in-use error", err)
	}
	if _, serr := os.Stat(o.RunDir); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("run dir after a refused start: %v", serr)
	}
	if !processRunning(first.PID()) {
		t.Fatal("the refused start hurt the running instance")
	}
}
