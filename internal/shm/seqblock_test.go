package shm

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A writer and a reader on two mappings of one file (as the DP host and
// the daemon are) see the same words.
func TestSeqBlockRoundTripAcrossMappings(t *testing.T) {
	a, b := twoMappings(t, 4096)
	w, err := NewSeqBlock(a.Bytes(), 256, 5)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewSeqBlock(b.Bytes(), 256, 5)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]uint64, 5)
	for gen := uint64(1); gen <= 3; gen++ {
		want := []uint64{gen, gen << 8, 1<<63 | gen, 0, ^gen}
		w.Write(want)
		if err := r.Read(got); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("generation %d: word %d = %#x, want %#x", gen, i, got[i], want[i])
			}
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = r.Read(got) }); allocs != 0 {
		t.Errorf("Read allocates %v times per call", allocs)
	}
}

func TestSeqBlockShape(t *testing.T) {
	mem := make([]byte, SeqBlockBytes(4)+8)
	for _, c := range []struct{ off, n int }{{4, 2}, {0, 0}, {0, 6}, {-8, 1}, {16, 4}} {
		if _, err := NewSeqBlock(mem, c.off, c.n); err == nil {
			t.Errorf("block of %d words at %d in %d bytes accepted", c.n, c.off, len(mem))
		}
	}
	if _, err := NewSeqBlock(mem, 8, 4); err != nil {
		t.Errorf("a block that fits: %v", err)
	}
}

// A write that lands between a reader's copy and its second look at the
// sequence makes the reader copy again: it returns the new words, never
// the mix.
func TestSeqBlockTornReadRetried(t *testing.T) {
	mem := make([]byte, SeqBlockBytes(3))
	w, _ := NewSeqBlock(mem, 0, 3)
	r, _ := NewSeqBlock(mem, 0, 3)
	w.Write([]uint64{1, 1, 1})
	copies := 0
	r.midRead = func() {
		if copies++; copies == 1 {
			w.Write([]uint64{2, 2, 2})
		}
	}
	got := make([]uint64, 3)
	if err := r.Read(got); err != nil {
		t.Fatal(err)
	}
	if copies != 2 || got[0] != 2 || got[1] != 2 || got[2] != 2 {
		t.Fatalf("after a write mid-copy: %d copies, words %v; want 2 copies of [2 2 2]", copies, got)
	}
}

// A block left odd (its writer died mid-write) is an error after bounded
// tries, not a hang and not the half-written words; the reader sees the
// block again once a write completes.
func TestSeqBlockWriteInProgress(t *testing.T) {
	mem := make([]byte, SeqBlockBytes(2))
	w, _ := NewSeqBlock(mem, 0, 2)
	w.Write([]uint64{7, 7})
	w.seq.Add(1) // a writer stopped between its odd mark and its stores
	got := make([]uint64, 2)
	start := time.Now()
	if err := w.Read(got); !errors.Is(err, ErrSeqBusy) {
		t.Fatalf("read of a block mid-write: %v, want ErrSeqBusy", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("giving up took %v", took)
	}
	w.Write([]uint64{8, 8})
	if err := w.Read(got); err != nil || got[0] != 8 || got[1] != 8 {
		t.Fatalf("after the next write: %v %v", got, err)
	}
}

// One writer rewriting the block as fast as it can, readers copying it
// meanwhile: every copy is one write's words (all equal), and a reader
// never sees the block go back in time. Run under -race: the accesses
// are atomic, so the overlap is a retry, not a race.
func TestSeqBlockConcurrentWriterReaders(t *testing.T) {
	const words = 64
	mem := make([]byte, SeqBlockBytes(words))
	w, _ := NewSeqBlock(mem, 0, words)
	w.Write(make([]uint64, words))
	var stop atomic.Bool
	var writes atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src := make([]uint64, words)
		for gen := uint64(1); !stop.Load(); gen++ {
			for i := range src {
				src[i] = gen
			}
			w.Write(src)
			writes.Store(gen)
		}
	}()
	var retried atomic.Bool
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := NewSeqBlock(mem, 0, words)
			copies := 0
			r.midRead = func() { copies++ }
			got := make([]uint64, words)
			var last uint64
			for !stop.Load() {
				before := copies
				if err := r.Read(got); err != nil {
					continue // the writer was preempted mid-write a hundred times
				}
				if copies-before > 1 {
					retried.Store(true)
				}
				for i := range got {
					if got[i] != got[0] {
						t.Errorf("torn copy: word %d = %d, word 0 = %d", i, got[i], got[0])
						return
					}
				}
				if got[0] < last {
					t.Errorf("went back from generation %d to %d", last, got[0])
					return
				}
				last = got[0]
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	deadline := time.Now().Add(20 * time.Second)
	for !retried.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if writes.Load() == 0 {
		t.Fatal("the writer never wrote")
	}
	if !retried.Load() {
		t.Error("no read overlapped a write: the test did not exercise a retry")
	}
}
