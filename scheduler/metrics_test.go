package scheduler

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorExportsSnapshot(t *testing.T) {
	r := startScheduler(t, PolicyTaichi, nil)
	r.s.Yielded(1, at(0))
	r.s.Woke(1, at(us(300)), WakeRx, us(30))
	r.s.Yielded(1, at(ms(1)))
	r.s.Probe(1, at(ms(1)+us(20)))
	r.s.Woke(1, at(ms(1)+us(25)), WakeProbe, 0)
	r.s.Harvested(3, at(ms(2)), ms(1500))
	r.sync(t)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.s.Collectors()...)
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP taichi_scheduler_reclaims_total Lent periods ended, and cores taken back, by cause.
# TYPE taichi_scheduler_reclaims_total counter
taichi_scheduler_reclaims_total{cause="guard",cpu="1"} 0
taichi_scheduler_reclaims_total{cause="guard",cpu="3"} 0
taichi_scheduler_reclaims_total{cause="load",cpu="1"} 0
taichi_scheduler_reclaims_total{cause="load",cpu="3"} 0
taichi_scheduler_reclaims_total{cause="policy",cpu="1"} 0
taichi_scheduler_reclaims_total{cause="policy",cpu="3"} 0
taichi_scheduler_reclaims_total{cause="probe",cpu="1"} 1
taichi_scheduler_reclaims_total{cause="probe",cpu="3"} 0
taichi_scheduler_reclaims_total{cause="rx",cpu="1"} 1
taichi_scheduler_reclaims_total{cause="rx",cpu="3"} 0
taichi_scheduler_reclaims_total{cause="slice_end",cpu="1"} 0
taichi_scheduler_reclaims_total{cause="slice_end",cpu="3"} 0
# HELP taichi_scheduler_cp_harvested_seconds_total CP CPU time spent on the DP core.
# TYPE taichi_scheduler_cp_harvested_seconds_total counter
taichi_scheduler_cp_harvested_seconds_total{cpu="1"} 0
taichi_scheduler_cp_harvested_seconds_total{cpu="3"} 1.5
# HELP taichi_scheduler_lent_seconds_total Time the DP core was lent to CP.
# TYPE taichi_scheduler_lent_seconds_total counter
taichi_scheduler_lent_seconds_total{cpu="1"} 0.000325
taichi_scheduler_lent_seconds_total{cpu="3"} 0
# HELP taichi_scheduler_admission_threshold_polls Empty polls before the DP loop may yield (taichi).
# TYPE taichi_scheduler_admission_threshold_polls gauge
taichi_scheduler_admission_threshold_polls{cpu="1"} 64
taichi_scheduler_admission_threshold_polls{cpu="3"} 64
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"taichi_scheduler_reclaims_total", "taichi_scheduler_cp_harvested_seconds_total",
		"taichi_scheduler_lent_seconds_total", "taichi_scheduler_admission_threshold_polls"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "taichi_scheduler_exposed_wake_latency_seconds":
			h := mf.GetMetric()[0].GetHistogram() // cpu 1 sorts first
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 30e-6 {
				t.Errorf("wake latency histogram count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
			}
		case "taichi_scheduler_state":
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if wantOne := labels["state"] == "DP_ACTIVE"; (m.GetGauge().GetValue() == 1) != wantOne {
					t.Errorf("state gauge %v = %v", labels, m.GetGauge().GetValue())
				}
			}
		}
	}
}
