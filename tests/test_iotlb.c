/* SPDX-License-Identifier: MIT */
/*
 * The bridge core's deferred lazy mode (user/iotlb.h, opts.lazy + opts.defer) on a real device +
 * fast path: nothing is sent at the sync, ranges merge until the bridge flushes, an endpoint
 * change or an answer due at the sync flushes at once, and without lazy `defer` does nothing.
 * The core's other behaviour is tested with the vhost-user frontend (test_vhost_user.c) and the
 * kernel bridge (test_vhost_kernel.c).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "bpf_access.h"
#include "device.h"
#include "fastpath.h"
#include "iotlb.h"
#include "requests.h"

#define EP 8u

static struct viommu_device *dev;
static struct viommu_fastpath *fp;
static uint8_t memory[1 << 20] __attribute__((aligned(4096)));

/* What the core did, in order: 'I' invalidate, 'D' deferred, 'R' remapped. */
static char events[64];
static unsigned nevents;
static uint64_t inval[8][2];
static unsigned ninval;

static void setup(void)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, EP, true, NULL, 0), 0);
	fp = viommu_fastpath_new(dev, NULL);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno); /* a verifier refusal fails, never skips */
	cr_assert(fp);
	viommu_device_eventq_post(dev, 1024);
	nevents = ninval = 0;
	memset(events, 0, sizeof(events));
}

static void teardown(void)
{
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
}

static void event(char e)
{
	if (nevents + 1 < sizeof(events))
		events[nevents++] = e;
}

static int on_invalidate(void *ctx, uint32_t ep, uint64_t first, uint64_t last)
{
	(void)ctx;
	(void)ep;
	event('I');
	if (ninval < 8) {
		inval[ninval][0] = first;
		inval[ninval++][1] = last;
	}
	return 0;
}

static int on_complete(void *ctx, bool strict)
{
	(void)ctx;
	(void)strict;
	return 0;
}

static void on_deferred(void *ctx, unsigned pending)
{
	(void)ctx;
	cr_assert_gt(pending, 0);
	event('D');
}

static void on_remapped(void *ctx, uint32_t ep, uint64_t iova, uint8_t perm)
{
	(void)ctx;
	(void)ep;
	(void)iova;
	(void)perm;
	event('R');
}

static struct viommu_iotlb *core(bool lazy, bool prefill)
{
	struct viommu_iotlb_opts o = { .lazy = lazy, .defer = true, .prefill = prefill };
	struct viommu_iotlb_ops ops = { .invalidate = on_invalidate, .complete = on_complete,
					.deferred = on_deferred, .remapped = on_remapped };
	struct viommu_iotlb *it = viommu_iotlb_new(fp, &o, &ops);
	struct viommu_iotlb_region r = { 0x100000, sizeof(memory), memory, -1, 0 };

	cr_assert(it);
	cr_assert_eq(viommu_iotlb_add_region(it, &r), 0);
	cr_assert_eq(viommu_iotlb_serve(it, EP), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	return it;
}

Test(iotlb_defer, unmaps_are_kept_past_their_sync_merged_and_sent_by_the_flush,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = core(true, false);

	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x6000, 0x7fff, 0x102000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x10fff, 0x104000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x4000, 0x5fff), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x6000, 0x7fff), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x10000, 0x10fff), VIOMMU_S_OK);
	cr_assert_str_eq(events, "DDD", "nothing sent at the syncs, the bridge told each time");
	cr_assert_eq(viommu_iotlb_pending(it), 2, "the two adjacent UNMAPs merged");
	cr_assert_eq(viommu_iotlb_stats(it)->deferrals, 3);
	cr_assert_eq(viommu_iotlb_flush(it, false), 2);
	cr_assert_str_eq(events, "DDDII");
	cr_assert(inval[0][0] == 0x4000 && inval[0][1] == 0x7fff);
	cr_assert(inval[1][0] == 0x10000 && inval[1][1] == 0x10fff);
	cr_assert_eq(viommu_iotlb_pending(it), 0);
	viommu_iotlb_free(it);
}

Test(iotlb_defer, an_endpoint_change_is_sent_at_its_sync_with_what_was_kept,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = core(true, false);

	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x4000, 0x5fff), VIOMMU_S_OK);
	cr_assert_str_eq(events, "D");
	cr_assert_eq(test_detach(dev, 1, EP), VIOMMU_S_OK);
	cr_assert_str_eq(events, "DI", "the DETACH flushed inside its request");
	cr_assert(inval[0][0] == 0 && inval[0][1] == UINT64_MAX, "everything (the kept range in it)");
	cr_assert_eq(viommu_iotlb_pending(it), 0);
	/* and the next UNMAP is deferred again */
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x4000, 0x5fff), VIOMMU_S_OK);
	cr_assert_str_eq(events, "DID");
	viommu_iotlb_free(it);
}

Test(iotlb_defer, answers_due_at_a_sync_go_out_after_the_kept_ranges,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = core(true, true);

	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_str_eq(events, "R", "the MAP's prefill");
	cr_assert_eq(test_unmap(dev, 1, 0x4000, 0x5fff), VIOMMU_S_OK);
	cr_assert_str_eq(events, "RD");
	/* mapped again elsewhere: its prefill must not reach the consumer before the INVALIDATE */
	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x108000, 3), VIOMMU_S_OK);
	cr_assert_str_eq(events, "RDIR");
	cr_assert_eq(viommu_iotlb_pending(it), 0);
	viommu_iotlb_free(it);
}

Test(iotlb_defer, without_lazy_defer_changes_nothing, .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = core(false, false);

	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x4000, 0x5fff), VIOMMU_S_OK);
	cr_assert_str_eq(events, "I", "strict: sent at the sync, the bridge never told to defer");
	cr_assert_eq(viommu_iotlb_stats(it)->deferrals, 0);
	viommu_iotlb_free(it);
}
