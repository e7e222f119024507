package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/topology"
)

// The example config must stay valid on the machine it describes.
func TestDeployExampleValidates(t *testing.T) {
	eight := &topology.Topology{Online: []int{0, 1, 2, 3, 4, 5, 6, 7}}
	cfg, err := config.Load("../../deploy/taichi.yaml", eight)
	if err != nil {
		t.Fatalf("deploy/taichi.yaml: %v", err)
	}
	if len(cfg.Dataplane.Loops) == 0 || len(cfg.Dataplane.DPDK) == 0 {
		t.Fatal("the example should show a DP loop and a DPDK application")
	}
}

func TestSystemdUnitVerifies(t *testing.T) {
	testenv.NeedTool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("../../deploy/taichi.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Delegate=yes", "CPUAffinity=", "Restart=on-failure"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	// verify checks that ExecStart's binary exists: point it at a fresh build.
	bin := buildTaichi(t)
	path := filepath.Join(t.TempDir(), "taichi.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/taichi", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
