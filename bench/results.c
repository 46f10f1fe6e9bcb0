// SPDX-License-Identifier: MIT
/*
 * The results on disk: every row as JSON (<host>-<day>[-quick|-smoke].json and latest.json)
 * and a gnuplot PNG of ns per random lookup against extents (bench/plot.gp).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worlds.h"

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
	json_str(f, bench_machine.cpu);
	fprintf(f, ", \"kernel\": ");
	json_str(f, bench_machine.kernel);
	fprintf(f, ", \"commit\": ");
	json_str(f, bench_machine.commit);
	fprintf(f, ", \"command\": ");
	json_str(f, bench_opt.command);
	fprintf(f, ", \"date\": ");
	json_str(f, bench_machine.date);
	fprintf(f, ", \"host\": ");
	json_str(f, bench_machine.host);
	fprintf(f, ", \"mode\": \"%s\", \"cpus\": %ld, \"reps\": %u},\n  \"results\": [\n",
		bench_mode_names[bench_opt.mode], bench_machine.ncpu, bench_opt.reps);
	for (size_t i = 0; i < bench_nrows; i++) {
		const struct bench_row *r = &bench_rows[i];

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
		json_num(f, "ratio_vs_viommu", bench_row_ratio(r), ", ");
		if (!isnan(r->loss_pct)) {
			json_num(f, "loss_pct", r->loss_pct, ", ");
			json_num(f, "writer_pairs_per_s", r->extra, ", ");
		}
		/* Each repetition's figure in the order timed: rows of one group (or one state
		 * rotation) share their repetitions' times, for a ratio taken rep by rep. */
		fprintf(f, "\"rep_ns\": [");
		for (unsigned k = 0; k < r->reps; k++)
			fprintf(f, "%s%.6g", k ? ", " : "", r->rep[k]);
		fprintf(f, "], ");
		fprintf(f, "\"reps\": %u, \"ops_per_rep\": %llu, \"note\": ", r->reps, (unsigned long long)r->ops);
		json_str(f, r->note);
		fprintf(f, "}%s\n", i + 1 < bench_nrows ? "," : "");
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
		fprintf(f, "%s\n", bench_impl_names[impl]); /* block header: the line's title */
		for (size_t i = 0; i < bench_nrows; i++) {
			const struct bench_row *r = &bench_rows[i];

			if (!strcmp(r->scenario, "lookup_random") && !strcmp(r->size, "4k") &&
			    !strcmp(r->impl, bench_impl_names[impl]))
				fprintf(f, "%llu %.3f %.3f %.3f\n", (unsigned long long)r->extents, r->ns_median,
					r->ns_p10, r->ns_p90);
		}
		fprintf(f, "\n\n");
	}
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "gnuplot -e \"datafile='%s'; outfile='%s'; subtitle='%s, %s, commit %s'\" '%s' 2>&1",
		 dat, png, bench_machine.cpu, bench_mode_names[bench_opt.mode], bench_machine.commit, script);
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

void bench_results_write(void)
{
	char dir[512], base[700], path[800], latest[800];
	const char *suffix = bench_opt.mode == BENCH_FULL ? "" : bench_opt.mode == BENCH_QUICK ? "-quick" : "-smoke";
	int err;

	if (bench_opt.out) {
		snprintf(dir, sizeof(dir), "%s", bench_opt.out);
	} else if (bench_opt.mode == BENCH_SMOKE) {
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
	snprintf(base, sizeof(base), "%s/%s-%s%s", dir, bench_machine.host, bench_machine.day, suffix);
	snprintf(path, sizeof(path), "%s.json", base);
	snprintf(latest, sizeof(latest), "%s/latest.json", dir);
	if ((err = json_write(path)) || (err = json_write(latest)))
		bench_fail("writing the results: %s", strerror(-err));
	printf("# results: %s (and %s)\n", path, latest);
	if (bench_opt.plot) {
		snprintf(path, sizeof(path), "%s.png", base);
		snprintf(latest, sizeof(latest), "%s/latest.png", dir);
		plot_write(path, latest);
	}
}

