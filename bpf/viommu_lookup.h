/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * viommu_lookup.h — the fast-path lookup, one algorithm for both views of the shared memory:
 * BPF programs (through map lookups the verifier inlines) and userspace (through mmap).
 *
 * The includer defines, before including this file:
 *   VIOMMU_CTX_PARAM / VIOMMU_CTX_ARG   an extra first parameter/argument (may be a dummy)
 *   viommu_acc_ep(ctx, idx)        -> const struct viommu_ep_entry *   (NULL if out of range)
 *   viommu_acc_ep_index(ctx, i)    -> const __u64 *
 *   viommu_acc_node(ctx, idx)      -> const struct viommu_node *
 *   viommu_acc_leaf(ctx, idx)      -> const struct viommu_leaf *
 *   viommu_acc_ptes(ctx, idx)      -> const struct viommu_ptes *        (leaf idx's PTEs)
 *   viommu_acc_ext(ctx, idx)       -> const struct viommu_extent_rec *
 *   viommu_acc_bucket(ctx, idx)    -> const struct viommu_hash_bucket *
 *   viommu_acc_win(ctx, dslot)     -> const struct viommu_window *      (NULL if out of range)
 *   viommu_acc_piece(ctx, idx)     -> const __u64 *  a viommu_pieces entry (NULL if out of range)
 *   viommu_acc_hash_mask(ctx)      -> __u32
 *   viommu_acc_ep_probes(ctx)      -> __u32   meta.ep_probes, loaded with acquire (0 if none)
 *   VIOMMU_LOAD_ACQ(p), VIOMMU_LOAD(p)   atomic 32/64-bit loads (acquire / at least relaxed)
 *   VIOMMU_FENCE_ACQ()             orders the VIOMMU_LOAD()s before it before the loads after it:
 *                                  an acquire fence, or only a compiler barrier when VIOMMU_LOAD
 *                                  is itself an acquire load (user/reader.h does, for TSan)
 *   VIOMMU_STAT(field)             count an event (may expand to nothing)
 *
 * Concurrency: any number of readers, one writer (user/fastpath.c), no locks. The reader never
 * writes shared memory. Every answer is validated against generations (seq) so a lookup that
 * raced with the writer is retried, at most VIOMMU_RETRIES times, then answered VIOMMU_XLATE_RETRY.
 * docs/concurrency.md gives the protocol and the invariants (I1..I11) cited below.
 */
#ifndef VIOMMU_LOOKUP_H
#define VIOMMU_LOOKUP_H

#include "viommu_abi.h"
#include "viommu_spec.h"


#ifndef VIOMMU_INLINE
#define VIOMMU_INLINE static inline __attribute__((always_inline))
#endif
#ifdef __bpf__
#define VIOMMU_UNROLL _Pragma("unroll") /* the verifier then sees constant bounds */
/* @x as a value the compiler cannot see through: in BPF, at the top of a retry, so that what
 * a lookup derives from its IOVA (a mask and a slot per radix level) is derived again, not
 * kept from before the loop across its calls, spilled (80 bytes of the deepest chain's
 * 512-byte stack). */
#define VIOMMU_OPAQUE(x) asm volatile("" : "+r"(x))
#else
#define VIOMMU_UNROLL
#define VIOMMU_OPAQUE(x) ((void)0)
#endif
/* The per-byte lookup the range loop calls; BPF makes it a global function (verified once). */
#ifndef VIOMMU_LOOKUP_BYTE
#define VIOMMU_LOOKUP_BYTE(ep, iova, want, lk) viommu_lookup_byte(VIOMMU_CTX_ARG, ep, iova, want, lk)
#endif

/* One lookup's outcome (for one byte). */
struct viommu_lk {
	__u32 result; /* enum viommu_xlate_result */
	__u32 reason;
	__u64 ext_start, ext_end, ext_phys; /* the run found: the whole extent if `whole` */
	__u16 ext_flags;
	/* 0: ext_* are a run (a PTE's page); 1: the whole extent, its record read (idx, gen the
	 * record's); 2: the whole extent, a one-page one its PTE alone says (VIOMMU_PTE_SOLO) */
	__u8 whole;
	__u8 direct; /* 1: from a direct value, a 2 MiB piece's run or a lone page (nothing vouches
		      * for it: idx, gen and pte are not set) */
	__u32 dslot; /* the domain slot the answer was validated in */
	/* what validated the hit, for a reader-private cache (user/reader.h): the endpoint entry,
	 * and the record (whole == 1: idx, gen are the record's) or the leaf (a page or a solo
	 * page, whole 0 or 2 and not direct: the leaf's, and the PTE of the page) */
	__u32 ep_idx, idx, gen;
	__u64 ep_seq; /* the endpoint entry's (64-bit, ABI v12) */
	__u64 pte;
};

#ifndef VIOMMU_EP_PROBE
/* The sparse index's probe loop: @probes slots from @h, linear. BPF replaces it with bpf_loop()
 * (viommu_maps.bpf.h): the verifier refuses a loop of VIOMMU_EP_INDEX_PROBES_MAX iterations
 * walked in line ("sequence of jumps is too complex"). */
VIOMMU_INLINE __s64 viommu_ep_probe(VIOMMU_CTX_PARAM, __u32 ep, __u32 h, __u32 probes)
{
	for (__u32 i = 0; i < probes && i < VIOMMU_EP_INDEX_PROBES_MAX; i++) {
		const __u64 *p = viommu_acc_ep_index(VIOMMU_CTX_ARG, (h + i) & (VIOMMU_EP_INDEX_SLOTS - 1));
		__u64 v;

		if (!p)
			return -1;
		v = VIOMMU_LOAD_ACQ(p); /* pairs with the writer's release of the slot (I8) */
		if (!v)
			return -1;
		if (VIOMMU_EP_INDEX_ID(v) == ep)
			return VIOMMU_EP_INDEX_ENTRY(v);
	}
	return -1;
}
#define VIOMMU_EP_PROBE(ep, h, probes) viommu_ep_probe(VIOMMU_CTX_ARG, ep, h, probes)
#endif

/* Endpoint id -> table index, or -1. Ids >= VIOMMU_EP_DENSE live in the sparse index (I8):
 * linear probing from viommu_ep_hash(), at most meta.ep_probes slots (every indexed id is that
 * close to its home; usually 1 or 2) and never more than VIOMMU_EP_INDEX_PROBES_MAX. */
VIOMMU_INLINE __s64 viommu_ep_slot(VIOMMU_CTX_PARAM, __u32 ep)
{
	if (ep < VIOMMU_EP_DENSE)
		return ep;
	/* The bound is loaded with acquire; the writer stores a larger bound before the index
	 * slot that needs it. A reader that loads the older bound may stop short of an id indexed
	 * since: it answers as if the lookup came before the insertion, when the id's entry said
	 * UNKNOWN anyway (I8). */
	return VIOMMU_EP_PROBE(ep, viommu_ep_hash(ep), viommu_acc_ep_probes(VIOMMU_CTX_ARG));
}

/*
 * Read extent record @idx, which must be live with generation @gen (~0u: any live generation:
 * the record a leaf's ext[] names, which the caller checks against the page's PTE). 1 = valid
 * (the record was live and held iova for this domain at one instant, I3), 0 = raced (retry).
 */
VIOMMU_INLINE int viommu_read_extent(VIOMMU_CTX_PARAM, __u32 idx, __u32 gen, __u32 dslot, __u64 iova,
				     struct viommu_lk *lk)
{
	const struct viommu_extent_rec *x = viommu_acc_ext(VIOMMU_CTX_ARG, idx);
	__u32 s;

	if (!x)
		return 0;
	s = VIOMMU_LOAD_ACQ(&x->seq); /* pairs with the writer's release of seq (W2) */
	if ((s & 1) || (gen != ~0u && s != gen))
		return 0;
	lk->ext_start = VIOMMU_LOAD(&x->start);
	lk->ext_end = VIOMMU_LOAD(&x->end);
	lk->ext_phys = VIOMMU_LOAD(&x->phys);
	lk->ext_flags = VIOMMU_LOAD(&x->flags);
	if (VIOMMU_LOAD(&x->domain_slot) != (__u16)dslot)
		return 0;
	VIOMMU_FENCE_ACQ(); /* field loads before the re-check of seq (seqlock read side) */
	if (VIOMMU_LOAD(&x->seq) != s)
		return 0;
	if (iova < lk->ext_start || iova > lk->ext_end)
		return 0;
	lk->idx = idx;
	lk->gen = s;
	lk->dslot = dslot;
	lk->whole = 1;
	lk->direct = 0;
	return 1;
}

/*
 * Read the PTE of @iova in the leaf a level-4 slot word @slot names (and, with @want, the whole
 * extent through the page's record). 1 = hit (@lk filled), 2 = validated miss (the live leaf of
 * this region has no present PTE for the page, I5), 0 = raced (retry).
 * Without @want the PTE is the answer: one line (the leaf header's line is shared by the region's
 * 512 pages). With @want, a solo PTE (a one-page mapping, which has no record) is the whole
 * extent by itself. Else the record ext[] names must be live, hold iova in this domain, and agree
 * with the PTE (same PA for the page, same flags): the answer is then the record's alone, and
 * the record was the mapping of iova at the instant it was read (live records of a domain never
 * overlap, I3), so a PTE rewritten in between with the same value cannot mix two mappings (nor
 * can a page that went solo in between: ext[] then names no record, and the lookup retries).
 */
VIOMMU_INLINE int viommu_read_leaf(VIOMMU_CTX_PARAM, __u64 slot, __u32 dslot, __u64 iova, int want,
				   struct viommu_lk *lk)
{
	__u32 idx = VIOMMU_SLOT_IDX(slot), si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova), s, x = 0;
	const struct viommu_leaf *f = viommu_acc_leaf(VIOMMU_CTX_ARG, idx);
	const struct viommu_ptes *pt = viommu_acc_ptes(VIOMMU_CTX_ARG, idx);
	__u64 pte;

	if (!f || !pt)
		return 0;
	s = VIOMMU_LOAD_ACQ(&f->seq); /* pairs with the writer's release of seq (W1) */
	if (s != VIOMMU_SLOT_GEN(slot))
		return 0;
	if (VIOMMU_LOAD(&f->domain_slot) != dslot ||
	    VIOMMU_LOAD(&f->base) != (iova & VIOMMU_COVER_MASK(VIOMMU_RADIX_LEVELS - 1)))
		return 0;
	pte = VIOMMU_LOAD_ACQ(&pt->pte[si]); /* pairs with the writer's release of the PTE (W2, W4) */
	/* A solo PTE (a one-page mapping) is the whole extent: the page is the answer either way. */
	want &= !(pte & VIOMMU_PTE_SOLO);
	if (want)
		x = VIOMMU_LOAD(&f->ext[si]);
	VIOMMU_FENCE_ACQ();
	if (VIOMMU_LOAD(&f->seq) != s)
		return 0;
	if (!(pte & VIOMMU_PTE_PRESENT))
		return 2;
	lk->idx = idx;
	lk->gen = s;
	lk->pte = pte;
	if (!want) {
		lk->ext_start = iova & ~((1ull << VIOMMU_PAGE_SHIFT) - 1);
		lk->ext_end = lk->ext_start + (1ull << VIOMMU_PAGE_SHIFT) - 1;
		lk->ext_phys = VIOMMU_PTE_PA(pte);
		lk->ext_flags = VIOMMU_PTE_FLAGS(pte);
		lk->whole = (__u8)((pte & VIOMMU_PTE_SOLO) >> 3); /* 2: a solo PTE, the whole extent */
		lk->direct = 0;
		return 1;
	}
	if (!x || !viommu_read_extent(VIOMMU_CTX_ARG, x - 1, ~0u, dslot, iova, lk))
		return 0;
	if (lk->ext_phys + ((iova & ~((1ull << VIOMMU_PAGE_SHIFT) - 1)) - lk->ext_start) != VIOMMU_PTE_PA(pte) ||
	    lk->ext_flags != VIOMMU_PTE_FLAGS(pte))
		return 0;
	return 1;
}

/*
 * Read node @idx's entry for @iova, checking the node is the live node of (dslot, level, iova)
 * with generation @gen (gen == ~0u: any live generation; used for roots, whose generation the
 * endpoint entry's seqlock vouches for). Returns 1 and the entry, or 0 (raced).
 */
VIOMMU_INLINE int viommu_read_node(VIOMMU_CTX_PARAM, __u32 idx, __u32 gen, __u32 dslot, int level,
				   __u64 iova, __u64 *entry)
{
	const struct viommu_node *n = viommu_acc_node(VIOMMU_CTX_ARG, idx);
	__u32 s;

	if (!n)
		return 0;
	s = VIOMMU_LOAD_ACQ(&n->seq); /* pairs with the writer's release of seq (W1) */
	if ((s & 1) || (gen != ~0u && s != gen))
		return 0;
	if (VIOMMU_LOAD(&n->level) != level || VIOMMU_LOAD(&n->domain_slot) != dslot ||
	    VIOMMU_LOAD(&n->base) != (iova & VIOMMU_COVER_MASK(level)))
		return 0;
	*entry = VIOMMU_LOAD_ACQ(&n->slot[VIOMMU_SLOT_OF(level, iova)]);
	VIOMMU_FENCE_ACQ();
	return VIOMMU_LOAD(&n->seq) == s;
}

/*
 * Bucket @idx's value for @key: 1 and *slot; 0, the key is not in the bucket; -1, raced (the
 * caller retries). A seqlock read (I6): the bucket's seq, the keys and values, the seq again;
 * what was read counts only with both loads of seq equal and even, no key having left a way in
 * between. So a value is one its key had, even when its way went to another key and came back
 * between the loads (which the key read twice could not tell, ABI v10 and before). Branch-free
 * over the ways: which way holds the key is random, and a mispredicted branch per lookup would
 * stop the CPU from running ahead into the next lookups. Keys are unique in the table, so at
 * most one term is nonzero.
 *
 * The includer may define VIOMMU_BUCKET_SSE2 (userspace on x86-64, not under TSan): the keys
 * and values in four 16-byte loads between the two loads of seq, 6 loads instead of 8. The
 * bucket is a lookup's one cold line, and the loads waiting on it bound how many lookups the
 * CPU keeps in flight (docs/design.md, "Hash"). An aligned 16-byte load reads each of its 8-byte
 * halves whole on x86-64, and x86 keeps loads in order; volatile keeps the compiler from
 * merging or moving them. VIOMMU_LOAD_PAIR(p) may be defined to observe them
 * (tests/test_interleave.c).
 */
#ifdef VIOMMU_BUCKET_SSE2
#include <emmintrin.h>
#ifndef VIOMMU_LOAD_PAIR
#define VIOMMU_LOAD_PAIR(p) (*(const volatile __m128i *)(p))
#endif
/* Lanes of @kv (two keys) equal to @k: all-ones 64-bit lanes (SSE2 compares 32 bits at a time). */
VIOMMU_INLINE __m128i viommu_eq64(__m128i kv, __m128i k)
{
	__m128i e = _mm_cmpeq_epi32(kv, k);

	return _mm_and_si128(e, _mm_shuffle_epi32(e, 0xb1));
}

VIOMMU_INLINE int viommu_bucket_find(VIOMMU_CTX_PARAM, __u32 idx, __u64 key, __u64 *slot)
{
	const struct viommu_hash_bucket *b = viommu_acc_bucket(VIOMMU_CTX_ARG, idx);
	__m128i k = _mm_set1_epi64x((long long)key), e01, e2s, r;
	__u32 s;

	if (!b)
		return 0;
	s = VIOMMU_LOAD_ACQ(&b->seq); /* pairs with hash_del()'s release of the even seq */
	/* key[2]'s load holds seq in its second lane, which never equals a key (viommu_abi.h) */
	e01 = viommu_eq64(VIOMMU_LOAD_PAIR(&b->key[0]), k);
	e2s = viommu_eq64(VIOMMU_LOAD_PAIR(&b->key[2]), k);
	r = _mm_or_si128(_mm_and_si128(e01, VIOMMU_LOAD_PAIR(&b->val[0])),
			 _mm_and_si128(e2s, VIOMMU_LOAD_PAIR(&b->val[2])));
	*slot = (__u64)_mm_cvtsi128_si64(_mm_or_si128(r, _mm_unpackhi_epi64(r, r)));
	VIOMMU_FENCE_ACQ();
	if ((s & 1) | (VIOMMU_LOAD(&b->seq) != s))
		return -1;
	return _mm_movemask_pd(_mm_castsi128_pd(_mm_or_si128(e01, e2s))) != 0;
}
#else
VIOMMU_INLINE int viommu_bucket_find(VIOMMU_CTX_PARAM, __u32 idx, __u64 key, __u64 *slot)
{
	const struct viommu_hash_bucket *b = viommu_acc_bucket(VIOMMU_CTX_ARG, idx);
	__u64 v = 0, hit = 0;
	__u32 s;
	int w;

	if (!b)
		return 0;
	s = VIOMMU_LOAD_ACQ(&b->seq); /* pairs with hash_del()'s release of the even seq */
	VIOMMU_UNROLL
	for (w = 0; w < VIOMMU_HASH_WAYS; w++) {
		__u64 k = VIOMMU_LOAD_ACQ(&b->key[w]); /* pairs with hash_set()'s release */

		v |= VIOMMU_LOAD_ACQ(&b->val[w]) & -(__u64)(k == key);
		hit |= k == key;
	}
	*slot = v;
	VIOMMU_FENCE_ACQ(); /* the loads above before the re-check of seq */
	if ((s & 1) | (VIOMMU_LOAD(&b->seq) != s))
		return -1;
	return hit != 0;
}
#endif

#ifndef VIOMMU_BUCKET_FIND
#define VIOMMU_BUCKET_FIND(idx, key, slot) viommu_bucket_find(VIOMMU_CTX_ARG, idx, key, slot)
#endif

/* The hash's value for @key (its first bucket, else its second, I6): 1 and *slot; 0, in
 * neither; -1, raced. */
VIOMMU_INLINE int viommu_hash_find(VIOMMU_CTX_PARAM, __u64 key, __u64 *slot)
{
	__u32 mask = viommu_acc_hash_mask(VIOMMU_CTX_ARG);
	int r = VIOMMU_BUCKET_FIND(viommu_hash_index(key, mask), key, slot);

	return r ? r : VIOMMU_BUCKET_FIND(viommu_hash_alt(key, mask), key, slot);
}

/*
 * 0 if @q is a query a window answers alone (I13), else nonzero: a sparse endpoint id, an access
 * beyond READ | WRITE | MMIO (VIOMMU_QUERY_F_EXTENT, the whole extent, is bit 31), or a range
 * that leaves its page or runs past 2^64 (size - 1 and the range's last offset in its page both
 * below 4096, so their sum cannot wrap; size 0, one byte, takes the general path). Each term is
 * 0 when fine, so the callers pay one branch for all of them.
 */
VIOMMU_INLINE __u64 viommu_window_args_out(__u32 ep, __u32 access, __u64 iova, __u64 size)
{
	__u64 last = size - 1;

	return (ep / VIOMMU_EP_DENSE) | (access / (VIOMMU_MAP_F_MASK + 1)) |
	       ((last | (last + (iova & ((1ull << VIOMMU_PAGE_SHIFT) - 1)))) >> VIOMMU_PAGE_SHIFT);
}

VIOMMU_INLINE __u64 viommu_window_query_out(const struct viommu_query *q)
{
	return viommu_window_args_out(q->endpoint, q->access, q->iova, q->size);
}

/* A HIT for byte @iova from its page's present PTE @pte: the page is the run answered. */
VIOMMU_INLINE void viommu_answer_pte(struct viommu_answer *a, __u64 iova, __u64 pte)
{
	a->result = VIOMMU_XLATE_HIT;
	a->reason = 0;
	a->pa = VIOMMU_PTE_PA(pte) | (iova & ((1ull << VIOMMU_PAGE_SHIFT) - 1));
	a->ext_start = iova & ~((1ull << VIOMMU_PAGE_SHIFT) - 1);
	a->ext_end = a->ext_start | ((1ull << VIOMMU_PAGE_SHIFT) - 1);
	a->ext_phys = VIOMMU_PTE_PA(pte);
	a->ext_flags = VIOMMU_PTE_FLAGS(pte);
	a->fault_addr = 0;
	a->next = 0;
}

/* A HIT for byte @iova from the direct value @v of its published 2 MiB piece (hash or piece
 * window): the piece is the run answered. */
VIOMMU_INLINE void viommu_answer_direct(struct viommu_answer *a, __u64 iova, __u64 v)
{
	a->result = VIOMMU_XLATE_HIT;
	a->reason = 0;
	a->ext_start = iova & ~((1ull << VIOMMU_HASH_SHIFT) - 1);
	a->ext_end = a->ext_start | ((1ull << VIOMMU_HASH_SHIFT) - 1);
	a->ext_phys = VIOMMU_HASH_DIRECT_PA(v);
	a->pa = a->ext_phys + (iova & ((1ull << VIOMMU_HASH_SHIFT) - 1)); /* the piece's PA: 4 KiB aligned */
	a->ext_flags = VIOMMU_HASH_DIRECT_FLAGS(v);
	a->fault_addr = 0;
	a->next = 0;
}

/*
 * The page of @iova in the window of domain @dslot (I13), for a reader that loaded the attached
 * endpoint entry @e with seq @s1: the page's PTE at a computed place, as in a flat table, with
 * nothing but the entry's seqlock to check (the window's leaves hold only this domain's pages
 * while it owns them, and it owns them while an endpoint is in it). 1: *@pte present, *@li its
 * leaf; 2: the page is not mapped (not present, no 2 MiB piece in the piece window, and no piece
 * of 1 GiB or more over the window); 4: a published 2 MiB piece in the piece window: *@pte its
 * direct value; 3: in neither (or none): the caller goes on; 0: raced, or a larger piece may
 * hold it.
 */
/* The PTE of @iova in window leaf @li (acquire: pairs with its release, W2), then the endpoint
 * entry's seq still @s1 (I4): 1, or 0 (raced). */
VIOMMU_INLINE int viommu_window_load_pte(VIOMMU_CTX_PARAM, const struct viommu_ep_entry *e, __u64 s1, __u32 li,
					 __u64 iova, __u64 *pte)
{
	const struct viommu_ptes *pt = viommu_acc_ptes(VIOMMU_CTX_ARG, li);

	if (!pt)
		return 0;
	*pte = VIOMMU_LOAD_ACQ(&pt->pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova)]);
	VIOMMU_FENCE_ACQ();
	return VIOMMU_LOAD(&e->seq) == s1;
}

#define VIOMMU_WIN_OUT 3
#define VIOMMU_WIN_PIECE 4
VIOMMU_INLINE int viommu_window_pte(VIOMMU_CTX_PARAM, const struct viommu_ep_entry *e, __u64 s1, __u32 dslot,
				    __u64 iova, __u64 *pte, __u32 *li)
{
	const struct viommu_window *w = viommu_acc_win(VIOMMU_CTX_ARG, dslot);
	const __u64 *pv;
	__u64 r, wb, word;
	__u32 wn, pn;
	int in, ptes_first;

	if (!w)
		return VIOMMU_WIN_OUT;
	wn = VIOMMU_LOAD_ACQ(&w->regions); /* pairs with win_place()'s release */
	wb = VIOMMU_LOAD_ACQ(&w->base); /* the flags: pairs with win_flags_store()'s release */
	r = (iova - (wb & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT;
	in = r < wn;
	*li = VIOMMU_LOAD(&w->leaf) + (__u32)r;
	/* In the window the page's PTE, then the region's piece window word, as a flat table
	 * reads its entry; the word first when a 2 MiB piece lies in the window
	 * (VIOMMU_WIN_F_PIECES: its PTEs are lines no one wrote, and 8 regions share a line of
	 * words). Either order is right here (I13): this path reads the word for a miss. */
	ptes_first = in && !(wb & VIOMMU_WIN_F_PIECES);
	if (ptes_first) {
		if (!viommu_window_load_pte(VIOMMU_CTX_ARG, e, s1, *li, iova, pte))
			return 0;
		if (*pte & VIOMMU_PTE_PRESENT)
			return 1;
		if (wb & VIOMMU_WIN_F_WIDE)
			return 0;
	}
	/* The piece window (it holds the window): a word per 2 MiB region, a published piece's
	 * direct value or 0, VIOMMU_PIECE_BUSY while a piece comes or goes or one of 1 GiB or
	 * more lies over the window region. Past the window anything but a direct value says
	 * nothing; inside it, with the PTE not present, 0 says the page is not mapped (I13). */
	pn = VIOMMU_LOAD_ACQ(&w->pregions); /* pairs with win_place()'s release */
	r = (iova - VIOMMU_LOAD(&w->pbase)) >> VIOMMU_HASH_SHIFT;
	if (r >= pn)
		return in ? 0 : VIOMMU_WIN_OUT;
	pv = viommu_acc_piece(VIOMMU_CTX_ARG, VIOMMU_LOAD(&w->pfirst) + (__u32)r);
	if (!pv)
		return in ? 0 : VIOMMU_WIN_OUT;
	word = VIOMMU_LOAD_ACQ(pv); /* pairs with piece_win_set()'s release */
	if (VIOMMU_SLOT_TAG(word) == VIOMMU_HASH_DIRECT) {
		VIOMMU_FENCE_ACQ();
		if (VIOMMU_LOAD(&e->seq) != s1) /* I4 */
			return 0;
		*pte = word;
		return VIOMMU_WIN_PIECE;
	}
	if (!in)
		return VIOMMU_WIN_OUT;
	if (!ptes_first) {
		if (!viommu_window_load_pte(VIOMMU_CTX_ARG, e, s1, *li, iova, pte))
			return 0;
		if (*pte & VIOMMU_PTE_PRESENT)
			return 1;
	} else {
		VIOMMU_FENCE_ACQ();
		if (VIOMMU_LOAD(&e->seq) != s1) /* I4: after the word too */
			return 0;
	}
	/* Not present, and the word 0 (not busy, and no WIDE flag): no piece of any size held the
	 * region, and with the entry unchanged after both loads the page was not mapped at an
	 * instant between them, whichever came first (I13). */
	return (word | (wb & VIOMMU_WIN_F_WIDE)) ? 0 : 2;
}

/* A direct hash value @v for @iova: a published 2 MiB piece, as a run of its extent; or a lone
 * page (VIOMMU_HASH_LONE), the whole extent when it is @iova's page. 1: a hit, @lk filled; 2: a
 * validated miss (the region's one mapping is another page). */
VIOMMU_INLINE int viommu_direct_lk(__u64 v, __u64 iova, struct viommu_lk *lk)
{
	if (v & VIOMMU_HASH_LONE) {
		if (VIOMMU_HASH_LONE_PAGE(v) != VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova))
			return 2;
		lk->ext_start = iova & ~((1ull << VIOMMU_PAGE_SHIFT) - 1);
		lk->ext_end = lk->ext_start + (1ull << VIOMMU_PAGE_SHIFT) - 1;
		lk->ext_phys = VIOMMU_HASH_LONE_PA(v);
		lk->whole = 2; /* a one-page mapping: the page is the whole extent */
	} else {
		lk->ext_start = iova & ~((1ull << VIOMMU_HASH_SHIFT) - 1);
		lk->ext_end = lk->ext_start + (1ull << VIOMMU_HASH_SHIFT) - 1;
		lk->ext_phys = VIOMMU_HASH_DIRECT_PA(v);
		lk->whole = 0;
	}
	lk->ext_flags = VIOMMU_HASH_DIRECT_FLAGS(v);
	lk->direct = 1; /* no voucher for a reader TLB entry: never cached */
	return 1;
}

/*
 * The flags of domain @dslot's root node @idx (VIOMMU_ROOT_F_*), or -1 (raced: not the live root
 * of that domain). The endpoint entry's seqlock vouches for @idx being the domain's root.
 */
VIOMMU_INLINE __s64 viommu_root_flags(VIOMMU_CTX_PARAM, __u32 idx, __u32 dslot)
{
	const struct viommu_node *n = viommu_acc_node(VIOMMU_CTX_ARG, idx);
	__u32 s, f;

	if (!n)
		return -1;
	s = VIOMMU_LOAD_ACQ(&n->seq); /* pairs with the writer's release of seq (W1) */
	if ((s & 1) || VIOMMU_LOAD(&n->level) != 0 || VIOMMU_LOAD(&n->domain_slot) != dslot)
		return -1;
	f = VIOMMU_LOAD_ACQ(&n->flags); /* pairs with dom_walk_add()'s release */
	VIOMMU_FENCE_ACQ();
	return VIOMMU_LOAD(&n->seq) == s ? (__s64)f : -1;
}

/* The content of a slot (hash value or interior node entry) for @iova: 1 hit, 2 validated miss,
 * 0 raced or not final (a child node: the caller walks on). */
VIOMMU_INLINE int viommu_read_word(VIOMMU_CTX_PARAM, __u64 w, __u32 dslot, __u64 iova, int want,
				   struct viommu_lk *lk)
{
	if (VIOMMU_SLOT_TAG(w) == VIOMMU_HASH_DIRECT) { /* only from the hash */
		if (want && !(w & VIOMMU_HASH_LONE))
			return 0; /* the whole extent: its record, through the walk */
		lk->dslot = dslot;
		return viommu_direct_lk(w, iova, lk);
	}
	if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_LEAF)
		return viommu_read_leaf(VIOMMU_CTX_ARG, w, dslot, iova, want, lk);
	if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EXTENT)
		return viommu_read_extent(VIOMMU_CTX_ARG, VIOMMU_SLOT_IDX(w), VIOMMU_SLOT_GEN(w), dslot, iova, lk);
	return VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EMPTY ? 2 : 0;
}

/*
 * One attempt at translating byte @iova of endpoint @ep (@want: the whole extent, see
 * VIOMMU_QUERY_F_EXTENT). Returns 1 with @lk filled, or 0 when it raced with the writer (the
 * caller retries).
 */
VIOMMU_INLINE int viommu_lookup_once(VIOMMU_CTX_PARAM, __u32 ep, __u64 iova, int want, struct viommu_lk *lk)
{
	const struct viommu_ep_entry *e;
	__u64 s1;
	__u32 dslot, root, state;
	__u64 key, slot = 0;
	__s64 ei;
	int level, found = 0, hf;

	ei = viommu_ep_slot(VIOMMU_CTX_ARG, ep);
	e = ei < 0 ? 0 : viommu_acc_ep(VIOMMU_CTX_ARG, (__u32)ei);
	if (!e) {
		lk->result = VIOMMU_XLATE_FAULT;
		lk->reason = VIOMMU_FAULT_R_UNKNOWN;
		return 1;
	}
	s1 = VIOMMU_LOAD_ACQ(&e->seq); /* pairs with the writer's release of the entry (W3) */
	if (s1 & 1)
		return 0;
	state = VIOMMU_LOAD(&e->state);
	dslot = VIOMMU_LOAD(&e->domain_slot);
	root = VIOMMU_LOAD(&e->root);
	VIOMMU_FENCE_ACQ();
	if (VIOMMU_LOAD(&e->seq) != s1)
		return 0;
	if (state != VIOMMU_EP_ATTACHED) {
		lk->result = state == VIOMMU_EP_BYPASS || state == VIOMMU_EP_IDENTITY ?
				     VIOMMU_XLATE_IDENTITY : VIOMMU_XLATE_FAULT;
		lk->reason = state == VIOMMU_EP_BLOCKED ? VIOMMU_FAULT_R_DOMAIN : VIOMMU_FAULT_R_UNKNOWN;
		return 1;
	}

	/* Hash: (domain, 2 MiB region) -> the level-4 slot (a leaf or a whole piece), skipping four
	 * levels (I6). A leaf's PTE is then the only line this lookup has to itself. */
	key = VIOMMU_HASH_KEY(dslot, iova);
	hf = viommu_hash_find(VIOMMU_CTX_ARG, key, &slot);
	if (hf < 0)
		return 0;
	if (hf) {
		found = viommu_read_word(VIOMMU_CTX_ARG, slot, dslot, iova, want, lk);
	} else {
		/* In neither bucket: not mapped, unless the domain has mappings the hash does not
		 * index (the root says so), and then the walk decides (I6). */
		__s64 rf = viommu_root_flags(VIOMMU_CTX_ARG, root, dslot);

		if (rf < 0)
			return 0;
		if (!(rf & VIOMMU_ROOT_F_WALK))
			found = 2;
	}
	if (found)
		VIOMMU_STAT(hash_hits);

	/* Radix walk from the domain's root: interior levels 0-4, then the leaf. */
	if (!found) {
		__u32 idx = root, gen = ~0u;

		VIOMMU_STAT(walks);
		VIOMMU_UNROLL
		for (level = 0; level < VIOMMU_RADIX_LEVELS - 1; level++) {
			__u64 ent;

			if (!viommu_read_node(VIOMMU_CTX_ARG, idx, gen, dslot, level, iova, &ent))
				return 0;
			if (VIOMMU_SLOT_TAG(ent) == VIOMMU_SLOT_NODE) {
				idx = VIOMMU_SLOT_IDX(ent);
				gen = VIOMMU_SLOT_GEN(ent);
				continue;
			}
			if (VIOMMU_SLOT_TAG(ent) == VIOMMU_SLOT_LEAF && level != VIOMMU_RADIX_LEVELS - 2)
				return 0; /* leaves hang off level 4 only: impossible unless racing */
			found = viommu_read_word(VIOMMU_CTX_ARG, ent, dslot, iova, want, lk);
			if (!found)
				return 0;
			break;
		}
		if (!found)
			return 0; /* a node slot at level 4: impossible unless racing */
	}

	/* The endpoint still pointed at this domain when the answer was valid (I4). */
	VIOMMU_FENCE_ACQ();
	if (VIOMMU_LOAD(&e->seq) != s1)
		return 0;
	lk->ep_idx = (__u32)ei;
	lk->ep_seq = s1;
	if (found == 2) {
		lk->result = VIOMMU_XLATE_FAULT;
		lk->reason = VIOMMU_FAULT_R_MAPPING;
	} else {
		lk->result = VIOMMU_XLATE_HIT;
	}
	return 1;
}

/*
 * The common case in few instructions: a dense endpoint attached to a domain, an IOVA whose
 * region the hash names a leaf (or a whole piece) for. 1: a validated hit, @lk filled with the
 * page (as viommu_read_leaf() without @want) or the whole extent (a piece larger than a page);
 * 2: a validated miss (the region's live leaf has no present PTE for the page, or its lone
 * page's value names another page, or the hash indexes all of the domain and not it); 0: anything
 * else, raced included, and the caller takes the general path (viommu_lookup_byte), which
 * answers every case. The checks are joined with
 * `|` so that they cost one predictable branch, not one each: the fewer instructions and
 * branches a lookup has, the more lookups the CPU keeps in flight, and so the more of their
 * cache misses overlap (the flat table's advantage).
 */
VIOMMU_INLINE int viommu_lookup_fast(VIOMMU_CTX_PARAM, __u32 ep, __u64 iova, struct viommu_lk *lk)
{
	const struct viommu_ep_entry *e;
	const struct viommu_leaf *f;
	const struct viommu_ptes *pt;
	__u64 key, slot = 0, pte;
	__u64 s1;
	__u32 dslot, root, s, si;
	__s64 rf;
	int hf;

	if (ep >= VIOMMU_EP_DENSE)
		return 0;
	e = viommu_acc_ep(VIOMMU_CTX_ARG, ep);
	if (!e)
		return 0;
	s1 = VIOMMU_LOAD_ACQ(&e->seq); /* pairs with the writer's release of the entry (W3) */
	dslot = VIOMMU_LOAD(&e->domain_slot);
	root = VIOMMU_LOAD(&e->root);
	if ((int)(s1 & 1) | (int)(VIOMMU_LOAD(&e->state) != VIOMMU_EP_ATTACHED))
		return 0;
	si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova);
	/* The domain's window first (I13). */
	switch (viommu_window_pte(VIOMMU_CTX_ARG, e, s1, dslot, iova, &pte, &s)) {
	case 1:
		lk->idx = s;
		lk->gen = 0;
		goto page;
	case 2:
		lk->result = VIOMMU_XLATE_FAULT;
		lk->reason = VIOMMU_FAULT_R_MAPPING;
		return 2;
	case VIOMMU_WIN_PIECE: /* a published 2 MiB piece, its entry read with the seq unchanged */
		slot = pte;
		goto direct;
	case VIOMMU_WIN_OUT:
		break;
	default:
		return 0; /* raced, or a larger piece may hold it: the general path */
	}
	key = VIOMMU_HASH_KEY(dslot, iova);
	hf = viommu_hash_find(VIOMMU_CTX_ARG, key, &slot);
	if (hf < 0)
		return 0;
	if (!hf) {
		/* In neither bucket, and the hash indexes all the domain has: a miss (I6). */
		rf = viommu_root_flags(VIOMMU_CTX_ARG, root, dslot);
		if (rf < 0 || (rf & VIOMMU_ROOT_F_WALK))
			return 0;
		VIOMMU_FENCE_ACQ();
		if (VIOMMU_LOAD(&e->seq) != s1) /* I4 */
			return 0;
		lk->result = VIOMMU_XLATE_FAULT;
		lk->reason = VIOMMU_FAULT_R_MAPPING;
		return 2;
	}
	if (VIOMMU_SLOT_TAG(slot) == VIOMMU_HASH_DIRECT) { /* a 2 MiB piece or a lone page: the answer */
		VIOMMU_FENCE_ACQ();
		if (VIOMMU_LOAD(&e->seq) != s1) /* I4 */
			return 0;
direct:
		if (viommu_direct_lk(slot, iova, lk) == 2) {
			lk->result = VIOMMU_XLATE_FAULT;
			lk->reason = VIOMMU_FAULT_R_MAPPING;
			return 2;
		}
		lk->result = VIOMMU_XLATE_HIT;
		lk->reason = 0;
		lk->dslot = dslot;
		lk->ep_idx = ep;
		lk->ep_seq = s1;
		return 1;
	}
	if (VIOMMU_SLOT_TAG(slot) == VIOMMU_SLOT_EXTENT) { /* a 2 MiB (or larger) piece: its record */
		if (!viommu_read_extent(VIOMMU_CTX_ARG, VIOMMU_SLOT_IDX(slot), VIOMMU_SLOT_GEN(slot), dslot, iova, lk))
			return 0;
		VIOMMU_FENCE_ACQ();
		if (VIOMMU_LOAD(&e->seq) != s1) /* I4 */
			return 0;
		lk->result = VIOMMU_XLATE_HIT;
		lk->reason = 0;
		lk->ep_idx = ep;
		lk->ep_seq = s1;
		return 1;
	}
	if (VIOMMU_SLOT_TAG(slot) != VIOMMU_SLOT_LEAF)
		return 0;
	f = viommu_acc_leaf(VIOMMU_CTX_ARG, VIOMMU_SLOT_IDX(slot));
	pt = viommu_acc_ptes(VIOMMU_CTX_ARG, VIOMMU_SLOT_IDX(slot));
	if (!f || !pt)
		return 0;
	s = VIOMMU_LOAD_ACQ(&f->seq); /* pairs with the writer's release of seq (W1) */
	pte = VIOMMU_LOAD_ACQ(&pt->pte[si]); /* pairs with the release of the PTE (W2, W4) */
	if ((int)(s != VIOMMU_SLOT_GEN(slot)) | (int)(VIOMMU_LOAD(&f->domain_slot) != dslot) |
	    (int)(VIOMMU_LOAD(&f->base) != (iova & VIOMMU_COVER_MASK(VIOMMU_RADIX_LEVELS - 1))))
		return 0;
	VIOMMU_FENCE_ACQ(); /* the loads above before the re-checks (seqlock read sides) */
	if ((int)(VIOMMU_LOAD(&f->seq) != s) | (int)(VIOMMU_LOAD(&e->seq) != s1)) /* I4, I5 */
		return 0;
	if (!(pte & VIOMMU_PTE_PRESENT)) {
		lk->result = VIOMMU_XLATE_FAULT;
		lk->reason = VIOMMU_FAULT_R_MAPPING;
		return 2;
	}
	lk->idx = VIOMMU_SLOT_IDX(slot);
	lk->gen = s;
page:
	lk->result = VIOMMU_XLATE_HIT;
	lk->reason = 0;
	lk->ext_start = iova & ~((1ull << VIOMMU_PAGE_SHIFT) - 1);
	lk->ext_end = lk->ext_start + (1ull << VIOMMU_PAGE_SHIFT) - 1;
	lk->ext_phys = VIOMMU_PTE_PA(pte);
	lk->ext_flags = VIOMMU_PTE_FLAGS(pte);
	lk->whole = (__u8)((pte & VIOMMU_PTE_SOLO) >> 3); /* 2: a solo PTE, the whole extent */
	lk->direct = 0;
	lk->dslot = dslot;
	lk->ep_idx = ep;
	lk->ep_seq = s1;
	lk->pte = pte;
	return 1;
}

#ifndef VIOMMU_LOOKUP_FAST
#define VIOMMU_LOOKUP_FAST(ep, iova, lk) viommu_lookup_fast(VIOMMU_CTX_ARG, ep, iova, lk)
#endif
/* 0 when the includer tries viommu_lookup_fast() itself before viommu_translate() (the
 * userspace reader's walk, user/reader.c), so that a query it declined is not tried twice. */
#ifndef VIOMMU_TRANSLATE_SHORT_PATH
#define VIOMMU_TRANSLATE_SHORT_PATH 1
#endif

/* Translate byte @iova with bounded retries. */
VIOMMU_INLINE void viommu_lookup_byte(VIOMMU_CTX_PARAM, __u32 ep, __u64 iova, int want,
				       struct viommu_lk *lk)
{
	int i;

	VIOMMU_UNROLL
	for (i = 0; i < VIOMMU_RETRIES; i++) {
		VIOMMU_OPAQUE(iova);
		if (viommu_lookup_once(VIOMMU_CTX_ARG, ep, iova, want, lk))
			return;
		VIOMMU_STAT(retries);
	}
	lk->result = VIOMMU_XLATE_RETRY;
}

/*
 * Translate [q->iova, q->iova + size - 1] for q->access: every byte mapped with that access,
 * possibly by adjacent extents. The answer carries the extent holding q->iova; @first (may be
 * NULL) gets the validated lookup of q->iova when the answer is a HIT or MORE. After
 * VIOMMU_SPAN_MAX extents, all mapped with the access, the answer is VIOMMU_XLATE_MORE with the
 * first unchecked byte in a->next (continue with viommu_query_continue / viommu_answer_fold).
 * Each extent is validated on its own (as a range query always was): a multi-extent answer is
 * not one snapshot, each extent was mapped at some instant during the lookup.
 */
VIOMMU_INLINE void viommu_translate(VIOMMU_CTX_PARAM, const struct viommu_query *q,
				    struct viommu_answer *a, struct viommu_lk *first)
{
	struct viommu_lk lk;
	__u64 last = q->iova + (q->size ? q->size - 1 : 0), cur = q->iova;
	__u32 acc = q->access & ~VIOMMU_QUERY_F_EXTENT;
	int i, want = (q->access & VIOMMU_QUERY_F_EXTENT) != 0;

	a->pa = 0; /* every outcome defines every field a caller reads */
	a->fault_addr = 0;
	a->reason = 0;
	a->next = 0;
	if (last < q->iova)
		last = ~0ull;
	VIOMMU_STAT(lookups);
	/* A query within one page that does not ask for the whole extent: the short path first.
	 * (Not one that runs past 2^64, whose `last` was clamped above: q->iova's page then
	 * holds its last existing byte, but the DMA faults.) */
	if (VIOMMU_TRANSLATE_SHORT_PATH && !want && !((q->iova ^ last) >> VIOMMU_PAGE_SHIFT) &&
	    q->iova + (q->size ? q->size - 1 : 0) >= q->iova &&
	    (i = VIOMMU_LOOKUP_FAST(q->endpoint, q->iova, &lk)) != 0 &&
	    (i == 2 || (lk.ext_flags & acc) == acc)) {
		VIOMMU_STAT(hash_hits);
		if (i == 2) {
			a->result = VIOMMU_XLATE_FAULT;
			a->reason = VIOMMU_FAULT_R_MAPPING;
			a->fault_addr = q->iova;
			return;
		}
		VIOMMU_STAT(hits);
		if (first)
			*first = lk;
		a->result = VIOMMU_XLATE_HIT;
		a->pa = lk.ext_phys + (q->iova - lk.ext_start);
		a->ext_start = lk.ext_start;
		a->ext_end = lk.ext_end;
		a->ext_phys = lk.ext_phys;
		a->ext_flags = lk.ext_flags;
		return;
	}
	VIOMMU_UNROLL
	for (i = 0; i < VIOMMU_SPAN_MAX; i++) {
		/* A range past its first page walks whole extents: a page per step would be slower. */
		VIOMMU_LOOKUP_BYTE(q->endpoint, cur, want | (((cur ^ last) >> VIOMMU_PAGE_SHIFT) != 0), &lk);
		if (lk.result == VIOMMU_XLATE_HIT && (lk.ext_flags & acc) != acc) {
			lk.result = VIOMMU_XLATE_FAULT;
			lk.reason = VIOMMU_FAULT_R_MAPPING;
		}
		if (lk.result != VIOMMU_XLATE_HIT) {
			if (i > 0 && lk.result == VIOMMU_XLATE_IDENTITY) /* state changed mid-range */
				lk.result = VIOMMU_XLATE_RETRY;
			a->result = lk.result;
			a->reason = lk.reason;
			a->pa = lk.result == VIOMMU_XLATE_IDENTITY ? q->iova : 0;
			a->fault_addr = cur;
			if (lk.result == VIOMMU_XLATE_IDENTITY)
				VIOMMU_STAT(identity);
			return;
		}
		if (i == 0) {
			if (first)
				*first = lk;
			a->pa = lk.ext_phys + (q->iova - lk.ext_start);
			a->ext_start = lk.ext_start;
			a->ext_end = lk.ext_end;
			a->ext_phys = lk.ext_phys;
			a->ext_flags = lk.ext_flags;
		}
		if (lk.ext_end >= last) {
			if (q->iova + (q->size ? q->size - 1 : 0) < q->iova) {
				/* The range runs past 2^64: every byte that exists is mapped, so the
				 * DMA as a whole is at fault; report its first byte (not byte 0, which
				 * it never touched). */
				a->result = VIOMMU_XLATE_FAULT;
				a->reason = VIOMMU_FAULT_R_MAPPING;
				a->fault_addr = q->iova;
				return;
			}
			a->result = VIOMMU_XLATE_HIT;
			VIOMMU_STAT(hits);
			return;
		}
		cur = lk.ext_end + 1;
	}
	/* VIOMMU_SPAN_MAX extents checked, each ending before `last`: cur <= last. */
	a->result = VIOMMU_XLATE_MORE;
	a->next = cur;
}

/*
 * The query that checks what a MORE answer @a to @q left: [a->next, the last byte of @q]. A
 * range that runs past 2^64 is continued only up to the top of the space; viommu_answer_fold()
 * then faults the whole DMA at its first byte, as viommu_translate() and the store do.
 */
VIOMMU_INLINE void viommu_query_continue(const struct viommu_query *q, const struct viommu_answer *a,
					 struct viommu_query *c)
{
	__u64 last = q->iova + (q->size ? q->size - 1 : 0);

	if (last < q->iova)
		last = ~0ull;
	c->endpoint = q->endpoint;
	c->access = q->access;
	c->iova = a->next;
	c->size = last - a->next + 1; /* a->next > q->iova >= 0, so this is at most 2^64 - 1 */
}

/*
 * Fold the answer @c to viommu_query_continue(@q, @a) into @a, the MORE answer to @q so far.
 * Returns 0 while @a is still MORE (ask again), 1 once it is final: HIT (pa and the extent are
 * still those of q->iova), FAULT at the first byte that is not mapped with the access, or RETRY
 * when the continuation raced with the writer (an endpoint that translated through a domain
 * for the first part and is in identity now has been changed by the writer).
 */
VIOMMU_INLINE int viommu_answer_fold(const struct viommu_query *q, struct viommu_answer *a,
				     const struct viommu_answer *c)
{
	a->next = 0;
	switch (c->result) {
	case VIOMMU_XLATE_MORE:
		a->next = c->next;
		return 0;
	case VIOMMU_XLATE_HIT:
		if (q->iova + (q->size ? q->size - 1 : 0) < q->iova) {
			/* every byte up to the top is mapped; the DMA runs past 2^64 */
			a->result = VIOMMU_XLATE_FAULT;
			a->reason = VIOMMU_FAULT_R_MAPPING;
			a->fault_addr = q->iova;
			a->pa = 0;
		} else {
			a->result = VIOMMU_XLATE_HIT;
		}
		return 1;
	case VIOMMU_XLATE_FAULT:
		a->result = VIOMMU_XLATE_FAULT;
		a->reason = c->reason;
		a->fault_addr = c->fault_addr;
		a->pa = 0;
		return 1;
	default: /* IDENTITY (the endpoint changed mid-range) or RETRY */
		a->result = VIOMMU_XLATE_RETRY;
		a->pa = 0;
		return 1;
	}
}

#endif
