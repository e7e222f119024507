package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/scheduler"
	"github.com/taichi-sched/taichi/trafficgen"
)

// watchFixture is a daemon's status one second apart: DP core 3 lent half
// the interval, three more probe reclaims, one guard trip, a quarter of a
// core harvested, and its loop 1000 packets further.
func watchFixture() (prev, cur *daemon.Status) {
	base := func(lent float64, probe, guard uint64, harvested time.Duration, packets uint64) *daemon.Status {
		return &daemon.Status{
			Version: "1.2.3", PID: 4242, Uptime: "1m0s", Policy: "taichi",
			Pool: daemon.PoolStatus{CPUs: []int{0, 1, 2, 3}, Members: 7, HarvestedCPSeconds: harvested.Seconds()},
			Cores: []daemon.CoreStatus{
				{CPU: 0, Role: "cp", State: daemon.StateCP, InPool: true},
				{CPU: 3, Role: "dp", State: daemon.StateLent, InPool: true, LentSeconds: lent, WakeP99us: 41,
					Reclaims: map[string]uint64{"probe": probe, "rx": 2}, GuardTrips: guard, Budget: 0.625, Verdict: "calm"},
			},
			Loops: []daemon.LoopStatus{{Name: "uplink0", CPU: 3, Alive: true,
				Stats: dataplane.Stats{Packets: packets, Yields: 9, WakesRX: 2, WakesProbe: probe, Exposed: exposedMax(35 * time.Microsecond)}}},
			Probe:     daemon.ProbeStatus{Backend: "xdp", State: "attached"},
			Scheduler: scheduler.Snapshot{Cores: []scheduler.CoreSnapshot{{CPU: 3, Harvested: harvested}}},
		}
	}
	prev, cur = base(10, 2, 1, 1250*time.Millisecond, 5000), base(10.5, 5, 2, 1500*time.Millisecond, 6000)
	// Residence: 1000 packets at 2 ms before the interval, 1000 at 20 µs in it.
	old := samples(2*time.Millisecond, 1000)
	prev.Loops[0].Stats.Residence = old
	cur.Loops[0].Stats.Residence = old
	cur.Loops[0].Stats.Residence.Add(samples(20*time.Microsecond, 1000))
	return prev, cur
}

// samples is a histogram holding n samples of d.
func samples(d time.Duration, n int) dataplane.Histogram {
	var h dataplane.Histogram
	for range n {
		h.Record(d)
	}
	return h
}

// row returns the line of frame that starts with prefix, fields split.
func row(t *testing.T, frame, prefix string) []string {
	t.Helper()
	for _, line := range strings.Split(frame, "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.Fields(line)
		}
	}
	t.Fatalf("no line starting with %q in\n%s", prefix, frame)
	return nil
}

func TestRenderWatchShowsRatesOverTheInterval(t *testing.T) {
	prev, cur := watchFixture()
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	renderWatch(&b, prev, cur, time.Second, time.Second, at)
	frame := b.String()
	t.Logf("\n%s", frame)

	if !strings.HasPrefix(frame, "taichi 1.2.3  pid 4242  up 1m0s  policy taichi  every 1s  12:00:00\n") {
		t.Errorf("header: %q", strings.SplitN(frame, "\n", 2)[0])
	}
	if !strings.Contains(frame, "harvested on DP cores 1.50s (25% of a core)") {
		t.Error("pool line lacks the harvest and its share of a core over the interval")
	}
	// CPU ROLE STATE LENT RXRES WAKE BUDGET RECLAIMS... GUARD (+n) HARVEST (share)
	want := []string{"3", "dp", "lent", "50%", "20µs", "41us", "0.625x/calm", "probe=5(+3)", "rx=2", "2", "(+1)", "1.50s", "(25%)"}
	if got := row(t, frame, "3 "); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("DP core row\n got %q\nwant %q", got, want)
	}
	if got := row(t, frame, "0 "); strings.Join(got, " ") != "0 cp cp" {
		t.Errorf("CP core row %q", got)
	}
	if got := row(t, frame, "uplink0"); got[4] != "1000" {
		t.Errorf("loop pps = %q, want 1000 (row %q)", got[4], got)
	}
	if strings.ContainsRune(frame, '\x1b') {
		t.Error("the rendered frame holds terminal escapes")
	}
}

func TestRenderWatchFirstFrameHasNoRates(t *testing.T) {
	_, cur := watchFixture()
	var b strings.Builder
	renderWatch(&b, nil, cur, 0, time.Second, time.Now())
	frame := b.String()
	if got := row(t, frame, "3 "); got[3] != "-" || got[7] != "probe=5" {
		t.Errorf("first frame's DP row %q: want lent share \"-\" and reclaims without increments", got)
	}
	if got := row(t, frame, "uplink0"); got[4] != "-" {
		t.Errorf("first frame's pps %q, want -", got[4])
	}

	// A restarted daemon (another pid) starts its counters again: no rates across it.
	prev, cur := watchFixture()
	prev.PID = 1
	b.Reset()
	renderWatch(&b, prev, cur, time.Second, time.Second, time.Now())
	if got := row(t, b.String(), "3 "); got[3] != "-" {
		t.Errorf("rates across a daemon restart: %q", got)
	}
}

func TestWatchInterval(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, time.Second},
		{[]string{"2"}, 2 * time.Second},
		{[]string{"0.5"}, 500 * time.Millisecond},
		{[]string{"250ms"}, 250 * time.Millisecond},
	} {
		got, err := watchInterval(time.Second, tc.args)
		if err != nil || got != tc.want {
			t.Errorf("watchInterval(%q) = %v, %v; want %v", tc.args, got, err, tc.want)
		}
	}
	for _, bad := range []string{"soon", "10ms", "0", "-1"} {
		if _, err := watchInterval(time.Second, []string{bad}); err == nil || !strings.Contains(err.Error(), "watch interval") {
			t.Errorf("watchInterval(%q): error %v, want one naming the watch interval", bad, err)
		}
	}
}

// The binary against a running daemon with a DP loop under traffic, its
// stdout a pipe: plain frames one after the other, rates from the second
// frame on (the loop's pps among them), and a clean exit on SIGINT.
func TestStatusWatchPlainOutputAgainstDaemon(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "w")

	name := fmt.Sprintf("cpwt%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	dp := e.dp[0]
	loop := fmt.Sprintf("dataplane:\n  loops: [{name: wdp, cpu: %d, iface: %s, netns: %s}]\n", dp, tb.DPIface, tb.DPNS)
	if err := os.WriteFile(e.cfgPath, []byte(mustRead(t, e.cfgPath)+loop), 0o644); err != nil {
		t.Fatal(err)
	}
	spawnCP(t, name)
	e.start(t)
	st := e.status(t)
	if len(st.Loops) != 1 || !st.Loops[0].Alive {
		t.Fatalf("loop not running: %+v", st.Loops)
	}
	hostPID := st.Loops[0].PID
	t.Cleanup(func() { syscall.Kill(hostPID, syscall.SIGKILL) })

	gctx, stopGen := context.WithCancel(ctx)
	genDone := make(chan struct{})
	go func() {
		defer close(genDone)
		trafficgen.Run(gctx, trafficgen.Options{
			NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: e.cp[0],
			Rate: 2000, Count: 200000, Deadline: 90 * time.Second,
		})
	}()
	t.Cleanup(func() { stopGen(); <-genDone })

	cmd := exec.Command(e.bin, "status", "--watch", "300ms", "--socket", e.socket)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// Frames until one (after the first) shows the loop moving packets:
	// waiting on what the view shows, at most 100 frames (30 s).
	header := regexp.MustCompile(`^taichi \S+  pid \d+  up \S+  policy dynamic  every 300ms  \d\d:\d\d:\d\d$`)
	var all, frame, moving strings.Builder
	frames := 0
	sc := bufio.NewScanner(stdout)
	for moving.Len() == 0 && frames <= 100 && sc.Scan() {
		line := sc.Text()
		all.WriteString(line + "\n")
		if header.MatchString(line) {
			frames++
			frame.Reset()
		}
		frame.WriteString(line + "\n")
		if f := strings.Fields(line); frames > 1 && len(f) > 4 && f[0] == "wdp" {
			if pps, err := strconv.Atoi(f[4]); err == nil && pps > 0 {
				moving.WriteString(frame.String())
			}
		}
	}
	if moving.Len() == 0 {
		t.Fatalf("no frame in %d showed the loop's pps (stderr %s); last frame:\n%s", frames, stderr.String(), frame.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status --watch after SIGINT: %v (stderr %s)", err, stderr.String())
	}
	t.Logf("frame %d:\n%s", frames, moving.String())
	if strings.ContainsRune(all.String(), '\x1b') {
		t.Errorf("terminal escapes written to a pipe:\n%q", all.String())
	}
	// The DP core's row carries its lent share over the interval.
	got := row(t, moving.String(), strconv.Itoa(dp)+" ")
	if len(got) < 4 || got[1] != "dp" || !strings.HasSuffix(got[3], "%") {
		t.Errorf("row for DP core %d: %q, want a lent share in %%", dp, got)
	}
}

// openPTY returns a pseudo-terminal pair (master, the terminal side).
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testenv.Require(t, "no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return master, tty
}

// On a terminal the view redraws in place: cursor home, each line clearing
// its rest, the screen below cleared, the cursor hidden until it ends.
func TestWatchRedrawsInPlaceOnATerminal(t *testing.T) {
	master, tty := openPTY(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if !isTerminal(tty) || isTerminal(w) || isTerminal(&bytes.Buffer{}) {
		t.Fatalf("isTerminal: tty %v, pipe %v, buffer %v", isTerminal(tty), isTerminal(w), isTerminal(&bytes.Buffer{}))
	}

	// No daemon behind the socket: each frame says so, drawn the same way.
	done := make(chan error, 1)
	go func() { done <- watchStatus(tty, filepath.Join(t.TempDir(), "none.sock"), 100*time.Millisecond, false) }()
	var screen bytes.Buffer
	buf := make([]byte, 4096)
	for strings.Count(screen.String(), "\x1b[H") < 2 {
		master.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("reading the terminal after %q: %v", screen.String(), err)
		}
		screen.Write(buf[:n])
	}
	// watchStatus stops on SIGINT (it has installed its handler: it drew).
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop on SIGINT")
	}
	for master.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); ; {
		n, err := master.Read(buf)
		screen.Write(buf[:n])
		if err != nil || strings.HasSuffix(screen.String(), "\x1b[?25h") {
			break
		}
	}
	s := screen.String()
	if !strings.HasPrefix(s, "\x1b[?25l\x1b[2J\x1b[H") {
		t.Errorf("does not hide the cursor, clear and home first: %q", s[:min(len(s), 40)])
	}
	if !strings.Contains(s, "daemon not answering on") {
		t.Errorf("frame does not say the daemon is not answering: %q", s)
	}
	if !strings.Contains(s, "\x1b[K\r\n\x1b[J\x1b[H") {
		t.Errorf("frames are not line-cleared, bottom-cleared and redrawn from home: %q", s)
	}
	if !strings.HasSuffix(s, "\x1b[?25h") {
		t.Errorf("cursor not shown again at the end: %q", s[max(0, len(s)-40):])
	}
}

// exposedMax is an exposed wake histogram holding one sample of d.
func exposedMax(d time.Duration) dataplane.Histogram { return samples(d, 1) }
