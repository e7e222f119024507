package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// emulatorEnv names the emulator make test-arm64 runs the tests under, so a
// detection that stopped working fails here instead of letting privileged
// tests run emulated.
const emulatorEnv = "TAICHI_TEST_EMULATOR"

const helperEnv = "TESTENV_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "goarch" {
		fmt.Print(runtime.GOARCH)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A process runs natively exactly when the kernel's executable for it is the
// test binary itself.
func TestEmulatorDetection(t *testing.T) {
	emu := Emulator()
	if want := os.Getenv(emulatorEnv); want != "" && filepath.Base(emu) != want {
		t.Fatalf("$%s = %s but Emulator() = %q (%s -> %s)", emulatorEnv, want, emu, kernelExe, readlink(t, kernelExe))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, err := os.Stat(self)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.Stat(kernelExe)
	if err != nil {
		t.Skipf("no %s: %v", kernelExe, err)
	}
	native := os.SameFile(a, b)
	if native != (emu == "") {
		t.Fatalf("Emulator() = %q, but the kernel runs %s and the test binary is %s", emu, readlink(t, kernelExe), self)
	}
	if Privileged() && emu != "" {
		t.Fatal("Privileged() under an emulator")
	}
	t.Logf("GOARCH %s, emulator %q", runtime.GOARCH, emu)
}

func TestCommandRunsThisArchitecture(t *testing.T) {
	cmd := Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=goarch")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	if got := strings.TrimSpace(string(out)); got != runtime.GOARCH {
		t.Fatalf("re-executed test binary runs as %q, want %s", got, runtime.GOARCH)
	}
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		return err.Error()
	}
	return s
}
