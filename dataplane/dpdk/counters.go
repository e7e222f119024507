package dpdk

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
)

// ovsCounterPeriod is how often OVS's PMD counters are read: a read is a
// round trip through ovs-vswitchd's main thread (~150 µs when it runs at
// once), while the interface counters are read every idle interval.
const ovsCounterPeriod = 10 * time.Millisecond

// ovsCounterStale is how old the last good PMD counter read may be before
// the watcher treats the counter as unreadable (and stops lending).
const ovsCounterStale = 2 * time.Second

// activityCounter is what the idle watcher watches: the interfaces'
// rx_packets and, for Open vSwitch, the packets its PMDs on the
// application's cores received (every port, not only the watched
// interfaces). The PMD counters are read by a goroutine of their own until
// ctx ends: ovs-vswitchd's main thread shares the CP cores with CP work and
// may answer late (seconds, under a CP backlog), and the watcher must
// never wait for it while a core is lent.
func (m *Manager) activityCounter(ctx context.Context, ifaces []string) CounterFunc {
	netdev := NetDevCounter(m.PID(), ifaces...)
	if m.cfg.OVSUnixctl == "" {
		return netdev
	}
	pmds := newPolledCounter(ctx, ovs.NewClient(m.cfg.OVSUnixctl).PMDPacketsCounter(m.cfg.CPUs), ovsCounterPeriod, ovsCounterStale)
	return func() (uint64, error) {
		a, err := netdev()
		if err != nil {
			return 0, err
		}
		b, err := pmds()
		if err != nil {
			return 0, fmt.Errorf("ovs pmd counters: %w", err)
		}
		return a + b, nil
	}
}

// newPolledCounter reads f every period in a goroutine until ctx ends and
// returns its last value without waiting; an error, or no good read for
// longer than stale, is returned as an error.
func newPolledCounter(ctx context.Context, f CounterFunc, period, stale time.Duration) CounterFunc {
	type reading struct {
		v   uint64
		err error
		at  time.Time
	}
	var last atomic.Pointer[reading]
	read := func() {
		v, err := f()
		r := &reading{v: v, err: err, at: time.Now()}
		if err != nil {
			if p := last.Load(); p != nil {
				r.v, r.at = p.v, p.at // keep the last good value's age
			}
		}
		last.Store(r)
	}
	read()
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() (uint64, error) {
		r := last.Load()
		switch {
		case r.err != nil:
			return 0, r.err
		case time.Since(r.at) > stale:
			return 0, fmt.Errorf("no answer for %v", time.Since(r.at).Round(time.Millisecond))
		}
		return r.v, nil
	}
}

// idleIfaces returns the interfaces whose counters show the lcores' work:
// the configured ones, or the --vdev iface= arguments of the command line
// (read from /proc/PID/cmdline for an adopted process).
func (m *Manager) idleIfaces() ([]string, error) {
	if len(m.cfg.IdleIfaces) > 0 {
		return m.cfg.IdleIfaces, nil
	}
	argv := m.cfg.Command
	if len(argv) == 0 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID()))
		if err != nil {
			return nil, fmt.Errorf("dpdk %q: idle_ifaces: reading the command line: %w", m.cfg.Name, err)
		}
		argv = strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	}
	ifaces := VdevIfaces(argv)
	if len(ifaces) == 0 {
		return nil, fmt.Errorf("dpdk %q: idle_ifaces: none given and no --vdev ...,iface=X on the command line", m.cfg.Name)
	}
	return ifaces, nil
}
