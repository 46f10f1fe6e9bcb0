// SPDX-License-Identifier: MIT
/*
 * The harness (harness.h): options, timing (warm-up, calibration, interleaved repetitions,
 * median and p10/p90), the rows of results and the machine they come from.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define BENCH_OPS_MAX (1ull << 32)

/* ---------------------------------------------------------------- options, errors ---- */

struct bench_opts bench_opt;
const char *const bench_mode_names[3] = { "full", "quick", "smoke" };
volatile uint64_t bench_sink;

struct bench_row *bench_rows;
size_t bench_nrows;
static size_t rows_cap;

void bench_fail(const char *fmt, ...)
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

void *bench_calloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		bench_fail("out of memory (%zu x %zu B)", n, sz);
	return p;
}

const char *bench_fmt_count(uint64_t n, char *buf, size_t len)
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

int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double time_run(struct bench_job *j, size_t ops)
{
	uint64_t t0 = bench_now_ns(), k0 = j->kernel_ns, sum;

	sum = j->run(j, ops);
	bench_sink += sum;
	return j->kernel_clock ? (double)(j->kernel_ns - k0) : (double)(bench_now_ns() - t0);
}

void bench_stats_of(double *ns, unsigned reps, uint64_t ops, struct bench_stats *st)
{
	if (reps > BENCH_REPS_MAX)
		bench_fail("bench_stats_of: %u repetitions", reps);
	memcpy(st->rep, ns, reps * sizeof(ns[0]));
	qsort(ns, reps, sizeof(ns[0]), bench_cmp_double);
	st->median = reps % 2 ? ns[reps / 2] : (ns[reps / 2 - 1] + ns[reps / 2]) / 2;
	st->p10 = ns[(unsigned)floor(0.1 * (reps - 1))];
	st->p90 = ns[(unsigned)ceil(0.9 * (reps - 1))];
	st->ops = ops;
	st->reps = reps;
}

/* Operations for one repetition of bench_opt.rep_ns: grow until a run takes a tenth of it, then
 * scale (a slow peer gets few operations, never an unbounded run). Warms the job up. */
static uint64_t calibrate(struct bench_job *j)
{
	uint64_t ops = 1;
	double t;

	if (bench_opt.fixed_ops) {
		time_run(j, bench_opt.fixed_ops); /* the same warm-up */
		return bench_opt.fixed_ops;
	}
	for (;;) {
		t = time_run(j, ops);
		if (t >= bench_opt.rep_ns / 10 || ops >= BENCH_OPS_MAX)
			break;
		ops = ops * 4 < BENCH_OPS_MAX ? ops * 4 : BENCH_OPS_MAX;
	}
	if (t > 0) {
		double want = (double)ops * bench_opt.rep_ns / t;

		ops = want < 1 ? 1 : want > (double)BENCH_OPS_MAX ? BENCH_OPS_MAX : (uint64_t)want;
	}
	time_run(j, ops); /* warm-up at the final size: caches, branch predictors, TLB */
	return ops;
}

/*
 * Time @n jobs that are compared with each other: calibrate each, then bench_opt.reps rounds, each
 * round timing every job once. Interleaving the repetitions makes the ratios robust to the
 * machine's load drifting during the run (shared machines, VMs).
 */
bool bench_impl_wanted(const char *name)
{
	size_t len = strlen(name);

	for (const char *p = bench_opt.impls; p && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
		if (strcspn(p, ",") == len && !strncmp(p, name, len))
			return true;
	}
	return !bench_opt.impls;
}

void bench_measure_group(struct bench_job *j, unsigned n, struct bench_stats *st)
{
	unsigned reps = bench_opt.reps < BENCH_REPS_MAX ? bench_opt.reps : BENCH_REPS_MAX;
	double ns[16][BENCH_REPS_MAX];
	uint64_t ops[16];

	if (n > 16)
		bench_fail("bench_measure_group: %u jobs", n);
	for (unsigned k = 0; k < n; k++)
		ops[k] = calibrate(&j[k]);
	for (unsigned r = 0; r < reps; r++)
		for (unsigned k = 0; k < n; k++)
			ns[k][r] = time_run(&j[k], ops[k]) / ((double)ops[k] * j[k].per_op);
	for (unsigned k = 0; k < n; k++)
		bench_stats_of(ns[k], reps, ops[k], &st[k]);
}

/* ---------------------------------------------------------------- rows ---- */

struct bench_row *bench_row_add(const char *scenario, const char *size, uint64_t extents,
				unsigned threads, const char *impl, const char *variant,
				const struct bench_stats *st, const char *note)
{
	struct bench_row *r;

	if (bench_nrows == rows_cap) {
		rows_cap = rows_cap ? rows_cap * 2 : 64;
		bench_rows = realloc(bench_rows, rows_cap * sizeof(*bench_rows));
		if (!bench_rows)
			bench_fail("out of memory");
	}
	r = &bench_rows[bench_nrows++];
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
	memcpy(r->rep, st->rep, st->reps * sizeof(st->rep[0]));
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
	for (size_t i = 0; i < bench_nrows; i++) {
		const struct bench_row *v = &bench_rows[i];

		if (!strcmp(v->impl, "viommu") && !strcmp(v->scenario, r->scenario) &&
		    !strcmp(v->size, r->size) && v->extents == r->extents && v->threads == r->threads &&
		    !strcmp(v->variant, r->variant))
			return v;
	}
	return NULL;
}

double bench_row_ratio(const struct bench_row *r)
{
	const struct bench_row *v = row_ref(r);

	return v && v->ns_median > 0 ? r->ns_median / v->ns_median : NAN;
}

const struct bench_row *bench_row_find(const char *scenario, const char *size, const char *impl,
					const char *variant, uint64_t extents)
{
	const struct bench_row *best = NULL;

	for (size_t i = 0; i < bench_nrows; i++) {
		const struct bench_row *r = &bench_rows[i];

		if (!strcmp(r->scenario, scenario) && !strcmp(r->size, size) && !strcmp(r->impl, impl) &&
		    (!variant || !strcmp(r->variant, variant)) &&
		    (extents ? r->extents == extents : (!best || r->extents > best->extents)))
			best = r;
	}
	return best;
}

void bench_row_print_header(void)
{
	printf("%-16s %-6s %7s %3s %-12s %-18s %10s %10s %10s %10s %9s  %s\n", "scenario", "size",
	       "extents", "thr", "impl", "variant", "ns/op", "p10", "p90", "Mops/s", "vs viommu", "note");
}

void bench_row_print(const struct bench_row *r)
{
	char ext[24], ratio[16] = "", ns[3][16];
	double x = bench_row_ratio(r);
	const double v[3] = { r->ns_median, r->ns_p10, r->ns_p90 };

	if (!isnan(x))
		snprintf(ratio, sizeof(ratio), "x%.1f", x);
	for (int i = 0; i < 3; i++)
		snprintf(ns[i], sizeof(ns[i]), v[i] < 100 ? "%.2f" : v[i] < 100000 ? "%.1f" : "%.0f", v[i]);
	printf("%-16s %-6s %7s %3u %-12s %-18s %10s %10s %10s %10.3f %9s  %s\n", r->scenario, r->size,
	       bench_fmt_count(r->extents, ext, sizeof(ext)), r->threads, r->impl, r->variant, ns[0], ns[1],
	       ns[2], r->ops_per_s / 1e6, ratio, r->note);
	fflush(stdout);
}

/* ---------------------------------------------------------------- the machine ---- */

struct bench_meta bench_machine;

static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = 0;
}

void bench_meta_collect(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	struct utsname u;
	char line[512];
	time_t now = time(NULL);
	struct tm tm;

	snprintf(bench_machine.cpu, sizeof(bench_machine.cpu), "unknown");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *c = strchr(line, ':');

			if (!strncmp(line, "model name", 10) && c) {
				snprintf(bench_machine.cpu, sizeof(bench_machine.cpu), "%s", c + 2);
				chomp(bench_machine.cpu);
				break;
			}
		}
		fclose(f);
	}
	if (!uname(&u)) {
		snprintf(bench_machine.kernel, sizeof(bench_machine.kernel), "%s %s %s", u.sysname, u.release, u.version);
		snprintf(bench_machine.host, sizeof(bench_machine.host), "%s", u.nodename);
	}
	snprintf(bench_machine.commit, sizeof(bench_machine.commit), "unknown");
	f = popen("git rev-parse --short HEAD 2>/dev/null", "r");
	if (f) {
		if (fgets(line, sizeof(line), f)) {
			chomp(line);
			if (line[0])
				snprintf(bench_machine.commit, sizeof(bench_machine.commit), "%.40s", line);
		}
		pclose(f);
	}
	localtime_r(&now, &tm);
	strftime(bench_machine.date, sizeof(bench_machine.date), "%Y-%m-%dT%H:%M:%S%z", &tm);
	strftime(bench_machine.day, sizeof(bench_machine.day), "%Y-%m-%d", &tm);
	bench_machine.ncpu = sysconf(_SC_NPROCESSORS_ONLN);
}
