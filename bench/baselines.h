/* SPDX-License-Identifier: MIT */
/*
 * The peers viommu is measured against, each a faithful model of how that peer keeps and looks up
 * its IOVA mappings, run in the same process on the same extents and the same queries:
 *
 *   gtree        QEMU virtio-iommu (hw/virtio/virtio-iommu.c): a GTree per domain keyed by
 *                {low, high} intervals with an overlap comparator, an endpoint GTree, mappings
 *                g_malloc'd, every translate/map/unmap under the device's (recursive) mutex.
 *   itree        Linux vhost IOTLB (drivers/vhost/iotlb.c): an augmented red-black interval tree
 *                (subtree max-last), leftmost cached, maps also on a list; vhost looks up under
 *                the virtqueue mutex it already holds for the whole kick, so no lock per lookup.
 *   sorted_list  DPDK 22.11 vhost IOTLB (lib/vhost/iotlb.c): a TAILQ sorted by iova, entries from
 *                a pool, searched linearly under a rte_rwlock (read side per lookup here, per
 *                burst in the bulk rows, as DPDK's datapath takes it).
 *
 * Every translate answers in viommu's terms (struct viommu_answer) so the harness can check each
 * peer against the authoritative store before timing it. The *_run functions are the timed loops:
 * the lookup is inlined into them (no indirect call per lookup); they look up q[(start + i) & qmask]
 * for i < ops (the _bulk ones: @ops batches of 64 from batch @start), return the sum of the PAs
 * they computed (the caller stores it into a volatile sink) and count faults into *faults.
 *
 * Concurrency: as the peers: gtree and sorted_list lock inside; itree must be used by one thread.
 */
#ifndef VIOMMU_BENCH_BASELINES_H
#define VIOMMU_BENCH_BASELINES_H

#include <stddef.h>
#include <stdint.h>

#include "viommu_abi.h"

/* One mapping as every implementation receives it: [start, end] inclusive, like the wire. */
struct bench_extent {
	uint64_t start, end, phys;
	uint32_t flags; /* VIOMMU_MAP_F_READ / _WRITE */
};

/* ---- gtree (QEMU) ---- */
struct bench_gtree;
struct bench_gtree *bench_gtree_new(void);
void bench_gtree_free(struct bench_gtree *g);
/* QEMU's endpoint tree: endpoint @ep attached to @domain (created on first use). */
int bench_gtree_attach(struct bench_gtree *g, uint32_t ep, uint32_t domain);
/* virtio_iommu_map(): -EEXIST when the interval overlaps a mapping (QEMU answers S_INVAL). */
int bench_gtree_map(struct bench_gtree *g, uint32_t domain, const struct bench_extent *x);
/* virtio_iommu_unmap(): removes every mapping inside [start, end]; -ERANGE on a split. */
int bench_gtree_unmap(struct bench_gtree *g, uint32_t domain, uint64_t start, uint64_t end);
void bench_gtree_translate(struct bench_gtree *g, const struct viommu_query *q, struct viommu_answer *a);
uint64_t bench_gtree_run(struct bench_gtree *g, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults);
/* @ops batches of 64 lookups, as a caller without a bulk API does them. */
uint64_t bench_gtree_run_bulk(struct bench_gtree *g, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults);

/* ---- itree (Linux vhost IOTLB) ---- */
struct bench_itree;
struct bench_itree *bench_itree_new(void);
void bench_itree_free(struct bench_itree *t);
/* vhost_iotlb_add_range(): no overlap check (vhost does none); -EFAULT when end < start. */
int bench_itree_map(struct bench_itree *t, const struct bench_extent *x);
/* vhost_iotlb_del_range(): frees every map overlapping [start, end]; returns how many. */
size_t bench_itree_unmap(struct bench_itree *t, uint64_t start, uint64_t end);
void bench_itree_translate(struct bench_itree *t, const struct viommu_query *q, struct viommu_answer *a);
uint64_t bench_itree_run(struct bench_itree *t, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults);
uint64_t bench_itree_run_bulk(struct bench_itree *t, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults);
/* Self-check of the red-black and augmentation invariants (O(n)); 0 or -1. */
int bench_itree_check(const struct bench_itree *t);

/* ---- sorted_list (DPDK vhost IOTLB) ---- */
struct bench_slist;
/* @pool entries at most (DPDK sizes its mempool up front). */
struct bench_slist *bench_slist_new(size_t pool);
void bench_slist_free(struct bench_slist *l);
/* vhost_user_iotlb_cache_insert(): sorted insert by iova (a walk from the head); an entry with
 * the same iova is dropped as a duplicate (0), -ENOMEM when the pool is empty. */
int bench_slist_map(struct bench_slist *l, const struct bench_extent *x);
/* Set-up shortcut for extents given in ascending order: append at the tail (same list as
 * inserting one by one, without the O(n^2) walks). */
int bench_slist_append(struct bench_slist *l, const struct bench_extent *x);
/* vhost_user_iotlb_cache_remove(): every entry overlapping [start, end]. */
void bench_slist_unmap(struct bench_slist *l, uint64_t start, uint64_t end);
void bench_slist_translate(struct bench_slist *l, const struct viommu_query *q, struct viommu_answer *a);
uint64_t bench_slist_run(struct bench_slist *l, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults);
uint64_t bench_slist_run_bulk(struct bench_slist *l, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults);

/* ---- flat: the floor (bench/flat.c, bench/bench_flat.bpf.c) ---- */
/*
 * Not a peer: the lower bound of any page-granular translator. One 8-byte entry per 4 KiB page
 * of the extents' IOVA span, indexed directly by page number, in a BPF_F_MMAPABLE array map
 * read through mmap of the map fd as viommu's maps are, and by a syscall program with viommu's
 * batch context. One endpoint's table; it answers the byte at iova (the query's size is not
 * checked), with no extent in the answer. It exists only for dense layouts: a span of more than
 * BENCH_FLAT_PAGES_MAX pages is refused (E2BIG).
 */
#define BENCH_FLAT_PAGES_MAX (1ull << 24) /* 128 MiB of entries */
struct bench_flat;
/* @x: @n extents in ascending order. NULL + errno (E2BIG: span too large; else the kernel's). */
struct bench_flat *bench_flat_new(const struct bench_extent *x, size_t n, uint32_t endpoint);
void bench_flat_free(struct bench_flat *f);
uint64_t bench_flat_pages(const struct bench_flat *f); /* entries (the span in pages) */
int bench_flat_prog_fd(const struct bench_flat *f); /* the syscall batch program */
void bench_flat_translate(const struct bench_flat *f, const struct viommu_query *q, struct viommu_answer *a);
uint64_t bench_flat_run(const struct bench_flat *f, const struct viommu_query *q, size_t qmask,
			size_t start, size_t ops, uint64_t *faults);
/* The writer's side, for the floor under churn (scenarios_churn.c): page @iova's entry made
 * present (@pa, @flags) or cleared, one relaxed 8-byte store each (the readers' loads are
 * relaxed too). */
void bench_flat_map(struct bench_flat *f, uint64_t iova, uint64_t pa, uint32_t flags);
void bench_flat_unmap(struct bench_flat *f, uint64_t iova);
/* @ops batches of 64: every entry's line prefetched, then all read. */
uint64_t bench_flat_run_bulk(const struct bench_flat *f, const struct viommu_query *q, size_t qmask,
			     size_t start, size_t ops, uint64_t *faults);

#endif
