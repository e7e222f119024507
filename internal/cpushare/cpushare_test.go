package cpushare

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestMain(m *testing.M) {
	RunHogIfRequested()
	os.Exit(m.Run())
}

// A SCHED_FIFO spinner on the hog's CPU takes it for a known time; the
// hog must see that time as gaps.
func TestHogSeesTimeItDidNotRun(t *testing.T) {
	testenv.NeedRoot(t, "SCHED_FIFO spinner")
	if runtime.NumCPU() < 2 {
		t.Skip("needs CPU 1")
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
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its class
		if err := linuxsched.Pin(0, cpu); err != nil {
			done <- err
			return
		}
		if err := linuxsched.Set(0, linuxsched.FIFO(1)); err != nil {
			done <- err
			return
		}
		for start := time.Now(); time.Since(start) < busy; {
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w, err := h.Sample()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with a %v SCHED_FIFO spinner: %v", busy, w)
	if w.Gaps < busy*9/10 || w.Elapsed < busy || w.Share() < 0 || w.Share() > 1 {
		t.Fatalf("hog saw %v", w)
	}
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
