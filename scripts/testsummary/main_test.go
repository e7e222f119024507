package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestOK"}
{"Action":"pass","Package":"a","Test":"TestOK"}
{"Action":"run","Package":"a","Test":"TestSkip"}
{"Action":"output","Package":"a","Test":"TestSkip","Output":"=== RUN   TestSkip\n"}
{"Action":"output","Package":"a","Test":"TestSkip","Output":"    x_test.go:9: needs root: cgroups\n"}
{"Action":"output","Package":"a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"a","Test":"TestSkip"}
{"Action":"pass","Package":"a"}
{"Action":"run","Package":"b","Test":"TestBad"}
{"Action":"run","Package":"b","Test":"TestBad/sub"}
{"Action":"fail","Package":"b","Test":"TestBad/sub"}
{"Action":"fail","Package":"b","Test":"TestBad"}
{"Action":"fail","Package":"b"}
{"Action":"skip","Package":"c"}
build output that is not JSON
{"Action":"fail","Package":"d"}
`

// The summary counts every test and subtest by its outcome, gives each skip
// its logged reason, counts a package that failed without a failing test
// (a build failure) as a failure, and says FAIL.
func TestSummaryCountsAndReasons(t *testing.T) {
	st, err := readStage("unit", strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if write(&out, []stage{st}) {
		t.Fatal("a run with failures reported as passing")
	}
	text := out.String()
	t.Log(text)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if last := lines[len(lines)-1]; last != "1 passed, 3 failed, 1 skipped" {
		t.Fatalf("closing line %q", last)
	}
	for _, want := range []string{
		"SKIP  a TestSkip: x_test.go:9: needs root: cgroups",
		"FAIL  b TestBad/sub",
		"FAIL  d (no test failed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if strings.Contains(text, " c ") {
		t.Error("a package without tests listed")
	}
}

// A stage whose file holds no test fails: a run that tested nothing is not
// a pass.
func TestEmptyStageFails(t *testing.T) {
	st, err := readStage("arm64", strings.NewReader(`{"Action":"skip","Package":"c"}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if write(&out, []stage{st}) {
		t.Fatalf("empty stage passed:\n%s", out.String())
	}
}

// Record mode turns a command's exit code and a "SKIP: reason" line into
// one test's result.
func TestRecordCommand(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, script, want string
		code               int
	}{
		{"pass", "echo fine", "1 passed, 0 failed, 0 skipped", 0},
		{"skip", "echo 'x: SKIP: no qemu here'", "0 passed, 0 failed, 1 skipped", 0},
		{"fail", "echo broken; exit 3", "0 passed, 1 failed, 0 skipped", 3},
		{"runner", "echo '=== SKIP: pkg TestX (0.00s)'; echo '--- SKIP: TestY'", "1 passed, 0 failed, 0 skipped", 0},
	}
	for _, c := range cases {
		out := filepath.Join(dir, c.name+".json")
		if code := recordCommand(c.name, out, []string{"sh", "-c", c.script}); code != c.code {
			t.Fatalf("%s: exit %d, want %d", c.name, code, c.code)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		st, err := readStage(c.name, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		write(&buf, []stage{st})
		if !strings.HasSuffix(strings.TrimSpace(buf.String()), c.want) {
			t.Fatalf("%s: summary\n%s\nwant closing %q", c.name, buf.String(), c.want)
		}
		if c.name == "skip" && !strings.Contains(buf.String(), "no qemu here") {
			t.Fatalf("skip reason lost:\n%s", buf.String())
		}
	}
}
