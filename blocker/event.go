package blocker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
)

// Kind says what an Event reports.
type Kind uint16

const (
	// KindBlame: a DP thread waited at least the threshold from wake to run.
	KindBlame Kind = 1
	// KindExec: a process whose command is watched (SetCommands) started.
	KindExec Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindBlame:
		return "blame"
	case KindExec:
		return "exec"
	}
	return fmt.Sprintf("kind(%d)", uint16(k))
}

// Flags of a blame event, as the tracer saw the blamed task at the switch.
const (
	// FlagInKernel: the blamed task was in a kernel path (any of the
	// kernel-mode flags below).
	FlagInKernel uint32 = 0x1
	// FlagKernelThread: the blamed task is a kernel thread (PF_KTHREAD).
	FlagKernelThread uint32 = 0x2
	// FlagPreempted: the switch preempted it; on a kernel without full
	// preemption that happens only at a kernel preemption point.
	FlagPreempted uint32 = 0x4
	// FlagSyscall: its entry registers show a system call in progress.
	FlagSyscall uint32 = 0x8
	// FlagKernelRegs: its saved registers are a kernel-mode frame.
	FlagKernelRegs uint32 = 0x10
	// FlagOther: OtherPID/OtherTGID name the last other task that got the
	// CPU while the DP thread waited.
	FlagOther uint32 = 0x20

	knownFlags = FlagInKernel | FlagKernelThread | FlagPreempted | FlagSyscall | FlagKernelRegs | FlagOther
	// kernelModeFlags each imply FlagInKernel.
	kernelModeFlags = FlagKernelThread | FlagPreempted | FlagSyscall | FlagKernelRegs
)

// Event is one tracer record.
type Event struct {
	Kind Kind
	CPU  int
	// DPTID is the delayed DP thread (KindBlame; 0 for KindExec).
	DPTID   int
	StampNs int64         // bpf_ktime_get_ns() at the switch or exec: CLOCK_MONOTONIC
	Delay   time.Duration // wake→run (KindBlame; 0 for KindExec)
	// PID and TGID name the blamed task (KindBlame: the task switched out
	// when the DP thread ran) or the exec'ing one (KindExec).
	PID, TGID int
	Flags     uint32
	// OtherPID and OtherTGID are set with FlagOther.
	OtherPID, OtherTGID int
	// CgroupID is the task's cgroup v2 id (the inode of its unified-hierarchy
	// directory); 0 when unknown.
	CgroupID uint64
	Comm     string
}

// InKernel reports FlagInKernel.
func (e Event) InKernel() bool { return e.Flags&FlagInKernel != 0 }

// KernelThread reports FlagKernelThread.
func (e Event) KernelThread() bool { return e.Flags&FlagKernelThread != 0 }

// Wire format of struct event in blocker/bpf/tracer.c (host byte order).
const (
	EventSize    = 80
	eventMagic   = 0x54434842 // "TCHB"
	eventVersion = 1
	commLen      = 16
)

// DecodeEvent parses one ring-buffer record. It rejects records of the
// wrong size, magic or version, and values the tracer cannot produce.
func DecodeEvent(b []byte) (Event, error) {
	if len(b) != EventSize {
		return Event{}, fmt.Errorf("blocker event: %d bytes, want %d", len(b), EventSize)
	}
	ne := binary.NativeEndian
	if m := ne.Uint32(b[0:]); m != eventMagic {
		return Event{}, fmt.Errorf("blocker event: magic %#x, want %#x", m, eventMagic)
	}
	if v := ne.Uint16(b[4:]); v != eventVersion {
		return Event{}, fmt.Errorf("blocker event: version %d, want %d", v, eventVersion)
	}
	delay := ne.Uint64(b[24:])
	ev := Event{
		Kind:      Kind(ne.Uint16(b[6:])),
		CPU:       int(ne.Uint32(b[8:])),
		DPTID:     int(ne.Uint32(b[12:])),
		StampNs:   int64(ne.Uint64(b[16:])),
		PID:       int(ne.Uint32(b[32:])),
		TGID:      int(ne.Uint32(b[36:])),
		Flags:     ne.Uint32(b[40:]),
		OtherPID:  int(ne.Uint32(b[44:])),
		OtherTGID: int(ne.Uint32(b[48:])),
		CgroupID:  ne.Uint64(b[56:]),
	}
	comm := b[64:80]
	n := bytes.IndexByte(comm, 0)
	if n < 0 {
		return Event{}, fmt.Errorf("blocker event: comm not NUL-terminated")
	}
	ev.Comm = string(comm[:n])
	switch {
	case ev.Kind != KindBlame && ev.Kind != KindExec:
		return Event{}, fmt.Errorf("blocker event: kind %d, want %d (blame) or %d (exec)", uint16(ev.Kind), KindBlame, KindExec)
	case ev.CPU >= maxCPUs:
		return Event{}, fmt.Errorf("blocker event: cpu %d out of range 0..%d", ev.CPU, maxCPUs-1)
	case ev.StampNs <= 0:
		return Event{}, fmt.Errorf("blocker event: stamp %d not positive", ev.StampNs)
	case delay > uint64(ev.StampNs):
		return Event{}, fmt.Errorf("blocker event: delay %d ns longer than the clock's %d ns", delay, ev.StampNs)
	case ev.PID <= 0 || ev.TGID <= 0 || ev.PID > maxPID || ev.TGID > maxPID:
		return Event{}, fmt.Errorf("blocker event: pid %d tgid %d, want 1..%d", ev.PID, ev.TGID, maxPID)
	case ev.Flags&^knownFlags != 0:
		return Event{}, fmt.Errorf("blocker event: unknown flags %#x", ev.Flags&^knownFlags)
	case ev.Flags&kernelModeFlags != 0 && ev.Flags&FlagInKernel == 0:
		return Event{}, fmt.Errorf("blocker event: flags %#x name a kernel mode without the in-kernel flag", ev.Flags)
	case ev.Flags&FlagOther == 0 && (ev.OtherPID != 0 || ev.OtherTGID != 0):
		return Event{}, fmt.Errorf("blocker event: other task %d/%d without its flag", ev.OtherPID, ev.OtherTGID)
	case ev.Flags&FlagOther != 0 && (ev.OtherPID <= 0 || ev.OtherTGID <= 0):
		return Event{}, fmt.Errorf("blocker event: other-task flag with other task %d/%d", ev.OtherPID, ev.OtherTGID)
	}
	if ev.Kind == KindBlame {
		if ev.DPTID <= 0 || ev.DPTID > maxPID {
			return Event{}, fmt.Errorf("blocker event: blame for dp tid %d, want 1..%d", ev.DPTID, maxPID)
		}
		ev.Delay = time.Duration(delay)
	} else if ev.DPTID != 0 || delay != 0 || ev.Flags != 0 {
		return Event{}, fmt.Errorf("blocker event: exec record with dp tid %d, delay %d, flags %#x (want 0)", ev.DPTID, delay, ev.Flags)
	}
	return ev, nil
}

// maxPID is the kernel's PID_MAX_LIMIT (4M on 64-bit).
const maxPID = 4 << 20
