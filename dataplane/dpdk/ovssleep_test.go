package dpdk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane/ovs"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// With ovs_pmd_maxsleep, a Manager adopting ovs-vswitchd (a private OVS)
// makes OVS busy-poll while lending is off, sleep the configured time
// while it is on, and puts OVS's own setting back on Release.
func TestManagerGovernsOVSMaxSleep(t *testing.T) {
	testenv.NeedRoot(t, "ovs-vswitchd-dpdk, cgroups")
	if _, err := os.Stat(ovs.VswitchdBinary); err != nil {
		testenv.Require(t, "ovs-vswitchd-dpdk not installed (Debian package openvswitch-switch-dpdk)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := ovs.Start(ctx, ovs.Options{Name: fmt.Sprintf("tsleep%d", os.Getpid()),
		RunDir: filepath.Join(t.TempDir(), "ovs"), PMDCPUs: []int{1}, LcoreCPUs: []int{0}, MaxSleep: 300 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Stop() })
	db := inst.DB()
	sleepIs := func(want time.Duration) func() bool {
		return func() bool {
			d, set, err := db.MaxSleep(ctx)
			return err == nil && set && d == want
		}
	}
	if !sleepIs(300 * time.Microsecond)() {
		t.Fatal("the instance did not start with its own 300µs sleep")
	}

	m, err := New(Config{Name: "ovs", PID: inst.PID(), ThreadPattern: ovs.PMDThreadPattern, CPUs: []int{1}, Priority: 10,
		OVSPMDMaxSleep: 50 * time.Microsecond, OVSDB: db.Socket})
	if err != nil {
		t.Fatal(err)
	}
	// Whatever fails below, the per-core group and its RT budget go: a
	// group left behind holds the budget every later group needs.
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "busy polling while nothing may be lent", sleepIs(0))
	if err := m.SetLending(true); err != nil {
		t.Fatal(err)
	}
	// The status follows the write: wait for both.
	waitFor(t, "the configured sleep while lending is on, written and reported", func() bool {
		st := m.Status().OVSMaxSleep
		return sleepIs(50*time.Microsecond)() && st != nil && st.AppliedUs == 50
	})
	if st := m.Status().OVSMaxSleep; st.Error != "" {
		t.Fatalf("status %+v", st)
	}
	if err := m.SetLending(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "busy polling again", sleepIs(0))
	if err := m.Release(); err != nil {
		t.Fatal(err)
	}
	if !sleepIs(300 * time.Microsecond)() {
		d, set, err := db.MaxSleep(ctx)
		t.Fatalf("after Release: pmd-maxsleep %v (set %v, %v), want OVS's own 300µs back", d, set, err)
	}
}

func TestValidateOVSMaxSleep(t *testing.T) {
	for _, c := range []struct {
		sleep time.Duration
		db    string
		bad   string
	}{
		{0, "", ""},
		{50 * time.Microsecond, "/run/openvswitch/db.sock", ""},
		{50 * time.Microsecond, "", "ovs_db"},
		{20 * time.Millisecond, "/run/openvswitch/db.sock", "ovs_pmd_maxsleep"},
		{-time.Microsecond, "", "ovs_pmd_maxsleep"},
		{0, "db.sock", "ovs_db"},
	} {
		cfg := Config{Name: "ovs", PID: 42, CPUs: []int{1}, Priority: 50, OVSPMDMaxSleep: c.sleep, OVSDB: c.db}
		err := cfg.Validate()
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%v %q: %v", c.sleep, c.db, err)
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("%v %q: error %v, want one naming %s", c.sleep, c.db, err, c.bad)
		}
	}
}
