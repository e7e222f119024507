package eval

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// soakSample is what the soak's sampler reads at one instant: cumulative
// counters (differences between two samples make a window) and the guard's
// state now.
type soakSample struct {
	At time.Time
	// Residence is the DP loops' RX residence histogram (merged);
	// HaveResidence says the loops report one.
	Residence     dataplane.Histogram
	HaveResidence bool
	// LentS: DP-core seconds lent to CP, summed over DP cores;
	// HarvestedS: CP CPU seconds on DP cores (negative: unknown).
	LentS, HarvestedS float64
	// GuardTrips sums the DP cores' SLO guard trips; Benched: some DP core
	// is benched now; Verdict: the SLO rule's last judgement per DP core.
	GuardTrips uint64
	Benched    bool
	Verdict    string
	// Hold: why each DP core is not lending now ("" where it may);
	// Confined: CP tasks blocker-aware lending keeps off DP cores now.
	Hold     string
	Confined int
	// SelfCPUS is the CPU time of the process the daemon runs in (see
	// daemon.SelfCPU).
	SelfCPUS float64
	// LoopTIDs are DP loop threads living in this process (tests run loops
	// in-process): they belong on DP cores, so the thread check skips them.
	LoopTIDs []int
}

// sampleDaemon reads a soakSample from the daemon's status.
func sampleDaemon(d *daemon.Daemon) soakSample {
	st := d.Status()
	s := soakSample{At: time.Now(), HarvestedS: st.Pool.HarvestedCPSeconds, SelfCPUS: st.Daemon.Seconds}
	var verdicts, holds []string
	for _, c := range st.Cores {
		if c.Role != "dp" {
			continue
		}
		s.LentS += c.LentSeconds
		s.GuardTrips += c.GuardTrips
		verdicts, holds = append(verdicts, c.Verdict), append(holds, c.Hold)
	}
	s.Verdict, s.Hold = strings.Join(verdicts, "/"), strings.Join(holds, "/")
	if st.Blockers != nil {
		s.Confined = st.Blockers.Confined
	}
	for _, c := range st.Scheduler.Cores {
		s.Benched = s.Benched || c.Benched
	}
	for _, l := range st.Loops {
		s.HaveResidence = true
		s.Residence.Add(l.Stats.Residence)
		if l.InProcess && l.TID > 0 {
			s.LoopTIDs = append(s.LoopTIDs, l.TID)
		}
	}
	return s
}

// SoakWindow is one sampling window of a soak cell.
type SoakWindow struct {
	// EndS is the window's end in seconds since the cell's traffic began.
	EndS float64 `json:"end_s"`
	// Packets the DP loops picked up in the window; ResidenceP99US and
	// ResidenceMaxUS their RX residence (null without packets).
	Packets        uint64   `json:"packets"`
	ResidenceP99US *float64 `json:"residence_p99_us"`
	ResidenceMaxUS *float64 `json:"residence_max_us"`
	// LateShare: packets whose residence was above the SLO over the
	// window's packets, counting the histogram bucket that holds the SLO
	// as late (an upper bound, within one bucket: 12.5%); null without
	// packets.
	LateShare *float64 `json:"late_share"`
	// LentShare: the DP cores' lent time over the window's (per DP core).
	LentShare float64 `json:"lent_share"`
	// HarvestedCPS: CP CPU seconds that ran on DP cores in the window
	// (null where the kernel reports no per-CPU usage).
	HarvestedCPS *float64 `json:"harvested_cp_s"`
	// GuardTrips in the window; Benched: a DP core was benched at the
	// window's end or tripped in it; Verdict: the SLO rule's judgement at
	// its end.
	GuardTrips uint64 `json:"guard_trips,omitempty"`
	Benched    bool   `json:"benched,omitempty"`
	Verdict    string `json:"verdict,omitempty"`
	// Hold and Confined as at the window's end (see soakSample).
	Hold     string `json:"hold,omitempty"`
	Confined int    `json:"confined,omitempty"`
	// ProcessCPUS: CPU seconds the eval process (the daemon and the
	// eval's own threads) used in the window.
	ProcessCPUS float64 `json:"process_cpu_s"`
	// ThreadsOnDP: threads of the eval process seen on a DP core, or
	// allowed there by their affinity, at the window's end.
	ThreadsOnDP []string `json:"threads_on_dp,omitempty"`
}

// soakWindowOf is the window between two samples; dpCores scales the lent
// share, slo is the bound late packets are counted against.
func soakWindowOf(prev, cur soakSample, start time.Time, dpCores int, slo time.Duration) SoakWindow {
	w := SoakWindow{EndS: cur.At.Sub(start).Seconds(), Verdict: cur.Verdict, Hold: cur.Hold, Confined: cur.Confined,
		ProcessCPUS: max(0, cur.SelfCPUS-prev.SelfCPUS)}
	if span := cur.At.Sub(prev.At).Seconds(); span > 0 && dpCores > 0 {
		w.LentShare = min(1, max(0, (cur.LentS-prev.LentS)/(span*float64(dpCores))))
	}
	if cur.HarvestedS >= 0 && prev.HarvestedS >= 0 {
		h := max(0, cur.HarvestedS-prev.HarvestedS)
		w.HarvestedCPS = &h
	}
	if cur.GuardTrips > prev.GuardTrips {
		w.GuardTrips = cur.GuardTrips - prev.GuardTrips
	}
	w.Benched = cur.Benched || w.GuardTrips > 0
	// A loop that restarted starts its histogram again: no window then.
	if cur.HaveResidence && prev.HaveResidence && cur.Residence.Count >= prev.Residence.Count {
		d := cur.Residence.Sub(prev.Residence)
		w.Packets = d.Count
		if d.Count > 0 {
			p99 := float64(d.Quantile(0.99)) / 1e3
			mx := float64(d.MaxNs) / 1e3
			late := float64(lateCount(d, slo)) / float64(d.Count)
			w.ResidenceP99US, w.ResidenceMaxUS, w.LateShare = &p99, &mx, &late
		}
	}
	return w
}

// lateCount is how many of h's samples were above slo, counting the
// bucket that straddles slo as late: never an undercount.
func lateCount(h dataplane.Histogram, slo time.Duration) uint64 {
	return h.Count - min(h.Count, h.AtMost(slo))
}

// soakSampler reads a sample every period from start until stopped,
// keeping at most limit windows: one goroutine, bounded memory.
type soakSampler struct {
	read    func() soakSample
	dpCores []int
	slo     time.Duration
	limit   int

	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	win  []SoakWindow
	// first and last are the samples around the whole series.
	first, last soakSample
	dropped     int
	threads     threadWatch
}

// startSoakSampler takes the first sample now and a window every period.
func startSoakSampler(read func() soakSample, dpCores []int, slo, period time.Duration, limit int) *soakSampler {
	s := &soakSampler{read: read, dpCores: dpCores, slo: slo, limit: limit,
		stop: make(chan struct{}), done: make(chan struct{}), win: make([]SoakWindow, 0, limit)}
	s.first = read()
	s.last = s.first
	s.threads.look(dpCores, s.first.LoopTIDs) // the baseline of each thread's CPU time
	go s.run(period)
	return s
}

func (s *soakSampler) run(period time.Duration) {
	defer close(s.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A tick that queued while a slow read ran would close a
			// window of a few ms: wait for the next one instead.
			if time.Since(s.last.At) >= period/2 {
				s.take()
			}
		}
	}
}

// take reads a sample and closes the window since the last one.
func (s *soakSampler) take() {
	cur := s.read()
	w := soakWindowOf(s.last, cur, s.first.At, len(s.dpCores), s.slo)
	w.ThreadsOnDP = s.threads.look(s.dpCores, cur.LoopTIDs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.win) < s.limit {
		s.win = append(s.win, w)
	} else {
		s.dropped++
	}
	s.last = cur
}

// soakTail is the shortest last window worth keeping when the sampler
// stops between ticks.
const soakTail = 200 * time.Millisecond

// finish stops the sampler, closes the last (partial) window, and returns
// the windows and the samples at either end of them.
func (s *soakSampler) finish() (windows []SoakWindow, first, last soakSample, dropped int) {
	close(s.stop)
	<-s.done
	if time.Since(s.last.At) >= soakTail {
		s.take()
	}
	return s.win, s.first, s.last, s.dropped
}

// threadWatch finds threads of this process on DP cores. A thread's last
// CPU stays what it was while the thread sleeps, even after its affinity
// moved it away: a thread counts as having run on a DP core only when it
// ran (its run time grew) since the previous look.
type threadWatch struct {
	ran map[int]time.Duration
}

// look names the threads that ran on one of cores since the previous look
// ("comm/tid ran on CPU n") or whose affinity allows one ("comm/tid
// allowed on [n] (affinity 0-1)"), skipping the tids in skip. Threads that
// end while being read are left out.
func (tw *threadWatch) look(cores []int, skip []int) []string {
	pid := os.Getpid()
	threads, err := linuxsched.Threads(pid)
	if err != nil {
		return []string{"unreadable: " + err.Error()}
	}
	var out []string
	ran := make(map[int]time.Duration, len(threads))
	for _, t := range threads {
		if slices.Contains(skip, t.TID) {
			continue
		}
		runTime, err := linuxsched.RunTime(pid, t.TID)
		if err != nil {
			continue // ended meanwhile
		}
		ran[t.TID] = runTime
		if before, seen := tw.ran[t.TID]; (!seen || runTime != before) && slices.Contains(cores, t.LastCPU) {
			out = append(out, fmt.Sprintf("%s/%d ran on CPU %d", t.Comm, t.TID, t.LastCPU))
		}
		var allowed []int
		for _, c := range t.Affinity {
			if slices.Contains(cores, c) {
				allowed = append(allowed, c)
			}
		}
		if len(allowed) > 0 {
			out = append(out, fmt.Sprintf("%s/%d allowed on %v (affinity %s)", t.Comm, t.TID, allowed, cpuset.Format(t.Affinity)))
		}
	}
	tw.ran = ran
	return out
}
