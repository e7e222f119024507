package vcpu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
	"golang.org/x/sys/unix"
)

// inGroup reports whether /proc/PID/cgroup names group as the process's
// cgroup in at least one hierarchy.
func inGroup(t testing.TB, pid int, group string) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasSuffix(line, ":/"+group) {
			return true
		}
	}
	return false
}

// TestConfineRelease: a confined member runs on the CP cores only while the
// rest of the pool borrows the DP core, keeps the CP class, is untouched by
// Lend and Reclaim, and returns to the pool on Release.
func TestConfineRelease(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	hogs := adoptHogs(t, p, 2)
	blocker, other := hogs[0], hogs[1]
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	ok, err := p.Confine(blocker)
	if !ok || err != nil {
		t.Fatalf("Confine(%d) = %v, %v", blocker, ok, err)
	}
	if !inGroup(t, blocker, ConfinedName(p.opts.Name)) {
		t.Fatalf("pid %d not in %s after Confine", blocker, ConfinedName(p.opts.Name))
	}
	if got := allowedCPUs(t, blocker); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("confined pid %d allowed %v, want [%d]", blocker, got, cpCore)
	}
	if got := allowedCPUs(t, other); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("unconfined pid %d allowed %v, want [%d %d]", other, got, cpCore, dpCore)
	}
	if c, err := p.Confined(); err != nil || !slices.Equal(c, []int{blocker}) {
		t.Fatalf("Confined() = %v, %v; want [%d]", c, err, blocker)
	}
	if m, err := p.Members(); err != nil || slices.Contains(m, blocker) {
		t.Fatalf("Members() = %v, %v; want it without the confined %d", m, err, blocker)
	}
	if ok, err := p.Confine(blocker); !ok || err != nil {
		t.Fatalf("second Confine = %v, %v; want true, nil", ok, err)
	}
	// A rescan whose selector matches it again leaves it confined.
	if n, err := p.Adopt([]int{blocker, other}); n != 1 || err != nil {
		t.Fatalf("Adopt(confined, member) = %d, %v; want 1 (the member), nil", n, err)
	}
	if c, err := p.Confined(); err != nil || !slices.Equal(c, []int{blocker}) {
		t.Fatalf("Confined() after a re-adopt = %v, %v; want [%d]", c, err, blocker)
	}
	// The pool's cpuset writes leave the confined group alone.
	if err := p.Reclaim(dpCore); err != nil {
		t.Fatal(err)
	}
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if got := allowedCPUs(t, blocker); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("confined pid %d allowed %v after Reclaim+Lend, want [%d]", blocker, got, cpCore)
	}
	requireRunning(t, blocker)

	if err := p.Release(blocker); err != nil {
		t.Fatal(err)
	}
	if got := allowedCPUs(t, blocker); !slices.Equal(got, []int{cpCore, dpCore}) {
		t.Fatalf("released pid %d allowed %v, want [%d %d]", blocker, got, cpCore, dpCore)
	}
	if c, err := p.Confined(); err != nil || len(c) != 0 {
		t.Fatalf("Confined() after Release = %v, %v; want none", c, err)
	}
	if err := p.Release(blocker); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

// TestConfineRefusals: processes outside the pool are not confined (that
// would adopt them), vanished ones are not an error.
func TestConfineRefusals(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	outsider := startChild(t, uniqueName(t)+"-out", "sleep")
	ok, err := p.Confine(outsider)
	var skip *SkipError
	if ok || !errors.As(err, &skip) || !strings.Contains(skip.Reason, "not in the CP pool") {
		t.Fatalf("Confine(outsider) = %v, %v; want a SkipError: not in the CP pool", ok, err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.Confine(gone.Process.Pid); ok || err != nil {
		t.Fatalf("Confine(exited) = %v, %v; want false, nil", ok, err)
	}
	if err := p.Release(gone.Process.Pid); err != nil {
		t.Fatalf("Release(exited) = %v", err)
	}
	if ok, err := p.Confine(os.Getpid()); ok || err == nil {
		t.Fatalf("Confine(self) = %v, %v; want a refusal", ok, err)
	}
}

// TestConfinedChildrenFollow: a process forked by a confined one starts in
// the confined group, on the CP cores, even while the DP core is lent.
func TestConfinedChildrenFollow(t *testing.T) {
	requireCgroups(t)
	p := startPool(t, Options{})
	parent := startParent(t)
	if n, err := p.Adopt([]int{parent.pid}); n != 1 || err != nil {
		t.Fatalf("Adopt(parent) = %d, %v", n, err)
	}
	if err := p.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.Confine(parent.pid); !ok || err != nil {
		t.Fatalf("Confine(parent) = %v, %v", ok, err)
	}
	kid := parent.fork()
	if c, err := p.Confined(); err != nil || !slices.Contains(c, kid) {
		t.Fatalf("Confined() = %v, %v; want the child %d forked while confined", c, err, kid)
	}
	if got := allowedCPUs(t, kid); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("child of a confined process allowed %v, want [%d]", got, cpCore)
	}
}

// TestConfinedReleasedOnRestartAndDestroy: a run killed with processes
// confined leaves them on the CP cores; the next Start puts them back into
// the pool, and Destroy removes the confined group with the pool's.
func TestConfinedReleasedOnRestartAndDestroy(t *testing.T) {
	m := requireCgroups(t)
	name := uniqueName(t)
	first, err := newCgroupPool(Options{Name: name, CPCores: []int{cpCore}, DPCores: []int{dpCore}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DestroyGroup(name, nil) })
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	hogs := adoptHogs(t, first, 1)
	if err := first.Lend(dpCore); err != nil {
		t.Fatal(err)
	}
	if ok, err := first.Confine(hogs[0]); !ok || err != nil {
		t.Fatalf("Confine = %v, %v", ok, err)
	}
	first.abandon() // killed: nothing released
	if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, []int{cpCore}) {
		t.Fatalf("confined pid allowed %v after the daemon died, want [%d]", got, cpCore)
	}

	second := startPool(t, Options{Name: name})
	if c, err := second.Confined(); err != nil || len(c) != 0 {
		t.Fatalf("Confined() after restart = %v, %v; want none", c, err)
	}
	if members, err := second.Members(); err != nil || !slices.Contains(members, hogs[0]) {
		t.Fatalf("Members() after restart = %v, %v; want the released %d", members, err, hogs[0])
	}
	if ok, err := second.Confine(hogs[0]); !ok || err != nil {
		t.Fatalf("Confine after restart = %v, %v", ok, err)
	}
	if err := second.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{m.CPUSet, m.CPU, m.CPUAcct, m.Unified} {
		if root != "" && exists(filepath.Join(root, ConfinedName(name))) {
			t.Fatalf("%s still exists after Destroy", filepath.Join(root, ConfinedName(name)))
		}
	}
	if got := allowedCPUs(t, hogs[0]); !slices.Equal(got, allOnline(t)) {
		t.Fatalf("formerly confined pid allowed %v after Destroy, want all online CPUs", got)
	}
	requireRunning(t, hogs[0])
}

// TestConfinementKeepsCPsWeight: confining narrows CP, it does not widen
// it. On the CP core, a task outside CP keeps the share it has against the
// pool alone (half, at CP weight 100: as much as a nice-0 task) while one of
// two pool hogs is confined: the pool's group and the confined group share
// the pool's weight. (As two full-weight siblings they left it a third.)
// Released, the pool's group has its whole weight back.
func TestConfinementKeepsCPsWeight(t *testing.T) {
	requireCgroups(t)
	testenv.SkipIfEmulated(t, "CPU shares between real processes")
	p := startPool(t, Options{Class: ClassLowWeight, Weight: 100})
	hogs := adoptHogs(t, p, 2)
	outside := startChild(t, uniqueName(t)+"-out", "hog")
	var set unix.CPUSet
	set.Set(cpCore)
	if err := unix.SchedSetaffinity(outside, &set); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.Confine(hogs[0]); !ok || err != nil {
		t.Fatalf("Confine(%d) = %v, %v", hogs[0], ok, err)
	}
	share := cpuShare(t, outside, 2*time.Second)
	t.Logf("task outside CP on the CP core: %.2f of it, beside a pool hog and a confined one", share)
	if share < 0.42 {
		t.Errorf("outside task got %.2f of the CP core while a pool member was confined, want about 0.5 (0.33 if confinement doubled CP's weight)", share)
	}
	if err := p.Release(hogs[0]); err != nil {
		t.Fatal(err)
	}
	if got, want := poolWeight(t, p), poolWeightFile(p, 100); got != want {
		t.Errorf("pool's weight after the release %q, want %q (its whole weight)", got, want)
	}
}

// cpuShare is the share of a CPU pid used over d (user+system).
func cpuShare(t *testing.T, pid int, d time.Duration) float64 {
	t.Helper()
	c0, t0 := procStat(t, pid).CPUTime(), time.Now()
	time.Sleep(d)
	return (procStat(t, pid).CPUTime() - c0) / time.Since(t0).Seconds()
}

// poolWeight reads the pool group's weight file; poolWeightFile is what it
// holds at weight w on this layout.
func poolWeight(t *testing.T, p *cgroupPool) string {
	t.Helper()
	var path string
	switch h := p.h.(type) {
	case *cgroupV1:
		path = filepath.Join(h.cpuDir, "cpu.shares")
	case *cgroupV2:
		path = filepath.Join(h.dir, "cpu.weight")
	}
	v, err := readString(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func poolWeightFile(p *cgroupPool, w int) string {
	if _, ok := p.h.(*cgroupV1); ok {
		return strconv.Itoa(weightToShares(w))
	}
	return strconv.Itoa(w)
}
