package eval

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/testbed"
)

// The data planes a bench can run.
const (
	// DPLoop is taichi's own DP loop, reflecting on the testbed's DP port.
	DPLoop = "loop"
	// DPOVS is Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk),
	// started privately on the testbed and adopted by the daemon: its PMD
	// thread is the DP, and it switches between the DP port and the sink.
	DPOVS = "ovs"
)

// DPKinds lists the data planes in the order the CLI shows them.
var DPKinds = []string{DPLoop, DPOVS}

// CheckDP rejects an unknown data plane, naming the valid ones.
func CheckDP(dp string) error {
	if !slices.Contains(DPKinds, dp) {
		return fmt.Errorf("dp: unknown %q (want %s)", dp, strings.Join(DPKinds, " or "))
	}
	return nil
}

// SetupOVSMaxSleep is the operators' alternative to taichi on an OVS-DPDK
// DPU: OVS's own load-based PMD sleep (other_config:pmd-maxsleep=100µs, the
// value NVIDIA's DPU software sets) with CP allowed on the PMD core and no
// lending by taichi. The daemon runs the dynamic policy (its cpuset admits
// CP to the PMD core) with DPDK lending held, so the PMD keeps the
// static class (SCHED_OTHER nice -20, strong weight) and sleeps by itself.
const SetupOVSMaxSleep scheduler.PolicyName = "ovs-maxsleep"

// OVSPeerMaxSleep is the PMD sleep the ovs-maxsleep setup uses.
const OVSPeerMaxSleep = 100 * time.Microsecond

// OVSLendingMaxSleep is the PMD sleep under taichi's lending policies:
// shorter than the peer's, because an idle PMD's core is lent anyway and
// the sleep only has to cover gaps within traffic. Each sleep is a packet's
// wait: taichi's ping p99 was 323 µs at 100 µs, 153-164 µs at 20-50 µs
// (single runs, static 85-110 µs).
const OVSLendingMaxSleep = 50 * time.Microsecond

// ovsSystem is the daemon with a private OVS as its DPDK application.
type ovsSystem struct {
	*DaemonSystem
	inst *ovs.Instance
}

var _ System = (*ovsSystem)(nil)

// SetPolicy applies a setup. static: OVS busy-polls, CP stays off the PMD
// core. ovs-maxsleep: OVS sleeps by its load (pmd-maxsleep=100µs), CP may
// run on the PMD core, taichi lends nothing. dynamic and taichi: OVS sleeps
// at most OVSLendingMaxSleep, and taichi lends the idle PMD's core (cpu.idle group, after
// OVSIdleAfter ms without a packet) and keeps the PMD SCHED_FIFO while not
// lent, so it preempts CP when it wakes; taichi adds the probe's early
// reclaim and blocker confinement. DPDK lending is held before CP may reach
// the PMD core, and the PMD sleep is set before the policy, so no run
// starts in a mix of two setups.
func (s *ovsSystem) SetPolicy(ctx context.Context, name scheduler.PolicyName) error {
	// Busy polling only where CP stays off the PMD core; wherever CP may
	// run there, OVS sleeps by its load, under taichi's lending too (a
	// SCHED_FIFO poller that never sleeps meets RT throttling).
	policy, sleep, hold := name, OVSLendingMaxSleep, false
	if name == scheduler.PolicyStatic {
		sleep = 0
	}
	if name == SetupOVSMaxSleep {
		policy, sleep, hold = scheduler.PolicyDynamic, OVSPeerMaxSleep, true
	}
	if err := s.D.HoldDPDKLending(hold); err != nil {
		return err
	}
	if err := s.inst.SetMaxSleep(ctx, sleep); err != nil {
		return fmt.Errorf("ovs: pmd-maxsleep: %w", err)
	}
	return s.DaemonSystem.SetPolicy(ctx, policy)
}

// DPPriority is the PMD's SCHED_FIFO priority while CP may run on its core.
func (s *ovsSystem) DPPriority() int {
	if d := s.D.Config().Dataplane.DPDK; len(d) > 0 && d[0].Priority > 0 {
		return d[0].Priority
	}
	return s.DaemonSystem.DPPriority()
}

// StartOVS starts a private OVS-DPDK in the testbed's dp namespace, its
// PMD on dpCPU and its EAL control threads on cpCPU, switching between the
// DP port (towards the generator) and the DP's out port (towards the
// sink): frames leave each port addressed to the host behind it. The sink
// gets a route back to the generator through OVS, so the sink's kernel
// answers ping.
// runDir must not exist yet (Stop removes it).
func StartOVS(ctx context.Context, tb *testbed.Testbed, runDir string, dpCPU, cpCPU int) (*ovs.Instance, error) {
	inst, err := ovs.Start(ctx, ovs.Options{
		Name:      "taichi-eval-" + tb.Prefix,
		RunDir:    runDir,
		NetNS:     tb.DPNS,
		PMDCPUs:   []int{dpCPU},
		LcoreCPUs: []int{cpCPU},
	})
	if err != nil {
		return nil, fmt.Errorf("ovs: %w", err)
	}
	err = inst.Patch(ctx, "br-eval",
		ovs.Port{Iface: tb.DPIface, PeerMAC: tb.GenMAC},
		ovs.Port{Iface: tb.DPOutIface, PeerMAC: tb.SinkMAC})
	if err == nil {
		err = tb.RouteSinkReplies(ctx)
	}
	if err != nil {
		inst.Stop()
		return nil, fmt.Errorf("ovs: %w", err)
	}
	return inst, nil
}

// OVSIdleAfter is how many 1 ms counter polls without a packet lend the
// PMD's core in the OVS bench. The config's default, 50, never lent in the
// 40 ms gaps of the on/off traffic at load 0.3 (taichi started 8 VMs at
// 1.12× static's speed with 1, 0.75× with 5). Both lending policies use it;
// only taichi has the probe to reclaim before a packet reaches the port.
const OVSIdleAfter = 1

// OVSDataplaneYAML is the daemon config (dataplane and probe sections)
// that adopts the OVS instance as the daemon's DPDK application: its PMD thread on dpCPU, lent when the DP ports receive
// nothing and the policy lends, with the XDP probe on the NIC's ingress
// warning the core (policies that use the probe reclaim at its warning).
func OVSDataplaneYAML(inst *ovs.Instance, tb *testbed.Testbed, dpCPU int) string {
	return fmt.Sprintf(`dataplane:
  dpdk:
    - name: ovs
      pid: %d
      thread_pattern: '%s'
      ovs_unixctl: %s
      cpus: [%d]
      idle_demote: true
      idle_after: %d
      idle_ifaces: [%s, %s]
probe:
  backend: xdp
  interfaces:
    - {iface: %s, netns: %s, queue: -1, cpu: %d}
`, inst.PID(), ovs.PMDThreadPattern, inst.UnixctlPath(), dpCPU, OVSIdleAfter, tb.DPIface, tb.DPOutIface, tb.NICIn, tb.NICNS, dpCPU)
}

// ovsVersion is the first line of ovs-vswitchd's --version ("ovs-vswitchd
// (Open vSwitch) 3.1.0"), or "" when it cannot be run.
func ovsVersion() string {
	out, err := exec.Command(ovs.VswitchdBinary, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
