package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// instanceLock keeps a second `taichi run` on the same state from touching
// anything: it is taken before the pool, the DP loops or the socket are
// looked at, and held (an flock on an open file) for the daemon's life. The
// kernel drops it when the process dies, even by SIGKILL, so a restart after
// a crash never finds a stale lock.
type instanceLock struct{ f *os.File }

func lockPath(stateDir string) string { return filepath.Join(stateDir, "taichi.lock") }

// ErrAlreadyRunning means another daemon holds the instance lock.
var ErrAlreadyRunning = errors.New("another taichi daemon is running")

func acquireInstanceLock(stateDir string) (*instanceLock, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	path := lockPath(stateDir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (pid %s holds %s); nothing was changed", ErrAlreadyRunning, lockHolder(path), path)
		}
		return nil, fmt.Errorf("state_dir: lock %s: %w", path, err)
	}
	// The holder's pid, for the message a second daemon prints.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &instanceLock{f: f}, nil
}

func lockHolder(path string) string {
	b, _ := os.ReadFile(path)
	if pid := strings.TrimSpace(string(b)); pid != "" {
		return pid
	}
	return "unknown"
}

func (l *instanceLock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor drops the flock
		l.f = nil
	}
}
