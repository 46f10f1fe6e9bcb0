// SPDX-License-Identifier: GPL-2.0
/*
 * The fast path's BPF programs: the maps (viommu_maps.bpf.h), a syscall program that answers a
 * batch of queries in one BPF_PROG_TEST_RUN, an XDP program that translates a DMA descriptor
 * carried in a frame, and a syscall program through which readers in other processes report
 * faults to the device.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "viommu_maps.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Grace periods for BPF readers: the writer updates viommu_sync[0]; the kernel returns from an
 * ARRAY_OF_MAPS update only after an RCU grace period, i.e. after every BPF program that was
 * running (and so could hold an old translation) has finished. */
struct viommu_sync_inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} viommu_sync_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct viommu_sync_inner_map);
} viommu_sync SEC(".maps") = {
	.values = { [0] = &viommu_sync_inner },
};

/* One query from its fields, verified once as a global function (not once per call site),
 * into @a (zeroed first): the query on this function's stack, not the caller's (the verifier
 * bounds the stack of the deepest chain of calls, and this one is in it). */
__noinline int viommu_xlate_fields(__u32 ep, __u32 access, __u64 iova, __u64 size, struct viommu_answer *a)
{
	struct viommu_query q = { .endpoint = ep, .access = access, .iova = iova, .size = size };

	if (!a)
		return 0;
	__builtin_memset(a, 0, sizeof(*a));
	viommu_bpf_translate(&q, a);
	return a->result;
}

/* The window's lookup (viommu_bpf_window), verified once; its own frame, beside the general
 * lookup's deeper chain (the verifier bounds the stack of the deepest chain of calls). */
__noinline int viommu_window_one(struct viommu_query *q, struct viommu_answer *a)
{
	if (!q || !a)
		return 0;
	return viommu_bpf_window(q, a);
}

/* The same, from the query's fields and to one word (viommu_bpf_window_word): no pointer, so
 * that the batch passes the fields straight from its context and writes the answer there. */
__noinline __u64 viommu_window_word_one(__u32 ep, __u32 access, __u64 iova, __u64 size)
{
	return viommu_bpf_window_word(ep, access, iova, size);
}

/* The batch's copy of endpoint @ep's window (viommu_bpf_epw_load) into @c, out of line: its
 * lookups' keys in a frame of its own, not the batch's (in the deepest chain of calls). */
__noinline int viommu_epw_load_one(__u32 ep, struct viommu_bpf_epw *c)
{
	if (!c)
		return 0;
	viommu_bpf_epw_load(ep, c);
	return c->regions != 0;
}

/* The loads alone (viommu_bpf_touch), for the batch's first pass. */
__noinline __u64 viommu_touch_one(__u32 ep, __u64 iova)
{
	return viommu_bpf_touch(ep, iova);
}

/* Whether the first pass pays (viommu_bpf_touch_pays), out of line: in line, the batch took
 * the verifier past its million instructions (E2BIG). */
__noinline int viommu_touch_pays_one(void)
{
	return viommu_bpf_touch_pays();
}

/* A fault to the device's event queue (viommu_bpf_report), its record in a frame of its own:
 * the batch's frame, which begins the deepest chain of calls, stays small. */
__noinline int viommu_report_one(__u32 ep, __u32 access, __u32 reason, __u64 addr)
{
	viommu_bpf_report(ep, access, reason, addr);
	return 0;
}

/* The batch's n, loaded again before each of its loops: to the verifier a value it knows
 * nothing of, so that the states a loop leaves with (n known exactly where it stopped) meet
 * as one in the next loop (with the n the loop before learnt, the next was verified once for
 * every n: over a million instructions); to the compiler a value it cannot keep the loop
 * before's 64 compares of (spilled across the calls, they passed the 512-byte stack). */
#define VIOMMU_BATCH_N(b) VIOMMU_LOAD(&(b)->n)

/* A window lookup's count, from viommu_bpf_window_answer()'s 1 (a HIT) or 2 (a FAULT): the
 * lookups in bits 0-7, the hits in 8-15 (a batch's at most 64 each); the lookups through the
 * batch's copy the same, 16 bits up. One register for all four: four were spilled past the
 * 512-byte stack of the deepest chain of calls. */
#define VIOMMU_BATCH_COUNT(r) (1u | (__u32)((r) == 1) << 8)
#define VIOMMU_BATCH_COPY 16
/* An answer's pad while the batch runs: the copy gave it (0 again before the run returns). */
#define VIOMMU_BATCH_COPIED 1

/* Query @i of batch @b by the checked lookups: the window (one PTE, or one piece window word),
 * else the general lookup (through @ap, the batch's one answer on its stack). Every answer
 * field written; a window lookup counted in @count (VIOMMU_BATCH_COUNT). The fields one at a time, at
 * constant offsets (a struct copy may load through a moved context pointer, which the
 * verifier refuses). */
static __always_inline void viommu_batch_checked(struct viommu_batch *b, int i, struct viommu_answer *ap,
						 __u32 *count)
{
	__u64 w;

	w = viommu_window_word_one(b->q[i].endpoint, b->q[i].access, b->q[i].iova, b->q[i].size);
	if (VIOMMU_WINW_KIND(w)) {
		*count += VIOMMU_BATCH_COUNT(viommu_bpf_window_answer(&b->a[i], b->q[i].iova, w));
		return;
	}
	viommu_xlate_fields(b->q[i].endpoint, b->q[i].access, b->q[i].iova, b->q[i].size, ap);
	b->a[i] = *ap;
}

/*
 * ctx: struct viommu_batch, copied in and out by BPF_PROG_TEST_RUN. The verifier refuses a
 * variable offset into the context, so the batch loops are unrolled (constant offsets). Every
 * answer is written straight into the context, every field: 64 bytes zeroed, 24 copied in and
 * 64 out per query on the stack cost about a third of a window lookup here.
 *
 * The first query's endpoint gets the batch's copy of its window (struct viommu_bpf_epw): its
 * queries' window pages are one PTE each, as a flat table's (with a piece in the window, the
 * region's piece window word first), checked once for the whole batch after the last one (the
 * endpoint entry's seq unchanged), else the copy's answers all given again by the checked
 * lookups. Faults go to the ring buffer after that, so that none is reported from a copy that
 * did not hold.
 */
SEC("syscall")
int viommu_xlate_batch(struct viommu_batch *b)
{
	__u32 n = b->n;
	__u32 count = 0, report; /* the window's lookups (VIOMMU_BATCH_COUNT) */
	struct viommu_bpf_epw c;
	struct viommu_answer a;
	struct viommu_stats *st;

	if (n > VIOMMU_BULK_MAX)
		return -1;
	if (!n)
		return 0;
	viommu_epw_load_one(b->q[0].endpoint, &c);
	/* First the lines of every query outside the copy's window, loaded (the misses overlap),
	 * then the checked lookups on warm lines; not when the fast path is small enough to stay
	 * cached. The copy's own lookups are a few instructions each, and overlap as they are. */
	n = VIOMMU_BATCH_N(b);
	if (viommu_touch_pays_one()) {
#pragma unroll
		for (int i = 0; i < VIOMMU_BULK_MAX; i++)
			if (i < n && !viommu_bpf_epw_covers(&c, b->q[i].endpoint, b->q[i].iova))
				viommu_touch_one(b->q[i].endpoint, b->q[i].iova);
	}
	n = VIOMMU_BATCH_N(b);
#pragma unroll
	for (int i = 0; i < VIOMMU_BULK_MAX; i++) {
		__u64 w = 0;

		if (i < n && c.regions && b->q[i].endpoint == c.ep)
			w = viommu_bpf_epw_word(&c, b->q[i].access, b->q[i].iova, b->q[i].size);
		if (w) {
			count += VIOMMU_BATCH_COUNT(viommu_bpf_window_answer(&b->a[i], b->q[i].iova, w))
				 << VIOMMU_BATCH_COPY;
			b->a[i].pad = VIOMMU_BATCH_COPIED;
		} else if (i < n) {
			viommu_batch_checked(b, i, &a, &count);
		}
	}
	/* The copy's answers stand only if its endpoint's seq did not move: else each of them
	 * again, checked (an answer's pad says the copy gave it: loaded from the context, a
	 * value the verifier knows nothing of, where a mask kept in a register would split its
	 * states query by query). */
	n = VIOMMU_BATCH_N(b);
	if (c.regions && !viommu_bpf_epw_holds(&c)) {
		count &= (1u << VIOMMU_BATCH_COPY) - 1; /* the copy's lookups did not stand */
#pragma unroll
		for (int i = 0; i < VIOMMU_BULK_MAX; i++)
			if (i < n && b->a[i].pad == VIOMMU_BATCH_COPIED)
				viommu_batch_checked(b, i, &a, &count);
	}
	/* Every answer final: its faults to the ring buffer, and the copy's mark gone. */
	n = VIOMMU_BATCH_N(b);
	report = b->report_faults;
#pragma unroll
	for (int i = 0; i < VIOMMU_BULK_MAX; i++) {
		if (i < n && report && b->a[i].result == VIOMMU_XLATE_FAULT)
			viommu_report_one(b->q[i].endpoint, b->q[i].access, b->a[i].reason, b->a[i].fault_addr);
		if (i < n)
			b->a[i].pad = 0;
	}
	/* The window's lookups, counted once per run. */
	st = viommu_bpf_stats();
	if (st) {
		__u32 t = (count & 0xff) + (count >> 16 & 0xff), h = (count >> 8 & 0xff) + (count >> 24);

		st->lookups += t;
		st->hits += h;
		st->faults[VIOMMU_FAULT_R_MAPPING] += t - h;
	}
	return 0;
}

/* ctx: one struct viommu_fault_rec from a reader in another process. */
SEC("syscall")
int viommu_report_fault(struct viommu_fault_rec *rec)
{
	struct viommu_fault_rec r = *rec;

	if (r.reason > VIOMMU_FAULT_R_MAPPING)
		return -1;
	return bpf_ringbuf_output(&viommu_faults, &r, sizeof(r), 0);
}

/*
 * XDP: a frame whose payload after the Ethernet header is a struct viommu_query followed by room
 * for a struct viommu_answer (a DMA descriptor as a datapath would see it). The program
 * translates it, writes the answer into the frame, swaps the MAC addresses (the answer goes back
 * to the sender) and returns XDP_TX on a translation (HIT or IDENTITY) and on MORE (a range over
 * more than VIOMMU_SPAN_MAX extents: the first part is mapped, the sender continues with
 * viommu_query_continue(), i.e. iova = answer.next), XDP_DROP on a fault (reported to the
 * device), XDP_PASS for frames that are not ours or too short (the next program in a libxdp
 * dispatcher, or the stack, sees them), XDP_ABORTED when the lookup raced VIOMMU_RETRIES times.
 * Any bytes after the answer's room are left as they are.
 */
#define VIOMMU_ETH_P 0x88b5 /* IEEE local experimental ethertype */
#ifndef ETH_ALEN
#define ETH_ALEN 6
#endif

/* The frame's Ethernet header if it carries a descriptor (the query, then the answer's room),
 * else NULL. */
static __always_inline struct ethhdr *viommu_xdp_frame(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(VIOMMU_ETH_P))
		return NULL;
	if ((void *)(eth + 1) + sizeof(struct viommu_query) + sizeof(struct viommu_answer) > end)
		return NULL;
	return eth;
}

/* Write @a after the query and address the frame back to its sender. */
static __always_inline void viommu_xdp_answer(struct ethhdr *eth, const struct viommu_answer *a)
{
	unsigned char mac[ETH_ALEN];

	*(struct viommu_answer *)((struct viommu_query *)(eth + 1) + 1) = *a;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
}

SEC("xdp")
int viommu_xdp(struct xdp_md *ctx)
{
	struct ethhdr *eth = viommu_xdp_frame(ctx);
	struct viommu_answer a = {};
	struct viommu_query q;
	int w;

	if (!eth)
		return XDP_PASS;
	q = *(struct viommu_query *)(eth + 1);
	if ((w = viommu_window_one(&q, &a))) { /* the window (one PTE), counted here */
		struct viommu_stats *st = viommu_bpf_stats();

		if (st) {
			st->lookups++;
			st->hits += w == 1;
			st->faults[VIOMMU_FAULT_R_MAPPING] += w == 2;
		}
	} else {
		viommu_xlate_fields(q.endpoint, q.access, q.iova, q.size, &a);
	}
	viommu_xdp_answer(eth, &a);
	switch (a.result) {
	case VIOMMU_XLATE_HIT:
	case VIOMMU_XLATE_IDENTITY:
	case VIOMMU_XLATE_MORE:
		return XDP_TX;
	case VIOMMU_XLATE_FAULT:
		viommu_bpf_report_fault(&q, &a);
		return XDP_DROP;
	default:
		return XDP_ABORTED;
	}
}

/*
 * The baseline for the XDP figure (make xdp): viommu_xdp without the translation. The same
 * parsing, the same copy of the query, the same answer write and MAC swap, XDP_TX; the answer
 * says IDENTITY (pa = iova) without looking anything up. Never attached by a device.
 */
SEC("xdp")
int viommu_xdp_nolookup(struct xdp_md *ctx)
{
	struct ethhdr *eth = viommu_xdp_frame(ctx);
	struct viommu_answer a = {};
	struct viommu_query q;

	if (!eth)
		return XDP_PASS;
	q = *(struct viommu_query *)(eth + 1);
	a.result = VIOMMU_XLATE_IDENTITY;
	a.pa = q.iova;
	viommu_xdp_answer(eth, &a);
	return XDP_TX;
}
