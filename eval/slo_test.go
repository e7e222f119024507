package eval

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

func TestParseSLOs(t *testing.T) {
	got, err := ParseSLOs([]string{"50us", "250µs", "1ms", "default"})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{50 * time.Microsecond, 250 * time.Microsecond, time.Millisecond, SLODefault}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, c := range []struct {
		in   []string
		want string // in the error, after "slo: "
	}{
		{nil, "empty"},
		{[]string{"abc"}, `"abc": not a duration`},
		{[]string{"100"}, `"100": not a duration`},
		{[]string{"0us"}, `"0us": must be positive`},
		{[]string{"100us", "-5us"}, `"-5us": must be positive`},
		{[]string{"1ms", "1000us"}, `"1000us" listed twice`},
		{[]string{"default", "default"}, `"default" listed twice`},
	} {
		_, err := ParseSLOs(c.in)
		if err == nil || !strings.HasPrefix(err.Error(), "slo: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error naming slo and %q", c.in, err, c.want)
		}
	}
}

func TestSLOSweepNeedsTaichi(t *testing.T) {
	slos := []time.Duration{100 * time.Microsecond}
	for name, err := range map[string]error{
		"vm-startup": (&VMStartupConfig{VMs: []int{1}, Policies: []scheduler.PolicyName{"static", "dynamic"}, SLOs: slos}).Validate(),
		"dataplane":  (&DataplaneConfig{Policies: []scheduler.PolicyName{"static"}, Loads: []float64{0.3}, SLOs: slos}).Validate(),
		"ping":       (&PingConfig{Policies: []scheduler.PolicyName{"dynamic"}, SLOs: slos}).Validate(),
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "slo:") || !strings.Contains(err.Error(), "taichi") {
			t.Errorf("%s: a sweep without taichi: got %v", name, err)
		}
	}
	ok := VMStartupConfig{VMs: []int{1}, Policies: []scheduler.PolicyName{"static", "taichi"}, SLOs: slos}
	if err := ok.Validate(); err != nil {
		t.Errorf("a sweep with taichi: %v", err)
	}
	ok.SLOs = []time.Duration{time.Millisecond, time.Millisecond}
	if err := ok.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a value twice: got %v", err)
	}
}

// The sweep expands taichi in place, so every repeat runs the fixed
// policies and each SLO value side by side; without a sweep nothing
// changes.
func TestSLOArmsInterleave(t *testing.T) {
	pols := []scheduler.PolicyName{"static", "taichi", "dynamic"}
	names := func(arms []arm) string {
		var s []string
		for _, a := range arms {
			s = append(s, a.String())
		}
		return strings.Join(s, ",")
	}
	if got := names(armsOf(pols, nil)); got != "static,taichi,dynamic" {
		t.Errorf("no sweep: %s", got)
	}
	slos := []time.Duration{SLODefault, 100 * time.Microsecond, time.Millisecond}
	if got := names(armsOf(pols, slos)); got != "static,taichi,taichi@100µs,taichi@1ms,dynamic" {
		t.Errorf("sweep: %s", got)
	}
	if got := names(setupsWithReferenceNames(armsOf(pols, slos))); got != "static,static,taichi,taichi@100µs,taichi@1ms,dynamic" {
		t.Errorf("with the reference: %s", got)
	}
	cfg := VMStartupConfig{VMs: []int{1, 8, 4}, Policies: pols, SLOs: slos, SweepTopOnly: true, Repeat: 2}
	if got := names(cfg.armsAt(1)); got != "static,taichi,dynamic" {
		t.Errorf("top only, 1 VM: %s", got)
	}
	if got := names(cfg.armsAt(8)); got != "static,taichi,taichi@100µs,taichi@1ms,dynamic" {
		t.Errorf("top only, 8 VMs: %s", got)
	}
	if got := cfg.Runs(); got != 2*(3+5+3) {
		t.Errorf("runs %d, want %d", got, 2*(3+5+3))
	}
	cfg.SweepTopOnly = false
	if got := cfg.Runs(); got != 2*3*5 {
		t.Errorf("runs without top only %d, want %d", got, 2*3*5)
	}
}

func setupsWithReferenceNames(arms []arm) []arm {
	var out []arm
	for _, s := range setupsWithReference(arms) {
		out = append(out, s.arm)
	}
	return out
}

// A sweep value is set before the policy, recorded in the run, and put
// back after it; the daemon's own bound is recorded as it is; a bound the
// system refuses fails the run without applying its policy.
func TestSLOApplyArmSetsRecordsRestores(t *testing.T) {
	sys := &plainSystem{}
	ctx := context.Background()
	run := Run{Policy: "taichi"}
	restore, ok := applyArm(ctx, sys, &run, arm{policy: "taichi", slo: 100 * time.Microsecond})
	if !ok {
		t.Fatalf("apply: %s", run.Error)
	}
	if run.SLOUS != 100 || sys.SLO() != 100*time.Microsecond {
		t.Errorf("during the run: recorded %v µs, in force %v", run.SLOUS, sys.SLO())
	}
	restore()
	if sys.SLO() != 250*time.Microsecond {
		t.Errorf("after the run the bound is %v, want the 250µs it was", sys.SLO())
	}
	if got := strings.Join(sys.policies, ","); got != "slo=100µs,taichi,slo=250µs" {
		t.Errorf("calls %s: want the SLO set before taichi (its fresh start) and restored after", got)
	}

	// The default arm sets the bound in force again: taichi starts afresh
	// with it.
	sys.policies = nil
	run = Run{Policy: "taichi"}
	restore, ok = applyArm(ctx, sys, &run, arm{policy: "taichi"})
	if !ok || run.SLOUS != 250 {
		t.Errorf("default arm: ok %v, recorded %v µs, want the system's 250", ok, run.SLOUS)
	}
	restore()
	if got := strings.Join(sys.policies, ","); got != "slo=250µs,taichi,slo=250µs" {
		t.Errorf("default arm calls %s: want the bound in force set again before taichi", got)
	}
	run = Run{Policy: "static"}
	if _, ok := applyArm(ctx, sys, &run, arm{policy: "static"}); !ok || run.SLOUS != 0 {
		t.Errorf("static: ok %v, recorded SLO %v, want none", ok, run.SLOUS)
	}

	sys = &plainSystem{sloErr: errors.New("refused")}
	run = Run{Policy: "taichi"}
	if _, ok := applyArm(ctx, sys, &run, arm{policy: "taichi", slo: time.Millisecond}); ok ||
		!strings.Contains(run.Error, "set slo 1ms: refused") || run.SLOUS != 1000 || slices.Contains(sys.policies, "taichi") {
		t.Errorf("refused: ok %v, error %q, SLO %v, calls %v", ok, run.Error, run.SLOUS, sys.policies)
	}
}

func TestSLOVariantNames(t *testing.T) {
	for _, c := range []struct {
		p    scheduler.PolicyName
		us   float64
		want string
	}{{"static", 0, "static"}, {"taichi", 0, "taichi"}, {"taichi", 250, "taichi@250µs"}, {"taichi", 1000, "taichi@1ms"}, {"taichi", 1500, "taichi@1.5ms"}, {"taichi", 264.333, "taichi@264µs"}} {
		if got := variantName(c.p, c.us); got != c.want {
			t.Errorf("%s at %v µs: %q, want %q", c.p, c.us, got, c.want)
		}
	}
}
