// Package kmod is the Go client of taichi.ko, the kernel module behind
// /dev/taichi (C sources in kmod/module): a DP thread pinned to one CPU
// registers itself and sleeps in Wait until a probe Kicks its CPU (the
// wake-up preempts control-plane work there in one hop); Stats gives the
// kick->run latency histogram measured in the kernel, and Blockers the
// control-plane kernel paths that were non-preemptible when a kick arrived.
//
// Open returns an error wrapping ErrNotSupported when the module is not
// loaded, so callers fall back to other paths and tests skip cleanly.
package kmod

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/stats"
	"github.com/taichi-sched/taichi/kmod/internal/uapi"
)

// DevicePath is where the module's misc device appears.
const DevicePath = "/dev/taichi"

// AllCPUs asks Stats and Blockers for every CPU.
const AllCPUs = -1

const (
	// MaxCPUs is the number of CPUs Kick can name.
	MaxCPUs = uapi.MaxCPUs
	// HistBuckets is the number of latency buckets; see BucketBounds.
	HistBuckets = uapi.HistBuckets
	// MaxWait bounds Wait's timeout: a DP thread never sleeps longer in the module.
	MaxWait = time.Duration(uapi.MaxWaitNs)
	// MaxTestHold bounds TestHold.
	MaxTestHold = uapi.MaxHoldMicros * time.Microsecond
)

// Blocker flags (Blocker.Flags).
const (
	BlockerPreemptOff = uapi.BlockerPreemptOff // preemption was disabled (preempt count > 0)
	BlockerSoftirq    = uapi.BlockerSoftirq    // a softirq or bh-disabled section
	BlockerNoKPreempt = uapi.BlockerNoKPreempt // the kernel's preemption model is none/voluntary
	BlockerWaited     = uapi.BlockerWaited     // WaitNs is known: the DP thread has run since
)

// ErrNotSupported is wrapped by Open when /dev/taichi is absent (module not
// loaded, or a kernel without loadable modules).
var ErrNotSupported = errors.New("taichi kernel module not available")

// Device is an open /dev/taichi. Its methods are safe for concurrent use
// (Close excepted: call it when no other call is in flight);
// Register, Unregister, Wait and Poll act on the calling OS thread.
type Device struct {
	f  *os.File
	fd uintptr
}

// Info describes the loaded module.
type Info struct {
	ABIVersion int    `json:"abi_version"`
	NrCPUs     int    `json:"nr_cpus"`
	RingLen    int    `json:"ring_len"`
	Kfunc      bool   `json:"kfunc"`      // XDP programs can call taichi_kick_cpu
	TestHold   bool   `json:"test_hold"`  // TestHold is enabled
	LatSwitch  bool   `json:"lat_switch"` // latency measured at sched_switch
	ExitHook   bool   `json:"exit_hook"`  // exited DP threads dropped at once
	Flags      uint32 `json:"flags"`
}

// Wake is what Wait and Poll return.
type Wake struct {
	Kicked bool  // false: the timeout passed (Wait) or nothing was pending (Poll)
	KickNs int64 // CLOCK_MONOTONIC stamp of the kick, when Kicked
}

// Histogram is the kernel's kick->DP-running latency histogram.
type Histogram struct {
	Count   uint64              `json:"count"`
	SumNs   uint64              `json:"sum_ns"`
	MaxNs   uint64              `json:"max_ns"`
	Buckets [HistBuckets]uint64 `json:"buckets"`
}

// Stats are one CPU's counters, or the sum over all CPUs.
type Stats struct {
	CPU             int       `json:"cpu"`    // AllCPUs for the sum
	DPTid           int       `json:"dp_tid"` // registered DP thread, 0 none (per-CPU only)
	Kicks           uint64    `json:"kicks"`
	KicksNoDP       uint64    `json:"kicks_no_dp"`
	Wakes           uint64    `json:"wakes"`
	Timeouts        uint64    `json:"timeouts"`
	IPIs            uint64    `json:"ipis"`
	IPIsBusy        uint64    `json:"ipis_busy"`
	Blockers        uint64    `json:"blockers"`
	BlockersDropped uint64    `json:"blockers_dropped"`
	Latency         Histogram `json:"latency"`
	InfoFlags       uint32    `json:"info_flags"`
}

// Blocker is one control-plane kernel path that was non-preemptible when a
// kick for its CPU arrived.
type Blocker struct {
	Seq          uint64   `json:"seq"`
	TimeNs       int64    `json:"time_ns"` // CLOCK_MONOTONIC when the IPI looked
	KickNs       int64    `json:"kick_ns"`
	WaitNs       int64    `json:"wait_ns"` // kick -> DP thread running; valid if Waited
	Waited       bool     `json:"waited"`
	Pid          int      `json:"pid"`
	Tgid         int      `json:"tgid"`
	CPU          int      `json:"cpu"`
	PreemptCount uint32   `json:"preempt_count"`
	Flags        uint32   `json:"flags"`
	Comm         string   `json:"comm"`
	Symbol       string   `json:"symbol"`  // e.g. "taichi_test_hold_spin+0x3c/0x60 [taichi]"
	Callers      []string `json:"callers"` // innermost first (arm64: the link register, then the frame-pointer chain)
}

// Open opens DevicePath.
func Open() (*Device, error) { return OpenPath(DevicePath) }

// OpenPath opens the device at path and checks the module's ABI version.
func OpenPath(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("kmod: open %s: %w (%v)", path, ErrNotSupported, err)
		}
		return nil, fmt.Errorf("kmod: open %s: %w", path, err)
	}
	d := &Device{f: f, fd: f.Fd()}
	info, err := d.Info()
	if err != nil {
		f.Close()
		return nil, err
	}
	if info.ABIVersion != uapi.ABIVersion {
		f.Close()
		return nil, fmt.Errorf("kmod: %s speaks ABI %d, this client %d: %w", path, info.ABIVersion, uapi.ABIVersion, ErrNotSupported)
	}
	return d, nil
}

// Close closes the device; DP threads registered through it are dropped.
func (d *Device) Close() error { return d.f.Close() }

// FD is the device's descriptor: pollable (readable) when a kick is pending
// for the DP thread registered through this Device.
func (d *Device) FD() int { return int(d.fd) }

func (d *Device) ioctl(op string, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, d.fd, req, uintptr(arg))
	runtime.KeepAlive(d.f)
	if e != 0 {
		return fmt.Errorf("kmod: %s: %w", op, e)
	}
	return nil
}

// Info asks the module what it supports.
func (d *Device) Info() (Info, error) {
	var r uapi.Info
	if err := d.ioctl("info", uapi.IocInfo, unsafe.Pointer(&r)); err != nil {
		return Info{}, err
	}
	return Info{
		ABIVersion: int(r.AbiVersion), NrCPUs: int(r.NrCPUs), RingLen: int(r.RingLen), Flags: r.Flags,
		Kfunc: r.Flags&uapi.InfoKfunc != 0, TestHold: r.Flags&uapi.InfoTestHold != 0,
		LatSwitch: r.Flags&uapi.InfoLatSwitch != 0, ExitHook: r.Flags&uapi.InfoExitHook != 0,
	}, nil
}

// Register makes the calling OS thread the DP thread of the one CPU it is
// allowed on and returns that CPU. The goroutine must be locked to its
// thread (runtime.LockOSThread) and the thread pinned to a single CPU
// (unix.SchedSetaffinity); otherwise the module answers EINVAL. EBUSY: the
// CPU has another DP thread, or this thread is registered on another CPU.
func (d *Device) Register() (int, error) {
	var r uapi.Register
	if err := d.ioctl("register", uapi.IocRegister, unsafe.Pointer(&r)); err != nil {
		return -1, err
	}
	return int(r.CPU), nil
}

// Unregister drops the calling thread's registration (ENOENT if none).
func (d *Device) Unregister() error {
	return d.ioctl("unregister", uapi.IocUnregister, nil)
}

// Wait puts the calling registered DP thread to sleep until its CPU is
// kicked or timeout (1ns..10s) passes. A kick that arrived while the thread
// was running is not lost: Wait returns at once.
func (d *Device) Wait(timeout time.Duration) (Wake, error) {
	if timeout <= 0 || timeout > MaxWait {
		return Wake{}, fmt.Errorf("kmod: wait: timeout %v outside (0, %v]", timeout, MaxWait)
	}
	deadline := time.Now().Add(timeout)
	for {
		r := uapi.Wait{TimeoutNs: uint64(timeout)}
		err := d.ioctl("wait", uapi.IocWait, unsafe.Pointer(&r))
		if errors.Is(err, unix.EINTR) {
			// A signal (Go's preemption uses them) cut the sleep short.
			if timeout = time.Until(deadline); timeout <= 0 {
				return Wake{}, nil
			}
			continue
		}
		if err != nil {
			return Wake{}, err
		}
		return Wake{Kicked: r.Result == uapi.WaitKicked, KickNs: int64(r.KickNs)}, nil
	}
}

// Poll consumes a pending kick of the calling registered DP thread without
// sleeping (for loops that wait on FD with their sockets).
func (d *Device) Poll() (Wake, error) {
	r := uapi.Wait{Flags: uapi.WaitNonblock}
	if err := d.ioctl("poll", uapi.IocWait, unsafe.Pointer(&r)); err != nil {
		return Wake{}, err
	}
	return Wake{Kicked: r.Result == uapi.WaitKicked, KickNs: int64(r.KickNs)}, nil
}

// Kick wakes the DP thread of each CPU given and returns how many of them
// had one registered.
func (d *Device) Kick(cpus ...int) (int, error) {
	if len(cpus) == 0 {
		return 0, errors.New("kmod: kick: no CPU given")
	}
	var r uapi.Kick
	for _, c := range cpus {
		if c < 0 || c >= MaxCPUs {
			return 0, fmt.Errorf("kmod: kick: cpu %d outside [0, %d)", c, MaxCPUs)
		}
		r.CPUs[c/64] |= 1 << (c % 64)
	}
	if err := d.ioctl("kick", uapi.IocKick, unsafe.Pointer(&r)); err != nil {
		return 0, err
	}
	return int(r.Woken), nil
}

// Stats returns the counters of cpu, or their sum for AllCPUs.
func (d *Device) Stats(cpu int) (Stats, error) {
	r := uapi.Stats{CPU: uapi.AllCPUs}
	if cpu != AllCPUs {
		if cpu < 0 {
			return Stats{}, fmt.Errorf("kmod: stats: cpu %d is negative", cpu)
		}
		r.CPU = uint32(cpu)
	}
	if err := d.ioctl("stats", uapi.IocStats, unsafe.Pointer(&r)); err != nil {
		return Stats{}, err
	}
	return Stats{
		CPU: cpu, DPTid: int(r.DPTid), Kicks: r.Kicks, KicksNoDP: r.KicksNoDP, Wakes: r.Wakes,
		Timeouts: r.Timeouts, IPIs: r.IPIs, IPIsBusy: r.IPIsBusy, Blockers: r.Blockers,
		BlockersDropped: r.BlockersDropped, InfoFlags: r.InfoFlags,
		Latency: Histogram{Count: r.LatCount, SumNs: r.LatSumNs, MaxNs: r.LatMaxNs, Buckets: r.Hist},
	}, nil
}

// Blockers returns the blocker records held for cpu (or AllCPUs), oldest
// first per CPU; consume removes the returned ones from the kernel's rings.
func (d *Device) Blockers(cpu int, consume bool) ([]Blocker, error) {
	hdr := uapi.Blockers{CPU: uapi.AllCPUs}
	if cpu != AllCPUs {
		if cpu < 0 {
			return nil, fmt.Errorf("kmod: blockers: cpu %d is negative", cpu)
		}
		hdr.CPU = uint32(cpu)
	}
	if err := d.ioctl("blockers", uapi.IocBlockers, unsafe.Pointer(&hdr)); err != nil {
		return nil, err
	}
	if hdr.Count == 0 {
		return nil, nil
	}
	// More may arrive between the two calls; the kernel copies at most max.
	n := min(hdr.Count+16, uapi.MaxRecords)
	buf := make([]uapi.Blocker, n)
	hdr.Records = uint64(uintptr(unsafe.Pointer(&buf[0])))
	hdr.Max = n
	if consume {
		hdr.Flags = uapi.BlockersConsume
	}
	err := d.ioctl("blockers", uapi.IocBlockers, unsafe.Pointer(&hdr))
	runtime.KeepAlive(buf)
	if err != nil {
		return nil, err
	}
	out := make([]Blocker, hdr.Count)
	for i := range out {
		r := &buf[i]
		out[i] = Blocker{
			Seq: r.Seq, TimeNs: int64(r.TimeNs), KickNs: int64(r.KickNs), WaitNs: int64(r.WaitNs),
			Waited: r.Flags&uapi.BlockerWaited != 0, Pid: int(r.Pid), Tgid: int(r.Tgid), CPU: int(r.CPU),
			PreemptCount: r.PreemptCount, Flags: r.Flags, Comm: cString(r.Comm[:]), Symbol: cString(r.Symbol[:]),
		}
		for _, c := range r.Callers {
			if s := cString(c[:]); s != "" {
				out[i].Callers = append(out[i].Callers, s)
			}
		}
	}
	return out, nil
}

// TestHold spins in the kernel with a spinlock held and preemption off for
// dur (1µs..10ms), on the calling thread's CPU: a stand-in for a CP driver
// call that programs an accelerator synchronously. Only when the module was
// loaded with test_hold=1 (EPERM otherwise).
func (d *Device) TestHold(dur time.Duration) error {
	us := dur.Microseconds()
	if us < 1 || dur > MaxTestHold {
		return fmt.Errorf("kmod: test hold: duration %v outside [1µs, %v]", dur, MaxTestHold)
	}
	r := uapi.Hold{Usec: uint32(us)}
	return d.ioctl("test hold", uapi.IocTestHold, unsafe.Pointer(&r))
}

func cString(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return s
}

// BucketBounds returns the latency range [lo, hi) histogram bucket i counts;
// hi is 0 for the last, open-ended bucket.
func BucketBounds(i int) (lo, hi time.Duration) {
	switch {
	case i <= 0:
		return 0, 1 << uapi.HistShift
	case i >= HistBuckets-1:
		return 1 << (HistBuckets - 2 + uapi.HistShift), 0
	}
	return 1 << (i - 1 + uapi.HistShift), 1 << (i + uapi.HistShift)
}

// Mean is the average kick->run latency.
func (h Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return time.Duration(h.SumNs / h.Count)
}

// Quantile returns the upper bound of the bucket holding the nearest-rank
// quantile q (0..1), capped at the observed maximum.
func (h Histogram) Quantile(q float64) time.Duration {
	i, ok := stats.QuantileBucket(h.Buckets[:], h.Count, q)
	if !ok {
		return time.Duration(h.MaxNs)
	}
	if _, hi := BucketBounds(i); hi != 0 && uint64(hi) <= h.MaxNs {
		return hi
	}
	return time.Duration(h.MaxNs)
}
