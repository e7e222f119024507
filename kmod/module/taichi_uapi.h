/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * taichi_uapi.h - the ioctl ABI of /dev/taichi, shared by the kernel module,
 * the Go client (kmod/abi.go mirrors it; kmod's layout test compiles this
 * header with clang for x86_64 and arm64 and compares sizeof/offsetof) and
 * any C user.
 *
 * Every struct is naturally aligned with explicit padding, so its layout is
 * the same on x86_64 and arm64 and the kernel never copies out padding bytes.
 * Every "flags" field that is an input must be zero unless a flag is defined.
 */
#ifndef TAICHI_UAPI_H
#define TAICHI_UAPI_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

#define TAICHI_DEVICE		"/dev/taichi"
#define TAICHI_ABI_VERSION	1

#define TAICHI_MAX_CPUS		256	/* CPUs a KICK mask can name */
#define TAICHI_MASK_WORDS	(TAICHI_MAX_CPUS / 64)
#define TAICHI_ALL_CPUS		0xffffffffu	/* STATS/BLOCKERS: every CPU */

/* kick->run latency histogram: bucket 0 counts < 2^TAICHI_HIST_SHIFT ns,
 * bucket i (i >= 1) counts [2^(i+SHIFT-1), 2^(i+SHIFT)) ns, the last one
 * everything above. */
#define TAICHI_HIST_BUCKETS	32
#define TAICHI_HIST_SHIFT	10

#define TAICHI_COMM_LEN		16
#define TAICHI_SYM_LEN		96
#define TAICHI_CALLERS		4	/* callers kept per blocker */
#define TAICHI_RING_LEN		64	/* blocker records kept per CPU */
#define TAICHI_MAX_RECORDS	4096	/* records one BLOCKERS call may ask for */
#define TAICHI_MAX_WAIT_NS	10000000000ull	/* 10 s: a DP wait is always bounded */
#define TAICHI_MAX_HOLD_US	10000	/* TEST_HOLD bound: 10 ms */

/* taichi_info.flags */
#define TAICHI_INFO_KFUNC	0x1	/* BPF kfunc taichi_kick_cpu registered for XDP */
#define TAICHI_INFO_TEST_HOLD	0x2	/* module loaded with test_hold=1 */
#define TAICHI_INFO_LAT_SWITCH	0x4	/* latency measured at sched_switch (else at WAIT return) */
#define TAICHI_INFO_EXIT_HOOK	0x8	/* registrations dropped at sched_process_exit */

struct taichi_info {
	__u32 abi_version;
	__u32 nr_cpus;		/* nr_cpu_ids of the running kernel */
	__u32 flags;		/* TAICHI_INFO_* */
	__u32 ring_len;
};

/* REGISTER: the calling thread must be allowed on exactly one CPU. */
struct taichi_register {
	__u32 flags;		/* in: 0 */
	__u32 cpu;		/* out: the CPU it is now the DP thread of */
};

/* taichi_wait.flags */
#define TAICHI_WAIT_NONBLOCK	0x1	/* do not sleep: consume a pending kick, if any */
/* taichi_wait.result */
#define TAICHI_WAIT_NONE	0	/* NONBLOCK and nothing pending */
#define TAICHI_WAIT_KICKED	1
#define TAICHI_WAIT_TIMEOUT	2

struct taichi_wait {
	__u64 timeout_ns;	/* in: 1..TAICHI_MAX_WAIT_NS (ignored with NONBLOCK) */
	__u64 kick_ns;		/* out: CLOCK_MONOTONIC stamp of the kick that woke us */
	__u32 flags;		/* in: TAICHI_WAIT_* */
	__u32 result;		/* out: TAICHI_WAIT_{NONE,KICKED,TIMEOUT} */
};

/* KICK: wake the DP thread of every CPU in the mask. */
struct taichi_kick {
	__u64 cpus[TAICHI_MASK_WORDS];	/* in: bit n = CPU n; bits >= nr_cpus rejected */
	__u32 flags;		/* in: 0 */
	__u32 woken;		/* out: CPUs in the mask that had a DP thread */
};

/* STATS: counters of one CPU, or their sum with cpu = TAICHI_ALL_CPUS. */
struct taichi_stats {
	__u32 cpu;		/* in */
	__u32 flags;		/* in: 0 */
	__s32 dp_tid;		/* out: registered DP thread (0 none; per-CPU only) */
	__u32 info_flags;	/* out: TAICHI_INFO_* */
	__u64 kicks;		/* kicks aimed at the CPU */
	__u64 kicks_no_dp;	/* ... that found no DP thread registered */
	__u64 wakes;		/* WAITs that returned because of a kick */
	__u64 timeouts;		/* WAITs that timed out */
	__u64 ipis;		/* blocker inspections sent */
	__u64 ipis_busy;	/* ... skipped: the previous one was still in flight */
	__u64 blockers;		/* blocker records written */
	__u64 blockers_dropped;	/* ... overwritten before being read */
	__u64 lat_count;
	__u64 lat_sum_ns;
	__u64 lat_max_ns;
	__u64 hist[TAICHI_HIST_BUCKETS];
};

/* taichi_blocker.flags */
#define TAICHI_BLK_PREEMPT_OFF	0x1	/* preemption disabled (preempt count > 0) */
#define TAICHI_BLK_SOFTIRQ	0x2	/* interrupted a softirq / bh-disabled section */
#define TAICHI_BLK_NO_KPREEMPT	0x4	/* kernel preemption model none/voluntary */
#define TAICHI_BLK_WAITED	0x8	/* wait_ns is known: the DP thread ran */

/* One non-preemptible CP kernel path caught by a kick. */
struct taichi_blocker {
	__u64 seq;		/* per-CPU sequence number, from 1 */
	__u64 time_ns;		/* CLOCK_MONOTONIC when the IPI looked */
	__u64 kick_ns;		/* the kick it was looking for */
	__u64 wait_ns;		/* kick -> DP thread running (TAICHI_BLK_WAITED) */
	__s32 pid;		/* thread id of the blocker */
	__s32 tgid;
	__u32 cpu;
	__u32 preempt_count;	/* of the interrupted context */
	__u32 flags;		/* TAICHI_BLK_* */
	__u32 pad;
	char comm[TAICHI_COMM_LEN];
	char symbol[TAICHI_SYM_LEN];	/* interrupted kernel IP, "func+0x1f/0x80 [mod]" */
	char callers[TAICHI_CALLERS][TAICHI_SYM_LEN];	/* its callers, innermost first; "" past the end */
};

/* taichi_blockers.flags */
#define TAICHI_BLOCKERS_CONSUME	0x1	/* remove the records copied out */

struct taichi_blockers {
	__u64 records;		/* in: user pointer to max struct taichi_blocker */
	__u32 cpu;		/* in: CPU or TAICHI_ALL_CPUS */
	__u32 max;		/* in: 0..TAICHI_MAX_RECORDS (0: only count) */
	__u32 flags;		/* in: TAICHI_BLOCKERS_* */
	__u32 count;		/* out: records copied (max = 0: records held) */
};

/* TEST_HOLD: spin with a spinlock held and preemption off for usec
 * (module parameter test_hold=1 only). */
struct taichi_hold {
	__u32 usec;		/* in: 1..TAICHI_MAX_HOLD_US */
	__u32 flags;		/* in: 0 */
};

#define TAICHI_IOC_MAGIC	0xD7
#define TAICHI_IOC_INFO		_IOR(TAICHI_IOC_MAGIC, 0, struct taichi_info)
#define TAICHI_IOC_REGISTER	_IOWR(TAICHI_IOC_MAGIC, 1, struct taichi_register)
#define TAICHI_IOC_UNREGISTER	_IO(TAICHI_IOC_MAGIC, 2)
#define TAICHI_IOC_WAIT		_IOWR(TAICHI_IOC_MAGIC, 3, struct taichi_wait)
#define TAICHI_IOC_KICK		_IOWR(TAICHI_IOC_MAGIC, 4, struct taichi_kick)
#define TAICHI_IOC_STATS	_IOWR(TAICHI_IOC_MAGIC, 5, struct taichi_stats)
#define TAICHI_IOC_BLOCKERS	_IOWR(TAICHI_IOC_MAGIC, 6, struct taichi_blockers)
#define TAICHI_IOC_TEST_HOLD	_IOW(TAICHI_IOC_MAGIC, 7, struct taichi_hold)

#endif /* TAICHI_UAPI_H */
