// SPDX-License-Identifier: MIT
/*
 * map_unmap: MAP+UNMAP pairs of gap pages, through the whole request path for viommu (wire
 * buffers, validation, the B+tree, the fast path's publication; and the store alone), through
 * the data structures alone for the peers. Random pages spread over the world, or a few hot ones.
 * The page sets (bench_mu_*) serve grace_period and churn_readers too. With the random pairs, in
 * the same rounds, the cold-load yardstick (`chase`): what one load that misses costs on this
 * host at that moment, the unit a pair's time at 1M is counted in.
 */
#include "scenarios.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- map_unmap: MAP+UNMAP pairs into the world's gaps ---- */

uint64_t bench_mu_run_device(struct bench_job *j, size_t ops)
{
	struct bench_mu_job *mj = j->ctx;
	struct bench_mu *m = mj->m;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		const struct bench_wire_pair *p = &m->wire[j->cursor++ % m->n];
		uint8_t s1 = bench_req_send(mj->dev, p->map, sizeof(p->map));
		uint8_t s2 = bench_req_send(mj->dev, p->unmap, sizeof(p->unmap));

		if (s1 | s2)
			bench_fail("map_unmap: MAP status %u, UNMAP status %u", s1, s2);
		sum += s1 + s2;
	}
	return sum;
}

static uint64_t run_mu_gtree(struct bench_job *j, size_t ops)
{
	struct bench_mu *m = ((struct bench_mu_job *)j->ctx)->m;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		const struct bench_extent *x = &m->pages[j->cursor++ % m->n];

		sum += (uint64_t)bench_gtree_map(m->w->gtree, BENCH_DOMAIN, x);
		sum += (uint64_t)bench_gtree_unmap(m->w->gtree, BENCH_DOMAIN, x->start, x->end);
	}
	if (sum)
		bench_fail("map_unmap: gtree refused a MAP or UNMAP");
	return sum;
}

static uint64_t run_mu_itree(struct bench_job *j, size_t ops)
{
	struct bench_mu *m = ((struct bench_mu_job *)j->ctx)->m;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		const struct bench_extent *x = &m->pages[j->cursor++ % m->n];

		if (bench_itree_map(m->w->itree, x))
			bench_fail("map_unmap: itree refused a MAP");
		sum += bench_itree_unmap(m->w->itree, x->start, x->end);
	}
	if (sum != ops)
		bench_fail("map_unmap: itree UNMAP removed %llu maps for %zu pairs", (unsigned long long)sum, ops);
	return sum;
}

static uint64_t run_mu_slist(struct bench_job *j, size_t ops)
{
	struct bench_mu *m = ((struct bench_mu_job *)j->ctx)->m;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		const struct bench_extent *x = &m->pages[j->cursor++ % m->n];

		sum += (uint64_t)bench_slist_map(m->w->slist, x);
		bench_slist_unmap(m->w->slist, x->start, x->end);
	}
	if (sum)
		bench_fail("map_unmap: sorted_list refused a MAP");
	return sum;
}

/* @want distinct gap pages: spread over the whole world (random), or the last gaps of the IOVA
 * space (hot: like Linux's IOVA caches handing the same few IOVAs back to a driver that maps and
 * unmaps in a loop, so the same paths stay in cache). */
void bench_mu_pages(struct bench_mu *m, struct bench_world *w, size_t want, bool hot, uint64_t seed)
{
	uint64_t r = seed;

	m->w = w;
	m->n = w->ngaps < want ? w->ngaps : want;
	m->pages = bench_calloc(m->n, sizeof(*m->pages));
	m->wire = bench_calloc(m->n, sizeof(*m->wire));
	for (size_t i = 0; i < m->n; i++) {
		uint64_t iova = hot ? w->gaps[w->ngaps - 1 - i] : w->gaps[(i * (w->ngaps / m->n)) % w->ngaps];
		struct bench_extent *x = &m->pages[i];

		*x = (struct bench_extent){ iova, iova + 4095, ((bench_rand(&r) % (1ull << 40)) & ~4095ull) + 4096,
					    VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
		viommu_req_map(m->wire[i].map, BENCH_DOMAIN, x->start, x->end, x->phys, x->flags);
		viommu_req_unmap(m->wire[i].unmap, BENCH_DOMAIN, x->start, x->end);
	}
}

void bench_mu_range(struct bench_mu *m, struct bench_world *w, uint64_t start, size_t n, uint64_t seed)
{
	uint64_t r = seed;

	m->w = w;
	m->n = n;
	m->pages = bench_calloc(m->n, sizeof(*m->pages));
	m->wire = bench_calloc(m->n, sizeof(*m->wire));
	for (size_t i = 0; i < m->n; i++) {
		struct bench_extent *x = &m->pages[i];

		*x = (struct bench_extent){ start + i * 4096, start + i * 4096 + 4095,
					    ((bench_rand(&r) % (1ull << 40)) & ~4095ull) + 4096,
					    VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
		viommu_req_map(m->wire[i].map, BENCH_DOMAIN, x->start, x->end, x->phys, x->flags);
		viommu_req_unmap(m->wire[i].unmap, BENCH_DOMAIN, x->start, x->end);
	}
}

void bench_mu_free(struct bench_mu *m)
{
	free(m->pages);
	free(m->wire);
	memset(m, 0, sizeof(*m));
}

/* ---- chase: the cold-load yardstick ---- */

/* A cycle of dependent loads, each to a random line of a different random 4 KiB page of a
 * region (no huge pages): every load waits for the one before. With 64K pages, far more than
 * the TLB holds, each load is a page walk; whether its line is still cached a cycle later is
 * the host's (4 MiB of lines, under a 32 MiB L3, yet this VM's slow phase gives 200-240 ns a
 * load even with the same lines packed on 1024 pages: not L3 hits). It is what a MAP at 1M
 * random pages pays for each structure it touches, measured on the same host at the same
 * moment. */
struct bench_chase {
	char *buf;
	size_t len, lines;
	void *p; /* where the next run starts */
};

static void chase_init(struct bench_chase *ch, size_t len, size_t lines, uint64_t seed)
{
	size_t pages = len / 4096;
	uint32_t *pick = bench_calloc(pages, sizeof(*pick));
	uint64_t r = seed;

	if (lines > pages)
		bench_fail("chase: %zu lines in %zu pages", lines, pages);
	ch->buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ch->buf == MAP_FAILED)
		bench_fail("chase: mmap of %zu MiB failed", len >> 20);
	madvise(ch->buf, len, MADV_NOHUGEPAGE);
	ch->len = len;
	ch->lines = lines;
	for (size_t i = 0; i < pages; i++)
		pick[i] = (uint32_t)i;
	/* The first @lines pages of a random permutation, each at a random line, in that order. */
	for (size_t i = 0; i < lines; i++) {
		size_t k = i + bench_rand(&r) % (pages - i);
		uint32_t t = pick[i];

		pick[i] = pick[k];
		pick[k] = t;
		pick[i] = pick[i] * 64 + (uint32_t)(bench_rand(&r) % 64); /* page * 64 + line */
	}
	for (size_t i = 0; i < lines; i++)
		*(void **)(ch->buf + (size_t)pick[i] * 64) = ch->buf + (size_t)pick[(i + 1) % lines] * 64;
	ch->p = ch->buf + (size_t)pick[0] * 64;
	free(pick);
}

static void chase_free(struct bench_chase *ch)
{
	if (ch->buf)
		munmap(ch->buf, ch->len);
	memset(ch, 0, sizeof(*ch));
}

static uint64_t run_chase(struct bench_job *j, size_t ops)
{
	struct bench_chase *ch = j->ctx;
	void *p = ch->p;

	for (size_t i = 0; i < ops; i++)
		p = *(void *volatile *)p;
	ch->p = p;
	return (uintptr_t)p;
}

struct bench_mu_scn {
	struct viommu_device *store; /* store-only twin of the world (viommu_store rows) */
	struct bench_mu set[2]; /* random, hot */
	struct bench_chase chase;
};

const char *const bench_mu_patterns[2] = { "random", "hot" };

int setup_mu(struct bench_ctx *c)
{
	struct bench_mu_scn *m;

	if (!c->w->ngaps)
		return -1;
	m = bench_calloc(1, sizeof(*m));
	bench_mu_pages(&m->set[0], c->w, 4096, false, 0x3003);
	bench_mu_pages(&m->set[1], c->w, 16, true, 0x3004);
	m->store = bench_world_store_device(c->w);
	/* 64K lines on 1 GiB beside a 1M world: 16 for each of the 4096 random pairs, more than
	 * the pair touches. Not beside smaller worlds, whose pairs are not bound by cold loads
	 * (and whose caches its rounds would disturb), but for the smoke run's, where a small one
	 * checks the code. */
	if (c->w->spec.extents >= (1u << 20))
		chase_init(&m->chase, 1ull << 30, 65536, 0x5005);
	else if (bench_opt.mode == BENCH_SMOKE)
		chase_init(&m->chase, 16ull << 20, 4096, 0x5005);
	bench_qset_make(&c->qs, c->w, Q_HIT, bench_opt.nq, 0x4004);
	c->priv = m;
	return 0;
}

void teardown_mu(struct bench_ctx *c)
{
	struct bench_mu_scn *m = c->priv;

	viommu_device_free(m->store);
	chase_free(&m->chase);
	bench_mu_free(&m->set[0]);
	bench_mu_free(&m->set[1]);
	free(m);
	bench_qset_free(&c->qs);
}

/* Step 0 (MAP) or 1 (UNMAP) of page @i on @impl (I_VIOMMU: through @dev's request path). */
static void mu_step(struct bench_mu *m, int impl, struct viommu_device *dev, size_t i, int step)
{
	const struct bench_extent *x = &m->pages[i];
	struct bench_world *w = m->w;
	uint8_t s;

	if (impl == I_VIOMMU)
		s = bench_req_send(dev, step ? m->wire[i].unmap : m->wire[i].map,
				   step ? sizeof(m->wire[i].unmap) : sizeof(m->wire[i].map));
	else if (impl == I_GTREE)
		s = (uint8_t)!!(step ? bench_gtree_unmap(w->gtree, BENCH_DOMAIN, x->start, x->end) :
				bench_gtree_map(w->gtree, BENCH_DOMAIN, x));
	else if (impl == I_ITREE)
		s = (uint8_t)(step ? bench_itree_unmap(w->itree, x->start, x->end) != 1 :
				!!bench_itree_map(w->itree, x));
	else if (step)
		s = 0, bench_slist_unmap(w->slist, x->start, x->end);
	else
		s = (uint8_t)!!bench_slist_map(w->slist, x);
	if (s)
		bench_fail("map_unmap: %s refused step %d for page 0x%llx", bench_impl_names[impl], step,
			   (unsigned long long)x->start);
}

/* A MAP then an UNMAP of a few pages of the set, checked after each step on the store, the
 * reader and the peer. */
static void mu_verify(struct bench_mu *m, int impl, struct viommu_device *dev)
{
	struct bench_world *w = m->w;

	for (size_t i = 0; i < m->n && i < 16; i++) {
		const struct bench_extent *x = &m->pages[i];
		struct viommu_query q = { .endpoint = BENCH_EP, .access = VIOMMU_MAP_F_READ, .iova = x->start + 8, .size = 1 };
		struct viommu_answer want, got;

		for (int step = 0; step < 2; step++) {
			/* step 0: after the MAP; step 1: after the UNMAP */
			mu_step(m, impl, dev, i, step);
			memset(&want, 0, sizeof(want));
			if (step) {
				want.result = VIOMMU_XLATE_FAULT;
				want.reason = VIOMMU_FAULT_R_MAPPING;
				want.fault_addr = q.iova;
			} else {
				want.result = VIOMMU_XLATE_HIT;
				want.pa = x->phys + 8;
				want.ext_start = x->start;
				want.ext_end = x->end;
				want.ext_phys = x->phys;
				want.ext_flags = x->flags;
			}
			if (impl == I_VIOMMU) {
				viommu_device_answer(dev, &q, &got);
				bench_check_answer(dev == w->dev ? "viommu (store)" : "viommu_store", "map_unmap", &q, &want,
						   &got, true);
				if (dev == w->dev) {
					viommu_reader_translate(w->rd, &q, &got);
					bench_check_answer("viommu", "map_unmap", &q, &want, &got, true);
				}
			} else {
				bench_impl_translate(impl, w, &q, &got);
				bench_check_answer(bench_impl_names[impl], "map_unmap", &q, &want, &got, true);
			}
		}
	}
}

void run_map_unmap(struct bench_ctx *c)
{
	static uint64_t (*const fn[])(struct bench_job *, size_t) = { bench_mu_run_device, run_mu_gtree,
								       run_mu_itree, run_mu_slist };
	struct bench_mu_scn *m = c->priv;
	struct bench_world *w = c->w;

	for (int pat = 0; pat < 2; pat++) {
		/* job 0: the store alone (no fast path), then viommu and the peers; with the random
		 * pairs, last, the chase */
		struct bench_mu_job mj[1 + I_COUNT];
		struct bench_job j[2 + I_COUNT];
		struct bench_stats st[2 + I_COUNT];
		const int njobs = 1 + I_COUNT + (pat == 0 && m->chase.buf);

		for (int k = 0; k <= I_COUNT; k++) {
			int impl = k ? k - 1 : I_VIOMMU;

			mj[k] = (struct bench_mu_job){ &m->set[pat], k ? w->dev : m->store };
			j[k] = (struct bench_job){ .run = fn[impl], .ctx = &mj[k], .per_op = 1 };
			mu_verify(&m->set[pat], impl, mj[k].dev);
		}
		j[1 + I_COUNT] = (struct bench_job){ .run = run_chase, .ctx = &m->chase, .per_op = 1 };
		bench_measure_group(j, njobs, st);
		for (int k = 0; k <= I_COUNT; k++) {
			int impl = k ? k - 1 : I_VIOMMU;
			char note[64];

			/* The pairs left every structure as it was: each still answers like the store. */
			if (k)
				bench_impl_verify(impl, w, "map_unmap", &c->qs, bench_impl_nq(impl, w, c->qs.n));
			if (impl == I_ITREE && w->n <= (1u << 16) && bench_itree_check(w->itree))
				bench_fail("map_unmap: itree invariants broken by insert/remove");
			snprintf(note, sizeof(note), "%zu pages; %s", m->set[pat].n,
				 !k ? "wire requests, no fast path" :
				 k == 1 ? (w->strict ? "wire requests, strict fast path" : "wire requests, lazy fast path") :
				 impl == I_GTREE ? "mutex" : impl == I_SLIST ? "rwlock" : "no lock");
			bench_row_print(bench_row_add("map_unmap", bench_size_names[w->spec.size], w->spec.extents, 1,
						      k ? bench_impl_names[impl] : "viommu_store", bench_mu_patterns[pat],
						      &st[k], note));
		}
		if (njobs > 1 + I_COUNT) {
			char note[96];

			snprintf(note, sizeof(note), "one dependent load: %zu random pages of %zu MiB, a line each",
				 m->chase.lines, m->chase.len >> 20);
			bench_row_print(bench_row_add("map_unmap", bench_size_names[w->spec.size], w->spec.extents, 1,
						      "chase", "cold_load", &st[1 + I_COUNT], note));
		}
	}
}
