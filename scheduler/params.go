package scheduler

import (
	"errors"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
)

// Params holds every tunable of the scheduler. The daemon's YAML sets some
// of them: config.Config.SchedulerParams is the one mapping from keys to
// fields and lists the fields no key sets.
type Params struct {
	// Policy is the policy at start: static, dynamic or taichi.
	Policy PolicyName

	// SLO is the bound on a core's per-packet RX residence p99 (taichi's
	// guard): how long packets may wait at the DP core.
	SLO time.Duration
	// SLOWindow is the sliding window of what packets feel now: the SLO
	// rule acts (confines, benches) only while it is above a mark too, and
	// blames the CP tasks that delayed packets within it.
	SLOWindow time.Duration
	// BudgetHorizon is the sliding window the SLO is judged on: its p99
	// against the SLO's marks sets the pressure, confinement, benching and
	// releases. Longer than SLOWindow, so short bursts spend the budget
	// instead of tripping the rule.
	BudgetHorizon time.Duration
	// SLOMinSamples is how many packets the window needs before the guard
	// judges it (a p99 of three packets is just their maximum). A thousand
	// also gives the blocker tracer time to confine what delays the first
	// packets before the guard benches the core.
	SLOMinSamples int
	// GuardBackoff is how long the guard benches a core on its first trip;
	// each repeat doubles it up to GuardBackoffMax.
	GuardBackoff    time.Duration
	GuardBackoffMax time.Duration
	// ReleaseQuiet: a confined command is released (one at a time) once
	// every lending core's residence p99 stayed at or below the SLO's
	// low-water mark this long.
	ReleaseQuiet time.Duration
	// GuardForgive: a trip more than this long after the previous bench ended
	// starts again at GuardBackoff.
	GuardForgive time.Duration

	// IdleThreshold is the initial number of consecutive empty polls before
	// the DP loop may yield (taichi); it adapts within
	// [IdleThresholdMin, IdleThresholdMax]: doubles when I/O reclaims a core
	// sooner than ShortLend after lending, drops by a quarter when a lent
	// slice expires undisturbed (once per idle gap, however many slices the
	// gap spans).
	IdleThreshold    int64
	IdleThresholdMin int64
	IdleThresholdMax int64
	// ShortLend: a lent period ended by I/O sooner than this did not pay for
	// the switch.
	ShortLend time.Duration

	// SliceMin is the first bounded wait of a lent core (taichi); it doubles
	// on every undisturbed expiry up to SliceMax and resets on an I/O reclaim.
	SliceMin time.Duration
	SliceMax time.Duration
	// DynamicSlice is the fixed bounded wait under the dynamic policy.
	DynamicSlice time.Duration

	// More than FlapLimit lend cycles within FlapWindow hold the core in DP
	// for FlapHold (0: no flap limiter, the default: it did not earn its
	// place, see docs/design.md).
	FlapLimit  int
	FlapWindow time.Duration
	FlapHold   time.Duration

	// HighLoad: when a core's mean busy fraction over LoadWindow exceeds it,
	// taichi takes the core out of the CP cpuset (CP stops queueing behind the
	// DP loop); it lends again when the mean falls below LowLoad.
	HighLoad   float64
	LowLoad    float64
	LoadWindow time.Duration

	// RealtimeShare: a DP loop runs SCHED_FIFO while its core is in the CP
	// cpuset; once it has run (not blocked) for this share of RealtimeWindow
	// there, the core is held in DP (out of the cpuset, the loop back to
	// SCHED_OTHER) for RealtimeHold. Above about 0.95 of a second the
	// kernel's real-time throttling or its fair server would run the CFS
	// tasks queued on the core for up to 50 ms while packets wait.
	RealtimeShare  float64
	RealtimeWindow time.Duration
	RealtimeHold   time.Duration

	// ReclaimTimeout: a core asked to wake that has not reported running
	// after this long is taken as running (its wake event was lost). Must
	// exceed SliceMax and DynamicSlice: the loop's own bounded wait ends first.
	ReclaimTimeout time.Duration
	// ActuatorRetry is how long to wait before retrying a failed Lend/Reclaim.
	ActuatorRetry time.Duration
}

// DefaultParams returns the defaults; those with a key in the daemon's
// embedded YAML (config/default.yaml) match it (a config test checks).
func DefaultParams() Params {
	return Params{
		Policy:           PolicyTaichi,
		SLO:              200 * time.Microsecond,
		SLOWindow:        time.Second,
		BudgetHorizon:    30 * time.Second,
		SLOMinSamples:    1000,
		GuardBackoff:     time.Second,
		GuardBackoffMax:  time.Minute,
		GuardForgive:     60 * time.Second,
		ReleaseQuiet:     5 * time.Second,
		IdleThreshold:    64,
		IdleThresholdMin: 8,
		IdleThresholdMax: 4096,
		ShortLend:        100 * time.Microsecond,
		SliceMin:         50 * time.Microsecond,
		SliceMax:         5 * time.Millisecond,
		DynamicSlice:     5 * time.Millisecond,
		FlapLimit:        0,
		FlapWindow:       time.Second,
		FlapHold:         100 * time.Millisecond,
		HighLoad:         0.8,
		LowLoad:          0.5,
		LoadWindow:       time.Second,
		RealtimeShare:    0.8,
		RealtimeWindow:   time.Second,
		RealtimeHold:     time.Second,
		ReclaimTimeout:   20 * time.Millisecond,
		ActuatorRetry:    time.Second,
	}
}

// Validate reports every bad field at once, or nil: an errors.Join of
// *fielderr.Error with the Go field name (e.g. "SliceMin") and the YAML
// key (e.g. "scheduler.slice_min").
func (p Params) Validate() error {
	var errs []error
	bad := func(field, key, format string, args ...any) {
		errs = append(errs, &fielderr.Error{Field: field, Key: "scheduler." + key, Problem: fmt.Sprintf(format, args...)})
	}
	positive := func(field, key string, d time.Duration) {
		if d <= 0 {
			bad(field, key, "must be a positive duration, got %v", d)
		}
	}
	if err := p.Policy.Validate(); err != nil {
		bad("Policy", "policy", "%v", err)
	}
	positive("SLO", "slo", p.SLO)
	positive("SLOWindow", "slo_window", p.SLOWindow)
	if p.BudgetHorizon < p.SLOWindow {
		bad("BudgetHorizon", "budget_horizon", "must be at least slo_window (%v), got %v", p.SLOWindow, p.BudgetHorizon)
	}
	if p.SLOMinSamples < 1 {
		bad("SLOMinSamples", "slo_min_samples", "must be at least 1, got %d", p.SLOMinSamples)
	}
	positive("GuardBackoff", "guard_backoff", p.GuardBackoff)
	positive("GuardBackoffMax", "guard_backoff_max", p.GuardBackoffMax)
	if p.GuardBackoff > 0 && p.GuardBackoffMax > 0 && p.GuardBackoffMax < p.GuardBackoff {
		bad("GuardBackoffMax", "guard_backoff_max", "must be >= guard_backoff (%v), got %v", p.GuardBackoff, p.GuardBackoffMax)
	}
	positive("GuardForgive", "guard_forgive", p.GuardForgive)
	positive("ReleaseQuiet", "release_quiet", p.ReleaseQuiet)
	if p.IdleThresholdMin < 1 {
		bad("IdleThresholdMin", "idle_threshold_min", "must be at least 1, got %d", p.IdleThresholdMin)
	}
	if p.IdleThresholdMax < p.IdleThresholdMin {
		bad("IdleThresholdMax", "idle_threshold_max", "must be >= idle_threshold_min (%d), got %d", p.IdleThresholdMin, p.IdleThresholdMax)
	}
	if p.IdleThreshold < p.IdleThresholdMin || p.IdleThreshold > p.IdleThresholdMax {
		bad("IdleThreshold", "idle_threshold", "must be within [%d, %d], got %d", p.IdleThresholdMin, p.IdleThresholdMax, p.IdleThreshold)
	}
	positive("ShortLend", "short_lend", p.ShortLend)
	positive("SliceMin", "slice_min", p.SliceMin)
	positive("SliceMax", "slice_max", p.SliceMax)
	if p.SliceMin > 0 && p.SliceMax > 0 && p.SliceMax < p.SliceMin {
		bad("SliceMax", "slice_max", "must be >= slice_min (%v), got %v", p.SliceMin, p.SliceMax)
	}
	positive("DynamicSlice", "dynamic_slice", p.DynamicSlice)
	if p.FlapLimit < 0 {
		bad("FlapLimit", "flap_limit", "must be 0 (off) or more, got %d", p.FlapLimit)
	}
	positive("FlapWindow", "flap_window", p.FlapWindow)
	positive("FlapHold", "flap_hold", p.FlapHold)
	if !(p.HighLoad > 0 && p.HighLoad <= 1) {
		bad("HighLoad", "high_load", "must be a fraction in (0, 1], got %v", p.HighLoad)
	}
	if !(p.LowLoad >= 0 && p.LowLoad < p.HighLoad) {
		bad("LowLoad", "low_load", "must be in [0, high_load=%v), got %v", p.HighLoad, p.LowLoad)
	}
	positive("LoadWindow", "load_window", p.LoadWindow)
	if !(p.RealtimeShare > 0 && p.RealtimeShare < 0.95) {
		bad("RealtimeShare", "realtime_share", "must be a fraction in (0, 0.95): the kernel throttles real-time tasks near 0.95 of a second, got %v", p.RealtimeShare)
	}
	positive("RealtimeWindow", "realtime_window", p.RealtimeWindow)
	positive("RealtimeHold", "realtime_hold", p.RealtimeHold)
	positive("ReclaimTimeout", "reclaim_timeout", p.ReclaimTimeout)
	if p.ReclaimTimeout > 0 && (p.ReclaimTimeout <= p.SliceMax || p.ReclaimTimeout <= p.DynamicSlice) {
		bad("ReclaimTimeout", "reclaim_timeout", "must exceed slice_max (%v) and dynamic_slice (%v), got %v", p.SliceMax, p.DynamicSlice, p.ReclaimTimeout)
	}
	positive("ActuatorRetry", "actuator_retry", p.ActuatorRetry)
	return errors.Join(errs...)
}
