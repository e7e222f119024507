package main

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/kmod/internal/uapi"
	"golang.org/x/sys/unix"
)

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
