package linuxsched

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RTThrottling is the kernel's global RT throttling: SCHED_FIFO and
// SCHED_RR threads together may run RuntimeUS of every PeriodUS on a CPU
// (kernel.sched_rt_runtime_us and sched_rt_period_us); RuntimeUS -1 turns
// it off.
type RTThrottling struct {
	RuntimeUS, PeriodUS int64
}

// On reports whether a real-time thread that never sleeps is stopped for
// part of every period.
func (t RTThrottling) On() bool { return t.RuntimeUS >= 0 && t.PeriodUS > 0 }

// Share is the fraction of a CPU a busy real-time thread gets: 1 when
// throttling is off.
func (t RTThrottling) Share() float64 {
	if !t.On() {
		return 1
	}
	return min(1, float64(t.RuntimeUS)/float64(t.PeriodUS))
}

// ReadRTThrottling reads the RT throttling sysctls.
func ReadRTThrottling() (RTThrottling, error) {
	var t RTThrottling
	for _, f := range []struct {
		name string
		v    *int64
	}{{"sched_rt_runtime_us", &t.RuntimeUS}, {"sched_rt_period_us", &t.PeriodUS}} {
		b, err := os.ReadFile("/proc/sys/kernel/" + f.name)
		if err != nil {
			return RTThrottling{}, fmt.Errorf("RT throttling: %w", err)
		}
		if *f.v, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return RTThrottling{}, fmt.Errorf("RT throttling: kernel.%s: %w", f.name, err)
		}
	}
	return t, nil
}
