// SPDX-License-Identifier: MIT
/*
 * viommu-bench: the benchmark harness. Scenarios are a table of {setup, run, teardown} callbacks
 * (Linux selftests/bpf bench style); each timed job is warmed up, calibrated to a time per
 * repetition, repeated, and reported as the median and p10/p90 of ns per operation. The
 * baselines (baselines.h) run in this process on the same extents and the same queries, and each
 * is checked against the authoritative store (viommu_device_translate) before it is timed: a
 * wrong answer aborts the run with an error (exit status 1), in every mode including --smoke.
 *
 * Worlds: a world is one device with one domain holding N extents of one size class, mapped with
 * real MAP requests, the fast path attached, a reader open, and the baselines built from the same
 * extent list. World scenarios run once per world they want; standalone scenarios build what
 * they need. Only one world lives at a time (the 1M-extent worlds are large).
 *
 *   viommu-bench [--quick | --smoke] [--filter=SUBSTR] [--out=DIR] [--no-plot]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "baselines.h"
#include "bench_hash.skel.h"
#include "device.h"
#include "fastpath.h"
#include "reader.h"

#define BENCH_EP 8u /* the endpoint every world translates for */
#define BENCH_DOMAIN 1u
#define BENCH_BATCH 64u /* queries per bulk call / per BPF run (VIOMMU_BULK_MAX) */
#define BENCH_HASH_PAGES_MAX (1u << 22) /* bpf_hash: one element per 4 KiB page, at most this */
#define BENCH_OPS_MAX (1ull << 32)

_Static_assert(BENCH_BATCH == VIOMMU_BULK_MAX, "one BPF run answers one bulk batch");

/* ---------------------------------------------------------------- options, output ---- */

enum bench_mode { BENCH_FULL, BENCH_QUICK, BENCH_SMOKE };

struct bench_opts {
	enum bench_mode mode;
	const char *filter;
	const char *out;
	bool plot;
	unsigned reps; /* timed repetitions per job */
	double rep_ns; /* target duration of one repetition */
	size_t nq; /* queries per query set (a power of two, multiple of BENCH_BATCH) */
	char command[1024];
};

static struct bench_opts opt;
static volatile uint64_t bench_sink; /* every timed loop's result lands here: no dead code */

static const char *const mode_names[] = { "full", "quick", "smoke" };

struct bench_row {
	char scenario[24], size[8], impl[16], variant[24], note[64];
	uint64_t extents;
	unsigned threads, reps;
	uint64_t ops; /* operations per repetition */
	double ns_median, ns_p10, ns_p90, ops_per_s;
	double loss_pct; /* churn rows: reader slowdown vs quiet; NAN elsewhere */
	double extra; /* churn rows: writer MAP+UNMAP pairs/s; NAN elsewhere */
};

static struct bench_row *rows;
static size_t nrows, rows_cap;

static void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bench_fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "viommu-bench: FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static void *bench_calloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		bench_fail("out of memory (%zu x %zu B)", n, sz);
	return p;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: fast, and every world/query set is reproducible from its seed. */
static uint64_t bench_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static const char *fmt_count(uint64_t n, char *buf, size_t len)
{
	if (n >= (1u << 20) && n % (1u << 20) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(n >> 20));
	else if (n >= 1024 && n % 1024 == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(n >> 10));
	else
		snprintf(buf, len, "%llu", (unsigned long long)n);
	return buf;
}

/* ---------------------------------------------------------------- timing ---- */

/*
 * A timed job: run(j, ops) performs `ops` operations and returns a value for the sink. Each
 * operation is `per_op` units (lookups, or MAP+UNMAP pairs): results are ns per unit.
 */
struct bench_job {
	uint64_t (*run)(struct bench_job *j, size_t ops);
	void *ctx;
	const struct viommu_query *q;
	size_t qmask;
	unsigned per_op;
	uint64_t faults; /* operations answered with a fault (lookups) */
	/* Where the next run starts (query, batch, pair or frame): kept across runs so that the
	 * repetitions walk the whole set instead of re-timing a prefix that stays in cache. */
	size_t cursor;
	/* Jobs the kernel times itself (XDP test runs) add its ns here and set kernel_clock: the
	 * wall clock would mostly measure the test-run machinery around the program. */
	uint64_t kernel_ns;
	bool kernel_clock;
};

struct bench_stats {
	double median, p10, p90;
	uint64_t ops;
	unsigned reps;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double time_run(struct bench_job *j, size_t ops)
{
	uint64_t t0 = now_ns(), k0 = j->kernel_ns, sum;

	sum = j->run(j, ops);
	bench_sink += sum;
	return j->kernel_clock ? (double)(j->kernel_ns - k0) : (double)(now_ns() - t0);
}

static void stats_of(double *ns, unsigned reps, uint64_t ops, struct bench_stats *st)
{
	qsort(ns, reps, sizeof(ns[0]), cmp_double);
	st->median = reps % 2 ? ns[reps / 2] : (ns[reps / 2 - 1] + ns[reps / 2]) / 2;
	st->p10 = ns[(unsigned)floor(0.1 * (reps - 1))];
	st->p90 = ns[(unsigned)ceil(0.9 * (reps - 1))];
	st->ops = ops;
	st->reps = reps;
}

/* Operations for one repetition of opt.rep_ns: grow until a run takes a tenth of it, then
 * scale (a slow peer gets few operations, never an unbounded run). Warms the job up. */
static uint64_t calibrate(struct bench_job *j)
{
	uint64_t ops = 1;
	double t;

	for (;;) {
		t = time_run(j, ops);
		if (t >= opt.rep_ns / 10 || ops >= BENCH_OPS_MAX)
			break;
		ops = ops * 4 < BENCH_OPS_MAX ? ops * 4 : BENCH_OPS_MAX;
	}
	if (t > 0) {
		double want = (double)ops * opt.rep_ns / t;

		ops = want < 1 ? 1 : want > (double)BENCH_OPS_MAX ? BENCH_OPS_MAX : (uint64_t)want;
	}
	time_run(j, ops); /* warm-up at the final size: caches, branch predictors, TLB */
	return ops;
}

/*
 * Time @n jobs that are compared with each other: calibrate each, then opt.reps rounds, each
 * round timing every job once. Interleaving the repetitions makes the ratios robust to the
 * machine's load drifting during the run (shared machines, VMs).
 */
static void bench_measure_group(struct bench_job *j, unsigned n, struct bench_stats *st)
{
	unsigned reps = opt.reps < 64 ? opt.reps : 64;
	double ns[16][64];
	uint64_t ops[16];

	if (n > 16)
		bench_fail("bench_measure_group: %u jobs", n);
	for (unsigned k = 0; k < n; k++)
		ops[k] = calibrate(&j[k]);
	for (unsigned r = 0; r < reps; r++)
		for (unsigned k = 0; k < n; k++)
			ns[k][r] = time_run(&j[k], ops[k]) / ((double)ops[k] * j[k].per_op);
	for (unsigned k = 0; k < n; k++)
		stats_of(ns[k], reps, ops[k], &st[k]);
}

static struct bench_row *row_add(const char *scenario, const char *size, uint64_t extents,
				 unsigned threads, const char *impl, const char *variant,
				 const struct bench_stats *st, const char *note)
{
	struct bench_row *r;

	if (nrows == rows_cap) {
		rows_cap = rows_cap ? rows_cap * 2 : 64;
		rows = realloc(rows, rows_cap * sizeof(*rows));
		if (!rows)
			bench_fail("out of memory");
	}
	r = &rows[nrows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->scenario, sizeof(r->scenario), "%s", scenario);
	snprintf(r->size, sizeof(r->size), "%s", size);
	snprintf(r->impl, sizeof(r->impl), "%s", impl);
	snprintf(r->variant, sizeof(r->variant), "%s", variant ? variant : "-");
	snprintf(r->note, sizeof(r->note), "%s", note ? note : "");
	r->extents = extents;
	r->threads = threads;
	r->reps = st->reps;
	r->ops = st->ops;
	r->ns_median = st->median;
	r->ns_p10 = st->p10;
	r->ns_p90 = st->p90;
	r->ops_per_s = st->median > 0 ? 1e9 / st->median : 0;
	r->loss_pct = NAN;
	r->extra = NAN;
	return r;
}

/* The viommu row this baseline row compares with (same scenario, size, extents, threads, variant). */
static const struct bench_row *row_ref(const struct bench_row *r)
{
	if (!strncmp(r->impl, "viommu", 6) && strcmp(r->impl, "viommu_store"))
		return NULL;
	for (size_t i = 0; i < nrows; i++) {
		const struct bench_row *v = &rows[i];

		if (!strcmp(v->impl, "viommu") && !strcmp(v->scenario, r->scenario) &&
		    !strcmp(v->size, r->size) && v->extents == r->extents && v->threads == r->threads &&
		    !strcmp(v->variant, r->variant))
			return v;
	}
	return NULL;
}

static double row_ratio(const struct bench_row *r)
{
	const struct bench_row *v = row_ref(r);

	return v && v->ns_median > 0 ? r->ns_median / v->ns_median : NAN;
}

static void row_print_header(void)
{
	printf("%-16s %-6s %7s %3s %-12s %-18s %10s %10s %10s %10s %9s  %s\n", "scenario", "size",
	       "extents", "thr", "impl", "variant", "ns/op", "p10", "p90", "Mops/s", "vs viommu", "note");
}

static void row_print(const struct bench_row *r)
{
	char ext[24], ratio[16] = "", ns[3][16];
	double x = row_ratio(r);
	const double v[3] = { r->ns_median, r->ns_p10, r->ns_p90 };

	if (!isnan(x))
		snprintf(ratio, sizeof(ratio), "x%.1f", x);
	for (int i = 0; i < 3; i++)
		snprintf(ns[i], sizeof(ns[i]), v[i] < 100 ? "%.2f" : v[i] < 100000 ? "%.1f" : "%.0f", v[i]);
	printf("%-16s %-6s %7s %3u %-12s %-18s %10s %10s %10s %10.3f %9s  %s\n", r->scenario, r->size,
	       fmt_count(r->extents, ext, sizeof(ext)), r->threads, r->impl, r->variant, ns[0], ns[1],
	       ns[2], r->ops_per_s / 1e6, ratio, r->note);
	fflush(stdout);
}

/* ---------------------------------------------------------------- the machine ---- */

struct bench_meta {
	char cpu[128], kernel[256], commit[64], date[32], day[16], host[72];
	long ncpu;
};

static struct bench_meta meta;

static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = 0;
}

static void meta_collect(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	struct utsname u;
	char line[512];
	time_t now = time(NULL);
	struct tm tm;

	snprintf(meta.cpu, sizeof(meta.cpu), "unknown");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *c = strchr(line, ':');

			if (!strncmp(line, "model name", 10) && c) {
				snprintf(meta.cpu, sizeof(meta.cpu), "%s", c + 2);
				chomp(meta.cpu);
				break;
			}
		}
		fclose(f);
	}
	if (!uname(&u)) {
		snprintf(meta.kernel, sizeof(meta.kernel), "%s %s %s", u.sysname, u.release, u.version);
		snprintf(meta.host, sizeof(meta.host), "%s", u.nodename);
	}
	snprintf(meta.commit, sizeof(meta.commit), "unknown");
	f = popen("git rev-parse --short HEAD 2>/dev/null", "r");
	if (f) {
		if (fgets(line, sizeof(line), f)) {
			chomp(line);
			if (line[0])
				snprintf(meta.commit, sizeof(meta.commit), "%.40s", line);
		}
		pclose(f);
	}
	localtime_r(&now, &tm);
	strftime(meta.date, sizeof(meta.date), "%Y-%m-%dT%H:%M:%S%z", &tm);
	strftime(meta.day, sizeof(meta.day), "%Y-%m-%d", &tm);
	meta.ncpu = sysconf(_SC_NPROCESSORS_ONLN);
}

/* ---------------------------------------------------------------- wire requests ---- */

static uint8_t req_tail[4];

static uint8_t req_attach(struct viommu_device *dev, uint32_t domain, uint32_t ep)
{
	uint8_t r[VIOMMU_RD_LEN(struct viommu_wire_attach)];
	size_t len = viommu_req_attach(r, domain, ep, 0);

	if (viommu_device_request_buf(dev, r, len, req_tail, sizeof(req_tail)) != 4)
		return 0xff;
	return req_tail[0];
}

/* MAP and UNMAP as the driver lays them out (wire.h); built before timing, sent as they are. */
struct bench_wire_pair {
	uint8_t map[VIOMMU_RD_LEN(struct viommu_wire_map)];
	uint8_t unmap[VIOMMU_RD_LEN(struct viommu_wire_unmap)];
};

static inline uint8_t req_send(struct viommu_device *dev, const uint8_t *r, size_t len)
{
	if (viommu_device_request_buf(dev, r, len, req_tail, sizeof(req_tail)) != 4)
		return 0xff;
	return req_tail[0];
}

/* ---------------------------------------------------------------- worlds ---- */

enum bench_size { BENCH_4K, BENCH_2M, BENCH_MIXED, BENCH_IDENT };
static const char *const size_names[] = { "4k", "2m", "mixed", "2^48" };

struct bench_world_spec {
	enum bench_size size;
	uint32_t extents;
};

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
	struct viommu_bench_hash_bpf *hash; /* bpf_hash, built on demand */
	int hash_err; /* why bpf_hash is absent (0: not tried) */
	double populate_s;
};

/* The extent list: ascending IOVAs, each extent naturally aligned (as IOVA allocators and huge
 * pages place them), one gap after about one extent in four so that misses and new MAPs have
 * room. The same list feeds the device and every baseline. */
static void world_layout(struct bench_world *w, uint64_t seed)
{
	/* "mixed": half single pages, the rest 8 KiB..2 MiB, as a guest's streaming DMA looks. */
	static const uint64_t mixed[] = { 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096,
					  4096, 8192, 8192, 8192, 16384, 65536, 65536, 65536,
					  262144, 262144, 2ull << 20 };
	uint64_t s = seed, iova = 1ull << 32;
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
	for (size_t i = 0; i < n; i++) {
		uint64_t size = w->spec.size == BENCH_4K ? 4096 :
				w->spec.size == BENCH_2M ? 2ull << 20 :
				mixed[bench_rand(&s) % (sizeof(mixed) / sizeof(mixed[0]))];
		uint64_t phys = (bench_rand(&s) % (1ull << 40)) & ~(size - 1);
		uint64_t r = bench_rand(&s);

		iova = (iova + size - 1) & ~(size - 1);
		w->ext[i] = (struct bench_extent){ iova, iova + size - 1, phys ? phys : size,
						   VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE };
		iova += size;
		w->pages += size >> 12;
		if (r % 4 == 0) {
			uint64_t granule = w->spec.size == BENCH_2M ? 2ull << 20 : 4096;

			w->gaps[w->ngaps++] = iova;
			iova += granule * (1 + (r >> 8) % 4);
		}
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

static void world_populate(struct bench_world *w, struct viommu_device *dev)
{
	uint8_t r[VIOMMU_RD_LEN(struct viommu_wire_map)];
	uint8_t st;

	if ((st = req_attach(dev, BENCH_DOMAIN, BENCH_EP)) != VIOMMU_S_OK)
		bench_fail("ATTACH: status %u", st);
	viommu_device_batch_begin(dev);
	for (size_t i = 0; i < w->n; i++) {
		const struct bench_extent *x = &w->ext[i];

		viommu_req_map(r, BENCH_DOMAIN, x->start, x->end, x->phys, x->flags);
		if ((st = req_send(dev, r, sizeof(r))) != VIOMMU_S_OK)
			bench_fail("MAP [0x%llx, 0x%llx] of extent %zu: status %u",
				   (unsigned long long)x->start, (unsigned long long)x->end, i, st);
		if (i % 4096 == 4095) { /* one queue kick per 4096 requests */
			viommu_device_batch_end(dev);
			viommu_device_batch_begin(dev);
		}
	}
	viommu_device_batch_end(dev);
}

/* A store-only device with the world's extents (the viommu_store rows). */
static struct viommu_device *world_store_device(struct bench_world *w)
{
	struct viommu_device *dev = world_device();

	world_populate(w, dev);
	return dev;
}

static void world_free(struct bench_world *w)
{
	if (!w)
		return;
	viommu_bench_hash_bpf__destroy(w->hash);
	bench_gtree_free(w->gtree);
	bench_itree_free(w->itree);
	bench_slist_free(w->slist);
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

static bool fp_refused(int err)
{
	return err == EPERM || err == ENOSYS || err == EACCES;
}

/* Build a world: the device (MAP requests through the fast path), a reader, the baselines.
 * @fpo: fast-path options (lazy/strict); @baselines: build gtree/itree/sorted_list too. */
static struct bench_world *world_build(struct bench_world_spec spec, const struct viommu_fastpath_opts *fpo,
				       bool baselines)
{
	struct bench_world *w = bench_calloc(1, sizeof(*w));
	struct viommu_fastpath_opts o = fpo ? *fpo : (struct viommu_fastpath_opts){ 0 };
	uint64_t t0, buckets = 1024;

	/* The worlds' layouts are known and dense: pools sized for them, not for the worst
	 * layout a guest could choose (viommu_fastpath_opts.overcommit). */
	o.overcommit = true;
	char nb[16];

	w->spec = spec;
	w->strict = !o.lazy;
	world_layout(w, 0x5eed0000ull + spec.size * 0x100000000ull + spec.extents);
	/* Size the pools for the world (smaller maps load faster): a level-5 node per 2 MiB region
	 * holding a piece smaller than 2 MiB, level-4/3/2 nodes per 1 GiB / 512 GiB / 256 TiB
	 * region, with slack; the hash at no more than half load. */
	{
		uint64_t last[4] = { ~0ull, ~0ull, ~0ull, ~0ull }, nodes = 64, regions = 0, prev2m = ~0ull;
		static const unsigned shift[4] = { 21, 30, 39, 48 };

		for (size_t i = 0; spec.size != BENCH_IDENT && i < w->n; i++) {
			const struct bench_extent *x = &w->ext[i];

			for (uint64_t r = x->start >> 21; r <= x->end >> 21; r++)
				if (r != prev2m) {
					regions++;
					prev2m = r;
				}
			for (int l = 0; l < 4; l++) {
				if ((l > 0 || x->end - x->start + 1 < (2ull << 20)) && (x->start >> shift[l]) != last[l]) {
					nodes++;
					last[l] = x->start >> shift[l];
				}
			}
		}
		while (buckets * VIOMMU_HASH_WAYS < 2 * regions && buckets < (1u << 22))
			buckets *= 2;
		o.hash_buckets = (uint32_t)buckets;
		o.nodes = (uint32_t)(nodes + nodes / 4 + 64);
		o.extents = (uint32_t)w->n + 4096;
	}
	w->dev = world_device();
	w->fp = viommu_fastpath_new(w->dev, &o);
	if (!w->fp) {
		int err = errno;

		world_free(w);
		errno = err;
		return NULL;
	}
	w->rd = viommu_reader_open(w->fp);
	if (!w->rd)
		bench_fail("viommu_reader_open: %s", strerror(errno));
	t0 = now_ns();
	world_populate(w, w->dev);
	w->populate_s = (now_ns() - t0) / 1e9;
	if (viommu_device_nr_mappings(w->dev) != w->n)
		bench_fail("the device holds %llu mappings, not %zu",
			   (unsigned long long)viommu_device_nr_mappings(w->dev), w->n);
	if (baselines) {
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
		/* The tree must be a valid augmented red-black tree before anything is timed. */
		if (w->n <= (1u << 16) && bench_itree_check(w->itree))
			bench_fail("itree: red-black or augmentation invariant broken after set-up");
	}
	printf("# world %s x %s: %zu extents, %llu pages, mapped by MAP requests in %.3f s (%.1fM MAPs/s), "
	       "fast path %s\n",
	       size_names[spec.size], fmt_count(spec.extents, nb, sizeof(nb)), w->n,
	       (unsigned long long)w->pages, w->populate_s,
	       w->n / (w->populate_s > 0 ? w->populate_s : 1) / 1e6, o.lazy ? "lazy" : "strict");
	return w;
}

/* ---------------------------------------------------------------- queries and checks ---- */

struct bench_qset {
	struct viommu_query *q;
	struct viommu_answer *want; /* the store's answers */
	size_t n; /* power of two */
};

static void qset_free(struct bench_qset *s)
{
	free(s->q);
	free(s->want);
	memset(s, 0, sizeof(*s));
}

enum bench_qkind { Q_HIT, Q_MISS, Q_HOT };

/* @n queries of @kind (Q_HOT: one query repeated) and the store's answers to them. The RNG runs
 * here, never inside a timed loop. */
static void qset_make(struct bench_qset *s, struct bench_world *w, enum bench_qkind kind, size_t n,
		      uint64_t seed)
{
	uint64_t r = seed;

	s->n = n;
	s->q = bench_calloc(n, sizeof(*s->q));
	s->want = bench_calloc(n, sizeof(*s->want));
	for (size_t i = 0; i < n; i++) {
		struct viommu_query *q = &s->q[i];
		const struct bench_extent *x;

		q->endpoint = BENCH_EP;
		q->access = VIOMMU_MAP_F_READ;
		q->size = 1;
		switch (kind) {
		case Q_HIT:
			x = &w->ext[bench_rand(&r) % w->n];
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
		if ((kind == Q_MISS) != (s->want[i].result == VIOMMU_XLATE_FAULT))
			bench_fail("query set: the store answers %u for iova 0x%llx", s->want[i].result,
				   (unsigned long long)q->iova);
	}
}

/* Compare one answer with the store's; abort the run on a mismatch. @ranges: the
 * implementation reports the extent, check it too. */
static void check_answer(const char *who, const char *scenario, const struct viommu_query *q,
			 const struct viommu_answer *want, const struct viommu_answer *got, bool ranges)
{
	bool ok = got->result == want->result;

	/* A raw BPF answer (XDP) to a range over more than VIOMMU_SPAN_MAX extents. */
	if (got->result == VIOMMU_XLATE_MORE && viommu_fastpath_agrees(q, want, got))
		return;
	if (ok && (want->result == VIOMMU_XLATE_HIT || want->result == VIOMMU_XLATE_IDENTITY))
		ok = got->pa == want->pa;
	if (ok && ranges && want->result == VIOMMU_XLATE_HIT)
		ok = got->ext_start == want->ext_start && got->ext_end == want->ext_end;
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

enum bench_impl { I_VIOMMU, I_GTREE, I_ITREE, I_SLIST, I_COUNT };
static const char *const impl_names[] = { "viommu", "gtree", "itree", "sorted_list" };

/* Queries a peer is timed (and checked) on: all of them, except the linear list on large worlds,
 * whose every lookup walks half the list; it gets the first ones, and the row says so. */
static size_t impl_nq(enum bench_impl impl, const struct bench_world *w, size_t nq)
{
	size_t cap = nq;

	if (impl == I_SLIST) {
		size_t budget = (1u << 26) / (w->n ? w->n : 1); /* ~64M node visits to verify */

		while (cap > 64 && cap > budget)
			cap /= 2;
	}
	return cap;
}

static void impl_translate(enum bench_impl impl, struct bench_world *w, const struct viommu_query *q,
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

static void impl_verify(enum bench_impl impl, struct bench_world *w, const char *scenario,
			const struct bench_qset *s, size_t nq)
{
	struct viommu_answer a;

	for (size_t i = 0; i < nq; i++) {
		impl_translate(impl, w, &s->q[i], &a);
		check_answer(impl_names[impl], scenario, &s->q[i], &s->want[i], &a, true);
	}
	if (impl == I_VIOMMU) {
		/* Again: the entries the first pass left in the reader's private TLB answer now. */
		for (size_t i = 0; i < nq; i++) {
			viommu_reader_translate(w->rd, &s->q[i], &a);
			check_answer("viommu (TLB)", scenario, &s->q[i], &s->want[i], &a, true);
		}
	}
}

/*
 * The timed loops. viommu's lookup is compiled into its loop like every peer's: reader.h offers
 * it as an inline function, but GCC -O2 keeps viommu_reader_translate() out of line when a file
 * calls it from several places (about 5 ns instead of 3.3 ns per TLB hit here), so `flatten`
 * asks for what the header promises.
 */
__attribute__((flatten)) static uint64_t run_viommu(struct bench_job *j, size_t ops)
{
	struct viommu_reader *r = j->ctx;
	struct viommu_answer a = { 0 }; /* set by every answer; zeroed once for the compiler */
	/* In locals: a TLB miss calls the walk out of line, after which the compiler could not
	 * keep fields of *j in registers (the peers' loops, all inline, need no such help). */
	const struct viommu_query *qv = j->q;
	const size_t qmask = j->qmask, cursor = j->cursor;
	uint64_t sum = 0, miss = 0;

	for (size_t i = 0; i < ops; i++) {
		if (viommu_reader_translate(r, &qv[(cursor + i) & qmask], &a) <= VIOMMU_XLATE_IDENTITY)
			sum += a.pa;
		else
			miss++;
	}
	j->faults += miss;
	j->cursor += ops;
	return sum;
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

/* Check every implementation on @s, then time them together; one row per implementation. */
static void lookup_rows(struct bench_world *w, const char *scenario, const struct bench_qset *s,
			bool bulk, bool expect_faults)
{
	static uint64_t (*const single[])(struct bench_job *, size_t) = { run_viommu, run_gtree, run_itree, run_slist };
	static uint64_t (*const batch[])(struct bench_job *, size_t) = { run_viommu_bulk, run_gtree_bulk,
									  run_itree_bulk, run_slist_bulk };
	void *ctx[] = { w->rd, w->gtree, w->itree, w->slist };
	struct bench_job j[I_COUNT];
	struct bench_stats st[I_COUNT];
	int impls[I_COUNT];
	unsigned n = 0;

	for (int impl = 0; impl < I_COUNT; impl++) {
		size_t nq = impl_nq(impl, w, s->n);

		if (bulk && nq < BENCH_BATCH)
			continue;
		impl_verify(impl, w, scenario, s, nq);
		j[n] = (struct bench_job){
			.run = bulk ? batch[impl] : single[impl], .ctx = ctx[impl], .q = s->q,
			.qmask = nq - 1, .per_op = bulk ? BENCH_BATCH : 1,
		};
		impls[n++] = impl;
	}
	bench_measure_group(j, n, st);
	for (unsigned k = 0; k < n; k++) {
		int impl = impls[k];
		size_t nq = j[k].qmask + 1;
		char note[64] = "";

		if (expect_faults ? j[k].faults == 0 : j[k].faults != 0)
			bench_fail("%s: %s answered %llu faults", scenario, impl_names[impl],
				   (unsigned long long)j[k].faults);
		if (nq < s->n)
			snprintf(note, sizeof(note), "%zu of %zu queries", nq, s->n);
		else if (impl == I_GTREE)
			snprintf(note, sizeof(note), "mutex per lookup");
		else if (impl == I_SLIST)
			snprintf(note, sizeof(note), bulk ? "rwlock per 64" : "rwlock per lookup");
		row_add(scenario, size_names[w->spec.size], w->spec.extents, 1, impl_names[impl],
			bulk ? "bulk64" : "-", &st[k], note);
		row_print(&rows[nrows - 1]);
	}
}

/* ---------------------------------------------------------------- scenarios ---- */

struct bench_ctx {
	struct bench_world *w; /* NULL for standalone scenarios */
	struct bench_qset qs;
	void *priv;
};

static bool world_any(const struct bench_world_spec *s)
{
	return s->size != BENCH_IDENT;
}

static bool world_4k(const struct bench_world_spec *s)
{
	return s->size == BENCH_4K;
}

static bool world_ident(const struct bench_world_spec *s)
{
	return s->size == BENCH_IDENT;
}

static bool world_bpf(const struct bench_world_spec *s)
{
	return s->size == BENCH_4K || s->size == BENCH_IDENT ||
	       (opt.mode == BENCH_FULL && s->extents <= 65536);
}

static int setup_random(struct bench_ctx *c)
{
	qset_make(&c->qs, c->w, Q_HIT, opt.nq, 0x1001);
	return 0;
}

static int setup_hot(struct bench_ctx *c)
{
	qset_make(&c->qs, c->w, Q_HOT, 1, 0);
	return 0;
}

static int setup_miss(struct bench_ctx *c)
{
	if (!c->w->ngaps)
		return -1;
	qset_make(&c->qs, c->w, Q_MISS, opt.nq, 0x2002);
	return 0;
}

static void teardown_qset(struct bench_ctx *c)
{
	qset_free(&c->qs);
}

static void run_lookup(struct bench_ctx *c, const char *name, bool bulk, bool faults)
{
	lookup_rows(c->w, name, &c->qs, bulk, faults);
}

static void run_lookup_random(struct bench_ctx *c)
{
	run_lookup(c, "lookup_random", false, false);
}

static void run_lookup_hot(struct bench_ctx *c)
{
	run_lookup(c, "lookup_hot", false, false);
}

static void run_lookup_miss(struct bench_ctx *c)
{
	run_lookup(c, "lookup_miss", false, true);
}

static void run_lookup_bulk(struct bench_ctx *c)
{
	run_lookup(c, "lookup_bulk64", true, false);
}

static void run_lookup_identity(struct bench_ctx *c)
{
	run_lookup(c, "lookup_identity", false, false);
}

/* ---- BPF: viommu's syscall program vs a per-page BPF hash, 64 queries per run ---- */

/* bpf/bench_hash.bpf.c's key and value (the program defines them; sizes checked at load). */
struct bench_hash_key {
	uint32_t domain, pad;
	uint64_t pfn;
};

struct bench_hash_val {
	uint64_t pa;
	uint32_t perm, pad;
};

static int hash_build(struct bench_world *w)
{
	struct viommu_bench_hash_bpf *h;
	struct bench_hash_key *k;
	struct bench_hash_val *v;
	const size_t chunk = 8192;
	size_t n = 0;
	int err, fd;

	if (w->pages > BENCH_HASH_PAGES_MAX)
		return -E2BIG;
	h = viommu_bench_hash_bpf__open();
	if (!h)
		return -errno;
	bpf_map__set_max_entries(h->maps.viommu_bench_pages, (uint32_t)w->pages + 1024);
	if ((err = viommu_bench_hash_bpf__load(h))) {
		viommu_bench_hash_bpf__destroy(h);
		return err;
	}
	if (bpf_map__key_size(h->maps.viommu_bench_pages) != sizeof(*k) ||
	    bpf_map__value_size(h->maps.viommu_bench_pages) != sizeof(*v))
		bench_fail("bpf_hash: key/value layout differs from bpf/bench_hash.bpf.c");
	fd = bpf_map__fd(h->maps.viommu_bench_pages);
	k = bench_calloc(chunk, sizeof(*k));
	v = bench_calloc(chunk, sizeof(*v));
	for (size_t i = 0; i < w->n; i++) {
		const struct bench_extent *x = &w->ext[i];

		for (uint64_t pa = x->start; pa <= x->end && pa >= x->start; pa += 4096) {
			k[n] = (struct bench_hash_key){ .domain = BENCH_EP, .pfn = pa >> 12 };
			v[n] = (struct bench_hash_val){ .pa = x->phys + (pa - x->start), .perm = x->flags };
			if (++n == chunk || (i == w->n - 1 && x->end - pa < 4096)) {
				__u32 cnt = (__u32)n;

				if (bpf_map_update_batch(fd, k, v, &cnt, NULL))
					bench_fail("bpf_hash: bpf_map_update_batch: %s", strerror(errno));
				n = 0;
			}
		}
	}
	free(k);
	free(v);
	w->hash = h;
	return 0;
}

struct bench_bpf_ctx {
	struct viommu_fastpath *fp;
	int hash_fd;
	struct viommu_answer a[BENCH_BATCH];
};

/* One run of bench_hash's syscall program over a batch, the same way
 * viommu_fastpath_bpf_translate() runs viommu's: copy in, BPF_PROG_TEST_RUN, copy out. */
static int hash_translate(int prog_fd, const struct viommu_query *q, struct viommu_answer *a, unsigned n)
{
	struct viommu_batch b;
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &b, .ctx_size_in = sizeof(b));

	b.n = n;
	b.report_faults = 0;
	if (n) /* NULL arrays may come with n == 0: not for memcpy */
		memcpy(b.q, q, n * sizeof(*q));
	memset(b.a, 0, n * sizeof(*a));
	if (bpf_prog_test_run_opts(prog_fd, &o))
		return -errno;
	if (n)
		memcpy(a, b.a, n * sizeof(*a));
	return o.retval ? -EINVAL : 0;
}

/* The program's own run time per lookup (the kernel's bpf_stats, enabled only around this
 * untimed pass): what the syscall, the copies and the test-run machinery add is the rest. */
static double prog_ns_per_lookup(int prog_fd, struct bench_job *j, size_t ops)
{
	struct bpf_prog_info a = { 0 }, b = { 0 };
	__u32 len = sizeof(a);
	int sfd = bpf_enable_stats(BPF_STATS_RUN_TIME);

	if (sfd < 0)
		return NAN;
	if (bpf_obj_get_info_by_fd(prog_fd, &a, &len)) {
		close(sfd);
		return NAN;
	}
	bench_sink += j->run(j, ops);
	len = sizeof(b);
	if (bpf_obj_get_info_by_fd(prog_fd, &b, &len))
		b = a;
	close(sfd);
	if (b.run_cnt == a.run_cnt)
		return NAN;
	return (double)(b.run_time_ns - a.run_time_ns) / ((double)(b.run_cnt - a.run_cnt) * BENCH_BATCH);
}

static uint64_t run_bpf_viommu(struct bench_job *j, size_t ops)
{
	struct bench_bpf_ctx *c = j->ctx;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		int err = viommu_fastpath_bpf_translate(c->fp, &j->q[(j->cursor++ * BENCH_BATCH) & j->qmask], c->a,
							BENCH_BATCH, false);

		if (err)
			bench_fail("viommu_fastpath_bpf_translate: %s", strerror(-err));
		sum += c->a[i % BENCH_BATCH].pa;
	}
	return sum;
}

static uint64_t run_bpf_hash(struct bench_job *j, size_t ops)
{
	struct bench_bpf_ctx *c = j->ctx;
	uint64_t sum = 0;
	int err;

	for (size_t i = 0; i < ops; i++) {
		if ((err = hash_translate(c->hash_fd, &j->q[(j->cursor++ * BENCH_BATCH) & j->qmask], c->a, BENCH_BATCH)))
			bench_fail("bpf_hash: BPF_PROG_TEST_RUN: %s", strerror(-err));
		sum += c->a[i % BENCH_BATCH].pa;
	}
	return sum;
}

static int setup_bpf(struct bench_ctx *c)
{
	setup_random(c);
	if (!c->w->hash && !c->w->hash_err)
		c->w->hash_err = hash_build(c->w);
	return 0;
}

static void run_bpf_lookup(struct bench_ctx *c)
{
	struct bench_world *w = c->w;
	struct bench_bpf_ctx bc[2] = { { .fp = w->fp, .hash_fd = -1 }, { .fp = w->fp, .hash_fd = -1 } };
	struct bench_job j[2];
	struct bench_stats st[2];
	unsigned n = 1;
	char note[64];

	/* Both programs answer every query of the set exactly as the store does. */
	for (size_t i = 0; i < c->qs.n; i += BENCH_BATCH) {
		int err = viommu_fastpath_bpf_translate(w->fp, &c->qs.q[i], bc[0].a, BENCH_BATCH, false);

		if (err)
			bench_fail("viommu_fastpath_bpf_translate: %s", strerror(-err));
		for (unsigned k = 0; k < BENCH_BATCH; k++)
			check_answer("viommu (BPF)", "bpf_lookup", &c->qs.q[i + k], &c->qs.want[i + k], &bc[0].a[k], true);
	}
	j[0] = (struct bench_job){ .run = run_bpf_viommu, .ctx = &bc[0], .q = c->qs.q, .qmask = c->qs.n - 1,
				   .per_op = BENCH_BATCH };
	if (w->hash) {
		bc[1].hash_fd = bpf_program__fd(w->hash->progs.viommu_bench_hash_lookup);
		for (size_t i = 0; i < c->qs.n; i += BENCH_BATCH) {
			int err = hash_translate(bc[1].hash_fd, &c->qs.q[i], bc[1].a, BENCH_BATCH);

			if (err)
				bench_fail("bpf_hash: BPF_PROG_TEST_RUN: %s", strerror(-err));
			for (unsigned k = 0; k < BENCH_BATCH; k++)
				check_answer("bpf_hash", "bpf_lookup", &c->qs.q[i + k], &c->qs.want[i + k], &bc[1].a[k], false);
		}
		j[1] = j[0];
		j[1].run = run_bpf_hash;
		j[1].ctx = &bc[1];
		n = 2;
	}
	bench_measure_group(j, n, st);
	snprintf(note, sizeof(note), "64 queries/test run; program alone %.1f ns",
		 prog_ns_per_lookup(viommu_fastpath_syscall_fd(w->fp), &j[0], 1024));
	row_add("bpf_lookup", size_names[w->spec.size], w->spec.extents, 1, "viommu", "syscall64", &st[0], note);
	row_print(&rows[nrows - 1]);
	if (!w->hash) {
		printf("# bpf_lookup %s x %u: bpf_hash skipped: %s\n", size_names[w->spec.size],
		       w->spec.extents, w->hash_err == -E2BIG ? "too many pages for one element per page" :
		       strerror(-w->hash_err));
		return;
	}
	snprintf(note, sizeof(note), "%llu elements (1/page); program alone %.1f ns",
		 (unsigned long long)w->pages, prog_ns_per_lookup(bc[1].hash_fd, &j[1], 1024));
	row_add("bpf_lookup", size_names[w->spec.size], w->spec.extents, 1, "bpf_hash", "syscall64", &st[1], note);
	row_print(&rows[nrows - 1]);
}

/* ---- XDP: the program on descriptor frames, BPF_PROG_TEST_RUN with repeat ---- */

struct bench_xdp_frame {
	struct ethhdr eth;
	struct viommu_query q;
	struct viommu_answer a;
} __attribute__((packed));

#define BENCH_XDP_FRAMES 64

struct bench_xdp_ctx {
	int fd;
	unsigned repeat;
	struct bench_xdp_frame in[BENCH_XDP_FRAMES], out;
};

static int xdp_run(struct bench_xdp_ctx *x, unsigned f, unsigned repeat, uint32_t *retval,
		   uint64_t *kernel_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = &x->in[f], .data_size_in = sizeof(x->in[f]),
		    .data_out = &x->out, .data_size_out = sizeof(x->out), .repeat = repeat);

	if (bpf_prog_test_run_opts(x->fd, &o))
		return -errno;
	*retval = o.retval;
	*kernel_ns += (uint64_t)o.duration * repeat; /* duration: mean ns per repetition */
	return 0;
}

static uint64_t run_xdp(struct bench_job *j, size_t ops)
{
	struct bench_xdp_ctx *x = j->ctx;
	uint64_t sum = 0;
	uint32_t ret;

	for (size_t i = 0; i < ops; i++) {
		if (xdp_run(x, (unsigned)(j->cursor++ % BENCH_XDP_FRAMES), x->repeat, &ret, &j->kernel_ns))
			bench_fail("XDP BPF_PROG_TEST_RUN: %s", strerror(errno));
		sum += x->out.a.pa + ret;
	}
	return sum;
}

/*
 * Timed by the kernel (test_run's duration: the program runs back to back, `repeat` times per
 * call): the wall clock would add the test-run set-up of each call (with repeat > 1 the kernel
 * swaps the XDP dispatcher in and out, hundreds of microseconds), nothing a frame pays.
 */
static void run_xdp_lookup(struct bench_ctx *c)
{
	struct bench_world *w = c->w;
	struct bench_xdp_ctx *x = bench_calloc(1, sizeof(*x));
	struct bench_job j = { .run = run_xdp, .ctx = x, .kernel_clock = true };
	struct bench_stats st;
	char note[64];
	uint64_t kns = 0;
	uint32_t ret;

	x->fd = viommu_fastpath_xdp_fd(w->fp);
	x->repeat = opt.mode == BENCH_FULL ? 1u << 16 : 1u << 13;
	j.per_op = x->repeat;
	for (unsigned f = 0; f < BENCH_XDP_FRAMES; f++) {
		struct viommu_answer a;

		x->in[f].eth.h_proto = htons(0x88b5);
		x->in[f].q = c->qs.q[f];
		if (xdp_run(x, f, 1, &ret, &kns))
			bench_fail("XDP BPF_PROG_TEST_RUN: %s", strerror(errno));
		if (ret != XDP_TX)
			bench_fail("xdp_lookup: action %u for a mapped IOVA", ret);
		memcpy(&a, &x->out.a, sizeof(a)); /* the frame is packed: no pointer into it */
		check_answer("viommu (XDP)", "xdp_lookup", &c->qs.q[f], &c->qs.want[f], &a, true);
	}
	bench_measure_group(&j, 1, &st);
	snprintf(note, sizeof(note), "kernel-timed, repeat %u/frame, 64 frames", x->repeat);
	row_add("xdp_lookup", size_names[w->spec.size], w->spec.extents, 1, "viommu", "xdp", &st, note);
	row_print(&rows[nrows - 1]);
	free(x);
}

/* ---- map_unmap: MAP+UNMAP pairs into the world's gaps ---- */

/* A set of gap pages to MAP and UNMAP, as wire requests and as extents, pre-built so that only
 * the requests themselves are timed. */
struct bench_mu {
	struct bench_world *w;
	struct bench_wire_pair *wire;
	struct bench_extent *pages;
	size_t n;
};

struct bench_mu_job {
	struct bench_mu *m;
	struct viommu_device *dev;
};

static uint64_t run_mu_device(struct bench_job *j, size_t ops)
{
	struct bench_mu_job *mj = j->ctx;
	struct bench_mu *m = mj->m;
	uint64_t sum = 0;

	for (size_t i = 0; i < ops; i++) {
		const struct bench_wire_pair *p = &m->wire[j->cursor++ % m->n];
		uint8_t s1 = req_send(mj->dev, p->map, sizeof(p->map));
		uint8_t s2 = req_send(mj->dev, p->unmap, sizeof(p->unmap));

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
static void mu_pages(struct bench_mu *m, struct bench_world *w, size_t want, bool hot, uint64_t seed)
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

static void mu_free(struct bench_mu *m)
{
	free(m->pages);
	free(m->wire);
	memset(m, 0, sizeof(*m));
}

struct bench_mu_scn {
	struct viommu_device *store; /* store-only twin of the world (viommu_store rows) */
	struct bench_mu set[2]; /* random, hot */
};

static const char *const mu_patterns[] = { "random", "hot" };

static int setup_mu(struct bench_ctx *c)
{
	struct bench_mu_scn *m;

	if (!c->w->ngaps)
		return -1;
	m = bench_calloc(1, sizeof(*m));
	mu_pages(&m->set[0], c->w, 4096, false, 0x3003);
	mu_pages(&m->set[1], c->w, 16, true, 0x3004);
	m->store = world_store_device(c->w);
	qset_make(&c->qs, c->w, Q_HIT, opt.nq, 0x4004);
	c->priv = m;
	return 0;
}

static void teardown_mu(struct bench_ctx *c)
{
	struct bench_mu_scn *m = c->priv;

	viommu_device_free(m->store);
	mu_free(&m->set[0]);
	mu_free(&m->set[1]);
	free(m);
	qset_free(&c->qs);
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
			uint8_t s;

			if (impl == I_VIOMMU)
				s = req_send(dev, step ? m->wire[i].unmap : m->wire[i].map,
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
				bench_fail("map_unmap: %s refused step %d for page 0x%llx", impl_names[impl], step,
					   (unsigned long long)x->start);
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
			}
			if (impl == I_VIOMMU) {
				viommu_device_answer(dev, &q, &got);
				check_answer(dev == w->dev ? "viommu (store)" : "viommu_store", "map_unmap", &q, &want, &got, true);
				if (dev == w->dev) {
					viommu_reader_translate(w->rd, &q, &got);
					check_answer("viommu", "map_unmap", &q, &want, &got, true);
				}
			} else {
				impl_translate(impl, w, &q, &got);
				check_answer(impl_names[impl], "map_unmap", &q, &want, &got, true);
			}
		}
	}
}

static void run_map_unmap(struct bench_ctx *c)
{
	static uint64_t (*const fn[])(struct bench_job *, size_t) = { run_mu_device, run_mu_gtree,
								       run_mu_itree, run_mu_slist };
	struct bench_mu_scn *m = c->priv;
	struct bench_world *w = c->w;

	for (int pat = 0; pat < 2; pat++) {
		/* job 0: the store alone (no fast path), then viommu and the peers */
		struct bench_mu_job mj[1 + I_COUNT];
		struct bench_job j[1 + I_COUNT];
		struct bench_stats st[1 + I_COUNT];

		for (int k = 0; k <= I_COUNT; k++) {
			int impl = k ? k - 1 : I_VIOMMU;

			mj[k] = (struct bench_mu_job){ &m->set[pat], k ? w->dev : m->store };
			j[k] = (struct bench_job){ .run = fn[impl], .ctx = &mj[k], .per_op = 1 };
			mu_verify(&m->set[pat], impl, mj[k].dev);
		}
		bench_measure_group(j, 1 + I_COUNT, st);
		for (int k = 0; k <= I_COUNT; k++) {
			int impl = k ? k - 1 : I_VIOMMU;
			char note[64];

			/* The pairs left every structure as it was: each still answers like the store. */
			if (k)
				impl_verify(impl, w, "map_unmap", &c->qs, impl_nq(impl, w, c->qs.n));
			if (impl == I_ITREE && w->n <= (1u << 16) && bench_itree_check(w->itree))
				bench_fail("map_unmap: itree invariants broken by insert/remove");
			snprintf(note, sizeof(note), "%zu pages; %s", m->set[pat].n,
				 !k ? "wire requests, no fast path" :
				 k == 1 ? (w->strict ? "wire requests, strict fast path" : "wire requests, lazy fast path") :
				 impl == I_GTREE ? "mutex" : impl == I_SLIST ? "rwlock" : "no lock");
			row_add("map_unmap", size_names[w->spec.size], w->spec.extents, 1,
				k ? impl_names[impl] : "viommu_store", mu_patterns[pat], &st[k], note);
			row_print(&rows[nrows - 1]);
		}
	}
}

/* ---- grace_period: a MAP+UNMAP pair, strict (W5 per UNMAP) vs lazy ---- */

struct bench_grace {
	struct bench_world *w[4]; /* lazy, strict, strict + reader_fence, strict + bpf_grace */
	struct bench_mu set[4];
	unsigned nw;
};

static const char *const grace_names[] = { "lazy", "strict", "strict_fence", "strict_bpf" };

static int setup_grace(struct bench_ctx *c)
{
	struct bench_grace *g = bench_calloc(1, sizeof(*g));
	struct bench_world_spec spec = { BENCH_4K, opt.mode == BENCH_SMOKE ? 256 : 1024 };

	/* bpf_grace waits for an RCU grace period per UNMAP (milliseconds): full suite only. */
	g->nw = opt.mode == BENCH_FULL ? 4 : 3;
	for (unsigned i = 0; i < g->nw; i++) {
		struct viommu_fastpath_opts o = { .lazy = i == 0, .reader_fence = i == 2, .bpf_grace = i == 3,
						  .overcommit = true };

		g->w[i] = world_build(spec, &o, false);
		if (!g->w[i])
			bench_fail("grace_period: viommu_fastpath_new: %s", strerror(errno));
		mu_pages(&g->set[i], g->w[i], 1024, false, 0x5005);
	}
	c->priv = g;
	return 0;
}

static void teardown_grace(struct bench_ctx *c)
{
	struct bench_grace *g = c->priv;

	for (unsigned i = 0; i < g->nw; i++) {
		world_free(g->w[i]);
		mu_free(&g->set[i]);
	}
	free(g);
}

static uint64_t run_mu_batch(struct bench_job *j, size_t ops)
{
	struct bench_mu_job *mj = j->ctx;
	uint64_t sum;

	/* One queue kick of 64 pairs: observers sync (one grace period) at batch end. */
	viommu_device_batch_begin(mj->dev);
	sum = run_mu_device(j, ops * BENCH_BATCH);
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

	sum = g->batched ? run_mu_batches(j, ops) : run_mu_device(j, ops);
	g->gp += g->vm->grace_periods - gp0;
	g->gp_ns += g->vm->grace_ns_total - ns0;
	return sum;
}

static void run_grace(struct bench_ctx *c)
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
		row_add("grace_period", "4k", g->w[i]->spec.extents, 1, "viommu", variant, &st[k], note);
		row_print(&rows[nrows - 1]);
	}
	/* After all that churn each fast path still answers like the store. */
	for (unsigned i = 0; i < g->nw; i++) {
		struct bench_qset s;

		qset_make(&s, g->w[i], Q_HIT, 1024, 0x6006);
		impl_verify(I_VIOMMU, g->w[i], "grace_period", &s, s.n);
		qset_free(&s);
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

static void *churn_reader_main(void *arg)
{
	struct bench_churn_reader *cr = arg;
	struct viommu_reader *r = viommu_reader_open(cr->fp);
	const size_t mask = cr->qs->n - 1;
	struct viommu_answer a;
	uint64_t t0, sum = 0;

	if (cr->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cr->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	pthread_barrier_wait(cr->start);
	if (!r) {
		cr->bad = ~0ull;
		__atomic_add_fetch(cr->done, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	t0 = now_ns();
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
	cr->ns = now_ns() - t0;
	__atomic_add_fetch(cr->done, 1, __ATOMIC_RELEASE);
	bench_sink += sum;
	viommu_reader_close(r);
	return NULL;
}

struct bench_churn {
	struct bench_world *w;
	struct bench_mu set;
	bool fence; /* grace periods by reader fences (viommu_fastpath_opts.reader_fence) */
};

static int setup_churn_mode(struct bench_ctx *c, bool fence)
{
	struct bench_churn *ch = bench_calloc(1, sizeof(*ch));
	struct bench_world_spec spec = { BENCH_4K, opt.mode == BENCH_SMOKE ? 1024 : 65536 };
	/* strict: readers meet grace periods */
	struct viommu_fastpath_opts o = { .lazy = false, .reader_fence = fence, .overcommit = true };

	ch->fence = fence;
	ch->w = world_build(spec, &o, false);
	if (!ch->w)
		bench_fail("churn_readers: viommu_fastpath_new: %s", strerror(errno));
	mu_pages(&ch->set, ch->w, 4096, false, 0x7007);
	qset_make(&c->qs, ch->w, Q_HIT, opt.nq, 0x8008);
	c->w = ch->w;
	c->priv = ch;
	return 0;
}

static int setup_churn(struct bench_ctx *c)
{
	return setup_churn_mode(c, false);
}

static int setup_churn_fence(struct bench_ctx *c)
{
	return setup_churn_mode(c, true);
}

static void teardown_churn(struct bench_ctx *c)
{
	struct bench_churn *ch = c->priv;

	world_free(ch->w);
	mu_free(&ch->set);
	free(ch);
	qset_free(&c->qs);
	c->w = NULL;
}

/* One repetition: @nthreads readers of @ops lookups each; the writer churns if @churn.
 * Returns the readers' mean ns per lookup; *pairs_s: the writer's MAP+UNMAP pairs per second. */
static double churn_rep(struct bench_ctx *c, unsigned nthreads, size_t ops, bool churn, double *pairs_s,
			uint64_t *retries)
{
	struct bench_churn *ch = c->priv;
	struct bench_churn_reader cr[2];
	struct bench_mu_job mj = { &ch->set, ch->w->dev };
	struct bench_job j = { .run = run_mu_device, .ctx = &mj, .per_op = 1 };
	pthread_barrier_t start;
	unsigned done = 0;
	uint64_t pairs = 0, t0;
	double ns = 0;

	pthread_barrier_init(&start, NULL, nthreads + 1);
	for (unsigned i = 0; i < nthreads; i++) {
		cr[i] = (struct bench_churn_reader){
			.fp = ch->w->fp, .qs = &c->qs, .start = &start, .ops = ops, .off = i * 7919,
			.cpu = meta.ncpu > 1 ? (int)((meta.ncpu - 1 - i) % meta.ncpu) : -1, .done = &done,
		};
		if (pthread_create(&cr[i].th, NULL, churn_reader_main, &cr[i]))
			bench_fail("pthread_create: %s", strerror(errno));
	}
	pthread_barrier_wait(&start);
	t0 = now_ns();
	if (churn) {
		/* The writer: MAP+UNMAP pairs of gap pages (never the queried extents) until the
		 * readers are done, each UNMAP with its strict grace period. --smoke's runs are too
		 * short for the writer to get a CPU beside two readers: it churns at least 256 pairs,
		 * so the readers' answers are still checked against a moving writer. */
		const uint64_t min_pairs = opt.mode == BENCH_SMOKE ? 256 : 0;

		while (__atomic_load_n(&done, __ATOMIC_ACQUIRE) < nthreads || pairs < min_pairs) {
			bench_sink += run_mu_device(&j, 16);
			pairs += 16;
		}
	}
	*pairs_s = pairs * 1e9 / (double)(now_ns() - t0);
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

static void run_churn(struct bench_ctx *c)
{
	struct bench_churn *ch = c->priv;
	const struct viommu_meta *vm = viommu_fastpath_view(ch->w->fp)->meta;
	unsigned reps = opt.reps < 64 ? opt.reps : 64;
	double pairs_s;
	size_t ops;
	uint64_t retries = 0;

	/* Size one repetition to opt.rep_ns from a single quiet reader. */
	{
		double ns = churn_rep(c, 1, c->qs.n, false, &pairs_s, &retries);

		ops = (size_t)(opt.rep_ns / (ns > 1 ? ns : 1));
		if (ops < c->qs.n)
			ops = c->qs.n;
	}
	for (unsigned nthreads = 1; nthreads <= 2; nthreads++) {
		double ns[2][64], ps[64];
		struct bench_stats st[2];
		uint64_t gp = 0, gns = 0, rt[2] = { 0, 0 };

		churn_rep(c, nthreads, ops / 4, true, &pairs_s, &retries); /* warm-up */
		/* Quiet and churn repetitions alternate, so load drifting on the machine hits both. */
		for (unsigned k = 0; k < reps; k++) {
			uint64_t gp0 = vm->grace_periods, gns0 = vm->grace_ns_total;

			ns[0][k] = churn_rep(c, nthreads, ops, false, &pairs_s, &rt[0]);
			ns[1][k] = churn_rep(c, nthreads, ops, true, &ps[k], &rt[1]);
			gp += vm->grace_periods - gp0;
			gns += vm->grace_ns_total - gns0;
		}
		stats_of(ns[0], reps, ops, &st[0]);
		stats_of(ns[1], reps, ops, &st[1]);
		qsort(ps, reps, sizeof(ps[0]), cmp_double);
		for (int churn = 0; churn < 2; churn++) {
			double loss = (st[1].median - st[0].median) / st[0].median * 100;
			struct bench_row *r;
			char note[64];

			if (!churn)
				snprintf(note, sizeof(note), "enter/translate/exit per lookup");
			else
				snprintf(note, sizeof(note), "%+.1f%%; writer %.0fK pairs/s, grace %.1f us%s", loss,
					 ps[reps / 2] / 1e3, gp ? gns / 1e3 / gp : 0.0,
					 nthreads + 1 > (unsigned)meta.ncpu ? "; 3 thr/2 CPU" : "");
			r = row_add("churn_readers", "4k", ch->w->spec.extents, nthreads, "viommu",
				    ch->fence ? (churn ? "churn_fence" : "quiet_fence") : (churn ? "churn" : "quiet"),
				    &st[churn], note);
			if (churn) {
				r->loss_pct = loss;
				r->extra = ps[reps / 2];
			}
			if (rt[churn])
				snprintf(r->note + strlen(r->note), sizeof(r->note) - strlen(r->note),
					 "; %llu retries", (unsigned long long)rt[churn]);
			row_print(r);
		}
	}
}

/* ---------------------------------------------------------------- the table of scenarios ---- */

struct bench_scenario {
	const char *name;
	/* The worlds it runs in; NULL: standalone (its setup builds what it needs). */
	bool (*wants)(const struct bench_world_spec *spec);
	int (*setup)(struct bench_ctx *c); /* non-zero: skip this world */
	void (*run)(struct bench_ctx *c); /* measures and adds rows */
	void (*teardown)(struct bench_ctx *c);
};

static const struct bench_scenario scenarios[] = {
	{ "lookup_hot", world_4k, setup_hot, run_lookup_hot, teardown_qset },
	{ "lookup_random", world_any, setup_random, run_lookup_random, teardown_qset },
	{ "lookup_miss", world_4k, setup_miss, run_lookup_miss, teardown_qset },
	{ "lookup_bulk64", world_4k, setup_random, run_lookup_bulk, teardown_qset },
	{ "lookup_identity", world_ident, setup_random, run_lookup_identity, teardown_qset },
	{ "bpf_lookup", world_bpf, setup_bpf, run_bpf_lookup, teardown_qset },
	{ "xdp_lookup", world_4k, setup_random, run_xdp_lookup, teardown_qset },
	{ "map_unmap", world_4k, setup_mu, run_map_unmap, teardown_mu },
	{ "churn_readers", NULL, setup_churn, run_churn, teardown_churn },
	{ "churn_readers", NULL, setup_churn_fence, run_churn, teardown_churn },
	{ "grace_period", NULL, setup_grace, run_grace, teardown_grace },
};
#define BENCH_NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static const struct bench_world_spec suite_full[] = {
	{ BENCH_4K, 1024 }, { BENCH_4K, 65536 }, { BENCH_4K, 1u << 20 },
	{ BENCH_2M, 1024 }, { BENCH_2M, 65536 }, { BENCH_2M, 1u << 20 },
	{ BENCH_MIXED, 1024 }, { BENCH_MIXED, 65536 }, { BENCH_MIXED, 1u << 20 },
	{ BENCH_IDENT, 1 },
};
static const struct bench_world_spec suite_quick[] = {
	{ BENCH_4K, 1024 }, { BENCH_4K, 65536 }, { BENCH_4K, 1u << 20 },
	{ BENCH_2M, 65536 }, { BENCH_MIXED, 65536 }, { BENCH_IDENT, 1 },
};
static const struct bench_world_spec suite_smoke[] = {
	{ BENCH_4K, 1024 }, { BENCH_MIXED, 1024 }, { BENCH_IDENT, 1 },
};

static bool scenario_selected(const struct bench_scenario *s)
{
	return !opt.filter || strstr(s->name, opt.filter);
}

/* ---------------------------------------------------------------- results ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, const char *key, double v, const char *sep)
{
	if (isnan(v) || isinf(v))
		fprintf(f, "\"%s\": null%s", key, sep);
	else
		fprintf(f, "\"%s\": %.6g%s", key, v, sep);
}

static int json_write(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "{\n  \"meta\": {\"cpu\": ");
	json_str(f, meta.cpu);
	fprintf(f, ", \"kernel\": ");
	json_str(f, meta.kernel);
	fprintf(f, ", \"commit\": ");
	json_str(f, meta.commit);
	fprintf(f, ", \"command\": ");
	json_str(f, opt.command);
	fprintf(f, ", \"date\": ");
	json_str(f, meta.date);
	fprintf(f, ", \"host\": ");
	json_str(f, meta.host);
	fprintf(f, ", \"mode\": \"%s\", \"cpus\": %ld, \"reps\": %u},\n  \"results\": [\n",
		mode_names[opt.mode], meta.ncpu, opt.reps);
	for (size_t i = 0; i < nrows; i++) {
		const struct bench_row *r = &rows[i];

		fprintf(f, "    {\"scenario\": ");
		json_str(f, r->scenario);
		fprintf(f, ", \"impl\": ");
		json_str(f, r->impl);
		fprintf(f, ", \"extents\": %llu, \"threads\": %u, ", (unsigned long long)r->extents, r->threads);
		json_num(f, "ns_median", r->ns_median, ", ");
		json_num(f, "ns_p10", r->ns_p10, ", ");
		json_num(f, "ns_p90", r->ns_p90, ", ");
		json_num(f, "ops_per_s", r->ops_per_s, ", ");
		fprintf(f, "\"size\": ");
		json_str(f, r->size);
		fprintf(f, ", \"variant\": ");
		json_str(f, r->variant);
		fprintf(f, ", ");
		json_num(f, "ratio_vs_viommu", row_ratio(r), ", ");
		if (!isnan(r->loss_pct)) {
			json_num(f, "loss_pct", r->loss_pct, ", ");
			json_num(f, "writer_pairs_per_s", r->extra, ", ");
		}
		fprintf(f, "\"reps\": %u, \"ops_per_rep\": %llu, \"note\": ", r->reps, (unsigned long long)r->ops);
		json_str(f, r->note);
		fprintf(f, "}%s\n", i + 1 < nrows ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	return fclose(f) ? -errno : 0;
}

static int mkdir_p(const char *dir)
{
	char p[512];

	snprintf(p, sizeof(p), "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(p, 0755) && errno != EEXIST ? -errno : 0;
}

/* bench/plot.gp: from the source tree we run in, or beside the binary's tree. */
static bool plot_script(char *path, size_t len)
{
	char exe[512];
	ssize_t n;

	snprintf(path, len, "bench/plot.gp");
	if (!access(path, R_OK))
		return true;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		char *slash;

		exe[n] = 0;
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			snprintf(path, len, "%s/../bench/plot.gp", exe);
			if (!access(path, R_OK))
				return true;
		}
	}
	return false;
}

/* ns/lookup vs extents (log x), one line per implementation: lookup_random over 4 KiB extents. */
static void plot_write(const char *png, const char *latest)
{
	char script[600], dat[] = "/tmp/viommu-bench-XXXXXX", cmd[2048];
	int fd;
	FILE *f;

	if (system("command -v gnuplot >/dev/null 2>&1")) {
		printf("# note: gnuplot not found (Debian: gnuplot-nox); no plot written\n");
		return;
	}
	if (!plot_script(script, sizeof(script))) {
		printf("# note: bench/plot.gp not found; no plot written\n");
		return;
	}
	fd = mkstemp(dat);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		printf("# note: cannot write the plot data: %s\n", strerror(errno));
		return;
	}
	for (int impl = 0; impl < I_COUNT; impl++) {
		fprintf(f, "%s\n", impl_names[impl]); /* block header: the line's title */
		for (size_t i = 0; i < nrows; i++) {
			const struct bench_row *r = &rows[i];

			if (!strcmp(r->scenario, "lookup_random") && !strcmp(r->size, "4k") &&
			    !strcmp(r->impl, impl_names[impl]))
				fprintf(f, "%llu %.3f %.3f %.3f\n", (unsigned long long)r->extents, r->ns_median,
					r->ns_p10, r->ns_p90);
		}
		fprintf(f, "\n\n");
	}
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "gnuplot -e \"datafile='%s'; outfile='%s'; subtitle='%s, %s, commit %s'\" '%s' 2>&1",
		 dat, png, meta.cpu, mode_names[opt.mode], meta.commit, script);
	if (system(cmd)) {
		printf("# note: gnuplot failed; no plot written\n");
	} else {
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", png, latest);
		if (system(cmd))
			printf("# note: cannot copy the plot to %s\n", latest);
		else
			printf("# plot: %s (and %s)\n", png, latest);
	}
	unlink(dat);
}

static void results_write(void)
{
	char dir[512], base[700], path[800], latest[800];
	const char *suffix = opt.mode == BENCH_FULL ? "" : opt.mode == BENCH_QUICK ? "-quick" : "-smoke";
	int err;

	if (opt.out) {
		snprintf(dir, sizeof(dir), "%s", opt.out);
	} else if (opt.mode == BENCH_SMOKE) {
		/* make test runs --smoke: never dirty the source tree */
		const char *tmp = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/viommu-bench-smoke", tmp && *tmp ? tmp : "/tmp");
	} else {
		snprintf(dir, sizeof(dir), "bench/results");
	}
	if ((err = mkdir_p(dir))) {
		printf("# note: cannot create %s: %s; no files written\n", dir, strerror(-err));
		return;
	}
	snprintf(base, sizeof(base), "%s/%s-%s%s", dir, meta.host, meta.day, suffix);
	snprintf(path, sizeof(path), "%s.json", base);
	snprintf(latest, sizeof(latest), "%s/latest.json", dir);
	if ((err = json_write(path)) || (err = json_write(latest)))
		bench_fail("writing the results: %s", strerror(-err));
	printf("# results: %s (and %s)\n", path, latest);
	if (opt.plot) {
		snprintf(path, sizeof(path), "%s.png", base);
		snprintf(latest, sizeof(latest), "%s/latest.png", dir);
		plot_write(path, latest);
	}
}

/* The targets: reported, never asserted (timings vary with the machine). */
static const struct bench_row *row_find(const char *scenario, const char *size, const char *impl,
					const char *variant, uint64_t extents)
{
	const struct bench_row *best = NULL;

	for (size_t i = 0; i < nrows; i++) {
		const struct bench_row *r = &rows[i];

		if (!strcmp(r->scenario, scenario) && !strcmp(r->size, size) && !strcmp(r->impl, impl) &&
		    (!variant || !strcmp(r->variant, variant)) && (extents ? r->extents == extents : (!best || r->extents > best->extents)))
			best = r;
	}
	return best;
}

static void target(const char *what, const struct bench_row *r, double value, bool met)
{
	char ext[24];

	if (!r) {
		printf("  %-44s not measured in this run\n", what);
		return;
	}
	printf("  %-44s %10.2f  %-6s (%s %s %s at %s extents)\n", what, value, met ? "met" : "MISSED",
	       r->scenario, r->impl, r->variant, fmt_count(r->extents, ext, sizeof(ext)));
}

static void targets_print(void)
{
	const struct bench_row *r;
	static const struct {
		const char *impl;
		double min;
	} peers[] = { { "gtree", 20 }, { "itree", 10 }, { "sorted_list", 50 } };

	printf("\ntargets (largest world measured)\n");
	r = row_find("lookup_hot", "4k", "viommu", NULL, 0);
	target("hot lookup <= 3 ns", r, r ? r->ns_median : 0, r && r->ns_median <= 3);
	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++) {
		char what[64];

		r = row_find("lookup_random", "4k", peers[i].impl, NULL, 0);
		snprintf(what, sizeof(what), "random lookup >= %.0fx faster than %s", peers[i].min, peers[i].impl);
		target(what, r, r ? row_ratio(r) : 0, r && row_ratio(r) >= peers[i].min);
	}
	/* BPF at the smallest world (cache-resident: the cost of the program and the test run) and
	 * at the largest (the memory behind it). */
	for (int big = 0; big < 2; big++) {
		uint64_t ext = big ? 0 : 1024;

		r = row_find("bpf_lookup", "4k", "viommu", NULL, ext);
		target("BPF lookup <= 15 ns (64/run, amortised)", r, r ? r->ns_median : 0, r && r->ns_median <= 15);
		r = row_find("bpf_lookup", "4k", "bpf_hash", NULL, ext);
		target("BPF lookup >= 2x faster than bpf_hash", r, r ? row_ratio(r) : 0, r && row_ratio(r) >= 2);
	}
	for (int pat = 0; pat < 2; pat++) {
		char what[64];

		r = row_find("map_unmap", "4k", "viommu", mu_patterns[pat], 0);
		snprintf(what, sizeof(what), "MAP+UNMAP >= 5M pairs/s, %s pages (M/s)", mu_patterns[pat]);
		target(what, r, r ? r->ops_per_s / 1e6 : 0, r && r->ops_per_s >= 5e6);
	}
}

/* ---------------------------------------------------------------- main ---- */

static void usage(FILE *f)
{
	fprintf(f, "usage: viommu-bench [--quick | --smoke] [--filter=SUBSTR] [--out=DIR] [--no-plot]\n"
		   "  (default)        the standard suite (results in bench/results/)\n"
		   "  --quick          a reduced suite, under a minute\n"
		   "  --smoke          a tiny run: every correctness check, no timing targets;\n"
		   "                   files go to $TMPDIR/viommu-bench-smoke unless --out is given\n"
		   "  --filter=SUBSTR  only scenarios whose name contains SUBSTR\n"
		   "  --out=DIR        where the JSON and the plot go\n"
		   "  --no-plot        no PNG\n"
		   "scenarios:");
	for (size_t i = 0; i < BENCH_NSCEN; i++)
		fprintf(f, " %s", scenarios[i].name);
	fprintf(f, "\n");
}

static void parse_args(int argc, char **argv)
{
	size_t len = 0;

	opt.plot = true;
	for (int i = 0; i < argc; i++)
		len += (size_t)snprintf(opt.command + len, len < sizeof(opt.command) ? sizeof(opt.command) - len : 0,
					"%s%s", i ? " " : "", argv[i]);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick"))
			opt.mode = BENCH_QUICK;
		else if (!strcmp(a, "--smoke"))
			opt.mode = BENCH_SMOKE;
		else if (!strncmp(a, "--filter=", 9))
			opt.filter = a + 9;
		else if (!strncmp(a, "--out=", 6))
			opt.out = a + 6;
		else if (!strcmp(a, "--no-plot"))
			opt.plot = false;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		} else {
			usage(stderr);
			exit(2);
		}
	}
	switch (opt.mode) {
	case BENCH_FULL:
		opt.reps = 11;
		opt.rep_ns = 20e6;
		opt.nq = 1u << 16;
		break;
	case BENCH_QUICK:
		opt.reps = 7;
		opt.rep_ns = 4e6;
		opt.nq = 1u << 16;
		break;
	case BENCH_SMOKE:
		opt.reps = 3;
		opt.rep_ns = 2e5;
		opt.nq = 1u << 10;
		opt.plot = false;
		break;
	}
}

int main(int argc, char **argv)
{
	const struct bench_world_spec *suite;
	size_t nsuite;
	uint64_t t0 = now_ns();

	parse_args(argc, argv);
	meta_collect();
	suite = opt.mode == BENCH_FULL ? suite_full : opt.mode == BENCH_QUICK ? suite_quick : suite_smoke;
	nsuite = opt.mode == BENCH_FULL ? sizeof(suite_full) / sizeof(suite_full[0]) :
		 opt.mode == BENCH_QUICK ? sizeof(suite_quick) / sizeof(suite_quick[0]) :
		 sizeof(suite_smoke) / sizeof(suite_smoke[0]);
	libbpf_set_print(NULL); /* the kernel's refusal is reported once, below */

	printf("# viommu-bench (%s): %u reps/job, %.1f ms/rep, %zu queries/set\n", mode_names[opt.mode],
	       opt.reps, opt.rep_ns / 1e6, opt.nq);
	printf("# cpu     %s (%ld online)\n# kernel  %s\n# commit  %s\n# command %s\n# date    %s\n",
	       meta.cpu, meta.ncpu, meta.kernel, meta.commit, opt.command, meta.date);
	printf("# ns/op: median of the repetitions (p10, p90); 'vs viommu' = peer ns / viommu ns\n");
	row_print_header();
	if (opt.mode != BENCH_SMOKE) {
		/* Spin a moment first: the first job should not pay for a CPU waking up. */
		uint64_t until = now_ns() + 200000000ull, x = 1;

		while (now_ns() < until)
			x = x * 6364136223846793005ull + 1;
		bench_sink += x;
	}

	for (size_t wi = 0; wi < nsuite; wi++) {
		struct viommu_fastpath_opts lazy = { .lazy = true };
		struct bench_world *w;
		bool any = false;

		for (size_t s = 0; s < BENCH_NSCEN; s++)
			any |= scenarios[s].wants && scenario_selected(&scenarios[s]) && scenarios[s].wants(&suite[wi]);
		if (!any)
			continue;
		/* Lookups do not care; map_unmap measures the structures, not grace periods
		 * (grace_period does). */
		w = world_build(suite[wi], &lazy, true);
		if (!w) {
			int err = errno;

			printf("# skipped: the kernel refuses the fast path's BPF objects: %s\n", strerror(err));
			if (fp_refused(err) && opt.mode == BENCH_SMOKE)
				return 0;
			bench_fail("viommu_fastpath_new: %s", strerror(err));
		}
		for (size_t s = 0; s < BENCH_NSCEN; s++) {
			const struct bench_scenario *sc = &scenarios[s];
			struct bench_ctx c = { .w = w };

			if (!sc->wants || !scenario_selected(sc) || !sc->wants(&suite[wi]))
				continue;
			if (sc->setup(&c)) {
				printf("# %s: skipped for this world\n", sc->name);
				continue;
			}
			sc->run(&c);
			sc->teardown(&c);
		}
		world_free(w);
	}
	for (size_t s = 0; s < BENCH_NSCEN; s++) {
		const struct bench_scenario *sc = &scenarios[s];
		struct bench_ctx c = { 0 };

		if (sc->wants || !scenario_selected(sc))
			continue;
		if (sc->setup(&c))
			continue;
		sc->run(&c);
		sc->teardown(&c);
	}
	if (opt.mode != BENCH_SMOKE)
		targets_print();
	results_write();
	printf("# %zu rows, every implementation checked against the store, %.1f s\n", nrows,
	       (now_ns() - t0) / 1e9);
	free(rows);
	return 0;
}
