package dataplane

import (
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/stats"
	"golang.org/x/sys/unix"
)

// WakeCost is what waking a thread on a DP core costs on this host: a
// SCHED_FIFO thread pinned there blocks on an eventfd and is woken from the
// caller's core (a CP core), as a packet's softirq or a probe wakes a loop
// that yielded. It is the floor of what a lent core can promise packets.
type WakeCost struct {
	Samples  int
	P50, P99 time.Duration
	Max      time.Duration
}

// MeasureWakeCost wakes a SCHED_FIFO (prio) thread pinned to cpu n times,
// period apart, and returns the wake-to-run latency. The caller must not
// run on cpu (the waker stands for another core). It takes about n×period.
func MeasureWakeCost(cpu, prio, n int, period time.Duration) (WakeCost, error) {
	if n < 1 || period <= 0 {
		return WakeCost{}, fmt.Errorf("wake cost: want n >= 1 and a positive period, got %d and %v", n, period)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return WakeCost{}, fmt.Errorf("wake cost: eventfd: %w", err)
	}
	defer unix.Close(efd)
	var stamp atomic.Int64
	var stop atomic.Bool
	lat := make([]time.Duration, 0, n) // the waiter's until done is closed
	ready := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread exits with the goroutine: its class changed
		if err := linuxsched.Pin(0, cpu); err != nil {
			ready <- err
			return
		}
		if err := linuxsched.Set(0, linuxsched.FIFO(prio)); err != nil {
			ready <- err
			return
		}
		ready <- nil
		var buf [8]byte
		for len(lat) < n {
			if _, err := unix.Read(efd, buf[:]); err != nil {
				if err == unix.EINTR {
					continue
				}
				return
			}
			if stop.Load() {
				return
			}
			lat = append(lat, time.Duration(nanotime()-stamp.Load()))
		}
	}()
	if err := <-ready; err != nil {
		<-done
		return WakeCost{}, fmt.Errorf("wake cost on cpu %d: %w", cpu, err)
	}
	one := [8]byte{1}
	for range n {
		time.Sleep(period) // the waiter is blocked again long before this ends
		stamp.Store(nanotime())
		if _, err := unix.Write(efd, one[:]); err != nil {
			return WakeCost{}, fmt.Errorf("wake cost: eventfd write: %w", err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Second + 10*period):
		// Wakes merged while the waiter ran late: stop it and report what
		// came (it is SCHED_FIFO on its own core, so it gets to run).
		stop.Store(true)
		_, _ = unix.Write(efd, one[:])
		<-done
	}
	if len(lat) == 0 {
		return WakeCost{}, fmt.Errorf("wake cost on cpu %d: the pinned thread never ran", cpu)
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return WakeCost{Samples: len(s), P50: stats.QuantileSorted(s, 0.5), P99: stats.QuantileSorted(s, 0.99), Max: s[len(s)-1]}, nil
}
