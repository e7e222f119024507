package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Doorbell lets a consumer in one process sleep until a producer in another
// has queued something. It is a word in the shared segment (1 while the
// consumer sleeps, or is about to) and a FIFO beside it that carries the
// ring. The producer writes to the FIFO only when the word says the
// consumer sleeps, once per sleep, so a busy ring and a dead consumer both
// cost it nothing but an atomic load. The consumer waits in Go's network
// poller (a FIFO is pollable), not in a blocking syscall, and both sides
// read and write the FIFO with raw non-blocking syscalls: an ordinary
// syscall from an idle Go process wakes the runtime's monitor thread
// (sysmon), which costs more wakes than the ring itself.
//
// Both sides use sequentially consistent atomics: the consumer arms the
// word and then checks the ring, the producer publishes the record and
// then checks the word, so at least one of them sees the other and no
// record sleeps unannounced. A stale byte in the FIFO only makes the next
// wait return early.
type Doorbell struct {
	word *atomic.Uint32
	rd   *os.File // consumer side: pollable, read with a deadline
	raw  syscall.RawConn
	wr   int // producer side: a raw non-blocking fd (-1: none)
	buf  [64]byte
}

// OpenDoorbell views the 4 bytes at off (4-aligned) of mem as the doorbell
// word and opens the FIFO at path, making it if missing. Both sides open
// it read-write: neither blocks in open(2) waiting for the other, and a
// reader never sees end-of-file for want of a writer.
func OpenDoorbell(mem []byte, off int, path string, producer bool) (*Doorbell, error) {
	if off%4 != 0 || off+4 > len(mem) {
		return nil, fmt.Errorf("shm: doorbell offset %d in %d bytes", off, len(mem))
	}
	if err := unix.Mkfifo(path, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("shm: doorbell %s: %w", path, err)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode()&fs.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("shm: doorbell %s is not a FIFO", path)
	}
	d := &Doorbell{word: (*atomic.Uint32)(unsafe.Pointer(&mem[off])), wr: -1}
	if producer {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("shm: doorbell %s: %w", path, err)
		}
		d.wr = fd
		return d, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: doorbell %s: %w", path, err)
	}
	if d.raw, err = f.SyscallConn(); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: doorbell %s: %w", path, err)
	}
	d.rd = f
	return d, nil
}

// Close closes the FIFO (the word and the FIFO stay for the other side).
func (d *Doorbell) Close() error {
	if d.rd != nil {
		return d.rd.Close()
	}
	if d.wr >= 0 {
		err := unix.Close(d.wr)
		d.wr = -1
		return err
	}
	return nil
}

// Ring wakes the consumer if it sleeps, and reports whether it did (false:
// the consumer is awake and will see what is queued). Producer side; it
// never blocks (a full FIFO already holds a ring).
func (d *Doorbell) Ring() (rang bool, err error) {
	if d.word.Load() == 0 || !d.word.CompareAndSwap(1, 0) {
		return false, nil
	}
	one := [1]byte{1}
	if _, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(d.wr), uintptr(unsafe.Pointer(&one[0])), 1); errno != 0 && errno != unix.EAGAIN {
		return true, fmt.Errorf("shm: doorbell ring: %w", errno)
	}
	return true, nil
}

// Wait sleeps until the producer rings, for at most timeout, unless
// pending reports work queued already. The caller drains and calls it
// again. Consumer side only.
func (d *Doorbell) Wait(pending func() bool, timeout time.Duration) error {
	d.word.Store(1)
	defer d.word.Store(0)
	if pending() {
		return nil
	}
	if err := d.rd.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("shm: doorbell: %w", err)
	}
	var rerr error
	err := d.raw.Read(func(fd uintptr) bool {
		_, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)))
		if errno == unix.EAGAIN {
			return false // nothing yet: the poller waits for the FIFO
		}
		if errno != 0 && errno != unix.EINTR {
			rerr = errno
		}
		return true
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("shm: doorbell wait: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("shm: doorbell wait: %w", rerr)
	}
	return nil
}
