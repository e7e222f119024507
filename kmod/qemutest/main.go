// Command qemutest exercises taichi.ko end to end inside a throwaway qemu
// VM (scripts/kmod-qemu-test.sh packs it, statically linked, into the
// initramfs): registration rules, kick->wake from CPU 0 to a SCHED_FIFO DP
// thread on CPU 1, timeouts, poll, cleanup on thread exit and on close, a
// real blocker from the test-only hold path, and bad ioctl arguments.
//
//	qemutest run [KFUNC.o]  all checks; prints HIST/LAT/BLOCKER lines and
//	                    "QEMUTEST OK" or "QEMUTEST FAILED"; with the XDP
//	                    object (kmod/bpf/kick.bpf.c) also the BPF kfunc kick
//	qemutest hold-open  register a DP thread on CPU 1 and keep the fd open
//	                    (the VM script checks rmmod refuses, then kills it)
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"

	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/kmod/internal/uapi"
)

const (
	cpCPU = 0 // kicker (the CP core)
	dpCPU = 1 // the DP core
)

var failures int

// noPreemptCountEnv is set to 1 by scripts/kmod-guest.sh when the kernel
// was built without CONFIG_PREEMPT_COUNT (read from its headers' .config).
const noPreemptCountEnv = "QEMUTEST_NO_PREEMPT_COUNT"

func failf(format string, args ...any) {
	failures++
	fmt.Printf("FAIL: "+format+"\n", args...)
}

func logf(format string, args ...any) { fmt.Printf("qemutest: "+format+"\n", args...) }

func main() {
	mode := "run"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "run":
		kfuncObj := ""
		if len(os.Args) > 2 {
			kfuncObj = os.Args[2]
		}
		run(kfuncObj)
	case "hold-open":
		holdOpen()
	default:
		fmt.Fprintln(os.Stderr, "usage: qemutest run|hold-open")
		os.Exit(2)
	}
}

// pin locks the calling goroutine to its thread and the thread to cpu.
func pin(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	return nil
}

func setFIFO(prio int) error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}, 0)
}

func rawIoctl(d *kmod.Device, req uintptr, arg unsafe.Pointer) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.FD()), req, uintptr(arg))
	return e
}

// rawIoctlAddr passes a bare address (for deliberately bad user pointers).
func rawIoctlAddr(d *kmod.Device, req, addr uintptr) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.FD()), req, addr)
	return e
}

func wantErrno(what string, got, want unix.Errno) {
	if got != want {
		failf("%s: errno %v (%d), want %v (%d)", what, got, int(got), want, int(want))
	} else {
		logf("bad input ok: %s -> %v", what, want)
	}
}

func wantErr(what string, err error, want unix.Errno) {
	var e unix.Errno
	if !errors.As(err, &e) {
		failf("%s: err %v, want %v", what, err, want)
		return
	}
	wantErrno(what, e, want)
}

// thread runs fn on its own OS thread pinned to cpu (optionally SCHED_FIFO);
// the thread exits with the goroutine (it stays locked).
func thread(cpu int, fifo bool, fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		if err := pin(cpu); err != nil {
			done <- err
			return
		}
		if fifo {
			if err := setFIFO(50); err != nil {
				done <- fmt.Errorf("SCHED_FIFO: %w", err)
				return
			}
		}
		done <- fn()
	}()
	return done
}

func await(what string, ch <-chan error, d time.Duration) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		return fmt.Errorf("%s: no answer within %v", what, d)
	}
}

func run(kfuncObj string) {
	if err := pin(cpCPU); err != nil {
		failf("%v", err)
		finish()
	}
	d, err := kmod.Open()
	if err != nil {
		failf("open: %v", err)
		finish()
	}
	defer d.Close()
	info, err := d.Info()
	if err != nil {
		failf("info: %v", err)
		finish()
	}
	logf("info %+v", info)
	if info.NrCPUs < 2 {
		failf("need 2 CPUs, module sees %d", info.NrCPUs)
		finish()
	}
	if !info.TestHold {
		failf("module not loaded with test_hold=1")
	}

	badArgs(d)
	registerRules(d)
	wakes(d)
	pollPath()
	if kfuncObj != "" {
		kfuncKick(d, info, kfuncObj)
	} else {
		logf("kfunc check skipped: no BPF object given (module built without BTF)")
	}
	blocker(d)
	exitCleanup(d)
	closeCleanup(d)
	report(d)
	// After the report, so its TCG-skewed latencies stay out of it.
	concurrentKicks(d, info)
	// Leave one record for the CLI check that follows in the VM (the
	// concurrent kicks above may have filled the ring with others).
	if b := produceBlocker(d); b != nil {
		logf("left blocker seq %d for the CLI", b.Seq)
	}
	finish()
}

func finish() {
	if failures > 0 {
		fmt.Printf("QEMUTEST FAILED (%d failures)\n", failures)
		os.Exit(1)
	}
	fmt.Println("QEMUTEST OK")
	os.Exit(0)
}

// badArgs feeds malformed arguments; each must fail with its errno and
// leave the module working.
func badArgs(d *kmod.Device) {
	const bad = 0x10 // an address no process maps

	var k uapi.Kick
	wantErrno("KICK empty mask", rawIoctl(d, uapi.IocKick, unsafe.Pointer(&k)), unix.EINVAL)
	k.CPUs[3] = 1 << 63 // CPU 255: beyond nr_cpus
	wantErrno("KICK cpu 255", rawIoctl(d, uapi.IocKick, unsafe.Pointer(&k)), unix.EINVAL)
	k = uapi.Kick{Flags: 1}
	k.CPUs[0] = 1
	wantErrno("KICK unknown flag", rawIoctl(d, uapi.IocKick, unsafe.Pointer(&k)), unix.EINVAL)
	wantErrno("KICK NULL", rawIoctl(d, uapi.IocKick, nil), unix.EFAULT)
	wantErrno("KICK bad pointer", rawIoctlAddr(d, uapi.IocKick, bad), unix.EFAULT)

	w := uapi.Wait{TimeoutNs: 1000}
	wantErrno("WAIT unregistered", rawIoctl(d, uapi.IocWait, unsafe.Pointer(&w)), unix.ENOENT)
	w = uapi.Wait{TimeoutNs: 0}
	wantErrno("WAIT timeout 0", rawIoctl(d, uapi.IocWait, unsafe.Pointer(&w)), unix.EINVAL)
	w = uapi.Wait{TimeoutNs: uapi.MaxWaitNs + 1}
	wantErrno("WAIT timeout > 10s", rawIoctl(d, uapi.IocWait, unsafe.Pointer(&w)), unix.EINVAL)
	w = uapi.Wait{TimeoutNs: 1000, Flags: 0x80}
	wantErrno("WAIT unknown flag", rawIoctl(d, uapi.IocWait, unsafe.Pointer(&w)), unix.EINVAL)
	wantErrno("WAIT bad pointer", rawIoctlAddr(d, uapi.IocWait, bad), unix.EFAULT)

	s := uapi.Stats{CPU: 7}
	wantErrno("STATS cpu 7", rawIoctl(d, uapi.IocStats, unsafe.Pointer(&s)), unix.EINVAL)
	s = uapi.Stats{CPU: 0, Flags: 1}
	wantErrno("STATS unknown flag", rawIoctl(d, uapi.IocStats, unsafe.Pointer(&s)), unix.EINVAL)
	wantErrno("STATS NULL", rawIoctl(d, uapi.IocStats, nil), unix.EFAULT)

	b := uapi.Blockers{CPU: uapi.AllCPUs, Max: uapi.MaxRecords + 1, Records: 0x1000}
	wantErrno("BLOCKERS max 4097", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EINVAL)
	b = uapi.Blockers{CPU: uapi.AllCPUs, Max: 1}
	wantErrno("BLOCKERS NULL records", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EFAULT)
	b = uapi.Blockers{CPU: 9}
	wantErrno("BLOCKERS cpu 9", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EINVAL)
	b = uapi.Blockers{CPU: 0, Flags: 2}
	wantErrno("BLOCKERS unknown flag", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EINVAL)

	for _, h := range []uapi.Hold{{Usec: 0}, {Usec: uapi.MaxHoldMicros + 1}, {Usec: 10, Flags: 1}} {
		wantErrno(fmt.Sprintf("TEST_HOLD %+v", h), rawIoctl(d, uapi.IocTestHold, unsafe.Pointer(&h)), unix.EINVAL)
	}
	wantErrno("TEST_HOLD bad pointer", rawIoctlAddr(d, uapi.IocTestHold, bad), unix.EFAULT)

	r := uapi.Register{Flags: 1}
	wantErrno("REGISTER unknown flag", rawIoctl(d, uapi.IocRegister, unsafe.Pointer(&r)), unix.EINVAL)
	wantErrno("UNREGISTER unregistered", rawIoctl(d, uapi.IocUnregister, nil), unix.ENOENT)
	wantErrno("INFO NULL", rawIoctl(d, uapi.IocInfo, nil), unix.EFAULT)
	wantErrno("unknown ioctl", rawIoctl(d, 0xD763, nil), unix.ENOTTY)

	// A thread allowed on both CPUs is no DP thread.
	err := await("register unpinned", spawnUnpinned(func() error {
		_, err := d.Register()
		return err
	}), 5*time.Second)
	wantErr("REGISTER thread allowed on 2 CPUs", err, unix.EINVAL)

	if _, err := d.Info(); err != nil {
		failf("module unusable after bad input: %v", err)
	}
}

func spawnUnpinned(fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(0)
		set.Set(1)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return done
}

func registerRules(d *kmod.Device) {
	release := make(chan struct{})
	registered := make(chan int, 1)
	a := thread(dpCPU, false, func() error {
		cpu, err := d.Register()
		if err != nil {
			return err
		}
		if cpu2, err := d.Register(); err != nil || cpu2 != cpu {
			return fmt.Errorf("second REGISTER of the same thread: cpu %d err %v", cpu2, err)
		}
		registered <- unix.Gettid()
		<-release
		// Registered on CPU 1: moving to CPU 0 and registering again is refused.
		var set unix.CPUSet
		set.Set(cpCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return err
		}
		if _, err := d.Register(); !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("REGISTER on a second CPU: %v, want EBUSY", err)
		}
		w := uapi.Wait{TimeoutNs: 0}
		if e := rawIoctl(d, uapi.IocWait, unsafe.Pointer(&w)); e != unix.EINVAL {
			return fmt.Errorf("WAIT timeout 0 while registered: %v, want EINVAL", e)
		}
		if err := d.Unregister(); err != nil {
			return err
		}
		if err := d.Unregister(); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("second UNREGISTER: %v, want ENOENT", err)
		}
		return nil
	})
	var tid int
	select {
	case tid = <-registered:
	case err := <-a:
		failf("register: %v", err)
		return
	case <-time.After(5 * time.Second):
		failf("register: no answer")
		return
	}
	if st, err := d.Stats(dpCPU); err != nil || st.DPTid != tid {
		failf("STATS dp_tid = %d (err %v), want %d", st.DPTid, err, tid)
	}
	err := await("second thread", thread(dpCPU, false, func() error {
		_, err := d.Register()
		return err
	}), 5*time.Second)
	wantErr("REGISTER a second thread on a taken CPU", err, unix.EBUSY)
	close(release)
	if err := await("register rules", a, 5*time.Second); err != nil {
		failf("register rules: %v", err)
	}
	if st, _ := d.Stats(dpCPU); st.DPTid != 0 {
		failf("after UNREGISTER dp_tid = %d", st.DPTid)
	}
	logf("register rules ok")
}

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

// blocker: a CP thread on the DP core spins in the kernel with a spinlock
// held while CPU 0 kicks the DP thread; the IPI must catch it.
func blocker(d *kmod.Device) {
	found := produceBlocker(d)
	if found == nil {
		return
	}
	out, _ := json.Marshal(found)
	fmt.Printf("BLOCKER %s\n", out)
	if !found.Waited || found.WaitNs <= 0 {
		failf("blocker record has no kick->run wait: %+v", found)
	}
	switch {
	case os.Getenv(noPreemptCountEnv) == "1":
		// Without CONFIG_PREEMPT_COUNT (Debian's arm64 kernels, voluntary
		// preemption) a spinlock does not raise preempt_count: what kept the
		// DP thread waiting is the kernel's preemption model, and the record
		// must say that.
		if found.Flags&kmod.BlockerNoKPreempt == 0 {
			failf("blocker record on a kernel without preempt counting should show no kernel preemption: %+v", found)
		}
		logf("blocker: kernel without CONFIG_PREEMPT_COUNT: record flags no-kernel-preemption (preempt count %d)", found.PreemptCount)
	case found.PreemptCount&0xff == 0 || found.Flags&kmod.BlockerPreemptOff == 0:
		failf("blocker record should show preemption off (spinlock held): %+v", found)
	}
	if found.Comm != "qemutest" || found.CPU != dpCPU || found.Tgid != os.Getpid() {
		failf("blocker record names the wrong task: %+v", found)
	}

	// A copy-out to a bad pointer fails and consumes nothing.
	held, _ := d.Blockers(dpCPU, false)
	b := uapi.Blockers{CPU: dpCPU, Max: 4, Records: 0x1000, Flags: uapi.BlockersConsume}
	wantErrno("BLOCKERS bad records pointer", rawIoctl(d, uapi.IocBlockers, unsafe.Pointer(&b)), unix.EFAULT)
	if again, _ := d.Blockers(dpCPU, false); len(again) != len(held) {
		failf("failed BLOCKERS consumed records: %d before, %d after", len(held), len(again))
	}
	got, err := d.Blockers(dpCPU, true)
	if err != nil || len(got) != len(held) {
		failf("consume: %d records err %v, want %d", len(got), err, len(held))
	}
	if left, _ := d.Blockers(dpCPU, false); len(left) != 0 {
		failf("%d records left after consume", len(left))
	}
	logf("blocker ok")
}

// exitCleanup: a registered thread that exits without unregistering frees
// its CPU (Go terminates a goroutine's locked thread when it returns).
func exitCleanup(d *kmod.Device) {
	err := await("exiting thread", thread(dpCPU, false, func() error {
		_, err := d.Register()
		return err
	}), 5*time.Second)
	if err != nil {
		failf("register: %v", err)
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := d.Stats(dpCPU)
		if err == nil && st.DPTid == 0 {
			break
		}
		if time.Now().After(deadline) {
			failf("thread exited but CPU %d still has DP thread %d", dpCPU, st.DPTid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	logf("exit cleanup ok")
}

// closeCleanup: closing the fd a DP thread registered through drops it.
func closeCleanup(d *kmod.Device) {
	d3, err := kmod.Open()
	if err != nil {
		failf("open: %v", err)
		return
	}
	registered := make(chan struct{})
	release := make(chan struct{})
	done := thread(dpCPU, false, func() error {
		if _, err := d3.Register(); err != nil {
			return err
		}
		close(registered)
		<-release
		return nil
	})
	select {
	case <-registered:
	case err := <-done:
		failf("register: %v", err)
		return
	}
	d3.Close()
	if st, _ := d.Stats(dpCPU); st.DPTid != 0 {
		failf("fd closed but CPU %d still has DP thread %d", dpCPU, st.DPTid)
	}
	close(release)
	<-done
	logf("close cleanup ok")
}

// blockerAttempts bounds produceBlocker's tries.
const blockerAttempts = 100

// produceBlocker kicks the DP core while a CP thread holds the test
// spinlock there until a record names it (at most blockerAttempts tries).
func produceBlocker(d *kmod.Device) *kmod.Blocker {
	dp, err := startDP(d)
	if err != nil {
		failf("%v", err)
		return nil
	}
	defer func() {
		if err := dp.stop(); err != nil {
			failf("%v", err)
		}
	}()
	holdCmd := make(chan struct{})
	holdDone := make(chan error)
	cpTid := make(chan int, 1)
	cp := thread(dpCPU, false, func() error {
		cpTid <- unix.Gettid()
		for range holdCmd {
			holdDone <- d.TestHold(8 * time.Millisecond)
		}
		return nil
	})
	defer func() {
		close(holdCmd)
		if err := await("CP thread", cp, 5*time.Second); err != nil {
			failf("CP thread: %v", err)
		}
	}()
	tid := <-cpTid

	// Under TCG the kick's IPI often lands after the 8 ms hold ended (one
	// host thread runs both vCPUs): a miss costs ~10 ms, so try often.
	for attempt := 0; attempt < blockerAttempts; attempt++ {
		dp.cmd <- 2 * time.Second
		time.Sleep(time.Millisecond)
		holdCmd <- struct{}{}
		time.Sleep(2 * time.Millisecond) // the CP thread is now spinning on CPU 1
		if _, err := d.Kick(dpCPU); err != nil {
			failf("kick: %v", err)
			return nil
		}
		if _, ok := dp.result("blocker kick"); !ok {
			return nil
		}
		if err := <-holdDone; err != nil {
			failf("TEST_HOLD: %v", err)
			return nil
		}
		recs, err := d.Blockers(dpCPU, false)
		if err != nil {
			failf("blockers: %v", err)
			return nil
		}
		for i := range recs {
			// The IP may be in a helper the hold loop calls (under TCG
			// often read_hpet): then the hold is among the callers.
			path := recs[i].Symbol + " " + strings.Join(recs[i].Callers, " ")
			if recs[i].Pid == tid && strings.Contains(path, "taichi_test_hold_spin") {
				return &recs[i]
			}
		}
	}
	st, _ := d.Stats(dpCPU)
	recs, _ := d.Blockers(dpCPU, false)
	failf("no blocker record naming taichi_test_hold_spin for tid %d after %d kicks (stats %+v, records %+v)", tid, blockerAttempts, st, recs)
	return nil
}

func report(d *kmod.Device) {
	st, err := d.Stats(dpCPU)
	if err != nil {
		failf("stats: %v", err)
		return
	}
	out, _ := json.Marshal(st)
	fmt.Printf("STATS %s\n", out)
	printHist("all", st.Latency)
}

func printHist(label string, h kmod.Histogram) {
	fmt.Printf("LAT %s: count=%d mean=%v p50<=%v p90<=%v p99<=%v max(all)=%v\n", label, h.Count, h.Mean(),
		h.Quantile(0.5), h.Quantile(0.9), h.Quantile(0.99), time.Duration(h.MaxNs))
	for i, n := range h.Buckets {
		if n == 0 {
			continue
		}
		lo, hi := kmod.BucketBounds(i)
		fmt.Printf("HIST %s [%v, %v) %d\n", label, lo, hi, n)
	}
}

// holdOpen keeps a DP thread registered with the fd open until killed.
func holdOpen() {
	d, err := kmod.Open()
	if err != nil {
		fmt.Println("hold-open:", err)
		os.Exit(1)
	}
	done := thread(dpCPU, false, func() error {
		if _, err := d.Register(); err != nil {
			return err
		}
		fmt.Println("HOLDING")
		for {
			if _, err := d.Wait(time.Second); err != nil {
				return err
			}
		}
	})
	err = <-done
	fmt.Println("hold-open:", err)
	os.Exit(1)
}
