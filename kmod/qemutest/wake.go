package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/taichi-sched/taichi/kmod"
	"golang.org/x/sys/unix"
)

// dpThread is a registered SCHED_FIFO DP thread on dpCPU that waits when
// told to and reports what woke it.
type dpThread struct {
	cmd  chan time.Duration
	wake chan kmod.Wake
	done <-chan error
	tid  int
}

func startDP(d *kmod.Device) (*dpThread, error) {
	t := &dpThread{cmd: make(chan time.Duration), wake: make(chan kmod.Wake)}
	ready := make(chan int, 1)
	t.done = thread(dpCPU, true, func() error {
		if _, err := d.Register(); err != nil {
			return err
		}
		defer d.Unregister()
		ready <- unix.Gettid()
		for timeout := range t.cmd {
			w, err := d.Wait(timeout)
			if err != nil {
				return err
			}
			t.wake <- w
		}
		return nil
	})
	select {
	case t.tid = <-ready:
		return t, nil
	case err := <-t.done:
		return nil, err
	case <-time.After(5 * time.Second):
		return nil, errors.New("DP thread did not register")
	}
}

func (t *dpThread) stop() error {
	close(t.cmd)
	return await("DP thread exit", t.done, 5*time.Second)
}

func (t *dpThread) result(what string) (kmod.Wake, bool) {
	select {
	case w := <-t.wake:
		return w, true
	case err := <-t.done:
		failf("%s: DP thread: %v", what, err)
	case <-time.After(5 * time.Second):
		failf("%s: DP thread did not come back", what)
	}
	return kmod.Wake{}, false
}

const kicks = 200

func wakes(d *kmod.Device) {
	before, err := d.Stats(dpCPU)
	if err != nil {
		failf("stats: %v", err)
		return
	}
	dp, err := startDP(d)
	if err != nil {
		failf("%v", err)
		return
	}
	kicked := 0
	for i := 0; i < kicks; i++ {
		dp.cmd <- 2 * time.Second
		time.Sleep(2 * time.Millisecond) // let it sleep in WAIT
		n, err := d.Kick(dpCPU)
		if err != nil || n != 1 {
			failf("kick %d: woken %d err %v", i, n, err)
			break
		}
		w, ok := dp.result("kick")
		if !ok {
			break
		}
		if !w.Kicked || w.KickNs <= 0 {
			failf("kick %d: DP woke with %+v, want kicked with a stamp", i, w)
			break
		}
		kicked++
	}
	dp.cmd <- 20 * time.Millisecond
	if w, ok := dp.result("timeout"); ok && w.Kicked {
		failf("WAIT(20ms) with no kick returned kicked")
	}
	if err := dp.stop(); err != nil {
		failf("%v", err)
	}
	after, _ := d.Stats(dpCPU)
	if got := after.Kicks - before.Kicks; got != kicks {
		failf("stats kicks +%d, want %d", got, kicks)
	}
	if got := after.Wakes - before.Wakes; got != uint64(kicked) {
		failf("stats wakes +%d, want %d", got, kicked)
	}
	if got := after.Latency.Count - before.Latency.Count; got != uint64(kicked) {
		failf("latency samples +%d, want one per kick (%d)", got, kicked)
	}
	if after.Timeouts-before.Timeouts != 1 {
		failf("stats timeouts +%d, want 1", after.Timeouts-before.Timeouts)
	}
	if after.KicksNoDP != before.KicksNoDP {
		failf("kicks found no DP thread: %d", after.KicksNoDP-before.KicksNoDP)
	}
	// With nobody registered the kick is counted and nobody is woken.
	if n, err := d.Kick(dpCPU); err != nil || n != 0 {
		failf("kick of an empty CPU: woken %d err %v", n, err)
	}
	logf("wakes ok: %d kicks from CPU %d woke the DP thread on CPU %d", kicked, cpCPU, dpCPU)
	// The kicks that met no blocker, alone (report() shows all of them).
	h := after.Latency
	h.Count -= before.Latency.Count
	h.SumNs -= before.Latency.SumNs
	for i := range h.Buckets {
		h.Buckets[i] -= before.Latency.Buckets[i]
	}
	printHist("unblocked", h)
}

// kfuncKick: an XDP program calling the module's kfunc taichi_kick_cpu
// wakes the DP thread (run through BPF_PROG_TEST_RUN on CPU 0).
func kfuncKick(d *kmod.Device, info kmod.Info, obj string) {
	if !info.Kfunc {
		failf("module has no kfunc registered, but the test was built with module BTF")
		return
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		failf("kfunc: %v", err)
		return
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		failf("kfunc: load XDP program calling taichi_kick_cpu: %v", err)
		return
	}
	defer coll.Close()
	prog := coll.Programs["taichi_kick"]
	if prog == nil {
		failf("kfunc: program taichi_kick missing in %s", obj)
		return
	}
	before, _ := d.Stats(dpCPU)
	dp, err := startDP(d)
	if err != nil {
		failf("%v", err)
		return
	}
	dp.cmd <- 2 * time.Second
	time.Sleep(2 * time.Millisecond)
	ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		failf("kfunc: test run: %v", err)
	} else if ret != 2 { // XDP_PASS: taichi_kick_cpu returned 1
		failf("kfunc: XDP program returned %d, want XDP_PASS (a DP thread woken)", ret)
	}
	if w, ok := dp.result("kfunc kick"); ok && !w.Kicked {
		failf("kfunc: DP thread woke without a kick: %+v", w)
	}
	if err := dp.stop(); err != nil {
		failf("%v", err)
	}
	if after, _ := d.Stats(dpCPU); after.Wakes-before.Wakes != 1 || after.Kicks-before.Kicks != 1 {
		failf("kfunc: stats kicks +%d wakes +%d, want +1 each", after.Kicks-before.Kicks, after.Wakes-before.Wakes)
	}
	logf("kfunc ok: XDP program kicked CPU %d through taichi_kick_cpu", dpCPU)
}

// concurrentKicks: kickers on two other CPUs hammer the DP core at once
// (the per-CPU inspection IPI must never be queued twice); every kick is
// counted and either sends the IPI or finds it still in flight.
func concurrentKicks(d *kmod.Device, info kmod.Info) {
	if info.NrCPUs < 3 {
		logf("concurrent kicks skipped: needs 3 CPUs, have %d", info.NrCPUs)
		return
	}
	before, _ := d.Stats(dpCPU)
	stop := make(chan struct{})
	dpDone := thread(dpCPU, true, func() error {
		if _, err := d.Register(); err != nil {
			return err
		}
		defer d.Unregister()
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			if _, err := d.Wait(time.Millisecond); err != nil {
				return err
			}
		}
	})
	time.Sleep(10 * time.Millisecond)
	counts := make(chan int, 2)
	for _, cpu := range []int{cpCPU, 2} {
		go func() {
			n := 0
			if pin(cpu) == nil {
				for end := time.Now().Add(time.Second); time.Now().Before(end); n++ {
					if _, err := d.Kick(dpCPU); err != nil {
						failf("concurrent kick from CPU %d: %v", cpu, err)
						break
					}
				}
			}
			counts <- n
		}()
	}
	total := <-counts + <-counts
	close(stop)
	if err := await("DP thread", dpDone, 5*time.Second); err != nil {
		failf("concurrent kicks: DP thread: %v", err)
	}
	after, _ := d.Stats(dpCPU)
	kicks := after.Kicks - before.Kicks
	ipis := (after.IPIs - before.IPIs) + (after.IPIsBusy - before.IPIsBusy)
	noDP := after.KicksNoDP - before.KicksNoDP
	if kicks != uint64(total) {
		failf("concurrent kicks: stats +%d, issued %d", kicks, total)
	}
	if ipis+noDP != kicks {
		failf("concurrent kicks: %d IPIs sent or skipped + %d without DP != %d kicks", ipis, noDP, kicks)
	}
	if after.Wakes == before.Wakes {
		failf("concurrent kicks: the DP thread never woke")
	}
	logf("concurrent kicks ok: %d kicks from CPUs 0 and 2 (IPIs sent %d, in flight %d), %d wakes",
		total, after.IPIs-before.IPIs, after.IPIsBusy-before.IPIsBusy, after.Wakes-before.Wakes)
}

// pollPath: a DP loop that waits in epoll beside its sockets (through
// kmod.WakeSource) sees a kick as readable and consumes it without sleeping
// in the module; the fd joins epoll before the thread registers.
func pollPath() {
	ws, err := kmod.NewWakeSource()
	if err != nil {
		failf("wake source: %v", err)
		return
	}
	defer ws.Close()
	fds := []unix.PollFd{{Fd: int32(ws.FD()), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err != nil || n != 0 {
		failf("poll without a registration: n %d revents %#x err %v, want never ready", n, fds[0].Revents, err)
	}
	ready := make(chan struct{})
	done := thread(dpCPU, true, func() error {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(ep)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ws.FD(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ws.FD())}); err != nil {
			return err
		}
		ws.Arm() // registers this thread
		if err := ws.Err(); err != nil {
			return fmt.Errorf("arm: %w", err)
		}
		if _, ok := ws.Disarm(); ok {
			return errors.New("disarm before any kick reported a kick")
		}
		close(ready)
		events := make([]unix.EpollEvent, 1)
		for {
			n, err := unix.EpollWait(ep, events, 3000)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n != 1 || events[0].Events&unix.EPOLLIN == 0 {
				return fmt.Errorf("epoll: n %d events %#x err %v", n, events[0].Events, err)
			}
			break
		}
		stamp, ok := ws.Disarm()
		if !ok || stamp <= 0 {
			return fmt.Errorf("disarm after EPOLLIN: stamp %d ok %v", stamp, ok)
		}
		if _, ok := ws.Disarm(); ok {
			return errors.New("a kick was reported twice")
		}
		return nil
	})
	select {
	case <-ready:
	case err := <-done:
		failf("poll path: %v", err)
		return
	}
	time.Sleep(2 * time.Millisecond)
	if n, err := ws.Device().Kick(dpCPU); err != nil || n != 1 {
		failf("kick: woken %d err %v", n, err)
	}
	if err := await("poll path", done, 5*time.Second); err != nil {
		failf("poll path: %v", err)
		return
	}
	logf("poll path ok (epoll + WakeSource)")
}
