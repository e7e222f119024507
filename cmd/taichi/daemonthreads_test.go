package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/trafficgen"
)

// The daemon keeps every one of its threads on the CP cores while it lends
// the DP core under traffic: sampled every 20 ms, no daemon thread that ran
// since the last sample did so on a DP core (the kernel's "processor" of
// each thread), every thread's affinity holds CP cores only, and every
// thread that is not real-time runs at daemon.DaemonNice (above the CP
// work that shares those cores).
func TestDaemonThreadsStayOnCPCores(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := fmt.Sprintf("cpth%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "taichi", "^"+name+"$")
	tb := withTestbedLoop(t, ctx, e, "th", "thdp")
	spawnCP(t, name)
	d := e.start(t)
	stop := backgroundTraffic(ctx, trafficgen.Options{
		NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP,
		Rate: 20000, Count: 60000, Pattern: trafficgen.PatternOnOff, On: 20 * time.Millisecond, Off: 80 * time.Millisecond,
	})
	defer stop()
	dp := e.dp
	samples := 0
	// A thread's last CPU only says where it ran if it ran since the last
	// look: one asleep since before the daemon pinned it keeps a stale one.
	ran := map[int]time.Duration{}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		threads, err := linuxsched.Threads(d.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range threads {
			before, seen := ran[th.TID]
			now, err := linuxsched.RunTime(d.Process.Pid, th.TID)
			if err != nil {
				continue // ended meanwhile
			}
			ran[th.TID] = now
			if seen && now > before && slices.Contains(dp, th.LastCPU) {
				t.Fatalf("daemon thread %d ran on DP core %d", th.TID, th.LastCPU)
			}
			for _, cpu := range th.Affinity {
				if slices.Contains(dp, cpu) {
					t.Fatalf("daemon thread %d may run on DP core %d (affinity %v)", th.TID, cpu, th.Affinity)
				}
			}
			if th.Class.Policy == unix.SCHED_NORMAL && th.Class.Nice != daemon.DaemonNice {
				t.Fatalf("daemon thread %d (%s) at nice %d, want %d", th.TID, th.Comm, th.Class.Nice, daemon.DaemonNice)
			}
			samples++
		}
	}
	st := e.status(t)
	if samples < 100 || st.Cores[len(st.Cores)-1].LentSeconds <= 0 {
		t.Fatalf("%d thread samples, lent %.2fs: the daemon did not lend under traffic while sampled", samples, st.Cores[len(st.Cores)-1].LentSeconds)
	}
	t.Logf("%d thread samples, none on DP cores %v; lent %.2fs", samples, dp, st.Cores[len(st.Cores)-1].LentSeconds)
}
