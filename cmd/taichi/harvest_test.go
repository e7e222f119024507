package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// Harvest is counted from the daemon's own start: a restarted daemon does
// not report the CP time earlier runs harvested (the pool group, and its
// usage counter, outlive a daemon).
func TestHarvestCountsFromThisRun(t *testing.T) {
	needRootCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("cphv%d", os.Getpid()%100000)
	e := newDaemonEnv(t, "dynamic", "^"+name+"$")
	withTestbedLoop(t, ctx, e, "h", "hdp")
	spawnCP(t, name)
	d := e.start(t)
	// No traffic: the idle loop's core is lent and the hog runs there.
	waitForEvery(t, "50 ms of CP time harvested on the DP core", 30*time.Second, 100*time.Millisecond, func() bool {
		return e.status(t).Pool.HarvestedCPSeconds >= 0.05
	})
	first := e.status(t).Pool.HarvestedCPSeconds
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	d = e.start(t)
	defer func() { d.Process.Signal(syscall.SIGTERM); d.Wait() }()
	if again := e.status(t).Pool.HarvestedCPSeconds; again < 0 || again >= first {
		t.Fatalf("harvest right after a restart: %.3fs, the run before ended at %.3fs: counted across runs", again, first)
	} else {
		t.Logf("harvest: %.3fs before the restart, %.3fs right after", first, again)
	}
}
