package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// step is one check of a guest run: a test binary with a -test.run filter,
// or a shell script that prints a PASS marker (the kernel module's).
type step struct {
	Feature string // the matrix column it feeds: probe, tracer, confine-v1, ...
	Phase   string // phaseV1 (v1 cpuset/cpu mounted beside cgroup2) or phaseV2 (cgroup2 alone)
	Bin     string // test binary under testDir, or the script's path
	Run     string // -test.run filter; "" for a script
	Marker  string // a script's success line
	Arch    string // runs only on this GOARCH ("" on every one)
}

const (
	phaseV1 = "v1"
	phaseV2 = "v2"
	testDir = "/tests"
	// v1 hierarchies mounted in phase v1, where the host has them too.
	cpusetV1 = "/sys/fs/cgroup/cpuset"
	cpuV1    = "/sys/fs/cgroup/cpu,cpuacct"
	unified  = "/sys/fs/cgroup/unified"
)

// plan is what every guest runs, in order: small, because TCG runs the
// guest about 10-50 times slower than the host.
var plan = []step{
	{Feature: "probe", Phase: phaseV1, Bin: "probe.test", Run: "^(TestXDPCountsEqualPacketsSent|TestXDPWakesBlockedWaiterBeforeSocket)$"},
	{Feature: "tracer", Phase: phaseV1, Bin: "blocker.test", Run: "^TestTracerNamesKernelStorm$"},
	{Feature: "confine-v1", Phase: phaseV1, Bin: "vcpu.test", Run: "^(TestConfineRelease|TestConfinedChildrenFollow)$"},
	{Feature: "coreyield", Phase: phaseV1, Bin: "coreyield.test", Run: "^(TestClassPerState|TestRTBudgetFitsUnderTheRoot|TestSetStatesOnARealGroup|TestFallbackSchedIdleOnARealThread|TestLentGroupGivesCPTheCore)$"},
	{Feature: "afxdp", Phase: phaseV1, Bin: "dataplane.test", Run: "^TestXDPReflects$"},
	{Feature: "dploop", Phase: phaseV1, Bin: "dataplane.test", Run: "^(TestEventWakeWakesBlockedLoop|TestOnOffYieldsAndWakesWithoutLoss)$"},
	{Feature: "module", Phase: phaseV1, Bin: "/kmod/guest.sh", Marker: "TAICHI-KMOD-PASS"},
	{Feature: "confine-v2", Phase: phaseV2, Bin: "vcpu.test", Run: "^(TestConfineRelease|TestConfinedChildrenFollow)$"},
	// The per-core groups as threaded cgroup2 children of the root, the
	// mechanism of a cgroup2-only host.
	{Feature: "coreyield-v2", Phase: phaseV2, Bin: "coreyield.test", Run: "^(TestSetStatesOnARealGroup|TestLentGroupGivesCPTheCore|TestThreadedGroupsMoveTheProcessAndBack)$"},
	// A real testpmd lcore lent and kept on cgroup2 alone. x86_64 only: the
	// guest gets this machine's DPDK (scripts/kernel-matrix.sh stage_dpdk).
	{Feature: "coreyield-testpmd", Phase: phaseV2, Bin: "dpdk.test", Run: "^(TestTestpmdLentLcoreYieldsToCP|TestTestpmdStaticLcoreKeepsCore)$", Arch: "amd64"},
}

// Guest output: one KM-TEST line per test, one KM-STEP per step, one
// KM-INFO per fact about the kernel, and a last KM-VERDICT line. The host
// (report) reads only these.
const (
	tagInfo    = "KM-INFO"
	tagTest    = "KM-TEST"
	tagStep    = "KM-STEP"
	tagVerdict = "KM-VERDICT"
)

// noCpusetV1 starts the reason a guest gives when its kernel has no v1
// cpuset controller (Debian 6.12: CONFIG_CPUSETS_V1 unset).
const noCpusetV1 = "kernel has no cgroup v1 cpuset"

// runGuest is the guest's init after busybox: it mounts what the tests
// read, runs the plan, prints the verdict and powers the VM off.
func runGuest(stepTimeout time.Duration) {
	out := os.Stdout
	ok := true
	if err := mountBase(); err != nil {
		fmt.Fprintf(out, "%s setup FAIL %v\n", tagStep, err)
		ok = false
	}
	printKernelInfo(out)
	if err := loadModules(out, "/modules"); err != nil {
		fmt.Fprintf(out, "%s modules FAIL %v\n", tagStep, err)
		ok = false
	}
	cpusetErr := mountV1()
	fmt.Fprintf(out, "%s cpuset-v1 %v\n", tagInfo, cpusetErr == nil)
	for _, phase := range []string{phaseV1, phaseV2} {
		if phase == phaseV2 {
			if err := unmountV1(); err != nil {
				fmt.Fprintf(out, "%s cgroup-v2 FAIL %v\n", tagStep, err)
				ok = false
				continue
			}
		}
		for _, s := range plan {
			if s.Phase != phase || (s.Arch != "" && s.Arch != runtime.GOARCH) {
				continue
			}
			if s.Feature == "confine-v1" && cpusetErr != nil {
				fmt.Fprintf(out, "%s %s SKIP %s: %v\n", tagStep, s.Feature, noCpusetV1, cpusetErr)
				continue
			}
			if !runStep(out, s, stepTimeout) {
				ok = false
			}
		}
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(out, "%s %s\n", tagVerdict, verdict)
	_ = out.Sync()
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// runStep runs one step, prints its tests and its outcome, and reports
// whether it passed (skips pass here; the host judges them).
func runStep(out io.Writer, s step, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var cmd *exec.Cmd
	if s.Run == "" {
		cmd = exec.CommandContext(ctx, "/bin/sh", s.Bin, filepath.Dir(s.Bin))
	} else {
		cmd = exec.CommandContext(ctx, filepath.Join(testDir, s.Bin), "-test.v", "-test.count=1",
			"-test.timeout="+timeout.String(), "-test.run", s.Run)
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	// The raw output goes to the console too, for the log the host keeps.
	fmt.Fprintf(out, "----- %s output -----\n%s----- end %s -----\n", s.Feature, buf.String(), s.Feature)
	if s.Run == "" {
		passed := err == nil && bytes.Contains(buf.Bytes(), []byte(s.Marker))
		fmt.Fprintf(out, "%s %s %s %s %s\n", tagTest, s.Feature, filepath.Base(s.Bin), outcome(passed), took)
		fmt.Fprintf(out, "%s %s %s %s\n", tagStep, s.Feature, outcome(passed), took)
		return passed
	}
	results := parseVerbose(&buf)
	passed := err == nil && len(results) > 0
	for _, r := range results {
		line := fmt.Sprintf("%s %s %s %s %ss", tagTest, s.Feature, r.Name, r.Outcome, r.Seconds)
		if r.Outcome != "PASS" && r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(out, line)
		if r.Outcome == "FAIL" {
			passed = false
		}
	}
	why := ""
	if err != nil {
		why = " " + err.Error()
	} else if len(results) == 0 {
		why = " no test matched " + s.Run
	}
	fmt.Fprintf(out, "%s %s %s %s%s\n", tagStep, s.Feature, outcome(passed), took, why)
	return passed
}

func outcome(passed bool) string {
	if passed {
		return "PASS"
	}
	return "FAIL"
}

// mountBase mounts what the privileged tests read, as on the project's
// hosts: proc, sys, devtmpfs, tmpfs on /tmp and /run, bpffs, tracefs,
// cgroup2 at /sys/fs/cgroup/unified; and brings loopback up.
func mountBase() error {
	mounts := []struct{ fstype, target string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"},
		{"tmpfs", "/tmp"}, {"tmpfs", "/run"},
		{"bpf", "/sys/fs/bpf"}, {"tracefs", "/sys/kernel/tracing"}, {"debugfs", "/sys/kernel/debug"},
		{"tmpfs", "/sys/fs/cgroup"}, {"cgroup2", unified},
	}
	var errs []error
	for _, m := range mounts {
		if err := mount(m.fstype, m.target, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, err)
		}
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip link set lo up: %v: %s", err, out))
	}
	return errors.Join(errs...)
}

// mountV1 mounts the v1 cpu,cpuacct and cpuset hierarchies the host has.
// It returns the cpuset mount's error: Debian 6.12 has no v1 cpuset.
func mountV1() error {
	if err := mount("cgroup", cpuV1, "cpu,cpuacct"); err != nil {
		fmt.Printf("%s cgroup-v1-cpu FAIL %v\n", tagStep, err)
	}
	return mount("cgroup", cpusetV1, "cpuset")
}

// unmountV1 gives the cpuset and cpu controllers back to cgroup2 (a v1
// hierarchy without child groups goes away at its last unmount) and waits
// until cgroup2 offers both.
func unmountV1() error {
	for _, dir := range []string{cpusetV1, cpuV1} {
		// A group left behind keeps the hierarchy (and its controllers)
		// alive after the unmount: name it, and remove it if it is empty.
		if left := removeGroups(dir); len(left) > 0 {
			fmt.Printf("%s v1-leftover %s\n", tagInfo, strings.Join(left, ","))
		}
		if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("umount %s: %w", dir, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(unified, "cgroup.controllers"))
		have := strings.Fields(string(b))
		if err == nil && contains(have, "cpuset") && contains(have, "cpu") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup2 controllers after the v1 unmount: %q (%v); want cpuset and cpu (a v1 group left behind?)", have, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeGroups removes every cgroup under root (deepest first) and returns
// their paths.
func removeGroups(root string) []string {
	var groups []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && path != root {
			groups = append(groups, path)
		}
		return nil
	})
	for i := len(groups) - 1; i >= 0; i-- {
		_ = unix.Rmdir(groups[i])
	}
	return groups
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mount(fstype, target, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(fstype, target, fstype, 0, data); err != nil {
		return fmt.Errorf("mount -t %s %s %s: %w", fstype, data, target, err)
	}
	return nil
}

// printKernelInfo says which kernel this is: release, architecture and
// CPU count (the host reads the preemption model from the kernel's config).
func printKernelInfo(out io.Writer) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	fmt.Fprintf(out, "%s release %s\n%s arch %s\n%s cpus %d\n",
		tagInfo, unix.ByteSliceToString(u.Release[:]), tagInfo, runtime.GOARCH, tagInfo, runtime.NumCPU())
}

// loadModules loads the kernel modules dir/load.list names, in order
// (the host staged them with their dependencies first).
func loadModules(out io.Writer, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "load.list"))
	if err != nil {
		return err
	}
	names := strings.Fields(string(b))
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load %s: %w", name, err)
		}
	}
	fmt.Fprintf(out, "%s modules %s\n", tagInfo, strings.Join(names, ","))
	return nil
}
