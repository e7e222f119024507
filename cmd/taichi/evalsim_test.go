package main

import (
	"bytes"
	"errors"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runSim runs `taichi eval sim` with args and returns its output and error.
func runSim(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := execute(newEvalSimCmd(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// execute runs cmd with args quietly (no usage, no error print), its
// output to out and errOut.
func execute(cmd *cobra.Command, args []string, out, errOut io.Writer) error {
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.Execute()
}

// TestEvalSimFlagErrors: a bad flag exits 2 with an error naming it.
func TestEvalSimFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for flag, args := range map[string][]string{
		"cores":     {"--cores", "four"},
		"rate":      {"--rate", "fast"},
		"policy":    {"--policy", "greedy"},
		"pattern":   {"--pattern", "bursty"},
		"duration":  {"--duration", "1ms"},
		"wake-cost": {"--wake-cost", "-1us"},
		"poll-cost": {"--poll-cost", "0"},
		"record":    {"--record", filepath.Join(dir, "t.jsonl")},
		"trace":     {"--trace", filepath.Join(dir, "missing.jsonl")},
	} {
		_, _, err := runSim(t, append(args, "--out", dir)...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.HasPrefix(err.Error(), flag+":") {
			t.Errorf("--%s: got %v, want exit 2 naming the flag", flag, err)
		}
	}
}

// TestEvalSimTableFilesAndTraceSelfCheck: a run prints its table and
// writes JSON, Markdown and a PNG; a recorded run replayed with --trace
// passes its self-check.
func TestEvalSimTableFilesAndTraceSelfCheck(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "run.jsonl")
	out, _, err := runSim(t, "--cores", "2", "--rate", "4000", "--duration", "300ms", "--pattern", "onoff", "--out", dir, "--record", trace)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "| DP cores | rate events/s/core | got events/s/core | engine ns/event | engine % of a core |") ||
		!strings.Contains(out, "\n| 2 | 4000 | ") {
		t.Fatalf("no table row for 2 cores at 4000:\n%s", out)
	}
	for _, name := range []string{"sim.json", "sim.md"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	fh, err := os.Open(filepath.Join(dir, "sim-cost.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := png.Decode(fh); err != nil {
		t.Fatalf("sim-cost.png: %v", err)
	}
	out, stderr, err := runSim(t, "--trace", trace)
	if err != nil || !strings.Contains(out, "Self-check against the recorded run passed") || strings.Contains(stderr, "warning") {
		t.Fatalf("trace replay: %v\n%s\n%s", err, out, stderr)
	}
}
