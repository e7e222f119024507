package linuxsched

import (
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/taichi-sched/taichi/internal/testenv"
	"golang.org/x/sys/unix"
)

// onScratchThread runs f on a locked OS thread that exits afterwards, so
// the class and affinity it gets never reach the Go runtime's other work.
func onScratchThread(t *testing.T, f func(tid int)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f(unix.Gettid())
	}()
	<-done
}

func TestClassesReadBack(t *testing.T) {
	testenv.NeedRoot(t, "SCHED_FIFO and nice -20")
	onScratchThread(t, func(tid int) {
		for _, c := range []Class{FIFO(3), Other(-20), Idle(), Other(5), Other(0)} {
			if err := Apply(tid, c); err != nil {
				t.Errorf("Apply %s: %v", c, err)
			}
		}
		if err := Set(tid, Other(0)); err != nil {
			t.Fatal(err)
		}
		if err := Verify(tid, FIFO(3)); err == nil {
			t.Error("Verify accepted a wrong class")
		}
		if err := Pin(tid, 0); err != nil {
			t.Fatal(err)
		}
		if aff, err := Affinity(tid); err != nil || !slices.Equal(aff, []int{0}) {
			t.Errorf("affinity %v %v", aff, err)
		}
		th, err := ReadThread(os.Getpid(), tid)
		if err != nil || th.TID != tid || !slices.Equal(th.Affinity, []int{0}) || th.Class != Other(0) || th.LastCPU != 0 {
			t.Errorf("ReadThread %+v %v", th, err)
		}
	})
	if err := Pin(os.Getpid()); err == nil {
		t.Error("pinning to no CPU accepted")
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{FIFO(50): "SCHED_FIFO/50", Other(-20): "SCHED_OTHER nice -20", Other(0): "SCHED_OTHER", Idle(): "SCHED_IDLE", {Policy: 42}: "SCHED_42"} {
		if got := c.String(); got != want {
			t.Errorf("%+v: %q, want %q", c, got, want)
		}
	}
}

func TestCheckFIFOPriority(t *testing.T) {
	for _, p := range []int{1, 50, 99} {
		if err := CheckFIFOPriority(p); err != nil {
			t.Errorf("%d: %v", p, err)
		}
	}
	for _, p := range []int{-1, 0, 100} {
		if err := CheckFIFOPriority(p); err == nil {
			t.Errorf("%d accepted", p)
		}
	}
}

// Swap gives the calling thread the class for a while and returns the one
// it had; Set with that puts it back.
func TestSwapSetsAndRestoresTheThreadsNice(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := Get(0)
	if err != nil {
		t.Fatal(err)
	}
	was, err := Swap(0, Other(before.Nice+3)) // raising nice needs no privilege
	if err != nil {
		t.Fatal(err)
	}
	during, err := Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Set(0, was); err != nil {
		t.Fatal(err)
	}
	after, err := Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if during.Nice != before.Nice+3 || after != before {
		t.Errorf("nice before %d, during %d, after %+v; want %d during and %+v after", before.Nice, during.Nice, after, before.Nice+3, before)
	}
}
