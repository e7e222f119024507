package host

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/taichi-sched/taichi/internal/shm"
)

// TestRingsArePaced: a pacing host rings a sleeping daemon at once for the
// first event after a quiet spell, leaves a ring due within BellGap of the
// last one to its tick, and keeps a ring due while the daemon is awake
// until it sleeps.
func TestRingsArePaced(t *testing.T) {
	mem := make([]byte, 64)
	fifo := filepath.Join(t.TempDir(), "bell")
	producer, err := shm.OpenDoorbell(mem, 0, fifo, true)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	consumer, err := shm.OpenDoorbell(mem, 0, fifo, false)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	armed := (*atomic.Uint32)(unsafe.Pointer(&mem[0])) // 1 while the consumer sleeps
	h := &Host{bell: producer}

	// sleep has the consumer wait for a ring, as the pump does after a
	// drain, and returns when it has armed the doorbell.
	sleep := func() <-chan struct{} {
		woke := make(chan struct{})
		go func() {
			defer close(woke)
			if err := consumer.Wait(func() bool { return false }, time.Minute); err != nil {
				t.Error(err)
			}
		}()
		for armed.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		return woke
	}
	mustWake := func(woke <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-woke:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the sleeping consumer was not rung", what)
		}
	}
	const ms = int64(time.Millisecond)
	t0 := 100 * int64(BellGap)

	woke := sleep()
	h.ringPaced(t0)
	mustWake(woke, "first event after a quiet spell")
	if h.ringDue.Load() || h.lastRing.Load() != t0 {
		t.Fatalf("after a ring: due %v, last ring %d, want false, %d", h.ringDue.Load(), h.lastRing.Load(), t0)
	}

	woke = sleep()
	h.ringPaced(t0 + 1*ms)
	if armed.Load() != 1 || !h.ringDue.Load() {
		t.Fatalf("an event 1 ms after a ring: armed %d, due %v; want the ring left due to the tick", armed.Load(), h.ringDue.Load())
	}
	h.ringPaced(t0 + int64(BellGap) - 1) // a tick just before the gap has passed
	if armed.Load() != 1 {
		t.Fatal("rung before BellGap had passed")
	}
	h.ringPaced(t0 + int64(BellGap)) // the tick once it has
	mustWake(woke, "the tick after BellGap")

	// The consumer is awake (draining): the ring stays due until it sleeps.
	late := t0 + 5*int64(BellGap)
	h.ringPaced(late)
	if !h.ringDue.Load() || h.lastRing.Load() != t0+int64(BellGap) {
		t.Fatalf("an event while the consumer is awake: due %v, last ring %d", h.ringDue.Load(), h.lastRing.Load())
	}
	woke = sleep()
	h.ringPaced(late + ms) // its next tick
	mustWake(woke, "the tick after the consumer went to sleep")
}
