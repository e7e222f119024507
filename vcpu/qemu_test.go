package vcpu

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// inQemuEnv is set by the VM's init for the test binary running inside it.
const inQemuEnv = "TAICHI_VCPU_IN_QEMU"

// vmInit mounts what the tests read and a pure cgroup2 hierarchy (nothing
// bound to v1, so cpuset and cpu are available), runs the tests, powers off.
const vmInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t cgroup2 none /sys/fs/cgroup
export TMPDIR=/tmp ` + inQemuEnv + `=1
/vcpu.test -test.v -test.count=1 -test.timeout=240s -test.run "$(cat /tests)"
echo "VCPU-QEMU-RESULT $?"
poweroff -f
`

// TestCgroupV2InQemu runs the package's cgroup tests inside a throwaway
// qemu VM (Debian's kernel, busybox initramfs) whose only hierarchy is
// cgroup2, so the v2 backend runs against a real kernel even on a host
// whose cpuset and cpu controllers are bound to cgroup v1.
func TestCgroupV2InQemu(t *testing.T) {
	if os.Getenv(inQemuEnv) != "" {
		t.Skip("already inside the VM")
	}
	if testing.Short() {
		t.Skip("boots a VM under TCG: skipped in -short mode")
	}
	testenv.SkipIfEmulated(t, "an x86_64 VM running this package's tests built for it")
	qemu := testenv.NeedTool(t, "qemu-system-x86_64", "qemu-system-x86")
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	slices.Sort(kernels)
	if len(kernels) == 0 {
		testenv.Require(t, "no kernel in /boot (Debian: linux-image-amd64)")
	}
	kernel := kernels[len(kernels)-1]
	if f, err := os.Open(kernel); err != nil {
		testenv.Require(t, "cannot read %s: %v", kernel, err)
	} else {
		f.Close()
	}
	busybox := "/bin/busybox"
	if !isStatic(busybox) {
		testenv.Require(t, "no statically linked /bin/busybox (Debian: busybox-static)")
	}
	goTool := testenv.NeedTool(t, "go", "golang-go")
	for _, tool := range []string{"cpio", "gzip"} {
		testenv.NeedTool(t, tool, tool)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	work := t.TempDir()
	tree := filepath.Join(work, "root")
	for _, d := range []string{"bin", "proc", "sys", "tmp", "dev"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.CommandContext(ctx, goTool, "test", "-c", "-o", filepath.Join(tree, "vcpu.test"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test binary: %v\n%s", err, out)
	}
	copyFile(t, busybox, filepath.Join(tree, "bin/busybox"), 0o755)
	writeFile(t, filepath.Join(tree, "init"), vmInit, 0o755)
	// Every real-cgroup test; the qemu test itself skips inside.
	writeFile(t, filepath.Join(tree, "tests"), "V2RealMount|LendReclaim|PinnedDP|RestartAfterKill|CloseLeaves|AdoptRefusals|ChildrenFollow|DestroyGroup|ClassApplied|DetectMounts|Scan|Confine", 0o644)
	initrd := filepath.Join(work, "initrd.gz")
	pack := exec.CommandContext(ctx, "sh", "-c", `cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"`, "sh", tree, initrd)
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack initramfs: %v\n%s", err, out)
	}

	vm := exec.CommandContext(ctx, qemu, "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet")
	var out bytes.Buffer
	vm.Stdout, vm.Stderr = &out, &out
	start := time.Now()
	err := vm.Run()
	console := strings.ReplaceAll(out.String(), "\r", "")
	t.Logf("VM (%s, %v):\n%s", filepath.Base(kernel), time.Since(start).Round(time.Second), console)
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	m := regexp.MustCompile(`VCPU-QEMU-RESULT (\d+)`).FindStringSubmatch(console)
	if m == nil {
		t.Fatal("the VM did not report a result")
	}
	if m[1] != "0" {
		t.Fatalf("tests inside the VM failed (exit %s)", m[1])
	}
	// The point of the VM: the v2 backend ran for real, not skipped.
	if !strings.Contains(console, "cgroup layout: v2 ") {
		t.Errorf("the VM's tests did not detect the cgroup v2 layout")
	}
	for _, name := range []string{"TestV2RealMount", "TestLendReclaimMovesAdoptedProcesses", "TestRestartAfterKill", "TestAdoptRefusals"} {
		if !strings.Contains(console, "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass inside the VM", name)
		}
	}
}

func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b), mode)
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
}
