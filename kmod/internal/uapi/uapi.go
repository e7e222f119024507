// Package uapi mirrors kmod/module/taichi_uapi.h, the ioctl ABI of
// /dev/taichi, for the kmod client and the in-VM test binary.
package uapi

import "unsafe"

// The types mirror the C structs field by field; TestLayoutMatchesC compiles
// the header with clang for the architecture it runs as (amd64, or arm64
// under qemu-user) and checks every size, offset and constant.

const (
	ABIVersion = 1

	// MaxCPUs is the number of CPUs a kick mask can name.
	MaxCPUs   = 256
	MaskWords = MaxCPUs / 64
	AllCPUs   = 0xffffffff

	// HistBuckets is the number of kick->run latency buckets; see BucketBounds.
	HistBuckets = 32
	HistShift   = 10

	CommLen = 16
	SymLen  = 96
	Callers = 4 // callers kept per blocker record

	// MaxRecords is the most blocker records one Blockers call copies out.
	MaxRecords = 4096
	// MaxWaitNs bounds a WAIT: a DP thread never sleeps longer in the module.
	MaxWaitNs = 10_000_000_000
	// MaxHoldMicros bounds TestHold.
	MaxHoldMicros = 10_000

	WaitNonblock    = 0x1
	WaitNone        = 0
	WaitKicked      = 1
	WaitTimeout     = 2
	BlockersConsume = 0x1
)

// Info flags (Info.Flags, Stats.InfoFlags).
const (
	InfoKfunc     = 0x1 // BPF kfunc taichi_kick_cpu registered for XDP programs
	InfoTestHold  = 0x2 // module loaded with test_hold=1
	InfoLatSwitch = 0x4 // kick->run latency measured at sched_switch (else at WAIT return)
	InfoExitHook  = 0x8 // registrations dropped as soon as the DP thread exits
)

// Blocker flags (Blocker.Flags).
const (
	BlockerPreemptOff = 0x1 // the interrupted path had preemption disabled
	BlockerSoftirq    = 0x2 // ... was a softirq or bh-disabled section
	BlockerNoKPreempt = 0x4 // the kernel's preemption model is none/voluntary
	BlockerWaited     = 0x8 // WaitNs is known: the DP thread has run since
)

type Info struct {
	AbiVersion uint32
	NrCPUs     uint32
	Flags      uint32
	RingLen    uint32
}

type Register struct {
	Flags uint32
	CPU   uint32
}

type Wait struct {
	TimeoutNs uint64
	KickNs    uint64
	Flags     uint32
	Result    uint32
}

type Kick struct {
	CPUs  [MaskWords]uint64
	Flags uint32
	Woken uint32
}

type Stats struct {
	CPU             uint32
	Flags           uint32
	DPTid           int32
	InfoFlags       uint32
	Kicks           uint64
	KicksNoDP       uint64
	Wakes           uint64
	Timeouts        uint64
	IPIs            uint64
	IPIsBusy        uint64
	Blockers        uint64
	BlockersDropped uint64
	LatCount        uint64
	LatSumNs        uint64
	LatMaxNs        uint64
	Hist            [HistBuckets]uint64
}

type Blocker struct {
	Seq          uint64
	TimeNs       uint64
	KickNs       uint64
	WaitNs       uint64
	Pid          int32
	Tgid         int32
	CPU          uint32
	PreemptCount uint32
	Flags        uint32
	Pad          uint32
	Comm         [CommLen]byte
	Symbol       [SymLen]byte
	Callers      [Callers][SymLen]byte
}

type Blockers struct {
	Records uint64
	CPU     uint32
	Max     uint32
	Flags   uint32
	Count   uint32
}

type Hold struct {
	Usec  uint32
	Flags uint32
}

// ioctl request encoding (asm-generic/ioctl.h; x86_64 and arm64 share it).
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
	iocMagic = 0xD7
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | iocMagic<<8 | nr
}

var (
	IocInfo       = ioc(iocRead, 0, unsafe.Sizeof(Info{}))
	IocRegister   = ioc(iocRead|iocWrite, 1, unsafe.Sizeof(Register{}))
	IocUnregister = ioc(iocNone, 2, 0)
	IocWait       = ioc(iocRead|iocWrite, 3, unsafe.Sizeof(Wait{}))
	IocKick       = ioc(iocRead|iocWrite, 4, unsafe.Sizeof(Kick{}))
	IocStats      = ioc(iocRead|iocWrite, 5, unsafe.Sizeof(Stats{}))
	IocBlockers   = ioc(iocRead|iocWrite, 6, unsafe.Sizeof(Blockers{}))
	IocTestHold   = ioc(iocWrite, 7, unsafe.Sizeof(Hold{}))
)
