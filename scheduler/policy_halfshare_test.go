package scheduler

import (
	"strings"
	"testing"
	"time"
)

// halfshare is a toy fourth policy, here to prove that a policy plugs in
// through the registry alone: a core may be lent in the first half of every
// period and is held in DP in the second; the loop yields after two empty
// polls with a fixed 1ms slice.
const policyHalfshare PolicyName = "halfshare"

const halfsharePeriod = 10 * time.Millisecond

type halfsharePolicy struct{}

func (halfsharePolicy) Name() PolicyName       { return policyHalfshare }
func (halfsharePolicy) UsesProbe() bool        { return false }
func (halfsharePolicy) ConfinesBlockers() bool { return false }
func (halfsharePolicy) LendsDPDK() bool        { return false }
func (halfsharePolicy) newCore(CoreEnv) CorePolicy {
	return &halfshareCore{fixedCore: fixedCore{halfshareOpen}, switchAt: t0.Add(halfsharePeriod / 2)}
}

var halfshareOpen = Plan{InCPUSet: true, YieldAfter: 2, Slice: time.Millisecond}

// halfshareCore switches between open and held at switchAt; returns
// counts the lent periods the engine reported, by cause.
type halfshareCore struct {
	fixedCore
	switchAt time.Time
	returns  map[Cause]int
}

func (h *halfshareCore) Deadline() (time.Time, bool) { return h.switchAt, true }

func (h *halfshareCore) Expire(now time.Time) {
	for !now.Before(h.switchAt) {
		if h.plan.InCPUSet {
			h.plan = heldPlan(time.Millisecond, HoldPolicy)
		} else {
			h.plan = halfshareOpen
		}
		h.switchAt = h.switchAt.Add(halfsharePeriod / 2)
	}
}

func (h *halfshareCore) Returned(why Cause, _ time.Duration) {
	if h.returns == nil {
		h.returns = map[Cause]int{}
	}
	h.returns[why]++
}

// registerForTest adds p to the registry for the length of the test.
func registerForTest(t *testing.T, rank int, p Policy) {
	t.Helper()
	registerPolicy(rank, p)
	t.Cleanup(func() { unregisterPolicy(p.Name()) })
}

func TestToyPolicyPlugsInThroughTheRegistry(t *testing.T) {
	registerForTest(t, 3, halfsharePolicy{})
	if got := PolicyNames(); len(got) != 4 || got[3] != policyHalfshare {
		t.Fatalf("registered policies %v, want halfshare last", got)
	}
	h := newHarness(t, policyHalfshare, nil) // Params.Validate accepts it
	eq(t, "start", h.act.take(), []string{"lend 1", "yield 1 2 1ms"})

	// Open half: an idle gap is lent and the packet takes the core back.
	h.idle(1, ms(1))
	h.yield(1, ms(1))
	h.wake(1, ms(2), WakeRx, us(5))
	// Lent again when the half ends: DP first (no yield, wake), then the
	// cpuset, at the policy's own deadline.
	h.yield(1, ms(4))
	h.advance(ms(5) - 1)
	eq(t, "open half", h.act.take(), nil)
	h.advance(ms(5))
	eq(t, "held half", h.act.take(), []string{"reclaim 1", "yield 1 -1 1ms", "wake 1"})
	if s := h.snap(1, ms(5)); s.Hold != HoldPolicy || s.InCPUSet || s.State != Reclaiming || s.Reclaims["policy"] != 1 {
		t.Fatalf("held half: hold %q in cpuset %v state %v reclaims %v", s.Hold, s.InCPUSet, s.State, s.Reclaims)
	}
	h.wake(1, ms(6), WakeProbe, us(5))
	// Held: a yield blocks the loop but lends nothing; a probe is ignored.
	h.idle(1, ms(7))
	h.yield(1, ms(7))
	h.probe(1, ms(8))
	eq(t, "held", h.act.take(), nil)
	// The next open half lends again.
	h.advance(ms(10))
	eq(t, "open again", h.act.take(), []string{"lend 1", "yield 1 2 1ms"})
	eq(t, "states", h.takeSeq(), []string{
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE", "1 IDLE->LENT", "1 LENT->RECLAIMING", "1 RECLAIMING->DP_ACTIVE",
		"1 DP_ACTIVE->IDLE",
	})
	hc := h.core(1).pol.(*halfshareCore)
	if hc.returns[CauseRx] != 1 || hc.returns[CausePolicy] != 1 || len(hc.returns) != 2 {
		t.Errorf("returns reported to the policy %v, want one rx and one policy", hc.returns)
	}

	// A switch away and back starts the policy afresh, from its own state.
	h.e.setPolicy(staticPolicy{}, at(ms(11)))
	pol, err := LookupPolicy(policyHalfshare)
	if err != nil {
		t.Fatal(err)
	}
	h.e.setPolicy(pol, at(ms(12)))
	if h.core(1).pol == CorePolicy(hc) {
		t.Error("switching back reused the old per-core state")
	}
}

func TestToyPolicyLeavesTheRegistry(t *testing.T) {
	t.Run("registered", func(t *testing.T) {
		registerForTest(t, 3, halfsharePolicy{})
		if err := policyHalfshare.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	err := policyHalfshare.Validate()
	if err == nil || !strings.Contains(err.Error(), "want one of static, dynamic, taichi") {
		t.Fatalf("after cleanup: %v", err)
	}
}

func TestPolicyNames(t *testing.T) {
	if got := PolicyNameStrings(); strings.Join(got, ",") != "static,dynamic,taichi" {
		t.Fatalf("policies %v, want static first (the reference), then dynamic, taichi", got)
	}
	for _, bad := range []string{"", "Taichi", "fast"} {
		if _, err := ParsePolicyName(bad); err == nil || !strings.Contains(err.Error(), "static, dynamic, taichi") {
			t.Errorf("ParsePolicyName(%q): %v, want an error naming the valid values", bad, err)
		}
	}
	for _, c := range []struct {
		name                    PolicyName
		probe, confine, lendsDP bool
	}{{PolicyStatic, false, false, false}, {PolicyDynamic, false, false, true}, {PolicyTaichi, true, true, true}} {
		pol, err := LookupPolicy(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if pol.Name() != c.name || pol.UsesProbe() != c.probe || pol.ConfinesBlockers() != c.confine || pol.LendsDPDK() != c.lendsDP {
			t.Errorf("%s: probe %v confine %v dpdk %v", c.name, pol.UsesProbe(), pol.ConfinesBlockers(), pol.LendsDPDK())
		}
	}
}

func TestRegisteringANameTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a second taichi policy was accepted")
		}
	}()
	registerPolicy(9, taichiPolicy{})
}
