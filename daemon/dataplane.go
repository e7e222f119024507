package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/host"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/scheduler"
)

// dpLoop is one configured DP loop the daemon drives through its segment.
type dpLoop struct {
	cfg    config.Loop
	client *host.Client
	// Exactly one of these: a hosting process (survives the daemon) or an
	// in-process host (tests, eval).
	pid int
	// spawned: this process started the host (else it was adopted).
	spawned bool
	inproc  *host.Host
	cancel  context.CancelFunc

	// eventBeat: when this loop's event pump last ran (Daemon.stamp).
	eventBeat atomic.Int64
	// batch is the pump's buffer for one drained ring (its goroutine only).
	batch []scheduler.Event

	// The pump's load figures: the pass's and the last pass's, for the
	// busy fraction and the residence in between (kept here, so a pass
	// reads into memory it already has).
	load, lastLoad host.Load
}

func (d *Daemon) segmentPath(name string) string {
	return filepath.Join(d.dpDir, name+".shm")
}

// hostSpec turns a configured loop into a host.Spec, with the probe the
// config asks for (default: the loop's own interface feeds its core).
func (d *Daemon) hostSpec(l config.Loop) host.Spec {
	loop := l.LoopConfig()
	loop.StartNormal = true // SCHED_FIFO only while the core is lent (setLoopClass)
	spec := host.Spec{
		Loop:    loop,
		ShmPath: d.segmentPath(l.Name),
		Kmod:    d.kmod != nil,
	}
	switch d.cfg.Probe.Backend {
	case config.ProbeXDP, config.ProbeCounters:
		spec.ProbeBackend = d.cfg.Probe.Backend
		iface, ns := d.cfg.ProbeInterfaceFor(l)
		spec.Probe = probe.Options{Iface: iface, NetNS: ns, Interval: d.cfg.Probe.CountersInterval.D(),
			RingSize: int(d.cfg.Probe.RingbufSize)}
	}
	return spec
}

// startLoops attaches to DP loops a previous run left running, and starts
// the others.
func (d *Daemon) startLoops(ctx context.Context) error {
	for _, l := range d.cfg.Dataplane.Loops {
		dl, err := d.startLoop(ctx, l)
		if err != nil {
			return fmt.Errorf("dataplane.loops %s: %w", l.Name, err)
		}
		d.loops = append(d.loops, dl)
		if why := dl.probeError(); why != "" {
			d.mu.Lock()
			d.probeDown[l.CPU] = why
			d.mu.Unlock()
			d.sched.ProbeDown(l.CPU, time.Time{}, true)
			d.log.Error("probe failed; this DP core falls back to static (never lent)", "loop", l.Name, "cpu", l.CPU, "err", why)
		}
		d.log.Info("DP loop ready", "name", l.Name, "cpu", l.CPU, "iface", l.Iface, "pid", dl.client.PID(), "tid", dl.client.TID(), "in_process", dl.inproc != nil)
	}
	return nil
}

func (d *Daemon) startLoop(ctx context.Context, l config.Loop) (*dpLoop, error) {
	spec := d.hostSpec(l)
	if d.inProcessLoops {
		hctx, cancel := context.WithCancel(context.Background())
		h, err := host.Start(hctx, spec)
		if err != nil {
			cancel()
			return nil, err
		}
		c, err := host.Attach(spec.ShmPath, l.Name)
		if err != nil {
			cancel()
			h.Wait()
			return nil, err
		}
		return &dpLoop{cfg: l, client: c, inproc: h, cancel: cancel}, nil
	}
	if c, pid, ok := d.adoptLoop(spec); ok {
		d.log.Info("adopted running DP loop", "name", l.Name, "pid", pid)
		return &dpLoop{cfg: l, client: c, pid: pid}, nil
	}
	return d.spawnLoop(ctx, spec, l)
}

// adoptLoop attaches to a live host of the same loop left by a previous run.
func (d *Daemon) adoptLoop(spec host.Spec) (*host.Client, int, bool) {
	c, err := host.Attach(spec.ShmPath, spec.Loop.Name)
	if err != nil {
		return nil, 0, false
	}
	pid := c.PID()
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(cmdline), "\x00")
	if !c.Alive() || c.CPU() != spec.Loop.CPU || !hostArgsMatch(args, hostArgs(spec)) {
		c.Close()
		if pid > 0 && strings.Contains(string(cmdline), "dp-host") {
			// A host of an older config: replace it.
			stopProcess(pid, 2*time.Second)
		}
		return nil, 0, false
	}
	return c, pid, true
}

func hostArgs(spec host.Spec) []string {
	a := []string{"dp-host",
		"--name", spec.Loop.Name, "--cpu", strconv.Itoa(spec.Loop.CPU),
		"--iface", spec.Loop.Iface, "--netns", spec.Loop.NetNS, "--mode", spec.Loop.Mode,
		"--out-iface", spec.Loop.OutIface, "--priority", strconv.Itoa(spec.Loop.Priority),
		"--shm", spec.ShmPath,
	}
	if spec.Loop.StartNormal {
		a = append(a, "--start-normal")
	}
	if spec.Kmod {
		a = append(a, "--kmod")
	}
	if spec.ProbeBackend != "" {
		a = append(a, "--probe", spec.ProbeBackend, "--probe-iface", spec.Probe.Iface,
			"--probe-netns", spec.Probe.NetNS, "--probe-interval", spec.Probe.Interval.String(),
			"--probe-ring-size", strconv.Itoa(spec.Probe.RingSize))
	}
	return a
}

// hostArgsMatch compares a running host's argv (after the binary) with what
// the config wants now.
func hostArgsMatch(running, want []string) bool {
	if len(running) < 1 {
		return false
	}
	got := running[1:]
	if len(got) > 0 && got[len(got)-1] == "" {
		got = got[:len(got)-1]
	}
	return strings.Join(got, "\x00") == strings.Join(want, "\x00")
}

func (d *Daemon) spawnLoop(ctx context.Context, spec host.Spec, l config.Loop) (*dpLoop, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.dpDir, 0o700); err != nil {
		return nil, err
	}
	os.Remove(spec.ShmPath)
	os.Remove(host.BellPath(spec.ShmPath))
	logf, err := os.OpenFile(filepath.Join(d.dpDir, l.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, hostArgs(spec)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: signals to the daemon's process group do not reach
	// it, and it outlives the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reap it if it dies while we run
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := host.Attach(spec.ShmPath, l.Name); err == nil && c.PID() == pid {
			return &dpLoop{cfg: l, client: c, pid: pid, spawned: true}, nil
		} else if err == nil {
			c.Close()
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(d.dpDir, l.Name+".log"))
			return nil, fmt.Errorf("DP host exited (%v): %s", err, strings.TrimSpace(string(b)))
		case <-ctx.Done():
			stopProcess(pid, time.Second)
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stopProcess(pid, time.Second)
			return nil, errors.New("DP host did not become ready within 15s")
		}
	}
}

// stopLoops ends the DP loops this daemon drives (clean shutdown only: a
// crashed daemon leaves them running and the next one adopts them). After a
// failed start, a host adopted from an earlier run is left running as it
// was: only the loops this process started are stopped.
func (d *Daemon) stopLoops() {
	for _, l := range d.loops {
		if d.startFailed && l.inproc == nil && !l.spawned {
			l.client.Close()
			continue
		}
		l.client.SetYield(-1, 0)
		l.client.Close()
		if l.inproc != nil {
			l.cancel()
			l.inproc.Wait()
			continue
		}
		stopProcess(l.pid, 3*time.Second)
	}
	d.loops = nil
}

// stopProcess sends SIGTERM, then SIGKILL after grace.
func stopProcess(pid int, grace time.Duration) {
	if pid <= 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			return // exited, waiting to be reaped by its parent
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// setLoopClass gives cpu's DP loop the scheduling class its core's state
// needs: SCHED_FIFO while the core is in the CP cpuset (the loop must
// preempt CP the moment it wakes), SCHED_OTHER otherwise (alone on its
// core it busy-polls like a static data plane and RT throttling never
// stops it). Cores without a loop of ours have nothing to do.
func (d *Daemon) setLoopClass(cpu int, realtime bool) error {
	l := d.loopOn(cpu)
	if l == nil || l.cfg.Priority < 0 {
		return nil
	}
	tid := l.client.TID()
	if tid <= 0 {
		return fmt.Errorf("dataplane.loops %s: no worker thread id yet", l.cfg.Name)
	}
	if realtime {
		prio := l.cfg.Priority
		if prio == 0 {
			prio = dataplane.DefaultPriority
		}
		return linuxsched.Set(tid, linuxsched.FIFO(prio))
	}
	return linuxsched.Set(tid, linuxsched.Other(dataplane.NormalNice))
}

func (d *Daemon) loopOn(cpu int) *dpLoop {
	for _, l := range d.loops {
		if l.cfg.CPU == cpu {
			return l
		}
	}
	return nil
}

// probeError waits for the host's first published stats and returns its
// probe error, if any ("" when the probe runs or none was asked for).
func (l *dpLoop) probeError() string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		snap, err := l.client.Snapshot()
		if err == nil {
			return snap.ProbeErr
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(host.Tick)
	}
}
