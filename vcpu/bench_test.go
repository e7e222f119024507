package vcpu

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkLendReclaim measures the cpuset write behind Lend and Reclaim
// with a SCHED_FIFO writer and a SCHED_OTHER writer side by side: two pools,
// each with two adopted CP hogs, take turns every iteration so that both see
// the same machine noise. After each Lend the benchmark waits (up to 20 ms)
// for the load balancer to put a hog on the lent core, so that the Reclaim
// has a running task to evict; reclaim figures cover those evicting
// reclaims only, which is the case a DP core waits on.
//
// "write" is the cgroup file write on the writer thread; "call" is what a
// Lend/Reclaim caller sees, including the hand-off to that thread.
//
//	go test -run '^$' -bench LendReclaim -benchtime 300x ./vcpu/
func BenchmarkLendReclaim(b *testing.B) {
	requireCgroups(b)
	type side struct {
		name                       string
		pool                       *cgroupPool
		hogs                       []int
		lendW, lendC, reclW, reclC []time.Duration
		evicting                   int
	}
	sides := []*side{{name: "fifo"}, {name: "other"}}
	for _, s := range sides {
		prio := DefaultWriterPriority
		if s.name == "other" {
			prio = -1
		}
		name := fmt.Sprintf("%s-%s", uniqueName(b), s.name)
		s.pool = startPool(b, Options{Name: name, WriterPriority: prio})
		s.hogs = adoptHogsNamed(b, s.pool, 2, name+"-hog")
	}
	b.ResetTimer()
	for range b.N {
		for _, s := range sides {
			t0 := time.Now()
			if err := s.pool.Lend(dpCore); err != nil {
				b.Fatal(err)
			}
			s.lendC = append(s.lendC, time.Since(t0))
			s.lendW = append(s.lendW, s.pool.lastWriteDuration())
			onDP := func(pid int) bool { return lastCPU(b, pid) == dpCore }
			for deadline := time.Now().Add(20 * time.Millisecond); time.Now().Before(deadline); {
				if slices.ContainsFunc(s.hogs, onDP) {
					break
				}
				time.Sleep(500 * time.Microsecond)
			}
			evicting := slices.ContainsFunc(s.hogs, onDP)
			t0 = time.Now()
			if err := s.pool.Reclaim(dpCore); err != nil {
				b.Fatal(err)
			}
			if evicting {
				s.evicting++
				s.reclC = append(s.reclC, time.Since(t0))
				s.reclW = append(s.reclW, s.pool.lastWriteDuration())
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	for _, s := range sides {
		report := func(what string, d []time.Duration) {
			b.ReportMetric(percentileUS(d, 50), s.name+"_"+what+"_p50_us")
			b.ReportMetric(percentileUS(d, 99), s.name+"_"+what+"_p99_us")
		}
		report("lend_write", s.lendW)
		report("lend_call", s.lendC)
		report("reclaim_write", s.reclW)
		report("reclaim_call", s.reclC)
		b.ReportMetric(float64(s.evicting)/float64(b.N), s.name+"_evicting_frac")
	}
	fifo, other := sides[0], sides[1]
	if p := percentileUS(fifo.reclW, 99); p > 0 {
		b.ReportMetric(percentileUS(other.reclW, 99)/p, "other/fifo_reclaim_write_p99")
	}
	b.ReportMetric(0, "ns/op") // includes the waits: meaningless
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
