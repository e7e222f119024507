package scheduler

import (
	"testing"
	"time"
)

// TestStepperIsTheEngine: the stepper lends under dynamic on a yield and
// counts the rx reclaim on the wake, and never lends under static; its
// argument checks are New's.
func TestStepperIsTheEngine(t *testing.T) {
	k := &recorder{}
	p := DefaultParams()
	p.Policy = PolicyDynamic
	s, err := NewStepper([]int{3}, k, p, t0)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle(Event{Kind: EvYield, CPU: 3, At: at(ms(1))})
	s.Handle(Event{Kind: EvWake, CPU: 3, At: at(ms(3)), Wake: WakeRx, Latency: us(20)})
	c := s.Snapshot().Cores[0]
	if c.LentTotal != ms(2) || c.Reclaims[CauseRx.String()] != 1 || c.State != DPActive {
		t.Fatalf("dynamic: lent %v, reclaims %v, state %v; want 2ms, rx=1, DP_ACTIVE", c.LentTotal, c.Reclaims, c.State)
	}
	p.Policy = PolicyStatic
	st, _ := NewStepper([]int{3}, &recorder{}, p, t0)
	st.Handle(Event{Kind: EvYield, CPU: 3, At: at(ms(1))})
	st.Advance(at(time.Second))
	if c := st.Snapshot().Cores[0]; c.LentTotal != 0 || c.Lends != 0 {
		t.Fatalf("static lent %v in %d lends", c.LentTotal, c.Lends)
	}
	if _, err := NewStepper([]int{1, 1}, k, p, t0); err == nil {
		t.Fatal("a core listed twice accepted")
	}
}
