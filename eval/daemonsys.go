package eval

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/topology"
)

// DaemonSystem is the taichi daemon as the benchmarks' System.
type DaemonSystem struct {
	D *daemon.Daemon
	// CPU measures the daemon's own CPU time (nil: unknown).
	CPU *DaemonCPU
}

var _ System = (*DaemonSystem)(nil)

// SetPolicy switches the daemon's policy.
// The switch is the daemon's work (an operator's request in production).
func (s *DaemonSystem) SetPolicy(ctx context.Context, name scheduler.PolicyName) (err error) {
	withDaemonLabel(ctx, func(context.Context) { err = s.D.SetPolicy(string(name)) })
	return err
}

// Place adopts pid into the daemon's CP pool.
// Adopting is the daemon's work (its rescan does it in production).
func (s *DaemonSystem) Place(pid int) error {
	var n int
	var err error
	withDaemonLabel(context.Background(), func(context.Context) { n, err = s.D.Adopt([]int{pid}) })
	if err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("pid %d not adopted", pid)
	}
	return nil
}

// Snapshot reads lent and harvested seconds from the daemon's status, the
// pool's CPU usage and the daemon's own CPU time.
func (s *DaemonSystem) Snapshot() (Snapshot, error) {
	snap, err := s.PollSnapshot()
	if err == nil && s.CPU != nil {
		snap.DaemonCPUS, snap.DaemonCoveredS, _ = s.CPU.Read() // -1 when unknown
	}
	return snap, err
}

// PollSnapshot is Snapshot without the daemon's CPU (unknown): reading it
// pauses the CPU profiler, which a loop polling for a condition must not
// do on every turn (see pollSnapshot).
func (s *DaemonSystem) PollSnapshot() (Snapshot, error) {
	st := s.D.Status()
	snap := Snapshot{At: time.Now(), CPOnDPS: st.Pool.HarvestedCPSeconds, CPCPUS: -1, DPBusyS: -1, DPStealS: stealSeconds(s.DPCores()),
		DaemonCPUS: -1, DaemonCoveredS: -1}
	snap.Reclaims = map[string]uint64{}
	for _, c := range st.Cores {
		if c.Role == "dp" {
			snap.LentS += c.LentSeconds
			for cause, n := range c.Reclaims {
				snap.Reclaims[cause] += n
			}
		}
	}
	if len(st.Loops) > 0 {
		snap.DPBusyS = 0
		snap.HaveDPHist = true
		for _, l := range st.Loops {
			snap.DPBusyS += l.Stats.Busy.Seconds()
			snap.Residence.Add(l.Stats.Residence)
			snap.Exposed.Add(l.Stats.Exposed)
			snap.Lead.Add(l.Stats.Lead)
		}
		snap.LoopClass = threadClass(st.Loops[0].TID)
		snap.RXStamp = st.Loops[0].Stats.RXStamp
	}
	for _, app := range st.DPDK {
		// A DPDK core is lent while its idle watcher has it demoted (the
		// engine's per-core lent time needs a taichi loop's events).
		if app.Idle != nil {
			snap.LentS += app.Idle.LentSeconds
		}
		for _, th := range app.Threads {
			if th.CPU >= 0 && snap.LoopClass == "" {
				snap.LoopClass = threadClass(th.TID)
			}
		}
	}
	if p := s.D.Pool(); p != nil {
		if u, err := p.Usage(); err == nil {
			snap.CPCPUS = u.Total.Seconds()
		}
	}
	snap.Blockers = confinedOf(st.Blockers)
	return snap, nil
}

// confinedOf folds the daemon's blocker record into one entry per command:
// its learnt back-off and strikes, the DP delay blamed on its processes,
// and whether any of them is confined now.
func confinedOf(st *daemon.BlockersStatus) []ConfinedCommand {
	if st == nil {
		return nil
	}
	var out []ConfinedCommand
	entry := func(comm string) *ConfinedCommand {
		i := slices.IndexFunc(out, func(c ConfinedCommand) bool { return c.Comm == comm })
		if i < 0 {
			out = append(out, ConfinedCommand{Comm: comm})
			i = len(out) - 1
		}
		return &out[i]
	}
	for _, c := range st.Commands {
		e := entry(c.Comm)
		e.Strikes, e.Backoff, e.Confined = c.Strikes, c.Backoff, c.Until != nil
	}
	for _, t := range st.Tasks {
		e := entry(t.Comm)
		e.BlamedMs += t.TotalMs
		e.Confined = e.Confined || t.ConfinedUntil != nil
	}
	return out
}

// SLO is the daemon's guard bound now.
func (s *DaemonSystem) SLO() time.Duration { return s.D.SLO().Value }

// SetSLO sets the daemon's guard bound; restore puts back the bound and
// its provenance (e.g. auto, with its measurement).
func (s *DaemonSystem) SetSLO(v time.Duration) (func() error, error) {
	prev := s.D.SLO()
	if err := s.D.SetSLO(v); err != nil {
		return nil, err
	}
	return func() error { return s.D.RestoreSLO(prev) }, nil
}

// threadClass names a thread's scheduling class ("SCHED_FIFO/50"), or ""
// when it cannot be read.
func threadClass(tid int) string {
	if tid <= 0 {
		return ""
	}
	c, err := linuxsched.Get(tid)
	if err != nil {
		return ""
	}
	if c.Policy == unix.SCHED_FIFO || c.Policy == unix.SCHED_RR {
		return c.String()
	}
	return linuxsched.PolicyName(c.Policy)
}

// DPCores are the daemon's DP cores.
func (s *DaemonSystem) DPCores() []int { return s.D.Config().DPCPUs }

// CPCores are the daemon's CP cores.
func (s *DaemonSystem) CPCores() []int { return s.D.Config().CPCPUs }

// DPPriority is the first DP loop's priority (the config default without loops).
func (s *DaemonSystem) DPPriority() int {
	if l := s.D.Config().Dataplane.Loops; len(l) > 0 && l[0].Priority > 0 {
		return l[0].Priority
	}
	return 50
}

// DaemonConfig loads the embedded defaults with the overlay a benchmark
// needs: its own CP cgroup name and state dir (so a running taichi is left
// alone), no metrics listener, and one reflect-mode DP loop on the
// testbed's DP interface, pinned to the first DP core. policy, cpClass
// (vcpu.class) and cpWeight (vcpu.weight, 0: default) may be empty.
func DaemonConfig(tb *testbed.Testbed, name, stateDir string, policy scheduler.PolicyName, cpClass string, cpWeight int) (*config.Config, error) {
	return daemonConfigWith(tb, name, stateDir, policy, cpClass, cpWeight, "")
}

// daemonConfigWith is DaemonConfig with extra YAML appended (top-level
// keys the overlay does not set itself, e.g. a dataplane without a loop).
func daemonConfigWith(tb *testbed.Testbed, name, stateDir string, policy scheduler.PolicyName, cpClass string, cpWeight int, extra string) (*config.Config, error) {
	topo, err := topology.Host()
	if err != nil {
		return nil, err
	}
	// Resolve the DP core the loop goes on the same way the daemon will.
	base, err := config.LoadBytes(nil, topo)
	if err != nil {
		return nil, err
	}
	if len(base.DPCPUs) == 0 {
		return nil, fmt.Errorf("eval: no DP core on this machine (need at least 2 CPUs)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "vcpu:\n  cgroup_name: %s\n", name)
	if cpClass != "" {
		fmt.Fprintf(&b, "  class: %s\n", cpClass)
	}
	if cpWeight > 0 {
		fmt.Fprintf(&b, "  weight: %d\n", cpWeight)
	}
	fmt.Fprintf(&b, "state_dir: %s\n", stateDir)
	fmt.Fprintf(&b, "metrics:\n  listen: \"\"\n")
	fmt.Fprintf(&b, "control:\n  socket: %s/taichi.sock\n", stateDir)
	if policy != "" {
		fmt.Fprintf(&b, "policy: %s\n", policy)
	}
	if tb != nil {
		fmt.Fprintf(&b, "dataplane:\n  loops:\n    - name: dp0\n      cpu: %d\n      iface: %s\n      netns: %s\n      mode: reflect\n",
			base.DPCPUs[0], tb.DPIface, tb.DPNS)
		fmt.Fprintf(&b, "probe:\n  interfaces:\n    - {iface: %s, netns: %s, queue: -1, cpu: %d}\n", tb.NICIn, tb.NICNS, base.DPCPUs[0])
	}
	b.WriteString(extra)
	return config.LoadBytes([]byte(b.String()), topo)
}
