package dpdk

import (
	"os"
	"slices"
	"testing"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// waitState reports whether tid on cpu is in state st as m's mechanism
// makes it: the class, and with a group, membership and the group's idleness.
func inState(m *Manager, tid, cpu int, st coreyield.State) (bool, string) {
	c, err := linuxsched.Get(tid)
	if err != nil {
		return false, err.Error()
	}
	aff, _ := linuxsched.Affinity(tid)
	want := m.yield.Mechanism().Class(st, m.cfg.Priority)
	if c != want || !slices.Equal(aff, []int{cpu}) {
		return false, "class " + c.String() + " want " + want.String()
	}
	g, ok := m.yield.Group(cpu)
	if !ok {
		return true, ""
	}
	cg, err := m.yield.CgroupOf(tid)
	if err != nil {
		return false, err.Error()
	}
	if cg != "/"+coreyield.GroupName(m.yieldPrefix, cpu) {
		return false, "cpu cgroup " + cg
	}
	lent, err := g.IsLent()
	if err != nil || lent != (st == coreyield.Lent) {
		return false, "group idleness wrong"
	}
	return true, ""
}

func assertState(t testing.TB, m *Manager, tid, cpu int, st coreyield.State) {
	t.Helper()
	if ok, why := inState(m, tid, cpu, st); !ok {
		t.Fatalf("tid %d on CPU %d not %s (%s): %s", tid, cpu, st, m.yield.Mechanism(), why)
	}
}

// assertReleased checks tid is where it would be without taichi: SCHED_OTHER
// nice 0 in cpu cgroup home, and m's groups are gone.
func assertReleased(t testing.TB, m *Manager, tid int, home string) {
	t.Helper()
	if c, err := linuxsched.Get(tid); err != nil || c != linuxsched.Other(0) {
		t.Fatalf("released tid %d: class %s %v, want SCHED_OTHER", tid, c, err)
	}
	if m.yield.Mechanism() == coreyield.SchedIdle {
		return
	}
	cg, err := linuxsched.TaskCgroups(0, tid)
	if err != nil || cg.V1("cpu") != home {
		t.Fatalf("released tid %d: cpu cgroup %q %v, want %q", tid, cg.V1("cpu"), err, home)
	}
	for _, cpu := range m.cfg.CPUs {
		if g, ok := m.yield.Group(cpu); ok {
			if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
				t.Fatalf("group %s left behind: %v", g.Dir, err)
			}
		}
	}
}

// needGroups stops a test about the per-core group mechanism where the
// host has no v1 cpu hierarchy (a skip, a failure in strict mode), and
// fails it where the hierarchy exists but the groups could not be made:
// that is the mechanism under test breaking. The SchedIdle fallback has
// its own test (TestManagerDegradesToSchedIdle).
func needGroups(t testing.TB, m *Manager) {
	t.Helper()
	if mech := m.yield.Mechanism(); mech == coreyield.SchedIdle {
		if coreyield.GroupsPossible() {
			t.Fatalf("a v1 cpu hierarchy is mounted, yet the per-core groups failed: %s", m.yield.Reason())
		}
		testenv.Require(t, "no per-core cpu group here: %s", m.yield.Reason())
	}
}
