package shm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futex(2) operations (linux/futex.h); not the _PRIVATE ones: the word is
// shared between processes.
const (
	futexWait = 0
	futexWake = 1
)

// Doorbell lets a consumer in one process sleep until a producer in another
// has queued something: a futex word in the shared segment. The producer
// pays a syscall only when the consumer is asleep (or about to be), once
// per sleep, so a busy ring and a dead consumer both cost it nothing but
// an atomic load.
//
// The word is 1 while the consumer sleeps. Both sides are sequentially
// consistent atomics: the consumer arms the word and then checks the ring,
// the producer publishes the record and then checks the word, so at least
// one of them sees the other and no record sleeps unannounced.
type Doorbell struct {
	word *atomic.Uint32
}

// DoorbellAt views the 4 bytes at off (4-aligned) as a doorbell.
func DoorbellAt(mem []byte, off int) *Doorbell {
	if off%4 != 0 || off+4 > len(mem) {
		panic(fmt.Sprintf("shm: bad doorbell offset %d in %d bytes", off, len(mem)))
	}
	return &Doorbell{word: (*atomic.Uint32)(unsafe.Pointer(&mem[off]))}
}

// Ring wakes the consumer if it sleeps. Producer side (any number of
// callers: the swap lets one of them make the syscall).
func (d *Doorbell) Ring() error {
	if d.word.Load() == 0 || !d.word.CompareAndSwap(1, 0) {
		return nil
	}
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(d.word)), futexWake, 1, 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("shm: futex wake: %w", errno)
	}
	return nil
}

// Wait sleeps until the producer rings, for at most timeout, unless
// pending reports work already queued. It returns early on a ring or a
// signal; the caller drains and calls it again. Consumer side only.
func (d *Doorbell) Wait(pending func() bool, timeout time.Duration) error {
	d.word.Store(1)
	defer d.word.Store(0)
	if pending() {
		return nil
	}
	ts := unix.NsecToTimespec(int64(timeout))
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(d.word)), futexWait, 1,
		uintptr(unsafe.Pointer(&ts)), 0, 0)
	switch {
	case errno == 0, errors.Is(errno, unix.EAGAIN), errors.Is(errno, unix.EINTR), errors.Is(errno, unix.ETIMEDOUT):
		return nil
	default:
		return fmt.Errorf("shm: futex wait: %w", errno)
	}
}
