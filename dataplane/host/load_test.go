package host

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/shm"
	"github.com/taichi-sched/taichi/probe"
)

// busySnapshot is what a host publishes for a loop that has carried
// traffic: residence, exposed and lead histograms over many buckets, and
// the XDP probe's counters.
func busySnapshot(published int64) Snapshot {
	s := Snapshot{Published: published, Probe: &probe.Stats{Backend: "xdp", Iface: "nic-in", NetNS: "c23-nic", Mode: "native",
		Queues: []probe.QueueStats{{Queue: 0, Core: 1, Packets: 123456, Bytes: 98765432}},
		Cores:  []probe.CoreStats{{Core: 1, Fired: 5000, Delivered: 4990, Missed: 10}}}}
	st := &s.Loop
	st.Name, st.CPU, st.TID, st.RXStamp = "c0", 1, 4242, dataplane.StampKernel
	st.Packets, st.Bytes, st.TxPackets, st.Polls, st.EmptyPolls = 123456, 98765432, 123400, 9999999, 9876543
	st.Yields, st.Heartbeat, st.WakesRX, st.WakesProbe = 5000, 10000000, 10, 4990
	st.Busy, st.Blocked = 1234567890*time.Nanosecond, 50*time.Second
	for v := time.Duration(300); v < 20*time.Millisecond; v = v*21/20 + 1 {
		st.Residence.Record(v)
		st.Exposed.Record(v / 2)
		st.Lead.Record(v / 3)
	}
	return s
}

// layOut makes a segment at path as Start lays one out, of size bytes
// with the given feature bits, and publishes s to it. With the load
// block it is the host's own code (startLoad, publishStats); without, it
// is a version 2 host from before the block: a segment that ends at the
// ring and JSON stats only.
func layOut(t testing.TB, path string, size int, features uint64, s *Snapshot) *shm.Segment {
	t.Helper()
	seg, err := shm.Create(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	h := &Host{seg: seg}
	if features&featureLoadBlock != 0 {
		if err := h.startLoad(); err != nil {
			t.Fatal(err)
		}
	}
	u64(seg, offFeatures).Store(features)
	u64(seg, offVersion).Store(version)
	u64(seg, offMagic).Store(magic)
	publishStats(seg, h.load, h.loadWords, s)
	return seg
}

func attach(t testing.TB, path string) *Client {
	t.Helper()
	c, err := Attach(path, "c0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sameLoad(t *testing.T, how string, got, want Load) {
	t.Helper()
	if got != want {
		t.Errorf("%s: published %d busy %v packets %d residence %d/%d/%d; want %d %v %d %d/%d/%d", how,
			got.Published, got.Busy, got.Packets, got.Residence.Count, got.Residence.SumNs, got.Residence.MaxNs,
			want.Published, want.Busy, want.Packets, want.Residence.Count, want.Residence.SumNs, want.Residence.MaxNs)
	}
}

// A host with the block: the daemon reads the block, and the figures are
// the ones the JSON carries; the JSON is still there, whole, for status
// and for a daemon that predates the block (which checks only the
// version, the magic and that the segment holds the ring).
func TestLoadBlockMatchesJSON(t *testing.T) {
	if version != 2 || offRing+ringLen*eventRec+3*64 != minSegmentSize || offLoadBuckets < minSegmentSize ||
		segmentSize != offLoadBlock+shm.SeqBlockBytes(loadWords) || offLoadBlock%64 != 0 {
		t.Fatalf("layout moved what version 2 daemons read, or the block overlaps it (ring ends %d, block %d..%d)",
			minSegmentSize, offLoadBuckets, segmentSize)
	}
	s := busySnapshot(int64(7 * time.Second))
	path := filepath.Join(t.TempDir(), "c0.shm")
	layOut(t, path, segmentSize, featureLoadBlock, &s)
	c := attach(t, path)
	if !c.BinaryLoad() {
		t.Fatal("a host with the load block is read through JSON")
	}
	var got Load
	if err := c.ReadLoad(&got); err != nil {
		t.Fatal(err)
	}
	sameLoad(t, "block", got, loadOf(&s))
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sameLoad(t, "JSON beside the block", loadOf(&snap), loadOf(&s))
	if snap.Probe == nil || snap.Loop.Exposed != s.Loop.Exposed {
		t.Error("the JSON lost what only status reads")
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = c.ReadLoad(&got) }); allocs != 0 {
		t.Errorf("ReadLoad from the block allocates %v times per call", allocs)
	}
}

// A new daemon on a host from before the block (a segment that ends at
// the ring, no feature bit) reads the same figures from the JSON; so it
// does on a host whose block carries another number of histogram buckets.
func TestLoadFallsBackToJSON(t *testing.T) {
	s := busySnapshot(int64(9 * time.Second))
	old := filepath.Join(t.TempDir(), "old.shm")
	layOut(t, old, minSegmentSize, 0, &s)
	other := filepath.Join(t.TempDir(), "other.shm")
	seg := layOut(t, other, segmentSize, featureLoadBlock, &s)
	u64(seg, offLoadBuckets).Store(dataplane.HistBuckets + 8)
	for _, path := range []string{old, other} {
		c := attach(t, path)
		if c.BinaryLoad() {
			t.Fatalf("%s: reads a load block it cannot", filepath.Base(path))
		}
		var got Load
		if err := c.ReadLoad(&got); err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		sameLoad(t, filepath.Base(path), got, loadOf(&s))
	}
}

// A block not yet published, or whose counts do not add up, is an error
// naming the loop, not figures.
func TestLoadBlockRefusesUnpublishedAndCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c0.shm")
	var none Snapshot
	seg := layOut(t, path, segmentSize, featureLoadBlock, &none)
	c := attach(t, path)
	var l Load
	if err := c.ReadLoad(&l); err == nil || !strings.Contains(err.Error(), "no stats published") {
		t.Errorf("unpublished block: %v", err)
	}
	s := busySnapshot(int64(time.Second))
	h := &Host{seg: seg}
	if err := h.startLoad(); err != nil {
		t.Fatal(err)
	}
	s.Loop.Residence.Count++
	publishStats(seg, h.load, h.loadWords, &s)
	if err := c.ReadLoad(&l); err == nil || !strings.Contains(err.Error(), "dp c0") || !strings.Contains(err.Error(), "count says") {
		t.Errorf("residence count off by one: %v", err)
	}
}

// BenchmarkLoadRead: one loop's read in the daemon's load pass, from the
// JSON stats (what the daemon did, and still does with an old host) and
// from the load block, on the same published snapshot.
func BenchmarkLoadRead(b *testing.B) {
	s := busySnapshot(int64(time.Second))
	path := filepath.Join(b.TempDir(), "c0.shm")
	layOut(b, path, segmentSize, featureLoadBlock, &s)
	c := attach(b, path)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			snap, err := c.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			_ = loadOf(&snap)
		}
	})
	b.Run("block", func(b *testing.B) {
		b.ReportAllocs()
		var l Load
		for b.Loop() {
			if err := c.ReadLoad(&l); err != nil {
				b.Fatal(err)
			}
		}
	})
}
