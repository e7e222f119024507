// Command testsummary closes make test with one account of every stage: a
// line per package (passed, failed and skipped counts), every skip with its
// reason, and a last line "N passed, N failed, N skipped".
//
//	testsummary FILE.json...                  summarize go test -json files
//	testsummary -record NAME -out FILE -- CMD  run CMD as one test named NAME
//
// Each file is one stage (its name without .json labels it: unit, arm64,
// test-kmod, ...). Record mode runs a non-Go check (a script, a qemu boot)
// and writes its result as go test -json events, so the summary counts it
// too: exit 0 passes, a line containing "SKIP: reason" with exit 0 skips,
// anything else fails. testsummary exits 1 when anything failed or a file
// holds no test at all.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// event is one line of go test -json (cmd/test2json).
type event struct {
	Time    time.Time `json:",omitempty"`
	Action  string
	Package string
	Test    string  `json:",omitempty"`
	Output  string  `json:",omitempty"`
	Elapsed float64 `json:",omitempty"`
}

func main() {
	record := flag.String("record", "", "run the command after -- as one test of this name")
	out := flag.String("out", "", "with -record: the go test -json file to write")
	flag.Parse()
	if *record != "" {
		if *out == "" || flag.NArg() == 0 {
			fmt.Fprintln(os.Stderr, "testsummary: -record needs -out FILE and a command after --")
			os.Exit(2)
		}
		os.Exit(recordCommand(*record, *out, flag.Args()))
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "testsummary: no go test -json files given")
		os.Exit(2)
	}
	var stages []stage
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(1)
		}
		st, err := readStage(strings.TrimSuffix(filepath.Base(path), ".json"), f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %s: %v\n", path, err)
			os.Exit(1)
		}
		stages = append(stages, st)
	}
	if !write(os.Stdout, stages) {
		os.Exit(1)
	}
}

// pkgResult counts one package's tests (subtests included).
type pkgResult struct {
	name                    string
	passed, failed, skipped int
	buildFailed             bool // the package failed without a failing test: build or setup
	skips                   []skip
	failures                []string
}

type skip struct{ test, reason string }

// stage is one file: one make target's tests.
type stage struct {
	name string
	pkgs []*pkgResult
}

func readStage(name string, r io.Reader) (stage, error) {
	byPkg := map[string]*pkgResult{}
	outputs := map[[2]string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Bytes()
		if len(strings.TrimSpace(string(text))) == 0 || text[0] != '{' {
			continue // go test -json may interleave non-JSON build output
		}
		var ev event
		if err := json.Unmarshal(text, &ev); err != nil {
			return stage{}, fmt.Errorf("line %d: %w", line, err)
		}
		p := byPkg[ev.Package]
		if p == nil {
			p = &pkgResult{name: ev.Package}
			byPkg[ev.Package] = p
		}
		key := [2]string{ev.Package, ev.Test}
		switch ev.Action {
		case "output":
			outputs[key] = append(outputs[key], ev.Output)
		case "pass":
			if ev.Test != "" {
				p.passed++
			}
		case "skip":
			if ev.Test != "" {
				p.skipped++
				p.skips = append(p.skips, skip{ev.Test, skipReason(outputs[key])})
			}
		case "fail":
			if ev.Test != "" {
				p.failed++
				p.failures = append(p.failures, ev.Test)
			} else if p.failed == 0 {
				p.buildFailed = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return stage{}, err
	}
	st := stage{name: name}
	for _, p := range byPkg {
		if p.passed+p.failed+p.skipped > 0 || p.buildFailed {
			st.pkgs = append(st.pkgs, p)
		}
	}
	sort.Slice(st.pkgs, func(i, j int) bool { return st.pkgs[i].name < st.pkgs[j].name })
	return st, nil
}

// skipReason is what the test logged before it skipped: the lines that are
// not the runner's own (=== RUN, --- SKIP), joined.
func skipReason(lines []string) string {
	var reason []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		reason = append(reason, t)
	}
	if len(reason) == 0 {
		return "(no reason given)"
	}
	return strings.Join(reason, " / ")
}

// write prints the summary and reports whether everything passed.
func write(w io.Writer, stages []stage) bool {
	var passed, failed, skipped int
	fmt.Fprintln(w, "=== summary")
	for _, st := range stages {
		if len(st.pkgs) == 0 {
			fmt.Fprintf(w, "%-18s FAIL  no test ran\n", st.name)
			failed++
			continue
		}
		for _, p := range st.pkgs {
			verdict := "ok"
			if p.failed > 0 || p.buildFailed {
				verdict = "FAIL"
			}
			if p.buildFailed && p.failed == 0 {
				failed++ // a package that did not build or set up counts as one failure
			}
			fmt.Fprintf(w, "%-18s %-4s  %-55s %4d passed, %d failed, %d skipped\n", st.name, verdict, p.name, p.passed, p.failed, p.skipped)
			passed += p.passed
			failed += p.failed
			skipped += p.skipped
		}
	}
	for _, st := range stages {
		for _, p := range st.pkgs {
			for _, f := range p.failures {
				fmt.Fprintf(w, "%-18s FAIL  %s %s\n", st.name, p.name, f)
			}
			if p.buildFailed && p.failed == 0 {
				fmt.Fprintf(w, "%-18s FAIL  %s (no test failed: the package did not build or its setup failed)\n", st.name, p.name)
			}
		}
	}
	for _, st := range stages {
		for _, p := range st.pkgs {
			for _, s := range p.skips {
				fmt.Fprintf(w, "%-18s SKIP  %s %s: %s\n", st.name, p.name, s.test, s.reason)
			}
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return failed == 0
}

// skipLine is a check's own skip: "SKIP: reason" at the start of a line,
// or after the check's name ("deb-install-test: SKIP: reason"); a test
// runner's report of a skipped test ("=== SKIP: ...", "--- SKIP: ...") is
// not the check skipping.
var skipLine = regexp.MustCompile(`^(?:[\w.-]+: )?SKIP: (.*)$`)

// recordCommand runs args, passing its output through, and writes its
// result as one test named name to out. It returns the exit code to use.
func recordCommand(name, out string, args []string) int {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		return 1
	}
	start := time.Now()
	// The log goes to the terminal as it comes; the copy is searched for
	// the check's own skip line.
	var log bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = io.MultiWriter(os.Stdout, &log)
	cmd.Stderr, cmd.Stdin = cmd.Stdout, os.Stdin
	err := cmd.Run()
	action, code := "pass", 0
	var reason []string // the skip's reason alone, not the whole log
	if err != nil {
		action, code = "fail", 1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
		fmt.Printf("%s: %v\n", name, err)
	} else {
		for _, l := range strings.Split(log.String(), "\n") {
			if m := skipLine.FindStringSubmatch(l); m != nil {
				action = "skip"
				reason = append(reason, strings.TrimSpace(m[1])+"\n")
			}
		}
	}
	const pkg = "make"
	evs := []event{{Time: start, Action: "run", Package: pkg, Test: name}}
	for _, l := range reason {
		evs = append(evs, event{Time: time.Now(), Action: "output", Package: pkg, Test: name, Output: l})
	}
	elapsed := time.Since(start).Seconds()
	evs = append(evs, event{Time: time.Now(), Action: action, Package: pkg, Test: name, Elapsed: elapsed})
	f, ferr := os.Create(out)
	if ferr != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", ferr)
		return 1
	}
	enc := json.NewEncoder(f)
	for _, ev := range evs {
		if err := enc.Encode(ev); err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			code = 1
		}
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		code = 1
	}
	return code
}
