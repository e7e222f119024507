package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
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
					Reclaims: map[string]uint64{"probe": probe, "rx": 2}, GuardTrips: guard},
			},
			Loops: []daemon.LoopStatus{{Name: "uplink0", CPU: 3, Alive: true,
				Stats: dataplane.Stats{Packets: packets, Yields: 9, WakesRX: 2, WakesProbe: probe, ExposedMax: 35 * time.Microsecond}}},
			Probe:     daemon.ProbeStatus{Backend: "xdp", State: "attached"},
			Scheduler: scheduler.Snapshot{Cores: []scheduler.CoreSnapshot{{CPU: 3, Harvested: harvested}}},
		}
	}
	return base(10, 2, 1, 1250*time.Millisecond, 5000), base(10.5, 5, 2, 1500*time.Millisecond, 6000)
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
	// CPU ROLE STATE LENT RXRES WAKE RECLAIMS... GUARD (+n) HARVEST (share)
	want := []string{"3", "dp", "lent", "50%", "-", "41us", "probe=5(+3)", "rx=2", "2", "(+1)", "1.50s", "(25%)"}
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
	if got := row(t, frame, "3 "); got[3] != "-" || got[6] != "probe=5" {
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

// The binary against a running daemon, its stdout a pipe: plain frames one
// after the other, the second with rates, and a clean exit on SIGINT.
func TestStatusWatchPlainOutputAgainstDaemon(t *testing.T) {
	e := newDaemonEnv(t, "dynamic", "^taichi-no-such-cp-task$")
	e.start(t)

	cmd := exec.Command(e.bin, "status", "--watch", "200ms", "--socket", e.socket)
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

	header := regexp.MustCompile(`^taichi \S+  pid \d+  up \S+  policy dynamic  every 200ms  \d\d:\d\d:\d\d$`)
	var all, second strings.Builder
	frames := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		all.WriteString(line + "\n")
		if header.MatchString(line) {
			frames++
			if frames == 3 {
				break
			}
		}
		if frames == 2 {
			second.WriteString(line + "\n")
		}
	}
	if frames < 3 {
		t.Fatalf("saw %d frames before the output ended (stderr %s):\n%s", frames, stderr.String(), all.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status --watch after SIGINT: %v (stderr %s)", err, stderr.String())
	}
	if strings.ContainsRune(all.String(), '\x1b') {
		t.Errorf("terminal escapes written to a pipe:\n%q", all.String())
	}
	// Every DP core has a row with its lent share over the interval.
	for _, cpu := range e.dp {
		got := row(t, second.String(), strconv.Itoa(cpu)+" ")
		if len(got) < 4 || got[1] != "dp" || !strings.HasSuffix(got[3], "%") {
			t.Errorf("second frame's row for DP core %d: %q, want a lent share in %%\n%s", cpu, got, second.String())
		}
	}
}
