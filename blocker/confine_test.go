package blocker

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/vcpu"
)

// placement is where a process is, as /proc shows it.
type placement struct {
	confined bool // in the pool's confined group
	allowed  []int
}

func where(pid int, confinedGroup string) (placement, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return placement{}, err
	}
	var pl placement
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(line, ":/"+confinedGroup) {
			pl.confined = true
		}
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return placement{}, err
	}
	st, err := p.NewStatus()
	if err != nil {
		return placement{}, err
	}
	for _, c := range st.CpusAllowedList {
		pl.allowed = append(pl.allowed, int(c))
	}
	return pl, nil
}

// watchedPool is the real pool as the Confiner's Actuator, reporting where
// each released process is at the moment of its release.
type watchedPool struct {
	vcpu.Pool
	group    string
	released chan releasedAt
}

type releasedAt struct {
	pid int
	pl  placement
	err error
}

func (w *watchedPool) Release(pid int) error {
	err := w.Pool.Release(pid)
	pl, perr := where(pid, w.group)
	select {
	case w.released <- releasedAt{pid: pid, pl: pl, err: errors.Join(err, perr)}:
	default:
	}
	return err
}

// pinThreads sets every thread of pid to cpus (taskset -a -p): a pool
// member chooses the DP core, as a CP task the scheduler put there would.
func pinThreads(t testing.TB, pid int, cpus ...int) {
	t.Helper()
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Fatalf("pin thread %d of %d: %v", tid, pid, err)
		}
	}
}

// measure collects n of the DP thread's wakes and the tracer's histogram
// over the same stretch.
func measure(t testing.TB, tr *Tracer, dp *dpThread, n int) (own []time.Duration, traced Stats) {
	t.Helper()
	before, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	dp.takeLateness()
	deadline := time.Now().Add(30 * time.Second)
	for len(own) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		own = append(own, dp.takeLateness()...)
	}
	after, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return own, after.Sub(before)
}

// TestConfineKernelStorm: the full loop on this machine's DP core. A storm
// process in the CP pool, pinned to the lent DP core, delays a FIFO DP
// thread there; the tracer blames it, the Confiner confines it (and a child
// it forks follows), the DP thread's p99 drops, and it is released after
// its back-off.
func TestConfineKernelStorm(t *testing.T) {
	tr := requireTracer(t, Options{Threshold: 50 * time.Microsecond})
	if _, err := os.Stat("/sys/devices/system/cpu/cpu1"); err != nil {
		t.Skip("needs CPU 1")
	}
	name := fmt.Sprintf("taichi-t%d-blocker", os.Getpid())
	pool, err := vcpu.NewCgroup(vcpu.Options{Name: name, CPCores: []int{cpCore}, DPCores: []int{dpCore}})
	if errors.Is(err, vcpu.ErrNotSupported) {
		t.Skipf("no usable cgroup layout: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pool.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := pool.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := pool.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	dp := startDPThread(t, dpCore, 200*time.Microsecond)
	if err := tr.SetDPThreads([]int{dp.tid}); err != nil {
		t.Fatal(err)
	}
	s := startStorm(t, dpCore)
	if n, err := pool.Adopt([]int{s.pid}); n != 1 || err != nil {
		t.Fatalf("Adopt(storm) = %d, %v", n, err)
	}
	pinThreads(t, s.pid, dpCore) // joining the cpuset reset its affinity

	act := &watchedPool{Pool: pool, group: vcpu.ConfinedName(name), released: make(chan releasedAt, 16)}
	policy := Policy{MinBlames: 3, Window: time.Second, Backoff: 3 * time.Second, MaxBackoff: 10 * time.Second}
	c, err := NewConfiner(policy, scheduler.RealClock{}, act, MembersByCommand(pool.Members))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetActive(false); err != nil { // first measure it unconfined
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	blamedInKernel := make(chan struct{}, 1<<16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ev, err := tr.Read()
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("read: %v", err)
				continue
			}
			if ev.Kind == KindBlame && ev.TGID == s.pid && ev.InKernel() {
				select {
				case blamedInKernel <- struct{}{}:
				default:
				}
			}
			if err := c.Observe(ev); err != nil {
				t.Logf("observe: %v", err) // other processes on the machine may be refused
			}
		}
	}()
	stopTicks := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(c.Policy().Recheck)
		defer tk.Stop()
		for {
			select {
			case <-stopTicks:
				return
			case <-tk.C:
				if err := c.Tick(); err != nil {
					t.Logf("tick: %v", err)
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(stopTicks)
		_ = tr.Close()
		wg.Wait()
	})

	const wakes = 4000 // ~0.8 s of 200 µs periods
	openOwn, openTraced := measure(t, tr, dp, wakes)
	if len(blamedInKernel) < 10 {
		t.Fatalf("storm pid %d blamed in kernel %d times while unconfined, want >= 10", s.pid, len(blamedInKernel))
	}

	if err := c.SetActive(true); err != nil {
		t.Fatal(err)
	}
	var pl placement
	waitFor(t, 20*time.Second, "the storm confined", func() bool {
		pl, err = where(s.pid, vcpu.ConfinedName(name))
		return err == nil && pl.confined
	})
	if !slices.Equal(pl.allowed, []int{cpCore}) {
		t.Fatalf("confined storm allowed on %v, want [%d]", pl.allowed, cpCore)
	}
	kid := s.fork(t)
	if kpl, err := where(kid, vcpu.ConfinedName(name)); err != nil || !kpl.confined || !slices.Equal(kpl.allowed, []int{cpCore}) {
		t.Fatalf("child %d of the confined storm: %+v, %v; want confined to [%d]", kid, kpl, err, cpCore)
	}
	confinedOwn, confinedTraced := measure(t, tr, dp, wakes)
	if c.ConfinedCount() == 0 {
		t.Log("the back-off ended while measuring: the confined figures include unconfined time")
	}

	t.Logf("DP thread wake lateness p99 (own clock): unconfined %v, confined %v, ratio %.2f (%d / %d wakes)",
		percentile(openOwn, 0.99), percentile(confinedOwn, 0.99),
		float64(percentile(confinedOwn, 0.99))/float64(percentile(openOwn, 0.99)), len(openOwn), len(confinedOwn))
	t.Logf("tracer wake→run p99 (log2 bucket bound): unconfined <%v, confined <%v; p50 <%v / <%v",
		openTraced.Quantile(0.99), confinedTraced.Quantile(0.99), openTraced.Quantile(0.5), confinedTraced.Quantile(0.5))
	for _, b := range c.Blockers() {
		if b.TGID == s.pid {
			t.Logf("storm: %+v", b)
		}
	}

	// Released after its back-off (re-confined later if it still blocks).
	deadline := time.After(policy.MaxBackoff + 10*time.Second)
	for {
		select {
		case r := <-act.released:
			if r.pid != s.pid {
				continue
			}
			// Since Linux 6.2 the kernel keeps the affinity a task asked
			// for (pinThreads: the DP core) within its cpuset.
			if r.err != nil || r.pl.confined || !slices.Contains(r.pl.allowed, dpCore) {
				t.Fatalf("storm at its release: %+v, %v; want back in the pool, allowed on the DP core %d", r.pl, r.err, dpCore)
			}
			return
		case <-deadline:
			t.Fatalf("storm pid %d not released within %v", s.pid, policy.MaxBackoff+10*time.Second)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
