package shm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// SeqBlock is a fixed block of 64-bit words in shared memory that one
// writer updates in place and readers copy out without a lock and without
// allocating (a seqlock). Its first word is a sequence number, odd while a
// write is under way; a reader that finds it odd, or finds it changed
// across its copy, copies again. Every word is read and written with an
// atomic access, so a copy overlapping a write is a retry, never a data
// race.
type SeqBlock struct {
	seq   *atomic.Uint64
	words []atomic.Uint64
	// midRead, when set, runs between a reader's copy and its second look
	// at the sequence (tests use it to land a write in that window).
	midRead func()
}

// SeqBlockBytes is the memory a SeqBlock of n words takes.
func SeqBlockBytes(n int) int { return 8 + 8*n }

// ErrSeqBusy means every try of a SeqBlock read overlapped a write (a
// writer that died in the middle of one leaves the block like this).
var ErrSeqBusy = errors.New("shm: block kept changing")

// A read gives up after seqTries tries or seqPatience, whichever comes
// first: the first seqSpins retries only yield the processor (a write
// takes well under a microsecond), the rest sleep seqSleep each (the
// writer was preempted mid-write). A timer sleep on a busy machine can
// take milliseconds, hence the bound in time too: a reader's caller has
// other work on its period.
const (
	seqTries    = 100
	seqSpins    = 8
	seqSleep    = 10 * time.Microsecond
	seqPatience = 2 * time.Millisecond
)

// NewSeqBlock views the SeqBlockBytes(n) bytes at off (8-aligned) of mem as
// a block of n words. Writer and readers call it on the same layout.
func NewSeqBlock(mem []byte, off, n int) (*SeqBlock, error) {
	if n <= 0 || off < 0 || off%8 != 0 || off+SeqBlockBytes(n) > len(mem) ||
		uintptr(unsafe.Pointer(&mem[off]))%8 != 0 {
		return nil, fmt.Errorf("shm: block of %d words at offset %d in %d bytes", n, off, len(mem))
	}
	return &SeqBlock{
		seq:   (*atomic.Uint64)(unsafe.Pointer(&mem[off])),
		words: unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&mem[off+8])), n),
	}, nil
}

// Len is the number of words.
func (b *SeqBlock) Len() int { return len(b.words) }

// Write replaces the block's words with src (len(src) == Len()). Writer
// side only: one writer per block.
func (b *SeqBlock) Write(src []uint64) {
	if len(src) != len(b.words) {
		panic(fmt.Sprintf("shm: write of %d words to a block of %d", len(src), len(b.words)))
	}
	s := b.seq.Load()
	b.seq.Store(s | 1) // odd: writing (a value left odd by a dead writer stays odd)
	for i, v := range src {
		b.words[i].Store(v)
	}
	b.seq.Store((s | 1) + 1)
}

// Read copies the block's words into dst (len(dst) == Len()) as one
// writer left them, retrying a copy that overlapped a write; ErrSeqBusy
// when it could not (see seqTries). It does not allocate.
func (b *SeqBlock) Read(dst []uint64) error {
	if len(dst) != len(b.words) {
		panic(fmt.Sprintf("shm: read of a block of %d words into %d", len(b.words), len(dst)))
	}
	var start time.Time
	for try := range seqTries {
		switch {
		case try == 0:
		case try < seqSpins:
			runtime.Gosched()
		case try == seqSpins:
			start = time.Now()
			time.Sleep(seqSleep)
		case time.Since(start) > seqPatience:
			return ErrSeqBusy
		default:
			time.Sleep(seqSleep)
		}
		s := b.seq.Load()
		if s%2 == 1 {
			continue
		}
		for i := range dst {
			dst[i] = b.words[i].Load()
		}
		if b.midRead != nil {
			b.midRead()
		}
		if b.seq.Load() == s {
			return nil
		}
	}
	return ErrSeqBusy
}
