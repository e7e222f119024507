package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/taichi-sched/taichi/blocker"
	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/scheduler"
)

// TestKmodBlockersFeedTheConfiner: the kernel module's records become
// in-kernel blame, each once, and waits known to be short are skipped.
func TestKmodBlockersFeedTheConfiner(t *testing.T) {
	w := &blockerWatch{cfg: config.Blockers{Threshold: config.Duration(100 * time.Microsecond)}, kmodSeq: map[int]uint64{}}
	recs := []kmod.Blocker{
		{Seq: 1, CPU: 1, Pid: 10, Tgid: 10, Comm: "vm-setup", Waited: true, WaitNs: 300_000, TimeNs: 5},
		{Seq: 2, CPU: 1, Pid: 11, Tgid: 11, Comm: "short", Waited: true, WaitNs: 20_000, TimeNs: 6},
		{Seq: 1, CPU: 2, Pid: 12, Tgid: 12, Comm: "unknown-wait", TimeNs: 7},
		{Seq: 3, CPU: 1, Pid: 0, Tgid: 0, Comm: "swapper", TimeNs: 8},
	}
	evs := w.newKmodEvents(recs)
	if len(evs) != 2 {
		t.Fatalf("events %+v, want 2 (the short wait and the pid-0 record skipped)", evs)
	}
	if e := evs[0]; e.Kind != blocker.KindBlame || e.TGID != 10 || !e.InKernel() || e.Delay != 300*time.Microsecond || e.Comm != "vm-setup" {
		t.Errorf("first event %+v", e)
	}
	if e := evs[1]; e.TGID != 12 || e.Delay != 0 || e.CPU != 2 {
		t.Errorf("second event %+v", e)
	}
	if again := w.newKmodEvents(recs); len(again) != 0 {
		t.Errorf("records seen before came again: %+v", again)
	}
	if w.kmodBlames != 2 {
		t.Errorf("kmod blames %d, want 2", w.kmodBlames)
	}
}

func TestBlockersStatusOff(t *testing.T) {
	d := &Daemon{}
	if st := d.blockersStatus(); st.State != BlockersOff {
		t.Fatalf("state %q, want off", st.State)
	}
}

type noMoves struct{}

func (noMoves) Confine(int) (bool, error) { return true, nil }
func (noMoves) Release(int) error         { return nil }
func (noMoves) Confined() ([]int, error)  { return nil, nil }

// TestBlockerMetrics: the collector exports the confined gauge and, with
// the kernel module, its blame count; the tracer's series only with a
// tracer.
func TestBlockerMetrics(t *testing.T) {
	conf, err := blocker.NewConfiner(blocker.Policy{MinBlames: 1}, scheduler.RealClock{}, noMoves{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := conf.Observe(blocker.Event{Kind: blocker.KindBlame, TGID: 5, PID: 5, Flags: blocker.FlagInKernel, Comm: "x", Delay: 200 * time.Microsecond}); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	d.blockers = &blockerWatch{d: d, conf: conf}
	// The SLO rule's move, as the scheduler calls it (BlockerControl).
	if !d.ConfineWorst(0, time.Second, 100*time.Microsecond, 0, 0.875) {
		t.Fatal("ConfineWorst confined nothing")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBlockerCollector(d))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP taichi_blocker_confined_tasks Processes confined to the CP cores as blockers.
# TYPE taichi_blocker_confined_tasks gauge
taichi_blocker_confined_tasks 1
`)); err != nil {
		t.Fatal(err)
	}
	st := d.blockersStatus()
	if st.State != BlockersUnavailable || st.Confined != 1 || len(st.Tasks) != 1 || st.Tasks[0].ConfinedUntil == nil ||
		len(st.Commands) != 1 || st.Commands[0].Why == nil || st.Commands[0].Why.Budget != 0.875 || st.Rule == "" {
		t.Fatalf("status %+v", st)
	}
}

// TestBlockerMetricsWithTracer: with a real tracer the histogram and the
// tracer's blame counter are exported (root and BTF; skipped otherwise).
func TestBlockerMetricsWithTracer(t *testing.T) {
	testenv.NeedRoot(t, "loading BPF programs")
	tr, err := blocker.Open(blocker.Options{})
	if err != nil {
		testenv.Require(t, "tracer unavailable (needs root and kernel BTF): %v", err)
	}
	defer tr.Close()
	conf, err := blocker.NewConfiner(blocker.Policy{}, scheduler.RealClock{}, noMoves{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{}
	d.blockers = &blockerWatch{d: d, conf: conf, tracer: tr}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBlockerCollector(d))
	n, err := testutil.GatherAndCount(reg, "taichi_blocker_wake_run_seconds", "taichi_blocker_blames_total", "taichi_blocker_confined_tasks")
	if err != nil || n != 3 {
		t.Fatalf("gathered %d series, %v; want histogram, tracer blames and confined gauge", n, err)
	}
}

// A policy switch or a new SLO starts confinement afresh at once: what
// was confined is released and forgotten, even when confinement stays on.
func TestBlockersRestartForgetsConfinements(t *testing.T) {
	conf, err := blocker.NewConfiner(blocker.Policy{MinBlames: 1}, scheduler.RealClock{}, noMoves{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	d.blockers = &blockerWatch{d: d, conf: conf}
	if err := conf.Observe(blocker.Event{Kind: blocker.KindBlame, TGID: 5, PID: 5, Flags: blocker.FlagInKernel, Comm: "x", Delay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if !d.ConfineWorst(0, time.Second, 0, 0, 1) || conf.ConfinedCount() != 1 {
		t.Fatal("nothing confined")
	}
	d.blockers.restart(true)
	if n, cmds := conf.ConfinedCount(), conf.Commands(); n != 0 || len(cmds) != 0 || !conf.Active() {
		t.Errorf("after restart: %d confined, commands %+v, active %v", n, cmds, conf.Active())
	}
	var none *blockerWatch
	none.restart(true) // blockers off: nothing to do
}
