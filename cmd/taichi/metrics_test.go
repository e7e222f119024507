package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// scrape reads a Prometheus text page into series -> value, where a series
// is the metric name with its labels as printed (`name{a="b"}`).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func freeLocalPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A running daemon's /metrics has the documented families with their
// labels, and the counters move while a DP core is lent.
func TestDaemonMetricsEndpoint(t *testing.T) {
	name := fmt.Sprintf("cpm%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLocalPort(t))
	cfg := strings.Replace(mustRead(t, e.cfgPath), `metrics: {listen: ""}`, "metrics: {listen: \""+addr+"\"}", 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	spawnCP(t, name)
	e.start(t)
	waitFor(t, "CP process adopted", func() bool { return e.status(t).Pool.Members >= 1 })
	url := "http://" + addr + "/metrics"
	dp, cp := strconv.Itoa(e.dp[0]), strconv.Itoa(e.cp[0])

	first := scrape(t, url)
	lent := `taichi_lent_seconds_total{cpu="` + dp + `"}`
	for _, series := range []string{
		`taichi_core_state{cpu="` + dp + `",role="dp",state="lent"}`,
		`taichi_core_state{cpu="` + cp + `",role="cp",state="cp"}`,
		lent,
		`taichi_probe_failed{cpu="` + dp + `"}`,
		`taichi_cp_tasks`,
		`taichi_harvested_cp_seconds_total`,
		`taichi_daemon_cpu_share`,
		`process_cpu_seconds_total`,
	} {
		if _, ok := first[series]; !ok {
			t.Errorf("series %s missing from %s", series, url)
		}
	}
	if first[`taichi_cp_tasks`] < 1 {
		t.Errorf("taichi_cp_tasks = %v, want the adopted task", first[`taichi_cp_tasks`])
	}
	build := false
	for series := range first {
		build = build || strings.HasPrefix(series, `taichi_build_info{`) && strings.Contains(series, `policy="dynamic"`)
	}
	if !build {
		t.Error(`taichi_build_info{...,policy="dynamic"} missing`)
	}
	// Counters move: CP time harvested on the lent DP core, and the
	// daemon's own CPU time. (Lent seconds count the loop's yields, and this
	// setup has no DP loop; the kill test covers a loop.)
	harvest, self := `taichi_harvested_cp_seconds_total`, `process_cpu_seconds_total`
	var now map[string]float64
	waitFor(t, "harvested CP seconds and process CPU seconds to grow", func() bool {
		now = scrape(t, url)
		return now[harvest] > first[harvest] && now[self] > first[self]
	})
	// A run-time policy change shows in the labels.
	if out, err := exec.Command(e.bin, "policy", "set", "static", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("policy set: %v %s", err, out)
	}
	after := scrape(t, url)
	if _, ok := after[`taichi_core_state{cpu="`+dp+`",role="dp",state="lent"}`]; ok {
		t.Errorf("after policy set static: the DP core still shows as lent")
	}
	// The daemon's own CPU: a total and a rate once two samples exist.
	waitFor(t, "the daemon's CPU rate in status", func() bool { return e.status(t).Daemon.Window != "" })
	if st := e.status(t); st.Daemon.Seconds <= 0 || st.Daemon.Share < 0 || st.Daemon.Share > 1 {
		t.Errorf("status daemon cpu = %+v", st.Daemon)
	}
}

// `taichi policy set` survives a restart while the config's policy is
// unchanged, and gives way to the config once the config's policy changes.
func TestPolicyOverrideAcrossRestart(t *testing.T) {
	e := newDaemonEnv(t, "dynamic", "^no-such-cp-task$")
	d := e.start(t)
	if out, err := exec.Command(e.bin, "policy", "set", "static", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("policy set: %v %s", err, out)
	}
	stop := func() {
		d.Process.Signal(syscall.SIGTERM)
		if err := d.Wait(); err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	}
	stop()
	d = e.start(t)
	if st := e.status(t); st.Policy != "static" || !st.Override {
		t.Fatalf("after a restart with the same config: policy %s override %v; want static, set at run time", st.Policy, st.Override)
	}
	stop()
	os.WriteFile(e.cfgPath, []byte(strings.Replace(mustRead(t, e.cfgPath), "policy: dynamic", "policy: taichi", 1)), 0o644)
	d = e.start(t)
	if st := e.status(t); st.Policy != "taichi" || st.Override {
		t.Fatalf("after the config's policy changed: policy %s override %v; want the config's taichi", st.Policy, st.Override)
	}
	stop()
}
