package dataplane

import (
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// Event kinds.
const (
	KindYield = "yield" // the loop is about to block, lending its core
	KindWake  = "wake"  // the loop runs again
)

// Event reports one yield or wake of the loop.
type Event struct {
	Loop string `json:"loop"`
	CPU  int    `json:"cpu"`
	Kind string `json:"kind"` // KindYield or KindWake
	// AtNs is CLOCK_MONOTONIC ns when the loop yielded or ran again.
	AtNs int64 `json:"at_ns"`
	// Cause and the latencies are set on wake events: scheduler.WakeRx (the
	// RX socket became readable first), WakeProbe (a WakeSource fired before,
	// or without, a packet in the ring) or WakeTimeout (the bounded wait, the
	// Slice, expired).
	Cause scheduler.WakeCause `json:"cause,omitempty"`
	// ExposedNs is the exposed wake latency: how long the first waiting
	// packet had been in the ring (from its kernel RX stamp) when the loop
	// ran; 0 when a WakeSource woke the loop before any packet arrived;
	// -1 when there is no sample (a timeout with nothing waiting, or a
	// packet without a stamp).
	ExposedNs int64 `json:"exposed_ns,omitempty"`
	// LeadNs is how long before the packet reached the ring the WakeSource
	// fired (positive: it was earlier), when both are known.
	LeadNs int64 `json:"lead_ns,omitempty"`
	// BlockedNs is how long the loop was blocked.
	BlockedNs int64 `json:"blocked_ns,omitempty"`
}

// counters are written by the loop thread only and read by anyone.
type counters struct {
	packets, bytes, txPackets, txDrops, unhandled atomic.Uint64
	polls, emptyPolls, yields, heartbeat          atomic.Uint64
	wakesRX, wakesProbe, wakesTimeout             atomic.Uint64
	eventsDropped                                 atomic.Uint64
	blockedNsTotal, busyNsTotal                   atomic.Uint64
	// residence: per packet, kernel RX stamp to the loop picking it up.
	residence latencyHist
	// exposed: per wake with a packet waiting (or a probe wake before it).
	exposed latencyHist
	// lead: per probe wake whose packet came after it, the probe's lead.
	lead latencyHist
	_    [64]byte // keep hot counters off a neighbour's cache line
}

// Stats is a snapshot of a loop's counters.
type Stats struct {
	Name string `json:"name"`
	CPU  int    `json:"cpu"`
	TID  int    `json:"tid"`
	// RXStamp says where the residence's RX stamp comes from: StampKernel
	// (AF_PACKET), XDPStampMeta or XDPStampHead (AF_XDP); empty before
	// the loop opened its sockets.
	RXStamp string `json:"rx_stamp,omitempty"`

	Packets   uint64 `json:"packets"`    // frames received
	Bytes     uint64 `json:"bytes"`      // bytes received
	TxPackets uint64 `json:"tx_packets"` // frames queued for sending
	TxDrops   uint64 `json:"tx_drops"`   // frames dropped: TX ring full
	Unhandled uint64 `json:"unhandled"`  // frames the mode does not handle (reflect: neither IPv4 UDP nor an ICMP echo request)

	Polls      uint64 `json:"polls"`
	EmptyPolls uint64 `json:"empty_polls"`
	Yields     uint64 `json:"yields"`
	Heartbeat  uint64 `json:"heartbeat"` // +1 per loop iteration; stalls longer than Slice mean trouble

	WakesRX      uint64 `json:"wakes_rx"`
	WakesProbe   uint64 `json:"wakes_probe"`
	WakesTimeout uint64 `json:"wakes_timeout"`

	// Residence is the RX residence of every packet the loop processed:
	// from the kernel's RX stamp to the loop picking the packet up, the
	// delay the DP core adds whatever the sender's CPU does.
	Residence Histogram `json:"residence"`
	// Exposed is the exposed wake latency per wake (see Event.ExposedNs).
	Exposed Histogram `json:"exposed"`
	// Lead is the probe's lead per probe wake that came before its packet
	// (packet RX stamp - probe stamp): how much of a wake the probe hid.
	Lead    Histogram     `json:"lead"`
	Blocked time.Duration `json:"blocked_ns"` // total time blocked (core lent)
	// Busy is the time spent handling frames (polls that found some): the
	// loop's load is Busy over wall time, its capacity Packets over Busy.
	Busy time.Duration `json:"busy_ns"`

	EventsDropped uint64 `json:"events_dropped"`
}

// Wakes returns the total number of wakes.
func (s Stats) Wakes() uint64 { return s.WakesRX + s.WakesProbe + s.WakesTimeout }

func (c *counters) snapshot() Stats {
	s := Stats{
		Packets: c.packets.Load(), Bytes: c.bytes.Load(), TxPackets: c.txPackets.Load(),
		TxDrops: c.txDrops.Load(), Unhandled: c.unhandled.Load(),
		Polls: c.polls.Load(), EmptyPolls: c.emptyPolls.Load(), Yields: c.yields.Load(), Heartbeat: c.heartbeat.Load(),
		WakesRX: c.wakesRX.Load(), WakesProbe: c.wakesProbe.Load(), WakesTimeout: c.wakesTimeout.Load(),
		Residence: c.residence.snapshot(), Exposed: c.exposed.snapshot(), Lead: c.lead.snapshot(),
		Blocked: time.Duration(c.blockedNsTotal.Load()), Busy: time.Duration(c.busyNsTotal.Load()),
		EventsDropped: c.eventsDropped.Load(),
	}
	return s
}

// Control holds the knobs a scheduler turns while the loop runs. Every
// field is atomic: setting them needs no lock and takes effect at the
// loop's next idle poll.
type Control struct {
	yieldAfter atomic.Int64
	sliceNs    atomic.Int64
}

// Bounds of Slice: the wait must end so the loop reclaims its core even if
// nobody wakes it (the daemon may have died).
const (
	MinSlice     = 10 * time.Microsecond
	MaxSlice     = time.Second
	DefaultSlice = 10 * time.Millisecond
)

// SetYieldAfter sets how many consecutive empty polls the loop makes before
// it yields; n < 0 means never yield (busy-poll).
func (c *Control) SetYieldAfter(n int) { c.yieldAfter.Store(int64(n)) }

// YieldAfter returns the current threshold.
func (c *Control) YieldAfter() int { return int(c.yieldAfter.Load()) }

// SetSlice sets the bounded wait of a yield, clamped to [MinSlice, MaxSlice].
func (c *Control) SetSlice(d time.Duration) { c.sliceNs.Store(int64(clampSlice(d))) }

// Slice returns the current bounded wait.
func (c *Control) Slice() time.Duration { return time.Duration(c.sliceNs.Load()) }

func clampSlice(d time.Duration) time.Duration {
	switch {
	case d <= 0:
		return DefaultSlice
	case d < MinSlice:
		return MinSlice
	case d > MaxSlice:
		return MaxSlice
	}
	return d
}
