package main

import (
	"bufio"
	"io"
	"regexp"
	"strings"
)

// testResult is one test (or subtest) of a go test -test.v run.
type testResult struct {
	Name    string // TestX or TestX/sub
	Outcome string // PASS, FAIL or SKIP
	Seconds string // as go test printed it, e.g. "0.21"
	Reason  string // a skip's or failure's last message
}

var (
	runLine  = regexp.MustCompile(`^=== (?:RUN|CONT|PAUSE|NAME)\s+(\S+)`)
	doneLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	// A t.Log/t.Skip/t.Fatal message: indented "file.go:LINE: text".
	msgLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// parseVerbose reads go test -test.v output and returns every test's result
// in the order they finished. -test.v streams each message as it is logged
// (after the test's "=== RUN" line), so a message belongs to the test that
// ran last; a skip's reason is the last message of that test.
func parseVerbose(r io.Reader) []testResult {
	var results []testResult
	last := map[string]string{} // test -> its last message
	current := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if m := runLine.FindStringSubmatch(line); m != nil {
			current = m[1]
			continue
		}
		if m := doneLine.FindStringSubmatch(line); m != nil {
			results = append(results, testResult{Name: m[2], Outcome: m[1], Seconds: m[3], Reason: last[m[2]]})
			continue
		}
		if m := msgLine.FindStringSubmatch(line); m != nil && current != "" {
			last[current] = strings.TrimSpace(m[1])
		}
	}
	return results
}
