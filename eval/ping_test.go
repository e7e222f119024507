package eval

import (
	"github.com/taichi-sched/taichi/internal/stats"
	"github.com/taichi-sched/taichi/internal/testenv"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// Captured from iputils ping 20221126 against the testbed's DP loop.
const pingNormal = `PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=2.39 ms
64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=0.152 ms
64 bytes from 10.77.0.2: icmp_seq=3 ttl=64 time=0.107 ms
64 bytes from 10.77.0.2: icmp_seq=4 ttl=64 time=0.097 ms

--- 10.77.0.2 ping statistics ---
4 packets transmitted, 4 received, 0% packet loss, time 31ms
rtt min/avg/max/mdev = 0.097/0.686/2.390/0.983 ms
`

// iputils' format with echoes 2 and 5 unanswered.
const pingLoss = `PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.061 ms
64 bytes from 10.77.0.2: icmp_seq=3 ttl=64 time=0.058 ms
64 bytes from 10.77.0.2: icmp_seq=4 ttl=64 time=1.12 ms

--- 10.77.0.2 ping statistics ---
5 packets transmitted, 3 received, 40% packet loss, time 4006ms
rtt min/avg/max/mdev = 0.058/0.413/1.120/0.499 ms
`

// iputils' format when two hosts answer (a kernel owning the DP address
// beside the loop would do this).
const pingDup = `PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.052 ms
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.075 ms (DUP!)
64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=0.049 ms
64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=0.070 ms (DUP!)

--- 10.77.0.2 ping statistics ---
2 packets transmitted, 2 received, +2 duplicates, 0% packet loss, time 1001ms
rtt min/avg/max/mdev = 0.049/0.061/0.075/0.011 ms, pipe 2
`

// iputils' format when nothing answers but a router reports errors.
const pingErrors = `PING 10.77.0.9 (10.77.0.9) 56(84) bytes of data.
From 10.77.0.1 icmp_seq=1 Destination Host Unreachable
From 10.77.0.1 icmp_seq=2 Destination Host Unreachable

--- 10.77.0.9 ping statistics ---
3 packets transmitted, 0 received, +2 errors, 100% packet loss, time 2030ms
pipe 2
`

func TestParsePing(t *testing.T) {
	cases := []struct {
		name  string
		out   string
		want  PingStats
		times []float64
	}{
		{"normal", pingNormal, PingStats{Transmitted: 4, Received: 4, MinUS: 97, AvgUS: 686, MaxUS: 2390, MdevUS: 983}, []float64{2390, 152, 107, 97}},
		{"loss", pingLoss, PingStats{Transmitted: 5, Received: 3, MinUS: 58, AvgUS: 413, MaxUS: 1120, MdevUS: 499}, []float64{61, 58, 1120}},
		{"dup", pingDup, PingStats{Transmitted: 2, Received: 2, Duplicates: 2, MinUS: 49, AvgUS: 61, MaxUS: 75, MdevUS: 11}, []float64{52, 49}},
		{"errors", pingErrors, PingStats{Transmitted: 3, Errors: 2}, nil},
	}
	near := func(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }
	for _, c := range cases {
		st, times, err := parsePing(c.out)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if st.Transmitted != c.want.Transmitted || st.Received != c.want.Received || st.Duplicates != c.want.Duplicates ||
			st.Errors != c.want.Errors || !near(st.MinUS, c.want.MinUS) || !near(st.AvgUS, c.want.AvgUS) ||
			!near(st.MaxUS, c.want.MaxUS) || !near(st.MdevUS, c.want.MdevUS) {
			t.Errorf("%s: %+v, want %+v", c.name, st, c.want)
		}
		if len(times) != len(c.times) || !slices.EqualFunc(times, c.times, near) {
			t.Errorf("%s: reply times %v µs, want %v", c.name, times, c.times)
		}
	}
	// The loss a run reports, and the p99 from the reply lines.
	st, times, _ := parsePing(pingLoss)
	if loss := float64(st.Transmitted-st.Received) / float64(st.Transmitted); !near(loss, 0.4) {
		t.Errorf("loss %v, want 0.4", loss)
	}
	if p := stats.Summarize(times); p.N != 3 || p.Max != 1120 || p.P99 <= p.P50 {
		t.Errorf("percentiles of the reply times: %+v", p)
	}
}

func TestParsePingRejects(t *testing.T) {
	cases := map[string]string{
		"empty":        "",
		"garbage":      "hello\nworld\n",
		"ping error":   "ping: connect: Network is unreachable\n",
		"no summary":   strings.SplitAfter(pingNormal, "time=0.097 ms\n")[0],
		"lines ≠ sum":  strings.Replace(pingNormal, "4 received", "3 received", 1),
		"dups ≠ sum":   strings.Replace(pingDup, ", +2 duplicates", "", 1),
		"no rtt line":  strings.Replace(pingNormal, "rtt min", "xyz min", 1),
		"more than tx": strings.Replace(pingNormal, "4 packets transmitted", "2 packets transmitted", 1),
	}
	for name, out := range cases {
		if _, _, err := parsePing(out); err == nil || !strings.HasPrefix(err.Error(), "ping output:") {
			t.Errorf("%s: err %v, want a ping output error", name, err)
		}
	}
}

func TestPingConfigValidate(t *testing.T) {
	good := PingConfig{Policies: []scheduler.PolicyName{"dynamic"}, Count: 10, Interval: time.Millisecond}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *PingConfig){
		"policies":    func(c *PingConfig) { c.Policies = []scheduler.PolicyName{"fast"} },
		"count":       func(c *PingConfig) { c.Count = -1 },
		"interval":    func(c *PingConfig) { c.Interval = time.Microsecond },
		"timeout":     func(c *PingConfig) { c.Timeout = time.Hour },
		"repeat":      func(c *PingConfig) { c.Repeat = 101 },
		"cp-load":     func(c *PingConfig) { c.CPLoad = "heavy" },
		"client-fifo": func(c *PingConfig) { c.ClientFIFO = 100 },
	}
	for key, mutate := range cases {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: got %v", key, err)
		}
	}
}

// TestPingEndToEnd: the bench (testbed, daemon, DP loop in reflect mode),
// then the real ping at 1 ms for static without CP and dynamic with the CP
// load: both rows have every reply, no loss, ping's figures, and the DP
// loop's residence for the pings; the CP load started and was placed.
// TestPingTableDaemonColumns: every ping row has the daemon's CPU beside
// harvested CP, the static reference included (it runs the daemon too),
// and each row has as many columns as the header.
func TestPingTableDaemonColumns(t *testing.T) {
	r := &Report{Experiment: ExperimentPing, Machine: ReadMachine([]int{1}, []int{0})}
	for _, c := range []struct {
		pol    scheduler.PolicyName
		cpLoad string
		daemon float64
	}{{scheduler.PolicyStatic, "none", 0.01}, {scheduler.PolicyDynamic, "mixed", 0.03}} {
		r.Runs = append(r.Runs, Run{Policy: c.pol, CPLoad: c.cpLoad, WallS: 1, HarvestedCPS: knownSeconds(0.3), DaemonCPUS: knownSeconds(c.daemon),
			Ping: &PingStats{Transmitted: 10, Received: 10, MinUS: 20, AvgUS: 30, MaxUS: 40}})
	}
	var md bytes.Buffer
	WriteMarkdown(&md, finish(r))
	cols := -1
	for _, line := range strings.Split(md.String(), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| paper") || strings.HasPrefix(line, "| without") ||
			strings.HasPrefix(line, "| static |") || strings.HasPrefix(line, "| Tai Chi") {
			continue
		}
		if n := strings.Count(line, "|"); cols < 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row with %d separators, header %d: %s", n, cols, line)
		}
	}
	for _, want := range []string{"| harvested CP s | daemon CPU s | daemon % of a core | harvested ÷ daemon |",
		"| 0.30 | 0.01 | 1.00% | 30.0× |", "| 0.30 | 0.03 | 3.00% | 10.0× |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("ping table lacks %q:\n%s", want, md.String())
		}
	}
}

func TestPingEndToEnd(t *testing.T) {
	needRoot(t)
	for tool, pkg := range map[string]string{"ping": "iputils-ping", "stress-ng": "stress-ng", "chrt": "util-linux"} {
		testenv.NeedTool(t, tool, pkg)
	}
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := StartBench(ctx, BenchOptions{Prefix: fmt.Sprintf("tep%d", os.Getpid()), InProcessLoops: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.Env.GoHelper = []string{exe}
	b.Env.GoHelperEnv = []string{helperEnv + "=1"}

	const count = 300
	rep, err := RunPing(ctx, b.Env, PingConfig{Policies: []scheduler.PolicyName{"dynamic"}, Count: count, Interval: time.Millisecond, ClientFIFO: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Policy != "static" || rep.Runs[0].CPLoad != "none" ||
		rep.Runs[1].Policy != "dynamic" || rep.Runs[1].CPLoad == "none" {
		t.Fatalf("runs %+v, want static without CP then dynamic with CP", rep.Runs)
	}
	for _, r := range rep.Runs {
		name := pingSetupName(r.name(), r.CPLoad != "none")
		if r.Error != "" || len(r.CPLoadErrors) > 0 {
			t.Errorf("%s: error %q, CP load %v", name, r.Error, r.CPLoadErrors)
		}
		if r.Ping == nil || r.Ping.Transmitted != count || r.Ping.Received != count || r.DP.Loss != 0 || r.Ping.Duplicates != 0 {
			t.Fatalf("%s: ping %+v, loss %v; want %d replies, no loss, no duplicates", name, r.Ping, r.DP.Loss, count)
		}
		if r.DP.LatUS.N != count || r.Ping.MinUS <= 0 || r.Ping.AvgUS < r.Ping.MinUS || r.Ping.MaxUS < r.DP.LatUS.P99 {
			t.Errorf("%s: figures inconsistent: ping %+v, reply percentiles %+v", name, r.Ping, r.DP.LatUS)
		}
		if r.DP.ResidenceUS.N < count {
			t.Errorf("%s: DP residence counted %d packets for %d echoes", name, r.DP.ResidenceUS.N, count)
		}
		checkDaemonCPU(t, name, r)
	}
	// Whether CP ran during the pings is the report's self-check (Valid);
	// CP time here depends on whatever else runs on this machine's cores.
	t.Logf("self-check valid %v: %+v", rep.Valid, rep.Checks)

	var md bytes.Buffer
	WriteMarkdown(&md, rep)
	for _, s := range []string{"| static without CP | 1 | 300/300 | 0.00% |", "| dynamic with CP (mixed", "| without the probe | 32.0 | 37.0 | 115.0 | 1.23× | 3.03× |"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
	out := t.TempDir()
	if _, err := WriteFiles(out, rep); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "ping.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil || back.Experiment != ExperimentPing || len(back.Runs) != 2 || back.Runs[1].Ping == nil {
		t.Fatalf("json: %v", err)
	}
	t.Logf("\n%s", md.String())
}
