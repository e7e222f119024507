package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// buildTaichi compiles the binary for the architecture under test (run it
// with testenv.Command: under qemu-user it is not the host's).
func buildTaichi(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "taichi")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOARCH="+runtime.GOARCH)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// fakeSysfs makes a sysfs tree with CPUs 0-3 online, matching the machine the
// invalid cases were written for.
func fakeSysfs(t *testing.T) string {
	root := t.TempDir()
	dir := filepath.Join(root, "devices/system/cpu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "online"), []byte("0-3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestConfigValidateExitCodes(t *testing.T) {
	bin := buildTaichi(t)
	sysfs := fakeSysfs(t)

	def, err := testenv.Command(bin, "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd := testenv.Command(bin, "--sysfs", sysfs, "config", "validate", "/dev/stdin")
	cmd.Stdin = bytes.NewReader(def)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("taichi config default | taichi config validate /dev/stdin: %v\n%s", err, out)
	}

	cases, err := config.LoadInvalidCases("../../config/testdata/invalid")
	if err != nil || len(cases) < 20 {
		t.Fatalf("invalid cases: %d, %v", len(cases), err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tc.YAML), 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := testenv.Command(bin, "--sysfs", sysfs, "config", "validate", path)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want 2; stderr:\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.Key+": ") {
				t.Fatalf("stderr does not name %q:\n%s", tc.Key, stderr.String())
			}
		})
	}
}
