// Package config loads and validates taichi's YAML configuration.
//
// Loading is pure: it turns the embedded defaults, an optional file and
// TAICHI_* environment variables into a validated Config (with the core split
// resolved against a topology) and touches nothing on the machine. Every
// problem is reported as a "key: problem" line, all of them at once.
package config

import (
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/scheduler"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration, commented field by field.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Config is the whole configuration. Field tags name the YAML keys.
type Config struct {
	Cores     Cores                `key:"cores"`
	Policy    scheduler.PolicyName `key:"policy"`
	Scheduler Scheduler            `key:"scheduler"`
	VCPU      VCPU                 `key:"vcpu"`
	Probe     Probe                `key:"probe"`
	Dataplane Dataplane            `key:"dataplane"`
	Metrics   Metrics              `key:"metrics"`
	Control   Control              `key:"control"`
	StateDir  string               `key:"state_dir"`
	Log       Log                  `key:"log"`

	// DPCPUs and CPCPUs are Cores resolved against the topology by Load.
	DPCPUs []int `key:"-"`
	CPCPUs []int `key:"-"`
}

// Cores selects DP and CP cores: CPU lists or "auto".
type Cores struct {
	DP string `key:"dp"`
	CP string `key:"cp"`
}

// Scheduler holds the lending policy's tunables.
type Scheduler struct {
	SLO              AutoDuration `key:"slo"`
	SLOWindow        Duration     `key:"slo_window"`
	GuardBackoff     Duration     `key:"guard_backoff"`
	GuardBackoffMax  Duration     `key:"guard_backoff_max"`
	IdleThreshold    int          `key:"idle_threshold"`
	IdleThresholdMin int          `key:"idle_threshold_min"`
	IdleThresholdMax int          `key:"idle_threshold_max"`
	SliceMin         Duration     `key:"slice_min"`
	SliceMax         Duration     `key:"slice_max"`
	FlapLimit        int          `key:"flap_limit"`
	FlapWindow       Duration     `key:"flap_window"`
	HighLoad         float64      `key:"high_load"`
	Blockers         Blockers     `key:"blockers"`
}

// VCPU configures the CP pool.
type VCPU struct {
	Backend        string   `key:"backend"`
	CgroupName     string   `key:"cgroup_name"`
	Class          string   `key:"class"`
	Weight         int      `key:"weight"`
	WriterPriority int      `key:"writer_priority"`
	Rescan         Duration `key:"rescan"`
	Adopt          Adopt    `key:"adopt"`
}

// Adopt selects existing CP tasks.
type Adopt struct {
	Units    []string `key:"units"`
	Cgroups  []string `key:"cgroups"`
	Commands []string `key:"commands"`
	PIDs     []int    `key:"pids"`
}

// Probe configures the workload probe.
type Probe struct {
	Backend          string           `key:"backend"`
	Interfaces       []ProbeInterface `key:"interfaces"`
	CountersInterval Duration         `key:"counters_interval"`
	RingbufSize      Size             `key:"ringbuf_size"`
}

// ProbeInterface maps an interface's queue to the DP core it feeds.
type ProbeInterface struct {
	Iface string `key:"iface"`
	NetNS string `key:"netns"`
	Queue int    `key:"queue" default:"-1"`
	CPU   int    `key:"cpu"`
}

// Dataplane lists the DP loops and DPDK applications.
type Dataplane struct {
	Loops []Loop `key:"loops"`
	DPDK  []DPDK `key:"dpdk"`
	// SoftirqPriority is the SCHED_FIFO priority of each DP core's
	// ksoftirqd: 0 (auto) one above the highest DP thread there, so packet
	// work the kernel deferred to ksoftirqd is never starved by the loop
	// it feeds; -1 leaves ksoftirqd as the kernel made it.
	SoftirqPriority int `key:"softirq_priority"`
}

// Loop is one DP loop run by taichi.
type Loop struct {
	Name     string `key:"name"`
	CPU      int    `key:"cpu"`
	Iface    string `key:"iface"`
	NetNS    string `key:"netns"`
	Mode     string `key:"mode" default:"reflect"`
	OutIface string `key:"out_iface"`
	Priority int    `key:"priority" default:"50"`
}

// LoopConfig is the dataplane loop this entry configures.
func (l Loop) LoopConfig() dataplane.LoopConfig {
	return dataplane.LoopConfig{Name: l.Name, CPU: l.CPU, Iface: l.Iface, NetNS: l.NetNS,
		Mode: l.Mode, OutIface: l.OutIface, Priority: l.Priority}
}

// DPDK is a DPDK application whose lcores taichi pins.
type DPDK struct {
	Name    string   `key:"name"`
	Command []string `key:"command"`
	PID     int      `key:"pid"`
	// ThreadPattern selects the lcore threads; empty: dpdk.DefaultThreadPattern.
	ThreadPattern string `key:"thread_pattern"`
	CPUs          []int  `key:"cpus"`
	Priority      int    `key:"priority" default:"50"`
	IdleDemote    bool   `key:"idle_demote"`
	// NetNS launches Command inside this network namespace (where its
	// af_packet/af_xdp vdev interfaces live).
	NetNS string `key:"netns"`
	// IdleIfaces feed the idle detector; empty: the --vdev iface= arguments.
	IdleIfaces   []string `key:"idle_ifaces"`
	IdleInterval Duration `key:"idle_interval" default:"1ms"`
	IdleAfter    int      `key:"idle_after" default:"50"`
	// OVSUnixctl, for Open vSwitch with DPDK (set thread_pattern to its PMD
	// threads, ^pmd-c[0-9]+/id:[0-9]+$), is ovs-vswitchd's control socket:
	// idle detection then also reads the PMDs' own packet counters.
	OVSUnixctl string `key:"ovs_unixctl"`
	// OVSPMDMaxSleep (with OVSDB, its database socket) has taichi set OVS's
	// pmd-maxsleep by the policy: this sleep where the PMD cores may be
	// lent, busy polling where CP stays off them. 0 leaves it to OVS.
	OVSPMDMaxSleep Duration `key:"ovs_pmd_maxsleep"`
	OVSDB          string   `key:"ovs_db"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `key:"listen"`
}

// Control configures the control socket.
type Control struct {
	Socket string `key:"socket"`
	// Group, when set, may read status: the socket becomes 0660 with this
	// group. State changes stay root-only (the peer's uid, SO_PEERCRED).
	Group string `key:"group"`
}

// Log configures logging.
type Log struct {
	Level  string `key:"level"`
	Format string `key:"format"`
}

// Duration is a time.Duration written as "50us", "1s".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// AutoDuration is a positive duration, or "auto" (the zero value): the
// daemon derives it from the host at start.
type AutoDuration Duration

// Auto reports whether the value is left to the daemon.
func (a AutoDuration) Auto() bool { return a == 0 }

// D returns the duration (0 when auto).
func (a AutoDuration) D() time.Duration { return time.Duration(a) }

func (a AutoDuration) String() string {
	if a.Auto() {
		return "auto"
	}
	return time.Duration(a).String()
}

// Size is a byte count written as "64KiB", "4MiB" or a plain number.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}

// ParseSize parses "64KiB", "4MiB", "1000".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || fmt.Sprint(n) != num || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 64KiB, 4MiB or a byte count)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// ManagerConfig is the dpdk package's configuration for this application
// (the one conversion; the config's validation and the daemon both use it).
func (d DPDK) ManagerConfig() dpdk.Config {
	return dpdk.Config{
		Name: d.Name, Command: d.Command, NetNS: d.NetNS, PID: d.PID,
		ThreadPattern: d.ThreadPattern, CPUs: d.CPUs, Priority: d.Priority,
		IdleDemote: d.IdleDemote, IdleIfaces: d.IdleIfaces,
		IdleInterval: d.IdleInterval.D(), IdleAfter: d.IdleAfter,
		OVSUnixctl: d.OVSUnixctl, OVSPMDMaxSleep: d.OVSPMDMaxSleep.D(), OVSDB: d.OVSDB,
	}
}
