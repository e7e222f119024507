// Package cpushare measures how much of one CPU a competing task really
// gets, by its effect rather than by the kernel's accounting: a hog process,
// pinned to the CPU in a session of its own (its own autogroup, like a CP
// task started from another shell or service), spins reading
// CLOCK_MONOTONIC and sums the gaps between two reads longer than
// GapThreshold, which is time it did not run. Its share of a window is
// 1 - gaps/elapsed.
//
// cpuacct or schedstat would count the same time, but only as the
// scheduler booked it; the gaps are what a CP task waiting on that CPU
// actually experiences, and they work the same for any data-plane process
// (DPDK lcores, OVS PMD threads).
//
// The hog is the calling binary run again: its main (or TestMain) must call
// RunHogIfRequested first.
package cpushare

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// GapThreshold is the shortest pause between two clock reads counted as
// time the hog did not run. A read costs tens of ns; interrupts and the
// hog's own runtime cost a few µs at most, rarely.
const GapThreshold = 5 * time.Microsecond

// hogEnv holds the CPU a re-executed binary must hog.
const hogEnv = "TAICHI_CPUSHARE_HOG_CPU"

// RunHogIfRequested turns the process into the hog when StartHog launched
// it, and never returns then; otherwise it returns at once.
func RunHogIfRequested() {
	v := os.Getenv(hogEnv)
	if v == "" {
		return
	}
	cpu, err := strconv.Atoi(v)
	if err == nil {
		err = runHog(cpu, os.Stdin, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpushare hog:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Window is what the hog saw between two Samples.
type Window struct {
	Elapsed time.Duration
	Gaps    time.Duration // time it did not run
	MaxGap  time.Duration // the longest single gap seen so far (whole run)
}

// Share is the fraction of the window the hog ran (0 for an empty window).
func (w Window) Share() float64 {
	if w.Elapsed <= 0 {
		return 0
	}
	return 1 - float64(w.Gaps)/float64(w.Elapsed)
}

// Ran is how long the hog ran in the window.
func (w Window) Ran() time.Duration { return w.Elapsed - w.Gaps }

// Against is the hog's part of the time it and another thread (a DP
// thread that ran dp in the same window, e.g. from linuxsched.RunTime)
// took of the CPU: hog/(hog+dp). Unlike Share it leaves out what third
// parties took, so it judges the contest on a busy, shared machine.
func (w Window) Against(dp time.Duration) float64 {
	if w.Ran()+dp <= 0 {
		return 0
	}
	return float64(w.Ran()) / float64(w.Ran()+dp)
}

func (w Window) String() string {
	return fmt.Sprintf("share %.3f over %v (not running %v, longest gap %v)", w.Share(), w.Elapsed.Round(time.Millisecond), w.Gaps.Round(time.Microsecond), w.MaxGap.Round(time.Microsecond))
}

// Hog is a running hog process.
type Hog struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	last sample
}

type sample struct{ elapsed, gaps, maxGap int64 }

// StartHog runs the calling binary as a hog pinned to cpu, in a new
// session. It returns once the hog spins.
func StartHog(cpu int) (*Hog, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	// No async preemption: its signals would be gaps of the hog's own.
	cmd.Env = append(os.Environ(), hogEnv+"="+strconv.Itoa(cpu), "GODEBUG=asyncpreemptoff=1", "GOMAXPROCS=2")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start hog: %w", err)
	}
	h := &Hog{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := h.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "spinning" {
		h.Stop()
		return nil, fmt.Errorf("hog did not start: %q %v", line, err)
	}
	return h, nil
}

// PID is the hog's process id.
func (h *Hog) PID() int { return h.cmd.Process.Pid }

// Sample returns what the hog saw since the previous Sample (or its start).
func (h *Hog) Sample() (Window, error) {
	if _, err := io.WriteString(h.in, "sample\n"); err != nil {
		return Window{}, fmt.Errorf("hog: %w", err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		return Window{}, fmt.Errorf("hog: %w", err)
	}
	var s sample
	if _, err := fmt.Sscan(line, &s.elapsed, &s.gaps, &s.maxGap); err != nil {
		return Window{}, fmt.Errorf("hog reply %q: %w", line, err)
	}
	w := Window{Elapsed: time.Duration(s.elapsed - h.last.elapsed), Gaps: time.Duration(s.gaps - h.last.gaps), MaxGap: time.Duration(s.maxGap)}
	h.last = s
	return w, nil
}

// Stop ends the hog.
func (h *Hog) Stop() {
	h.in.Close()
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

var epoch = time.Now()

// mono reads CLOCK_MONOTONIC through the vDSO (time.Since keeps the
// monotonic reading).
func mono() int64 { return int64(time.Since(epoch)) }

// runHog pins every thread to cpu, spins, and answers each "sample" line
// on in with "elapsed gaps maxgap" (ns since the start) on out.
func runHog(cpu int, in io.Reader, out io.Writer) error {
	tasks, err := linuxsched.Threads(os.Getpid())
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if err := linuxsched.Pin(t.TID, cpu); err != nil {
			return err
		}
	}
	var last, gaps, maxGap atomic.Int64
	start := mono()
	last.Store(start)
	go func() {
		// Spin on this goroutine's own thread; the main goroutine answers
		// samples, running only when asked.
		threshold := int64(GapThreshold)
		prev := start
		for {
			now := mono()
			if d := now - prev; d > threshold {
				gaps.Add(d)
				if d > maxGap.Load() {
					maxGap.Store(d)
				}
			}
			prev = now
			last.Store(now)
		}
	}()
	for last.Load() == start {
	}
	if _, err := fmt.Fprintln(out, "spinning"); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if sc.Text() != "sample" {
			return fmt.Errorf("unknown request %q", sc.Text())
		}
		now := mono()
		g := gaps.Load()
		// A gap still open (the spinner is not running now) counts too.
		if d := now - last.Load(); d > int64(GapThreshold) {
			g += d
		}
		if _, err := fmt.Fprintf(out, "%d %d %d\n", now-start, g, maxGap.Load()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
