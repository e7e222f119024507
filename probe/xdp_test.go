package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func TestXDPCountsEqualPacketsSent(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, 1)
	t.Logf("attach mode: %s", p.Mode())
	if m := p.Mode(); m != "native" && m != "generic" {
		t.Fatalf("mode %q", m)
	}
	s := sender(t, tb)
	// In chunks the receiving veth's queues always hold, each counted
	// before the next: an emulated guest (the kernel matrix) drains them
	// too slowly for a burst of n, and a packet dropped before the hook
	// is not the probe's to count.
	const n, chunk = 2000, 100
	for sent := 0; sent < n; sent += chunk {
		sendN(t, s, uint64(1+sent), chunk)
		want := uint64(sent + chunk)
		waitFor(t, fmt.Sprintf("counters to reach the %d packets sent", want), func() bool { pk, _ := p.Queue(0); return pk >= want })
	}
	time.Sleep(50 * time.Millisecond) // anything extra would show up by now
	st := p.Stats()
	var pk, by uint64
	for _, q := range st.Queues {
		pk += q.Packets
		by += q.Bytes
		if q.Core != 1 {
			t.Errorf("queue %d mapped to core %d, want the default 1", q.Queue, q.Core)
		}
	}
	if pk != n || by != n*frameLen {
		t.Fatalf("probe counted %d packets / %d bytes, sent %d / %d", pk, by, n, n*frameLen)
	}
	if len(st.Cores) != 1 || st.Cores[0].Fired != 0 {
		t.Fatalf("events without arming: %+v", st.Cores)
	}
}

func TestXDPGenericModeCountsAndWakes(t *testing.T) {
	tb := upTestbed(t)
	p := startXDPMode(t, tb, 1, "generic")
	if p.Mode() != "generic" {
		t.Fatalf("mode %q", p.Mode())
	}
	if text, _ := xdpAttached(t, tb.NICNS, tb.NICIn); !strings.Contains(text, "xdpgeneric") {
		t.Fatalf("not attached in generic mode:\n%s", text)
	}
	ws, _ := p.XDPWakeSource(1)
	ws.Arm()
	s := sender(t, tb)
	sendN(t, s, 1, 300)
	waitFor(t, "packets counted", func() bool { pk, _ := p.Queue(0); return pk == 300 })
	if ev, ok := ws.DisarmEvent(); !ok || ev.TagSeq() != 1 || ws.Stats().Fired != 1 {
		t.Fatalf("event %+v %v, stats %+v", ev, ok, ws.Stats())
	}
}

func TestXDPOneEventPerIdleToTrafficTransition(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, 1)
	ws, err := p.XDPWakeSource(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.XDPWakeSource(0); err == nil {
		t.Fatal("core 0 has no queue, want an error")
	}
	s := sender(t, tb)
	const burst = 100
	var sent uint64
	for round := 1; round <= 3; round++ {
		ws.Arm()
		sendN(t, s, sent+1, burst)
		sent += burst
		waitFor(t, "burst counted", func() bool { pk, _ := p.Queue(0); return pk == sent })
		cs := ws.Stats()
		if cs.Fired != uint64(round) {
			t.Fatalf("round %d: fired %d, want %d (one per transition)", round, cs.Fired, round)
		}
		ev, ok := ws.DisarmEvent()
		if !ok {
			t.Fatalf("round %d: no event after an armed burst", round)
		}
		first := sent - burst + 1
		if ev.Seq != uint64(round) || ev.Packets != first || ev.TagSeq() != first || ev.Core != 1 || ev.Queue != 0 {
			t.Fatalf("round %d: event %+v, want seq %d for packet %d", round, ev, round, first)
		}
		if ws.cons.pending() {
			t.Fatalf("round %d: more than one record in the ring", round)
		}
		// Traffic while disarmed raises nothing.
		sendN(t, s, sent+1, burst)
		sent += burst
		waitFor(t, "disarmed burst counted", func() bool { pk, _ := p.Queue(0); return pk == sent })
		if f := ws.Stats().Fired; f != uint64(round) {
			t.Fatalf("round %d: disarmed traffic fired (%d)", round, f)
		}
		if _, ok := ws.Disarm(); ok {
			t.Fatalf("round %d: second Disarm returned an event", round)
		}
	}
	if cs := ws.Stats(); cs.Delivered != 3 || cs.Missed != 0 || cs.Garbled != 0 || cs.Lost != 0 {
		t.Fatalf("stats %+v", cs)
	}
}

// A DP loop blocked in epoll on its packet socket and the probe's fd is
// woken by the probe, whose stamp precedes the packet's arrival on the DP
// interface.
func TestXDPWakesBlockedWaiterBeforeSocket(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, 1)
	ws, _ := p.XDPWakeSource(1)
	rx, err := ListenPacket(tb.DPNS, tb.DPIface)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	s := sender(t, tb)

	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	for _, fd := range []int{ws.FD(), rx.FD()} {
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			t.Fatal(err)
		}
	}
	probeFirst := 0
	const rounds = 20
	for i := 1; i <= rounds; i++ {
		ws.Arm()
		type wake struct {
			fds []int32
			err error
		}
		woke := make(chan wake, 1)
		go func() {
			evs := make([]unix.EpollEvent, 2)
			for {
				n, err := unix.EpollWait(epfd, evs, 5000)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				var fds []int32
				for _, e := range evs[:max(n, 0)] {
					fds = append(fds, e.Fd)
				}
				woke <- wake{fds, err}
				return
			}
		}()
		time.Sleep(2 * time.Millisecond) // let the waiter block
		sendN(t, s, uint64(i), 1)
		w := <-woke
		if w.err != nil || len(w.fds) == 0 {
			t.Fatalf("round %d: waiter not woken: %v", i, w.err)
		}
		if w.fds[0] == int32(ws.FD()) && len(w.fds) == 1 {
			probeFirst++
		}
		ev, ok := ws.DisarmEvent()
		if !ok {
			t.Fatalf("round %d: woken but no probe event (fds %v)", i, w.fds)
		}
		a, ok, err := rx.RecvWait(5 * time.Second)
		if err != nil || !ok {
			t.Fatalf("round %d: packet never reached %s: %v", i, tb.DPIface, err)
		}
		if ev.TagSeq() != uint64(i) || a.Seq != uint64(i) {
			t.Fatalf("round %d: event tag %d, packet seq %d", i, ev.TagSeq(), a.Seq)
		}
		if a.KernelNs == 0 || ev.StampNs > a.KernelNs {
			t.Fatalf("round %d: probe stamp %d not before the socket's receive stamp %d", i, ev.StampNs, a.KernelNs)
		}
	}
	t.Logf("the probe's fd was the only ready fd at wake in %d/%d rounds", probeFirst, rounds)
}

func TestXDPStopDetaches(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, 1)
	if out, ok := xdpAttached(t, tb.NICNS, tb.NICIn); !ok {
		t.Fatalf("no XDP program after Start:\n%s", out)
	}
	pin := p.pinPath
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, ok := xdpAttached(t, tb.NICNS, tb.NICIn); ok {
		t.Fatalf("XDP program still attached after Stop:\n%s", out)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Fatalf("pin %s left behind: %v", pin, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// crashHelperEnv makes the test binary a probe process that never stops.
const crashHelperEnv = "TAICHI_PROBE_CRASH_HELPER"

// TestMain makes the test binary the crash helper when crashHelperEnv says
// so (TestXDPReplacesStaleProgramAfterKill starts it), before any test runs.
func TestMain(m *testing.M) {
	if spec := os.Getenv(crashHelperEnv); spec != "" {
		runCrashHelper(spec)
	}
	os.Exit(m.Run())
}

// runCrashHelper attaches a probe and waits to be killed.
func runCrashHelper(spec string) {
	f := strings.Split(spec, ",") // netns,iface,pindir,lockdir
	p, err := NewXDP(Options{NetNS: f[0], Iface: f[1], PinDir: f[2], LockDir: f[3], Core: 1})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := p.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", p.ProgramID())
	time.Sleep(time.Minute) // killed long before
	os.Exit(3)
}

func TestXDPReplacesStaleProgramAfterKill(t *testing.T) {
	tb := upTestbed(t)
	pinDir := testPinDir(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+tb.NICNS+","+tb.NICIn+","+pinDir+","+testLockDir(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make([]byte, 256)
	n, _ := out.Read(line)
	fields := strings.Fields(string(line[:n]))
	if len(fields) < 2 || fields[0] != "ready" {
		t.Fatalf("helper: %q", line[:n])
	}
	staleID, _ := strconv.Atoi(fields[1])
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	text, ok := xdpAttached(t, tb.NICNS, tb.NICIn)
	if !ok || !strings.Contains(text, fmt.Sprintf("id %d", staleID)) {
		t.Fatalf("stale program %d not attached after kill -9:\n%s", staleID, text)
	}
	p := startXDP(t, tb, 1)
	if !strings.Contains(p.Mode(), "replaced stale") {
		t.Fatalf("mode %q, want the stale program replaced", p.Mode())
	}
	text, _ = xdpAttached(t, tb.NICNS, tb.NICIn)
	if newID := p.ProgramID(); newID == staleID || !strings.Contains(text, fmt.Sprintf("id %d", newID)) {
		t.Fatalf("program %d (stale %d) not the attached one:\n%s", newID, staleID, text)
	}
	s := sender(t, tb)
	sendN(t, s, 1, 10)
	waitFor(t, "new program counting", func() bool { pk, _ := p.Queue(0); return pk == 10 })
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if text, ok := xdpAttached(t, tb.NICNS, tb.NICIn); ok {
		t.Fatalf("XDP program left after Stop:\n%s", text)
	}
}

// A crashed run whose interface disappeared leaves a pin that holds a
// detached program; the next Start (on any interface) removes it.
func TestXDPSweepsPinsOfVanishedInterfaces(t *testing.T) {
	gone := upTestbed(t)
	pinDir := testPinDir(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+gone.NICNS+","+gone.NICIn+","+pinDir+","+testLockDir(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make([]byte, 256)
	n, _ := out.Read(line)
	if !strings.HasPrefix(string(line[:n]), "ready") {
		t.Fatalf("helper: %q", line[:n])
	}
	_ = cmd.Process.Signal(unix.SIGKILL)
	_ = cmd.Wait()
	pins, _ := filepath.Glob(pinDir + "/xdp-*")
	if len(pins) != 1 {
		t.Fatalf("pins after kill -9: %v", pins)
	}
	if err := gone.Down(); err != nil {
		t.Fatal(err)
	}
	// The kernel dismantles a deleted namespace asynchronously; the link
	// detaches when its device is unregistered.
	waitFor(t, "the stale link to detach", func() bool {
		l, err := link.LoadPinnedLink(pins[0], nil)
		if err != nil {
			return false
		}
		defer l.Close()
		info, err := l.Info()
		return err == nil && info.XDP() != nil && info.XDP().Ifindex == 0
	})
	tb := upTestbed(t)
	p, err := NewXDP(Options{Iface: tb.NICIn, NetNS: tb.NICNS, Core: 1, PinDir: pinDir, LockDir: testLockDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if _, err := os.Stat(pins[0]); !os.IsNotExist(err) {
		t.Fatalf("defunct pin %s still there (%v)", pins[0], err)
	}
}

// A second probe on an interface a live probe holds is refused, and the
// live one keeps working; after Stop the interface is free again.
func TestXDPRefusesInterfaceOfLiveProbe(t *testing.T) {
	tb := upTestbed(t)
	opts := Options{Iface: tb.NICIn, NetNS: tb.NICNS, Core: 1, PinDir: testPinDir(t), LockDir: testLockDir(t)}
	first, err := NewXDP(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	firstID := first.ProgramID()
	second, _ := NewXDP(opts)
	err = second.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("live process (pid %d", os.Getpid())) {
		second.Stop()
		t.Fatalf("second Start: %v, want a refusal naming our pid", err)
	}
	if text, _ := xdpAttached(t, tb.NICNS, tb.NICIn); !strings.Contains(text, fmt.Sprintf("id %d", firstID)) {
		t.Fatalf("the live probe's program %d was displaced:\n%s", firstID, text)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := second.Start(context.Background()); err != nil {
		t.Fatalf("Start after the first stopped: %v", err)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestXDPStartErrors(t *testing.T) {
	needRoot(t)
	p, err := NewXDP(Options{Iface: "nosuchif0", Core: 1, PinDir: testPinDir(t), LockDir: testLockDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `iface "nosuchif0"`) {
		t.Fatalf("err %v, want one naming the interface", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop after failed Start: %v", err)
	}
	if _, err := NewXDP(Options{Iface: "x", Core: 64}); err == nil || !strings.HasPrefix(err.Error(), "core:") {
		t.Fatalf("err %v, want core: ...", err)
	}
}

func TestVerifierLogInError(t *testing.T) {
	needRoot(t)
	// r0 is never set: the verifier rejects the program.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Return()}})
	if err == nil {
		t.Fatal("verifier accepted a program without r0")
	}
	msg := withVerifierLog(err).Error()
	if !strings.Contains(msg, "verifier log:") || !strings.Contains(msg, "R0 !read_ok") {
		t.Fatalf("error lacks the verifier log: %s", msg)
	}
}

func TestCountersBackend(t *testing.T) {
	tb := upTestbed(t)
	p, err := NewCounters(Options{Iface: tb.NICIn, NetNS: tb.NICNS, Core: 1, Interval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	w, err := p.WakeSource(1)
	if err != nil {
		t.Fatal(err)
	}
	s := sender(t, tb)
	for round := 1; round <= 2; round++ {
		w.Arm()
		sendN(t, s, 1, 500)
		waitFor(t, "interface counters", func() bool { return p.Stats().Queues[0].Packets == uint64(500*round) })
		fds := []unix.PollFd{{Fd: int32(w.FD()), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 1000); n != 1 {
			t.Fatalf("round %d: eventfd not readable after traffic", round)
		}
		stamp, ok := w.Disarm()
		if !ok || stamp <= 0 {
			t.Fatalf("round %d: Disarm = %d, %v", round, stamp, ok)
		}
		time.Sleep(20 * time.Millisecond)
		st := p.Stats()
		// Fired is one per arming; Bursts counts every poll that saw
		// traffic after an idle poll, and a sender stall inside a burst
		// makes two of it.
		if st.Cores[0].Fired != uint64(round) || p.Bursts() < uint64(round) {
			t.Fatalf("round %d: fired %d bursts %d", round, st.Cores[0].Fired, p.Bursts())
		}
		if st.Queues[0].Bytes != uint64(500*round*frameLen) {
			t.Fatalf("round %d: bytes %d", round, st.Queues[0].Bytes)
		}
	}
	if !strings.HasPrefix(p.Mode(), "poll ") {
		t.Fatalf("mode %q", p.Mode())
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestWatchEvents(t *testing.T) {
	tb := upTestbed(t)
	p := startXDP(t, tb, 1)
	ws, _ := p.XDPWakeSource(1)
	s := sender(t, tb)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var tags []uint64
	done := make(chan error, 1)
	go func() {
		done <- WatchEvents(ctx, ws, func(ev Event, woke int64) {
			mu.Lock()
			tags = append(tags, ev.TagSeq())
			mu.Unlock()
			if woke < ev.StampNs {
				t.Errorf("woke %d before stamp %d", woke, ev.StampNs)
			}
		})
	}()
	for i := 1; i <= 10; i++ {
		// One packet per armed window: wait until the watcher re-armed.
		waitFor(t, "watcher armed", func() bool { return atomic.LoadUint64(ws.state) == coreArmed })
		sendN(t, s, uint64(i), 1)
		waitFor(t, "event", func() bool { mu.Lock(); defer mu.Unlock(); return len(tags) == i })
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, tag := range tags {
		if tag != uint64(i+1) {
			t.Fatalf("events %v, want tags 1..10", tags)
		}
	}
	runtime.KeepAlive(p)
}

// Per-queue counters from the driver's ethtool stats, checked against the
// XDP probe's own per-queue counts on the same packets. veth counts per
// queue only on its NAPI path, which an attached XDP program enables.
func TestCountersPerQueueMatchXDP(t *testing.T) {
	nsA, nsB, ifB, dst := twoNSMultiQueue(t)
	queues := map[int]int{0: 10, 1: 11, 2: 12, 3: 13}
	x, err := NewXDP(Options{Iface: ifB, NetNS: nsB, Core: 1, PinDir: testPinDir(t), LockDir: testLockDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer x.Stop()
	c, err := NewCounters(Options{Iface: ifB, NetNS: nsB, Core: 1, Queues: queues, Interval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if !strings.HasSuffix(c.Mode(), "per-queue") {
		t.Fatalf("mode %q: veth's per-queue stats not found", c.Mode())
	}
	wakes := map[int]WakeSource{}
	for _, core := range queues {
		w, err := c.WakeSource(core)
		if err != nil {
			t.Fatal(err)
		}
		w.Arm()
		wakes[core] = w
	}
	sent := 0
	for port := 0; port < 32; port++ {
		s, err := DialUDP(nsA, netip.AddrPortFrom(dst, uint16(7000+port)))
		if err != nil {
			t.Fatal(err)
		}
		sendN(t, s, uint64(sent+1), 10)
		sent += 10
		s.Close()
	}
	waitFor(t, "counters to see every packet", func() bool { return c.Stats().Queues[0].Packets == uint64(sent) })
	time.Sleep(20 * time.Millisecond) // one more poll for the queue counters
	st := c.Stats()
	if len(st.Queues) != 5 {
		t.Fatalf("queues %+v, want total + 4", st.Queues)
	}
	for _, q := range st.Queues[1:] {
		xp, xb := x.Queue(q.Queue)
		// Drivers differ on bytes: veth counts from the L3 header (its skb
		// was already pulled past Ethernet), XDP sees the whole frame.
		if q.Packets != xp || (q.Bytes != xb && q.Bytes != xb-14*xp) {
			t.Errorf("queue %d: counters %d packets %d bytes, xdp %d / %d", q.Queue, q.Packets, q.Bytes, xp, xb)
		}
		if q.Core != queues[q.Queue] {
			t.Errorf("queue %d mapped to core %d", q.Queue, q.Core)
		}
		_, ok := wakes[q.Core].Disarm()
		if ok != (q.Packets > 0) {
			t.Errorf("queue %d saw %d packets, core %d woken: %v", q.Queue, q.Packets, q.Core, ok)
		}
	}
}

func TestCountersQueuesNeedPerQueueStats(t *testing.T) {
	needRoot(t)
	c, err := NewCounters(Options{Iface: "lo", Core: 1, Queues: map[int]int{0: 1}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	if err == nil {
		c.Stop()
		t.Fatal("lo has no per-queue counters, yet queues were accepted")
	}
	if !strings.HasPrefix(err.Error(), "queues:") {
		t.Fatalf("err %v, want one naming queues", err)
	}
}
