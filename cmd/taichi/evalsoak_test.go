package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
)

// Bad soak flags are usage errors (exit 2) naming the flag, found before
// any testbed is set up; a good set prints the expected total first.
func TestEvalSoakFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "5s"}, "duration: 5s: want at least 10s"},
		{[]string{"--duration", "0s"}, "duration: 0s: want at least 10s"},
		{[]string{"--policies", "static,fast"}, "policies:"},
		{[]string{"--policies", "ovs-maxsleep"}, "policies: ovs-maxsleep needs the OVS data plane"},
		{[]string{"--traffic", "onoff,constant"}, `traffic: unknown "constant"`},
		{[]string{"--traffic", ""}, "traffic: empty"},
		{[]string{"--cp-load", "user,user"}, `cp-load: "user" listed twice`},
		{[]string{"--cp-load", "none"}, `cp-load: unknown "none"`},
		{[]string{"--softirq", "cp,nic"}, `softirq: unknown "nic"`},
		{[]string{"--repeat", "0"}, "repeat: 0"},
		{[]string{"--load", "1.5"}, "load: 1.5"},
	} {
		err := execute(newEvalSoakCmd(), c.args, io.Discard, io.Discard)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: got %v, want exit 2 with %q", c.args, err, c.want)
		}
	}
}

// A soak with a failed run or a lost CP load exits 1 after writing its
// files and figure; a clean one exits 0 even when a check only warns.
func TestEvalSoakExitsNonZeroOnFailedRuns(t *testing.T) {
	mk := func() *eval.SoakReport {
		w := 100.0
		rep := &eval.SoakReport{Experiment: eval.ExperimentSoak, Params: map[string]any{"repeat": 1}, Runs: []eval.SoakRun{
			{Run: eval.Run{Policy: "dynamic", CPCPUS: 3}, Traffic: "onoff", CPLoadKind: "user", Softirq: "cp", LateSLOUS: 250,
				Windows: []eval.SoakWindow{{EndS: 1, Packets: 10, ResidenceP99US: &w}}},
		}}
		return rep
	}
	for name, c := range map[string]struct {
		spoil func(*eval.SoakReport)
		code  int
	}{
		"clean":        {func(*eval.SoakReport) {}, 0},
		"run error":    {func(r *eval.SoakReport) { r.Runs[0].Error = "traffic: boom" }, 1},
		"CP load lost": {func(r *eval.SoakReport) { r.Runs[0].CPLoadErrors = []string{"python3: exited early"} }, 1},
	} {
		rep := mk()
		c.spoil(rep)
		dir := t.TempDir()
		cmd := &cobra.Command{}
		cmd.SetOut(io.Discard)
		var stderr strings.Builder
		cmd.SetErr(&stderr)
		err := writeSoakReport(cmd, dir, rep, nil)
		var ee *exitError
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.code != 0 && (!errors.As(err, &ee) || ee.code != c.code):
			t.Errorf("%s: got %v, want exit %d", name, err, c.code)
		}
		for _, f := range []string{"soak.json", "soak.md", "soak-cp-onoff-user.png"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}
