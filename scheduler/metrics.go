package scheduler

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Scheduler's state as Prometheus metrics, read from
// one Snapshot per scrape. Register it on the daemon's registry:
//
//	reg.MustRegister(s.Collectors()...)
type Collector struct {
	s *Scheduler

	lent, reclaims, timeouts, wakeLat, threshold, slice, guardTrips, benched,
	flaps, state, harvested, invalid, actErrors, load, policy, dropped,
	budget, slo, confines, releases, decision, realtimeHolds *prometheus.Desc
}

// Collectors returns the scheduler's Prometheus collectors.
func (s *Scheduler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{NewCollector(s)}
}

// NewCollector builds the collector for s.
func NewCollector(s *Scheduler) *Collector {
	const ns, sub = "taichi", "scheduler"
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, sub, name), help, labels, nil)
	}
	return &Collector{
		s:          s,
		lent:       d("lent_seconds_total", "Time the DP core was lent to CP.", "cpu"),
		reclaims:   d("reclaims_total", "Lent periods ended, and cores taken back, by cause.", "cpu", "cause"),
		timeouts:   d("reclaim_timeouts_total", "Reclaims whose wake report never arrived.", "cpu"),
		wakeLat:    d("exposed_wake_latency_seconds", "Time packets waited because their DP core was lent.", "cpu"),
		threshold:  d("admission_threshold_polls", "Empty polls before the DP loop may yield (taichi).", "cpu"),
		slice:      d("slice_seconds", "Next lent slice (taichi).", "cpu"),
		guardTrips: d("guard_trips_total", "SLO guard trips (core benched).", "cpu"),
		benched:    d("guard_benched", "1 while the SLO guard benches the core.", "cpu"),
		flaps:      d("flaps_held_total", "Times the flap limiter held the core in DP.", "cpu"),
		state:      d("state", "1 for the core's current state.", "cpu", "state"),
		harvested:  d("cp_harvested_seconds_total", "CP CPU time spent on the DP core.", "cpu"),
		invalid:    d("invalid_transitions_total", "Events that did not fit the core's state.", "cpu"),
		actErrors:  d("actuator_errors_total", "Failed Lend/Reclaim calls.", "cpu"),
		load:       d("dp_load", "Mean DP busy fraction over the load window.", "cpu"),
		policy:     d("policy", "1 for the active policy.", "policy"),
		dropped:    d("dropped_events_total", "Events dropped because the scheduler queue was full."),
		budget:     d("slo_budget_ratio", "Share of the SLO the core's residence p99 uses over its window (upper bound).", "cpu"),
		slo:        d("slo_seconds", "The bound on per-packet RX residence p99 in use."),
		confines:   d("slo_confines_total", "CP processes confined by the SLO rule for the core's windows.", "cpu"),
		releases:   d("slo_releases_total", "Confined commands released by the SLO rule after quiet windows."),
		decision:   d("decision_latency_seconds", "Reaction time from a DP loop's yield or wake to the scheduler's decision on it."),
		realtimeHolds: d("realtime_holds_total", "Times the DP core was held in DP because its loop ran real-time for most of a window "+
			"(the kernel's real-time throttling would otherwise run CFS tasks there while packets wait).", "cpu"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lent, c.reclaims, c.timeouts, c.wakeLat, c.threshold, c.slice,
		c.guardTrips, c.benched, c.flaps, c.state, c.harvested, c.invalid, c.actErrors, c.load, c.policy, c.dropped,
		c.budget, c.slo, c.confines, c.releases, c.decision, c.realtimeHolds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.s.Snapshot()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	boolf := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, p := range PolicyNames() {
		gauge(c.policy, boolf(p == snap.Policy), string(p))
	}
	counter(c.dropped, float64(snap.DroppedEvents))
	gauge(c.slo, snap.SLO.Seconds())
	counter(c.releases, float64(snap.Releases))
	ch <- constHistogram(c.decision, snap.DecisionLatency)
	for _, cs := range snap.Cores {
		cpu := strconv.Itoa(cs.CPU)
		counter(c.lent, cs.LentTotal.Seconds(), cpu)
		for _, cause := range Causes() {
			counter(c.reclaims, float64(cs.Reclaims[cause.String()]), cpu, cause.String())
		}
		counter(c.timeouts, float64(cs.ReclaimTimeouts), cpu)
		ch <- constHistogram(c.wakeLat, cs.WakeLatency, cpu)
		gauge(c.threshold, float64(cs.Threshold), cpu)
		gauge(c.slice, cs.CurrentSlice.Seconds(), cpu)
		counter(c.guardTrips, float64(cs.GuardTrips), cpu)
		gauge(c.benched, boolf(cs.Benched), cpu)
		counter(c.flaps, float64(cs.FlapsHeld), cpu)
		counter(c.realtimeHolds, float64(cs.RealtimeHolds), cpu)
		for st := range numStates {
			gauge(c.state, boolf(cs.State == st), cpu, st.String())
		}
		counter(c.harvested, cs.Harvested.Seconds(), cpu)
		counter(c.invalid, float64(cs.InvalidTransitions), cpu)
		counter(c.actErrors, float64(cs.ActuatorErrors), cpu)
		gauge(c.load, cs.Load, cpu)
		gauge(c.budget, cs.Budget, cpu)
		counter(c.confines, float64(cs.Confines), cpu)
	}
}

func constHistogram(d *prometheus.Desc, h LatencySnapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Buckets))
	for _, b := range h.Buckets {
		buckets[b.Le.Seconds()] = b.Count
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets, labels...)
}
