package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// guestRun is what one kernel's guest printed (its KM- lines) plus the
// kernel's build config, which says what the kernel can support.
type guestRun struct {
	Name    string            `json:"kernel"` // the matrix row, e.g. "arm64 6.12"
	Info    map[string]string `json:"info"`   // KM-INFO key value
	Tests   []guestTest       `json:"tests"`
	Steps   []guestTest       `json:"steps"` // Name is empty
	Verdict string            `json:"verdict"`
	config  map[string]string // CONFIG_X -> y/m/value; "n" for "is not set"
}

// guestTest is a KM-TEST line (or a KM-STEP line, without a test name).
type guestTest struct {
	Feature string `json:"feature"`
	Name    string `json:"name,omitempty"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"` // duration, then a reason
}

// parseConsole reads a guest's console log.
func parseConsole(name string, r io.Reader) *guestRun {
	g := &guestRun{Name: name, Info: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		// The console may put terminal control sequences in front of a line.
		if i := strings.Index(line, "KM-"); i > 0 {
			line = line[i:]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case tagInfo:
			g.Info[f[1]] = strings.Join(f[2:], " ")
		case tagVerdict:
			g.Verdict = f[1]
		case tagTest:
			if len(f) >= 4 {
				g.Tests = append(g.Tests, guestTest{Feature: f[1], Name: f[2], Outcome: f[3], Detail: strings.Join(f[4:], " ")})
			}
		case tagStep:
			if len(f) >= 3 {
				g.Steps = append(g.Steps, guestTest{Feature: f[1], Outcome: f[2], Detail: strings.Join(f[3:], " ")})
			}
		}
	}
	return g
}

// parseConfig reads a kernel's build config (/boot/config-<ver>).
func parseConfig(r io.Reader) map[string]string {
	cfg := map[string]string{}
	notSet := regexp.MustCompile(`^# (CONFIG_\w+) is not set`)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := notSet.FindStringSubmatch(line); m != nil {
			cfg[m[1]] = "n"
		} else if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = strings.Trim(v, `"`)
		}
	}
	return cfg
}

// limit is a skip a kernel may give: a feature its build does not have.
type limit struct {
	feature string
	test    string // "" for a step
	reason  *regexp.Regexp
	// lacks reports whether this kernel's config explains the skip; nil:
	// the test itself asked the kernel (a verifier refusal), which is proof.
	lacks func(cfg map[string]string) bool
	loses string // what a user of such a kernel does without
}

var limits = []limit{
	{
		feature: "confine-v1", reason: regexp.MustCompile("^" + noCpusetV1),
		lacks: func(cfg map[string]string) bool {
			return cfg["CONFIG_CPUSETS_V1"] == "n" || cfg["CONFIG_CPUSETS"] != "y"
		},
		loses: "no cgroup v1 cpuset (CONFIG_CPUSETS_V1 unset): the pool and confinement run on cgroup v2",
	},
	{
		feature: "afxdp", test: "TestXDPReflects/meta", reason: regexp.MustCompile("refuses bpf_xdp_adjust_meta"),
		loses: "XDP programs may not call bpf_xdp_adjust_meta: the AF_XDP stamp travels in front of the frame (xdp-head)",
	},
}

// accepted returns the limit that explains a skip on this kernel, or nil.
func (g *guestRun) accepted(t guestTest) *limit {
	for i := range limits {
		l := &limits[i]
		if l.feature != t.Feature || l.test != t.Name || !l.reason.MatchString(skipReason(t.Detail)) {
			continue
		}
		if l.lacks == nil || l.lacks(g.config) {
			return l
		}
	}
	return nil
}

// skipReason drops the duration ("0.01s:") in front of a test's reason.
func skipReason(detail string) string {
	if first, rest, ok := strings.Cut(detail, " "); ok && strings.HasSuffix(first, "s:") {
		return rest
	}
	return detail
}

// problems lists why this guest's run fails the matrix: no verdict, a
// failed step or test, or a skip its kernel should not give.
func (g *guestRun) problems() []string {
	var out []string
	if g.Verdict == "" {
		out = append(out, "no verdict: the guest did not finish (crash or hard timeout, see its console log)")
	}
	for _, t := range append(append([]guestTest{}, g.Steps...), g.Tests...) {
		what := t.Feature
		if t.Name != "" {
			what += " " + t.Name
		}
		switch t.Outcome {
		case "PASS":
		case "SKIP":
			if g.accepted(t) == nil {
				out = append(out, fmt.Sprintf("%s: skipped on a kernel that should support it: %s", what, t.Detail))
			}
		default:
			out = append(out, fmt.Sprintf("%s: %s %s", what, t.Outcome, t.Detail))
		}
	}
	return out
}

// step returns the outcome of a feature's step ("" when it did not run).
func (g *guestRun) step(feature string) guestTest {
	for _, s := range g.Steps {
		if s.Feature == feature {
			return s
		}
	}
	return guestTest{Feature: feature}
}

func (g *guestRun) test(feature, name string) guestTest {
	for _, t := range g.Tests {
		if t.Feature == feature && t.Name == name {
			return t
		}
	}
	return guestTest{Feature: feature, Name: name}
}

// cell says how a feature fared: ok, FAIL, "-" (did not run) or the
// kernel's limit.
func (g *guestRun) cell(feature string) string {
	s := g.step(feature)
	switch s.Outcome {
	case "PASS":
		return "ok"
	case "":
		return "-"
	case "SKIP":
		if g.accepted(s) != nil {
			return "no (kernel)"
		}
	}
	return "FAIL"
}

// stampCell names the AF_XDP stamp path the kernel allows.
func (g *guestRun) stampCell() string {
	if g.cell("afxdp") != "ok" {
		return g.cell("afxdp")
	}
	meta := g.test("afxdp", "TestXDPReflects/meta")
	switch {
	case meta.Outcome == "PASS":
		return "xdp-meta"
	case meta.Outcome == "SKIP" && g.accepted(meta) != nil:
		return "xdp-head"
	}
	return "FAIL"
}

// tracerCell joins the tracer and both confinements.
func (g *guestRun) tracerCell() string {
	tr := g.cell("tracer")
	v1, v2 := g.cell("confine-v1"), g.cell("confine-v2")
	if tr != "ok" {
		return tr
	}
	var where []string
	if v1 == "ok" {
		where = append(where, "v1")
	}
	if v2 == "ok" {
		where = append(where, "v2")
	}
	if v1 == "FAIL" || v2 == "FAIL" || len(where) == 0 {
		return fmt.Sprintf("ok; confine v1 %s, v2 %s", v1, v2)
	}
	return "ok; confines in " + strings.Join(where, "+")
}

// coreyieldCell joins the per-core groups on v1 and on cgroup2, and a
// testpmd lcore lent on cgroup2 where the guest ran one.
func (g *guestRun) coreyieldCell() string {
	v1, v2, pmd := g.cell("coreyield"), g.cell("coreyield-v2"), g.cell("coreyield-testpmd")
	cell := fmt.Sprintf("v1 %s, cgroup2 %s", v1, v2)
	if v1 == "ok" && v2 == "ok" {
		cell = "ok; v1 + cgroup2"
	}
	if pmd != "-" {
		cell += "; testpmd " + pmd
	}
	return cell
}

// preempt reads the preemption model from the kernel's config.
func (g *guestRun) preempt() string {
	switch {
	case g.config["CONFIG_PREEMPT_RT"] == "y":
		return "rt"
	case g.config["CONFIG_PREEMPT_DYNAMIC"] == "y":
		return "dynamic"
	case g.config["CONFIG_PREEMPT"] == "y":
		return "full"
	case g.config["CONFIG_PREEMPT_VOLUNTARY"] == "y":
		return "voluntary"
	}
	return "none"
}

// writeTable writes the matrix as Markdown, then the kernels' limits.
func writeTable(w io.Writer, runs []*guestRun) {
	fmt.Fprintln(w, "| kernel | arch | preempt | probe (XDP, ring buffer) | blocker tracer | AF_XDP stamp | DP loop | coreyield | module | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, g := range runs {
		verdict := "pass"
		if len(g.problems()) > 0 {
			verdict = "**FAIL**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			orDash(g.Info["release"]), orDash(g.Info["arch"]), g.preempt(), g.cell("probe"), g.tracerCell(),
			g.stampCell(), g.cell("dploop"), g.coreyieldCell(), g.cell("module"), verdict)
	}
	for _, g := range runs {
		seen := map[*limit]bool{}
		for _, t := range append(append([]guestTest{}, g.Steps...), g.Tests...) {
			if l := g.accepted(t); t.Outcome == "SKIP" && l != nil && !seen[l] {
				seen[l] = true
				fmt.Fprintf(w, "\n%s (%s): %s.", g.Name, orDash(g.Info["release"]), l.loses)
			}
		}
	}
	fmt.Fprintln(w)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
