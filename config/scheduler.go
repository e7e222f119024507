package config

import (
	"fmt"

	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/scheduler"
)

// schedulerKey is one YAML key feeding the engine: set copies it (with the
// unit conversion) into p, and fields names every Params field set touches,
// so an engine error on one of them is reported against this key.
type schedulerKey struct {
	key    string
	fields []string
	set    func(p *scheduler.Params, cfg *Config)
}

// schedulerKeys is the one mapping from the YAML onto scheduler.Params.
// Every key under `scheduler:` (except the blockers subtree, which configures
// the daemon's tracer, not the engine) and the top-level policy has a row;
// a new key without a row fails TestEverySchedulerKeyReachesParams.
var schedulerKeys = []schedulerKey{
	{"policy", []string{"Policy"}, func(p *scheduler.Params, cfg *Config) { p.Policy = cfg.Policy }},
	{"scheduler.slo", []string{"SLO"}, func(p *scheduler.Params, cfg *Config) {
		// auto keeps the engine's default as a placeholder until the daemon
		// derives the value from the host at start.
		if !cfg.Scheduler.SLO.Auto() {
			p.SLO = cfg.Scheduler.SLO.D()
		}
	}},
	{"scheduler.slo_window", []string{"SLOWindow"}, func(p *scheduler.Params, cfg *Config) { p.SLOWindow = cfg.Scheduler.SLOWindow.D() }},
	{"scheduler.guard_backoff", []string{"GuardBackoff"}, func(p *scheduler.Params, cfg *Config) { p.GuardBackoff = cfg.Scheduler.GuardBackoff.D() }},
	{"scheduler.guard_backoff_max", []string{"GuardBackoffMax"}, func(p *scheduler.Params, cfg *Config) { p.GuardBackoffMax = cfg.Scheduler.GuardBackoffMax.D() }},
	{"scheduler.idle_threshold", []string{"IdleThreshold"}, func(p *scheduler.Params, cfg *Config) { p.IdleThreshold = int64(cfg.Scheduler.IdleThreshold) }},
	{"scheduler.idle_threshold_min", []string{"IdleThresholdMin"}, func(p *scheduler.Params, cfg *Config) { p.IdleThresholdMin = int64(cfg.Scheduler.IdleThresholdMin) }},
	{"scheduler.idle_threshold_max", []string{"IdleThresholdMax"}, func(p *scheduler.Params, cfg *Config) { p.IdleThresholdMax = int64(cfg.Scheduler.IdleThresholdMax) }},
	{"scheduler.slice_min", []string{"SliceMin"}, func(p *scheduler.Params, cfg *Config) { p.SliceMin = cfg.Scheduler.SliceMin.D() }},
	{"scheduler.slice_max", []string{"SliceMax", "ReclaimTimeout", "DynamicSlice"}, func(p *scheduler.Params, cfg *Config) {
		p.SliceMax = cfg.Scheduler.SliceMax.D()
		// Derived: a lost wake is only presumed after the loop's own bounded
		// wait has surely ended (the engine requires reclaim_timeout >
		// slice_max), and the dynamic policy's fixed slice never exceeds
		// the configured longest one.
		if p.ReclaimTimeout <= p.SliceMax {
			p.ReclaimTimeout = 4 * p.SliceMax
		}
		p.DynamicSlice = min(p.DynamicSlice, p.SliceMax)
	}},
	{"scheduler.flap_limit", []string{"FlapLimit"}, func(p *scheduler.Params, cfg *Config) { p.FlapLimit = cfg.Scheduler.FlapLimit }},
	{"scheduler.flap_window", []string{"FlapWindow"}, func(p *scheduler.Params, cfg *Config) { p.FlapWindow = cfg.Scheduler.FlapWindow.D() }},
	{"scheduler.high_load", []string{"HighLoad", "LowLoad"}, func(p *scheduler.Params, cfg *Config) {
		p.HighLoad = cfg.Scheduler.HighLoad
		// Derived: the lend-again mark stays below the take-out mark
		// (hysteresis), at half of it when the default would not be.
		if p.LowLoad >= p.HighLoad {
			p.LowLoad = p.HighLoad / 2
		}
	}},
}

// notEngineKeys are keys under `scheduler:` that configure something other
// than the engine.
var notEngineKeys = map[string]string{
	"scheduler.blockers": "blocker-aware lending, run by the daemon (Scheduler.Blockers)",
}

// InternalSchedulerParams are the scheduler.Params fields no key sets: the
// engine's defaults hold (some are adjusted by a key's row above). They are
// tuned for the mechanism, not for a site.
var InternalSchedulerParams = []string{
	"SLOMinSamples",  // statistical floor of the guard's p99
	"GuardForgive",   // how long a bench's memory lasts
	"ShortLend",      // adaptation of idle_threshold
	"DynamicSlice",   // capped at scheduler.slice_max
	"FlapHold",       // flap limiter's hold
	"LowLoad",        // derived from scheduler.high_load when needed
	"LoadWindow",     // busy-share averaging window
	"ReclaimTimeout", // raised to 4 x scheduler.slice_max when needed
	"ActuatorRetry",  // retry of a failed cpuset write
	"ReleaseQuiet",   // the SLO rule's quiet period before a release
	"BudgetHorizon",  // the span the SLO rule judges the p99 over
	"RealtimeShare",  // the kernel's real-time throttling sets it
	"RealtimeWindow", // the kernel's real-time period
	"RealtimeHold",   // how long a core that ran real-time too long stays in DP
}

// SchedulerParams returns the engine parameters this configuration asks
// for: scheduler.DefaultParams with every row of schedulerKeys applied.
func (cfg *Config) SchedulerParams() scheduler.Params {
	p := scheduler.DefaultParams()
	for _, k := range schedulerKeys {
		k.set(&p, cfg)
	}
	return p
}

// validateScheduler checks the scheduler keys with the engine's own
// validation (one rule per value), reporting each problem against the key
// that set the field.
func (c *checker) validateScheduler(cfg *Config) {
	keyOf := map[string]string{}
	for _, k := range schedulerKeys {
		for _, f := range k.fields {
			if _, taken := keyOf[f]; !taken {
				keyOf[f] = k.key
			}
		}
	}
	fields, others := fielderr.Split(cfg.SchedulerParams().Validate())
	for _, e := range others {
		c.fail("scheduler", "%v", e)
	}
	for _, fe := range fields {
		key, ok := keyOf[fe.Field]
		if !ok {
			key = fmt.Sprintf("scheduler (internal %s)", fe.Field)
		}
		c.fail(key, "%s", fe.Problem)
	}
}
