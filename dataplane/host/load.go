package host

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/shm"
)

// The load block: the figures the daemon's load pass reads every 100 ms
// per loop, as fixed binary words past the event ring, updated in place
// under a seqlock (shm.SeqBlock) at every publish. Decoding them as JSON
// was a seventh of the daemon's CPU. Hosts that advertise
// featureLoadBlock write it beside the JSON stats, which stay for status
// and for daemons that predate the block; a daemon attached to a host
// without it reads the JSON (Client.ReadLoad).
const (
	// offLoadBuckets holds the number of residence buckets the block
	// carries, written before the feature bit: a daemon built with another
	// histogram layout reads the JSON instead.
	offLoadBuckets = minSegmentSize
	offLoadBlock   = offLoadBuckets + 64
)

// Word indices in the load block.
const (
	loadPublished = iota
	loadBusy
	loadPackets
	loadResCount
	loadResSum
	loadResMax
	loadResBuckets
	loadWords = loadResBuckets + dataplane.HistBuckets
)

// featureLoadBlock: the host writes the load block.
const featureLoadBlock = 1 << 1

// Load is what the daemon's periodic load pass needs from a loop: its
// cumulative busy time, packets and RX residence as of the host's publish.
type Load struct {
	Published int64 // CLOCK_MONOTONIC
	Busy      time.Duration
	Packets   uint64
	Residence dataplane.Histogram
}

// loadOf takes a Snapshot's load figures (a host without the block).
func loadOf(s *Snapshot) Load {
	return Load{Published: s.Published, Busy: s.Loop.Busy, Packets: s.Loop.Packets, Residence: s.Loop.Residence}
}

// encodeLoad lays s's load figures out as the block's words.
func encodeLoad(w []uint64, s *Snapshot) {
	w[loadPublished] = uint64(s.Published)
	w[loadBusy] = uint64(s.Loop.Busy)
	w[loadPackets] = s.Loop.Packets
	r := &s.Loop.Residence
	w[loadResCount], w[loadResSum], w[loadResMax] = r.Count, r.SumNs, r.MaxNs
	copy(w[loadResBuckets:], r.Buckets[:])
}

// decode fills l from the block's words. Counts that do not add up are an
// error, as they are in the JSON (the other side is not trusted).
func (l *Load) decode(w []uint64, name string) error {
	if w[loadPublished] == 0 {
		return fmt.Errorf("dp %s: no stats published yet", name)
	}
	l.Published, l.Busy, l.Packets = int64(w[loadPublished]), time.Duration(w[loadBusy]), w[loadPackets]
	r := &l.Residence
	r.Count, r.SumNs, r.MaxNs = w[loadResCount], w[loadResSum], w[loadResMax]
	copy(r.Buckets[:], w[loadResBuckets:])
	var total uint64
	for _, c := range r.Buckets {
		total += c
	}
	if total != r.Count {
		return fmt.Errorf("dp %s: load block: residence buckets hold %d samples, count says %d", name, total, r.Count)
	}
	return nil
}

// attachLoad sets the client up to read the load block when the host
// writes one this client can read.
func (c *Client) attachLoad() error {
	if u64(c.seg, offFeatures).Load()&featureLoadBlock == 0 || len(c.seg.Bytes()) < segmentSize ||
		u64(c.seg, offLoadBuckets).Load() != dataplane.HistBuckets {
		return nil
	}
	b, err := shm.NewSeqBlock(c.seg.Bytes(), offLoadBlock, loadWords)
	if err != nil {
		return err
	}
	c.load, c.loadWords = b, make([]uint64, loadWords)
	return nil
}

// BinaryLoad reports whether ReadLoad reads the host's load block (else
// the JSON stats of a host from before it).
func (c *Client) BinaryLoad() bool { return c.load != nil }

// ReadLoad fills l with the loop's load figures as the host last
// published them: from the load block, without allocating, or from the
// JSON stats of a host that does not write one. Call it from one
// goroutine at a time.
func (c *Client) ReadLoad(l *Load) error {
	if c.load == nil {
		s, err := c.Snapshot()
		if err != nil {
			return err
		}
		*l = loadOf(&s)
		return nil
	}
	if err := c.load.Read(c.loadWords); err != nil {
		return fmt.Errorf("dp %s: load block: %w", c.name, err)
	}
	return l.decode(c.loadWords, c.name)
}

// startLoad sets the host up to write the load block.
func (h *Host) startLoad() error {
	b, err := shm.NewSeqBlock(h.seg.Bytes(), offLoadBlock, loadWords)
	if err != nil {
		return err
	}
	h.load, h.loadWords = b, make([]uint64, loadWords)
	u64(h.seg, offLoadBuckets).Store(dataplane.HistBuckets)
	return nil
}

// publishStats writes s to seg: the JSON stats under their sequence, and,
// with a block, its load figures. JSON too large for the stats area is
// not written (the block still is).
func publishStats(seg *shm.Segment, block *shm.SeqBlock, words []uint64, s *Snapshot) {
	if block != nil {
		encodeLoad(words, s)
		block.Write(words)
	}
	b, err := json.Marshal(s)
	if err != nil || len(b) > maxStats {
		return
	}
	seq := u64(seg, offStatsSeq)
	seq.Add(1) // odd: writing
	copy(seg.Bytes()[offStats:], b)
	u64(seg, offStatsLen).Store(uint64(len(b)))
	seq.Add(1)
}
