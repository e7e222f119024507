package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/daemon"
)

func TestPrintBlockerTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until := now.Add(1500 * time.Millisecond)
	var out bytes.Buffer
	printBlockerTable(&out, &daemon.BlockersStatus{
		State: daemon.BlockersConfining, Threshold: "100µs", DPThreads: []int{42}, Runs: 1000, Blames: 30,
		WakeRunP50us: 16, WakeRunP99us: 1048, Confined: 1,
		Tasks: []daemon.BlockerStatus{
			{PID: 7, Comm: "vm-setup", Count: 30, InKernel: 29, WorstUs: 900, TotalMs: 12.5, ConfinedUntil: &until},
			{PID: 9, Comm: "kworker/1:2", Kernel: true, Count: 2, InKernel: 2, WorstUs: 150, TotalMs: 0.3},
		},
		Commands: []daemon.CommandStatus{{Comm: "vm-setup", Backoff: "2s", Until: &until, Strikes: 1, PIDs: []int{7}}},
	}, now)
	s := out.String()
	for _, want := range []string{"blockers confining", "dp threads [42]", "p99 <1048us", "vm-setup", "released in 1.5s",
		"kernel thread (not movable)", "COMMAND", "12.5ms"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	printBlockerTable(&out, &daemon.BlockersStatus{State: daemon.BlockersOff}, now)
	if strings.TrimSpace(out.String()) != "blockers off" {
		t.Errorf("off: %q", out.String())
	}
}
