/* SPDX-License-Identifier: MIT */
/*
 * The scenarios' callbacks, as main.c's table lists them (setup / run / teardown, Linux
 * selftests/bpf bench style), grouped by file:
 *
 *   scenarios_lookup.c     lookup_hot, lookup_random, lookup_miss, lookup_bulk64, lookup_identity
 *   scenarios_bpf.c        bpf_lookup (syscall program vs bpf_hash), xdp_lookup
 *   scenarios_map_unmap.c  map_unmap; the MAP+UNMAP page sets the other writers reuse
 *   scenarios_churn.c      grace_period (strict vs lazy UNMAP), churn_readers
 *   scenarios_vms.c        many_vms: N devices in one process, memory per device, lookups
 *
 * setup returns non-zero to skip the world; run checks every implementation against the store,
 * then times it and adds rows; teardown frees what setup made.
 */
#ifndef VIOMMU_BENCH_SCENARIOS_H
#define VIOMMU_BENCH_SCENARIOS_H

#include "harness.h"
#include "worlds.h"

struct bench_ctx {
	struct bench_world *w; /* NULL for standalone scenarios */
	struct bench_qset qs;
	void *priv;
};

/* ---- scenarios_lookup.c ---- */
int setup_random(struct bench_ctx *c); /* bench_opt.nq random hits: also bpf_lookup, xdp_lookup */
int setup_random_beside(struct bench_ctx *c); /* lookup_random: and a 2 MiB world's 4 KiB domain */
int setup_hot(struct bench_ctx *c);
int setup_miss(struct bench_ctx *c);
void teardown_qset(struct bench_ctx *c);
void run_lookup_random(struct bench_ctx *c);
void run_lookup_hot(struct bench_ctx *c);
void run_lookup_miss(struct bench_ctx *c);
void run_lookup_bulk(struct bench_ctx *c);
void run_lookup_identity(struct bench_ctx *c);

/* ---- scenarios_bpf.c ---- */
int setup_bpf(struct bench_ctx *c);
void run_bpf_lookup(struct bench_ctx *c);
void run_xdp_lookup(struct bench_ctx *c);

/* ---- scenarios_map_unmap.c ---- */
int setup_mu(struct bench_ctx *c);
void run_map_unmap(struct bench_ctx *c);
void teardown_mu(struct bench_ctx *c);

/* A set of gap pages to MAP and UNMAP, as wire requests and as extents, pre-built so that only
 * the requests themselves are timed. */
struct bench_mu {
	struct bench_world *w;
	struct bench_wire_pair *wire;
	struct bench_extent *pages;
	size_t n;
};

/* A MAP+UNMAP job's ctx: the pages, and the device the requests go to. */
struct bench_mu_job {
	struct bench_mu *m;
	struct viommu_device *dev;
};

extern const char *const bench_mu_patterns[2]; /* the page sets' variants: random, hot */

/* @want distinct gap pages of @w: spread over the world, or (@hot) its last gaps. */
void bench_mu_pages(struct bench_mu *m, struct bench_world *w, size_t want, bool hot, uint64_t seed);
/* @n consecutive pages from @start (unmapped, in @w's domain). */
void bench_mu_range(struct bench_mu *m, struct bench_world *w, uint64_t start, size_t n, uint64_t seed);
void bench_mu_free(struct bench_mu *m);
/* A bench_job's run: @ops MAP+UNMAP pairs through the request path (ctx: a bench_mu_job). */
uint64_t bench_mu_run_device(struct bench_job *j, size_t ops);

/* ---- scenarios_churn.c ---- */
int setup_grace(struct bench_ctx *c);
void run_grace(struct bench_ctx *c);
void teardown_grace(struct bench_ctx *c);
int setup_churn(struct bench_ctx *c);
int setup_churn_fence(struct bench_ctx *c);
int setup_churn_lazy(struct bench_ctx *c);
int setup_churn_batch64(struct bench_ctx *c);
void run_churn(struct bench_ctx *c);
void teardown_churn(struct bench_ctx *c);

/* ---- scenarios_vms.c ---- */
int setup_vms(struct bench_ctx *c);
void run_vms_scenario(struct bench_ctx *c);
void teardown_vms(struct bench_ctx *c);

#endif
