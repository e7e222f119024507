package dataplane

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WakeSource is an early warning the DP loop waits on beside its socket.
type WakeSource interface {
	FD() int                          // pollable: readable when a wake is pending
	Arm()                             // the loop is about to block: report the next packet
	Disarm() (stampNs int64, ok bool) // the loop runs again: stop reporting, consume a pending
	// wake, return its CLOCK_MONOTONIC stamp if there was one
}

// EventWake is a WakeSource backed by an eventfd: whoever learns that the
// loop should run (a probe reader, the kmod client, the daemon reclaiming
// the core, a test) calls Kick. Kicks while the loop is running cost one
// atomic load and are not delivered: the loop is already awake.
type EventWake struct {
	fd    int
	armed atomic.Bool
	stamp atomic.Int64 // CLOCK_MONOTONIC ns of the first kick since Arm; 0 when none
	buf   [8]byte
}

// NewEventWake creates an eventfd wake source. Close it after the loop stopped.
func NewEventWake() (*EventWake, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventWake{fd: fd}, nil
}

// FD implements WakeSource.
func (w *EventWake) FD() int { return w.fd }

// Arm implements WakeSource. It first discards a kick that arrived while the
// loop was still running, so a stale kick cannot end the next wait.
func (w *EventWake) Arm() {
	w.drain()
	w.stamp.Store(0)
	w.armed.Store(true)
}

// Disarm implements WakeSource.
func (w *EventWake) Disarm() (int64, bool) {
	w.armed.Store(false)
	got := w.drain()
	s := w.stamp.Swap(0)
	return s, got && s != 0
}

// Kick wakes the loop if it is blocked (armed), stamping the moment with
// CLOCK_MONOTONIC; stampNs, when not 0, is an earlier stamp to report
// instead (e.g. the probe's packet timestamp). It reports whether the kick
// was delivered.
func (w *EventWake) Kick(stampNs int64) bool {
	if !w.armed.Load() {
		return false
	}
	if stampNs == 0 {
		stampNs = MonotonicNow()
	}
	w.stamp.CompareAndSwap(0, stampNs)
	one := uint64(1)
	_, err := unix.Write(w.fd, (*[8]byte)(unsafe.Pointer(&one))[:])
	return err == nil
}

// drain consumes a pending eventfd count; it reports whether there was one.
func (w *EventWake) drain() bool {
	r, _, errno := unix.Syscall(unix.SYS_READ, uintptr(w.fd), uintptr(unsafe.Pointer(&w.buf[0])), 8)
	return errno == 0 && r == 8
}

// Close releases the eventfd.
func (w *EventWake) Close() error { return unix.Close(w.fd) }
