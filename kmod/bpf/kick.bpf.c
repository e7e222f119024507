// SPDX-License-Identifier: GPL-2.0
/* kick.bpf.c: the smallest XDP program that calls the module's kfunc, used
 * by the kmod qemu test (a real probe would kick the DP core that owns the
 * packet's queue). Build: clang -O2 -g -target bpf -c kick.bpf.c */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int taichi_kick_cpu(__u32 cpu) __ksym;

/* Set by the loader before load. */
volatile const __u32 target_cpu = 1;

SEC("xdp")
int taichi_kick(struct xdp_md *ctx)
{
	/* 1: a DP thread was woken; pass the packet either way. */
	return taichi_kick_cpu(target_cpu) == 1 ? XDP_PASS : XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";
