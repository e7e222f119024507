package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/shm"
)

// Client drives a hosted loop through its segment (the daemon side). Calls
// never block on the loop: knobs and wake requests are stores the host
// applies on its next tick.
type Client struct {
	name string
	seg  *shm.Segment
	ring *shm.Ring
	bell *shm.Doorbell // nil: the host does not ring it (polled)
	// paced: the host rings at most once per BellGap (featureBellPaced).
	paced bool
	rec   []byte
	// rejected counts garbled event records (Events).
	rejected atomic.Uint64
	// load is the host's load block, nil for a host without one; ReadLoad
	// copies it into loadWords.
	load      *shm.SeqBlock
	loadWords []uint64
}

// ErrNotReady means the segment exists but its host has not finished starting.
var ErrNotReady = errors.New("dp segment not ready")

// Attach maps a hosted loop's segment. Events queued before the attach are
// skipped (a restarted daemon does not replay a dead one's backlog).
func Attach(path, name string) (*Client, error) {
	seg, err := shm.Open(path)
	if err != nil {
		return nil, err
	}
	if len(seg.Bytes()) < minSegmentSize || u64(seg, offMagic).Load() != magic {
		seg.Close()
		return nil, fmt.Errorf("dp %s: %s: %w", name, path, ErrNotReady)
	}
	if v := u64(seg, offVersion).Load(); v != version {
		seg.Close()
		return nil, fmt.Errorf("dp %s: %s: segment version %d, want %d", name, path, v, version)
	}
	ring, err := shm.NewRing(seg.Bytes()[offRing:], ringLen, eventRec)
	if err != nil {
		seg.Close()
		return nil, err
	}
	ring.Skip()
	c := &Client{name: name, seg: seg, ring: ring, rec: make([]byte, eventRec)}
	if err := c.attachLoad(); err != nil {
		seg.Close()
		return nil, fmt.Errorf("dp %s: %w", name, err)
	}
	c.paced = u64(seg, offFeatures).Load()&featureBellPaced != 0
	if u64(seg, offFeatures).Load()&featureEventBell != 0 {
		if c.bell, err = shm.OpenDoorbell(seg.Bytes(), offEventBell, BellPath(path), false); err != nil {
			seg.Close()
			return nil, fmt.Errorf("dp %s: %w", name, err)
		}
	}
	return c, nil
}

// LegacyEventPoll is how often WaitEvents looks at the ring of a host that
// does not ring the doorbell (one from before it had one).
const LegacyEventPoll = 200 * time.Microsecond

// WaitEvents returns when the host has queued an event, or after timeout.
// It returns at once if one is queued already. Call it from the goroutine
// that calls Events. A host without the doorbell is polled every
// LegacyEventPoll instead.
func (c *Client) WaitEvents(timeout time.Duration) error {
	if c.bell == nil {
		if !c.ring.Pending() {
			time.Sleep(min(timeout, LegacyEventPoll))
		}
		return nil
	}
	return c.bell.Wait(c.ring.Pending, timeout)
}

// EventBell reports whether the host rings the doorbell (WaitEvents sleeps
// until an event) rather than being polled.
func (c *Client) EventBell() bool { return c.bell != nil }

// BellPaced reports whether the host paces its rings (one per BellGap at
// most), so that WaitRing may follow a drain.
func (c *Client) BellPaced() bool { return c.bell != nil && c.paced }

// WaitRing sleeps until the host rings, or after timeout, even while
// events are queued: after a drain of a pacing host, which rings for the
// events queued since once BellGap has passed since its last ring. Call it
// only when BellPaced.
func (c *Client) WaitRing(timeout time.Duration) error {
	return c.bell.Wait(func() bool { return false }, timeout)
}

// PID is the hosting process.
func (c *Client) PID() int { return int(u64(c.seg, offPID).Load()) }

// CPU is the loop's DP core.
func (c *Client) CPU() int { return int(u64(c.seg, offCPU).Load()) }

// TID is the loop's worker thread.
func (c *Client) TID() int { return int(u64(c.seg, offTID).Load()) }

// SetYield sets the loop's yield threshold (<0: never yield) and slice.
func (c *Client) SetYield(after int64, slice time.Duration) {
	u64(c.seg, offYieldAfter).Store(uint64(after))
	u64(c.seg, offSlice).Store(uint64(slice))
	u64(c.seg, offKnobSeq).Add(1)
}

// SetProbeWake lets the probe wake the loop, or not.
func (c *Client) SetProbeWake(on bool) {
	v := uint64(0)
	if on {
		v = 1
	}
	u64(c.seg, offProbeWake).Store(v)
	u64(c.seg, offKnobSeq).Add(1)
}

// Wake asks the loop to run now if it is blocked.
func (c *Client) Wake() { u64(c.seg, offWakeReq).Add(1) }

// Knobs returns the knobs the host last applied: yield threshold and slice,
// and whether it has caught up with the latest SetYield/SetProbeWake.
func (c *Client) Knobs() (after int64, slice time.Duration, applied bool) {
	return int64(u64(c.seg, offYieldAfter).Load()), time.Duration(u64(c.seg, offSlice).Load()),
		u64(c.seg, offKnobSeen).Load() == u64(c.seg, offKnobSeq).Load()
}

// HostBeat is the CLOCK_MONOTONIC time of the host's last tick: a stale
// value means the hosting process is gone or stuck.
func (c *Client) HostBeat() time.Duration { return time.Duration(u64(c.seg, offHostBeat).Load()) }

// Alive reports whether the host ticked within the last second.
func (c *Client) Alive() bool {
	return dataplane.MonotonicNow()-int64(c.HostBeat()) < int64(time.Second)
}

// Snapshot reads the host's last published stats.
func (c *Client) Snapshot() (Snapshot, error) {
	var s Snapshot
	for try := 0; try < 100; try++ {
		seq := u64(c.seg, offStatsSeq)
		s1 := seq.Load()
		if s1%2 == 1 {
			time.Sleep(10 * time.Microsecond)
			continue
		}
		// Checked before it becomes an int: a corrupt length must not turn
		// negative or past the stats area.
		ln := u64(c.seg, offStatsLen).Load()
		if ln == 0 {
			return s, fmt.Errorf("dp %s: no stats published yet", c.name)
		}
		if ln > maxStats {
			return s, fmt.Errorf("dp %s: stats length %d (corrupt segment)", c.name, ln)
		}
		n := int(ln)
		buf := make([]byte, n)
		copy(buf, c.seg.Bytes()[offStats:offStats+n])
		if seq.Load() != s1 {
			continue
		}
		if err := json.Unmarshal(buf, &s); err != nil {
			return s, fmt.Errorf("dp %s: stats: %w", c.name, err)
		}
		return s, nil
	}
	return s, fmt.Errorf("dp %s: stats kept changing", c.name)
}

// Events hands the queued yield/wake events to fn and returns how many; a
// garbled record is skipped and reported after the rest. One call takes at
// most a ring's worth, so neither a fast producer nor corrupt indices keep
// the caller here; corrupt indices are reported and the ring resynchronised.
func (c *Client) Events(fn func(dataplane.Event)) (int, error) {
	n := 0
	var bad error
	for range c.ring.Len() {
		ok, err := c.ring.Pop(c.rec)
		if err != nil {
			c.ring.Skip()
			return n, fmt.Errorf("dp %s: events: %w", c.name, err)
		}
		if !ok {
			break
		}
		ev, err := decodeEvent(c.rec, c.name)
		if err != nil {
			c.rejected.Add(1)
			bad = err
			continue
		}
		fn(ev)
		n++
	}
	return n, bad
}

// EventsRejected counts event records Events refused (an unknown kind or
// wake cause: a host of another version, or a corrupt segment).
func (c *Client) EventsRejected() uint64 { return c.rejected.Load() }

// EventsDropped counts events the host could not queue (the daemon was slow or gone).
func (c *Client) EventsDropped() uint64 { return c.ring.Dropped() }

// Close unmaps the segment; the hosted loop keeps running.
func (c *Client) Close() error {
	if c.bell != nil {
		c.bell.Close()
	}
	return c.seg.Close()
}
