// SPDX-License-Identifier: MIT
/*
 * The BPF scenarios: bpf_lookup (viommu's syscall program against bpf_hash, the naive
 * per-page BPF hash of bench_hash.bpf.c, 64 queries per BPF_PROG_TEST_RUN) and xdp_lookup
 * (the XDP program on descriptor frames, timed by the kernel).
 */
#define _GNU_SOURCE
#include "scenarios.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bench_hash.skel.h"

#define BENCH_HASH_PAGES_MAX (1u << 22) /* bpf_hash: one element per 4 KiB page, at most this */

/* ---- BPF: viommu's syscall program vs a per-page BPF hash, 64 queries per run ---- */

/* bench/bench_hash.bpf.c's key and value (the program defines them; sizes checked at load). */
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
		bench_fail("bpf_hash: key/value layout differs from bench/bench_hash.bpf.c");
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

int setup_bpf(struct bench_ctx *c)
{
	setup_random(c);
	if (!c->w->hash && !c->w->hash_err)
		c->w->hash_err = hash_build(c->w);
	return 0;
}

/* Both programs answer every query of the set exactly as the store does. */
static void bpf_verify(struct bench_ctx *c, struct bench_bpf_ctx *bc)
{
	struct bench_world *w = c->w;

	for (size_t i = 0; i < c->qs.n; i += BENCH_BATCH) {
		int err = viommu_fastpath_bpf_translate(w->fp, &c->qs.q[i], bc[0].a, BENCH_BATCH, false);

		if (err)
			bench_fail("viommu_fastpath_bpf_translate: %s", strerror(-err));
		for (unsigned k = 0; k < BENCH_BATCH; k++)
			bench_check_answer("viommu (BPF)", "bpf_lookup", &c->qs.q[i + k], &c->qs.want[i + k], &bc[0].a[k], true);
	}
	if (!w->hash)
		return;
	bc[1].hash_fd = bpf_program__fd(w->hash->progs.viommu_bench_hash_lookup);
	for (size_t i = 0; i < c->qs.n; i += BENCH_BATCH) {
		int err = hash_translate(bc[1].hash_fd, &c->qs.q[i], bc[1].a, BENCH_BATCH);

		if (err)
			bench_fail("bpf_hash: BPF_PROG_TEST_RUN: %s", strerror(-err));
		for (unsigned k = 0; k < BENCH_BATCH; k++)
			bench_check_answer("bpf_hash", "bpf_lookup", &c->qs.q[i + k], &c->qs.want[i + k], &bc[1].a[k], false);
	}
}

/* The flat table's program (the floor read from BPF the same way): every answer as the store's. */
static void bpf_flat_verify(struct bench_ctx *c, struct bench_bpf_ctx *bc)
{
	for (size_t i = 0; i < c->qs.n; i += BENCH_BATCH) {
		int err = hash_translate(bc->hash_fd, &c->qs.q[i], bc->a, BENCH_BATCH);

		if (err)
			bench_fail("flat (BPF): BPF_PROG_TEST_RUN: %s", strerror(-err));
		for (unsigned k = 0; k < BENCH_BATCH; k++)
			bench_check_answer("flat (BPF)", "bpf_lookup", &c->qs.q[i + k], &c->qs.want[i + k], &bc->a[k], false);
	}
}

void run_bpf_lookup(struct bench_ctx *c)
{
	struct bench_world *w = c->w;
	struct bench_bpf_ctx bc[3] = { { .fp = w->fp, .hash_fd = -1 }, { .fp = w->fp, .hash_fd = -1 },
				       { .fp = w->fp, .hash_fd = -1 } };
	struct bench_job j[3];
	struct bench_stats st[3];
	unsigned n = 1, ih = 0, iflat = 0;
	char note[64];

	bpf_verify(c, bc);
	j[0] = (struct bench_job){ .run = run_bpf_viommu, .ctx = &bc[0], .q = c->qs.q, .qmask = c->qs.n - 1,
				   .per_op = BENCH_BATCH };
	if (w->hash) {
		ih = n++;
		j[ih] = j[0];
		j[ih].run = run_bpf_hash; /* runs whichever program bc->hash_fd is */
		j[ih].ctx = &bc[1];
	}
	if (w->flat) {
		bc[2].hash_fd = bench_flat_prog_fd(w->flat);
		bpf_flat_verify(c, &bc[2]);
		iflat = n++;
		j[iflat] = j[0];
		j[iflat].run = run_bpf_hash;
		j[iflat].ctx = &bc[2];
	}
	bench_measure_group(j, n, st);
	snprintf(note, sizeof(note), "64 queries/test run; program alone %.1f ns",
		 prog_ns_per_lookup(viommu_fastpath_syscall_fd(w->fp), &j[0], 1024));
	bench_row_print(bench_row_add("bpf_lookup", bench_size_names[w->spec.size], w->spec.extents, 1, "viommu",
				      "syscall64", &st[0], note));
	if (w->flat) {
		snprintf(note, sizeof(note), "the floor: 8 B/page; program alone %.1f ns",
			 prog_ns_per_lookup(bc[2].hash_fd, &j[iflat], 1024));
		bench_row_print(bench_row_add("bpf_lookup", bench_size_names[w->spec.size], w->spec.extents, 1, "flat",
					      "syscall64", &st[iflat], note));
	} else {
		printf("# bpf_lookup %s x %u: flat skipped (no flat table for this layout: dense layouts only)\n",
		       bench_size_names[w->spec.size], w->spec.extents);
	}
	if (!w->hash) {
		printf("# bpf_lookup %s x %u: bpf_hash skipped: %s\n", bench_size_names[w->spec.size],
		       w->spec.extents, w->hash_err == -E2BIG ? "too many pages for one element per page" :
		       strerror(-w->hash_err));
		return;
	}
	snprintf(note, sizeof(note), "%llu elements (1/page); program alone %.1f ns",
		 (unsigned long long)w->pages, prog_ns_per_lookup(bc[1].hash_fd, &j[ih], 1024));
	bench_row_print(bench_row_add("bpf_lookup", bench_size_names[w->spec.size], w->spec.extents, 1, "bpf_hash",
				      "syscall64", &st[ih], note));
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
void run_xdp_lookup(struct bench_ctx *c)
{
	struct bench_world *w = c->w;
	struct bench_xdp_ctx *x = bench_calloc(1, sizeof(*x));
	struct bench_job j = { .run = run_xdp, .ctx = x, .kernel_clock = true };
	struct bench_stats st;
	char note[64];
	uint64_t kns = 0;
	uint32_t ret;

	x->fd = viommu_fastpath_xdp_fd(w->fp);
	x->repeat = bench_opt.mode == BENCH_FULL ? 1u << 16 : 1u << 13;
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
		bench_check_answer("viommu (XDP)", "xdp_lookup", &c->qs.q[f], &c->qs.want[f], &a, true);
	}
	bench_measure_group(&j, 1, &st);
	snprintf(note, sizeof(note), "kernel-timed, repeat %u/frame, 64 frames", x->repeat);
	bench_row_print(bench_row_add("xdp_lookup", bench_size_names[w->spec.size], w->spec.extents, 1, "viommu", "xdp",
				      &st, note));
	free(x);
}
