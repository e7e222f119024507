// Package host runs one DP loop (and the probe that warns it) behind a
// shared-memory segment, so the daemon can drive it from another process.
//
// `taichi run` starts one such process per configured loop (the hidden
// `taichi dp-host --shm PATH` command): if the daemon dies — even by
// SIGKILL — the DP loop keeps running with its last knobs, its waits stay
// bounded and its socket still wakes it, so DP never waits on the daemon. A
// restarted daemon attaches to the same segment and carries on. The daemon
// side is Client; both sides speak only through the segment (knobs and wake
// requests in, stats and yield/wake events out), never blocking the loop.
package host

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/shm"
	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/scheduler"
)

// Segment layout (byte offsets).
const (
	magic = 0x5044494843494154 // "TAICHIDP" little-endian
	// version 2: a 16 KiB stats area (the loop's latency histograms).
	version = 2

	offMagic, offVersion, offPID, offCPU, offTID, offStarted = 0, 8, 16, 24, 32, 40

	offKnobSeq, offYieldAfter, offSlice, offProbeWake, offWakeReq = 64, 72, 80, 88, 96
	offKnobSeen, offWakeSeen, offHostBeat                         = 128, 136, 144
	// offFeatures holds what this host does beyond version 2's contract
	// (featureEventBell, featureLoadBlock); a daemon falls back to what
	// version 2 promises (polling, JSON stats) without a bit.
	offFeatures, offEventBell = 152, 160

	offStatsSeq, offStatsLen, offStats = 192, 200, 256
	maxStats                           = offRing - offStats

	offRing  = 16384
	ringLen  = 4096
	eventRec = 48

	// minSegmentSize ends the event ring: all a version 2 segment has to
	// hold. The load block (featureLoadBlock) lies past it.
	minSegmentSize = offRing + ringLen*eventRec + 3*64
	segmentSize    = offLoadBlock + 8 + 8*loadWords // shm.SeqBlockBytes(loadWords)
)

// BellPath is the FIFO of the segment at shmPath's event doorbell.
func BellPath(shmPath string) string { return shmPath + ".bell" }

// featureEventBell: the host rings the doorbell at offEventBell after
// queueing an event, so the daemon can sleep until there is one.
const featureEventBell = 1 << 0

// featureBellPaced: the host rings at most once per BellGap while events
// keep coming; a ring due sooner waits for its tick. A daemon then sleeps
// on the doorbell between drains too, instead of on a timer of its own
// (a Go timer also wakes the runtime's monitor thread, which doubled the
// daemon's wake-ups).
const featureBellPaced = 1 << 2

// BellGap is the shortest time between two rings of a pacing host: the
// daemon takes a busy loop's events in batches this far apart. The first
// event after a quiet spell rings at once.
const BellGap = 10 * time.Millisecond

// Tick is how often the host applies knobs and wake requests and publishes
// stats. Knob changes are per trend, never per packet (the loop's own
// yield/wake is the fast path), so a sub-millisecond tick is plenty.
const Tick = 250 * time.Microsecond

// tickPriority is the tick thread's SCHED_FIFO priority: above CP work,
// below the DP loop and the cpuset writer.
const tickPriority = 5

// Spec is one hosted loop.
type Spec struct {
	Loop dataplane.LoopConfig
	// ProbeBackend is "xdp", "counters" or "" (no probe).
	ProbeBackend string
	Probe        probe.Options
	// ShmPath is the segment's file (under /run/taichi/dp normally).
	ShmPath string
	// Kmod adds the kernel module's kick (/dev/taichi) to the loop's wait
	// set, so a kick from the daemon or from the XDP probe's kfunc wakes the
	// loop in one hop.
	Kmod bool
}

// Snapshot is what the host publishes: the loop's counters and the probe's.
type Snapshot struct {
	Loop      dataplane.Stats `json:"loop"`
	Progress  Progress        `json:"progress"`
	Probe     *probe.Stats    `json:"probe,omitempty"`
	ProbeErr  string          `json:"probe_error,omitempty"`
	KmodErr   string          `json:"kmod_error,omitempty"`
	Published int64           `json:"published_ns"` // CLOCK_MONOTONIC
}

// Progress watches the loop's heartbeat from the host's tick: the longest
// stretch without a single loop iteration, not counting the time the loop
// was blocked on purpose (a yield with nothing to do is not a stall), nor
// stretches the tick could not observe (it ran late itself) or that host
// steal time on the DP core explains (a paravirtual CPU the hypervisor
// descheduled). Excused stretches are counted, so a judge can bound them.
type Progress struct {
	MaxStallNs int64 `json:"max_stall_ns"`
	// MaxStallEndNs is when the longest stall ended (CLOCK_MONOTONIC).
	MaxStallEndNs int64 `json:"max_stall_end_ns"`
	// Stalls counts counted stalls longer than ExcuseAbove (all of them:
	// no ring that forgets the early ones).
	Stalls uint64 `json:"stalls"`
	// Excused counts stalls over ExcuseAbove left out for those reasons,
	// and ExcusedMaxNs is the longest of them.
	Excused      uint64 `json:"excused"`
	ExcusedMaxNs int64  `json:"excused_max_ns"`
	// StealNs is the DP core's steal time while this host ran.
	StealNs int64 `json:"steal_ns"`
}

// ExcuseAbove: shorter stalls are always counted (the tick sees them fine).
const ExcuseAbove = 2 * time.Millisecond

// Host runs a loop and its probe behind a segment.
type Host struct {
	spec Spec
	seg  *shm.Segment
	ring *shm.Ring
	bell *shm.Doorbell
	// lastRing is when the host last woke the daemon (monotonic ns);
	// ringDue: events were queued since, and the daemon has not been rung
	// for them (ringPaced).
	lastRing atomic.Int64
	ringDue  atomic.Bool
	loop     *dataplane.Loop
	wake     *dataplane.EventWake
	gate     *gatedWake
	probe    probe.Waker
	perr     string
	kws      *kmod.WakeSource
	kerr     string
	wg       sync.WaitGroup
	// load and loadWords: the load block and its words (tick goroutine).
	load      *shm.SeqBlock
	loadWords []uint64

	// Progress tracking (tick goroutine only, published under the seqlock).
	prog                 Progress
	lastBeat             uint64
	lastBlocked          int64 // loop's blocked time at lastChange
	lastChange, lastTick int64
	tickLate             bool
	steal                [64]stealSample // every stealEvery, a ring
	stealN               int
}

type stealSample struct{ at, steal int64 }

const stealEvery = 10 * time.Millisecond

func u64(seg *shm.Segment, off int) *atomic.Uint64 { return shm.Uint64At(seg.Bytes(), off) }

// Start creates the segment, the loop (busy-polling until told otherwise: the
// safe default), the probe if any, and runs them until ctx ends. A probe that
// cannot attach is reported in the snapshot and the loop runs without it:
// the core is then only lent by policies that do not need the probe's lead.
func Start(ctx context.Context, spec Spec) (*Host, error) {
	loop, err := dataplane.NewLoop(spec.Loop)
	if err != nil {
		return nil, err
	}
	seg, err := shm.Create(spec.ShmPath, segmentSize)
	if err != nil {
		loop.Close()
		return nil, fmt.Errorf("dp %s: segment: %w", spec.Loop.Name, err)
	}
	ring, err := shm.NewRing(seg.Bytes()[offRing:], ringLen, eventRec)
	if err != nil {
		seg.Close()
		loop.Close()
		return nil, err
	}
	h := &Host{spec: spec, seg: seg, ring: ring, loop: loop}
	if err := h.startLoad(); err != nil {
		h.release()
		return nil, fmt.Errorf("dp %s: %w", spec.Loop.Name, err)
	}
	features := uint64(featureLoadBlock)
	// Without its doorbell the host still runs: the daemon polls it.
	if h.bell, err = shm.OpenDoorbell(seg.Bytes(), offEventBell, BellPath(spec.ShmPath), true); err == nil {
		features |= featureEventBell | featureBellPaced
	}
	u64(seg, offFeatures).Store(features)
	u64(seg, offPID).Store(uint64(os.Getpid()))
	u64(seg, offCPU).Store(uint64(spec.Loop.CPU))
	u64(seg, offStarted).Store(uint64(dataplane.MonotonicNow()))
	never := int64(-1)
	u64(seg, offYieldAfter).Store(uint64(never))
	u64(seg, offProbeWake).Store(1)

	if h.wake, err = dataplane.NewEventWake(); err != nil {
		h.release()
		return nil, err
	}
	loop.AddWakeSource(h.wake)
	if spec.ProbeBackend != "" {
		if err := h.startProbe(ctx); err != nil {
			h.perr = err.Error()
		}
	}
	if spec.Kmod {
		if h.kws, err = kmod.NewWakeSource(); err != nil {
			h.kerr = err.Error()
		} else {
			loop.AddWakeSource(h.kws)
		}
	}
	u64(seg, offVersion).Store(version)
	u64(seg, offMagic).Store(magic) // last: the segment is now valid

	h.wg.Add(3)
	runErr := make(chan error, 1)
	go func() {
		defer h.wg.Done()
		runErr <- loop.Run(ctx)
	}()
	go func() {
		defer h.wg.Done()
		h.forwardEvents(ctx)
	}()
	go func() {
		defer h.wg.Done()
		h.tick(ctx)
	}()
	select {
	case <-loop.Ready():
		u64(seg, offTID).Store(uint64(loop.TID()))
		return h, nil
	case err := <-runErr:
		h.wg.Wait()
		h.release()
		if err == nil {
			err = errors.New("loop stopped before it was ready")
		}
		return nil, fmt.Errorf("dp %s: %w", spec.Loop.Name, err)
	}
}

func (h *Host) startProbe(ctx context.Context) error {
	opts := h.spec.Probe
	opts.Core = h.spec.Loop.CPU
	p, err := probe.New(h.spec.ProbeBackend, opts)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	ws, err := p.WakeSource(h.spec.Loop.CPU)
	if err != nil {
		p.Stop()
		return err
	}
	h.probe = p
	h.gate = &gatedWake{inner: ws}
	h.gate.enabled.Store(true)
	h.loop.AddWakeSource(h.gate)
	return nil
}

// Wait blocks until the loop and the host's goroutines have stopped (ctx
// ended), then releases the probe and the segment mapping.
func (h *Host) Wait() {
	h.wg.Wait()
	h.release()
}

func (h *Host) release() {
	if h.probe != nil {
		h.probe.Stop()
	}
	if h.loop != nil {
		h.loop.Close()
	}
	if h.wake != nil {
		h.wake.Close()
	}
	if h.kws != nil {
		h.kws.Close()
	}
	if h.bell != nil {
		h.bell.Close()
	}
	h.seg.Close()
}

// Loop gives in-process users the loop itself.
func (h *Host) Loop() *dataplane.Loop { return h.loop }

func (h *Host) forwardEvents(ctx context.Context) {
	rec := make([]byte, eventRec)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-h.loop.Events():
			if !ok {
				return
			}
			encodeEvent(rec, ev)
			h.ring.Push(rec)
			// A syscall only when the daemon sleeps on the ring; this
			// goroutine is not the DP loop's thread.
			h.ringPaced(dataplane.MonotonicNow())
		}
	}
}

// ringPaced rings the daemon for queued events, at most once per BellGap:
// a ring due sooner is left to the tick (ringDue), as is one the daemon
// was awake for (it may be about to sleep without looking at the ring
// again, see Client.WaitRing).
func (h *Host) ringPaced(now int64) {
	if h.bell == nil {
		return
	}
	if now-h.lastRing.Load() < int64(BellGap) {
		h.ringDue.Store(true)
		return
	}
	// Cleared before the ring, so an event queued meanwhile either sets it
	// again or was queued before the daemon woke.
	h.ringDue.Store(false)
	if rang, _ := h.bell.Ring(); rang {
		h.lastRing.Store(now)
	} else {
		h.ringDue.Store(true)
	}
}

func (h *Host) tick(ctx context.Context) {
	// A low real-time priority keeps the tick (knobs, wake requests and the
	// progress watch) on time under CP load; it runs for microseconds.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = linuxsched.Set(0, linuxsched.FIFO(tickPriority))
	t := time.NewTicker(Tick)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			h.publish()
			return
		case <-t.C:
		}
		now := dataplane.MonotonicNow()
		u64(h.seg, offHostBeat).Store(uint64(now))
		if h.ringDue.Load() {
			h.ringPaced(now)
		}
		h.trackProgress(now)
		if seq := u64(h.seg, offKnobSeq).Load(); seq != u64(h.seg, offKnobSeen).Load() {
			ctrl := h.loop.Control()
			ctrl.SetSlice(time.Duration(int64(u64(h.seg, offSlice).Load())))
			ctrl.SetYieldAfter(int(int64(u64(h.seg, offYieldAfter).Load())))
			if h.gate != nil {
				h.gate.enabled.Store(u64(h.seg, offProbeWake).Load() != 0)
			}
			u64(h.seg, offKnobSeen).Store(seq)
		}
		if req := u64(h.seg, offWakeReq).Load(); req != u64(h.seg, offWakeSeen).Load() {
			h.wake.Kick(0)
			u64(h.seg, offWakeSeen).Store(req)
		}
		if n++; n%4 == 0 {
			h.publish()
		}
	}
}

func (h *Host) trackProgress(now int64) {
	if h.lastTick != 0 && now-h.lastTick > int64(ExcuseAbove) {
		h.tickLate = true // the tick itself did not run: it cannot judge this stretch
	}
	h.lastTick = now
	if h.stealN == 0 || now-h.steal[(h.stealN-1)%len(h.steal)].at >= int64(stealEvery) {
		h.steal[h.stealN%len(h.steal)] = stealSample{now, stealNs(h.spec.Loop.CPU)}
		h.stealN++
	}
	st := h.loop.Stats()
	beat, blocked := st.Heartbeat, int64(st.Blocked)
	if beat == h.lastBeat && h.lastChange != 0 {
		return
	}
	if h.lastChange != 0 {
		// The loop adds a block's length when it wakes, with the same beat:
		// what remains of the gap is time it wanted to run and did not.
		stall := now - h.lastChange - (blocked - h.lastBlocked)
		switch {
		case stall > int64(ExcuseAbove) && (h.tickLate || h.stealSince(h.lastChange) > 0):
			h.prog.Excused++
			h.prog.ExcusedMaxNs = max(h.prog.ExcusedMaxNs, stall)
		default:
			if stall > h.prog.MaxStallNs {
				h.prog.MaxStallNs, h.prog.MaxStallEndNs = stall, now
			}
			if stall > int64(ExcuseAbove) {
				h.prog.Stalls++
			}
		}
		h.prog.StealNs = h.steal[(h.stealN-1)%len(h.steal)].steal - h.steal[0].steal
	}
	h.lastBeat, h.lastBlocked, h.lastChange, h.tickLate = beat, blocked, now, false
}

// stealSince is the DP core's steal time from the last sample at or before
// t (or the oldest kept) to the newest sample.
func (h *Host) stealSince(t int64) int64 {
	newest := h.steal[(h.stealN-1)%len(h.steal)]
	base := newest
	for i := 1; i <= min(h.stealN, len(h.steal)); i++ {
		s := h.steal[(h.stealN-i)%len(h.steal)]
		base = s
		if s.at <= t-int64(stealEvery) {
			break
		}
	}
	return newest.steal - base.steal
}

// stealNs reads cpu's steal time from /proc/stat (USER_HZ ticks). The file
// is read line by line to the CPU's line, however far down it is (a fixed
// buffer missed the later CPUs of a large host and read 0).
func stealNs(cpu int) int64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	return stealFrom(bufio.NewReader(f), cpu)
}

func stealFrom(r *bufio.Reader, cpu int) int64 {
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, prefix) {
			fields := strings.Fields(line)
			if len(fields) > 8 {
				ticks, _ := strconv.ParseInt(fields[8], 10, 64)
				return ticks * int64(10*time.Millisecond)
			}
			return 0
		}
		if err != nil || (len(line) > 0 && !strings.HasPrefix(line, "cpu")) {
			return 0 // past the cpu lines
		}
	}
}

func (h *Host) publish() {
	s := Snapshot{Loop: h.loop.Stats(), Progress: h.prog, ProbeErr: h.perr, KmodErr: h.kerr, Published: dataplane.MonotonicNow()}
	if h.kws != nil && h.kws.Err() != nil {
		s.KmodErr = h.kws.Err().Error()
	}
	if h.probe != nil {
		ps := h.probe.Stats()
		s.Probe = &ps
	}
	publishStats(h.seg, h.load, h.loadWords, &s)
}

// Event record: kind(1) cause(1) pad(6) at exposed lead blocked cpu (8 each).
func encodeEvent(b []byte, ev dataplane.Event) {
	clear(b)
	b[0] = kindCode[ev.Kind]
	b[1] = byte(ev.Cause)
	le := binary.LittleEndian
	le.PutUint64(b[8:], uint64(ev.AtNs))
	le.PutUint64(b[16:], uint64(ev.ExposedNs))
	le.PutUint64(b[24:], uint64(ev.LeadNs))
	le.PutUint64(b[32:], uint64(ev.BlockedNs))
	le.PutUint64(b[40:], uint64(ev.CPU))
}

func decodeEvent(b []byte, name string) (dataplane.Event, error) {
	if len(b) < eventRec || int(b[0]) >= len(kindName) || b[0] == 0 {
		return dataplane.Event{}, fmt.Errorf("dp %s: garbled event record", name)
	}
	kind, cause := kindName[b[0]], scheduler.WakeCause(b[1])
	if (kind == dataplane.KindWake) != cause.Valid() || (kind != dataplane.KindWake && cause != scheduler.WakeNone) {
		return dataplane.Event{}, fmt.Errorf("dp %s: %s event with wake cause byte %d", name, kind, b[1])
	}
	le := binary.LittleEndian
	return dataplane.Event{
		Loop: name, Kind: kind, Cause: cause,
		AtNs: int64(le.Uint64(b[8:])), ExposedNs: int64(le.Uint64(b[16:])),
		LeadNs: int64(le.Uint64(b[24:])), BlockedNs: int64(le.Uint64(b[32:])),
		CPU: int(le.Uint64(b[40:])),
	}, nil
}

var (
	kindName = []string{"", dataplane.KindYield, dataplane.KindWake}
	kindCode = map[string]byte{dataplane.KindYield: 1, dataplane.KindWake: 2}
)

// gatedWake lets the policy switch probe wakes off (dynamic: only the packet
// itself wakes the loop) without detaching the probe.
type gatedWake struct {
	inner   probe.WakeSource
	enabled atomic.Bool
	armed   bool // loop thread only
}

func (g *gatedWake) FD() int { return g.inner.FD() }

func (g *gatedWake) Arm() {
	if g.armed = g.enabled.Load(); g.armed {
		g.inner.Arm()
	}
}

func (g *gatedWake) Disarm() (int64, bool) {
	if !g.armed {
		return 0, false
	}
	g.armed = false
	return g.inner.Disarm()
}
