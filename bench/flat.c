// SPDX-License-Identifier: MIT
/*
 * The flat baseline (baselines.h): the floor any page-granular translator is judged against.
 * The table is bench_flat.bpf.c's array map, created by its skeleton with one entry per page of
 * the span plus one always-0 entry that out-of-span pages and foreign endpoints index (no branch
 * in the loops), and mmap'd from the map fd as viommu's maps are (same vmalloc'd 4 KiB pages).
 */
#define _GNU_SOURCE
#include "baselines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <bpf/libbpf.h>

#include "bench_flat.skel.h"
#include "viommu_spec.h"

#define BENCH_FLAT_VALID (1ull << 11) /* bench_flat.bpf.c's; below the PA, above the perms */
_Static_assert((VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE) < BENCH_FLAT_VALID, "permission bits fit under VALID");

struct bench_flat {
	struct viommu_bench_flat_bpf *skel;
	uint64_t *t; /* the map, mmap'd */
	size_t len;
	uint64_t base_pfn;
	uint32_t pages, ep;
};

struct bench_flat *bench_flat_new(const struct bench_extent *x, size_t n, uint32_t endpoint)
{
	struct bench_flat *f;
	uint64_t span;
	int err;

	if (!n || x[n - 1].end < x[0].start)
		return errno = EINVAL, NULL;
	span = (x[n - 1].end >> 12) - (x[0].start >> 12) + 1;
	if (span > BENCH_FLAT_PAGES_MAX)
		return errno = E2BIG, NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->base_pfn = x[0].start >> 12;
	f->pages = (uint32_t)span;
	f->ep = endpoint;
	f->skel = viommu_bench_flat_bpf__open();
	if (!f->skel)
		goto fail;
	f->skel->rodata->flat_base_pfn = f->base_pfn;
	f->skel->rodata->flat_pages = f->pages;
	f->skel->rodata->flat_ep = endpoint;
	bpf_map__set_max_entries(f->skel->maps.viommu_bench_flat, f->pages + 1);
	if ((err = viommu_bench_flat_bpf__load(f->skel))) {
		errno = -err;
		goto fail;
	}
	f->len = ((size_t)(f->pages + 1) * 8 + 4095) & ~(size_t)4095;
	f->t = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(f->skel->maps.viommu_bench_flat), 0);
	if (f->t == MAP_FAILED) {
		f->t = NULL;
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		for (uint64_t p = x[i].start >> 12; p <= x[i].end >> 12; p++)
			f->t[p - f->base_pfn] = (x[i].phys + ((p << 12) - x[i].start)) | BENCH_FLAT_VALID | x[i].flags;
	return f;
fail:
	err = errno;
	bench_flat_free(f);
	errno = err;
	return NULL;
}

void bench_flat_free(struct bench_flat *f)
{
	if (!f)
		return;
	if (f->t)
		munmap(f->t, f->len);
	viommu_bench_flat_bpf__destroy(f->skel);
	free(f);
}

uint64_t bench_flat_pages(const struct bench_flat *f)
{
	return f->pages;
}

int bench_flat_prog_fd(const struct bench_flat *f)
{
	return bpf_program__fd(f->skel->progs.viommu_bench_flat_lookup);
}

/* The entry @q reads: its page's, or the always-0 one past the span. */
static inline const uint64_t *flat_entry(const struct bench_flat *f, const struct viommu_query *q)
{
	uint64_t pfn = (q->iova >> 12) - f->base_pfn;

	return &f->t[pfn < f->pages && q->endpoint == f->ep ? pfn : f->pages];
}

/* Relaxed: the floor under churn has a writer (bench_flat_map); the same plain load on x86-64. */
static inline uint64_t flat_load(const uint64_t *e)
{
	return __atomic_load_n(e, __ATOMIC_RELAXED);
}

void bench_flat_map(struct bench_flat *f, uint64_t iova, uint64_t pa, uint32_t flags)
{
	uint64_t pfn = (iova >> 12) - f->base_pfn;

	if (pfn < f->pages)
		__atomic_store_n(&f->t[pfn], (pa & ~0xfffull) | BENCH_FLAT_VALID | flags, __ATOMIC_RELAXED);
}

void bench_flat_unmap(struct bench_flat *f, uint64_t iova)
{
	uint64_t pfn = (iova >> 12) - f->base_pfn;

	if (pfn < f->pages)
		__atomic_store_n(&f->t[pfn], 0, __ATOMIC_RELAXED);
}

static inline int flat_hit(uint64_t e, const struct viommu_query *q, uint64_t *pa)
{
	uint64_t want = BENCH_FLAT_VALID | q->access;

	*pa = (e & ~0xfffull) + (q->iova & 0xfff);
	return (e & want) == want;
}

void bench_flat_translate(const struct bench_flat *f, const struct viommu_query *q, struct viommu_answer *a)
{
	uint64_t pa;

	memset(a, 0, sizeof(*a));
	if (flat_hit(flat_load(flat_entry(f, q)), q, &pa)) {
		a->result = VIOMMU_XLATE_HIT;
		a->pa = pa;
	} else {
		a->result = VIOMMU_XLATE_FAULT;
		a->reason = 2; /* VIRTIO_IOMMU_FAULT_R_MAPPING */
		a->fault_addr = q->iova;
	}
}

uint64_t bench_flat_run(const struct bench_flat *f, const struct viommu_query *q, size_t qmask,
			size_t start, size_t ops, uint64_t *faults)
{
	const struct bench_flat fl = *f; /* in registers: the relaxed loads below do not reload it */
	uint64_t sum = 0, miss = 0, pa;

	for (size_t i = 0; i < ops; i++) {
		const struct viommu_query *qi = &q[(start + i) & qmask];

		if (flat_hit(flat_load(flat_entry(&fl, qi)), qi, &pa))
			sum += pa;
		else
			miss++;
	}
	*faults += miss;
	return sum;
}

uint64_t bench_flat_run_bulk(const struct bench_flat *f, const struct viommu_query *q, size_t qmask,
			     size_t start, size_t ops, uint64_t *faults)
{
	const struct bench_flat fl = *f;
	uint64_t sum = 0, miss = 0, pa;

	for (size_t b = 0; b < ops; b++) {
		const struct viommu_query *qb[64];
		const uint64_t *e[64];

		/* Every entry's address first, each line prefetched: 64 independent misses in
		 * flight as far as the core's fill buffers allow; then the reads. */
		for (unsigned k = 0; k < 64; k++) {
			qb[k] = &q[((start + b) * 64 + k) & qmask];
			e[k] = flat_entry(&fl, qb[k]);
			__builtin_prefetch(e[k]);
		}
		for (unsigned k = 0; k < 64; k++) {
			if (flat_hit(flat_load(e[k]), qb[k], &pa))
				sum += pa;
			else
				miss++;
		}
	}
	*faults += miss;
	return sum;
}
