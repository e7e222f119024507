package vcpu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// Helper modes: the test binary re-executes itself to play a daemon that
// gets SIGKILLed, or a process with a real-time thread.
const helperEnv = "TAICHI_VCPU_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "crash":
		crashHelper()
	case "mixed":
		mixedHelper()
	case "hog":
		for start := time.Now(); time.Since(start) < time.Minute; {
		}
		os.Exit(0)
	case "sleep":
		time.Sleep(30 * time.Second)
		os.Exit(0)
	case "parent":
		parentHelper()
	case "exec-on-input":
		execOnInput()
	}
	os.Exit(3)
}

// crashHelper starts a pool, adopts the processes named by argv[0] regex,
// lends the DP core, says "ready" and waits to be killed.
func crashHelper() {
	p, err := NewCgroup(Options{Name: os.Getenv("POOL_NAME"), CPCores: []int{cpCore}, DPCores: []int{dpCore}})
	fail := func(err error) { fmt.Println("error:", err); os.Exit(1) }
	if err != nil {
		fail(err)
	}
	if err := p.Start(context.Background()); err != nil {
		fail(err)
	}
	pids, err := Scan(Selector{Commands: []*regexp.Regexp{regexp.MustCompile(os.Getenv("POOL_MATCH"))}})
	if err != nil {
		fail(err)
	}
	if n, err := p.Adopt(pids); err != nil || n == 0 {
		fail(fmt.Errorf("adopt %v: %d, %v", pids, n, err))
	}
	if err := p.Lend(dpCore); err != nil {
		fail(err)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
}

// mixedHelper runs one SCHED_FIFO thread (a stand-in DP thread, asleep) and
// prints its tid.
func mixedHelper() {
	tid := make(chan int)
	go func() {
		runtime.LockOSThread()
		attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 10}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		tid <- unix.Gettid()
		select {}
	}()
	fmt.Println(<-tid)
	time.Sleep(time.Minute)
}

// parentHelper waits for a line on stdin, then starts a child (a sleeper)
// and prints its pid: a CP process forking after it was adopted.
func parentHelper() {
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(1)
	}
	kid := testenv.Command(os.Args[0], "-test.run=^$")
	kid.Env = append(os.Environ(), helperEnv+"=sleep")
	if err := kid.Start(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(kid.Process.Pid)
	_ = kid.Wait()
}

// startHelper re-executes the test binary in a helper mode and returns it
// with the first line it printed.
func startHelper(t *testing.T, mode string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := testenv.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+mode)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "error:") {
		t.Fatalf("helper %s: %s", mode, line)
	}
	return cmd, line
}

func byName(name string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(name) + "$")
}

// adoptHogs starts n busy children under a unique argv[0] and adopts them
// by that name, the way a config's command selector would.
func adoptHogs(t testing.TB, p Pool, n int) []int {
	t.Helper()
	return adoptHogsNamed(t, p, n, uniqueName(t)+"-hog")
}

func adoptHogsNamed(t testing.TB, p Pool, n int, name string) []int {
	t.Helper()
	var want []int
	for range n {
		want = append(want, startChild(t, name, "hog"))
	}
	slices.Sort(want)
	pids, err := Scan(Selector{Commands: []*regexp.Regexp{byName(name)}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, want) {
		t.Fatalf("Scan(%q) = %v, want %v", name, pids, want)
	}
	adopted, err := p.Adopt(pids)
	if err != nil || adopted != n {
		t.Fatalf("Adopt(%v) = %d, %v; want %d, nil", pids, adopted, err, n)
	}
	members, err := p.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !slices.Contains(members, pid) {
			t.Fatalf("pid %d not in Members() = %v", pid, members)
		}
	}
	return pids
}

// TestLendReclaimMovesAdoptedProcesses: adopted CP processes may run on the
// DP core while it is lent (one pinned there does), and leave it when it is
// reclaimed (the pinned one too).
func TestLendReclaimMovesAdoptedProcesses(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	// Two hogs so that the load balancer has a reason to use the lent core.
	hogs := adoptHogs(t, p, 2)
	for _, pid := range hogs {
		if got := allowedCPUs(t, pid); !slices.Equal(got, []int{cpCore}) {
			t.Fatalf("adopted pid %d: Cpus_allowed_list %v, want [%d]", pid, got, cpCore)
		}
	}

	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if got := p.CPUs(); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("CPUs() after Lend = %v", got)
	}
	for _, pid := range hogs {
		if got := allowedCPUs(t, pid); !slices.Equal(got, []int{cpCore, dpCore}) {
			t.Fatalf("pid %d after Lend: Cpus_allowed_list %v, want [%d %d]", pid, got, cpCore, dpCore)
		}
	}
	// One hog is pinned there (the cpuset allows it now): whether the load
	// balancer moves one by itself depends on what else runs on the DP core
	// (in one CI run no hog went there within 5 s).
	var set unix.CPUSet
	set.Set(dpCore)
	if err := unix.SchedSetaffinity(hogs[0], &set); err != nil {
		t.Fatalf("pinning adopted pid %d to lent CPU %d: %v", hogs[0], dpCore, err)
	}
	eventually(t, fmt.Sprintf("an adopted hog runs on lent CPU %d", dpCore), func() bool {
		return slices.ContainsFunc(hogs, func(pid int) bool { return lastCPU(t, pid) == dpCore })
	})
	if p.h.version() == "v1" {
		// The processor field says where a task is queued; cpuacct proves
		// it actually ran there.
		eventually(t, fmt.Sprintf("CP time accounted on lent CPU %d", dpCore), func() bool {
			u, err := p.Usage()
			if err != nil {
				t.Fatal(err)
			}
			return u.PerCPUAvailable && len(u.PerCPU) > dpCore && u.PerCPU[dpCore] > 0
		})
	}

	if err := p.Reclaim(dpCore); err != nil {
		t.Fatal(err)
	}
	for _, pid := range hogs {
		if got := allowedCPUs(t, pid); !slices.Equal(got, []int{cpCore}) {
			t.Fatalf("pid %d after Reclaim: Cpus_allowed_list %v, want [%d]", pid, got, cpCore)
		}
	}
	eventually(t, fmt.Sprintf("all hogs left reclaimed CPU %d", dpCore), func() bool {
		return !slices.ContainsFunc(hogs, func(pid int) bool { return lastCPU(t, pid) != cpCore })
	})
	u, err := p.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Total <= 0 {
		t.Fatalf("Usage() = %+v: hogs ran but no CP time", u)
	}
}

// TestPinnedDPThreadKeepsAffinity: a DP thread outside the pool keeps its
// pinning and its real-time policy while the pool's cpuset changes.
func TestPinnedDPThreadKeepsAffinity(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	hogs := adoptHogs(t, p, 1)

	dpTid := make(chan int)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with us
		var set unix.CPUSet
		set.Set(dpCore)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
			dpTid <- 0
			return
		}
		attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 10}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			t.Error(err)
			dpTid <- 0
			return
		}
		dpTid <- unix.Gettid()
		<-stop // asleep: a DP loop waiting for packets
	}()
	tid := <-dpTid
	t.Cleanup(func() { close(stop); <-done })
	if tid == 0 {
		t.FailNow()
	}
	check := func(when string) {
		t.Helper()
		if got := allowedCPUs(t, tid); !slices.Equal(got, []int{dpCore}) {
			t.Fatalf("%s: DP thread %d Cpus_allowed_list %v, want [%d]", when, tid, got, dpCore)
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil || attr.Policy != unix.SCHED_FIFO {
			t.Fatalf("%s: DP thread %d policy %+v, %v; want SCHED_FIFO", when, tid, attr, err)
		}
	}
	for i := range 3 {
		if err := p.Lend(dpCore); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after Lend #%d", i))
		if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, []int{cpCore, dpCore}) {
			t.Fatalf("CP hog after Lend: %v (the write must have reached the pool)", got)
		}
		if err := p.Reclaim(dpCore); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after Reclaim #%d", i))
		if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, []int{cpCore}) {
			t.Fatalf("CP hog after Reclaim: %v", got)
		}
	}
}

// TestRestartAfterKill: a daemon that lent the DP core dies by SIGKILL; the
// next pool of the same name reconciles the group instead of making another.
func TestRestartAfterKill(t *testing.T) {
	m := requireCgroups(t)
	name := uniqueName(t)
	hogName := name + "-hog"
	hog := startChild(t, hogName, "hog")

	// Registered before the helper starts, so that it runs after the
	// helper has been killed.
	t.Cleanup(func() {
		if err := DestroyGroup(name, nil); err != nil {
			t.Errorf("cleanup of %s: %v", name, err)
		}
	})
	daemon, _ := startHelper(t, "crash", "POOL_NAME="+name, "POOL_MATCH="+byName(hogName).String())
	if got := allowedCPUs(t, hog); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("before the kill: hog allowed %v, want the lent core too", got)
	}
	if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = daemon.Wait()
	// The lent core stays lent while nobody runs: that is what Start fixes.
	if got := allowedCPUs(t, hog); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("after the kill: hog allowed %v; expected the stale lend to persist", got)
	}

	p := startPool(t, Options{Name: name})
	if got, err := readCPUList(p.h.cpusFile()); err != nil || !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("%s after restart = %v, %v; want [%d]", p.h.cpusFile(), got, err, cpCore)
	}
	if got := allowedCPUs(t, hog); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("after restart: hog allowed %v, want [%d]", got, cpCore)
	}
	members, err := p.Members()
	if err != nil || !slices.Equal(members, []int{hog}) {
		t.Fatalf("Members() after restart = %v, %v; want [%d]", members, err, hog)
	}
	requireRunning(t, hog)
	eventually(t, "the hog runs on the CP core", func() bool { return lastCPU(t, hog) == cpCore })
	// No duplicate groups: exactly one directory of that name (and one of
	// its confined sibling) per hierarchy.
	for _, root := range []string{m.CPUSet, m.CPU, m.CPUAcct, m.Unified} {
		if root == "" {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(root, name+"*"))
		matches = slices.DeleteFunc(matches, func(d string) bool { return d == filepath.Join(root, ConfinedName(name)) })
		if len(matches) > 1 {
			t.Fatalf("duplicate groups under %s: %v", root, matches)
		}
	}
}

// TestCloseLeavesTasksRunnable: Close shrinks to the CP cores and keeps the
// group with its tasks for the next Start.
func TestCloseLeavesTasksRunnable(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	hogs := adoptHogs(t, p, 1)
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Lend(dpCore); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lend after Close = %v, want ErrClosed", err)
	}
	if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("after Close: hog allowed %v, want [%d]", got, cpCore)
	}
	if members, err := p.Members(); err != nil || !slices.Equal(members, hogs) {
		t.Fatalf("Members() after Close = %v, %v; want %v", members, err, hogs)
	}
	requireRunning(t, hogs[0])
}

// TestAdoptRefusals: kernel threads, taichi itself and real-time threads
// never join the pool; a process with one real-time thread joins without it
// where the layout moves single threads (v1).
func TestAdoptRefusals(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})

	kthreadd := 2
	n, err := p.Adopt([]int{kthreadd, os.Getpid()})
	if n != 0 || len(skipErrors(err)) != 2 {
		t.Fatalf("Adopt(kthreadd, self) = %d, %v; want 0 and two SkipErrors", n, err)
	}

	chrt, lerr := exec.LookPath("chrt")
	if lerr == nil {
		cmd := exec.Command(chrt, "-f", "10", "sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		// chrt sets the policy after its own exec: wait for it.
		eventually(t, "chrt made the child SCHED_FIFO", func() bool {
			attr, err := unix.SchedGetAttr(cmd.Process.Pid, 0)
			return err == nil && attr.Policy == unix.SCHED_FIFO
		})
		n, err = p.Adopt([]int{cmd.Process.Pid})
		if n != 0 || len(skipErrors(err)) == 0 {
			t.Fatalf("Adopt(SCHED_FIFO sleep) = %d, %v; want 0 and a SkipError", n, err)
		}
	} else {
		t.Log("chrt not installed: single-threaded real-time case not run")
	}

	helper, line := startHelper(t, "mixed")
	var rtTid int
	if _, err := fmt.Sscan(line, &rtTid); err != nil {
		t.Fatalf("helper said %q", line)
	}
	pid := helper.Process.Pid
	n, err = p.Adopt([]int{pid})
	skips := skipErrors(err)
	if len(skips) == 0 || !slices.ContainsFunc(skips, func(s *SkipError) bool { return s.TID == rtTid }) {
		t.Fatalf("Adopt(mixed process): error %v does not report real-time thread %d", err, rtTid)
	}
	if got := allowedCPUs(t, rtTid); !slices.Equal(got, allOnline(t)) {
		t.Fatalf("real-time thread %d affinity changed to %v", rtTid, got)
	}
	if !p.h.threadGranular() {
		if n != 0 {
			t.Fatalf("Adopt(mixed process) on %s = %d, want 0", p.Backend(), n)
		}
		return
	}
	if n != 1 {
		t.Fatalf("Adopt(mixed process) = %d, want 1 (its other threads)", n)
	}
	tasks, err := readIDs(filepath.Join(p.h.(*cgroupV1).cpusetDir, "tasks"))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tasks, rtTid) || len(tasks) == 0 {
		t.Fatalf("group tasks %v: want the other threads of %d and not real-time thread %d", tasks, pid, rtTid)
	}
	if members, err := p.Members(); err != nil || !slices.Contains(members, pid) {
		t.Fatalf("Members() = %v, %v; want %d in it", members, err, pid)
	}
}

func allOnline(t *testing.T) []int {
	online, err := linuxsched.OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	return online
}

// TestClassApplied checks the group-level class files on the real layout.
func TestClassApplied(t *testing.T) {
	m := requireCgroups(t)
	idle := startPool(t, Options{Name: uniqueName(t) + "-idle", Class: ClassIdle})
	low := startPool(t, Options{Name: uniqueName(t) + "-low", Class: ClassLowWeight, Weight: 20})
	switch h := idle.h.(type) {
	case *cgroupV1:
		if exists(filepath.Join(m.CPU, "cpu.idle")) {
			if v, err := readString(filepath.Join(h.cpuDir, "cpu.idle")); err != nil || v != "1" {
				t.Fatalf("idle class: cpu.idle = %q, %v; want 1", v, err)
			}
		}
		lh := low.h.(*cgroupV1)
		if v, err := readString(filepath.Join(lh.cpuDir, "cpu.shares")); err != nil || v != "204" {
			t.Fatalf("low-weight 20: cpu.shares = %q, %v; want 204", v, err)
		}
	case *cgroupV2:
		if v, err := readString(filepath.Join(h.dir, "cpu.idle")); err != nil || v != "1" {
			t.Fatalf("idle class: cpu.idle = %q, %v; want 1", v, err)
		}
		if v, err := readString(filepath.Join(low.h.(*cgroupV2).dir, "cpu.weight")); err != nil || v != "20" {
			t.Fatalf("cpu.weight = %q, %v; want 20", v, err)
		}
	}
}

func TestLendRejectsNonDPCore(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	err := p.Lend(cpCore)
	if err == nil || !strings.Contains(err.Error(), "not a DP core") {
		t.Fatalf("Lend(CP core) = %v, want an error saying it is not a DP core", err)
	}
	if got := p.CPUs(); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("CPUs() after a refused Lend = %v", got)
	}
}

// TestChildrenFollow: a process forked by an adopted one is a member too,
// confined to the pool's CPUs, without anyone adopting it.
func TestChildrenFollow(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	parent := startParent(t)
	if n, err := p.Adopt([]int{parent.pid}); n != 1 || err != nil {
		t.Fatalf("Adopt(parent) = %d, %v", n, err)
	}
	kid := parent.fork()
	members, err := p.Members()
	if err != nil || !slices.Contains(members, kid) {
		t.Fatalf("Members() = %v, %v; want the child %d forked after adoption", members, err, kid)
	}
	if got := allowedCPUs(t, kid); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("child allowed %v, want [%d]", got, cpCore)
	}
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if got := allowedCPUs(t, kid); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("child allowed %v after Lend, want [%d %d]", got, cpCore, dpCore)
	}
}

// TestDestroyGroupLeftover: teardown of a group a dead run left behind puts
// its tasks back, unconfined and running, and removes the group everywhere.
func TestDestroyGroupLeftover(t *testing.T) {
	m := requireCgroups(t)
	name := uniqueName(t)
	p, err := newCgroupPool(Options{Name: name, CPCores: []int{cpCore}, DPCores: []int{dpCore}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DestroyGroup(name, nil) })
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	hogs := adoptHogs(t, p, 1)
	p.abandon() // as if killed: nothing shrunk, nothing removed
	if err := DestroyGroup(name, nil); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{m.CPUSet, m.CPU, m.CPUAcct, m.Unified} {
		if root != "" && exists(filepath.Join(root, name)) {
			t.Fatalf("%s still exists", filepath.Join(root, name))
		}
	}
	if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, allOnline(t)) {
		t.Fatalf("hog allowed %v after teardown, want all online CPUs", got)
	}
	requireRunning(t, hogs[0])
	if err := DestroyGroup(name, nil); err != nil {
		t.Fatalf("second DestroyGroup: %v", err)
	}
}
