// Package netns runs code inside a named network namespace (as created by
// `ip netns add`) on a locked OS thread, so sockets and links opened there
// belong to that namespace while the rest of the process stays where it is.
package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/safename"
)

// Dir is where iproute2 keeps named namespaces.
const Dir = "/run/netns"

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// open opens a named namespace; a name that is not one path component
// (say "../x") never reaches the file system.
func open(name string) (int, error) {
	if err := safename.Check(name); err != nil {
		return -1, fmt.Errorf("netns: name: %w", err)
	}
	fd, err := unix.Open(Path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("netns %q: %w", name, err)
	}
	return fd, nil
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	if safename.Check(name) != nil {
		return false
	}
	_, err := os.Stat(Path(name))
	return err == nil
}

// Do runs fn on a locked OS thread switched into the named namespace, then
// switches the thread back. An empty name runs fn in the current namespace.
// File descriptors fn opens (sockets, netlink) stay bound to that namespace.
// If the thread cannot be switched back it is left locked, so the Go runtime
// discards it instead of reusing a thread in the wrong namespace.
func Do(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	target, err := open(name)
	if err != nil {
		return err
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	orig, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: open current namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %q: setns: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// Stay locked: the runtime terminates this thread when the goroutine exits.
		return fmt.Errorf("netns %q: switch back: %w (fn: %v)", name, err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Enter switches the calling, already locked OS thread into the named
// namespace for good (for long-lived pinned threads such as DP loops).
func Enter(name string) error {
	if name == "" {
		return nil
	}
	fd, err := open(name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netns %q: setns: %w", name, err)
	}
	return nil
}
