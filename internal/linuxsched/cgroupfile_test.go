package linuxsched

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestWriteCgroupFileNeverCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.idle")
	err := WriteCgroupFile(path, "1")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"1"`) {
		t.Fatalf("missing file: err %v, want ENOENT naming the file and value", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("WriteCgroupFile created the file")
	}
	// Without cpu.idle SetIdle writes nothing and says so; SetWeight still
	// writes the weight.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte("1024\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := OpenCPUGroup(dir)
	if done, err := g.SetIdle(true); done || err != nil || g.HasIdle {
		t.Fatalf("no cpu.idle: SetIdle done %v err %v", done, err)
	}
	if err := g.SetWeight("cpu.shares", 2); err != nil {
		t.Fatal(err)
	}
	if v, err := ReadCgroupFile(filepath.Join(dir, "cpu.shares")); err != nil || v != "2" {
		t.Fatalf("cpu.shares %q %v, want 2", v, err)
	}
}

// TestCPUGroupIdleOnARealCgroup makes a v1 cpu child group idle and
// weighted again, reading the kernel's files back.
func TestCPUGroupIdleOnARealCgroup(t *testing.T) {
	testenv.NeedRoot(t, "a v1 cpu cgroup")
	m, err := ReadCgroupMounts()
	if err != nil || m.V1Path("cpu") == "" {
		testenv.Require(t, "no v1 cpu hierarchy: %v", err)
	}
	dir := filepath.Join(m.V1Path("cpu"), "taichi-linuxsched-test")
	if err := MakeCgroup(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	if err := MakeCgroup(dir); err != nil {
		t.Fatalf("existing group: %v", err)
	}
	g := OpenCPUGroup(dir)
	if !g.HasIdle {
		testenv.Require(t, "kernel without cpu.idle")
	}
	if done, err := g.SetIdle(true); !done || err != nil {
		t.Fatalf("SetIdle: %v %v", done, err)
	}
	if idle, err := g.IsIdle(); !idle || err != nil {
		t.Fatalf("IsIdle after SetIdle(true): %v %v", idle, err)
	}
	if err := g.SetWeight("cpu.shares", 4096); err != nil {
		t.Fatal(err)
	}
	idle, err := g.IsIdle()
	shares, err2 := ReadCgroupFile(filepath.Join(dir, "cpu.shares"))
	if idle || err != nil || err2 != nil || shares != "4096" {
		t.Fatalf("after SetWeight: idle %v shares %q (%v, %v)", idle, shares, err, err2)
	}
}
