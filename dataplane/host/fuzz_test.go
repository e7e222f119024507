package host

import (
	"path/filepath"
	"testing"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/shm"
)

// FuzzClientOnCorruptSegment: a segment whose host wrote garbage (stats
// length, stats bytes, ring indices, event records) makes Snapshot,
// ReadLoad and Events return errors or data, never panic or hang. The
// segment is a real mapped file, laid out as Start lays it out.
func FuzzClientOnCorruptSegment(f *testing.F) {
	f.Add(uint64(12), []byte(`{"loop":{}}`), uint64(0), uint64(0), []byte{1, 1})
	f.Add(uint64(1)<<63, []byte{}, uint64(0), uint64(0), []byte{})          // length turns negative as an int
	f.Add(uint64(maxStats+1), []byte{}, uint64(0), uint64(0), []byte{})     // past the stats area
	f.Add(uint64(3), []byte("{{{"), uint64(0), uint64(1)<<40, []byte{2, 3}) // tail far ahead
	f.Add(uint64(0), []byte{}, uint64(9), uint64(2), []byte{0xff, 0xff, 0}) // head ahead, bad record
	f.Fuzz(func(t *testing.T, statsLen uint64, stats []byte, head, tail uint64, rec []byte) {
		path := filepath.Join(t.TempDir(), "x.shm")
		seg, err := shm.Create(path, segmentSize)
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		u64(seg, offVersion).Store(version)
		u64(seg, offMagic).Store(magic)
		c, err := Attach(path, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The other side goes bad after the attach.
		copy(seg.Bytes()[offStats:offRing], stats)
		u64(seg, offStatsLen).Store(statsLen)
		for i := 0; i < 4 && len(rec) > 0; i++ {
			copy(seg.Bytes()[offRing+3*64+i*eventRec:], rec)
		}
		u64(seg, offRing).Store(tail)
		u64(seg, offRing+64).Store(head)

		c.Snapshot()
		var l Load
		c.ReadLoad(&l)
		calls := 0
		c.Events(func(dataplane.Event) {
			if calls++; calls > ringLen {
				t.Fatalf("Events handed out more than a ring's worth (head %d tail %d)", head, tail)
			}
		})
	})
}
