package trafficgen

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestValidateNamesField(t *testing.T) {
	ok := Options{Dst: netip.MustParseAddr("10.0.0.1"), Rate: 10, Count: 10}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Options){
		"dst":          func(o *Options) { o.Dst = netip.Addr{} },
		"rate":         func(o *Options) { o.Rate = 0 },
		"count":        func(o *Options) { o.Count = -1 },
		"pattern":      func(o *Options) { o.Pattern = "burst" },
		"payload_size": func(o *Options) { o.PayloadSize = 9000 },
		"dst_port":     func(o *Options) { o.DstPort = 70000 },
		"deadline":     func(o *Options) { o.Deadline = time.Hour },
		"recv_addr":    func(o *Options) { o.RecvNetNS = "x" },
	}
	for field, mut := range cases {
		o := ok
		mut(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err %v", field, err)
		}
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%s: Run accepted invalid options", field)
		}
	}
}

func sendTimes(o Options, n int) []float64 {
	o = o.withDefaults()
	s := newSchedule(o, 0)
	out := make([]float64, n)
	for i := range out {
		out[i] = s.next
		s.advance()
	}
	return out
}

func TestScheduleConstant(t *testing.T) {
	ts := sendTimes(Options{Rate: 1000, Pattern: PatternConstant}, 1001)
	if got := ts[1000] - ts[0]; math.Abs(got-1e9) > 1 {
		t.Fatalf("1000 intervals at 1000 pps span %v ns, want 1e9", got)
	}
}

func TestSchedulePoissonMean(t *testing.T) {
	ts := sendTimes(Options{Rate: 1000, Pattern: PatternPoisson, Seed: 42}, 20001)
	mean := (ts[20000] - ts[0]) / 20000
	if math.Abs(mean-1e6)/1e6 > 0.05 {
		t.Fatalf("mean gap %v ns, want 1e6 ±5%%", mean)
	}
	equal := 0
	for i := 1; i < 1000; i++ {
		if math.Abs((ts[i]-ts[i-1])-1e6) < 1 {
			equal++
		}
	}
	if equal > 10 {
		t.Fatalf("%d of 1000 gaps exactly 1 ms: not exponential", equal)
	}
}

func TestScheduleOnOff(t *testing.T) {
	o := Options{Rate: 10000, Pattern: PatternOnOff, On: 10 * time.Millisecond, Off: 30 * time.Millisecond}
	ts := sendTimes(o, 1000) // 100 per burst, 10 bursts
	period := float64(40 * time.Millisecond)
	for i, t0 := range ts {
		phase := math.Mod(t0, period)
		if phase >= float64(10*time.Millisecond) {
			t.Fatalf("packet %d at %v ns sent during the off phase (%v)", i, t0, phase)
		}
	}
	if last := ts[999]; last < 9*period || last >= 10*period {
		t.Fatalf("1000 packets should take 10 bursts, last at %v", last)
	}
}

// TestRunEcho runs the generator against a plain UDP echo socket inside a
// namespace's loopback: the full send/receive/report path without a DP loop.
func TestRunEcho(t *testing.T) {
	testenv.NeedRoot(t, "a network namespace")
	ns := fmt.Sprintf("tgecho%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	var echo *net.UDPConn
	err := netns.Do(ns, func() error {
		var err error
		echo, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDP(buf[:n], from)
		}
	}()
	// The sender pins the calling thread to SenderCPU for the run and gives
	// it back with the affinity it had (here: CPU 0 only), not every CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mine, was unix.CPUSet
	mine.Set(0)
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &was)
	if err := unix.SchedSetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Options{NetNS: ns, Dst: netip.MustParseAddr("127.0.0.1"), Rate: 5000, Count: 2000, Pattern: PatternPoisson,
		PinSender: true, SenderCPU: 0})
	if err != nil {
		t.Fatal(err)
	}
	var after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &after); err != nil || after != mine {
		t.Errorf("sender's thread given back with affinity %v (%v); want CPU 0 only, as it came", after, err)
	}
	t.Logf("%+v", rep)
	if rep.Sent != 2000 || rep.Received != 2000 || rep.Lost != 0 || rep.HistogramCount != 2000 {
		t.Fatalf("echo: %+v", rep)
	}
	l := rep.LatencyUs
	if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Fatalf("percentiles out of order: %+v", l)
	}
	if rep.OfferedPPS < 1000 || rep.TimedOut {
		t.Fatalf("offered %v pps, timed out %v", rep.OfferedPPS, rep.TimedOut)
	}
}

func TestRunStopsAtDeadline(t *testing.T) {
	testenv.NeedRoot(t, "a network namespace")
	ns := fmt.Sprintf("tgdl%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	_ = exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	// Nobody answers: the run must end by its deadline, reporting the loss.
	start := time.Now()
	rep, err := Run(context.Background(), Options{NetNS: ns, Dst: netip.MustParseAddr("127.0.0.1"), Rate: 100, Count: 1000000, Deadline: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("run took %v with a 300ms deadline", el)
	}
	if !rep.TimedOut || rep.Received != 0 || rep.Sent == 0 || rep.Sent >= 1000000 || rep.Lost != rep.Sent {
		t.Fatalf("%+v", rep)
	}
}
