package dpdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// The test's main goroutine keeps the main thread, so the threads tests
// rename and make SCHED_FIFO are never the process's main thread.
func init() { runtime.LockOSThread() }

// needRoot skips tests that change other threads' scheduling.
func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "sched_setattr SCHED_FIFO, sched_setaffinity and cgroup moves")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1 as the DP core")
	}
}

// namedThread starts an OS thread named name that blocks until the test
// ends; it stands for an lcore without a busy loop. The thread exits with
// its goroutine (still locked), so its scheduling never leaks back into the
// Go runtime's thread pool.
func namedThread(t *testing.T, name string) int {
	t.Helper()
	tidc := make(chan int)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		cname, _ := unix.BytePtrFromString(name)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(cname)), 0, 0, 0); err != nil {
			tidc <- -1
			return
		}
		tidc <- unix.Gettid()
		<-release
	}()
	tid := <-tidc
	if tid < 0 {
		t.Fatal("prctl PR_SET_NAME failed")
	}
	t.Cleanup(func() { close(release) })
	return tid
}

func kernelState(t *testing.T, tid int) (aff []int, policy, prio uint32) {
	t.Helper()
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatalf("sched_getattr %d: %v", tid, err)
	}
	aff, err = linuxsched.Affinity(tid)
	if err != nil {
		t.Fatal(err)
	}
	return aff, attr.Policy, attr.Priority
}

func TestManagerPinsReappliesAndLends(t *testing.T) {
	needRoot(t)
	tag := fmt.Sprintf("w%d", os.Getpid()%10000) // comm holds 15 bytes
	tidA := namedThread(t, tag+"-worker-2")
	tidB := namedThread(t, tag+"-worker-1")
	other := namedThread(t, tag+"-main")

	m, err := New(Config{Name: "self", PID: os.Getpid(), ThreadPattern: "^" + tag + "-worker-[0-9]+$", CPUs: []int{1, 0}, Priority: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkPinnedAtStart(t, m, tidA, tidB, other)
	checkReconcileReapplies(t, m, tidB)

	// A thread appearing later gets no core when cpus ran out, and says so.
	late := namedThread(t, tag+"-worker-3")
	err = m.Reconcile()
	if err == nil || !strings.Contains(err.Error(), "no DP core left") {
		t.Fatalf("late thread without a core: %v", err)
	}
	if _, pol, _ := kernelState(t, late); pol != unix.SCHED_NORMAL {
		t.Fatalf("thread without a core was changed to %s", PolicyName(pol))
	}

	checkLendAndReclaim(t, m, tidB)
	checkLendingOff(t, m, tidB, other)

	// Stop reclaims lent cores and leaves an adopted process alone.
	if err := m.Demote(tidA); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); st.Yield == "" {
		t.Fatalf("status names no yield mechanism: %+v", st)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, m, tidA, "/")
	assertReleased(t, m, tidB, "/")
}

// checkPinnedAtStart: Start pinned the two workers (worker-1 to CPU 1,
// worker-2 to CPU 0) SCHED_FIFO/7 and left the other thread alone.
func checkPinnedAtStart(t *testing.T, m *Manager, tidA, tidB, other int) {
	t.Helper()
	// worker-1 sorts first and gets cpus[0] = 1; worker-2 gets cpus[1] = 0.
	for tid, cpu := range map[int]int{tidB: 1, tidA: 0} {
		aff, pol, prio := kernelState(t, tid)
		if !slices.Equal(aff, []int{cpu}) || pol != unix.SCHED_FIFO || prio != 7 {
			t.Fatalf("tid %d: affinity %v %s/%d, want [%d] SCHED_FIFO/7", tid, aff, PolicyName(pol), prio, cpu)
		}
	}
	if _, pol, _ := kernelState(t, other); pol != unix.SCHED_NORMAL {
		t.Fatalf("unmatched thread changed to %s", PolicyName(pol))
	}
	st := m.Status()
	if len(st.Threads) != 2 || !st.Running || st.Error != "" {
		t.Fatalf("status %+v", st)
	}
	for _, ts := range st.Threads {
		if !ts.Pinned || ts.Policy != "SCHED_FIFO" {
			t.Fatalf("status thread %+v", ts)
		}
	}
}

// checkReconcileReapplies: someone else changes tidB's affinity and
// class; Reconcile puts both back and counts it.
func checkReconcileReapplies(t *testing.T, m *Manager, tidB int) {
	t.Helper()
	// Someone else changes a thread: Reconcile puts it back.
	if err := linuxsched.Pin(tidB, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.SchedSetAttr(tidB, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if aff, pol, _ := kernelState(t, tidB); !slices.Equal(aff, []int{1}) || pol != unix.SCHED_FIFO {
		t.Fatalf("not re-applied: %v %s", aff, PolicyName(pol))
	}
	if got := m.Status().Reapplied; got == 0 {
		t.Fatal("re-application not counted")
	}
}

// checkLendAndReclaim lends tidB's core (CPU 1) and reclaims it; a
// Reconcile keeps the lending, and drift while lent is put back.
func checkLendAndReclaim(t *testing.T, m *Manager, tidB int) {
	t.Helper()
	// Lend and reclaim.
	if err := m.Demote(tidB); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tidB, 1, coreyield.Lent)
	_ = m.Reconcile() // must keep the demotion
	assertState(t, m, tidB, 1, coreyield.Lent)
	if err := m.Promote(tidB); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tidB, 1, coreyield.Ready)

	// Drift while lent: the thread leaves its group and changes class;
	// Reconcile puts both back.
	if err := m.Demote(tidB); err != nil {
		t.Fatal(err)
	}
	if m.yield.Mechanism() != coreyield.SchedIdle {
		if err := linuxsched.Set(tidB, linuxsched.Other(0)); err != nil {
			t.Fatal(err)
		}
		if err := linuxsched.MoveThread(cgroupMounts().V1Path("cpu"), tidB); err != nil {
			t.Fatal(err)
		}
		if ok, _ := inState(m, tidB, 1, coreyield.Lent); ok {
			t.Fatal("drift not visible")
		}
		if err := m.Reconcile(); err != nil && !strings.Contains(err.Error(), "no DP core left") {
			t.Fatal(err) // only the late thread may be unplaced
		}
		assertState(t, m, tidB, 1, coreyield.Lent)
	}
	if err := m.Promote(tidB); err != nil {
		t.Fatal(err)
	}
}

// checkLendingOff: with lending off tidB is static, on again ready; a
// thread that is no lcore cannot be demoted.
func checkLendingOff(t *testing.T, m *Manager, tidB, other int) {
	t.Helper()
	// Lending off: static class, group not idle; on again: SCHED_FIFO.
	if err := m.SetLending(false); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tidB, 1, coreyield.Static)
	if st := m.Status(); st.Threads[0].State != "static" || !st.Threads[0].Pinned {
		t.Fatalf("static status %+v", st.Threads[0])
	}
	if err := m.SetLending(true); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tidB, 1, coreyield.Ready)
	if err := m.Demote(other); !errors.Is(err, ErrNotLcore) {
		t.Fatalf("demoting a foreign thread: %v", err)
	}
}

// TestManagerMovesLcoreOutOfCgroups puts an lcore in a v1 cpu cgroup
// without RT runtime and a cpuset without its DP core, the way a CP cgroup
// would catch it; pinning must take it out to the roots.
func TestManagerMovesLcoreOutOfCgroups(t *testing.T) {
	needRoot(t)
	mounts := cgroupMounts().V1
	if mounts["cpu"] == "" || mounts["cpuset"] == "" {
		testenv.Require(t, "needs cgroup v1 cpu and cpuset hierarchies")
	}
	tag := fmt.Sprintf("tdpdkcg%d", os.Getpid())
	tid := namedThread(t, fmt.Sprintf("c%d-worker-1", os.Getpid()%10000))
	cpuDir := filepath.Join(mounts["cpu"], tag)
	setDir := filepath.Join(mounts["cpuset"], tag)
	for _, d := range []string{cpuDir, setDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Move the thread back before removing the group.
			_ = os.WriteFile(filepath.Join(filepath.Dir(d), "tasks"), []byte(strconv.Itoa(tid)), 0)
			_ = os.Remove(d)
		})
	}
	must := func(path, val string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(val), 0); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	must(filepath.Join(setDir, "cpuset.cpus"), "0")
	must(filepath.Join(setDir, "cpuset.mems"), "0")
	must(filepath.Join(setDir, "tasks"), strconv.Itoa(tid))
	must(filepath.Join(cpuDir, "tasks"), strconv.Itoa(tid))

	m, err := New(Config{Name: "cg", PID: os.Getpid(), ThreadPattern: fmt.Sprintf("^c%d-worker-1$", os.Getpid()%10000), CPUs: []int{1}, Priority: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if aff, pol, _ := kernelState(t, tid); !slices.Equal(aff, []int{1}) || pol != unix.SCHED_FIFO {
		t.Fatalf("after reconcile: %v %s", aff, PolicyName(pol))
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", os.Getpid(), tid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), tag) {
		t.Fatalf("still in the test cgroups:\n%s", data)
	}
	// Stop puts it back where it was found.
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, m, tid, "/"+tag)
}

func TestInspectMarksLcores(t *testing.T) {
	name := fmt.Sprintf("i%d-worker-4", os.Getpid()%10000)
	tid := namedThread(t, name)
	threads, err := Inspect(os.Getpid(), regexp.MustCompile("^"+name+"$"))
	if err != nil {
		t.Fatal(err)
	}
	lcores := 0
	for _, th := range threads {
		if th.Lcore {
			lcores++
			if th.TID != tid || th.Name != name || len(th.Affinity) == 0 || th.Policy == "" {
				t.Fatalf("lcore entry %+v", th)
			}
		}
	}
	if lcores != 1 || len(threads) < 2 {
		t.Fatalf("%d lcores among %d threads", lcores, len(threads))
	}
	if _, err := Inspect(-1, regexp.MustCompile("")); err == nil {
		t.Fatal("no error for a missing process")
	}
}

// TestManagerDegradesToSchedIdle: when no per-core group can be had (here
// another group holds the root's whole RT budget; on a cgroup-v2-only host
// there is no v1 cpu hierarchy) the Manager still pins and lends, by
// SCHED_IDLE, and says so in status.
func TestManagerDegradesToSchedIdle(t *testing.T) {
	needRoot(t)
	root := cgroupMounts().V1Path("cpu")
	rootRT, err := os.ReadFile(filepath.Join(root, "cpu.rt_runtime_us"))
	if root == "" || err != nil {
		testenv.Require(t, "needs a v1 cpu hierarchy with RT group scheduling")
	}
	hogDir := filepath.Join(root, fmt.Sprintf("tbudget%d", os.Getpid()))
	if err := os.Mkdir(hogDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(hogDir, "cpu.rt_runtime_us"), []byte("0"), 0)
		_ = os.Remove(hogDir)
	})
	if err := os.WriteFile(filepath.Join(hogDir, "cpu.rt_runtime_us"), []byte(strings.TrimSpace(string(rootRT))), 0); err != nil {
		testenv.Require(t, "cannot take the root's RT budget (another group holds some): %v", err)
	}
	name := fmt.Sprintf("d%d-worker-1", os.Getpid()%10000)
	tid := namedThread(t, name)
	m, err := New(Config{Name: "degraded", PID: os.Getpid(), ThreadPattern: "^" + name + "$", CPUs: []int{1}, Priority: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if st.Yield != string(coreyield.SchedIdle) || !strings.Contains(st.YieldDegraded, "RT budget") {
		t.Fatalf("yield %q degraded %q", st.Yield, st.YieldDegraded)
	}
	if _, err := os.Stat(filepath.Join(root, coreyield.GroupName("taichi-degraded", 1))); !os.IsNotExist(err) {
		t.Fatalf("a half-made group was left: %v", err)
	}
	assertState(t, m, tid, 1, coreyield.Ready)
	if err := m.Demote(tid); err != nil {
		t.Fatal(err)
	}
	if _, pol, _ := kernelState(t, tid); pol != unix.SCHED_IDLE {
		t.Fatalf("degraded lend: %s", PolicyName(pol))
	}
	if err := m.Promote(tid); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tid, 1, coreyield.Ready)
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, m, tid, "/")
}
