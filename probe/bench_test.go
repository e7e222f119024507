package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// Benchmarks measure, side by side in one run, what the probe costs and
// what it buys. Each does a fixed amount of work per call and reports its
// numbers as metrics; run them once:
//
//	go test -run '^$' -bench . -benchtime 1x ./probe/

// netDevCounter reads an interface's RX packets in its namespace.
type netDevCounter struct {
	fd    int
	iface string
	buf   []byte
}

func openNetDev(b testing.TB, ns, iface string) *netDevCounter {
	var fd int
	err := netns.Do(ns, func() (err error) {
		fd, err = unix.Open("/proc/thread-self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return &netDevCounter{fd: fd, iface: iface, buf: make([]byte, 64<<10)}
}

func (c *netDevCounter) packets(b testing.TB) uint64 {
	rx, err := readNetDev(c.fd, c.buf, c.iface)
	if err != nil {
		b.Fatal(err)
	}
	return rx.packets
}

// blast sends as fast as one thread can for d and returns how many left.
func blast(s *UDPSender, d time.Duration) (sent uint64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	end := time.Now().Add(d)
	for i := uint64(1); ; i++ {
		if i%64 == 0 && time.Now().After(end) {
			return sent
		}
		if s.Send(i) == nil {
			sent++
		}
	}
}

// barePass is an attached XDP program that only returns XDP_PASS.
type barePass struct {
	prog *ebpf.Program
	lnk  link.Link
}

func (p *barePass) Stop() error { return errors.Join(p.lnk.Close(), p.prog.Close()) }

func attachBarePass(b testing.TB, ns, iface string) *barePass {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	p := &barePass{prog: prog}
	err = netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		p.lnk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		b.Fatal(err)
	}
	return p
}

// BenchmarkProbeOverhead: throughput through the nic hop to a packet-socket
// reader on the DP interface (what a DP loop sees) at the highest rate one
// sender thread reaches, with and without the XDP program, interleaved.
func BenchmarkProbeOverhead(b *testing.B) {
	tb := upTestbed(b)
	s := sender(b, tb)
	rx, err := ListenPacket(tb.DPNS, tb.DPIface)
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	dev := openNetDev(b, tb.DPNS, tb.DPIface)
	// Many short interleaved rounds and medians: other load on the machine
	// comes in bursts, and should hit every mode alike.
	const rounds, round = 8, 400 * time.Millisecond
	// "pass" is a bare XDP_PASS program in native mode: on veth, native
	// XDP itself changes the receive path (NAPI, ring, skb rebuild), so it
	// separates that from the probe program's own cost.
	modes := []string{"none", "native", "generic", "pass"}
	var pps [4][]float64 // per mode: reader pps
	var devPPS [4][]float64
	for r := 0; r < len(modes)*rounds; r++ {
		i := r % len(modes)
		var p interface{ Stop() error }
		switch modes[i] {
		case "native", "generic":
			p = startXDPMode(b, tb, 1, modes[i])
		case "pass":
			p = attachBarePass(b, tb.NICNS, tb.NICIn)
		}
		var got atomic.Uint64
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for ctx.Err() == nil {
				if _, ok, _ := rx.RecvWait(10 * time.Millisecond); ok {
					got.Add(1)
				}
			}
		}()
		time.Sleep(20 * time.Millisecond)
		d0 := dev.packets(b)
		start := time.Now()
		got.Store(0)
		blast(s, round)
		el := time.Since(start).Seconds()
		n := got.Load()
		d1 := dev.packets(b)
		cancel()
		wg.Wait()
		for drained := true; drained; { // empty the socket for the next round
			_, drained, _ = rx.Recv()
		}
		if p != nil {
			if err := p.Stop(); err != nil {
				b.Fatal(err)
			}
		}
		pps[i] = append(pps[i], float64(n)/el)
		devPPS[i] = append(devPPS[i], float64(d1-d0)/el)
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	for i, m := range modes {
		b.ReportMetric(median(pps[i]), "reader_pps_"+m)
		b.ReportMetric(median(devPPS[i]), "dp_rx_pps_"+m)
		if i > 0 {
			b.ReportMetric(median(pps[i])/median(pps[0]), "reader_ratio_"+m)
			b.ReportMetric(median(devPPS[i])/median(devPPS[0]), "dp_rx_ratio_"+m)
		}
		b.Logf("%-7s reader pps %.0f\n        dp0 rx pps %.0f", m, pps[i], devPPS[i])
	}
}

// pacedSend sends count packets one every gap (idle gaps, so every packet
// is an idle->traffic transition) and calls after(seq, sentNs) after each.
func pacedSend(b testing.TB, s *UDPSender, count int, gap time.Duration, after func(seq uint64, sentNs int64)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := 1; i <= count; i++ {
		sendN(b, s, uint64(i), 1)
		if after != nil {
			after(uint64(i), monoNow())
		}
		time.Sleep(gap)
	}
}

// BenchmarkLeadTime: probe stamp at nic-in -> the same packet's kernel
// receive stamp on dp0 (and -> a blocked reader there getting it).
func BenchmarkLeadTime(b *testing.B) {
	tb := upTestbed(b)
	p := startXDP(b, tb, 1)
	ws, _ := p.XDPWakeSource(1)
	s := sender(b, tb)
	rx, err := ListenPacket(tb.DPNS, tb.DPIface)
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	const count = 2000
	stamps := make([]int64, count+1)
	arrivals := make([]Arrival, count+1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = WatchEvents(ctx, ws, func(ev Event, _ int64) {
			if q := ev.TagSeq(); q >= 1 && q <= count {
				stamps[q] = ev.StampNs
			}
		})
	}()
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for ctx.Err() == nil {
			if a, ok, _ := rx.RecvWait(20 * time.Millisecond); ok && a.Seq >= 1 && a.Seq <= count {
				arrivals[a.Seq] = a
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	pacedSend(b, s, count, time.Millisecond, nil)
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	var lead, leadUser []int64
	for i := 1; i <= count; i++ {
		if stamps[i] != 0 && arrivals[i].KernelNs != 0 {
			lead = append(lead, arrivals[i].KernelNs-stamps[i])
			leadUser = append(leadUser, arrivals[i].UserNs-stamps[i])
		}
	}
	if len(lead) < count/2 {
		b.Fatalf("only %d of %d packets matched", len(lead), count)
	}
	l, lu := PercentilesNs(lead), PercentilesNs(leadUser)
	b.ReportMetric(float64(l.N), "matched")
	b.ReportMetric(l.P50, "lead_p50_us")
	b.ReportMetric(l.P99, "lead_p99_us")
	b.ReportMetric(lu.P50, "lead_reader_p50_us")
	b.ReportMetric(lu.P99, "lead_reader_p99_us")
}

// BenchmarkWakeLatency: three waiters blocked in epoll, woken per packet by
// the probe's ring (from its stamp), by the DP interface's packet socket
// (from the kernel receive stamp), and by an eventfd the sender writes right
// after sending (from the write) — in one run, on the same packets.
func BenchmarkWakeLatency(b *testing.B) {
	tb := upTestbed(b)
	p := startXDP(b, tb, 1)
	ws, _ := p.XDPWakeSource(1)
	s := sender(b, tb)
	rx, err := ListenPacket(tb.DPNS, tb.DPIface)
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(efd)

	const count = 2000
	probeWoke, probeLat := make([]int64, count+1), make([]int64, count+1)
	sockWoke, sockLat := make([]int64, count+1), make([]int64, count+1)
	var efdLat []int64
	var efdStamp atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		_ = WatchEvents(ctx, ws, func(ev Event, woke int64) {
			if q := ev.TagSeq(); q >= 1 && q <= count {
				probeWoke[q], probeLat[q] = woke, woke-ev.StampNs
			}
		})
	}()
	go func() {
		defer wg.Done()
		waitReadable(ctx, b, rx.FD(), func(woke int64) {
			for {
				a, ok, _ := rx.Recv()
				if !ok {
					return
				}
				if a.Seq >= 1 && a.Seq <= count && a.KernelNs != 0 {
					sockWoke[a.Seq], sockLat[a.Seq] = woke, woke-a.KernelNs
				}
			}
		})
	}()
	go func() {
		defer wg.Done()
		waitReadable(ctx, b, efd, func(woke int64) {
			var buf [8]byte
			if _, err := unix.Read(efd, buf[:]); err == nil {
				efdLat = append(efdLat, woke-efdStamp.Load())
			}
		})
	}()
	time.Sleep(20 * time.Millisecond)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	pacedSend(b, s, count, time.Millisecond, func(uint64, int64) {
		efdStamp.Store(monoNow())
		_, _ = unix.Write(efd, one[:])
	})
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()

	reportWakeLatency(b, probeWoke, probeLat, sockWoke, sockLat, efdLat)
}

// waitReadable blocks in epoll on fd, on a thread of its own, and calls
// onWake with the wake time each time fd is readable, until ctx ends.
func waitReadable(ctx context.Context, b *testing.B, fd int, onWake func(woke int64)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Error(err)
		return
	}
	defer unix.Close(ep)
	_ = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	evs := make([]unix.EpollEvent, 1)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(ep, evs, 50)
		if n <= 0 || errors.Is(err, unix.EINTR) {
			continue
		}
		onWake(monoNow())
	}
}

// reportWakeLatency reports each waiter's wake latency percentiles and how
// often the probe's waiter woke first on packets both saw (per packet seq,
// 1-based; 0 where a waiter missed it).
func reportWakeLatency(b *testing.B, probeWoke, probeLat, sockWoke, sockLat, efdLat []int64) {
	var pl, sl []int64
	probeFirst, both := 0, 0
	for i := 1; i < len(probeLat); i++ {
		if probeLat[i] != 0 {
			pl = append(pl, probeLat[i])
		}
		if sockLat[i] != 0 {
			sl = append(sl, sockLat[i])
		}
		if probeWoke[i] != 0 && sockWoke[i] != 0 {
			both++
			if probeWoke[i] <= sockWoke[i] {
				probeFirst++
			}
		}
	}
	pp, sp, ep := PercentilesNs(pl), PercentilesNs(sl), PercentilesNs(efdLat)
	b.ReportMetric(pp.P50, "probe_p50_us")
	b.ReportMetric(pp.P99, "probe_p99_us")
	b.ReportMetric(sp.P50, "socket_p50_us")
	b.ReportMetric(sp.P99, "socket_p99_us")
	b.ReportMetric(ep.P50, "eventfd_p50_us")
	b.ReportMetric(ep.P99, "eventfd_p99_us")
	if both > 0 {
		b.ReportMetric(float64(probeFirst)/float64(both), "probe_waiter_first_frac")
	}
	b.Logf("samples: probe %d socket %d eventfd %d", pp.N, sp.N, ep.N)
}
