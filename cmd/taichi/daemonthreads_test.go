package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/trafficgen"
)

// The daemon keeps every one of its threads on the CP cores while it lends
// the DP core under traffic: sampled every 20 ms, no daemon thread that ran
// since the last sample did so on a DP core (the kernel's "processor" of
// each thread), and every thread's affinity holds CP cores only.
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
	ran := map[int]uint64{}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(d.Process.Pid), "task"))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			before, seen := ran[tid]
			now, ok := runNs(d.Process.Pid, tid)
			if !ok {
				continue
			}
			ran[tid] = now
			if cpu, ok := lastCPU(d.Process.Pid, tid); ok && seen && now > before && slices.Contains(dp, cpu) {
				t.Fatalf("daemon thread %d ran on DP core %d", tid, cpu)
			}
			if aff, err := linuxsched.Affinity(tid); err == nil {
				for _, cpu := range aff {
					if slices.Contains(dp, cpu) {
						t.Fatalf("daemon thread %d may run on DP core %d (affinity %v)", tid, cpu, aff)
					}
				}
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

// runNs is how long thread tid of pid has run (schedstat's first field).
func runNs(pid, tid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	return v, err == nil
}

// lastCPU is the CPU thread tid of pid last ran on (/proc/.../stat field 39).
func lastCPU(pid, tid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0, false
	}
	// Fields after the command, which may hold spaces, start after ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b)[i+1:])
	const processor = 39 - 3 // field 39, counted from field 3 (state)
	if len(f) <= processor {
		return 0, false
	}
	cpu, err := strconv.Atoi(f[processor])
	return cpu, err == nil
}
