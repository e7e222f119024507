package probe

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/taichi-sched/taichi/internal/safename"
)

// Probe is one workload probe on one interface.
//
// Start is not idempotent: call it once, then Stop. Stop is idempotent and
// releases everything Start acquired (for xdp: it detaches the program).
type Probe interface {
	Start(ctx context.Context) error
	Stop() error
	Stats() Stats
	// Mode says how the probe is attached ("native", "generic",
	// "native (replaced stale)", "poll 10ms", ...); empty before Start.
	Mode() string
}

// WakeSource is the per-DP-core early warning a DP loop waits on beside its
// socket. It has the method set of dataplane.WakeSource.
type WakeSource interface {
	FD() int
	Arm()
	Disarm() (stampNs int64, ok bool)
}

// Waker is a probe that gives per-DP-core wake sources (both backends).
type Waker interface {
	Probe
	// WakeSource returns the wake source of a DP core named in Options;
	// valid between Start and Stop.
	WakeSource(core int) (WakeSource, error)
}

// Limits of the XDP program's maps (probe/bpf/probe.c).
const (
	MaxQueues = 64 // RX queues with a slot of their own; higher queues share slot MaxQueues
	MaxCores  = 64 // DP core ids 0..63
)

// Backends by name, as written in the config.
const (
	BackendXDP      = "xdp"
	BackendCounters = "counters"
)

// Options configure a probe on one interface.
type Options struct {
	Iface string // interface where packets enter (required)
	NetNS string // named network namespace of Iface ("" = current)
	// Core is the DP core every RX queue maps to unless Queues says otherwise.
	Core int
	// Queues maps RX queue -> DP core (xdp only; queues >= MaxQueues share one slot).
	Queues map[int]int
	// PinDir is where the xdp backend pins its link so that a restarted daemon
	// finds and replaces a program left behind by a crash. Default DefaultPinDir.
	PinDir string
	// LockDir holds one lock file per probed interface, held while a probe
	// runs: Start refuses an interface a live process probes, and takes
	// over one whose prober died. Default DefaultLockDir.
	LockDir string
	// Interval is the counters backend's polling period. Default 10ms.
	Interval time.Duration
	// AttachMode is the xdp attach mode: "" (native, falling back to
	// generic), "native" or "generic".
	AttachMode string
	// TagOffset is where senders keep their 8-byte sequence number in the
	// UDP payload; the xdp backend copies those bytes into each event (Tag)
	// so lead time is matched per packet. 0 means DefaultTagOffset.
	TagOffset int
	// RingSize is the xdp backend's wake-event ring buffer per DP core, in
	// bytes: a power of two. The kernel wants a multiple of its page size
	// (64 KiB on some arm64 kernels), so a smaller size is rounded up to the
	// page size (RingBytes says what runs). 0 means DefaultRingSize.
	RingSize int
}

// DefaultRingSize is the ring buffer per DP core when Options.RingSize is 0.
const DefaultRingSize = 64 << 10

// RingBytes is the ring size the xdp backend creates for o: RingSize (or
// the default), at least this host's page size.
func (o Options) RingBytes() int {
	n := o.RingSize
	if n == 0 {
		n = DefaultRingSize
	}
	return max(n, os.Getpagesize())
}

// DefaultTagOffset is trafficgen's payload layout: run id, sequence number
// (little-endian), send time.
const DefaultTagOffset = 8

// MaxTagOffset matches MAX_TAG_OFFSET in probe/bpf/probe.c.
const MaxTagOffset = 1024

// DefaultPinDir is the bpffs directory for taichi's pinned XDP links.
const DefaultPinDir = "/sys/fs/bpf/taichi"

// DefaultLockDir is where probes keep their interface locks.
const DefaultLockDir = "/run/taichi/probe"

// Validate checks Options; errors name the field.
func (o Options) Validate() error {
	if err := safename.Iface(o.Iface); err != nil {
		return fmt.Errorf("iface: %w", err)
	}
	if o.RingSize < 0 || o.RingSize&(o.RingSize-1) != 0 {
		return fmt.Errorf("ring_size: %d is not a power of two", o.RingSize)
	}
	if o.Core < 0 || o.Core >= MaxCores {
		return fmt.Errorf("core: %d out of range 0..%d", o.Core, MaxCores-1)
	}
	for q, c := range o.Queues {
		if q < 0 || q > MaxQueues {
			return fmt.Errorf("queues: queue %d out of range 0..%d", q, MaxQueues)
		}
		if c < 0 || c >= MaxCores {
			return fmt.Errorf("queues: queue %d: core %d out of range 0..%d", q, c, MaxCores-1)
		}
	}
	if o.TagOffset < 0 || o.TagOffset > MaxTagOffset {
		return fmt.Errorf("tag_offset: %d out of range 0..%d", o.TagOffset, MaxTagOffset)
	}
	switch o.AttachMode {
	case "", "native", "generic":
	default:
		return fmt.Errorf("attach_mode: %q (want native, generic or empty for native-then-generic)", o.AttachMode)
	}
	if o.Interval < 0 {
		return fmt.Errorf("interval: negative (%v)", o.Interval)
	}
	return nil
}

// cores returns the distinct DP cores the options name, default core first.
func (o Options) cores() []int {
	seen := map[int]bool{o.Core: true}
	out := []int{o.Core}
	for q := 0; q <= MaxQueues; q++ {
		if c, ok := o.Queues[q]; ok && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// coreOf returns the DP core of an RX queue slot.
func (o Options) coreOf(slot int) int {
	if c, ok := o.Queues[slot]; ok {
		return c
	}
	return o.Core
}

// New returns a probe of the named backend.
func New(backend string, opts Options) (Waker, error) {
	switch backend {
	case BackendXDP:
		return NewXDP(opts)
	case BackendCounters:
		return NewCounters(opts)
	default:
		return nil, fmt.Errorf("backend: unknown %q (want %s or %s)", backend, BackendXDP, BackendCounters)
	}
}

// Stats is a snapshot of a probe's counters.
type Stats struct {
	Backend string       `json:"backend"`
	Iface   string       `json:"iface"`
	NetNS   string       `json:"netns,omitempty"`
	Mode    string       `json:"mode"`
	Queues  []QueueStats `json:"queues"`
	Cores   []CoreStats  `json:"cores"`
}

// QueueStats counts what the probe saw on one RX queue (counters backend:
// queue -1 = the whole interface).
type QueueStats struct {
	Queue   int    `json:"queue"`
	Core    int    `json:"core"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// CoreStats counts wake events of one DP core.
type CoreStats struct {
	Core int `json:"core"`
	// Fired counts armed->fired transitions: one per idle->traffic transition.
	Fired uint64 `json:"fired"`
	// Lost counts transitions whose event could not be written.
	Lost uint64 `json:"lost"`
	// Delivered counts events a Disarm consumed and decoded.
	Delivered uint64 `json:"delivered"`
	// Missed counts Disarms that found the core fired but no record in time.
	Missed uint64 `json:"missed"`
	// Garbled counts records DecodeEvent rejected.
	Garbled uint64 `json:"garbled"`
	// LastStampNs is the CLOCK_MONOTONIC stamp of the last delivered event.
	LastStampNs int64 `json:"last_stamp_ns"`
	// LastLagNs is how long after its stamp the last event was consumed
	// (probe stamp -> the DP loop running again).
	LastLagNs int64 `json:"last_lag_ns"`
}
