// SPDX-License-Identifier: MIT
/*
 * viommu-bench: the benchmark. Scenarios are a table of {setup, run, teardown} callbacks
 * (Linux selftests/bpf bench style); each timed job is warmed up, calibrated to a time per
 * repetition, repeated, and reported as the median and p10/p90 of ns per operation (harness.h).
 * The baselines (baselines.h) run in this process on the same extents and the same queries, and
 * each is checked against the authoritative store (viommu_device_translate) before it is timed:
 * a wrong answer aborts the run with an error (exit status 1), in every mode including --smoke.
 *
 * World scenarios run once in each world of the suite they want (worlds.h); standalone ones
 * build what they need. This file: the table, the suites, the targets, the command line.
 *
 *   viommu-bench [--quick | --smoke] [--filter=SUBSTR] [--world=SIZE[:N]] [--impls=A,B] [--ops=N] [--out=DIR] [--no-plot]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "scenarios.h"

/* ---------------------------------------------------------------- the table of scenarios ---- */

struct bench_scenario {
	const char *name;
	/* The worlds it runs in; NULL: standalone (its setup builds what it needs). */
	bool (*wants)(const struct bench_world_spec *spec);
	int (*setup)(struct bench_ctx *c); /* non-zero: skip this world */
	void (*run)(struct bench_ctx *c); /* measures and adds rows */
	void (*teardown)(struct bench_ctx *c);
};

/* The worlds a scenario wants. */
static bool world_any(const struct bench_world_spec *s)
{
	return s->size != BENCH_IDENT;
}

static bool world_4k(const struct bench_world_spec *s)
{
	return s->size == BENCH_4K;
}

/* 4 KiB extents, dense or scattered over 48 bits. */
static bool world_4k_sparse(const struct bench_world_spec *s)
{
	return s->size == BENCH_4K || s->size == BENCH_SPARSE;
}

/* Bulk lookups also over 2 MiB extents: pieces answered from the piece window (ABI v7). */
static bool world_4k_2m_sparse(const struct bench_world_spec *s)
{
	return world_4k_sparse(s) || s->size == BENCH_2M;
}

static bool world_ident(const struct bench_world_spec *s)
{
	return s->size == BENCH_IDENT;
}

static bool world_bpf(const struct bench_world_spec *s)
{
	return s->size == BENCH_4K || s->size == BENCH_IDENT || s->size == BENCH_SPARSE ||
	       (bench_opt.mode == BENCH_FULL && s->extents <= 65536);
}

static const struct bench_scenario scenarios[] = {
	{ "lookup_hot", world_4k, setup_hot, run_lookup_hot, teardown_qset },
	{ "lookup_random", world_any, setup_random_beside, run_lookup_random, teardown_qset },
	{ "lookup_miss", world_4k_sparse, setup_miss, run_lookup_miss, teardown_qset },
	{ "lookup_bulk64", world_4k_2m_sparse, setup_random, run_lookup_bulk, teardown_qset },
	{ "lookup_identity", world_ident, setup_random, run_lookup_identity, teardown_qset },
	{ "bpf_lookup", world_bpf, setup_bpf, run_bpf_lookup, teardown_qset },
	{ "xdp_lookup", world_4k, setup_random, run_xdp_lookup, teardown_qset },
	{ "map_unmap", world_4k, setup_mu, run_map_unmap, teardown_mu },
	{ "churn_readers", NULL, setup_churn, run_churn, teardown_churn },
	{ "churn_readers", NULL, setup_churn_fence, run_churn, teardown_churn },
	{ "churn_readers", NULL, setup_churn_lazy, run_churn, teardown_churn },
	{ "churn_readers", NULL, setup_churn_batch64, run_churn, teardown_churn },
	{ "grace_period", NULL, setup_grace, run_grace, teardown_grace },
	{ "many_vms", NULL, setup_vms, run_vms_scenario, teardown_vms },
};
#define BENCH_NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static const struct bench_world_spec suite_full[] = {
	{ BENCH_4K, 1024 }, { BENCH_4K, 65536 }, { BENCH_4K, 1u << 20 },
	{ BENCH_2M, 1024 }, { BENCH_2M, 65536 }, { BENCH_2M, 1u << 20 },
	{ BENCH_MIXED, 1024 }, { BENCH_MIXED, 65536 }, { BENCH_MIXED, 1u << 20 },
	{ BENCH_IDENT, 1 }, { BENCH_SPARSE, 65536 },
};
static const struct bench_world_spec suite_quick[] = {
	{ BENCH_4K, 1024 }, { BENCH_4K, 65536 }, { BENCH_4K, 1u << 20 },
	{ BENCH_2M, 65536 }, { BENCH_MIXED, 65536 }, { BENCH_IDENT, 1 }, { BENCH_SPARSE, 65536 },
};
static const struct bench_world_spec suite_smoke[] = {
	{ BENCH_4K, 1024 }, { BENCH_2M, 1024 }, { BENCH_MIXED, 1024 }, { BENCH_IDENT, 1 }, { BENCH_SPARSE, 1024 },
};
#define SUITE(s) { s, sizeof(s) / sizeof(s[0]) }
static const struct {
	const struct bench_world_spec *spec;
	size_t n;
} suites[] = { [BENCH_FULL] = SUITE(suite_full), [BENCH_QUICK] = SUITE(suite_quick),
	       [BENCH_SMOKE] = SUITE(suite_smoke) };

static bool scenario_selected(const struct bench_scenario *s)
{
	return !bench_opt.filter || strstr(s->name, bench_opt.filter);
}

/* ---------------------------------------------------------------- targets ---- */

/* The targets: reported, never asserted (timings vary with the machine). */
static void target(const char *what, const struct bench_row *r, double value, bool met)
{
	char ext[24];

	if (!r) {
		printf("  %-44s not measured in this run\n", what);
		return;
	}
	printf("  %-44s %10.2f  %-6s (%s %s %s at %s extents)\n", what, value, met ? "met" : "MISSED",
	       r->scenario, r->impl, r->variant, bench_fmt_count(r->extents, ext, sizeof(ext)));
}

static void targets_print(void)
{
	const struct bench_row *r;
	static const struct {
		const char *impl;
		double min;
	} peers[] = { { "gtree", 20 }, { "itree", 10 }, { "sorted_list", 50 } };

	printf("\ntargets (largest world measured)\n");
	r = bench_row_find("lookup_hot", "4k", "viommu", NULL, 0);
	target("hot lookup <= 3 ns", r, r ? r->ns_median : 0, r && r->ns_median <= 3);
	if (r) {
		/* The host's speed in the same rounds: this VM's runs differ 2-3x in it. In the first
		 * runs with flat (ABI v5, bench/README.md), near the bar's 2.8-3.4 ns "today", viommu
		 * took 3.1-3.2 ns and flat 0.96-0.97. */
		const struct bench_row *f = bench_row_find("lookup_hot", "4k", "flat", NULL, r->extents);

		if (f && f->ns_median > 0)
			printf("  %-44s %10.2f  ns: viommu / flat %.2f (x3.2-3.3 in the first runs with flat)\n",
			       "  flat's hot lookup in the same rounds", f->ns_median, r->ns_median / f->ns_median);
	}
	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++) {
		char what[64];

		r = bench_row_find("lookup_random", "4k", peers[i].impl, NULL, 0);
		snprintf(what, sizeof(what), "random lookup >= %.0fx faster than %s", peers[i].min, peers[i].impl);
		target(what, r, r ? bench_row_ratio(r) : 0, r && bench_row_ratio(r) >= peers[i].min);
	}
	/* BPF at the smallest world (cache-resident: the cost of the program and the test run) and
	 * at the largest (the memory behind it). */
	for (int big = 0; big < 2; big++) {
		uint64_t ext = big ? 0 : 1024;

		r = bench_row_find("bpf_lookup", "4k", "viommu", NULL, ext);
		target("BPF lookup <= 15 ns (64/run, amortised)", r, r ? r->ns_median : 0, r && r->ns_median <= 15);
		r = bench_row_find("bpf_lookup", "4k", "bpf_hash", NULL, ext);
		target("BPF lookup >= 2x faster than bpf_hash", r, r ? bench_row_ratio(r) : 0, r && bench_row_ratio(r) >= 2);
	}
	/* Issue 11: a miss no worse than a hit, both timed in the same rounds (lookup_miss). */
	r = bench_row_find("lookup_miss", "4k", "viommu", NULL, 0);
	if (r) {
		const struct bench_row *h = bench_row_find("lookup_miss", "4k", "viommu_hit", NULL, r->extents);
		double x = h && h->ns_median > 0 ? r->ns_median / h->ns_median : 0;

		target("miss no worse than a hit, same rounds (x)", h ? r : NULL, x, h && x <= 1);
	}
	/* Issue 11: 2 MiB extents no worse than 4 KiB ones, both timed in the same rounds (the 2 MiB
	 * world's lookup_random, its second domain the 4 KiB world of as many extents). */
	r = bench_row_find("lookup_random", "2m", "viommu", NULL, 0);
	if (r) {
		const struct bench_row *h = bench_row_find("lookup_random", "2m", "viommu_4k", NULL, r->extents);
		double x = h && h->ns_median > 0 ? r->ns_median / h->ns_median : 0;

		target("2 MiB no worse than 4 KiB, same rounds (x)", h ? r : NULL, x, h && x <= 1);
	}
	/* Issue 11: one reader under a churning writer (lazy, and strict in batches of 64) keeps
	 * >= 90 % of its quiet throughput; beside it, what the floor keeps under the same churn
	 * (the flat table's reader, its writer storing the churned pages' entries at the rate
	 * viommu's writer reached, scenarios_churn.c). */
	static const char *const churn_modes[] = { "lazy", "batch64" };
	for (size_t i = 0; i < sizeof(churn_modes) / sizeof(churn_modes[0]); i++) {
		/* [0] viommu's reader, [1] flat's; quiet, churn, and elsewhere (viommu's only) */
		const struct bench_row *cq[2] = { NULL, NULL }, *cc[2] = { NULL, NULL }, *ce = NULL;
		char quiet[24], busy[24], away[24], what[64];

		snprintf(quiet, sizeof(quiet), "quiet_%s", churn_modes[i]);
		snprintf(busy, sizeof(busy), "churn_%s", churn_modes[i]);
		snprintf(away, sizeof(away), "elsewhere_%s", churn_modes[i]);
		for (size_t k = 0; k < bench_nrows; k++) {
			const struct bench_row *x = &bench_rows[k];
			const int f = !strcmp(x->impl, "flat");

			if (strcmp(x->scenario, "churn_readers") || x->threads != 1 || (!f && strcmp(x->impl, "viommu")))
				continue;
			if (!strcmp(x->variant, quiet))
				cq[f] = x;
			else if (!strcmp(x->variant, busy))
				cc[f] = x;
			else if (!f && !strcmp(x->variant, away))
				ce = x;
		}
		snprintf(what, sizeof(what), "one reader under churn >= 90%% of quiet (%s)", churn_modes[i]);
		if (cq[0] && cc[0] && cc[0]->ns_median > 0) {
			const double x = cq[0]->ns_median / cc[0]->ns_median;

			target(what, cc[0], x, x >= 0.9);
			if (cq[1] && cc[1] && cc[1]->ns_median > 0)
				printf("  %-44s %10.2f  of quiet: the floor keeps that under the same churn\n",
				       "  flat's reader, same churned entries", cq[1]->ns_median / cc[1]->ns_median);
			/* The control of the same rounds: the writer as busy on another device, nothing
			 * shared with the reader (no line, no grace period). What a busy second vCPU alone
			 * costs the reader on this host, and what the churn costs beyond it. */
			if (ce && ce->ns_median > 0)
				printf("  %-44s %10.2f  of quiet: nothing shared; churn / it %.2f\n",
				       "  a busy second core alone (elsewhere)", cq[0]->ns_median / ce->ns_median,
				       ce->ns_median / cc[0]->ns_median);
		} else {
			target(what, NULL, 0, false);
		}
	}
	/* Issue 11: viommu against the floor (the flat table) in the same run, same worlds. */
	static const struct {
		const char *scenario, *impl, *what;
		double max;
	} floor[] = { { "lookup_random", "viommu", "random lookup <= 2x flat (viommu/flat)", 2 },
		      { "lookup_bulk64", "viommu", "bulk64 lookup <= 1.5x flat bulk (viommu/flat)", 1.5 },
		      { "lookup_bulk64", "viommu_pa", "bulk64 of PAs <= 1.5x flat bulk (viommu_pa/flat)", 1.5 },
		      { "bpf_lookup", "viommu", "BPF lookup <= 2x flat from BPF (viommu/flat)", 2 } };
	for (size_t i = 0; i < sizeof(floor) / sizeof(floor[0]); i++) {
		const struct bench_row *f = bench_row_find(floor[i].scenario, "4k", "flat", NULL, 0);
		double x;

		r = f ? bench_row_find(floor[i].scenario, "4k", floor[i].impl, NULL, f->extents) : NULL;
		x = r ? r->ns_median / f->ns_median : 0;
		target(floor[i].what, r, x, r && x <= floor[i].max);
	}
	/* Issue 11's two bars: >= 5M pairs/s at 1K extents, >= 1M at 1M (the largest world's row
	 * was held to 5M before, which no bar asks). */
	static const struct {
		uint32_t extents;
		double min;
	} mu_bar[] = { { 1024, 5e6 }, { 1048576, 1e6 } };
	for (unsigned i = 0; i < sizeof(mu_bar) / sizeof(mu_bar[0]); i++)
		for (int pat = 0; pat < 2; pat++) {
			char what[64];

			r = bench_row_find("map_unmap", "4k", "viommu", bench_mu_patterns[pat], mu_bar[i].extents);
			snprintf(what, sizeof(what), "MAP+UNMAP >= %.0fM pairs/s, %s pages (M/s)", mu_bar[i].min / 1e6,
				 bench_mu_patterns[pat]);
			target(what, r, r ? r->ops_per_s / 1e6 : 0, r && r->ops_per_s >= mu_bar[i].min);
		}
	/* What bounds the 1M bar: the pair in units of a cold load timed in the same rounds. */
	r = bench_row_find("map_unmap", "4k", "viommu", "random", 1048576);
	if (r) {
		const struct bench_row *ch = bench_row_find("map_unmap", "4k", "chase", "cold_load", r->extents);
		const struct bench_row *so = bench_row_find("map_unmap", "4k", "viommu_store", "random", r->extents);

		if (ch && so && ch->ns_median > 0)
			printf("  %-44s %10.1f  ns: the pair %.1f of them, the store alone %.1f\n",
			       "  a cold load in the same rounds (chase)", ch->ns_median, r->ns_median / ch->ns_median,
			       so->ns_median / ch->ns_median);
	}
}

/* ---------------------------------------------------------------- main ---- */

static void usage(FILE *f)
{
	fprintf(f, "usage: viommu-bench [--quick | --smoke] [--filter=SUBSTR] [--world=SIZE[:N]] [--impls=A,B] [--ops=N] [--out=DIR] [--no-plot]\n"
		   "  (default)        the standard suite (results in bench/results/)\n"
		   "  --quick          a reduced suite, under a minute\n"
		   "  --smoke          a tiny run: every correctness check, no timing targets;\n"
		   "                   files go to $TMPDIR/viommu-bench-smoke unless --out is given\n"
		   "  --filter=SUBSTR  only scenarios whose name contains SUBSTR\n"
		   "  --world=SIZE[:N] only the suite's worlds of that size (4k, 2m, mixed, 2^48, sparse)\n"
		   "                   and, with :N, of N extents\n"
		   "  --impls=A,B      the lookup scenarios time only these (viommu, flat, gtree, ...)\n"
		   "  --ops=N          N operations per repetition, no calibration: instruction\n"
		   "                   counts under callgrind, which a noisy host does not move\n"
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

	bench_opt.plot = true;
	for (int i = 0; i < argc; i++)
		len += (size_t)snprintf(bench_opt.command + len, len < sizeof(bench_opt.command) ? sizeof(bench_opt.command) - len : 0,
					"%s%s", i ? " " : "", argv[i]);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick"))
			bench_opt.mode = BENCH_QUICK;
		else if (!strcmp(a, "--smoke"))
			bench_opt.mode = BENCH_SMOKE;
		else if (!strncmp(a, "--filter=", 9))
			bench_opt.filter = a + 9;
		else if (!strncmp(a, "--world=", 8))
			bench_opt.world = a + 8;
		else if (!strncmp(a, "--impls=", 8))
			bench_opt.impls = a + 8;
		else if (!strncmp(a, "--out=", 6))
			bench_opt.out = a + 6;
		else if (!strncmp(a, "--ops=", 6) && strtoull(a + 6, NULL, 10) > 0)
			bench_opt.fixed_ops = strtoull(a + 6, NULL, 10);
		else if (!strcmp(a, "--no-plot"))
			bench_opt.plot = false;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		} else {
			usage(stderr);
			exit(2);
		}
	}
	switch (bench_opt.mode) {
	case BENCH_FULL:
		bench_opt.reps = 11;
		bench_opt.rep_ns = 20e6;
		bench_opt.nq = 1u << 16;
		break;
	case BENCH_QUICK:
		bench_opt.reps = 7;
		bench_opt.rep_ns = 4e6;
		bench_opt.nq = 1u << 16;
		break;
	case BENCH_SMOKE:
		bench_opt.reps = 3;
		bench_opt.rep_ns = 2e5;
		bench_opt.nq = 1u << 10;
		bench_opt.plot = false;
		break;
	}
}

static void print_header(void)
{
	const struct bench_meta *m = &bench_machine;

	printf("# viommu-bench (%s): %u reps/job, %.1f ms/rep, %zu queries/set\n", bench_mode_names[bench_opt.mode],
	       bench_opt.reps, bench_opt.rep_ns / 1e6, bench_opt.nq);
	printf("# cpu     %s (%ld online)\n# kernel  %s\n# commit  %s\n# command %s\n# date    %s\n", m->cpu,
	       m->ncpu, m->kernel, m->commit, bench_opt.command, m->date);
	printf("# ns/op: median of the repetitions (p10, p90); 'vs viommu' = peer ns / viommu ns\n");
	bench_row_print_header();
	if (bench_opt.mode != BENCH_SMOKE) {
		/* Spin a moment first: the first job should not pay for a CPU waking up. */
		uint64_t until = bench_now_ns() + 200000000ull, x = 1;

		while (bench_now_ns() < until)
			x = x * 6364136223846793005ull + 1;
		bench_sink += x;
	}
}

/* The fast path's own account of a world (pools in use, the BPF readers' walks and hash hits),
 * as `#` lines: the sparse world's memory and lookup paths come from here. */
static void world_stat_print(struct bench_world *w)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return;
	viommu_fastpath_print_stat(w->fp, f);
	fclose(f);
	printf("# fast path of the %s x %u world, after its scenarios:\n", bench_size_names[w->spec.size],
	       w->spec.extents);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		printf("#   %s\n", line);
	free(buf);
}

/* --world: "SIZE" or "SIZE:EXTENTS". */
static bool world_selected(const struct bench_world_spec *spec)
{
	const char *w = bench_opt.world, *colon;
	size_t len;

	if (!w)
		return true;
	colon = strchr(w, ':');
	len = colon ? (size_t)(colon - w) : strlen(w);
	if (strlen(bench_size_names[spec->size]) != len || strncmp(w, bench_size_names[spec->size], len))
		return false;
	return !colon || strtoul(colon + 1, NULL, 0) == spec->extents;
}

/* The scenarios that want @spec, in one world built for them. Returns false when the kernel
 * refuses the fast path in --smoke: the run ends there, successfully. */
static bool run_world(const struct bench_world_spec *spec)
{
	struct viommu_fastpath_opts lazy = { .lazy = true };
	struct bench_world *w;
	bool any = false;

	if (!world_selected(spec))
		return true;
	for (size_t s = 0; s < BENCH_NSCEN; s++)
		any |= scenarios[s].wants && scenario_selected(&scenarios[s]) && scenarios[s].wants(spec);
	if (!any)
		return true;
	/* Lookups do not care; map_unmap measures the structures, not grace periods
	 * (grace_period does). */
	w = bench_world_build(*spec, &lazy, true);
	if (!w) {
		int err = errno;

		printf("# skipped: the kernel refuses the fast path's BPF objects: %s\n", strerror(err));
		if (bench_fp_refused(err) && bench_opt.mode == BENCH_SMOKE)
			return false;
		bench_fail("viommu_fastpath_new: %s", strerror(err));
	}
	for (size_t s = 0; s < BENCH_NSCEN; s++) {
		const struct bench_scenario *sc = &scenarios[s];
		struct bench_ctx c = { .w = w };

		if (!sc->wants || !scenario_selected(sc) || !sc->wants(spec))
			continue;
		if (sc->setup(&c)) {
			printf("# %s: skipped for this world\n", sc->name);
			continue;
		}
		sc->run(&c);
		sc->teardown(&c);
	}
	/* The memory per extent of the sparse world and of the dense one at 1M (issue 11's figure). */
	if (spec->size == BENCH_SPARSE || (spec->size == BENCH_4K && spec->extents >= (1u << 20)))
		world_stat_print(w);
	bench_world_free(w);
	return true;
}

static void run_standalone(void)
{
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
}

int main(int argc, char **argv)
{
	uint64_t t0 = bench_now_ns();

	parse_args(argc, argv);
	bench_meta_collect();
	libbpf_set_print(NULL); /* the kernel's refusal is reported once, below */
	print_header();
	for (size_t wi = 0; wi < suites[bench_opt.mode].n; wi++)
		if (!run_world(&suites[bench_opt.mode].spec[wi]))
			return 0;
	run_standalone();
	if (bench_opt.mode != BENCH_SMOKE)
		targets_print();
	bench_results_write();
	printf("# %zu rows, every implementation checked against the store, %.1f s\n", bench_nrows,
	       (bench_now_ns() - t0) / 1e9);
	free(bench_rows);
	return 0;
}
