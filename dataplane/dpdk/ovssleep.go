package dpdk

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
)

// ovsSleepTimeout bounds one ovs-vsctl call.
const ovsSleepTimeout = 10 * time.Second

// ovsSleep governs Open vSwitch's own PMD sleep (other_config:pmd-maxsleep)
// by the lending policy: busy polling where CP stays off the PMD cores
// (the best static DP), the configured sleep where CP may run on them (a
// PMD that may be lent is SCHED_FIFO while it is not, and one that never
// sleeps meets RT throttling). ovs-vsctl waits for ovs-vswitchd, whose main
// thread shares the CP cores, so the writes happen in a goroutine of their
// own: the caller (the scheduler's lend/reclaim path) never waits, and only
// the latest wish is written.
type ovsSleep struct {
	db    ovs.DB
	sleep time.Duration
	log   *slog.Logger

	mu       sync.Mutex
	want     time.Duration
	orig     time.Duration
	origSet  bool
	wake     chan struct{}
	done     chan struct{}
	cancel   context.CancelFunc
	applied  time.Duration
	appliedN int
	lastErr  string
}

// startOVSSleep reads the current setting (to restore it on stop) and
// starts the writer. The first wish is busy polling: nothing is lent yet.
func startOVSSleep(db ovs.DB, sleep time.Duration, log *slog.Logger) (*ovsSleep, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ovsSleepTimeout)
	orig, set, err := db.MaxSleep(ctx)
	cancel()
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	s := &ovsSleep{db: db, sleep: sleep, log: log, orig: orig, origSet: set,
		wake: make(chan struct{}, 1), done: make(chan struct{}), cancel: stop, applied: -1}
	go s.run(runCtx)
	s.set(false)
	return s, nil
}

// set asks for the sleep that fits lending allowed (on) or not.
func (s *ovsSleep) set(on bool) {
	want := time.Duration(0)
	if on {
		want = s.sleep
	}
	s.mu.Lock()
	s.want = want
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *ovsSleep) run(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		want, applied := s.want, s.applied
		s.mu.Unlock()
		if want == applied {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, ovsSleepTimeout)
		err := s.db.SetMaxSleep(wctx, want)
		cancel()
		s.mu.Lock()
		if err != nil {
			s.lastErr = err.Error()
		} else {
			s.applied, s.lastErr = want, ""
			s.appliedN++
		}
		s.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("setting OVS's pmd-maxsleep", "want", want, "err", err)
		}
	}
}

// state is the sleep last written (-1: none yet) and the last error.
func (s *ovsSleep) state() (applied time.Duration, writes int, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied, s.appliedN, s.lastErr
}

// stop ends the writer and puts back the setting found at start.
func (s *ovsSleep) stop() error {
	s.cancel()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), ovsSleepTimeout)
	defer cancel()
	return s.db.RestoreMaxSleep(ctx, s.orig, s.origSet)
}
