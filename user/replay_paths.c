// SPDX-License-Identifier: MIT
/* The replayer's fast-path readers: `user` (inline reader) and `bpf` (the syscall program). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fastpath.h"
#include "reader.h"
#include "replay.h"

/* One fast path per device, shared by the user and bpf readers of a replay. */
static struct {
	struct viommu_device *dev;
	struct viommu_fastpath *fp;
	int refs;
} shared;

static struct viommu_fastpath *fp_get(struct viommu_device *dev)
{
	if (shared.dev == dev && shared.fp) {
		shared.refs++;
		return shared.fp;
	}
	if (shared.fp)
		return errno = EBUSY, NULL;
	shared.fp = viommu_fastpath_new(dev, NULL);
	if (!shared.fp)
		return NULL;
	shared.dev = dev;
	shared.refs = 1;
	return shared.fp;
}

static void fp_put(void)
{
	if (--shared.refs == 0) {
		viommu_fastpath_free(shared.fp);
		memset(&shared, 0, sizeof(shared));
	}
}

struct user_ctx {
	struct viommu_fastpath *fp;
	struct viommu_reader *r;
};

static enum viommu_xlate_result user_translate(void *ctx, const struct viommu_query *q,
					       struct viommu_answer *a)
{
	struct user_ctx *c = ctx;

	viommu_reader_translate_bulk(c->r, q, a, 1);
	if (a->result == VIOMMU_XLATE_FAULT) {
		viommu_reader_report_fault(c->r, q, a);
		/* The report travels through the fast path's fault socket: the device thread (us)
		 * moves it into the event queue. */
		viommu_fastpath_poll_faults(c->fp);
	}
	return a->result;
}

static void user_stat(void *ctx, FILE *out)
{
	viommu_fastpath_print_stat(((struct user_ctx *)ctx)->fp, out);
}

static void user_close(void *ctx)
{
	struct user_ctx *c = ctx;

	viommu_reader_close(c->r);
	fp_put();
	free(c);
}

int viommu_replay_open_user(struct viommu_device *dev, struct viommu_replay_reader *r)
{
	struct user_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (!(c->fp = fp_get(dev))) {
		free(c);
		return -errno;
	}
	if (!(c->r = viommu_reader_open(c->fp))) {
		int err = -errno;

		fp_put();
		free(c);
		return err;
	}
	r->name = "user";
	r->ctx = c;
	r->translate = user_translate;
	r->print_stat = user_stat;
	r->close = user_close;
	return 0;
}

static enum viommu_xlate_result bpf_translate(void *ctx, const struct viommu_query *q,
					      struct viommu_answer *a)
{
	struct viommu_fastpath *fp = ctx;

	if (viommu_fastpath_bpf_translate(fp, q, a, 1, true))
		a->result = VIOMMU_XLATE_RETRY;
	viommu_fastpath_poll_faults(fp);
	return a->result;
}

static void bpf_stat(void *ctx, FILE *out)
{
	(void)ctx;
	(void)out; /* printed once, by the user path (same maps) */
}

static void bpf_close(void *ctx)
{
	(void)ctx;
	fp_put();
}

int viommu_replay_open_bpf(struct viommu_device *dev, struct viommu_replay_reader *r)
{
	struct viommu_fastpath *fp = fp_get(dev);
	int err;

	if (!fp)
		return -errno;
	if ((err = viommu_fastpath_bpf_enable(fp))) { /* the BPF replica, made on demand */
		fp_put();
		return err;
	}
	r->name = "bpf";
	r->ctx = fp;
	r->translate = bpf_translate;
	r->print_stat = bpf_stat;
	r->close = bpf_close;
	return 0;
}
