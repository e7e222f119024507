package blocker

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
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
	at  time.Time // when the Confiner called Release
	pl  placement
	err error
}

func (w *watchedPool) Release(pid int) error {
	at := time.Now()
	err := w.Pool.Release(pid)
	pl, perr := where(pid, w.group)
	select {
	case w.released <- releasedAt{pid: pid, at: at, pl: pl, err: errors.Join(err, perr)}:
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
// thread there; the tracer blames it and the Confiner, asked by the SLO
// rule's move (ConfineWorst for the DP core), confines it to the CP
// core together with the child it had forked before (a same-command
// sibling) and a child it forks after (which starts confined); while it is
// confined the DP thread's wake lateness p99 is lower than while it was
// not (each over 4000 wakes in which other processes held the DP core in
// kernel paths for at most 1% of them, when such a window can be had); and
// the three are released no earlier than the back-off the Confiner
// reported, and within MaxBackoff+10s.
func TestConfineKernelStorm(t *testing.T) {
	tr := requireTracer(t, Options{Threshold: 50 * time.Microsecond})
	if _, err := os.Stat("/sys/devices/system/cpu/cpu1"); err != nil {
		testenv.Require(t, "needs CPU 1")
	}
	name := fmt.Sprintf("taichi-t%d-blocker", os.Getpid())
	pool := startStormPool(t, name)
	dp := startDPThread(t, dpCore, 200*time.Microsecond)
	if err := tr.SetDPThreads([]int{dp.tid}); err != nil {
		t.Fatal(err)
	}
	s := startStorm(t, dpCore)
	if n, err := pool.Adopt([]int{s.pid}); n != 1 || err != nil {
		t.Fatalf("Adopt(storm) = %d, %v", n, err)
	}
	pinThreads(t, s.pid, dpCore) // joining the cpuset reset its affinity
	// A child forked before any confinement: it starts in the pool's group
	// (a member) and on the DP core, like its parent.
	early := s.fork(t)
	if epl, err := where(early, vcpu.ConfinedName(name)); err != nil || epl.confined || !slices.Contains(epl.allowed, dpCore) {
		t.Fatalf("child %d forked before confinement: %+v, %v; want unconfined, allowed on the DP core %d", early, epl, err, dpCore)
	}

	act := &watchedPool{Pool: pool, group: vcpu.ConfinedName(name), released: make(chan releasedAt, 16)}
	policy := Policy{MinBlames: 3, Window: time.Second, Backoff: 8 * time.Second, MaxBackoff: 10 * time.Second}
	c, err := NewConfiner(policy, scheduler.RealClock{}, act, MembersByCommand(pool.Members))
	if err != nil {
		t.Fatal(err)
	}
	// The storm's confinement as the Confiner reports it: the end of its
	// back-off.
	stormUntil := watchFirstConfinement(c, s.pid)
	if err := c.SetActive(false); err != nil { // first measure it unconfined
		t.Fatal(err)
	}
	var stormBlames atomic.Int64 // in-kernel blames of the storm itself
	blames := &blameCount{}      // in-kernel blames by process, per window
	runConfinerLoop(t, tr, c, func(ev Event) {
		blames.add(ev.TGID)
		if ev.TGID == s.pid {
			stormBlames.Add(1)
		}
	})

	w := stormWindows{t: t, tr: tr, dp: dp, blames: blames}
	open := w.measure([]int{s.pid, early}, true, time.Now().Add(20*time.Second))
	// The tracer blames the storm in kernel: the bound only ends a hung
	// test (a storm on the DP core is blamed hundreds of times a second).
	waitFor(t, 20*time.Second, "the storm blamed in kernel 10 times while unconfined", func() bool { return stormBlames.Load() >= 10 })

	activated := time.Now()
	if err := c.SetActive(true); err != nil {
		t.Fatal(err)
	}
	kid := waitStormConfined(t, s, early, vcpu.ConfinedName(name))
	seenConfined := time.Now()

	// The confinement as reported: it ends at until, a back-off after the
	// moment it began, which lies between activating and seeing it.
	until := stormUntil.get()
	if until.IsZero() {
		t.Fatalf("no confinement of the storm (pid %d) reported", s.pid)
	}
	confinedAt := until.Add(-policy.Backoff) // the first strike: Backoff
	if confinedAt.Before(activated) || confinedAt.After(seenConfined) {
		t.Fatalf("confinement reported at %v (until %v), outside [%v, %v] when it was activated and seen",
			confinedAt.Format(time.StampMicro), until.Format(time.StampMicro), activated.Format(time.StampMicro), seenConfined.Format(time.StampMicro))
	}
	family := []int{s.pid, early, kid}
	confined := w.measure(family, false, until)
	measured := time.Now()
	if !measured.Before(until) {
		t.Fatalf("the back-off (until %v) ended before the confined measurement did (%v): setup too slow to judge confinement",
			until.Format(time.StampMicro), measured.Format(time.StampMicro))
	}

	for _, b := range c.Blockers() {
		if b.TGID == s.pid {
			t.Logf("storm: %+v", b)
		}
	}
	checkConfinedLower(t, open, confined)

	// Released after its back-off, not before (re-confined later if it
	// still blocks): the storm and both children, under one back-off.
	waitReleasedAfter(t, act, map[int]string{s.pid: "storm", early: "earlier child", kid: "later child"}, until, policy)
}

// startStormPool starts a CP pool named name with the DP core lent to it.
func startStormPool(t *testing.T, name string) vcpu.Pool {
	t.Helper()
	pool, err := vcpu.NewCgroup(vcpu.Options{Name: name, CPCores: []int{cpCore}, DPCores: []int{dpCore}})
	if errors.Is(err, vcpu.ErrNotSupported) {
		testenv.Require(t, "no usable cgroup layout: %v", err)
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
	return pool
}

// runConfinerLoop feeds the tracer's events to c (inKernelBlame sees each
// in-kernel blame first) and makes the SLO rule's moves every Recheck, as
// the scheduler would, until the test ends.
func runConfinerLoop(t *testing.T, tr *Tracer, c *Confiner, inKernelBlame func(Event)) {
	var wg sync.WaitGroup
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
			if ev.Kind == KindBlame && ev.InKernel() {
				inKernelBlame(ev)
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
				// The SLO rule's moves, as the scheduler makes them: the
				// DP core's window above the high-water mark confines the
				// worst blocker there; a quiet window releases what is due.
				if _, _, err := c.ConfineWorst(dpCore, time.Second, 0, 0, 1); err != nil {
					t.Logf("confine: %v", err)
				}
				if _, _, err := c.ReleaseOne(); err != nil {
					t.Logf("release: %v", err)
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(stopTicks)
		_ = tr.Close()
		wg.Wait()
	})
}

const stormWakes = 4000 // ~0.8 s of 200 µs periods

// stormWindows measures the DP thread over windows of stormWakes wakes.
type stormWindows struct {
	t      *testing.T
	tr     *Tracer
	dp     *dpThread
	blames *blameCount
}

// stormWindow is one measured window: the DP thread's own wake lateness,
// the tracer's wake-to-run times, and the in-kernel blames of processes
// other than the storm's.
type stormWindow struct {
	own    []time.Duration
	traced Stats
	others map[int]int
	family int // in-kernel blames of the storm and its children
}

// measure takes one window. A window in which other processes (another
// test's storm on this machine) held the DP core in kernel paths for more
// than 1% of the wakes says nothing about the storm, nor does an unconfined
// one (harmful) in which the storm's family held it for fewer (in one CI
// run the storm was blamed 13 times in all, and the unconfined p99 was the
// quiet one): either is measured again while there is time (until next
// would end past the deadline).
func (w stormWindows) measure(family []int, harmful bool, deadline time.Time) stormWindow {
	for try := 1; ; try++ {
		w.blames.take()
		start := time.Now()
		own, traced := measure(w.t, w.tr, w.dp, stormWakes)
		counts := w.blames.take()
		others := counts.except(family)
		n, fam := 0, 0
		for _, c := range others {
			n += c
		}
		for _, p := range family {
			fam += counts[p]
		}
		if (n <= stormWakes/100 && (!harmful || fam > stormWakes/100)) || time.Now().Add(2*time.Since(start)).After(deadline) {
			return stormWindow{own: own, traced: traced, others: others, family: fam}
		}
		w.t.Logf("window %d: other processes blamed in kernel %d times (%v), the storm %d times: measuring again", try, n, others, fam)
	}
}

// checkConfinedLower logs both windows and wants the DP thread's wake
// lateness p99 lower while the storm was confined.
func checkConfinedLower(t *testing.T, open, confined stormWindow) {
	t.Helper()
	openP99, confinedP99 := percentile(open.own, 0.99), percentile(confined.own, 0.99)
	t.Logf("measured: DP thread wake lateness p99 (own clock): unconfined %v, confined %v, ratio %.3f (%d / %d wakes)",
		openP99, confinedP99, float64(confinedP99)/float64(openP99), len(open.own), len(confined.own))
	t.Logf("tracer wake→run p99 (log2 bucket bound): unconfined <%v, confined <%v; p50 <%v / <%v",
		open.traced.Quantile(0.99), confined.traced.Quantile(0.99), open.traced.Quantile(0.5), confined.traced.Quantile(0.5))
	t.Logf("in-kernel blames of other processes, by pid: %v unconfined, %v confined; of the storm's family: %d / %d", open.others, confined.others, open.family, confined.family)
	if open.family <= stormWakes/100 {
		t.Fatalf("the storm was blamed in kernel %d times over %d wakes unconfined (want more than 1%%): it did not delay the DP thread, so confining it cannot show", open.family, len(open.own))
	}
	if len(open.own) < stormWakes || len(confined.own) < stormWakes {
		t.Fatalf("DP thread woke %d / %d times in 30 s, want %d each", len(open.own), len(confined.own), stormWakes)
	}
	// Measured under stress-ng --cpu 2 with -race, 20 runs: confined /
	// unconfined p99 min 0.032, median 0.039, p95 0.055, max 0.715
	// (unconfined 63 µs to 988 µs, confined 27 µs to 48 µs).
	if confinedP99 >= openP99 {
		t.Errorf("DP thread wake lateness p99 %v while the storm was confined, not lower than %v before "+
			"(in-kernel blames of other processes on the DP core, by pid: %v while unconfined, %v while confined)",
			confinedP99, openP99, open.others, confined.others)
	}
}

// firstConfinement is the end of the first back-off the Confiner reported
// for one process.
type firstConfinement struct {
	mu    sync.Mutex
	until time.Time
}

func watchFirstConfinement(c *Confiner, pid int) *firstConfinement {
	f := &firstConfinement{}
	c.OnChange(func(ch Change) {
		if ch.TGID == pid && ch.Confined {
			f.mu.Lock()
			if f.until.IsZero() {
				f.until = ch.Until
			}
			f.mu.Unlock()
		}
	})
	return f
}

func (f *firstConfinement) get() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.until
}

// waitStormConfined waits for the storm and its earlier child to be
// confined to the CP core, then forks a child of the confined storm, which
// must start confined, and returns it.
func waitStormConfined(t *testing.T, s *storm, early int, group string) (kid int) {
	t.Helper()
	var pl placement
	var err error
	waitFor(t, 20*time.Second, "the storm confined", func() bool {
		pl, err = where(s.pid, group)
		return err == nil && pl.confined
	})
	if !slices.Equal(pl.allowed, []int{cpCore}) {
		t.Fatalf("confined storm allowed on %v, want [%d]", pl.allowed, cpCore)
	}
	// The child that existed before: confined with its parent (a sibling of
	// the same command, at the confinement or the next Tick).
	var epl placement
	waitFor(t, 5*time.Second, "the storm's earlier child confined", func() bool {
		epl, err = where(early, group)
		return err == nil && epl.confined
	})
	if !slices.Equal(epl.allowed, []int{cpCore}) {
		t.Fatalf("confined storm's earlier child %d allowed on %v, want [%d]", early, epl.allowed, cpCore)
	}
	kid = s.fork(t)
	if kpl, err := where(kid, group); err != nil || !kpl.confined || !slices.Equal(kpl.allowed, []int{cpCore}) {
		t.Fatalf("child %d of the confined storm: %+v, %v; want confined to [%d]", kid, kpl, err, cpCore)
	}
	return kid
}

// waitReleasedAfter waits for every process in want to be released, each
// no earlier than until and back in the pool on the DP core, within
// MaxBackoff+10s.
func waitReleasedAfter(t *testing.T, act *watchedPool, want map[int]string, until time.Time, policy Policy) {
	t.Helper()
	deadline := time.After(policy.MaxBackoff + 10*time.Second)
	for len(want) > 0 {
		select {
		case r := <-act.released:
			what, ok := want[r.pid]
			if !ok {
				continue
			}
			delete(want, r.pid)
			if r.at.Before(until) {
				t.Errorf("%s (pid %d) released at %v, %v before its back-off ended (%v, %v after the reported confinement)",
					what, r.pid, r.at.Format(time.StampMicro), until.Sub(r.at), until.Format(time.StampMicro), policy.Backoff)
			}
			// Since Linux 6.2 the kernel keeps the affinity a task asked
			// for (pinThreads, or inherited: the DP core) within its cpuset.
			if r.err != nil || r.pl.confined || !slices.Contains(r.pl.allowed, dpCore) {
				t.Errorf("%s (pid %d) at its release: %+v, %v; want back in the pool, allowed on the DP core %d", what, r.pid, r.pl, r.err, dpCore)
			}
		case <-deadline:
			t.Fatalf("not released within %v: %v", policy.MaxBackoff+10*time.Second, want)
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

// blameCount counts in-kernel blames by process (thread group id).
type blameCount struct {
	mu     sync.Mutex
	byTGID map[int]int
}

func (b *blameCount) add(tgid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byTGID == nil {
		b.byTGID = map[int]int{}
	}
	b.byTGID[tgid]++
}

// take returns the counts so far and starts over.
func (b *blameCount) take() blameCounts {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.byTGID
	b.byTGID = nil
	return m
}

type blameCounts map[int]int

// except returns the blames of every other process.
func (m blameCounts) except(pids []int) map[int]int {
	out := map[int]int{}
	for p, n := range m {
		if !slices.Contains(pids, p) {
			out[p] = n
		}
	}
	return out
}
