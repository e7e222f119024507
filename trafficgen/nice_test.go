package trafficgen

import (
	"runtime"
	"testing"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// withNice gives the calling thread the nice value for the run, and its
// restore puts the thread's class back as it was.
func TestWithNiceSetsAndRestoresTheThreadsNice(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := linuxsched.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	restore, err := withNice(before.Nice + 3) // raising nice needs no privilege
	if err != nil {
		t.Fatal(err)
	}
	during, err := linuxsched.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	restore()
	after, err := linuxsched.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if during.Nice != before.Nice+3 || after != before {
		t.Errorf("nice before %d, during %d, after %+v; want %d during and %+v after", before.Nice, during.Nice, after, before.Nice+3, before)
	}
}
