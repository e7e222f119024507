package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/trafficgen"
)

// When all CP on a lent core is kernel-heavy (a dentry storm nothing
// confines), packets wait past the SLO: the guard benches the core on a
// window whose residence p99 was above the SLO (as the daemon logged it at
// the trip), and while benched the core is absent from the CP pool
// cgroup's cpuset file and its loop is SCHED_OTHER, not a throttled
// SCHED_FIFO spinner.
func TestGuardBenchesCoreWhenKernelHeavyCPBreaksSLO(t *testing.T) {
	needRootCgroups(t)
	testenv.NeedTool(t, "stress-ng", "stress-ng")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := upTestbed(t, ctx, "gd")

	// The storm waits at a gate until the daemon adopted the gate's shell
	// by pid, so every worker starts inside the CP pool.
	stressDir := t.TempDir()
	storm := exec.Command("sh", "-c", "read go; exec stress-ng --dentry 2 --temp-path "+stressDir+" --timeout 90s --quiet")
	gate, err := storm.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	storm.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-storm.Process.Pid, unix.SIGKILL); storm.Wait() })

	e := newDaemonEnv(t, "taichi", "^no-such-cp-task$")
	dp := e.dp[0]
	cfg := strings.Replace(mustRead(t, e.cfgPath), "adopt: {commands: [\"^no-such-cp-task$\"]}", fmt.Sprintf("adopt: {pids: [%d]}", storm.Process.Pid), 1)
	cfg = strings.Replace(cfg, "probe: {backend: none}\n", fmt.Sprintf(`probe:
  backend: xdp
  interfaces: [{iface: %s, netns: %s, cpu: %d}]
dataplane:
  loops: [{name: gd, cpu: %d, iface: %s, netns: %s}]
scheduler: {slo: 300us, guard_backoff: 3s, blockers: {enabled: false}}
log: {format: json}
`, tb.NICIn, tb.NICNS, dp, dp, tb.DPIface, tb.DPNS), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	daemonLog := &lockedBuffer{}
	e.stderr = daemonLog
	d := e.start(t)
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
	waitFor(t, "the storm's gate adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	if _, err := io.WriteString(gate, "go\n"); err != nil {
		t.Fatal(err)
	}
	gate.Close()

	defer backgroundTraffic(ctx, trafficgen.Options{
		NetNS: tb.GenNS, Iface: tb.GenIface, Dst: tb.DPIP, PinSender: true, SenderCPU: e.cp[0],
		Rate: 10000, Count: 600000, Pattern: trafficgen.PatternOnOff,
		On: 10 * time.Millisecond, Off: 30 * time.Millisecond, Deadline: 60 * time.Second,
	})()

	// The claim is checked while the core is benched (3 s from the trip).
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := e.status(t)
		if core := benchedCore(t, e, st, dp); core != nil {
			checkBenchedLoop(t, st, daemonLog, core)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guard never benched core %d under a dentry storm; status cores %+v, scheduler %+v", dp, st.Cores, st.Scheduler.Cores)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benchedCore is core dp in st when the guard has benched it, after
// checking it is out of the CP pool in the status and in the pool group's
// cpuset file; nil when it is not benched, or the bench ended meanwhile.
func benchedCore(t *testing.T, e *daemonEnv, st *daemon.Status, dp int) *daemon.CoreStatus {
	t.Helper()
	var core *daemon.CoreStatus
	for i, c := range st.Cores {
		if c.CPU == dp {
			core = &st.Cores[i]
		}
	}
	if core == nil || core.GuardTrips == 0 || core.Hold != "guard" {
		return nil
	}
	if core.InPool {
		t.Fatalf("benched core %d is still in the CP cpuset (status)", dp)
	}
	// The kernel's view, not the daemon's: the pool group's cpuset.
	if cpus, file := poolCPUsOnDisk(t, st.Pool.Backend, e.group); slices.Contains(cpus, dp) {
		// Benched throughout the read, or the bench just ended?
		if again := e.status(t); slices.ContainsFunc(again.Cores, func(c daemon.CoreStatus) bool {
			return c.CPU == dp && c.GuardTrips == core.GuardTrips && c.Hold == "guard"
		}) {
			t.Fatalf("benched core %d is in %s: %v", dp, file, cpus)
		}
		return nil // the bench ended meanwhile: wait for the next trip
	}
	return core
}

// checkBenchedLoop: the benched core's loop is SCHED_OTHER, and the guard
// tripped, as the daemon logged it, on a window whose p99 was above the
// configured 300µs SLO.
func checkBenchedLoop(t *testing.T, st *daemon.Status, daemonLog *lockedBuffer, core *daemon.CoreStatus) {
	t.Helper()
	c, err := linuxsched.Get(st.Loops[0].TID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy != unix.SCHED_NORMAL {
		t.Fatalf("benched core's loop is %s, want SCHED_OTHER (a SCHED_FIFO spinner is RT-throttled)", c)
	}
	// The evidence the guard tripped on, as the daemon logged it.
	var trip guardTrip
	waitFor(t, "the daemon's guard trip log line", func() bool {
		var ok bool
		trip, ok = firstGuardTrip(t, daemonLog.String(), core.CPU)
		return ok
	})
	t.Logf("measured: guard tripped %d time(s): slo %v; tripping window p99 %v, %d of %d packets late",
		core.GuardTrips, trip.SLO, trip.P99, trip.Late, trip.Packets)
	if trip.SLO != 300*time.Microsecond {
		t.Errorf("guard judged against slo %v, want the configured 300µs", trip.SLO)
	}
	if trip.P99 <= trip.SLO {
		t.Errorf("guard tripped on a window p99 of %v, not above the SLO %v", trip.P99, trip.SLO)
	}
	// Nearest-rank p99 above the SLO: fewer packets on time than its rank.
	if rank := uint64(math.Ceil(0.99 * float64(trip.Packets))); trip.Packets == 0 || trip.Packets-trip.Late >= rank {
		t.Errorf("guard tripped on a window of %d packets with %d late: its p99 is not above the SLO", trip.Packets, trip.Late)
	}
}

// lockedBuffer collects a daemon's log while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// guardTrip is the scheduler's "slo guard: benching core" log record (JSON
// handler: durations in nanoseconds).
type guardTrip struct {
	Msg     string        `json:"msg"`
	CPU     int           `json:"cpu"`
	P99     time.Duration `json:"residence_p99"`
	Late    uint64        `json:"late"`
	Packets uint64        `json:"packets"`
	SLO     time.Duration `json:"slo"`
}

// firstGuardTrip finds the first guard trip of cpu in a JSON log.
func firstGuardTrip(t *testing.T, log string, cpu int) (guardTrip, bool) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"slo guard: benching core"`)) {
			continue
		}
		var g guardTrip
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatalf("guard trip log line %q: %v", line, err)
		}
		if g.CPU == cpu {
			return g, true
		}
	}
	return guardTrip{}, false
}

// poolCPUsOnDisk reads the CP pool group's CPUs as the kernel has them:
// cpuset.cpus on v1, cpuset.cpus.effective on v2 (backend as status
// reports it, "cgroup-v1" or "cgroup-v2"). It returns the file it read.
func poolCPUsOnDisk(t *testing.T, backend, group string) ([]int, string) {
	t.Helper()
	mounts, err := linuxsched.ReadCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	var file string
	switch {
	case backend == "cgroup-v1" && mounts.V1Path("cpuset") != "":
		file = filepath.Join(mounts.V1Path("cpuset"), group, "cpuset.cpus")
	case backend == "cgroup-v2" && mounts.Unified != "":
		file = filepath.Join(mounts.Unified, group, "cpuset.cpus.effective")
	}
	if file == "" {
		t.Fatalf("pool backend %q: no cpuset file to read", backend)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := cpuset.Parse(string(b))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cpus, file
}
