package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/eval"
)

// A report with a failed run or a lost CP load exits 1 (after writing its
// files); a clean one exits 0 even when a self-check only warns.
func TestEvalExitsNonZeroOnFailedRuns(t *testing.T) {
	run := func(rep *eval.Report) (error, string) {
		var out, errOut bytes.Buffer
		cmd := &cobra.Command{}
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		return writeReport(cmd, t.TempDir(), rep, nil), errOut.String()
	}
	ok := func() *eval.Report {
		return &eval.Report{Experiment: eval.ExperimentDataplane, Runs: []eval.Run{
			{Policy: "static", Load: 0.3, CPLoad: "none"},
			{Policy: "dynamic", Load: 0.3, CPLoad: "mixed", CPCPUS: 2},
		}}
	}
	rep := ok()
	eval.SelfCheck(rep) // dynamic shows no harvest: a warning, not a failure
	err, stderr := run(rep)
	if err != nil {
		t.Fatalf("clean runs: %v", err)
	}
	if !strings.Contains(stderr, "self-check failed") {
		t.Errorf("failed self-check not warned about: %q", stderr)
	}
	for name, spoil := range map[string]func(*eval.Report){
		"run error":    func(r *eval.Report) { r.Runs[0].Error = "traffic: boom" },
		"CP load lost": func(r *eval.Report) { r.Runs[1].CPLoadErrors = []string{"stress-ng: exited early"} },
		"VM failed":    func(r *eval.Report) { r.Runs[1].VMsFailed = 1 },
	} {
		rep := ok()
		spoil(rep)
		err, _ := run(rep)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 1 {
			t.Errorf("%s: got %v, want exit code 1", name, err)
		}
	}
}
