package shm

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// twoMappings creates a segment of size bytes and maps it a second time,
// as the DP host and the daemon do.
func twoMappings(t *testing.T, size int) (created, opened *Segment) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	a, err := Create(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

func TestSegmentSharedBetweenMappings(t *testing.T) {
	a, b := twoMappings(t, 4096)
	Uint64At(a.Bytes(), 64).Store(42)
	if got := Uint64At(b.Bytes(), 64).Load(); got != 42 {
		t.Fatalf("second mapping reads %d, want 42", got)
	}
}

func TestRingOrderDropAndSkip(t *testing.T) {
	mem := make([]byte, RingBytes(4, 16))
	prod, err := NewRing(mem, 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	cons, _ := NewRing(mem, 4, 16)
	rec := make([]byte, 16)
	for i := 0; i < 6; i++ {
		binary.LittleEndian.PutUint64(rec, uint64(i))
		ok := prod.Push(rec)
		if ok != (i < 4) {
			t.Fatalf("push %d = %v", i, ok)
		}
	}
	if prod.Dropped() != 2 {
		t.Fatalf("dropped = %d, want 2", prod.Dropped())
	}
	for i := 0; i < 4; i++ {
		if ok, _ := cons.Pop(rec); !ok || binary.LittleEndian.Uint64(rec) != uint64(i) {
			t.Fatalf("pop %d = %d", i, binary.LittleEndian.Uint64(rec))
		}
	}
	if ok, _ := cons.Pop(rec); ok {
		t.Fatal("pop from empty ring")
	}
	prod.Push(rec)
	cons.Skip()
	if ok, _ := cons.Pop(rec); ok {
		t.Fatal("Skip left records")
	}
	if _, err := NewRing(mem, 3, 16); err == nil {
		t.Fatal("non-power-of-two ring accepted")
	}
}

func TestRingConcurrentSPSC(t *testing.T) {
	const n = 20000
	mem := make([]byte, RingBytes(256, 8))
	r, _ := NewRing(mem, 256, 8)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rec := make([]byte, 8)
		for i := uint64(0); i < n; {
			binary.LittleEndian.PutUint64(rec, i)
			if r.Push(rec) {
				i++
			} else {
				r.dropped.Add(^uint64(0)) // retried, not a real drop
			}
		}
	}()
	rec := make([]byte, 8)
	for want := uint64(0); want < n; {
		if ok, _ := r.Pop(rec); ok {
			if got := binary.LittleEndian.Uint64(rec); got != want {
				t.Fatalf("got %d, want %d", got, want)
			}
			want++
		}
	}
	wg.Wait()
}

func TestRingCorruptTailIsAnError(t *testing.T) {
	mem := make([]byte, RingBytes(4, 8))
	r, err := NewRing(mem, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	Uint64At(mem, 0).Store(1 << 40) // tail: a trillion records "queued"
	if ok, err := r.Pop(make([]byte, 8)); ok || !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("Pop on a corrupt ring = %v, %v; want ErrRingCorrupt", ok, err)
	}
	r.Skip()
	if ok, err := r.Pop(make([]byte, 8)); ok || err != nil {
		t.Fatalf("Pop after Skip = %v, %v; want empty", ok, err)
	}
}
