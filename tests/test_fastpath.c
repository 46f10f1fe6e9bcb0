// SPDX-License-Identifier: MIT
/*
 * The fast path: the userspace reader and the BPF programs (really loaded into the running
 * kernel) against the device core's authoritative store. Tests that need BPF skip with the
 * kernel's reason when it refuses.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/bpf.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "device.h"
#include "fastpath.h"
#include "reader.h"
#include "bpf_access.h"
#include "requests.h"
#include "bulk_pa.h"

#define MSI_START 0xfee00000ull
#define MSI_END 0xfeefffffull

static struct viommu_device *dev;
static struct viommu_fastpath *fp;

static void fp_setup_with(const struct viommu_config *cfg, const struct viommu_fastpath_opts *o)
{
	struct viommu_resv msi = { MSI_START, MSI_END, VIOMMU_RESV_MEM_T_MSI };

	dev = viommu_device_new(cfg);
	cr_assert_not_null(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, 8, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 9, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 10, false, NULL, 0), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 0x123456, true, &msi, 1), 0);
	fp = viommu_fastpath_new(dev, o);
	cr_assert_not_null(fp, "viommu_fastpath_new: %s", strerror(errno));
	/* These tests check every answer on the BPF path too: the replica, made after the fast
	 * path as a VMM would on demand. */
	errno = -viommu_fastpath_bpf_enable(fp);
	if (errno)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_eq(errno, 0, "viommu_fastpath_bpf_enable: %s", strerror(errno));
}

/* The default config without bypass, and fast path options @o (NULL: the defaults). */
static void fp_setup_opts(const struct viommu_fastpath_opts *o)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	fp_setup_with(&cfg, o);
}

static void fp_setup(void)
{
	fp_setup_opts(NULL);
}

static void fp_teardown(void)
{
	/* Criterion does not count an assertion in .fini as a failure: abort, counted as a crash. */
	if (fp && viommu_fastpath_check(fp)) {
		fprintf(stderr, "teardown: the fast path's shared state is inconsistent or leaks\n");
		abort();
	}
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
	fp = NULL;
	dev = NULL;
}

static void assert_same(const struct viommu_query *q, const struct viommu_answer *want,
			const struct viommu_answer *got, const char *who)
{
	cr_assert_eq(got->result, want->result, "%s: ep %u iova 0x%llx size %llu: result %u, store %u",
		     who, q->endpoint, (unsigned long long)q->iova, (unsigned long long)q->size,
		     got->result, want->result);
	if (want->result == VIOMMU_XLATE_HIT || want->result == VIOMMU_XLATE_IDENTITY)
		cr_assert_eq(got->pa, want->pa, "%s: iova 0x%llx pa 0x%llx, store 0x%llx", who,
			     (unsigned long long)q->iova, (unsigned long long)got->pa,
			     (unsigned long long)want->pa);
	if (want->result == VIOMMU_XLATE_HIT)
		cr_assert(viommu_fastpath_agrees(q, want, got),
			  "%s: iova 0x%llx access 0x%x: the run [0x%llx, 0x%llx] is the whole extent "
			  "[0x%llx, 0x%llx] when asked, else a run of it holding the query", who,
			  (unsigned long long)q->iova, q->access, (unsigned long long)got->ext_start,
			  (unsigned long long)got->ext_end, (unsigned long long)want->ext_start,
			  (unsigned long long)want->ext_end);
	if (want->result == VIOMMU_XLATE_FAULT)
		cr_assert(got->reason == want->reason && got->fault_addr == want->fault_addr,
			  "%s: iova 0x%llx fault reason %u addr 0x%llx, store %u 0x%llx", who,
			  (unsigned long long)q->iova, got->reason, (unsigned long long)got->fault_addr,
			  want->reason, (unsigned long long)want->fault_addr);
}

/* Check @n queries on all three paths. */
static void check_queries(struct viommu_reader *r, const struct viommu_query *q, unsigned n)
{
	struct viommu_answer want[VIOMMU_BULK_MAX], user[VIOMMU_BULK_MAX], bpf[VIOMMU_BULK_MAX];

	for (unsigned i = 0; i < n; i++)
		viommu_device_answer(dev, &q[i], &want[i]);
	viommu_reader_translate_bulk(r, q, user, n);
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, bpf, n, false), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_same(&q[i], &want[i], &user[i], "user");
		assert_same(&q[i], &want[i], &bpf[i], "bpf");
	}
	test_check_bulk_pa(r, q, want, n, "user, PAs");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

TestSuite(fastpath, .init = fp_setup, .fini = fp_teardown);

/* Random MAP / UNMAP / re-ATTACH in two domains, each step followed by 64 random queries that
 * the store, the userspace reader and the BPF program must answer alike. */
static void random_differential(int rounds, unsigned regions, uint64_t window)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	static const uint64_t sizes[] = { 1ull << 12, 2ull << 12, 16ull << 12, 1ull << 21,
					  3ull << 21, 1ull << 30, (1ull << 21) + (5ull << 12) };
	struct viommu_query q[VIOMMU_BULK_MAX];

	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	for (int round = 0; round < rounds; round++) {
		uint32_t domain = 1 + (uint32_t)(rnd() % 2);
		uint64_t size = sizes[rnd() % (sizeof(sizes) / sizeof(sizes[0]))];
		/* IOVAs in the window, aligned to the granule, so maps and unmaps collide. */
		uint64_t start = ((rnd() % regions) << 39 | (rnd() % window)) & ~0xfffull;
		uint64_t phys = (rnd() % (1ull << 40)) & ~0xfffull;

		if (rnd() % 3)
			test_map(dev, domain, start, start + size - 1, phys, 1 + (uint32_t)(rnd() % 3));
		else
			test_unmap(dev, domain, start, start + (rnd() % 4 + 1) * size - 1);
		if (round % 20 == 0)
			test_attach(dev, 1 + (uint32_t)(rnd() % 3), 8 + (uint32_t)(rnd() % 2), 0);
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
			q[i].endpoint = 8 + (uint32_t)(rnd() % 3);
			q[i].iova = (rnd() % regions) << 39 | (rnd() % window);
			q[i].size = rnd() % 4 ? 1 : rnd() % (1ull << 22);
			q[i].access = (1 + (uint32_t)(rnd() % 3)) | (rnd() % 2 ? VIOMMU_QUERY_F_EXTENT : 0);
		}
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	viommu_reader_close(r);
}

Test(fastpath, user_and_bpf_readers_agree_with_the_store_on_random_requests)
{
	random_differential(300, 1, 64ull << 30);
}

/* With a small node pool and extents spread over 512 GiB regions (a new region needs up to 4 new
 * nodes), many MAPs are refused halfway down the radix: every refusal must leave
 * the fast path exactly as it was (the bug this test was written for leaked nodes). */
Test(fastpath, readers_agree_with_the_store_when_the_node_pool_keeps_running_out)
{
	struct viommu_fastpath_opts o = { .nodes = 12, .leaves = 4, .overcommit = true };
	const struct viommu_meta *m;

	fp_teardown();
	fp_setup_opts(&o);
	m = viommu_fastpath_view(fp)->meta;
	random_differential(600, 8, 4ull << 30);
	viommu_device_reset(dev);
	cr_assert_eq(m->nodes_used, 0, "every node came back");
	cr_assert_eq(m->leaves_used, 0, "every leaf came back");
	cr_assert_eq(m->extents_used, 0);
}

Test(fastpath, a_huge_extent_is_a_handful_of_radix_entries)
{
	const struct viommu_meta *m = viommu_fastpath_view(fp)->meta;
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[8];
	uint32_t before;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	before = m->nodes_used;
	/* Linux's identity domain without BYPASS_CONFIG: [0, 2^48-1] minus the MSI window. */
	cr_assert_eq(test_map(dev, 1, 0, MSI_START - 1, 0, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, MSI_END + 1, (1ull << 48) - 1, MSI_END + 1, 3), VIOMMU_S_OK);
	cr_assert_leq(m->nodes_used - before, 8, "%u nodes for 2^48 bytes", m->nodes_used - before);
	for (unsigned i = 0; i < 8; i++) {
		q[i].endpoint = 8;
		q[i].iova = rnd() & ((1ull << 48) - 1);
		q[i].size = 1;
		q[i].access = 3;
	}
	q[0].iova = MSI_START + 0x10; /* the hole faults */
	check_queries(r, q, 8);
	cr_assert_eq(test_unmap(dev, 1, 0, (1ull << 48) - 1), VIOMMU_S_OK);
	cr_assert_eq(m->nodes_used, before, "every node the extents used is freed");
	viommu_reader_close(r);
}

Test(fastpath, the_last_page_of_the_address_space_translates)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[2] = {
		{ .endpoint = 8, .access = 1, .iova = ~0ull, .size = 1 },
		{ .endpoint = 8, .access = 1, .iova = ~0ull - 0xfff, .size = 0x1000 },
	};
	struct viommu_answer a;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, ~0ull - 0xfff, ~0ull, 0x5000, 1), VIOMMU_S_OK);
	check_queries(r, q, 2);
	viommu_reader_translate(r, &q[0], &a);
	cr_assert_eq(a.pa, 0x5fff);
	viommu_reader_close(r);
}

/* One reader's single lookup of @q, twice (the second from its TLB when the first filled it),
 * each the store's answer. */
static void translate_twice(struct viommu_reader *r, const struct viommu_query *q)
{
	struct viommu_answer want, got;

	viommu_device_answer(dev, q, &want);
	for (int k = 0; k < 2; k++) {
		viommu_reader_translate(r, q, &got);
		assert_same(q, &want, &got, k ? "user, again" : "user");
	}
}

/* ABI v7: a one-page MAP has no record; its PTE says it is alone and is the whole extent. */
Test(fastpath, a_one_page_map_has_no_record_and_its_pte_is_the_whole_extent_on_every_path)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	const struct viommu_meta *m = viommu_fastpath_view(fp)->meta;
	const uint32_t RW = VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE, X = VIOMMU_QUERY_F_EXTENT;
	const uint64_t far = 0x7f0000000000ull; /* outside the window: a pool leaf, through the hash */
	struct viommu_query q[] = {
		{ .endpoint = 8, .access = 1 | X, .iova = 0x10008, .size = 8 },
		{ .endpoint = 8, .access = 1 | X, .iova = 0x11000, .size = 0x1000 },
		{ .endpoint = 8, .access = 2 | X, .iova = 0x20ff0, .size = 0x20 }, /* across the record's two pages */
		{ .endpoint = 8, .access = 2 | X, .iova = 0x21ff0, .size = 0x20 }, /* into the next, alone */
		/* A page query first: the short path fills the reader TLB, whole (the page is solo),
		 * and the whole-extent query after it is answered from that entry. */
		{ .endpoint = 8, .access = 1, .iova = far + 0x10, .size = 8 },
		{ .endpoint = 8, .access = 1 | X, .iova = far + 0x123, .size = 1 },
		{ .endpoint = 8, .access = 2, .iova = far + 0x123, .size = 1 }, /* not writable */
		{ .endpoint = 8, .access = 1, .iova = 0x10ff0, .size = 0x20 }, /* into an unmapped page */
	};
	const unsigned n = sizeof(q) / sizeof(q[0]);

	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x10fff, 0x7000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x11000, 0x11fff, 0x8000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x20000, 0x21fff, 0xa000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x22000, 0x22fff, 0xc000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, far, far + 0xfff, 0xd000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	/* A neighbour in the far page's region: its leaf lives through the far page's UNMAP below
	 * (a leaf's free would drop every reader TLB entry anyway, I10). */
	cr_assert_eq(test_map(dev, 1, far + 0x10000, far + 0x10fff, 0xe000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(m->solo_used, 5, "every one-page mapping is solo");
	cr_assert_eq(m->extents_used, 1, "the two-page mapping has the one record");
	check_queries(r, q, n);
	for (unsigned i = 0; i < n; i++)
		translate_twice(r, &q[i]);

	/* The page joins a larger mapping: the whole extent a reader cached from its solo PTE is
	 * gone with that PTE. */
	cr_assert_eq(test_unmap(dev, 1, 0x10000, 0x10fff), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x11000, 0x11fff), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x11fff, 0x7000, RW), VIOMMU_S_OK);
	/* And the other way: a page of a record's mapping mapped again alone, same PA. */
	cr_assert_eq(test_unmap(dev, 1, 0x20000, 0x21fff), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x21000, 0x21fff, 0xb000, RW), VIOMMU_S_OK);
	/* The far page too, outside the window, same PA, joining the page below it. */
	cr_assert_eq(test_unmap(dev, 1, far, far + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, far - 0x1000, far + 0xfff, 0xc000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(m->solo_used, 3);
	cr_assert_eq(m->extents_used, 2);
	check_queries(r, q, n);
	for (unsigned i = 0; i < n; i++)
		translate_twice(r, &q[i]);
	viommu_reader_close(r);
}

/* A DMA that runs past 2^64 and wraps to a last byte in its own first page: every byte that
 * exists is mapped, but the DMA faults (the store's answer). The short path, which takes queries
 * within one page, must not see one here (the fuzzer found the bulk and single paths doing so). */
Test(fastpath, a_range_that_wraps_into_its_own_page_faults_on_every_path)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[2] = {
		{ .endpoint = 8, .access = 1, .iova = ~0ull - 0xffa, .size = ~0ull - 3 },
		{ .endpoint = 8, .access = 1, .iova = ~0ull - 0x800, .size = ~0ull },
	};
	struct viommu_answer want, a;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, ~0ull - 0xfff, ~0ull, 0x5000, 1), VIOMMU_S_OK);
	check_queries(r, q, 2); /* bulk and BPF */
	for (unsigned i = 0; i < 2; i++) {
		viommu_device_answer(dev, &q[i], &want);
		cr_assert_eq(want.result, VIOMMU_XLATE_FAULT);
		cr_assert_eq(viommu_reader_translate(r, &q[i], &a), VIOMMU_XLATE_FAULT, "query %u", i);
		cr_assert_eq(a.fault_addr, want.fault_addr);
	}
	viommu_reader_close(r);
}

Test(fastpath, endpoints_without_access_platform_translate_as_identity)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q = { .endpoint = 10, .access = 2, .iova = 0x1234, .size = 1 };
	struct viommu_answer a;

	cr_assert_eq(test_attach(dev, 1, 10, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_reader_translate(r, &q, &a), VIOMMU_XLATE_IDENTITY);
	cr_assert_eq(a.pa, 0x1234);
	check_queries(r, &q, 1);
	viommu_reader_close(r);
}

/* Identity answers a range that runs past 2^64 too (as the store does), but no run of PA holds
 * it: a burst of PAs gives its bit only to the range that ends below 2^64. */
Test(fastpath, a_burst_of_pas_gives_no_bit_to_an_identity_range_past_2_64)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[2] = {
		{ .endpoint = 10, .access = 1, .iova = 0xfffffffffffff000ull, .size = 0x1000 },
		{ .endpoint = 10, .access = 1, .iova = 0xfffffffffffff000ull, .size = 0x2000 },
	};
	struct viommu_answer a;
	uint64_t pa[2];

	cr_assert_eq(test_attach(dev, 1, 10, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_reader_translate(r, &q[1], &a), VIOMMU_XLATE_IDENTITY);
	cr_assert_eq(viommu_reader_translate_bulk_pa(r, q, pa, 2), 0x1);
	cr_assert_eq(pa[0], 0xfffffffffffff000ull);
	check_queries(r, q, 2);
	viommu_reader_close(r);
}

Test(fastpath, endpoints_above_the_dense_range_use_the_sparse_index)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[3] = {
		{ .endpoint = 0x123456, .access = 1, .iova = 0x2000, .size = 1 },
		{ .endpoint = 0x123457, .access = 1, .iova = 0x2000, .size = 1 }, /* unknown */
		{ .endpoint = 70000, .access = 1, .iova = 0x2000, .size = 1 }, /* unknown */
	};
	struct viommu_answer a;

	cr_assert_eq(test_attach(dev, 5, 0x123456, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x9000, 1), VIOMMU_S_OK);
	check_queries(r, q, 3);
	cr_assert_eq(viommu_reader_translate(r, &q[0], &a), VIOMMU_XLATE_HIT);
	cr_assert_eq(a.pa, 0x9000);
	cr_assert_eq(viommu_reader_translate(r, &q[1], &a), VIOMMU_XLATE_FAULT);
	cr_assert_eq(a.reason, VIOMMU_FAULT_R_UNKNOWN);
	viommu_reader_close(r);
}

/* ---- the sparse endpoint index: any VIOMMU_EP_SPARSE ids fit, whatever their bits ---- */

/* Device with @n sparse endpoints @ids (added before or after the fast path is made), each
 * attached to one of four domains that map [0x10000, 0x10fff] differently; every id must
 * translate on the userspace reader, the BPF syscall program and the XDP program. */
static void sparse_ids_all_translate(const uint32_t *ids, unsigned n, bool add_first)
{
	struct viommu_config cfg;
	struct viommu_reader *r;
	struct viommu_query q[VIOMMU_BULK_MAX];
	unsigned nq = 0;

	fp_teardown();
	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert_not_null(dev);
	for (unsigned i = 0; add_first && i < n; i++)
		cr_assert_eq(viommu_device_add_endpoint(dev, ids[i], true, NULL, 0), 0, "id 0x%x", ids[i]);
	fp = viommu_fastpath_new(dev, &(struct viommu_fastpath_opts){ .bpf = true });
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(fp, "viommu_fastpath_new with %u sparse endpoints: %s", n, strerror(errno));
	for (unsigned i = 0; !add_first && i < n; i++)
		cr_assert_eq(viommu_device_add_endpoint(dev, ids[i], true, NULL, 0), 0,
			     "endpoint %u (id 0x%x) refused", i, ids[i]);
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(test_attach(dev, 1 + i % 4, ids[i], 0), VIOMMU_S_OK, "attach id 0x%x", ids[i]);
	for (uint32_t d = 1; d <= 4; d++)
		cr_assert_eq(test_map(dev, d, 0x10000, 0x10fff, (uint64_t)d << 20, 3), VIOMMU_S_OK);
	cr_assert_leq(viommu_fastpath_view(fp)->meta->ep_probes, VIOMMU_EP_INDEX_PROBES_MAX);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	for (unsigned i = 0; i <= n; i++) {
		if (i < n) {
			q[nq++] = (struct viommu_query){ .endpoint = ids[i], .access = 1,
							 .iova = 0x10000 + i % 4096, .size = 1 };
		}
		if (nq == VIOMMU_BULK_MAX || (i == n && nq)) {
			struct viommu_answer a[VIOMMU_BULK_MAX];

			viommu_reader_translate_bulk(r, q, a, nq);
			for (unsigned k = 0; k < nq; k++)
				cr_assert_eq(a[k].result, VIOMMU_XLATE_HIT, "id 0x%x: result %u", q[k].endpoint,
					     a[k].result);
			check_queries(r, q, nq);
			nq = 0;
		}
	}
	/* The XDP program, one descriptor per id. */
	for (unsigned i = 0; i < n; i++) {
		struct xdp_frame_sparse {
			struct ethhdr eth;
			struct viommu_query q;
			struct viommu_answer a;
		} __attribute__((packed)) in = { 0 }, out;
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = &in, .data_size_in = sizeof(in),
			    .data_out = &out, .data_size_out = sizeof(out), .repeat = 1);

		in.eth.h_proto = htons(0x88b5);
		in.q = (struct viommu_query){ .endpoint = ids[i], .access = 2, .iova = 0x10008, .size = 8 };
		cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_xdp_fd(fp), &o), 0);
		cr_assert(out.a.result == VIOMMU_XLATE_HIT && out.a.pa == ((uint64_t)(1 + i % 4) << 20) + 8,
			  "xdp: id 0x%x result %u pa 0x%llx", ids[i], out.a.result,
			  (unsigned long long)out.a.pa);
	}
	/* Ids never declared still answer R_UNKNOWN. */
	for (unsigned i = 0; i < 16; i++)
		q[i] = (struct viommu_query){ .endpoint = 0xfff00000u + i * 0x10000u + 0x0100, .access = 1,
					      .iova = 0x10000, .size = 1 };
	check_queries(r, q, 16);
	viommu_reader_close(r);
}

static void sparse_ids_same_low_bits(uint32_t *ids, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		ids[i] = (uint32_t)(i + 1) << 16 | 0x0100; /* one device (00:01.0) on segments 1..n */
}

Test(fastpath, nine_segments_of_the_same_device_all_attach)
{
	uint32_t ids[9];

	sparse_ids_same_low_bits(ids, 9);
	sparse_ids_all_translate(ids, 9, false);
}

Test(fastpath, the_whole_sparse_table_of_ids_with_the_same_low_16_bits_attaches_and_translates)
{
	uint32_t ids[VIOMMU_EP_SPARSE];

	sparse_ids_same_low_bits(ids, VIOMMU_EP_SPARSE);
	sparse_ids_all_translate(ids, VIOMMU_EP_SPARSE, false);
}

Test(fastpath, a_fast_path_made_over_a_full_sparse_table_opens)
{
	uint32_t ids[VIOMMU_EP_SPARSE];

	sparse_ids_same_low_bits(ids, VIOMMU_EP_SPARSE);
	sparse_ids_all_translate(ids, VIOMMU_EP_SPARSE, true);
}

Test(fastpath, the_whole_sparse_table_of_random_ids_attaches_and_translates)
{
	uint32_t ids[VIOMMU_EP_SPARSE];

	for (unsigned i = 0; i < VIOMMU_EP_SPARSE; i++) {
		bool dup;

		do {
			ids[i] = VIOMMU_EP_DENSE + (uint32_t)(rnd() % (0xffffffffu - VIOMMU_EP_DENSE));
			dup = false;
			for (unsigned j = 0; j < i; j++)
				dup |= ids[j] == ids[i];
		} while (dup);
	}
	sparse_ids_all_translate(ids, VIOMMU_EP_SPARSE, false);
}

/* Ids that collide in the hash itself (the same home slot): the longest possible probe runs. */
Test(fastpath, sparse_ids_that_share_one_home_slot_all_translate)
{
	uint32_t ids[VIOMMU_EP_SPARSE], home = viommu_ep_hash(0x10000), n = 0;

	for (uint32_t id = 0x10001; n < 200; id++)
		if (viommu_ep_hash(id) == home)
			ids[n++] = id;
	sparse_ids_all_translate(ids, n, false);
	cr_assert_geq(viommu_fastpath_view(fp)->meta->ep_probes, n);
}

Test(fastpath, the_bulk_hit_mask_marks_translated_queries)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];
	uint64_t want = 0;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0, (32ull << 12) - 1, 0x100000, 3), VIOMMU_S_OK);
	for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
		q[i] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = (uint64_t)i << 12, .size = 8 };
		if (i < 32)
			want |= 1ull << i;
	}
	cr_assert_eq(viommu_reader_translate_bulk(r, q, a, VIOMMU_BULK_MAX), want);
	check_queries(r, q, VIOMMU_BULK_MAX);
	viommu_reader_close(r);
}

/* A burst of PAs says where a DMA goes only when it goes to one run: two mappings side by side
 * with PAs apart answer HIT for a range over both (viommu_reader_translate()), and no bit; a
 * range inside one mapping, a bit and its PA; a size of 0 counts as 1; a fault, no bit. */
Test(fastpath, a_burst_of_pas_sets_a_bit_only_for_a_range_that_is_one_run)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[5];
	struct viommu_answer a;
	uint64_t pa[5];

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x10fff, 0x200000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x11000, 0x11fff, 0x900000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x47fff, 0x500000, 3), VIOMMU_S_OK);
	q[0] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 0x10800, .size = 0x1000 };
	q[1] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 0x40800, .size = 0x3000 };
	q[2] = (struct viommu_query){ .endpoint = 8, .access = 2, .iova = 0x11004, .size = 4 };
	q[3] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 0x20000, .size = 4 };
	q[4] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 0x47ff8, .size = 0 }; /* counts as 1 */
	cr_assert_eq(viommu_reader_translate(r, &q[0], &a), VIOMMU_XLATE_HIT, "both mapped: a HIT");
	cr_assert_eq(viommu_reader_translate_bulk_pa(r, q, pa, 5), 0x16, "bits for the one-run ranges only");
	cr_assert_eq(pa[1], 0x500800);
	cr_assert_eq(pa[2], 0x900004);
	cr_assert_eq(pa[4], 0x507ff8);
	check_queries(r, q, 5);
	viommu_reader_close(r);
}

/* ---- DMA ranges over more than VIOMMU_SPAN_MAX mappings (a scatter-gather list) ---- */

#define RUN_PAGES 40u
#define RUN_BASE 0x100000ull

/* RUN_PAGES adjacent 4 KiB mappings from RUN_BASE (each its own MAP, physically scattered);
 * page @ro_page read-only (or none), page @hole unmapped (or none). */
static void map_run(uint32_t domain, unsigned ro_page, unsigned hole)
{
	for (unsigned i = 0; i < RUN_PAGES; i++) {
		uint64_t va = RUN_BASE + ((uint64_t)i << 12);

		if (i != hole)
			cr_assert_eq(test_map(dev, domain, va, va + 0xfff, 0x40000000ull + ((uint64_t)(i * 7 % 64) << 12),
					     i == ro_page ? 1 : 3),
				     VIOMMU_S_OK);
	}
}

/* Past VIOMMU_MAP_PREFETCH_EXTENTS mappings a MAP first hints the fast path, which prefetches the
 * window lines it is about to write, in the memfd and the replica. Pages mapped then, in the
 * window and far outside it (the hash's leaves), answer as the store on every path, and so do
 * they once unmapped; a refused MAP changes nothing. */
Test(fastpath, maps_into_a_domain_past_the_prefetch_threshold_answer_as_the_store_on_every_path)
{
	const uint64_t base = 0x100000000ull, far = 0x7f0000000000ull;
	const unsigned n = VIOMMU_MAP_PREFETCH_EXTENTS + 64;
	struct viommu_fastpath_opts o = { .overcommit = true }; /* the device's caps, not the pools' worst case */
	struct viommu_reader *r;
	struct viommu_query q[64];

	fp_teardown();
	fp_setup_opts(&o);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	viommu_device_batch_begin(dev);
	for (unsigned i = 0; i < n; i++) /* every other page: the pages between are gaps */
		cr_assert_eq(test_map(dev, 1, base + i * 0x2000ull, base + i * 0x2000ull + 0xfff,
				      0x40000000ull + i * 0x1000ull, 3),
			     VIOMMU_S_OK, "map %u", i);
	viommu_device_batch_end(dev);
	for (unsigned i = 0; i < 64; i++) {
		uint64_t va = i % 2 ? base + (i * 97 % n) * 0x2000ull + 0x1000 : far + i * 0x1000ull;

		cr_assert_eq(test_map(dev, 1, va, va + 0xfff, 0x80000000ull + i * 0x1000ull, 1 + i % 3 / 2), VIOMMU_S_OK,
			     "gap map %u", i);
		q[i] = (struct viommu_query){ .endpoint = 8, .access = 1 + (i % 4 == 1), .iova = va + 8 * i, .size = 8 };
	}
	cr_assert_eq(viommu_device_nr_mappings(dev), n + 64);
	/* Overlapping what is mapped: refused after the hint, nothing changed. */
	cr_assert_eq(test_map(dev, 1, base, base + 0xfff, 0x9000, 3), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 1, far, far + 0x1fff, 0x9000, 3), VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_nr_mappings(dev), n + 64);
	check_queries(r, &(struct viommu_query){ .endpoint = 8, .access = 1, .iova = base + 8, .size = 8 }, 1);
	check_queries(r, q, 64);
	for (unsigned i = 0; i < 64; i += 2)
		cr_assert_eq(test_unmap(dev, 1, q[i].iova & ~0xfffull, (q[i].iova & ~0xfffull) + 0xfff), VIOMMU_S_OK);
	check_queries(r, q, 64);
	viommu_reader_close(r);
}

Test(fastpath, a_dma_across_more_than_16_mappings_gets_the_store_answer_on_every_path)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[VIOMMU_BULK_MAX];
	unsigned n = 0;

	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	map_run(1, ~0u, ~0u);
	map_run(2, 25, 33); /* domain 2: page 25 read-only, page 33 unmapped */
	for (unsigned ep = 8; ep <= 9; ep++)
		for (unsigned acc = 1; acc <= 2; acc++) {
			/* 16 extents exactly, 17, all 40, 16 then the byte after the run, from an
			 * offset, and the whole run plus one unmapped byte. */
			static const uint64_t spans[][2] = {
				{ 0, 16 << 12 }, { 0, (16 << 12) + 1 }, { 0, RUN_PAGES << 12 },
				{ (RUN_PAGES - 16) << 12, (16 << 12) + 1 }, { 0x123, (37 << 12) },
				{ 0, (RUN_PAGES << 12) + 1 }, { 0xfff, (17 << 12) + 2 },
			};

			for (unsigned k = 0; k < sizeof(spans) / sizeof(spans[0]); k++)
				q[n++] = (struct viommu_query){ .endpoint = ep, .access = acc,
								.iova = RUN_BASE + spans[k][0],
								.size = spans[k][1] };
		}
	check_queries(r, q, n);
	for (unsigned i = 0; i < n; i++) {
		struct viommu_answer a, want;

		viommu_device_answer(dev, &q[i], &want);
		cr_assert_eq(viommu_reader_translate(r, &q[i], &a), want.result,
			     "single lookup, query %u: %u (store %u)", i, a.result, want.result);
		cr_assert(want.result != VIOMMU_XLATE_RETRY && want.result != VIOMMU_XLATE_MORE);
	}
	/* Spot checks of what the store says: a HIT across all 40, the hole, the read-only page. */
	{
		struct viommu_answer a;

		cr_assert_eq(viommu_reader_translate(r, &q[2], &a), VIOMMU_XLATE_HIT);
		cr_assert_eq(a.ext_start, RUN_BASE, "the extent of the first byte");
		cr_assert_eq(viommu_reader_translate(r, &q[7 + 7 + 2], &a), VIOMMU_XLATE_FAULT); /* ep 9, read, all */
		cr_assert_eq(a.fault_addr, RUN_BASE + (33ull << 12));
		cr_assert_eq(viommu_reader_translate(r, &q[7 + 7 + 7 + 2], &a), VIOMMU_XLATE_FAULT); /* write */
		cr_assert_eq(a.fault_addr, RUN_BASE + (25ull << 12));
	}
	viommu_reader_close(r);
}

Test(fastpath, a_dma_past_the_top_across_many_mappings_faults_at_its_first_byte)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	uint64_t top = ~0ull - (20ull << 12) + 1; /* the last 20 pages */
	struct viommu_query q[3] = {
		{ .endpoint = 8, .access = 1, .iova = top, .size = 20ull << 12 }, /* to the top: HIT */
		{ .endpoint = 8, .access = 1, .iova = top, .size = (20ull << 12) + 1 }, /* past it */
		{ .endpoint = 8, .access = 1, .iova = top + 0x800, .size = 1ull << 40 },
	};
	struct viommu_answer a;

	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	for (unsigned i = 0; i < 20; i++)
		cr_assert_eq(test_map(dev, 1, top + ((uint64_t)i << 12), top + ((uint64_t)i << 12) + 0xfff,
				     (uint64_t)(i + 1) << 20, 1), VIOMMU_S_OK);
	check_queries(r, q, 3);
	cr_assert_eq(viommu_reader_translate(r, &q[0], &a), VIOMMU_XLATE_HIT);
	cr_assert_eq(viommu_reader_translate(r, &q[2], &a), VIOMMU_XLATE_FAULT);
	cr_assert_eq(a.fault_addr, top + 0x800);
	viommu_reader_close(r);
}

/* The syscall program itself answers MORE (the verifier bounds its loop); following `next` with
 * viommu_query_continue / viommu_answer_fold reaches the store's answer. */
Test(fastpath, the_syscall_program_answers_more_with_the_first_unchecked_byte)
{
	struct viommu_batch b = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &b, .ctx_size_in = sizeof(b)); /* copied back */
	struct viommu_query q = { .endpoint = 8, .access = 1, .iova = RUN_BASE + 8,
				  .size = (RUN_PAGES << 12) - 8 }; /* the whole run from byte 8 */
	struct viommu_answer a, want;
	unsigned runs = 0;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	map_run(1, ~0u, ~0u);
	b.n = 1;
	b.q[0] = q;
	cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_syscall_fd(fp), &o), 0, "%s", strerror(errno));
	a = b.a[0];
	cr_assert_eq(a.result, VIOMMU_XLATE_MORE);
	cr_assert_eq(a.next, RUN_BASE + ((uint64_t)VIOMMU_SPAN_MAX << 12));
	cr_assert(a.ext_start == RUN_BASE && a.ext_end == RUN_BASE + 0xfff && a.pa == a.ext_phys + 8);
	viommu_device_answer(dev, &q, &want);
	cr_assert(viommu_fastpath_agrees(&q, &want, &a), "MORE agrees with the store's HIT");
	while (a.result == VIOMMU_XLATE_MORE) {
		viommu_query_continue(&q, &a, &b.q[0]);
		cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_syscall_fd(fp), &o), 0);
		viommu_answer_fold(&q, &a, &b.a[0]);
		cr_assert_lt(++runs, 4);
	}
	cr_assert_eq(runs, 2, "40 extents: 16 + 16 + 8");
	cr_assert(viommu_fastpath_agrees(&q, &want, &a));
	cr_assert_eq(a.result, VIOMMU_XLATE_HIT);
}

/* ---- the XDP program, katran-style: fixture table through bpf_prog_test_run_opts ---- */

struct xdp_frame {
	struct ethhdr eth;
	struct viommu_query q;
	struct viommu_answer a;
} __attribute__((packed));

struct xdp_case {
	const char *what;
	struct viommu_query q;
	int action;
	uint32_t result, reason;
	uint64_t pa;
};

Test(fastpath, xdp_program_answers_the_fixture_table)
{
	static const struct xdp_case cases[] = {
		{ "mapped read", { 8, 1, 0x10010, 16 }, XDP_TX, VIOMMU_XLATE_HIT, 0, 0x80010 },
		{ "read-only mapping written", { 8, 2, 0x10010, 1 }, XDP_DROP, VIOMMU_XLATE_FAULT, VIOMMU_FAULT_R_MAPPING, 0 },
		{ "two adjacent mappings", { 8, 1, 0x10ff0, 0x20 }, XDP_TX, VIOMMU_XLATE_HIT, 0, 0x80ff0 },
		{ "unmapped", { 8, 1, 0x40000, 1 }, XDP_DROP, VIOMMU_XLATE_FAULT, VIOMMU_FAULT_R_MAPPING, 0 },
		{ "2 MiB leaf", { 8, 3, 0x40201234, 1 }, XDP_TX, VIOMMU_XLATE_HIT, 0, 0x200001234 },
		{ "unattached endpoint", { 9, 1, 0x10010, 1 }, XDP_DROP, VIOMMU_XLATE_FAULT, VIOMMU_FAULT_R_DOMAIN, 0 },
		{ "unknown endpoint", { 77, 1, 0x10010, 1 }, XDP_DROP, VIOMMU_XLATE_FAULT, VIOMMU_FAULT_R_UNKNOWN, 0 },
		{ "no ACCESS_PLATFORM", { 10, 3, 0xabc000, 1 }, XDP_TX, VIOMMU_XLATE_IDENTITY, 0, 0xabc000 },
		{ "20 adjacent mappings: the first 16 checked", { 8, 1, 0x1000010, 20 << 12 }, XDP_TX,
		  VIOMMU_XLATE_MORE, 0, 0x3000010 },
		{ "16 adjacent mappings then a hole: more to check", { 8, 1, 0x1000000, (16 << 12) + 1 },
		  XDP_TX, VIOMMU_XLATE_MORE, 0, 0x3000000 },
		{ "the hole after them", { 8, 1, 0x1010000, 1 }, XDP_DROP, VIOMMU_XLATE_FAULT,
		  VIOMMU_FAULT_R_MAPPING, 0 },
	};
	struct xdp_frame in, out;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x10fff, 0x80000, 1), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x11000, 0x11fff, 0x81000, 1), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40200000, 0x403fffff, 0x200000000, 3), VIOMMU_S_OK);
	for (uint64_t p = 0; p < 20; p++) /* 0x1000000..0x1013fff, then a hole to 0x1014000 */
		if (p != 16)
			cr_assert_eq(test_map(dev, 1, 0x1000000 + (p << 12), 0x1000fff + (p << 12),
					     0x3000000 + (p << 16), 1), VIOMMU_S_OK);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct xdp_case *c = &cases[i];
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = &in, .data_size_in = sizeof(in),
			    .data_out = &out, .data_size_out = sizeof(out), .repeat = 1);

		memset(&in, 0, sizeof(in));
		in.eth.h_proto = htons(0x88b5);
		in.q = c->q;
		cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_xdp_fd(fp), &o), 0, "%s: %s", c->what,
			     strerror(errno));
		cr_assert_eq((int)o.retval, c->action, "%s: action %u", c->what, o.retval);
		cr_assert_eq(out.a.result, c->result, "%s: result %u", c->what, out.a.result);
		if (c->result == VIOMMU_XLATE_FAULT)
			cr_assert_eq(out.a.reason, c->reason, "%s: reason %u", c->what, out.a.reason);
		else
			cr_assert_eq(out.a.pa, c->pa, "%s: pa 0x%llx", c->what, (unsigned long long)out.a.pa);
		{
			struct viommu_answer want, got = out.a;

			viommu_device_answer(dev, &c->q, &want);
			cr_assert(viommu_fastpath_agrees(&c->q, &want, &got), "%s: agrees with the store",
				  c->what);
		}
	}
}

Test(fastpath, xdp_program_passes_frames_that_are_not_descriptors)
{
	struct xdp_frame in = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = &in, .data_size_in = sizeof(in), .repeat = 1);

	in.eth.h_proto = htons(ETH_P_IP);
	cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_xdp_fd(fp), &o), 0);
	cr_assert_eq(o.retval, XDP_PASS);
	in.eth.h_proto = htons(0x88b5);
	o.data_size_in = sizeof(in.eth) + sizeof(in.q); /* no room for the answer */
	cr_assert_eq(bpf_prog_test_run_opts(viommu_fastpath_xdp_fd(fp), &o), 0);
	cr_assert_eq(o.retval, XDP_PASS);
}

Test(fastpath, faults_seen_by_bpf_reach_the_device_event_queue)
{
	struct viommu_query q = { .endpoint = 8, .access = 2, .iova = 0x7000, .size = 1 };
	struct viommu_answer a;
	struct viommu_wire_fault f;

	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	viommu_device_eventq_post(dev, 1);
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, &q, &a, 1, true), 0);
	cr_assert_eq(a.result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(viommu_fastpath_poll_faults(fp), 1);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	cr_assert_eq(f.reason, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(viommu_le32(&f.endpoint), 8);
	cr_assert_eq(viommu_le64(&f.address), 0x7000);
	cr_assert_eq(viommu_le32(&f.flags), VIOMMU_FAULT_F_WRITE | VIOMMU_FAULT_F_ADDRESS);
}

Test(fastpath, an_empty_bpf_batch_may_pass_null_arrays)
{
	/* memcpy(NULL, 0) is undefined: the ASan+UBSan run catches an unguarded copy. */
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, NULL, NULL, 0, false), 0);
}

Test(fastpath, a_full_node_pool_answers_nomem_and_changes_nothing)
{
	struct viommu_config cfg;
	struct viommu_fastpath_opts o = { .nodes = 5, .overcommit = true };
	const struct viommu_meta *m;
	uint32_t nodes;

	fp_teardown();
	viommu_config_default(&cfg);
	fp_setup_with(&cfg, &o);
	m = viommu_fastpath_view(fp)->meta;
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK); /* root: 1 node */
	/* 4 more interior nodes (levels 1-4): the pool is full; and a leaf. */
	cr_assert_eq(test_map(dev, 1, 0x1000, 0x1fff, 0x1000, 1), VIOMMU_S_OK);
	nodes = m->nodes_used;
	cr_assert_eq(nodes, 5);
	cr_assert_eq(m->leaves_used, 1);
	/* Needs new level-2..4 nodes under another 512 GiB region: no room. */
	cr_assert_eq(test_map(dev, 1, 1ull << 40, (1ull << 40) + 0xfff, 0x2000, 1), VIOMMU_S_NOMEM);
	cr_assert_eq(m->nodes_used, nodes);
	cr_assert_eq(m->leaves_used, 1);
	cr_assert_eq(viommu_device_nr_mappings(dev), 1);
	cr_assert_eq(m->solo_used, 1, "a one-page mapping: its PTE, no record");
	cr_assert_eq(m->extents_used, 0);
	/* Another domain cannot get a root either. */
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_NOMEM);
	cr_assert_null(viommu_device_domain(dev, 2));
	cr_assert_eq(viommu_device_endpoint_state(dev, 9), VIOMMU_EP_BYPASS);
}

Test(fastpath, a_map_refused_halfway_down_the_radix_frees_the_nodes_it_took)
{
	struct viommu_config cfg;
	struct viommu_fastpath_opts o = { .nodes = 7, .overcommit = true };
	const struct viommu_meta *m;
	struct viommu_reader *r;
	struct viommu_query q = { .endpoint = 8, .access = 1, .iova = 1ull << 39, .size = 1 };
	struct viommu_answer want, got;

	fp_teardown();
	viommu_config_default(&cfg);
	fp_setup_with(&cfg, &o);
	m = viommu_fastpath_view(fp)->meta;
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x1000, 0x1fff, 0x1000, 1), VIOMMU_S_OK); /* 5 nodes, a leaf */
	/* Needs 3 new interior nodes (levels 2-4) with 2 left: two are linked, the third fails. */
	cr_assert_eq(test_map(dev, 1, 1ull << 48, (1ull << 48) + 0xfff, 0x2000, 1), VIOMMU_S_NOMEM);
	cr_assert_eq(m->nodes_used, 5, "the two nodes linked before the failure are freed");
	cr_assert_eq(m->leaves_used, 1, "and no leaf was taken");
	/* So a map that needs exactly two new nodes (levels 3-4) and a leaf fits. */
	cr_assert_eq(test_map(dev, 1, 1ull << 39, (1ull << 39) + 0xfff, 0x3000, 1), VIOMMU_S_OK);
	cr_assert_eq(m->nodes_used, 7);
	cr_assert_eq(m->leaves_used, 2);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	viommu_device_answer(dev, &q, &want);
	cr_assert_eq(viommu_reader_translate(r, &q, &got), want.result);
	viommu_reader_close(r);
	viommu_device_reset(dev);
	cr_assert_eq(m->nodes_used, 0, "nothing leaked across the reset");
	cr_assert_eq(m->leaves_used, 0, "nothing leaked across the reset");
}

/* A reader hammering an address inside a MAP that keeps failing for want of nodes. */
struct refused_reader {
	struct viommu_reader *r;
	int stop;
	uint64_t hits, faults, retries, lookups; /* lookups: atomic, the test waits on it */
};

static void *refused_reader_main(void *arg)
{
	struct refused_reader *rr = arg;
	struct viommu_query q = { .endpoint = 8, .access = 1, .iova = 0x2000, .size = 1 };
	struct viommu_answer a;

	while (!__atomic_load_n(&rr->stop, __ATOMIC_ACQUIRE)) {
		viommu_reader_tlb_flush(rr->r);
		switch (viommu_reader_translate(rr->r, &q, &a)) {
		case VIOMMU_XLATE_HIT:
			rr->hits++;
			break;
		case VIOMMU_XLATE_FAULT:
			rr->faults++;
			break;
		case VIOMMU_XLATE_RETRY: /* raced with the writer's attempt */
			rr->retries++;
			break;
		default:
			break;
		}
		__atomic_store_n(&rr->lookups, rr->lookups + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* @window: the domain's window holds [0, 2 MiB), so the refused MAP's first 510 pages go there
 * and its last page needs the pool's second leaf (the pool's one leaf holds 0x400000). */
static void map_refused_halfway(bool window)
{
	struct viommu_fastpath_opts o = { .nodes = window ? 6 : 5, .leaves = 1, .overcommit = true,
					  .windows = window ? 1 : VIOMMU_WINDOWS_NONE, .window_regions = 1 };
	struct refused_reader rr = { 0 };
	uint64_t before;
	pthread_t th;

	fp_teardown();
	fp_setup_opts(&o);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x1000, 0x1fff, 0x100000, 3), VIOMMU_S_OK); /* the pool is full */
	if (window) {
		cr_assert_eq(viommu_fastpath_view(fp)->wins[0].regions, 1, "the first MAP placed the window");
		cr_assert_eq(test_map(dev, 1, 0x400000, 0x400fff, 0x300000, 3), VIOMMU_S_OK); /* now it is */
	}
	rr.r = viommu_reader_open(fp);
	cr_assert_not_null(rr.r);
	cr_assert_eq(pthread_create(&th, NULL, refused_reader_main, &rr), 0);
	while (!__atomic_load_n(&rr.lookups, __ATOMIC_RELAXED)) /* it is looking up already */
		usleep(100);
	/* Its first 510 pages fit in the existing leaf (their PTEs are installed, not present);
	 * its last page needs a second leaf: refused, and the 510 are rolled back. */
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(test_map(dev, 1, 0x2000, 0x200fff, 0x200000, 3), VIOMMU_S_NOMEM);
	before = __atomic_load_n(&rr.lookups, __ATOMIC_RELAXED);
	__atomic_store_n(&rr.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	viommu_reader_close(rr.r);
	cr_log_info("%llu lookups during 5000 refused MAPs", (unsigned long long)before);
	cr_assert_gt(before, 0, "the reader looked the address up while the MAPs were refused");
	cr_assert_eq(rr.faults + rr.retries, rr.lookups,
		     "every lookup faulted or met the writer (%llu hits, %llu faults, %llu retries of %llu)",
		     (unsigned long long)rr.hits, (unsigned long long)rr.faults,
		     (unsigned long long)rr.retries, (unsigned long long)rr.lookups);
	cr_assert_gt(rr.faults, 0);
	cr_assert_eq(rr.hits, 0, "a refused MAP was seen %llu times", (unsigned long long)rr.hits);
}

Test(fastpath, a_map_refused_halfway_is_never_visible_to_readers)
{
	map_refused_halfway(false);
}

Test(fastpath, a_map_refused_halfway_through_a_window_is_never_visible_to_readers)
{
	map_refused_halfway(true);
}

Test(fastpath, a_device_granule_below_4k_is_refused_with_enotsup)
{
	struct viommu_config cfg;
	struct viommu_device *d;

	viommu_config_default(&cfg);
	cfg.page_size_mask = 0x200;
	d = viommu_device_new(&cfg);
	cr_assert_null(viommu_fastpath_new(d, NULL));
	cr_assert_eq(errno, ENOTSUP);
	viommu_device_free(d);
}

/* A reader thread of the device's process: inside its section, holding the translation, it
 * says so, keeps it for a while, marks its use done, and only then exits. */
struct holder {
	struct viommu_reader *r;
	int ready, done_using, result;
};

static void *hold_translation_main(void *arg)
{
	struct holder *h = arg;
	struct viommu_query q = { .endpoint = 8, .access = VIOMMU_MAP_F_READ, .iova = 0x3008, .size = 8 };
	struct viommu_answer a;

	viommu_reader_enter(h->r);
	if (viommu_reader_translate(h->r, &q, &a) != VIOMMU_XLATE_HIT || a.pa != 0x55008) {
		__atomic_store_n(&h->result, 1, __ATOMIC_RELAXED);
		viommu_reader_exit(h->r);
		__atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	__atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
	usleep(100 * 1000);
	__atomic_store_n(&h->done_using, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->result, viommu_reader_exit(h->r) ? 2 : 0, __ATOMIC_RELAXED);
	return NULL;
}

/* A strict UNMAP while a reader thread is inside its section using the translation returns
 * only after the reader's use is done, in either grace-period mode. */
static void unmap_waits_for_the_reader(bool reader_fence)
{
	/* A grace timeout no descheduled reader reaches: waited for, not revoked. */
	struct viommu_fastpath_opts o = { .reader_fence = reader_fence, .grace_timeout_ms = 20000 };
	const struct viommu_meta *m;
	struct holder h = { 0 };
	uint64_t gp;
	uint32_t revoked;
	pthread_t th;

	fp_teardown();
	fp_setup_opts(&o);
	m = viommu_fastpath_view(fp)->meta;
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x3000, 0x3fff, 0x55000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	h.r = viommu_reader_open(fp);
	cr_assert_not_null(h.r);
	gp = m->grace_periods;
	revoked = m->readers_revoked;
	cr_assert_eq(pthread_create(&th, NULL, hold_translation_main, &h), 0);
	while (!__atomic_load_n(&h.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	cr_assert_eq(__atomic_load_n(&h.result, __ATOMIC_RELAXED), 0, "the reader translated inside its section");
	cr_assert_eq(test_unmap(dev, 1, 0x3000, 0x3fff), VIOMMU_S_OK);
	/* Ordered by the reader's release in exit() and the scan's acquire (R2/W5). */
	cr_assert_eq(__atomic_load_n(&h.done_using, __ATOMIC_RELAXED), 1,
		     "the strict UNMAP completed while the reader still used the translation");
	cr_assert_eq(m->grace_periods, gp + 1);
	cr_assert_eq(m->readers_revoked, revoked, "the reader was waited for, not revoked");
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(h.result, 0, "the reader's exit reported its section intact");
	viommu_reader_close(h.r);
}

Test(fastpath, a_strict_unmap_waits_for_a_reader_thread_inside_its_critical_section)
{
	unmap_waits_for_the_reader(false);
}

Test(fastpath, a_strict_unmap_in_reader_fence_mode_waits_for_a_reader_thread_inside_its_section)
{
	unmap_waits_for_the_reader(true);
}

/* The classification tests/bpf_access.h makes, tried where the kernel serves BPF: a program
 * the verifier rejects fails with an errno the BPF tests would once have skipped on. */
Test(fastpath, a_program_the_verifier_rejects_is_not_mistaken_for_a_kernel_that_refuses_bpf)
{
	struct bpf_insn bad[] = { /* r0 = r2: r2 was never written */
		{ .code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_2 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	const char *why = test_bpf_refusal();
	int fd;

	if (why)
		cr_skip_test("the kernel refuses BPF to this process: %s", why);
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, NULL, "GPL", bad, 2, NULL);
	cr_assert_lt(fd, 0, "the verifier took a read of an uninitialised register");
	cr_assert(errno == EACCES || errno == EINVAL, "errno %d", errno);
	cr_assert_null(test_bpf_refusal(), "a rejection does not change the probe's answer");
}

/* Two-choice hashing with one bucket: VIOMMU_HASH_WAYS regions fit, the next ones are left out. A hash miss
 * is an answer ("not mapped") only while the root says the hash indexes everything the domain
 * has (I6): regions left out, and pieces of 1 GiB or more, must still be found by the walk. */
Test(fastpath, regions_the_hash_leaves_out_are_still_translated_and_misses_skip_the_walk)
{
	struct viommu_fastpath_opts o = { .hash_buckets = 1, .overcommit = true };
	const struct viommu_fp_view *v;
	struct viommu_reader *r;
	struct viommu_query q[8];

	fp_teardown();
	fp_setup_opts(&o);
	v = viommu_fastpath_view(fp);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	for (unsigned i = 0; i < 6; i++) /* six 2 MiB regions, one page each: 6 - ways left out */
		cr_assert_eq(test_map(dev, 1, (uint64_t)i << 21, ((uint64_t)i << 21) + 0xfff, 0x100000ull * (i + 1), 3),
			     VIOMMU_S_OK);
	cr_assert_eq(v->meta->hash_used, VIOMMU_HASH_WAYS);
	cr_assert_eq(v->nodes[v->eps[8].root].flags, VIOMMU_ROOT_F_WALK, "two regions need the walk");
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	for (unsigned i = 0; i < 6; i++)
		q[i] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = ((uint64_t)i << 21) + 8, .size = 1 };
	q[6] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 7ull << 21, .size = 1 }; /* a miss */
	q[7] = (struct viommu_query){ .endpoint = 8, .access = 1, .iova = 5ull << 21, .size = 1 };
	check_queries(r, q, 8);
	/* Unmapping the regions left out: nothing is left out, the root stops asking for walks. */
	for (uint64_t i = VIOMMU_HASH_WAYS; i < 6; i++)
		cr_assert_eq(test_unmap(dev, 1, i << 21, (i << 21) + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	cr_assert_eq(v->nodes[v->eps[8].root].flags, 0, "a hash miss is a miss again");
	check_queries(r, q, 8);
	/* A 1 GiB piece is never in the hash: the root asks for walks again while it is mapped. */
	cr_assert_eq(test_map(dev, 1, 1ull << 30, (2ull << 30) - 1, 1ull << 32, 3), VIOMMU_S_OK);
	cr_assert_eq(v->nodes[v->eps[8].root].flags, VIOMMU_ROOT_F_WALK);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	q[7].iova = (1ull << 30) + 0x12345;
	check_queries(r, q, 8);
	viommu_reader_close(r);
}

/* The BPF batch's first pass (viommu_bpf_touch(): unchecked loads of the lines each query's
 * lookup reads) runs from VIOMMU_TOUCH_LEAVES_MIN leaves in use: with it, the batch answers
 * what the store answers, for pages in the window, pages and records past it (the hash),
 * 2 MiB pieces, misses, whole-extent queries and endpoints the window does not take. */
Test(fastpath, a_batch_that_loads_its_lines_first_answers_as_the_store)
{
	const struct viommu_meta *m = viommu_fastpath_view(fp)->meta;
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q[VIOMMU_BULK_MAX];

	cr_assert_not_null(r);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_add_endpoint(dev, 70000, true, NULL, 0), 0); /* a sparse id */
	cr_assert_eq(test_attach(dev, 1, 70000, 0), VIOMMU_S_OK);
	for (uint64_t i = 0; i < 12; i++) {
		uint64_t in = (i << 21) + 0x5000, past = (8ull << 30) + (i << 21) + 0x7000;

		cr_assert_eq(test_map(dev, 1, in, in + 0xfff, 0x100000000ull + (i << 12), 3), VIOMMU_S_OK);
		cr_assert_eq(test_map(dev, 1, past, past + 0x3fff, 0x200000000ull + (i << 14), 1), VIOMMU_S_OK);
	}
	cr_assert_eq(test_map(dev, 1, 40ull << 21, (41ull << 21) - 1, 0x300000000ull, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 12ull << 30, (12ull << 30) + (2ull << 20) - 1, 0x400000000ull, 2),
		     VIOMMU_S_OK);
	cr_assert_geq(m->leaves_used, VIOMMU_TOUCH_LEAVES_MIN, "%u leaves in use: the pass would not run",
		      m->leaves_used);
	for (int round = 0; round < 8; round++) {
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
			static const uint64_t bases[] = { 0, 8ull << 30, 12ull << 30, 40ull << 21 };
			uint64_t base = bases[rnd() % 4];

			q[i].endpoint = rnd() % 8 ? 8 : 70000;
			q[i].iova = base + (rnd() % 14 << 21) + (rnd() % 16 << 12) + rnd() % 4096;
			q[i].size = rnd() % 4 ? 1 : 1 + rnd() % 0x3000;
			q[i].access = (1 + (uint32_t)(rnd() % 3)) | (rnd() % 4 ? 0 : VIOMMU_QUERY_F_EXTENT);
		}
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	viommu_reader_close(r);
}

/* ---- memory follows use (issue 11, "Many VMs per host") ---- */

static struct viommu_device *mem_dev;
static struct viommu_fastpath *mem_fp;

static void mem_setup(const struct viommu_fastpath_opts *o)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	mem_dev = viommu_device_new(&cfg);
	cr_assert_not_null(mem_dev);
	cr_assert_eq(viommu_device_add_endpoint(mem_dev, 8, true, NULL, 0), 0);
	mem_fp = viommu_fastpath_new(mem_dev, o);
	cr_assert_not_null(mem_fp, "viommu_fastpath_new: %s", strerror(errno));
	cr_assert_eq(test_attach(mem_dev, 1, 8, 0), VIOMMU_S_OK);
}

static void mem_teardown(void)
{
	if (mem_fp && viommu_fastpath_check(mem_fp)) {
		fprintf(stderr, "teardown: the fast path's shared state is inconsistent or leaks\n");
		abort();
	}
	viommu_fastpath_free(mem_fp);
	viommu_device_free(mem_dev);
	mem_fp = NULL;
	mem_dev = NULL;
}

TestSuite(memory, .fini = mem_teardown);

Test(memory, an_idle_fast_path_holds_a_few_pages_of_shared_memory_and_no_bpf_maps)
{
	struct viommu_query q = { .endpoint = 8, .access = VIOMMU_MAP_F_READ, .iova = 0x1000, .size = 1 };
	struct viommu_fastpath_mem m;
	struct viommu_answer a;

	mem_setup(NULL);
	cr_assert_eq(viommu_fastpath_memory(mem_fp, &m), 0);
	cr_assert_leq(m.shm_bytes, 64 * 1024, "an idle device holds %llu B of memfd",
		      (unsigned long long)m.shm_bytes);
	cr_assert_gt(m.shm_size, 100u << 20, "the default pools still reach %llu B",
		     (unsigned long long)m.shm_size);
	cr_assert_eq(m.bpf_bytes, 0);
	cr_assert_eq(viommu_fastpath_bpf_translate(mem_fp, &q, &a, 1, false), -ENODEV);
	cr_assert_eq(viommu_fastpath_xdp_fd(mem_fp), -ENODEV);
	cr_assert_eq(viommu_fastpath_syscall_fd(mem_fp), -ENODEV);
}

/* A Linux guest's 10K one-page mappings, top-down below 4 GiB with holes: the shared memory they
 * cost is what they touch (under a MiB), not the pools' size. */
Test(memory, ten_thousand_clustered_pages_cost_under_a_megabyte_of_shared_memory)
{
	const struct viommu_fastpath_opts o = { .nodes = 64 + VIOMMU_NODES_PER_MAP_WORST * 12288,
						.leaves = VIOMMU_LEAVES_PER_MAP_WORST * 12288, .extents = 12288,
						.lazy = true };
	struct viommu_fastpath_mem idle, m;
	struct viommu_reader *r;
	uint64_t iova = 1ull << 32;

	mem_setup(&o);
	cr_assert_eq(viommu_fastpath_memory(mem_fp, &idle), 0);
	r = viommu_reader_open(mem_fp);
	cr_assert_not_null(r);
	for (int i = 0; i < 10000; i++) {
		iova -= (i % 16 == 15 ? 2 : 1) * 4096ull;
		cr_assert_eq(test_map(mem_dev, 1, iova, iova + 4095, (uint64_t)(i + 1) << 12, VIOMMU_MAP_F_READ),
			     VIOMMU_S_OK, "MAP %d", i);
		if (i % 97 == 0) {
			struct viommu_query q = { .endpoint = 8, .access = VIOMMU_MAP_F_READ, .iova = iova + 8, .size = 1 };
			struct viommu_answer a;

			cr_assert_eq(viommu_reader_translate(r, &q, &a), VIOMMU_XLATE_HIT);
			cr_assert_eq(a.pa, ((uint64_t)(i + 1) << 12) + 8);
		}
	}
	viommu_reader_close(r);
	cr_assert_eq(viommu_fastpath_memory(mem_fp, &m), 0);
	cr_assert_gt(m.shm_bytes, idle.shm_bytes + 10000 * sizeof(struct viommu_extent_rec));
	cr_assert_leq(m.shm_bytes, 1u << 20, "10K pages hold %llu B of memfd (pools: %llu B)",
		      (unsigned long long)m.shm_bytes, (unsigned long long)m.shm_size);
	cr_assert_eq(m.bpf_bytes, 0);
}

/* The BPF replica made after mappings exist is a copy of the memfd, and every change after it
 * reaches both (viommu_fastpath_check compares them byte for byte). */
Test(memory, a_bpf_replica_made_late_answers_as_the_store_and_stays_in_step)
{
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer want[VIOMMU_BULK_MAX], got[VIOMMU_BULK_MAX];
	struct viommu_fastpath_mem m;
	int err;

	mem_setup(NULL);
	for (uint64_t i = 0; i < 300; i++)
		cr_assert_eq(test_map(mem_dev, 1, 0x100000 + i * 0x2000, 0x100fff + i * 0x2000, (i + 1) << 20,
				      VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_map(mem_dev, 1, 1ull << 32, (1ull << 32) + (2u << 20) - 1, 0x40000000,
			      VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE), VIOMMU_S_OK);
	if ((err = viommu_fastpath_bpf_enable(mem_fp)))
		test_skip_if_kernel_refuses_bpf(-err);
	cr_assert_eq(err, 0, "viommu_fastpath_bpf_enable: %s", strerror(-err));
	cr_assert_eq(viommu_fastpath_bpf_enable(mem_fp), 0, "idempotent");
	cr_assert_eq(viommu_fastpath_memory(mem_fp, &m), 0);
	cr_assert_gt(m.bpf_bytes, m.shm_size, "the replica is allocated whole");
	cr_assert_eq(viommu_fastpath_check(mem_fp), 0);
	for (int round = 0; round < 2; round++) {
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
			q[i] = (struct viommu_query){ .endpoint = 8, .access = VIOMMU_MAP_F_READ, .size = 1,
						      .iova = i == 0 ? (1ull << 32) + 0x12345 :
							      0x100000 + (uint64_t)(i * 4) * 0x1000 + 0x10 };
			viommu_device_answer(mem_dev, &q[i], &want[i]);
		}
		cr_assert_eq(viommu_fastpath_bpf_translate(mem_fp, q, got, VIOMMU_BULK_MAX, false), 0);
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
			assert_same(&q[i], &want[i], &got[i], "bpf replica");
		/* Then change things: every other page goes, new ones come. */
		for (uint64_t i = 0; i < 300; i += 2)
			test_unmap(mem_dev, 1, 0x100000 + i * 0x2000, 0x100fff + i * 0x2000);
		for (uint64_t i = 0; i < 100; i++)
			cr_assert_eq(test_map(mem_dev, 1, 0x101000 + i * 0x2000 + round * 0x400000ull,
					      0x101fff + i * 0x2000 + round * 0x400000ull, (i + 7) << 20,
					      VIOMMU_MAP_F_READ), VIOMMU_S_OK);
		cr_assert_eq(viommu_fastpath_check(mem_fp), 0);
	}
}

Test(memory, faults_seen_by_readers_of_this_process_reach_the_device_without_bpf)
{
	struct viommu_query q = { .endpoint = 8, .access = VIOMMU_MAP_F_WRITE, .iova = 0x7000, .size = 1 };
	struct viommu_wire_fault f;
	struct viommu_answer a;
	struct viommu_reader *r;

	mem_setup(NULL);
	viommu_device_eventq_post(mem_dev, 1);
	r = viommu_reader_open(mem_fp);
	cr_assert_not_null(r);
	cr_assert_eq(viommu_reader_translate(r, &q, &a), VIOMMU_XLATE_FAULT);
	cr_assert_eq(viommu_reader_report_fault(r, &q, &a), 0);
	viommu_reader_close(r);
	cr_assert_eq(viommu_fastpath_poll_faults(mem_fp), 1);
	cr_assert_eq(viommu_device_fault_pop(mem_dev, &f), 0);
	cr_assert_eq(f.reason, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(viommu_le64(&f.address), 0x7000);
	cr_assert_eq(viommu_fastpath_poll_faults(mem_fp), 0);
}
