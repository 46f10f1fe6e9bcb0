// SPDX-License-Identifier: MIT
/*
 * The lookup scenarios: lookup_hot (one query repeated: the reader's TLB), lookup_random,
 * lookup_miss (unmapped IOVAs), lookup_bulk64 (64 queries per call) and lookup_identity (one
 * 2^48-byte extent). viommu and every baseline answer the same query set, are checked against
 * the store, then timed together; one row per implementation.
 */
#include "scenarios.h"

#include <stdio.h>

/*
 * The timed loops. viommu's lookup is compiled into its loop like every peer's: reader.h offers
 * it as an inline function, but GCC -O2 keeps viommu_reader_translate() out of line when a file
 * calls it from several places (about 5 ns instead of 3.3 ns per TLB hit here), so `flatten`
 * asks for what the header promises. The loop uses the PA, as flat's does, and each answer
 * lives for one iteration, as in a consumer that reads the PA and goes on: the compiler then
 * drops the stores of the fields no one reads (bench/icount at 4 KiB x 1K: 73 -> 61
 * instructions a lookup; a consumer that reads the whole answer pays the 73).
 */
__attribute__((flatten)) static uint64_t run_viommu(struct bench_job *j, size_t ops)
{
	struct viommu_reader *r = j->ctx;
	/* In locals: a TLB miss calls the walk out of line, after which the compiler could not
	 * keep fields of *j in registers (the peers' loops, all inline, need no such help). */
	const struct viommu_query *qv = j->q;
	const size_t qmask = j->qmask, end = j->cursor + ops;
	uint64_t sum = 0, miss = 0;

	for (size_t k = j->cursor; k != end; k++) {
		struct viommu_answer a;

		if (viommu_reader_translate(r, &qv[k & qmask], &a) <= VIOMMU_XLATE_IDENTITY)
			sum += a.pa;
		else
			miss++; /* as flat's loop counts them */
	}
	j->faults += miss;
	j->cursor = end;
	return sum;
}

/*
 * The lookup taken apart, to show where its time goes against the flat floor (issue 11):
 * viommu_raw makes the loads of viommu's shared lookup through the window (endpoint entry, window
 * entry, the page's PTE: bpf/viommu_lookup.h, the path BPF programs take) with no check at all.
 * raw / flat is what the layout costs (two small loads in front of the one a flat table
 * makes); viommu / raw what the checks and the answer cost, and what a userspace reader's private
 * copy of the window saves. It answers hits only (a query it does not take counts as a fault).
 */
static inline int raw_lookup(const struct viommu_reader *r, const struct viommu_query *q, uint64_t *pa)
{
	const struct viommu_ep_entry *e = &r->eps[q->endpoint & (VIOMMU_EP_DENSE - 1)];
	const struct viommu_window *w = &r->wins[e->domain_slot & (VIOMMU_DOMAINS_MAX - 1)];
	uint64_t reg = (q->iova - (w->base & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT, pte;
	uint64_t li = w->leaf + (reg < w->regions ? reg : 0);

	pte = r->ptes[li < r->leaves_max ? li : 0].pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, q->iova)];
	*pa = VIOMMU_PTE_PA(pte) | (q->iova & 0xfff);
	return (reg < w->regions) & (int)(pte & VIOMMU_PTE_PRESENT);
}

static uint64_t run_viommu_raw(struct bench_job *j, size_t ops)
{
	const struct viommu_reader *r = j->ctx;
	const struct viommu_query *qv = j->q;
	const size_t qmask = j->qmask, cursor = j->cursor;
	uint64_t sum = 0, miss = 0, pa;

	for (size_t i = 0; i < ops; i++) {
		int hit = raw_lookup(r, &qv[(cursor + i) & qmask], &pa);

		sum += pa;
		miss += !hit;
	}
	j->faults += miss;
	j->cursor += ops;
	return sum;
}

/* viommu_raw answers the store's PAs for @s (hits only, where it answers). */
static void decomposition_check(struct bench_world *w, const char *scenario, const struct bench_qset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		uint64_t pa;

		/* It may decline a query (outside the window), never answer it wrongly. */
		if (raw_lookup(w->rd, &s->q[i], &pa) && pa != s->want[i].pa)
			bench_fail("%s: viommu_raw disagrees with the store at iova 0x%llx", scenario,
				   (unsigned long long)s->q[i].iova);
	}
}

static uint64_t run_viommu_bulk(struct bench_job *j, size_t ops)
{
	struct viommu_reader *r = j->ctx;
	struct viommu_answer a[BENCH_BATCH];
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		uint64_t hits = viommu_reader_translate_bulk(r, &j->q[(j->cursor++ * BENCH_BATCH) & j->qmask], a,
							     BENCH_BATCH);

		for (unsigned k = 0; k < BENCH_BATCH; k++)
			sum += a[k].pa;
		j->faults += BENCH_BATCH - (unsigned)__builtin_popcountll(hits);
	}
	return sum;
}

/* The same bursts through viommu_reader_translate_bulk_pa(): a PA and a hit bit a query, what
 * flat's bulk loop makes, where the answers above are 56 bytes a query. */
static uint64_t run_viommu_bulk_pa(struct bench_job *j, size_t ops)
{
	struct viommu_reader *r = j->ctx;
	uint64_t pa[BENCH_BATCH], sum = 0;

	for (size_t i = 0; i < ops; i++) {
		uint64_t hits = viommu_reader_translate_bulk_pa(r, &j->q[(j->cursor++ * BENCH_BATCH) & j->qmask], pa,
								BENCH_BATCH);

		for (unsigned k = 0; k < BENCH_BATCH; k++)
			sum += hits >> k & 1 ? pa[k] : 0;
		j->faults += BENCH_BATCH - (unsigned)__builtin_popcountll(hits);
	}
	return sum;
}

/* viommu_reader_translate_bulk_pa() gives the store's PA for every hit of @s that lies in one
 * page (the bench's queries do), and no bit for the others. */
static void bulk_pa_check(struct bench_world *w, const char *scenario, const struct bench_qset *s)
{
	uint64_t pa[BENCH_BATCH];

	for (size_t b = 0; b + BENCH_BATCH <= s->n; b += BENCH_BATCH) {
		uint64_t hits = viommu_reader_translate_bulk_pa(w->rd, &s->q[b], pa, BENCH_BATCH);

		for (unsigned k = 0; k < BENCH_BATCH; k++) {
			const struct viommu_answer *want = &s->want[b + k];
			bool hit = want->result == VIOMMU_XLATE_HIT || want->result == VIOMMU_XLATE_IDENTITY;

			if (!!(hits >> k & 1) != hit || (hit && pa[k] != want->pa))
				bench_fail("%s: viommu_pa disagrees with the store at iova 0x%llx", scenario,
					   (unsigned long long)s->q[b + k].iova);
		}
	}
}

static uint64_t run_gtree(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_gtree_run(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_gtree_bulk(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_gtree_run_bulk(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_itree(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_itree_run(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_itree_bulk(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_itree_run_bulk(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_flat(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_flat_run(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_flat_bulk(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_flat_run_bulk(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_slist(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_slist_run(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

static uint64_t run_slist_bulk(struct bench_job *j, size_t ops)
{
	uint64_t sum = bench_slist_run_bulk(j->ctx, j->q, j->qmask, j->cursor, ops, &j->faults);

	j->cursor += ops;
	return sum;
}

/* Hits viommu also answers in a scenario's rounds, its own row beside the scenario's: a
 * comparison the issue asks for ("a miss no worse than a hit", "2 MiB no worse than 4 KiB")
 * made as the floor comparisons are, not across scenarios or worlds built minutes apart on a
 * host that drifts. */
struct beside {
	struct bench_qset s;
	const char *name, *note;
};

/* Check every implementation on @s, then time them together; one row per implementation, and
 * one for the flat table (the floor, not a peer) where the world has one; and @b's. */
static void lookup_rows(struct bench_world *w, const char *scenario, const struct bench_qset *s,
			bool bulk, bool expect_faults, const struct beside *b)
{
	static uint64_t (*const single[])(struct bench_job *, size_t) = { run_viommu, run_gtree, run_itree, run_slist };
	static uint64_t (*const batch[])(struct bench_job *, size_t) = { run_viommu_bulk, run_gtree_bulk,
									  run_itree_bulk, run_slist_bulk };
	void *ctx[] = { w->rd, w->gtree, w->itree, w->slist };
	struct bench_job j[I_COUNT + 4];
	struct bench_stats st[I_COUNT + 4];
	const char *names[I_COUNT + 4];
	int impls[I_COUNT + 4];
	unsigned n = 0;

	for (int impl = 0; impl < I_COUNT; impl++) {
		size_t nq = bench_impl_nq(impl, w, s->n);

		if ((bulk && nq < BENCH_BATCH) || !bench_impl_wanted(bench_impl_names[impl]))
			continue;
		bench_impl_verify(impl, w, scenario, s, nq);
		j[n] = (struct bench_job){
			.run = bulk ? batch[impl] : single[impl], .ctx = ctx[impl], .q = s->q,
			.qmask = nq - 1, .per_op = bulk ? BENCH_BATCH : 1,
		};
		names[n] = bench_impl_names[impl];
		impls[n++] = impl;
	}
	if (w->flat && bench_impl_wanted("flat")) {
		struct viommu_answer a;

		for (size_t i = 0; i < s->n; i++) {
			bench_flat_translate(w->flat, &s->q[i], &a);
			bench_check_answer("flat", scenario, &s->q[i], &s->want[i], &a, false);
		}
		j[n] = (struct bench_job){
			.run = bulk ? run_flat_bulk : run_flat, .ctx = w->flat, .q = s->q,
			.qmask = s->n - 1, .per_op = bulk ? BENCH_BATCH : 1,
		};
		names[n] = "flat";
		impls[n++] = -1;
	} else if (!w->flat) {
		printf("# %s %s x %u: flat skipped (no flat table for this layout: dense layouts only)\n", scenario,
		       bench_size_names[w->spec.size], w->spec.extents);
	}
	/* viommu's bursts of PAs, beside its bursts of answers. */
	if (bulk && s->n >= BENCH_BATCH && bench_impl_wanted("viommu_pa")) {
		bulk_pa_check(w, scenario, s);
		j[n] = (struct bench_job){
			.run = run_viommu_bulk_pa, .ctx = w->rd, .q = s->q, .qmask = s->n - 1, .per_op = BENCH_BATCH,
		};
		names[n] = "viommu_pa";
		impls[n++] = -4;
	}
	if (b && (bench_impl_wanted("viommu") || bench_impl_wanted(b->name))) {
		bench_impl_verify(I_VIOMMU, w, scenario, &b->s, b->s.n);
		j[n] = (struct bench_job){ .run = run_viommu, .ctx = w->rd, .q = b->s.q, .qmask = b->s.n - 1, .per_op = 1 };
		names[n] = b->name;
		impls[n++] = -5;
	}
	/* The decomposition row, for single hits (random, and the one query of lookup_hot) in worlds of
	 * 4 KiB pages. */
	if (!bulk && !expect_faults && w->spec.size == BENCH_4K && bench_impl_wanted("viommu_raw")) {
		decomposition_check(w, scenario, s);
		j[n] = (struct bench_job){ .run = run_viommu_raw, .ctx = w->rd, .q = s->q, .qmask = s->n - 1, .per_op = 1 };
		names[n] = "viommu_raw";
		impls[n++] = -3;
	}
	bench_measure_group(j, n, st);
	for (unsigned k = 0; k < n; k++) {
		int impl = impls[k];
		size_t nq = j[k].qmask + 1;
		char note[64] = "";

		if (impl != -3 && (expect_faults && impl != -5 ? j[k].faults == 0 : j[k].faults != 0))
			bench_fail("%s: %s answered %llu faults", scenario, names[k], (unsigned long long)j[k].faults);
		if (nq < s->n)
			snprintf(note, sizeof(note), "%zu of %zu queries", nq, s->n);
		else if (impl == I_GTREE)
			snprintf(note, sizeof(note), "mutex per lookup");
		else if (impl == I_SLIST)
			snprintf(note, sizeof(note), bulk ? "rwlock per 64" : "rwlock per lookup");
		else if (impl == -3)
			snprintf(note, sizeof(note), "the same loads, no checks: the layout's cost");
		else if (impl == -4)
			snprintf(note, sizeof(note), "a PA a query, as flat (bulk_pa)");
		else if (impl == -5)
			snprintf(note, sizeof(note), "%s", b->note);
		else if (impl < 0)
			snprintf(note, sizeof(note), "the floor: 8 B/page, %.1f MiB%s",
				 bench_flat_pages(w->flat) * 8.0 / (1 << 20), bulk ? ", prefetched" : "");
		bench_row_print(bench_row_add(scenario, bench_size_names[w->spec.size], w->spec.extents, 1,
					      names[k], bulk ? "bulk64" : "-", &st[k], note));
	}
}

/* ---- the scenarios ---- */

int setup_random(struct bench_ctx *c)
{
	bench_qset_make(&c->qs, c->w, Q_HIT, bench_opt.nq, 0x1001);
	return 0;
}

int setup_hot(struct bench_ctx *c)
{
	bench_qset_make(&c->qs, c->w, Q_HOT, 1, 0);
	return 0;
}

/* lookup_random: in a 2 MiB world, also the 4 KiB hits of its other domain (the 4 KiB world
 * of as many extents) in the same rounds: "2 MiB no worse than 4 KiB" (`viommu_4k`). */
int setup_random_beside(struct bench_ctx *c)
{
	struct beside *b;

	setup_random(c);
	if (c->w->spec.size != BENCH_2M || !c->w->others)
		return 0;
	b = bench_calloc(1, sizeof(*b));
	bench_qset_make(&b->s, c->w, Q_HIT_OTHER, bench_opt.nq, 0x1001);
	b->name = "viommu_4k";
	b->note = "4 KiB hits (2nd domain), same rounds";
	c->priv = b;
	return 0;
}

int setup_miss(struct bench_ctx *c)
{
	struct beside *b;

	if (!c->w->ngaps)
		return -1;
	bench_qset_make(&c->qs, c->w, Q_MISS, bench_opt.nq, 0x2002);
	b = bench_calloc(1, sizeof(*b));
	bench_qset_make(&b->s, c->w, Q_HIT, bench_opt.nq, 0x1001); /* lookup_random's set */
	b->name = "viommu_hit";
	b->note = "random hits, in the same rounds";
	c->priv = b;
	return 0;
}

void teardown_qset(struct bench_ctx *c)
{
	struct beside *b = c->priv;

	bench_qset_free(&c->qs);
	if (b) {
		bench_qset_free(&b->s);
		free(b);
		c->priv = NULL;
	}
}

static void run_lookup(struct bench_ctx *c, const char *name, bool bulk, bool faults)
{
	lookup_rows(c->w, name, &c->qs, bulk, faults, c->priv);
}

void run_lookup_random(struct bench_ctx *c)
{
	run_lookup(c, "lookup_random", false, false);
}

void run_lookup_hot(struct bench_ctx *c)
{
	run_lookup(c, "lookup_hot", false, false);
}

void run_lookup_miss(struct bench_ctx *c)
{
	run_lookup(c, "lookup_miss", false, true);
}

void run_lookup_bulk(struct bench_ctx *c)
{
	run_lookup(c, "lookup_bulk64", true, false);
}

void run_lookup_identity(struct bench_ctx *c)
{
	run_lookup(c, "lookup_identity", false, false);
}
