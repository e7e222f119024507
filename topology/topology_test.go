package topology

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadFakeSysfs(t *testing.T) {
	root := t.TempDir()
	cpu := filepath.Join(root, "devices/system/cpu")
	writeFile(t, filepath.Join(cpu, "online"), "0-3\n")
	writeFile(t, filepath.Join(cpu, "isolated"), "3\n")
	for i, sib := range []string{"0,2", "1,3", "0,2", "1,3"} {
		d := filepath.Join(cpu, "cpu"+string(rune('0'+i)), "topology")
		writeFile(t, filepath.Join(d, "thread_siblings_list"), sib+"\n")
		writeFile(t, filepath.Join(d, "core_id"), "0\n")
		writeFile(t, filepath.Join(d, "physical_package_id"), "0\n")
		writeFile(t, filepath.Join(d, "core_siblings_list"), "0-3\n")
	}
	writeFile(t, filepath.Join(root, "devices/system/node/node0/cpulist"), "0-1\n")
	writeFile(t, filepath.Join(root, "devices/system/node/node1/cpulist"), "2-3\n")

	topo, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(topo.Online, []int{0, 1, 2, 3}) {
		t.Errorf("online = %v", topo.Online)
	}
	if !topo.IsIsolated(3) || topo.IsIsolated(2) {
		t.Errorf("isolated = %v", topo.Isolated)
	}
	if !slices.Equal(topo.Siblings[1], []int{1, 3}) {
		t.Errorf("siblings[1] = %v", topo.Siblings[1])
	}
	if topo.Node[3] != 1 || topo.Node[0] != 0 {
		t.Errorf("node = %v", topo.Node)
	}
	dp, cp := topo.DefaultSplit()
	if !slices.Equal(dp, []int{3}) || !slices.Equal(cp, []int{0, 1, 2}) {
		t.Errorf("DefaultSplit = %v %v", dp, cp)
	}
}

func TestHost(t *testing.T) {
	topo, err := Host()
	if err != nil {
		testenv.Require(t, "no sysfs: %v", err)
	}
	if len(topo.Online) == 0 {
		t.Fatal("no online CPUs")
	}
	for _, c := range topo.Online {
		if _, err := os.Stat(filepath.Join("/sys/devices/system/cpu", "cpu"+strconv.Itoa(c))); err != nil {
			t.Errorf("online cpu %d has no sysfs dir: %v", c, err)
		}
	}
}
