package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

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
