package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/dataplane/dpdk"
	"github.com/taichi-sched/taichi/probe"
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
		if err := d.startDPDKProbes(ctx, m); err != nil {
			return fmt.Errorf("dataplane.dpdk[%d] %s: %w", i, c.Name, err)
		}
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
	for _, p := range d.dpdkProbes {
		if err := p.Stop(); err != nil {
			d.log.Warn("stopping a DPDK core's probe", "err", err)
		}
	}
	d.dpdkProbes, d.dpdkWake = nil, nil
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
// when idle, where the policy's rules for cpu let them and no hold is on,
// or forbids it.
func (d *Daemon) setDPDKLending(cpu int, on bool) error {
	rules := d.rulesOf(cpu)
	on = on && rules.LendDPDK && !d.dpdkHold.Load()
	var errs []error
	useProbe := on && rules.ProbeWake
	for _, m := range d.dpdk {
		if slices.Contains(m.Config().CPUs, cpu) {
			if useProbe {
				m.SetProbe(d.dpdkWake[m]...)
			} else {
				m.SetProbe()
			}
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

// HoldDPDKLending keeps every DPDK application from lending its cores even
// where the policy lends them (CP may still run there): the setup for an
// application that yields by itself, such as OVS with pmd-maxsleep. Held,
// lent lcores are reclaimed before it returns; released, the cores the
// pool holds may lend again.
func (d *Daemon) HoldDPDKLending(hold bool) error {
	d.dpdkHold.Store(hold)
	var errs []error
	if hold {
		for _, m := range d.dpdk {
			errs = append(errs, m.SetLending(false))
		}
		return errors.Join(errs...)
	}
	for _, cpu := range d.pool.CPUs() {
		if d.dpdkOn(cpu) {
			errs = append(errs, d.setDPDKLending(cpu, true))
		}
	}
	return errors.Join(errs...)
}

// startDPDKProbes starts the workload probe of each of m's DP cores that
// probe.interfaces names, so a lent lcore is reclaimed at the probe's
// warning when the policy uses the probe (SetProbe in setDPDKLending).
func (d *Daemon) startDPDKProbes(ctx context.Context, m *dpdk.Manager) error {
	backend := d.cfg.Probe.Backend
	if backend != config.ProbeXDP && backend != config.ProbeCounters {
		return nil
	}
	for _, cpu := range m.Config().CPUs {
		for _, pi := range d.cfg.Probe.Interfaces {
			if pi.CPU != cpu {
				continue
			}
			opts := probe.Options{Iface: pi.Iface, NetNS: pi.NetNS, Core: cpu, Interval: d.cfg.Probe.CountersInterval.D()}
			if pi.Queue >= 0 {
				opts.Queues = map[int]int{pi.Queue: cpu}
			}
			p, err := probe.New(backend, opts)
			if err != nil {
				return fmt.Errorf("probe on %s for cpu %d: %w", pi.Iface, cpu, err)
			}
			if err := p.Start(ctx); err != nil {
				return fmt.Errorf("probe on %s for cpu %d: %w", pi.Iface, cpu, err)
			}
			d.dpdkProbes = append(d.dpdkProbes, p)
			ws, err := p.WakeSource(cpu)
			if err != nil {
				return fmt.Errorf("probe on %s for cpu %d: %w", pi.Iface, cpu, err)
			}
			if d.dpdkWake == nil {
				d.dpdkWake = map[*dpdk.Manager][]dpdk.WakeSource{}
			}
			d.dpdkWake[m] = append(d.dpdkWake[m], ws)
			d.log.Info("probe warns a DPDK core", "name", m.Config().Name, "cpu", cpu, "iface", pi.Iface, "mode", p.Mode())
		}
	}
	return nil
}
