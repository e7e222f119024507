// SPDX-License-Identifier: GPL-2.0
/*
 * taichi.ko - the kernel side of taichi's fast path.
 *
 * /dev/taichi lets a data-plane (DP) thread pinned to one CPU register
 * itself, sleep in WAIT until it is kicked (or a bounded timeout passes),
 * and lets a probe KICK the DP threads of a set of CPUs: the wake-up of a
 * SCHED_FIFO DP thread preempts the control-plane (CP) task running there
 * in one hop. Each kick also sends an IPI to the target CPU that looks at
 * what it interrupted: a CP task inside a non-preemptible kernel path is
 * recorded (pid, comm, kernel symbol, preempt count, and later how long the
 * DP thread had to wait) so operators see which CP kernel paths make a
 * reclaim slow. Kick->run latency is measured at sched_switch.
 *
 * The ABI is in taichi_uapi.h.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/uaccess.h>
#include <linux/sched/task_stack.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/signal.h>
#include <linux/wait.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/ktime.h>
#include <linux/hardirq.h>
#include <linux/preempt.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>
#include <linux/workqueue.h>
#include <linux/tracepoint.h>
#include <linux/string.h>
#include <linux/log2.h>
#include <linux/rcupdate.h>
#include <asm/irq_regs.h>
#include <asm/ptrace.h>
#ifdef CONFIG_X86
#include <asm/unwind.h>
#endif
#ifdef CONFIG_ARM64
#include <asm/pointer_auth.h>
/* 6.5 renamed the kernel pointer-auth strip (a macro in asm/compiler.h). */
#ifdef ptrauth_strip_kernel_insn_pac
#define tc_strip_pac(lr) ptrauth_strip_kernel_insn_pac(lr)
#else
#define tc_strip_pac(lr) ptrauth_strip_insn_pac(lr)
#endif
#endif

#if IS_ENABLED(CONFIG_DEBUG_INFO_BTF_MODULES)
#include <linux/bpf.h>
#include <linux/btf.h>
#include <linux/btf_ids.h>
#define TAICHI_HAVE_KFUNC 1
#endif

#include "taichi_uapi.h"

static bool test_hold;
module_param(test_hold, bool, 0444);
MODULE_PARM_DESC(test_hold, "enable TEST_HOLD (spin with a lock held, for tests; default off)");

/* Per open file: poll/epoll wait here, so a loop may add the fd to epoll
 * before its thread registers. Freed after an RCU grace period because
 * kickers (also from BPF) reach it locklessly. */
struct tc_file {
	wait_queue_head_t wq;
	struct rcu_head rcu;
};

/* Per-CPU state. The DP task pointer is only compared (never dereferenced)
 * outside reg_mutex, so the kick, IPI and sched_switch paths need no lock to
 * read it; the task reference we hold keeps the pointer from being reused
 * while it is registered. */
struct tc_cpu {
	struct task_struct *dp;		/* registered DP thread; ref held */
	struct file *owner;		/* the open file it registered through */
	struct tc_file __rcu *owner_tf;	/* its poll waitqueue */
	wait_queue_head_t wq;
	atomic_t kicked;		/* a kick the DP thread has not consumed */
	atomic64_t pending_kick_ns;	/* oldest kick not yet seen running (latency) */
	u64 last_kick_ns;		/* reported by WAIT */
	u64 ipi_kick_ns;		/* the kick the in-flight IPI looks for */
	atomic_t ipi_busy;		/* csd in flight: it must not be queued twice */
	call_single_data_t csd;

	atomic64_t kicks, kicks_no_dp, wakes, timeouts, ipis, ipis_busy;

	raw_spinlock_t lock;		/* everything below; taken in IRQ and sched_switch */
	u64 blockers, blockers_dropped;
	u64 lat_count, lat_sum_ns, lat_max_ns;
	u64 hist[TAICHI_HIST_BUCKETS];
	u64 seq;			/* last blocker seq */
	unsigned int head, len;		/* ring: next slot, records held */
	int pending_blk;		/* slot waiting for its wait_ns, -1 none */
	struct taichi_blocker ring[TAICHI_RING_LEN];
	/* kept in the kernel, symbolized on copy-out: [0] the IP, then callers */
	unsigned long ring_ip[TAICHI_RING_LEN][1 + TAICHI_CALLERS];
};

static struct tc_cpu *tc_cpus;
static DEFINE_MUTEX(reg_mutex);
static DEFINE_SPINLOCK(tc_hold_lock);
static struct tracepoint *tp_switch, *tp_exit;
static bool lat_at_switch, exit_hook, kfunc_ok;

static void tc_reap_work_fn(struct work_struct *w);
static DECLARE_WORK(tc_reap_work, tc_reap_work_fn);

static u32 tc_info_flags(void)
{
	return (kfunc_ok ? TAICHI_INFO_KFUNC : 0) |
	       (test_hold ? TAICHI_INFO_TEST_HOLD : 0) |
	       (lat_at_switch ? TAICHI_INFO_LAT_SWITCH : 0) |
	       (exit_hook ? TAICHI_INFO_EXIT_HOOK : 0);
}

static unsigned int tc_hist_bucket(u64 ns)
{
	unsigned int b;

	if (ns < (1ull << TAICHI_HIST_SHIFT))
		return 0;
	b = ilog2(ns) - TAICHI_HIST_SHIFT + 1;
	return min_t(unsigned int, b, TAICHI_HIST_BUCKETS - 1);
}

/* tc_account records one kick->run latency; closes the pending blocker. */
static void tc_account(struct tc_cpu *c, u64 kick_ns, u64 now)
{
	u64 lat = now > kick_ns ? now - kick_ns : 0;
	unsigned long flags;

	raw_spin_lock_irqsave(&c->lock, flags);
	c->lat_count++;
	c->lat_sum_ns += lat;
	if (lat > c->lat_max_ns)
		c->lat_max_ns = lat;
	c->hist[tc_hist_bucket(lat)]++;
	if (c->pending_blk >= 0) {
		struct taichi_blocker *r = &c->ring[c->pending_blk];

		r->wait_ns = now > r->kick_ns ? now - r->kick_ns : 0;
		r->flags |= TAICHI_BLK_WAITED;
		c->pending_blk = -1;
	}
	raw_spin_unlock_irqrestore(&c->lock, flags);
}

/* Runs on every context switch: keep the common case to one compare. */
static void tc_sched_switch(void *data, bool preempt, struct task_struct *prev,
			    struct task_struct *next, unsigned int prev_state)
{
	struct tc_cpu *c = &tc_cpus[smp_processor_id()];
	u64 kick;

	if (likely(next != READ_ONCE(c->dp)))
		return;
	if (!atomic64_read(&c->pending_kick_ns))
		return;
	kick = atomic64_xchg(&c->pending_kick_ns, 0);
	if (kick)
		tc_account(c, kick, ktime_get_ns());
}

static void tc_process_exit(void *data, struct task_struct *p)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		if (READ_ONCE(tc_cpus[cpu].dp) == p) {
			schedule_work(&tc_reap_work);
			return;
		}
	}
}

/*
 * The registers of the context the IPI interrupted, and the return
 * addresses of up to TAICHI_CALLERS of its callers (arm64: the link
 * register, then the frame-pointer chain). arm64 sets irq_regs for every interrupt, IPIs included;
 * x86 sets them only for device IRQs and the timer, not for call-function IPIs, so there the ORC unwinder finds the
 * entry frame the IPI pushed (the first full pt_regs above us) and goes on
 * into the interrupted stack for the callers.
 */
static struct pt_regs *tc_interrupted_regs(unsigned long *callers)
{
#if defined(CONFIG_X86) && defined(CONFIG_UNWINDER_ORC)
	struct unwind_state st;
	struct pt_regs *regs = NULL, *r;
	unsigned long addr;
	bool partial;
	int n = 0;

	for (unwind_start(&st, current, NULL, NULL); !unwind_done(&st);
	     unwind_next_frame(&st)) {
		r = unwind_get_entry_regs(&st, &partial);
		if (!regs) {
			if (r && !partial) {
				regs = r;	/* this frame is the interrupted IP itself */
				if (user_mode(regs))
					break;
			}
			continue;
		}
		if (r)
			break;		/* the next entry (syscall) boundary */
		addr = unwind_get_return_address(&st);
		if (!addr)
			break;
		callers[n++] = addr;
		if (n == TAICHI_CALLERS)
			break;
	}
	return regs;
#elif defined(CONFIG_X86)
	return NULL;	/* no reliable way: record nothing rather than a stale IP */
#elif defined(CONFIG_ARM64)
	struct pt_regs *regs = get_irq_regs();
	unsigned long stack = (unsigned long)task_stack_page(current);
	unsigned long fp, frame[2];	/* a frame record: the caller's fp, lr */
	int n = 0;

	if (!regs || user_mode(regs))
		return regs;
	/* The link register: the caller of a leaf function (a timer read in
	 * a spin loop, where TCG interrupts it most of the time), or a call
	 * site in the interrupted function itself. Then the frame records
	 * the x29 chain links on the interrupted task's stack, older frames
	 * at higher addresses. Return addresses are signed by pointer auth. */
	callers[n++] = tc_strip_pac(regs->regs[30]);
	for (fp = regs->regs[29]; n < TAICHI_CALLERS; fp = frame[0]) {
		if ((fp & 0xf) || fp < stack || fp + sizeof(frame) > stack + THREAD_SIZE ||
		    copy_from_kernel_nofault(frame, (void *)fp, sizeof(frame)))
			break;
		callers[n++] = tc_strip_pac(frame[1]);
		if (frame[0] <= fp)
			break;
	}
	return regs;
#else
	return get_irq_regs();
#endif
}

/*
 * tc_inspect runs in the IPI on the kicked CPU: if a task other than the DP
 * thread was interrupted in kernel mode where it cannot be preempted, the
 * DP thread will have to wait for it: record who and where.
 */
static void tc_inspect(void *info)
{
	struct tc_cpu *c = info;
	struct task_struct *cur = current;
	struct taichi_blocker *r;
	struct pt_regs *regs;
	unsigned long callers[TAICHI_CALLERS] = { 0 };
	unsigned int pc, flags = 0;
	u64 kick_ns = READ_ONCE(c->ipi_kick_ns);
	int slot;

	/* The csd is already unlocked for async calls: allow the next one. */
	atomic_set_release(&c->ipi_busy, 0);
	if (!in_hardirq())
		return;	/* flushed from idle or hotplug, not an IPI */
	if (cur == READ_ONCE(c->dp) || is_idle_task(cur))
		return;
	regs = tc_interrupted_regs(callers);
	if (!regs || user_mode(regs))
		return;
	pc = preempt_count() - HARDIRQ_OFFSET;	/* the interrupted context's */
	if (pc & PREEMPT_MASK)
		flags |= TAICHI_BLK_PREEMPT_OFF;
	if (pc & (SOFTIRQ_MASK | HARDIRQ_MASK | NMI_MASK))
		flags |= TAICHI_BLK_SOFTIRQ;
	if (!preempt_model_full() && !preempt_model_rt())
		flags |= TAICHI_BLK_NO_KPREEMPT;
	if (!flags)
		return;	/* preemptible: the wake-up preempts it at IRQ return */

	raw_spin_lock(&c->lock);
	slot = c->head;
	c->head = (c->head + 1) % TAICHI_RING_LEN;
	if (c->len == TAICHI_RING_LEN)
		c->blockers_dropped++;
	else
		c->len++;
	c->blockers++;
	r = &c->ring[slot];
	memset(r, 0, sizeof(*r));
	r->seq = ++c->seq;
	r->time_ns = ktime_get_ns();
	r->kick_ns = kick_ns;
	r->pid = task_pid_nr(cur);
	r->tgid = task_tgid_nr(cur);
	r->cpu = smp_processor_id();
	r->preempt_count = pc;
	r->flags = flags;
	memcpy(r->comm, cur->comm, min(sizeof(r->comm), sizeof(cur->comm)));
	r->comm[TAICHI_COMM_LEN - 1] = '\0';
	c->ring_ip[slot][0] = instruction_pointer(regs);
	memcpy(&c->ring_ip[slot][1], callers, sizeof(callers));
	c->pending_blk = slot;
	raw_spin_unlock(&c->lock);
}

/* tc_kick_cpu wakes the DP thread of cpu; callable from softirq (XDP). */
static int tc_kick_cpu(unsigned int cpu, unsigned int this_cpu, u64 now)
{
	struct tc_cpu *c = &tc_cpus[cpu];
	struct tc_file *tf;

	atomic64_inc(&c->kicks);
	if (!READ_ONCE(c->dp) || !cpu_online(cpu)) {
		atomic64_inc(&c->kicks_no_dp);
		return 0;
	}
	atomic64_cmpxchg(&c->pending_kick_ns, 0, now);
	WRITE_ONCE(c->last_kick_ns, now);
	/* Look before the wake-up's own IPI lets a preemptible task go. */
	if (cpu != this_cpu) {
		/* smp_call_function_single_async() does not serialize
		 * concurrent callers on one csd: kickers on two CPUs must. */
		if (atomic_xchg(&c->ipi_busy, 1)) {
			atomic64_inc(&c->ipis_busy);
		} else {
			WRITE_ONCE(c->ipi_kick_ns, now);
			if (smp_call_function_single_async(cpu, &c->csd)) {
				atomic_set(&c->ipi_busy, 0);
				atomic64_inc(&c->ipis_busy);
			} else {
				atomic64_inc(&c->ipis);
			}
		}
	}
	atomic_set(&c->kicked, 1);
	wake_up_interruptible(&c->wq);
	rcu_read_lock();
	tf = rcu_dereference(c->owner_tf);
	if (tf)
		wake_up_interruptible(&tf->wq);
	rcu_read_unlock();
	return 1;
}

/* Caller holds reg_mutex. */
static void tc_drop(struct tc_cpu *c)
{
	struct task_struct *dp = c->dp;

	if (!dp)
		return;
	WRITE_ONCE(c->dp, NULL);
	WRITE_ONCE(c->owner, NULL);
	RCU_INIT_POINTER(c->owner_tf, NULL);
	atomic64_set(&c->pending_kick_ns, 0);
	put_task_struct(dp);
}

/* Caller holds reg_mutex: drop DP threads that have exited. */
static void tc_reap_exited(void)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		struct tc_cpu *c = &tc_cpus[cpu];

		if (c->dp && (c->dp->flags & PF_EXITING))
			tc_drop(c);
	}
}

static void tc_reap_work_fn(struct work_struct *w)
{
	mutex_lock(&reg_mutex);
	tc_reap_exited();
	mutex_unlock(&reg_mutex);
}

/* The CPU the current thread is registered on, or NULL. */
static struct tc_cpu *tc_find_current(void)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		if (READ_ONCE(tc_cpus[cpu].dp) == current)
			return &tc_cpus[cpu];
	return NULL;
}

static long tc_ioc_info(void __user *uarg)
{
	struct taichi_info in = {
		.abi_version = TAICHI_ABI_VERSION,
		.nr_cpus = nr_cpu_ids,
		.flags = tc_info_flags(),
		.ring_len = TAICHI_RING_LEN,
	};

	return copy_to_user(uarg, &in, sizeof(in)) ? -EFAULT : 0;
}

static long tc_ioc_register(struct file *f, void __user *uarg)
{
	struct taichi_register reg;
	struct tc_cpu *c, *mine;
	unsigned int cpu;
	long ret = 0;

	if (copy_from_user(&reg, uarg, sizeof(reg)))
		return -EFAULT;
	if (reg.flags)
		return -EINVAL;
	if (current->flags & PF_KTHREAD)
		return -EINVAL;
	/* A DP thread owns exactly one core: refuse a thread that may move. */
	if (current->nr_cpus_allowed != 1 || cpumask_weight(current->cpus_ptr) != 1)
		return -EINVAL;
	cpu = cpumask_first(current->cpus_ptr);
	if (cpu >= nr_cpu_ids)
		return -EINVAL;

	mutex_lock(&reg_mutex);
	tc_reap_exited();
	c = &tc_cpus[cpu];
	mine = tc_find_current();
	if (mine == c) {
		/* idempotent; follow the newest fd */
		WRITE_ONCE(c->owner, f);
		rcu_assign_pointer(c->owner_tf, f->private_data);
	} else if (mine || c->dp) {
		ret = -EBUSY;		/* registered elsewhere, or CPU taken */
	} else {
		get_task_struct(current);
		atomic_set(&c->kicked, 0);
		atomic64_set(&c->pending_kick_ns, 0);
		WRITE_ONCE(c->owner, f);
		rcu_assign_pointer(c->owner_tf, f->private_data);
		WRITE_ONCE(c->dp, current);
	}
	mutex_unlock(&reg_mutex);
	if (ret)
		return ret;
	reg.cpu = cpu;
	return copy_to_user(uarg, &reg, sizeof(reg)) ? -EFAULT : 0;
}

static long tc_ioc_unregister(void)
{
	struct tc_cpu *c;
	long ret = 0;

	mutex_lock(&reg_mutex);
	c = tc_find_current();
	if (c)
		tc_drop(c);
	else
		ret = -ENOENT;
	mutex_unlock(&reg_mutex);
	return ret;
}

static long tc_ioc_wait(void __user *uarg)
{
	struct taichi_wait w;
	struct tc_cpu *c;
	long r = 0;
	u64 kick;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.flags & ~TAICHI_WAIT_NONBLOCK)
		return -EINVAL;
	if (!(w.flags & TAICHI_WAIT_NONBLOCK) &&
	    (w.timeout_ns == 0 || w.timeout_ns > TAICHI_MAX_WAIT_NS))
		return -EINVAL;
	/* Only the registered thread may wait: it cannot unregister while
	 * sleeping, and its fd cannot be released under it, so c stays its. */
	c = tc_find_current();
	if (!c)
		return -ENOENT;

	if (!(w.flags & TAICHI_WAIT_NONBLOCK))
		r = wait_event_interruptible_hrtimeout(c->wq, atomic_read(&c->kicked),
						       ns_to_ktime(w.timeout_ns));
	w.kick_ns = 0;
	if (atomic_xchg(&c->kicked, 0)) {
		w.result = TAICHI_WAIT_KICKED;
		w.kick_ns = READ_ONCE(c->last_kick_ns);
		atomic64_inc(&c->wakes);
		/* Not consumed at sched_switch: the thread never slept, or
		 * the tracepoint is unavailable: this is when it runs. */
		kick = atomic64_xchg(&c->pending_kick_ns, 0);
		if (kick)
			tc_account(c, kick, ktime_get_ns());
	} else if (r == -ERESTARTSYS) {
		return -EINTR;	/* the caller retries with what is left */
	} else if (w.flags & TAICHI_WAIT_NONBLOCK) {
		w.result = TAICHI_WAIT_NONE;
	} else {
		w.result = TAICHI_WAIT_TIMEOUT;
		atomic64_inc(&c->timeouts);
	}
	return copy_to_user(uarg, &w, sizeof(w)) ? -EFAULT : 0;
}

static long tc_ioc_kick(void __user *uarg)
{
	struct taichi_kick k;
	unsigned int cpu, this_cpu, word;
	bool any = false;
	u64 now;

	if (copy_from_user(&k, uarg, sizeof(k)))
		return -EFAULT;
	if (k.flags)
		return -EINVAL;
	for (word = 0; word < TAICHI_MASK_WORDS; word++) {
		u64 bits = k.cpus[word];

		if (!bits)
			continue;
		any = true;
		/* every named CPU must exist */
		if (word * 64 + fls64(bits) - 1 >= nr_cpu_ids)
			return -EINVAL;
	}
	if (!any)
		return -EINVAL;

	k.woken = 0;
	now = ktime_get_ns();
	this_cpu = get_cpu();
	for (cpu = 0; cpu < nr_cpu_ids && cpu < TAICHI_MAX_CPUS; cpu++)
		if (k.cpus[cpu / 64] & (1ull << (cpu % 64)))
			k.woken += tc_kick_cpu(cpu, this_cpu, now);
	put_cpu();
	return copy_to_user(uarg, &k, sizeof(k)) ? -EFAULT : 0;
}

static void tc_stats_add(struct taichi_stats *s, struct tc_cpu *c)
{
	unsigned long flags;
	unsigned int i;

	s->kicks += atomic64_read(&c->kicks);
	s->kicks_no_dp += atomic64_read(&c->kicks_no_dp);
	s->wakes += atomic64_read(&c->wakes);
	s->timeouts += atomic64_read(&c->timeouts);
	s->ipis += atomic64_read(&c->ipis);
	s->ipis_busy += atomic64_read(&c->ipis_busy);
	raw_spin_lock_irqsave(&c->lock, flags);
	s->blockers += c->blockers;
	s->blockers_dropped += c->blockers_dropped;
	s->lat_count += c->lat_count;
	s->lat_sum_ns += c->lat_sum_ns;
	s->lat_max_ns = max(s->lat_max_ns, c->lat_max_ns);
	for (i = 0; i < TAICHI_HIST_BUCKETS; i++)
		s->hist[i] += c->hist[i];
	raw_spin_unlock_irqrestore(&c->lock, flags);
}

static long tc_ioc_stats(void __user *uarg)
{
	struct taichi_stats s;
	unsigned int cpu;
	u32 want;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.flags)
		return -EINVAL;
	want = s.cpu;
	if (want != TAICHI_ALL_CPUS && want >= nr_cpu_ids)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.cpu = want;
	s.info_flags = tc_info_flags();
	if (want == TAICHI_ALL_CPUS) {
		for_each_possible_cpu(cpu)
			tc_stats_add(&s, &tc_cpus[cpu]);
	} else {
		tc_stats_add(&s, &tc_cpus[want]);
		mutex_lock(&reg_mutex);
		tc_reap_exited();
		if (tc_cpus[want].dp)
			s.dp_tid = task_pid_nr(tc_cpus[want].dp);
		mutex_unlock(&reg_mutex);
	}
	return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;
}

/* Copy up to max records of one CPU, oldest first; returns how many. */
typedef unsigned long tc_ips_t[1 + TAICHI_CALLERS];

static u32 tc_collect(struct tc_cpu *c, struct taichi_blocker *out,
		      tc_ips_t *ips, u32 max, u64 *last_seq)
{
	unsigned long flags;
	unsigned int i, n, start;

	raw_spin_lock_irqsave(&c->lock, flags);
	n = min_t(u32, c->len, max);
	start = (c->head + TAICHI_RING_LEN - c->len) % TAICHI_RING_LEN;
	for (i = 0; i < n; i++) {
		unsigned int slot = (start + i) % TAICHI_RING_LEN;

		out[i] = c->ring[slot];
		memcpy(ips[i], c->ring_ip[slot], sizeof(ips[i]));
	}
	raw_spin_unlock_irqrestore(&c->lock, flags);
	*last_seq = n ? out[n - 1].seq : 0;
	return n;
}

/* Remove the records up to seq, unless newer ones pushed them out. */
static void tc_consume(struct tc_cpu *c, u64 seq)
{
	unsigned long flags;

	raw_spin_lock_irqsave(&c->lock, flags);
	while (c->len) {
		unsigned int slot = (c->head + TAICHI_RING_LEN - c->len) % TAICHI_RING_LEN;

		if (c->ring[slot].seq > seq)
			break;
		if (c->pending_blk == (int)slot)
			c->pending_blk = -1;
		c->len--;
	}
	raw_spin_unlock_irqrestore(&c->lock, flags);
}

static long tc_ioc_blockers(void __user *uarg)
{
	struct taichi_blockers b;
	struct taichi_blocker *buf = NULL;
	tc_ips_t *ips = NULL;
	u64 *last = NULL;
	unsigned int cpu, first, end, i, j;
	u32 n = 0;
	long ret = 0;

	if (copy_from_user(&b, uarg, sizeof(b)))
		return -EFAULT;
	if (b.flags & ~TAICHI_BLOCKERS_CONSUME)
		return -EINVAL;
	if (b.max > TAICHI_MAX_RECORDS)
		return -EINVAL;
	if (b.cpu != TAICHI_ALL_CPUS && b.cpu >= nr_cpu_ids)
		return -EINVAL;
	if (b.max && !b.records)
		return -EFAULT;
	first = b.cpu == TAICHI_ALL_CPUS ? 0 : b.cpu;
	end = b.cpu == TAICHI_ALL_CPUS ? nr_cpu_ids : b.cpu + 1;

	if (!b.max) {	/* only count */
		for (cpu = first; cpu < end; cpu++) {
			unsigned long flags;

			raw_spin_lock_irqsave(&tc_cpus[cpu].lock, flags);
			n += tc_cpus[cpu].len;
			raw_spin_unlock_irqrestore(&tc_cpus[cpu].lock, flags);
		}
		goto out;
	}

	buf = kvcalloc(b.max, sizeof(*buf), GFP_KERNEL);
	ips = kvcalloc(b.max, sizeof(*ips), GFP_KERNEL);
	last = kcalloc(nr_cpu_ids, sizeof(*last), GFP_KERNEL);
	if (!buf || !ips || !last) {
		ret = -ENOMEM;
		goto free;
	}
	for (cpu = first; cpu < end && n < b.max; cpu++)
		n += tc_collect(&tc_cpus[cpu], buf + n, ips + n, b.max - n, &last[cpu]);
	/* Symbolize here, in process context; the raw address stays in the
	 * kernel (no KASLR leak). */
	for (i = 0; i < n; i++) {
		snprintf(buf[i].symbol, sizeof(buf[i].symbol), "%pS", (void *)ips[i][0]);
		for (j = 0; j < TAICHI_CALLERS && ips[i][j + 1]; j++)
			snprintf(buf[i].callers[j], TAICHI_SYM_LEN, "%pS", (void *)ips[i][j + 1]);
	}
	if (copy_to_user(u64_to_user_ptr(b.records), buf, n * sizeof(*buf))) {
		ret = -EFAULT;	/* nothing consumed */
		goto free;
	}
	if (b.flags & TAICHI_BLOCKERS_CONSUME)
		for (cpu = first; cpu < end; cpu++)
			if (last[cpu])
				tc_consume(&tc_cpus[cpu], last[cpu]);
free:
	kvfree(buf);
	kvfree(ips);
	kfree(last);
	if (ret)
		return ret;
out:
	b.count = n;
	return copy_to_user(uarg, &b, sizeof(b)) ? -EFAULT : 0;
}

/* Stands for a CP driver call that programs an accelerator synchronously
 * with a lock held: noinline so blocker records name it. */
static noinline void taichi_test_hold_spin(u64 ns)
{
	u64 end;

	spin_lock(&tc_hold_lock);
	end = ktime_get_ns() + ns;
	while (ktime_get_ns() < end)
		cpu_relax();
	spin_unlock(&tc_hold_lock);
}

static long tc_ioc_test_hold(void __user *uarg)
{
	struct taichi_hold h;

	if (!test_hold)
		return -EPERM;
	if (copy_from_user(&h, uarg, sizeof(h)))
		return -EFAULT;
	if (h.flags || h.usec == 0 || h.usec > TAICHI_MAX_HOLD_US)
		return -EINVAL;
	taichi_test_hold_spin((u64)h.usec * NSEC_PER_USEC);
	return 0;
}

static long tc_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case TAICHI_IOC_INFO:
		return tc_ioc_info(uarg);
	case TAICHI_IOC_REGISTER:
		return tc_ioc_register(f, uarg);
	case TAICHI_IOC_UNREGISTER:
		return tc_ioc_unregister();
	case TAICHI_IOC_WAIT:
		return tc_ioc_wait(uarg);
	case TAICHI_IOC_KICK:
		return tc_ioc_kick(uarg);
	case TAICHI_IOC_STATS:
		return tc_ioc_stats(uarg);
	case TAICHI_IOC_BLOCKERS:
		return tc_ioc_blockers(uarg);
	case TAICHI_IOC_TEST_HOLD:
		return tc_ioc_test_hold(uarg);
	}
	return -ENOTTY;
}

/* poll: readable when a DP thread registered through this file has a
 * pending kick, so a DP loop can wait on its socket and the kick together
 * (consume the kick with WAIT + TAICHI_WAIT_NONBLOCK). A file with no DP
 * thread is never readable (not an error: a loop polling it must not spin). */
static __poll_t tc_poll(struct file *f, struct poll_table_struct *pt)
{
	struct tc_file *tf = f->private_data;
	unsigned int cpu;

	poll_wait(f, &tf->wq, pt);
	for_each_possible_cpu(cpu) {
		struct tc_cpu *c = &tc_cpus[cpu];

		if (READ_ONCE(c->owner) == f && READ_ONCE(c->dp))
			return atomic_read(&c->kicked) ? EPOLLIN | EPOLLRDNORM : 0;
	}
	return 0;
}

static int tc_open(struct inode *inode, struct file *f)
{
	struct tc_file *tf = kzalloc(sizeof(*tf), GFP_KERNEL);

	if (!tf)
		return -ENOMEM;
	init_waitqueue_head(&tf->wq);
	f->private_data = tf;
	return stream_open(inode, f);
}

static int tc_release(struct inode *inode, struct file *f)
{
	unsigned int cpu;

	mutex_lock(&reg_mutex);
	for_each_possible_cpu(cpu)
		if (tc_cpus[cpu].owner == f)
			tc_drop(&tc_cpus[cpu]);
	mutex_unlock(&reg_mutex);
	kfree_rcu((struct tc_file *)f->private_data, rcu);
	return 0;
}

static const struct file_operations tc_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = tc_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = tc_poll,
	.open = tc_open,
	.release = tc_release,
	.llseek = noop_llseek,
};

static struct miscdevice tc_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "taichi",
	.fops = &tc_fops,
	.mode = 0600,
};

#ifdef TAICHI_HAVE_KFUNC
__diag_push();
__diag_ignore_all("-Wmissing-prototypes", "kfuncs are called from BPF programs only");

/* taichi_kick_cpu: kick the DP thread of cpu from an XDP program.
 * Returns 1 if a DP thread was woken, 0 if none is registered, -EINVAL. */
noinline int taichi_kick_cpu(u32 cpu)
{
	int ret;

	if (cpu >= nr_cpu_ids || cpu >= TAICHI_MAX_CPUS)
		return -EINVAL;
	ret = tc_kick_cpu(cpu, get_cpu(), ktime_get_ns());
	put_cpu();
	return ret;
}

__diag_pop();

/* 6.9+ registers only sets flagged as kfuncs (BTF_SET8_KFUNCS, set by
 * BTF_KFUNCS_START) and refuses the rest with -EINVAL; older kernels have
 * only BTF_SET8_START. */
#ifdef BTF_KFUNCS_START
BTF_KFUNCS_START(taichi_kfunc_ids)
BTF_ID_FLAGS(func, taichi_kick_cpu)
BTF_KFUNCS_END(taichi_kfunc_ids)
#else
BTF_SET8_START(taichi_kfunc_ids)
BTF_ID_FLAGS(func, taichi_kick_cpu)
BTF_SET8_END(taichi_kfunc_ids)
#endif

static const struct btf_kfunc_id_set taichi_kfunc_set = {
	.owner = THIS_MODULE,
	.set = &taichi_kfunc_ids,
};
#endif

struct tc_tp_lookup {
	const char *name;
	struct tracepoint *tp;
};

static void tc_tp_match(struct tracepoint *tp, void *priv)
{
	struct tc_tp_lookup *l = priv;

	if (!strcmp(tp->name, l->name))
		l->tp = tp;
}

/* sched tracepoints are not exported to modules; find them by name. */
static struct tracepoint *tc_tp_find(const char *name)
{
	struct tc_tp_lookup l = { .name = name };

	for_each_kernel_tracepoint(tc_tp_match, &l);
	return l.tp;
}

static void tc_noop(void *info)
{
}

static int __init taichi_init(void)
{
	unsigned int cpu;
	int ret;

	tc_cpus = kvcalloc(nr_cpu_ids, sizeof(*tc_cpus), GFP_KERNEL);
	if (!tc_cpus)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct tc_cpu *c = &tc_cpus[cpu];

		init_waitqueue_head(&c->wq);
		raw_spin_lock_init(&c->lock);
		INIT_CSD(&c->csd, tc_inspect, c);
		c->pending_blk = -1;
	}

	tp_switch = tc_tp_find("sched_switch");
	if (tp_switch && !tracepoint_probe_register(tp_switch, tc_sched_switch, NULL))
		lat_at_switch = true;
	else
		pr_info("sched_switch tracepoint unavailable: latency measured at WAIT return\n");
	tp_exit = tc_tp_find("sched_process_exit");
	if (tp_exit && !tracepoint_probe_register(tp_exit, tc_process_exit, NULL))
		exit_hook = true;
	else
		pr_info("sched_process_exit tracepoint unavailable: exited DP threads reaped lazily\n");

	ret = misc_register(&tc_misc);
	if (ret)
		goto undo;

#ifdef TAICHI_HAVE_KFUNC
	/* Needs the module's own BTF (pahole at build time); without it the
	 * kernel refuses and the ioctl KICK stays the only path. */
	ret = register_btf_kfunc_id_set(BPF_PROG_TYPE_XDP, &taichi_kfunc_set);
	/* 6.1 only warns (and returns 0) when the module has no BTF. */
	kfunc_ok = !ret && THIS_MODULE->btf_data_size > 0;
	if (!kfunc_ok)
		pr_info("BPF kfunc taichi_kick_cpu unavailable (err %d, module BTF %u bytes): ioctl KICK only\n",
			ret, THIS_MODULE->btf_data_size);
#endif
	pr_info("loaded: %u CPUs, latency at %s, test_hold=%d, kfunc=%d\n", nr_cpu_ids,
		lat_at_switch ? "sched_switch" : "wait return", test_hold, kfunc_ok);
	return 0;

undo:
	if (lat_at_switch)
		tracepoint_probe_unregister(tp_switch, tc_sched_switch, NULL);
	if (exit_hook)
		tracepoint_probe_unregister(tp_exit, tc_process_exit, NULL);
	tracepoint_synchronize_unregister();
	kvfree(tc_cpus);
	return ret;
}

static void __exit taichi_exit(void)
{
	unsigned int cpu;

	/* No file is open (each holds a module reference), so no ioctl runs;
	 * a BPF program using the kfunc also pins the module. */
	misc_deregister(&tc_misc);
	if (lat_at_switch)
		tracepoint_probe_unregister(tp_switch, tc_sched_switch, NULL);
	if (exit_hook)
		tracepoint_probe_unregister(tp_exit, tc_process_exit, NULL);
	tracepoint_synchronize_unregister();
	cancel_work_sync(&tc_reap_work);
	/* Inspection IPIs still queued run before this synchronous one. */
	on_each_cpu(tc_noop, NULL, 1);
	rcu_barrier();	/* kfree_rcu callbacks of closed files */
	mutex_lock(&reg_mutex);
	for_each_possible_cpu(cpu)
		tc_drop(&tc_cpus[cpu]);
	mutex_unlock(&reg_mutex);
	kvfree(tc_cpus);
	pr_info("unloaded\n");
}

module_init(taichi_init);
module_exit(taichi_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("taichi: one-hop DP kick, DP wait/wake and CP blocker records");
MODULE_VERSION("1");
