/* SPDX-License-Identifier: MIT */
/*
 * Worlds: a world is one device with one domain holding N extents of one size class, mapped with
 * real MAP requests, the fast path attached, a reader open, and the baselines (baselines.h) built
 * from the same extent list. World scenarios run once per world they want; standalone scenarios
 * build what they need. Only one suite world lives at a time (the 1M-extent worlds are large).
 *
 * Also here: the query sets scenarios time, and the check of any implementation's answer
 * against the authoritative store (viommu_device_answer): a wrong answer fails the run.
 *
 * Concurrency: the main thread only (churn_readers' threads open readers of their own).
 * Errors: failures to build are bench_fail(); bench_world_build returns NULL (errno set) only
 * when the kernel refuses the fast path.
 */
#ifndef VIOMMU_BENCH_WORLDS_H
#define VIOMMU_BENCH_WORLDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "baselines.h"
#include "device.h"
#include "fastpath.h"
#include "reader.h"

#define BENCH_EP 8u /* the endpoint every world translates for */
#define BENCH_DOMAIN 1u
#define BENCH_BATCH 64u /* queries per bulk call / per BPF run (VIOMMU_BULK_MAX) */

_Static_assert(BENCH_BATCH == VIOMMU_BULK_MAX, "one BPF run answers one bulk batch");

/* ---- wire requests ---- */

/* MAP and UNMAP as the driver lays them out (wire.h); built before timing, sent as they are. */
struct bench_wire_pair {
	uint8_t map[VIOMMU_RD_LEN(struct viommu_wire_map)];
	uint8_t unmap[VIOMMU_RD_LEN(struct viommu_wire_unmap)];
};

extern uint8_t bench_req_tail[4]; /* where every request's status lands */

/* One request through the whole request path; its status (0xff: no status written). */
static inline uint8_t bench_req_send(struct viommu_device *dev, const uint8_t *r, size_t len)
{
	if (viommu_device_request_buf(dev, r, len, bench_req_tail, sizeof(bench_req_tail)) != 4)
		return 0xff;
	return bench_req_tail[0];
}

/* ---- worlds ---- */

/* BENCH_SPARSE: 4 KiB extents scattered over 48 bits (one in each of N equal slices of
 * [2^32, 2^48)), and BENCH_SPARSE_DOMAINS - 1 other domains (endpoints BENCH_EP + 1...) holding
 * N / 4 such extents each; queries go to BENCH_EP's domain, the one the peers hold. */
enum bench_size { BENCH_4K, BENCH_2M, BENCH_MIXED, BENCH_IDENT, BENCH_SPARSE };
extern const char *const bench_size_names[5];
#define BENCH_SPARSE_DOMAINS 4u

struct bench_world_spec {
	enum bench_size size;
	uint32_t extents;
};

struct viommu_bench_hash_bpf; /* bench_hash.skel.h */

struct bench_world {
	struct bench_world_spec spec;
	bool strict;
	struct viommu_device *dev;
	struct viommu_fastpath *fp; /* NULL: a store-only device */
	struct viommu_reader *rd;
	struct bench_extent *ext;
	size_t n;
	uint64_t *gaps; /* one unmapped, page-aligned IOVA per gap between extents */
	size_t ngaps;
	uint64_t pages; /* 4 KiB pages mapped */
	struct bench_gtree *gtree;
	struct bench_itree *itree;
	struct bench_slist *slist;
	struct bench_flat *flat; /* NULL: the span is not dense enough (flat_err says why) */
	int flat_err;
	/* The other domains' extents (domain BENCH_DOMAIN + 1 + d, endpoint BENCH_EP + 1 + d), in
	 * the device only: BENCH_SPARSE, BENCH_SPARSE_DOMAINS - 1 of N / 4 sparse extents; BENCH_2M,
	 * one of N 4 KiB extents laid out as the 4 KiB world of N, so that a 2 MiB lookup and a
	 * 4 KiB one are timed in the same rounds (lookup_random's viommu_4k row). */
	struct bench_extent *other[BENCH_SPARSE_DOMAINS - 1];
	size_t nother; /* extents each */
	unsigned others; /* domains */
	struct viommu_bench_hash_bpf *hash; /* bpf_hash, built on demand (scenarios_bpf.c) */
	int hash_err; /* why bpf_hash is absent (0: not tried) */
	double populate_s;
};

/* Build a world: the device (MAP requests through the fast path), a reader, the baselines.
 * @fpo: fast-path options (lazy/strict); @baselines: build gtree/itree/sorted_list too.
 * NULL with errno when the kernel refuses the fast path (bench_fp_refused() tells which). */
struct bench_world *bench_world_build(struct bench_world_spec spec, const struct viommu_fastpath_opts *fpo,
				      bool baselines);
void bench_world_free(struct bench_world *w);
/* A store-only device with the world's extents (the viommu_store rows). */
struct viommu_device *bench_world_store_device(struct bench_world *w);
/* @err (from bench_world_build) means "no BPF here" rather than a failure. */
bool bench_fp_refused(int err);

/* ---- query sets and checks ---- */

struct bench_qset {
	struct viommu_query *q;
	struct viommu_answer *want; /* the store's answers */
	size_t n; /* power of two */
};

enum bench_qkind { Q_HIT, Q_MISS, Q_HOT, Q_HIT_OTHER };

/* @n queries of @kind (Q_HOT: one query repeated; Q_HIT_OTHER: hits in the first other domain,
 * from its endpoint) and the store's answers to them. */
void bench_qset_make(struct bench_qset *s, struct bench_world *w, enum bench_qkind kind, size_t n,
		     uint64_t seed);
void bench_qset_free(struct bench_qset *s);
/* Compare one answer with the store's; fail the run on a mismatch. @ranges: the
 * implementation reports the extent, check it too. */
void bench_check_answer(const char *who, const char *scenario, const struct viommu_query *q,
			const struct viommu_answer *want, const struct viommu_answer *got, bool ranges);

/* ---- the implementations a world holds ---- */

enum bench_impl { I_VIOMMU, I_GTREE, I_ITREE, I_SLIST, I_COUNT };
extern const char *const bench_impl_names[I_COUNT];

/* Queries @impl is timed and checked on (the sorted list gets fewer on large worlds). */
size_t bench_impl_nq(enum bench_impl impl, const struct bench_world *w, size_t nq);
void bench_impl_translate(enum bench_impl impl, struct bench_world *w, const struct viommu_query *q,
			  struct viommu_answer *a);
/* Check @impl's answers to the first @nq queries of @s (viommu's twice: the TLB's too). */
void bench_impl_verify(enum bench_impl impl, struct bench_world *w, const char *scenario,
		       const struct bench_qset *s, size_t nq);

#endif
