package shm

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzRingIndices: whatever the other side left in a ring's header, Pop
// either returns records (at most the ring's capacity before it is empty or
// reports corruption) or an error, never loops. The ring memory is the
// fuzzer's bytes.
func FuzzRingIndices(f *testing.F) {
	f.Add(uint64(0), uint64(0), []byte{1, 2, 3})
	f.Add(uint64(5), uint64(3), []byte{})            // head ahead of tail
	f.Add(uint64(0), uint64(1)<<40, []byte{})        // tail far ahead: would pop for ever
	f.Add(^uint64(0), uint64(7), []byte{0xff})       // wrapped
	f.Add(uint64(1)<<63, uint64(1)<<63+8, []byte{9}) // a full ring, shifted
	f.Fuzz(func(t *testing.T, head, tail uint64, body []byte) {
		const n, rec = 8, 16
		mem := make([]byte, RingBytes(n, rec))
		copy(mem[ringHeader:], body)
		binary.LittleEndian.PutUint64(mem[0:], tail)
		binary.LittleEndian.PutUint64(mem[64:], head)
		r, err := NewRing(mem, n, rec)
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]byte, rec)
		for i := 0; ; i++ {
			ok, err := r.Pop(dst)
			if err != nil {
				if !errors.Is(err, ErrRingCorrupt) || tail-head <= n {
					t.Fatalf("head %d tail %d: Pop error %v", head, tail, err)
				}
				return
			}
			if !ok {
				return
			}
			if i >= n {
				t.Fatalf("head %d tail %d: popped more than the ring holds", head, tail)
			}
		}
	})
}
