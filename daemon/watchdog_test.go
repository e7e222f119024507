package daemon

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/scheduler"
)

// blockingActuator is the scheduler's actuator with a Lend that hangs until
// released, as a cpuset write stuck in the kernel would.
type blockingActuator struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (a *blockingActuator) Lend(int) error {
	a.once.Do(func() { close(a.entered) })
	<-a.release
	return nil
}
func (a *blockingActuator) Reclaim(int) error                  { return nil }
func (a *blockingActuator) SetYield(int, int64, time.Duration) {}
func (a *blockingActuator) Wake(int)                           {}

// TestWatchdogStopsWhenSchedulerIsStuck: a healthy daemon (progress within
// the window, a scheduler that answers) sends WATCHDOG=1 on $NOTIFY_SOCKET;
// a real scheduler goroutine stuck in its actuator stops the datagrams, and
// so does an event pump that stopped.
func TestWatchdogStopsWhenSchedulerIsStuck(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	// Notify writes synchronously: after petWatchdog returns, a ping is in
	// the socket or there is none.
	raw, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	pinged := func() bool {
		buf := make([]byte, 64)
		var n int
		var rerr error
		raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return true // one non-blocking look, no waiting
		})
		if rerr == nil && string(buf[:n]) != "WATCHDOG=1" {
			t.Fatalf("unexpected datagram %q", buf[:n])
		}
		return rerr == nil
	}

	act := &blockingActuator{entered: make(chan struct{}), release: make(chan struct{})}
	p := scheduler.DefaultParams()
	p.Policy = "static"
	sched, err := scheduler.New([]int{1}, act, p, scheduler.WithLogger(quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{sched: sched, log: quietLog(), started: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sched.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	defer close(act.release) // runs before cancel: the scheduler can return
	progress := func() { d.pumpBeat.Store(d.stamp()); d.superviseBeat.Store(d.stamp()) }
	// The window a healthy daemon must show progress in. Measured under
	// stress-ng --cpu 2 with -race, 20 runs: the healthy check ended
	// 0.06 ms (min), 6.0 ms (median), 23 ms (p95), 28 ms (max) after the
	// progress stamps; 500 ms is 18 times the max. The unhealthy cases
	// do not depend on it (a pump silent for longer, a scheduler that
	// never answers).
	const within = 500 * time.Millisecond

	progress()
	for sched.Sync(ctx) == scheduler.ErrNotRunning {
	}
	start := time.Now()
	err = d.healthy(within)
	took, age := time.Since(start), time.Duration(d.stamp()-d.pumpBeat.Load())
	t.Logf("measured: healthy check took %v, ended %v after the progress stamps (max %v)", took, age, max(took, age))
	if err != nil {
		t.Fatalf("healthy daemon: %v", err)
	}
	if !d.petWatchdog(within) || !pinged() {
		t.Fatal("healthy daemon: no WATCHDOG=1")
	}

	// The pump stops: no pings.
	d.pumpBeat.Store(d.stamp() - int64(2*within))
	if d.petWatchdog(within) || pinged() {
		t.Fatal("stale event pump: watchdog still petted")
	}

	// The scheduler gets stuck lending (dynamic lends the core at once).
	// SetPolicy waits for the scheduler to apply it, which it never does.
	progress()
	go sched.SetPolicy("dynamic")
	<-act.entered
	for i := range 3 {
		progress()
		if d.petWatchdog(within) || pinged() {
			t.Fatalf("check %d: scheduler stuck in Lend, watchdog still petted", i)
		}
	}
	if err := d.healthy(within); err == nil {
		t.Fatal("healthy() = nil with a stuck scheduler")
	}
}
