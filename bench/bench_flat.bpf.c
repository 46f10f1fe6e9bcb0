// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark baseline, not part of the device: the floor of a page-granular translator. One
 * 8-byte entry per 4 KiB page of the world's IOVA span, indexed directly by page number, in a
 * BPF_F_MMAPABLE array map like viommu's (userspace fills it and reads it through mmap of the
 * map fd, bench/flat.c). This program answers a batch with the same context as
 * viommu_xlate_batch; the array lookup is one the verifier inlines, as viommu's are.
 *
 * Entry: the page's PA (4 KiB aligned) | BENCH_FLAT_VALID | the VIOMMU_MAP_F_* permission bits;
 * 0 = not mapped. One endpoint's table (flat_ep); it answers the byte at iova only.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "viommu_abi.h"

char LICENSE[] SEC("license") = "GPL";

#define BENCH_FLAT_VALID (1ull << 11) /* keep in step with bench/flat.c (checked at build) */

const volatile __u64 flat_base_pfn; /* page number of entry 0 */
const volatile __u32 flat_pages; /* entries of the span (the map holds one more, always 0) */
const volatile __u32 flat_ep;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* set to flat_pages + 1 before load */
	__type(key, __u32);
	__type(value, __u64);
} viommu_bench_flat SEC(".maps");

SEC("syscall")
int viommu_bench_flat_lookup(struct viommu_batch *b)
{
	__u32 n = b->n;

	if (n > VIOMMU_BULK_MAX)
		return -1;
	/* Unrolled: the context is only read at constant offsets (the verifier's rule). Each answer
	 * is written straight into the context, every field, as viommu_xlate_batch does for the
	 * queries its window takes. */
#pragma unroll
	for (int i = 0; i < VIOMMU_BULK_MAX; i++) {
		__u64 pfn, *e, want, iova;
		__u32 idx, access;

		if (i >= n)
			break;
		iova = b->q[i].iova;
		access = b->q[i].access;
		pfn = (iova >> 12) - flat_base_pfn;
		idx = pfn < flat_pages && b->q[i].endpoint == flat_ep ? (__u32)pfn : flat_pages;
		e = bpf_map_lookup_elem(&viommu_bench_flat, &idx);
		want = BENCH_FLAT_VALID | access;
		b->a[i].ext_start = 0;
		b->a[i].ext_end = 0;
		b->a[i].ext_phys = 0;
		b->a[i].ext_flags = 0;
		b->a[i].pad = 0;
		b->a[i].next = 0;
		if (e && (*e & want) == want) {
			b->a[i].result = VIOMMU_XLATE_HIT;
			b->a[i].reason = 0;
			b->a[i].pa = (*e & ~0xfffull) + (iova & 0xfff);
			b->a[i].fault_addr = 0;
		} else {
			b->a[i].result = VIOMMU_XLATE_FAULT;
			b->a[i].reason = 2; /* VIRTIO_IOMMU_FAULT_R_MAPPING */
			b->a[i].pa = 0;
			b->a[i].fault_addr = iova;
		}
	}
	return 0;
}
