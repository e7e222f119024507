package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/taichi-sched/taichi/dataplane/dpdk"
)

// startDPDK launches or adopts each configured DPDK application, pins its
// lcores to their DP cores (SCHED_FIFO, outside the CP cgroup) and keeps
// them pinned; idle lcores are lent by demotion when configured. A guard
// process gives lent lcores back if the daemon dies.
func (d *Daemon) startDPDK(ctx context.Context, runCtx context.Context) error {
	exe, _ := os.Executable()
	for i, c := range d.cfg.Dataplane.DPDK {
		// A restarted daemon finds the application an earlier run launched.
		opts := []dpdk.Option{dpdk.WithLogger(d.log.With("dpdk", c.Name)),
			dpdk.WithPIDFile(filepath.Join(d.cfg.StateDir, "dpdk", c.Name+".pid")),
			dpdk.WithYieldGroup(d.cfg.VCPU.CgroupName + "-" + c.Name)}
		if exe != "" && !d.inProcessLoops {
			opts = append(opts, dpdk.WithGuard(exe, "dpdk", "guard"))
		}
		m, err := dpdk.New(c.ManagerConfig(), opts...)
		if err != nil {
			return fmt.Errorf("dataplane.dpdk[%d]: %w", i, err)
		}
		if err := m.Start(ctx); err != nil {
			return fmt.Errorf("dataplane.dpdk[%d] %s: %w", i, c.Name, err)
		}
		// No lending until the scheduler applies the policy to the core.
		_ = m.SetLending(false)
		d.dpdk = append(d.dpdk, m)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := m.Run(runCtx); err != nil && runCtx.Err() == nil {
				d.log.Warn("DPDK application stopped", "name", c.Name, "err", err)
			}
		}()
		st := m.Status()
		d.log.Info("DPDK lcores pinned", "name", c.Name, "pid", st.PID, "threads", len(st.Threads), "idle_demote", c.IdleDemote)
	}
	return nil
}

func (d *Daemon) stopDPDK() {
	for _, m := range d.dpdk {
		stop := m.Stop
		if d.startFailed && !m.LaunchedHere() {
			stop = m.Release // not started in this life: leave it running
		}
		if err := stop(); err != nil {
			d.log.Warn("stopping DPDK application", "name", m.Config().Name, "err", err)
		}
	}
	d.dpdk = nil
}

func (d *Daemon) dpdkStatus() []dpdk.Status {
	var out []dpdk.Status
	for _, m := range d.dpdk {
		out = append(out, m.Status())
	}
	return out
}

// setDPDKLending lets the DPDK applications with an lcore on cpu lend it
// when idle, or forbids it: the policy governs DPDK lending too.
func (d *Daemon) setDPDKLending(cpu int, on bool) error {
	var errs []error
	for _, m := range d.dpdk {
		if slices.Contains(m.Config().CPUs, cpu) {
			errs = append(errs, m.SetLending(on))
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) dpdkOn(cpu int) bool {
	for _, c := range d.cfg.Dataplane.DPDK {
		for _, x := range c.CPUs {
			if x == cpu {
				return true
			}
		}
	}
	return false
}
