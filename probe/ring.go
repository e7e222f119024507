package probe

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringConsumer reads a BPF ring buffer through its memory mapping: no
// syscalls and no locks, so a DP loop can drain it on its hot path. One
// consumer per ring (the core's DP loop, or a watcher), never two.
//
// cilium's ringbuf.Reader would do the reading too, but it keeps its own
// epoll instance and takes a mutex and an epoll_wait per empty read; the DP
// loop already polls the ring's fd itself.
type ringConsumer struct {
	consPage []byte // consumer position, read-write
	prodPage []byte // producer position + data pages mapped twice, read-only
	consPos  *uintptr
	prodPos  *uintptr
	data     []byte
	mask     uintptr
}

// Ring buffer record header bits (include/uapi/linux/bpf.h).
const (
	ringbufBusyBit    = 1 << 31
	ringbufDiscardBit = 1 << 30
	ringbufHdrSize    = 8
)

func newRingConsumer(fd int, size int) (*ringConsumer, error) {
	if size <= 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring size %d not a power of two", size)
	}
	page := os.Getpagesize()
	cons, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap ring consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Munmap(cons)
		return nil, fmt.Errorf("mmap ring data: %w", err)
	}
	r := &ringConsumer{
		consPage: cons,
		prodPage: prod,
		consPos:  (*uintptr)(unsafe.Pointer(&cons[0])),
		prodPos:  (*uintptr)(unsafe.Pointer(&prod[0])),
		data:     prod[page:],
		mask:     uintptr(size - 1),
	}
	// Unmapped only once nothing can touch it: a DP loop may still call
	// Arm on a stopped probe, and that must not fault.
	runtime.AddCleanup(r, func(m [2][]byte) {
		_ = unix.Munmap(m[0])
		_ = unix.Munmap(m[1])
	}, [2][]byte{cons, prod})
	return r, nil
}

// pending reports whether the producer is ahead of the consumer.
func (r *ringConsumer) pending() bool {
	return atomic.LoadUintptr(r.consPos) != atomic.LoadUintptr(r.prodPos)
}

// next calls fn with the next committed record and then releases it; it
// skips discarded records. It returns false when no committed record is
// available (empty, or the next one is still being written).
func (r *ringConsumer) next(fn func([]byte)) bool {
	cons := atomic.LoadUintptr(r.consPos)
	for {
		prod := atomic.LoadUintptr(r.prodPos)
		if cons == prod {
			return false
		}
		off := cons & r.mask
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringbufBusyBit != 0 {
			return false
		}
		n := uintptr(hdr &^ (ringbufBusyBit | ringbufDiscardBit))
		total := (n + ringbufHdrSize + 7) &^ 7
		if n > uintptr(len(r.data))/2 || total > prod-cons {
			// Cannot happen with a kernel producer; resynchronise rather
			// than read out of bounds.
			atomic.StoreUintptr(r.consPos, prod)
			fn(nil)
			return true
		}
		if hdr&ringbufDiscardBit == 0 {
			start := off + ringbufHdrSize
			// The data pages are mapped twice in a row, so a record that
			// wraps is still contiguous here.
			fn(r.data[start : start+n])
			atomic.StoreUintptr(r.consPos, cons+total)
			return true
		}
		cons += total
		atomic.StoreUintptr(r.consPos, cons)
	}
}

// drain releases every committed record without reading it.
func (r *ringConsumer) drain() int {
	n := 0
	for r.next(func([]byte) {}) {
		n++
	}
	return n
}

// mmapRegion is a mapping of a BPF_F_MMAPABLE array. It is unmapped when
// the last holder (the probe, its wake sources) is garbage: pointers into it
// stay valid as long as their holder lives, even after Stop.
type mmapRegion struct{ b []byte }

// mmapArray maps a BPF_F_MMAPABLE array read-write. Elements are the value
// size rounded up to 8 bytes, laid out from offset 0.
func mmapArray(fd int, valueSize, entries uint32) (*mmapRegion, error) {
	page := os.Getpagesize()
	size := int((valueSize+7)&^7) * int(entries)
	size = (size + page - 1) / page * page
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap array: %w", err)
	}
	m := &mmapRegion{b: b}
	runtime.AddCleanup(m, func(b []byte) { _ = unix.Munmap(b) }, b)
	return m, nil
}

// word returns a pointer to the 8-byte aligned uint64 at off.
func (m *mmapRegion) word(off int) *uint64 {
	return (*uint64)(unsafe.Pointer(&m.b[off]))
}
