package scheduler

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
)

func TestDefaultParamsValid(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field, key string
		mutate     func(*Params)
	}{
		{"Policy", "scheduler.policy", func(p *Params) { p.Policy = "rr" }},
		{"SLO", "scheduler.slo", func(p *Params) { p.SLO = 0 }},
		{"SLOWindow", "scheduler.slo_window", func(p *Params) { p.SLOWindow = -time.Second }},
		{"SLOMinSamples", "scheduler.slo_min_samples", func(p *Params) { p.SLOMinSamples = 0 }},
		{"GuardBackoff", "scheduler.guard_backoff", func(p *Params) { p.GuardBackoff = 0 }},
		{"GuardBackoffMax", "scheduler.guard_backoff_max", func(p *Params) { p.GuardBackoffMax = p.GuardBackoff / 2 }},
		{"GuardForgive", "scheduler.guard_forgive", func(p *Params) { p.GuardForgive = 0 }},
		{"IdleThreshold", "scheduler.idle_threshold", func(p *Params) { p.IdleThreshold = p.IdleThresholdMax + 1 }},
		{"IdleThresholdMin", "scheduler.idle_threshold_min", func(p *Params) { p.IdleThresholdMin = 0 }},
		{"IdleThresholdMax", "scheduler.idle_threshold_max", func(p *Params) { p.IdleThresholdMax = p.IdleThresholdMin - 1 }},
		{"ShortLend", "scheduler.short_lend", func(p *Params) { p.ShortLend = 0 }},
		{"SliceMin", "scheduler.slice_min", func(p *Params) { p.SliceMin = 0 }},
		{"SliceMax", "scheduler.slice_max", func(p *Params) { p.SliceMax = p.SliceMin / 2 }},
		{"DynamicSlice", "scheduler.dynamic_slice", func(p *Params) { p.DynamicSlice = 0 }},
		{"FlapLimit", "scheduler.flap_limit", func(p *Params) { p.FlapLimit = -1 }},
		{"FlapWindow", "scheduler.flap_window", func(p *Params) { p.FlapWindow = 0 }},
		{"FlapHold", "scheduler.flap_hold", func(p *Params) { p.FlapHold = 0 }},
		{"HighLoad", "scheduler.high_load", func(p *Params) { p.HighLoad = 1.5 }},
		{"LowLoad", "scheduler.low_load", func(p *Params) { p.LowLoad = p.HighLoad }},
		{"LoadWindow", "scheduler.load_window", func(p *Params) { p.LoadWindow = 0 }},
		{"ReclaimTimeout", "scheduler.reclaim_timeout", func(p *Params) { p.ReclaimTimeout = p.SliceMax }},
		{"ActuatorRetry", "scheduler.actuator_retry", func(p *Params) { p.ActuatorRetry = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			p := DefaultParams()
			tc.mutate(&p)
			err := p.Validate()
			var fe *fielderr.Error
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Key != tc.key || !strings.HasPrefix(err.Error(), tc.key+": ") {
				t.Fatalf("got %v (%#v), want a FieldError for %s", err, fe, tc.field)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p := DefaultParams()
	p.SLO, p.SliceMin, p.FlapLimit = 0, 0, -1
	err := p.Validate()
	for _, key := range []string{"scheduler.slo:", "scheduler.slice_min:", "scheduler.flap_limit:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%v does not mention %s", err, key)
		}
	}
}
