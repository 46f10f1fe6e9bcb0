/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * viommu_maps.bpf.h — the fast path for any BPF program: the map definitions and the lookup.
 *
 *   #include "vmlinux.h"
 *   #include <bpf/bpf_helpers.h>
 *   #include "viommu_maps.bpf.h"
 *   ...
 *   struct viommu_query q = { .endpoint = ep, .iova = iova, .size = len, .access = VIOMMU_MAP_F_READ };
 *   struct viommu_answer a;
 *   viommu_bpf_translate(&q, &a);   // a.result: VIOMMU_XLATE_HIT / IDENTITY / FAULT / RETRY / MORE
 *   // MORE: the range crosses more than VIOMMU_SPAN_MAX extents; [iova, a.next - 1] is mapped.
 *   // Continue with viommu_query_continue(&q, &a, &q2) and viommu_answer_fold(&q, &a, &a2).
 *
 * A program of another object shares the device's maps by reusing the pinned maps
 * (bpf_map__reuse_fd / LIBBPF_PIN_BY_NAME on the same names) before load. viommu_hash_mask must be
 * set in .rodata to the hash's bucket count - 1 before load (the loader reads it from viommu_meta).
 * x86-64 only: loads are not reordered with loads (TSO), so the read-side "fences" are compiler
 * barriers; docs/concurrency.md says what another architecture would need.
 */
#ifndef VIOMMU_MAPS_BPF_H
#define VIOMMU_MAPS_BPF_H

#include "viommu_abi.h"

#define VIOMMU_MMAP_ARRAY(name, n, vtype)                \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);              \
		__uint(map_flags, BPF_F_MMAPABLE);             \
		__uint(max_entries, n);                        \
		__type(key, __u32);                            \
		__type(value, vtype);                          \
	} name SEC(".maps")

#define VIOMMU_MMAP_ARRAY_X(id, name, type, n, who) VIOMMU_MMAP_ARRAY(name, n, type);
VIOMMU_MAPS(VIOMMU_MMAP_ARRAY_X) /* the table in viommu_abi.h */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct viommu_stats);
} viommu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} viommu_faults SEC(".maps");

const volatile __u32 viommu_hash_mask = VIOMMU_HASH_BUCKETS_DEFAULT - 1;

#define VIOMMU_CTX_PARAM int viommu_unused_ctx
#define VIOMMU_CTX_ARG 0
#define VIOMMU_LOAD(p) (*(volatile typeof(*(p)) *)(p))
#define VIOMMU_LOAD_ACQ(p) ({ typeof(*(p)) v_ = VIOMMU_LOAD(p); asm volatile("" ::: "memory"); v_; })
#define VIOMMU_FENCE_ACQ() asm volatile("" ::: "memory")

static __always_inline struct viommu_stats *viommu_bpf_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&viommu_stats, &zero);
}

#define VIOMMU_STAT(field)                               \
	do {                                               \
		struct viommu_stats *st_ = viommu_bpf_stats(); \
		if (st_)                                       \
			st_->field++;                              \
	} while (0)

static __always_inline const void *viommu_bpf_elem(void *map, __u32 idx)
{
	return bpf_map_lookup_elem(map, &idx);
}

#define viommu_acc_ep(c, i) ((const struct viommu_ep_entry *)viommu_bpf_elem(&viommu_endpoints, (i)))
#define viommu_acc_ep_index(c, i) ((const __u64 *)viommu_bpf_elem(&viommu_ep_index, (i)))
#define viommu_acc_node(c, i) ((const struct viommu_node *)viommu_bpf_elem(&viommu_nodes, (i)))
#define viommu_acc_leaf(c, i) ((const struct viommu_leaf *)viommu_bpf_elem(&viommu_leaves, (i)))
#define viommu_acc_ptes(c, i) ((const struct viommu_ptes *)viommu_bpf_elem(&viommu_ptes, (i)))
#define viommu_acc_ext(c, i) ((const struct viommu_extent_rec *)viommu_bpf_elem(&viommu_extents, (i)))
#define viommu_acc_bucket(c, i) ((const struct viommu_hash_bucket *)viommu_bpf_elem(&viommu_hash, (i)))
#define viommu_acc_win(c, i) ((const struct viommu_window *)viommu_bpf_elem(&viommu_windows, (i)))
#define viommu_acc_piece(c, i) ((const __u64 *)viommu_bpf_elem(&viommu_pieces, (i)))
#define viommu_acc_hash_mask(c) (viommu_hash_mask)
static __always_inline __u32 viommu_bpf_ep_probes(void)
{
	const struct viommu_meta *m = viommu_bpf_elem(&viommu_meta, 0);

	return m ? VIOMMU_LOAD_ACQ(&m->ep_probes) : 0;
}
#define viommu_acc_ep_probes(c) viommu_bpf_ep_probes()

/* The sparse endpoint index's probe loop through bpf_loop() (kernel 5.17+): the callback is
 * verified once, whatever the bound (up to VIOMMU_EP_INDEX_PROBES_MAX). */
struct viommu_ep_probe_ctx {
	__u32 ep, h;
	__s64 found;
};

static long viommu_ep_probe_cb(__u64 i, void *arg)
{
	struct viommu_ep_probe_ctx *c = arg;
	const __u64 *p = viommu_bpf_elem(&viommu_ep_index,
					 (c->h + (__u32)i) & (VIOMMU_EP_INDEX_SLOTS - 1));
	__u64 v;

	if (!p)
		return 1;
	v = VIOMMU_LOAD_ACQ(p); /* pairs with the writer's release of the slot (I8) */
	if (!v)
		return 1;
	if (VIOMMU_EP_INDEX_ID(v) == c->ep) {
		c->found = VIOMMU_EP_INDEX_ENTRY(v);
		return 1;
	}
	return 0;
}

static __always_inline __s64 viommu_bpf_ep_probe(__u32 ep, __u32 h, __u32 probes)
{
	struct viommu_ep_probe_ctx c = { .ep = ep, .h = h, .found = -1 };

	if (probes > VIOMMU_EP_INDEX_PROBES_MAX)
		probes = VIOMMU_EP_INDEX_PROBES_MAX;
	bpf_loop(probes, viommu_ep_probe_cb, &c, 0);
	return c.found;
}
#define VIOMMU_EP_PROBE(ep, h, probes) viommu_bpf_ep_probe(ep, h, probes)

#define VIOMMU_LOOKUP_BYTE(ep, iova, want, lk) viommu_lookup_byte_bpf(ep, iova, want, lk)
#define VIOMMU_LOOKUP_FAST(ep, iova, lk) viommu_lookup_fast_bpf(ep, iova, lk)
/* A bucket's scan (its seq, its ways, the seq again) verified once: in line at
 * each of the lookup's call sites, its compares multiply the verifier's states. */
#define VIOMMU_BUCKET_FIND(idx, key, slot) viommu_bucket_find_bpf(idx, key, slot)
__noinline int viommu_bucket_find_bpf(__u32 idx, __u64 key, __u64 *slot);
struct viommu_lk;
__noinline int viommu_lookup_byte_bpf(__u32 ep, __u64 iova, int want, struct viommu_lk *lk);
__noinline int viommu_lookup_fast_bpf(__u32 ep, __u64 iova, struct viommu_lk *lk);

#include "viommu_lookup.h"

__noinline int viommu_bucket_find_bpf(__u32 idx, __u64 key, __u64 *slot)
{
	if (!slot)
		return 0;
	return viommu_bucket_find(0, idx, key, slot);
}

/* Verified once; every range query calls it per extent crossed. */
__noinline int viommu_lookup_byte_bpf(__u32 ep, __u64 iova, int want, struct viommu_lk *lk)
{
	if (!lk)
		return 0;
	viommu_lookup_byte(0, ep, iova, want, lk);
	return 0;
}

/* Verified once, in a frame of its own (the combined stack of the program's calls is bounded). */
__noinline int viommu_lookup_fast_bpf(__u32 ep, __u64 iova, struct viommu_lk *lk)
{
	if (!lk)
		return 0;
	return viommu_lookup_fast(0, ep, iova, lk);
}

/* Translate one query; counts the outcome in viommu_stats. */
static __always_inline void viommu_bpf_translate(const struct viommu_query *q, struct viommu_answer *a)
{
	viommu_translate(0, q, a, 0);
	if (a->result == VIOMMU_XLATE_FAULT) {
		struct viommu_stats *st = viommu_bpf_stats();

		if (st && a->reason < 3)
			st->faults[a->reason & 3]++;
	}
}

/*
 * The window (I13) in line, for the batch and XDP programs: a query within one page, READ /
 * WRITE / MMIO access only, from a dense endpoint whose domain has a window holding the page:
 * the endpoint entry, the window entry and the page's PTE (or its region's piece window word),
 * checked by the entry's seqlock. Its outcome in one word, from scalars (no pointer, so that a
 * program can pass the query's fields straight from its context): VIOMMU_WINW_KIND() of it is
 * 0, not taken (the caller asks viommu_bpf_translate); VIOMMU_WINW_PTE, a present PTE with
 * every flag the access needs; VIOMMU_WINW_MISS, the page is not mapped (not present, no piece
 * over it); VIOMMU_WINW_PIECE, a published 2 MiB piece's direct value with every flag the
 * access needs. The PTE or value keeps its PA and flags bits (12 and up, 1-4), the kind sits
 * in bits 8-9, which neither uses. Counts nothing: the caller adds its hits to viommu_stats
 * once per run.
 */
#define VIOMMU_WINW_PTE 1ull
#define VIOMMU_WINW_MISS 2ull
#define VIOMMU_WINW_PIECE 3ull
#define VIOMMU_WINW_KIND(w) (((w) >> 8) & 3)
#define VIOMMU_WINW(kind, v) (((v) & ~0xf00ull) | (kind) << 8)
static __always_inline __u64 viommu_bpf_window_word(__u32 ep, __u32 access, __u64 iova, __u64 size)
{
	const struct viommu_ep_entry *e;
	__u64 pte;
	__u64 s1;
	__u32 dslot, li;
	int got;

	if (viommu_window_args_out(ep, access, iova, size))
		return 0;
	e = viommu_acc_ep(0, ep);
	if (!e)
		return 0;
	s1 = VIOMMU_LOAD_ACQ(&e->seq); /* pairs with the writer's release of the entry (W3) */
	dslot = VIOMMU_LOAD(&e->domain_slot);
	if ((s1 & 1) | (VIOMMU_LOAD(&e->state) != VIOMMU_EP_ATTACHED))
		return 0;
	got = viommu_window_pte(0, e, s1, dslot, iova, &pte, &li);
	if (got == VIOMMU_WIN_PIECE) /* a published 2 MiB piece, with every flag the access needs */
		return (VIOMMU_HASH_DIRECT_FLAGS(pte) & access) == access ? VIOMMU_WINW(VIOMMU_WINW_PIECE, pte) : 0;
	if (got == 2)
		return VIOMMU_WINW(VIOMMU_WINW_MISS, 0);
	/* Present, with every flag the access needs (else the general path says which fault). */
	if (got != 1 || (~pte & ((__u64)access << 1)))
		return 0;
	return VIOMMU_WINW(VIOMMU_WINW_PTE, pte);
}

/*
 * A batch's copy of one endpoint's window (I13), what a userspace reader's struct
 * viommu_reader_epw is to it: made once per batch, read between the entry's seq load (@seq)
 * and the batch's one check of it after its last query (viommu_bpf_epw_holds()). Nothing is
 * checked per query; a seq that moved makes the batch answer again, checked, every query the
 * copy answered. regions 0: no copy.
 * - Made when the window holds no piece of any size (VIOMMU_WIN_F_PIECES and
 *   VIOMMU_WIN_F_WIDE clear): a window page costs its PTE alone, read at a computed place as
 *   a flat table's entry is; a present PTE with the access's flags is a HIT, a PTE not present
 *   a miss (no piece lay in the window while the seq held: the writer moves it on when the
 *   window gains its first one).
 * - Made with a piece there (@words): the region's piece window word first (a 2 MiB piece's
 *   PTEs are lines no one wrote), a published piece's direct value answering; else, in the
 *   window, the PTE, and a miss is a PTE not present with the word 0 (neither a piece nor
 *   busy: whatever the order of the two loads, some instant between them saw no mapping).
 */
struct viommu_bpf_epw {
	__u64 seq;
	__u64 base; /* the window's first IOVA */
	__u64 pbase; /* the piece window's (@words only) */
	__u32 leaf, regions;
	__u32 pfirst, pregions; /* @words only */
	__u32 ep;
	__u32 words;
};

static __always_inline void viommu_bpf_epw_load(__u32 ep, struct viommu_bpf_epw *c)
{
	const struct viommu_ep_entry *e = ep < VIOMMU_EP_DENSE ? viommu_acc_ep(0, ep) : 0;
	const struct viommu_window *w;
	__u64 base;
	__u32 regions;

	c->ep = ep;
	c->regions = 0;
	if (!e)
		return;
	c->seq = VIOMMU_LOAD_ACQ(&e->seq); /* pairs with the writer's release of the entry (W3) */
	if ((c->seq & 1) | (VIOMMU_LOAD(&e->state) != VIOMMU_EP_ATTACHED))
		return;
	w = viommu_acc_win(0, VIOMMU_LOAD(&e->domain_slot));
	if (!w)
		return;
	regions = VIOMMU_LOAD_ACQ(&w->regions); /* pairs with win_place()'s release */
	base = VIOMMU_LOAD_ACQ(&w->base); /* the flags: pair with win_flags_store()'s release */
	c->words = !!(base & (VIOMMU_WIN_F_PIECES | VIOMMU_WIN_F_WIDE));
	if (c->words) {
		c->pregions = VIOMMU_LOAD_ACQ(&w->pregions); /* pairs with win_place()'s release */
		c->pbase = VIOMMU_LOAD(&w->pbase);
		c->pfirst = VIOMMU_LOAD(&w->pfirst);
	}
	c->base = base & ~VIOMMU_WIN_F_MASK;
	c->leaf = VIOMMU_LOAD(&w->leaf);
	c->regions = regions;
}

/* The window word (as viommu_bpf_window_word()'s) of a query of the copy's endpoint through
 * copy @c, unchecked: VIOMMU_WINW_PTE, a present PTE with every flag @access needs;
 * VIOMMU_WINW_MISS, the page not mapped; VIOMMU_WINW_PIECE, a published 2 MiB piece's direct
 * value with every flag @access needs (@words); 0, not the copy's to answer (out of its
 * windows, more than one page, another access, a word busy or a piece's, a present PTE
 * without the access's flags: the checked lookup says which). */
static __always_inline __u64 viommu_bpf_epw_word(const struct viommu_bpf_epw *c, __u32 access, __u64 iova,
						 __u64 size)
{
	const __u64 r = (iova - c->base) >> VIOMMU_HASH_SHIFT;
	const struct viommu_ptes *pt;
	__u64 pte, word = 0;

	if (viommu_window_args_out(0, access, iova, size))
		return 0;
	if (c->words) {
		const __u64 pr = (iova - c->pbase) >> VIOMMU_HASH_SHIFT;
		const __u64 *pv;

		if (pr >= c->pregions)
			return 0;
		pv = viommu_acc_piece(0, c->pfirst + (__u32)pr);
		if (!pv)
			return 0;
		word = VIOMMU_LOAD_ACQ(pv); /* pairs with piece_win_set()'s release */
		if (VIOMMU_SLOT_TAG(word) == VIOMMU_HASH_DIRECT)
			return (VIOMMU_HASH_DIRECT_FLAGS(word) & access) == access ? VIOMMU_WINW(VIOMMU_WINW_PIECE, word)
										    : 0;
	}
	if (r >= c->regions)
		return 0;
	pt = viommu_acc_ptes(0, c->leaf + (__u32)r);
	if (!pt)
		return 0;
	pte = VIOMMU_LOAD_ACQ(&pt->pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova)]); /* W2 */
	if (!(pte & VIOMMU_PTE_PRESENT))
		return word ? 0 : VIOMMU_WINW(VIOMMU_WINW_MISS, 0);
	return (~pte & ((__u64)access << 1)) ? 0 : VIOMMU_WINW(VIOMMU_WINW_PTE, pte);
}

/* Whether copy @c is endpoint @ep's and its window holds byte @iova. */
static __always_inline int viommu_bpf_epw_covers(const struct viommu_bpf_epw *c, __u32 ep, __u64 iova)
{
	return c->regions && ep == c->ep && (iova - c->base) >> VIOMMU_HASH_SHIFT < c->regions;
}

/* Whether the answers read through copy @c stand: its endpoint entry's seq unchanged after
 * them (I4, I13; a seq only grows, I10). */
static __always_inline int viommu_bpf_epw_holds(const struct viommu_bpf_epw *c)
{
	const struct viommu_ep_entry *e = viommu_acc_ep(0, c->ep);

	VIOMMU_FENCE_ACQ();
	return e && VIOMMU_LOAD(&e->seq) == c->seq;
}

/* Below VIOMMU_TOUCH_LEAVES_MIN leaves in use (4 KiB of PTEs each) the fast path's PTEs stay
 * in the first-level cache between batches, and loading them first only costs instructions
 * (measured: ~15% more per query at 1K extents). */

/* Whether a batch should load its queries' lines first (viommu_bpf_touch()). */
static __always_inline int viommu_bpf_touch_pays(void)
{
	const struct viommu_meta *m = viommu_bpf_elem(&viommu_meta, 0);

	return m && VIOMMU_LOAD(&m->leaves_used) >= VIOMMU_TOUCH_LEAVES_MIN;
}

/*
 * Loads of the lines a lookup of byte @iova of dense endpoint @ep will read, nothing checked
 * (the seqlocks, the state, the flags, the generations): BPF has no prefetch instruction, and
 * a batch that loads its queries' lines first, a few instructions apart, has many cache
 * misses in flight where the checked lookups, ~100 instructions or more apart, have one or
 * two (the out-of-order window holds no more). In the piece window, the region's word, and
 * when that is not a published piece, in the window the page's PTE, past it the region's hash
 * bucket (the second too when the first has no way for it) and, when a way holds the region's
 * leaf, the leaf's header and the page's PTE (a lone page's value is the answer). Sparse
 * endpoint ids load nothing. The value is only a sink: the lookups read everything again,
 * checked.
 */
/* Bucket @idx's value for @key, unchecked (0: no way holds it). */
static __always_inline __u64 viommu_bpf_touch_bucket(__u32 idx, __u64 key)
{
	const struct viommu_hash_bucket *b = viommu_acc_bucket(0, idx);
	__u64 v = 0;

	if (!b)
		return 0;
#pragma unroll
	for (int k = 0; k < VIOMMU_HASH_WAYS; k++)
		v |= VIOMMU_LOAD(&b->val[k]) & -(__u64)(VIOMMU_LOAD(&b->key[k]) == key);
	return v;
}

static __always_inline __u64 viommu_bpf_touch(__u32 ep, __u64 iova)
{
	const struct viommu_ep_entry *e = ep < VIOMMU_EP_DENSE ? viommu_acc_ep(0, ep) : 0;
	const __u32 si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova);
	const struct viommu_window *w;
	const struct viommu_ptes *pt;
	const struct viommu_leaf *f;
	__u64 r, key, v;
	__u32 dslot;

	if (!e)
		return 0;
	dslot = VIOMMU_LOAD(&e->domain_slot);
	w = viommu_acc_win(0, dslot);
	if (w) {
		const __u64 *pv;

		const __u64 wb = VIOMMU_LOAD(&w->base);

		/* In a window with no 2 MiB piece, the page's PTE; else the region's piece window
		 * word first, which a published piece's lookup stops at (viommu_window_pte()), then
		 * in the window the PTE. */
		r = (iova - (wb & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT;
		if (r < VIOMMU_LOAD(&w->regions) && !(wb & VIOMMU_WIN_F_PIECES)) {
			pt = viommu_acc_ptes(0, VIOMMU_LOAD(&w->leaf) + (__u32)r);
			return pt ? VIOMMU_LOAD(&pt->pte[si]) : 0;
		}
		r = (iova - VIOMMU_LOAD(&w->pbase)) >> VIOMMU_HASH_SHIFT;
		if (r < VIOMMU_LOAD(&w->pregions)) {
			pv = viommu_acc_piece(0, VIOMMU_LOAD(&w->pfirst) + (__u32)r);
			v = pv ? VIOMMU_LOAD(pv) : 0;
			if (VIOMMU_SLOT_TAG(v) == VIOMMU_HASH_DIRECT)
				return v;
		}
		r = (iova - (wb & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT;
		if (r < VIOMMU_LOAD(&w->regions)) {
			pt = viommu_acc_ptes(0, VIOMMU_LOAD(&w->leaf) + (__u32)r);
			return pt ? VIOMMU_LOAD(&pt->pte[si]) : 0;
		}
	}
	key = VIOMMU_HASH_KEY(dslot, iova);
	v = viommu_bpf_touch_bucket(viommu_hash_index(key, viommu_acc_hash_mask(0)), key);
	if (!v) /* its first bucket has no way for it: its second */
		v = viommu_bpf_touch_bucket(viommu_hash_alt(key, viommu_acc_hash_mask(0)), key);
	if (VIOMMU_SLOT_TAG(v) != VIOMMU_SLOT_LEAF)
		return v;
	f = viommu_acc_leaf(0, VIOMMU_SLOT_IDX(v));
	pt = viommu_acc_ptes(0, VIOMMU_SLOT_IDX(v));
	return (f ? VIOMMU_LOAD(&f->seq) : 0) + (pt ? VIOMMU_LOAD(&pt->pte[si]) : 0);
}

/* The answer @a to a query of byte @iova whose window word is @w (a kind, not 0), every field
 * written (a program's context is not zeroed for it). 1: a HIT; 2: a FAULT (not mapped). */
static __always_inline int viommu_bpf_window_answer(struct viommu_answer *a, __u64 iova, __u64 w)
{
	a->pad = 0;
	if (VIOMMU_WINW_KIND(w) == VIOMMU_WINW_PTE) {
		viommu_answer_pte(a, iova, w);
		return 1;
	}
	if (VIOMMU_WINW_KIND(w) == VIOMMU_WINW_PIECE) {
		viommu_answer_direct(a, iova, w);
		return 1;
	}
	a->result = VIOMMU_XLATE_FAULT;
	a->reason = VIOMMU_FAULT_R_MAPPING;
	a->pa = 0;
	a->ext_start = 0;
	a->ext_end = 0;
	a->ext_phys = 0;
	a->ext_flags = 0;
	a->fault_addr = iova;
	a->next = 0;
	return 2;
}

/* Both, for a query and an answer of the program's own: 1 HIT, 2 FAULT, 0 not taken. */
static __always_inline int viommu_bpf_window(const struct viommu_query *q, struct viommu_answer *a)
{
	__u64 w = viommu_bpf_window_word(q->endpoint, q->access, q->iova, q->size);

	return VIOMMU_WINW_KIND(w) ? viommu_bpf_window_answer(a, q->iova, w) : 0;
}

/* Send a fault to the device's event queue (the device drains viommu_faults), from its fields. */
static __always_inline void viommu_bpf_report(__u32 ep, __u32 access, __u32 reason, __u64 addr)
{
	struct viommu_fault_rec rec = {
		.endpoint = ep,
		.reason = (__u8)reason,
		.access = access & ~VIOMMU_QUERY_F_EXTENT,
		.address = addr,
	};

	bpf_ringbuf_output(&viommu_faults, &rec, sizeof(rec), 0);
}

/* The same for a query and its answer. */
static __always_inline void viommu_bpf_report_fault(const struct viommu_query *q,
						    const struct viommu_answer *a)
{
	viommu_bpf_report(q->endpoint, q->access, a->reason, a->fault_addr);
}

#endif
