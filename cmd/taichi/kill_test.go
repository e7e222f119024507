package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/dataplane/host"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

// stealSeconds is cpu's steal time from the whole of /proc/stat.
func stealSeconds(t testing.TB, cpu int) float64 {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	st, err := fs.Stat()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := st.CPU[int64(cpu)]
	if !ok {
		t.Fatalf("/proc/stat has no cpu%d line", cpu)
	}
	return c.Steal
}

// The kill test's peak offered rate and number of kills; the residence
// bound BenchmarkKill9Residence reports against; and the share of the
// generator's packets the kills may cost. Measured under stress-ng --cpu 2
// with -race, 19 kill phases: 18 lost nothing, one lost 0.661% (1868 of
// 282600); 2% is three times that. The same runs had 0.18% (min), 1.07%
// (median), 3.27% (max) of packets over 10 ms and a longest residence of
// 28 ms to 1.02 s (median 0.50 s): a load beside the DP core decides
// those, so they are the benchmark's figures, not the test's claim.
const (
	killRate           = 10000
	kills              = 50
	killResidenceBound = 10 * time.Millisecond
	killMaxLossFrac    = 0.02
)

// killResult is what the DP loop and the generator saw across the kills.
type killResult struct {
	rep     trafficgen.Report
	packets uint64 // the loop received in the kill phase
	yields  uint64
	res     dataplane.Histogram // RX residence of those packets
	steal   float64             // DP core steal time, seconds
	prog    host.Progress       // the loop's stalls without a yield (whole run)
}

// killPhase runs the kill phase: 50 SIGKILLs of the daemon at random points
// while it lends the DP core under on/off traffic with a CP workload. It
// fails t if the DP host dies with a daemon, the CP task stops being
// runnable, the loop does not iterate without the daemon, a restarted daemon
// does not adopt the running loop, or a clean stop (SIGTERM) does not end
// the DP host.
func killPhase(t testing.TB) killResult {
	t.Helper()
	needRootCgroups(t)
	if testing.Short() {
		t.Skip("long: 50 daemon kills under traffic")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	name := fmt.Sprintf("cpkl%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "taichi", "^"+name+"$")
	tb := withTestbedLoop(t, ctx, e, "k", "kdp")
	// The default rescan period, so the daemon's CPU share below is what a
	// deployment pays (each start adopts at once anyway).
	if err := os.WriteFile(e.cfgPath, []byte(strings.Replace(mustRead(t, e.cfgPath), "rescan: 100ms", "rescan: 2s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	dp := e.dp[0]
	cp := spawnCP(t, name)
	d := e.start(t)
	st := e.status(t)
	if len(st.Loops) != 1 || !st.Loops[0].Alive {
		t.Fatalf("loop not running: %+v", st.Loops)
	}
	hostPID := st.Loops[0].PID
	t.Cleanup(func() { syscall.Kill(hostPID, syscall.SIGTERM) })
	client, err := host.Attach(filepath.Join(filepath.Dir(e.socket), "dp", "kdp.shm"), "kdp")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// A snapshot published after at (CLOCK_MONOTONIC): the loop's stats reach
	// the segment a tick or so late.
	snapshotAfter := func(at int64) host.Snapshot {
		var s host.Snapshot
		waitFor(t, "the DP host to publish fresh stats", func() bool {
			var err error
			s, err = client.Snapshot()
			return err == nil && s.Published > at
		})
		return s
	}

	stopTraffic := startKillTraffic(ctx, tb, e.cp[0])
	defer stopTraffic()
	logDaemonSteadyCPU(t, e)

	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	before := snapshotAfter(dataplane.MonotonicNow())
	stealBefore := stealSeconds(t, dp)
	for i := range kills {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond) // a random point to kill at
		d = killAndRestart(t, e, d, client, hostPID, cp.Process.Pid, i)
	}
	after := snapshotAfter(dataplane.MonotonicNow())
	steal := stealSeconds(t, dp) - stealBefore
	rep, genErr := stopTraffic()
	if genErr != nil && genErr != context.Canceled {
		t.Logf("generator: %v", genErr)
	}

	r := killResult{
		rep: rep, packets: after.Loop.Packets - before.Loop.Packets, yields: after.Loop.Yields - before.Loop.Yields,
		res: after.Loop.Residence.Sub(before.Loop.Residence), steal: steal, prog: after.Progress,
	}
	t.Logf("kill phase: %d kills, %d packets (generator sent %d, lost %d), residence p50 %v p99 %v max %v; DP core steal %.3fs; loop yields %d, longest stall without a yield %v (%d over %v counted, %d excused by steal or a late tick, longest excused %v)",
		kills, r.packets, rep.Sent, rep.Lost, r.res.Quantile(0.5), r.res.Quantile(0.99), time.Duration(r.res.MaxNs),
		steal, r.yields, time.Duration(r.prog.MaxStallNs), r.prog.Stalls, host.ExcuseAbove, r.prog.Excused, time.Duration(r.prog.ExcusedMaxNs))

	// A clean stop ends the loop the daemons kept and reclaims the core.
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	waitFor(t, "SIGTERM to end the DP host", func() bool { return syscall.Kill(hostPID, 0) != nil || processState(hostPID) == "Z" })
	return r
}

// startKillTraffic runs the kill phase's on/off traffic, its sender on
// senderCPU, until the returned stop is called (again: a no-op), which
// returns what the generator saw.
func startKillTraffic(ctx context.Context, tb *testbed.Testbed, senderCPU int) (stop func() (trafficgen.Report, error)) {
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var rep trafficgen.Report
	var genErr error
	go func() {
		defer wg.Done()
		rep, genErr = trafficgen.Run(wctx, trafficgen.Options{
			NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: senderCPU,
			Rate: killRate, Count: 10_000_000, Pattern: trafficgen.PatternOnOff,
			On: 10 * time.Millisecond, Off: 30 * time.Millisecond, Deadline: 3 * time.Minute,
		})
	}()
	return func() (trafficgen.Report, error) {
		wcancel()
		wg.Wait()
		return rep, genErr
	}
}

// logDaemonSteadyCPU logs the daemon's own cost at steady state: one lent
// core, traffic, a CP task; a full rate window first.
func logDaemonSteadyCPU(t testing.TB, e *daemonEnv) {
	t.Helper()
	// Asking once a second costs the measured daemon little.
	waitForEvery(t, "a full window of the daemon's CPU rate", 20*time.Second, time.Second, func() bool {
		w, err := time.ParseDuration(e.status(t).Daemon.Window)
		return err == nil && w >= 10*time.Second
	})
	self := e.status(t).Daemon
	t.Logf("daemon CPU at steady state (one lent DP core, on/off traffic, a CP task): %.2f%% of a core over %s", 100*self.Share, self.Window)
}

// killAndRestart is kill i: SIGKILL the daemon d; the DP host (hostPID)
// must survive, the CP task (cpPID) stay runnable and the loop iterate
// alone; a restarted daemon must adopt the running loop. It returns the
// restarted daemon.
func killAndRestart(t testing.TB, e *daemonEnv, d *exec.Cmd, client *host.Client, hostPID, cpPID, i int) *exec.Cmd {
	t.Helper()
	beat := client.Snapshot
	was, _ := beat()
	d.Process.Signal(syscall.SIGKILL)
	d.Wait()
	if err := syscall.Kill(hostPID, 0); err != nil {
		t.Fatalf("kill %d: the DP host died with the daemon: %v", i, err)
	}
	if s := processState(cpPID); s != "R" && s != "S" {
		t.Fatalf("kill %d: CP task state %q", i, s)
	}
	waitFor(t, fmt.Sprintf("kill %d: the DP loop to iterate without the daemon", i), func() bool {
		now, err := beat()
		return err == nil && now.Loop.Heartbeat != was.Loop.Heartbeat
	})
	d = e.start(t)
	if st := e.status(t); len(st.Loops) != 1 || st.Loops[0].PID != hostPID {
		t.Fatalf("kill %d: restarted daemon did not adopt the running loop (pid %d): %+v", i, hostPID, st.Loops)
	}
	return d
}

// TestKill9DuringLendingKeepsDPForwarding: across 50 SIGKILLs of the daemon
// at random points while it lends the DP core under on/off traffic with a
// CP workload (killPhase), the DP loop keeps forwarding alone, CP stays
// runnable, each restarted daemon adopts the running loop, the loop's
// residence histogram counts every packet it received, and at most
// killMaxLossFrac of the generator's packets are lost. How long packets
// waited (the 10 ms residence bound) is BenchmarkKill9Residence: under
// load beside it (stress-ng --cpu 2 on the DP core) that is a property of
// the load, not of the kills.
func TestKill9DuringLendingKeepsDPForwarding(t *testing.T) {
	r := killPhase(t)
	t.Logf("measured: lost %d of %d packets (fraction %.6f); %d of %d packets over %v (fraction %.6f), residence max %v, DP core steal %.3fs",
		r.rep.Lost, r.rep.Sent, float64(r.rep.Lost)/float64(max(r.rep.Sent, 1)),
		r.overBound(), r.packets, killResidenceBound, r.overFrac(), time.Duration(r.res.MaxNs), r.steal)
	if r.packets == 0 || r.yields == 0 {
		t.Fatalf("no lending workload in the kill phase: packets %d yields %d", r.packets, r.yields)
	}
	// Snapshots are taken under traffic: the loop records a packet's
	// residence as it handles it and adds its batch to the packet count
	// after the batch, so the two may differ by one batch in flight.
	const inFlight = 64 // the loop's RX batch
	if r.res.Count+inFlight < r.packets || r.res.Count > r.packets+inFlight {
		t.Errorf("residence counted %d of the %d packets the loop received (more than a batch apart)", r.res.Count, r.packets)
	}
	if r.rep.Sent == 0 || float64(r.rep.Lost) > killMaxLossFrac*float64(r.rep.Sent) {
		t.Errorf("lost %d of %d packets across the kills, want at most %.1f%%", r.rep.Lost, r.rep.Sent, 100*killMaxLossFrac)
	}
}

// overBound counts the packets that waited more than killResidenceBound,
// conservatively: a bucket that reaches past the bound counts as over it.
func (r killResult) overBound() uint64 { return r.res.Count - r.res.AtMost(killResidenceBound) }

func (r killResult) overFrac() float64 { return float64(r.overBound()) / float64(max(r.packets, 1)) }

// BenchmarkKill9Residence runs the kill phase once per iteration and
// reports how long the DP loop's packets waited across the kills: the
// share over 10 ms, p99 and max RX residence, the share steal on the DP
// core could excuse (packets arriving in the stolen time at the peak rate),
// and the loop's longest stall without a yield (a busy-polling SCHED_FIFO
// loop is parked up to 50 ms a second by RT throttling, when on). On an
// unloaded machine with RT throttling off, over10ms-frac beyond
// steal-excusable-frac, or a stall over 10 ms, is a regression. One kill
// phase takes about two minutes: run it with -benchtime 1x (a phase's
// testbed and cgroups, named per process, are removed only when the
// benchmark ends, so a second iteration would meet the first's).
func BenchmarkKill9Residence(b *testing.B) {
	var over, excusable, p99, maxRes, stall, lost float64
	n := 0
	for b.Loop() {
		r := killPhase(b)
		n++
		over += r.overFrac()
		excusable += min(math.Ceil(killRate*r.steal)/float64(max(r.packets, 1)), 1)
		p99 += float64(r.res.Quantile(0.99))
		maxRes = max(maxRes, float64(r.res.MaxNs))
		stall = max(stall, float64(r.prog.MaxStallNs))
		lost += float64(r.rep.Lost) / float64(max(r.rep.Sent, 1))
	}
	if n == 0 {
		return
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(over/float64(n), "over10ms-frac")
	b.ReportMetric(excusable/float64(n), "steal-excusable-frac")
	b.ReportMetric(p99/float64(n), "residence-p99-ns")
	b.ReportMetric(maxRes, "residence-max-ns")
	b.ReportMetric(stall, "stall-max-ns")
	b.ReportMetric(lost/float64(n), "lost-frac")
}
