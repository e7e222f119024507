package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// SelfCPU is the daemon's own cost: its CPU time (utime+stime, every thread)
// and that time's rate over the last selfCPUWindow, as a share of one core.
type SelfCPU struct {
	Seconds float64 `json:"cpu_s"`
	Share   float64 `json:"cpu_share"` // 0.01 = 1% of one core
	Window  string  `json:"window"`
}

const (
	selfCPUEvery  = time.Second
	selfCPUWindow = 10 * time.Second
)

type cpuSample struct {
	at  time.Time
	cpu float64
}

// selfCPU samples /proc/self/stat every selfCPUEvery and keeps a window.
type selfCPU struct {
	mu      sync.Mutex
	samples []cpuSample
}

func readSelfCPU() (float64, error) {
	p, err := procfs.Self()
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.CPUTime(), nil
}

func (s *selfCPU) sample(now time.Time) {
	cpu, err := readSelfCPU()
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, cpuSample{now, cpu})
	for len(s.samples) > 2 && now.Sub(s.samples[1].at) >= selfCPUWindow {
		s.samples = s.samples[1:]
	}
}

func (s *selfCPU) run(ctx context.Context) {
	t := time.NewTicker(selfCPUEvery)
	defer t.Stop()
	s.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

// status is the latest total and the rate over the window (0 until two
// samples exist).
func (s *selfCPU) status() SelfCPU {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out SelfCPU
	if n := len(s.samples); n > 0 {
		last := s.samples[n-1]
		out.Seconds = last.cpu
		if first := s.samples[0]; n > 1 && last.at.After(first.at) {
			span := last.at.Sub(first.at)
			out.Share = (last.cpu - first.cpu) / span.Seconds()
			out.Window = span.Round(time.Second).String()
		}
	}
	return out
}
