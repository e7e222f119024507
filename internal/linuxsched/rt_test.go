package linuxsched

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestRTThrottlingShare(t *testing.T) {
	if s := (RTThrottling{RuntimeUS: 950000, PeriodUS: 1000000}).Share(); s != 0.95 {
		t.Errorf("default share %v, want 0.95", s)
	}
	if off := (RTThrottling{RuntimeUS: -1, PeriodUS: 1000000}); off.On() || off.Share() != 1 {
		t.Errorf("-1: on %v share %v, want off and 1", off.On(), off.Share())
	}
}

func TestReadRTThrottling(t *testing.T) {
	got, err := ReadRTThrottling()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/sched_rt_runtime_us")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); got.RuntimeUS != want || got.PeriodUS <= 0 {
		t.Fatalf("read %+v, runtime file says %d", got, want)
	}
}
