// Package dpdk runs unmodified DPDK applications as taichi data-plane work:
// it launches a DPDK command line or adopts a running process, finds its
// lcore threads under /proc/PID/task by name, pins each to its configured DP
// core (outside the CP cpuset), verifies and re-applies that placement, and
// lends the core of a busy-polling lcore to CP without touching the
// application.
//
// Each lcore lives for good in its DP core's root-level cpu cgroup
// (internal/coreyield), and its class follows the core's state: lending not
// allowed, SCHED_OTHER nice -20 in a heavy group (no stray task takes the
// core, no RT throttling); allowed and not lent, SCHED_FIFO; lent, SCHED_OTHER
// in the group made idle (cpu.idle=1), so CP from any session gets the core
// (SCHED_IDLE alone leaves a poller about half of it under autogroups). One
// sched_setattr back to SCHED_FIFO reclaims the core. Without a v1 cpu
// hierarchy lending falls back to SCHED_IDLE and Status.YieldDegraded says
// why.
//
// Crash behaviour: the application never depends on taichi. With a guard
// (WithGuard, `taichi run` sets one) a daemon that dies while an lcore is
// lent is noticed at once: the guard clears the group's idleness and makes
// the lcore SCHED_FIFO again, so it never stays starved. Without one the
// lcore keeps polling in its idle group until a Manager starts again and
// its first Reconcile re-applies every lcore's state. Stop and Release put
// the lcores back where they would be without taichi (their original cpu
// cgroup, SCHED_OTHER, still on their CPUs) and remove the groups.
package dpdk

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/safename"
)

// DefaultThreadPattern matches the worker lcore threads EAL creates:
// "rte-worker-N" (DPDK 22.11 as packaged by Debian) and "lcore-worker-N"
// (other releases). The main lcore keeps the process name and is not matched:
// it runs the application's control loop and belongs on a CP core.
const DefaultThreadPattern = `^(rte|lcore)-worker-[0-9]+$`

// maxUnixPath is the longest unix socket path (sockaddr_un.sun_path minus the NUL).
const maxUnixPath = 107

// Defaults for the optional durations and counts.
const (
	DefaultReconcileInterval = time.Second
	DefaultStopTimeout       = 5 * time.Second
	DefaultIdleInterval      = time.Millisecond
	DefaultIdleAfter         = 50
)

// Config describes one DPDK application under taichi. Exactly one of Command
// (launch) and PID (adopt) is set. The struct is pure data: Validate checks it
// without touching the system; Manager applies it.
type Config struct {
	// Name identifies the application in status and errors.
	Name string `yaml:"name" mapstructure:"name" json:"name"`
	// Command is a DPDK command line to launch (argv, no shell).
	Command []string `yaml:"command" mapstructure:"command" json:"command,omitempty"`
	// NetNS, when set, launches Command inside this named network namespace
	// (/run/netns/NAME), where its af_packet/af_xdp vdev interfaces live.
	NetNS string `yaml:"netns" mapstructure:"netns" json:"netns,omitempty"`
	// PID adopts a running DPDK process instead of launching one.
	PID int `yaml:"pid" mapstructure:"pid" json:"pid,omitempty"`
	// ThreadPattern is a regular expression on /proc/PID/task/TID/comm
	// selecting the lcore threads to pin; empty means DefaultThreadPattern.
	ThreadPattern string `yaml:"thread_pattern" mapstructure:"thread_pattern" json:"thread_pattern,omitempty"`
	// CPUs are the DP cores, assigned to the matched lcore threads in order
	// (threads sorted by the number in their name, then by TID).
	CPUs []int `yaml:"cpus" mapstructure:"cpus" json:"cpus"`
	// Priority is the lcore threads' SCHED_FIFO priority (1..99).
	Priority int `yaml:"priority" mapstructure:"priority" json:"priority"`
	// ReconcileInterval is how often pinning is verified and re-applied.
	ReconcileInterval time.Duration `yaml:"reconcile_interval" mapstructure:"reconcile_interval" json:"reconcile_interval,omitempty"`
	// StopTimeout bounds the wait between SIGTERM and SIGKILL for a
	// launched application.
	StopTimeout time.Duration `yaml:"stop_timeout" mapstructure:"stop_timeout" json:"stop_timeout,omitempty"`

	// IdleDemote lends the lcores' cores while their queues are idle.
	IdleDemote bool `yaml:"idle_demote" mapstructure:"idle_demote" json:"idle_demote,omitempty"`
	// IdleIfaces are the interfaces (in the application's network namespace)
	// whose rx_packets counters feed the lcores. Empty means the iface= of
	// every --vdev on the application's command line (af_packet, af_xdp).
	IdleIfaces []string `yaml:"idle_ifaces" mapstructure:"idle_ifaces" json:"idle_ifaces,omitempty"`
	// IdleInterval is the counter polling period.
	IdleInterval time.Duration `yaml:"idle_interval" mapstructure:"idle_interval" json:"idle_interval,omitempty"`
	// IdleAfter is how many intervals without new packets demote the lcores.
	IdleAfter int `yaml:"idle_after" mapstructure:"idle_after" json:"idle_after,omitempty"`
	// OVSUnixctl, for Open vSwitch, is ovs-vswitchd's unixctl socket: idle
	// detection also reads the packets its PMDs on CPUs received.
	OVSUnixctl string `yaml:"ovs_unixctl" mapstructure:"ovs_unixctl" json:"ovs_unixctl,omitempty"`
	// OVSPMDMaxSleep, when positive, has taichi set OVS's
	// other_config:pmd-maxsleep through OVSDB (its database socket) by the
	// policy: this sleep where the PMD cores may be lent, 0 (busy polling)
	// where CP stays off them; OVS's own value is put back on stop.
	OVSPMDMaxSleep time.Duration `yaml:"ovs_pmd_maxsleep" mapstructure:"ovs_pmd_maxsleep" json:"ovs_pmd_maxsleep,omitempty"`
	OVSDB          string        `yaml:"ovs_db" mapstructure:"ovs_db" json:"ovs_db,omitempty"`
}

// Validate checks the configuration and returns every problem, each a
// *fielderr.Error naming its key below the application ("cpus[1]: ..."), joined into one error.
// The daemon's config validation calls it too, so the two agree.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fielderr.New(field, format, args...))
	}
	if err := safename.Check(c.Name); err != nil {
		bad("name", "%v", err)
	}
	switch {
	case len(c.Command) == 0 && c.PID == 0:
		bad("command", "set command (launch) or pid (adopt)")
	case len(c.Command) > 0 && c.PID != 0:
		bad("pid", "set either command or pid, not both")
	case len(c.Command) > 0 && strings.TrimSpace(c.Command[0]) == "":
		bad("command[0]", "program must be set")
	case c.PID < 0 || c.PID == 1:
		bad("pid", "%d: not a usable process id", c.PID)
	}
	if c.NetNS != "" && c.PID != 0 {
		bad("netns", "only for a launched command (an adopted process already has its namespace)")
	}
	if c.NetNS != "" {
		if err := safename.Check(c.NetNS); err != nil {
			bad("netns", "%v", err)
		}
	}
	if c.ThreadPattern != "" {
		if _, err := regexp.Compile(c.ThreadPattern); err != nil {
			bad("thread_pattern", "%v", err)
		}
	}
	if len(c.CPUs) == 0 {
		bad("cpus", "at least one DP core is needed")
	}
	seen := map[int]int{}
	for i, cpu := range c.CPUs {
		field := fmt.Sprintf("cpus[%d]", i)
		if cpu < 0 {
			bad(field, "%d: must be >= 0", cpu)
			continue
		}
		if j, dup := seen[cpu]; dup {
			bad(field, "CPU %d already given at cpus[%d]", cpu, j)
		}
		seen[cpu] = i
	}
	if err := linuxsched.CheckFIFOPriority(c.Priority); err != nil {
		bad("priority", "%v", err)
	}
	if c.OVSUnixctl != "" && (!filepath.IsAbs(c.OVSUnixctl) || len(c.OVSUnixctl) > maxUnixPath) {
		bad("ovs_unixctl", "%q: want the absolute path of ovs-vswitchd's unixctl socket (at most %d bytes)", c.OVSUnixctl, maxUnixPath)
	}
	if c.OVSPMDMaxSleep < 0 || c.OVSPMDMaxSleep > 10*time.Millisecond {
		bad("ovs_pmd_maxsleep", "%v: want 0 (leave OVS's sleep alone) up to 10ms (OVS's cap)", c.OVSPMDMaxSleep)
	}
	if c.OVSPMDMaxSleep > 0 && c.OVSDB == "" {
		bad("ovs_db", "ovs_pmd_maxsleep needs the OVS database socket (e.g. /var/run/openvswitch/db.sock)")
	}
	if c.OVSDB != "" && (!filepath.IsAbs(c.OVSDB) || len(c.OVSDB) > maxUnixPath) {
		bad("ovs_db", "%q: want the absolute path of the OVS database socket (at most %d bytes)", c.OVSDB, maxUnixPath)
	}
	if c.ReconcileInterval < 0 {
		bad("reconcile_interval", "%v: must not be negative", c.ReconcileInterval)
	}
	if c.StopTimeout < 0 {
		bad("stop_timeout", "%v: must not be negative", c.StopTimeout)
	}
	if c.IdleInterval < 0 {
		bad("idle_interval", "%v: must not be negative", c.IdleInterval)
	}
	if c.IdleAfter < 0 {
		bad("idle_after", "%d: must not be negative", c.IdleAfter)
	}
	if c.IdleDemote && len(c.IdleIfaces) == 0 && len(c.Command) > 0 && len(VdevIfaces(c.Command)) == 0 {
		bad("idle_ifaces", "idle_demote needs the interfaces whose counters show the lcores' traffic (none given, no --vdev ...,iface=X in command)")
	}
	for i, name := range c.IdleIfaces {
		if err := safename.Iface(name); err != nil {
			bad(fmt.Sprintf("idle_ifaces[%d]", i), "%v", err)
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy with the optional fields filled in.
func (c Config) withDefaults() Config {
	if c.ThreadPattern == "" {
		c.ThreadPattern = DefaultThreadPattern
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.IdleInterval == 0 {
		c.IdleInterval = DefaultIdleInterval
	}
	if c.IdleAfter == 0 {
		c.IdleAfter = DefaultIdleAfter
	}
	c.CPUs = append([]int(nil), c.CPUs...)
	c.Command = append([]string(nil), c.Command...)
	c.IdleIfaces = append([]string(nil), c.IdleIfaces...)
	return c
}

// FilePrefix returns the EAL --file-prefix of a DPDK command line ("rte"
// when absent), which names the runtime directory /var/run/dpdk/<prefix>.
func FilePrefix(argv []string) string {
	for i, a := range argv {
		if a == "--" {
			break // application arguments follow
		}
		if v, ok := strings.CutPrefix(a, "--file-prefix="); ok {
			return v
		}
		if a == "--file-prefix" && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return "rte"
}

// VdevIfaces returns the kernel interfaces a DPDK command line's virtual
// devices attach to: the iface= argument of each --vdev (net_af_packet,
// net_af_xdp), in order.
func VdevIfaces(argv []string) []string {
	var out []string
	for i, a := range argv {
		if a == "--" {
			break
		}
		var spec string
		switch {
		case strings.HasPrefix(a, "--vdev="):
			spec = strings.TrimPrefix(a, "--vdev=")
		case a == "--vdev" && i+1 < len(argv):
			spec = argv[i+1]
		default:
			continue
		}
		for kv := range strings.SplitSeq(spec, ",") {
			if v, ok := strings.CutPrefix(kv, "iface="); ok && v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}
