// SPDX-License-Identifier: MIT
/*
 * The lookup's re-checks, one interleaving at a time. bpf/viommu_lookup.h is compiled here over
 * a small shared state of this file's own, with every load it makes going through a hook: a
 * test names the load before which "the writer" acts (it runs one step of the writer's protocol,
 * docs/concurrency.md), then runs the lookup once, single-threaded and deterministic.
 *
 * The races these re-checks close last a nanosecond or two between two loads of one cache line:
 * the stress tests cannot make them happen on x86 (its loads of one line are as good as atomic
 * together), so without this file nothing fails when a re-check is dropped. Every userspace
 * reader and BPF program runs this same code (reader.h's viommu_reader_direct() calls
 * viommu_bucket_find()).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "viommu_abi.h"

/* tests/test_interleave_sse2.c includes this file again for the 16-byte-load bucket reader. */
#ifndef INTERLEAVE_SUITE
#define INTERLEAVE_SUITE interleave
#endif
#define ITEST(suite, name) Test(suite, name)
#define ISUITE(suite, ...) TestSuite(suite, __VA_ARGS__)

/* ---- the hooked view ---- */

#define FX_EPS 4
#define FX_LEAVES 4
#define FX_NODES 2
struct fx {
	struct viommu_ep_entry eps[FX_EPS];
	struct viommu_window wins[FX_EPS];
	struct viommu_node nodes[FX_NODES];
	struct viommu_leaf leaves[FX_LEAVES];
	struct viommu_ptes ptes[FX_LEAVES];
	struct viommu_extent_rec exts[2];
	struct viommu_hash_bucket buckets[2] __attribute__((aligned(64))); /* hash_mask 1 */
	__u64 ep_index[1];
	__u64 pieces[4]; /* the piece window of domain slot 0 */
};

static struct fx fx;
static const volatile void *hook_at; /* the load before which the writer acts */
static void (*hook_step)(void);
static unsigned hook_fired, hook_skip; /* hook_skip: loads of hook_at to let pass first */

static inline void hook(const volatile void *p)
{
	if (p == hook_at && hook_step && !hook_skip--) {
		void (*step)(void) = hook_step;

		hook_step = NULL; /* once */
		hook_fired++;
		step();
	}
}

#define VIOMMU_CTX_PARAM struct fx *fxv
#define VIOMMU_CTX_ARG fxv
#define VIOMMU_LOAD_ACQ(p) (hook(p), __atomic_load_n((p), __ATOMIC_ACQUIRE))
#define VIOMMU_LOAD(p) VIOMMU_LOAD_ACQ(p)
#ifdef VIOMMU_BUCKET_SSE2
#include <emmintrin.h>
#define VIOMMU_LOAD_PAIR(p) (hook(p), *(const volatile __m128i *)(p))
#define VAL_LOAD_AT(b, w) (&(b)->val[(w) & ~1u]) /* the 16-byte load holding way w's value */
#else
#define VAL_LOAD_AT(b, w) (&(b)->val[w])
#endif
#define VIOMMU_FENCE_ACQ() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#define VIOMMU_STAT(field) ((void)0)
#define viommu_acc_ep(v, i) ((i) < FX_EPS ? &(v)->eps[i] : (const struct viommu_ep_entry *)0)
#define viommu_acc_ep_index(v, i) ((void)(i), &(v)->ep_index[0])
#define viommu_acc_node(v, i) ((i) < FX_NODES ? &(v)->nodes[i] : (const struct viommu_node *)0)
#define viommu_acc_leaf(v, i) ((i) < FX_LEAVES ? &(v)->leaves[i] : (const struct viommu_leaf *)0)
#define viommu_acc_ptes(v, i) ((i) < FX_LEAVES ? &(v)->ptes[i] : (const struct viommu_ptes *)0)
#define viommu_acc_ext(v, i) ((i) < 2 ? &(v)->exts[i] : (const struct viommu_extent_rec *)0)
#define viommu_acc_bucket(v, i) ((i) < 2 ? &(v)->buckets[i] : (const struct viommu_hash_bucket *)0)
#define viommu_acc_win(v, i) ((i) < FX_EPS ? &(v)->wins[i] : (const struct viommu_window *)0)
#define viommu_acc_piece(v, i) ((i) < 4 ? &(v)->pieces[i] : (const __u64 *)0)
#define viommu_acc_hash_mask(v) ((void)(v), 1u)
#define viommu_acc_ep_probes(v) ((void)(v), 0u)
#include "viommu_lookup.h"

/* ---- the state: endpoint 1 attached to domain slot 0 (root node 0), leaf 1 holding the pages
 * of [LEAF_VA, + 2 MiB), a window of leaves 2-3 over [WIN_VA, + 4 MiB), and one published 2 MiB
 * piece at PIECE_VA, a direct value in the hash ---- */

#define EP 1u
#define DSLOT 0u
#define LEAF_VA (1ull << 32)
#define WIN_VA (8ull << 30)
#define PIECE_VA (64ull << 30)
#define PIECE_PA 0x200000000ull
#define OTHER_PA 0x7000000000ull
#define PAGE_PA 0x123456000ull
#define EXT_VA (128ull << 30) /* a 2 MiB piece whose hash value is still its record's slot word */
#define EXT_PA 0x300000000ull
#define HOLE_VA (256ull << 30) /* in no bucket: not mapped while the root has no WALK flag */
#define PWIN_VA (WIN_VA + (4ull << 20)) /* the piece window's regions past the window */
#define LONE_VA (512ull << 30) /* a region whose one mapping is its page 9: a lone value */
#define RW (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)

/* Where a new key goes, as hash_set() places it: a free way of its first bucket, else of its
 * second. */
static void key_place(__u64 key, unsigned *bi, unsigned *w)
{
	for (int i = 0; i < 2; i++) {
		*bi = i ? viommu_hash_alt(key, 1) : viommu_hash_index(key, 1);
		for (*w = 0; *w < VIOMMU_HASH_WAYS && fx.buckets[*bi].key[*w]; (*w)++)
			;
		if (*w < VIOMMU_HASH_WAYS)
			return;
	}
	cr_assert_fail("both buckets of key 0x%llx are full", (unsigned long long)key);
}

static void hash_put(__u64 key, __u64 val)
{
	unsigned bi, w;

	key_place(key, &bi, &w);
	fx.buckets[bi].val[w] = val;
	fx.buckets[bi].key[w] = key;
}

static struct viommu_hash_bucket *bucket_of(__u64 key, unsigned *way)
{
	for (unsigned bi = 0; bi < 2; bi++)
		for (unsigned w = 0; w < VIOMMU_HASH_WAYS; w++)
			if (fx.buckets[bi].key[w] == key) {
				*way = w;
				return &fx.buckets[bi];
			}
	cr_assert_fail("key 0x%llx is in no bucket", (unsigned long long)key);
	return NULL;
}

static void fx_setup(void)
{
	memset(&fx, 0, sizeof(fx));
	hook_at = NULL;
	hook_step = NULL;
	hook_fired = 0;
	hook_skip = 0;
	fx.eps[EP] = (struct viommu_ep_entry){ .seq = 2, .state = VIOMMU_EP_ATTACHED, .domain_slot = DSLOT, .root = 0 };
	fx.nodes[0] = (struct viommu_node){ .seq = 2, .level = 0, .domain_slot = DSLOT, .base = 0 };
	/* leaf 1: page 5 of the region at LEAF_VA */
	fx.leaves[1] = (struct viommu_leaf){ .seq = 4, .domain_slot = DSLOT, .base = LEAF_VA };
	fx.ptes[1].pte[5] = VIOMMU_PTE_MAKE(PAGE_PA, RW);
	hash_put(VIOMMU_HASH_KEY(DSLOT, LEAF_VA), VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, 1, 4));
	/* the window: leaves 2 and 3, page 7 of its first region mapped; its piece window: 4
	 * regions from WIN_VA (the window's 2, then 2 past it), a published 2 MiB piece in the
	 * third (past the window) */
	fx.wins[DSLOT] = (struct viommu_window){ .base = WIN_VA, .leaf = 2, .regions = 2,
						 .pbase = WIN_VA, .pfirst = 0, .pregions = 4 };
	fx.pieces[2] = VIOMMU_HASH_DIRECT_MAKE(PIECE_PA, RW);
	fx.ptes[2].pte[7] = VIOMMU_PTE_MAKE(PAGE_PA, RW);
	/* the published 2 MiB piece */
	hash_put(VIOMMU_HASH_KEY(DSLOT, PIECE_VA), VIOMMU_HASH_DIRECT_MAKE(PIECE_PA, RW));
	/* a 2 MiB piece read through its record (record 0, generation 2) */
	fx.exts[0] = (struct viommu_extent_rec){ .seq = 2, .domain_slot = DSLOT, .flags = RW, .start = EXT_VA,
						 .end = EXT_VA + (2ull << 20) - 1, .phys = EXT_PA };
	hash_put(VIOMMU_HASH_KEY(DSLOT, EXT_VA), VIOMMU_SLOT_MAKE(VIOMMU_SLOT_EXTENT, 0, 2));
	/* a lone page: page 9 of the region at LONE_VA, its translation the region's value */
	hash_put(VIOMMU_HASH_KEY(DSLOT, LONE_VA), VIOMMU_HASH_LONE_MAKE(PAGE_PA, RW, 9));
}

ISUITE(INTERLEAVE_SUITE, .init = fx_setup);

/* ---- the hash's direct values (I6) ---- */

/* The writer's steps on a way, as user/fastpath.c takes them. hash_del(): the bucket's seq odd,
 * the key then the value cleared, the seq even again. hash_set() of a new key: the value, then
 * the key, the seq left alone. */
static void way_clear(struct viommu_hash_bucket *b, unsigned w)
{
	__atomic_store_n(&b->seq, b->seq + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&b->key[w], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&b->val[w], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&b->seq, b->seq + 1, __ATOMIC_RELEASE);
}

static void way_fill(struct viommu_hash_bucket *b, unsigned w, __u64 key, __u64 val)
{
	__atomic_store_n(&b->val[w], val, __ATOMIC_RELAXED);
	__atomic_store_n(&b->key[w], key, __ATOMIC_RELEASE);
}

static struct viommu_hash_bucket *step_b; /* the way the steps below act on */
static unsigned step_w;

/* The writer removes the piece and gives the way to another region's piece. */
static void step_way_to_another_piece(void)
{
	way_clear(step_b, step_w);
	way_fill(step_b, step_w, VIOMMU_HASH_KEY(DSLOT, PIECE_VA + (1ull << 30)), VIOMMU_HASH_DIRECT_MAKE(OTHER_PA, RW));
}

ITEST(INTERLEAVE_SUITE, a_direct_value_read_while_its_key_stays_is_the_pieces_translation)
{
	struct viommu_lk lk = { 0 };

	cr_assert_eq(viommu_lookup_fast(&fx, EP, PIECE_VA + 0x1234, &lk), 1);
	cr_assert_eq(lk.ext_phys + (PIECE_VA + 0x1234 - lk.ext_start), PIECE_PA + 0x1234);
}

ITEST(INTERLEAVE_SUITE, a_direct_value_whose_key_left_before_the_value_was_read_is_not_taken)
{
	const __u64 key = VIOMMU_HASH_KEY(DSLOT, PIECE_VA);
	unsigned w;
	struct viommu_hash_bucket *b = bucket_of(key, &w);
	struct viommu_lk lk = { 0 };
	__u64 slot = 0;
	int got;

	/* Between the load of the key and that of its value. */
	step_b = b;
	step_w = w;
	hook_at = VAL_LOAD_AT(b, w);
	hook_step = step_way_to_another_piece;
	got = viommu_bucket_find(&fx, (__u32)(b - fx.buckets), key, &slot);
	cr_assert_eq(hook_fired, 1);
	cr_assert(got < 0,
		  "the key read, then the other piece's value: found %d, value 0x%llx (the other piece's PA is "
		  "0x%llx), not raced", got, (unsigned long long)slot, (unsigned long long)OTHER_PA);

	/* The whole lookup then answers "not mapped" (the key is gone), never the other PA. */
	fx_setup();
	b = bucket_of(key, &w);
	step_b = b;
	step_w = w;
	hook_at = VAL_LOAD_AT(b, w);
	hook_step = step_way_to_another_piece;
	got = viommu_lookup_fast(&fx, EP, PIECE_VA + 0x1234, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert(got == 0 || (got == 2 && lk.result == VIOMMU_XLATE_FAULT),
		  "lookup_fast: %d, pa 0x%llx", got, (unsigned long long)(lk.ext_phys + 0x1234));
}

/* The writer removes the lone page's key (its key, then its value) and gives the way to
 * another region's lone page, the same page index at another PA (its value, then its key). */
static void step_way_to_another_lone_page(void)
{
	way_clear(step_b, step_w);
	way_fill(step_b, step_w, VIOMMU_HASH_KEY(DSLOT, LONE_VA + (1ull << 30)), VIOMMU_HASH_LONE_MAKE(OTHER_PA, RW, 9));
}

/* The lone page's lookup (page 9 of the region at LONE_VA), with the writer's step @s run just
 * before the load of the value of the lone page's way. */
static int lone_lookup_stepped_at_its_value(void (*s)(void), struct viommu_lk *lk)
{
	unsigned w;
	struct viommu_hash_bucket *b = bucket_of(VIOMMU_HASH_KEY(DSLOT, LONE_VA), &w);

	step_b = b;
	step_w = w;
	hook_at = VAL_LOAD_AT(b, w);
	hook_step = s;
	return viommu_lookup_fast(&fx, EP, LONE_VA + 9 * 4096 + 0x10, lk);
}

ITEST(INTERLEAVE_SUITE, a_lone_value_answers_its_page_and_not_mapped_for_the_other_pages_of_its_region)
{
	struct viommu_lk lk = { 0 };

	cr_assert_eq(viommu_lookup_fast(&fx, EP, LONE_VA + 9 * 4096 + 0x10, &lk), 1);
	cr_assert_eq(lk.ext_phys, PAGE_PA);
	cr_assert_eq(lk.ext_start, LONE_VA + 9 * 4096);
	cr_assert_eq(lk.ext_end, LONE_VA + 10 * 4096 - 1);
	cr_assert_eq(lk.whole, 2, "a one-page mapping: the page is the whole extent");
	cr_assert_eq(lk.direct, 1, "no voucher for a reader TLB entry");
	cr_assert_eq(viommu_lookup_fast(&fx, EP, LONE_VA + 10 * 4096, &lk), 2);
	cr_assert_eq(lk.result, VIOMMU_XLATE_FAULT);
	/* The general path, asked for the whole extent: the page. */
	memset(&lk, 0, sizeof(lk));
	cr_assert_eq(viommu_lookup_once(&fx, EP, LONE_VA + 9 * 4096 + 0x10, 1, &lk), 1);
	cr_assert_eq(lk.result, VIOMMU_XLATE_HIT);
	cr_assert_eq(lk.ext_start, LONE_VA + 9 * 4096);
	cr_assert_eq(lk.whole, 2);
	cr_assert_eq(viommu_lookup_once(&fx, EP, LONE_VA + 8 * 4096, 1, &lk), 1);
	cr_assert_eq(lk.result, VIOMMU_XLATE_FAULT);
}

ITEST(INTERLEAVE_SUITE, a_lone_value_whose_key_left_before_the_value_was_read_is_not_taken)
{
	struct viommu_lk lk = { 0 };
	/* Between the load of the key and that of its value: the other region's page at page 9. */
	int got = lone_lookup_stepped_at_its_value(step_way_to_another_lone_page, &lk);

	cr_assert_eq(hook_fired, 1);
	cr_assert(got == 0 || (got == 2 && lk.result == VIOMMU_XLATE_FAULT),
		  "lookup_fast: %d, pa 0x%llx (the other region's page is at 0x%llx)", got,
		  (unsigned long long)lk.ext_phys, (unsigned long long)OTHER_PA);
}

/* ---- a leaf's generation (I5) and the endpoint entry (I4) ---- */

static void step_leaf_reused(void)
{
	/* The leaf freed (seq odd) and reused for another region of the domain, its PTE rewritten. */
	__atomic_store_n(&fx.leaves[1].seq, 5, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.ptes[1].pte[5], VIOMMU_PTE_MAKE(OTHER_PA, RW), __ATOMIC_RELEASE);
	__atomic_store_n(&fx.leaves[1].seq, 6, __ATOMIC_RELEASE);
}

ITEST(INTERLEAVE_SUITE, a_page_read_from_a_leaf_reused_in_between_is_not_taken)
{
	struct viommu_lk lk = { 0 };
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, LEAF_VA + 5 * 4096 + 8, &lk), 1);
	cr_assert_eq(lk.ext_phys, PAGE_PA);
	/* The PTE read after the leaf's seq: the seq re-check must see the reuse. */
	hook_at = &fx.ptes[1].pte[5];
	hook_step = step_leaf_reused;
	got = viommu_lookup_fast(&fx, EP, LEAF_VA + 5 * 4096 + 8, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert(got == 0, "lookup_fast: %d, page PA 0x%llx (the reused leaf's is 0x%llx)", got,
		  (unsigned long long)lk.ext_phys, (unsigned long long)OTHER_PA);
}

static void step_endpoint_moved(void)
{
	/* The endpoint detached and attached elsewhere, and its old domain's page remapped. */
	__atomic_store_n(&fx.eps[EP].seq, 3, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.eps[EP].domain_slot, 3, __ATOMIC_RELAXED);
	__atomic_store_n(&fx.eps[EP].seq, 4, __ATOMIC_RELEASE);
}

ITEST(INTERLEAVE_SUITE, a_window_page_read_while_its_endpoint_moved_to_another_domain_is_not_taken)
{
	const __u64 iova = WIN_VA + 7 * 4096 + 16;
	struct viommu_lk lk = { 0 };
	__u64 pte;
	__u32 li;
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, iova, &lk), 1);
	cr_assert_eq(lk.ext_phys, PAGE_PA);
	/* The PTE loaded, then the endpoint's domain changes: its seq re-check must see it. */
	hook_at = &fx.ptes[2].pte[7];
	hook_step = step_endpoint_moved;
	got = viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, iova, &pte, &li);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "window_pte after the endpoint moved: %d", got);
}

ITEST(INTERLEAVE_SUITE, a_piece_window_word_read_while_its_endpoint_moved_to_another_domain_is_not_taken)
{
	const __u64 iova = PWIN_VA + 0x1234;
	struct viommu_lk lk = { 0 };
	__u64 v;
	__u32 li;
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, iova, &lk), 1);
	cr_assert_eq(lk.ext_phys + (iova - lk.ext_start), PIECE_PA + 0x1234);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, PWIN_VA + (2ull << 20) + 0x10, &v, &li),
		     VIOMMU_WIN_OUT, "past the window, a word of 0 says nothing");
	/* The word loaded, then the endpoint's domain changes: its seq re-check must see it. */
	hook_at = &fx.pieces[2];
	hook_step = step_endpoint_moved;
	got = viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, iova, &v, &li);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "window_pte after the endpoint moved: %d", got);
}

ITEST(INTERLEAVE_SUITE, a_window_miss_whose_endpoint_moved_before_its_piece_word_was_read_is_not_answered)
{
	const __u64 iova = WIN_VA + 8 * 4096 + 16; /* region 0, no PTE, word 0: not mapped */
	struct viommu_lk lk = { 0 };
	__u64 v;
	__u32 li;
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, iova, &lk), 2);
	/* A 2 MiB piece in the window's second region: no PTE, its word answers. */
	fx.pieces[1] = VIOMMU_HASH_DIRECT_MAKE(OTHER_PA, RW);
	cr_assert_eq(viommu_lookup_fast(&fx, EP, WIN_VA + (2ull << 20) + 0x10, &lk), 1);
	cr_assert_eq(lk.ext_phys, OTHER_PA);
	/* The PTE and the word read, then the endpoint moves: the miss is the old domain's. */
	hook_at = &fx.pieces[0];
	hook_step = step_endpoint_moved;
	got = viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, iova, &v, &li);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "window_pte after the endpoint moved: %d", got);
}

ITEST(INTERLEAVE_SUITE, a_window_page_whose_region_holds_a_piece_coming_or_going_is_left_to_the_general_path)
{
	const __u64 iova = WIN_VA + (2ull << 20) + 8 * 4096; /* region 1: no PTE */
	struct viommu_lk lk = { 0 };
	__u64 v;
	__u32 li;

	/* A piece being mapped (its record not live) or unmapped (its slot not cleared): the window
	 * says neither hit nor miss, the hash and the record decide, as for every other path. */
	fx.pieces[1] = VIOMMU_PIECE_BUSY;
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, iova, &v, &li), 0);
	cr_assert_eq(viommu_lookup_fast(&fx, EP, iova, &lk), 0);
	/* Past the window the same word says nothing either: the lookup goes on. */
	fx.pieces[3] = VIOMMU_PIECE_BUSY;
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, PWIN_VA + (2ull << 20), &v, &li), VIOMMU_WIN_OUT);
}

ITEST(INTERLEAVE_SUITE, a_direct_value_read_while_its_endpoint_moved_to_another_domain_is_not_taken)
{
	const __u64 key = VIOMMU_HASH_KEY(DSLOT, PIECE_VA);
	unsigned w;
	struct viommu_hash_bucket *b = bucket_of(key, &w);
	struct viommu_lk lk = { 0 };
	int got;

	hook_at = VAL_LOAD_AT(b, w);
	hook_step = step_endpoint_moved;
	got = viommu_lookup_fast(&fx, EP, PIECE_VA + 0x1234, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "lookup_fast after the endpoint moved: %d (pa 0x%llx)", got,
		     (unsigned long long)lk.ext_phys);
}

/* ---- a solo page (ABI v7: a one-page mapping, no record, I3) ---- */

/* Leaf 1's pages 5 and 6 as one two-page mapping: record 1, PTEs not solo. */
static void fx_two_pages(void)
{
	fx.exts[1] = (struct viommu_extent_rec){ .seq = 2, .domain_slot = DSLOT, .flags = RW,
						 .start = LEAF_VA + 5 * 4096, .end = LEAF_VA + 7 * 4096 - 1,
						 .phys = PAGE_PA };
	fx.leaves[1].ext[5] = fx.leaves[1].ext[6] = 2;
	fx.ptes[1].pte[5] = VIOMMU_PTE_MAKE(PAGE_PA, RW);
	fx.ptes[1].pte[6] = VIOMMU_PTE_MAKE(PAGE_PA + 4096, RW);
}

static void step_page_remapped_alone(void)
{
	/* UNMAP of the two pages (PTEs, ext[], then the record), then a MAP of page 5 alone
	 * elsewhere: ext[] says solo, then the solo PTE. */
	__atomic_store_n(&fx.ptes[1].pte[5], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.leaves[1].ext[5], 0, __ATOMIC_RELAXED);
	__atomic_store_n(&fx.ptes[1].pte[6], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.leaves[1].ext[6], 0, __ATOMIC_RELAXED);
	__atomic_store_n(&fx.exts[1].seq, 3, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.leaves[1].ext[5], VIOMMU_EXT_SOLO, __ATOMIC_RELAXED);
	__atomic_store_n(&fx.ptes[1].pte[5], VIOMMU_PTE_MAKE(OTHER_PA, RW) | VIOMMU_PTE_SOLO, __ATOMIC_RELEASE);
}

ITEST(INTERLEAVE_SUITE, a_whole_extent_is_one_page_only_when_the_pte_read_says_so)
{
	const __u64 slot = VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, 1, 4), iova = LEAF_VA + 5 * 4096 + 8;
	struct viommu_lk lk = { 0 };
	int got;

	fx_two_pages();
	cr_assert_eq(viommu_read_leaf(&fx, slot, DSLOT, iova, 1, &lk), 1);
	cr_assert(lk.whole == 1 && lk.ext_end == LEAF_VA + 7 * 4096 - 1, "the record's two pages");
	/* The PTE of the two-page mapping read, then the page remapped alone, then ext[]: the
	 * marker there is not about the PTE this lookup holds. */
	hook_at = &fx.leaves[1].ext[5];
	hook_step = step_page_remapped_alone;
	got = viommu_read_leaf(&fx, slot, DSLOT, iova, 1, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert(got == 0, "read_leaf: %d, [0x%llx, 0x%llx] at PA 0x%llx: no instant had that page alone at that PA",
		  got, (unsigned long long)lk.ext_start, (unsigned long long)lk.ext_end,
		  (unsigned long long)lk.ext_phys);
	/* Asked again: the solo PTE, the page alone at its new PA, whole. */
	cr_assert_eq(viommu_read_leaf(&fx, slot, DSLOT, iova, 1, &lk), 1);
	cr_assert(lk.whole == 2 && lk.ext_start == LEAF_VA + 5 * 4096 && lk.ext_end == LEAF_VA + 6 * 4096 - 1 &&
		  lk.ext_phys == OTHER_PA, "the solo page");
}

/* ---- a record (I3), the root's flags (I6) and the general lookup's last re-check (I4) ---- */

static void step_record_reused(void)
{
	/* The record freed and reused for another mapping of the domain at the same place. */
	__atomic_store_n(&fx.exts[0].seq, 3, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.exts[0].phys, OTHER_PA, __ATOMIC_RELAXED);
	__atomic_store_n(&fx.exts[0].seq, 4, __ATOMIC_RELEASE);
}

ITEST(INTERLEAVE_SUITE, a_record_read_while_it_was_reused_is_not_taken)
{
	struct viommu_lk lk = { 0 };
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, EXT_VA + 0x5008, &lk), 1);
	cr_assert_eq(lk.ext_phys, EXT_PA);
	/* Its seq read, then the reuse, then its fields. */
	hook_at = &fx.exts[0].start;
	hook_step = step_record_reused;
	got = viommu_lookup_fast(&fx, EP, EXT_VA + 0x5008, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert(got == 0, "lookup_fast: %d, piece PA 0x%llx (the reused record's is 0x%llx)", got,
		  (unsigned long long)lk.ext_phys, (unsigned long long)OTHER_PA);
}

ITEST(INTERLEAVE_SUITE, a_miss_whose_endpoint_moved_before_the_roots_flags_were_read_is_not_answered)
{
	struct viommu_lk lk = { 0 };
	int got;

	cr_assert_eq(viommu_lookup_fast(&fx, EP, HOLE_VA, &lk), 2, "in no bucket, no WALK flag: not mapped");
	/* Both buckets read, then the endpoint moves, then the root's flags: the miss is the old
	 * domain's, and the endpoint's re-check must see it. */
	hook_at = &fx.nodes[0].flags;
	hook_step = step_endpoint_moved;
	got = viommu_lookup_fast(&fx, EP, HOLE_VA, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "lookup_fast after the endpoint moved: %d", got);
}

static void step_root_reused(void)
{
	/* The root node freed and reused (its seq moves on), as when the domain goes and another
	 * takes its slot. */
	__atomic_store_n(&fx.nodes[0].seq, 3, __ATOMIC_RELEASE);
	__atomic_store_n(&fx.nodes[0].seq, 4, __ATOMIC_RELEASE);
}

ITEST(INTERLEAVE_SUITE, a_roots_flags_read_while_the_root_was_reused_are_not_taken)
{
	/* The flags read, then the reuse, then the seq again. */
	hook_at = &fx.nodes[0].seq;
	hook_skip = 1;
	hook_step = step_root_reused;
	cr_assert_eq(viommu_root_flags(&fx, 0, DSLOT), -1);
	cr_assert_eq(hook_fired, 1);
}

ITEST(INTERLEAVE_SUITE, the_general_lookup_does_not_answer_for_an_endpoint_that_moved_before_its_last_check)
{
	struct viommu_lk lk = { 0 };
	int got;

	cr_assert_eq(viommu_lookup_once(&fx, EP, LEAF_VA + 5 * 4096, 0, &lk), 1);
	cr_assert_eq(lk.result, VIOMMU_XLATE_HIT);
	/* The endpoint's seq is loaded three times: first, after its fields, and once the answer is
	 * read; the endpoint moves just before the third. */
	hook_at = &fx.eps[EP].seq;
	hook_skip = 2;
	hook_step = step_endpoint_moved;
	got = viommu_lookup_once(&fx, EP, LEAF_VA + 5 * 4096, 0, &lk);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "lookup_once after the endpoint moved: %d (result %u)", got, lk.result);
}

/* ---- the word-first order (VIOMMU_WIN_F_PIECES: a published 2 MiB piece in the window) ---- */

ITEST(INTERLEAVE_SUITE, with_the_pieces_hint_the_window_answers_from_the_word_then_the_pte_as_without_it)
{
	const __u64 page7 = WIN_VA + 7 * 4096 + 16, page8 = WIN_VA + 8 * 4096 + 16;
	const __u64 reg1 = WIN_VA + (2ull << 20) + 0x10;
	__u64 v;
	__u32 li;

	fx.wins[DSLOT].base = WIN_VA | VIOMMU_WIN_F_PIECES;
	fx.pieces[1] = VIOMMU_HASH_DIRECT_MAKE(OTHER_PA, RW);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page7, &v, &li), 1);
	cr_assert_eq(li, 2);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page8, &v, &li), 2);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, reg1, &v, &li), VIOMMU_WIN_PIECE);
	cr_assert_eq(v, VIOMMU_HASH_DIRECT_MAKE(OTHER_PA, RW));
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, PWIN_VA + (2ull << 20) + 0x10, &v, &li),
		     VIOMMU_WIN_OUT);
	fx.pieces[0] = VIOMMU_PIECE_BUSY;
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page8, &v, &li), 0);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page7, &v, &li), 1);
	fx.pieces[0] = 0;
	fx.wins[DSLOT].base = WIN_VA | VIOMMU_WIN_F_PIECES | VIOMMU_WIN_F_WIDE;
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page8, &v, &li), 0);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, page7, &v, &li), 1);
	cr_assert_eq(viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, reg1, &v, &li), VIOMMU_WIN_PIECE);
}

/* The lookup with the hint, the endpoint moved before the load @at: raced, whatever it read. */
static void word_first_moved_before(const volatile void *at, __u64 iova)
{
	__u64 v;
	__u32 li;
	int got;

	fx_setup();
	fx.wins[DSLOT].base = WIN_VA | VIOMMU_WIN_F_PIECES;
	fx.pieces[1] = VIOMMU_HASH_DIRECT_MAKE(OTHER_PA, RW);
	hook_at = at;
	hook_step = step_endpoint_moved;
	got = viommu_window_pte(&fx, &fx.eps[EP], 2, DSLOT, iova, &v, &li);
	cr_assert_eq(hook_fired, 1);
	cr_assert_eq(got, 0, "window_pte (word first) after the endpoint moved before load %p: %d", (void *)at, got);
}

ITEST(INTERLEAVE_SUITE, with_the_pieces_hint_every_load_of_a_window_answer_is_followed_by_the_entrys_check)
{
	/* a present page: the word, then the PTE */
	word_first_moved_before(&fx.pieces[0], WIN_VA + 7 * 4096 + 16);
	word_first_moved_before(&fx.ptes[2].pte[7], WIN_VA + 7 * 4096 + 16);
	/* a miss: the word, then the PTE */
	word_first_moved_before(&fx.pieces[0], WIN_VA + 8 * 4096 + 16);
	word_first_moved_before(&fx.ptes[2].pte[8], WIN_VA + 8 * 4096 + 16);
	/* a piece in the window */
	word_first_moved_before(&fx.pieces[1], WIN_VA + (2ull << 20) + 0x10);
}

/*
 * The hash-way ABA (docs/concurrency.md, I6; found by review in the thirteenth session, fixed by
 * ABI v11's bucket seq). The lone page's way goes to another region's lone page between the
 * key's load and its value's, and back to the first key before the bucket's seq is read again
 * (K, J, K in one way). Keys read twice (ABI v10) saw the key in the same way both times and
 * took J's value: this region's page answered with the other region's PA. The seq moved twice.
 */
static __u64 aba_key;

static void step_way_back(void)
{
	way_clear(step_b, step_w);
	way_fill(step_b, step_w, aba_key, VIOMMU_HASH_LONE_MAKE(PAGE_PA, RW, 9));
}

static void step_way_away_then_back(void)
{
	step_way_to_another_lone_page();
	hook_step = step_way_back; /* at the second load of the seq */
	hook_skip = 0;
	hook_at = &step_b->seq;
}

ITEST(INTERLEAVE_SUITE, a_way_given_to_another_key_and_back_between_the_bucket_loads_is_not_taken)
{
	struct viommu_lk lk = { 0 };
	int got;

	aba_key = VIOMMU_HASH_KEY(DSLOT, LONE_VA);
	got = lone_lookup_stepped_at_its_value(step_way_away_then_back, &lk);
	cr_assert_eq(hook_fired, 2);
	cr_assert_eq(got, 0, "lookup_fast: %d, pa 0x%llx (the other region's page is at 0x%llx)", got,
		     (unsigned long long)lk.ext_phys, (unsigned long long)OTHER_PA);
	/* Read again, the bucket answers the page, the way holding the key back. */
	cr_assert_eq(viommu_lookup_fast(&fx, EP, LONE_VA + 9 * 4096 + 0x10, &lk), 1);
	cr_assert_eq(lk.ext_phys, PAGE_PA);
}

/* A way being emptied (the bucket's seq odd): the bucket is not read as it stands, whatever its
 * ways hold. */
static void step_seq_odd(void)
{
	__atomic_store_n(&step_b->seq, step_b->seq + 1, __ATOMIC_RELAXED);
}

ITEST(INTERLEAVE_SUITE, a_bucket_whose_seq_is_odd_is_read_as_raced)
{
	const __u64 key = VIOMMU_HASH_KEY(DSLOT, PIECE_VA);
	unsigned w;
	struct viommu_hash_bucket *b = bucket_of(key, &w);
	__u64 slot = 0;

	step_b = b;
	hook_at = &b->seq;
	hook_step = step_seq_odd;
	cr_assert_lt(viommu_bucket_find(&fx, (__u32)(b - fx.buckets), key, &slot), 0);
	cr_assert_eq(hook_fired, 1);
	/* Even again: the piece. */
	__atomic_store_n(&b->seq, b->seq + 1, __ATOMIC_RELEASE);
	cr_assert_eq(viommu_bucket_find(&fx, (__u32)(b - fx.buckets), key, &slot), 1);
	cr_assert_eq(slot, VIOMMU_HASH_DIRECT_MAKE(PIECE_PA, RW));
}
