package vcpu

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// TestV2RealMount runs the pool on a cgroup2 mount the test makes itself.
// Where the cpuset and cpu controllers are bound to v1 hierarchies (this
// development VM), cgroup2 cannot enable them and the test says so.
func TestV2RealMount(t *testing.T) {
	testenv.NeedRoot(t, "mounting cgroup2")
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		testenv.Require(t, "cannot mount cgroup2 on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	m := Mounts{Unified: dir}
	if v, err := m.choose(); err != nil || v != "v2" {
		// Not a missing requirement: where cpuset and cpu are bound to v1
		// hierarchies (this project's CI machines) a fresh cgroup2 mount has
		// neither; TestCgroupV2InQemu runs the v2 path in a VM instead.
		t.Skipf("cgroup2 is mounted but unusable for the pool, v2 path not run for real: %v", err)
	}
	p := startPool(t, Options{Mounts: &m, Class: ClassIdle})
	if p.Backend() != "cgroup-v2" {
		t.Fatalf("Backend() = %q", p.Backend())
	}
	hogs := adoptHogs(t, p, 2)
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	for _, pid := range hogs {
		if got := allowedCPUs(t, pid); !slices.Equal(got, []int{cpCore, dpCore}) {
			t.Fatalf("pid %d after Lend: allowed %v", pid, got)
		}
	}
	if err := p.Reclaim(dpCore); err != nil {
		t.Fatal(err)
	}
	for _, pid := range hogs {
		if got := allowedCPUs(t, pid); !slices.Equal(got, []int{cpCore}) {
			t.Fatalf("pid %d after Reclaim: allowed %v", pid, got)
		}
	}
	u, err := p.Usage()
	if err != nil || u.PerCPUAvailable || u.Total <= 0 {
		t.Fatalf("Usage() = %+v, %v; want a total and no per-CPU data on v2", u, err)
	}
}

// fakeV2 lays out the files a cgroup2 root and an existing pool group
// would have. It is a seam for the v2 file logic only: what it can show is
// which files get which values, not what the kernel does with them.
func fakeV2(t *testing.T, name string) (Mounts, string) {
	t.Helper()
	root := t.TempDir()
	group := filepath.Join(root, name)
	for _, dir := range []string{group, filepath.Join(root, ConfinedName(name))} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	confined := ConfinedName(name)
	files := map[string]string{
		"cgroup.controllers":       "cpuset cpu io memory pids\n",
		"cgroup.subtree_control":   "memory\n",
		"cgroup.procs":             "",
		"cpuset.cpus.effective":    "0-1\n",
		name + "/cpuset.cpus":      "0-1\n", // as a crashed run left it: lent
		name + "/cpuset.mems":      "",
		name + "/cpu.idle":         "0\n",
		name + "/cpu.weight":       "100\n",
		name + "/cgroup.procs":     "",
		name + "/cpu.stat":         "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
		confined + "/cpuset.cpus":  "",
		confined + "/cpu.idle":     "0\n",
		confined + "/cpu.weight":   "100\n",
		confined + "/cgroup.procs": "",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Mounts{Unified: root}, group
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	s, err := readString(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestV2Seam(t *testing.T) {
	name := uniqueName(t)
	m, group := fakeV2(t, name)
	prio := 0
	if !testenv.Privileged() {
		prio = -1 // a SCHED_FIFO writer needs root; the files do not care
	}
	p, err := newCgroupPool(Options{Name: name, CPCores: []int{cpCore}, DPCores: []int{dpCore},
		Class: ClassIdle, WriterPriority: prio, Mounts: &m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p.Backend() != "cgroup-v2" {
		t.Fatalf("Backend() = %q", p.Backend())
	}
	if got := mustRead(t, filepath.Join(m.Unified, "cgroup.subtree_control")); got != "+cpuset +cpu" {
		t.Fatalf("subtree_control written %q, want the missing controllers enabled", got)
	}
	if got := mustRead(t, filepath.Join(group, "cpuset.cpus")); got != "0" {
		t.Fatalf("Start left cpuset.cpus = %q, want the CP cores only", got)
	}
	if got := mustRead(t, filepath.Join(group, "cpu.idle")); got != "1" {
		t.Fatalf("idle class: cpu.idle = %q", got)
	}
	confined := filepath.Join(m.Unified, ConfinedName(name))
	if cpus, idle := mustRead(t, filepath.Join(confined, "cpuset.cpus")), mustRead(t, filepath.Join(confined, "cpu.idle")); cpus != "0" || idle != "1" {
		t.Fatalf("confined group: cpuset.cpus=%q cpu.idle=%q; want the CP cores and the pool's idle class", cpus, idle)
	}
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(group, "cpuset.cpus")); got != "0-1" {
		t.Fatalf("after Lend cpuset.cpus = %q", got)
	}
	if err := p.Reclaim(dpCore); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(group, "cpuset.cpus")); got != "0" {
		t.Fatalf("after Reclaim cpuset.cpus = %q", got)
	}

	child := startChild(t, name+"-cp", "sleep")
	if n, err := p.Adopt([]int{child}); n != 1 || err != nil {
		t.Fatalf("Adopt = %d, %v", n, err)
	}
	if members, err := p.Members(); err != nil || !slices.Equal(members, []int{child}) {
		t.Fatalf("Members() = %v, %v; want [%d] (written to cgroup.procs)", members, err, child)
	}
	u, err := p.Usage()
	if err != nil || u.Total != 1500*time.Microsecond || u.PerCPUAvailable || u.PerCPU != nil {
		t.Fatalf("Usage() = %+v, %v; want 1.5ms total and per-CPU marked unavailable", u, err)
	}

	if testenv.Privileged() {
		// v2 moves whole processes: one real-time thread keeps all out.
		helper, _ := startHelper(t, "mixed")
		n, err := p.Adopt([]int{helper.Process.Pid})
		if n != 0 || len(skipErrors(err)) == 0 {
			t.Fatalf("v2 Adopt(process with a real-time thread) = %d, %v; want 0 and SkipErrors", n, err)
		}
	}

	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(group, "cpuset.cpus")); got != "0" {
		t.Fatalf("Close left cpuset.cpus = %q, want CP cores", got)
	}
}

func TestV2SeamLowWeight(t *testing.T) {
	name := uniqueName(t)
	m, group := fakeV2(t, name)
	if err := os.WriteFile(filepath.Join(group, "cpu.idle"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := newCgroupPool(Options{Name: name, CPCores: []int{cpCore}, Class: ClassLowWeight, Weight: 20,
		WriterPriority: -1, Mounts: &m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if idle, w := mustRead(t, filepath.Join(group, "cpu.idle")), mustRead(t, filepath.Join(group, "cpu.weight")); idle != "0" || w != "20" {
		t.Fatalf("low-weight: cpu.idle=%q cpu.weight=%q; want 0 and 20", idle, w)
	}
}

func TestMountsChoose(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hugetlb\n") // this VM's hybrid layout: cpuset/cpu live in v1
	v, err := Mounts{Unified: dir, CPUSet: "/a", CPU: "/b"}.choose()
	if err != nil || v != "v1" {
		t.Fatalf("hybrid layout chose %q, %v; want v1", v, err)
	}
	_, err = Mounts{Unified: dir}.choose()
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "hugetlb") {
		t.Fatalf("empty cgroup2 only: %v; want ErrNotSupported naming the mount and its controllers", err)
	}
	write("cpuset cpu io\n")
	if v, err := (Mounts{Unified: dir, CPUSet: "/a", CPU: "/b"}).choose(); err != nil || v != "v2" {
		t.Fatalf("usable cgroup2 chose %q, %v; want v2", v, err)
	}
}

// TestDetectMounts checks detection against this machine's mount table.
func TestDetectMounts(t *testing.T) {
	m, err := DetectMounts()
	if err != nil {
		t.Fatal(err)
	}
	for path, ctrl := range map[string]string{m.CPUSet: "cpuset", m.CPU: "cpu", m.CPUAcct: "cpuacct"} {
		if path != "" && !exists(filepath.Join(path, map[string]string{
			"cpuset": "cpuset.cpus", "cpu": "cpu.shares", "cpuacct": "cpuacct.usage"}[ctrl])) {
			t.Errorf("detected %s hierarchy at %s has no %s files", ctrl, path, ctrl)
		}
	}
	if m.Unified != "" && !exists(filepath.Join(m.Unified, "cgroup.controllers")) {
		t.Errorf("detected cgroup2 at %s has no cgroup.controllers", m.Unified)
	}
	v, err := m.choose()
	t.Logf("cgroup layout: %s (%v) mounts %+v", v, err, m)
}

func TestOptionsValidation(t *testing.T) {
	cases := []struct {
		o    Options
		want string
	}{
		{Options{}, "cp_cores"},
		{Options{Name: "a/b", CPCores: []int{0}}, "name"},
		{Options{Name: "..", CPCores: []int{0}}, "name"},
		{Options{CPCores: []int{0}, Class: "fast"}, "class"},
		{Options{CPCores: []int{0}, Weight: 20000}, "weight"},
		{Options{CPCores: []int{0}, WriterPriority: 100}, "writer_priority"},
		{Options{CPCores: []int{0, 0}}, "cp_cores: CPU 0 listed twice"},
		{Options{CPCores: []int{4000}}, "cp_cores: CPU 4000 is not online"},
		{Options{CPCores: []int{0}, DPCores: []int{0}}, "dp_cores: CPU 0 is also a CP core"},
		{Options{CPCores: []int{0}, DPCores: []int{4001}}, "dp_cores: CPU 4001 is not online"},
	}
	for _, c := range cases {
		_, err := NewCgroup(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewCgroup(%+v) = %v; want an error naming %q", c.o, err, c.want)
		}
	}
}

// TestPerThreadIdleFallback: where the group has no cpu.idle (kernels before
// 5.15) the idle class becomes SCHED_IDLE on every adopted thread, and
// teardown gives SCHED_OTHER back. The file tree is the seam; the policy
// changes are real.
func TestPerThreadIdleFallback(t *testing.T) {
	testenv.NeedRoot(t, "returning threads from SCHED_IDLE to SCHED_OTHER")
	name := uniqueName(t)
	m, group := fakeV2(t, name)
	if err := os.Remove(filepath.Join(group, "cpu.idle")); err != nil {
		t.Fatal(err)
	}
	p, err := newCgroupPool(Options{Name: name, CPCores: []int{cpCore}, Class: ClassIdle, Mounts: &m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	child := startChild(t, name+"-cp", "sleep")
	if n, err := p.Adopt([]int{child}); n != 1 || err != nil {
		t.Fatalf("Adopt = %d, %v", n, err)
	}
	policies := func() []uint {
		st, err := inspectProcess(p.proc, child)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint
		for _, th := range st.threads {
			out = append(out, th.policy)
		}
		return out
	}
	if got := policies(); slices.ContainsFunc(got, func(pol uint) bool { return pol != unix.SCHED_IDLE }) {
		t.Fatalf("thread policies after Adopt = %v, want all SCHED_IDLE (%d)", got, unix.SCHED_IDLE)
	}
	p.restoreThreadPolicies()
	if got := policies(); slices.ContainsFunc(got, func(pol uint) bool { return pol != unix.SCHED_NORMAL }) {
		t.Fatalf("thread policies after restore = %v, want all SCHED_OTHER", got)
	}
}
