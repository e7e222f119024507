package dpdk

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

func validConfig() Config {
	return Config{Name: "testpmd", PID: 42, CPUs: []int{1}, Priority: 50}
}

func TestValidateAcceptsGoodConfigs(t *testing.T) {
	adopt := validConfig()
	if err := adopt.Validate(); err != nil {
		t.Fatalf("adopt config: %v", err)
	}
	launch := Config{Name: "pmd", Command: []string{"dpdk-testpmd", "-l", "0,1"}, NetNS: "dp", CPUs: []int{1, 2},
		Priority: 10, IdleDemote: true, IdleIfaces: []string{"veth0"}, IdleInterval: time.Millisecond}
	if err := launch.Validate(); err != nil {
		t.Fatalf("launch config: %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"name", func(c *Config) { c.Name = "" }},
		{"name", func(c *Config) { c.Name = "a b" }},
		{"command", func(c *Config) { c.PID = 0 }},
		{"pid", func(c *Config) { c.Command = []string{"x"} }},
		{"command[0]", func(c *Config) { c.PID = 0; c.Command = []string{" "} }},
		{"pid", func(c *Config) { c.PID = -3 }},
		{"netns", func(c *Config) { c.NetNS = "dp" }},
		{"thread_pattern", func(c *Config) { c.ThreadPattern = "(" }},
		{"cpus", func(c *Config) { c.CPUs = nil }},
		{"cpus[1]", func(c *Config) { c.CPUs = []int{1, -1} }},
		{"cpus[2]", func(c *Config) { c.CPUs = []int{1, 2, 1} }},
		{"priority", func(c *Config) { c.Priority = 0 }},
		{"priority", func(c *Config) { c.Priority = 100 }},
		{"reconcile_interval", func(c *Config) { c.ReconcileInterval = -time.Second }},
		{"stop_timeout", func(c *Config) { c.StopTimeout = -time.Second }},
		{"idle_interval", func(c *Config) { c.IdleInterval = -1 }},
		{"idle_after", func(c *Config) { c.IdleAfter = -1 }},
		{"idle_ifaces", func(c *Config) { c.PID = 0; c.Command = []string{"app", "--no-pci"}; c.IdleDemote = true }},
		{"idle_ifaces[0]", func(c *Config) { c.IdleIfaces = []string{"a/b"} }},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: no error for %+v", tc.field, c)
			continue
		}
		if !strings.Contains(err.Error(), tc.field+": ") {
			t.Errorf("%s: error does not name the field: %v", tc.field, err)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted an invalid config", tc.field)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{Priority: 0}
	err := c.Validate()
	for _, field := range []string{"name", "command", "cpus", "priority"} {
		if err == nil || !strings.Contains(err.Error(), field+": ") {
			t.Errorf("missing %q in %v", field, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := validConfig().withDefaults()
	if c.ThreadPattern != DefaultThreadPattern || c.ReconcileInterval != DefaultReconcileInterval ||
		c.StopTimeout != DefaultStopTimeout || c.IdleInterval != DefaultIdleInterval || c.IdleAfter != DefaultIdleAfter {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestDefaultPatternMatchesLcoreNames(t *testing.T) {
	m, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"rte-worker-1": true, "lcore-worker-12": true, "dpdk-testpmd": false,
		"eal-intr-thread": false, "rte_mp_handle": false, "telemetry-v2": false, "rte-worker-": false,
	} {
		if got := m.re.MatchString(name); got != want {
			t.Errorf("%q: match %v, want %v", name, got, want)
		}
	}
}

func TestFilePrefix(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"dpdk-testpmd", "--file-prefix", "abc", "-l", "0,1"}, "abc"},
		{[]string{"dpdk-testpmd", "--file-prefix=xyz"}, "xyz"},
		{[]string{"dpdk-testpmd", "-l", "0", "--", "--file-prefix=app"}, "rte"},
		{[]string{"dpdk-testpmd"}, "rte"},
	} {
		if got := FilePrefix(tc.argv); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.argv, got, tc.want)
		}
	}
	if err := RemoveRuntimeDir("../etc"); err == nil {
		t.Error("RemoveRuntimeDir accepted a path")
	}
}

func TestLcoreOrder(t *testing.T) {
	ts := []linuxsched.Thread{{TID: 9, Comm: "rte-worker-10"}, {TID: 7, Comm: "rte-worker-2"}, {TID: 8, Comm: "rte-worker-3"}}
	lcoreOrder(ts)
	var names []string
	for _, ti := range ts {
		names = append(names, ti.Comm)
	}
	if !slices.Equal(names, []string{"rte-worker-2", "rte-worker-3", "rte-worker-10"}) {
		t.Fatalf("order %v", names)
	}
}

func TestVdevIfaces(t *testing.T) {
	argv := []string{"dpdk-testpmd", "--vdev=net_af_packet0,iface=dp0", "--vdev", "net_af_xdp1,iface=dp1,start_queue=0",
		"--vdev=net_null0", "--", "--vdev=net_af_packet9,iface=app"}
	if got := VdevIfaces(argv); !slices.Equal(got, []string{"dp0", "dp1"}) {
		t.Fatalf("got %v", got)
	}
	c := Config{Name: "x", Command: argv, CPUs: []int{1}, Priority: 1, IdleDemote: true}
	if err := c.Validate(); err != nil {
		t.Fatalf("vdev interfaces should satisfy idle_demote: %v", err)
	}
}

func TestValidateOVSUnixctl(t *testing.T) {
	for path, ok := range map[string]bool{
		"":                                  true,
		"/run/openvswitch/ovs-vswitchd.ctl": true,
		"run/vswitchd.ctl":                  false,
		"/" + strings.Repeat("x", 120):      false,
	} {
		c := Config{Name: "ovs", PID: 42, CPUs: []int{1}, Priority: 50, OVSUnixctl: path}
		err := c.Validate()
		if (err == nil) != ok {
			t.Errorf("ovs_unixctl %q: err %v, want ok=%v", path, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "ovs_unixctl") {
			t.Errorf("ovs_unixctl %q: error %q does not name the key", path, err)
		}
	}
}
