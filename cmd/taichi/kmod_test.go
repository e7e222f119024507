package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/kmod"
)

func TestKmodCommandsExplainMissingDevice(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "taichi")
	for _, sub := range []string{"stats", "blockers"} {
		cmd := newKmodCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{sub, "--device", missing})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "load the taichi kernel module") {
			t.Errorf("kmod %s without the device: %v, want a hint to load the module", sub, err)
		}
	}
}

func TestPrintBlockers(t *testing.T) {
	var out bytes.Buffer
	printBlockers(&out, []kmod.Blocker{{CPU: 1, Seq: 3, Pid: 42, Comm: "cp-agent", PreemptCount: 1,
		Waited: true, WaitNs: 5_296_400, Symbol: "taichi_test_hold_spin+0x21/0x40 [taichi]"}})
	for _, want := range []string{"cp-agent", "5.2964ms", "taichi_test_hold_spin+0x21/0x40 [taichi]", "0x1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPrintKmodStatsHistogram(t *testing.T) {
	var st kmod.Stats
	st.CPU = 1
	st.Latency.Buckets[6] = 24 // [32.768µs, 65.536µs)
	st.Latency.Count, st.Latency.SumNs, st.Latency.MaxNs = 24, 24*40_000, 60_000
	var out bytes.Buffer
	printKmodStats(&out, st)
	if !strings.Contains(out.String(), "[32.768µs,") || !strings.Contains(out.String(), "24") {
		t.Errorf("histogram row missing:\n%s", out.String())
	}
}

func TestFilterBlockersByWait(t *testing.T) {
	recs := []kmod.Blocker{
		{Seq: 1, Waited: true, WaitNs: 15_000},
		{Seq: 2, Waited: false},
		{Seq: 3, Waited: true, WaitNs: 5_000_000},
	}
	if got := filterBlockers(recs, 0); len(got) != 3 {
		t.Errorf("no threshold kept %d records, want 3", len(got))
	}
	got := filterBlockers(recs, 100*time.Microsecond)
	if len(got) != 1 || got[0].Seq != 3 {
		t.Errorf("min-wait 100µs kept %+v, want only seq 3", got)
	}
}
