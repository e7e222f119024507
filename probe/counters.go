package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// Counters is the coarse probe for interfaces XDP cannot reach (a DPDK
// process owns the queues): it polls the interface's RX counters at an
// interval, counts a burst when they move after an idle poll, and wakes the
// armed cores whose queues moved.
//
// Interface totals come from /proc/thread-self/net/dev, opened once inside
// the interface's namespace: that file follows the namespace of the thread
// that opened it, while /sys/class/net shows the namespace sysfs was
// mounted in. Per-queue counters come from the driver's ethtool stats when
// it has them (see ethtoolQueues); then Options.Queues maps queues to
// cores, and traffic the queue counters do not explain (veth counts only
// its NAPI path per queue) goes to Options.Core.
type Counters struct {
	opts Options

	mu     sync.Mutex
	devFD  int // /proc/thread-self/net/dev of the namespace
	sockFD int // AF_INET socket for ethtool ioctls in the namespace
	eth    *ethtoolQueues
	cancel context.CancelFunc
	done   chan struct{}
	wakes  map[int]*CountersWakeSource
	qs     []queueCount // per-queue totals since Start (per-queue mode)

	packets atomic.Uint64 // interface totals since Start
	bytes   atomic.Uint64
	bursts  atomic.Uint64 // idle->traffic transitions seen by the poller
	polls   atomic.Uint64
	lastErr atomic.Value // string
}

type queueCount struct {
	queue, core    int
	packets, bytes atomic.Uint64
}

// NewCounters validates opts and returns an unstarted counters probe.
func NewCounters(opts Options) (*Counters, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Interval == 0 {
		opts.Interval = 10 * time.Millisecond
	}
	return &Counters{opts: opts, devFD: -1, sockFD: -1}, nil
}

// Start opens the counters in the interface's namespace and starts polling
// until Stop or ctx ends. Options.Queues needs per-queue counters: Start
// fails, naming the field, when the driver has none.
func (c *Counters) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return errors.New("counters probe: already started")
	}
	defer func() {
		if err != nil {
			c.closeFDs()
		}
	}()
	err = netns.Do(c.opts.NetNS, func() error {
		var err error
		if c.devFD, err = unix.Open("/proc/thread-self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		c.sockFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("counters probe on %s: %w", c.where(), err)
	}
	buf := make([]byte, 64<<10)
	base, err := readNetDev(c.devFD, buf, c.opts.Iface)
	if err != nil {
		return fmt.Errorf("counters probe on %s: %w", c.where(), err)
	}
	if c.eth, err = openEthtoolQueues(c.sockFD, c.opts.Iface); err != nil {
		return fmt.Errorf("counters probe on %s: %w", c.where(), err)
	}
	if c.eth == nil && len(c.opts.Queues) > 0 {
		return fmt.Errorf("queues: %s has no per-queue RX counters; map the interface with core", c.where())
	}
	var qbase []netDevRX
	c.qs = nil
	if c.eth != nil {
		if err := c.eth.read(); err != nil {
			return fmt.Errorf("counters probe on %s: %w", c.where(), err)
		}
		for _, q := range c.eth.queues() {
			slot := min(q, MaxQueues)
			c.qs = append(c.qs, queueCount{queue: q, core: c.opts.coreOf(slot)})
			p, b := c.eth.queue(q)
			qbase = append(qbase, netDevRX{packets: p, bytes: b})
		}
	}
	c.wakes = make(map[int]*CountersWakeSource)
	for _, core := range c.opts.cores() {
		w, err := newCountersWakeSource(core)
		if err != nil {
			for _, w := range c.wakes {
				w.close()
			}
			c.wakes = nil
			return fmt.Errorf("counters probe: %w", err)
		}
		c.wakes[core] = w
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.done = make(chan struct{})
	go c.poll(ctx, buf, base, qbase)
	return nil
}

func (c *Counters) closeFDs() {
	for _, fd := range []*int{&c.devFD, &c.sockFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (c *Counters) where() string {
	if c.opts.NetNS == "" {
		return c.opts.Iface
	}
	return c.opts.NetNS + "/" + c.opts.Iface
}

func (c *Counters) poll(ctx context.Context, buf []byte, last netDevRX, qlast []netDevRX) {
	defer close(c.done)
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	idle := true
	moved := make(map[int]bool, len(c.wakes))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.polls.Add(1)
		now, err := readNetDev(c.devFD, buf, c.opts.Iface)
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

		clear(moved)
		var explained uint64
		if c.eth != nil {
			if err := c.eth.read(); err != nil {
				c.lastErr.Store(err.Error())
			} else {
				for i := range c.qs {
					q := &c.qs[i]
					p, b := c.eth.queue(q.queue)
					if p < qlast[i].packets || b < qlast[i].bytes {
						qlast[i] = netDevRX{}
					}
					if d := p - qlast[i].packets; d > 0 {
						moved[q.core] = true
						explained += d
						q.packets.Add(d)
						q.bytes.Add(b - qlast[i].bytes)
					}
					qlast[i] = netDevRX{packets: p, bytes: b}
				}
			}
		}
		if dp > explained {
			moved[c.opts.Core] = true
		}
		if len(moved) == 0 {
			idle = true
			continue
		}
		if idle {
			c.bursts.Add(1)
			idle = false
		}
		stamp := monoNow()
		for core := range moved {
			if w := c.wakes[core]; w != nil {
				w.fire(stamp)
			}
		}
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
	c.closeFDs()
	for _, w := range c.wakes {
		w.close()
	}
	return nil
}

// Mode returns "poll <interval>" (plus " per-queue" with driver queue
// counters) while started.
func (c *Counters) Mode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return ""
	}
	m := "poll " + c.opts.Interval.String()
	if c.eth != nil {
		m += " per-queue"
	}
	return m
}

// Bursts returns how many idle->traffic transitions the poller saw.
func (c *Counters) Bursts() uint64 { return c.bursts.Load() }

// WakeSource returns the wake source of a core named in Options.
func (c *Counters) WakeSource(core int) (WakeSource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil, errors.New("counters probe: not started")
	}
	w, ok := c.wakes[core]
	if !ok {
		return nil, fmt.Errorf("counters probe: core %d has no queue mapped to it", core)
	}
	return w, nil
}

// Stats returns the interface's counters since Start as queue -1, then the
// driver's per-queue counters since Start when it has them.
func (c *Counters) Stats() Stats {
	st := Stats{Backend: BackendCounters, Iface: c.opts.Iface, NetNS: c.opts.NetNS, Mode: c.Mode(),
		Queues: []QueueStats{{Queue: -1, Core: c.opts.Core, Packets: c.packets.Load(), Bytes: c.bytes.Load()}}}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.qs {
		q := &c.qs[i]
		st.Queues = append(st.Queues, QueueStats{Queue: q.queue, Core: q.core, Packets: q.packets.Load(), Bytes: q.bytes.Load()})
	}
	for _, core := range c.opts.cores() {
		if w := c.wakes[core]; w != nil {
			st.Cores = append(st.Cores, w.Stats())
		}
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
	w := &CountersWakeSource{core: core, efd: efd}
	// Closed when unreferenced, like the xdp rings: a DP loop polling FD
	// after Stop must not find the number reused.
	runtime.AddCleanup(w, func(fd int) { unix.Close(fd) }, efd)
	return w, nil
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
	ev, ok := w.DisarmEvent()
	return ev.StampNs, ok
}

// DisarmEvent is Disarm returning an Event (Core, StampNs and Seq set: the
// counters know nothing about single packets).
func (w *CountersWakeSource) DisarmEvent() (Event, bool) {
	if w.closed.Load() || w.state.Swap(coreActive) != coreFired {
		return Event{}, false
	}
	w.clear()
	s := w.stampNs.Load()
	n := w.deliv.Add(1)
	w.lastLag.Store(monoNow() - s)
	return Event{Core: w.core, StampNs: s, Seq: n}, true
}

func (w *CountersWakeSource) clear() {
	var b [8]byte
	_, _ = unix.Read(w.efd, b[:])
}

func (w *CountersWakeSource) fire(stamp int64) {
	if w.state.Load() != coreArmed {
		return
	}
	// Stamp before the compare-and-swap: Disarm reads it after it sees FIRED.
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

func (w *CountersWakeSource) close() { w.closed.Store(true) }
