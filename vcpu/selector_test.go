package vcpu

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestSelectorMatches(t *testing.T) {
	v1 := func(path string) []procfs.Cgroup {
		return []procfs.Cgroup{
			{HierarchyID: 3, Controllers: []string{"cpuset"}, Path: "/"},
			{HierarchyID: 9, Controllers: []string{"name=systemd"}, Path: path},
		}
	}
	v2 := func(path string) []procfs.Cgroup { return []procfs.Cgroup{{HierarchyID: 0, Path: path}} }
	ovs := procInfo{pid: 100, comm: "ovs-vswitchd", argv0: "ovs-vswitchd", cgroups: v1("/system.slice/ovs-vswitchd.service")}
	py := procInfo{pid: 200, comm: "python3", argv0: "vm-agent", cgroups: v2("/machine.slice/agent.scope/sub")}
	docker := procInfo{pid: 300, comm: "nginx", argv0: "nginx", cgroups: []procfs.Cgroup{{HierarchyID: 4, Controllers: []string{"memory"}, Path: "/docker/abc"}}}

	cases := []struct {
		name string
		sel  Selector
		p    procInfo
		want bool
	}{
		{"empty selector", Selector{}, ovs, false},
		{"pid", Selector{PIDs: []int{100}}, ovs, true},
		{"other pid", Selector{PIDs: []int{101}}, ovs, false},
		{"comm regex", Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^ovs-`)}}, ovs, true},
		{"argv0 regex", Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^vm-agent$`)}}, py, true},
		{"regex no match", Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^java$`)}}, py, false},
		{"unit v1", Selector{Units: []string{"ovs-vswitchd.service"}}, ovs, true},
		{"slice v1", Selector{Units: []string{"system.slice"}}, ovs, true},
		{"slice v2", Selector{Units: []string{"machine.slice"}}, py, true},
		{"unit prefix is not a component", Selector{Units: []string{"ovs"}}, ovs, false},
		{"unit only on systemd hierarchy", Selector{Units: []string{"docker"}}, docker, false},
		{"cgroup exact", Selector{Cgroups: []string{"/docker/abc"}}, docker, true},
		{"cgroup parent", Selector{Cgroups: []string{"/docker"}}, docker, true},
		{"cgroup sibling prefix", Selector{Cgroups: []string{"/docker/ab"}}, docker, false},
		{"cgroup below", Selector{Cgroups: []string{"/machine.slice/agent.scope"}}, py, true},
		{"any field", Selector{PIDs: []int{1}, Units: []string{"x.service"}, Cgroups: []string{"/docker"}}, docker, true},
	}
	for _, c := range cases {
		if got := c.sel.matches(c.p); got != c.want {
			t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSelectorValidate(t *testing.T) {
	good := Selector{Units: []string{"a.service"}, Cgroups: []string{"/x"}, Commands: []*regexp.Regexp{regexp.MustCompile("x")}, PIDs: []int{5}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid selector: %v", err)
	}
	bad := []struct {
		sel  Selector
		want string
	}{
		{Selector{Units: []string{""}}, "units[0]"},
		{Selector{Units: []string{"a/b"}}, "units[0]"},
		{Selector{Cgroups: []string{"/ok", "relative"}}, "cgroups[1]"},
		{Selector{Commands: []*regexp.Regexp{nil}}, "commands[0]"},
		{Selector{PIDs: []int{0}}, "pids[0]"},
	}
	for _, b := range bad {
		err := b.sel.Validate()
		if err == nil || !regexp.MustCompile(regexp.QuoteMeta(b.want)).MatchString(err.Error()) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", b.sel, err, b.want)
		}
	}
}

// TestScanFindsChild scans the real /proc for a child started under a
// unique argv[0] and never lists the scanning process itself.
func TestScanFindsChild(t *testing.T) {
	name := uniqueName(t)
	child := startChild(t, name, "sleep")
	pids, err := Scan(Selector{Commands: []*regexp.Regexp{regexp.MustCompile("^" + regexp.QuoteMeta(name) + "$")}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{child}) {
		t.Fatalf("Scan by argv[0] %q = %v, want [%d]", name, pids, child)
	}
	self, err := Scan(Selector{PIDs: []int{os.Getpid(), child}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(self, []int{child}) {
		t.Fatalf("Scan by pids = %v, want only the child %d (never the caller)", self, child)
	}
	kthreads, err := Scan(Selector{PIDs: []int{2}, Commands: []*regexp.Regexp{regexp.MustCompile(`^kthreadd$`)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(kthreads) != 0 {
		t.Fatalf("Scan listed kernel threads: %v", kthreads)
	}
}

// startChild re-executes the test binary as a child with argv[0] = name in
// a helper mode ("hog": spin for at most a minute; "sleep": sleep for half a
// minute) and returns its pid; the child dies at the end of the test.
func startChild(t testing.TB, name, mode string) int {
	t.Helper()
	cmd := testenv.Command(os.Args[0], "-test.run=^$")
	cmd.Args[0] = name
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitForArgv0(t, cmd.Process.Pid, name)
	return cmd.Process.Pid
}

// waitForArgv0 waits until pid's /proc cmdline shows argv[0] = name. Start
// returns once the exec has begun, but the kernel fills in the new command
// line a little later (it can read empty in between), so a Scan right after
// Start may miss the child.
func waitForArgv0(t testing.TB, pid int, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a cap for a broken child, not a wait
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatalf("child %d (%s): %v", pid, name, err)
		}
		if argv0, _, _ := strings.Cut(string(b), "\x00"); argv0 == name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d never showed argv[0] %q (cmdline %q)", pid, name, b)
		}
		runtime.Gosched()
	}
}

// TestStartChildIsScannableAtOnce: every child startChild returns already
// shows its name, which is what Scan matches. Exec publishes the command
// line after Start returns (it reads empty for a moment, seen in a few
// percent of starts here), so without the wait this fails within 100
// children.
func TestStartChildIsScannableAtOnce(t *testing.T) {
	for i := range 100 {
		name := fmt.Sprintf("%s-%d", uniqueName(t), i)
		pid := startChild(t, name, "sleep")
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if argv0, _, _ := strings.Cut(string(b), "\x00"); err != nil || argv0 != name {
			t.Fatalf("child %d right after startChild: cmdline %q, %v; want argv[0] %q", i, b, err, name)
		}
		if i == 0 {
			if got, err := Scan(Selector{Commands: []*regexp.Regexp{byName(name)}}); err != nil || !slices.Equal(got, []int{pid}) {
				t.Fatalf("Scan(%q) = %v, %v; want [%d]", name, got, err, pid)
			}
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
