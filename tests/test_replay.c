// SPDX-License-Identifier: MIT
/*
 * The replayer (user/replay.c) as a library: what it does with inputs that are not ordinary trace
 * files (directories, huge tokens, long streams, seed directories it cannot write), and the
 * --dma-probes tracker. The traces themselves run from `make check-traces`.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replay.h"

static char dir[64];
static FILE *err_out, *out;

static void setup(void)
{
	strcpy(dir, "/tmp/viommu-test-replay-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	err_out = tmpfile();
	out = tmpfile();
	cr_assert(err_out && out);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "teardown: cannot remove %s\n", dir);
	fclose(err_out);
	fclose(out);
}

static struct viommu_replay_opts opts(void)
{
	return (struct viommu_replay_opts){
		.paths = VIOMMU_PATH_STORE, .quiet = true, .out = out, .err = err_out,
	};
}

/* Writes @text to @name under the test's directory; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
	static char path[4][128];
	static unsigned n;
	char *p = path[n++ % 4];
	FILE *fp;

	snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
	fp = fopen(p, "w");
	cr_assert_not_null(fp);
	cr_assert_eq(fputs(text, fp) >= 0, true);
	cr_assert_eq(fclose(fp), 0);
	return p;
}

/* The text written to the error stream so far (caller frees). */
static char *errors(size_t *len)
{
	long n = ftell(err_out);
	char *buf = calloc(1, n + 1);

	cr_assert(n >= 0 && buf);
	rewind(err_out);
	cr_assert_eq(fread(buf, 1, n, err_out), (size_t)n);
	fseek(err_out, 0, SEEK_END);
	if (len)
		*len = n;
	return buf;
}

static unsigned count_substr(const char *s, const char *sub)
{
	unsigned n = 0;

	for (const char *p = s; (p = strstr(p, sub)); p++)
		n++;
	return n;
}

TestSuite(replay, .init = setup, .fini = teardown);

Test(replay, a_directory_given_as_a_trace_is_an_io_error_not_an_empty_trace)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char *e;

	cr_assert_eq(viommu_replay_file(dir, &o, &t), -EISDIR);
	cr_assert_eq(t.files, 1);
	cr_assert_eq(t.unreadable, 1, "counted, so `viommu replay` exits non-zero");
	cr_assert_eq(t.mismatches, 0, "an I/O error, not a mismatch");
	e = errors(NULL);
	cr_assert(strstr(e, "cannot read: is a directory"), "said clearly: %s", e);
	free(e);
}

Test(replay, a_missing_file_is_an_io_error_not_a_mismatch)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char *e;

	cr_assert_eq(viommu_replay_file("/nonexistent/viommu.trace", &o, &t), -ENOENT);
	cr_assert_eq(t.unreadable, 1);
	cr_assert_eq(t.mismatches, 0);
	e = errors(NULL);
	cr_assert(strstr(e, "/nonexistent/viommu.trace: cannot read: "), "said clearly: %s", e);
	free(e);
}

Test(replay, a_file_that_opens_but_cannot_be_read_is_an_io_error_not_a_mismatch)
{
	/* Reading /proc/self/mem at offset 0 (never mapped) fails with EIO after the open. */
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char *e;

	cr_assert_eq(viommu_replay_file("/proc/self/mem", &o, &t), -EIO);
	cr_assert_eq(t.files, 1);
	cr_assert_eq(t.unreadable, 1);
	cr_assert_eq(t.mismatches, 0);
	e = errors(NULL);
	cr_assert(strstr(e, "/proc/self/mem: cannot read: read error"), "said clearly: %s", e);
	free(e);
}

Test(replay, a_huge_token_is_echoed_cut_to_64_characters)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	size_t big = 1u << 20, len;
	char *text = malloc(big + 64), *e;
	const char *path;

	/* A 1 MiB token in three places an error echoes one: a verb, a key, a value. */
	cr_assert_not_null(text);
	memset(text, 'x', big);
	strcpy(text + big, "\n");
	path = write_file("verb.trace", text);
	cr_assert_eq(viommu_replay_file(path, &o, &t), -EINVAL);
	memcpy(text, "attach domain=1 endpoint=1 flags=0 ", 35);
	path = write_file("key.trace", text);
	cr_assert_eq(viommu_replay_file(path, &o, &t), -EINVAL);
	memcpy(text, "attach domain=1 endpoint=1 flags=0 status=", 42);
	path = write_file("status.trace", text);
	cr_assert_eq(viommu_replay_file(path, &o, &t), -EINVAL);
	cr_assert_eq(t.mismatches, 3);
	e = errors(&len);
	cr_assert_lt(len, 3 * 300, "three short messages, not megabytes: %zu bytes", len);
	cr_assert_eq(count_substr(e, "...'"), 3, "each token is cut and marked: %s", e);
	cr_assert(strstr(e, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
		  "64 characters kept: %s", e);
	free(e);
	free(text);
}

Test(replay, a_short_token_is_echoed_whole)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char *e;

	cr_assert_eq(viommu_replay_file(write_file("v.trace", "bogus\n"), &o, &t), -EINVAL);
	e = errors(NULL);
	cr_assert(strstr(e, "v.trace:1: unknown verb 'bogus'\n"), "%s", e);
	free(e);
}

/* A trace of @n ATTACH/DETACH pairs: 2n requests, more than one seed's worth. */
static const char *pairs_trace(const char *name, unsigned n)
{
	size_t cap = 64 + n * 80, off = 0;
	char *text = malloc(cap);
	const char *path;

	cr_assert_not_null(text);
	off += snprintf(text + off, cap - off, "endpoint id=1\n");
	for (unsigned i = 0; i < n; i++)
		off += snprintf(text + off, cap - off,
				"attach domain=%u endpoint=1 flags=0 status=OK\ndetach domain=%u endpoint=1\n",
				i + 1, i + 1);
	path = write_file(name, text);
	free(text);
	return path;
}

Test(replay, a_seed_directory_that_cannot_be_written_fails_once)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char missing[128];
	const char *a = pairs_trace("a.trace", 100), *b = pairs_trace("b.trace", 100);
	char *e;

	snprintf(missing, sizeof(missing), "%s/missing/seeds", dir);
	o.dump_dir = missing;
	cr_assert_eq(viommu_replay_dump_dir_check(missing), -ENOENT);
	cr_assert_eq(viommu_replay_dump_dir_check(a), -ENOTDIR);
	cr_assert_eq(viommu_replay_dump_dir_check(dir), 0);
	/* Without the up-front check (a directory that goes away mid-run): 400 requests, 13 seeds. */
	viommu_replay_file(a, &o, &t);
	viommu_replay_file(b, &o, &t);
	cr_assert_eq(t.requests, 400, "the requests still run");
	cr_assert(t.dump_failed);
	cr_assert_eq(t.mismatches, 1, "one failure, so a non-zero exit, counted once");
	e = errors(NULL);
	cr_assert_eq(count_substr(e, "cannot write seed"), 1, "said once: %s", e);
	free(e);
}

Test(replay, a_writable_seed_directory_gets_every_request)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char seed[160];
	struct stat st;

	o.dump_dir = dir;
	cr_assert_eq(viommu_replay_file(pairs_trace("p.trace", 20), &o, &t), 0);
	cr_assert_eq(t.mismatches, 0);
	snprintf(seed, sizeof(seed), "%s/p.trace-0000", dir);
	cr_assert_eq(stat(seed, &st), 0, "first seed (32 requests)");
	snprintf(seed, sizeof(seed), "%s/p.trace-0001", dir);
	cr_assert_eq(stat(seed, &st), 0, "second seed (the last 8)");
}

/* ---- streaming ---- */

struct writer {
	int fd;
	unsigned long lines;
};

static void *write_resets(void *arg)
{
	struct writer *w = arg;
	static const char chunk[] = "reset\nreset\nreset\nreset\nreset\nreset\nreset\nreset\n";

	for (unsigned long i = 0; i < w->lines; i += 8)
		if (write(w->fd, chunk, sizeof(chunk) - 1) != (ssize_t)sizeof(chunk) - 1)
			break;
	close(w->fd);
	return NULL;
}

static long max_rss_kib(void)
{
	struct rusage ru;

	cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
	return ru.ru_maxrss;
}

Test(replay, memory_does_not_grow_with_the_trace_length) /* no .timeout: see test_trust.c */
{
	/* 2M lines through a pipe: loaded whole, they took ~1.1 GB (~550 B a line). Streamed, the
	 * peak must not move by more than a few MiB (64 MiB allows for the sanitizer build). */
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	struct writer w = { .lines = 2000000 };
	long before, after;
	pthread_t th;
	int fds[2];
	FILE *fp;

	cr_assert_eq(pipe(fds), 0);
	w.fd = fds[1];
	fp = fdopen(fds[0], "r");
	cr_assert_not_null(fp);
	before = max_rss_kib();
	cr_assert_eq(pthread_create(&th, NULL, write_resets, &w), 0);
	cr_assert_eq(viommu_replay_stream(fp, "pipe", &o, &t), 0);
	pthread_join(th, NULL);
	fclose(fp);
	after = max_rss_kib();
	cr_assert_eq(t.files, 1);
	cr_assert_eq(t.mismatches, 0);
	cr_assert_lt(after - before, 64 * 1024, "peak RSS grew by %ld KiB over 2M lines",
		     after - before);
}

Test(replay, a_bad_line_stops_the_file_after_the_lines_before_it_ran)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	char *e;

	cr_assert_eq(viommu_replay_file(write_file("s.trace",
						   "endpoint id=1\n"
						   "attach domain=1 endpoint=1 flags=0 status=OK\n"
						   "attach domain=1 endpoint=1 flags=0 bogus=1\n"
						   "attach domain=2 endpoint=1 flags=0 status=OK\n"),
					&o, &t),
		     -EINVAL);
	cr_assert_eq(t.requests, 1);
	cr_assert_eq(t.mismatches, 1);
	e = errors(NULL);
	cr_assert(strstr(e, "s.trace:3: attach takes no key 'bogus'"), "%s", e);
	free(e);
}

Test(replay, set_up_lines_after_the_first_request_are_an_error)
{
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };

	cr_assert_eq(viommu_replay_file(write_file("late.trace",
						   "endpoint id=1\n"
						   "attach domain=1 endpoint=1 flags=0 status=OK\n"
						   "endpoint id=2\n"),
					&o, &t),
		     -EINVAL);
	cr_assert_eq(t.mismatches, 1);
}

/* ---- --dma-probes ---- */

Test(replay, dma_probes_follow_the_device_not_the_trace_syntax)
{
	/* Endpoint 1 leaves domain 5 by a raw DETACH; endpoint 2 has no ACCESS_PLATFORM (identity).
	 * Each MAP / UNMAP line is probed through an endpoint the device has in that domain, with
	 * the answer the device gives it: 0 mismatches, and probes were made. */
	struct viommu_replay_opts o = opts();
	struct viommu_replay_totals t = { 0 };
	const char *path = write_file("probes.trace",
		"device bypass=0\n"
		"endpoint id=1\n"
		"endpoint id=2 access_platform=0\n"
		"endpoint id=3\n"
		"attach domain=5 endpoint=1 flags=0 status=OK\n"
		"attach domain=6 endpoint=3 flags=0 status=OK\n"
		"raw hex=0200000005000000010000000000000000000000 status=OK\n"
		"attach domain=5 endpoint=3 flags=0 status=OK\n"
		"map domain=5 virt_start=0x2000 virt_end=0x2fff phys_start=0xa0000 flags=3 status=OK\n"
		"unmap domain=5 virt_start=0x2000 virt_end=0x2fff status=OK\n"
		"attach domain=1 endpoint=2 flags=0 status=OK\n"
		"map domain=1 virt_start=0x1000 virt_end=0x1fff phys_start=0x80000 flags=3 status=OK\n"
		"unmap domain=1 virt_start=0x1000 virt_end=0x1fff status=OK\n");
	char *e;

	o.dma_probes = true;
	cr_assert_eq(viommu_replay_file(path, &o, &t), 0);
	e = errors(NULL);
	cr_assert_eq(t.mismatches, 0, "%s", e);
	cr_assert_eq(t.probes, 2 + 1 + 1 + 1, "translated MAP: first and last byte; UNMAP: one; "
		     "identity MAP and UNMAP: one each");
	free(e);
}

/* The same text replayed directly and through the rings (both feature sets): equal totals. */
static void replay_all_ways(const char *text, uint64_t want_requests, uint64_t want_probes,
			    uint64_t want_mismatches)
{
	static const enum viommu_replay_via vias[] = { VIOMMU_VIA_DIRECT, VIOMMU_VIA_VIRTQUEUE,
						       VIOMMU_VIA_VIRTQUEUE_PLAIN };
	const char *path = write_file("via.trace", text);

	for (unsigned i = 0; i < 3; i++) {
		struct viommu_replay_opts o = opts();
		struct viommu_replay_totals t = { 0 };

		o.via = vias[i];
		o.dma_probes = true;
		viommu_replay_file(path, &o, &t);
		cr_assert_eq(t.requests, want_requests, "via %u: %llu requests", i,
			     (unsigned long long)t.requests);
		cr_assert_eq(t.probes, want_probes, "via %u: %llu probes", i,
			     (unsigned long long)t.probes);
		cr_assert_eq(t.mismatches, want_mismatches, "via %u: %llu mismatches", i,
			     (unsigned long long)t.mismatches);
	}
}

Test(replay, via_virtqueue_a_batch_larger_than_the_ring_is_flushed_and_retried)
{
	char *text = malloc(300 * 96 + 256);
	size_t off = 0;

	cr_assert(text);
	off += sprintf(text + off, "attach domain=1 endpoint=8 flags=0 status=OK\n");
	for (unsigned i = 0; i < 300; i++)
		off += sprintf(text + off, "raw hex=0300000001000000%016llx writable=4 status=INVAL used=4\n",
			       (unsigned long long)0);
	sprintf(text + off, "kick n=301\n");
	/* Truncated MAPs (INVAL, no probes): 300 of them cannot fit a ring of 256 (128 pairs plain). */
	replay_all_ways(text, 301, 0, 0);
	free(text);
}

Test(replay, via_virtqueue_a_wrong_expectation_is_a_mismatch_as_directly)
{
	replay_all_ways("attach domain=1 endpoint=8 flags=0 status=OK\n"
			"map domain=1 virt_start=0x1000 virt_end=0x1fff phys_start=0x8000 flags=3 status=INVAL\n"
			"kick n=2\n",
			2, 2, 1);
}

Test(replay, via_virtqueue_faults_beyond_the_event_queue_size_all_come_back)
{
	char text[100 * 64];
	size_t off = 0;

	off += sprintf(text + off, "device bypass=0\nendpoint id=8\n");
	for (unsigned i = 0; i < 100; i++)
		off += sprintf(text + off, "translate endpoint=8 iova=0x%x access=r expect=fault:domain\n",
			       0x1000 * i);
	replay_all_ways(text, 0, 100, 0);
}

Test(replay, via_virtqueue_a_reset_brings_the_rings_up_again)
{
	replay_all_ways("attach domain=1 endpoint=8 flags=0 status=OK\n"
			"reset\n"
			"translate endpoint=8 iova=0x1000 access=r expect=bypass\n"
			"attach domain=2 endpoint=8 flags=0 status=OK\n"
			"system_reset\n"
			"probe endpoint=8 status=OK used=516 resv_mem=msi:0xfee00000:0xfeefffff\n",
			3, 1, 0);
}
