package daemon

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/vcpu"
)

// gatedPool is a pool whose Reclaim waits for its gate: a cpuset write
// that takes as long as the test wants (a unit-test seam; the daemon tests
// in cmd/taichi write a real pool).
type gatedPool struct {
	vcpu.Pool
	mu     sync.Mutex
	lent   bool
	writes []string
	gate   chan struct{}
}

func (p *gatedPool) Lend(int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lent = true
	p.writes = append(p.writes, "lend")
	return nil
}

func (p *gatedPool) Reclaim(int) error {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lent = false
	p.writes = append(p.writes, "reclaim")
	return nil
}

func (p *gatedPool) CPUs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lent {
		return []int{0, 1}
	}
	return []int{0}
}

func (p *gatedPool) state() (bool, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lent, slices.Clone(p.writes)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Lend and Reclaim return while the pool write is still under way, a
// reclaim holds back the knobs that would stop the loop yielding until
// its write is done, and the last wish wins.
func TestActuatorsWriteOffTheEnginesPath(t *testing.T) {
	pool := &gatedPool{}
	// dynamic's rules, as the scheduler would hand them over.
	rules := map[int]scheduler.CoreRules{1: {LendDPDK: true}}
	d := &Daemon{cfg: &config.Config{DPCPUs: []int{1}, CPCPUs: []int{0}}, pool: pool, rules: rules, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); d.wg.Wait() }()
	d.startActuators(ctx)
	a := d.actuators[1]

	if err := d.Lend(1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the core lent", func() bool { lent, _ := pool.state(); return lent })

	gate := make(chan struct{})
	pool.mu.Lock()
	pool.gate = gate
	pool.mu.Unlock()
	var returned sync.WaitGroup
	returned.Add(1)
	go func() { defer returned.Done(); d.Reclaim(1) }()
	done := make(chan struct{})
	go func() { returned.Wait(); close(done) }()
	select { // returns with the write still blocked
	case <-done:
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("Reclaim waited for the pool write")
	}
	d.SetYield(1, -1, 5*time.Millisecond)
	a.mu.Lock()
	held := a.held
	a.mu.Unlock()
	if held == nil || held.after != -1 {
		t.Fatalf("knobs during a pending reclaim: held %+v, want the -1 held back", held)
	}
	close(gate)
	waitUntil(t, "the reclaim written and the knobs handed on", func() bool {
		lent, _ := pool.state()
		a.mu.Lock()
		defer a.mu.Unlock()
		return !lent && a.held == nil
	})

	// A lend and a reclaim in a row while a write is blocked: the pool
	// ends as the engine last asked.
	gate = make(chan struct{})
	pool.mu.Lock()
	pool.gate = gate
	pool.mu.Unlock()
	d.Lend(1)
	waitUntil(t, "the core lent again", func() bool { lent, _ := pool.state(); return lent })
	d.Reclaim(1)
	d.Lend(1)
	close(gate)
	waitUntil(t, "the last wish (lent) written", func() bool {
		lent, writes := pool.state()
		return lent && writes[len(writes)-1] == "lend"
	})
}
