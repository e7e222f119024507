package blocker

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// BenchmarkOpen measures loading and attaching the five tracer programs.
func BenchmarkOpen(b *testing.B) {
	requireTracer(b, Options{}) // skips where the tracer cannot load
	for b.Loop() {
		tr, err := Open(Options{})
		if err != nil {
			b.Fatal(err)
		}
		_ = tr.Close()
	}
}

// BenchmarkSwitchProgram reports the sched_switch program's mean run time
// (kernel BPF run-time statistics) while a DP thread wakes every 200 µs on
// the DP core and a kernel storm runs there: the per-switch cost every
// context switch of the machine pays.
func BenchmarkSwitchProgram(b *testing.B) {
	tr := requireTracer(b, Options{})
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Skipf("BPF run-time statistics unavailable: %v", err)
	}
	defer stats.Close()
	dp := startDPThread(b, dpCore, 200*time.Microsecond)
	if err := tr.SetDPThreads([]int{dp.tid}); err != nil {
		b.Fatal(err)
	}
	startStorm(b, dpCore)
	go func() {
		for {
			if _, err := tr.Read(); errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	before, err := tr.SwitchProgram().Stats()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		time.Sleep(time.Millisecond)
	}
	after, err := tr.SwitchProgram().Stats()
	if err != nil {
		b.Fatal(err)
	}
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		b.Fatal("sched_switch program never ran")
	}
	b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "ns/switch")
	b.ReportMetric(float64(runs)/b.Elapsed().Seconds(), "switches/s")
}
