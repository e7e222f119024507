// Package dataplane runs DP loops: one worker thread per DP core, pinned
// (affinity + SCHED_FIFO), doing real packet I/O on an interface with an
// AF_PACKET mmap ring. A loop busy-polls while packets flow; after a
// configurable run of empty polls it yields its core, blocking on its RX
// socket, its WakeSources (probe, kmod, daemon) and a bounded timeout, so a
// lent core comes back even when nobody wakes the loop. Counters are atomics
// others read without locks; yields and wakes are also reported as events.
//
// Receive paths. The default is AF_PACKET with a TPACKET_V2 mmap ring: each
// frame is handed over as soon as the kernel wrote it, with its RX
// timestamp, and nothing has to be attached to the interface. TPACKET_V3
// (LoopConfig.Ring) hands over whole blocks when they fill or a retire
// timer (1 ms, the minimum) fires, which at low rates adds that timer to
// every packet: busy-polling at 1 kpps the generator measured p50 41 µs
// with V2 against 611 µs with V3 (BenchmarkRingFormat, one run). AF_XDP
// in copy mode (LoopConfig.IO = IOXDP: an XDP program stamps and redirects
// frames to the socket) measured on par with V2 where the run was clean
// (10 kpps busy p50 35 vs 37 µs; BenchmarkIOPath) but needs an XDP
// program on the DP interface, so it is the option, not the default. TX is
// an AF_PACKET TPACKET_V2 ring flushed with one sendto per batch in all
// cases.
//
// Go specifics: the worker is a goroutine locked to its OS thread, which
// never returns to the runtime's pool (it changed namespace and policy);
// each running loop raises GOMAXPROCS by one because a busy-polling loop
// holds a P all the time.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/safename"
	"github.com/taichi-sched/taichi/scheduler"
	"golang.org/x/sys/unix"
)

// Loop modes.
const (
	ModeReflect = "reflect" // swap addresses and send back out Iface
	ModeForward = "forward" // send out OutIface
)

// Receive paths.
const (
	IOPacket = "packet" // AF_PACKET with an mmap RX ring
	IOXDP    = "xdp"    // AF_XDP in copy mode
)

// DefaultPriority is the SCHED_FIFO priority when LoopConfig.Priority is 0.
const DefaultPriority = 50

// rxBatch bounds the frames handled per poll, so the loop checks its stop
// flag and flushes TX regularly under load.
const rxBatch = 64

// LoopConfig describes one DP loop.
type LoopConfig struct {
	Name     string // for stats and events; default "dp<CPU>"
	CPU      int    // the DP core the worker is pinned to
	Iface    string // RX interface (in NetNS)
	OutIface string // forward mode's TX interface (in NetNS)
	NetNS    string // named network namespace of the interfaces; "" = the current one
	Mode     string // ModeReflect (default) or ModeForward
	// Priority is the worker's SCHED_FIFO priority (1-99); 0 means
	// DefaultPriority; negative keeps the normal policy (for runs without
	// CAP_SYS_NICE; such a loop cannot preempt CP work when woken).
	Priority int
	// IO is the receive path: IOPacket (AF_PACKET mmap ring, default) or
	// IOXDP (AF_XDP copy mode with an XDP redirect program on Iface).
	IO string
	// XDPStamp, with IOXDP, forces where the XDP program puts each frame's
	// RX stamp: XDPStampMeta or XDPStampHead. StampAuto (empty) takes the
	// metadata where the kernel allows bpf_xdp_adjust_meta, else the head.
	XDPStamp string
	// Ring is the AF_PACKET RX ring format, RingV2 (default) or RingV3.
	Ring string
	// OutDstMAC, in forward mode, rewrites each frame's destination to this
	// next hop (and its source to OutIface's MAC). Empty: frames leave unchanged.
	OutDstMAC net.HardwareAddr
	// StartNormal starts the worker SCHED_OTHER instead of SCHED_FIFO: a
	// scheduler that lends the core raises it to SCHED_FIFO (Priority) only
	// while CP may run there, so a core that is not lent busy-polls
	// without RT throttling (linuxsched.Set on the loop's TID).
	StartNormal bool
}

func (c LoopConfig) withDefaults() LoopConfig {
	if c.Name == "" {
		c.Name = fmt.Sprintf("dp%d", c.CPU)
	}
	if c.Mode == "" {
		c.Mode = ModeReflect
	}
	if c.Priority == 0 {
		c.Priority = DefaultPriority
	}
	if c.Ring == "" {
		c.Ring = RingV2
	}
	if c.IO == "" {
		c.IO = IOPacket
	}
	return c
}

// Validate reports every invalid field (Check), then whether the network
// namespace exists.
func (c LoopConfig) Validate() error {
	err := c.Check()
	if err == nil && c.NetNS != "" && !netns.Exists(c.NetNS) {
		err = fielderr.New("netns", "%q does not exist", c.NetNS)
	}
	if err != nil {
		return fmt.Errorf("dataplane: loop %q: %w", c.Name, err)
	}
	return nil
}

// Check reports every invalid field, each a *fielderr.Error, without
// looking at the host (the config validates loops with it).
func (c LoopConfig) Check() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, a ...any) { errs = append(errs, fielderr.New(field, format, a...)) }
	if err := safename.Check(c.Name); err != nil {
		bad("name", "%v", err)
	}
	if c.NetNS != "" {
		if err := safename.Check(c.NetNS); err != nil {
			bad("netns", "%v", err)
		}
	}
	if err := safename.Iface(c.Iface); err != nil {
		bad("iface", "%v", err)
	}
	if c.Mode == ModeForward {
		if err := safename.Iface(c.OutIface); err != nil {
			bad("out_iface", "forward mode: %v", err)
		}
	}
	if c.CPU < 0 {
		bad("cpu", "%d is negative", c.CPU)
	}
	if c.Mode != ModeReflect && c.Mode != ModeForward {
		bad("mode", "%q: want %s or %s", c.Mode, ModeReflect, ModeForward)
	}
	if c.Priority > 0 {
		// Below 0 the loop keeps the normal policy (0 is the default).
		if err := linuxsched.CheckFIFOPriority(c.Priority); err != nil {
			bad("priority", "%v", err)
		}
	}
	switch {
	case c.IO != IOPacket && c.IO != IOXDP:
		bad("io", "%q: want %s or %s", c.IO, IOPacket, IOXDP)
	case c.XDPStamp != StampAuto && c.XDPStamp != XDPStampMeta && c.XDPStamp != XDPStampHead:
		bad("xdp_stamp", "%q: want %s or %s (or empty: the first the kernel allows)", c.XDPStamp, XDPStampMeta, XDPStampHead)
	case c.XDPStamp != StampAuto && c.IO != IOXDP:
		bad("xdp_stamp", "%q needs io %s", c.XDPStamp, IOXDP)
	}
	if c.Ring != RingV2 && c.Ring != RingV3 {
		bad("ring", "%q: want %s or %s", c.Ring, RingV2, RingV3)
	}
	if len(c.OutDstMAC) != 0 && len(c.OutDstMAC) != 6 {
		bad("out_dst_mac", "%s is not an Ethernet address", c.OutDstMAC)
	}
	return errors.Join(errs...)
}

// Loop is one DP loop. Create it with NewLoop, add WakeSources, set its
// Control, then Run it.
type Loop struct {
	cfg     LoopConfig
	ctrl    Control
	c       counters
	events  chan Event
	wakes   []WakeSource
	started atomic.Bool
	// stampPath is the receive path's stamp (StampKernel, XDPStampMeta or
	// XDPStampHead), known once the sockets are open.
	stampPath atomic.Pointer[string]
	stop      atomic.Bool
	tid       atomic.Int64
	ready     chan struct{}
	stopFD    int

	// Owned by the worker thread.
	rx        rxSource
	tx        *txRing
	outSrcMAC []byte
	pollFDs   []unix.PollFd
	batch     batchCounts
}

// batchCounts accumulate per-frame results between two atomic publishes.
type batchCounts struct {
	packets, bytes, tx, txDrops, unhandled uint64
}

// eventBuffer is the Events channel's capacity; beyond it events are
// dropped and counted, never waited for.
const eventBuffer = 4096

// NewLoop validates cfg and prepares a loop (Run it, or Close it). Its Control starts at
// YieldAfter -1 (busy-poll, as the static policy wants) and DefaultSlice.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stopFD, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dataplane: eventfd: %w", err)
	}
	l := &Loop{cfg: cfg.withDefaults(), events: make(chan Event, eventBuffer), ready: make(chan struct{}), stopFD: stopFD}
	l.ctrl.SetYieldAfter(-1)
	l.ctrl.SetSlice(DefaultSlice)
	return l, nil
}

// Config returns the loop's configuration with defaults filled in.
func (l *Loop) Config() LoopConfig { return l.cfg }

// Control returns the loop's run-time knobs.
func (l *Loop) Control() *Control { return &l.ctrl }

// Events returns yield and wake events. The loop never waits for a reader:
// when the channel is full, events are dropped and counted in Stats.
func (l *Loop) Events() <-chan Event { return l.events }

// AddWakeSource adds a source the loop waits on while yielded. Call before Run.
func (l *Loop) AddWakeSource(ws WakeSource) {
	if l.started.Load() {
		panic("dataplane: AddWakeSource after Run")
	}
	l.wakes = append(l.wakes, ws)
}

// Ready is closed once the worker is pinned and its sockets are open.
func (l *Loop) Ready() <-chan struct{} { return l.ready }

// TID returns the worker thread's id (0 before Run set it up).
func (l *Loop) TID() int { return int(l.tid.Load()) }

// Stats returns a snapshot of the counters.
func (l *Loop) Stats() Stats {
	s := l.c.snapshot()
	s.Name, s.CPU, s.TID = l.cfg.Name, l.cfg.CPU, l.TID()
	if p := l.stampPath.Load(); p != nil {
		s.RXStamp = *p
	}
	return s
}

// Run runs the loop on its own OS thread until ctx ends or setup fails.
// The thread is never returned to the Go runtime (it changed namespace and
// scheduling policy): it exits with the loop.
func (l *Loop) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return errors.New("dataplane: loop already ran")
	}
	// The stop eventfd is closed here, after the worker is gone, so a stop
	// request can never write to a closed (or reused) descriptor.
	defer unix.Close(l.stopFD)
	reserveProc()
	defer releaseProc()
	done := make(chan error, 1)
	go func() { done <- l.worker() }()
	select {
	case <-ctx.Done():
		l.requestStop()
		return <-done
	case err := <-done:
		return err
	}
}

func (l *Loop) requestStop() {
	l.stop.Store(true)
	one := [8]byte{1}
	_, _ = unix.Write(l.stopFD, one[:])
}

func (l *Loop) worker() (err error) {
	runtime.LockOSThread() // never unlocked: see Run
	l.tid.Store(int64(unix.Gettid()))
	if err := l.setup(); err != nil {
		return fmt.Errorf("dataplane: loop %q: %w", l.cfg.Name, err)
	}
	defer l.rx.close()
	defer l.tx.close()
	close(l.ready)
	l.loop()
	return nil
}

func (l *Loop) setup() error {
	if err := netns.Enter(l.cfg.NetNS); err != nil {
		return err
	}
	// Sockets first, on whatever CPU the thread is on: setup does not wait
	// for the DP core, which may still be busy.
	var rx rxSource
	var err error
	if l.cfg.IO == IOXDP {
		rx, err = openXSK(l.cfg.Iface, l.cfg.XDPStamp)
	} else {
		rx, err = openRX(l.cfg.Iface, l.cfg.Ring)
	}
	if err != nil {
		return err
	}
	out := l.cfg.Iface
	if l.cfg.Mode == ModeForward {
		out = l.cfg.OutIface
	}
	tx, err := openTX(out)
	if err != nil {
		rx.close()
		return err
	}
	l.rx, l.tx = rx, tx
	path := rx.stampPath()
	l.stampPath.Store(&path)
	if err := linuxsched.Pin(0, l.cfg.CPU); err != nil {
		return l.abortSetup(err)
	}
	switch {
	case l.cfg.Priority > 0 && l.cfg.StartNormal:
		if err := linuxsched.Set(0, linuxsched.Other(NormalNice)); err != nil {
			return l.abortSetup(err)
		}
	case l.cfg.Priority > 0:
		if err := linuxsched.Set(0, linuxsched.FIFO(l.cfg.Priority)); err != nil {
			return l.abortSetup(err)
		}
	}
	if len(l.cfg.OutDstMAC) == 6 {
		l.outSrcMAC = tx.mac
	}
	l.pollFDs = append(l.pollFDs,
		unix.PollFd{Fd: int32(rx.fileDescriptor()), Events: unix.POLLIN},
		unix.PollFd{Fd: int32(l.stopFD), Events: unix.POLLIN})
	for _, ws := range l.wakes {
		l.pollFDs = append(l.pollFDs, unix.PollFd{Fd: int32(ws.FD()), Events: unix.POLLIN})
	}
	return nil
}

func (l *Loop) abortSetup(err error) error {
	l.rx.close()
	l.tx.close()
	return err
}

// loop is the worker's main loop: poll, handle, and yield after a run of
// empty polls.
func (l *Loop) loop() {
	emptyRun := int64(0)
	graceUntil := int64(0)
	for !l.stop.Load() {
		l.c.heartbeat.Add(1)
		l.c.polls.Add(1)
		if n := l.poll(); n > 0 {
			emptyRun = 0
			continue
		}
		l.c.emptyPolls.Add(1)
		emptyRun++
		if ya := l.ctrl.yieldAfter.Load(); ya >= 0 && emptyRun > ya {
			if graceUntil != 0 && nanotime() < graceUntil {
				continue // the probe said a packet is on its way: wait for it awake
			}
			graceUntil = l.block()
			emptyRun = 0
		}
	}
}

// ProbeGrace is how long a loop woken early by a probe keeps polling for
// the announced packet before empty polls may yield the core again; it
// covers the probe's lead time (tens of µs on the testbed's nic hop) with
// room to spare, so the early wake is not wasted.
const ProbeGrace = 200 * time.Microsecond

// poll handles one batch from the RX ring, sends the results and publishes
// the counters. It returns the number of frames handled.
func (l *Loop) poll() int {
	// Peek first: an empty poll stays two loads, and only a productive
	// one pays for the clock reads that measure busy time.
	if _, ok := l.rx.ready(); !ok {
		return 0
	}
	t0 := nanotime()
	n := l.rx.drain(l, rxBatch)
	l.tx.flush()
	l.c.busyNsTotal.Add(uint64(nanotime() - t0))
	if n == 0 {
		return 0
	}
	b := &l.batch
	l.c.packets.Add(b.packets)
	l.c.bytes.Add(b.bytes)
	if b.tx > 0 {
		l.c.txPackets.Add(b.tx)
	}
	if b.txDrops > 0 {
		l.c.txDrops.Add(b.txDrops)
	}
	if b.unhandled > 0 {
		l.c.unhandled.Add(b.unhandled)
	}
	*b = batchCounts{}
	return n
}

// handle processes one frame (frameHandler). It must not allocate.
func (l *Loop) handle(frame []byte, status uint32, waitNs int64) {
	if waitNs >= 0 {
		l.c.residence.record(waitNs)
	}
	b := &l.batch
	b.packets++
	b.bytes += uint64(len(frame))
	csumNotReady := status&unix.TP_STATUS_CSUMNOTREADY != 0
	var ok bool
	if l.cfg.Mode == ModeForward {
		ok = forwardFrame(frame, l.outSrcMAC, l.cfg.OutDstMAC, csumNotReady)
	} else {
		ok = reflectFrame(frame, csumNotReady)
	}
	if !ok {
		b.unhandled++
		return
	}
	if l.tx.put(frame) {
		b.tx++
	} else {
		b.txDrops++
	}
}

// block yields the core: it waits for a packet, a WakeSource or the
// bounded Slice, then records why it woke and how long the packet waited.
// After a probe wake that came before its packet, it returns the end of the
// grace period during which the loop must not yield again (else 0).
func (l *Loop) block() (graceUntil int64) {
	for _, ws := range l.wakes {
		ws.Arm()
	}
	// A packet that arrived since the last poll would not make the socket
	// newly readable for every poll implementation: look before sleeping.
	if _, ok := l.rx.ready(); ok {
		for _, ws := range l.wakes {
			ws.Disarm()
		}
		return 0
	}
	start := nanotime()
	l.c.yields.Add(1)
	l.emit(Event{Kind: KindYield, AtNs: start})

	ts := unix.NsecToTimespec(l.ctrl.sliceNs.Load())
	_, _ = unix.Ppoll(l.pollFDs, &ts, nil) // EINTR: treated like a timeout
	now := nanotime()

	var probeNs int64
	probed := false
	for _, ws := range l.wakes {
		if s, ok := ws.Disarm(); ok {
			if !probed || s < probeNs {
				probeNs = s
			}
			probed = true
		}
	}
	rxReal, rxWaiting := l.rx.ready()
	var rxNs int64
	if rxWaiting && rxReal != 0 {
		rxNs = realToMonotonic(rxReal)
	}

	ev := Event{Kind: KindWake, AtNs: now, BlockedNs: now - start}
	switch {
	case probed && (!rxWaiting || rxNs == 0 || probeNs <= rxNs):
		ev.Cause = scheduler.WakeProbe
		l.c.wakesProbe.Add(1)
		if !rxWaiting {
			graceUntil = now + int64(ProbeGrace)
		}
		if rxNs != 0 {
			ev.LeadNs = rxNs - probeNs
			l.c.lead.record(ev.LeadNs)
		}
	case rxWaiting:
		ev.Cause = scheduler.WakeRx
		l.c.wakesRX.Add(1)
	default:
		if l.stop.Load() {
			return 0
		}
		ev.Cause = scheduler.WakeTimeout
		l.c.wakesTimeout.Add(1)
	}
	// Exposed wake latency is what the first waiting packet paid: how long
	// it had been in the ring when the loop ran. A probe that woke the loop
	// before the packet arrived hid the wake entirely (0): its lead is
	// never latency. A timeout with nothing waiting is no sample.
	switch {
	case rxWaiting && rxNs != 0:
		ev.ExposedNs = max(now-rxNs, 0)
	case ev.Cause == scheduler.WakeProbe && !rxWaiting:
		ev.ExposedNs = 0
	default:
		ev.ExposedNs = -1
	}
	if ev.ExposedNs >= 0 {
		l.c.exposed.record(ev.ExposedNs)
	}
	l.c.blockedNsTotal.Add(uint64(ev.BlockedNs))
	l.emit(ev)
	return graceUntil
}

func (l *Loop) emit(ev Event) {
	ev.Loop, ev.CPU = l.cfg.Name, l.cfg.CPU
	select {
	case l.events <- ev:
	default:
		l.c.eventsDropped.Add(1)
	}
}

// WaitStats polls Stats until cond holds or timeout passes; it returns the
// last snapshot and whether cond held (a helper for tests and tools).
func (l *Loop) WaitStats(timeout time.Duration, cond func(Stats) bool) (Stats, bool) {
	deadline := time.Now().Add(timeout)
	for {
		s := l.Stats()
		if cond(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(time.Millisecond)
	}
}

// Close releases a loop that will not run. A loop that ran releases its
// resources when Run returns; Close is then a no-op.
func (l *Loop) Close() error {
	if l.started.CompareAndSwap(false, true) {
		return unix.Close(l.stopFD)
	}
	return nil
}

// A running loop holds a Go scheduler slot (P) whenever it is not blocked:
// all the time while it busy-polls. So that the rest of the process keeps
// as many Ps as before, and a loop coming back from its wait finds an idle
// P at once instead of queueing for one behind CP goroutines, each running
// loop raises GOMAXPROCS by one.
var procs struct {
	sync.Mutex
	loops int
	base  int
}

func reserveProc() {
	procs.Lock()
	defer procs.Unlock()
	if procs.loops == 0 {
		procs.base = runtime.GOMAXPROCS(0)
	}
	procs.loops++
	runtime.GOMAXPROCS(procs.base + procs.loops)
}

func releaseProc() {
	procs.Lock()
	defer procs.Unlock()
	procs.loops--
	runtime.GOMAXPROCS(procs.base + procs.loops)
}
