package main

import (
	"slices"
	"strings"
	"testing"
)

// Verbose output as go test -test.v streams it: messages before the end
// line, subtests' end lines after their parent's.
const verboseRun = `=== RUN   TestXDPReflects
=== RUN   TestXDPReflects/auto
    loop_test.go:317: report: {Sent:5000}
=== RUN   TestXDPReflects/head
=== RUN   TestXDPReflects/meta
    loop_test.go:304: this kernel refuses bpf_xdp_adjust_meta in XDP programs: the head path runs instead (subtest head)
--- PASS: TestXDPReflects (6.64s)
    --- PASS: TestXDPReflects/auto (2.53s)
    --- PASS: TestXDPReflects/head (2.24s)
    --- SKIP: TestXDPReflects/meta (0.02s)
=== RUN   TestOther
    other_test.go:12: strict ($TAICHI_TEST_STRICT=1): needs CPU 1
--- FAIL: TestOther (0.00s)
FAIL
`

func TestParseVerbose(t *testing.T) {
	got := parseVerbose(strings.NewReader(verboseRun))
	want := []testResult{
		{Name: "TestXDPReflects", Outcome: "PASS", Seconds: "6.64"},
		{Name: "TestXDPReflects/auto", Outcome: "PASS", Seconds: "2.53", Reason: "report: {Sent:5000}"},
		{Name: "TestXDPReflects/head", Outcome: "PASS", Seconds: "2.24"},
		{Name: "TestXDPReflects/meta", Outcome: "SKIP", Seconds: "0.02", Reason: "this kernel refuses bpf_xdp_adjust_meta in XDP programs: the head path runs instead (subtest head)"},
		{Name: "TestOther", Outcome: "FAIL", Seconds: "0.00", Reason: "strict ($TAICHI_TEST_STRICT=1): needs CPU 1"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parseVerbose:\n got %+v\nwant %+v", got, want)
	}
}

// console is a guest's log: kernel noise, raw test output and KM lines.
func console(lines ...string) string {
	return "[    0.000000] Booting Linux\r\n----- probe output -----\n--- FAIL: TestNoise (0.00s)\n----- end probe -----\n" +
		strings.Join(lines, "\n") + "\n"
}

var (
	config612 = "CONFIG_CPUSETS=y\n# CONFIG_CPUSETS_V1 is not set\nCONFIG_PREEMPT_VOLUNTARY=y\n"
	config61  = "CONFIG_CPUSETS=y\nCONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_VOLUNTARY=y\n"
)

func run(t *testing.T, cfg string, lines ...string) *guestRun {
	t.Helper()
	g := parseConsole("arm64-6.12", strings.NewReader(console(lines...)))
	g.config = parseConfig(strings.NewReader(cfg))
	return g
}

var passingGuest = []string{
	"\x1bc\x1b[?7l\x1b[2JKM-INFO release 6.12.118+deb12-arm64",
	"KM-INFO arch arm64",
	"KM-TEST probe TestXDPCountsEqualPacketsSent PASS 1.2s",
	"KM-STEP probe PASS 3s",
	"KM-STEP tracer PASS 10s",
	"KM-STEP confine-v1 SKIP " + noCpusetV1 + ": mount -t cgroup cpuset /sys/fs/cgroup/cpuset: no such device",
	"KM-STEP coreyield PASS 1s",
	"KM-TEST afxdp TestXDPReflects/meta SKIP 0.02s: this kernel refuses bpf_xdp_adjust_meta in XDP programs",
	"KM-STEP afxdp PASS 20s",
	"KM-STEP dploop PASS 9s",
	"KM-STEP module PASS 4s",
	"KM-STEP confine-v2 PASS 3s",
	"KM-STEP coreyield-v2 PASS 5s",
	"KM-VERDICT PASS",
}

func TestReportAcceptsTheKernelsOwnLimits(t *testing.T) {
	g := run(t, config612, passingGuest...)
	if p := g.problems(); len(p) != 0 {
		t.Fatalf("problems on a kernel without v1 cpuset and adjust_meta: %q", p)
	}
	var b strings.Builder
	writeTable(&b, []*guestRun{g})
	for _, want := range []string{
		"| 6.12.118+deb12-arm64 | arm64 | voluntary | ok | ok; confines in v2 | xdp-head | ok | ok; v1 + cgroup2 | ok | pass |",
		"CONFIG_CPUSETS_V1 unset", "xdp-head)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// The same v1 cpuset skip on a kernel whose config has it is a failure.
func TestReportFailsASkipTheKernelShouldSupport(t *testing.T) {
	g := run(t, config61, passingGuest...)
	p := g.problems()
	if len(p) != 1 || !strings.Contains(p[0], "confine-v1: skipped on a kernel that should support it") {
		t.Fatalf("problems = %q, want the v1 cpuset skip only", p)
	}
	if g.preempt() != "dynamic" {
		t.Errorf("preempt = %q, want dynamic", g.preempt())
	}
}

func TestReportFailures(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func([]string) []string
		wants string
	}{
		{"no verdict", func(l []string) []string { return l[:len(l)-1] }, "no verdict"},
		{"failed test", func(l []string) []string {
			return append(l, "KM-TEST probe TestXDPWakesBlockedWaiterBeforeSocket FAIL 2.0s: no wake")
		}, "probe TestXDPWakesBlockedWaiterBeforeSocket: FAIL 2.0s: no wake"},
		{"unexplained skip", func(l []string) []string {
			return append(l, "KM-TEST tracer TestTracerNamesKernelStorm SKIP 0.0s: no BTF")
		}, "tracer TestTracerNamesKernelStorm: skipped on a kernel that should support it"},
		{"failed step", func(l []string) []string { return append(l, "KM-STEP cgroup-v2 FAIL controllers") }, "cgroup-v2: FAIL controllers"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := run(t, config612, c.edit(slices.Clone(passingGuest))...)
			p := g.problems()
			if len(p) != 1 || !strings.Contains(p[0], c.wants) {
				t.Fatalf("problems = %q, want one naming %q", p, c.wants)
			}
		})
	}
}
