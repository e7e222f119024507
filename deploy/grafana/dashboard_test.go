package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/topology"
)

// dashboard is the part of Grafana's JSON model the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("taichi.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("taichi.json: %v", err)
	}
	return d
}

// queries returns every PromQL expression in the dashboard, by where it is.
func (d dashboard) queries(t *testing.T) map[string]string {
	t.Helper()
	q := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for i, tg := range p.Targets {
				q[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var s string
		var obj struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &s) != nil {
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			s = obj.Query
		}
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("variable %s: %q is not label_values(SELECTOR, LABEL)", v.Name, s)
		}
		q["variable "+v.Name] = m[1]
	}
	return q
}

// registered returns every metric family the daemon's registry exports, by
// name, with its type (histograms are queried as NAME_bucket/_sum/_count).
func registered(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	cfg, err := config.LoadBytes(nil, &topology.Topology{Online: []int{0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := d.Registry()
	names := map[string]dto.MetricType{}
	// Every family the collectors describe, whether or not it has samples now.
	descs := make(chan *prometheus.Desc)
	go func() { reg.Describe(descs); close(descs) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for desc := range descs {
		m := fqName.FindStringSubmatch(desc.String())
		if m == nil {
			t.Fatalf("cannot read the metric name of %s", desc)
		}
		names[m[1]] = dto.MetricType_UNTYPED
	}
	// Types from a scrape of the same registry.
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		names[f.GetName()] = f.GetType()
	}
	for _, h := range daemon.HistogramFamilies() {
		if names[h] == dto.MetricType_UNTYPED {
			names[h] = dto.MetricType_HISTOGRAM
		}
	}
	return names
}

func exported(names map[string]dto.MetricType, name string) bool {
	if _, ok := names[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			typ, ok := names[base]
			if ok && (typ == dto.MetricType_HISTOGRAM || (suffix != "_bucket" && typ == dto.MetricType_SUMMARY)) {
				return true
			}
		}
	}
	return false
}

func TestDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	names := registered(t)
	if _, ok := names["taichi_lent_seconds_total"]; !ok || len(names) < 20 {
		t.Fatalf("the daemon's registry looks wrong: %d families", len(names))
	}
	for _, name := range []string{"taichi_no_such_metric", "taichi_lent_seconds_total_bucket", "process_cpu_seconds_total_count"} {
		if exported(names, name) {
			t.Fatalf("%s counted as exported", name)
		}
	}
	queried := map[string]bool{}
	for where, expr := range d.queries(t) {
		ms, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(ms) == 0 {
			t.Errorf("%s queries no metric: %q", where, expr)
		}
		for _, m := range ms {
			queried[m] = true
			if !exported(names, m) {
				t.Errorf("%s queries %s, which the daemon does not export", where, m)
			}
		}
	}
	// What operators look at first must be on the dashboard.
	for _, want := range []string{
		"taichi_lent_seconds_total", "taichi_reclaims_total", "taichi_scheduler_guard_trips_total",
		"taichi_scheduler_cp_harvested_seconds_total", "process_cpu_seconds_total",
		"taichi_scheduler_exposed_wake_latency_seconds_bucket",
	} {
		if !queried[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	var got []string
	for m := range queried {
		got = append(got, m)
	}
	sort.Strings(got)
	t.Logf("queried: %s", strings.Join(got, " "))
}

func TestDashboardPanelsAreWellFormed(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" {
		t.Error("no uid: re-imports would create copies")
	}
	seen := map[int]bool{}
	for _, p := range d.Panels {
		if seen[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		seen[p.ID] = true
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %q, want the ${datasource} variable", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	for _, want := range []string{"datasource", "instance"} {
		if !slices.Contains(vars, want) {
			t.Errorf("no $%s variable (have %v)", want, vars)
		}
	}
}
