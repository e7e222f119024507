package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/controlplane"
	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/scheduler"
)

const helperEnv = "TAICHI_EVAL_CP_HELPER_TEST"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(controlplane.HelperMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces, tc/nft, cgroups")
}

// plainSystem is the unit-test seam: no pool, no policies; it records what
// the runner asked of it.
type plainSystem struct {
	mu       sync.Mutex
	policies []string
	placed   int
	// slo is the bound in force (default: 250µs); sloErr fails SetSLO.
	slo    time.Duration
	sloErr error
}

func (s *plainSystem) SetPolicy(_ context.Context, name scheduler.PolicyName) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies = append(s.policies, string(name))
	return nil
}
func (s *plainSystem) Place(int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.placed++
	return nil
}
func (s *plainSystem) Snapshot() (Snapshot, error) {
	return Snapshot{At: time.Now(), CPCPUS: -1, CPOnDPS: -1, DPBusyS: -1, DaemonCPUS: -1, DaemonCoveredS: -1}, nil
}
func (s *plainSystem) DPCores() []int  { return []int{1} }
func (s *plainSystem) CPCores() []int  { return []int{0} }
func (s *plainSystem) DPPriority() int { return 50 }
func (s *plainSystem) SLO() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slo == 0 {
		return 250 * time.Microsecond
	}
	return s.slo
}
func (s *plainSystem) SetSLO(v time.Duration) (func() error, error) {
	prev := s.SLO()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sloErr != nil {
		return nil, s.sloErr
	}
	s.slo = v
	s.policies = append(s.policies, "slo="+v.String())
	return func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.slo = prev
		s.policies = append(s.policies, "slo="+prev.String())
		return nil
	}, nil
}

func testEnv(t *testing.T, sys System) *Env {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Env{
		System: sys, Prefix: fmt.Sprintf("tev%d", os.Getpid()), WorkDir: t.TempDir(),
		GoHelper: []string{exe}, GoHelperEnv: []string{helperEnv + "=1"}, Settle: time.Millisecond,
	}
}

func TestVMStartupConfigValidate(t *testing.T) {
	good := VMStartupConfig{VMs: []int{1}, Policies: []scheduler.PolicyName{"static"}, DPLoad: 0.3}
	cases := map[string]func(c *VMStartupConfig){
		"vms":      func(c *VMStartupConfig) { c.VMs = []int{0} },
		"policies": func(c *VMStartupConfig) { c.Policies = []scheduler.PolicyName{"fast"} },
		"dp-load":  func(c *VMStartupConfig) { c.DPLoad = 1.5 },
	}
	for key, mutate := range cases {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: got %v", key, err)
		}
	}
	d := DataplaneConfig{Policies: []scheduler.PolicyName{"static"}, Loads: []float64{0}}
	if err := d.Validate(); err == nil || !strings.HasPrefix(err.Error(), "loads") {
		t.Errorf("loads 0: got %v", err)
	}
}

// TestFailingStepReportedRunContinues: one VM per run has an invalid vport
// request; the report names its step and error, the other VMs and the next
// run complete, and nothing is left behind.
func TestFailingStepReportedRunContinues(t *testing.T) {
	needRoot(t)
	sys := &plainSystem{}
	env := testEnv(t, sys)
	cfg := VMStartupConfig{VMs: []int{2, 3}, Policies: []scheduler.PolicyName{"static", "dynamic"}, Work: 0.1, FailVM: 1}
	rep, err := RunVMStartup(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 4 || strings.Join(sys.policies, ",") != "static,dynamic,static,dynamic" {
		t.Fatalf("%d runs, policies %v; want 4 runs interleaved per density", len(rep.Runs), sys.policies)
	}
	for _, r := range rep.Runs {
		if r.Error != "" {
			t.Errorf("%s/%d: run error %s", r.Policy, r.VMs, r.Error)
		}
		if r.VMsFailed != 1 || r.VMsOK != r.VMs-1 || r.StartupMS.N != r.VMs-1 {
			t.Errorf("%s/%d: ok %d failed %d n %d", r.Policy, r.VMs, r.VMsOK, r.VMsFailed, r.StartupMS.N)
		}
		if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], "vm 1: vport:") || !strings.Contains(strings.ToLower(r.Failures[0]), "mtu") {
			t.Errorf("%s/%d: failures %q; want vm 1 failing at vport naming the mtu", r.Policy, r.VMs, r.Failures)
		}
	}
	if sys.placed == 0 {
		t.Error("no CP process was placed")
	}
	var md bytes.Buffer
	WriteMarkdown(&md, rep)
	if !strings.Contains(md.String(), "vm 1: vport:") {
		t.Error("markdown does not list the failure")
	}
	assertNoLeftovers(t, env.Prefix)
	if ents, _ := os.ReadDir(env.WorkDir); len(ents) != 0 {
		t.Errorf("state dirs left in %s: %v", env.WorkDir, ents)
	}
}

func assertNoLeftovers(t *testing.T, prefix string) {
	t.Helper()
	ents, err := os.ReadDir(netns.Dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// TestVMStartupEndToEnd: testbed, daemon (real CP cgroup), the pipeline's
// processes placed in the pool, 2 VMs under static; afterwards no
// namespace, qdisc, rule (they live in the namespaces), state file or
// cgroup of the run remains.
func TestVMStartupEndToEnd(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		testenv.Require(t, "needs cgroups")
	}
	exe, _ := os.Executable()
	prefix := fmt.Sprintf("tee%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := StartBench(ctx, BenchOptions{Prefix: prefix, InProcessLoops: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.Env.GoHelper = []string{exe}
	b.Env.GoHelperEnv = []string{helperEnv + "=1"}
	group := b.Daemon.Config().VCPU.CgroupName
	workDir := b.workDir

	rep, err := RunVMStartup(ctx, b.Env, VMStartupConfig{VMs: []int{2}, Policies: []scheduler.PolicyName{"static"}, Work: 0.2, FailVM: -1})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	if r.Error != "" || r.VMsOK != 2 || r.StartupMS.P50 <= 0 {
		t.Fatalf("run: %+v", r)
	}
	if r.CPCPUS <= 0 {
		t.Errorf("CP pool accounted %v CPU seconds for the pipeline; its processes were not placed", r.CPCPUS)
	}
	if r.LentS != 0 {
		t.Errorf("static lent %v s", r.LentS)
	}
	checkDaemonCPU(t, "static", r)
	out := t.TempDir()
	if _, err := WriteFiles(out, rep); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(out, "vm-startup.json"))
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Runs) != 1 {
		t.Fatalf("json: %v", err)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, prefix)
	if _, err := os.Stat(workDir); err == nil {
		t.Errorf("work dir %s left behind", workDir)
	}
	for _, ctrl := range []string{"cpuset", "cpu", "cpuacct", "unified"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, group)); err == nil {
			t.Errorf("cgroup %s/%s left behind", ctrl, group)
		}
	}
}
