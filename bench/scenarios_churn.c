// SPDX-License-Identifier: MIT
/*
 * The writer against its readers: grace_period (a MAP+UNMAP pair lazy, strict with membarrier,
 * strict with reader fences, strict waiting for BPF readers; one pair per kick and 64) and
 * churn_readers (reader threads doing enter/translate/exit while the writer churns strict
 * pairs; the readers' slowdown against quiet, and the writer's rate).
 */
#define _GNU_SOURCE
#include "scenarios.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- grace_period: a MAP+UNMAP pair, strict (W5 per UNMAP) vs lazy ---- */

struct bench_grace {
	struct bench_world *w[4]; /* lazy, strict, strict + reader_fence, strict + bpf_grace */
	struct bench_mu set[4];
	unsigned nw;
};

static const char *const grace_names[] = { "lazy", "strict", "strict_fence", "strict_bpf" };

int setup_grace(struct bench_ctx *c)
{
	struct bench_grace *g = bench_calloc(1, sizeof(*g));
	struct bench_world_spec spec = { BENCH_4K, bench_opt.mode == BENCH_SMOKE ? 256 : 1024 };

	/* bpf_grace waits for an RCU grace period per UNMAP (milliseconds): full suite only. */
	g->nw = bench_opt.mode == BENCH_FULL ? 4 : 3;
	for (unsigned i = 0; i < g->nw; i++) {
		struct viommu_fastpath_opts o = { .lazy = i == 0, .reader_fence = i == 2, .bpf_grace = i == 3,
						  .overcommit = true };

		g->w[i] = bench_world_build(spec, &o, false);
		if (!g->w[i])
			bench_fail("grace_period: viommu_fastpath_new: %s", strerror(errno));
		bench_mu_pages(&g->set[i], g->w[i], 1024, false, 0x5005);
	}
	c->priv = g;
	return 0;
}

void teardown_grace(struct bench_ctx *c)
{
	struct bench_grace *g = c->priv;

	for (unsigned i = 0; i < g->nw; i++) {
		bench_world_free(g->w[i]);
		bench_mu_free(&g->set[i]);
	}
	free(g);
}

static uint64_t run_mu_batch(struct bench_job *j, size_t ops)
{
	struct bench_mu_job *mj = j->ctx;
	uint64_t sum;

	/* One queue kick of 64 pairs: observers sync (one grace period) at batch end. */
	viommu_device_batch_begin(mj->dev);
	sum = bench_mu_run_device(j, ops * BENCH_BATCH);
	viommu_device_batch_end(mj->dev);
	return sum;
}

static uint64_t run_mu_batches(struct bench_job *j, size_t ops)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++)
		sum += run_mu_batch(j, 1);
	return sum;
}

/* A grace_period job: the pairs, and the grace periods they cost (from the fast path's meta). */
struct bench_grace_job {
	struct bench_mu_job mj; /* first: the pair runners take the job's ctx as a bench_mu_job */
	const struct viommu_meta *vm;
	bool batched;
	uint64_t gp, gp_ns;
};

static uint64_t run_grace_job(struct bench_job *j, size_t ops)
{
	struct bench_grace_job *g = j->ctx;
	uint64_t gp0 = g->vm->grace_periods, ns0 = g->vm->grace_ns_total, sum;

	sum = g->batched ? run_mu_batches(j, ops) : bench_mu_run_device(j, ops);
	g->gp += g->vm->grace_periods - gp0;
	g->gp_ns += g->vm->grace_ns_total - ns0;
	return sum;
}

void run_grace(struct bench_ctx *c)
{
	struct bench_grace *g = c->priv;
	struct bench_grace_job gj[8];
	struct bench_job j[8];
	struct bench_stats st[8];
	unsigned n = 0;

	for (unsigned i = 0; i < g->nw; i++) {
		for (int batched = 0; batched < 2; batched++, n++) {
			gj[n] = (struct bench_grace_job){ { &g->set[i], g->w[i]->dev },
							 viommu_fastpath_view(g->w[i]->fp)->meta, batched, 0, 0 };
			j[n] = (struct bench_job){ .run = run_grace_job, .ctx = &gj[n], .per_op = batched ? BENCH_BATCH : 1 };
		}
	}
	bench_measure_group(j, n, st);
	for (unsigned k = 0; k < n; k++) {
		unsigned i = k / 2;
		char variant[24], note[64];

		snprintf(variant, sizeof(variant), "%s%s", grace_names[i], gj[k].batched ? "_batch64" : "");
		if (gj[k].gp)
			snprintf(note, sizeof(note), "mean grace period %.2f us", gj[k].gp_ns / 1e3 / gj[k].gp);
		else
			snprintf(note, sizeof(note), "no grace period");
		if (i > 0 && st[gj[k].batched].median > 0)
			snprintf(note + strlen(note), sizeof(note) - strlen(note), "; x%.1f lazy",
				 st[k].median / st[gj[k].batched].median);
		bench_row_print(bench_row_add("grace_period", "4k", g->w[i]->spec.extents, 1, "viommu", variant, &st[k],
					      note));
	}
	/* After all that churn each fast path still answers like the store. */
	for (unsigned i = 0; i < g->nw; i++) {
		struct bench_qset s;

		bench_qset_make(&s, g->w[i], Q_HIT, 1024, 0x6006);
		bench_impl_verify(I_VIOMMU, g->w[i], "grace_period", &s, s.n);
		bench_qset_free(&s);
	}
}

/* ---- churn_readers: reader threads translate while the writer maps and unmaps ---- */

struct bench_churn_reader {
	pthread_t th;
	struct viommu_fastpath *fp;
	const struct bench_qset *qs;
	pthread_barrier_t *start;
	size_t ops, off;
	int cpu;
	uint64_t ns, bad, retries;
	unsigned *done;
};

/* The calling thread on CPU @cpu (a reader thread's own CPU); -1: anywhere. */
static void pin_to_cpu(int cpu)
{
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
}

static void *churn_reader_main(void *arg)
{
	struct bench_churn_reader *cr = arg;
	struct viommu_reader *r = viommu_reader_open(cr->fp);
	const size_t mask = cr->qs->n - 1;
	struct viommu_answer a;
	uint64_t t0, sum = 0;

	pin_to_cpu(cr->cpu);
	pthread_barrier_wait(cr->start);
	if (!r) {
		cr->bad = ~0ull;
		__atomic_add_fetch(cr->done, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	t0 = bench_now_ns();
	for (size_t i = 0; i < cr->ops; i++) {
		size_t k = (i + cr->off) & mask;
		uint32_t res;

		/* One DMA: enter, translate, use, exit (a strict UNMAP waits for exactly this). */
		viommu_reader_enter(r);
		while ((res = viommu_reader_translate(r, &cr->qs->q[k], &a)) == VIOMMU_XLATE_RETRY)
			cr->retries++;
		sum += a.pa;
		viommu_reader_exit(r);
		/* The queried extents are never churned: any other answer is a wrong translation. */
		if (res != VIOMMU_XLATE_HIT || a.pa != cr->qs->want[k].pa)
			cr->bad++;
	}
	cr->ns = bench_now_ns() - t0;
	__atomic_add_fetch(cr->done, 1, __ATOMIC_RELEASE);
	bench_sink += sum;
	viommu_reader_close(r);
	return NULL;
}

/* How the writer churns: strict with one grace period per UNMAP (membarrier, or reader fences),
 * lazy (no grace period: what readers lose is the shared lines alone), or strict in kicks of 64
 * pairs (one grace period per kick, as a Linux guest in strict mode batches its unmaps). */
enum churn_mode { CHURN_STRICT, CHURN_FENCE, CHURN_LAZY, CHURN_BATCH64 };
static const char *const churn_quiet[] = { "quiet", "quiet_fence", "quiet_lazy", "quiet_batch64" };
static const char *const churn_busy[] = { "churn", "churn_fence", "churn_lazy", "churn_batch64" };
static const char *const churn_far[] = { "far", "far_fence", "far_lazy", "far_batch64" };
static const char *const churn_away[] = { "elsewhere", "elsewhere_fence", "elsewhere_lazy", "elsewhere_batch64" };

/* The writer's states in a repetition: idle; churning gap pages of the readers' world (PTE
 * lines that also hold queried pages); churning pages of the readers' domain that share no line
 * with them (far past the world, outside its window); churning another device of the
 * same shape, whose lines and grace periods no reader shares (what a busy second core costs
 * the readers on this host, apart from the writer's writes to what they read). */
enum churn_state { CH_QUIET, CH_CHURN, CH_FAR, CH_ELSEWHERE, CH_STATES };

struct bench_churn {
	struct bench_world *w;
	struct bench_flat *flat; /* the floor under the same churn (NULL: none here, flat_err) */
	int flat_err;
	struct bench_mu set;
	struct bench_mu fset; /* CH_FAR's pages */
	struct bench_world *other; /* CH_ELSEWHERE's device, its own pages */
	struct bench_mu oset;
	enum churn_mode mode;
};

static int setup_churn_mode(struct bench_ctx *c, enum churn_mode mode)
{
	struct bench_churn *ch = bench_calloc(1, sizeof(*ch));
	struct bench_world_spec spec = { BENCH_4K, bench_opt.mode == BENCH_SMOKE ? 1024 : 65536 };
	struct viommu_fastpath_opts o = { .lazy = mode == CHURN_LAZY, .reader_fence = mode == CHURN_FENCE,
					  .overcommit = true };

	ch->mode = mode;
	ch->w = bench_world_build(spec, &o, false);
	if (!ch->w)
		bench_fail("churn_readers: viommu_fastpath_new: %s", strerror(errno));
	bench_mu_pages(&ch->set, ch->w, 4096, false, 0x7007);
	/* 16 MiB at 1 TiB, in the readers' domain but past its window (a power-of-two block of
	 * regions around the world, at most 16 GiB): pool leaves, each freed when its last page
	 * goes (a bump of meta.wraps, which drops reader TLB entries but, since ABI v10, no copy
	 * of a window). */
	bench_mu_range(&ch->fset, ch->w, 1ull << 40, 4096, 0x7008);
	ch->other = bench_world_build(spec, &o, false);
	if (!ch->other)
		bench_fail("churn_readers: viommu_fastpath_new: %s", strerror(errno));
	bench_mu_pages(&ch->oset, ch->other, 4096, false, 0x7007);
	bench_qset_make(&c->qs, ch->w, Q_HIT, bench_opt.nq, 0x8008);
	ch->flat = bench_flat_new(ch->w->ext, ch->w->n, BENCH_EP);
	if (!ch->flat)
		ch->flat_err = errno;
	c->w = ch->w;
	c->priv = ch;
	return 0;
}

int setup_churn(struct bench_ctx *c)
{
	return setup_churn_mode(c, CHURN_STRICT);
}

int setup_churn_fence(struct bench_ctx *c)
{
	return setup_churn_mode(c, CHURN_FENCE);
}

int setup_churn_lazy(struct bench_ctx *c)
{
	return setup_churn_mode(c, CHURN_LAZY);
}

int setup_churn_batch64(struct bench_ctx *c)
{
	return setup_churn_mode(c, CHURN_BATCH64);
}

void teardown_churn(struct bench_ctx *c)
{
	struct bench_churn *ch = c->priv;

	bench_world_free(ch->w);
	bench_mu_free(&ch->set);
	bench_mu_free(&ch->fset);
	bench_world_free(ch->other);
	bench_mu_free(&ch->oset);
	bench_flat_free(ch->flat);
	free(ch);
	bench_qset_free(&c->qs);
	c->w = NULL;
}

/* One repetition: @nthreads readers of @ops lookups each, the writer in @state. Returns the
 * readers' mean ns per lookup; *pairs_s: the writer's MAP+UNMAP pairs per second. */
static double churn_rep(struct bench_ctx *c, unsigned nthreads, size_t ops, enum churn_state state,
			double *pairs_s, uint64_t *retries)
{
	struct bench_churn *ch = c->priv;
	struct bench_churn_reader cr[2];
	const bool churn = state != CH_QUIET;
	struct bench_mu_job mj = { state == CH_ELSEWHERE ? &ch->oset : state == CH_FAR ? &ch->fset : &ch->set,
				   state == CH_ELSEWHERE ? ch->other->dev : ch->w->dev };
	struct bench_job j = { .run = bench_mu_run_device, .ctx = &mj, .per_op = 1 };
	pthread_barrier_t start;
	unsigned done = 0;
	uint64_t pairs = 0, t0;
	double ns = 0;

	pthread_barrier_init(&start, NULL, nthreads + 1);
	for (unsigned i = 0; i < nthreads; i++) {
		cr[i] = (struct bench_churn_reader){
			.fp = ch->w->fp, .qs = &c->qs, .start = &start, .ops = ops, .off = i * 7919,
			.cpu = bench_machine.ncpu > 1 ? (int)((bench_machine.ncpu - 1 - i) % bench_machine.ncpu) : -1, .done = &done,
		};
		if (pthread_create(&cr[i].th, NULL, churn_reader_main, &cr[i]))
			bench_fail("pthread_create: %s", strerror(errno));
	}
	pthread_barrier_wait(&start);
	t0 = bench_now_ns();
	if (churn) {
		/* The writer: MAP+UNMAP pairs of gap pages (never the queried extents) until the
		 * readers are done, each UNMAP with its strict grace period. --smoke's runs are too
		 * short for the writer to get a CPU beside two readers: it churns at least 256 pairs,
		 * so the readers' answers are still checked against a moving writer. */
		const uint64_t min_pairs = bench_opt.mode == BENCH_SMOKE ? 256 : 0;

		while (__atomic_load_n(&done, __ATOMIC_ACQUIRE) < nthreads || pairs < min_pairs) {
			if (ch->mode == CHURN_BATCH64) {
				bench_sink += run_mu_batch(&j, 1);
				pairs += BENCH_BATCH;
			} else {
				bench_sink += bench_mu_run_device(&j, 16);
				pairs += 16;
			}
		}
	}
	*pairs_s = pairs * 1e9 / (double)(bench_now_ns() - t0);
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(cr[i].th, NULL);
		if (cr[i].bad == ~0ull)
			bench_fail("churn_readers: viommu_reader_open failed in a reader thread");
		if (cr[i].bad)
			bench_fail("churn_readers: reader %u got %llu wrong translations", i,
				   (unsigned long long)cr[i].bad);
		ns += (double)cr[i].ns / (double)ops;
		*retries += cr[i].retries;
	}
	pthread_barrier_destroy(&start);
	return ns / nthreads;
}

/* One reader count's measurements: quiet, churn and elsewhere repetitions alternated. */
struct bench_churn_meas {
	struct bench_stats st[CH_STATES]; /* the readers' ns per lookup */
	double ps[CH_STATES][BENCH_REPS_MAX]; /* the writer's pairs/s in each busy repetition, sorted */
	unsigned reps;
	uint64_t gp, gns, rt[CH_STATES]; /* the readers' grace periods and their ns; retries */
};

static void churn_measure(struct bench_ctx *c, unsigned nthreads, size_t ops, struct bench_churn_meas *cm)
{
	struct bench_churn *ch = c->priv;
	const struct viommu_meta *vm = viommu_fastpath_view(ch->w->fp)->meta;
	double ns[CH_STATES][BENCH_REPS_MAX], pairs_s;
	uint64_t retries = 0;

	cm->reps = bench_opt.reps < BENCH_REPS_MAX ? bench_opt.reps : BENCH_REPS_MAX;
	churn_rep(c, nthreads, ops / 4, CH_CHURN, &pairs_s, &retries); /* warm-up */
	/* The three states alternate, so load drifting on the machine hits each. */
	for (unsigned k = 0; k < cm->reps; k++) {
		for (int st = 0; st < CH_STATES; st++) {
			uint64_t gp0 = vm->grace_periods, gns0 = vm->grace_ns_total;

			ns[st][k] = churn_rep(c, nthreads, ops, (enum churn_state)st, st ? &cm->ps[st][k] : &pairs_s,
					      &cm->rt[st]);
			cm->gp += vm->grace_periods - gp0;
			cm->gns += vm->grace_ns_total - gns0;
		}
	}
	for (int st = 0; st < CH_STATES; st++) {
		bench_stats_of(ns[st], cm->reps, ops, &cm->st[st]);
		qsort(cm->ps[st], cm->reps, sizeof(cm->ps[st][0]), bench_cmp_double);
	}
}

/* The quiet row, the churn row and the elsewhere row (the readers' loss against quiet, the
 * writer's median rate). */
static void churn_rows(struct bench_ctx *c, unsigned nthreads, const struct bench_churn_meas *cm)
{
	struct bench_churn *ch = c->priv;
	static const char *const *const names[CH_STATES] = { churn_quiet, churn_busy, churn_far, churn_away };

	for (int st = 0; st < CH_STATES; st++) {
		const double writer = cm->ps[st][cm->reps / 2];
		double loss = (cm->st[st].median - cm->st[CH_QUIET].median) / cm->st[CH_QUIET].median * 100;
		struct bench_row *r;
		char note[64];

		if (st == CH_QUIET)
			snprintf(note, sizeof(note), "enter/translate/exit per lookup");
		else if (st == CH_CHURN)
			snprintf(note, sizeof(note), "%+.1f%%; writer %.0fK pairs/s, grace %.1f us%s", loss,
				 writer / 1e3, cm->gp ? cm->gns / 1e3 / cm->gp : 0.0,
				 nthreads + 1 > (unsigned)bench_machine.ncpu ? "; 3 thr/2 CPU" : "");
		else
			snprintf(note, sizeof(note), "%+.1f%%; writer %.0fK pairs/s %s", loss, writer / 1e3,
				 st == CH_FAR ? "past the window" : "on another device");
		r = bench_row_add("churn_readers", "4k", ch->w->spec.extents, nthreads, "viommu", names[st][ch->mode],
				  &cm->st[st], note);
		if (st != CH_QUIET) {
			r->loss_pct = loss;
			r->extra = writer;
		}
		if (cm->rt[st])
			snprintf(r->note + strlen(r->note), sizeof(r->note) - strlen(r->note),
				 "; %llu retries", (unsigned long long)cm->rt[st]);
		bench_row_print(r);
	}
}

/* ---- the floor under the same churn: a flat table's reader while the writer does what it does
 * in `elsewhere` (MAP+UNMAP pairs on the other device, its grace periods included) and, between
 * those, pairs of stores to the entries of the churned pages (present, then cleared: as
 * viommu's solo PTE) at the rate viommu's writer reached in `churn`. The entries are 8 to a
 * line, as viommu's PTEs: the floor's loss is what a busy writer's core and the lines it writes,
 * as often, cost any page table. ---- */

struct flat_churn_reader {
	pthread_t th;
	const struct bench_flat *f;
	const struct bench_qset *qs;
	pthread_barrier_t *start;
	size_t ops, off;
	int cpu;
	uint64_t ns, faults;
	unsigned *done;
};

static void *flat_reader_main(void *arg)
{
	struct flat_churn_reader *fr = arg;
	const size_t chunk = 256;
	uint64_t t0, sum = 0;

	pin_to_cpu(fr->cpu);
	pthread_barrier_wait(fr->start);
	t0 = bench_now_ns();
	for (size_t i = 0; i < fr->ops; i += chunk)
		sum += bench_flat_run(fr->f, fr->qs->q, fr->qs->n - 1, fr->off + i, chunk, &fr->faults);
	fr->ns = bench_now_ns() - t0;
	__atomic_add_fetch(fr->done, 1, __ATOMIC_RELEASE);
	bench_sink += sum;
	return NULL;
}

/* One repetition of one flat reader: the writer idle, or (@rate > 0) busy as above, the entries
 * churned at @rate pairs/s. The reader's ns per lookup; *pairs_s: the entry pairs' rate. */
static double flat_churn_rep(struct bench_ctx *c, size_t ops, double rate, double *pairs_s)
{
	struct bench_churn *ch = c->priv;
	const struct bench_mu *m = &ch->set;
	struct bench_mu_job mj = { &ch->oset, ch->other->dev };
	struct bench_job j = { .run = bench_mu_run_device, .ctx = &mj, .per_op = 1 };
	struct flat_churn_reader fr;
	pthread_barrier_t start;
	unsigned done = 0;
	uint64_t pairs = 0, t0;
	size_t k = 0;

	ops = (ops + 255) & ~(size_t)255;
	pthread_barrier_init(&start, NULL, 2);
	fr = (struct flat_churn_reader){ .f = ch->flat, .qs = &c->qs, .start = &start, .ops = ops,
					 .cpu = bench_machine.ncpu > 1 ? bench_machine.ncpu - 1 : -1, .done = &done };
	if (pthread_create(&fr.th, NULL, flat_reader_main, &fr))
		bench_fail("pthread_create: %s", strerror(errno));
	pthread_barrier_wait(&start);
	t0 = bench_now_ns();
	while (rate > 0 && !__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		bench_sink += ch->mode == CHURN_BATCH64 ? run_mu_batch(&j, 1) : bench_mu_run_device(&j, 16);
		/* The entry pairs due by now. */
		for (; pairs < (bench_now_ns() - t0) * rate / 1e9; pairs++, k = (k + 1) % m->n) {
			bench_flat_map(ch->flat, m->pages[k].start, m->pages[k].phys, m->pages[k].flags);
			bench_flat_unmap(ch->flat, m->pages[k].start);
		}
	}
	*pairs_s = pairs * 1e9 / (double)(bench_now_ns() - t0);
	pthread_join(fr.th, NULL);
	pthread_barrier_destroy(&start);
	if (fr.faults)
		bench_fail("churn_readers: the flat reader missed %llu queried pages (only gap pages are churned)",
			   (unsigned long long)fr.faults);
	return (double)fr.ns / (double)ops;
}

/* The floor's quiet and churn rows, one reader, the entries churned at viommu's @rate. */
static void flat_churn_rows(struct bench_ctx *c, double rate)
{
	struct bench_churn *ch = c->priv;
	double ns[2][BENCH_REPS_MAX], ps[BENCH_REPS_MAX], pairs_s;
	struct bench_stats st[2];
	const unsigned reps = bench_opt.reps < BENCH_REPS_MAX ? bench_opt.reps : BENCH_REPS_MAX;
	size_t ops;

	if (!ch->flat) {
		printf("  churn_readers flat: skipped (no flat table here: %s)\n", strerror(ch->flat_err));
		return;
	}
	ops = (size_t)(bench_opt.rep_ns / fmax(flat_churn_rep(c, c->qs.n, 0, &pairs_s), 0.1));
	if (ops < c->qs.n)
		ops = c->qs.n;
	for (unsigned k = 0; k < reps; k++) {
		ns[0][k] = flat_churn_rep(c, ops, 0, &pairs_s);
		ns[1][k] = flat_churn_rep(c, ops, rate, &ps[k]);
	}
	for (int i = 0; i < 2; i++)
		bench_stats_of(ns[i], reps, ops, &st[i]);
	qsort(ps, reps, sizeof(ps[0]), bench_cmp_double);
	for (int i = 0; i < 2; i++) {
		const double loss = (st[i].median - st[0].median) / st[0].median * 100;
		struct bench_row *r;
		char note[64];

		if (i == 0)
			snprintf(note, sizeof(note), "the floor: one load per lookup");
		else
			snprintf(note, sizeof(note), "%+.1f%%; elsewhere's writer, entries %.0fK pairs/s", loss,
				 ps[reps / 2] / 1e3);
		r = bench_row_add("churn_readers", "4k", ch->w->spec.extents, 1, "flat",
				  i ? churn_busy[ch->mode] : churn_quiet[ch->mode], &st[i], note);
		if (i) {
			r->loss_pct = loss;
			r->extra = ps[reps / 2];
		}
		bench_row_print(r);
	}
}

void run_churn(struct bench_ctx *c)
{
	double pairs_s, ns;
	size_t ops;
	uint64_t retries = 0;

	/* Size one repetition to bench_opt.rep_ns from a single quiet reader. */
	ns = churn_rep(c, 1, c->qs.n, CH_QUIET, &pairs_s, &retries);
	ops = (size_t)(bench_opt.rep_ns / (ns > 1 ? ns : 1));
	if (ops < c->qs.n)
		ops = c->qs.n;
	for (unsigned nthreads = 1; nthreads <= 2; nthreads++) {
		struct bench_churn_meas cm = { 0 };

		churn_measure(c, nthreads, ops, &cm);
		churn_rows(c, nthreads, &cm);
		if (nthreads == 1)
			flat_churn_rows(c, cm.ps[CH_CHURN][cm.reps / 2]);
	}
}
