package blocker

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestTracerNamesKernelStorm: a FIFO DP thread on the DP core wakes every
// 200 µs while a process pinned there runs a dentry storm; the tracer must
// blame that process, caught in the kernel.
func TestTracerNamesKernelStorm(t *testing.T) {
	tr := requireTracer(t, Options{Threshold: 50 * time.Microsecond})
	t.Logf("load+attach: %v", tr.LoadTime())
	if rs, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer rs.Close()
		defer func() {
			if ps, err := tr.SwitchProgram().Stats(); err == nil && ps.RunCount > 0 {
				t.Logf("sched_switch program: %d runs, %v a run", ps.RunCount, ps.Runtime/time.Duration(ps.RunCount))
			}
		}()
	}
	dp := startDPThread(t, dpCore, 200*time.Microsecond)
	if err := tr.SetDPThreads([]int{dp.tid}); err != nil {
		t.Fatal(err)
	}
	s := startStorm(t, dpCore)

	events := make(chan Event, 1024)
	go func() {
		for {
			ev, err := tr.Read()
			if errors.Is(err, ErrClosed) {
				close(events)
				return
			}
			if err != nil {
				t.Errorf("read: %v", err)
				continue
			}
			events <- ev
		}
	}()
	const want = 20
	deadline := time.After(20 * time.Second)
	blamed, inKernel, others, flags := 0, 0, map[string]int{}, map[uint32]int{}
	var worst time.Duration
wait:
	for inKernel < want {
		select {
		case ev := <-events:
			if ev.Kind != KindBlame || ev.DPTID != dp.tid {
				continue
			}
			if ev.TGID != s.pid {
				others[ev.Comm]++
				continue
			}
			blamed++
			flags[ev.Flags]++
			if ev.InKernel() {
				inKernel++
			}
			worst = max(worst, ev.Delay)
		case <-deadline:
			break wait
		}
	}
	st, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	late := dp.takeLateness()
	t.Logf("storm pid %d blamed %d times (%d in kernel), worst %v, by flags %v; others %v", s.pid, blamed, inKernel, worst, flags, others)
	t.Logf("stats: wakes %d runs %d reported %d lost %d unstamped %d; tracer p50 <%v p99 <%v; thread's own lateness p50 %v p99 %v over %d wakes",
		st.Wakes, st.Runs, st.Reported, st.Lost, st.Unstamped, st.Quantile(0.5), st.Quantile(0.99),
		percentile(late, 0.5), percentile(late, 0.99), len(late))
	if inKernel < want {
		t.Fatalf("storm pid %d blamed in kernel %d times, want >= %d", s.pid, inKernel, want)
	}
	if st.Runs == 0 || st.Wakes == 0 || st.DelaySum <= 0 {
		t.Fatalf("stats: %d wakes, %d runs, delays summing to %v: want all counted", st.Wakes, st.Runs, st.DelaySum)
	}
}
