package dpdk

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeLender records policy moves; the real path is tested against
// dpdk-testpmd in testpmd_test.go.
type fakeLender struct {
	mu      sync.Mutex
	demoted map[int]bool
	moves   []string
}

func (f *fakeLender) LcoreTIDs() []int { return []int{11, 12} }
func (f *fakeLender) Demote(tid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.demoted[tid] = true
	f.moves = append(f.moves, "demote")
	return nil
}
func (f *fakeLender) Promote(tid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.demoted[tid] = false
	f.moves = append(f.moves, "promote")
	return nil
}
func (f *fakeLender) allDemoted(want bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.demoted[11] == want && f.demoted[12] == want
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleWatcherLendsAndReclaims(t *testing.T) {
	var packets atomic.Uint64
	var failing atomic.Bool
	counter := func() (uint64, error) {
		if failing.Load() {
			return 0, errors.New("interface gone")
		}
		return packets.Load(), nil
	}
	l := &fakeLender{demoted: map[int]bool{}}
	w := NewIdleWatcher(l, counter, IdleWatcherOptions{Interval: time.Millisecond, IdleAfter: 5})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	waitFor(t, "demotion while the counter stands still", func() bool { return l.allDemoted(true) })
	if s := w.Stats(); !s.Demoted || s.Demotions != 1 {
		t.Fatalf("stats after lending: %+v", s)
	}

	packets.Add(1)
	waitFor(t, "promotion on the first new packet", func() bool { return w.Stats().Promotions >= 1 })
	if s := w.Stats(); s.LastPromoteNs <= 0 {
		t.Fatalf("promotion not timed: %+v", s)
	}

	waitFor(t, "second demotion", func() bool { return w.Stats().Demotions >= 2 && l.allDemoted(true) })
	failing.Store(true)
	waitFor(t, "reclaim on counter error", func() bool { return l.allDemoted(false) })
	time.Sleep(20 * time.Millisecond)
	if !l.allDemoted(false) || w.Stats().CounterErrors == 0 {
		t.Fatalf("lent again while the counter fails: %+v", w.Stats())
	}

	failing.Store(false)
	waitFor(t, "demotion after the counter recovers", func() bool { return l.allDemoted(true) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !l.allDemoted(false) {
		t.Fatal("cores still lent after Run returned")
	}
}

func TestRxPackets(t *testing.T) {
	data := []byte(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  dp0:     6600     100    0    0    0     0          0         0        0       0    0    0    0     0       0          0
dp0x: 1 2 3
`)
	if v, ok := rxPackets(data, "dp0"); !ok || v != 100 {
		t.Fatalf("dp0: %d %v", v, ok)
	}
	if v, ok := rxPackets(data, "lo"); !ok || v != 10 {
		t.Fatalf("lo: %d %v", v, ok)
	}
	if _, ok := rxPackets(data, "dp"); ok {
		t.Fatal("matched a prefix of a name")
	}
}

func TestNetDevCounterReadsProc(t *testing.T) {
	read := NetDevCounter(os.Getpid(), "lo")
	for range 2 { // the second read reuses the open file
		if _, err := read(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NetDevCounter(os.Getpid(), "no-such-if0")(); err == nil || !strings.Contains(err.Error(), "no-such-if0") {
		t.Fatalf("missing interface: %v", err)
	}
}

// The policy gate: forbidden, an idle watcher promotes what it lent before
// SetAllowed returns and never lends again until allowed.
func TestIdleWatcherFollowsThePolicyGate(t *testing.T) {
	counter := func() (uint64, error) { return 0, nil } // always idle
	l := &fakeLender{demoted: map[int]bool{}}
	w := NewIdleWatcher(l, counter, IdleWatcherOptions{Interval: time.Millisecond, IdleAfter: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, "lending while allowed", func() bool { return l.allDemoted(true) })

	if err := w.SetAllowed(false); err != nil {
		t.Fatal(err)
	}
	if !l.allDemoted(false) {
		t.Fatal("SetAllowed(false) returned with lcores still demoted")
	}
	demotions := w.Stats().Demotions
	time.Sleep(20 * time.Millisecond) // 10 idle intervals: would lend if it could
	if l.allDemoted(true) || w.Stats().Demotions != demotions {
		t.Fatal("lent while forbidden")
	}
	if err := w.SetAllowed(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lending again once allowed", func() bool { return l.allDemoted(true) })
	cancel()
	<-done
}
