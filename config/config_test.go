package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/topology"
)

// fourCPUs is a machine with CPUs 0-3 online.
var fourCPUs = &topology.Topology{Online: []int{0, 1, 2, 3}}

func TestDefaultLoads(t *testing.T) {
	cfg, err := LoadBytes(nil, fourCPUs)
	if err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if !slices.Equal(cfg.DPCPUs, []int{3}) || !slices.Equal(cfg.CPCPUs, []int{0, 1, 2}) {
		t.Errorf("auto split = dp %v cp %v, want dp [3] cp [0 1 2]", cfg.DPCPUs, cfg.CPCPUs)
	}
	if cfg.Policy != scheduler.PolicyTaichi || cfg.Metrics.Listen != "127.0.0.1:9464" || cfg.Control.Socket != "/run/taichi/taichi.sock" {
		t.Errorf("unexpected defaults: policy %q metrics %q socket %q", cfg.Policy, cfg.Metrics.Listen, cfg.Control.Socket)
	}
	if cfg.Scheduler.SliceMin.D() != 50*time.Microsecond || cfg.Probe.RingbufSize != 64<<10 {
		t.Errorf("slice_min %v ringbuf %d", cfg.Scheduler.SliceMin, cfg.Probe.RingbufSize)
	}
	// The embedded default must itself round-trip as a user file.
	if _, err := LoadBytes(DefaultYAML(), fourCPUs); err != nil {
		t.Fatalf("default YAML as a file: %v", err)
	}
}

func TestValidFileOverrides(t *testing.T) {
	yaml := `
cores: {dp: "2-3", cp: "0-1"}
policy: dynamic
scheduler: {slo: 100us}
vcpu:
  class: low-weight
  adopt: {commands: ["^ovs-", "cp-agent"], pids: [1234]}
dataplane:
  loops:
    - {name: dp0, cpu: 2, iface: eth1}
    - {name: dp1, cpu: 3, iface: eth2, mode: forward, out_iface: eth3, priority: 70}
probe:
  interfaces:
    - {iface: eth1, cpu: 2}
`
	cfg, err := LoadBytes([]byte(yaml), fourCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.DPCPUs, []int{2, 3}) || cfg.Policy != scheduler.PolicyDynamic {
		t.Errorf("dp %v policy %s", cfg.DPCPUs, cfg.Policy)
	}
	l := cfg.Dataplane.Loops
	if len(l) != 2 || l[0].Mode != "reflect" || l[0].Priority != 50 || l[1].Priority != 70 {
		t.Errorf("loops = %+v (item defaults not applied?)", l)
	}
	if cfg.Probe.Interfaces[0].Queue != -1 {
		t.Errorf("probe queue default = %d, want -1", cfg.Probe.Interfaces[0].Queue)
	}
	if cfg.Scheduler.SLO.D() != 100*time.Microsecond || cfg.Scheduler.SLOWindow.D() != time.Second {
		t.Errorf("scheduler merge: slo %v window %v", cfg.Scheduler.SLO, cfg.Scheduler.SLOWindow)
	}
}

func TestEnvOverride(t *testing.T) {
	t.Setenv("TAICHI_POLICY", "static")
	t.Setenv("TAICHI_SCHEDULER_SLO", "75us")
	t.Setenv("TAICHI_VCPU_ADOPT_PIDS", "100,200")
	cfg, err := LoadBytes([]byte("policy: dynamic\n"), fourCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy != "static" || cfg.Scheduler.SLO.D() != 75*time.Microsecond {
		t.Errorf("env not applied: policy %q slo %v", cfg.Policy, cfg.Scheduler.SLO)
	}
	if !slices.Equal(cfg.VCPU.Adopt.PIDs, []int{100, 200}) {
		t.Errorf("pids from env = %v", cfg.VCPU.Adopt.PIDs)
	}
	t.Setenv("TAICHI_SCHEDULER_SLO", "soon")
	_, err = LoadBytes(nil, fourCPUs)
	if es, ok := AsErrors(err); !ok || !slices.Contains(es.Keys(), "scheduler.slo") {
		t.Errorf("bad env duration: err = %v", err)
	}
}

// invalidCases loads testdata/invalid/*.yaml: configurations that must be
// rejected, each naming in its first line the key the error must name. The
// CLI's tests check the same files for exit code 2.
func invalidCases(t testing.TB) []InvalidCase {
	cases, err := LoadInvalidCases("testdata/invalid")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("only %d invalid cases", len(cases))
	}
	return cases
}

func TestInvalidConfigsNameTheKey(t *testing.T) {
	for _, tc := range invalidCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := LoadBytes([]byte(tc.YAML), fourCPUs)
			es, ok := AsErrors(err)
			if !ok {
				t.Fatalf("want config.Errors, got %v", err)
			}
			if !slices.Contains(es.Keys(), tc.Key) {
				t.Fatalf("errors %q do not name key %q", es.Error(), tc.Key)
			}
			for _, line := range strings.Split(es.Error(), "\n") {
				if !strings.Contains(line, ": ") {
					t.Errorf("line %q is not \"key: problem\"", line)
				}
			}
		})
	}
}

func TestAllErrorsReportedAtOnce(t *testing.T) {
	_, err := LoadBytes([]byte("policy: x\nlog: {level: y}\nvcpu: {weight: 0}\n"), fourCPUs)
	es, _ := AsErrors(err)
	for _, k := range []string{"policy", "log.level", "vcpu.weight"} {
		if !slices.Contains(es.Keys(), k) {
			t.Errorf("missing %s in %v", k, es.Keys())
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"64KiB": 65536, "4MiB": 4 << 20, "1000": 1000, "2 KB": 2000} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "KiB", "1.5MiB", "-1", "12x"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): want error", bad)
		}
	}
}

func FuzzLoadBytes(f *testing.F) {
	f.Add(DefaultYAML())
	for _, tc := range invalidCases(f) {
		f.Add([]byte(tc.YAML))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := LoadBytes(data, fourCPUs)
		if err == nil && (cfg == nil || len(cfg.CPCPUs) == 0) {
			t.Fatalf("accepted config without CP cores: %+v", cfg)
		}
	})
}

func TestSLOAutoOrDuration(t *testing.T) {
	topo := fourCPUs
	cfg, err := LoadBytes(nil, topo)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Scheduler.SLO.Auto() || cfg.Scheduler.SLO.String() != "auto" {
		t.Errorf("default scheduler.slo = %v, want auto", cfg.Scheduler.SLO)
	}
	cfg, err = LoadBytes([]byte("scheduler: {slo: 750us}\n"), topo)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scheduler.SLO.Auto() || cfg.Scheduler.SLO.D() != 750*time.Microsecond {
		t.Errorf("scheduler.slo 750us read as %v", cfg.Scheduler.SLO)
	}
}
