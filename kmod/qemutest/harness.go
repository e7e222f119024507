package main

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/taichi-sched/taichi/kmod"
	"golang.org/x/sys/unix"
)

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
