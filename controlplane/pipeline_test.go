package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// The test binary doubles as the Go helper when this variable is set.
const helperEnv = "TAICHI_CP_HELPER_TEST"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(HelperMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func testOptions(t *testing.T) Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Prefix:      fmt.Sprintf("tcp%d%s", os.Getpid(), strings.ToLower(t.Name()[4:7])),
		StateDir:    filepath.Join(t.TempDir(), "state"),
		GoHelper:    []string{exe},
		GoHelperEnv: []string{helperEnv + "=1"},
		Work:        0.2,
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces, veth pairs, tc and nft rules")
	for tool, pkg := range map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "bash": "bash"} {
		testenv.NeedTool(t, tool, pkg)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := Options{Prefix: "x", StateDir: "/tmp/x", GoHelper: []string{"/bin/true"}}
	cases := map[string]func(o *Options){
		"Prefix":   func(o *Options) { o.Prefix = "" },
		"StateDir": func(o *Options) { o.StateDir = "" },
		"GoHelper": func(o *Options) { o.GoHelper = nil },
		"Work":     func(o *Options) { o.Work = -1 },
	}
	for field, mutate := range cases {
		o := good
		mutate(&o)
		_, err := New(o)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want an error naming %s", field, err, field)
		}
	}
}

func TestHelperConfigRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm-3.json")
	cfg := VMConfig{VM: 3, Size: 2, NetNS: "p-vm-3", MAC: "02:7c:00:00:00:03", MTU: 1500, Address: "10.200.0.14/30", Gateway: "10.200.0.13"}
	b, _ := json.Marshal(cfg)
	var out, errOut bytes.Buffer
	if code := HelperMain([]string{"config", path}, bytes.NewReader(b), &out, &errOut); code != 0 {
		t.Fatalf("config: exit %d: %s", code, errOut.String())
	}
	var got VMConfig
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &got); err != nil || got != cfg {
		t.Fatalf("read back %+v (%v), want %+v", got, err, cfg)
	}
	errOut.Reset()
	if code := HelperMain([]string{"config", path}, strings.NewReader(`{"vm":1,"bogus":2}`), &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "bogus") {
		t.Fatalf("unknown key accepted: exit %d, %q", code, errOut.String())
	}
	if code := HelperMain([]string{"spin", "0"}, nil, &out, &errOut); code == 0 {
		t.Fatal("spin 0 accepted")
	}
	if code := HelperMain([]string{"mmap", "1", "1"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("mmap 1 1: exit %d: %s", code, errOut.String())
	}
}

// TestPipelineCreatesAndRemovesEverything runs two VMs through every step with
// a Placer and checks what each step left in the kernel and the state dir,
// then that Teardown removes all of it.
func TestPipelineCreatesAndRemovesEverything(t *testing.T) {
	needRoot(t)
	opts := testOptions(t)
	var mu sync.Mutex
	var placed []int
	opts.Placer = PlacerFunc(func(pid int) error {
		// The process must still be held at the gate (our shell), not running its program.
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			return err
		}
		if c := strings.TrimSpace(string(comm)); c != "sh" && c != "dash" && c != "bash" {
			return fmt.Errorf("pid %d runs %q before placement", pid, c)
		}
		mu.Lock()
		placed = append(placed, pid)
		mu.Unlock()
		return nil
	})
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Teardown() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := p.Start(ctx, []VM{{ID: 1, Size: 1}, {ID: 2, Size: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.OK {
			t.Fatalf("vm %d failed at %s: %s", r.ID, r.Failed, r.Error)
		}
		if r.StartupMS <= 0 || len(r.Steps) != len(DefaultSteps()) {
			t.Errorf("vm %d: startup %v ms, %d steps", r.ID, r.StartupMS, len(r.Steps))
		}
	}
	if len(placed) < 2*len(DefaultSteps()) {
		t.Errorf("placer saw %d processes, want at least one per step per VM (%d)", len(placed), 2*len(DefaultSteps()))
	}

	check := func(want string, argv ...string) {
		t.Helper()
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%v: want %q in output, got %v:\n%s", argv, want, err, out)
		}
	}
	check("10.200.0.10/30", "ip", "-n", p.VMNS(2), "addr", "show", "eth0")
	check("default via 10.200.0.9", "ip", "-n", p.VMNS(2), "route")
	check("htb", "tc", "-n", p.HostNS(), "qdisc", "show", "dev", "vp2")
	check("tbf", "tc", "-n", p.VMNS(2), "qdisc", "show", "dev", "eth0")
	out, _ := exec.Command("tc", "-n", p.HostNS(), "filter", "show", "dev", "vp2").Output()
	small, _ := exec.Command("tc", "-n", p.HostNS(), "filter", "show", "dev", "vp1").Output()
	if n, m := strings.Count(string(out), "flowid"), strings.Count(string(small), "flowid"); n == 0 || n <= m {
		t.Errorf("flow rules: size-2 VM has %d, size-1 VM has %d; want more for the bigger VM", n, m)
	}
	check("secgroup", "ip", "netns", "exec", p.VMNS(1), "nft", "list", "ruleset")
	raw, err := os.ReadFile(filepath.Join(p.StateDir(), "vms", "vm-2.json"))
	if err != nil || !strings.Contains(string(raw), p.VMNS(2)) {
		t.Errorf("vm-2 config: %v %s", err, raw)
	}

	if err := p.Teardown(); err != nil {
		t.Fatal(err)
	}
	if left := p.Leftovers(); len(left) != 0 {
		t.Fatalf("after teardown still present: %v", left)
	}
}

// TestFailingStepMarksOnlyThatVM: a VM whose vport request is invalid fails
// at that step with the kernel's reason; the other VM of the batch completes.
func TestFailingStepMarksOnlyThatVM(t *testing.T) {
	needRoot(t)
	p, err := New(testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Teardown() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := p.Start(ctx, []VM{{ID: 0}, {ID: 7, MTU: 1 << 20}, {ID: 9}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].OK || !res[2].OK {
		t.Fatalf("healthy VMs failed: %+v / %+v", res[0], res[2])
	}
	bad := res[1]
	if bad.OK || bad.Failed != "vport" || !strings.Contains(strings.ToLower(bad.Error), "mtu") {
		t.Fatalf("bad VM: ok=%v failed=%q error=%q; want failure at vport naming the mtu", bad.OK, bad.Failed, bad.Error)
	}
	if len(bad.Steps) != 1 {
		t.Errorf("bad VM ran %d steps after failing, want to stop at the first", len(bad.Steps))
	}
	if err := p.Teardown(); err != nil {
		t.Fatal(err)
	}
	if left := p.Leftovers(); len(left) != 0 {
		t.Fatalf("after teardown still present: %v", left)
	}
}

// TestPlacerRefusalFailsStepWithoutRunning: when the pool refuses a pid, the
// program never runs and the step fails naming the placement.
func TestPlacerRefusalFailsStepWithoutRunning(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	p := &Pipeline{opts: Options{Placer: PlacerFunc(func(int) error { return fmt.Errorf("pool full") })}}
	_, err := p.Exec(context.Background(), "", "touch", marker)
	if err == nil || !strings.Contains(err.Error(), "pool full") {
		t.Fatalf("got %v, want the placement error", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("program ran although placement failed")
	}
}
