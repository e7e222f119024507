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
	until, past := now.Add(1500*time.Millisecond), now.Add(-time.Second)
	var out bytes.Buffer
	printBlockerTable(&out, &daemon.BlockersStatus{
		State: daemon.BlockersConfining, Threshold: "100µs", DPThreads: []int{42}, Runs: 1000, Blames: 30,
		WakeRunP50us: 16, WakeRunP99us: 1048, Confined: 1,
		Tasks: []daemon.BlockerStatus{
			{PID: 7, Comm: "vm-setup", Count: 30, InKernel: 29, WorstUs: 900, TotalMs: 12.5, ConfinedUntil: &until},
			{PID: 9, Comm: "kworker/1:2", Kernel: true, Count: 2, InKernel: 2, WorstUs: 150, TotalMs: 0.3},
		},
		Commands: []daemon.CommandStatus{
			{Comm: "vm-setup", Backoff: "2s", Until: &until, Strikes: 1, PIDs: []int{7},
				Why: &daemon.WhyStatus{PID: 7, BlamedUs: 1800, Blames: 4, CPU: 1, Window: "1s", Budget: 0.875}},
			{Comm: "nft", Backoff: "10s", Until: &past, Due: true, Strikes: 2, PIDs: []int{8}},
		},
		Released: []daemon.ReleaseStatus{{Comm: "tc", At: now.Add(-3 * time.Second), ConfinedMs: 12000,
			Why: daemon.WhyStatus{PID: 5, BlamedUs: 300, Blames: 1, CPU: 1, Window: "1s", Budget: 1}}},
		Rule: "the rule",
	}, now)
	s := out.String()
	for _, want := range []string{"blockers confining", "dp threads [42]", "p99 <1048us", "vm-setup", "back-off 1.5s",
		"kernel thread (not movable)", "COMMAND", "12.5ms", "pid 7: 1800us in kernel over 4 blames on cpu 1 in 1s; window p99 <= 0.875 x SLO",
		"due (waits for quiet windows)", "RELEASED", "tc  ", "3s", "12s", "rule: the rule"} {
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
