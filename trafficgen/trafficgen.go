// Package trafficgen sends timestamped UDP traffic from a network namespace
// toward a DP loop and measures what comes back: sent/received/loss,
// achieved packet rate and round-trip latency percentiles from an HDR
// histogram. Each payload carries the run's id, a sequence number and its
// CLOCK_MONOTONIC send time, so reflected (or forwarded) packets are matched
// without any state per packet beyond a bitmap. Runs are bounded in count
// and in time and stop by themselves.
package trafficgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/netns"
	"golang.org/x/sys/unix"
)

// Traffic patterns.
const (
	PatternConstant = "constant" // evenly spaced at Rate
	PatternPoisson  = "poisson"  // exponential gaps with mean 1/Rate
	PatternOnOff    = "onoff"    // bursts at Rate for On, silence for Off
)

// Options describes one run.
type Options struct {
	NetNS string // namespace to send from ("" = current)
	Iface string // interface to send on (SO_BINDTODEVICE); "" = by route
	// Dst is where packets go (the DP loop's address, or the sink behind a
	// forwarding DP loop); DstPort defaults to 9000.
	Dst     netip.Addr
	DstPort int
	// RecvNetNS and RecvAddr, when set, receive in another namespace (the
	// testbed's sink, for forward mode); default: replies to the sending
	// socket (reflect mode).
	RecvNetNS string
	RecvAddr  netip.Addr

	Rate    int    // packets per second (while "on" for onoff)
	Count   int    // packets to send
	Pattern string // PatternConstant (default), PatternPoisson, PatternOnOff
	// On and Off shape onoff bursts (defaults 20 ms and 80 ms: 20% duty).
	On, Off time.Duration
	// PayloadSize is the UDP payload length (default and minimum 32 bytes).
	PayloadSize int
	// Deadline bounds the whole run (default: twice the expected sending
	// time plus 2 s, at most 5 min).
	Deadline time.Duration
	// Drain is how long to wait for late replies after the last send
	// (default 200 ms).
	Drain time.Duration
	// PinSender pins the sending thread to SenderCPU (a CP core); by
	// default it is unpinned.
	PinSender bool
	SenderCPU int
	// SenderNice, when not 0, runs the sending thread SCHED_OTHER at this
	// nice value for the run: a weight that gives it what it asks of its
	// core whatever shares that core, so every run offers the same load.
	SenderNice int
	Seed       uint64 // for poisson gaps; 0 = random
	// KernelStamps takes receive times from the kernel (SO_TIMESTAMPNS)
	// instead of from when the receiver thread ran. Off by default: on
	// veth the stamp may be taken at an earlier hop of the return path
	// (the skb keeps it across namespaces), so it can undercount.
	KernelStamps bool
}

// Latency percentiles in µs.
type Latency struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// Report is the outcome of a run.
type Report struct {
	Pattern     string        `json:"pattern"`
	Rate        int           `json:"rate"`
	Sent        uint64        `json:"sent"`
	Received    uint64        `json:"received"` // unique sequence numbers back
	Lost        uint64        `json:"lost"`
	Loss        float64       `json:"loss"` // fraction of Sent
	Duplicates  uint64        `json:"duplicates"`
	Foreign     uint64        `json:"foreign"`     // datagrams not from this run
	OfferedPPS  float64       `json:"offered_pps"` // Sent over the sending time
	AchievedPPS float64       `json:"pps"`         // Received over first send to last receive
	SendTime    time.Duration `json:"send_ns"`
	Duration    time.Duration `json:"duration_ns"`
	LatencyUs   Latency       `json:"lat_us"`
	// HistogramCount is the number of latency samples; equals Received.
	HistogramCount int64 `json:"histogram_count"`
	TimedOut       bool  `json:"timed_out"` // the deadline ended the run
	// KernelStamps reports whether receive times came from the kernel
	// (SO_TIMESTAMPNS) rather than from when the receiver thread ran.
	KernelStamps bool `json:"kernel_stamps"`
}

const (
	minPayload  = 32
	batchSize   = 32
	defaultPort = 9000
	maxDeadline = 5 * time.Minute
	recvPoll    = 20 * time.Millisecond
	histMaxNs   = int64(10 * time.Second)
)

func (o Options) withDefaults() Options {
	if o.DstPort == 0 {
		o.DstPort = defaultPort
	}
	if o.Pattern == "" {
		o.Pattern = PatternConstant
	}
	if o.On == 0 {
		o.On = 20 * time.Millisecond
	}
	if o.Off == 0 {
		o.Off = 80 * time.Millisecond
	}
	if o.PayloadSize < minPayload {
		o.PayloadSize = minPayload
	}
	if o.Drain == 0 {
		o.Drain = 200 * time.Millisecond
	}
	if o.Deadline == 0 && o.Rate > 0 {
		send := time.Duration(float64(o.Count) / float64(o.Rate) * float64(time.Second))
		if o.Pattern == PatternOnOff {
			send = send * (o.On + o.Off) / o.On
		}
		o.Deadline = min(2*send+2*time.Second, maxDeadline)
	}
	return o
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case !o.Dst.Is4():
		return fmt.Errorf("trafficgen: dst: %v is not an IPv4 address", o.Dst)
	case o.DstPort < 1 || o.DstPort > 65535:
		return fmt.Errorf("trafficgen: dst_port: %d out of range", o.DstPort)
	case o.Rate <= 0:
		return fmt.Errorf("trafficgen: rate: %d, want > 0 packets/s", o.Rate)
	case o.Count <= 0:
		return fmt.Errorf("trafficgen: count: %d, want > 0", o.Count)
	case o.Pattern != PatternConstant && o.Pattern != PatternPoisson && o.Pattern != PatternOnOff:
		return fmt.Errorf("trafficgen: pattern: %q, want constant, poisson or onoff", o.Pattern)
	case o.On < 0 || o.Off < 0:
		return fmt.Errorf("trafficgen: on/off: negative duration")
	case o.PayloadSize > 1472:
		return fmt.Errorf("trafficgen: payload_size: %d exceeds one 1500-byte frame", o.PayloadSize)
	case o.Deadline < 0 || o.Deadline > maxDeadline:
		return fmt.Errorf("trafficgen: deadline: %v, want (0, %v]", o.Deadline, maxDeadline)
	case o.RecvNetNS != "" && !o.RecvAddr.Is4():
		return fmt.Errorf("trafficgen: recv_addr: required (IPv4) with recv_netns")
	}
	return nil
}

// Run sends the traffic opts describes and reports what came back.
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.Validate(); err != nil {
		return Report{}, err
	}
	o := opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Deadline)
	defer cancel()

	sendFD, recvFD, err := openSockets(o)
	if err != nil {
		return Report{}, err
	}
	defer unix.Close(sendFD)
	if recvFD != sendFD {
		defer unix.Close(recvFD)
	}

	run := &runState{
		id:   rand.Uint64() | 1,
		seen: make([]uint64, (o.Count+63)/64),
		hist: hdrhistogram.New(1, histMaxNs, 3),
	}
	kernelStamps := o.KernelStamps && unix.SetsockoptInt(recvFD, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		run.receive(ctx, recvFD, uint64(o.Count), o.Drain)
	}()
	sendErr := run.send(ctx, sendFD, o)
	wg.Wait()

	rep := run.report(o)
	rep.KernelStamps = kernelStamps
	rep.TimedOut = ctx.Err() == context.DeadlineExceeded
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) && !errors.Is(sendErr, context.DeadlineExceeded) {
		return rep, sendErr
	}
	return rep, nil
}

func openSockets(o Options) (sendFD, recvFD int, err error) {
	sendFD = -1
	err = netns.Do(o.NetNS, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("trafficgen: socket: %w", err)
		}
		sendFD = fd
		// No UDP checksum: the DP loop's packet socket would otherwise send
		// back a checksum the sender left to offload, which the receiver drops.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
		setBuffers(fd)
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		if o.Iface != "" {
			if err := unix.BindToDevice(fd, o.Iface); err != nil {
				return fmt.Errorf("trafficgen: iface %q: %w", o.Iface, err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
			return fmt.Errorf("trafficgen: bind: %w", err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: o.DstPort, Addr: o.Dst.As4()}); err != nil {
			return fmt.Errorf("trafficgen: connect %v:%d: %w", o.Dst, o.DstPort, err)
		}
		return nil
	})
	if err != nil {
		if sendFD >= 0 {
			unix.Close(sendFD)
		}
		return -1, -1, err
	}
	if o.RecvNetNS == "" {
		return sendFD, sendFD, nil
	}
	recvFD = -1
	err = netns.Do(o.RecvNetNS, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("trafficgen: receive socket: %w", err)
		}
		recvFD = fd
		setBuffers(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: o.DstPort, Addr: o.RecvAddr.As4()}); err != nil {
			return fmt.Errorf("trafficgen: bind %v:%d in %s: %w", o.RecvAddr, o.DstPort, o.RecvNetNS, err)
		}
		return nil
	})
	if err != nil {
		unix.Close(sendFD)
		if recvFD >= 0 {
			unix.Close(recvFD)
		}
		return -1, -1, err
	}
	return sendFD, recvFD, nil
}

// setBuffers enlarges the socket buffers so bursts survive a receiver that
// is briefly off its CPU: beyond net.core.[rw]mem_max when privileged
// (the FORCE options), else up to it.
func setBuffers(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
}

// runState is shared by the sender and the receiver of one run.
type runState struct {
	id        uint64
	sent      atomic.Uint64
	sendStart atomic.Int64
	sendEnd   atomic.Int64 // 0 while sending
	lastRecv  int64

	// receiver-owned
	seen       []uint64
	received   uint64
	duplicates uint64
	foreign    uint64
	hist       *hdrhistogram.Histogram
}

// Payload layout (little endian, at the start of the UDP payload): the
// run's random id, the packet's sequence number and its CLOCK_MONOTONIC
// send time in ns. Probes may read the sequence number to match packets.
const (
	PayloadIDOffset    = 0
	PayloadSeqOffset   = 8
	PayloadStampOffset = 16
)

// schedule yields the send times of a pattern.
type schedule struct {
	o        Options
	interval float64 // ns
	next     float64
	winEnd   float64 // onoff: end of the current burst
	rng      *rand.Rand
}

func newSchedule(o Options, start int64) *schedule {
	s := &schedule{o: o, interval: 1e9 / float64(o.Rate), next: float64(start)}
	s.winEnd = float64(start) + float64(o.On)
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return s
}

// advance moves to the next send time.
func (s *schedule) advance() {
	switch s.o.Pattern {
	case PatternPoisson:
		s.next += s.rng.ExpFloat64() * s.interval
	case PatternOnOff:
		s.next += s.interval
		if s.next >= s.winEnd {
			s.next = s.winEnd + float64(s.o.Off)
			s.winEnd = s.next + float64(s.o.On)
		}
	default:
		s.next += s.interval
	}
}

func (r *runState) send(ctx context.Context, fd int, o Options) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if o.PinSender {
		// Give the thread back with the affinity it came with: widened to
		// every CPU, a thread of a process kept on CP cores (the eval's,
		// where the daemon runs) would run the process's goroutines on DP
		// cores afterwards.
		var prev unix.CPUSet
		if err := unix.SchedGetaffinity(0, &prev); err == nil {
			defer unix.SchedSetaffinity(0, &prev)
		}
		var set unix.CPUSet
		set.Set(o.SenderCPU)
		_ = unix.SchedSetaffinity(0, &set)
	}
	if o.SenderNice != 0 {
		if was, err := linuxsched.Swap(0, linuxsched.Other(o.SenderNice)); err == nil {
			defer linuxsched.Set(0, was)
		}
	}
	// Precise sleeps: without this the kernel may add 50 µs of timer slack.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_TIMERSLACK, 0, 0, 0, 0)

	bufs := make([][]byte, batchSize)
	iovs := make([]unix.Iovec, batchSize)
	msgs := make([]unix.Mmsghdr, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, o.PayloadSize)
		binary.LittleEndian.PutUint64(bufs[i][PayloadIDOffset:], r.id)
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(o.PayloadSize)
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}

	start := nanotime()
	r.sendStart.Store(start)
	defer func() { r.sendEnd.Store(nanotime()) }()
	sched := newSchedule(o, start)
	seq := 0
	for seq < o.Count {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := nanotime()
		wait := int64(sched.next) - now
		if wait > 0 {
			// Sleep, never spin: the generator shares its core with the
			// receiver and the kernel's packet processing. Oversleeping only
			// groups the packets then due into one batch.
			ts := unix.NsecToTimespec(int64(sched.next))
			_ = unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
			continue
		}
		// Everything due now goes in one sendmmsg.
		k := 0
		for k < batchSize && seq < o.Count && int64(sched.next) <= now {
			binary.LittleEndian.PutUint64(bufs[k][PayloadSeqOffset:], uint64(seq))
			binary.LittleEndian.PutUint64(bufs[k][PayloadStampOffset:], uint64(now))
			seq++
			k++
			sched.advance()
		}
		sentNow, err := sendmmsg(fd, msgs[:k])
		r.sent.Add(uint64(sentNow))
		if err != nil && err != unix.EAGAIN && err != unix.ENOBUFS && err != unix.ECONNREFUSED && err != unix.EINTR {
			return fmt.Errorf("trafficgen: sendmmsg: %w", err)
		}
		// Unsent datagrams of this batch count as never sent: their
		// sequence numbers are skipped, not retried.
	}
	return nil
}

func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func (r *runState) receive(ctx context.Context, fd int, count uint64, drain time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tv := unix.NsecToTimeval(int64(recvPoll))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	const ctlLen = 64
	bufs := make([][]byte, batchSize)
	ctls := make([][]byte, batchSize)
	iovs := make([]unix.Iovec, batchSize)
	msgs := make([]unix.Mmsghdr, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
		ctls[i] = make([]byte, ctlLen)
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
	}
	for {
		if r.received >= count || ctx.Err() != nil {
			return
		}
		if end := r.sendEnd.Load(); end != 0 && (r.received >= r.sent.Load() || nanotime()-end > int64(drain)) {
			return
		}
		for i := range msgs {
			msgs[i].Hdr = unix.Msghdr{Iov: &iovs[i], Control: &ctls[i][0]}
			msgs[i].Hdr.SetIovlen(1)
			msgs[i].Hdr.SetControllen(ctlLen)
			msgs[i].Len = 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batchSize, unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			continue // timeout (EAGAIN) or EINTR: re-check the exit conditions
		}
		now := nanotime()
		var realNow, monoNow int64
		for i := 0; i < int(n); i++ {
			b := bufs[i][:msgs[i].Len]
			if len(b) < minPayload || binary.LittleEndian.Uint64(b[PayloadIDOffset:]) != r.id {
				r.foreign++
				continue
			}
			seq := binary.LittleEndian.Uint64(b[PayloadSeqOffset:])
			stamp := int64(binary.LittleEndian.Uint64(b[PayloadStampOffset:]))
			if seq >= count {
				r.foreign++
				continue
			}
			if r.seen[seq/64]&(1<<(seq%64)) != 0 {
				r.duplicates++
				continue
			}
			r.seen[seq/64] |= 1 << (seq % 64)
			r.received++
			at := now
			if ts, ok := kernelStamp(ctls[i][:msgs[i].Hdr.Controllen]); ok {
				if realNow == 0 {
					monoNow, realNow = nanotime(), time.Now().UnixNano()
				}
				at = ts - (realNow - monoNow)
			}
			lat := max(at-stamp, 1)
			_ = r.hist.RecordValue(min(lat, histMaxNs))
			r.lastRecv = max(r.lastRecv, now)
		}
	}
}

// kernelStamp extracts an SCM_TIMESTAMPNS (CLOCK_REALTIME) from a control buffer.
func kernelStamp(ctl []byte) (int64, bool) {
	for len(ctl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(ctl) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&ctl[unix.CmsgLen(0)]))
			return ts.Nano(), true
		}
		ctl = ctl[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(ctl)):]
	}
	return 0, false
}

func (r *runState) report(o Options) Report {
	rep := Report{Pattern: o.Pattern, Rate: o.Rate, Sent: r.sent.Load(), Received: r.received,
		Duplicates: r.duplicates, Foreign: r.foreign, HistogramCount: r.hist.TotalCount()}
	if rep.Sent > rep.Received {
		rep.Lost = rep.Sent - rep.Received
	}
	if rep.Sent > 0 {
		rep.Loss = float64(rep.Lost) / float64(rep.Sent)
	}
	start, end := r.sendStart.Load(), r.sendEnd.Load()
	if end > start {
		rep.SendTime = time.Duration(end - start)
		rep.OfferedPPS = float64(rep.Sent) / rep.SendTime.Seconds()
	}
	if r.lastRecv > start && rep.Received > 0 {
		rep.Duration = time.Duration(r.lastRecv - start)
		rep.AchievedPPS = float64(rep.Received) / rep.Duration.Seconds()
	}
	if rep.HistogramCount > 0 {
		us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
		h := r.hist
		rep.LatencyUs = Latency{
			Min: us(h.Min()), Mean: math.Round(h.Mean()/10) / 100,
			P50: us(h.ValueAtQuantile(50)), P90: us(h.ValueAtQuantile(90)), P99: us(h.ValueAtQuantile(99)),
			P999: us(h.ValueAtQuantile(99.9)), Max: us(h.Max()),
		}
	}
	return rep
}

// nanotime is the runtime's CLOCK_MONOTONIC read through the vDSO; the
// runtime keeps it linkable for such uses.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
