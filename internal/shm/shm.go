// Package shm shares memory between a DP loop process and the daemon: a
// file-backed MAP_SHARED segment, and a single-producer single-consumer ring
// of fixed-size records in it. The producer (the DP loop) never blocks and
// never makes a syscall: a full ring drops the record and counts it, so a
// slow or dead consumer cannot stall packets.
package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Segment is a shared mapping of a file (under /run, i.e. tmpfs, in practice).
type Segment struct {
	path string
	mem  []byte
}

// Create makes (or truncates) the file at path with size bytes, zeroed, and
// maps it. The file is created 0600.
func Create(path string, size int) (*Segment, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm %s: size %d", path, size)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("shm %s: mmap: %w", path, err)
	}
	// Readers never see a half-initialised file under the final name.
	if err := os.Rename(tmp, path); err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	return &Segment{path: path, mem: mem}, nil
}

// Open maps an existing segment.
func Open(path string) (*Segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 || st.Size() > 1<<30 {
		return nil, fmt.Errorf("shm %s: unexpected size %d", path, st.Size())
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm %s: mmap: %w", path, err)
	}
	return &Segment{path: path, mem: mem}, nil
}

// Bytes is the mapped memory; valid until Close.
func (s *Segment) Bytes() []byte { return s.mem }

// Path is the backing file.
func (s *Segment) Path() string { return s.path }

// Close unmaps the segment (the file stays).
func (s *Segment) Close() error {
	if s.mem == nil {
		return nil
	}
	err := unix.Munmap(s.mem)
	s.mem = nil
	return err
}

// Uint64At returns an atomic view of the 8 bytes at off (8-aligned).
func Uint64At(mem []byte, off int) *atomic.Uint64 {
	if off%8 != 0 || off+8 > len(mem) {
		panic(fmt.Sprintf("shm: bad offset %d in %d bytes", off, len(mem)))
	}
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

// Ring layout: three 64-byte lines (tail, head, dropped: each on its own
// cache line) followed by n records of recSize bytes.
const ringHeader = 3 * 64

// RingBytes is the memory a ring of n records of recSize bytes needs.
func RingBytes(n, recSize int) int { return ringHeader + n*recSize }

// Ring is an SPSC ring over shared memory.
type Ring struct {
	tail, head, dropped *atomic.Uint64
	recs                []byte
	recSize             int
	mask                uint64
}

// ErrRingShape reports a ring that does not fit its memory.
var ErrRingShape = errors.New("shm: ring shape")

// NewRing views mem as a ring of n (a power of two) records of recSize
// (a multiple of 8) bytes. Producer and consumer call it on the same layout.
func NewRing(mem []byte, n, recSize int) (*Ring, error) {
	if n <= 0 || n&(n-1) != 0 || recSize <= 0 || recSize%8 != 0 || len(mem) < RingBytes(n, recSize) {
		return nil, fmt.Errorf("%w: n=%d rec=%d mem=%d", ErrRingShape, n, recSize, len(mem))
	}
	return &Ring{
		tail:    Uint64At(mem, 0),
		head:    Uint64At(mem, 64),
		dropped: Uint64At(mem, 128),
		recs:    mem[ringHeader:RingBytes(n, recSize)],
		recSize: recSize,
		mask:    uint64(n - 1),
	}, nil
}

// Push appends rec (recSize bytes) or, when the ring is full, drops it and
// counts the drop. Producer side only.
func (r *Ring) Push(rec []byte) bool {
	t := r.tail.Load()
	// A head ahead of the tail (corrupt) wraps to a huge gap: dropped too.
	if t-r.head.Load() > r.mask {
		r.dropped.Add(1)
		return false
	}
	i := int(t&r.mask) * r.recSize
	copy(r.recs[i:i+r.recSize], rec)
	r.tail.Store(t + 1) // publishes the record
	return true
}

// ErrRingCorrupt reports head and tail indices no producer could have left:
// more records queued than the ring holds. The other side of a shared
// segment is not trusted; a consumer that believed such a tail would read
// for almost ever.
var ErrRingCorrupt = errors.New("shm: ring indices corrupt")

// Pop copies the oldest record into dst and reports whether there was one.
// Corrupt indices are an error (call Skip to resynchronise). Consumer side
// only.
func (r *Ring) Pop(dst []byte) (bool, error) {
	h, t := r.head.Load(), r.tail.Load()
	if h == t {
		return false, nil
	}
	if t-h > r.mask+1 {
		return false, fmt.Errorf("%w: head %d tail %d in a ring of %d", ErrRingCorrupt, h, t, r.mask+1)
	}
	i := int(h&r.mask) * r.recSize // in range: the mask bounds the index
	copy(dst, r.recs[i:i+r.recSize])
	r.head.Store(h + 1)
	return true, nil
}

// Len is how many records a consumer may pop at most in one pass: the
// ring's capacity (a producer refills it meanwhile, so drain in passes).
func (r *Ring) Len() int { return int(r.mask + 1) }

// Skip drops everything queued (a consumer attaching after a restart does
// not replay stale records). Consumer side only.
func (r *Ring) Skip() { r.head.Store(r.tail.Load()) }

// Dropped counts records the producer could not queue.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// Pending reports whether a record is queued (a consumer's cheap check
// before it sleeps).
func (r *Ring) Pending() bool { return r.head.Load() != r.tail.Load() }
