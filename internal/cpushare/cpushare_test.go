package cpushare

import (
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestMain(m *testing.M) {
	RunHogIfRequested()
	os.Exit(m.Run())
}

// TestHogSeesTimeItDidNotRun: the hog counts as gaps at least the CPU time
// a SCHED_FIFO spinner on its CPU took (100 ms of the spinner's own thread
// CPU time, during which the hog cannot run there), whatever else the
// machine runs.
func TestHogSeesTimeItDidNotRun(t *testing.T) {
	testenv.NeedRoot(t, "SCHED_FIFO spinner")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1")
	}
	const cpu = 1
	h, err := StartHog(cpu)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	if _, err := h.Sample(); err != nil {
		t.Fatal(err)
	}
	const busy = 100 * time.Millisecond
	type spun struct {
		cpu time.Duration // the spinner's thread CPU time on the hog's CPU
		err error
	}
	done := make(chan spun)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its class
		if err := linuxsched.Pin(0, cpu); err != nil {
			done <- spun{err: err}
			return
		}
		if err := linuxsched.Set(0, linuxsched.FIFO(1)); err != nil {
			done <- spun{err: err}
			return
		}
		// Pinned: from here on all of this thread's CPU time is on cpu.
		// Spinning by its own CPU time, not the wall clock: whatever
		// preempts or throttles it, it takes at least busy from the hog.
		start := threadCPUTime()
		for threadCPUTime()-start < busy {
		}
		done <- spun{cpu: threadCPUTime() - start}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	w, err := h.Sample()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("measured: with a SCHED_FIFO spinner that ran %v on CPU %d: %v; gaps/spinner CPU time %.4f", r.cpu, cpu, w, float64(w.Gaps)/float64(r.cpu))
	// The hog's gaps hold every instant the spinner ran; they miss only
	// what it ran in slices shorter than GapThreshold between two of the
	// hog's runs (it is preempted only by RT throttling or higher RT
	// classes), so a 1% margin is generous. Measured under stress-ng
	// --cpu 2 with -race, 20 runs: gaps/spinner CPU time min 1.069,
	// median 1.195, p95 2.570, max 2.774 (others' load only adds gaps).
	if w.Gaps < r.cpu*99/100 || w.Elapsed < r.cpu || w.Share() < 0 || w.Share() > 1 {
		t.Fatalf("hog saw %v, want gaps of at least 99%% of the spinner's %v", w, r.cpu)
	}
}

// threadCPUTime is the calling thread's CPU time.
func threadCPUTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

func TestWindowShare(t *testing.T) {
	if s := (Window{Elapsed: time.Second, Gaps: 250 * time.Millisecond}).Share(); s != 0.75 {
		t.Fatalf("share %v", s)
	}
	if s := (Window{Elapsed: time.Second, Gaps: 250 * time.Millisecond}).Against(250 * time.Millisecond); s != 0.75 {
		t.Fatalf("against %v", s)
	}
	if s := (Window{}).Share(); s != 0 {
		t.Fatalf("empty window share %v", s)
	}
}
