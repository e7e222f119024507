package kmod_test

import (
	"errors"
	"fmt"
	"log"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/kmod"
)

// A DP thread registers on its core and sleeps until the daemon kicks it
// (Kick from any thread) or its bounded wait ends. Needs the taichi kernel
// module (/dev/taichi), so it has no checked output.
func Example() {
	dev, err := kmod.Open()
	if errors.Is(err, kmod.ErrNotSupported) {
		fmt.Println("no taichi module: DP loops wake through their segment")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var one unix.CPUSet
	one.Set(1)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		log.Fatal(err)
	}
	cpu, err := dev.Register()
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Unregister()
	w, err := dev.Wait(50 * time.Microsecond)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("cpu", cpu, "kicked", w.Kicked)
}

// The module's latency histogram buckets, as Stats reports them.
func ExampleBucketBounds() {
	lo, hi := kmod.BucketBounds(0)
	fmt.Println(lo, hi)
	// Output:
	// 0s 1.024µs
}
