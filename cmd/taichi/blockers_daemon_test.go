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
	"github.com/taichi-sched/taichi/internal/testenv"
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

// TestDaemonConfinesKernelStorm: the daemon under taichi, with a DP loop on
// the DP core, names a kernel-heavy CP process that runs on the lent DP
// core, confines it to the CP cores and shows it in `taichi blockers`;
// SIGTERM releases it into the pool, runnable.
func TestDaemonConfinesKernelStorm(t *testing.T) {
	needRootCgroups(t)
	// Debian's interpreter itself (a python3 on PATH may be a wrapper
	// script, whose process would be named after the shell).
	python, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		testenv.Require(t, "needs /usr/bin/python3 (Debian: python3) for the storm")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "bk")
	name := fmt.Sprintf("storm%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "taichi", "^"+name+"$")
	dp := e.dp[0]
	extra := fmt.Sprintf(`dataplane:
  loops: [{name: bk, cpu: %d, iface: %s, netns: %s}]
scheduler:
  slo: 1s
  blockers: {backoff: 5s, max_backoff: 20s}
`, dp, tb.DPIface, tb.DPNS)
	if err := os.WriteFile(e.cfgPath, []byte(mustRead(t, e.cfgPath)+extra), 0o644); err != nil {
		t.Fatal(err)
	}
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
	blockers := func() *daemon.BlockersStatus {
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
	if b := blockers(); b.State == daemon.BlockersUnavailable {
		testenv.Require(t, "blocker tracer unavailable: %s", b.Error)
	}
	waitFor(t, "the DP loop's thread watched", func() bool {
		b := blockers()
		return b.State == daemon.BlockersConfining && len(b.DPThreads) == 1
	})

	// The storm runs under its own command name (a symlink: comm follows
	// the name it was started by) and is adopted by the selector.
	dir := t.TempDir()
	link := filepath.Join(dir, name)
	if err := os.Symlink(python, link); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	storm := exec.Command(link, "-c", dentryStorm, work)
	storm.Stderr = os.Stderr
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	pid := storm.Process.Pid
	t.Cleanup(func() { os.RemoveAll(work); storm.Process.Kill(); storm.Wait() })
	waitFor(t, "the storm adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	// It runs on the DP core, as CP work the kernel put there would (the
	// core is lent while its loop idles).
	var set unix.CPUSet
	set.Set(dp)
	waitFor(t, "the storm pinned to the lent DP core", func() bool { return unix.SchedSetaffinity(pid, &set) == nil })

	var task daemon.BlockerStatus
	confined := func() bool {
		for _, b := range blockers().Tasks {
			if b.PID == pid && b.ConfinedUntil != nil {
				task = b
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(20 * time.Second); !confined(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(blockers(), "", " ")
			c, _ := json.Marshal(e.status(t).Cores)
			t.Fatalf("storm %d not confined within 20s (allowed %v); blockers:\n%s\ncores: %s", pid, allowedCPUs(t, pid), b, c)
		}
	}
	if out, err := exec.Command(e.bin, "blockers", "--socket", e.socket).CombinedOutput(); err == nil {
		t.Logf("taichi blockers:\n%s", out)
	}
	if task.Comm != name || task.InKernel == 0 || task.WorstUs <= 0 {
		t.Errorf("blocker entry %+v, want comm %s caught in the kernel", task, name)
	}
	cg := mustRead(t, fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(cg, "/"+vcpu.ConfinedName(e.group)+"\n") {
		t.Errorf("confined storm's cgroups:\n%s\nwant %s", cg, vcpu.ConfinedName(e.group))
	}
	if got := allowedCPUs(t, pid); slices.Contains(got, dp) {
		t.Errorf("confined storm allowed on %v, want the DP core %d excluded", got, dp)
	}
	if st := e.status(t); st.Blockers == nil || st.Blockers.Confined < 1 {
		t.Errorf("status blockers %+v, want the confined storm counted", st.Blockers)
	}

	// SIGTERM releases it into the pool (on the CP cores), still running.
	stopped = true
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	cg = mustRead(t, fmt.Sprintf("/proc/%d/cgroup", pid))
	if strings.Contains(cg, vcpu.ConfinedName(e.group)) || !strings.Contains(cg, "/"+e.group+"\n") {
		t.Errorf("storm's cgroups after SIGTERM:\n%s\nwant the pool's group %s", cg, e.group)
	}
	if s := processState(pid); s != "R" && s != "S" && s != "D" {
		t.Errorf("storm state after SIGTERM = %q, want running", s)
	}
}
