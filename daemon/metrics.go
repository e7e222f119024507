package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/taichi-sched/taichi/dataplane"
)

// The DP loops' latency histograms.
const (
	residenceFamily = "taichi_dp_rx_residence_seconds"
	exposedFamily   = "taichi_dp_exposed_wake_seconds"
)

// HistogramFamilies names the families the daemon exports as histograms
// from its status; they have samples only while DP loops run, so a scrape
// of an idle registry cannot tell their type.
func HistogramFamilies() []string { return []string{residenceFamily, exposedFamily} }

// statusCollector turns Status into Prometheus metrics at scrape time, so
// the numbers cannot drift from what `taichi status` shows.
type statusCollector struct {
	d                                            *Daemon
	state, lent, reclaims, members, harvest, bld *prometheus.Desc
	probeDown, residence, exposed, selfShare     *prometheus.Desc
}

func newStatusCollector(d *Daemon) *statusCollector {
	return &statusCollector{
		d:         d,
		state:     prometheus.NewDesc("taichi_core_state", "1 for the state each CPU is in.", []string{"cpu", "role", "state"}, nil),
		lent:      prometheus.NewDesc("taichi_lent_seconds_total", "Seconds a DP core spent lent to the control plane.", []string{"cpu"}, nil),
		reclaims:  prometheus.NewDesc("taichi_reclaims_total", "DP core reclaims by cause.", []string{"cpu", "cause"}, nil),
		members:   prometheus.NewDesc("taichi_cp_tasks", "Processes in the CP pool.", nil, nil),
		harvest:   prometheus.NewDesc("taichi_harvested_cp_seconds_total", "CP CPU seconds run on DP cores.", nil, nil),
		bld:       prometheus.NewDesc("taichi_build_info", "Build information.", []string{"version", "goversion", "policy"}, nil),
		probeDown: prometheus.NewDesc("taichi_probe_failed", "1 when the DP core's probe failed and the core is held static.", []string{"cpu"}, nil),
		selfShare: prometheus.NewDesc("taichi_daemon_cpu_share", "The daemon's own CPU time (utime+stime) per second over the last 10s, as a share of one core (its total is process_cpu_seconds_total).", nil, nil),
		residence: prometheus.NewDesc(residenceFamily,
			"Per packet: from the kernel's RX stamp to the DP loop picking it up (the delay the DP core adds).", []string{"loop", "cpu"}, nil),
		exposed: prometheus.NewDesc(exposedFamily,
			"Per DP loop wake: how long the first waiting packet had been in the ring (0 when the probe woke the loop first).", []string{"loop", "cpu"}, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.lent, c.reclaims, c.members, c.harvest, c.bld, c.probeDown, c.residence, c.exposed, c.selfShare} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Status()
	for _, core := range st.Cores {
		cpu := strconv.Itoa(core.CPU)
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, cpu, core.Role, core.State)
		if core.Role != "dp" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.lent, prometheus.CounterValue, core.LentSeconds, cpu)
		down := 0.0
		if strings.HasPrefix(core.Hold, "probe-failed") {
			down = 1
		}
		ch <- prometheus.MustNewConstMetric(c.probeDown, prometheus.GaugeValue, down, cpu)
		for cause, n := range core.Reclaims {
			ch <- prometheus.MustNewConstMetric(c.reclaims, prometheus.CounterValue, float64(n), cpu, cause)
		}
	}
	for _, l := range st.Loops {
		cpu := strconv.Itoa(l.CPU)
		ch <- constHistogram(c.residence, l.Stats.Residence, l.Name, cpu)
		ch <- constHistogram(c.exposed, l.Stats.Exposed, l.Name, cpu)
	}
	ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(st.Pool.Members))
	if st.Pool.HarvestedCPSeconds >= 0 {
		ch <- prometheus.MustNewConstMetric(c.harvest, prometheus.CounterValue, st.Pool.HarvestedCPSeconds)
	}
	ch <- prometheus.MustNewConstMetric(c.selfShare, prometheus.GaugeValue, st.Daemon.Share)
	ch <- prometheus.MustNewConstMetric(c.bld, prometheus.GaugeValue, 1, st.Version, runtime.Version(), string(st.Policy))
}

// promBuckets are the exported latency buckets (seconds), 1-2-5 steps from
// 1 µs to 1 s: enough to read a p99 against an SLO, far fewer series than
// the loop's own buckets.
var promBuckets = func() []float64 {
	var b []float64
	for decade := 1e-6; decade < 1; decade *= 10 {
		b = append(b, decade, 2*decade, 5*decade)
	}
	return append(b, 1)
}()

// constHistogram exports a loop histogram. A Prometheus bucket counts the
// samples of every loop bucket that ends at or below its bound, so it never
// counts a sample above the bound.
func constHistogram(desc *prometheus.Desc, h dataplane.Histogram, labels ...string) prometheus.Metric {
	counts := make(map[float64]uint64, len(promBuckets))
	for _, le := range promBuckets {
		counts[le] = h.AtMost(time.Duration(le * float64(time.Second)))
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, float64(h.SumNs)/1e9, counts, labels...)
}

type metricsServer struct {
	srv *http.Server
	ln  net.Listener
}

// Registry builds the daemon's metric registry (exported for tests).
func (d *Daemon) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(d), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(d.sched.Collectors()...)
	reg.MustRegister(newBlockerCollector(d))
	return reg
}

func startMetrics(d *Daemon, addr string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.Registry(), promhttp.HandlerOpts{}))
	s := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *metricsServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
