package host

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/testbed"
	"github.com/taichi-sched/taichi/trafficgen"
)

func TestEventCodecRoundTrip(t *testing.T) {
	in := dataplane.Event{Loop: "x", CPU: 3, Kind: dataplane.KindWake, Cause: scheduler.WakeProbe, AtNs: 12345, ExposedNs: 77, LeadNs: -5, BlockedNs: 999}
	b := make([]byte, eventRec)
	encodeEvent(b, in)
	out, err := decodeEvent(b, "x")
	if err != nil || out != in {
		t.Fatalf("round trip: %+v, %v; want %+v", out, err, in)
	}
	for _, bad := range []dataplane.Event{
		{Kind: dataplane.KindWake, Cause: scheduler.WakeTimeout + 1}, // unknown cause byte
		{Kind: dataplane.KindWake},                                   // a wake without a cause
		{Kind: dataplane.KindYield, Cause: scheduler.WakeRx},         // a yield with one
	} {
		encodeEvent(b, bad)
		if _, err := decodeEvent(b, "x"); err == nil {
			t.Errorf("%s event with cause byte %d accepted", bad.Kind, b[1])
		}
	}
	b[0] = 9
	if _, err := decodeEvent(b, "x"); err == nil {
		t.Fatal("garbled kind accepted")
	}
	if _, err := decodeEvent(b[:8], "x"); err == nil {
		t.Fatal("short record accepted")
	}
}

// TestHostedLoopThroughSegment drives a real loop (and the real XDP probe on
// the testbed's nic hop) only through a Client on its segment.
func TestHostedLoopThroughSegment(t *testing.T) {
	testenv.NeedRoot(t, "network namespaces, SCHED_FIFO, XDP")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("hs%d", os.Getpid()%100000)})
	if err != nil {
		testenv.Require(t, "testbed: %v", err)
	}
	t.Cleanup(func() { tb.Down() })

	path := filepath.Join(t.TempDir(), "dp.shm")
	hctx, hcancel := context.WithCancel(ctx)
	h, err := Start(hctx, Spec{
		Loop:         dataplane.LoopConfig{Name: "hs", CPU: 1, Iface: tb.DPIface, NetNS: tb.DPNS},
		ProbeBackend: probe.BackendXDP,
		Probe:        probe.Options{Iface: tb.NICIn, NetNS: tb.NICNS, LockDir: t.TempDir()},
		ShmPath:      path,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { hcancel(); h.Wait() }()

	c, err := Attach(path, "hs")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.PID() != os.Getpid() || c.CPU() != 1 || c.TID() == 0 {
		t.Errorf("header pid %d cpu %d tid %d", c.PID(), c.CPU(), c.TID())
	}
	// The loop busy-polls (never yields) until told otherwise: a client
	// asleep on the doorbell is woken by its first yield, not by a timeout.
	if !c.EventBell() {
		t.Fatal("the host does not advertise its event doorbell")
	}
	c.Events(func(dataplane.Event) {})
	const sleepMax = 30 * time.Second
	woke := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		if err := c.WaitEvents(sleepMax); err != nil {
			t.Error(err)
		}
		woke <- time.Since(start)
	}()
	c.SetYield(4, 2*time.Millisecond)
	if slept := <-woke; slept >= sleepMax {
		t.Fatalf("WaitEvents slept %v: the first yield did not ring the doorbell", slept)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, _, ok := c.Knobs(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host never applied the knobs")
		}
		time.Sleep(time.Millisecond)
	}
	if got := h.Loop().Control().YieldAfter(); got != 4 {
		t.Fatalf("loop YieldAfter = %d, want 4", got)
	}

	rep, err := trafficgen.Run(ctx, trafficgen.Options{
		NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP,
		Rate: 20000, Count: 2000, Pattern: trafficgen.PatternOnOff, On: 5 * time.Millisecond, Off: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 0 {
		t.Errorf("lost %d of %d across yields", rep.Lost, rep.Sent)
	}
	time.Sleep(20 * Tick)

	var yields, wakes, probeWakes int
	if _, err := c.Events(func(ev dataplane.Event) {
		switch {
		case ev.Kind == dataplane.KindYield:
			yields++
		case ev.Kind == dataplane.KindWake:
			wakes++
			if ev.Cause == scheduler.WakeProbe {
				probeWakes++
			}
		}
		if ev.CPU != 1 {
			t.Errorf("event for cpu %d", ev.CPU)
		}
	}); err != nil {
		t.Error(err)
	}
	if yields == 0 || wakes == 0 {
		t.Errorf("events through the segment: %d yields, %d wakes", yields, wakes)
	}
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Loop.Packets < rep.Sent {
		t.Errorf("snapshot packets %d < sent %d", snap.Loop.Packets, rep.Sent)
	}
	if snap.ProbeErr != "" || snap.Probe == nil {
		t.Fatalf("probe not running: %q", snap.ProbeErr)
	}
	if probeWakes == 0 {
		t.Errorf("no wake attributed to the probe (%d wakes)", wakes)
	}
	checkLoadBlock(t, c, snap)
	t.Logf("sent %d, yields %d, wakes %d (probe %d), p99 %.0fus", rep.Sent, yields, wakes, probeWakes, rep.LatencyUs.P99)

	// Wake request through the segment ends a long wait.
	c.SetYield(1, 500*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	before := h.Loop().Stats().Wakes()
	c.Wake()
	time.Sleep(50 * time.Millisecond)
	if h.Loop().Stats().Wakes() == before {
		t.Error("Wake through the segment did not wake the blocked loop")
	}
	if !c.Alive() {
		t.Error("host beat is stale")
	}
}

// The steal of a CPU whose line lies past the first 4 KiB of /proc/stat
// (a large host) is read, not taken for 0.
func TestStealOfALateCPULine(t *testing.T) {
	var b strings.Builder
	b.WriteString("cpu  1 2 3 4 5 6 7 8 0 0\n")
	for cpu := range 200 {
		fmt.Fprintf(&b, "cpu%d 100 0 200 300000 10 0 5 %d 0 0\n", cpu, cpu+1)
	}
	b.WriteString("intr 12345 0 0 0\nctxt 999\n")
	if b.Len() < 4<<10+1000 {
		t.Fatalf("synthetic /proc/stat only %d bytes", b.Len())
	}
	if got, want := stealFrom(bufio.NewReader(strings.NewReader(b.String())), 150), int64(151)*int64(10*time.Millisecond); got != want {
		t.Errorf("steal of cpu150 = %d, want %d", got, want)
	}
	if got := stealFrom(bufio.NewReader(strings.NewReader(b.String())), 999); got != 0 {
		t.Errorf("steal of a missing cpu = %d, want 0", got)
	}
}

// checkLoadBlock: the daemon's load pass reads the binary block, and it
// carries what the JSON published before and after it does.
func checkLoadBlock(t *testing.T, c *Client, before Snapshot) {
	t.Helper()
	var load Load
	if !c.BinaryLoad() {
		t.Fatal("the host does not advertise its load block")
	}
	if err := c.ReadLoad(&load); err != nil {
		t.Fatal(err)
	}
	// The host writes the block just before the JSON of the same publish:
	// wait for that JSON (or a later one) to bound the block from above.
	var after Snapshot
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		var err error
		if after, err = c.Snapshot(); err != nil {
			t.Fatal(err)
		}
		if after.Published >= load.Published || time.Now().After(deadline) {
			break
		}
	}
	between := func(v, lo, hi uint64) bool { return lo <= v && v <= hi }
	if !between(uint64(load.Published), uint64(before.Published), uint64(after.Published)) ||
		!between(load.Packets, before.Loop.Packets, after.Loop.Packets) ||
		!between(uint64(load.Busy), uint64(before.Loop.Busy), uint64(after.Loop.Busy)) ||
		!between(load.Residence.Count, before.Loop.Residence.Count, after.Loop.Residence.Count) || load.Residence.Count == 0 {
		t.Errorf("load block: published %d packets %d busy %v residence %d; JSON before %d %d %v %d, after %d %d %v %d",
			load.Published, load.Packets, load.Busy, load.Residence.Count,
			before.Published, before.Loop.Packets, before.Loop.Busy, before.Loop.Residence.Count,
			after.Published, after.Loop.Packets, after.Loop.Busy, after.Loop.Residence.Count)
	}
}
