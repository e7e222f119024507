package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
	"github.com/taichi-sched/taichi/vcpu"
)

// dentryStorm is a Python dentry storm (create, unlink, look up missing
// names, remove the directory): system calls whose kernel paths hold the
// CPU for long stretches. It stops after a minute or when its dir goes.
const dentryStorm = `import os, sys, time
d = sys.argv[1]
end = time.time() + 60
try:
    while time.time() < end:
        p = os.path.join(d, "r")
        os.mkdir(p)
        for i in range(2000):
            os.close(os.open(p + "/" + str(i), os.O_CREAT | os.O_WRONLY, 0o600))
        for i in range(2000):
            os.unlink(p + "/" + str(i))
            try:
                os.stat(p + "/x" + str(i))
            except FileNotFoundError:
                pass
        os.rmdir(p)
except OSError:
    pass  # its directory went: the test is over
`

// mildKernelUser reads small /proc files and lists a directory every 2 ms:
// system calls whose kernel paths are short. (An `ip addr` churn in a
// shell forked and exec'd five commands a round, and exec's kernel paths
// held the DP core for longer than the rule's mark on this VM now and
// then: the rule rightly confined it in some runs.)
const mildKernelUser = `import os, time
end = time.time() + 90
while time.time() < end:
    with open("/proc/self/status") as f:
        f.read()
    os.listdir("/proc/self/fd")
    time.sleep(0.002)
`

// TestDaemonConfinesKernelStorm: the SLO rule in the daemon. Under
// taichi, with a DP loop carrying traffic on the lent DP core, a
// kernel-heavy CP process (a dentry storm) and a mild kernel user (small
// /proc reads) share that core: the storm is confined to the CP cores and
// shown in `taichi blockers` with the blamed delay that confined it, the
// mild one is never confined for the storm's delays, and the packets'
// residence p99 from the confinement on stays within the SLO; SIGTERM
// releases the storm into the pool, runnable.
func TestDaemonConfinesKernelStorm(t *testing.T) {
	needRootCgroups(t)
	// Debian's interpreter itself (a python3 on PATH may be a wrapper
	// script, whose process would be named after the shell).
	python, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		testenv.Require(t, "needs /usr/bin/python3 (Debian: python3) for the storm")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "bk")
	name := fmt.Sprintf("storm%d", os.Getpid()%100000)
	mild := fmt.Sprintf("mild%d", os.Getpid()%100000)
	const slo = 500 * time.Microsecond
	e := newDaemonEnv(t, "taichi", "^("+name+"|"+mild+")$")
	dp := e.dp[0]
	writeStormConfig(t, e, tb, slo)
	d := e.start(t)
	// On any failure stop the daemon with SIGTERM, which stops its DP loop
	// processes (a SIGKILLed daemon leaves them running, by design).
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.Process.Signal(syscall.SIGTERM)
			d.Wait()
		}
	})
	if b := blockersOf(t, e); b.State == daemon.BlockersUnavailable {
		testenv.Require(t, "blocker tracer unavailable: %s", b.Error)
	}
	waitFor(t, "the DP loop's thread watched", func() bool {
		b := blockersOf(t, e)
		return b.State == daemon.BlockersConfining && len(b.DPThreads) == 1
	})

	// Steady traffic through the loop for the whole test.
	defer backgroundTraffic(ctx, trafficgen.Options{
		NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: e.cp[0],
		Rate: 10000, Count: 900000, Deadline: 90 * time.Second,
	})()

	// Both CP tasks run under their own command names (symlinks: comm
	// follows the name they were started by) and are adopted by the
	// selector.
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	storm := startNamed(t, dir, name, python, "-c", dentryStorm, work)
	churn := startNamed(t, dir, mild, python, "-c", mildKernelUser)
	pid := storm.Process.Pid
	waitFor(t, "both CP tasks adopted", func() bool { return e.status(t).Pool.Members >= 2 })
	// They run on the DP core, as CP work the kernel put there would (the
	// core is lent while its loop idles).
	var set unix.CPUSet
	set.Set(dp)
	// The mild one first: once the storm is there, the rule's pressure
	// takes the core out of the pool at times, and a pin only takes while
	// the core is in it. Either may have reached the lent core before its
	// pin (the kernel balances the pool onto it) and been confined for
	// what it did there: the storm for its storm, the mild one for its
	// interpreter's start-up (in one CI run 3 holds, 4.1 ms in all, before
	// any pin). A confined task's cpuset holds only CP cores, so no pin
	// takes then; checkOnlyStormConfined judges the cause.
	for _, p := range []struct {
		what string
		pid  int
	}{{"the mild CP task", churn.Process.Pid}, {"the storm", pid}} {
		waitFor(t, p.what+" pinned to the lent DP core, or confined", func() bool {
			return unix.SchedSetaffinity(p.pid, &set) == nil || isConfined(t, e, p.pid)
		})
	}

	task := waitTaskConfined(t, e, pid)
	// From the confinement on, with the mild user still on the DP core,
	// the packets' residence p99 stays within the SLO.
	residence := func() dataplane.Histogram { return e.status(t).Loops[0].Stats.Residence }
	fromConfined := residence()
	time.Sleep(10 * time.Second)
	after := residence().Sub(fromConfined)
	t.Logf("residence over 10s after the confinement: %d packets, p99 %v, max %v (SLO %v)", after.Count, after.Quantile(0.99), time.Duration(after.MaxNs), slo)
	if after.Count < 50000 || after.Quantile(0.99) > slo {
		t.Errorf("after the confinement: %d packets, residence p99 %v; want at least 50000 within the SLO %v", after.Count, after.Quantile(0.99), slo)
	}
	checkOnlyStormConfined(t, e, blockersOf(t, e), task, name, mild, pid, churn.Process.Pid, slo)

	// SIGTERM releases it into the pool (on the CP cores), still running.
	stopped = true
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	cg := mustRead(t, fmt.Sprintf("/proc/%d/cgroup", pid))
	if strings.Contains(cg, vcpu.ConfinedName(e.group)) || !strings.Contains(cg, "/"+e.group+"\n") {
		t.Errorf("storm's cgroups after SIGTERM:\n%s\nwant the pool's group %s", cg, e.group)
	}
	if s := processState(pid); s != "R" && s != "S" && s != "D" {
		t.Errorf("storm state after SIGTERM = %q, want running", s)
	}
}

// writeStormConfig adds the storm test's DP loop, SLO, back-offs and XDP
// probe to e's config. The back-off outlasts the test: the claims are about
// the storm while it is confined (with a 5 s back-off, one CI run saw it
// released, rightly, after 9.5 s and quiet windows, before the checks).
func writeStormConfig(t *testing.T, e *daemonEnv, tb *testbed.Testbed, slo time.Duration) {
	t.Helper()
	dp := e.dp[0]
	extra := fmt.Sprintf(`dataplane:
  loops: [{name: bk, cpu: %d, iface: %s, netns: %s}]
scheduler:
  slo: %s
  blockers: {backoff: 60s, max_backoff: 120s}
`, dp, tb.DPIface, tb.DPNS, slo)
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: %s, netns: %s, cpu: %d}]
`, tb.NICIn, tb.NICNS, dp), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg+extra), 0o644); err != nil {
		t.Fatal(err)
	}
}

// blockersOf is `taichi blockers --json` of the daemon in e.
func blockersOf(t *testing.T, e *daemonEnv) *daemon.BlockersStatus {
	t.Helper()
	out, err := exec.Command(e.bin, "blockers", "--json", "--socket", e.socket).Output()
	if err != nil {
		t.Fatalf("taichi blockers --json: %v", err)
	}
	var b daemon.BlockersStatus
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("blockers JSON: %v\n%s", err, out)
	}
	return &b
}

// startNamed starts target under a symlink called name in dir, so the
// process's command name is name; it is killed when t ends.
func startNamed(t *testing.T, dir, name, target string, args ...string) *exec.Cmd {
	t.Helper()
	link := filepath.Join(dir, name)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	c := exec.Command(link, args...)
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// confinedEntry is pid's entry in `taichi blockers` while it is confined.
func confinedEntry(t *testing.T, e *daemonEnv, pid int) (daemon.BlockerStatus, bool) {
	t.Helper()
	for _, b := range blockersOf(t, e).Tasks {
		if b.PID == pid && b.ConfinedUntil != nil {
			return b, true
		}
	}
	return daemon.BlockerStatus{}, false
}

// isConfined: `taichi blockers` shows pid confined.
func isConfined(t *testing.T, e *daemonEnv, pid int) bool {
	_, ok := confinedEntry(t, e, pid)
	return ok
}

// waitTaskConfined waits up to 30s for `taichi blockers` to show pid
// confined, and returns its entry.
func waitTaskConfined(t *testing.T, e *daemonEnv, pid int) daemon.BlockerStatus {
	t.Helper()
	var task daemon.BlockerStatus
	confined := func() (ok bool) {
		task, ok = confinedEntry(t, e, pid)
		return ok
	}
	for deadline := time.Now().Add(30 * time.Second); !confined(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(blockersOf(t, e), "", " ")
			c, _ := json.Marshal(e.status(t).Cores)
			t.Fatalf("storm %d not confined within 30s (allowed %v); blockers:\n%s\ncores: %s", pid, allowedCPUs(t, pid), b, c)
		}
	}
	return task
}

// checkOnlyStormConfined: the storm (stormPID, command name) is confined
// off the DP core with the blamed delay that confined it, and counted in
// the status; the mild kernel user (mildPID, command mild) is not, unless
// for holds of its own of at least the SLO in a window.
func checkOnlyStormConfined(t *testing.T, e *daemonEnv, b *daemon.BlockersStatus, task daemon.BlockerStatus, name, mild string, stormPID, mildPID int, slo time.Duration) {
	t.Helper()
	dp := e.dp[0]
	mildForCause := false
	for _, c := range b.Commands {
		if c.Comm == mild {
			// Only on its own evidence: a hold of its own past the rule's
			// marks (this VM's kernel holds a DP thread for a millisecond
			// now and then behind any system call), never the storm's.
			if c.Why == nil || c.Why.PID != mildPID || c.Why.BlamedUs < float64(slo.Microseconds()) {
				t.Errorf("the mild kernel user's command %q was confined without %v of its own delay in a window: %+v", c.Comm, slo, c)
			} else {
				mildForCause = true
				t.Logf("the mild kernel user was confined for holds of its own: %+v", *c.Why)
			}
		}
		if c.Comm == name && (c.Why == nil || c.Why.BlamedUs <= 0 || c.Why.CPU != dp) {
			t.Errorf("storm's command %+v: want why with its blamed delay on cpu %d", c, dp)
		}
	}
	// Not confined: still in the pool's own group. (Its allowed CPUs are
	// no proxy: a core benched for a breach nothing could be confined for,
	// such as a kernel thread's, leaves the whole pool on the CP cores.)
	if cg := mustRead(t, fmt.Sprintf("/proc/%d/cgroup", mildPID)); !mildForCause && (strings.Contains(cg, vcpu.ConfinedName(e.group)) ||
		!strings.Contains(cg, "/"+e.group+"\n")) {
		t.Errorf("mild user %d was confined; its cgroups:\n%s", mildPID, cg)
	}
	if out, err := exec.Command(e.bin, "blockers", "--socket", e.socket).CombinedOutput(); err == nil {
		t.Logf("taichi blockers:\n%s", out)
	}
	if task.Comm != name || task.InKernel == 0 || task.WorstUs <= 0 {
		t.Errorf("blocker entry %+v, want comm %s caught in the kernel", task, name)
	}
	cg := mustRead(t, fmt.Sprintf("/proc/%d/cgroup", stormPID))
	if !strings.Contains(cg, "/"+vcpu.ConfinedName(e.group)+"\n") {
		t.Errorf("confined storm's cgroups:\n%s\nwant %s", cg, vcpu.ConfinedName(e.group))
	}
	if got := allowedCPUs(t, stormPID); slices.Contains(got, dp) {
		t.Errorf("confined storm allowed on %v, want the DP core %d excluded", got, dp)
	}
	if st := e.status(t); st.Blockers == nil || st.Blockers.Confined < 1 {
		t.Errorf("status blockers %+v, want the confined storm counted", st.Blockers)
	}
}
