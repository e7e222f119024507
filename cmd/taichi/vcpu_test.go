package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestVCPUScan(t *testing.T) {
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		testenv.Require(t, "cannot start sleep (coreutils): %v", err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	pid := sleeper.Process.Pid
	// The kernel names the child after Start returns: wait for the name.
	waitFor(t, "the child named sleep", func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return string(b) == "sleep\n"
	})

	var out bytes.Buffer
	cmd := newVCPUCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"scan", "--pid", strconv.Itoa(pid), "--pid", strconv.Itoa(os.Getpid()), "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var got []struct {
		PID  int    `json:"pid"`
		Comm string `json:"comm"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if len(got) != 1 || got[0].PID != pid || got[0].Comm != "sleep" {
		t.Fatalf("scan = %+v, want only the sleep child %d (never taichi itself)", got, pid)
	}
}

func TestVCPUScanBadRegexp(t *testing.T) {
	cmd := newVCPUCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"scan", "--command", "ok", "--command", "(unclosed"})
	err := cmd.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "command[1]") {
		t.Fatalf("bad regexp: %v; want exit 2 naming command[1]", err)
	}
}
