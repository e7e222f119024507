package dpdk

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// BenchmarkTestpmdLending measures, side by side on one dpdk-testpmd run,
// what lending a busy-polling lcore's core costs DP:
//
//   - reclaim: the Promote syscall, and the time until the lcore is running
//     on its core again (seen by a CP hog on that core: the start of its
//     first off-CPU gap after the Promote began);
//   - latency: per mode, one-way latency of single frames spaced 10 ms apart
//     through testpmd (generator and sink in the testbed), with the lcore
//     always SCHED_FIFO and CPU 1 otherwise idle (fifo-idle), always
//     SCHED_FIFO with a CP hog on CPU 1 (fifo-hog), lent by an IdleWatcher
//     polling rx counters every 1 ms or 200 µs (lent-watch-*), and demoted
//     for good (lent-nowatch). cp_share is the hog's share of CPU 1.
//
// Run: go test -run '^$' -bench TestpmdLending -benchtime 300x ./dataplane/dpdk/
func BenchmarkTestpmdLending(b *testing.B) {
	env := setupTestpmd(b)
	cmd := startTestpmd(b, env)
	pid := cmd.Process.Pid
	waitLcores(b, pid, 1)
	env.waitForwarding(b)
	const prio = 10
	m, err := New(Config{Name: "testpmd", PID: pid, CPUs: []int{1}, Priority: prio})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Stop() })
	tids := m.LcoreTIDs()
	if len(tids) != 1 {
		b.Fatalf("lcores %v", tids)
	}
	tid := tids[0]

	// taichi runs on the CP core: keep this process's threads (generator,
	// watcher, bookkeeping) on CPU 0; only the hog goes to CPU 1.
	restore := pinProcess(b, 0)
	b.Cleanup(restore)
	io := newFrameIO(b, env.tb)
	// Warm the path.
	if got := io.sendAndCount(b, 0, 100); got != 100 {
		b.Fatalf("warm-up: %d of 100 frames", got)
	}
	seq := uint32(1000)

	b.Run("reclaim", func(b *testing.B) { benchReclaim(b, m, tid) })

	// The modes take turns in rounds of 10 frames, so whatever else runs
	// on this shared machine during the benchmark hits every mode alike.
	modes := []*lendingMode{
		{name: "fifo-idle"},
		{name: "fifo-hog", hog: true},
		{name: "lent-watch-1ms", hog: true, watch: time.Millisecond, idleAftr: 3},
		{name: "lent-watch-200us", hog: true, watch: 200 * time.Microsecond, idleAftr: 15},
		{name: "lent-nowatch", hog: true, demoted: true},
	}
	b.Run("latency", func(b *testing.B) {
		const round = 10
		r := lendingRound{m: m, env: env, io: io, pid: pid, tid: tid, prio: prio, seq: &seq}
		for done := 0; done < b.N; done += round {
			for _, md := range modes {
				r.run(b, md, min(round, b.N-done))
			}
		}
		for _, md := range modes {
			md.report(b)
		}
	})
}

// benchReclaim times Promote of a lent lcore: the syscall, and until the
// lcore runs again (the start of a CP hog's first off-CPU gap after it).
func benchReclaim(b *testing.B, m *Manager, tid int) {
	h := startHog(b, 1)
	var syscallNs, reclaimNs []float64
	for range b.N {
		if err := m.Demote(tid); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // CP has the core
		t0 := monoNow()
		if err := m.Promote(tid); err != nil {
			b.Fatal(err)
		}
		t1 := monoNow()
		time.Sleep(500 * time.Microsecond) // DP has the core
		if err := m.Demote(tid); err != nil {
			b.Fatal(err)
		}
		// Only trials where the hog held the core at t0 time the
		// preemption; otherwise something else had the core already.
		if gs, ok := h.waitGapAfter(t0, time.Second); ok && gs >= t0 {
			reclaimNs = append(reclaimNs, float64(gs-t0))
		}
		syscallNs = append(syscallNs, float64(t1-t0))
	}
	if err := m.Promote(tid); err != nil {
		b.Fatal(err)
	}
	h.stop()
	report(b, "promote_syscall", syscallNs)
	report(b, "reclaim", reclaimNs)
	b.ReportMetric(float64(len(reclaimNs)), "reclaims_seen")
}

// lendingMode is one way of running the lcore in the latency benchmark,
// with what its rounds measured.
type lendingMode struct {
	name     string
	hog      bool
	watch    time.Duration // 0: no watcher
	demoted  bool          // demoted for the whole round
	idleAftr int

	lat, watchDelay []float64
	lost            int
	hogNs, elapsed  int64
	lcoreWait       int64
	promotions      uint64
}

// report adds the mode's figures to b, named after the mode.
func (md *lendingMode) report(b *testing.B) {
	n := md.name + "_"
	report(b, n+"lat", md.lat)
	report(b, n+"watch_delay", md.watchDelay) // frame sent -> watcher starts the reclaim
	b.ReportMetric(float64(md.lost), n+"lost")
	b.ReportMetric(float64(md.lcoreWait)/float64(md.elapsed), n+"lcore_wait_share")
	if md.hog {
		b.ReportMetric(float64(md.hogNs)/float64(md.elapsed), n+"cp_share")
	}
	if md.watch > 0 {
		b.ReportMetric(float64(md.promotions), n+"promotions")
	}
}

// lendingRound is what every round of the latency benchmark works on.
type lendingRound struct {
	m        *Manager
	env      *testpmdEnv
	io       *frameIO
	pid, tid int
	prio     int
	seq      *uint32
}

// run sends n frames, 10 ms apart, with the lcore run as md says, and adds
// what they saw to md.
func (r lendingRound) run(b *testing.B, md *lendingMode, n int) {
	var h *hog
	if md.hog {
		h = startHog(b, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var w *IdleWatcher
	if md.watch > 0 {
		w = NewIdleWatcher(r.m, NetDevCounter(r.pid, r.env.tb.DPIface, r.env.tb.DPOutIface),
			IdleWatcherOptions{Interval: md.watch, IdleAfter: md.idleAftr, Priority: r.prio})
		wg.Go(func() { _ = w.Run(ctx) })
	}
	if md.demoted {
		if err := r.m.Demote(r.tid); err != nil {
			b.Fatal(err)
		}
	}
	waitBefore := runDelay(b, r.pid, r.tid)
	start := monoNow()
	for range n {
		time.Sleep(10 * time.Millisecond)
		r.frame(b, md, w)
	}
	md.elapsed += monoNow() - start
	// Time the lcore spent runnable but not running: preempted.
	md.lcoreWait += runDelay(b, r.pid, r.tid) - waitBefore
	cancel()
	wg.Wait()
	if err := r.m.Promote(r.tid); err != nil {
		b.Fatal(err)
	}
	if h != nil {
		md.hogNs += h.stop()
	}
	if w != nil {
		md.promotions += w.Stats().Promotions
	}
}

// frame sends one frame and waits up to 200 ms for it at the sink.
func (r lendingRound) frame(b *testing.B, md *lendingMode, w *IdleWatcher) {
	*r.seq++
	seq := *r.seq
	sentAt := monotonicNs()
	if err := r.io.send(seq); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	got := false
	for !got && time.Now().Before(deadline) {
		s, l, ok, err := r.io.recv()
		if err != nil {
			b.Fatal(err)
		}
		if ok && s == seq {
			md.lat = append(md.lat, float64(l))
			got = true
		}
	}
	if !got {
		md.lost++
	}
	if w != nil {
		if at := w.Stats().LastReclaimAt; at > sentAt {
			md.watchDelay = append(md.watchDelay, float64(at-sentAt))
		}
	}
}

// report adds p50/p99/max of ns samples, in µs.
func report(b *testing.B, name string, ns []float64) {
	if len(ns) == 0 {
		return
	}
	slices.Sort(ns)
	q := func(p float64) float64 { return ns[min(len(ns)-1, int(p*float64(len(ns))))] / 1e3 }
	b.ReportMetric(q(0.50), name+"_p50_us")
	b.ReportMetric(q(0.99), name+"_p99_us")
	b.ReportMetric(ns[len(ns)-1]/1e3, name+"_max_us")
}

// pinProcess moves every thread of this process to cpu (new threads inherit
// it from their creator) and returns a function restoring all online CPUs.
func pinProcess(t testing.TB, cpu int) func() {
	t.Helper()
	set := func(cpus []int) {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		var s unix.CPUSet
		for _, c := range cpus {
			s.Set(c)
		}
		for _, e := range entries {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, &s)
			}
		}
	}
	set([]int{cpu})
	return func() {
		online, err := linuxsched.OnlineCPUs()
		if err == nil {
			set(online)
		}
	}
}

// hog is a CP stand-in spinning on one core. It records when it was off
// the CPU (gaps over 5 µs between two clock reads) and how long it ran.
type hog struct {
	quit  atomic.Bool
	done  chan struct{}
	runNs atomic.Int64
	mu    sync.Mutex
	gaps  [][2]int64 // [start, end]
}

func startHog(t testing.TB, cpu int) *hog {
	h := &hog{done: make(chan struct{})}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the pinned thread exits with the goroutine
		defer close(h.done)
		ready <- linuxsched.Pin(0, cpu)
		last := monoNow()
		for !h.quit.Load() {
			now := monoNow()
			if d := now - last; d > 5000 {
				h.mu.Lock()
				if len(h.gaps) < 1<<16 {
					h.gaps = append(h.gaps, [2]int64{last, now})
				}
				h.mu.Unlock()
			} else {
				h.runNs.Add(d)
			}
			last = now
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the hog and returns how long it ran.
func (h *hog) stop() int64 {
	if h.quit.CompareAndSwap(false, true) {
		<-h.done
	}
	return h.runNs.Load()
}

// waitGapAfter returns the start of the hog's first off-CPU gap that ends
// after t0 (the start is before t0 when the hog was already off the CPU).
func (h *hog) waitGapAfter(t0 int64, limit time.Duration) (int64, bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, g := range h.gaps {
			if g[1] > t0 {
				h.mu.Unlock()
				return g[0], true
			}
		}
		h.mu.Unlock()
		time.Sleep(200 * time.Microsecond)
	}
	return 0, false
}

// BenchmarkNetDevCounter is the cost of one IdleWatcher counter read
// (/proc/PID/net/dev through procfs), which bounds the polling interval.
func BenchmarkNetDevCounter(b *testing.B) {
	read := NetDevCounter(os.Getpid(), "lo")
	for b.Loop() {
		if _, err := read(); err != nil {
			b.Fatal(err)
		}
	}
}

// runDelay is the time tid spent waiting on a run queue
// (/proc/PID/task/TID/schedstat, second field, ns).
func runDelay(t testing.TB, pid, tid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	var run, wait int64
	if _, err := fmt.Sscan(string(data), &run, &wait); err != nil {
		t.Fatal(err)
	}
	return wait
}
