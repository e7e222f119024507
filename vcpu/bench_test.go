package vcpu

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkLendReclaim measures the cpuset write behind Lend and Reclaim
// with a SCHED_FIFO writer and with a SCHED_OTHER one, side by side, while
// two adopted CP hogs keep both cores busy (so that a reclaim has running
// tasks to evict). "write" is the cgroup file write on the writer thread;
// "call" adds the hand-off to that thread as a Lend/Reclaim caller sees it.
//
//	go test -run '^$' -bench LendReclaim -benchtime 300x ./vcpu/
func BenchmarkLendReclaim(b *testing.B) {
	for _, w := range []struct {
		name     string
		priority int
	}{{"fifo", DefaultWriterPriority}, {"other", -1}} {
		b.Run(w.name, func(b *testing.B) {
			requireCgroups(b)
			p := startPool(b, Options{Name: fmt.Sprintf("%s-%s", uniqueName(b), w.name), WriterPriority: w.priority})
			hogs := adoptHogs(b, p, 2)
			var lendW, lendC, reclW, reclC []time.Duration
			evicted := 0
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := p.Lend(dpCore); err != nil {
					b.Fatal(err)
				}
				lendC = append(lendC, time.Since(t0))
				lendW = append(lendW, p.lastWriteDuration())
				// Give the load balancer up to 20 ms to put a hog on the
				// lent core, so that most reclaims must evict one.
				onDP := func(pid int) bool { return lastCPU(b, pid) == dpCore }
				for deadline := time.Now().Add(20 * time.Millisecond); time.Now().Before(deadline); {
					if slices.ContainsFunc(hogs, onDP) {
						break
					}
					time.Sleep(500 * time.Microsecond)
				}
				if slices.ContainsFunc(hogs, onDP) {
					evicted++
				}
				t0 = time.Now()
				if err := p.Reclaim(dpCore); err != nil {
					b.Fatal(err)
				}
				reclC = append(reclC, time.Since(t0))
				reclW = append(reclW, p.lastWriteDuration())
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			report := func(name string, d []time.Duration) {
				b.ReportMetric(percentileUS(d, 50), name+"_p50_us")
				b.ReportMetric(percentileUS(d, 99), name+"_p99_us")
			}
			report("lend_write", lendW)
			report("reclaim_write", reclW)
			report("reclaim_call", reclC)
			report("lend_call", lendC)
			// Share of reclaims that had a hog to move off the DP core.
			b.ReportMetric(float64(evicted)/float64(b.N), "evicting_frac")
			b.ReportMetric(0, "ns/op") // includes the sleeps: meaningless
		})
	}
}

func percentileUS(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return float64(s[i].Nanoseconds()) / 1e3
}
