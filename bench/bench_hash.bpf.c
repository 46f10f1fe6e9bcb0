// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark baseline, not part of the device: the naive "BPF hash map per page" translator —
 * BPF_MAP_TYPE_HASH keyed by (domain, page frame), one element per 4 KiB page, looked up from a
 * syscall program with the same batch context as viommu_xlate_batch. Endpoint = domain here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "viommu_abi.h"

char LICENSE[] SEC("license") = "GPL";

struct viommu_bench_key {
	__u32 domain;
	__u32 pad;
	__u64 pfn;
};

struct viommu_bench_val {
	__u64 pa; /* of the page */
	__u32 perm;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct viommu_bench_key);
	__type(value, struct viommu_bench_val);
} viommu_bench_pages SEC(".maps");

__noinline int viommu_bench_one(struct viommu_query *q, struct viommu_answer *a)
{
	struct viommu_bench_key k = {};
	struct viommu_bench_val *v;

	if (!q || !a)
		return 0;
	k.domain = q->endpoint;
	k.pfn = q->iova >> 12;
	v = bpf_map_lookup_elem(&viommu_bench_pages, &k);
	if (v && (v->perm & q->access) == q->access) {
		a->result = VIOMMU_XLATE_HIT;
		a->pa = v->pa + (q->iova & 0xfff);
	} else {
		a->result = VIOMMU_XLATE_FAULT;
		a->reason = 2;
		a->fault_addr = q->iova;
	}
	return a->result;
}

SEC("syscall")
int viommu_bench_hash_lookup(struct viommu_batch *b)
{
	__u32 n = b->n;

	if (n > VIOMMU_BULK_MAX)
		return -1;
#pragma unroll
	for (int i = 0; i < VIOMMU_BULK_MAX; i++) {
		struct viommu_query q;
		struct viommu_answer a = {};

		if (i >= n)
			break;
		q = b->q[i];
		viommu_bench_one(&q, &a);
		b->a[i] = a;
	}
	return 0;
}
