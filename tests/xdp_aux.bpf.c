// SPDX-License-Identifier: GPL-2.0
/*
 * Programs for the XDP tests and figure (tests/test_xdp.c, tests/xdp_veth.c), not part of the
 * device: another program sharing the interface with viommu's (libxdp), and the peer's receive
 * side (an XDP program on a veth gives it the NAPI instance that frames sent back with XDP_TX
 * need). Each counts the descriptor frames it sees (ethertype 0x88b5) per CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} viommu_test_seen SEC(".maps");

static __always_inline void count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	__u64 *n;

	if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(0x88b5))
		return;
	if ((n = bpf_map_lookup_elem(&viommu_test_seen, &zero)))
		(*n)++;
}

/* Counts, then lets the frame on (the next program in the dispatcher, or the stack). */
SEC("xdp")
int viommu_test_pass(struct xdp_md *ctx)
{
	count(ctx);
	return XDP_PASS;
}

/* Counts and drops: the cheapest receiver, for the figure. */
SEC("xdp")
int viommu_test_drop(struct xdp_md *ctx)
{
	count(ctx);
	return XDP_DROP;
}
