// SPDX-License-Identifier: MIT
/*
 * Stress: one writer (this test's thread is the device thread) churns the device through real
 * request buffers while user and BPF readers translate a fixed set of probes, and every answer is
 * checked against the writer's history of each probe (docs/concurrency.md, I1-I7, I10).
 *
 * The clock is a global op counter, written only by the writer:
 *   ops = 2i-1  while writer op i (a request, a batch of requests, a reset, a config write) runs;
 *   ops = 2i    once op i returned (strict: after its grace period) and its history is written.
 * After every request the writer asks the device core (the authoritative store) what each probe
 * translates to now and appends the changes to the probe's history, tagged with i. A value that
 * op i installs may be seen from ops = 2i-1 on; the value it replaced must be gone for every
 * lookup that starts at ops >= 2i (strictness). A reader reads d0 = ops, translates, reads
 * d1 = ops: the answer is valid iff some history entry k of that probe equals it with
 *   start(k) <= d1   and   (k is the newest, or end(k+1) > d0),
 * start(k) = 2 op(k) - 1, end(k+1) = 2 op(k+1): it was the translation at some instant of the
 * lookup. A reader inside viommu_reader_enter()/exit() that got a HIT or an identity answer also
 * holds it: the removal of that answer must not complete before its exit, so d0 is replaced by
 * the counter read just before exit (I7, grace periods).
 *
 * VIOMMU_STRESS_SECONDS: how long each churn test runs (default 2; `make stress` sets 120).
 * VIOMMU_STRESS_SEED: the random seed (default: from the clock; printed).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "fastpath.h"
#include "reader.h"
#include "bpf_access.h"

/* Requests reach the device scattered over two buffers and are counted (below). */
static uint8_t stress_request(struct viommu_device *dev, const uint8_t *rd, size_t len);
#define TEST_SUBMIT stress_request
#include "requests.h"

#define LD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

#define MSI_START 0xfee00000ull
#define MSI_END 0xfeefffffull

/* Probes and most mappings live in [WIN, WIN + WIN_SIZE): above the MSI window, 4 GiB aligned
 * so a whole-window MAP is four level-3 leaves. */
#define WIN (4ull << 30)
#define WIN_SIZE (4ull << 30)
#define FAR (512ull << 30) /* a level-2 leaf, away from the probes */
#define BYPASS_DOMAIN 100u
#define NDOM 3u /* domains 1..NDOM */
#define MAX_EXTENTS 128u /* per domain: past it the writer unmaps (the pools never run out) */
#define NEP 3
#define NPROBE 64
#define RING 1024u /* history entries kept per probe (a reader reads only those after its d0) */
#define MAX_READERS 3

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RETRY_PERCENT_MAX 5
#else
#define RETRY_PERCENT_MAX 1
#endif

static const uint32_t stress_eps[NEP] = { 8, 9, 0x123456 };

/* ---- history words: op << 32 | kind << 30 | payload (pa >> 12, or the fault reason) ---- */
enum { K_HIT = 0, K_IDENT = 1, K_FAULT = 2 };
#define H_OP(w) ((uint32_t)((w) >> 32))
#define H_VAL(w) ((uint32_t)(w))
#define H_MAKE(op, val) ((uint64_t)(op) << 32 | (val))
#define V_MAKE(kind, payload) ((uint32_t)(kind) << 30 | (uint32_t)(payload))

/*
 * One probe's history: a ring written by the writer, read by any reader. A seqlock over the
 * ring: `wr` (the entry being written) is stored before the entry, the entry with release (so a
 * reader that reads the entry also sees `wr`), then `count` with release. Entry j read by a
 * reader is genuine iff j >= wr - RING, wr loaded after the entries.
 */
struct probe_hist {
	uint64_t wr, count;
	uint64_t ring[RING];
};

struct reader_counts {
	uint64_t lookups, hits, ident, faults, retries, in_cs, rechecks, unchecked;
};

struct stress {
	struct viommu_device *dev;
	struct viommu_fastpath *fp;
	uint64_t ops; /* the clock above: writer stores (release), readers load (acquire) */
	int stop;
	uint64_t probe[NPROBE]; /* IOVAs (constant once the threads run) */
	uint32_t access[NPROBE];
	struct probe_hist hist[NEP][NPROBE];
	/* writer-private */
	uint32_t op; /* i */
	uint32_t cur[NEP][NPROBE]; /* the probes' current values */
	uint64_t rng;
	uint64_t w_ops, w_requests, w_changes, w_status[VIOMMU_T_MAX + 1][VIOMMU_S_COUNT];
	uint64_t w_batches, w_resets, w_bypass_writes, w_grace_waits;
	/* readers */
	struct reader_counts rc[MAX_READERS];
	uint64_t bad;
	pthread_mutex_t lock;
	char first_bad[512];
};

static struct stress S; /* one test per process (criterion forks) */

#ifdef __SANITIZE_THREAD__
/*
 * Criterion under ThreadSanitizer (Snaipe/Criterion#274: "Could not initialize inheritable
 * arena"). BoxFort, inside libcriterion, maps each arena at 0x2000_0000_0000 + (rand_r() &
 * 0x3fffff) * 16 MiB after checking with mincore() that the range is free, and gives up after
 * 10 tries; TSan reserves nearly all of 0x2000_0000_0000..0x7f00_0000_0000 (shadow, meta, heap)
 * except the PIE range 0x5500_0000_0000..0x5680_0000_0000, so it almost always gives up. This
 * binary's rand_r() -- libcriterion's only user of it -- draws only in that free range; the
 * mincore() check still avoids whatever is mapped there. Only in the TSan build; it belongs with
 * the build (the Makefile's tsan link line), not with this test, if it ever moves.
 */
int rand_r(unsigned int *seed);
int rand_r(unsigned int *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (int)(0x350000u + (*seed >> 8) % 0x18000u);
}
#endif

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double stress_seconds(void)
{
	const char *e = getenv("VIOMMU_STRESS_SECONDS");
	double v = e ? atof(e) : 0;

	return v > 0 ? v : 2.0;
}

static uint64_t stress_seed(void)
{
	const char *e = getenv("VIOMMU_STRESS_SEED");
	struct timespec ts;

	if (e && *e)
		return strtoull(e, NULL, 0) | 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec) | 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report_bad(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&S.lock);
	if (!ADD(&S.bad, 1)) {
		va_start(ap, fmt);
		vsnprintf(S.first_bad, sizeof(S.first_bad), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&S.lock);
}

/* ---- set-up ---- */

/* Grace periods by reader fences instead of membarrier (viommu_fastpath_opts.reader_fence). */
static bool fence_mode;
/* No windows, a hash of 2 buckets, lazy removals: every 2 MiB piece near the probes is a direct
 * hash value (I6) in a way that other regions' keys keep taking over, with no grace period to
 * keep a way from being reused under a reader. */
static bool crowded_hash;

static void stress_setup(uint8_t bypass)
{
	struct viommu_resv msi = { MSI_START, MSI_END, VIOMMU_RESV_MEM_T_MSI };
	/* Small pools (fast to initialise under the sanitizers) and a small hash, so full buckets
	 * (regions the hash does not index, I6) happen too. */
	/* A grace timeout no descheduled reader thread reaches even under the sanitizers: a
	 * revoked reader's later sections would be unprotected (tests/test_trust.c covers that). */
	struct viommu_fastpath_opts o = { .nodes = 4096, .extents = 16384, .hash_buckets = 256,
					  .reader_fence = fence_mode, .grace_timeout_ms = 20000,
					  .bpf = true /* BPF readers too */ };

	if (crowded_hash) {
		o.hash_buckets = 2;
		o.windows = VIOMMU_WINDOWS_NONE;
		/* Lazy: no grace period keeps a way from being reused while a reader is between its
		 * loads of the key and the value (each answer must still be one the IOVA had during
		 * the lookup; holding it past a removal is what lazy allows, not checked). */
		o.lazy = true;
	}
	struct viommu_config cfg;

	memset(&S, 0, sizeof(S));
	pthread_mutex_init(&S.lock, NULL);
	viommu_config_default(&cfg);
	cfg.bypass = bypass;
	S.dev = viommu_device_new(&cfg);
	cr_assert_not_null(S.dev);
	for (int e = 0; e < NEP; e++)
		cr_assert_eq(viommu_device_add_endpoint(S.dev, stress_eps[e], true, &msi, 1), 0);
	S.fp = viommu_fastpath_new(S.dev, &o);
	if (!S.fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(S.fp, "viommu_fastpath_new: %s", strerror(errno));
}

static void stress_teardown(void)
{
	/* After all the churn: the shared state is consistent and nothing leaked. Criterion does
	 * not count an assertion in .fini as a failure: abort, counted as a crash. */
	if ((S.fp && viommu_fastpath_check(S.fp)) || (S.dev && viommu_device_check(S.dev))) {
		fprintf(stderr, "stress teardown: fast path or device state inconsistent\n");
		abort();
	}
	viommu_fastpath_free(S.fp);
	viommu_device_free(S.dev);
	pthread_mutex_destroy(&S.lock);
	S.fp = NULL;
	S.dev = NULL;
}

/* ---- requests, as the driver lays them out in the request queue ---- */

/* The readable part is handed over in two pieces at a random split: the device gathers it. */
static uint8_t stress_request(struct viommu_device *dev, const uint8_t *rd, size_t len)
{
	uint8_t tail[4] = { 0xff };
	size_t cut = (size_t)(xorshift(&S.rng) % (len + 1));
	struct iovec r[2] = { { (void *)rd, cut }, { (void *)(rd + cut), len - cut } };
	struct iovec w = { tail, sizeof(tail) };

	if (viommu_device_request(dev, r, 2, &w, 1) != sizeof(tail))
		report_bad("writer: request type %u was not answered", rd[0]);
	S.w_requests++;
	if (rd[0] <= VIOMMU_T_MAX && tail[0] < VIOMMU_S_COUNT)
		S.w_status[rd[0]][tail[0]]++;
	return tail[0];
}

/* ---- the writer's history ---- */

static uint32_t truth(uint32_t ep, int p)
{
	struct viommu_answer x;

	switch (viommu_device_translate(S.dev, ep, S.probe[p], 1, S.access[p], &x)) {
	case VIOMMU_XLATE_HIT:
		return V_MAKE(K_HIT, x.pa >> 12);
	case VIOMMU_XLATE_IDENTITY:
		return V_MAKE(K_IDENT, 0);
	default:
		return V_MAKE(K_FAULT, x.reason);
	}
}

static void hist_append(struct probe_hist *h, uint64_t word)
{
	uint64_t n = LD(&h->count);

	ST(&h->wr, n + 1); /* the seqlock: entry n + 1 - RING is being overwritten */
	/* Release: orders the store of wr before the entry; pairs with hist_snapshot()'s acquire
	 * load of the entry. */
	ST_REL(&h->ring[n % RING], word);
	ST_REL(&h->count, n + 1); /* pairs with hist_snapshot()'s acquire load of count */
}

/* After each request of op i: what changed for every (endpoint, probe). */
static void writer_record(void)
{
	for (int e = 0; e < NEP; e++)
		for (int p = 0; p < NPROBE; p++) {
			uint32_t v = truth(stress_eps[e], p);

			if (v != S.cur[e][p]) {
				S.cur[e][p] = v;
				hist_append(&S.hist[e][p], H_MAKE(S.op, v));
				S.w_changes++;
			}
		}
}

static void writer_init(void)
{
	for (int p = 0; p < NPROBE; p++) {
		uint64_t iova;

		if (p < NPROBE / 2) {
			iova = WIN + xorshift(&S.rng) % WIN_SIZE;
		} else {
			/* Neighbours of the first half: same level-5 nodes, same extents. */
			int64_t pages = (int64_t)(xorshift(&S.rng) % 33) - 16;

			iova = (S.probe[p - NPROBE / 2] & ~0xfffull) + (uint64_t)(pages * 4096) +
			       (xorshift(&S.rng) & 0xfff);
			if (iova < WIN || iova >= WIN + WIN_SIZE)
				iova = S.probe[p - NPROBE / 2];
		}
		S.probe[p] = iova;
		S.access[p] = p % 5 == 4 ? VIOMMU_MAP_F_WRITE : VIOMMU_MAP_F_READ;
	}
	for (int e = 0; e < NEP; e++)
		for (int p = 0; p < NPROBE; p++) {
			S.cur[e][p] = truth(stress_eps[e], p);
			hist_append(&S.hist[e][p], H_MAKE(0, S.cur[e][p]));
		}
}

static void op_begin(void)
{
	S.op++;
	ST_REL(&S.ops, 2ull * S.op - 1); /* pairs with the readers' acquire loads of ops */
}

static void op_end(void)
{
	/* The op returned (its grace period included) and its history is written. Release: pairs
	 * with the acquire load of d0/d1 in the readers: a reader that starts at 2i sees both. */
	ST_REL(&S.ops, 2ull * S.op);
	S.w_ops++;
}

/* ---- the writer's churn ---- */

static const struct viommu_domain *domain(uint32_t id)
{
	return viommu_device_domain(S.dev, id);
}

static uint32_t random_ep(void)
{
	return stress_eps[xorshift(&S.rng) % NEP];
}

static void churn_map(uint32_t d)
{
	static const uint64_t sizes[] = {
		4096, 4096, 2 * 4096, 3 * 4096, 16 * 4096, 256 * 4096, 1ull << 21, (1ull << 21) + 4096,
		2ull << 21, 3ull << 21, 1ull << 30, WIN_SIZE,
	};
	uint64_t sz = sizes[xorshift(&S.rng) % (sizeof(sizes) / sizeof(sizes[0]))];
	uint64_t k = xorshift(&S.rng) % NPROBE, probe, start;
	uint64_t phys = (xorshift(&S.rng) % (1ull << 40)) & ~0xfffull;
	uint32_t flags = (uint32_t)(xorshift(&S.rng) % 4);

	if (k % 2) /* half of them at the probes the readers ask most about */
		k = k % 16 < 8 ? k % 8 : NPROBE / 2 + k % 8;
	probe = S.probe[k] & ~0xfffull;
	flags = flags == 0 ? VIOMMU_MAP_F_WRITE : flags == 3 ? 3 : VIOMMU_MAP_F_READ;
	if (xorshift(&S.rng) % 64 == 0) { /* huge and far: a level-2 leaf */
		test_map(S.dev, d, FAR, FAR + (512ull << 30) - 1, phys, flags);
		return;
	}
	if (sz >= (1ull << 30))
		start = probe & ~(sz - 1); /* level-3 leaves */
	else if (sz >= (1ull << 21) && xorshift(&S.rng) % 2)
		start = probe & ~((1ull << 21) - 1); /* level-4 leaves */
	else
		start = probe - (xorshift(&S.rng) % (sz / 4096)) * 4096;
	if (start < WIN)
		start = WIN;
	test_map(S.dev, d, start, start + sz - 1, phys, flags);
}

/* The first extent of @dom at or after @from, else its first one, else NULL. */
struct extent_pick {
	uint64_t from;
	const struct viommu_extent *first, *found;
};

static int pick_extent(const struct viommu_extent *x, void *arg)
{
	struct extent_pick *p = arg;

	if (!p->first)
		p->first = x;
	if (x->start >= p->from) {
		p->found = x;
		return 1;
	}
	return 0;
}

static const struct viommu_extent *extent_from(const struct viommu_domain *dom, uint64_t from)
{
	struct extent_pick p = { .from = from };

	viommu_domain_for_each_extent(dom, pick_extent, &p);
	return p.found ? p.found : p.first;
}

static void churn_unmap(uint32_t d)
{
	const struct viommu_domain *dom = domain(d);
	const struct viommu_extent *x;
	uint64_t r = xorshift(&S.rng) % 100;

	if (r < 2 || !dom) {
		test_unmap(S.dev, d, WIN, WIN + WIN_SIZE - 1); /* everything near the probes */
		return;
	}
	if (r < 4) {
		test_unmap(S.dev, d, FAR, ~0ull);
		return;
	}
	x = extent_from(dom, WIN + xorshift(&S.rng) % WIN_SIZE);
	if (!x) {
		test_unmap(S.dev, d, WIN, WIN + 0xfff); /* nothing there: answered OK, nothing changes */
		return;
	}
	if (r < 75)
		test_unmap(S.dev, d, x->start, x->end);
	else if (r < 90) /* this one and whatever follows in the next 16 MiB, unless split */
		test_unmap(S.dev, d, x->start, x->end + (xorshift(&S.rng) % 4096) * 4096);
	else if (x->end > x->start + 0xfff) /* a split: refused with S_RANGE, nothing changes */
		test_unmap(S.dev, d, x->start, x->start + 0xfff);
	else
		test_unmap(S.dev, d, x->start, x->end);
}

/* One request; the caller records it. */
static void churn_request(void)
{
	uint64_t r = xorshift(&S.rng) % 100;
	uint32_t d = 1 + (uint32_t)(xorshift(&S.rng) % NDOM), ep = random_ep();
	const struct viommu_domain *dom = domain(d);

	if (r < 55) {
		/* MAP into a live domain (an absent one would only answer NOENT). */
		for (uint32_t k = 0; k < NDOM && !dom; k++) {
			d = d % NDOM + 1;
			dom = domain(d);
		}
		if (!dom) {
			test_attach(S.dev, d, ep, 0);
		} else if (viommu_domain_nr_extents(dom) >= MAX_EXTENTS) {
			churn_unmap(d);
		} else {
			churn_map(d);
		}
	} else if (r < 90) {
		churn_unmap(d);
	} else if (r < 95) {
		test_attach(S.dev, d, ep, 0);
	} else if (r < 98) {
		const struct viommu_endpoint *e = viommu_device_endpoint(S.dev, ep);

		if (e->domain)
			test_detach(S.dev, e->domain->id, ep);
		else
			test_detach(S.dev, d, ep); /* not attached: S_INVAL, nothing changes */
	} else {
		test_attach(S.dev, BYPASS_DOMAIN, ep, VIOMMU_ATTACH_F_BYPASS);
	}
}

static void churn_op(void)
{
	uint64_t r = xorshift(&S.rng) % 1000;

	op_begin();
	if (r < 40) {
		/* A batch (one queue kick): one grace period at its end covers every removal. */
		unsigned n = 2 + (unsigned)(xorshift(&S.rng) % 4);

		viommu_device_batch_begin(S.dev);
		for (unsigned i = 0; i < n; i++) {
			churn_request();
			writer_record();
		}
		viommu_device_batch_end(S.dev);
		S.w_batches++;
	} else if (r < 41) {
		viommu_device_reset(S.dev);
		writer_record();
		S.w_resets++;
	} else if (r < 43) {
		uint8_t v = xorshift(&S.rng) % 4 == 0; /* mostly off: bypass 1 turns faults into identity */

		if (viommu_device_config_write(S.dev, 36 /* bypass */, &v, 1))
			report_bad("writer: config write of bypass %u refused", v);
		writer_record();
		S.w_bypass_writes++;
	} else {
		churn_request();
		writer_record();
	}
	op_end();
}

/* ---- the readers' check ---- */

enum { CHECK_OK, CHECK_BAD, CHECK_UNKNOWN };

/*
 * Is @val a value of probe (e, p) at some instant of [d0 .. d1]? (See the top of the file.)
 * Reads the ring newest first and stops at the first entry replaced before d0: a few loads.
 * CHECK_UNKNOWN: the ring no longer holds the entries that would decide it (a reader stalled
 * for more than RING changes of this probe).
 */
static int hist_check(int e, int p, uint32_t val, uint64_t d0, uint64_t d1)
{
	struct probe_hist *h = &S.hist[e][p];
	uint64_t c = LD_ACQ(&h->count); /* pairs with hist_append()'s release of count */
	uint64_t lo = c > RING ? c - RING : 0, j = c;
	/* An entry after c belongs to an op that had not completed at d1 (else c would include
	 * it), so its end is > d1 >= d0: as good as none. */
	uint64_t next_end = ~0ull;
	int res = CHECK_BAD;

	while (j > lo) {
		uint64_t w = LD_ACQ(&h->ring[--j % RING]); /* pairs with the release of the entry */
		uint64_t op = H_OP(w);

		if (next_end <= d0)
			break; /* this entry and every older one was replaced before d0 */
		if ((op ? 2 * op - 1 : 0) <= d1 && H_VAL(w) == val) {
			res = CHECK_OK;
			break;
		}
		next_end = 2 * op;
	}
	if (res == CHECK_BAD && j == lo && lo > 0 && next_end > d0)
		res = CHECK_UNKNOWN; /* older entries would be needed: gone */
	/* The seqlock re-check, after the acquire loads above: entries >= wr - RING were not
	 * overwritten while we read them. */
	if (j + RING < LD(&h->wr))
		res = CHECK_UNKNOWN;
	return res;
}

static uint32_t answer_value(const struct viommu_query *q, const struct viommu_answer *a, bool *ok)
{
	*ok = true;
	switch (a->result) {
	case VIOMMU_XLATE_HIT:
	case VIOMMU_XLATE_MORE: /* the first part of a long range: its first extent, as a HIT */
		*ok = (a->pa & 0xfff) == (q->iova & 0xfff) && a->ext_start <= q->iova &&
		      q->iova <= a->ext_end && a->pa - a->ext_phys == q->iova - a->ext_start &&
		      (a->ext_flags & q->access & ~VIOMMU_QUERY_F_EXTENT) == (q->access & ~VIOMMU_QUERY_F_EXTENT);
		return V_MAKE(K_HIT, a->pa >> 12);
	case VIOMMU_XLATE_IDENTITY:
		*ok = a->pa == q->iova;
		return V_MAKE(K_IDENT, 0);
	default:
		return V_MAKE(K_FAULT, a->reason);
	}
}

static void wait_for_op_end(uint64_t d1)
{
	/* d1 odd: op (d1+1)/2 was running and may not have written its history yet. */
	while (LD_ACQ(&S.ops) < d1 + 1)
		sched_yield();
}

/* Check one answer; @d_hold: the clock just before exit for an answer held in a critical
 * section (else d0). Counts into @c. */
static void check_answer(struct reader_counts *c, const char *who, int e, int p,
			 const struct viommu_query *q, const struct viommu_answer *a, uint64_t d0,
			 uint64_t d1, uint64_t d_hold)
{
	bool ok;
	uint32_t val;
	uint64_t lower;
	int res;

	c->lookups++;
	if (a->result == VIOMMU_XLATE_RETRY) {
		c->retries++;
		return;
	}
	c->hits += a->result == VIOMMU_XLATE_HIT;
	c->ident += a->result == VIOMMU_XLATE_IDENTITY;
	c->faults += a->result == VIOMMU_XLATE_FAULT;
	val = answer_value(q, a, &ok);
	if (!ok) {
		report_bad("%s: ep 0x%x iova 0x%llx: inconsistent answer result %u pa 0x%llx extent "
			   "[0x%llx, 0x%llx] phys 0x%llx flags %u",
			   who, q->endpoint, (unsigned long long)q->iova, a->result,
			   (unsigned long long)a->pa, (unsigned long long)a->ext_start,
			   (unsigned long long)a->ext_end, (unsigned long long)a->ext_phys, a->ext_flags);
		return;
	}
	/* Only a translation (HIT, identity) is held: a fault gives the holder nothing to use.
	 * Lazy removals do not wait for holders (no I7): then only the lookup itself is checked. */
	lower = a->result == VIOMMU_XLATE_FAULT || crowded_hash ? d0 : d_hold;
	res = hist_check(e, p, val, lower, d1);
	if (res == CHECK_BAD && (d1 & 1)) {
		c->rechecks++;
		wait_for_op_end(d1);
		res = hist_check(e, p, val, lower, d1);
	}
	if (res == CHECK_UNKNOWN) {
		c->unchecked++;
	} else if (res == CHECK_BAD) {
		struct probe_hist *h = &S.hist[e][p];
		uint64_t n = LD_ACQ(&h->count);
		char tail[160] = "";
		size_t off = 0;

		for (uint64_t j = n > 4 ? n - 4 : 0; j < n && off < sizeof(tail) - 40; j++) {
			uint64_t x = LD_ACQ(&h->ring[j % RING]);

			off += (size_t)snprintf(tail + off, sizeof(tail) - off, " op %u:%x", H_OP(x),
						H_VAL(x));
		}
		report_bad("%s: ep 0x%x iova 0x%llx access %u: answer %u pa 0x%llx reason %u (value %x) "
			   "was never valid during ops [%llu, %llu] (held to %llu); history:%s",
			   who, q->endpoint, (unsigned long long)q->iova, q->access, a->result,
			   (unsigned long long)a->pa, a->reason, val, (unsigned long long)d0,
			   (unsigned long long)d1, (unsigned long long)d_hold, tail);
	}
}

/* Was identity a valid answer for probe @p of endpoint @e at some point since @d0 (checked as
 * check_answer() does: an op running now is waited for, its history entry may not be there yet)? */
static bool ident_allowed(int e, int p, uint64_t d0)
{
	uint64_t d = LD_ACQ(&S.ops);
	int res = hist_check(e, p, V_MAKE(K_IDENT, 0), d0, d);

	if (res != CHECK_OK && (d & 1)) {
		wait_for_op_end(d);
		res = hist_check(e, p, V_MAKE(K_IDENT, 0), d0, d);
	}
	return res == CHECK_OK;
}

static void make_query(struct viommu_query *q, int e, int p)
{
	q->endpoint = stress_eps[e];
	/* Every third probe asks for the whole extent: the record, or a solo page's PTE alone. */
	q->access = S.access[p] | (p % 3 == 1 ? VIOMMU_QUERY_F_EXTENT : 0);
	q->iova = S.probe[p];
	q->size = 1;
}

/* ---- user readers ---- */

struct reader_arg {
	int id;
	uint64_t seed;
};

static void *user_reader(void *argp)
{
	struct reader_arg *arg = argp;
	struct reader_counts *c = &S.rc[arg->id];
	struct viommu_reader *r = viommu_reader_open(S.fp); /* owned by this thread */
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];
	int pe[VIOMMU_BULK_MAX], pp[VIOMMU_BULK_MAX];
	uint64_t rng = arg->seed;
	char who[32];

	snprintf(who, sizeof(who), "user reader %d", arg->id);
	if (!r) {
		report_bad("%s: viommu_reader_open: %s", who, strerror(errno));
		return NULL;
	}
	while (!LD_ACQ(&S.stop)) {
		uint64_t m = xorshift(&rng), d0, d1, dh;
		bool in_cs = m & 1, bulk = (m & 6) == 0, bulk_pa = (m & 6) == 2;
		unsigned n = bulk || bulk_pa ? 1 + (unsigned)((m >> 8) % VIOMMU_BULK_MAX) : 1;
		uint64_t skip = 0, pa[VIOMMU_BULK_MAX];

		for (unsigned i = 0; i < n; i++) {
			/* Mostly the same few probes per endpoint: the reader TLB (I10) gets hits. */
			pe[i] = (int)(xorshift(&rng) % NEP);
			pp[i] = (int)(xorshift(&rng) % NPROBE);
			if (xorshift(&rng) % 4) /* probes 0-7 and their neighbours 32-39 */
				pp[i] = pp[i] % 16 < 8 ? pp[i] % 8 : NPROBE / 2 + pp[i] % 8;
			make_query(&q[i], pe[i], pp[i]);
		}
		if (in_cs)
			viommu_reader_enter(r);
		d0 = LD_ACQ(&S.ops);
		if (bulk) {
			uint64_t mask = viommu_reader_translate_bulk(r, q, a, n);

			for (unsigned i = 0; i < n; i++)
				if (!!(mask >> i & 1) != (a[i].result == VIOMMU_XLATE_HIT ||
							   a[i].result == VIOMMU_XLATE_IDENTITY))
					report_bad("%s: bulk mask bit %u disagrees with result %u", who, i,
						   a[i].result);
		} else if (bulk_pa) {
			skip = ~viommu_reader_translate_bulk_pa(r, q, pa, n); /* a clear bit says nothing */
		} else {
			viommu_reader_translate(r, &q[0], &a[0]);
		}
		d1 = LD_ACQ(&S.ops);
		dh = d0;
		if (in_cs) {
			/* Use the translation for a while: the writer's removals must wait. */
			if ((m >> 16) % 8 == 0)
				for (volatile int k = 0; k < 2000; k++)
					;
			dh = LD_ACQ(&S.ops);
			if (viommu_reader_exit(r))
				report_bad("%s: the writer revoked a reader that exited in time", who);
			c->in_cs += n;
		}
		for (unsigned i = 0; i < n; i++) {
			if (skip >> i & 1)
				continue;
			if (bulk_pa) {
				/* A set bit is a translation, checked as an answer: a HIT of one byte at
				 * the PA, or identity when the PA is the IOVA and the history allowed
				 * identity since d0 (a mapping onto itself stays a HIT). Decided out
				 * here: the history may have to wait for a running op. */
				uint32_t acc = q[i].access & ~VIOMMU_QUERY_F_EXTENT;

				if (pa[i] == q[i].iova && ident_allowed(pe[i], pp[i], d0))
					a[i] = (struct viommu_answer){ .result = VIOMMU_XLATE_IDENTITY, .pa = pa[i] };
				else
					a[i] = (struct viommu_answer){ .result = VIOMMU_XLATE_HIT, .pa = pa[i],
								       .ext_start = q[i].iova, .ext_end = q[i].iova,
								       .ext_phys = pa[i], .ext_flags = acc };
			}
			check_answer(c, who, pe[i], pp[i], &q[i], &a[i], d0, d1, dh);
		}
	}
	viommu_reader_close(r);
	return NULL;
}

/* ---- a BPF reader: the syscall program through BPF_PROG_TEST_RUN, from another thread ---- */

static void *bpf_reader(void *argp)
{
	struct reader_arg *arg = argp;
	struct reader_counts *c = &S.rc[arg->id];
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];
	int pe[VIOMMU_BULK_MAX], pp[VIOMMU_BULK_MAX];
	uint64_t rng = arg->seed;

	while (!LD_ACQ(&S.stop)) {
		unsigned n = 1 + (unsigned)(xorshift(&rng) % VIOMMU_BULK_MAX);
		uint64_t d0, d1;
		int err;

		for (unsigned i = 0; i < n; i++) {
			pe[i] = (int)(xorshift(&rng) % NEP);
			pp[i] = (int)(xorshift(&rng) % NPROBE);
			make_query(&q[i], pe[i], pp[i]);
		}
		d0 = LD_ACQ(&S.ops);
		/* Thread-safe: it only runs the program (fastpath.c); the test run returns after
		 * the program finished, so the lookups happen within [d0, d1] (I7). */
		err = viommu_fastpath_bpf_translate(S.fp, q, a, n, false);
		d1 = LD_ACQ(&S.ops);
		if (err) {
			report_bad("bpf reader: viommu_fastpath_bpf_translate: %s", strerror(-err));
			break;
		}
		for (unsigned i = 0; i < n; i++)
			check_answer(c, "bpf reader", pe[i], pp[i], &q[i], &a[i], d0, d1, d0);
	}
	return NULL;
}

/* ---- the churn tests ---- */

static void print_counts(const char *name, int nreaders, const char *const *kinds)
{
	const struct viommu_meta *m = viommu_fastpath_view(S.fp)->meta;
	uint64_t st_ok = 0, st_err = 0;

	for (int t = 0; t <= VIOMMU_T_MAX; t++)
		for (int s = 0; s < VIOMMU_S_COUNT; s++)
			*(s == VIOMMU_S_OK ? &st_ok : &st_err) += S.w_status[t][s];
	cr_log_info("%s: writer %llu ops (%llu requests: %llu OK, %llu refused; %llu batches, "
		    "%llu resets, %llu bypass writes), %llu probe changes, %llu grace periods "
		    "(mean %.1f us)",
		    name, (unsigned long long)S.w_ops, (unsigned long long)S.w_requests,
		    (unsigned long long)st_ok, (unsigned long long)st_err,
		    (unsigned long long)S.w_batches, (unsigned long long)S.w_resets,
		    (unsigned long long)S.w_bypass_writes, (unsigned long long)S.w_changes,
		    (unsigned long long)m->grace_periods,
		    m->grace_periods ? m->grace_ns_total / 1e3 / m->grace_periods : 0.0);
	cr_log_info("%s: writer MAP %llu OK / %llu INVAL, UNMAP %llu OK / %llu RANGE, ATTACH %llu OK, "
		    "DETACH %llu OK / %llu INVAL; fast path %u extents, %u nodes, %u hash entries",
		    name, (unsigned long long)S.w_status[VIOMMU_T_MAP][VIOMMU_S_OK],
		    (unsigned long long)S.w_status[VIOMMU_T_MAP][VIOMMU_S_INVAL],
		    (unsigned long long)S.w_status[VIOMMU_T_UNMAP][VIOMMU_S_OK],
		    (unsigned long long)S.w_status[VIOMMU_T_UNMAP][VIOMMU_S_RANGE],
		    (unsigned long long)S.w_status[VIOMMU_T_ATTACH][VIOMMU_S_OK],
		    (unsigned long long)S.w_status[VIOMMU_T_DETACH][VIOMMU_S_OK],
		    (unsigned long long)S.w_status[VIOMMU_T_DETACH][VIOMMU_S_INVAL], m->extents_used,
		    m->nodes_used, m->hash_used);
	for (int i = 0; i < nreaders; i++) {
		const struct reader_counts *c = &S.rc[i];

		cr_log_info("%s: %s %d: %llu lookups (%llu in critical sections): %llu hits, %llu "
			    "identity, %llu faults, %llu FP_RETRY; %llu re-checked after the op "
			    "completed, %llu undecidable (history ring overrun)",
			    name, kinds[i], i, (unsigned long long)c->lookups,
			    (unsigned long long)c->in_cs, (unsigned long long)c->hits,
			    (unsigned long long)c->ident, (unsigned long long)c->faults,
			    (unsigned long long)c->retries, (unsigned long long)c->rechecks,
			    (unsigned long long)c->unchecked);
	}
}

static void churn(const char *name, int nuser, int nbpf)
{
	const char *kind[MAX_READERS];
	pthread_t th[MAX_READERS];
	struct reader_arg args[MAX_READERS];
	uint64_t seed = stress_seed(), lookups = 0, retries = 0;
	double secs = stress_seconds(), t_end;
	int n = nuser + nbpf;

	stress_setup(0);
	S.rng = seed;
	cr_log_info("%s: seed 0x%llx (VIOMMU_STRESS_SEED), %.1f s (VIOMMU_STRESS_SECONDS)", name,
		    (unsigned long long)seed, secs);
	writer_init();
	for (int i = 0; i < n; i++) {
		args[i] = (struct reader_arg){ .id = i, .seed = seed * (uint64_t)(2 * i + 3) | 1 };
		kind[i] = i < nuser ? "user reader" : "bpf reader";
		cr_assert_eq(pthread_create(&th[i], NULL, i < nuser ? user_reader : bpf_reader, &args[i]),
			     0);
	}
	t_end = now_s() + secs;
	while (now_s() < t_end && !LD(&S.bad))
		for (int k = 0; k < 64; k++)
			churn_op();
	ST_REL(&S.stop, 1);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	print_counts(name, n, kind);
	for (int i = 0; i < n; i++) {
		lookups += S.rc[i].lookups;
		retries += S.rc[i].retries;
	}
	cr_expect_eq(LD(&S.bad), 0, "%llu bad answers; the first: %s", (unsigned long long)S.bad,
		     S.first_bad);
	cr_expect_gt(S.w_ops, 100, "the writer made progress");
	for (int i = 0; i < n; i++)
		cr_expect_gt(S.rc[i].lookups, 0, "%s %d made progress", kind[i], i);
	/* FP_RETRY needs VIOMMU_RETRIES consecutive races on one lookup: rare (none in 30 s of a
	 * plain build). A sanitizer slows the user readers' lookups far more than the writer's
	 * publication, so races per lookup grow: a looser bound there. */
	cr_expect_leq(retries * 100, lookups * RETRY_PERCENT_MAX,
		      "FP_RETRY is rare: %llu of %llu lookups", (unsigned long long)retries,
		      (unsigned long long)lookups);
	stress_teardown();
}

Test(stress, readers_never_see_a_translation_that_was_never_valid)
{
	churn("user readers", 2, 0);
}

Test(stress, bpf_readers_never_see_a_translation_that_was_never_valid)
{
	churn("bpf reader", 1, 1);
}

Test(stress, readers_with_fenced_grace_periods_never_see_a_translation_that_was_never_valid)
{
	fence_mode = true;
	churn("user readers, reader-fence grace periods", 2, 0);
}

Test(stress, readers_of_2mib_pieces_in_a_crowded_hash_never_see_a_translation_that_was_never_valid)
{
	crowded_hash = true;
	churn("user and bpf readers, no windows, 2 hash buckets, lazy", 1, 1);
}

/* ---- grace periods: a removal returns only after the reader holding the translation exits ---- */

struct holder {
	struct viommu_reader *r;
	struct viommu_query q;
	uint32_t want_result;
	uint64_t want_pa;
	int holding; /* reader -> writer: inside, with the translation (release/acquire) */
	int removing; /* writer -> reader: the removal request is being sent (release/acquire) */
	int done_using; /* plain: ordered by R2 (exit, release) and W5 (acquire), nothing else */
	uint32_t got_result;
	uint64_t got_pa;
};

static void *holder_thread(void *argp)
{
	struct holder *h = argp;
	struct viommu_answer a = { 0 };

	viommu_reader_enter(h->r);
	viommu_reader_translate(h->r, &h->q, &a);
	h->got_result = a.result;
	h->got_pa = a.pa;
	ST_REL(&h->holding, 1);
	while (!LD_ACQ(&h->removing))
		sched_yield();
	/* The writer is now inside the removal, or about to be: keep using the translation for a
	 * while, so it reaches its grace period and has to wait (not asserted: timing). */
	usleep(2000);
	h->done_using = 1;
	viommu_reader_exit(h->r);
	return NULL;
}

struct removal {
	const char *what;
	uint8_t bypass; /* config bypass for the round */
	void (*setup)(struct holder *h); /* make q translate; fill want_* */
	void (*remove)(void);
	uint32_t after_result; /* what q translates to once the removal returned */
};

static uint64_t round_phys;

static void setup_mapped(struct holder *h)
{
	round_phys = ((round_phys + 0x12345000ull) % (1ull << 40)) & ~0x1fffffull;
	cr_assert_eq(test_attach(S.dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(S.dev, 1, WIN, WIN + (2ull << 20) - 1, round_phys, 3), VIOMMU_S_OK);
	h->want_result = VIOMMU_XLATE_HIT;
	h->want_pa = round_phys + (h->q.iova - WIN);
}

static void setup_bypass_domain(struct holder *h)
{
	cr_assert_eq(test_attach(S.dev, BYPASS_DOMAIN, 8, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_OK);
	h->want_result = VIOMMU_XLATE_IDENTITY;
	h->want_pa = h->q.iova;
}

static void setup_unattached_bypass(struct holder *h)
{
	h->want_result = VIOMMU_XLATE_IDENTITY; /* config bypass = 1, endpoint 8 not attached */
	h->want_pa = h->q.iova;
}

static void rm_unmap(void)
{
	cr_assert_eq(test_unmap(S.dev, 1, WIN, WIN + (2ull << 20) - 1), VIOMMU_S_OK);
}

static void rm_detach(void)
{
	cr_assert_eq(test_detach(S.dev, 1, 8), VIOMMU_S_OK);
}

static void rm_move(void)
{
	cr_assert_eq(test_attach(S.dev, 2, 8, 0), VIOMMU_S_OK); /* domain 1 dies with it */
}

static void rm_reset(void)
{
	viommu_device_reset(S.dev);
}

static void rm_bypass_off(void)
{
	uint8_t v = 0;

	cr_assert_eq(viommu_device_config_write(S.dev, 36 /* bypass */, &v, 1), 0);
}

static const struct removal removals[] = {
	{ "UNMAP of the mapping", 0, setup_mapped, rm_unmap, VIOMMU_XLATE_FAULT },
	{ "DETACH of the endpoint", 0, setup_mapped, rm_detach, VIOMMU_XLATE_FAULT },
	{ "ATTACH moving the endpoint to an empty domain", 0, setup_mapped, rm_move, VIOMMU_XLATE_FAULT },
	{ "device reset", 0, setup_mapped, rm_reset, VIOMMU_XLATE_FAULT },
	{ "ATTACH from a bypass domain", 0, setup_bypass_domain, rm_move, VIOMMU_XLATE_FAULT },
	{ "ATTACH of an endpoint in global bypass", 1, setup_unattached_bypass, rm_move,
	  VIOMMU_XLATE_FAULT },
	{ "bypass 1 -> 0 in the config space", 1, setup_unattached_bypass, rm_bypass_off,
	  VIOMMU_XLATE_FAULT },
};

static void removal_waits_for_holder(void);

Test(stress, a_removal_returns_only_after_the_reader_holding_the_translation_exits)
{
	removal_waits_for_holder();
}

Test(stress, with_fenced_grace_periods_a_removal_returns_only_after_the_reader_exits)
{
	fence_mode = true;
	removal_waits_for_holder();
}

static void removal_waits_for_holder(void)
{
	const size_t nkinds = sizeof(removals) / sizeof(removals[0]);
	unsigned rounds = (unsigned)(stress_seconds() * 10) * (unsigned)nkinds;
	struct viommu_reader *mine, *held;
	const struct viommu_meta *m;
	uint64_t waited_ns = 0;

	stress_setup(0);
	S.rng = stress_seed();
	m = viommu_fastpath_view(S.fp)->meta;
	mine = viommu_reader_open(S.fp);
	held = viommu_reader_open(S.fp);
	cr_assert(mine && held);
	cr_assert_eq(viommu_reader_fence_mode(held), fence_mode, "the readers follow the fast path's grace mode");
	for (unsigned round = 0; round < rounds; round++) {
		const struct removal *k = &removals[round % nkinds];
		struct holder h = { .r = held };
		struct viommu_answer a;
		uint64_t gp, ns;
		pthread_t th;

		viommu_device_reset(S.dev);
		cr_assert_eq(viommu_device_config_write(S.dev, 36, &k->bypass, 1), 0);
		h.q = (struct viommu_query){ .endpoint = 8, .access = 1, .size = 8,
					     .iova = WIN + (xorshift(&S.rng) % (2ull << 20) & ~7ull) };
		k->setup(&h);
		cr_assert_eq(pthread_create(&th, NULL, holder_thread, &h), 0);
		while (!LD_ACQ(&h.holding))
			sched_yield();
		cr_assert_eq(h.got_result, h.want_result, "%s: the holder translated (%u)", k->what,
			     h.got_result);
		cr_assert_eq(h.got_pa, h.want_pa, "%s: pa", k->what);
		gp = m->grace_periods;
		ns = m->grace_ns_total;
		ST_REL(&h.removing, 1);
		k->remove();
		/* The ordering under test: the holder's use happened before the removal returned. */
		cr_assert_eq(h.done_using, 1,
			     "%s returned while a reader still used the translation it removed", k->what);
		cr_assert_eq(m->grace_periods, gp + 1, "%s: one grace period", k->what);
		waited_ns += m->grace_ns_total - ns;
		pthread_join(th, NULL);
		cr_assert_eq(viommu_reader_translate(mine, &h.q, &a), k->after_result,
			     "%s: a reader starting after it no longer translates", k->what);
	}
	cr_log_info("grace periods: %u removals, each with a reader holding the removed "
		    "translation; mean wait %.1f us (the reader held it for 2 ms after the request "
		    "was sent)",
		    rounds, waited_ns / 1e3 / rounds);
	viommu_reader_close(mine);
	viommu_reader_close(held);
	stress_teardown();
}
