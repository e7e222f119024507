// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// taichi blocker tracer: who delays the data-plane (DP) threads.
//
// For every wake of a watched DP thread (dp_tids, keyed by TID, filled by
// user space) it stamps the wake (sched_waking), notes the CPU the thread
// will run on (sched_wakeup), and at the sched_switch that runs it computes
// delay = now - stamp. The task switched out at that moment (prev) is the one
// that held the CPU: if it was in a kernel path (a kernel thread, preempted
// inside the kernel, or inside a system call) it is the blocker. Every delay
// lands in a log2 histogram; delays >= the threshold are reported through
// the ring buffer with the blamed task. sched_process_exec reports the start
// of processes whose command was learned as a blocker (watch_comms), so they
// can be confined before they run long.
//
// Cost: every sched_switch reads one array slot (pending DP wakes on this
// CPU) and returns when it is zero, which is almost always.
//
// Types are declared here with preserve_access_index (CO-RE): the loader
// relocates field offsets against the running kernel's BTF, so the same
// source builds for amd64 and arm64 without a generated vmlinux.h.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

typedef _Bool bool;

#define MAX_CPUS 256
#define MAX_DP_THREADS 256
#define MAX_WATCH_COMMS 256
#define HIST_BUCKETS 64
#define TASK_COMM_LEN 16
#define PF_KTHREAD 0x00200000

#define EVENT_MAGIC 0x54434842 /* "TCHB" */
#define EVENT_VERSION 1
#define KIND_BLAME 1
#define KIND_EXEC 2

/* event.flags, shared with blocker/event.go. */
#define FLAG_IN_KERNEL 0x1 /* blamed task was in a kernel path */
#define FLAG_KTHREAD 0x2   /* blamed task is a kernel thread */
#define FLAG_PREEMPTED 0x4 /* the switch preempted it (inside the kernel on preempt=none) */
#define FLAG_SYSCALL 0x8   /* its entry registers show a system call in progress */
#define FLAG_KREGS 0x10    /* its saved registers are a kernel-mode frame */
#define FLAG_OTHER 0x20    /* other_pid/other_tgid name a task that ran while DP waited */

/* stat slots (per-CPU array), shared with blocker/tracer.go. */
#define STAT_WAKES 0     /* DP thread wakes stamped */
#define STAT_RUNS 1      /* switches into a stamped DP thread (delays measured) */
#define STAT_REPORTED 2  /* blame events written */
#define STAT_LOST 3      /* blame or exec events the full ring dropped */
#define STAT_EXECS 4     /* exec events written */
#define STAT_UNSTAMPED 5 /* DP wakes that never ran (it was still on the CPU) */
#define STAT_DELAY_SUM 6 /* sum of measured delays, ns */
#define STAT_SLOTS 8

struct task_struct;

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

/* Where a task's CPU lives differs by arch and version: task_struct.cpu
 * (arm64), thread_info.cpu (x86 since 6.x). */
struct thread_info {
	__u32 cpu;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_info thread_info;
	unsigned int flags;
	unsigned int cpu;
	int pid;
	int tgid;
	char comm[TASK_COMM_LEN];
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long orig_ax;
	unsigned long cs;
} __attribute__((preserve_access_index));
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__u64 pstate;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#define PSR_MODE_MASK 0x0000000f
#define PSR_MODE_EL0t 0x00000000
#else
#error "blocker tracer: build with -target amd64 or arm64 (bpf2go sets __TARGET_ARCH_*)"
#endif

/* A watched DP thread: its pending wake, if any. */
struct dp_thread {
	__u64 wake_ns; /* sched_waking stamp; 0 = no wake pending */
	__u32 cpu;     /* CPU of the pending wake (from sched_wakeup) */
	__u32 queued;  /* 1 while counted in pending_by_cpu[cpu] */
};

/* Per CPU: DP wakes waiting to run there, and the last other task that got
 * the CPU meanwhile. Written from other CPUs too (wakeups), so a plain
 * array with atomic counts rather than a per-CPU one. A DP thread removed
 * from dp_tids between its wakeup and its run leaves its count behind: that
 * CPU then takes the (still correct) slow path on every switch. */
struct cpu_pending {
	__u32 count;
	__u32 other_pid;
	__u32 other_tgid;
	__u32 pad;
};

struct settings {
	__u64 threshold_ns; /* report delays >= this; 0 reports every delay */
};

/* One ring-buffer record; decoded by blocker.DecodeEvent. */
struct event {
	__u32 magic;
	__u16 version;
	__u16 kind; /* KIND_BLAME or KIND_EXEC */
	__u32 cpu;
	__u32 dp_tid;    /* blame: the delayed DP thread; exec: 0 */
	__u64 ktime_ns;  /* bpf_ktime_get_ns() at the switch or exec */
	__u64 delay_ns;  /* blame: wake -> run; exec: 0 */
	__u32 pid;       /* blamed (or exec'ing) task's thread id */
	__u32 tgid;      /* its process id */
	__u32 flags;     /* FLAG_* */
	__u32 other_pid; /* FLAG_OTHER: last other task that ran while DP waited */
	__u32 other_tgid;
	__u32 pad;
	__u64 cgroup_id; /* blamed task's cgroup v2 id (kernfs node id); 0 unknown */
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DP_THREADS);
	__type(key, __u32);
	__type(value, struct dp_thread);
} dp_tids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, struct cpu_pending);
} pending_by_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_WATCH_COMMS);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u32);
} watch_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIST_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} delay_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Keeps struct event in the object's BTF for bpf2go -type event. */
const struct event *unused_event __attribute__((unused));

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);
	if (v)
		*v += 1;
}

/* log2 bucket of a delay: bucket b holds [2^b, 2^(b+1)) ns; 0 holds 0 and 1. */
static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 b = 0;
	if (v >> 32) { v >>= 32; b += 32; }
	if (v >> 16) { v >>= 16; b += 16; }
	if (v >> 8) { v >>= 8; b += 8; }
	if (v >> 4) { v >>= 4; b += 4; }
	if (v >> 2) { v >>= 2; b += 2; }
	if (v >> 1) { b += 1; }
	return b;
}

static __always_inline void stamp_wake(struct task_struct *p)
{
	__u32 tid = p->pid;
	struct dp_thread *t = bpf_map_lookup_elem(&dp_tids, &tid);
	if (!t || t->wake_ns)
		return;
	t->wake_ns = bpf_ktime_get_ns();
	count(STAT_WAKES);
}

SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *p)
{
	stamp_wake(p);
	return 0;
}

/* sched_wakeup fires once the target CPU is chosen: count the wake there. */
static __always_inline void queue_wake(struct task_struct *p)
{
	__u32 tid = p->pid;
	struct dp_thread *t = bpf_map_lookup_elem(&dp_tids, &tid);
	if (!t)
		return;
	if (!t->wake_ns) /* a wakeup without waking (new thread): stamp now */
		stamp_wake(p);
	if (t->queued)
		return;
	__u32 cpu;
	if (bpf_core_field_exists(p->cpu))
		cpu = BPF_CORE_READ(p, cpu);
	else
		cpu = BPF_CORE_READ(p, thread_info.cpu);
	struct cpu_pending *cp = bpf_map_lookup_elem(&pending_by_cpu, &cpu);
	if (!cp)
		return;
	t->cpu = cpu;
	t->queued = 1;
	__sync_fetch_and_add(&cp->count, 1);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	queue_wake(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(on_wakeup_new, struct task_struct *p)
{
	queue_wake(p);
	return 0;
}

static __always_inline void dequeue(struct dp_thread *t)
{
	if (t->queued) {
		__u32 cpu = t->cpu;
		struct cpu_pending *cp = bpf_map_lookup_elem(&pending_by_cpu, &cpu);
		if (cp)
			__sync_fetch_and_add(&cp->count, -1);
		t->queued = 0;
	}
	t->wake_ns = 0;
}

/* kernel_mode_flags says how prev was caught: a kernel thread, preempted
 * (on preempt=none only a kernel preemption point such as cond_resched
 * switches with preempt set), inside a system call by its entry registers,
 * or with kernel-mode registers. */
static __always_inline __u32 kernel_mode_flags(struct task_struct *prev, bool preempt)
{
	__u32 f = 0;
	if (prev->flags & PF_KTHREAD)
		f |= FLAG_KTHREAD | FLAG_IN_KERNEL;
	if (preempt)
		f |= FLAG_PREEMPTED | FLAG_IN_KERNEL;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
	if (!regs)
		return f;
#if defined(__TARGET_ARCH_x86)
	if ((long)BPF_CORE_READ(regs, orig_ax) != -1)
		f |= FLAG_SYSCALL | FLAG_IN_KERNEL;
	if ((BPF_CORE_READ(regs, cs) & 3) == 0)
		f |= FLAG_KREGS | FLAG_IN_KERNEL;
#elif defined(__TARGET_ARCH_arm64)
	if (BPF_CORE_READ(regs, syscallno) != -1)
		f |= FLAG_SYSCALL | FLAG_IN_KERNEL;
	if ((BPF_CORE_READ(regs, pstate) & PSR_MODE_MASK) != PSR_MODE_EL0t)
		f |= FLAG_KREGS | FLAG_IN_KERNEL;
#endif
	return f;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct cpu_pending *cp = bpf_map_lookup_elem(&pending_by_cpu, &cpu);
	if (!cp || !cp->count)
		return 0; /* no DP wake waits for this CPU: the common case */

	__u32 prev_tid = prev->pid;
	struct dp_thread *pt = bpf_map_lookup_elem(&dp_tids, &prev_tid);
	if (pt && pt->queued && pt->cpu == cpu) {
		/* Woken while it was still on the CPU: it never waited. */
		dequeue(pt);
		count(STAT_UNSTAMPED);
	}

	__u32 next_tid = next->pid;
	struct dp_thread *t = bpf_map_lookup_elem(&dp_tids, &next_tid);
	if (!t) {
		/* Another task gets the CPU while a DP wake waits. */
		cp->other_pid = next->pid;
		cp->other_tgid = next->tgid;
		return 0;
	}
	if (!t->wake_ns)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	__u64 delay = now > t->wake_ns ? now - t->wake_ns : 0;
	dequeue(t);
	count(STAT_RUNS);
	__u32 sum_slot = STAT_DELAY_SUM;
	__u64 *sum = bpf_map_lookup_elem(&stats, &sum_slot);
	if (sum)
		*sum += delay;
	__u32 b = log2_bucket(delay);
	__u64 *h = bpf_map_lookup_elem(&delay_hist, &b);
	if (h)
		*h += 1;

	__u32 other_pid = cp->other_pid, other_tgid = cp->other_tgid;
	cp->other_pid = 0;
	cp->other_tgid = 0;

	__u32 key = 0;
	struct settings *s = bpf_map_lookup_elem(&config, &key);
	if (!s || delay < s->threshold_ns)
		return 0;
	if (prev->pid == 0)
		return 0; /* the CPU was idle: waking it is the cost, nobody to blame */

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_LOST);
		return 0;
	}
	e->magic = EVENT_MAGIC;
	e->version = EVENT_VERSION;
	e->kind = KIND_BLAME;
	e->cpu = cpu;
	e->dp_tid = next_tid;
	e->ktime_ns = now;
	e->delay_ns = delay;
	e->pid = prev->pid;
	e->tgid = prev->tgid;
	e->flags = kernel_mode_flags(prev, preempt);
	e->other_pid = 0;
	e->other_tgid = 0;
	if (other_pid && other_pid != e->pid) {
		e->flags |= FLAG_OTHER;
		e->other_pid = other_pid;
		e->other_tgid = other_tgid;
	}
	e->pad = 0;
	e->cgroup_id = BPF_CORE_READ(prev, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&e->comm, prev, comm);
	bpf_ringbuf_submit(e, 0);
	count(STAT_REPORTED);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p)
{
	char comm[TASK_COMM_LEN] = {};
	BPF_CORE_READ_STR_INTO(&comm, p, comm);
	if (!bpf_map_lookup_elem(&watch_comms, &comm))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_LOST);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->magic = EVENT_MAGIC;
	e->version = EVENT_VERSION;
	e->kind = KIND_EXEC;
	e->cpu = bpf_get_smp_processor_id();
	e->ktime_ns = bpf_ktime_get_ns();
	e->pid = p->pid;
	e->tgid = p->tgid;
	e->cgroup_id = BPF_CORE_READ(p, cgroups, dfl_cgrp, kn, id);
	__builtin_memcpy(e->comm, comm, TASK_COMM_LEN);
	bpf_ringbuf_submit(e, 0);
	count(STAT_EXECS);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
