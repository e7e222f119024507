package eval

import (
	"slices"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/daemon"
)

// A run records what blocker-aware lending did during it: blame added,
// strikes, and what is confined at its end; untouched commands are left out.
func TestConfinedPerRun(t *testing.T) {
	before := []ConfinedCommand{
		{Comm: "stress-ng-dentr", BlamedMs: 40, Strikes: 2, Backoff: "2s"},
		{Comm: "kworker/1:1", BlamedMs: 3},
		{Comm: "python3", BlamedMs: 1, Strikes: 1, Backoff: "1s"},
	}
	after := []ConfinedCommand{
		{Comm: "stress-ng-dentr", BlamedMs: 55, Strikes: 3, Backoff: "4s", Confined: true},
		{Comm: "kworker/1:1", BlamedMs: 3},
		{Comm: "python3", BlamedMs: 0, Strikes: 1, Backoff: "1s"}, // its process left the record
		{Comm: "taichi-cp-helpe", BlamedMs: 2},
	}
	got := subConfined(after, before)
	want := []ConfinedCommand{
		{Comm: "stress-ng-dentr", BlamedMs: 15, Strikes: 3, Backoff: "4s", Confined: true},
		{Comm: "taichi-cp-helpe", BlamedMs: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	d := Snapshot{At: time.Now(), Blockers: after}.Sub(Snapshot{Blockers: before})
	if !slices.Equal(d.Confined, want) {
		t.Errorf("Delta.Confined %+v", d.Confined)
	}
}

// The daemon's record folds into one entry per command: its back-off
// state, the blame of all its processes, confined when any of them is.
func TestConfinedOfBlockersStatus(t *testing.T) {
	if confinedOf(nil) != nil {
		t.Error("no blocker record gave entries")
	}
	until := time.Now().Add(time.Second)
	st := &daemon.BlockersStatus{
		Commands: []daemon.CommandStatus{{Comm: "stress-ng-dentr", Backoff: "2s", Strikes: 2, Until: &until}, {Comm: "python3", Backoff: "1s", Strikes: 1}},
		Tasks: []daemon.BlockerStatus{
			{PID: 10, Comm: "stress-ng-dentr", TotalMs: 30, ConfinedUntil: &until},
			{PID: 11, Comm: "stress-ng-dentr", TotalMs: 12.5},
			{PID: 12, Comm: "kworker/1:1", Kernel: true, TotalMs: 4},
			{PID: 13, Comm: "python3", TotalMs: 1},
		},
	}
	want := []ConfinedCommand{
		{Comm: "stress-ng-dentr", BlamedMs: 42.5, Strikes: 2, Backoff: "2s", Confined: true},
		{Comm: "python3", BlamedMs: 1, Strikes: 1, Backoff: "1s"},
		{Comm: "kworker/1:1", BlamedMs: 4},
	}
	if got := confinedOf(st); !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
