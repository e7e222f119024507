package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// Counters is the coarse probe for interfaces XDP cannot reach (a DPDK
// process owns the queues): it polls the interface's RX counters at an
// interval and raises an event when they move after an idle poll, and wakes
// the armed core's WakeSource when they move at all.
//
// It reads /proc/thread-self/net/dev, opened once inside the interface's
// namespace: that file follows the namespace of the thread that opened it,
// while /sys/class/net shows the namespace sysfs was mounted in. The kernel
// keeps no per-queue RX counters that are common to all drivers, so there is
// one counter for the whole interface (queue -1) and every packet maps to
// Options.Core.
type Counters struct {
	opts Options

	mu      sync.Mutex
	fd      int
	cancel  context.CancelFunc
	done    chan struct{}
	wake    *CountersWakeSource
	packets atomic.Uint64 // since Start
	bytes   atomic.Uint64
	bursts  atomic.Uint64 // idle->traffic transitions seen by the poller
	polls   atomic.Uint64
	lastErr atomic.Value // string
}

// NewCounters validates opts and returns an unstarted counters probe.
func NewCounters(opts Options) (*Counters, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(opts.Queues) > 0 {
		return nil, errors.New("queues: the counters backend sees only whole-interface counters; map the interface with core")
	}
	if opts.Interval == 0 {
		opts.Interval = 10 * time.Millisecond
	}
	return &Counters{opts: opts, fd: -1}, nil
}

// Start opens the counters in the interface's namespace and starts polling
// until Stop or ctx ends.
func (c *Counters) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return errors.New("counters probe: already started")
	}
	var fd int
	err := netns.Do(c.opts.NetNS, func() error {
		var err error
		fd, err = unix.Open("/proc/thread-self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("counters probe on %s: %w", c.where(), err)
	}
	buf := make([]byte, 64<<10)
	base, err := readNetDev(fd, buf, c.opts.Iface)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("counters probe on %s: %w", c.where(), err)
	}
	wake, err := newCountersWakeSource(c.opts.Core)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("counters probe: %w", err)
	}
	c.fd, c.wake = fd, wake
	ctx, c.cancel = context.WithCancel(ctx)
	c.done = make(chan struct{})
	go c.poll(ctx, buf, base)
	return nil
}

func (c *Counters) where() string {
	if c.opts.NetNS == "" {
		return c.opts.Iface
	}
	return c.opts.NetNS + "/" + c.opts.Iface
}

func (c *Counters) poll(ctx context.Context, buf []byte, last netDevRX) {
	defer close(c.done)
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	idle := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := readNetDev(c.fd, buf, c.opts.Iface)
		c.polls.Add(1)
		if err != nil {
			c.lastErr.Store(err.Error())
			continue
		}
		if now.packets < last.packets { // interface recreated: counters restarted
			last = netDevRX{}
		}
		dp := now.packets - last.packets
		c.packets.Add(dp)
		c.bytes.Add(now.bytes - last.bytes)
		last = now
		if dp == 0 {
			idle = true
			continue
		}
		if idle {
			c.bursts.Add(1)
			idle = false
		}
		c.wake.fire(monoNow())
	}
}

// Stop ends polling and closes the counters. Idempotent.
func (c *Counters) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil
	}
	c.cancel()
	<-c.done
	c.done = nil
	err := unix.Close(c.fd)
	c.fd = -1
	c.wake.close()
	return err
}

// Mode returns "poll <interval>" while started.
func (c *Counters) Mode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return ""
	}
	return "poll " + c.opts.Interval.String()
}

// Bursts returns how many idle->traffic transitions the poller saw.
func (c *Counters) Bursts() uint64 { return c.bursts.Load() }

// WakeSource returns the wake source of Options.Core.
func (c *Counters) WakeSource(core int) (WakeSource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil, errors.New("counters probe: not started")
	}
	if core != c.opts.Core {
		return nil, fmt.Errorf("counters probe: core %d has no queue mapped to it", core)
	}
	return c.wake, nil
}

// Stats returns the interface's counters since Start as queue -1.
func (c *Counters) Stats() Stats {
	st := Stats{Backend: BackendCounters, Iface: c.opts.Iface, NetNS: c.opts.NetNS, Mode: c.Mode(),
		Queues: []QueueStats{{Queue: -1, Core: c.opts.Core, Packets: c.packets.Load(), Bytes: c.bytes.Load()}}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake != nil {
		st.Cores = []CoreStats{c.wake.Stats()}
	}
	return st
}

type netDevRX struct{ packets, bytes uint64 }

// readNetDev rereads an open /proc/net/dev and returns iface's RX counters.
func readNetDev(fd int, buf []byte, iface string) (netDevRX, error) {
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return netDevRX{}, fmt.Errorf("read net/dev: %w", err)
	}
	return parseNetDev(buf[:n], iface)
}

// parseNetDev finds iface's line in /proc/net/dev text:
// "  name: rx_bytes rx_packets rx_errs ...".
func parseNetDev(b []byte, iface string) (netDevRX, error) {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok || string(bytes.TrimSpace(name)) != iface {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 2 {
			return netDevRX{}, fmt.Errorf("net/dev: %s: %d fields", iface, len(f))
		}
		by, err1 := strconv.ParseUint(string(f[0]), 10, 64)
		pk, err2 := strconv.ParseUint(string(f[1]), 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return netDevRX{}, fmt.Errorf("net/dev: %s: %w", iface, err)
		}
		return netDevRX{packets: pk, bytes: by}, nil
	}
	return netDevRX{}, fmt.Errorf("iface %q: not in net/dev", iface)
}

// CountersWakeSource wakes a DP core from the counters poller through an
// eventfd.
type CountersWakeSource struct {
	core    int
	efd     int
	state   atomic.Uint32
	stampNs atomic.Int64
	fired   atomic.Uint64
	deliv   atomic.Uint64
	lastLag atomic.Int64
	closed  atomic.Bool
}

func newCountersWakeSource(core int) (*CountersWakeSource, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &CountersWakeSource{core: core, efd: efd}, nil
}

// FD is an eventfd, readable while a wake is pending.
func (w *CountersWakeSource) FD() int { return w.efd }

// Arm asks for a wake when the counters next move.
func (w *CountersWakeSource) Arm() {
	if w.closed.Load() {
		return
	}
	w.clear()
	w.state.Store(coreArmed)
}

// Disarm stops reporting and returns the poll's stamp if the counters moved.
func (w *CountersWakeSource) Disarm() (int64, bool) {
	if w.closed.Load() || w.state.Swap(coreActive) != coreFired {
		return 0, false
	}
	w.clear()
	s := w.stampNs.Load()
	w.deliv.Add(1)
	w.lastLag.Store(monoNow() - s)
	return s, true
}

func (w *CountersWakeSource) clear() {
	var b [8]byte
	_, _ = unix.Read(w.efd, b[:])
}

func (w *CountersWakeSource) fire(stamp int64) {
	// Stamp first: Disarm reads it after it sees FIRED.
	if w.state.Load() != coreArmed {
		return
	}
	w.stampNs.Store(stamp)
	if !w.state.CompareAndSwap(coreArmed, coreFired) {
		return
	}
	w.fired.Add(1)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(w.efd, one[:])
}

// Stats returns the core's event counters.
func (w *CountersWakeSource) Stats() CoreStats {
	return CoreStats{Core: w.core, Fired: w.fired.Load(), Delivered: w.deliv.Load(),
		LastStampNs: w.stampNs.Load(), LastLagNs: w.lastLag.Load()}
}

func (w *CountersWakeSource) close() {
	if !w.closed.Swap(true) {
		unix.Close(w.efd)
	}
}
