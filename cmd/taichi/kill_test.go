package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/host"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

// TestKill9DuringLendingKeepsDPForwarding kills the daemon with SIGKILL at 20
// random points while it lends the DP core under traffic with a CP workload;
// the DP loop (its own process) must keep forwarding, CP must stay runnable,
// and each restarted daemon must adopt the running loop.
func TestKill9DuringLendingKeepsDPForwarding(t *testing.T) {
	needRootCgroups(t)
	if testing.Short() {
		t.Skip("long: 20 daemon kills under traffic")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("k%d", os.Getpid()%100000)})
	if err != nil {
		t.Skipf("testbed: %v", err)
	}
	t.Cleanup(func() { tb.Down() })

	name := fmt.Sprintf("cpkl%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "taichi", "^"+name+"$")
	dp := e.dp[0]
	extra := fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: %s, netns: %s, cpu: %d}]
dataplane:
  loops: [{name: kdp, cpu: %d, iface: %s, netns: %s}]
`, tb.NICIn, tb.NICNS, dp, dp, tb.DPIface, tb.DPNS)
	cfg := strings.Replace(mustRead(t, e.cfgPath), "probe: {backend: none}\n", extra, 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := spawnCP(t, name)
	d := e.start(t)
	st := e.status(t)
	if len(st.Loops) != 1 || !st.Loops[0].Alive {
		t.Fatalf("loop not running: %+v", st.Loops)
	}
	hostPID := st.Loops[0].PID
	t.Cleanup(func() { syscall.Kill(hostPID, syscall.SIGKILL) })

	seg := filepath.Join(filepath.Dir(e.socket), "dp", "kdp.shm")
	client, err := host.Attach(seg, "kdp")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var rep trafficgen.Report
	var genErr error
	go func() {
		defer wg.Done()
		rep, genErr = trafficgen.Run(wctx, trafficgen.Options{
			NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: e.cp[0],
			Rate: 10000, Count: 100000, Pattern: trafficgen.PatternOnOff,
			On: 10 * time.Millisecond, Off: 30 * time.Millisecond, Deadline: 90 * time.Second,
		})
	}()

	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	phaseStart := dataplane.MonotonicNow()
	var moments []string // when each kill and restart happened, to place a stall
	mark := func(what string) { moments = append(moments, fmt.Sprintf("%s@%d", what, dataplane.MonotonicNow()/1e6)) }
	for i := 0; i < 20; i++ {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		before, _ := client.Snapshot()
		mark(fmt.Sprintf("kill%d", i))
		d.Process.Signal(syscall.SIGKILL)
		d.Wait()
		if err := syscall.Kill(hostPID, 0); err != nil {
			t.Fatalf("kill %d: the DP host died with the daemon: %v", i, err)
		}
		if s := processState(cp.Process.Pid); s != "R" && s != "S" {
			t.Fatalf("kill %d: CP task state %q", i, s)
		}
		// DP runs on alone.
		progressed := false
		for wait := time.Now().Add(time.Second); !progressed && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
			after, _ := client.Snapshot()
			progressed = after.Loop.Heartbeat != before.Loop.Heartbeat
		}
		if !progressed {
			t.Fatalf("kill %d: DP loop made no progress without the daemon", i)
		}
		mark(fmt.Sprintf("start%d", i))
		d = e.start(t)
		mark(fmt.Sprintf("ready%d", i))
		st := e.status(t)
		if len(st.Loops) != 1 || st.Loops[0].PID != hostPID {
			t.Fatalf("kill %d: restarted daemon did not adopt the running loop (pid %d): %+v", i, hostPID, st.Loops)
		}
	}
	phaseEnd := dataplane.MonotonicNow()
	time.Sleep(10 * host.Tick)
	final, _ := client.Snapshot()
	wcancel()
	wg.Wait()
	if genErr != nil && genErr != context.Canceled {
		t.Logf("generator: %v", genErr)
	}
	stall := time.Duration(final.Progress.MaxStallNs)
	t.Logf("traffic: sent %d received %d lost %d p99 %.0fus; loop packets %d yields %d wakes rx/probe/timeout %d/%d/%d; longest progress stall %v (%d excused: host steal %v, or the watching tick itself late)",
		rep.Sent, rep.Received, rep.Lost, rep.LatencyUs.P99, final.Loop.Packets, final.Loop.Yields,
		final.Loop.WakesRX, final.Loop.WakesProbe, final.Loop.WakesTimeout, stall, final.Progress.Excused, time.Duration(final.Progress.StealNs))
	if final.Loop.Packets == 0 || final.Loop.Yields == 0 {
		t.Errorf("no lending workload: packets %d yields %d", final.Loop.Packets, final.Loop.Yields)
	}
	// Stalls while the daemon was being killed and restarted (a stall that
	// ended before the first kill belongs to the start, reported above).
	for _, s := range final.Progress.Recent {
		if s.EndNs-s.Ns >= phaseStart && s.EndNs <= phaseEnd+int64(10*time.Millisecond) && s.Ns > int64(10*time.Millisecond) {
			t.Errorf("DP loop progress stalled %v, ending at %dms (not explained by steal); kills and restarts (ms): %s",
				time.Duration(s.Ns), s.EndNs/1e6, strings.Join(moments, " "))
		}
	}
	if rep.Sent > 0 && float64(rep.Lost) > 0.005*float64(rep.Sent) {
		t.Errorf("lost %d of %d packets across the kills", rep.Lost, rep.Sent)
	}

	// A clean stop ends the loop the daemon started and reclaims the core.
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(hostPID, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(hostPID, 0) == nil {
		t.Error("SIGTERM left the DP host running")
	}
}
