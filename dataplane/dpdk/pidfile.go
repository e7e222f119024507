package dpdk

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// WithPIDFile records a launched application in path (its pid and the
// process start time), so that a later Manager — a daemon restarted after
// a crash — adopts the running application instead of launching a second
// copy. Adoption requires the same start time (no reused pid) and the same
// command line as configured.
func WithPIDFile(path string) Option { return func(m *Manager) { m.pidFile = path } }

// procStartTime is field 22 of /proc/PID/stat (clock ticks since boot).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // fields after ")" start at 3
}

func writePIDFile(path string, pid int) error {
	start, err := procStartTime(pid)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", pid, start), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// findLaunched returns the pid the pid file names if that process is the
// one recorded (same start time) and runs the configured command line.
func (m *Manager) findLaunched() (int, bool) {
	b, err := os.ReadFile(m.pidFile)
	if err != nil {
		return 0, false
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil || pid <= 1 {
		m.log.Warn("ignoring malformed pid file", "path", m.pidFile)
		return 0, false
	}
	if got, err := procStartTime(pid); err != nil || got != start {
		return 0, false // gone, or the pid now belongs to another process
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	argv := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if !slices.Equal(argv, m.cfg.Command) {
		m.log.Info("pid file names a process with another command line; launching", "pid", pid, "running", argv)
		return 0, false
	}
	return pid, true
}

// adoptLaunched takes over an application an earlier Manager launched: its
// exit is watched through a pidfd (it is no longer our child to wait for).
func (m *Manager) adoptLaunched(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("dpdk %q: pidfd for pid %d: %w", m.cfg.Name, pid, err)
	}
	exited := make(chan struct{})
	go func() {
		defer unix.Close(fd)
		defer close(exited)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				return
			}
		}
	}()
	m.mu.Lock()
	m.pid, m.exited, m.readopted = pid, exited, true
	m.mu.Unlock()
	m.log.Info("re-adopted application launched by an earlier run", "pid", pid)
	return nil
}
