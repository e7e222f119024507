package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// A bad --slo is a usage error (exit 2) naming the flag, found before any
// testbed is set up; so is a sweep without the taichi policy.
func TestEvalSLOFlagRejectsBadValues(t *testing.T) {
	cmds := map[string]func() *cobra.Command{
		"vm-startup": newEvalVMStartupCmd, "dataplane": newEvalDataplaneCmd, "ping": newEvalPingCmd, "demo": newDemoCmd,
	}
	for name, newCmd := range cmds {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--slo", "100us,abc"}, `slo: "abc": not a duration`},
			{[]string{"--slo", "0us"}, `slo: "0us": must be positive`},
			{[]string{"--slo", "-1ms"}, `slo: "-1ms": must be positive`},
			{[]string{"--slo", ""}, "slo: empty"},
			{[]string{"--slo", "1ms,1000us"}, "listed twice"},
			{[]string{"--slo", "100us", "--policies", "static,dynamic"}, "slo: sweeps the taichi policy"},
		} {
			err := execute(newCmd(), c.args, io.Discard, io.Discard)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %q: got %v, want exit 2 with %q", name, c.args, err, c.want)
			}
		}
	}
}

// The demo sweeps a short list by default; the evals sweep nothing unless
// asked.
func TestDemoSLOFlagDefault(t *testing.T) {
	demo := newDemoCmd()
	if got, err := sloFlag(demo); err != nil || len(got) != 3 {
		t.Errorf("demo's default sweep: %v, %v; want 3 values", got, err)
	}
	if got, err := sloFlag(newEvalVMStartupCmd()); err != nil || got != nil {
		t.Errorf("eval without --slo: %v, %v; want no sweep", got, err)
	}
}
