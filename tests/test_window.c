// SPDX-License-Identifier: MIT
/*
 * Windows (ABI v6, fastpath.c's win_* and viommu_abi.h's viommu_windows): a domain's first MAP
 * places a window of leaves over the aligned block holding it; its pages then live at computed
 * leaf indices, its 2 MiB pieces (and those past it, ABI v7) are words of its piece window,
 * pieces of 1 GiB or more over it make it VIOMMU_WIN_F_WIDE, and readers keep a private copy of
 * each endpoint's window (viommu_reader_epw) that answers a one-page query inline.
 *
 * Every answer is checked against the store (viommu_device_answer) on every path: the inline
 * reader (twice: the first lookup may make the reader's copy, the second answers from it), the
 * bulk reader, the BPF syscall program, and a reader in another process; the fast path's
 * self-check follows every request. The BPF path is left out (with a warning) only when the
 * kernel refuses BPF to this process; a refusal of the fast path's own programs by a kernel
 * that serves BPF fails (tests/bpf_access.h). Two tests race a reader thread against the writer
 * (windows changing hands, pieces coming and going) and check each answer against what the
 * writer's requests allow at the time.
 *
 * Some checks are white-box on purpose: the shared window entry (viommu_fastpath_view()->wins),
 * the PTEs at the place the window computes for a page, and a reader's copy of an endpoint's
 * window (struct viommu_reader_epw, reader.h). A wrong copy or a window that is never used is
 * otherwise invisible in the answers: the walk answers every query the window declines.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "fastpath.h"
#include "reader.h"
#include "bpf_access.h"
#include "requests.h"
#include "bulk_pa.h"
#include "fastpath_int.h" /* one test plays a generation that wrapped */

#define MSI_START 0xfee00000ull
#define MSI_END 0xfeefffffull
#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define R VIOMMU_MAP_F_READ
#define W VIOMMU_MAP_F_WRITE
#define MMIO VIOMMU_MAP_F_MMIO
#define RW (R | W)
#define WHOLE VIOMMU_QUERY_F_EXTENT
/* The default window (2048 regions, 4 GiB) that most tests place: the block [4 GiB, 8 GiB). */
#define WIN (4 * GIB)
#define WIN_SPAN (4 * GIB)

static struct viommu_device *dev;
static struct viommu_fastpath *fp;
static bool have_bpf;

/* The BPF replica, made after the fast path as a VMM would on demand. A kernel that refuses
 * BPF to this process leaves the BPF path unchecked (the userspace paths still are). */
static void enable_bpf(void)
{
	int err = viommu_fastpath_bpf_enable(fp);
	const char *why;

	have_bpf = !err;
	if (!err)
		return;
	if ((err == -EPERM || err == -EACCES || err == -EINVAL || err == -ENOSYS) && (why = test_bpf_refusal())) {
		cr_log_warn("the BPF path is not checked: the kernel refuses BPF to this process (%s)", why);
		return;
	}
	cr_assert_fail("viommu_fastpath_bpf_enable: %s, and the kernel serves BPF to this process",
		       strerror(-err));
}

/* The device: endpoints 8 and 9 (with the MSI window reserved), 11, 12 and the sparse id
 * 0x123456, all behind the IOMMU; no global bypass, so an endpoint in no domain faults
 * R_DOMAIN. */
#define SPARSE_EP 0x123456u
static void dev_setup(void)
{
	struct viommu_resv msi = { MSI_START, MSI_END, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert_not_null(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, 8, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 9, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 11, true, NULL, 0), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 12, true, NULL, 0), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, SPARSE_EP, true, NULL, 0), 0);
}

/* The fast path over the device as it is, without the BPF replica yet. */
static void fp_setup(const struct viommu_fastpath_opts *o)
{
	fp = viommu_fastpath_new(dev, o);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(fp, "viommu_fastpath_new: %s", strerror(errno));
}

static void win_setup(const struct viommu_fastpath_opts *o)
{
	dev_setup();
	fp_setup(o);
	enable_bpf();
}

static void win_teardown(void)
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

TestSuite(window, .fini = win_teardown);

/* ---- answers on every path ---- */

static struct viommu_query qy(uint32_t ep, uint64_t iova, uint64_t size, uint32_t access)
{
	return (struct viommu_query){ .endpoint = ep, .access = access, .iova = iova, .size = size };
}

static void assert_same(const struct viommu_query *q, const struct viommu_answer *want,
			const struct viommu_answer *got, const char *who)
{
	cr_assert_eq(got->result, want->result,
		     "%s: ep %u iova 0x%llx size 0x%llx access 0x%x: result %u, store %u (pa 0x%llx, reason %u)",
		     who, q->endpoint, (unsigned long long)q->iova, (unsigned long long)q->size, q->access,
		     got->result, want->result, (unsigned long long)got->pa, got->reason);
	if (want->result == VIOMMU_XLATE_HIT || want->result == VIOMMU_XLATE_IDENTITY)
		cr_assert_eq(got->pa, want->pa, "%s: ep %u iova 0x%llx: pa 0x%llx, store 0x%llx", who,
			     q->endpoint, (unsigned long long)q->iova, (unsigned long long)got->pa,
			     (unsigned long long)want->pa);
	if (want->result == VIOMMU_XLATE_HIT)
		cr_assert(viommu_fastpath_agrees(q, want, got),
			  "%s: ep %u iova 0x%llx size 0x%llx access 0x%x: the run [0x%llx, 0x%llx] flags %u is "
			  "the whole extent [0x%llx, 0x%llx] flags %u when asked, else a run of it holding the query",
			  who, q->endpoint, (unsigned long long)q->iova, (unsigned long long)q->size, q->access,
			  (unsigned long long)got->ext_start, (unsigned long long)got->ext_end, got->ext_flags,
			  (unsigned long long)want->ext_start, (unsigned long long)want->ext_end, want->ext_flags);
	if (want->result == VIOMMU_XLATE_FAULT)
		cr_assert(got->reason == want->reason && got->fault_addr == want->fault_addr,
			  "%s: ep %u iova 0x%llx access 0x%x: fault reason %u addr 0x%llx, store %u 0x%llx", who,
			  q->endpoint, (unsigned long long)q->iova, q->access, got->reason,
			  (unsigned long long)got->fault_addr, want->reason, (unsigned long long)want->fault_addr);
}

/* @n (<= VIOMMU_BULK_MAX) queries: the store's answer against the inline reader (twice), the bulk
 * reader and the BPF program. */
static void check_batch(struct viommu_reader *r, const struct viommu_query *q, unsigned n)
{
	struct viommu_answer want[VIOMMU_BULK_MAX], got[VIOMMU_BULK_MAX], a;

	for (unsigned i = 0; i < n; i++)
		viommu_device_answer(dev, &q[i], &want[i]);
	for (unsigned i = 0; i < n; i++) {
		viommu_reader_translate(r, &q[i], &a);
		assert_same(&q[i], &want[i], &a, "inline reader");
		viommu_reader_translate(r, &q[i], &a);
		assert_same(&q[i], &want[i], &a, "inline reader, again");
	}
	viommu_reader_translate_bulk(r, q, got, n);
	for (unsigned i = 0; i < n; i++)
		assert_same(&q[i], &want[i], &got[i], "bulk reader");
	test_check_bulk_pa(r, q, want, n, "bulk reader of PAs");
	if (have_bpf) {
		cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, got, n, false), 0);
		for (unsigned i = 0; i < n; i++)
			assert_same(&q[i], &want[i], &got[i], "bpf");
	}
}

static void check_queries(struct viommu_reader *r, const struct viommu_query *q, unsigned n)
{
	for (unsigned i = 0; i < n; i += VIOMMU_BULK_MAX)
		check_batch(r, q + i, n - i < VIOMMU_BULK_MAX ? n - i : VIOMMU_BULK_MAX);
}

/* Queries about @iova's page from @ep: one byte, the page's last 8 bytes read and written, one
 * byte asking for the whole extent, and a page-sized range into the next page. */
static unsigned probes(struct viommu_query *q, uint32_t ep, uint64_t iova)
{
	uint64_t page = iova & ~0xfffull;

	q[0] = qy(ep, iova, 1, R);
	q[1] = qy(ep, page + 0xff8, 8, RW);
	q[2] = qy(ep, iova, 1, R | WHOLE);
	q[3] = qy(ep, page + 0x800, 0x1000, R);
	return 4;
}

/* The inline reader's answer to one query, which must be the store's. */
static struct viommu_answer translate(struct viommu_reader *r, uint32_t ep, uint64_t iova, uint32_t access)
{
	struct viommu_query q = qy(ep, iova, 1, access);
	struct viommu_answer a, want;

	viommu_reader_translate(r, &q, &a);
	viommu_device_answer(dev, &q, &want);
	assert_same(&q, &want, &a, "inline reader");
	return a;
}

/* ---- requests, each followed by the fast path's self-check ---- */

static void map_ok(uint32_t domain, uint64_t start, uint64_t size, uint64_t pa, uint32_t flags)
{
	cr_assert_eq(test_map(dev, domain, start, start + size - 1, pa, flags), VIOMMU_S_OK,
		     "MAP domain %u [0x%llx, +0x%llx)", domain, (unsigned long long)start, (unsigned long long)size);
	cr_assert_eq(viommu_fastpath_check(fp), 0, "self-check after MAP domain %u [0x%llx, +0x%llx)", domain,
		     (unsigned long long)start, (unsigned long long)size);
}

static void unmap_ok(uint32_t domain, uint64_t start, uint64_t size)
{
	cr_assert_eq(test_unmap(dev, domain, start, start + size - 1), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_check(fp), 0, "self-check after UNMAP domain %u [0x%llx, +0x%llx)",
		     domain, (unsigned long long)start, (unsigned long long)size);
}

static void attach_ok(uint32_t domain, uint32_t ep)
{
	cr_assert_eq(test_attach(dev, domain, ep, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_check(fp), 0, "self-check after ATTACH ep %u to domain %u", ep, domain);
}

/* The default fast path with a reader open and endpoint 8 attached to domain 1, what most tests
 * below start from. */
static struct viommu_reader *win_reader_ep8(void)
{
	struct viommu_reader *r;

	win_setup(NULL);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	return r;
}

static void detach_ok(uint32_t domain, uint32_t ep)
{
	cr_assert_eq(test_detach(dev, domain, ep), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_check(fp), 0, "self-check after DETACH ep %u from domain %u", ep, domain);
}

/* ---- the shared state, white-box ---- */

static const struct viommu_fp_view *view(void)
{
	return viommu_fastpath_view(fp);
}

static __u64 piece_entry(uint32_t d, uint64_t iova);

/* The domain slot endpoint @ep is attached to. */
static uint32_t dslot_of(uint32_t ep)
{
	cr_assert_eq(view()->eps[ep].state, VIOMMU_EP_ATTACHED, "endpoint %u is attached", ep);
	return view()->eps[ep].domain_slot;
}

/* Domain slot @d has a window over [@base, + the window size), wide or not; returns its number. */
static uint32_t assert_window(uint32_t d, uint64_t base, bool wide)
{
	const struct viommu_meta *m = view()->meta;
	const struct viommu_window *w = &view()->wins[d];
	uint32_t n;

	cr_assert_eq(w->regions, m->window_regions, "domain slot %u has a window: regions %u", d, w->regions);
	cr_assert_eq(w->base & ~VIOMMU_WIN_F_MASK, base, "domain slot %u: window base 0x%llx, want 0x%llx", d,
		     (unsigned long long)(w->base & ~VIOMMU_WIN_F_MASK), (unsigned long long)base);
	/* VIOMMU_WIN_F_PIECES, a hint, is checked by viommu_fastpath_check() at teardown. */
	cr_assert_eq(w->base & VIOMMU_WIN_F_MASK & ~VIOMMU_WIN_F_PIECES, wide ? VIOMMU_WIN_F_WIDE : 0,
		     "domain slot %u: window flags 0x%llx, want %s", d,
		     (unsigned long long)(w->base & VIOMMU_WIN_F_MASK), wide ? "WIDE" : "none");
	cr_assert_geq(w->leaf, m->windows_leaf, "a window's leaves are past the pool");
	cr_assert_eq((w->leaf - m->windows_leaf) % m->window_regions, 0);
	n = (w->leaf - m->windows_leaf) / m->window_regions;
	cr_assert_lt(n, m->windows_max, "window number %u of %u", n, m->windows_max);
	return n;
}

static void assert_no_window(uint32_t d)
{
	const struct viommu_window *w = &view()->wins[d];

	cr_assert(!w->regions && !w->base && !w->leaf,
		  "domain slot %u has no window: regions %u base 0x%llx leaf %u", d, w->regions,
		  (unsigned long long)w->base, w->leaf);
}

/* The PTE the window of domain slot @d holds for @iova's page, at the place it computes. */
static uint64_t window_pte(uint32_t d, uint64_t iova)
{
	const struct viommu_window *w = &view()->wins[d];
	uint64_t off = iova - (w->base & ~VIOMMU_WIN_F_MASK);

	cr_assert_lt(off, (uint64_t)w->regions << VIOMMU_HASH_SHIFT, "0x%llx is in the window",
		     (unsigned long long)iova);
	return view()->ptes[w->leaf + (off >> VIOMMU_HASH_SHIFT)].pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova)];
}

/* What the radix of endpoint @ep's domain holds for @iova at level 4 (2 MiB regions): a leaf, a
 * whole 2 MiB piece, or, if a larger piece (or nothing) is met higher up, that slot word. */
static uint64_t level4_word(uint32_t ep, uint64_t iova)
{
	const struct viommu_fp_view *v = view();
	uint32_t idx = v->eps[ep].root;

	for (int l = 0; l < VIOMMU_HASH_LEVEL; l++) {
		uint64_t w = v->nodes[idx].slot[VIOMMU_SLOT_OF(l, iova)];

		if (VIOMMU_SLOT_TAG(w) != VIOMMU_SLOT_NODE)
			return w;
		idx = VIOMMU_SLOT_IDX(w);
	}
	return v->nodes[idx].slot[VIOMMU_SLOT_OF(VIOMMU_HASH_LEVEL, iova)];
}

/* Reader @r's private copy of endpoint @ep's window: made at its current entry, [base, + span)
 * (span 0: no window), its PTEs those of the window leaves from @leaf. */
static void assert_reader_copy(const struct viommu_reader *r, uint32_t ep, uint64_t base, uint64_t span,
			       uint32_t leaf)
{
	const struct viommu_reader_epw *c = &r->epw[ep % VIOMMU_READER_EPW];

	cr_assert_eq(c->ep, ep, "the reader has a copy of endpoint %u's window", ep);
	cr_assert_eq(c->ep_seq, __atomic_load_n(&r->eps[ep].seq, __ATOMIC_ACQUIRE),
		     "the copy of endpoint %u's window is made at its entry's current seq (copy %u)", ep, c->ep_seq);
	cr_assert_eq(c->span, span, "the copy of endpoint %u's window spans 0x%llx bytes, want 0x%llx", ep,
		     (unsigned long long)c->span, (unsigned long long)span);
	cr_assert(c->pte_span == span || c->pte_span == 0, "the copy reads the PTE first over 0x%llx bytes",
		  (unsigned long long)c->pte_span);
	if (span) {
		cr_assert_eq(c->base, base, "the copy's base 0x%llx", (unsigned long long)c->base);
		cr_assert_eq(c->first, r->ptes[leaf].pte, "the copy's PTEs are the window's");
	}
}

/* ---- 1. placement ---- */

/* The first MAP of a domain puts its window over the aligned block holding it; the pages inside
 * live at the leaves the window computes (the same leaves the radix links), those outside in the
 * pool's leaves; a MAP across either edge of the window is both. */
Test(window, a_domains_first_map_places_its_window_over_the_aligned_block_holding_it)
{
	const struct viommu_meta *m;
	struct viommu_reader *r;
	struct viommu_query q[128];
	uint32_t d, wl, n = 0;
	static const uint64_t inside[] = { WIN + 0x12345000, WIN, WIN + 0x1000, WIN + 2 * MIB - 0x8000,
					   WIN + 2 * MIB + 0x7000, WIN + WIN_SPAN - 0x1000 };
	static const uint64_t outside[] = { WIN - 0x2000, WIN - 0x1000, WIN + WIN_SPAN };

	win_setup(&(struct viommu_fastpath_opts){ .windows = 2 });
	m = view()->meta;
	cr_assert_eq(m->window_regions, VIOMMU_WINDOW_REGIONS_DEFAULT);
	cr_assert_eq((uint64_t)m->window_regions << VIOMMU_HASH_SHIFT, WIN_SPAN);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	d = dslot_of(8);
	assert_no_window(d);
	cr_assert_eq(m->windows_used, 0, "no window before the first MAP");

	map_ok(1, WIN + 0x12345000, 0x1000, 0x70000000, RW); /* the first MAP: one page */
	cr_assert_eq(assert_window(d, WIN, false), 0, "the first window");
	cr_assert_eq(m->windows_used, 1);
	wl = view()->wins[d].leaf;
	cr_assert_eq(window_pte(d, WIN + 0x12345000), (VIOMMU_PTE_MAKE(0x70000000, RW) | VIOMMU_PTE_SOLO),
		     "the page is at the window's computed place");
	cr_assert_eq(level4_word(8, WIN + 0x12345000),
		     VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, wl + 0x91, view()->leaves[wl + 0x91].seq),
		     "the radix links the window's leaf for the region (0x12345000 >> 21)");

	/* More inside: across the bottom edge (two pages below in the pool, two inside), 16
	 * pages across a 2 MiB boundary, the last page of the window. */
	map_ok(1, WIN - 0x2000, 0x4000, 0x80000000, R);
	map_ok(1, WIN + 2 * MIB - 0x8000, 0x10000, 0x90000000, RW);
	map_ok(1, WIN + WIN_SPAN - 0x1000, 0x1000, 0xa0000000, W);
	/* Outside: the first page past the window, and far below it. */
	map_ok(1, WIN + WIN_SPAN, 0x1000, 0xb0000000, RW);
	map_ok(1, 0x10000, 0x1000, 0xc0000000, RW);
	assert_window(d, WIN, false); /* placed once, for the domain's life */
	cr_assert_eq(m->windows_used, 1);

	cr_assert_eq(window_pte(d, WIN), VIOMMU_PTE_MAKE(0x80002000, R));
	cr_assert_eq(window_pte(d, WIN + 0x1000), VIOMMU_PTE_MAKE(0x80003000, R));
	for (uint64_t p = 0; p < 16; p++)
		cr_assert_eq(window_pte(d, WIN + 2 * MIB - 0x8000 + (p << 12)), VIOMMU_PTE_MAKE(0x90000000 + (p << 12), RW),
			     "page %llu of the run across regions 0 and 1", (unsigned long long)p);
	cr_assert_eq(window_pte(d, WIN + WIN_SPAN - 0x1000), (VIOMMU_PTE_MAKE(0xa0000000, W) | VIOMMU_PTE_SOLO),
		     "the window's last page");
	cr_assert_eq(VIOMMU_SLOT_IDX(level4_word(8, WIN + WIN_SPAN - 0x1000)), wl + m->window_regions - 1,
		     "the last region is the window's last leaf");
	for (unsigned i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
		uint64_t w = level4_word(8, outside[i]);

		cr_assert_eq(VIOMMU_SLOT_TAG(w), VIOMMU_SLOT_LEAF);
		cr_assert_lt(VIOMMU_SLOT_IDX(w), m->windows_leaf, "0x%llx, outside the window, is in a pool leaf",
			     (unsigned long long)outside[i]);
	}

	for (unsigned i = 0; i < sizeof(inside) / sizeof(inside[0]); i++)
		n += probes(q + n, 8, inside[i] + 0x10);
	for (unsigned i = 0; i < sizeof(outside) / sizeof(outside[0]); i++)
		n += probes(q + n, 8, outside[i] + 0x10);
	n += probes(q + n, 8, WIN + WIN_SPAN + 0x1000); /* unmapped, outside */
	n += probes(q + n, 8, 0x10000);
	n += probes(q + n, 8, WIN + 0x5000); /* unmapped, inside */
	n += probes(q + n, 8, WIN + 3 * GIB + 0x123);
	q[n++] = qy(8, WIN - 0x1800, 0x3000, R); /* one extent across the bottom edge */
	q[n++] = qy(8, WIN - 0x2000, 0x4000, R | WHOLE);
	q[n++] = qy(8, WIN + WIN_SPAN - 0x800, 0x1000, W); /* two extents across the top edge */
	q[n++] = qy(8, WIN + 2 * MIB - 0x8000, 0x10000, RW); /* the run, whole */
	q[n++] = qy(8, WIN + 2 * MIB - 0x8000, 0x10001, RW); /* and one byte past it */
	q[n++] = qy(9, WIN + 0x12345000, 1, R); /* an endpoint in no domain */
	cr_assert_leq(n, sizeof(q) / sizeof(q[0]));
	check_queries(r, q, n);
	{
		struct viommu_answer a = translate(r, 8, WIN + 0x12345abc, R);

		cr_assert_eq(a.result, VIOMMU_XLATE_HIT);
		cr_assert_eq(a.pa, 0x70000abc);
	}
	assert_reader_copy(r, 8, WIN, WIN_SPAN, wl);
	viommu_reader_close(r);
}

/* Windows at both ends of the address space: the block at 0, and the last block, whose last
 * byte is 2^64 - 1. */
Test(window, windows_at_either_end_of_the_address_space_answer_their_first_and_last_bytes)
{
	struct viommu_reader *r;
	struct viommu_query q[64];
	const uint64_t top = 0ull - WIN_SPAN;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 2 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	map_ok(1, ~0ull - 0xfff, 0x1000, 0x5000, RW);
	assert_window(dslot_of(8), top, false);
	map_ok(1, 0ull - 4 * MIB, 2 * MIB, 0x40000000, R); /* a 2 MiB piece: pages */
	map_ok(2, 0, 0x1000, 0x6000, R);
	assert_window(dslot_of(9), 0, false);
	cr_assert_eq(window_pte(dslot_of(9), 0), (VIOMMU_PTE_MAKE(0x6000, R) | VIOMMU_PTE_SOLO));
	cr_assert_eq(window_pte(dslot_of(8), ~0ull), (VIOMMU_PTE_MAKE(0x5000, RW) | VIOMMU_PTE_SOLO));
	q[n++] = qy(8, ~0ull, 1, W);
	q[n++] = qy(8, ~0ull - 7, 8, RW);
	q[n++] = qy(8, ~0ull - 0xfff, 0x1000, RW);
	q[n++] = qy(8, ~0ull - 0xfff, 0x1001, R); /* runs past 2^64: faults */
	q[n++] = qy(8, ~0ull, 2, R); /* likewise, from the last byte */
	q[n++] = qy(8, ~0ull - 0x1000, 1, R); /* unmapped, in the window */
	q[n++] = qy(8, top, 1, R);
	q[n++] = qy(8, top - 1, 1, R); /* below the window */
	n += probes(q + n, 8, 0ull - 4 * MIB + 0x123);
	n += probes(q + n, 8, 0ull - 2 * MIB - 0x1000 + 0x10);
	q[n++] = qy(9, 0, 1, R);
	q[n++] = qy(9, 0xfff, 1, R);
	q[n++] = qy(9, 0x1000, 1, R);
	q[n++] = qy(9, 0, 0x1000, R | WHOLE);
	q[n++] = qy(9, ~0ull, 1, R); /* domain 2 has nothing there */
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, ~0ull, R).pa, 0x5fff);
	cr_assert_eq(translate(r, 9, 0, R).pa, 0x6000);
	viommu_reader_close(r);
}

/* A first MAP as large as a window places none (it would gain nothing); neither does any later
 * MAP while the domain has mappings; once it has none, the next MAP places one. */
Test(window, a_first_map_as_large_as_a_window_places_none_until_the_domain_is_empty_again)
{
	const uint64_t span = 16 * 2 * MIB; /* 32 MiB windows */
	struct viommu_reader *r;
	struct viommu_query q[32];
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 2, .window_regions = 16 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	map_ok(1, GIB, span, 0x100000000ull, RW); /* exactly a window's size */
	assert_no_window(dslot_of(8));
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, GIB + 6 * MIB)), VIOMMU_SLOT_EXTENT,
		     "without a window a 2 MiB piece stays whole");
	map_ok(1, 0x1000, 0x1000, 0x2000, R);
	assert_no_window(dslot_of(8));
	map_ok(2, GIB, span - 0x1000, 0x200000000ull, RW); /* one page smaller: a window */
	assert_window(dslot_of(9), GIB, false);
	n += probes(q + n, 8, GIB + 0x123);
	n += probes(q + n, 8, GIB + span - 0x10);
	n += probes(q + n, 9, GIB + 0x123);
	n += probes(q + n, 9, GIB + span - 0x1010);
	n += probes(q + n, 9, GIB + span - 0x10); /* its last page is not mapped */
	check_queries(r, q, n);
	unmap_ok(1, GIB, span);
	unmap_ok(1, 0x1000, 0x1000);
	assert_no_window(dslot_of(8));
	map_ok(1, 3 * GIB + 0x5000, 0x1000, 0x3000, R);
	assert_window(dslot_of(8), 3 * GIB, false);
	n = 0;
	n += probes(q + n, 8, 3 * GIB + 0x5000);
	n += probes(q + n, 8, GIB + 0x123);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* ---- 2. 2 MiB pieces inside the window stay whole: their piece window word (ABI v7) ---- */

Test(window, a_2mib_map_inside_the_window_is_one_piece_window_word_and_its_unmap_clears_it)
{
	const uint64_t va = WIN + 6 * MIB, pa = 0x140000000ull; /* both 2 MiB aligned */
	struct viommu_query q[VIOMMU_BULK_MAX];
	const struct viommu_meta *m;
	struct viommu_reader *r;
	uint32_t d, wl, leaves;

	win_setup(NULL);
	m = view()->meta;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	d = dslot_of(8);
	map_ok(1, WIN + 0x1000, 0x1000, 0x1000, R);
	assert_window(d, WIN, false);
	wl = view()->wins[d].leaf;
	leaves = m->leaves_used;

	map_ok(1, va, 2 * MIB, pa, RW);
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, va)), VIOMMU_SLOT_EXTENT, "the 2 MiB piece stays whole");
	cr_assert_eq(m->leaves_used, leaves, "no leaf for its region, the window's unused");
	cr_assert_eq(piece_entry(d, va), VIOMMU_HASH_DIRECT_MAKE(pa, RW), "its piece window word");
	for (uint64_t p = 0; p < 512; p++)
		cr_assert_eq(window_pte(d, va + (p << 12)), 0, "page %llu: no PTE", (unsigned long long)p);
	/* Every page, one byte each, at an offset that moves through the page. */
	for (uint64_t p = 0; p < 512; p += VIOMMU_BULK_MAX) {
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
			q[i] = qy(8, va + ((p + i) << 12) + ((p + i) * 8 % 0x1000), 8, i % 3 ? R : RW);
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	/* Whole-extent queries: the whole 2 MiB, from anywhere in it. */
	for (unsigned i = 0; i < 16; i++)
		q[i] = qy(8, va + (uint64_t)i * 0x21f48, 1 + i, (i % 2 ? R : W) | WHOLE);
	q[16] = qy(8, va, 2 * MIB, RW); /* the whole range */
	q[17] = qy(8, va + 0x800, 2 * MIB - 0x800, R);
	q[18] = qy(8, va, 2 * MIB + 1, R); /* one byte past: faults at its first byte */
	q[19] = qy(8, va - 1, 2, R); /* one byte before: unmapped */
	check_queries(r, q, 20);
	for (unsigned i = 0; i < 16; i++) {
		struct viommu_answer a;

		viommu_reader_translate(r, &q[i], &a);
		cr_assert(a.result == VIOMMU_XLATE_HIT && a.ext_start == va && a.ext_end == va + 2 * MIB - 1 &&
			  a.ext_phys == pa && a.pa == pa + (q[i].iova - va),
			  "query %u: the whole extent [0x%llx, 0x%llx]", i, (unsigned long long)a.ext_start,
			  (unsigned long long)a.ext_end);
	}

	unmap_ok(1, va, 2 * MIB);
	cr_assert_eq(m->leaves_used, leaves);
	cr_assert_eq(level4_word(8, va), 0);
	cr_assert_eq(piece_entry(d, va), 0, "the word cleared");
	cr_assert_eq(view()->leaves[wl + 3].seq, 0, "the window's leaf of the region never used");
	for (uint64_t p = 0; p < 512; p += VIOMMU_BULK_MAX) {
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
			q[i] = qy(8, va + ((p + i) << 12) + 0x10, 1, R | (i % 4 ? 0 : WHOLE));
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	{
		struct viommu_answer a = translate(r, 8, va + 0x1234, R);

		cr_assert_eq(a.result, VIOMMU_XLATE_FAULT, "an unmapped page of the window faults");
		cr_assert_eq(a.reason, VIOMMU_FAULT_R_MAPPING);
	}

	/* Mapped again elsewhere in physical memory: the same reader sees the new pages. */
	map_ok(1, va, 2 * MIB, pa + 64 * MIB, R);
	for (uint64_t p = 0; p < 512; p += VIOMMU_BULK_MAX) {
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
			q[i] = qy(8, va + ((p + i) << 12) + 0x10, 1, R);
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	cr_assert_eq(piece_entry(d, va), VIOMMU_HASH_DIRECT_MAKE(pa + 64 * MIB, R));
	cr_assert_eq(translate(r, 8, va + 0x1234, R).pa, pa + 64 * MIB + 0x1234);
	/* Pages beside it in the window, in the region before (a leaf) and after (the piece's
	 * neighbour): each answered from its PTE or its word, the misses between them misses. */
	map_ok(1, va - 0x1000, 0x1000, 0x7000, RW);
	map_ok(1, va + 2 * MIB, 0x1000, 0x8000, RW);
	cr_assert_eq(translate(r, 8, va - 0x1000 + 8, R).pa, 0x7008);
	cr_assert_eq(translate(r, 8, va + 2 * MIB + 8, R).pa, 0x8008);
	cr_assert_eq(translate(r, 8, va - 0x2000, R).result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(translate(r, 8, va + 2 * MIB + 0x1000, R).result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(translate(r, 8, va + 0x1fff, R).pa, pa + 64 * MIB + 0x1fff);
	/* The word as a MAP or UNMAP in flight leaves it (VIOMMU_PIECE_BUSY, played here on the
	 * writer's memory): the window answers neither hit nor miss, the general path does. */
	{
		const struct viommu_window *w = &view()->wins[d];
		__u64 *word = &fp->pieces[w->pfirst + ((va - w->pbase) >> 21)], was = *word;
		struct viommu_query bq[4];

		FP_STORE(fp, word, (__u64)VIOMMU_PIECE_BUSY, __ATOMIC_RELEASE);
		cr_assert_eq(translate(r, 8, va + 0x2345, R).pa, pa + 64 * MIB + 0x2345, "not a miss");
		bq[0] = qy(8, va + 0x10, 8, R);
		bq[1] = qy(8, va + 0x3010, 1, R);
		bq[2] = qy(8, va + 2 * MIB - 8, 8, R);
		bq[3] = qy(8, va + 0x10, 8, W); /* not writable: the general path's fault */
		check_queries(r, bq, 4);
		FP_STORE(fp, word, was, __ATOMIC_RELEASE);
	}
	viommu_reader_close(r);
}

/* Larger maps inside the window: every 2 MiB piece of them is whole too, its piece window word;
 * an unaligned 2 MiB map is pages. */
Test(window, every_2mib_piece_of_a_larger_map_inside_the_window_is_whole_and_a_word_of_its_piece_window)
{
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_reader *r;
	uint32_t d, wl;
	unsigned n = 0;

	r = win_reader_ep8();
	map_ok(1, WIN + 64 * MIB, 6 * MIB, 0x200000000ull, RW); /* three 2 MiB pieces, the first MAP */
	d = dslot_of(8);
	assert_window(d, WIN, false);
	wl = view()->wins[d].leaf;
	map_ok(1, WIN + 100 * MIB + 0x1000, 2 * MIB, 0x300000000ull, R); /* 2 MiB, not aligned */
	map_ok(1, WIN + WIN_SPAN - 2 * MIB, 4 * MIB, 0x400000000ull, RW); /* half in, half out */
	map_ok(1, 16 * GIB, 2 * MIB, 0x500000000ull, R); /* outside */
	for (uint64_t k = 0; k < 3; k++) {
		cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, WIN + 64 * MIB + (k << 21))), VIOMMU_SLOT_EXTENT,
			     "piece %llu of the 6 MiB map is whole", (unsigned long long)k);
		cr_assert_eq(piece_entry(d, WIN + 64 * MIB + (k << 21)),
			     VIOMMU_HASH_DIRECT_MAKE(0x200000000ull + (k << 21), RW));
	}
	cr_assert_eq(VIOMMU_SLOT_IDX(level4_word(8, WIN + 100 * MIB)), wl + 50, "the unaligned map is pages");
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, WIN + WIN_SPAN - 2 * MIB)), VIOMMU_SLOT_EXTENT);
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, WIN + WIN_SPAN)), VIOMMU_SLOT_EXTENT,
		     "the half outside the window is a whole 2 MiB piece");
	cr_assert_eq(piece_entry(d, WIN + WIN_SPAN), VIOMMU_HASH_DIRECT_MAKE(0x400000000ull + 2 * MIB, RW),
		     "in the piece window too");
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, 16 * GIB)), VIOMMU_SLOT_EXTENT);
	cr_assert_eq(window_pte(d, WIN + 68 * MIB + 0x5000), 0);
	n += probes(q + n, 8, WIN + 64 * MIB);
	n += probes(q + n, 8, WIN + 66 * MIB + 0x777);
	n += probes(q + n, 8, WIN + 70 * MIB - 0x10);
	n += probes(q + n, 8, WIN + 100 * MIB + 0x1000);
	n += probes(q + n, 8, WIN + 102 * MIB + 0x10); /* the last page of the unaligned map */
	n += probes(q + n, 8, WIN + WIN_SPAN - 0x10);
	n += probes(q + n, 8, WIN + WIN_SPAN + 0x10);
	n += probes(q + n, 8, 16 * GIB + MIB);
	q[n++] = qy(8, WIN + 64 * MIB + 0x10, 6 * MIB - 0x10, RW);
	q[n++] = qy(8, WIN + WIN_SPAN - 0x10, 0x20, R | WHOLE);
	q[n++] = qy(8, WIN + 100 * MIB, 0x1001, R); /* starts in the hole before the map */
	check_queries(r, q, n);
	unmap_ok(1, WIN + 64 * MIB, 6 * MIB);
	unmap_ok(1, WIN + WIN_SPAN - 2 * MIB, 4 * MIB);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* ---- 3. pieces of 1 GiB or more over the window ---- */

Test(window, a_piece_of_1gib_or_more_over_the_window_makes_it_wide_until_the_last_one_goes)
{
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_reader *r;
	uint32_t d;
	unsigned n;

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	d = dslot_of(8);
	assert_window(d, WIN, false);
	map_ok(1, 16 * GIB, GIB, 0x1000000000ull, RW); /* a 1 GiB piece outside: not wide */
	assert_window(d, WIN, false);

	map_ok(1, WIN + GIB, GIB, 0x4000000000ull, RW);
	assert_window(d, WIN, true);
	cr_assert_eq(window_pte(d, WIN + GIB + 0x1000), 0, "the 1 GiB piece has no PTE in the window");
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, WIN + GIB)), VIOMMU_SLOT_EXTENT, "it stays whole");
	/* Pages of a wide window: neighbours, and the first page of a region, asked at their
	 * first byte (a base read with its flag bits would move them by one page). */
	map_ok(1, WIN, 0x1000, 0x10000, RW);
	map_ok(1, WIN + 0x6000, 0x1000, 0x6000000, R);
	map_ok(1, WIN + 2 * MIB - 0x1000, 0x2000, 0x7000000, RW);
	n = 0;
	for (uint64_t p = 0; p < 8; p++)
		q[n++] = qy(8, WIN + (p << 12), 1, R);
	q[n++] = qy(8, WIN + 2 * MIB - 0x1000, 1, R);
	q[n++] = qy(8, WIN + 2 * MIB, 1, R);
	q[n++] = qy(8, WIN + 2 * MIB, 8, R | WHOLE);
	q[n++] = qy(8, WIN + 2 * MIB + 0x1000, 1, R);
	check_queries(r, q, n);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, view()->wins[d].leaf);
	cr_assert_eq(translate(r, 8, WIN + 0x6000, R).pa, 0x6000000);
	cr_assert_eq(translate(r, 8, WIN + 2 * MIB, R).pa, 0x7001000);
	n = 0;
	n += probes(q + n, 8, WIN + GIB);
	n += probes(q + n, 8, WIN + GIB + 0x12345678);
	n += probes(q + n, 8, WIN + 2 * GIB - 0x10); /* its last page, then the hole after */
	n += probes(q + n, 8, WIN + 0x5010); /* the page mapped before */
	n += probes(q + n, 8, WIN + 0x9000); /* unmapped pages of the window */
	n += probes(q + n, 8, WIN + 2 * GIB + 0x1000);
	n += probes(q + n, 8, WIN + 3 * GIB + 0x10);
	n += probes(q + n, 8, 16 * GIB + 0x10);
	q[n++] = qy(8, WIN + GIB - 0x10, 0x20, R); /* from the hole into the piece */
	q[n++] = qy(8, WIN + GIB, GIB, RW);
	check_queries(r, q, n);
	{
		struct viommu_answer a = translate(r, 8, WIN + GIB + 0x12345678, R);

		cr_assert_eq(a.result, VIOMMU_XLATE_HIT, "a page of the wide piece hits");
		cr_assert_eq(a.pa, 0x4000000000ull + 0x12345678);
		a = translate(r, 8, WIN + 0x9010, R);
		cr_assert_eq(a.result, VIOMMU_XLATE_FAULT, "an unmapped page of a wide window faults");
	}

	/* A second one: two pieces over the window; the flag goes with the last. */
	map_ok(1, WIN + 3 * GIB, GIB, 0x8000000000ull, R);
	assert_window(d, WIN, true);
	unmap_ok(1, WIN + GIB, GIB);
	assert_window(d, WIN, true); /* one left */
	n = 0;
	n += probes(q + n, 8, WIN + GIB + 0x10); /* unmapped now */
	n += probes(q + n, 8, WIN + 3 * GIB + 0xabcdef);
	n += probes(q + n, 8, WIN + 0x5010);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, WIN + 3 * GIB + 0xabcdef, R).pa, 0x8000000000ull + 0xabcdef);
	unmap_ok(1, WIN + 3 * GIB, GIB);
	assert_window(d, WIN, false);
	check_queries(r, q, n);

	/* One MAP of two 1 GiB pieces over the window: both counted, both gone with one UNMAP. */
	map_ok(1, WIN + 2 * GIB, 2 * GIB, 0x10000000000ull, RW);
	assert_window(d, WIN, true);
	n = 0;
	n += probes(q + n, 8, WIN + 2 * GIB + 0x10);
	n += probes(q + n, 8, WIN + 4 * GIB - 0x10);
	q[n++] = qy(8, WIN + 2 * GIB, 2 * GIB, R | WHOLE);
	check_queries(r, q, n);
	unmap_ok(1, WIN + 2 * GIB, 2 * GIB);
	assert_window(d, WIN, false);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, WIN + 2 * GIB + 0x10, R).result, VIOMMU_XLATE_FAULT);
	viommu_reader_close(r);
}

/* A window smaller than 1 GiB, under one 1 GiB piece: every page of the window is the piece's,
 * none has a PTE there, all hit through the general path. */
Test(window, a_1gib_piece_covering_a_small_window_is_answered_for_every_page_of_it)
{
	const uint64_t span = 16 * 2 * MIB; /* 32 MiB */
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_reader *r;
	uint32_t d;

	win_setup(&(struct viommu_fastpath_opts){ .window_regions = 16 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	map_ok(1, GIB + 0x3000, 0x1000, 0x3000, RW); /* places the window [1 GiB, + 32 MiB) */
	d = dslot_of(8);
	assert_window(d, GIB, false);
	cr_assert_eq(translate(r, 8, GIB + 0x3010, R).pa, 0x3010); /* the reader has its copy */
	unmap_ok(1, GIB + 0x3000, 0x1000); /* the window stays */
	assert_window(d, GIB, false);
	map_ok(1, GIB, GIB, 0x4000000000ull, RW);
	assert_window(d, GIB, true);
	for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
		q[i] = qy(8, GIB + (uint64_t)i * (span / VIOMMU_BULK_MAX) + 0x3010, i % 8 ? 1 : 8,
			  (i % 2 ? R : RW) | (i % 5 ? 0 : WHOLE));
	check_queries(r, q, VIOMMU_BULK_MAX);
	cr_assert_eq(translate(r, 8, GIB + 0x3010, R).pa, 0x4000000000ull + 0x3010);
	unmap_ok(1, GIB, GIB);
	assert_window(d, GIB, false);
	check_queries(r, q, VIOMMU_BULK_MAX);
	viommu_reader_close(r);
}

/* ---- 4. a window changes hands ---- */

/* Domain A's window, read by a reader, goes with A; domain B's first MAP takes the same window
 * (the only one) at the same IOVA with another PA. The same reader answers B's PA for B's
 * endpoint, and never A's or B's for A's endpoint, now in no domain. */
Test(window, a_window_reused_by_another_domain_is_never_answered_from_a_readers_old_copy)
{
	const uint64_t x = WIN + 0x3000, pa_a = 0xa0000000, pa_b = 0xb0000000;
	struct viommu_query q[32];
	const struct viommu_meta *m;
	struct viommu_reader *r;
	uint32_t da, db, wl;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	m = view()->meta;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	da = dslot_of(8);
	map_ok(1, x, 0x2000, pa_a, RW);
	assert_window(da, WIN, false);
	wl = view()->wins[da].leaf;
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, pa_a + 0x10);
	cr_assert_eq(translate(r, 8, x + 0x1010, W).pa, pa_a + 0x1010);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, wl);

	detach_ok(1, 8); /* A's last endpoint: A goes, its window is free */
	assert_no_window(da);
	cr_assert_eq(m->windows_used, 0, "the window was released");
	cr_assert_eq(translate(r, 8, x + 0x10, R).result, VIOMMU_XLATE_FAULT);

	attach_ok(2, 9);
	db = dslot_of(9);
	cr_log_info("domain A had slot %u, domain B has slot %u", da, db);
	map_ok(2, x, 0x1000, pa_b, R);
	cr_assert_eq(view()->wins[db].leaf, wl, "B has the window A had");
	assert_window(db, WIN, false);
	cr_assert_eq(window_pte(db, x), (VIOMMU_PTE_MAKE(pa_b, R) | VIOMMU_PTE_SOLO));
	cr_assert_eq(window_pte(db, x + 0x1000), 0, "nothing of A is left in it");

	n += probes(q + n, 8, x + 0x10); /* A's endpoint first: its copy is A's window */
	n += probes(q + n, 8, x + 0x1010);
	n += probes(q + n, 9, x + 0x10);
	n += probes(q + n, 9, x + 0x1010);
	check_queries(r, q, n);
	{
		struct viommu_answer a = translate(r, 8, x + 0x10, R);

		cr_assert_eq(a.result, VIOMMU_XLATE_FAULT, "A's endpoint is in no domain: pa 0x%llx",
			     (unsigned long long)a.pa);
		cr_assert_eq(a.reason, VIOMMU_FAULT_R_DOMAIN);
	}
	cr_assert_eq(translate(r, 9, x + 0x10, R).pa, pa_b + 0x10);
	assert_reader_copy(r, 9, WIN, WIN_SPAN, wl);

	attach_ok(2, 8); /* A's endpoint joins B */
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, pa_b + 0x10);
	cr_assert_eq(translate(r, 8, x + 0x1010, R).result, VIOMMU_XLATE_FAULT);
	viommu_reader_close(r);
}

/* As above, but A's only mapping is a 1 GiB piece over its window: A's going frees no leaf, so
 * meta.wraps does not move, and only the endpoint entry's seq says the reader's copy of A's
 * window is old. B maps a page at the same place of the same window. */
Test(window, a_window_reused_after_a_domain_that_freed_no_leaf_is_never_answered_from_an_old_copy)
{
	const uint64_t x = WIN + 0x3000, pa_b = 0xb0000000;
	const struct viommu_meta *m;
	struct viommu_query q[16];
	struct viommu_reader *r;
	uint32_t da, db, wl;
	uint64_t wraps;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	m = view()->meta;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	da = dslot_of(8);
	map_ok(1, WIN, GIB, 0x10000000000ull, RW); /* smaller than the window: it places one */
	assert_window(da, WIN, true);
	wl = view()->wins[da].leaf;
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, 0x10000000000ull + 0x3010);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, wl);
	wraps = m->wraps;

	detach_ok(1, 8);
	assert_no_window(da);
	attach_ok(2, 9);
	db = dslot_of(9);
	map_ok(2, x, 0x1000, pa_b, RW);
	cr_assert_eq(view()->wins[db].leaf, wl, "B has the window A had");
	assert_window(db, WIN, false);
	cr_assert_eq(m->wraps, wraps, "no leaf was freed: only the entry's seq tells the copy is old");

	{
		struct viommu_answer a = translate(r, 8, x + 0x10, R); /* before anything refreshes it */

		cr_assert_eq(a.result, VIOMMU_XLATE_FAULT, "A's endpoint is in no domain, yet got pa 0x%llx",
			     (unsigned long long)a.pa);
		cr_assert_eq(a.reason, VIOMMU_FAULT_R_DOMAIN);
	}
	n += probes(q + n, 8, x + 0x10);
	n += probes(q + n, 9, x + 0x10);
	n += probes(q + n, 9, WIN + GIB - 0x10); /* A's piece is gone */
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 9, x + 0x10, R).pa, pa_b + 0x10);
	attach_ok(2, 8);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, pa_b + 0x10);
	viommu_reader_close(r);
}

/*
 * An endpoint entry's seq is 64-bit (ABI v12): it never comes back to a value a reader copied,
 * and nothing but the seq vouches for a reader's copy of a window, its inline probe of a direct
 * value and its TLB entries' endpoint. So every path must compare all 64 bits: a seq whose low
 * half came back to the copied one (2^31 entry changes later, for a 32-bit reader) must not
 * pass. No test can make 2^31 changes: this one plays their outcome on the writer's side of
 * the shared memory. Endpoint 8 moves from domain A to domain B for real, then its entry's seq
 * is set to the value the reader copied plus 2^32. The same IOVAs translate differently in A
 * and B: a page in both windows, a page only in B's, and 2 MiB pieces (direct values).
 */
Test(window, a_reader_drops_its_copy_of_an_endpoint_whose_seq_moved_by_2_to_the_32)
{
	const uint64_t x = WIN + 0x3000, y = WIN + 0x5000, z = 64 * GIB, w = 32 * GIB + 0x7000, v = 256 * GIB;
	const uint64_t iova[5] = { x, y, z, w, v };
	const uint64_t pa_b[5] = { 0xb0003000, 0xb0005000, 0xb0400000, 0xb0007000, 0xb0800000 };
	static const char *const what[5] = { "a page in both windows", "a page only in B's window",
					      "a 2 MiB piece outside both, in both piece windows",
					      "a page outside both windows (the reader TLB)",
					      "a 2 MiB piece outside every window (a direct hash value)" };
	struct viommu_reader_epw copy;
	struct viommu_query q[24];
	struct viommu_reader *r;
	uint64_t copied, now;
	unsigned n = 0;

	r = win_reader_ep8();
	attach_ok(1, 11); /* A lives on after 8 leaves */
	map_ok(1, x, 0x1000, 0xa0003000, RW);
	map_ok(1, z, 2 * MIB, 0xa0400000, RW);
	map_ok(1, w, 0x1000, 0xa0007000, RW);
	map_ok(1, w + 0x1000, 0x1000, 0xa0008000, RW); /* two pages: a leaf, not a lone page */
	map_ok(1, v, 2 * MIB, 0xa0800000, RW);
	attach_ok(2, 9);
	for (int i = 0; i < 5; i++)
		map_ok(2, iova[i], i == 2 || i == 4 ? 2 * MIB : 0x1000, pa_b[i], RW);
	map_ok(2, w + 0x1000, 0x1000, 0xb0008000, RW);
	cr_assert_eq(piece_entry(dslot_of(8), z), VIOMMU_HASH_DIRECT_MAKE(0xa0400000, RW));
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, 0xa0003010);
	cr_assert_eq(translate(r, 8, y + 0x10, R).result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(translate(r, 8, z + 0x10, R).pa, 0xa0400010);
	cr_assert_eq(translate(r, 8, w + 0x10, R).pa, 0xa0007010);
	{ /* a leaf's page outside the windows: a reader TLB entry, which the loop below asks */
		const uint32_t h = ((uint32_t)((w + 0x10) >> VIOMMU_PAGE_SHIFT) ^ 8u) * 0x9e3779b1u;
		const struct viommu_reader_tlb *t = &r->tlb[h >> (32 - VIOMMU_READER_TLB_BITS)];

		cr_assert(t->ep == 8 && t->start == w, "the reader TLB holds w's page (ep %u start 0x%llx)",
			  t->ep, (unsigned long long)t->start);
	}
	cr_assert_eq(translate(r, 8, v + 0x10, R).pa, 0xa0800010);
	copy = r->epw[8 % VIOMMU_READER_EPW];
	cr_assert_eq(copy.ep, 8, "the reader copied endpoint 8's window");
	copied = copy.ep_seq;

	attach_ok(2, 8); /* 8 moves to B */
	cr_assert_eq(dslot_of(8), dslot_of(9));
	now = fp->eps[8].seq;
	cr_assert_neq(now, copied);
	/* The low half back at the copy's, nothing else moved (memfd and BPF replica alike). */
	FP_STORE(fp, &fp->eps[8].seq, copied + (1ull << 32), __ATOMIC_RELEASE);

	/* Each query first after it, with the reader's old copy (a walk refreshes it). */
	for (int i = 0; i < 5; i++) {
		struct viommu_answer a;

		r->epw[8 % VIOMMU_READER_EPW] = copy;
		a = translate(r, 8, iova[i] + 0x10, R);
		cr_assert_eq(a.pa, pa_b[i] + 0x10, "%s: B's", what[i]);
		n += probes(q + n, 8, iova[i] + 0x10);
	}
	check_queries(r, q, n);

	FP_STORE(fp, &fp->eps[8].seq, now, __ATOMIC_RELEASE); /* the writer's own value back */
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* A pool leaf freed (a guest's churn outside every window) bumps meta.wraps, which drops reader
 * TLB entries, but not a reader's copy of a window: it stays good, and window lookups
 * after it are answered from the copy, not after a walk that makes it again (which every
 * reader of every domain would otherwise pay after each such UNMAP). The copy's `keyhi`, which
 * a window lookup does not read and viommu_reader_window_load() rewrites, tells. */
Test(window, a_pool_leaf_freed_outside_every_window_leaves_a_readers_copy_of_a_window_good)
{
	const uint64_t x = WIN + 0x3000, far = 64 * GIB;
	const struct viommu_meta *m;
	struct viommu_reader_epw *c;
	struct viommu_reader *r;
	uint64_t wraps, keyhi;

	r = win_reader_ep8();
	m = view()->meta;
	map_ok(1, x, 0x1000, 0xa0003000, RW);
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, 0xa0003010);
	c = &r->epw[8 % VIOMMU_READER_EPW];
	cr_assert_eq(c->ep, 8, "the reader copied endpoint 8's window");
	keyhi = c->keyhi;
	c->keyhi = 0x5eedull;
	wraps = m->wraps;

	/* Two pages of one region far outside the window: a pool leaf, freed with the second UNMAP. */
	map_ok(1, far, 0x1000, 0xc0000000, RW);
	map_ok(1, far + 0x5000, 0x1000, 0xc0005000, RW);
	unmap_ok(1, far, 0x1000);
	unmap_ok(1, far + 0x5000, 0x1000);
	cr_assert_neq(m->wraps, wraps, "a pool leaf was freed");

	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, 0xa0003010);
	cr_assert_eq(translate(r, 8, x + 0x1010, R).result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(c->keyhi, 0x5eedull, "the copy was made again after a leaf free outside the window");
	c->keyhi = keyhi;
	cr_assert_eq(translate(r, 8, far + 0x10, R).result, VIOMMU_XLATE_FAULT);
	viommu_reader_close(r);
}

/* An ATTACH that moves A's last endpoint to a new domain B: B is made (a new slot) before A goes;
 * A's window, the only one, is then B's at B's first MAP. */
Test(window, a_window_released_by_a_destroyed_domain_goes_to_the_next_domain_in_another_slot)
{
	const uint64_t x = WIN + 0x3000;
	const struct viommu_meta *m;
	struct viommu_query q[16];
	struct viommu_reader *r;
	uint32_t da, db, wl;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	m = view()->meta;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	da = dslot_of(8);
	map_ok(1, x, 0x1000, 0xa0000000, RW);
	assert_window(da, WIN, false);
	wl = view()->wins[da].leaf;
	cr_assert_eq(translate(r, 8, x + 0x10, R).pa, 0xa0000010);

	attach_ok(2, 8); /* A goes */
	db = dslot_of(8);
	cr_assert_neq(db, da, "B was made while A still held its slot");
	assert_no_window(da);
	assert_no_window(db);
	cr_assert_eq(m->windows_used, 0);
	cr_assert_eq(translate(r, 8, x + 0x10, R).result, VIOMMU_XLATE_FAULT, "B has nothing mapped");

	map_ok(2, x + 0x1000, 0x1000, 0xb0000000, R);
	cr_assert_eq(assert_window(db, WIN, false), 0, "B has the window A released");
	cr_assert_eq(view()->wins[db].leaf, wl);
	n += probes(q + n, 8, x + 0x10);
	n += probes(q + n, 8, x + 0x1010);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, x + 0x1010, R).pa, 0xb0000010);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, wl);
	viommu_reader_close(r);
}

/* ---- 5. more domains than windows ---- */

Test(window, a_domain_beyond_the_windows_has_none_and_is_still_answered)
{
	const uint64_t x = WIN + 0x3000;
	const struct viommu_meta *m;
	struct viommu_query q[64];
	struct viommu_reader *r;
	uint32_t d1, d2, d3, d4;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	m = view()->meta;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	attach_ok(3, 11);
	d1 = dslot_of(8);
	d2 = dslot_of(9);
	d3 = dslot_of(11);
	map_ok(1, x, 0x1000, 0x10000000, RW);
	assert_window(d1, WIN, false);
	map_ok(2, x, 0x1000, 0x20000000, RW); /* the same IOVA, another PA */
	map_ok(2, WIN + 6 * MIB, 2 * MIB, 0x40000000, R);
	map_ok(2, WIN + GIB, GIB, 0x4000000000ull, RW);
	map_ok(3, x, 0x1000, 0x30000000, R);
	assert_no_window(d2);
	assert_no_window(d3);
	cr_assert_eq(m->windows_used, 1);
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(9, WIN + 6 * MIB)), VIOMMU_SLOT_EXTENT,
		     "without a window a 2 MiB piece stays whole");
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(9, x)), VIOMMU_SLOT_LEAF);
	cr_assert_lt(VIOMMU_SLOT_IDX(level4_word(9, x)), m->windows_leaf, "a pool leaf");
	for (uint32_t ep = 8; ep <= 11; ep += ep == 9 ? 2 : 1) {
		n += probes(q + n, ep, x + 0x10);
		n += probes(q + n, ep, WIN + 7 * MIB);
		n += probes(q + n, ep, WIN + GIB + 0x5000);
	}
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 9, x + 0x10, R).pa, 0x20000010);
	cr_assert_eq(translate(r, 11, x + 0x10, R).pa, 0x30000010);
	assert_reader_copy(r, 9, 0, 0, 0);

	/* Domain 1 goes: its window is free; domains 2 and 3 keep using the pool (they have
	 * mappings), a new domain takes it. */
	detach_ok(1, 8);
	assert_no_window(d1);
	assert_no_window(d2);
	assert_no_window(d3);
	attach_ok(4, 12);
	d4 = dslot_of(12);
	map_ok(4, x, 0x1000, 0x50000000, RW);
	assert_window(d4, WIN, false);
	map_ok(2, x + 0x1000, 0x1000, 0x60000000, RW);
	assert_no_window(d2);
	n = 0;
	for (uint32_t ep = 8; ep <= 12; ep++) {
		n += probes(q + n, ep, x + 0x10);
		n += probes(q + n, ep, x + 0x1010);
	}
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 12, x + 0x10, R).pa, 0x50000010);
	cr_assert_eq(translate(r, 9, x + 0x1010, R).pa, 0x60000010);
	viommu_reader_close(r);
}

/* ---- 6. a window placed after a reader made its copy ---- */

Test(window, a_window_placed_after_a_reader_copied_its_endpoint_is_then_used_by_that_reader)
{
	const uint64_t x = WIN + 0x3000;
	struct viommu_query q[16];
	struct viommu_reader *r;
	struct viommu_answer a;
	uint32_t d;
	unsigned n = 0;

	r = win_reader_ep8();
	d = dslot_of(8);
	a = translate(r, 8, x + 0x10, R);
	cr_assert_eq(a.result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(a.reason, VIOMMU_FAULT_R_MAPPING);
	assert_reader_copy(r, 8, 0, 0, 0); /* the copy says: no window */

	map_ok(1, x, 0x1000, 0x70000000, RW); /* places the window; the endpoint entry is unchanged */
	assert_window(d, WIN, false);
	a = translate(r, 8, x + 0x10, R);
	cr_assert_eq(a.result, VIOMMU_XLATE_HIT);
	cr_assert_eq(a.pa, 0x70000010);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, view()->wins[d].leaf); /* the walk refreshed it */

	map_ok(1, x + 0x1000, 0x1000, 0x71000000, R);
	cr_assert_eq(translate(r, 8, x + 0x1010, R).pa, 0x71000010);
	cr_assert_eq(translate(r, 8, x + 0x1010, W).result, VIOMMU_XLATE_FAULT);
	n += probes(q + n, 8, x + 0x10);
	n += probes(q + n, 8, x + 0x1010);
	n += probes(q + n, 8, x + 0x2010);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* ---- 7. no windows ---- */

Test(window, without_windows_no_window_entry_is_written_and_everything_is_answered)
{
	const struct viommu_meta *m;
	struct viommu_query q[64];
	struct viommu_reader *r;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = VIOMMU_WINDOWS_NONE });
	m = view()->meta;
	cr_assert_eq(m->windows_max, 0);
	cr_assert_eq(m->window_regions, 0);
	cr_assert_eq(m->windows_leaf, VIOMMU_LEAVES_DEFAULT);
	cr_assert_eq(m->leaves_max, VIOMMU_LEAVES_DEFAULT, "no leaves past the pool");
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	attach_ok(3, 11);
	for (uint32_t dom = 1; dom <= 3; dom++) {
		uint64_t pa = (uint64_t)dom << 36;

		map_ok(dom, WIN + 0x3000, 0x1000, pa, RW);
		map_ok(dom, WIN + 6 * MIB, 2 * MIB, pa + GIB, R);
		map_ok(dom, WIN + GIB, GIB, pa + 2 * GIB, RW);
		map_ok(dom, WIN + 2 * MIB - 0x8000, 0x10000, pa + 4 * GIB, W);
	}
	for (uint32_t s = 0; s < 8; s++)
		assert_no_window(s);
	cr_assert_eq(m->windows_used, 0);
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(8, WIN + 6 * MIB)), VIOMMU_SLOT_EXTENT, "2 MiB pieces stay whole");
	for (uint32_t ep = 8; ep <= 11; ep += ep == 9 ? 2 : 1) {
		n += probes(q + n, ep, WIN + 0x3010);
		n += probes(q + n, ep, WIN + 7 * MIB);
		n += probes(q + n, ep, WIN + GIB + 0x5000);
		n += probes(q + n, ep, WIN + 2 * MIB - 0x10);
		q[n++] = qy(ep, WIN + 0x9000, 1, R);
	}
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, WIN + 0x3010, R).pa, (1ull << 36) + 0x10);
	assert_reader_copy(r, 8, 0, 0, 0);
	viommu_reader_close(r);
}

/* ---- 8. access ---- */

/* A page of the window answers only the accesses its mapping allows, MMIO included, on the
 * inline reader's copy as on every other path. */
Test(window, a_window_page_is_answered_only_for_the_access_its_mapping_allows)
{
	static const uint32_t flags[] = { R, W, RW, R | MMIO, RW | MMIO, MMIO, 0 };
	static const uint32_t access[] = { 0, R, W, RW, MMIO, R | MMIO, W | MMIO, RW | MMIO };
	const unsigned np = sizeof(flags) / sizeof(flags[0]), na = sizeof(access) / sizeof(access[0]);
	struct viommu_query q[2 * 7 * 8];
	struct viommu_reader *r;
	struct viommu_answer a;
	unsigned n = 0;

	r = win_reader_ep8();
	for (unsigned p = 0; p < np; p++)
		map_ok(1, WIN + ((uint64_t)(p + 1) << 12), 0x1000, 0x100000 + ((uint64_t)p << 12), flags[p]);
	assert_window(dslot_of(8), WIN, false);
	/* The copy is made by an access the page allows; then each access on each page. */
	cr_assert_eq(translate(r, 8, WIN + 0x1010, R).result, VIOMMU_XLATE_HIT);
	assert_reader_copy(r, 8, WIN, WIN_SPAN, view()->wins[dslot_of(8)].leaf);
	for (unsigned p = 0; p < np; p++)
		for (unsigned k = 0; k < na; k++) {
			q[n++] = qy(8, WIN + ((uint64_t)(p + 1) << 12) + 0x10 + k, 1, access[k]);
			q[n++] = qy(8, WIN + ((uint64_t)(p + 1) << 12) + 0x20 + k, 4, access[k] | WHOLE);
		}
	check_queries(r, q, n);
	/* Spot checks of what the store says. */
	a = translate(r, 8, WIN + 0x1010, W); /* read-only, written */
	cr_assert_eq(a.result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(a.reason, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(a.fault_addr, WIN + 0x1010);
	cr_assert_eq(translate(r, 8, WIN + 0x2010, R).result, VIOMMU_XLATE_FAULT, "write-only, read");
	cr_assert_eq(translate(r, 8, WIN + 0x3010, RW | MMIO).result, VIOMMU_XLATE_FAULT, "not MMIO, asked MMIO");
	cr_assert_eq(translate(r, 8, WIN + 0x3010, RW).result, VIOMMU_XLATE_HIT);
	cr_assert_eq(translate(r, 8, WIN + 0x5010, RW | MMIO).pa, 0x104010, "MMIO, asked MMIO");
	cr_assert_eq(translate(r, 8, WIN + 0x4010, W | MMIO).result, VIOMMU_XLATE_FAULT);
	viommu_reader_close(r);
}

/* ---- 9. a reader in another process ---- */

struct remote {
	int stage; /* the parent: the stage the child is to answer; -1: stop */
	int done; /* the child: the last stage answered */
	unsigned n;
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer first[VIOMMU_BULK_MAX], again[VIOMMU_BULK_MAX], bulk[VIOMMU_BULK_MAX];
	/* the child's copy of endpoint 8's window after the stage */
	uint32_t copy_ep, copy_current;
	uint64_t copy_base, copy_span;
	int64_t copy_leaf;
};
static struct remote *rm;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The child: a reader opened from the connection, kept for every stage. */
static int remote_main(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);

	if (!r)
		return 10;
	for (int stage = 1;; stage++) {
		const struct viommu_reader_epw *c = &r->epw[8 % VIOMMU_READER_EPW];
		uint64_t t0 = now_ms();
		int s;

		while ((s = __atomic_load_n(&rm->stage, __ATOMIC_ACQUIRE)) != stage && s != -1) {
			if (now_ms() - t0 > 30000)
				return 11;
			usleep(200);
		}
		if (s == -1)
			break;
		for (unsigned i = 0; i < rm->n; i++) {
			viommu_reader_translate(r, &rm->q[i], &rm->first[i]);
			viommu_reader_translate(r, &rm->q[i], &rm->again[i]);
		}
		viommu_reader_translate_bulk(r, rm->q, rm->bulk, rm->n);
		rm->copy_ep = c->ep;
		rm->copy_current = c->ep_seq == __atomic_load_n(&r->eps[8].seq, __ATOMIC_ACQUIRE);
		rm->copy_base = c->base;
		rm->copy_span = c->span;
		rm->copy_leaf = c->span ? (c->first - r->ptes[0].pte) / VIOMMU_RADIX_FANOUT : -1;
		__atomic_store_n(&rm->done, stage, __ATOMIC_RELEASE);
	}
	viommu_reader_close(r);
	return 0;
}

/* Stage @stage: the child answers the queries set in rm, checked against the store here. */
static void remote_stage(int stage)
{
	struct viommu_answer want;
	uint64_t t0 = now_ms();

	__atomic_store_n(&rm->stage, stage, __ATOMIC_RELEASE);
	while (__atomic_load_n(&rm->done, __ATOMIC_ACQUIRE) != stage) {
		cr_assert_lt(now_ms() - t0, 30000, "the reader process never answered stage %d", stage);
		usleep(200);
	}
	for (unsigned i = 0; i < rm->n; i++) {
		viommu_device_answer(dev, &rm->q[i], &want);
		assert_same(&rm->q[i], &want, &rm->first[i], "other process, inline");
		assert_same(&rm->q[i], &want, &rm->again[i], "other process, inline again");
		assert_same(&rm->q[i], &want, &rm->bulk[i], "other process, bulk");
	}
}

Test(window, a_reader_in_another_process_translates_window_pages_as_the_store_does)
{
	const uint64_t va = WIN + 6 * MIB;
	struct viommu_reader *local;
	int sv[2], status;
	uint32_t d, wl;
	pid_t pid;
	unsigned n;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	rm = mmap(NULL, sizeof(*rm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(rm, MAP_FAILED);
	attach_ok(1, 8);
	d = dslot_of(8);
	map_ok(1, WIN + 0x3000, 0x1000, 0x70000000, RW);
	map_ok(1, va, 2 * MIB, 0x140000000ull, R);
	map_ok(1, WIN - 0x1000, 0x1000, 0x71000000, R); /* outside */
	assert_window(d, WIN, false);
	wl = view()->wins[d].leaf;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(remote_main(sv[1]));
	}
	close(sv[1]);
	cr_assert_geq(viommu_fastpath_add_reader(fp, sv[0]), 0);

	/* Stage 1: pages of the window (a 2 MiB map's among them), outside it, unmapped. */
	n = 0;
	n += probes(rm->q + n, 8, WIN + 0x3010);
	n += probes(rm->q + n, 8, va + 0x10);
	n += probes(rm->q + n, 8, va + 2 * MIB - 0x10);
	n += probes(rm->q + n, 8, va + 0x12345);
	n += probes(rm->q + n, 8, WIN - 0x10);
	n += probes(rm->q + n, 8, WIN + 0x9000);
	rm->q[n++] = qy(8, WIN + 0x3010, 1, W);
	rm->q[n++] = qy(8, va + 0x5010, 1, W); /* read-only */
	rm->q[n++] = qy(9, WIN + 0x3010, 1, R);
	rm->n = n;
	remote_stage(1);
	cr_assert(rm->copy_ep == 8 && rm->copy_current && rm->copy_base == WIN && rm->copy_span == WIN_SPAN &&
		  rm->copy_leaf == wl,
		  "the other process's copy of endpoint 8's window: ep %u current %u base 0x%llx span 0x%llx leaf %lld",
		  rm->copy_ep, rm->copy_current, (unsigned long long)rm->copy_base,
		  (unsigned long long)rm->copy_span, (long long)rm->copy_leaf);

	/* Stage 2: the 2 MiB map goes, a 1 GiB piece makes the window wide, a page moves. */
	unmap_ok(1, va, 2 * MIB);
	unmap_ok(1, WIN + 0x3000, 0x1000);
	map_ok(1, WIN + 0x3000, 0x1000, 0x72000000, R);
	map_ok(1, WIN + GIB, GIB, 0x4000000000ull, RW);
	assert_window(d, WIN, true);
	n = 0;
	n += probes(rm->q + n, 8, WIN + 0x3010);
	n += probes(rm->q + n, 8, va + 0x10);
	n += probes(rm->q + n, 8, WIN + GIB + 0x10);
	n += probes(rm->q + n, 8, WIN + 2 * GIB - 0x10);
	n += probes(rm->q + n, 8, WIN + 0x9000);
	rm->n = n;
	remote_stage(2);

	/* Stage 3: the domain goes, another takes its window with other pages at the same
	 * IOVAs; endpoint 8 goes with it once it has mapped them. */
	detach_ok(1, 8);
	attach_ok(2, 9);
	map_ok(2, WIN + 0x3000, 0x1000, 0x73000000, RW);
	map_ok(2, va, 2 * MIB, 0x180000000ull, RW);
	cr_assert_eq(view()->wins[dslot_of(9)].leaf, wl);
	n = 0;
	n += probes(rm->q + n, 8, WIN + 0x3010); /* in no domain */
	n += probes(rm->q + n, 8, va + 0x10);
	n += probes(rm->q + n, 9, WIN + 0x3010);
	n += probes(rm->q + n, 9, va + 0x10);
	n += probes(rm->q + n, 9, WIN + GIB + 0x10);
	rm->n = n;
	remote_stage(3);
	attach_ok(2, 8);
	remote_stage(4);
	cr_assert(rm->copy_ep == 8 && rm->copy_current && rm->copy_span == WIN_SPAN && rm->copy_leaf == wl,
		  "the other process's copy of endpoint 8's window is B's");

	/* The same pages through a reader of this process too. */
	local = viommu_reader_open(fp);
	cr_assert_not_null(local);
	check_queries(local, rm->q, rm->n);
	viommu_reader_close(local);

	__atomic_store_n(&rm->stage, -1, __ATOMIC_RELEASE);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the reader process died of signal %d", WTERMSIG(status));
	cr_assert_eq(WEXITSTATUS(status), 0, "the reader process failed: %d", WEXITSTATUS(status));
	munmap(rm, sizeof(*rm));
}

/* ---- the fast path's life ---- */

/* A fast path made over a device that already has domains and mappings is told them in order:
 * each domain's window goes over its lowest mapping (if that one is smaller than a window), and
 * 2 MiB pieces inside it are pages as if mapped afterwards. */
Test(window, a_fast_path_made_over_a_device_with_mappings_places_each_domains_window_at_its_lowest_one)
{
	struct viommu_query q[64];
	struct viommu_reader *r;
	uint32_t d1, d2, d3;
	unsigned n = 0;

	dev_setup();
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 3, 11, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, WIN + 6 * MIB, WIN + 8 * MIB - 1, 0x140000000ull, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, WIN + 0x3000, WIN + 0x3fff, 0x3000, R), VIOMMU_S_OK); /* the lowest */
	cr_assert_eq(test_map(dev, 1, 16 * GIB, 16 * GIB + 0xfff, 0x4000, R), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 2, 32 * GIB, 32 * GIB + GIB - 1, 0x8000000000ull, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 2, 33 * GIB, 33 * GIB + 2 * MIB - 1, 0x180000000ull, R), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 3, 64 * GIB, 72 * GIB - 1, 0x10000000000ull, RW), VIOMMU_S_OK); /* 8 GiB */
	cr_assert_eq(test_map(dev, 3, 80 * GIB, 80 * GIB + 2 * MIB - 1, 0x1c0000000ull, RW), VIOMMU_S_OK);
	fp_setup(NULL);
	enable_bpf();
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	d1 = dslot_of(8);
	d2 = dslot_of(9);
	d3 = dslot_of(11);
	assert_window(d1, WIN, false);
	assert_window(d2, 32 * GIB, true); /* its lowest mapping is a 1 GiB piece in its window */
	assert_no_window(d3); /* its lowest is larger than a window */
	cr_assert_eq(piece_entry(d1, WIN + 7 * MIB), VIOMMU_HASH_DIRECT_MAKE(0x140000000ull, RW), "a piece, whole");
	cr_assert_eq(piece_entry(d2, 33 * GIB + 0x5000), VIOMMU_HASH_DIRECT_MAKE(0x180000000ull, R));
	cr_assert_eq(VIOMMU_SLOT_TAG(level4_word(11, 80 * GIB)), VIOMMU_SLOT_EXTENT);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	n += probes(q + n, 8, WIN + 0x3010);
	n += probes(q + n, 8, WIN + 7 * MIB);
	n += probes(q + n, 8, 16 * GIB + 0x10);
	n += probes(q + n, 9, 32 * GIB + 0x123456);
	n += probes(q + n, 9, 33 * GIB + 0x5010);
	n += probes(q + n, 9, 33 * GIB + 2 * MIB + 0x10);
	n += probes(q + n, 11, 70 * GIB);
	n += probes(q + n, 11, 80 * GIB + 0x10);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* A BPF replica made after windows were placed is a copy of them, and stays in step. */
Test(window, a_bpf_replica_made_after_windows_were_placed_answers_from_them)
{
	struct viommu_query q[64];
	struct viommu_reader *r;
	uint32_t d;
	unsigned n = 0;

	dev_setup();
	fp_setup(NULL);
	have_bpf = false;
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	map_ok(1, WIN + 0x3000, 0x1000, 0x3000, RW);
	map_ok(1, WIN + 6 * MIB, 2 * MIB, 0x140000000ull, R);
	map_ok(1, WIN + GIB, GIB, 0x4000000000ull, RW);
	map_ok(2, 8 * GIB + 0x5000, 0x1000, 0x5000, R);
	d = dslot_of(8);
	assert_window(d, WIN, true);
	enable_bpf();
	if (!have_bpf)
		cr_skip_test("the kernel refuses BPF to this process");
	cr_assert_eq(viommu_fastpath_check(fp), 0, "the replica is the memfd, windows included");
	n += probes(q + n, 8, WIN + 0x3010);
	n += probes(q + n, 8, WIN + 6 * MIB + 0x5010);
	n += probes(q + n, 8, WIN + GIB + 0x5010);
	n += probes(q + n, 8, WIN + 0x9010);
	n += probes(q + n, 9, 8 * GIB + 0x5010);
	n += probes(q + n, 9, 8 * GIB + 0x6010);
	check_queries(r, q, n);
	/* Changes after the replica reach both copies. */
	unmap_ok(1, WIN + GIB, GIB);
	assert_window(d, WIN, false);
	unmap_ok(1, WIN + 6 * MIB, 2 * MIB);
	map_ok(1, WIN + 6 * MIB + 0x1000, 0x1000, 0x7000, RW);
	detach_ok(2, 9);
	attach_ok(3, 9);
	map_ok(3, WIN + 0x3000, 0x1000, 0x9000, RW); /* another window, the same IOVA */
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* An endpoint above the dense range has no copy of its own (the inline window takes dense
 * ids only): its window pages are answered through the general path, beside a dense endpoint
 * of the same domain. */
Test(window, an_endpoint_above_the_dense_range_in_a_domain_with_a_window_is_answered)
{
	struct viommu_query q[64];
	struct viommu_reader *r;
	unsigned n = 0;

	win_setup(NULL);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, SPARSE_EP);
	map_ok(1, WIN + 0x3000, 0x1000, 0x3000, RW);
	map_ok(1, WIN + 6 * MIB, 2 * MIB, 0x140000000ull, R);
	attach_ok(1, 8);
	assert_window(dslot_of(8), WIN, false);
	for (uint32_t k = 0; k < 2; k++) {
		uint32_t ep = k ? 8 : SPARSE_EP;

		n += probes(q + n, ep, WIN + 0x3010);
		n += probes(q + n, ep, WIN + 6 * MIB + 0x5010);
		n += probes(q + n, ep, WIN + 0x9010);
		q[n++] = qy(ep, WIN + 0x3010, 1, W);
		q[n++] = qy(ep, WIN + 6 * MIB + 0x5010, 1, W);
	}
	check_queries(r, q, n);
	cr_assert_eq(translate(r, SPARSE_EP, WIN + 0x3010, R).pa, 0x3010);
	detach_ok(1, 8);
	detach_ok(1, SPARSE_EP); /* the domain goes */
	attach_ok(2, SPARSE_EP);
	map_ok(2, WIN + 0x3000, 0x1000, 0x8000, R);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, SPARSE_EP, WIN + 0x3010, R).pa, 0x8010);
	viommu_reader_close(r);
}

/* A first MAP the fast path refuses (its node pool is out) places the window all the same; the
 * domain keeps it, and its MAPs once there is room use it. */
Test(window, a_first_map_refused_for_want_of_nodes_leaves_a_window_that_later_maps_use)
{
	struct viommu_query q[32];
	struct viommu_reader *r;
	uint32_t d;
	unsigned n = 0;

	/* Two roots and three nodes: a page's path (levels 1-4) needs four. */
	win_setup(&(struct viommu_fastpath_opts){ .nodes = 5, .leaves = 1, .overcommit = true, .windows = 1,
						 .window_regions = 1 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	d = dslot_of(8);
	cr_assert_eq(test_map(dev, 1, 0x1000, 0x1fff, 0x100000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	assert_window(d, 0, false);
	assert_no_window(dslot_of(9));
	n += probes(q + n, 8, 0x1010);
	n += probes(q + n, 9, 0x1010);
	check_queries(r, q, n);
	detach_ok(2, 9); /* its root goes back: room for a path */
	map_ok(1, 0x1000, 0x1000, 0x100000, RW);
	assert_window(d, 0, false);
	cr_assert_eq(window_pte(d, 0x1000), (VIOMMU_PTE_MAKE(0x100000, RW) | VIOMMU_PTE_SOLO));
	map_ok(1, 0x400000, 0x1000, 0x200000, R); /* outside: the pool's one leaf */
	n = 0;
	n += probes(q + n, 8, 0x1010);
	n += probes(q + n, 8, 0x2010);
	n += probes(q + n, 8, 0x400010);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* A device reset takes every domain, and every window with it; the next domains get them. */
Test(window, a_device_reset_releases_every_window)
{
	struct viommu_query q[32];
	struct viommu_reader *r;
	unsigned n = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 2 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	attach_ok(2, 9);
	attach_ok(3, 11);
	for (uint32_t dom = 1; dom <= 3; dom++)
		map_ok(dom, WIN + 0x3000, 0x1000, (uint64_t)dom << 20, RW);
	assert_window(dslot_of(8), WIN, false);
	assert_window(dslot_of(9), WIN, false);
	assert_no_window(dslot_of(11));
	cr_assert_eq(translate(r, 8, WIN + 0x3010, R).pa, 0x100010);
	viommu_device_reset(dev);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	cr_assert_eq(view()->meta->windows_used, 0);
	for (uint32_t s = 0; s < 8; s++)
		assert_no_window(s);
	n += probes(q + n, 8, WIN + 0x3010);
	n += probes(q + n, 9, WIN + 0x3010);
	check_queries(r, q, n);
	attach_ok(5, 11);
	attach_ok(6, 8);
	map_ok(5, WIN + 0x3000, 0x1000, 0x500000, RW);
	map_ok(6, WIN + 0x3000, 0x1000, 0x600000, RW);
	assert_window(dslot_of(11), WIN, false);
	assert_window(dslot_of(8), WIN, false);
	n += probes(q + n, 11, WIN + 0x3010);
	check_queries(r, q, n);
	cr_assert_eq(translate(r, 8, WIN + 0x3010, R).pa, 0x600010);
	viommu_reader_close(r);
}

/* ---- a reader racing the writer ---- */

#define RACE_X (WIN + 0x3000)
#define RACE_PA_A 0xa0000000ull /* domain A's page at RACE_X */
#define RACE_PA_A1G 0x10000000000ull /* or A's 1 GiB piece at WIN */
#define RACE_PA_B 0xb0000000ull /* domain B's page at RACE_X */

struct racer {
	struct viommu_reader *r;
	int stop;
	uint64_t lookups, hits[2], bad;
	uint64_t pte_first; /* rounds begun with a PTE-first copy (flipper_reader_main) */
	struct viommu_query bad_q;
	struct viommu_answer bad_a;
	int bad_phase;
	bool bpf; /* flipper_reader_main: every round through the BPF batch */
};

/* Endpoint 8 only ever belongs to domain A, endpoint 9 to domain B: a HIT must be its own
 * domain's page, whatever the window held when the lookup ran. */
static bool race_ok(const struct viommu_query *q, const struct viommu_answer *a)
{
	if (a->result != VIOMMU_XLATE_HIT)
		return a->result == VIOMMU_XLATE_FAULT || a->result == VIOMMU_XLATE_RETRY;
	if (q->endpoint == 8)
		return a->pa == RACE_PA_A + 0x10 || a->pa == RACE_PA_A1G + 0x3010;
	return a->pa == RACE_PA_B + 0x10;
}

/* @n answers of a racing reader: each hit counted by its endpoint (8, 9), the first wrong
 * one kept. */
static void race_judge(struct racer *rc, const struct viommu_query *q, const struct viommu_answer *a, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		rc->hits[q[i].endpoint == 9] += a[i].result == VIOMMU_XLATE_HIT;
		if (!race_ok(&q[i], &a[i]) && !rc->bad++) {
			rc->bad_q = q[i];
			rc->bad_a = a[i];
		}
	}
}

/* The window changes hands once: endpoint 8 attached to domain 1, which maps RACE_X (or, with
 * @a_1g, a 1 GiB piece over the window) to RACE_PA_A, then detached; endpoint 9 attached to
 * domain 2, which maps RACE_X to RACE_PA_B, then detached. */
static void race_handover(bool a_1g)
{
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	if (a_1g)
		cr_assert_eq(test_map(dev, 1, WIN, WIN + GIB - 1, RACE_PA_A1G, RW), VIOMMU_S_OK);
	else
		cr_assert_eq(test_map(dev, 1, RACE_X, RACE_X + 0xfff, RACE_PA_A, RW), VIOMMU_S_OK);
	sched_yield();
	cr_assert_eq(test_detach(dev, 1, 8), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 2, RACE_X, RACE_X + 0xfff, RACE_PA_B, RW), VIOMMU_S_OK);
	sched_yield();
	cr_assert_eq(test_detach(dev, 2, 9), VIOMMU_S_OK);
}

/* A racer's verdict: no wrong answer, and hits of both domains' pages seen (by @who; its
 * lookups counted in @unit). */
static void race_verdict(const struct racer *rc, const char *unit, const char *who)
{
	cr_log_info("%llu %s, %llu and %llu hits", (unsigned long long)rc->lookups, unit,
		    (unsigned long long)rc->hits[0], (unsigned long long)rc->hits[1]);
	cr_assert_eq(rc->bad, 0, "%llu wrong answers; the first: ep %u iova 0x%llx: result %u pa 0x%llx",
		     (unsigned long long)rc->bad, rc->bad_q.endpoint, (unsigned long long)rc->bad_q.iova,
		     rc->bad_a.result, (unsigned long long)rc->bad_a.pa);
	cr_assert_gt(rc->hits[0], 0, "%s saw domain A's page", who);
	cr_assert_gt(rc->hits[1], 0, "%s saw domain B's page", who);
}

static void *racer_main(void *arg)
{
	struct racer *rc = arg;
	struct viommu_query q[2] = { qy(8, RACE_X + 0x10, 1, R), qy(9, RACE_X + 0x10, 1, R) };
	struct viommu_answer a[2];

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		uint64_t k = rc->lookups++;

		if (k % 8 == 7) {
			viommu_reader_translate_bulk(rc->r, q, a, 2);
		} else if (k % 64 == 31 && have_bpf) {
			if (viommu_fastpath_bpf_translate(fp, q, a, 2, false))
				continue;
		} else {
			viommu_reader_translate(rc->r, &q[0], &a[0]);
			viommu_reader_translate(rc->r, &q[1], &a[1]);
		}
		race_judge(rc, q, a, 2);
	}
	return NULL;
}

/* One window changes hands again and again between domain A (endpoint 8: a page, or a 1 GiB
 * piece, which frees no leaf) and domain B (endpoint 9: another page at the same IOVA), while a
 * reader thread keeps its copies of both endpoints' windows and looks both up. */
Test(window, a_reader_racing_a_window_changing_hands_never_answers_one_domains_page_for_another)
{
	struct racer rc = { 0 };
	pthread_t th;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	rc.r = viommu_reader_open(fp);
	cr_assert_not_null(rc.r);
	cr_assert_eq(pthread_create(&th, NULL, racer_main, &rc), 0);
	for (int i = 0; i < 2000; i++) {
		race_handover(i % 2);
		if (i % 500 == 0)
			cr_assert_eq(viommu_fastpath_check(fp), 0);
	}
	__atomic_store_n(&rc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	viommu_reader_close(rc.r);
	race_verdict(&rc, "lookup pairs", "the reader");
}

/* The BPF batch's reader: batches whose first and last queries are endpoint 8's page (the
 * batch's copy of its window, made before the first, answers both, one PTE each, and is
 * checked once after the last) and whose others take the checked lookups, to stretch the
 * time between: endpoint 9's page, and endpoint 8's page and the next (two pages: the general
 * lookup). */
static void *racer_bpf_main(void *arg)
{
	struct racer *rc = arg;
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];

	for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++)
		q[i] = i % 2 ? qy(9, RACE_X + 0x10, 1, R) : qy(8, RACE_X + 0x10, 0x1000, R);
	q[0] = q[VIOMMU_BULK_MAX - 1] = qy(8, RACE_X + 0x10, 1, R);
	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		rc->lookups++;
		cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, a, VIOMMU_BULK_MAX, false), 0);
		race_judge(rc, q, a, VIOMMU_BULK_MAX);
	}
	return NULL;
}

/* The same window changing hands, read by the BPF batch alone: a batch's copy of endpoint
 * 8's window made while domain A held it is never answered from once domain B has it (the
 * endpoint's seq moved: the batch answers its queries again, checked). */
Test(window, a_bpf_batch_racing_a_window_changing_hands_never_answers_one_domains_page_for_another)
{
	struct racer rc = { 0 };
	pthread_t th;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	if (!have_bpf)
		cr_skip_test("the kernel refuses BPF to this process");
	cr_assert_eq(pthread_create(&th, NULL, racer_bpf_main, &rc), 0);
	for (int i = 0; i < 20000; i++)
		race_handover(false);
	__atomic_store_n(&rc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	race_verdict(&rc, "batches", "the batch");
}

#define FLIP_M_COUNT (WIN + 8 * MIB) /* the next test's 2 MiB piece */

/* The writer of the next test: the window's first 2 MiB piece mapped and unmapped, again and
 * again (each map moves the seqs of the domain's endpoints on, I13). */
static void *piece_flipper_main(void *arg)
{
	struct racer *rc = arg;

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		cr_assert_eq(test_map(dev, 1, FLIP_M_COUNT, FLIP_M_COUNT + 2 * MIB - 1, 1ull << 32, RW), VIOMMU_S_OK);
		cr_assert_eq(test_unmap(dev, 1, FLIP_M_COUNT, FLIP_M_COUNT + 2 * MIB - 1), VIOMMU_S_OK);
		__atomic_fetch_add(&rc->lookups, 1, __ATOMIC_RELAXED); /* read while it runs */
	}
	return NULL;
}

/* While the window's first piece comes and goes, batches whose copies hold and batches whose
 * copies do not (answered again, checked) count each query once in the BPF counters: a
 * lookup, and a hit or a fault as it answered. */
Test(window, a_bpf_batch_counts_each_query_once_whether_its_copy_held_or_not)
{
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];
	struct viommu_stats s0, s1;
	struct racer rc = { 0 };
	uint64_t wrong = 0, batches = 0;
	pthread_t th;

	win_setup(NULL);
	if (!have_bpf)
		cr_skip_test("the kernel refuses BPF to this process");
	attach_ok(1, 8);
	attach_ok(2, 9);
	map_ok(1, RACE_X, 0x1000, RACE_PA_A, R);
	for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
		switch (i % 4) {
		case 0: q[i] = qy(8, RACE_X + 0x10, 1, R); break; /* the copy's hit */
		case 1: q[i] = qy(8, RACE_X + 0x9010, 1, R); break; /* the copy's miss */
		case 2: q[i] = qy(8, RACE_X + 0x20, 1, W); break; /* read-only: checked */
		default: q[i] = qy(9, RACE_X + 0x10, 1, R); break; /* another endpoint: checked */
		}
	}
	cr_assert_eq(pthread_create(&th, NULL, piece_flipper_main, &rc), 0);
	for (int k = 0; k < 20000 && (k < 2000 || __atomic_load_n(&rc.lookups, __ATOMIC_RELAXED) < 200); k++) {
		unsigned hits = 0;

		cr_assert_eq(viommu_fastpath_bpf_stats(fp, &s0), 0);
		cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, a, VIOMMU_BULK_MAX, false), 0);
		cr_assert_eq(viommu_fastpath_bpf_stats(fp, &s1), 0);
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
			hits += a[i].result == VIOMMU_XLATE_HIT;
			cr_assert_eq(a[i].pad, 0, "query %u's pad", i);
		}
		cr_assert_eq(hits, VIOMMU_BULK_MAX / 4, "the hits answered");
		wrong += s1.lookups - s0.lookups != VIOMMU_BULK_MAX || s1.hits - s0.hits != hits ||
			 (s1.faults[0] + s1.faults[1] + s1.faults[2]) - (s0.faults[0] + s0.faults[1] + s0.faults[2]) !=
				 VIOMMU_BULK_MAX - hits;
		batches++;
	}
	__atomic_store_n(&rc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_log_info("%llu batches, %llu pieces mapped meanwhile", (unsigned long long)batches,
		    (unsigned long long)rc.lookups);
	cr_assert_gt(rc.lookups, 0, "the piece came and went while the batches ran");
	cr_assert_eq(wrong, 0, "%llu of %llu batches counted other than one lookup per query",
		     (unsigned long long)wrong, (unsigned long long)batches);
}

/* A batch reports its faults after its copy was checked, each once: the copy's misses and the
 * checked lookups' faults alike, in the batch's order, and none for a hit. */
Test(window, a_bpf_batch_reports_each_fault_once_whether_its_copy_or_the_checked_lookup_answered_it)
{
	struct viommu_query q[] = {
		qy(8, RACE_X + 0x10, 1, R), /* a hit, through the copy */
		qy(8, RACE_X + 0x5010, 1, R), /* not mapped: the copy's miss */
		qy(9, RACE_X + 0x10, 1, R), /* in no domain: the checked lookup's fault */
		qy(8, RACE_X + 0x20, 4, W), /* read-only: the copy leaves it to the checked lookup */
		qy(8, RACE_X + 0x7ff0, 1, R), /* another of the copy's misses */
	};
	static const uint64_t faulted[] = { RACE_X + 0x5010, RACE_X + 0x10, RACE_X + 0x20, RACE_X + 0x7ff0 };
	static const uint32_t fault_ep[] = { 8, 9, 8, 8 };
	struct viommu_answer a[5];
	struct viommu_wire_fault f;

	win_setup(NULL);
	if (!have_bpf)
		cr_skip_test("the kernel refuses BPF to this process");
	attach_ok(1, 8);
	map_ok(1, RACE_X, 0x1000, RACE_PA_A, R);
	viommu_device_eventq_post(dev, 8);
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, a, 5, true), 0);
	cr_assert_eq(a[0].result, VIOMMU_XLATE_HIT);
	cr_assert_eq(a[0].pa, RACE_PA_A + 0x10);
	for (int i = 1; i < 5; i++)
		cr_assert_eq(a[i].result, VIOMMU_XLATE_FAULT, "query %d faults", i);
	cr_assert_eq(viommu_fastpath_poll_faults(fp), 4, "one report per fault");
	for (int k = 0; k < 4; k++) {
		cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
		cr_assert_eq(viommu_le32(&f.endpoint), fault_ep[k], "fault %d's endpoint", k);
		cr_assert_eq(viommu_le64(&f.address), faulted[k], "fault %d's address", k);
	}
	cr_assert_neq(viommu_device_fault_pop(dev, &f), 0, "no fifth fault");
}

#define FLIP_P (WIN + 0x5000) /* stays mapped: RACE_PA_A */
#define FLIP_G (WIN + GIB) /* a 1 GiB piece, mapped and unmapped: 1 << 40 or 2 << 40 */
/* A 2 MiB map, mapped and unmapped: 1 << 32, a 2 MiB piece; or 2 << 32, its first 511 pages */
#define FLIP_M (WIN + 6 * MIB)
#define FLIP_U (WIN + 0x9000) /* never mapped */

/* The writer's phase (release after each step; the reader's loads acquire): 4k + 1, the two
 * maps of round k are done (PA 1 + k % 2 << 40 and << 32); 4k + 3, both unmapped; even, the
 * writer is between the two. A lookup that saw the same odd phase before and after must
 * answer as that phase says. */
static int flip_phase;

static bool flip_ok(const struct viommu_query *q, const struct viommu_answer *a, int phase)
{
	uint64_t off = q->iova & 0xfff, v = 1 + (uint64_t)(phase / 4) % 2;
	bool g = q->iova >= FLIP_G, last = !g && q->iova >= FLIP_M + 2 * MIB - 0x1000;

	if (a->result == VIOMMU_XLATE_RETRY)
		return true;
	if ((q->iova & ~0xfffull) == FLIP_P)
		return a->result == VIOMMU_XLATE_HIT && a->pa == RACE_PA_A + off;
	if ((q->iova & ~0xfffull) == FLIP_U)
		return a->result == VIOMMU_XLATE_FAULT && a->reason == VIOMMU_FAULT_R_MAPPING;
	if (a->result == VIOMMU_XLATE_FAULT) /* the last page is not in the 511 */
		return a->reason == VIOMMU_FAULT_R_MAPPING && (phase % 4 != 1 || (last && v == 2));
	if (phase % 4 == 3 || (last && a->pa >> 32 == 2))
		return false; /* unmapped; the last page never mapped at 2 << 32 */
	if (phase % 4 == 1)
		return a->pa == (g ? (v << 40) + (q->iova - FLIP_G) : (v << 32) + (q->iova - FLIP_M));
	return a->pa == (g ? (1ull << 40) + (q->iova - FLIP_G) : (1ull << 32) + (q->iova - FLIP_M)) ||
	       a->pa == (g ? (2ull << 40) + (q->iova - FLIP_G) : (2ull << 32) + (q->iova - FLIP_M));
}

static void *flipper_reader_main(void *arg)
{
	struct racer *rc = arg;
	struct viommu_query q[6] = { qy(8, FLIP_P + 0x10, 1, R), qy(8, FLIP_G + 0x123010, 1, R),
				     qy(8, FLIP_M + 0x5010, 1, R), qy(8, FLIP_U + 0x10, 1, R),
				     qy(8, FLIP_M + 2 * MIB - 0x10, 8, RW), qy(8, FLIP_G + GIB - 0x10, 1, R) };
	struct viommu_answer a[6];

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		uint64_t k = rc->lookups++;
		int p0 = __atomic_load_n(&flip_phase, __ATOMIC_ACQUIRE), p1;
		/* Every other round the copy is made again (as a walk would), so that it is made
		 * PTE-first whenever the window holds no piece then, and must be turned away when
		 * the next round's first piece comes. */
		const struct viommu_reader_epw *c = &rc->r->epw[8 % VIOMMU_READER_EPW];

		if (k % 2)
			viommu_reader_window_load(rc->r, 8);
		rc->pte_first += c->ep == 8 && c->pte_span;
		if (rc->bpf) {
			cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, a, 6, false), 0);
		} else if (k % 8 == 7) {
			viommu_reader_translate_bulk(rc->r, q, a, 6);
		} else if (k % 64 == 31 && have_bpf) {
			if (viommu_fastpath_bpf_translate(fp, q, a, 6, false))
				continue;
		} else {
			for (int i = 0; i < 6; i++)
				viommu_reader_translate(rc->r, &q[i], &a[i]);
		}
		p1 = __atomic_load_n(&flip_phase, __ATOMIC_ACQUIRE);
		for (int i = 0; i < 6; i++) {
			rc->hits[i == 1] += a[i].result == VIOMMU_XLATE_HIT;
			if (!flip_ok(&q[i], &a[i], p0 == p1 ? p0 : 0) && !rc->bad++) {
				rc->bad_q = q[i];
				rc->bad_a = a[i];
				rc->bad_phase = p0 == p1 ? p0 : -1;
			}
		}
	}
	return NULL;
}

static void flip_writer(struct racer *rc, pthread_t th);

/* While a reader thread looks them up, pieces of 1 GiB over the window come and go (the window
 * turns wide and back) and a 2 MiB map inside it comes and goes, a 2 MiB piece in one round and
 * 511 pages of the same region in the next, the reader's copy made again in every other lookup
 * round (PTE-first when no piece is there): a page mapped throughout always hits, a page never
 * mapped always faults, and the others answer as the writer's last completed request says. */
Test(window, a_reader_racing_pieces_coming_and_going_in_its_window_answers_as_the_last_request_says)
{
	struct racer rc = { 0 };
	pthread_t th;

	win_setup(NULL);
	attach_ok(1, 8);
	map_ok(1, FLIP_P, 0x1000, RACE_PA_A, RW);
	assert_window(dslot_of(8), WIN, false);
	rc.r = viommu_reader_open(fp);
	cr_assert_not_null(rc.r);
	cr_assert_eq(pthread_create(&th, NULL, flipper_reader_main, &rc), 0);
	flip_writer(&rc, th);
	cr_assert_gt(rc.hits[1], 0, "the reader saw the 1 GiB piece");
	cr_log_info("%llu rounds begun with a PTE-first copy", (unsigned long long)rc.pte_first);
	cr_assert_gt(rc.pte_first, 0, "the reader's copy was PTE-first in some rounds");
}

/* The same through the BPF batch alone: its copy of the window is made with no piece there
 * (the PTE first) in some rounds and with one (the region's word first) in others. */
Test(window, a_bpf_batch_racing_pieces_coming_and_going_in_its_window_answers_as_the_last_request_says)
{
	struct racer rc = { .bpf = true };
	pthread_t th;

	win_setup(NULL);
	if (!have_bpf)
		cr_skip_test("the kernel refuses BPF to this process");
	attach_ok(1, 8);
	map_ok(1, FLIP_P, 0x1000, RACE_PA_A, RW);
	rc.r = viommu_reader_open(fp);
	cr_assert_not_null(rc.r);
	cr_assert_eq(pthread_create(&th, NULL, flipper_reader_main, &rc), 0);
	flip_writer(&rc, th);
	cr_assert_gt(rc.hits[1], 0, "the batch saw the 1 GiB piece");
}

/* The writer of the two tests above, 1000 rounds, then the reader thread @th stopped and its
 * answers judged. */
static void flip_writer(struct racer *rc, pthread_t th)
{
	for (int i = 0; i < 1000; i++) {
		uint64_t v = 1 + (uint64_t)i % 2;

		__atomic_store_n(&flip_phase, 4 * i, __ATOMIC_RELEASE);
		cr_assert_eq(test_map(dev, 1, FLIP_G, FLIP_G + GIB - 1, v << 40, RW), VIOMMU_S_OK);
		cr_assert_eq(test_map(dev, 1, FLIP_M, FLIP_M + 2 * MIB - (v == 2 ? 0x1000 : 0) - 1, v << 32, RW),
			     VIOMMU_S_OK);
		__atomic_store_n(&flip_phase, 4 * i + 1, __ATOMIC_RELEASE);
		sched_yield();
		__atomic_store_n(&flip_phase, 4 * i + 2, __ATOMIC_RELEASE);
		cr_assert_eq(test_unmap(dev, 1, FLIP_G, FLIP_G + GIB - 1), VIOMMU_S_OK);
		cr_assert_eq(test_unmap(dev, 1, FLIP_M, FLIP_M + 2 * MIB - (v == 2 ? 0x1000 : 0) - 1), VIOMMU_S_OK);
		__atomic_store_n(&flip_phase, 4 * i + 3, __ATOMIC_RELEASE);
		sched_yield();
		if (i % 250 == 0)
			cr_assert_eq(viommu_fastpath_check(fp), 0);
	}
	__atomic_store_n(&rc->stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	viommu_reader_close(rc->r);
	cr_log_info("%llu lookup rounds, %llu hits elsewhere, %llu in the 1 GiB piece",
		    (unsigned long long)rc->lookups, (unsigned long long)rc->hits[0], (unsigned long long)rc->hits[1]);
	cr_assert_eq(rc->bad, 0,
		     "%llu wrong answers; the first: ep %u iova 0x%llx in phase %d: result %u reason %u pa 0x%llx",
		     (unsigned long long)rc->bad, rc->bad_q.endpoint, (unsigned long long)rc->bad_q.iova, rc->bad_phase,
		     rc->bad_a.result, rc->bad_a.reason, (unsigned long long)rc->bad_a.pa);
}

/* ---- random requests around windows ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Small windows (16 MiB) and fewer than the domains: random MAPs (pages, runs, 2 MiB pieces,
 * 1 GiB pieces) and UNMAPs in and around them, endpoints moving between domains (domains go,
 * windows change hands), each step followed by random queries on every path (one reader kept
 * throughout) and the self-check. */
Test(window, random_requests_around_windows_are_answered_as_the_store_does_by_one_long_lived_reader)
{
	static const uint64_t sizes[] = { 0x1000, 0x2000, 0x10000, 2 * MIB, 2 * MIB + 0x5000, 6 * MIB,
					  4 * MIB - 0x1000, GIB };
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_reader *r;
	uint32_t wide_seen = 0, windows_seen = 0, maps_ok = 0;

	win_setup(&(struct viommu_fastpath_opts){ .windows = 2, .window_regions = 8 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	for (uint32_t ep = 8; ep <= 12; ep += ep == 9 ? 2 : 1)
		attach_ok(1 + ep % 3, ep);
	for (int round = 0; round < 400; round++) {
		uint32_t domain = 1 + (uint32_t)(rnd() % 3);
		uint64_t size = rnd() % 5 ? sizes[rnd() % (sizeof(sizes) / sizeof(sizes[0]))] : GIB;
		/* 32 MiB around 1 GiB (windows land there), and 1 GiB pieces at 0 or 1 GiB. */
		uint64_t start = size == GIB ? GIB * (rnd() % 2) : (GIB - 16 * MIB + rnd() % (32 * MIB)) & ~0xfffull;
		uint64_t phys = (rnd() % (1ull << 40)) & ~0xfffull;
		uint8_t st;

		if (size >= 2 * MIB && rnd() % 2)
			start &= ~(2 * MIB - 1);
		if (round % 20 == 19) {
			test_unmap(dev, domain, 0, 4 * GIB - 1); /* everything: room for 1 GiB pieces */
		} else if (rnd() % 2) {
			/* Refused when it overlaps a mapping, or its domain does not exist now. */
			st = test_map(dev, domain, start, start + size - 1, phys, 1 + (uint32_t)(rnd() % 3));
			cr_assert_neq(st, VIOMMU_S_NOMEM, "the pools hold every MAP the caps allow");
			maps_ok += st == VIOMMU_S_OK;
		} else {
			test_unmap(dev, domain, start, start + (rnd() % 4 + 1) * size - 1);
		}
		if (round % 25 == 24) /* an endpoint moves: domains go, windows are released */
			test_attach(dev, 1 + (uint32_t)(rnd() % 4), 8 + (uint32_t)(rnd() % 5), 0);
		cr_assert_eq(viommu_fastpath_check(fp), 0, "self-check, round %d", round);
		for (uint32_t s = 0; s < 8; s++) {
			windows_seen += !!view()->wins[s].regions;
			wide_seen += !!(view()->wins[s].base & VIOMMU_WIN_F_WIDE);
		}
		for (unsigned i = 0; i < VIOMMU_BULK_MAX; i++) {
			uint64_t iova = rnd() % 8 == 0 ? rnd() % (2 * GIB) : GIB - 16 * MIB + rnd() % (32 * MIB);

			q[i] = qy(8 + (uint32_t)(rnd() % 5), iova, rnd() % 4 ? 1 + rnd() % 8 : rnd() % (1ull << 22),
				  (1 + (uint32_t)(rnd() % 3)) | (rnd() % 3 ? 0 : WHOLE));
		}
		check_queries(r, q, VIOMMU_BULK_MAX);
	}
	cr_log_info("%u MAPs done; rounds with a window: %u, with a wide window: %u (over 8 slots)", maps_ok,
		    windows_seen, wide_seen);
	cr_assert_gt(maps_ok, 60);
	cr_assert_gt(windows_seen, 0);
	cr_assert_gt(wide_seen, 0, "some 1 GiB piece lay over a window");
	viommu_reader_close(r);
}


/* ---- piece windows (ABI v7): a word per 2 MiB region past the window ---- */

/* Domain slot @d's piece window entry for the region at @iova, asserting it has one there. */
static __u64 piece_entry(uint32_t d, uint64_t iova)
{
	const struct viommu_window *w = &view()->wins[d];
	uint64_t r = (iova - w->pbase) >> 21;

	cr_assert_neq(w->pregions, 0, "domain slot %u has a piece window", d);
	cr_assert_lt(r, w->pregions, "0x%llx is in the piece window of domain slot %u", (unsigned long long)iova, d);
	return view()->pieces[w->pfirst + r];
}

Test(window, a_2mib_piece_past_the_window_is_one_word_of_its_piece_window_on_every_path)
{
	struct viommu_reader *r;
	struct viommu_query q[64];
	const uint64_t P = WIN + WIN_SPAN + 6 * MIB; /* past the window, 2 MiB aligned */
	const uint64_t FAR = 1ull << 46; /* past the piece window too: the hash answers */
	uint32_t d;
	unsigned n = 0;

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x70000000, RW); /* the first MAP places both windows */
	d = dslot_of(8);
	cr_assert_eq(view()->wins[d].pbase, 0, "the 128 GiB block holding the first MAP");
	cr_assert_eq((uint64_t)view()->wins[d].pregions << 21, (uint64_t)VIOMMU_PIECE_REGIONS_DEFAULT << 21);

	map_ok(1, P, 2 * MIB, 0x80000000, RW);
	map_ok(1, P + 4 * MIB, 4 * MIB + 0x1000, 0x90000000, R); /* two pieces and a page */
	map_ok(1, FAR, 2 * MIB, 0xa0000000, W);
	cr_assert_eq(piece_entry(d, P), VIOMMU_HASH_DIRECT_MAKE(0x80000000, RW));
	cr_assert_eq(piece_entry(d, P + 4 * MIB), VIOMMU_HASH_DIRECT_MAKE(0x90000000, R));
	cr_assert_eq(piece_entry(d, P + 6 * MIB), VIOMMU_HASH_DIRECT_MAKE(0x90200000, R));
	cr_assert_eq(piece_entry(d, P + 8 * MIB), 0, "a page, not a piece: nothing");
	cr_assert_eq(piece_entry(d, P + 2 * MIB), 0, "nothing mapped");
	n += probes(q + n, 8, P + 0x12345);
	n += probes(q + n, 8, P + 2 * MIB - 8);
	n += probes(q + n, 8, P + 2 * MIB + 0x10);
	n += probes(q + n, 8, P + 4 * MIB + 0x777);
	n += probes(q + n, 8, P + 6 * MIB - 0x10);
	n += probes(q + n, 8, P + 8 * MIB + 0x10);
	n += probes(q + n, 8, FAR + 0x4321);
	q[n++] = qy(8, P + 0x10, 8, W); /* a flag it has */
	q[n++] = qy(8, P + 4 * MIB + 0x10, 8, W); /* one it lacks: the general path says so */
	check_queries(r, q, n);

	/* UNMAP clears the word before the record dies; a MAP of other PAs there sets it again. */
	unmap_ok(1, P, 2 * MIB);
	cr_assert_eq(piece_entry(d, P), 0);
	check_queries(r, q, n);
	map_ok(1, P, 2 * MIB, 0xb0000000, R);
	cr_assert_eq(piece_entry(d, P), VIOMMU_HASH_DIRECT_MAKE(0xb0000000, R));
	check_queries(r, q, n);

	/* The domain goes: its piece window with it, every word 0, and the next domain to take the
	 * window answers its own pieces, not these. */
	unmap_ok(1, P, 2 * MIB);
	unmap_ok(1, P + 4 * MIB, 4 * MIB + 0x1000);
	unmap_ok(1, FAR, 2 * MIB);
	unmap_ok(1, WIN + 0x5000, 0x1000);
	detach_ok(1, 8);
	cr_assert_eq(view()->meta->windows_used, 0);
	attach_ok(2, 9);
	map_ok(2, WIN + 0x3000, 0x1000, 0x1000, R); /* the same blocks as domain 1 had */
	map_ok(2, P + 4 * MIB, 2 * MIB, 0xc0000000, RW);
	cr_assert_eq(piece_entry(dslot_of(9), P + 4 * MIB), VIOMMU_HASH_DIRECT_MAKE(0xc0000000, RW));
	attach_ok(1, 8);
	n = 0;
	n += probes(q + n, 8, P + 4 * MIB + 0x10); /* domain 1 has nothing now */
	n += probes(q + n, 9, P + 4 * MIB + 0x10);
	n += probes(q + n, 9, P + 6 * MIB + 0x10);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

/* The bucket holding region @iova's key for domain slot @d, and its way in *@way; or NULL. */
static const struct viommu_hash_bucket *hash_bucket_way(uint32_t d, uint64_t iova, int *way)
{
	const struct viommu_fp_view *v = view();
	const __u64 key = VIOMMU_HASH_KEY(d, iova);
	const uint32_t b[2] = { viommu_hash_index(key, v->hash_mask), viommu_hash_alt(key, v->hash_mask) };

	for (int i = 0; i < 2; i++)
		for (*way = 0; *way < VIOMMU_HASH_WAYS; (*way)++)
			if (v->buckets[b[i]].key[*way] == key)
				return &v->buckets[b[i]];
	return NULL;
}

static const struct viommu_hash_bucket *hash_bucket(uint32_t d, uint64_t iova)
{
	int w;

	return hash_bucket_way(d, iova, &w);
}

/* Region @iova's value in the hash for domain slot @d (0: no key holds it). */
static __u64 hash_entry(uint32_t d, uint64_t iova)
{
	int w;
	const struct viommu_hash_bucket *b = hash_bucket_way(d, iova, &w);

	return b ? b->val[w] : 0;
}

Test(window, a_lone_page_outside_the_windows_is_its_regions_hash_value_on_every_path)
{
	struct viommu_reader *r;
	struct viommu_query q[64];
	const uint64_t L = 1ull << 45; /* past the window and the piece window: the hash answers */
	const uint64_t LEAF_WORD = VIOMMU_SLOT_LEAF; /* a leaf's word: its tag */
	uint32_t d;
	unsigned n = 0;

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x70000000, RW); /* the first MAP places the window */
	d = dslot_of(8);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, WIN + 0x5000)) == VIOMMU_HASH_DIRECT, 0,
		     "a window's page is never a lone value");

	/* One page in its region: the region's value is the page's translation. */
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123456000, R, 9));
	n += probes(q + n, 8, L + 9 * 0x1000 + 0x10);
	n += probes(q + n, 8, L + 10 * 0x1000 + 0x10); /* another page of the region: not mapped */
	n += probes(q + n, 8, L + 0x10);
	q[n++] = qy(8, L + 9 * 0x1000, 8, W); /* a flag it lacks: the general path says so */
	check_queries(r, q, n);

	/* A second page: the leaf's word again, before the page is there; both answered. */
	map_ok(1, L + 10 * 0x1000, 0x2000, 0x200000000, RW);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, L)), LEAF_WORD);
	check_queries(r, q, n);
	/* Back to one page: the leaf's word stays (finding the page left would read the leaf). */
	unmap_ok(1, L + 10 * 0x1000, 0x2000);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, L)), LEAF_WORD);
	check_queries(r, q, n);
	/* The page's UNMAP: the leaf's word before its PTE is cleared, then no key at all. */
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	cr_assert_eq(hash_entry(d, L), 0);
	check_queries(r, q, n);

	/* Alone again, at another page and PA: the new value; the page's UNMAP removes it. */
	map_ok(1, L + 0x1000 * 511, 0x1000, 0x4000000000, RW | MMIO);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x4000000000, RW | MMIO, 511));
	n += probes(q + n, 8, L + 0x1000 * 511 + 0x7ff);
	check_queries(r, q, n);
	/* A PA the value cannot hold (2^52 and above): the leaf's word, answered all the same. */
	map_ok(1, L + (4 << 20), 0x1000, 1ull << 52, R);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, L + (4 << 20))), LEAF_WORD);
	n += probes(q + n, 8, L + (4 << 20) + 0x10);
	check_queries(r, q, n);
	unmap_ok(1, L + 0x1000 * 511, 0x1000);
	unmap_ok(1, L + (4 << 20), 0x1000);
	cr_assert_eq(hash_entry(d, L), 0);
	check_queries(r, q, n);
	viommu_reader_close(r);
}

Test(window, a_key_leaving_its_way_moves_its_buckets_seq_and_nothing_else_does)
{
	struct viommu_reader *r = win_reader_ep8();
	const struct viommu_fp_view *v = view();
	const uint64_t L = 1ull << 45, P = L + (64 << 20); /* past the windows: the hash answers */
	const struct viommu_hash_bucket *b, *pb;
	uint32_t d, s, ps, seqs[2];

	map_ok(1, WIN + 0x5000, 0x1000, 0x70000000, RW);
	d = dslot_of(8);
	/* The first buckets of the two keys, before they are in: a fresh table has room there. */
	b = &v->buckets[viommu_hash_index(VIOMMU_HASH_KEY(d, L), v->hash_mask)];
	pb = &v->buckets[viommu_hash_index(VIOMMU_HASH_KEY(d, P), v->hash_mask)];
	s = b->seq;
	ps = pb->seq;
	/* Every other bucket's seq, summed: nothing here removes a key anywhere else. */
	seqs[0] = 0;
	for (uint32_t i = 0; i <= v->hash_mask; i++)
		seqs[0] += v->buckets[i].seq;
	cr_assert_eq(s & 1, 0);
	/* A key entering a free way: the seq stays. */
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	cr_assert_eq(hash_bucket(d, L), b);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123456000, R, 9));
	cr_assert_eq(b->seq, s);
	/* Its value changed in place (the lone page's value to the leaf's word and back, as a
	 * second page comes and goes and the first is mapped again alone): the seq stays. */
	map_ok(1, L + 10 * 0x1000, 0x1000, 0x200000000, RW);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, L)), VIOMMU_SLOT_LEAF);
	unmap_ok(1, L + 10 * 0x1000, 0x1000);
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	cr_assert_eq(b->seq, s + 2, "the key left once");
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123456000, R, 9));
	cr_assert_eq(b->seq, s + 2);
	/* The key leaves: the seq moves on by 2 (odd while it does, even after). */
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	cr_assert_null(hash_bucket(d, L));
	cr_assert_eq(b->seq, s + 4);
	/* A 2 MiB piece: its slot word goes in, then its direct value in place at publication
	 * (one MAP): the seq stays; its UNMAP moves it on. */
	ps = pb == b ? s + 4 : ps;
	map_ok(1, P, 2 << 20, 0x40000000, RW);
	cr_assert_eq(hash_bucket(d, P), pb);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, P)), VIOMMU_HASH_DIRECT);
	cr_assert_eq(pb->seq, ps);
	unmap_ok(1, P, 2 << 20);
	cr_assert_null(hash_bucket(d, P));
	cr_assert_eq(pb->seq, ps + 2);
	seqs[1] = 0;
	for (uint32_t i = 0; i <= v->hash_mask; i++)
		seqs[1] += v->buckets[i].seq;
	cr_assert_eq(seqs[1] - seqs[0], 6, "three removals, in those two buckets only");
	viommu_reader_close(r);
}

/* A hooked test runs the writer's step in a SIGSEGV handler, which TSan reports as
 * signal-unsafe: it skips under TSan, saying so. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_HOOKED_UNDER_TSAN() \
	cr_skip_test("TSan: the writer's step runs in a SIGSEGV handler, which TSan reports as signal-unsafe")
#else
#define SKIP_HOOKED_UNDER_TSAN() ((void)0)
#endif

/* ---- the writer's own stores to a bucket, one at a time ----
 * The page of buckets is made read-only: the writer's store to it faults, the handler gives
 * the page back and sets the trap flag, the store runs, the trap records the bucket and takes
 * the page away again. So every state the bucket passes through, as the writer's real code
 * (hash_set, hash_del, hash_direct, lone_begin, lone_end) leaves it store by store, is seen,
 * which single-threaded tests of the end state cannot see. x86-64 (the trap flag). */
#if defined(__x86_64__)
#define BUCKET_STATES 256
static char *rec_page;
static const struct viommu_hash_bucket *rec_bucket;
static struct viommu_hash_bucket rec_states[BUCKET_STATES];
static unsigned rec_n, rec_traps;

static void on_bucket_store(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;

	if (sig == SIGSEGV) {
		if (!rec_page || (uintptr_t)si->si_addr - (uintptr_t)rec_page >= 4096) {
			signal(sig, SIG_DFL);
			return;
		}
		mprotect(rec_page, 4096, PROT_READ | PROT_WRITE);
		uc->uc_mcontext.gregs[REG_EFL] |= 0x100; /* trap after the store */
		return;
	}
	uc->uc_mcontext.gregs[REG_EFL] &= ~0x100;
	rec_traps++;
	if (rec_n < BUCKET_STATES && memcmp(&rec_states[rec_n - 1], rec_bucket, sizeof(*rec_bucket)))
		rec_states[rec_n++] = *rec_bucket;
	mprotect(rec_page, 4096, PROT_READ);
}

static void record_bucket(const struct viommu_hash_bucket *b)
{
	struct sigaction sa = { .sa_sigaction = on_bucket_store, .sa_flags = SA_SIGINFO };

	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	cr_assert_eq(sigaction(SIGTRAP, &sa, NULL), 0);
	rec_bucket = b;
	rec_states[0] = *b;
	rec_n = 1;
	rec_traps = 0;
	rec_page = (char *)((uintptr_t)b & ~(uintptr_t)4095);
	cr_assert_eq(mprotect(rec_page, 4096, PROT_READ), 0);
}

static void record_end(void)
{
	cr_assert_eq(mprotect(rec_page, 4096, PROT_READ | PROT_WRITE), 0);
	rec_page = NULL;
	signal(SIGSEGV, SIG_DFL);
	signal(SIGTRAP, SIG_DFL);
	cr_assert_lt(rec_n, BUCKET_STATES, "more states than recorded");
}

/* What a reader needs of the writer (I6): between two states with the same even seq no key
 * left a way (a reader that read its key there, then its value, then the seq again would take
 * another key's value: the hash-way ABA); a key goes into a way only after its value (the way's
 * value already the key's when the key appears); the seq even at the end. */
static void check_bucket_states(void)
{
	for (unsigned i = 0; i < rec_n; i++) {
		if (rec_states[i].seq & 1)
			continue;
		for (unsigned j = i + 1; j < rec_n && rec_states[j].seq == rec_states[i].seq; j++)
			for (int w = 0; w < VIOMMU_HASH_WAYS; w++)
				cr_assert(!rec_states[j - 1].key[w] || rec_states[j].key[w] == rec_states[j - 1].key[w],
					  "states %u-%u, seq %u: way %d's key 0x%llx left with the seq even", i, j,
					  rec_states[i].seq, w, (unsigned long long)rec_states[j - 1].key[w]);
	}
	for (unsigned m = 1; m < rec_n; m++)
		for (int w = 0; w < VIOMMU_HASH_WAYS; w++)
			if (!rec_states[m - 1].key[w] && rec_states[m].key[w])
				cr_assert(rec_states[m - 1].val[w] && rec_states[m].val[w] == rec_states[m - 1].val[w],
					  "state %u: way %d's key went in before its value", m, w);
	cr_assert_eq(rec_states[rec_n - 1].seq & 1, 0);
}

Test(window, the_writers_stores_never_take_a_key_from_its_way_while_the_buckets_seq_is_even)
{
	struct viommu_reader *r;
	const struct viommu_fp_view *v;
	const uint64_t L = 1ull << 45; /* past the windows: lone pages, their values in the hash */
	uint64_t J = 0;
	const struct viommu_hash_bucket *b;
	struct viommu_query q[2];
	uint32_t d, bi;
	bool saw_odd = false;

	SKIP_HOOKED_UNDER_TSAN();
	r = win_reader_ep8();
	v = view();
	map_ok(1, WIN + 0x5000, 0x1000, 0x70000000, RW);
	d = dslot_of(8);
	/* K's region, and another region J whose first bucket is K's: J takes the way K leaves. */
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	b = hash_bucket(d, L);
	cr_assert_not_null(b);
	bi = (uint32_t)(b - v->buckets);
	for (uint64_t i = 1; i < (1u << 24) && !J; i++)
		if (viommu_hash_index(VIOMMU_HASH_KEY(d, L + (i << 21)), v->hash_mask) == bi)
			J = L + (i << 21);
	cr_assert_neq(J, 0);
	/* The way goes K -> J -> K, with a second page in each region (the lone value to the
	 * leaf's word, in place) and a 2 MiB piece published there (its slot word, then its direct
	 * value); every store to the bucket recorded. */
	record_bucket(b);
	map_ok(1, L + 10 * 0x1000, 0x1000, 0x200000000, RW);
	unmap_ok(1, L + 10 * 0x1000, 0x1000);
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	map_ok(1, J + 9 * 0x1000, 0x1000, 0x7000000000, RW);
	unmap_ok(1, J + 9 * 0x1000, 0x1000);
	map_ok(1, J, 2 << 20, 0x40000000, RW);
	unmap_ok(1, J, 2 << 20);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	record_end();
	cr_assert_gt(rec_traps, 8, "the writer's stores were not seen (%u)", rec_traps);
	for (unsigned m = 0; m < rec_n; m++)
		saw_odd |= rec_states[m].seq & 1;
	cr_assert(saw_odd, "no state with the seq odd: a removal was not seen store by store");
	check_bucket_states();
	/* And the reader's answers after all that. */
	q[0] = qy(8, L + 9 * 0x1000 + 0x10, 8, R);
	q[1] = qy(8, J + 0x10, 8, R);
	check_queries(r, q, 2);
	viommu_reader_close(r);
}
#endif

Test(window, a_piece_window_always_holds_its_window_and_one_smaller_is_refused)
{
	dev_setup();
	/* A window larger than the default piece window: its piece window grows to hold it. */
	fp_setup(&(struct viommu_fastpath_opts){ .window_regions = 1u << 17 });
	cr_assert_eq(view()->meta->window_regions, 1u << 17);
	cr_assert_eq(view()->meta->piece_regions, 1u << 17);
	viommu_fastpath_free(fp);
	/* Asked for one smaller than the window: refused, nothing made. */
	fp = viommu_fastpath_new(dev, &(struct viommu_fastpath_opts){ .window_regions = 64, .piece_regions = 32 });
	cr_assert_null(fp);
	cr_assert_eq(errno, EINVAL);
	fp_setup(&(struct viommu_fastpath_opts){ .window_regions = 64, .piece_regions = 64 });
	cr_assert_eq(view()->meta->piece_regions, 64);
}

/* ---- a burst whose endpoint moves while its PTEs are read ---- */

/* A load hooked by the page it reads (as in tests/test_inline.c): the page is made inaccessible;
 * the fault gives it back and runs the writer's step, here real requests to the device, then the
 * load runs again. The interrupted reader holds no lock, so the requests can run there. */
static void *burst_page;
static void (*burst_step)(void);
static unsigned burst_fired;

static void burst_on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!burst_page || (uintptr_t)si->si_addr - (uintptr_t)burst_page >= 4096) {
		signal(sig, SIG_DFL);
		return;
	}
	mprotect(burst_page, 4096, PROT_READ | PROT_WRITE);
	burst_page = NULL;
	burst_fired++;
	burst_step();
}

/* Endpoint 8 leaves domain 1 and endpoint 9 takes the window, in domain 2, with its own page at
 * RACE_X: the PTE that endpoint 8's copy points at now holds domain 2's page. */
static void step_window_changes_hands(void)
{
	cr_assert_eq(test_detach(dev, 1, 8), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 2, RACE_X, RACE_X + 0xfff, RACE_PA_B, RW), VIOMMU_S_OK);
}

/* Hook the page holding @addr: the next access to it runs @s once (burst_fired counts it). */
static void burst_hook(const void *addr, void (*s)(void))
{
	struct sigaction sa = { .sa_sigaction = burst_on_segv, .sa_flags = SA_SIGINFO };

	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	burst_fired = 0;
	burst_step = s;
	burst_page = (void *)((uintptr_t)addr & ~(uintptr_t)4095);
	cr_assert_eq(mprotect(burst_page, 4096, PROT_NONE), 0);
}

/* Burst @q (@n queries of endpoint 8) with the page holding @addr hooked by the writer's step @s:
 * the step ran at the burst's first load of that page, and every answer is the store's, a fault
 * (endpoint 8 is in no domain once the step ran); a burst of PAs (@pas) sets no bit. */
static void burst_after_step(struct viommu_reader *r, const struct viommu_query *q, unsigned n, const void *addr,
			     void (*s)(void), bool pas)
{
	struct viommu_answer a[VIOMMU_BULK_MAX], want;
	uint64_t pa[VIOMMU_BULK_MAX], mask = 0;

	burst_hook(addr, s);
	if (pas)
		mask = viommu_reader_translate_bulk_pa(r, q, pa, n);
	else
		viommu_reader_translate_bulk(r, q, a, n);
	cr_assert_eq(burst_fired, 1, "the step ran at the hooked load");
	for (unsigned i = 0; i < n; i++) {
		viommu_device_answer(dev, &q[i], &want);
		cr_assert_eq(want.result, VIOMMU_XLATE_FAULT, "endpoint 8 is in no domain now");
		if (!pas)
			assert_same(&q[i], &want, &a[i], "the burst");
	}
	cr_assert_eq(mask, 0, "the burst of PAs gave 0x%llx for queries that fault", (unsigned long long)mask);
}

/* The burst answers its window queries from their PTEs as they come, and checks each endpoint
 * copy once, after the last PTE: a copy that went stale meanwhile has its queries answered
 * again the long way, before the burst returns. */
static void burst_ptes_moved(bool pas)
{
	struct viommu_query q[3] = { qy(8, RACE_X + 0x10, 8, R), qy(8, RACE_X + 0x20, 8, R),
				     qy(8, RACE_X + 0x1010, 8, R) };
	struct viommu_answer a;
	struct viommu_reader *r;
	const struct viommu_reader_epw *c;

	SKIP_HOOKED_UNDER_TSAN();
	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	map_ok(1, RACE_X, 0x2000, RACE_PA_A, RW);
	/* The reader's copy of endpoint 8's window, and its answer before anything moves. */
	cr_assert_eq(viommu_reader_translate(r, &q[0], &a), VIOMMU_XLATE_HIT);
	cr_assert_eq(a.pa, RACE_PA_A + 0x10);
	c = &r->epw[8 % VIOMMU_READER_EPW];
	cr_assert_eq(c->ep, 8);
	cr_assert(RACE_X - c->base < c->span, "RACE_X is in the window");
	/* The step at the burst's first PTE load. */
	burst_after_step(r, q, 3, &c->first[(RACE_X - c->base) >> VIOMMU_PAGE_SHIFT], step_window_changes_hands, pas);
	viommu_reader_close(r);
}

Test(window, a_burst_whose_endpoint_moved_while_its_ptes_were_read_answers_them_again_the_long_way)
{
	burst_ptes_moved(false);
}

Test(window, a_burst_of_pas_whose_endpoint_moved_while_its_ptes_were_read_gives_none_of_them)
{
	burst_ptes_moved(true);
}

/* The same for a burst of queries in a 2 MiB piece inside the window: answered from the region's
 * word, which is read after its endpoint moved and the window's region became another domain's
 * piece. */
static void step_window_region_changes_hands(void)
{
	cr_assert_eq(test_detach(dev, 1, 8), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 2, 9, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 2, WIN + 6 * MIB, WIN + 8 * MIB - 1, 0x180000000ull, RW), VIOMMU_S_OK);
}

static void burst_words_moved(bool pas)
{
	const uint64_t va = WIN + 6 * MIB;
	struct viommu_query q[3] = { qy(8, va + 0x10, 8, R), qy(8, va + 0x5020, 8, R), qy(8, va + 0x1ff000, 8, R) };
	struct viommu_answer a;
	const struct viommu_reader_epw *c;
	struct viommu_reader *r;

	SKIP_HOOKED_UNDER_TSAN();
	win_setup(&(struct viommu_fastpath_opts){ .windows = 1 });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	map_ok(1, WIN + 0x1000, 0x1000, 0x1000, R); /* places the window */
	map_ok(1, va, 2 * MIB, 0x140000000ull, RW);
	cr_assert_eq(viommu_reader_translate(r, &q[0], &a), VIOMMU_XLATE_HIT);
	cr_assert_eq(a.pa, 0x140000000ull + 0x10);
	c = &r->epw[8 % VIOMMU_READER_EPW];
	cr_assert(va - c->base < c->span, "the piece is in the window");
	/* The step at the burst's first load of the region's word. */
	burst_after_step(r, q, 3, &c->wfirst[(va - c->base) >> VIOMMU_HASH_SHIFT], step_window_region_changes_hands,
			 pas);
	viommu_reader_close(r);
}

Test(window, a_burst_whose_endpoint_moved_while_its_piece_words_were_read_answers_them_again_the_long_way)
{
	burst_words_moved(false);
}

Test(window, a_burst_of_pas_whose_endpoint_moved_while_its_piece_words_were_read_gives_none_of_them)
{
	burst_words_moved(true);
}

/* ---- a page under a piece of 1 GiB while the writer makes and removes it ---- */

/* At the writer's step, the reader's answer and the shared path's, viommu_translate(): that one
 * reads the window's flags (VIOMMU_WIN_F_WIDE), the copy reads only the region's word, busy
 * while the piece lives (I13). */
static struct viommu_reader *wide_r;
static struct viommu_answer wide_mine, wide_shared;

static void step_compare_paths(void)
{
	const struct viommu_query q = qy(8, GIB + 0x3010, 8, R);

	viommu_reader_translate(wide_r, &q, &wide_mine);
	viommu_translate(wide_r, &q, &wide_shared, NULL);
}

/* The writer's own slot of domain slot @d's 1 GiB piece at @iova (its node's page is what the
 * UNMAP clears). */
static const __u64 *wide_slot(uint32_t d, uint64_t iova)
{
	uint32_t n = fp->dom_root[d];

	for (int l = 0; l < VIOMMU_RADIX_LEVELS - 1; l++) {
		const __u64 *s = &view()->nodes[n].slot[VIOMMU_SLOT_OF(l, iova)];

		if (VIOMMU_SLOT_TAG(*s) != VIOMMU_SLOT_NODE) {
			cr_assert_eq(VIOMMU_LEVEL_SHIFT(l), 30, "the piece is a level-%d slot", l);
			return s;
		}
		n = VIOMMU_SLOT_IDX(*s);
	}
	cr_assert_fail("no slot holds the piece");
	return NULL;
}

/* Run @what with the writer's page of @addr hooked by step_compare_paths(): the step ran once,
 * at the writer's first access of that page, and both paths answered alike there. */
static void wide_hooked(const void *addr, void (*what)(void))
{
	memset(&wide_mine, 0xa5, sizeof(wide_mine));
	memset(&wide_shared, 0x5a, sizeof(wide_shared));
	burst_hook(addr, step_compare_paths);
	what();
	cr_assert_eq(burst_fired, 1, "the step ran at the writer's access");
	cr_assert_eq(wide_mine.result, wide_shared.result, "the copy answered %u, the shared path %u",
		     wide_mine.result, wide_shared.result);
	if (wide_mine.result == VIOMMU_XLATE_HIT)
		cr_assert_eq(wide_mine.pa, wide_shared.pa);
}

static void map_wide(void)
{
	map_ok(1, GIB, GIB, 0x4000000000ull, RW);
}

static void unmap_wide(void)
{
	unmap_ok(1, GIB, GIB);
}

/* A 1 GiB piece over a window of 16 regions: while the MAP marks the words of the regions it
 * covers (it must before its record goes live) and while the UNMAP clears its slot (the words
 * go back to 0 only after), a reader's copy answers a page under it as the shared path does,
 * never a miss while the piece can be reached. */
Test(window, a_page_under_a_1gib_piece_is_never_a_window_miss_while_the_piece_can_be_reached)
{
	const __u64 *word;
	uint32_t d;

	SKIP_HOOKED_UNDER_TSAN();
	win_setup(&(struct viommu_fastpath_opts){ .window_regions = 16 });
	wide_r = viommu_reader_open(fp);
	cr_assert_not_null(wide_r);
	attach_ok(1, 8);
	map_ok(1, GIB + 0x3000, 0x1000, 0x3000, RW); /* places the window [1 GiB, + 32 MiB) */
	cr_assert_eq(translate(wide_r, 8, GIB + 0x3010, R).pa, 0x3010); /* the reader has its copy */
	unmap_ok(1, GIB + 0x3000, 0x1000);
	d = dslot_of(8);
	word = &view()->pieces[view()->wins[d].pfirst + ((GIB - view()->wins[d].pbase) >> VIOMMU_HASH_SHIFT)];
	cr_assert_eq(*word, 0);
	wide_hooked(word, map_wide);
	cr_assert_eq(*word, VIOMMU_PIECE_BUSY, "the word says a larger piece holds the region");
	cr_assert_eq(translate(wide_r, 8, GIB + 0x3010, R).pa, 0x4000000000ull + 0x3010);
	wide_hooked(wide_slot(d, GIB), unmap_wide);
	cr_assert_eq(wide_mine.result, VIOMMU_XLATE_HIT, "the piece was there at the UNMAP's step");
	cr_assert_eq(*word, 0);
	cr_assert_eq(translate(wide_r, 8, GIB + 0x3010, R).result, VIOMMU_XLATE_FAULT);
	viommu_reader_close(wide_r);
}

/* ---- lone pages (I6), more cases ---- */

/* Every query kind at every page of interest, through every reader, checked with the store. */
static void lone_check_all(struct viommu_reader *r, uint32_t ep, const uint64_t *pages, unsigned np)
{
	struct viommu_query q[256];
	unsigned n = 0;

	for (unsigned i = 0; i < np && n + 8 <= 256; i++) {
		n += probes(q + n, ep, pages[i] + 0x10);
		q[n++] = qy(ep, pages[i], 0x3000, R); /* a range over 3 pages */
		q[n++] = qy(ep, pages[i] + 0x800, 0x1000, R | WHOLE);
		q[n++] = qy(ep, pages[i], 1, W);
		q[n++] = qy(ep, pages[i] - 0x1000, 0x2000, R); /* from the page before */
	}
	check_queries(r, q, n);
}

Test(window, lone_pages_are_answered_through_a_map_refused_halfway_a_remap_and_maps_of_several_pages)
{
	struct viommu_reader *r;
	const uint64_t L = 1ull << 45;
	uint32_t d;
	uint64_t pages[] = { L + 9 * 0x1000, L + 511 * 0x1000, L + (2 << 20), L + 10 * 0x1000, L };

	/* One pool leaf, no windows: a MAP that needs a second leaf is refused halfway. */
	win_setup(&(struct viommu_fastpath_opts){ .leaves = 1, .overcommit = true, .windows = VIOMMU_WINDOWS_NONE });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, RW);
	d = dslot_of(8);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123456000, RW, 9));
	lone_check_all(r, 8, pages, 5);
	/* Pages 510-511 of the lone region, then page 0 of the next: refused (no leaf). */
	cr_assert_eq(test_map(dev, 1, L + 510 * 0x1000, L + (2 << 20) + 0xfff, 0x200000000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	cr_assert_eq(VIOMMU_SLOT_TAG(hash_entry(d, L)), VIOMMU_SLOT_LEAF, "the rollback put the leaf's word back");
	lone_check_all(r, 8, pages, 5);
	/* A one-page MAP into a new region: refused too. */
	cr_assert_eq(test_map(dev, 1, L + (4 << 20), L + (4 << 20) + 0xfff, 0x300000000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	lone_check_all(r, 8, pages, 5);
	/* The lone page remapped with other flags and PA. */
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x777000, R | MMIO);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x777000, R | MMIO, 9));
	lone_check_all(r, 8, pages, 5);
	/* A multi-page MAP into the lone region from below (the region before has no leaf: refused). */
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	map_ok(1, L + 0x1000, 0x1000, 0x888000, RW);
	map_ok(1, L + 2 * 0x1000, 0x3000, 0x999000, RW);
	lone_check_all(r, 8, pages, 5);
	unmap_ok(1, L + 0x1000, 0x1000);
	lone_check_all(r, 8, pages, 5);
	unmap_ok(1, L + 2 * 0x1000, 0x3000);
	cr_assert_eq(hash_entry(d, L), 0);
	viommu_reader_close(r);
}

Test(window, lone_pages_are_answered_beside_regions_left_out_of_a_full_hash_in_a_fast_path_made_over_mappings)
{
	struct viommu_reader *r;
	const uint64_t L = 1ull << 45;
	uint64_t pages[24];
	uint32_t d;

	dev_setup();
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	for (int i = 0; i < 12; i++) {
		pages[i] = L + ((uint64_t)i << 21) + ((uint64_t)(i * 37 % 512) << 12);
		cr_assert_eq(test_map(dev, 1, pages[i], pages[i] + 0xfff, 0x40000000ull + ((uint64_t)i << 12), i & 1 ? R : RW),
			     VIOMMU_S_OK);
	}
	/* Two buckets: 2 * VIOMMU_HASH_WAYS ways for 12 regions, the rest left out (ROOT_F_WALK). */
	fp_setup(&(struct viommu_fastpath_opts){ .hash_buckets = 2, .overcommit = true, .windows = VIOMMU_WINDOWS_NONE });
	enable_bpf();
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	d = dslot_of(8);
	for (int i = 0, lone = 0, out = 0; i < 12; i++) {
		lone += (hash_entry(d, pages[i]) & VIOMMU_HASH_LONE) != 0;
		out += hash_entry(d, pages[i]) == 0;
		cr_assert(i < 11 || (lone == 2 * VIOMMU_HASH_WAYS && out == 12 - 2 * VIOMMU_HASH_WAYS),
			  "%d regions in the hash, each a lone page (%d), the rest left out (%d)", 2 * VIOMMU_HASH_WAYS,
			  lone, out);
	}
	lone_check_all(r, 8, pages, 12);
	/* Second pages in half of them, then their first pages out. */
	for (int i = 0; i < 12; i += 2) {
		pages[12 + i / 2] = (pages[i] & ~((2ull << 20) - 1)) + ((uint64_t)((i * 37 + 5) % 512) << 12);
		map_ok(1, pages[12 + i / 2], 0x1000, 0x50000000ull + ((uint64_t)i << 12), RW);
	}
	lone_check_all(r, 8, pages, 18);
	for (int i = 0; i < 12; i += 2)
		unmap_ok(1, pages[i], 0x1000);
	lone_check_all(r, 8, pages, 18);
	/* The domain goes with its lone pages. */
	detach_ok(1, 8);
	attach_ok(1, 8);
	lone_check_all(r, 8, pages, 18);
	viommu_reader_close(r);
}

Test(window, a_lone_page_in_the_piece_window_past_the_window_is_answered_beside_a_2mib_piece)
{
	struct viommu_reader *r;
	const uint64_t L = 64 * GIB; /* in the piece window [0, 128 GiB), past the window */
	uint64_t pages[] = { L + 9 * 0x1000, L + 10 * 0x1000, L + (2 << 20) + 0x5000, WIN + 0x5000 };
	uint32_t d;

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x70000000, RW);
	d = dslot_of(8);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123456000, R);
	map_ok(1, L + (2 << 20), 2 << 20, 0x80000000, RW); /* a 2 MiB piece next to it */
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123456000, R, 9));
	for (int k = 0; k < 2; k++) {
		lone_check_all(r, 8, pages, 4);
		lone_check_all(r, 8, pages, 4);
	}
	map_ok(1, L + 10 * 0x1000, 0x1000, 0x223456000, RW);
	lone_check_all(r, 8, pages, 4);
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	lone_check_all(r, 8, pages, 4);
	viommu_reader_close(r);
}

/* ---- the writer's order around a lone value, hooked at its stores ---- */

static struct viommu_reader *lone_r;
static struct viommu_answer lone_ans[2];
static uint64_t lone_q_iova;
static const void *lone_next;

static void step_lone_answer(void)
{
	struct viommu_query q = qy(8, lone_q_iova, 1, R);

	viommu_reader_translate(lone_r, &q, &lone_ans[0]);
	q.access |= WHOLE;
	viommu_translate(lone_r, &q, &lone_ans[1], NULL);
}

static void step_lone_rearm(void)
{
	burst_hook(lone_next, step_lone_answer);
}

static void lone_map_q(void)
{
	map_ok(1, (1ull << 45) + 10 * 0x1000, 0x1000, 0x555000, R);
}

static void lone_unmap_p(void)
{
	unmap_ok(1, (1ull << 45) + 9 * 0x1000, 0x1000);
}

Test(window, a_lone_value_is_gone_before_another_page_of_its_region_is_present_and_before_its_page_is_cleared)
{
	const uint64_t L = 1ull << 45;
	uint32_t d, li, bi;
	uint64_t key;

	SKIP_HOOKED_UNDER_TSAN();
	win_setup(&(struct viommu_fastpath_opts){ .windows = VIOMMU_WINDOWS_NONE });
	lone_r = viommu_reader_open(fp);
	cr_assert_not_null(lone_r);
	attach_ok(1, 8);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123000, R);
	d = dslot_of(8);
	li = VIOMMU_SLOT_IDX(level4_word(8, L));
	key = VIOMMU_HASH_KEY(d, L);
	bi = viommu_hash_index(key, view()->hash_mask);
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123000, R, 9));

	/* A MAP of page 10: hooked at its PTE store, then at the writer's next access of the
	 * bucket (after the PTE is present): page 10 must be answered mapped there. */
	lone_q_iova = L + 10 * 0x1000 + 0x10;
	lone_next = &view()->buckets[bi];
	memset(lone_ans, 0xa5, sizeof(lone_ans));
	burst_hook(&view()->ptes[li].pte[10], step_lone_rearm);
	lone_map_q();
	cr_assert_eq(burst_fired, 1, "the second step ran (burst_hook resets the count) (%u)", burst_fired);
	cr_assert_eq(lone_ans[0].result, VIOMMU_XLATE_HIT, "page 10's PTE is present: the reader answers %u",
		     lone_ans[0].result);
	cr_assert_eq(lone_ans[1].result, VIOMMU_XLATE_HIT, "whole extent: %u", lone_ans[1].result);
	unmap_ok(1, L + 10 * 0x1000, 0x1000);
	/* Lone again at page 9? Back to one page keeps the leaf word: remake it. */
	unmap_ok(1, L + 9 * 0x1000, 0x1000);
	map_ok(1, L + 9 * 0x1000, 0x1000, 0x123000, R);
	li = VIOMMU_SLOT_IDX(level4_word(8, L));
	cr_assert_eq(hash_entry(d, L), VIOMMU_HASH_LONE_MAKE(0x123000, R, 9));

	/* The UNMAP of page 9: hooked at its PTE store, then at the writer's next access of the
	 * leaf's page (ext[], after the PTE is 0): page 9 must not be answered mapped there. */
	lone_q_iova = L + 9 * 0x1000 + 0x10;
	lone_next = &view()->leaves[li].ext[9];
	memset(lone_ans, 0xa5, sizeof(lone_ans));
	burst_hook(&view()->ptes[li].pte[9], step_lone_rearm);
	lone_unmap_p();
	cr_assert_eq(burst_fired, 1, "the second step ran (burst_hook resets the count) (%u)", burst_fired);
	cr_assert_eq(lone_ans[0].result, VIOMMU_XLATE_FAULT, "page 9's PTE is 0: the reader answers %u (pa 0x%llx)",
		     lone_ans[0].result, (unsigned long long)lone_ans[0].pa);
	cr_assert_eq(lone_ans[1].result, VIOMMU_XLATE_FAULT, "whole extent: %u", lone_ans[1].result);
	viommu_reader_close(lone_r);
}

/* VIOMMU_WIN_F_PIECES with a map straddling the window's end, 1 GiB pieces, and both flags. */
static uint64_t win_flags(uint32_t d)
{
	return view()->wins[d].base & VIOMMU_WIN_F_MASK;
}

Test(window, the_pieces_hint_is_set_exactly_while_a_published_2mib_piece_lies_in_the_window)
{
	struct viommu_query q[8];
	struct viommu_reader *r;
	uint32_t d;

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	d = dslot_of(8);
	cr_assert_eq(win_flags(d), 0);
	/* 4 MiB straddling the window's end: one 2 MiB piece inside, one past it. */
	map_ok(1, WIN + WIN_SPAN - 2 * MIB, 4 * MIB, 0x200000000ull, RW);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES);
	/* A 2 MiB piece past the window only. */
	map_ok(1, WIN + WIN_SPAN + 4 * MIB, 2 * MIB, 0x300000000ull, RW);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES);
	/* A 1 GiB piece over the window: WIDE too, the count unchanged. */
	map_ok(1, WIN + GIB, GIB, 0x4000000000ull, RW);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES | VIOMMU_WIN_F_WIDE);
	q[0] = qy(8, WIN + WIN_SPAN - 2 * MIB + 0x123, 8, R);
	q[1] = qy(8, WIN + WIN_SPAN + 0x123, 8, R);
	q[2] = qy(8, WIN + GIB + 0x5000, 8, R);
	q[3] = qy(8, WIN + 0x5000, 8, R);
	q[4] = qy(8, WIN + 0x6000, 8, R);
	q[5] = qy(8, WIN + 3 * MIB, 8, R);
	check_queries(r, q, 6);
	unmap_ok(1, WIN + WIN_SPAN - 2 * MIB, 4 * MIB);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_WIDE);
	check_queries(r, q, 6);
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x500000000ull, RW);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES | VIOMMU_WIN_F_WIDE);
	unmap_ok(1, WIN + GIB, GIB);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES);
	q[5] = qy(8, WIN + 10 * MIB + 0x777, 8, RW);
	check_queries(r, q, 6);
	/* A map of pages and 2 MiB pieces mixed, inside. */
	map_ok(1, WIN + 20 * MIB - 0x1000, 4 * MIB + 0x2000, 0x600000000ull - 0x1000, RW);
	unmap_ok(1, WIN + 10 * MIB, 2 * MIB);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES);
	unmap_ok(1, WIN + 20 * MIB - 0x1000, 4 * MIB + 0x2000);
	cr_assert_eq(win_flags(d), 0);
	viommu_reader_close(r);
}

/* The order of a window page's two loads in a reader's copy (viommu_reader_window()): the PTE
 * first, as in a flat table, and alone for a miss, when the copy was made with no piece in the
 * window; the region's word first when the copy is made with one there (the flags above). A
 * piece coming moves the endpoint's seq on, and the walk makes the copy again. Every answer the
 * store's, in either order. */
static uint64_t copy_pte_span(const struct viommu_reader *r, uint32_t ep)
{
	return r->epw[ep % VIOMMU_READER_EPW].pte_span;
}

Test(window, a_copy_reads_the_pte_first_until_its_window_holds_a_2mib_piece)
{
	struct viommu_reader *r, *r2;
	struct viommu_query q[6];

	r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	q[0] = qy(8, WIN + 0x5010, 8, R);
	q[1] = qy(8, WIN + 10 * MIB + 0x777, 8, R); /* the piece's, when there is one */
	q[2] = qy(8, WIN + 0x6000, 8, R); /* not mapped */
	q[3] = qy(8, WIN + 0x5010, 8, RW);
	check_queries(r, q, 4);
	cr_assert_eq(copy_pte_span(r, 8), WIN_SPAN, "no piece in the window: the PTE first");
	/* A piece published after the copy was made: the entry's seq moved, the copy made again. */
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x500000000ull, RW);
	check_queries(r, q, 4);
	cr_assert_eq(copy_pte_span(r, 8), 0, "the copy made again with a piece there: the word first");
	check_queries(r, q, 4);
	/* A copy made while the piece lives reads the word first. */
	r2 = viommu_reader_open(fp);
	cr_assert_not_null(r2);
	translate(r2, 8, WIN + 0x5010, R); /* the copy made, by a lookup of the page only */
	cr_assert_eq(copy_pte_span(r2, 8), 0, "a piece in the window when the copy was made: the word first");
	check_queries(r2, q, 4);
	viommu_reader_close(r2);
	/* Gone: a copy made since reads the PTE first again; the older one keeps the word first. */
	unmap_ok(1, WIN + 10 * MIB, 2 * MIB);
	r2 = viommu_reader_open(fp);
	cr_assert_not_null(r2);
	translate(r2, 8, WIN + 0x5010, R);
	cr_assert_eq(copy_pte_span(r2, 8), WIN_SPAN, "no piece in the window: the PTE first");
	check_queries(r2, q, 4);
	check_queries(r, q, 4);
	/* The same piece back: the PTE-first copy is made again, and answers it. */
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x600000000ull, RW);
	check_queries(r2, q, 4);
	cr_assert_eq(copy_pte_span(r2, 8), 0);
	viommu_reader_close(r2);
	viommu_reader_close(r);
}

/* ---- the window's first piece moves its endpoints on (I13) ---- */

/* A reader's copy made with no piece in the window reads a window page's PTE first, and takes a
 * PTE not present for a miss without reading the region's word: the writer moves the seq of
 * every endpoint attached to the domain on before the window's first piece can answer. The
 * writer's first access to the piece's word (its word made busy, after its slot store and
 * before its record is published) is hooked: the seqs have moved by then, and the copy made
 * before answers nothing from its window. */
static struct viommu_reader *first_r;
static uint64_t first_seq[3];
static uint32_t first_d;

static void step_first_piece_installing(void)
{
	struct viommu_query q = qy(8, WIN + 10 * MIB + 0x777, 8, R);
	struct viommu_answer a;

	cr_assert(view()->wins[first_d].base & VIOMMU_WIN_F_PIECES, "the flag is set before the slot");
	cr_assert_neq(view()->eps[8].seq, first_seq[0], "endpoint 8's seq moved on before the piece can answer");
	cr_assert_neq(view()->eps[9].seq, first_seq[1], "endpoint 9's seq moved on before the piece can answer");
	cr_assert_eq(view()->eps[11].seq, first_seq[2], "endpoint 11 is in another domain");
	cr_assert_eq(viommu_reader_window(first_r, &q, &a), 0, "the copy made before answered %u", a.result);
}

static void first_seqs(uint64_t s[3])
{
	static const uint32_t ep[3] = { 8, 9, 11 };

	for (int i = 0; i < 3; i++)
		s[i] = __atomic_load_n(&view()->eps[ep[i]].seq, __ATOMIC_ACQUIRE);
}

Test(window, the_windows_first_piece_moves_its_endpoints_seqs_on_before_the_piece_can_answer)
{
	const struct viommu_window *w;
	struct viommu_query q[6];
	uint64_t now[3];

	first_r = win_reader_ep8();
	attach_ok(1, 9);
	attach_ok(2, 11);
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	map_ok(2, WIN + 0x5000, 0x1000, 0x6000, RW);
	first_d = dslot_of(8);
	w = &view()->wins[first_d];
	cr_assert_eq(translate(first_r, 8, WIN + 0x5010, R).pa, 0x5010);
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, WIN_SPAN, "no piece: the PTE first");
	cr_assert_eq(translate(first_r, 8, WIN + 10 * MIB + 0x777, R).result, VIOMMU_XLATE_FAULT);
	first_seqs(first_seq);
	burst_hook(&view()->pieces[w->pfirst + ((WIN + 10 * MIB - w->pbase) >> VIOMMU_HASH_SHIFT)],
		   step_first_piece_installing);
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x500000000ull, RW);
	cr_assert_eq(burst_fired, 1, "the step ran at the writer's first access of the piece's word");
	q[0] = qy(8, WIN + 10 * MIB + 0x777, 8, R);
	q[1] = qy(8, WIN + 0x5010, 8, R);
	q[2] = qy(8, WIN + 0x9000, 8, R);
	q[3] = qy(9, WIN + 10 * MIB + 0x777, 8, R);
	q[4] = qy(11, WIN + 10 * MIB + 0x777, 8, R);
	q[5] = qy(11, WIN + 0x5010, 8, R);
	check_queries(first_r, q, 6);
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, 0, "the copy made again: the word first");
	/* A second piece, and the pieces going: no endpoint moves. */
	first_seqs(first_seq);
	map_ok(1, WIN + 20 * MIB, 2 * MIB, 0x600000000ull, RW);
	unmap_ok(1, WIN + 10 * MIB, 2 * MIB);
	unmap_ok(1, WIN + 20 * MIB, 2 * MIB);
	first_seqs(now);
	cr_assert(now[0] == first_seq[0] && now[1] == first_seq[1] && now[2] == first_seq[2],
		  "only the window's first piece moves its endpoints");
	/* A 1 GiB piece over the window is a first piece too. */
	map_ok(1, WIN + GIB, GIB, 0x4000000000ull, RW);
	first_seqs(now);
	cr_assert(now[0] != first_seq[0] && now[1] != first_seq[1] && now[2] == first_seq[2],
		  "a 1 GiB piece over the window moves its endpoints");
	q[0] = qy(8, WIN + GIB + 0x3000, 8, R);
	check_queries(first_r, q, 6);
	viommu_reader_close(first_r);
}

/* The writer's order at the window's first piece: the flags, then the endpoints' seqs. Hooked
 * at the writer's first access to the endpoint entries' page during the MAP (the first seq it
 * moves): the flag is set already, so a copy made there is word-first. Flags stored after the
 * seqs would let a copy read the moved seq and no flag, and take the piece's pages for misses. */
static void step_first_seq_moving(void)
{
	cr_assert(view()->wins[first_d].base & VIOMMU_WIN_F_PIECES, "the flag is set before the first seq moves");
	cr_assert_eq(viommu_reader_window_load(first_r, 8), 1);
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, 0, "a copy made now reads the word first");
}

Test(window, the_windows_first_piece_sets_its_flag_before_it_moves_its_endpoints_seqs)
{
	struct viommu_query q[3];

	first_r = win_reader_ep8();
	attach_ok(1, 9);
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	first_d = dslot_of(8);
	cr_assert_eq(translate(first_r, 8, WIN + 0x5010, R).pa, 0x5010);
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, WIN_SPAN, "no piece: the PTE first");
	burst_hook(&view()->eps[8], step_first_seq_moving);
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x500000000ull, RW);
	cr_assert_eq(burst_fired, 1, "the step ran at the writer's first access of the endpoint entries");
	q[0] = qy(8, WIN + 10 * MIB + 0x777, 8, R);
	q[1] = qy(8, WIN + 0x5010, 8, R);
	q[2] = qy(8, WIN + 0x9000, 8, R);
	check_queries(first_r, q, 3);
	viommu_reader_close(first_r);
}

/* The reader's side: viommu_reader_window_load() reads the entry's seq, then the window entry's
 * flags. Hooked at its first load of the entry, the writer's step maps the window's first piece
 * (the flags, then the seqs): the copy comes out word-first, and answers the piece. (The seq and
 * the domain slot share the entry's line, so a page hook cannot fire between the seq's load
 * and the flags' in an order that swapped them; docs/concurrency.md I13 argues that order.) */
static void step_map_first_piece(void)
{
	cr_assert_eq(test_map(dev, 1, WIN + 10 * MIB, WIN + 12 * MIB - 1, 0x500000000ull, RW), VIOMMU_S_OK);
}

Test(window, a_copy_made_across_the_windows_first_piece_reads_the_word_first)
{
	struct viommu_query q[3];

	SKIP_HOOKED_UNDER_TSAN(); /* its step is a MAP request */
	first_r = win_reader_ep8();
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	cr_assert_eq(translate(first_r, 8, WIN + 0x5010, R).pa, 0x5010);
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, WIN_SPAN, "no piece: the PTE first");
	burst_hook(&first_r->eps[8], step_map_first_piece); /* the reader's view (the BPF replica here) */
	cr_assert_eq(viommu_reader_window_load(first_r, 8), 1);
	cr_assert_eq(burst_fired, 1, "the step ran at the copy's first load of the entry");
	cr_assert_eq(first_r->epw[8 % VIOMMU_READER_EPW].pte_span, 0, "made with the piece there: the word first");
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	q[0] = qy(8, WIN + 10 * MIB + 0x777, 8, R);
	q[1] = qy(8, WIN + 0x5010, 8, R);
	q[2] = qy(8, WIN + 0x9000, 8, R);
	check_queries(first_r, q, 3);
	viommu_reader_close(first_r);
}

/* A MAP refused after its 2 MiB piece inside the window went in (the page past the window finds
 * the pool's one leaf taken): the rollback takes the piece out and the flag with it, once its
 * slot is empty; the endpoints' seqs moved at the install stay moved (a copy made again, no
 * more). The next first piece moves them again. */
Test(window, a_map_refused_after_its_2mib_piece_went_in_leaves_the_pieces_flag_clear)
{
	struct viommu_query q[4];
	struct viommu_reader *r;
	uint64_t s0, s1;
	uint32_t d;

	win_setup(&(struct viommu_fastpath_opts){ .leaves = 1, .overcommit = true });
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	attach_ok(1, 8);
	map_ok(1, WIN + 0x5000, 0x1000, 0x5000, RW);
	map_ok(1, WIN + WIN_SPAN + 8 * MIB, 0x1000, 0x7000, RW); /* past the window: the pool's leaf */
	d = dslot_of(8);
	cr_assert_eq(win_flags(d), 0);
	s0 = view()->eps[8].seq;
	cr_assert_eq(test_map(dev, 1, WIN + WIN_SPAN - 2 * MIB, WIN + WIN_SPAN + 0xfff, 0x400000000ull, RW),
		     VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_fastpath_check(fp), 0, "the flag and the count agree after the rollback");
	cr_assert_eq(win_flags(d), 0, "the piece's flag went with it");
	s1 = view()->eps[8].seq;
	cr_assert_neq(s1, s0, "the install moved the seq");
	q[0] = qy(8, WIN + WIN_SPAN - 2 * MIB + 0x10, 8, R);
	q[1] = qy(8, WIN + 0x5010, 8, R);
	q[2] = qy(8, WIN + WIN_SPAN + 0x10, 8, R);
	q[3] = qy(8, WIN + WIN_SPAN + 8 * MIB + 0x10, 8, R);
	check_queries(r, q, 4);
	map_ok(1, WIN + 10 * MIB, 2 * MIB, 0x500000000ull, RW);
	cr_assert_eq(win_flags(d), VIOMMU_WIN_F_PIECES);
	cr_assert_neq(view()->eps[8].seq, s1, "the next first piece moves the seq again");
	q[0] = qy(8, WIN + 10 * MIB + 0x10, 8, R);
	check_queries(r, q, 4);
	viommu_reader_close(r);
}
