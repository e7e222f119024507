package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/daemon"
)

// watchInterval reads `taichi status --watch [INTERVAL]`: a Go duration
// ("500ms", "2s") or plain seconds ("2", "0.5", as top's -d).
func watchInterval(flag time.Duration, args []string) (time.Duration, error) {
	iv := flag
	if len(args) == 1 {
		s := args[0]
		if secs, err := strconv.ParseFloat(s, 64); err == nil {
			iv = time.Duration(secs * float64(time.Second))
		} else if d, err := time.ParseDuration(s); err == nil {
			iv = d
		} else {
			return 0, fmt.Errorf("watch interval %q: want a duration (500ms, 2s) or seconds", s)
		}
	}
	if iv < 100*time.Millisecond {
		return 0, fmt.Errorf("watch interval %v: at least 100ms", iv)
	}
	return iv, nil
}

// isTerminal reports whether w is a terminal (the view then redraws in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// watchStatus asks the daemon every interval and shows the state of each
// core and loop with its rates over the last interval, until SIGINT/SIGTERM.
// On a terminal each frame replaces the last; otherwise frames follow each
// other as plain text, separated by a blank line (or one JSON line each).
func watchStatus(w io.Writer, socket string, interval time.Duration, asJSON bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tty := !asJSON && isTerminal(w)
	out := bufio.NewWriter(w)
	if tty {
		defer func() { fmt.Fprint(w, "\x1b[?25h") }() // cursor back on
		fmt.Fprint(out, "\x1b[?25l\x1b[2J")
	}
	var prev *daemon.Status
	var prevAt time.Time
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for frame := 0; ; frame++ {
		resp, err := daemon.Call(socket, daemon.Request{Cmd: "status"})
		now := time.Now()
		var text strings.Builder
		switch {
		case err != nil:
			fmt.Fprintf(&text, "%s  daemon not answering on %s: %v\n", now.Format("15:04:05"), socket, err)
			prev = nil
		case asJSON:
			b, _ := json.Marshal(resp.Status)
			text.Write(b)
			text.WriteByte('\n')
		default:
			renderWatch(&text, prev, resp.Status, now.Sub(prevAt), interval, now)
			prev, prevAt = resp.Status, now
		}
		switch {
		case tty:
			// Home, then each line clears its rest, then clear below: no flicker.
			fmt.Fprint(out, "\x1b[H", strings.ReplaceAll(text.String(), "\n", "\x1b[K\n"), "\x1b[J")
		case frame > 0 && !asJSON:
			fmt.Fprint(out, "\n", text.String())
		default:
			fmt.Fprint(out, text.String())
		}
		if err := out.Flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// renderWatch draws one frame: cur, with rates over dt since prev (nil on the
// first frame: rates show "-").
func renderWatch(w io.Writer, prev, cur *daemon.Status, dt, interval time.Duration, now time.Time) {
	// A restarted daemon starts its counters again: no rates across it.
	rate := prev != nil && prev.PID == cur.PID && dt > 0
	fmt.Fprintf(w, "taichi %s  pid %d  up %s  policy %s  every %v  %s\n",
		cur.Version, cur.PID, cur.Uptime, cur.Policy, interval, now.Format("15:04:05"))
	harvest := "n/a"
	if cur.Pool.HarvestedCPSeconds >= 0 {
		harvest = fmt.Sprintf("%.2fs", cur.Pool.HarvestedCPSeconds)
		if rate && prev.Pool.HarvestedCPSeconds >= 0 {
			harvest += fmt.Sprintf(" (%s of a core)", share(cur.Pool.HarvestedCPSeconds-prev.Pool.HarvestedCPSeconds, dt))
		}
	}
	fmt.Fprintf(w, "CP pool  cpus %v  members %d  harvested on DP cores %s  probe %s %s\n",
		cur.Pool.CPUs, cur.Pool.Members, harvest, cur.Probe.Backend, cur.Probe.State)

	prevCores := map[int]daemon.CoreStatus{}
	if rate {
		for _, c := range prev.Cores {
			prevCores[c.CPU] = c
		}
	}
	harvested := func(st *daemon.Status, cpu int) (time.Duration, bool) {
		for _, c := range st.Scheduler.Cores {
			if c.CPU == cpu {
				return c.Harvested, true
			}
		}
		return 0, false
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CPU\tROLE\tSTATE\tLENT\tRX RES P99\tWAKE P99\tSLO BUDGET\tRECLAIMS (+interval)\tGUARD\tHARVEST\tHOLD")
	for _, c := range cur.Cores {
		if c.Role != "dp" {
			fmt.Fprintf(tw, "%d\t%s\t%s\t\t\t\t\t\t\t\t\n", c.CPU, c.Role, c.State)
			continue
		}
		p, had := prevCores[c.CPU]
		lent, harv, guard := "-", "-", strconv.FormatUint(c.GuardTrips, 10)
		if had {
			lent = share(c.LentSeconds-p.LentSeconds, dt)
			if c.GuardTrips > p.GuardTrips {
				guard += fmt.Sprintf(" (+%d)", c.GuardTrips-p.GuardTrips)
			}
		}
		if h, ok := harvested(cur, c.CPU); ok {
			harv = fmt.Sprintf("%.2fs", h.Seconds())
			if had {
				if ph, ok := harvested(prev, c.CPU); ok {
					harv += " (" + share((h-ph).Seconds(), dt) + ")"
				}
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%.0fus\t%s\t%s\t%s\t%s\t%s\n", c.CPU, c.Role, c.State, lent,
			rxResidenceP99(prev, cur, c.CPU), c.WakeP99us, budgetText(c), reclaims(c.Reclaims, p.Reclaims, had), guard, harv, c.Hold)
	}
	tw.Flush()

	if len(cur.Loops) == 0 {
		return
	}
	prevLoops := map[string]daemon.LoopStatus{}
	if rate {
		for _, l := range prev.Loops {
			prevLoops[l.Name] = l
		}
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOOP\tCPU\tALIVE\tPACKETS\tPPS\tYIELDS\tWAKES rx/probe/timeout\tEXPOSED MAX")
	for _, l := range cur.Loops {
		s := l.Stats
		pps := "-"
		if p, ok := prevLoops[l.Name]; ok && s.Packets >= p.Stats.Packets {
			pps = strconv.FormatFloat(float64(s.Packets-p.Stats.Packets)/dt.Seconds(), 'f', 0, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%d\t%s\t%d\t%d/%d/%d\t%v\n", l.Name, l.CPU, l.Alive, s.Packets, pps, s.Yields,
			s.WakesRX, s.WakesProbe, s.WakesTimeout, time.Duration(s.Exposed.MaxNs))
	}
	tw.Flush()
}

// rxResidenceP99 is the RX RES P99 column: per packet, from the kernel's RX
// stamp to the DP loop processing it, 99th percentile over the last interval
// (since the loop started on the first frame), for the loop on cpu; "-"
// without a loop of ours or packets.
func rxResidenceP99(prev, cur *daemon.Status, cpu int) string {
	for _, l := range cur.Loops {
		if l.CPU != cpu {
			continue
		}
		h := l.Stats.Residence
		if prev != nil && prev.PID == cur.PID {
			for _, p := range prev.Loops {
				if p.Name == l.Name && p.PID == l.PID && h.Count >= p.Stats.Residence.Count {
					h = h.Sub(p.Stats.Residence)
				}
			}
		}
		if h.Count == 0 {
			return "-"
		}
		return h.Quantile(0.99).Round(time.Microsecond).String()
	}
	return "-"
}

// share is seconds of a core used over dt, as a percentage of one core.
func share(seconds float64, dt time.Duration) string {
	if dt <= 0 || seconds < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*seconds/dt.Seconds())
}

// reclaims lists reclaims by cause with the interval's increase:
// "probe=120(+3) rx=4".
func reclaims(cur, prev map[string]uint64, withDelta bool) string {
	causes := make([]string, 0, len(cur))
	for cause := range cur {
		causes = append(causes, cause)
	}
	sort.Strings(causes)
	parts := make([]string, 0, len(causes))
	for _, cause := range causes {
		s := fmt.Sprintf("%s=%d", cause, cur[cause])
		if withDelta && cur[cause] > prev[cause] {
			s += fmt.Sprintf("(+%d)", cur[cause]-prev[cause])
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
