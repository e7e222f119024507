package eval

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// cyclictestBuckets is the histogram size in µs; later samples count as
// overflows and are taken at the reported maximum.
const cyclictestBuckets = 10000

// Cyclictest runs rt-tests' cyclictest: one SCHED_FIFO thread at priority
// prio pinned to cpu, waking every 200 µs for d, and returns its wake-up
// latency percentiles in µs. It is the independent check beside our own
// numbers: written by others, measuring the same thing (how long an RT
// thread on the DP core waits for its CPU).
func Cyclictest(ctx context.Context, cpu, prio int, d time.Duration) (Percentiles, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cyclictest", "-m", "-q", "-t", "1",
		"-p", strconv.Itoa(prio), "-a", strconv.Itoa(cpu), "-i", "200",
		"-D", strconv.Itoa(secs), "-h", strconv.Itoa(cyclictestBuckets))
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return Percentiles{}, fmt.Errorf("cyclictest: %w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return Percentiles{}, fmt.Errorf("cyclictest (Debian package rt-tests): %w", err)
	}
	return parseCyclictest(strings.NewReader(string(out)))
}

// parseCyclictest turns cyclictest's -h histogram output into percentiles.
func parseCyclictest(r io.Reader) (Percentiles, error) {
	var counts []uint64
	var total, overflow uint64
	var maxLat, avg float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if after, ok := strings.CutPrefix(line, "#"); ok {
			k, v, ok := strings.Cut(after, ":")
			if !ok {
				continue
			}
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				continue
			}
			switch strings.TrimSpace(k) {
			case "Total":
				total = n
			case "Max Latencies":
				maxLat = float64(n)
			case "Avg Latencies":
				avg = float64(n)
			case "Histogram Overflows":
				overflow = n
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		b, err1 := strconv.Atoi(f[0])
		c, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil || b < 0 || b > 1<<20 {
			continue
		}
		for len(counts) <= b {
			counts = append(counts, 0)
		}
		counts[b] += c
	}
	if err := sc.Err(); err != nil {
		return Percentiles{}, err
	}
	var inHist uint64
	for _, c := range counts {
		inHist += c
	}
	n := inHist + overflow
	if n == 0 {
		return Percentiles{}, fmt.Errorf("cyclictest: no samples in its output")
	}
	if total != 0 && total != n {
		// Total counts loops; histogram + overflows must match it.
		n = max(n, total)
		overflow = n - inHist
	}
	at := func(q float64) float64 {
		rank := uint64(q*float64(n-1)) + 1
		var cum uint64
		for b, c := range counts {
			cum += c
			if cum >= rank {
				return float64(b)
			}
		}
		return maxLat
	}
	return Percentiles{N: int(n), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: maxLat, Mean: avg}, nil
}
