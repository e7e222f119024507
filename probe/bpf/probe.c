// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// taichi workload probe: an XDP program at the RX hook of the interface where
// packets enter the NIC (or the testbed's "nic" hop). For every packet it
//   * counts packets and bytes per RX queue in an mmapable array, so user
//     space reads the counters with plain atomic loads (no syscalls);
//   * maps the queue to its DP core (queue_core, filled by user space);
//   * if that core's DP loop is armed (it is about to block, or its core is
//     lent to control-plane work), flips the core from ARMED to FIRED with a
//     compare-and-swap and writes one event with a CLOCK_MONOTONIC stamp to
//     the core's ring buffer. The CAS makes it exactly one event per
//     idle->traffic transition, however many packets follow.
// It never drops or redirects: always XDP_PASS.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 64 /* queues 0..63 get their own slot */
#define OVERFLOW_QUEUE MAX_QUEUES /* queues >= 64 share the last slot */
#define QUEUE_SLOTS (MAX_QUEUES + 1)
#define MAX_CORES 64

/* core_state.state values, shared with probe/xdp.go. */
#define CORE_ACTIVE 0 /* DP loop running: no events */
#define CORE_ARMED 1  /* DP loop blocked or core lent: report the next packet */
#define CORE_FIRED 2  /* event written; waits for the DP loop to disarm */
#define CORE_LOST 3   /* armed, fired, but the ring was full: no event coming */

#define EVENT_MAGIC 0x54434850 /* "TCHP" */
#define EVENT_VERSION 1

struct queue_counter {
	__u64 packets;
	__u64 bytes;
};

struct core_state {
	__u64 state; /* CORE_*; user space stores ARMED/ACTIVE atomically */
	__u64 fired; /* ARMED->FIRED transitions (each event's seq) */
	__u64 lost;  /* transitions whose event found no ring or no room */
};

/* One wake event; decoded by probe.DecodeEvent. */
struct event {
	__u32 magic;
	__u16 version;
	__u16 core;
	__u32 queue;
	__u32 ifindex;
	__u64 ktime_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 seq;      /* per-core event number, from 1 */
	__u64 packets;  /* packets counted on this queue, this one included */
	__u8 tag[8];    /* 8 IPv4/UDP payload bytes at tag_offset, as sent; else 0 */
};

/* Keeps struct event in BTF so bpf2go emits its Go twin (probeEvent). */
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, QUEUE_SLOTS);
	__type(key, __u32);
	__type(value, struct queue_counter);
} queue_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, QUEUE_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} queue_core SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_CORES);
	__type(key, __u32);
	__type(value, struct core_state);
} core_states SEC(".maps");

/* Inner map template; user space creates one ring per DP core. */
struct core_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_CORES);
	__type(key, __u32);
	__array(values, struct core_ring);
} core_rings SEC(".maps");

/* Where a sender keeps its sequence number in the UDP payload; set at load
 * time. The default 8 is trafficgen's layout (run id, seq, send time). */
volatile const __u32 tag_offset = 8;
#define MAX_TAG_OFFSET 1024

/* payload_tag copies 8 payload bytes at tag_offset of an IPv4/UDP packet, so
 * a sender's sequence number can be matched to the event; 0 otherwise. */
static __always_inline __u64 payload_tag(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return 0;
	struct udphdr *udp = (void *)(ip + 1);
	__u32 off = tag_offset;
	if (off > MAX_TAG_OFFSET)
		return 0;
	__u8 *at = (__u8 *)(udp + 1) + off;
	if ((void *)(at + 8) > end)
		return 0;
	__u64 tag = 0;
	__builtin_memcpy(&tag, at, 8);
	return tag; /* the bytes as they were on the wire */
}

SEC("xdp")
int taichi_probe(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	__u32 slot = queue < MAX_QUEUES ? queue : OVERFLOW_QUEUE;
	__u64 len = ctx->data_end - ctx->data;

	struct queue_counter *qc = bpf_map_lookup_elem(&queue_counters, &slot);
	if (!qc)
		return XDP_PASS;
	__u64 packets = __sync_add_and_fetch(&qc->packets, 1);
	__sync_fetch_and_add(&qc->bytes, len);

	__u32 *corep = bpf_map_lookup_elem(&queue_core, &slot);
	if (!corep)
		return XDP_PASS;
	__u32 core = *corep;
	struct core_state *cs = bpf_map_lookup_elem(&core_states, &core);
	if (!cs)
		return XDP_PASS;
	/* Cheap plain read first: the common case is an active core. */
	if (cs->state != CORE_ARMED)
		return XDP_PASS;
	if (__sync_val_compare_and_swap(&cs->state, CORE_ARMED, CORE_FIRED) != CORE_ARMED)
		return XDP_PASS; /* another CPU fired first */

	__u64 now = bpf_ktime_get_ns();
	void *ring = bpf_map_lookup_elem(&core_rings, &core);
	if (!ring)
		goto lost;
	struct event ev = {
		.magic = EVENT_MAGIC,
		.version = EVENT_VERSION,
		.core = (__u16)core,
		.queue = queue,
		.ifindex = ctx->ingress_ifindex,
		.ktime_ns = now,
		.seq = __sync_add_and_fetch(&cs->fired, 1),
		.packets = packets,
	};
	__u64 tag = payload_tag(ctx);
	__builtin_memcpy(ev.tag, &tag, 8);
	if (bpf_ringbuf_output(ring, &ev, sizeof(ev), BPF_RB_FORCE_WAKEUP) == 0)
		return XDP_PASS;
lost:
	/* Tell a disarming loop not to wait for the record (unless it already
	 * disarmed: then the state is ACTIVE and stays so). */
	__sync_fetch_and_add(&cs->lost, 1);
	__sync_val_compare_and_swap(&cs->state, CORE_FIRED, CORE_LOST);
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
