package probe

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// XDPWakeSource is one DP core's view of the XDP probe: the core's state word
// in the mmapped core_states array and the core's ring buffer. Arm and
// Disarm are plain atomic operations on shared memory; FD is the ring's map
// fd, which epoll reports readable while an event is pending.
//
// One DP loop (or one watcher) per core calls Arm/Disarm; Stats may be read
// from anywhere.
type XDPWakeSource struct {
	core   int
	ring   *ebpf.Map
	fd     int
	cons   *ringConsumer
	states *mmapRegion // keeps the mapping behind state/fired/lost alive
	state  *uint64     // core_states[core].state
	fired  *uint64     // core_states[core].fired
	lost   *uint64     // core_states[core].lost
	// lostAtArm is lost when Arm ran: a higher count at Disarm means this
	// arming's record will never come (owned by the Arm/Disarm caller).
	lostAtArm uint64
	closed    atomic.Bool
	deliv     atomic.Uint64
	missed    atomic.Uint64
	garbled   atomic.Uint64
	stamp     atomic.Int64
	lag       atomic.Int64
}

// disarmSpin bounds how long Disarm waits for a record whose core already
// fired: the program writes the record right after its compare-and-swap, so
// a miss means it lost the race by a few hundred nanoseconds at most.
const disarmSpin = 20 * time.Microsecond

func newXDPWakeSource(core int, inner *ebpf.MapSpec, states *mmapRegion) (*XDPWakeSource, error) {
	if inner == nil {
		return nil, fmt.Errorf("core_rings has no inner map spec")
	}
	spec := inner.Copy()
	spec.Name = fmt.Sprintf("taichi_ring%d", core)
	ring, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("ring buffer: %w", err)
	}
	cons, err := newRingConsumer(ring.FD(), int(spec.MaxEntries))
	if err != nil {
		ring.Close()
		return nil, err
	}
	off := core * coreStateSize
	ws := &XDPWakeSource{
		core: core, ring: ring, fd: ring.FD(), cons: cons, states: states,
		state: states.word(off), fired: states.word(off + 8), lost: states.word(off + 16),
	}
	atomic.StoreUint64(ws.state, coreActive)
	return ws, nil
}

// Core returns the DP core this source wakes.
func (w *XDPWakeSource) Core() int { return w.core }

// FD is readable (epoll) while an event is pending in the core's ring.
func (w *XDPWakeSource) FD() int { return w.fd }

// Arm asks the probe to report the next packet for this core. Call it just
// before the DP loop blocks (or when the core is lent).
func (w *XDPWakeSource) Arm() {
	if w.closed.Load() {
		return
	}
	// A record left by a Disarm that gave up waiting would wake the loop at
	// once: drop it first.
	if w.cons.pending() {
		w.cons.drain()
	}
	w.lostAtArm = atomic.LoadUint64(w.lost)
	atomic.StoreUint64(w.state, coreArmed)
}

// Disarm stops reporting and returns the stamp of the event that fired since
// Arm, if one did.
func (w *XDPWakeSource) Disarm() (int64, bool) {
	ev, ok := w.DisarmEvent()
	return ev.StampNs, ok
}

// DisarmEvent is Disarm returning the whole event.
func (w *XDPWakeSource) DisarmEvent() (Event, bool) {
	if w.closed.Load() {
		return Event{}, false
	}
	if atomic.SwapUint64(w.state, coreActive) != coreFired {
		return Event{}, false
	}
	var deadline time.Time
	for i := 0; ; i++ {
		if ev, ok := w.take(); ok {
			return ev, true
		}
		if atomic.LoadUint64(w.lost) != w.lostAtArm {
			// The program could not write this arming's record.
			break
		}
		if i == 0 {
			deadline = time.Now().Add(disarmSpin)
		} else if time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	w.missed.Add(1)
	return Event{}, false
}

// take consumes records until one decodes; it records delivery stats.
func (w *XDPWakeSource) take() (Event, bool) {
	var ev Event
	var ok bool
	for !ok && w.cons.next(func(b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			w.garbled.Add(1)
			return
		}
		ev, ok = e, true
	}) {
	}
	if !ok {
		return Event{}, false
	}
	w.deliv.Add(1)
	w.stamp.Store(ev.StampNs)
	w.lag.Store(monoNow() - ev.StampNs)
	return ev, true
}

// Stats returns this core's event counters.
func (w *XDPWakeSource) Stats() CoreStats {
	cs := CoreStats{
		Core: w.core, Delivered: w.deliv.Load(), Missed: w.missed.Load(), Garbled: w.garbled.Load(),
		LastStampNs: w.stamp.Load(), LastLagNs: w.lag.Load(),
	}
	cs.Fired = atomic.LoadUint64(w.fired)
	cs.Lost = atomic.LoadUint64(w.lost)
	return cs
}

func (w *XDPWakeSource) close() error {
	w.closed.Store(true)
	// The ring's fd and the mappings are released by the garbage collector
	// once nothing references this source: a DP loop still polling FD after
	// Stop must not find the number reused by an unrelated file. The
	// program is detached already, so the ring stays silent.
	return nil
}

// monoNow returns CLOCK_MONOTONIC in nanoseconds, the clock of
// bpf_ktime_get_ns.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
