package config

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/safename"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/topology"
	"github.com/taichi-sched/taichi/vcpu"
)

// Probe backend names.
const (
	ProbeXDP      = probe.BackendXDP
	ProbeCounters = probe.BackendCounters
	ProbeKmod     = "kmod"
	ProbeNone     = "none"
)

// Names accepted by the enumerated keys.
var (
	VCPUBackends  = []string{"auto", "cgroup", "kmod"}
	VCPUClasses   = []string{vcpu.ClassIdle, vcpu.ClassLowWeight}
	ProbeBackends = []string{ProbeXDP, ProbeCounters, ProbeKmod, ProbeNone}
	LoopModes     = []string{dataplane.ModeReflect, dataplane.ModeForward}
	LogLevels     = []string{"debug", "info", "warn", "error"}
	LogFormats    = []string{"text", "json"}
)

type checker struct{ errs Errors }

func (c *checker) fail(key, format string, args ...any) {
	c.errs = append(c.errs, fielderr.Error{Key: key, Problem: fmt.Sprintf(format, args...)})
}

func (c *checker) oneOf(key, val string, allowed []string) {
	if !slices.Contains(allowed, val) {
		c.fail(key, "unknown value %q (want one of %s)", val, strings.Join(allowed, ", "))
	}
}

func (c *checker) positive(key string, d Duration) {
	if d <= 0 {
		c.fail(key, "must be positive, got %s", d)
	}
}

func (c *checker) intRange(key string, v, lo, hi int) {
	if v < lo || v > hi {
		c.fail(key, "must be between %d and %d, got %d", lo, hi, v)
	}
}

func (c *checker) fifoPriority(key string, prio int) {
	if err := linuxsched.CheckFIFOPriority(prio); err != nil {
		c.fail(key, "%v", err)
	}
}

// validate resolves the core split and checks every key; it fills DPCPUs
// and CPCPUs only when the cores are valid.
func (cfg *Config) validate(topo *topology.Topology) Errors {
	c := &checker{}
	cfg.resolveCores(c, topo)
	c.validateScheduler(cfg)
	c.blockers(cfg.Scheduler.Blockers)
	c.vcpu(cfg.VCPU)
	c.probe(cfg)
	c.dataplane(cfg)
	c.endpoints(cfg)
	return c.errs
}

// vcpu checks the CP pool and its adoption selectors.
func (c *checker) vcpu(v VCPU) {
	c.oneOf("vcpu.backend", v.Backend, VCPUBackends)
	opts := vcpu.Options{Name: v.CgroupName, Class: v.Class, Weight: v.Weight, WriterPriority: v.WriterPriority}
	c.packageErrors("vcpu.", opts.Validate(), map[string]string{"name": "cgroup_name"})
	if v.WriterPriority < linuxsched.MinFIFOPriority {
		// vcpu takes 0 and below for a SCHED_OTHER writer; the daemon's
		// writer is always SCHED_FIFO.
		c.fifoPriority("vcpu.writer_priority", v.WriterPriority)
	}
	c.positive("vcpu.rescan", v.Rescan)
	c.uniqueStrings("vcpu.adopt.units", v.Adopt.Units, func(key, u string) {
		if err := vcpu.CheckUnit(u); err != nil {
			c.fail(key, "%v", err)
		}
	})
	c.uniqueStrings("vcpu.adopt.cgroups", v.Adopt.Cgroups, func(key, p string) {
		if err := vcpu.CheckCgroupPath(p); err != nil {
			c.fail(key, "%v", err)
		}
	})
	c.uniqueStrings("vcpu.adopt.commands", v.Adopt.Commands, func(key, re string) {
		if re == "" {
			c.fail(key, "empty regular expression")
		} else if _, err := regexp.Compile(re); err != nil {
			c.fail(key, "invalid regular expression: %v", err)
		}
	})
	seenPID := map[int]bool{}
	for i, pid := range v.Adopt.PIDs {
		key := fmt.Sprintf("vcpu.adopt.pids[%d]", i)
		if pid <= 1 {
			c.fail(key, "must be a process id above 1, got %d", pid)
		} else if seenPID[pid] {
			c.fail(key, "duplicate pid %d", pid)
		}
		seenPID[pid] = true
	}
}

// probe checks the workload probe and its interface map.
func (c *checker) probe(cfg *Config) {
	p := cfg.Probe
	c.oneOf("probe.backend", p.Backend, ProbeBackends)
	c.positive("probe.counters_interval", p.CountersInterval)
	// The kernel sizes a BPF ring buffer in whole pages: 4 KiB on x86_64,
	// up to 64 KiB on arm64.
	if page := os.Getpagesize(); p.RingbufSize < Size(page) || p.RingbufSize&(p.RingbufSize-1) != 0 {
		c.fail("probe.ringbuf_size", "must be a power of two of at least the page size (%d bytes here), got %d bytes", page, p.RingbufSize)
	}
	seenQ := map[string]bool{}
	for i, pi := range p.Interfaces {
		key := fmt.Sprintf("probe.interfaces[%d]", i)
		c.ifaceName(key+".iface", pi.Iface)
		c.netnsName(key+".netns", pi.NetNS)
		if pi.Queue < -1 {
			c.fail(key+".queue", "must be -1 (all queues) or a queue number, got %d", pi.Queue)
		}
		c.dpCore(key+".cpu", pi.CPU, cfg.DPCPUs)
		id := pi.NetNS + "/" + pi.Iface + "/" + strconv.Itoa(pi.Queue)
		if seenQ[id] {
			c.fail(key, "duplicate entry for iface %q queue %d", pi.Iface, pi.Queue)
		}
		seenQ[id] = true
	}
}

// dataplane checks DP loops and DPDK applications: names unique across
// both, each DP core used by one of them, one probed interface per loop.
func (c *checker) dataplane(cfg *Config) {
	if p := cfg.Dataplane.SoftirqPriority; p != -1 && p != 0 && linuxsched.CheckFIFOPriority(p) != nil {
		c.fail("dataplane.softirq_priority", "%d: want -1 (leave ksoftirqd alone), 0 (auto) or a SCHED_FIFO priority %d..%d", p, linuxsched.MinFIFOPriority, linuxsched.MaxFIFOPriority)
	}
	cpuOwner := map[int]string{}
	names := map[string]bool{}
	claim := func(key string, cpu int) {
		if owner, ok := cpuOwner[cpu]; ok {
			c.fail(key, "CPU %d already used by %s", cpu, owner)
			return
		}
		cpuOwner[cpu] = key
	}
	name := func(key, n string) {
		if !c.pathName(key, n) {
			return
		} else if names[n] {
			c.fail(key, "duplicate name %q", n)
		}
		names[n] = true
	}
	for i, l := range cfg.Dataplane.Loops {
		key := fmt.Sprintf("dataplane.loops[%d]", i)
		name(key+".name", l.Name)
		if c.dpCore(key+".cpu", l.CPU, cfg.DPCPUs) {
			claim(key+".cpu", l.CPU)
		}
		// Name and core are checked here (unique, a DP core).
		c.packageErrors(key+".", l.LoopConfig().Check(), map[string]string{"name": "", "cpu": ""})
		if l.Mode != dataplane.ModeForward && l.OutIface != "" {
			c.fail(key+".out_iface", "only used in forward mode")
		}
		if l.Priority < linuxsched.MinFIFOPriority {
			// The loop package takes 0 (its default) and below (no
			// SCHED_FIFO); a configured loop always has a priority.
			c.fifoPriority(key+".priority", l.Priority)
		}
	}
	for i, dp := range cfg.Dataplane.DPDK {
		key := fmt.Sprintf("dataplane.dpdk[%d]", i)
		name(key+".name", dp.Name)
		c.dpdkApp(key, dp)
		for j, cpu := range dp.CPUs {
			k := fmt.Sprintf("%s.cpus[%d]", key, j)
			if c.dpCore(k, cpu, cfg.DPCPUs) {
				claim(k, cpu)
			}
		}
	}

	if cfg.Probe.Backend == ProbeXDP || cfg.Probe.Backend == ProbeCounters {
		probed := map[string]string{}
		for i, l := range cfg.Dataplane.Loops {
			iface, ns := cfg.ProbeInterfaceFor(l)
			id := ns + "/" + iface
			if other, ok := probed[id]; ok {
				c.fail(fmt.Sprintf("dataplane.loops[%d]", i), "its probe interface %q (netns %q) already feeds loop %s; each DP loop needs its own probed interface", iface, ns, other)
			}
			probed[id] = l.Name
		}
	}
}

// endpoints checks where taichi listens and keeps state, and its logging.
func (c *checker) endpoints(cfg *Config) {
	if cfg.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(cfg.Metrics.Listen); err != nil {
			c.fail("metrics.listen", "want host:port, got %q", cfg.Metrics.Listen)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			c.fail("metrics.listen", "invalid port %q", port)
		}
	}
	if !filepath.IsAbs(cfg.Control.Socket) {
		c.fail("control.socket", "must be an absolute path, got %q", cfg.Control.Socket)
	} else if len(cfg.Control.Socket) > 107 {
		c.fail("control.socket", "path longer than a unix socket allows (107 bytes)")
	}
	if g := cfg.Control.Group; g != "" {
		if _, err := user.LookupGroup(g); err != nil {
			c.fail("control.group", "no such group %q on this host", g)
		}
	}
	if !filepath.IsAbs(cfg.StateDir) {
		c.fail("state_dir", "must be an absolute path, got %q", cfg.StateDir)
	}
	c.oneOf("log.level", cfg.Log.Level, LogLevels)
	c.oneOf("log.format", cfg.Log.Format, LogFormats)
}

func (c *checker) uniqueStrings(key string, vals []string, each func(key, v string)) {
	seen := map[string]bool{}
	for i, v := range vals {
		k := fmt.Sprintf("%s[%d]", key, i)
		each(k, v)
		if seen[v] {
			c.fail(k, "duplicate entry %q", v)
		}
		seen[v] = true
	}
}

// dpdkApp checks a DPDK application with the dpdk package's own validation
// (name and cgroup-free checks; DP core membership is checked here).
func (c *checker) dpdkApp(key string, dp DPDK) {
	mc := dp.ManagerConfig()
	// The name is checked with the loops' names (unique across both).
	c.packageErrors(key+".", mc.Validate(), map[string]string{"name": ""})
}

// pathName checks a name that becomes a file or cgroup directory name
// (the same check the packages that build those paths apply).
func (c *checker) pathName(key, name string) bool {
	if err := safename.Check(name); err != nil {
		c.fail(key, "%v", err)
		return false
	}
	return true
}

// netnsName checks an optional network namespace name (/run/netns/NAME).
func (c *checker) netnsName(key, name string) {
	if name != "" {
		c.pathName(key, name)
	}
}

func (c *checker) ifaceName(key, name string) {
	if err := safename.Iface(name); err != nil {
		c.fail(key, "%v", err)
	}
}

func (c *checker) dpCore(key string, cpu int, dp []int) bool {
	if !slices.Contains(dp, cpu) {
		c.fail(key, "CPU %d is not a DP core (cores.dp = %s)", cpu, cpuset.Format(dp))
		return false
	}
	return true
}

func (cfg *Config) resolveCores(c *checker, topo *topology.Topology) {
	autoDP, autoCP := topo.DefaultSplit()
	parse := func(key, val string, auto []int) ([]int, bool) {
		if strings.TrimSpace(val) == "auto" {
			return auto, true
		}
		cpus, err := cpuset.Parse(val)
		if err != nil {
			c.fail(key, "%v", err)
			return nil, false
		}
		ok := true
		for _, cpu := range cpus {
			if !topo.IsOnline(cpu) {
				c.fail(key, "CPU %d is not online (online: %s)", cpu, cpuset.Format(topo.Online))
				ok = false
			}
		}
		return cpus, ok
	}
	dp, okDP := parse("cores.dp", cfg.Cores.DP, autoDP)
	var cp []int
	okCP := true
	if strings.TrimSpace(cfg.Cores.CP) == "auto" {
		// CP = every online CPU that is not DP.
		for _, cpu := range topo.Online {
			if !slices.Contains(dp, cpu) {
				cp = append(cp, cpu)
			}
		}
	} else {
		cp, okCP = parse("cores.cp", cfg.Cores.CP, autoCP)
	}
	if !okDP || !okCP {
		return
	}
	for _, cpu := range dp {
		if slices.Contains(cp, cpu) {
			c.fail("cores.cp", "CPU %d is in both cores.dp and cores.cp", cpu)
			return
		}
	}
	if len(cp) == 0 {
		c.fail("cores.cp", "no CP core left (taichi and the control plane need at least one)")
		return
	}
	cfg.DPCPUs, cfg.CPCPUs = dp, cp
}

// ProbeInterfaceFor is the interface (and its netns) whose probe warns loop
// l: the probe.interfaces entry for l's core, else l's own RX interface.
func (cfg *Config) ProbeInterfaceFor(l Loop) (iface, netns string) {
	for _, pi := range cfg.Probe.Interfaces {
		if pi.CPU == l.CPU {
			return pi.Iface, pi.NetNS
		}
	}
	return l.Iface, l.NetNS
}

// packageErrors reports a package validator's errors under prefix: each
// *fielderr.Error at prefix+its key, renamed by keys where the config
// names it otherwise (to "": checked here already, not reported twice),
// anything else at the prefix itself.
func (c *checker) packageErrors(prefix string, err error, keys map[string]string) {
	fields, others := fielderr.Split(err)
	for _, fe := range fields {
		key, renamed := keys[fe.Key]
		if !renamed {
			key = fe.Key
		}
		if key != "" {
			c.fail(prefix+key, "%s", fe.Problem)
		}
	}
	for _, e := range others {
		c.fail(strings.TrimSuffix(prefix, "."), "%v", e)
	}
}
