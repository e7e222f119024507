package dpdk

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/cpushare"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// guardChildEnv makes the test binary act as the guard process, the way
// `taichi dpdk guard` does in production.
const guardChildEnv = "TAICHI_DPDK_TEST_GUARD"

// daemonChildEnv makes the test binary a minimal daemon that lends the
// lcore of the given pid under a guard, says "lent", and waits to be killed.
const daemonChildEnv = "TAICHI_DPDK_TEST_DAEMON"

func TestMain(m *testing.M) {
	cpushare.RunHogIfRequested() // the CP hog of the yield tests
	if pid := os.Getenv(daemonChildEnv); pid != "" {
		os.Exit(runDaemonChild(pid))
	}
	if os.Getenv(guardChildEnv) == "1" {
		if err := RunGuard(os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunGuardReclaimsOnEOF(t *testing.T) {
	needRoot(t)
	tid := namedThread(t, fmt.Sprintf("g%d-worker-1", os.Getpid()%10000))
	y, err := coreyield.Setup(fmt.Sprintf("tguard%d", os.Getpid()), []int{1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = y.Release(tid); _ = y.Remove() })
	if _, err := y.Place(os.Getpid(), tid, 1); err != nil {
		t.Fatal(err)
	}
	group := ""
	if g, ok := y.Group(1); ok {
		group = g.Dir
	}
	lent := func() {
		t.Helper()
		if err := y.Lend(tid, 1); err != nil {
			t.Fatal(err)
		}
	}
	lent()
	// Lent then the pipe ends without "done": the guard reclaims, group too.
	if err := RunGuard(strings.NewReader(fmt.Sprintf("%s\nlend 999999 6\nreclaim 999999\n", lendRecord(tid, 6, group)))); err != nil {
		t.Fatal(err)
	}
	if _, pol, prio := kernelState(t, tid); pol != unix.SCHED_FIFO || prio != 6 {
		t.Fatalf("after EOF: %s/%d", PolicyName(pol), prio)
	}
	if g, ok := y.Group(1); ok {
		if idle, err := g.IsLent(); err != nil || idle {
			t.Fatalf("guard left the group idle (%v)", err)
		}
	}
	// A clean "done" leaves threads alone.
	lent()
	if err := RunGuard(strings.NewReader(lendRecord(tid, 6, group) + "\ndone\n")); err != nil {
		t.Fatal(err)
	}
	if c, _ := linuxsched.Get(tid); c != y.Mechanism().Class(coreyield.Lent, 6) {
		t.Fatalf("after done: %s", c)
	}
	for _, bad := range []string{"lend x 6", "lend 5 6 relative/dir", "lend 5 0"} {
		if err := RunGuard(strings.NewReader(bad + "\n")); err == nil || !strings.Contains(err.Error(), "bad record") {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestGuardReclaimsWhenDaemonVanishes(t *testing.T) {
	needRoot(t)
	t.Setenv(guardChildEnv, "1")
	name := fmt.Sprintf("v%d-worker-1", os.Getpid()%10000)
	tid := namedThread(t, name)
	m, err := New(Config{Name: "guarded", PID: os.Getpid(), ThreadPattern: "^" + name + "$", CPUs: []int{1}, Priority: 9},
		WithGuard(os.Args[0], "-test.run=^$"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Demote(tid); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tid, 1, coreyield.Lent)
	// What the kernel does when the daemon dies: its pipe end closes.
	m.guard.abandon()
	waitFor(t, "the guard to reclaim the lent lcore", func() bool {
		ok, _ := inState(m, tid, 1, coreyield.Ready)
		return ok
	})
	<-m.guard.done

	// A Manager whose guard is gone refuses to lend.
	if err := m.Demote(tid); err == nil || !strings.Contains(err.Error(), "guard unreachable") {
		t.Fatalf("lent without a guard: %v", err)
	}
	assertState(t, m, tid, 1, coreyield.Ready)
	_ = m.Stop() // reports the dead guard; still releases
	assertReleased(t, m, tid, "/")
}

func TestGuardCleanStop(t *testing.T) {
	needRoot(t)
	t.Setenv(guardChildEnv, "1")
	name := fmt.Sprintf("s%d-worker-1", os.Getpid()%10000)
	tid := namedThread(t, name)
	m, err := New(Config{Name: "guarded", PID: os.Getpid(), ThreadPattern: "^" + name + "$", CPUs: []int{1}, Priority: 9},
		WithGuard(os.Args[0], "-test.run=^$"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Demote(tid); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.guard.done:
	default:
		t.Fatal("guard still running after Stop")
	}
	if m.guard.cmd.ProcessState == nil || !m.guard.cmd.ProcessState.Success() {
		t.Fatalf("guard exit: %v", m.guard.cmd.ProcessState)
	}
	assertReleased(t, m, tid, "/")
}

func runDaemonChild(pidStr string) int {
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return 2
	}
	os.Unsetenv(daemonChildEnv)
	os.Setenv(guardChildEnv, "1") // the guard is this binary too
	m, err := New(Config{Name: "child", PID: pid, ThreadPattern: "^sleep$", CPUs: []int{1}, Priority: 8},
		WithGuard(os.Args[0], "-test.run=^$"))
	if err == nil {
		err = m.Start(context.Background())
	}
	if err == nil {
		tids := m.LcoreTIDs()
		if len(tids) != 1 {
			err = fmt.Errorf("lcores %v", tids)
		} else {
			err = m.Demote(tids[0])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("lent")
	select {} // until SIGKILL
}

// TestGuardSurvivesSIGKILLedDaemon kills a daemon process with SIGKILL
// while it has an lcore (here: a sleep process's thread) lent; the guard
// must make the lcore SCHED_FIFO again.
func TestGuardSurvivesSIGKILLedDaemon(t *testing.T) {
	needRoot(t)
	lcore := exec.Command("sleep", "30")
	if err := lcore.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lcore.Process.Kill(); _ = lcore.Wait() })
	pid := lcore.Process.Pid

	daemon := exec.Command(os.Args[0], "-test.run=^$")
	daemon.Env = append(os.Environ(), daemonChildEnv+"="+strconv.Itoa(pid))
	daemon.Stderr = os.Stderr
	out, err := daemon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.Process.Kill(); _ = daemon.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "lent\n" {
		t.Fatalf("daemon child: %q %v", line, err)
	}
	// The child's groups are named after its Manager: "taichi-child".
	group := filepath.Join(cgroupMounts().V1Path("cpu"), coreyield.GroupName("taichi-child", 1))
	t.Cleanup(func() {
		_ = lcore.Process.Kill()
		_ = lcore.Wait()
		_ = os.Remove(group)
	})
	if c, _ := linuxsched.Get(pid); c.Policy == unix.SCHED_FIFO {
		t.Fatalf("lcore not lent: %s", c)
	}
	if idle, err := coreyield.OpenGroup(group).IsLent(); err == nil && !idle {
		t.Fatal("lcore's group not idle while lent")
	}
	if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = daemon.Wait()
	waitFor(t, "the guard to reclaim after SIGKILL", func() bool {
		aff, pol, prio := kernelState(t, pid)
		return pol == unix.SCHED_FIFO && prio == 8 && slices.Equal(aff, []int{1})
	})
	if idle, err := coreyield.OpenGroup(group).IsLent(); err == nil && idle {
		t.Fatal("guard left the lcore's group idle")
	}
}
