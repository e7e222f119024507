package ovs

import (
	"os/exec"
	"testing"
)

// BenchmarkPMDStats measures one PMDStats poll of a real ovs-vswitchd with
// one PMD (request, OVS formatting the statistics, parsing), over the
// Client's persistent connection, against spawning ovs-appctl for the
// same command.
//
// Run: go test -run '^$' -bench PMDStats ./dataplane/ovs/
func BenchmarkPMDStats(b *testing.B) {
	tb, inst, ctx := onTestbed(b)
	pa, pb := testPorts(tb)
	if err := inst.Patch(ctx, "br0", pa, pb); err != nil {
		b.Fatal(err)
	}
	waitPMDThreads(b, inst.PID(), 1)

	b.Run("client", func(b *testing.B) {
		c := NewClient(inst.UnixctlPath())
		defer c.Close()
		for b.Loop() {
			stats, err := c.PMDStats(ctx)
			if err != nil || len(stats) != 1 {
				b.Fatalf("%v, %v", stats, err)
			}
		}
	})
	b.Run("ovs-appctl", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.CommandContext(ctx, "ovs-appctl", "-t", inst.UnixctlPath(), "dpif-netdev/pmd-stats-show").Output()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ParsePMDStats(string(out)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
