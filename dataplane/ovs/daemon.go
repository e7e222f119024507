package ovs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// daemon is an OVS daemon started with --detach, held by a pidfd so that
// signals and waits reach that process even if its pid is reused.
type daemon struct {
	name  string
	pid   int
	pidfd int
}

// startDaemon runs an OVS daemon with --detach in the instance's network
// namespace. OVS's --detach returns only once the daemon is ready (or has
// failed), then the pidfile names it.
func (i *Instance) startDaemon(ctx context.Context, bin string, args ...string) (*daemon, error) {
	pidfile := ""
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "--pidfile="); ok {
			pidfile = p
		}
	}
	err := withAffinity(i.opts.LcoreCPUs, func() error {
		return netns.Do(i.opts.NetNS, func() error {
			// The child inherits this locked thread's network namespace
			// and CPU affinity.
			return i.run(ctx, bin, args...)
		})
	})
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(pidfile)
	if err != nil {
		return nil, fmt.Errorf("%s: pidfile: %w", bin, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("%s: pidfile %s: bad pid %q", bin, pidfile, bytes.TrimSpace(data))
	}
	d, err := openDaemon(bin, pid)
	if err != nil {
		return nil, err
	}
	// The pid must still be the daemon the pidfile was written for.
	if !cmdlineHas(pid, "--pidfile="+pidfile) {
		d.close()
		return nil, fmt.Errorf("%s: pid %d from %s is not running", bin, pid, pidfile)
	}
	return d, nil
}

// withAffinity runs fn on a locked OS thread allowed only on cpus (none:
// unchanged), so processes fn starts inherit that affinity; the thread's
// own affinity is restored afterwards. If it cannot be, the thread stays
// locked to this goroutine rather than return to the runtime's pool.
func withAffinity(cpus []int, fn func() error) error {
	if len(cpus) == 0 {
		return fn()
	}
	runtime.LockOSThread()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("sched_setaffinity %v: %w", cpus, err)
	}
	ferr := fn()
	if err := unix.SchedSetaffinity(0, &orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("restore thread affinity: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func openDaemon(name string, pid int) (*daemon, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: pidfd_open(%d): %w", name, pid, err)
	}
	return &daemon{name: name, pid: pid, pidfd: fd}, nil
}

func (d *daemon) close() {
	if d.pidfd >= 0 {
		unix.Close(d.pidfd)
		d.pidfd = -1
	}
}

// waitExit waits up to timeout for the process to exit (the pidfd becomes
// readable) and reports whether it did.
func (d *daemon) waitExit(timeout time.Duration) bool {
	if d.pidfd < 0 {
		return true
	}
	deadline := time.Now().Add(timeout)
	for {
		ms := max(0, int(time.Until(deadline).Milliseconds()))
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(d.pidfd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// exited reports whether the process has exited, without waiting.
func (d *daemon) exited() bool { return d.waitExit(0) }

// stop sends SIGTERM, waits up to timeout, then SIGKILL and waits again.
func (d *daemon) stop(timeout time.Duration) error {
	defer d.close()
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		if d.exited() {
			return nil
		}
		if err := unix.PidfdSendSignal(d.pidfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("ovs: %s (pid %d): %v: %w", d.name, d.pid, sig, err)
		}
		if d.waitExit(timeout) {
			return nil
		}
	}
	return fmt.Errorf("ovs: %s (pid %d) still running %v after SIGKILL", d.name, d.pid, timeout)
}

// cmdlineHas reports whether process pid's command line has arg.
func cmdlineHas(pid int, arg string) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	args, err := p.CmdLine()
	if err != nil {
		return false
	}
	for _, a := range args {
		if a == arg {
			return true
		}
	}
	return false
}

// StrayPIDs lists live processes whose command line names a pidfile in
// runDir: the daemons of the instance that runs (or ran) there.
func StrayPIDs(runDir string) ([]int, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("ovs: list processes: %w", err)
	}
	prefix := "--pidfile=" + runDir + "/"
	var pids []int
	for _, p := range procs {
		args, err := p.CmdLine()
		if err != nil {
			continue // exited meanwhile
		}
		for _, a := range args {
			if strings.HasPrefix(a, prefix) {
				pids = append(pids, p.PID)
				break
			}
		}
	}
	return pids, nil
}

// killStrays stops every process StrayPIDs finds for runDir.
func killStrays(runDir string, timeout time.Duration) error {
	pids, err := StrayPIDs(runDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		d, err := openDaemon("ovs daemon", pid)
		if err != nil {
			if !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
			continue
		}
		errs = append(errs, d.stop(timeout))
	}
	return errors.Join(errs...)
}

// configLocked reports whether a live process holds a lock on a DPDK
// runtime config file (EAL's primary process locks it for its lifetime).
func configLocked(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}
