package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/topology"
	"github.com/taichi-sched/taichi/trafficgen"
	"github.com/taichi-sched/taichi/vcpu"
)

// daemonEnv is one isolated daemon setup: its own cgroup name, socket and
// state dir, so tests never touch a real installation.
type daemonEnv struct {
	bin, cfgPath, socket, group string
	dp, cp                      []int
	// stderr, when set, gets a copy of the daemon's log (started after).
	stderr io.Writer
}

func needRootCgroups(t testing.TB) {
	t.Helper()
	testenv.NeedRoot(t, "cgroups")
	if _, err := os.Stat("/sys/fs/cgroup/cpuset/cpuset.cpus"); err != nil {
		if _, err2 := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err2 != nil {
			testenv.Require(t, "no cpuset cgroup hierarchy")
		}
	}
	topo, err := topology.Host()
	if err != nil || len(topo.Online) < 2 {
		testenv.Require(t, "needs at least 2 online CPUs")
	}
}

// upTestbed brings up a testbed named prefix plus this process's pid,
// taken down when t ends; t is skipped when no testbed can be built here.
func upTestbed(t *testing.T, ctx context.Context, prefix string) *testbed.Testbed {
	t.Helper()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)})
	if err != nil {
		testenv.Require(t, "testbed: %v", err)
	}
	t.Cleanup(func() { tb.Down() })
	return tb
}

func newDaemonEnv(t testing.TB, policy string, commandRE string) *daemonEnv {
	t.Helper()
	needRootCgroups(t)
	dir := t.TempDir()
	e := &daemonEnv{
		bin:    buildTaichi(t),
		socket: filepath.Join(dir, "taichi.sock"),
		group:  fmt.Sprintf("taichi.test%d", os.Getpid()),
	}
	topo, _ := topology.Host()
	e.dp, e.cp = topo.DefaultSplit()
	yaml := fmt.Sprintf(`policy: %s
control: {socket: %s}
state_dir: %s
metrics: {listen: ""}
probe: {backend: none}
vcpu: {cgroup_name: %s, rescan: 100ms, adopt: {commands: [%q]}}
`, policy, e.socket, filepath.Join(dir, "state"), e.group, commandRE)
	e.cfgPath = filepath.Join(dir, "taichi.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeGroup(e.group) })
	return e
}

// removeGroup moves leftover tasks to the root and removes the test group
// and its confined sibling.
func removeGroup(name string) {
	for _, ctrl := range []string{"cpuset", "cpu", "cpuacct", "unified"} {
		removeOneGroup(ctrl, vcpu.ConfinedName(name))
		removeOneGroup(ctrl, name)
	}
}

func removeOneGroup(ctrl, name string) {
	dir := filepath.Join("/sys/fs/cgroup", ctrl, name)
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, pid := range strings.Fields(string(b)) {
			os.WriteFile(filepath.Join("/sys/fs/cgroup", ctrl, "cgroup.procs"), []byte(pid), 0o644)
		}
	}
	os.Remove(dir)
}

func (e *daemonEnv) start(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(e.bin, "run", "--config", e.cfgPath)
	cmd.Stderr = os.Stderr
	if e.stderr != nil {
		cmd.Stderr = io.MultiWriter(os.Stderr, e.stderr)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM, not SIGKILL: a clean stop also ends the DP hosts it started.
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	// A bound, not a wait: under load (-race, stress-ng beside it) a
	// start that derives the SLO took 10 s here.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := daemon.Call(e.socket, daemon.Request{Cmd: "status"}); err == nil {
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("daemon did not answer on its control socket within 30s")
	return nil
}

func (e *daemonEnv) status(t testing.TB) *daemon.Status {
	t.Helper()
	out, err := exec.Command(e.bin, "status", "--json", "--socket", e.socket).Output()
	if err != nil {
		t.Fatalf("taichi status: %v", err)
	}
	var st daemon.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return &st
}

func (e *daemonEnv) groupCPUs(t *testing.T) []int {
	t.Helper()
	for _, p := range []string{"/sys/fs/cgroup/cpuset/" + e.group + "/cpuset.cpus", "/sys/fs/cgroup/" + e.group + "/cpuset.cpus"} {
		if b, err := os.ReadFile(p); err == nil {
			cpus, err := cpuset.Parse(string(b))
			if err != nil {
				t.Fatal(err)
			}
			return cpus
		}
	}
	t.Fatalf("group %s has no cpuset", e.group)
	return nil
}

// spawnCP starts a busy process under a unique command name (a copy of sh),
// bounded to three minutes (the kill test runs that long), so selectors can
// find it.
func spawnCP(t testing.TB, name string) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	src, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", "end=$(($(date +%s)+180)); while [ $(date +%s) -lt $end ]; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func allowedCPUs(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			cpus, err := cpuset.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			return cpus
		}
	}
	t.Fatal("no Cpus_allowed_list")
	return nil
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitForEvery(t, what, 10*time.Second, 50*time.Millisecond, cond)
}

// waitForEvery checks cond every `every` until it holds, failing after within.
func waitForEvery(t testing.TB, what string, within, every time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(every)
	}
}

func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

func TestDaemonAdoptsLendsAndSwitchesPolicy(t *testing.T) {
	name := fmt.Sprintf("cpw%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	cp := spawnCP(t, name)
	d := e.start(t)

	waitFor(t, "CP process adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	st := e.status(t)
	if st.Policy != "dynamic" {
		t.Errorf("policy = %s", st.Policy)
	}
	// Blocker-aware lending watches under dynamic and never confines.
	if st.Blockers == nil || (st.Blockers.State != daemon.BlockersWatching && st.Blockers.State != daemon.BlockersUnavailable) {
		t.Errorf("status blockers = %+v, want watching (or unavailable with a reason)", st.Blockers)
	} else if st.Blockers.State == daemon.BlockersUnavailable {
		testenv.Require(t, "blocker tracer unavailable here: %s", st.Blockers.Error)
	}
	if out, err := exec.Command(e.bin, "blockers", "--socket", e.socket).CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "blockers ") {
		t.Errorf("taichi blockers: %v\n%s", err, out)
	}
	for _, cpu := range e.dp {
		if !slices.Contains(allowedCPUs(t, cp.Process.Pid), cpu) {
			t.Errorf("dynamic: DP core %d not allowed for the CP task (allowed %v)", cpu, allowedCPUs(t, cp.Process.Pid))
		}
	}
	var dpStates []string
	for _, c := range st.Cores {
		if c.Role == "dp" {
			dpStates = append(dpStates, c.State)
		}
	}
	if len(dpStates) != len(e.dp) || dpStates[0] != daemon.StateLent {
		t.Errorf("dp core states = %v, want lent", dpStates)
	}

	// Run-time switch through the control socket.
	if out, err := exec.Command(e.bin, "policy", "set", "static", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("policy set: %v %s", err, out)
	}
	if got := allowedCPUs(t, cp.Process.Pid); !slices.Equal(got, e.cp) {
		t.Errorf("static: CP task allowed on %v, want CP cores %v", got, e.cp)
	}
	if out, err := exec.Command(e.bin, "policy", "set", "greedy", "--socket", e.socket).CombinedOutput(); err == nil || !strings.Contains(string(out), "policy") {
		t.Errorf("unknown policy accepted: %v %s", err, out)
	}
	info, err := os.Stat(e.socket)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}

	// Under taichi blockers are confined (the policy decides, within a recheck).
	if st.Blockers != nil && st.Blockers.State == daemon.BlockersWatching {
		if err := exec.Command(e.bin, "policy", "set", "taichi", "--socket", e.socket).Run(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "blocker confinement on under taichi", func() bool {
			b := e.status(t).Blockers
			return b != nil && b.State == daemon.BlockersConfining
		})
	}

	// SIGTERM: the pool shrinks to CP cores, CP stays runnable.
	if err := exec.Command(e.bin, "policy", "set", "dynamic", "--socket", e.socket).Run(); err != nil {
		t.Fatal(err)
	}
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	if got := e.groupCPUs(t); !slices.Equal(got, e.cp) {
		t.Errorf("after SIGTERM group cpus = %v, want %v", got, e.cp)
	}
	if s := processState(cp.Process.Pid); s != "R" && s != "S" {
		t.Errorf("CP task state after SIGTERM = %q, want runnable", s)
	}
}

func TestDaemonKill9ThenRestartReconciles(t *testing.T) {
	name := fmt.Sprintf("cpk%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	cp := spawnCP(t, name)
	d := e.start(t)
	waitFor(t, "CP process adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	if got := e.groupCPUs(t); !slices.Contains(got, e.dp[0]) {
		t.Fatalf("DP core not lent before the kill: %v", got)
	}

	d.Process.Signal(syscall.SIGKILL)
	d.Wait()
	// Dead daemon: CP tasks still runnable (the cpuset still allows them).
	if s := processState(cp.Process.Pid); s != "R" && s != "S" {
		t.Fatalf("CP task state after kill -9 = %q", s)
	}

	// Restart with static: the group is adopted (not duplicated) and shrunk.
	os.WriteFile(e.cfgPath, []byte(strings.Replace(mustRead(t, e.cfgPath), "policy: dynamic", "policy: static", 1)), 0o644)
	e.start(t)
	if got := e.groupCPUs(t); !slices.Equal(got, e.cp) {
		t.Errorf("after restart group cpus = %v, want CP cores %v", got, e.cp)
	}
	if got := allowedCPUs(t, cp.Process.Pid); !slices.Equal(got, e.cp) {
		t.Errorf("CP task allowed on %v after restart, want %v", got, e.cp)
	}
	matches, _ := filepath.Glob("/sys/fs/cgroup/cpuset/" + e.group + "*")
	matches = slices.DeleteFunc(matches, func(d string) bool { return d == "/sys/fs/cgroup/cpuset/"+vcpu.ConfinedName(e.group) })
	if len(matches) > 1 {
		t.Errorf("duplicate groups: %v", matches)
	}
	if st := e.status(t); st.Pool.Members < 1 {
		t.Errorf("members after restart = %d, want the adopted task kept", st.Pool.Members)
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// backgroundTraffic sends o from the testbed's generator namespace until
// its own bounds or the returned stop, which waits for the sender to end.
func backgroundTraffic(ctx context.Context, o trafficgen.Options) (stop func()) {
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		trafficgen.Run(tctx, o)
	}()
	return func() { cancel(); <-done }
}
