// Package testenv tells tests what the machine lets them do: change the
// host's kernel state (root, running natively), or only run as another
// architecture's binary under a user-mode emulator (qemu-user running an
// arm64 test binary on an x86_64 host), where system calls reach the host's
// kernel through a translation layer and privileged tests do not belong.
package testenv

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// machines maps GOARCH to the ELF machine a native executable has.
var machines = map[string]elf.Machine{
	"386":     elf.EM_386,
	"amd64":   elf.EM_X86_64,
	"arm":     elf.EM_ARM,
	"arm64":   elf.EM_AARCH64,
	"loong64": elf.EM_LOONGARCH,
	"ppc64le": elf.EM_PPC64,
	"riscv64": elf.EM_RISCV,
	"s390x":   elf.EM_S390,
}

// kernelExe is the executable the kernel runs for this thread. qemu-user
// answers /proc/self/exe and /proc/<pid>/exe with the emulated binary, but
// not /proc/thread-self/exe, which names the emulator itself (also when
// binfmt_misc started it).
const kernelExe = "/proc/thread-self/exe"

var emulator = sync.OnceValue(func() string {
	want, ok := machines[runtime.GOARCH]
	if !ok {
		return "" // cannot tell: treat as native
	}
	path, err := os.Readlink(kernelExe)
	if err != nil {
		return ""
	}
	f, err := elf.Open(kernelExe)
	if err != nil {
		return ""
	}
	defer f.Close()
	if f.Machine == want {
		return ""
	}
	return path
})

// Emulator returns the path of the user-mode emulator running this process
// (for example /usr/bin/qemu-aarch64-static), or "" when it runs natively:
// the kernel's executable is an ELF file for another machine than the one
// this binary was built for.
func Emulator() string { return emulator() }

// Privileged reports whether tests may change the host's kernel state
// (cgroups, network namespaces, BPF, real-time scheduling): the process is
// root and runs natively.
func Privileged() bool { return os.Geteuid() == 0 && Emulator() == "" }

// NeedRoot skips t unless Privileged; needs says what for ("network
// namespaces and BPF").
func NeedRoot(t testing.TB, needs string) {
	t.Helper()
	SkipIfEmulated(t, needs)
	if os.Geteuid() != 0 {
		Require(t, "needs root: %s", needs)
	}
}

// SkipIfEmulated skips t when it runs under a user-mode emulator; needs says
// which host kernel feature or native tool the test depends on.
func SkipIfEmulated(t testing.TB, needs string) {
	t.Helper()
	if emu := Emulator(); emu != "" {
		t.Skipf("needs the host kernel natively (%s), runs as %s under %s", needs, runtime.GOARCH, filepath.Base(emu))
	}
}

// Command is exec.Command for a binary built for this architecture: the test
// binary itself (os.Args[0]) or one the test built with go build. Under an
// emulator it runs through the emulator, since the kernel cannot execute it
// without binfmt_misc. Setting Args[0] afterwards still names the process.
func Command(name string, arg ...string) *exec.Cmd {
	emu := Emulator()
	if emu == "" {
		return exec.Command(name, arg...)
	}
	return exec.Command(emu, append([]string{name}, arg...)...)
}

// StrictEnv names the variable make test sets (TAICHI_TEST_STRICT=1): this
// machine is of the kind the project's tests are written for (root, the
// packages scripts/deps.sh installs, cgroup v1 controllers, BPF with BTF),
// so a test that would skip for want of one of those fails instead.
const StrictEnv = "TAICHI_TEST_STRICT"

// Strict reports whether StrictEnv is set to 1 and the test runs natively
// (under a user-mode emulator the host kernel is out of reach by design).
func Strict() bool { return os.Getenv(StrictEnv) == "1" && Emulator() == "" }

// Require stops t for want of something the project's machines have: a
// failure in strict mode, a skip otherwise. The message names what was
// missing, and how to get it where that is known.
func Require(t testing.TB, format string, args ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf("strict ($%s=1): "+format, append([]any{StrictEnv}, args...)...)
	}
	t.Skipf(format, args...)
}

// NeedTool returns the path of a command the tests need, or stops t (Require)
// naming the Debian package that ships it (scripts/deps.sh installs it).
func NeedTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Require(t, "needs %s (Debian package %s, installed by scripts/deps.sh): %v", name, debianPackage, err)
	}
	return path
}

// TCGEnv names the variable the kernel matrix's guests set
// (TAICHI_TEST_TCG=1, scripts/kernel-matrix.sh): the test runs in a qemu
// guest under full-system emulation (TCG), many times slower than the
// machines the tests' packet rates are sized for.
const TCGEnv = "TAICHI_TEST_TCG"

// TCG reports whether TCGEnv is set to 1: tests that offer a packet rate
// offer less there, and keep every assertion.
func TCG() bool { return os.Getenv(TCGEnv) == "1" }
