package blocker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/taichi-sched/taichi/internal/stats"
)

// Limits shared with blocker/bpf/tracer.c.
const (
	maxCPUs      = 256
	maxDPThreads = 256
	maxCommands  = 256
	histBuckets  = 64
)

// Stat slots of the per-CPU stats array (STAT_* in tracer.c).
const (
	statWakes = iota
	statRuns
	statReported
	statLost
	statExecs
	statUnstamped
	statDelaySum
)

var (
	_ [EventSize - unsafe.Sizeof(tracerEvent{})]struct{}
	_ [unsafe.Sizeof(tracerEvent{}) - EventSize]struct{}
)

// Errors callers can test for with errors.Is.
var (
	// ErrNotSupported: the kernel lacks what the tracer needs (BTF,
	// tp_btf programs, ring buffers, bpf_task_pt_regs).
	ErrNotSupported = errors.New("blocker: tracer not supported by this kernel")
	// ErrClosed: Read after (or during) Close.
	ErrClosed = errors.New("blocker: tracer closed")
)

// DefaultThreshold is the wake→run delay from which blame is reported.
const DefaultThreshold = 100 * time.Microsecond

// Options configure a Tracer.
type Options struct {
	// Threshold: report wake→run delays of at least this; default
	// DefaultThreshold. Every delay is counted in the histogram.
	Threshold time.Duration
}

// Tracer is the loaded and attached eBPF tracer. Methods are safe for
// concurrent use; Read is meant for one reader.
type Tracer struct {
	objs     tracerObjects
	links    []link.Link
	reader   *ringbuf.Reader
	loadTime time.Duration

	mu     sync.Mutex
	closed bool
}

// Open loads the tracer and attaches it. It watches no DP thread until
// SetDPThreads. A kernel without what it needs gives an error wrapping
// ErrNotSupported.
func Open(opts Options) (*Tracer, error) {
	if opts.Threshold < 0 {
		return nil, fmt.Errorf("blocker: threshold: %v is negative", opts.Threshold)
	}
	if opts.Threshold == 0 {
		opts.Threshold = DefaultThreshold
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("%w: no kernel BTF (/sys/kernel/btf/vmlinux): %v", ErrNotSupported, err)
	}
	start := time.Now()
	t := &Tracer{}
	if err := loadTracerObjects(&t.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("%w: %v", ErrNotSupported, err)
		}
		return nil, fmt.Errorf("blocker: load tracer: %w", err)
	}
	for _, p := range []*ebpf.Program{t.objs.OnWaking, t.objs.OnWakeup, t.objs.OnWakeupNew, t.objs.OnSwitch, t.objs.OnExec} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			t.release()
			if errors.Is(err, ebpf.ErrNotSupported) {
				return nil, fmt.Errorf("%w: attach %s: %v", ErrNotSupported, p, err)
			}
			return nil, fmt.Errorf("blocker: attach %s: %w", p, err)
		}
		t.links = append(t.links, l)
	}
	if err := t.setThreshold(opts.Threshold); err != nil {
		t.release()
		return nil, err
	}
	r, err := ringbuf.NewReader(t.objs.Events)
	if err != nil {
		t.release()
		return nil, fmt.Errorf("blocker: ring buffer reader: %w", err)
	}
	t.reader = r
	t.loadTime = time.Since(start)
	return t, nil
}

// LoadTime is how long Open took to load and attach the programs.
func (t *Tracer) LoadTime() time.Duration { return t.loadTime }

// SwitchProgram is the sched_switch program, for run-time statistics
// (ebpf.EnableStats, Program.Stats).
func (t *Tracer) SwitchProgram() *ebpf.Program { return t.objs.OnSwitch }

func (t *Tracer) release() {
	for _, l := range t.links {
		_ = l.Close()
	}
	t.links = nil
	if t.reader != nil {
		_ = t.reader.Close()
	}
	_ = t.objs.Close()
}

// Close detaches the tracer and ends a blocked Read with ErrClosed.
// Idempotent.
func (t *Tracer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.release()
	return nil
}

func (t *Tracer) usable() error {
	if t.closed {
		return ErrClosed
	}
	return nil
}

// SetDPThreads replaces the set of watched DP thread ids. Threads that stay
// keep their pending wake.
func (t *Tracer) SetDPThreads(tids []int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	want := map[uint32]bool{}
	for _, tid := range tids {
		if tid <= 0 || tid > maxPID {
			return fmt.Errorf("blocker: dp thread id %d out of range 1..%d", tid, maxPID)
		}
		want[uint32(tid)] = true
	}
	if len(want) > maxDPThreads {
		return fmt.Errorf("blocker: %d dp threads, at most %d", len(want), maxDPThreads)
	}
	var have []uint32
	var key uint32
	var val tracerDpThread
	it := t.objs.DpTids.Iterate()
	for it.Next(&key, &val) {
		have = append(have, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("blocker: list dp threads: %w", err)
	}
	for _, k := range have {
		if !want[k] {
			if err := t.objs.DpTids.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("blocker: unwatch dp thread %d: %w", k, err)
			}
		}
	}
	for k := range want {
		if slices.Contains(have, k) {
			continue
		}
		if err := t.objs.DpTids.Update(k, tracerDpThread{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("blocker: watch dp thread %d: %w", k, err)
		}
	}
	return nil
}

// SetThreshold changes the delay from which blame is reported.
func (t *Tracer) SetThreshold(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("blocker: threshold: %v is negative", d)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	return t.setThreshold(d)
}

func (t *Tracer) setThreshold(d time.Duration) error {
	if err := t.objs.Config.Update(uint32(0), tracerSettings{ThresholdNs: uint64(d)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("blocker: set threshold: %w", err)
	}
	return nil
}

// commKey is a command name as the kernel keeps it: at most 15 bytes and
// a NUL.
func commKey(comm string) ([commLen]byte, error) {
	var k [commLen]byte
	if comm == "" {
		return k, errors.New("blocker: empty command name")
	}
	if len(comm) >= commLen {
		comm = comm[:commLen-1] // the kernel truncates the same way
	}
	copy(k[:], comm)
	return k, nil
}

// SetCommands replaces the set of command names whose exec is reported
// (KindExec). Names longer than 15 bytes match their first 15, as the
// kernel's comm does.
func (t *Tracer) SetCommands(comms []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	want := map[[commLen]byte]bool{}
	for _, c := range comms {
		k, err := commKey(c)
		if err != nil {
			return err
		}
		want[k] = true
	}
	if len(want) > maxCommands {
		return fmt.Errorf("blocker: %d commands, at most %d", len(want), maxCommands)
	}
	var key [commLen]byte
	var val uint32
	var drop [][commLen]byte
	it := t.objs.WatchComms.Iterate()
	for it.Next(&key, &val) {
		if !want[key] {
			drop = append(drop, key)
		}
		delete(want, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("blocker: list commands: %w", err)
	}
	for _, k := range drop {
		if err := t.objs.WatchComms.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("blocker: unwatch command %q: %w", cString(k[:]), err)
		}
	}
	for k := range want {
		if err := t.objs.WatchComms.Update(k, uint32(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("blocker: watch command %q: %w", cString(k[:]), err)
		}
	}
	return nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Read blocks until the next record and decodes it. A garbled record gives
// a decode error and the next Read continues; after Close it returns
// ErrClosed.
func (t *Tracer) Read() (Event, error) {
	rec, err := t.reader.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return Event{}, ErrClosed
		}
		return Event{}, fmt.Errorf("blocker: read ring buffer: %w", err)
	}
	return DecodeEvent(rec.RawSample)
}

// Stats are the tracer's counters since Open, summed over CPUs.
type Stats struct {
	Wakes     uint64 // DP thread wakes stamped
	Runs      uint64 // wake→run delays measured
	Reported  uint64 // blame events written
	Lost      uint64 // events a full ring buffer dropped
	Execs     uint64 // exec events written
	Unstamped uint64 // wakes of a DP thread still on its CPU (no delay)
	// DelaySum is the sum of the measured wake→run delays.
	DelaySum time.Duration
	// Hist counts delays by log2 bucket: Hist[b] holds delays in
	// [2^b, 2^(b+1)) ns (Hist[0] also 0 ns).
	Hist [histBuckets]uint64
}

// Stats reads the counters and the delay histogram.
func (t *Tracer) Stats() (Stats, error) { return t.stats(sum) }

// StatsOn reads one CPU's share: the delays measured when a DP thread ran
// on cpu (the switch is counted where it happens), and the events written
// there.
func (t *Tracer) StatsOn(cpu int) (Stats, error) {
	if cpu < 0 || cpu >= maxCPUs {
		return Stats{}, fmt.Errorf("blocker: cpu %d out of range 0..%d", cpu, maxCPUs-1)
	}
	return t.stats(func(per []uint64) uint64 {
		if cpu < len(per) {
			return per[cpu]
		}
		return 0
	})
}

// stats reads every per-CPU counter and bucket through pick.
func (t *Tracer) stats(pick func(per []uint64) uint64) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return Stats{}, err
	}
	var s Stats
	var per []uint64
	var delaySum uint64
	slots := []*uint64{statWakes: &s.Wakes, statRuns: &s.Runs, statReported: &s.Reported, statLost: &s.Lost,
		statExecs: &s.Execs, statUnstamped: &s.Unstamped, statDelaySum: &delaySum}
	for i, dst := range slots {
		if err := t.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("blocker: read stat %d: %w", i, err)
		}
		*dst = pick(per)
	}
	s.DelaySum = time.Duration(delaySum)
	for b := range s.Hist {
		if err := t.objs.DelayHist.Lookup(uint32(b), &per); err != nil {
			return Stats{}, fmt.Errorf("blocker: read histogram bucket %d: %w", b, err)
		}
		s.Hist[b] = pick(per)
	}
	return s, nil
}

func sum(v []uint64) uint64 {
	var n uint64
	for _, x := range v {
		n += x
	}
	return n
}

// Sub is s minus an earlier snapshot: the counts of an interval.
func (s Stats) Sub(earlier Stats) Stats {
	d := Stats{
		Wakes: s.Wakes - earlier.Wakes, Runs: s.Runs - earlier.Runs,
		Reported: s.Reported - earlier.Reported, Lost: s.Lost - earlier.Lost,
		Execs: s.Execs - earlier.Execs, Unstamped: s.Unstamped - earlier.Unstamped,
		DelaySum: s.DelaySum - earlier.DelaySum,
	}
	for b := range s.Hist {
		d.Hist[b] = s.Hist[b] - earlier.Hist[b]
	}
	return d
}

// Quantile is the upper bound of the histogram bucket holding the
// nearest-rank quantile q (0..1) of the measured delays: an over-estimate
// by at most 2x. It is 0 when nothing was measured.
func (s Stats) Quantile(q float64) time.Duration {
	total := s.Measured()
	if total == 0 {
		return 0
	}
	if b, ok := stats.QuantileBucket(s.Hist[:], total, q); ok {
		return BucketUpper(b)
	}
	return BucketUpper(histBuckets - 1)
}

// Above counts the measured delays of at least d, by whole buckets (never
// one below d).
func (s Stats) Above(d time.Duration) uint64 {
	var n uint64
	for b := 1; b < histBuckets; b++ {
		if lower := uint64(1) << b; lower > math.MaxInt64 || time.Duration(lower) >= d {
			n += s.Hist[b]
		}
	}
	return n
}

// Measured is how many delays the histogram holds.
func (s Stats) Measured() uint64 { return sum(s.Hist[:]) }

// BucketUpper is the exclusive upper bound of histogram bucket b.
func BucketUpper(b int) time.Duration {
	if b >= 62 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(uint64(1) << (b + 1))
}
