package scheduler

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

func TestStateAndHoldJSONRoundTrip(t *testing.T) {
	for s := DPActive; s < numStates; s++ {
		b, _ := json.Marshal(s)
		var back State
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("state %v: %s -> %v, %v", s, b, back, err)
		}
	}
	for h := HoldNone; h < numHolds; h++ {
		b, _ := json.Marshal(h)
		var back Hold
		if err := json.Unmarshal(b, &back); err != nil || back != h {
			t.Errorf("hold %v: %s -> %v, %v", h, b, back, err)
		}
	}
	var s State
	if err := json.Unmarshal([]byte(`"NAPPING"`), &s); err == nil {
		t.Error("unknown state accepted")
	}
}

func TestProbeDownHoldsCoreUnderEveryPolicy(t *testing.T) {
	for _, pol := range []PolicyName{PolicyDynamic, PolicyTaichi} {
		act := &recordingActuator{}
		p := DefaultParams()
		p.Policy = pol
		s, err := New([]int{3}, act, p, WithClock(NewFakeClock(time.Unix(0, 0))))
		if err != nil {
			t.Fatal(err)
		}
		if !s.ProbeDown(3, time.Time{}, true) {
			t.Fatal("ProbeDown before Run refused")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		for s.Sync(ctx) != nil {
			time.Sleep(time.Millisecond)
		}
		c := s.Snapshot().Cores[0]
		if c.InCPUSet || c.Hold != HoldProbe || act.lends() != 0 {
			t.Errorf("%s with a failed probe: in cpuset %v hold %v lends %d", pol, c.InCPUSet, c.Hold, act.lends())
		}
		s.ProbeDown(3, time.Time{}, false)
		s.Sync(ctx)
		if c := s.Snapshot().Cores[0]; !c.InCPUSet || c.Hold == HoldProbe {
			t.Errorf("%s after the probe recovered: in cpuset %v hold %v", pol, c.InCPUSet, c.Hold)
		}
		cancel()
		<-done
	}
}

// recordingActuator counts Lend calls; everything succeeds.
type recordingActuator struct {
	mu sync.Mutex
	n  int
}

func (a *recordingActuator) Lend(int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	return nil
}
func (a *recordingActuator) Reclaim(int) error                  { return nil }
func (a *recordingActuator) SetYield(int, int64, time.Duration) {}
func (a *recordingActuator) Wake(int)                           {}
func (a *recordingActuator) lends() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}
