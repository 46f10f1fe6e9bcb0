/* SPDX-License-Identifier: MIT */
/*
 * The benchmark harness: the options, the timing of jobs, the rows of results and the machine
 * they were measured on (harness.c); writing the rows out as JSON and a plot (results.c).
 *
 * A job is timed as Linux selftests/bpf's benches are: warmed up, calibrated to a time per
 * repetition (bench_opt.rep_ns), repeated (bench_opt.reps), reported as the median and p10/p90
 * of ns per operation. Jobs compared with each other are timed together, their repetitions
 * interleaved (bench_measure_group).
 *
 * Concurrency: the main thread only, except bench_sink (reader threads add to it too).
 * Errors: bench_fail() reports and exits with status 1; nothing here returns an error.
 */
#ifndef VIOMMU_BENCH_HARNESS_H
#define VIOMMU_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "viommu_abi.h"

/* ---- options ---- */

enum bench_mode { BENCH_FULL, BENCH_QUICK, BENCH_SMOKE };

struct bench_opts {
	enum bench_mode mode;
	const char *filter;
	const char *world; /* --world=SIZE[:EXTENTS]: only that world ("2m", "4k:1048576") */
	const char *impls; /* --impls=A,B: the lookup scenarios time only these (profiling) */
	const char *out;
	bool plot;
	unsigned reps; /* timed repetitions per job */
	double rep_ns; /* target duration of one repetition */
	uint64_t fixed_ops; /* --ops=N: N operations per repetition, no calibration (callgrind) */
	size_t nq; /* queries per query set (a power of two, multiple of BENCH_BATCH) */
	char command[1024];
};

extern struct bench_opts bench_opt;
/* Is implementation @name in --impls (or is there no --impls)? */
bool bench_impl_wanted(const char *name);
extern const char *const bench_mode_names[3];
extern volatile uint64_t bench_sink; /* every timed loop's result lands here: no dead code */

void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *bench_calloc(size_t n, size_t sz); /* never NULL: fails the run instead */
const char *bench_fmt_count(uint64_t n, char *buf, size_t len); /* 1024 -> "1K" */

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: fast, and every world/query set is reproducible from its seed. */
static inline uint64_t bench_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- timing ---- */

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

#define BENCH_REPS_MAX 64
struct bench_stats {
	double median, p10, p90;
	uint64_t ops;
	unsigned reps;
	double rep[BENCH_REPS_MAX]; /* each repetition's ns per operation, in the order timed */
};

/* Time @n (at most 16) jobs that are compared with each other; their stats into @st. */
void bench_measure_group(struct bench_job *j, unsigned n, struct bench_stats *st);
/* Fills @st from @ns (@reps values, at most BENCH_REPS_MAX, in the order timed; sorted on
 * return): its median and p10/p90, and the values in their order. */
void bench_stats_of(double *ns, unsigned reps, uint64_t ops, struct bench_stats *st);
int bench_cmp_double(const void *a, const void *b); /* for qsort */

/* ---- rows ---- */

struct bench_row {
	char scenario[24], size[8], impl[16], variant[24], note[64];
	uint64_t extents;
	unsigned threads, reps;
	uint64_t ops; /* operations per repetition */
	double ns_median, ns_p10, ns_p90, ops_per_s;
	double rep[BENCH_REPS_MAX]; /* ns per operation of each repetition, in the order timed */
	double loss_pct; /* churn rows: reader slowdown vs quiet; NAN elsewhere */
	double extra; /* churn rows: writer MAP+UNMAP pairs/s; NAN elsewhere */
};

extern struct bench_row *bench_rows;
extern size_t bench_nrows;

/* Appends a row (valid until the next bench_row_add). */
struct bench_row *bench_row_add(const char *scenario, const char *size, uint64_t extents,
				unsigned threads, const char *impl, const char *variant,
				const struct bench_stats *st, const char *note);
/* Peer ns / viommu ns of the same scenario, size, extents, threads and variant; NAN if none. */
double bench_row_ratio(const struct bench_row *r);
/* The row of that scenario, size, impl (and @variant unless NULL) at @extents, or with the
 * most extents if @extents is 0; NULL if none. */
const struct bench_row *bench_row_find(const char *scenario, const char *size, const char *impl,
				       const char *variant, uint64_t extents);
void bench_row_print_header(void);
void bench_row_print(const struct bench_row *r);

/* ---- the machine ---- */

struct bench_meta {
	char cpu[128], kernel[256], commit[64], date[32], day[16], host[72];
	long ncpu;
};

extern struct bench_meta bench_machine;
void bench_meta_collect(void);

/* ---- results.c ---- */

/* The JSON (and, with bench_opt.plot, the PNG) into --out, bench/results or, for --smoke,
 * $TMPDIR/viommu-bench-smoke. */
void bench_results_write(void);

#endif
