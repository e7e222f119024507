package eval

import (
	"context"
	"fmt"
	"time"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/testbed"
)

// loopSystem is the daemon plus a DP loop the eval runs itself, for as long
// as the daemon does not run DP loops: each policy sets the loop's knobs the
// way that policy does (static: busy-poll, never yield; dynamic: yield after
// one empty poll; taichi: the configured idle threshold and minimum slice).
type loopSystem struct {
	*DaemonSystem
	loop   *dataplane.Loop
	sched  config.Scheduler
	stop   context.CancelFunc
	done   chan error
	policy string
}

func startLocalLoop(ctx context.Context, ds *DaemonSystem, tb *testbed.Testbed) (*loopSystem, error) {
	cfg := ds.D.Config()
	loop, err := dataplane.NewLoop(dataplane.LoopConfig{
		Name: "dp0", CPU: cfg.DPCPUs[0], Iface: tb.DPIface, NetNS: tb.DPNS,
		Mode: dataplane.ModeReflect, Priority: ds.DPPriority(),
	})
	if err != nil {
		return nil, err
	}
	s := &loopSystem{DaemonSystem: ds, loop: loop, sched: cfg.Scheduler, done: make(chan error, 1)}
	s.knobs(cfg.Policy)
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() { s.done <- loop.Run(runCtx) }()
	select {
	case <-loop.Ready():
		return s, nil
	case err := <-s.done:
		stop()
		return nil, fmt.Errorf("eval: DP loop: %w", err)
	case <-time.After(10 * time.Second):
		stop()
		return nil, fmt.Errorf("eval: DP loop not ready after 10s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

func (s *loopSystem) knobs(policy string) {
	c := s.loop.Control()
	switch policy {
	case config.PolicyStatic:
		c.SetYieldAfter(-1)
		c.SetSlice(dataplane.DefaultSlice)
	case config.PolicyDynamic:
		c.SetYieldAfter(1)
		c.SetSlice(dataplane.DefaultSlice)
	default:
		c.SetYieldAfter(s.sched.IdleThreshold)
		c.SetSlice(s.sched.SliceMin.D())
	}
	s.policy = policy
}

// SetPolicy applies the daemon's slow path, then the loop's knobs.
func (s *loopSystem) SetPolicy(ctx context.Context, name string) error {
	if err := s.DaemonSystem.SetPolicy(ctx, name); err != nil {
		return err
	}
	s.knobs(name)
	return nil
}

// Snapshot adds the loop's busy time to the daemon's counters.
func (s *loopSystem) Snapshot() (Snapshot, error) {
	snap, err := s.DaemonSystem.Snapshot()
	snap.DPBusyS = s.loop.Stats().Busy.Seconds()
	return snap, err
}

func (s *loopSystem) close() error {
	s.stop()
	return <-s.done
}
