// SPDX-License-Identifier: MIT
/*
 * Worlds (worlds.h): the extent layouts, building a world (device, fast path, reader,
 * baselines), the query sets and the checks of every implementation against the store.
 */
#define _GNU_SOURCE
#include "worlds.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_hash.skel.h"
#include "harness.h"

/* ---------------------------------------------------------------- wire requests ---- */

uint8_t bench_req_tail[4];

static uint8_t req_attach(struct viommu_device *dev, uint32_t domain, uint32_t ep)
{
	uint8_t r[VIOMMU_RD_LEN(struct viommu_wire_attach)];
	size_t len = viommu_req_attach(r, domain, ep, 0);

	if (viommu_device_request_buf(dev, r, len, bench_req_tail, sizeof(bench_req_tail)) != 4)
		return 0xff;
	return bench_req_tail[0];
}

/* ---------------------------------------------------------------- worlds ---- */

const char *const bench_size_names[5] = { "4k", "2m", "mixed", "2^48", "sparse" };

/* @n single pages scattered over 48 bits, ascending: one at a random page of each of @n equal
 * slices of [2^32, 2^48), never the slice's last page (the page after each is a gap). */
static void sparse_layout(struct bench_extent *x, size_t n, uint64_t seed)
{
	uint64_t s = seed, slice = (((1ull << 48) - (1ull << 32)) / n) & ~4095ull;

	for (size_t i = 0; i < n; i++) {
		uint64_t iova = (1ull << 32) + i * slice + (bench_rand(&s) % (slice / 4096 - 1)) * 4096;
		uint64_t phys = (bench_rand(&s) % (1ull << 40)) & ~4095ull;

		x[i] = (struct bench_extent){ iova, iova + 4095, phys ? phys : 4096,
					      VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
	}
}

/* @n extents of @size (4k, 2m or mixed) from 4 GiB up, ascending, each naturally aligned (as
 * IOVA allocators and huge pages place them), one gap after about one extent in four so that
 * misses and new MAPs have room (@gaps, if not NULL, gets one unmapped IOVA per gap). Returns
 * the 4 KiB pages mapped. */
static uint64_t dense_layout(struct bench_extent *x, size_t n, enum bench_size size, uint64_t seed,
			     uint64_t *gaps, size_t *ngaps)
{
	/* "mixed": half single pages, the rest 8 KiB..2 MiB, as a guest's streaming DMA looks. */
	static const uint64_t mixed[] = { 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096,
					  4096, 8192, 8192, 8192, 16384, 65536, 65536, 65536,
					  262144, 262144, 2ull << 20 };
	uint64_t s = seed, iova = 1ull << 32, pages = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t sz = size == BENCH_4K ? 4096 : size == BENCH_2M ? 2ull << 20 :
				mixed[bench_rand(&s) % (sizeof(mixed) / sizeof(mixed[0]))];
		uint64_t phys = (bench_rand(&s) % (1ull << 40)) & ~(sz - 1);
		uint64_t r = bench_rand(&s);

		iova = (iova + sz - 1) & ~(sz - 1);
		x[i] = (struct bench_extent){ iova, iova + sz - 1, phys ? phys : sz,
					      VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
		iova += sz;
		pages += sz >> 12;
		if (r % 4 == 0) {
			uint64_t granule = size == BENCH_2M ? 2ull << 20 : 4096;

			if (gaps)
				gaps[(*ngaps)++] = iova;
			iova += granule * (1 + (r >> 8) % 4);
		}
	}
	return pages;
}

/* The seed of a world's layout: the same spec, the same extents. */
static uint64_t world_seed(struct bench_world_spec spec)
{
	return 0x5eed0000ull + spec.size * 0x100000000ull + spec.extents;
}

/* The extent list: the same list feeds the device and every baseline. */
static void world_layout(struct bench_world *w, uint64_t seed)
{
	size_t n = w->spec.extents;

	w->ext = bench_calloc(n, sizeof(*w->ext));
	w->gaps = bench_calloc(n, sizeof(*w->gaps));
	w->n = n;
	if (w->spec.size == BENCH_IDENT) {
		/* Linux's identity domain without BYPASS_CONFIG: one extent of 2^48 bytes. */
		w->ext[0] = (struct bench_extent){ 0, (1ull << 48) - 1, 0, VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
		w->pages = 1ull << 36;
		return;
	}
	if (w->spec.size == BENCH_SPARSE) {
		sparse_layout(w->ext, n, seed);
		for (size_t i = 0; i < n; i++)
			if (i % 4 == 0)
				w->gaps[w->ngaps++] = w->ext[i].end + 1;
		w->pages = n;
		w->nother = n / 4 ? n / 4 : 1;
		w->others = BENCH_SPARSE_DOMAINS - 1;
		for (unsigned d = 0; d < w->others; d++) {
			w->other[d] = bench_calloc(w->nother, sizeof(*w->other[d]));
			sparse_layout(w->other[d], w->nother, seed + 0x1000 * (d + 1));
		}
		return;
	}
	w->pages = dense_layout(w->ext, n, w->spec.size, seed, w->gaps, &w->ngaps);
	if (w->spec.size == BENCH_2M) {
		/* The 4 KiB world of as many extents, beside it in a domain of its own. */
		w->nother = n;
		w->others = 1;
		w->other[0] = bench_calloc(n, sizeof(*w->other[0]));
		dense_layout(w->other[0], n, BENCH_4K,
			     world_seed((struct bench_world_spec){ BENCH_4K, w->spec.extents }), NULL, NULL);
	}
}

static struct viommu_device *world_device(void)
{
	struct viommu_config cfg;
	struct viommu_device *dev;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_mappings_per_domain = 1u << 22; /* the 1M-extent worlds, plus room */
	cfg.max_mappings = 1ull << 23;
	dev = viommu_device_new(&cfg);
	if (!dev)
		bench_fail("viommu_device_new: %s", strerror(errno));
	if (viommu_device_add_endpoint(dev, BENCH_EP, true, NULL, 0))
		bench_fail("viommu_device_add_endpoint failed");
	return dev;
}

static void world_populate_domain(struct viommu_device *dev, uint32_t domain, uint32_t ep,
				  const struct bench_extent *ext, size_t n)
{
	uint8_t r[VIOMMU_RD_LEN(struct viommu_wire_map)];
	uint8_t st;

	if ((st = req_attach(dev, domain, ep)) != VIOMMU_S_OK)
		bench_fail("ATTACH: status %u", st);
	viommu_device_batch_begin(dev);
	for (size_t i = 0; i < n; i++) {
		const struct bench_extent *x = &ext[i];

		viommu_req_map(r, domain, x->start, x->end, x->phys, x->flags);
		if ((st = bench_req_send(dev, r, sizeof(r))) != VIOMMU_S_OK)
			bench_fail("MAP [0x%llx, 0x%llx] of extent %zu: status %u",
				   (unsigned long long)x->start, (unsigned long long)x->end, i, st);
		if (i % 4096 == 4095) { /* one queue kick per 4096 requests */
			viommu_device_batch_end(dev);
			viommu_device_batch_begin(dev);
		}
	}
	viommu_device_batch_end(dev);
}

static void world_populate(struct bench_world *w, struct viommu_device *dev)
{
	world_populate_domain(dev, BENCH_DOMAIN, BENCH_EP, w->ext, w->n);
	for (unsigned d = 0; d < w->others; d++) {
		if (viommu_device_add_endpoint(dev, BENCH_EP + 1 + d, true, NULL, 0))
			bench_fail("viommu_device_add_endpoint failed");
		world_populate_domain(dev, BENCH_DOMAIN + 1 + d, BENCH_EP + 1 + d, w->other[d], w->nother);
	}
}

/* A store-only device with the world's extents (the viommu_store rows). */
struct viommu_device *bench_world_store_device(struct bench_world *w)
{
	struct viommu_device *dev = world_device();

	world_populate(w, dev);
	return dev;
}

void bench_world_free(struct bench_world *w)
{
	if (!w)
		return;
	viommu_bench_hash_bpf__destroy(w->hash);
	bench_gtree_free(w->gtree);
	bench_itree_free(w->itree);
	bench_slist_free(w->slist);
	bench_flat_free(w->flat);
	for (unsigned d = 0; d < BENCH_SPARSE_DOMAINS - 1; d++)
		free(w->other[d]);
	viommu_reader_close(w->rd);
	viommu_fastpath_free(w->fp);
	viommu_device_free(w->dev);
	free(w->ext);
	free(w->gaps);
	free(w);
	/* Hand the world's heap back: the next scenario's allocations (the store's AVL nodes on
	 * every MAP) should not depend on the fragments a 1M-extent world left behind. */
	malloc_trim(0);
}

bool bench_fp_refused(int err)
{
	return err == EPERM || err == ENOSYS || err == EACCES;
}

/* Size the pools for the world (smaller maps load faster): a leaf per 2 MiB region holding a
 * piece smaller than 2 MiB, level-4/3/2 nodes per 1 GiB / 512 GiB / 256 TiB region, with
 * slack; the hash at no more than half load. */
static void pool_count(const struct bench_extent *ext, size_t n, uint64_t *nodes, uint64_t *leaves,
		       uint64_t *regions)
{
	uint64_t last[4] = { ~0ull, ~0ull, ~0ull, ~0ull }, prev2m = ~0ull;
	static const unsigned shift[4] = { 21, 30, 39, 48 };

	for (size_t i = 0; i < n; i++) {
		const struct bench_extent *x = &ext[i];

		for (uint64_t r = x->start >> 21; r <= x->end >> 21; r++)
			if (r != prev2m) {
				(*regions)++;
				prev2m = r;
			}
		for (int l = 0; l < 4; l++) {
			if ((l > 0 || x->end - x->start + 1 < (2ull << 20)) && (x->start >> shift[l]) != last[l]) {
				(*(l ? nodes : leaves))++;
				last[l] = x->start >> shift[l];
			}
		}
	}
}

static void world_pools(const struct bench_world *w, struct viommu_fastpath_opts *o)
{
	uint64_t nodes = 64, leaves = 16, regions = 0, buckets = 1024;

	if (w->spec.size != BENCH_IDENT)
		pool_count(w->ext, w->n, &nodes, &leaves, &regions);
	for (unsigned d = 0; d < w->others; d++)
		pool_count(w->other[d], w->nother, &nodes, &leaves, &regions);
	while (buckets * VIOMMU_HASH_WAYS < 2 * regions && buckets < (1u << 22))
		buckets *= 2;
	o->hash_buckets = (uint32_t)buckets;
	o->nodes = (uint32_t)(nodes + nodes / 4 + 64);
	o->leaves = (uint32_t)(leaves + leaves / 4 + 16);
	/* A window over the domain's dense span, as the flat table has one entry per page of it:
	 * the smallest aligned block (2 MiB regions, a power of two) holding first and last IOVA,
	 * up to 32 GiB (mixed x 64K spans 4 to 18.2 GiB: with 16, the aligned block stopped at 16
	 * GiB and 15 % of its lookups went past the window, through the walk; flat holds all of
	 * it). The sparse world, whose span is 2^48, keeps the default window. */
	if (w->spec.size != BENCH_IDENT && w->spec.size != BENCH_SPARSE && w->n) {
		uint64_t first = w->ext[0].start >> 21, last = w->ext[w->n - 1].end >> 21;
		uint32_t regions = 1;

		while (regions < 16384 && first / regions != last / regions)
			regions *= 2;
		o->window_regions = regions;
		/* A 2 MiB world's 4 KiB domain gets one the same size: both lists start at 4 GiB,
		 * and N pages span less than N 2 MiB extents. */
		o->windows = 1 + w->others;
		/* And a piece window over the whole span (up to 2^22 regions, 8 TiB: 32 MiB), for
		 * the 2 MiB pieces past the window. */
		for (regions = 1; regions < (1u << 22) && first / regions != last / regions;)
			regions *= 2;
		o->piece_regions = regions;
	}
	o->extents = (uint32_t)(w->n + w->others * w->nother) + 4096;
}

/* gtree, itree and sorted_list holding the world's extents. */
static void world_baselines(struct bench_world *w)
{
	w->gtree = bench_gtree_new();
	w->itree = bench_itree_new();
	w->slist = bench_slist_new(w->n + (1u << 16));
	if (!w->itree || !w->slist)
		bench_fail("out of memory");
	bench_gtree_attach(w->gtree, BENCH_EP, BENCH_DOMAIN);
	for (size_t i = 0; i < w->n; i++) {
		if (bench_gtree_map(w->gtree, BENCH_DOMAIN, &w->ext[i]) ||
		    bench_itree_map(w->itree, &w->ext[i]) || bench_slist_append(w->slist, &w->ext[i]))
			bench_fail("a baseline refused extent %zu", i);
	}
	/* The floor, where the layout is dense enough for one. */
	w->flat = bench_flat_new(w->ext, w->n, BENCH_EP);
	if (!w->flat)
		w->flat_err = errno;
	/* The tree must be a valid augmented red-black tree before anything is timed. */
	if (w->n <= (1u << 16) && bench_itree_check(w->itree))
		bench_fail("itree: red-black or augmentation invariant broken after set-up");
}

struct bench_world *bench_world_build(struct bench_world_spec spec, const struct viommu_fastpath_opts *fpo,
				      bool baselines)
{
	struct bench_world *w = bench_calloc(1, sizeof(*w));
	struct viommu_fastpath_opts o = fpo ? *fpo : (struct viommu_fastpath_opts){ 0 };
	uint64_t t0;
	char nb[16];

	/* The worlds' layouts are known and dense: pools sized for them, not for the worst
	 * layout a guest could choose (viommu_fastpath_opts.overcommit). */
	o.overcommit = true;
	/* The BPF scenarios run in every world: the replica is made with the fast path (userspace
	 * readers read the memfd either way). */
	o.bpf = true;
	w->spec = spec;
	w->strict = !o.lazy;
	world_layout(w, world_seed(spec));
	world_pools(w, &o);
	w->dev = world_device();
	w->fp = viommu_fastpath_new(w->dev, &o);
	if (!w->fp) {
		int err = errno;

		bench_world_free(w);
		errno = err;
		return NULL;
	}
	w->rd = viommu_reader_open(w->fp);
	if (!w->rd)
		bench_fail("viommu_reader_open: %s", strerror(errno));
	t0 = bench_now_ns();
	world_populate(w, w->dev);
	w->populate_s = (bench_now_ns() - t0) / 1e9;
	if (viommu_device_nr_mappings(w->dev) != w->n + w->others * w->nother)
		bench_fail("the device holds %llu mappings, not %zu (+ the other domains')",
			   (unsigned long long)viommu_device_nr_mappings(w->dev), w->n);
	if (baselines)
		world_baselines(w);
	printf("# world %s x %s: %zu extents, %llu pages, mapped by MAP requests in %.3f s (%.1fM MAPs/s), "
	       "fast path %s\n",
	       bench_size_names[spec.size], bench_fmt_count(spec.extents, nb, sizeof(nb)), w->n,
	       (unsigned long long)w->pages, w->populate_s,
	       w->n / (w->populate_s > 0 ? w->populate_s : 1) / 1e6, o.lazy ? "lazy" : "strict");
	if (baselines && w->flat)
		printf("# flat: %llu entries of 8 B (%.1f MiB), one per page of the span\n",
		       (unsigned long long)bench_flat_pages(w->flat), bench_flat_pages(w->flat) * 8.0 / (1 << 20));
	else if (baselines)
		printf("# flat: skipped for this world: %s (a flat table exists only for dense layouts: "
		       "at most 2^24 pages of span)\n",
		       w->flat_err == E2BIG ? "its IOVA span is too large" : strerror(w->flat_err));
	return w;
}

/* ---------------------------------------------------------------- queries and checks ---- */

void bench_qset_free(struct bench_qset *s)
{
	free(s->q);
	free(s->want);
	memset(s, 0, sizeof(*s));
}

/* @n queries of @kind (Q_HOT: one query repeated) and the store's answers to them. The RNG runs
 * here, never inside a timed loop. */
void bench_qset_make(struct bench_qset *s, struct bench_world *w, enum bench_qkind kind, size_t n,
		     uint64_t seed)
{
	uint64_t r = seed;

	s->n = n;
	s->q = bench_calloc(n, sizeof(*s->q));
	s->want = bench_calloc(n, sizeof(*s->want));
	for (size_t i = 0; i < n; i++) {
		struct viommu_query *q = &s->q[i];
		const struct bench_extent *x = NULL;

		q->endpoint = BENCH_EP;
		q->access = VIOMMU_MAP_F_READ;
		q->size = 1;
		switch (kind) {
		case Q_HIT:
			x = &w->ext[bench_rand(&r) % w->n];
			q->iova = x->start + bench_rand(&r) % (x->end - x->start + 1);
			break;
		case Q_HIT_OTHER:
			if (!w->others)
				bench_fail("query set: world %s has no other domain", bench_size_names[w->spec.size]);
			q->endpoint = BENCH_EP + 1;
			x = &w->other[0][bench_rand(&r) % w->nother];
			q->iova = x->start + bench_rand(&r) % (x->end - x->start + 1);
			break;
		case Q_MISS:
			q->iova = w->gaps[bench_rand(&r) % w->ngaps] + bench_rand(&r) % 4096;
			break;
		case Q_HOT:
			/* The middle extent: a fair place in a sorted list, any place in a tree. */
			x = &w->ext[w->n / 2];
			q->iova = x->start + (x->end - x->start) / 2;
			break;
		}
		viommu_device_answer(w->dev, q, &s->want[i]);
		if ((kind == Q_MISS) != (s->want[i].result == VIOMMU_XLATE_FAULT) ||
		    (kind != Q_MISS && s->want[i].ext_end - s->want[i].ext_start != x->end - x->start))
			bench_fail("query set: the store answers %u for iova 0x%llx", s->want[i].result,
				   (unsigned long long)q->iova);
	}
}

/* Compare one answer with the store's; abort the run on a mismatch. @ranges: the
 * implementation reports the extent, check it too. */
void bench_check_answer(const char *who, const char *scenario, const struct viommu_query *q,
			const struct viommu_answer *want, const struct viommu_answer *got, bool ranges)
{
	bool ok = got->result == want->result;

	/* A raw BPF answer (XDP) to a range over more than VIOMMU_SPAN_MAX extents. */
	if (got->result == VIOMMU_XLATE_MORE && viommu_fastpath_agrees(q, want, got))
		return;
	if (ok && (want->result == VIOMMU_XLATE_HIT || want->result == VIOMMU_XLATE_IDENTITY))
		ok = got->pa == want->pa;
	if (ok && ranges && want->result == VIOMMU_XLATE_HIT)
		ok = viommu_fastpath_agrees(q, want, got); /* whole extents when asked, else a run */
	if (ok && want->result == VIOMMU_XLATE_FAULT)
		ok = got->reason == want->reason && got->fault_addr == want->fault_addr;
	if (!ok)
		bench_fail("%s: %s disagrees with the store: ep %u iova 0x%llx access %u: result %u pa "
			   "0x%llx extent [0x%llx, 0x%llx] reason %u; store: result %u pa 0x%llx extent "
			   "[0x%llx, 0x%llx] reason %u",
			   scenario, who, q->endpoint, (unsigned long long)q->iova, q->access, got->result,
			   (unsigned long long)got->pa, (unsigned long long)got->ext_start,
			   (unsigned long long)got->ext_end, got->reason, want->result,
			   (unsigned long long)want->pa, (unsigned long long)want->ext_start,
			   (unsigned long long)want->ext_end, want->reason);
}

/* ---------------------------------------------------------------- implementations ---- */

const char *const bench_impl_names[I_COUNT] = { "viommu", "gtree", "itree", "sorted_list" };

/* Queries a peer is timed (and checked) on: all of them, except the linear list on large worlds,
 * whose every lookup walks half the list; it gets the first ones, and the row says so. */
size_t bench_impl_nq(enum bench_impl impl, const struct bench_world *w, size_t nq)
{
	size_t cap = nq;

	if (impl == I_SLIST) {
		size_t budget = (1u << 26) / (w->n ? w->n : 1); /* ~64M node visits to verify */

		while (cap > 64 && cap > budget)
			cap /= 2;
	}
	return cap;
}

void bench_impl_translate(enum bench_impl impl, struct bench_world *w, const struct viommu_query *q,
			  struct viommu_answer *a)
{
	switch (impl) {
	case I_VIOMMU:
		viommu_reader_translate(w->rd, q, a);
		break;
	case I_GTREE:
		bench_gtree_translate(w->gtree, q, a);
		break;
	case I_ITREE:
		bench_itree_translate(w->itree, q, a);
		break;
	default:
		bench_slist_translate(w->slist, q, a);
		break;
	}
}

void bench_impl_verify(enum bench_impl impl, struct bench_world *w, const char *scenario,
			const struct bench_qset *s, size_t nq)
{
	struct viommu_answer a;

	for (size_t i = 0; i < nq; i++) {
		bench_impl_translate(impl, w, &s->q[i], &a);
		bench_check_answer(bench_impl_names[impl], scenario, &s->q[i], &s->want[i], &a, true);
	}
	if (impl == I_VIOMMU) {
		/* Again: the entries the first pass left in the reader's private TLB answer now. */
		for (size_t i = 0; i < nq; i++) {
			viommu_reader_translate(w->rd, &s->q[i], &a);
			bench_check_answer("viommu (TLB)", scenario, &s->q[i], &s->want[i], &a, true);
		}
	}
}
