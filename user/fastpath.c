// SPDX-License-Identifier: MIT
/*
 * The fast path's writer: mirrors the device core into the shared memory (a memfd, and the
 * BPF maps once a BPF consumer asks for them).
 *
 * Runs only on the device thread (one writer). Every store a reader may race with is a C11 atomic;
 * the comment at each release store names the acquire it pairs with in bpf/viommu_lookup.h.
 * Protocol and invariants: docs/concurrency.md (W1..W5 writer steps, I1..I11 invariants).
 */
#define _GNU_SOURCE
#include "fastpath.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fastpath_int.h"
#include "reader.h"
#include "stat.h"
#include "xlate.skel.h"

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int membarrier(int cmd)
{
	return (int)syscall(__NR_membarrier, cmd, 0, 0);
}

/* ---- allocation: nodes and extent records (seq odd = free, I1) ---- */

static int node_alloc(struct viommu_fastpath *fp, int level, uint32_t dslot, uint64_t base,
		      uint32_t *idx, uint32_t *gen)
{
	struct viommu_node *n;
	uint32_t i, s;

	if (fp->node_free_n) {
		i = fp->node_free[--fp->node_free_n];
	} else if (fp->node_hwm < fp->nodes_max) {
		i = fp->node_hwm++;
		ST(&fp->nodes[i].seq, 1); /* first use: free (odd), as if freed before (I1) */
	} else {
		return -ENOMEM;
	}
	n = &fp->nodes[i];
	s = LD(&n->seq); /* odd: free; every slot empty (I2) */
	/* Release: the node may be a reused one that a reader still reads under its old
	 * generation; each identity store orders node_free()'s odd seq before it, so a reader
	 * whose (acquire) load sees the new identity fails its re-check of seq (I1, I5). Free on
	 * x86-64; a release fence would do, but ThreadSanitizer does not model fences. */
	ST_REL(&n->level, (uint16_t)level);
	ST_REL(&n->domain_slot, dslot);
	ST_REL(&n->base, base);
	/* W1: header before the even seq; pairs with viommu_read_node()'s acquire of seq. */
	ST_REL(&n->seq, s + 1);
	fp->node_used[i] = 0;
	META_ADD(nodes_used, 1);
	*idx = i;
	*gen = s + 1;
	return 0;
}

static void node_free(struct viommu_fastpath *fp, uint32_t i)
{
	struct viommu_node *n = &fp->nodes[i];

	/* Kill: odd seq; a reader that read the even value fails its re-check (I1). */
	ST_REL(&n->seq, LD(&n->seq) + 1);
	fp->node_free[fp->node_free_n++] = i;
	META_ADD(nodes_used, -1);
}

/* Leaves as nodes: seq odd = free; a leaf is freed only with every PTE and ext[] entry 0 (I2). */
/* ---- windows (docs/design.md, "Windows"; I13) ---- */

/* The helpers of a one-page MAP or UNMAP (win_leaf, hash_leaf, lone_begin/lone_end, page_op)
 * are always inlined: GCC kept them out of line, and their calls were 60 of the ~390
 * instructions the fast path adds to a MAP+UNMAP pair (bench/icount 4k:1024 map_unmap). */

/* The leaf window region of @addr is in domain @dslot's window, or ~0u: not in one. */
static inline __attribute__((always_inline)) uint32_t win_leaf(const struct viommu_fastpath *fp, uint32_t dslot,
							       uint64_t addr)
{
	uint32_t w = fp->dom_win[dslot];
	uint64_t r;

	if (!w)
		return ~0u;
	r = (addr - (LD(&fp->wins[dslot].base) & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT;
	return r < fp->win_regions ? fp->leaves_pool + (w - 1) * fp->win_regions + (uint32_t)r : ~0u;
}

/* Does the piece [addr, addr + size) overlap domain @dslot's window? */
static bool win_overlaps(const struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, uint64_t size)
{
	uint64_t b = LD(&fp->wins[dslot].base) & ~VIOMMU_WIN_F_MASK;
	uint64_t e = b + ((uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT) - 1;

	return fp->dom_win[dslot] && addr <= e && addr + (size - 1) >= b;
}

/* The 2 MiB piece at @addr is installed or going (@v VIOMMU_PIECE_BUSY), published (@v its
 * direct value: its record is live) or gone (@v 0, its slot cleared): its piece window entry
 * says so (I13). Release: pairs with the reader's acquire of the entry. An entry that already
 * says it is not stored (a rollback's 0 would allocate a memfd page for nothing). */
static void piece_win_set(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, uint64_t v)
{
	__u64 *p = fp_piece_word(fp, dslot, addr);

	if (p && LD(p) != v)
		ST_REL(p, v);
}

/* The window entry's flags from the writer's counts, with its base (release). When the window
 * gains its first piece (neither flag set before), then the seq of every endpoint entry attached
 * to the domain moves on (release, after the flags): a reader's copy of the window made while
 * no piece was there reads a window page's PTE first and takes a PTE not present for a miss
 * with no word read, which holds only while its entry's seq says no piece came since (I13).
 * The flags are set before the piece's slot store (win_wide_add(), win_pieces_add()), so
 * before anything can reach it. */
static void win_flags_store(struct viommu_fastpath *fp, uint32_t dslot)
{
	const uint64_t f = VIOMMU_WIN_F_WIDE | VIOMMU_WIN_F_PIECES, old = LD(&fp->wins[dslot].base);
	const uint64_t now = (fp->dom_wide[dslot] ? VIOMMU_WIN_F_WIDE : 0) |
			     (fp->dom_wpieces[dslot] ? VIOMMU_WIN_F_PIECES : 0);

	ST_REL(&fp->wins[dslot].base, (old & ~VIOMMU_WIN_F_MASK) | now);
	if (!(old & f) && now)
		for (uint32_t i = fp->dom_ep1[dslot], n = 0; i && n < VIOMMU_EP_ENTRIES; i = fp->ep_dnext[i - 1], n++)
			ST_REL(&fp->eps[i - 1].seq, LD(&fp->eps[i - 1].seq) + 2); /* W3, no field changed */
}

/* A piece of 1 GiB or more over the window came (@d = 1) or went (-1): VIOMMU_WIN_F_WIDE is
 * set before the first can be reached (before its slot store) and cleared after the last is
 * gone, so a PTE not present in the window is a miss only while no such piece is there (I13).
 * Release: pairs with the reader's acquire of base. */
static void win_wide_add(struct viommu_fastpath *fp, uint32_t dslot, int d)
{
	uint32_t before = fp->dom_wide[dslot];

	fp->dom_wide[dslot] += (uint32_t)d;
	if (!before != !fp->dom_wide[dslot])
		win_flags_store(fp, dslot);
}

/* A 2 MiB piece at @addr is about to be installed (@d = 1: before its slot store) or is gone
 * (-1: after its slot is empty, or its install failed): inside the window, VIOMMU_WIN_F_PIECES
 * says whether any is there (I13), as VIOMMU_WIN_F_WIDE does for larger ones. */
static void win_pieces_add(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, int d)
{
	uint32_t before = fp->dom_wpieces[dslot];

	if (win_leaf(fp, dslot, addr) == ~0u)
		return;
	fp->dom_wpieces[dslot] += (uint32_t)d;
	if (!before != !fp->dom_wpieces[dslot])
		win_flags_store(fp, dslot);
}

/* The piece [addr, addr + size) of 1 GiB or more over domain @dslot's window came or goes: the
 * piece window word of every region of the window it covers is @v, VIOMMU_PIECE_BUSY before
 * its slot store (with the flag, win_wide_add()), 0 after the slot is empty (I13). A copy of
 * the window then tells a miss from the word and the PTE alone: a word 0 says no piece of any
 * size holds the region. At most win_regions words; no other piece shares them while it lives
 * (the device core prevents overlaps). */
static void win_wide_mark(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, uint64_t size, uint64_t v)
{
	const uint64_t b = LD(&fp->wins[dslot].base) & ~VIOMMU_WIN_F_MASK;
	const uint64_t e = b + ((uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT) - 1, last = addr + (size - 1);

	for (uint64_t a = addr > b ? addr : b; a <= (last < e ? last : e) && a >= b; a += 1ull << VIOMMU_HASH_SHIFT)
		piece_win_set(fp, dslot, a, v);
}

/* Give domain @dslot a window, placed over @addr (the aligned block of the window's size that
 * holds it), if one is free. Before the domain's first mapping: every piece it ever has is then
 * installed with the window in place (1 GiB pieces counted in its flag, 2 MiB ones with their
 * piece window words), so removal finds what installation made. */
static void win_place(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr)
{
	uint64_t span = (uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT;
	struct viommu_window *w = &fp->wins[dslot];
	uint32_t n;

	if (fp->win_free_n)
		n = fp->win_free[--fp->win_free_n];
	else if (fp->win_hwm < fp->windows_max)
		n = fp->win_hwm++;
	else
		return;
	fp->dom_win[dslot] = n + 1;
	fp->dom_wide[dslot] = fp->dom_wpieces[dslot] = 0;
	/* The leaf index and base before regions (release): a reader that sees regions sees
	 * them (pairs with the acquire of regions in viommu_window_pte()); the same for the piece
	 * window, its every entry 0 (its last owner's pieces all went before it was released). */
	ST(&w->pbase, addr & ~(((uint64_t)fp->piece_regions << VIOMMU_HASH_SHIFT) - 1));
	ST(&w->pfirst, n * fp->piece_regions);
	ST_REL(&w->pregions, fp->piece_regions);
	ST(&w->leaf, fp->leaves_pool + n * fp->win_regions);
	ST(&w->base, addr & ~(span - 1));
	ST_REL(&w->regions, fp->win_regions);
	META_ADD(windows_used, 1);
}

/* The domain is gone: its endpoints left it first (their entries changed, I4), and every
 * mapping went with it, so every leaf of the window is dead with no PTE (I2). */
static void win_release(struct viommu_fastpath *fp, uint32_t dslot)
{
	struct viommu_window *w = &fp->wins[dslot];

	if (!fp->dom_win[dslot])
		return;
	ST_REL(&w->regions, 0u);
	ST(&w->base, 0ull);
	ST(&w->leaf, 0u);
	ST_REL(&w->pregions, 0u);
	ST(&w->pbase, 0ull);
	ST(&w->pfirst, 0u);
	fp->win_free[fp->win_free_n++] = fp->dom_win[dslot] - 1;
	fp->dom_win[dslot] = 0;
	fp->dom_wide[dslot] = fp->dom_wpieces[dslot] = 0;
	META_ADD(windows_used, -1);
}

static int leaf_alloc(struct viommu_fastpath *fp, uint32_t dslot, uint64_t base, uint32_t *idx,
		      uint32_t *gen)
{
	struct viommu_leaf *f;
	uint32_t i, s;

	if ((i = win_leaf(fp, dslot, base)) != ~0u) {
		/* The window's leaf for this region, kept for it (I13): seq 0 = never used. */
		if (!(LD(&fp->leaves[i].seq) & 1))
			ST(&fp->leaves[i].seq, 1);
		fp->win_live[i - fp->leaves_pool] = 1;
	} else if (fp->leaf_free_n) {
		i = fp->leaf_free[--fp->leaf_free_n];
	} else if (fp->leaf_hwm < fp->leaves_pool) {
		i = fp->leaf_hwm++;
		ST(&fp->leaves[i].seq, 1); /* first use: free (odd), as if freed before (I1) */
	} else {
		return -ENOMEM;
	}
	f = &fp->leaves[i];
	s = LD(&f->seq);
	/* Release, as in node_alloc(): a reader of the leaf's previous life fails its re-check. */
	ST_REL(&f->domain_slot, dslot);
	ST_REL(&f->base, base);
	ST_REL(&f->seq, s + 1); /* W1; pairs with viommu_read_leaf()'s acquire of seq */
	fp->leaf_used[i] = 0;
	META_ADD(leaves_used, 1);
	*idx = i;
	*gen = s + 1;
	return 0;
}

static void churn_count(struct viommu_fastpath *fp);

static void leaf_free(struct viommu_fastpath *fp, uint32_t i)
{
	ST_REL(&fp->leaves[i].seq, LD(&fp->leaves[i].seq) + 1); /* dead (I1) */
	/* A reader TLB entry of a page is vouched for by its PTE: a freed leaf may come back with
	 * the same PTE at the same place for another region, so every leaf free drops every such
	 * entry (I10). AFTER the odd seq: a walk that loads the bumped value (acquire, before it
	 * reads anything) finds the leaf dead, and an entry filled under the older value dies
	 * here. Bumped before the kill, a walk could load the new value, still read the live leaf
	 * and fill an entry no later bump drops. Release: before any later store to the leaf. */
	/* A window's leaf comes back only for the same region of the same domain (I13): the same
	 * PTE at the same place is then the same translation, so its free drops nothing. (The
	 * readers' copies of windows check only their endpoint entry's 64-bit seq, ABI v12.) */
	if (i >= fp->leaves_pool) {
		fp->win_live[i - fp->leaves_pool] = 0; /* stays its window's, dead */
	} else {
		ST_REL(&fp->meta->wraps, LD(&fp->meta->wraps) + 1);
		fp->leaf_free[fp->leaf_free_n++] = i;
	}
	META_ADD(leaves_used, -1);
}

static int ext_alloc(struct viommu_fastpath *fp, uint32_t dslot, const struct viommu_extent *x,
		     uint32_t *idx, uint32_t *gen)
{
	struct viommu_extent_rec *r;
	uint32_t i, s;

	if (fp->ext_free_n) {
		i = fp->ext_free[--fp->ext_free_n];
	} else if (fp->ext_hwm < fp->extents_max) {
		i = fp->ext_hwm++;
		ST(&fp->exts[i].seq, 1); /* first use: free (odd), as if freed before (I1) */
	} else {
		return -ENOMEM;
	}
	r = &fp->exts[i];
	s = LD(&r->seq);
	/* Release, as in node_alloc(): a reader still validating the record's previous generation
	 * must not see the new fields with the old seq (I1, I3). */
	ST_REL(&r->domain_slot, (uint16_t)dslot);
	ST_REL(&r->start, x->start);
	ST_REL(&r->end, x->end);
	ST_REL(&r->phys, x->phys);
	ST_REL(&r->flags, (uint16_t)x->flags);
	/* The seq stays odd (not live) until ext_publish(): slot words naming generation s + 1
	 * can be installed first, and a reader that meets one fails validation (retries) until
	 * the whole extent is in. A MAP refused halfway is never seen (W2). */
	META_ADD(extents_used, 1);
	*idx = i;
	*gen = s + 1;
	return 0;
}

/* A record freed: every 2^30 of them, bump meta.wraps (I10). Release: ordered before the seq
 * store that follows, so a reader that sees that seq sees the bump. (Endpoint entries count
 * nothing since ABI v12: their seq is 64-bit.) */
static void churn_count(struct viommu_fastpath *fp)
{
	if ((++fp->churn & ((1ull << 30) - 1)) == 0)
		ST_REL(&fp->meta->wraps, LD(&fp->meta->wraps) + 1);
}

/* W2: every piece is installed; make the record live. Release: the fields (ext_alloc) and
 * the pieces before the even seq; pairs with viommu_read_extent()'s acquire of seq. */
static void ext_publish(struct viommu_fastpath *fp, uint32_t i, uint32_t gen)
{
	ST_REL(&fp->exts[i].seq, gen);
}

/* A record that never went live goes back to the pool; its seq moves on by 2 (still odd), so
 * the generation the failed MAP's slot words named is never handed out again. */
static void ext_abort(struct viommu_fastpath *fp, uint32_t i)
{
	struct viommu_extent_rec *r = &fp->exts[i];

	churn_count(fp);
	ST_REL(&r->seq, LD(&r->seq) + 2);
	fp->ext_free[fp->ext_free_n++] = i;
	META_ADD(extents_used, -1);
}

static void ext_free(struct viommu_fastpath *fp, uint32_t i)
{
	struct viommu_extent_rec *r = &fp->exts[i];

	churn_count(fp);
	ST_REL(&r->seq, LD(&r->seq) + 1); /* dead: no reader validates it from now on (I3) */
	fp->ext_free[fp->ext_free_n++] = i;
	META_ADD(extents_used, -1);
}

/* ---- the hash: (domain slot, 2 MiB region) -> level-4 slot content ---- */

/* A domain's count of mappings the hash does not index went up (@d = 1) or down (-1): its root
 * says so before the first such mapping can be reached and after the last is gone (I6). Release:
 * pairs with the reader's acquire of the flags; set before the slot store that needs it. */
static void dom_walk_add(struct viommu_fastpath *fp, uint32_t dslot, int d)
{
	uint32_t before = fp->dom_walk[dslot];

	fp->dom_walk[dslot] += (uint32_t)d;
	if (!before != !fp->dom_walk[dslot])
		ST_REL(&fp->nodes[fp->dom_root[dslot]].flags, fp->dom_walk[dslot] ? VIOMMU_ROOT_F_WALK : 0u);
}

/* Where @key is (its first or second bucket, I6): its bucket, and the way in *w; or NULL. */
static struct viommu_hash_bucket *hash_find(struct viommu_fastpath *fp, uint64_t key, int *w)
{
	struct viommu_hash_bucket *b[2] = { &fp->buckets[viommu_hash_index(key, fp->view.hash_mask)],
					    &fp->buckets[viommu_hash_alt(key, fp->view.hash_mask)] };

	for (int i = 0; i < 2; i++)
		for (*w = 0; *w < VIOMMU_HASH_WAYS; (*w)++)
			if (LD(&b[i]->key[*w]) == key)
				return b[i];
	return NULL;
}

static void hash_set(struct viommu_fastpath *fp, uint32_t dslot, uint64_t iova, uint64_t word)
{
	uint64_t key = VIOMMU_HASH_KEY(dslot, iova);
	int w;
	struct viommu_hash_bucket *hb = hash_find(fp, key, &w);

	if (hb) {
		ST_REL(&hb->val[w], word); /* pairs with the reader's acquire of val */
		return;
	}
	/* A new key: a free way of its first bucket, else of its second (two-choice hashing). */
	for (int i = 0; i < 2; i++) {
		struct viommu_hash_bucket *b =
			&fp->buckets[i ? viommu_hash_alt(key, fp->view.hash_mask) : viommu_hash_index(key, fp->view.hash_mask)];

		for (int w = 0; w < VIOMMU_HASH_WAYS; w++)
			if (LD(&b->key[w]) == 0) {
				/* Release: after the seq a removal in this way left even (hash_del), for a
				 * reader that reads this value, without leaning on release sequences. */
				ST_REL(&b->val[w], word);
				ST_REL(&b->key[w], key); /* val before key; pairs with the acquire of key */
				META_ADD(hash_used, 1);
				return;
			}
	}
	fp->hash_full++; /* not indexed: readers walk the radix for this region (I6) */
	/* Before any of the region's pages can be present (PIECE_PUBLISH, after this). */
	dom_walk_add(fp, dslot, 1);
}

static void hash_del(struct viommu_fastpath *fp, uint32_t dslot, uint64_t iova)
{
	int w;
	struct viommu_hash_bucket *b = hash_find(fp, VIOMMU_HASH_KEY(dslot, iova), &w);

	if (!b) {
		dom_walk_add(fp, dslot, -1); /* it was left out of full buckets (hash_set) */
		return;
	}
	/* The bucket's seq odd while the key leaves (relaxed; the release stores after it order
	 * it first), even again after (release): a reader that read the bucket on either side of
	 * this, or saw any of it, sees the seq move (I6). */
	ST(&b->seq, LD(&b->seq) + 1);
	ST_REL(&b->key[w], 0);
	ST_REL(&b->val[w], 0);
	ST_REL(&b->seq, LD(&b->seq) + 1);
	META_ADD(hash_used, -1);
}

/* The published 2 MiB piece at @iova: its hash value (the slot word naming its live record)
 * becomes the piece's translation (a direct value). Release: pairs with the reader's acquire
 * of the value; the record went live before. A key left out of full buckets: nothing. */
static void hash_direct(struct viommu_fastpath *fp, uint32_t dslot, uint64_t iova)
{
	int w;
	struct viommu_hash_bucket *b = hash_find(fp, VIOMMU_HASH_KEY(dslot, iova), &w);
	const struct viommu_extent_rec *x;
	uint64_t v;

	if (!b)
		return;
	v = LD(&b->val[w]);
	if (VIOMMU_SLOT_TAG(v) != VIOMMU_SLOT_EXTENT)
		return;
	x = &fp->exts[VIOMMU_SLOT_IDX(v)];
	ST_REL(&b->val[w], VIOMMU_HASH_DIRECT_MAKE(LD(&x->phys) + (iova - LD(&x->start)), LD(&x->flags)));
}

/* Write slot @si of node @idx (level @level), keeping the hash in step for level-4 slots. */
static uint64_t slot_write(struct viommu_fastpath *fp, uint32_t idx, int level, uint64_t iova,
			   uint32_t dslot, uint64_t word)
{
	struct viommu_node *n = &fp->nodes[idx];
	uint32_t si = VIOMMU_SLOT_OF(level, iova);
	uint64_t old = LD(&n->slot[si]);

	/* A piece above level 4 is not in the hash: the root says so first (I6). */
	if (level < VIOMMU_HASH_LEVEL && VIOMMU_SLOT_TAG(word) == VIOMMU_SLOT_EXTENT && !old)
		dom_walk_add(fp, dslot, 1);
	/* W4: the target (node or extent) is live before the slot names it; pairs with the
	 * reader's acquire load of the slot. */
	ST_REL(&n->slot[si], word);
	if (level < VIOMMU_HASH_LEVEL && VIOMMU_SLOT_TAG(old) == VIOMMU_SLOT_EXTENT && !word)
		dom_walk_add(fp, dslot, -1);
	if (!old && word)
		fp->node_used[idx]++;
	else if (old && !word)
		fp->node_used[idx]--;
	if (level == VIOMMU_HASH_LEVEL) {
		if (word)
			hash_set(fp, dslot, iova, word);
		else
			hash_del(fp, dslot, iova);
	}
	return old;
}

/* ---- extents <-> radix pieces ---- */

/* The largest block that starts at @addr and ends at or before @end: its level. */
static int piece_level(uint64_t addr, uint64_t end)
{
	for (int l = 0; l < VIOMMU_RADIX_LEVELS; l++) {
		uint64_t size = 1ull << VIOMMU_LEVEL_SHIFT(l);

		if (!(addr & (size - 1)) && end - addr >= size - 1)
			return l;
	}
	return -1;
}

/* Free the nodes of @path (deepest first, from level @l; path[5] is a leaf) left with no slot
 * in use, unlinking each from its parent first: new readers no longer reach it, old ones fail
 * validation (I2). */
static void path_prune(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr,
		       const uint32_t *path, int l)
{
	if (l == VIOMMU_RADIX_LEVELS - 1) {
		if (fp->leaf_used[path[l]])
			return;
		slot_write(fp, path[l - 1], l - 1, addr, dslot, 0);
		leaf_free(fp, path[l]);
		l--;
	}
	for (; l > 0 && fp->node_used[path[l]] == 0; l--) {
		slot_write(fp, path[l - 1], l - 1, addr, dslot, 0);
		node_free(fp, path[l]);
	}
}

/* The leaf holding @addr's page, through the hash (the writer's own shortcut: the hash holds
 * each level-4 slot's word or nothing, I6). 1 and @idx, or 0: walk instead. */
static inline __attribute__((always_inline)) int hash_leaf(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr,
							   uint32_t *idx)
{
	int w;
	struct viommu_hash_bucket *b;
	uint64_t v;
	uint32_t wl = win_leaf(fp, dslot, addr);

	if (wl != ~0u) { /* in the window: the region's leaf is known without a probe */
		if (!fp->win_live[wl - fp->leaves_pool])
			return 0;
		*idx = wl;
		return 1;
	}
	b = hash_find(fp, VIOMMU_HASH_KEY(dslot, addr), &w);
	if (!b)
		return 0;
	v = LD(&b->val[w]);
	if (VIOMMU_SLOT_TAG(v) != VIOMMU_SLOT_LEAF)
		return 0;
	*idx = VIOMMU_SLOT_IDX(v);
	return 1;
}

/* ---- lone pages (I6) ---- */

/* Before another page of the region of @addr goes into its leaf @li, and before the one page's
 * PTE is cleared: the region's value, if it is that page's direct value (VIOMMU_HASH_LONE),
 * back to the leaf's word (release: pairs with the reader's acquire of the value). Only a
 * leaf outside the windows holding one page can have one. */
static inline __attribute__((always_inline)) void lone_end(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr,
							   uint32_t li)
{
	struct viommu_hash_bucket *b;
	int w;

	if (li >= fp->leaves_pool || fp->leaf_used[li] != 1)
		return;
	b = hash_find(fp, VIOMMU_HASH_KEY(dslot, addr), &w);
	if (b && (LD(&b->val[w]) & (VIOMMU_HASH_LONE | 3ull)) == (VIOMMU_HASH_LONE | VIOMMU_HASH_DIRECT))
		ST_REL(&b->val[w], VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, li, LD(&fp->leaves[li].seq)));
}

/* The page of @addr just went into leaf @li, outside the windows, as its one page and a whole
 * one-page mapping (its PTE, present, is solo): the region's value in the hash becomes the
 * page's translation, so that a lookup reads the bucket and nothing after it (release, after
 * the PTE's). A PA of 2^52 or more does not fit: the leaf's word stays. */
static inline __attribute__((always_inline)) void lone_begin(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr,
							     uint32_t li)
{
	struct viommu_hash_bucket *b;
	uint64_t pte;
	int w;

	if (li >= fp->leaves_pool || fp->leaf_used[li] != 1)
		return;
	pte = LD(&fp->ptes[li].pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, addr)]);
	if (!(pte & VIOMMU_PTE_SOLO) || !(pte & VIOMMU_PTE_PRESENT) || (VIOMMU_PTE_PA(pte) & ~VIOMMU_HASH_LONE_PA_MASK))
		return;
	b = hash_find(fp, VIOMMU_HASH_KEY(dslot, addr), &w);
	if (b && LD(&b->val[w]) == VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, li, LD(&fp->leaves[li].seq)))
		ST_REL(&b->val[w], VIOMMU_HASH_LONE_MAKE(VIOMMU_PTE_PA(pte), VIOMMU_PTE_FLAGS(pte),
							 VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, addr)));
}

/* What a MAP installs: the record's slot word (pieces larger than a page) and, for pages, what
 * ext[] names (the record's index + 1, or VIOMMU_EXT_SOLO for a one-page MAP, which has no
 * record) and the PTE the page gets once the record is live. */
struct piece_src {
	uint64_t word; /* VIOMMU_SLOT_EXTENT word */
	uint32_t ext; /* the pages' ext[] value */
	uint64_t start, phys; /* the extent's, for the PTEs */
	uint32_t flags;
};

/* Page @addr of leaf @li: install (ext[] set, PTE without the present bit: W2; a solo page's
 * present at once, it has nothing else to publish), publish (the present bit, once the record
 * is live) or remove (PTE then ext[] cleared). */
enum piece_op { PIECE_INSTALL, PIECE_PUBLISH, PIECE_REMOVE };

static inline __attribute__((always_inline)) uint32_t page_op(struct viommu_fastpath *fp, uint32_t li,
							      uint64_t addr, const struct piece_src *src,
							      enum piece_op op)
{
	struct viommu_leaf *f = &fp->leaves[li];
	struct viommu_ptes *pt = &fp->ptes[li];
	uint32_t si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, addr), old = LD(&f->ext[si]);

	switch (op) {
	case PIECE_INSTALL:
		ST(&f->ext[si], src->ext);
		/* Not present: a reader answers "not mapped" until PIECE_PUBLISH. A solo page is
		 * the whole mapping: present now (release: pairs with the readers' acquire of the
		 * PTE, W2). */
		ST_REL(&pt->pte[si], src->ext == VIOMMU_EXT_SOLO ?
					     VIOMMU_PTE_MAKE(src->phys, src->flags) | VIOMMU_PTE_SOLO :
					     VIOMMU_PTE_MAKE(src->phys + (addr - src->start), src->flags) &
						     ~VIOMMU_PTE_PRESENT);
		fp->leaf_used[li]++;
		break;
	case PIECE_PUBLISH:
		/* W2/W4: the record went live before; pairs with viommu_read_leaf()'s acquire of
		 * the PTE (a reader that sees it present sees the record live). */
		ST_REL(&pt->pte[si], LD(&pt->pte[si]) | VIOMMU_PTE_PRESENT);
		break;
	case PIECE_REMOVE:
		if (!old)
			break;
		/* The PTE first: from this store on no reader answers with the page (I3). */
		ST_REL(&pt->pte[si], 0);
		ST(&f->ext[si], 0);
		fp->leaf_used[li]--;
		break;
	}
	return old;
}

/* The path to the leaf of @addr (path[0..5]), allocating what is missing when @alloc. Returns
 * 0, -ENOENT (absent and not allocated), -EEXIST (a piece larger than a page covers @addr; the
 * device core prevents overlaps) or -ENOMEM; on error *depth is the deepest level filled. */
static int leaf_path(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, bool alloc,
		     uint32_t *path, int *depth)
{
	int l;

	path[0] = fp->dom_root[dslot];
	for (l = 0; l < VIOMMU_RADIX_LEVELS - 1; l++) {
		uint64_t cur = LD(&fp->nodes[path[l]].slot[VIOMMU_SLOT_OF(l, addr)]);
		uint32_t gen;
		int err;

		*depth = l;
		if (VIOMMU_SLOT_TAG(cur) == VIOMMU_SLOT_NODE || VIOMMU_SLOT_TAG(cur) == VIOMMU_SLOT_LEAF) {
			path[l + 1] = VIOMMU_SLOT_IDX(cur);
			continue;
		}
		if (cur)
			return -EEXIST;
		if (!alloc)
			return -ENOENT;
		if (l + 1 == VIOMMU_RADIX_LEVELS - 1) {
			if ((err = leaf_alloc(fp, dslot, addr & VIOMMU_COVER_MASK(l + 1), &path[l + 1], &gen)))
				return err;
			slot_write(fp, path[l], l, addr, dslot, VIOMMU_SLOT_MAKE(VIOMMU_SLOT_LEAF, path[l + 1], gen));
		} else {
			if ((err = node_alloc(fp, l + 1, dslot, addr & VIOMMU_COVER_MASK(l + 1), &path[l + 1], &gen)))
				return err;
			slot_write(fp, path[l], l, addr, dslot, VIOMMU_SLOT_MAKE(VIOMMU_SLOT_NODE, path[l + 1], gen));
		}
	}
	*depth = l;
	return 0;
}

static int piece_install(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, int level,
			 struct piece_src *src)
{
	uint32_t path[VIOMMU_RADIX_LEVELS];
	int l, err = 0;

	if (level == VIOMMU_RADIX_LEVELS - 1) {
		/* A page in a region that already has its leaf: one hash probe, no walk. */
		if (!hash_leaf(fp, dslot, addr, &path[VIOMMU_RADIX_LEVELS - 1])) {
			if ((err = leaf_path(fp, dslot, addr, true, path, &l))) {
				/* Nothing half-applied: the nodes this call linked hold nothing else. */
				path_prune(fp, dslot, addr, path, l);
				return err;
			}
		}
		if (LD(&fp->leaves[path[VIOMMU_RADIX_LEVELS - 1]].ext[VIOMMU_SLOT_OF(level, addr)]))
			return -EEXIST;
		lone_end(fp, dslot, addr, path[VIOMMU_RADIX_LEVELS - 1]); /* a second page comes */
		page_op(fp, path[VIOMMU_RADIX_LEVELS - 1], addr, src, PIECE_INSTALL);
		lone_begin(fp, dslot, addr, path[VIOMMU_RADIX_LEVELS - 1]);
		return 0;
	}

	path[0] = fp->dom_root[dslot];
	for (l = 0; l < level; l++) {
		struct viommu_node *n = &fp->nodes[path[l]];
		uint64_t cur = LD(&n->slot[VIOMMU_SLOT_OF(l, addr)]);
		uint32_t gen;

		if (VIOMMU_SLOT_TAG(cur) == VIOMMU_SLOT_NODE) {
			path[l + 1] = VIOMMU_SLOT_IDX(cur);
			continue;
		}
		if (cur) {
			err = -EEXIST; /* a leaf or a piece: the device core prevents overlaps */
			break;
		}
		if ((err = node_alloc(fp, l + 1, dslot, addr & VIOMMU_COVER_MASK(l + 1), &path[l + 1], &gen)))
			break;
		slot_write(fp, path[l], l, addr, dslot, VIOMMU_SLOT_MAKE(VIOMMU_SLOT_NODE, path[l + 1], gen));
	}
	if (!err && LD(&fp->nodes[path[level]].slot[VIOMMU_SLOT_OF(level, addr)]))
		err = -EEXIST;
	if (err) {
		path_prune(fp, dslot, addr, path, l);
		return err;
	}
	slot_write(fp, path[level], level, addr, dslot, src->word);
	return 0;
}

/* Publish or remove the piece at (@addr, @level) if present, freeing nodes left empty (I2).
 * Returns the record index + 1 the piece named (0 if none). */
static uint32_t piece_change(struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr, int level,
			     const struct piece_src *src, enum piece_op op)
{
	uint32_t path[VIOMMU_RADIX_LEVELS], old;
	bool installed = false;
	uint64_t w;
	int l;

	if (level == VIOMMU_RADIX_LEVELS - 1) {
		if (!hash_leaf(fp, dslot, addr, &path[level]) &&
		    leaf_path(fp, dslot, addr, false, path, &l))
			return 0; /* never installed (rollback of a partial map) */
		if (op == PIECE_REMOVE)
			lone_end(fp, dslot, addr, path[level]); /* before its PTE is cleared */
		old = page_op(fp, path[level], addr, NULL, op);
		if (op == PIECE_PUBLISH || fp->leaf_used[path[level]])
			return old;
		/* The leaf is empty: walk to it, to unlink it and prune its path. */
		if (leaf_path(fp, dslot, addr, false, path, &l))
			return old;
		path_prune(fp, dslot, addr, path, level);
		return old;
	}
	if (op == PIECE_PUBLISH) {
		/* The record's seq published it (W2); a 2 MiB piece's hash value becomes its
		 * translation now that the record is live (I6), and its piece window entry too
		 * (I13). */
		if (level == VIOMMU_HASH_LEVEL) {
			hash_direct(fp, dslot, addr);
			piece_win_set(fp, dslot, addr,
				      VIOMMU_HASH_DIRECT_MAKE(src->phys + (addr - src->start), src->flags));
		}
		return 0;
	}
	/* A piece's word: busy before its slot is cleared (readers of the window ask the general
	 * path, which sees the slot), 0 once it is. A word already 0 (a piece never installed) is
	 * left so. */
	if (level == VIOMMU_HASH_LEVEL) {
		__u64 *p = fp_piece_word(fp, dslot, addr);

		installed = p && LD(p); /* busy from its install, or its direct value */
		if (installed)
			ST_REL(p, (__u64)VIOMMU_PIECE_BUSY);
	}
	path[0] = fp->dom_root[dslot];
	for (l = 0; l < level; l++) {
		uint64_t cur = LD(&fp->nodes[path[l]].slot[VIOMMU_SLOT_OF(l, addr)]);

		if (VIOMMU_SLOT_TAG(cur) != VIOMMU_SLOT_NODE)
			return 0; /* never installed (rollback of a partial map) */
		path[l + 1] = VIOMMU_SLOT_IDX(cur);
	}
	w = slot_write(fp, path[level], level, addr, dslot, 0);
	if (level == VIOMMU_HASH_LEVEL) {
		piece_win_set(fp, dslot, addr, 0);
		if (installed)
			win_pieces_add(fp, dslot, addr, -1); /* after its slot is empty */
	}
	path_prune(fp, dslot, addr, path, level);
	return VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EXTENT ? VIOMMU_SLOT_IDX(w) + 1 : 0;
}

/* Applies @op to every piece of [start, end] up to (not including) @stop_addr. Installing, a
 * failure leaves *stop_addr at the failing piece. Removing, @cleared (may be NULL) gets the
 * record index + 1 one of the pieces named (they all name the same record), 0 if none. */
static int pieces(struct viommu_fastpath *fp, uint32_t dslot, uint64_t start, uint64_t end,
		  struct piece_src *src, enum piece_op op, uint64_t *stop_addr, uint32_t *cleared)
{
	uint64_t addr = start;

	for (;;) {
		int level = piece_level(addr, end);
		bool wide;
		uint64_t size;

		if (level < 0)
			return -EINVAL;
		/* A 2 MiB piece stays whole, inside the window too: its piece window word answers it
		 * (the piece window holds the window), and a PTE not present in the window means not
		 * mapped only with that word 0 (I13). */
		size = 1ull << VIOMMU_LEVEL_SHIFT(level);
		/* Larger pieces stay whole (O(1)); over the window they make it say so (I13). */
		wide = level < VIOMMU_HASH_LEVEL && win_overlaps(fp, dslot, addr, size);
		if (op == PIECE_INSTALL) {
			int err;

			if (wide) { /* before the slot store that publishes it */
				win_wide_add(fp, dslot, 1);
				win_wide_mark(fp, dslot, addr, size, VIOMMU_PIECE_BUSY);
			}
			if (level == VIOMMU_HASH_LEVEL) /* the same, for a 2 MiB one in the window */
				win_pieces_add(fp, dslot, addr, 1);
			if ((err = piece_install(fp, dslot, addr, level, src))) {
				if (wide) {
					win_wide_mark(fp, dslot, addr, size, 0);
					win_wide_add(fp, dslot, -1);
				}
				if (level == VIOMMU_HASH_LEVEL)
					win_pieces_add(fp, dslot, addr, -1);
				*stop_addr = addr;
				return err;
			}
			/* Its word busy until the record is live (then its direct value, PUBLISH). */
			if (level == VIOMMU_HASH_LEVEL)
				piece_win_set(fp, dslot, addr, VIOMMU_PIECE_BUSY);
		} else {
			uint32_t old;

			if (stop_addr && addr == *stop_addr)
				return 0;
			old = piece_change(fp, dslot, addr, level, src, op);
			if (cleared && old)
				*cleared = old;
			if (wide && op == PIECE_REMOVE && old) { /* after the slot is empty */
				win_wide_mark(fp, dslot, addr, size, 0);
				win_wide_add(fp, dslot, -1);
			}
		}
		if (end - addr == size - 1)
			return 0;
		addr += size;
	}
}

/* ---- observer callbacks ---- */

/* Sparse id -> entry index, or -1; with @alloc, a new id gets the next free entry. Probes the
 * whole table (linear probing from viommu_ep_hash(), no deletion), so any VIOMMU_EP_SPARSE ids
 * fit whatever their bits; meta.ep_probes records the longest sequence used, which bounds the
 * readers' probes (viommu_ep_slot). */
int64_t fp_ep_index_find(struct viommu_fastpath *fp, uint32_t id, bool alloc)
{
	uint32_t h = viommu_ep_hash(id);

	if (id < VIOMMU_EP_DENSE)
		return id;
	for (uint32_t i = 0; i < VIOMMU_EP_INDEX_SLOTS; i++) {
		__u64 *p = &fp->ep_index[(h + i) & (VIOMMU_EP_INDEX_SLOTS - 1)];
		uint64_t v = LD(p);

		if (v && VIOMMU_EP_INDEX_ID(v) == id)
			return VIOMMU_EP_INDEX_ENTRY(v);
		if (!v) {
			uint32_t e;

			if (!alloc || fp->sparse_used == VIOMMU_EP_SPARSE)
				return -1;
			e = VIOMMU_EP_DENSE + fp->sparse_used++;
			/* Release, before the slot: a reader that finds the slot by a fresh load of
			 * the bound reaches it; one with the older bound answers as before the
			 * insertion (the entry says UNKNOWN until the caller sets it anyway). Pairs
			 * with the acquire of ep_probes in viommu_ep_slot(). */
			if (i + 1 > LD(&fp->meta->ep_probes))
				ST_REL(&fp->meta->ep_probes, i + 1);
			/* The entry (state UNKNOWN, seq 0) exists before its index names it (I8).
			 * Pairs with the acquire of the slot in viommu_ep_slot(). */
			ST_REL(p, VIOMMU_EP_INDEX_MAKE(id, e));
			return e;
		}
	}
	return -1; /* unreachable: SLOTS = 2 * SPARSE, so a free slot exists while there is room */
}

static int fp_endpoint_changed(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st)
{
	struct viommu_fastpath *fp = ctx;
	int64_t i = fp_ep_index_find(fp, ep->id, st != VIOMMU_EP_UNKNOWN);
	struct viommu_ep_entry *e;
	uint32_t dslot = 0, root = 0;
	uint64_t s;

	if (i < 0)
		return st == VIOMMU_EP_UNKNOWN ? 0 : -ENOSPC;
	e = &fp->eps[i];
	if (st == VIOMMU_EP_ATTACHED) {
		dslot = ep->domain->slot;
		root = fp->dom_root[dslot];
	}
	if (LD(&e->state) == VIOMMU_EP_UNKNOWN && st != VIOMMU_EP_UNKNOWN)
		META_ADD(endpoints_used, 1);
	else if (LD(&e->state) != VIOMMU_EP_UNKNOWN && st == VIOMMU_EP_UNKNOWN)
		META_ADD(endpoints_used, -1);
	/* Leaving a translating state (identity, or a domain) removes translations readers may
	 * hold, whatever the core calls the request: e.g. ATTACH of an endpoint that was in
	 * global bypass removes its identity map. The next sync waits for readers (W5, I7). */
	if ((LD(&e->state) == VIOMMU_EP_BYPASS || LD(&e->state) == VIOMMU_EP_IDENTITY ||
	     LD(&e->state) == VIOMMU_EP_ATTACHED) &&
	    (LD(&e->state) != (uint8_t)st || LD(&e->domain_slot) != dslot))
		fp->ep_removed = true;
	/* The domain lists (win_flags_store()): out of the old one, into the new one. */
	if (LD(&e->state) == VIOMMU_EP_ATTACHED) {
		const uint32_t next = fp->ep_dnext[i], prev = fp->ep_dprev[i];

		if (prev)
			fp->ep_dnext[prev - 1] = next;
		else
			fp->dom_ep1[LD(&e->domain_slot)] = next;
		if (next)
			fp->ep_dprev[next - 1] = prev;
	}
	if (st == VIOMMU_EP_ATTACHED) {
		const uint32_t first = fp->dom_ep1[dslot];

		fp->ep_dnext[i] = first;
		fp->ep_dprev[i] = 0;
		if (first)
			fp->ep_dprev[first - 1] = (uint32_t)i + 1;
		fp->dom_ep1[dslot] = (uint32_t)i + 1;
	}
	/* W3: seqlock write. Odd seq, then the fields, then the even seq. Each field store is a
	 * release (not relaxed after a release fence: ThreadSanitizer does not model fences; same
	 * code on x86-64): it orders the odd seq before it, so a reader whose acquire load of a
	 * field sees the new value fails its re-check of seq. */
	s = LD(&e->seq);
	ST(&e->seq, s + 1);
	ST_REL(&e->state, (uint8_t)st); /* enum viommu_ep_state, one byte in the entry */
	ST_REL(&e->domain_slot, (uint16_t)dslot);
	ST_REL(&e->root, root);
	ST_REL(&e->seq, s + 2); /* pairs with viommu_lookup_once()'s acquire of e->seq */
	return 0;
}

static int fp_domain_created(void *ctx, struct viommu_domain *d)
{
	struct viommu_fastpath *fp = ctx;
	uint32_t idx, gen;
	int err;

	if (d->slot >= VIOMMU_DOMAINS_MAX || d->slot >= fp->dom_cap)
		return -ENOSPC;
	if ((err = node_alloc(fp, 0, d->slot, 0, &idx, &gen)))
		return err;
	fp->dom_root[d->slot] = idx;
	fp->dom_walk[d->slot] = 0;
	fp->dom_maps[d->slot] = 0;
	/* Before any endpoint names the root: a reused node's flags start clear. */
	ST_REL(&fp->nodes[idx].flags, 0u);
	fp->dom_live[d->slot] = true;
	if (d->slot >= fp->dom_slots)
		fp->dom_slots = d->slot + 1;
	META_ADD(domains_used, 1);
	return 0;
}

static void fp_domain_destroyed(void *ctx, struct viommu_domain *d)
{
	struct viommu_fastpath *fp = ctx;

	/* The core unmapped every extent first, so the root is empty (I2). */
	node_free(fp, fp->dom_root[d->slot]);
	win_release(fp, d->slot);
	fp->dom_live[d->slot] = false;
	META_ADD(domains_used, -1);
}

static int fp_map(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	struct viommu_fastpath *fp = ctx;
	struct piece_src src;
	uint32_t idx, gen;
	uint64_t stop = 0;
	int err;

	if ((x->start | (x->end + 1) | x->phys) & ((1ull << VIOMMU_PAGE_SHIFT) - 1))
		return -EINVAL; /* below the radix granule; viommu_fastpath_new refuses such devices */
	/* The domain's first mapping places its window, when one is free and the mapping is
	 * smaller than a window (an identity domain's one 2^48-byte extent would gain nothing). */
	if (fp->windows_max && !fp->dom_maps[d->slot] && !fp->dom_win[d->slot] && x->end - x->start <
	    ((uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT) - 1)
		win_place(fp, d->slot, x->start);
	if (x->end - x->start == (1ull << VIOMMU_PAGE_SHIFT) - 1) {
		/* One page: no record, its PTE is the whole extent, present once installed. */
		src = (struct piece_src){ .ext = VIOMMU_EXT_SOLO, .start = x->start, .phys = x->phys,
					  .flags = x->flags };
		if ((err = piece_install(fp, d->slot, x->start, VIOMMU_RADIX_LEVELS - 1, &src)))
			return err; /* nothing installed: piece_install() undoes its own nodes */
		fp->dom_maps[d->slot]++;
		META_ADD(solo_used, 1);
		META_ADD(publications, 1);
		return 0;
	}
	if ((err = ext_alloc(fp, d->slot, x, &idx, &gen)))
		return err;
	src = (struct piece_src){ .word = VIOMMU_SLOT_MAKE(VIOMMU_SLOT_EXTENT, idx, gen), .ext = idx + 1,
				  .start = x->start, .phys = x->phys, .flags = x->flags };
	err = pieces(fp, d->slot, x->start, x->end, &src, PIECE_INSTALL, &stop, NULL);
	if (err) {
		/* Undo the pieces installed before the failing one: nothing half-applied, and
		 * nothing was ever visible (the record never went live, no PTE was present). */
		pieces(fp, d->slot, x->start, x->end, NULL, PIECE_REMOVE, &stop, NULL);
		ext_abort(fp, idx);
		return err;
	}
	ext_publish(fp, idx, gen);
	fp->dom_maps[d->slot]++;
	/* Then the pages (W2): a PTE is present only while its record is live. */
	pieces(fp, d->slot, x->start, x->end, &src, PIECE_PUBLISH, NULL, NULL);
	META_ADD(publications, 1);
	return 0;
}

/* viommu_observer.prefetch: a MAP of @iova comes. In a window, its leaf's ext[] and PTE lines,
 * and the BPF replica's, are what fp_map() writes: random lines of a large map at 1M pages, each
 * a miss that would otherwise wait until the store's descent is done. */
static void fp_prefetch(void *ctx, const struct viommu_domain *d, uint64_t iova)
{
	const struct viommu_fastpath *fp = ctx;
	uint32_t li = win_leaf(fp, d->slot, iova), si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova);
	const char *e, *p;

	if (li == ~0u)
		return;
	e = (const char *)&fp->leaves[li].ext[si];
	p = (const char *)&fp->ptes[li].pte[si];
	__builtin_prefetch(e, 1);
	__builtin_prefetch(p, 1);
	if (fp->replica_delta) {
		__builtin_prefetch(e + fp->replica_delta, 1);
		__builtin_prefetch(p + fp->replica_delta, 1);
	}
}

static void fp_unmap(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	struct viommu_fastpath *fp = ctx;
	uint32_t xi = 0;

	/* Unlink every piece, then kill the record: from the kill on, no reader answers with it.
	 * The pieces name the record (W4): that is how we know its index, with nothing of ours
	 * kept in the core's extent. */
	if (x->end - x->start == (1ull << VIOMMU_PAGE_SHIFT) - 1) /* one page: one piece, at a known level */
		xi = piece_change(fp, d->slot, x->start, VIOMMU_RADIX_LEVELS - 1, NULL, PIECE_REMOVE);
	else
		pieces(fp, d->slot, x->start, x->end, NULL, PIECE_REMOVE, NULL, &xi);
	if (xi == VIOMMU_EXT_SOLO)
		META_ADD(solo_used, -1); /* one page, no record: its PTE went with it */
	else if (xi)
		ext_free(fp, xi - 1);
	fp->dom_maps[d->slot]--;
	META_ADD(publications, 1);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* The connection of a reader in another process ended: the kernel closed it with the last
 * holder of its end (process exit, zombie included, in any PID namespace). */
static bool reader_gone(struct viommu_fastpath *fp, uint32_t i)
{
	return fp->readers[i].conn >= 0 && fp_reader_reap(fp, i);
}

/*
 * W5's wait: every reader that entered before @epoch (active = an older epoch | 1) must exit,
 * its process end, or the deadline pass: then it is revoked (it overstayed; counted, told
 * through its slot, dropped if in another process) and never waited for again. Nothing in a
 * slot is trusted: any `active` value costs at most the deadline, once per reader.
 */
static void wait_readers(struct viommu_fastpath *fp, uint64_t epoch, uint64_t deadline)
{
	for (uint32_t i = 0; i < VIOMMU_READER_INFOS; i++) {
		struct fp_reader *rd = &fp->readers[i];
		/* Acquire: pairs with the release that published a claimed slot (LIVE). */
		uint32_t owner = __atomic_load_n(&rd->owner, __ATOMIC_ACQUIRE);
		unsigned spins = 0, backoff = 1;
		uint64_t a;

		if (FP_OWNER_STATE(owner) != FP_READER_LIVE)
			continue;
		/* Acquire: pairs with viommu_reader_exit()'s release, so the reader's uses of the
		 * old translation happen before we complete the request (R2). */
		while ((a = __atomic_load_n(&rd->slot->active, __ATOMIC_ACQUIRE)) != 0 && a < epoch) {
			/* Back off between loads: each load pulls the reader's `active` line over
			 * here, and the reader's next store must pull it back. */
			for (unsigned k = 0; k < backoff; k++)
				cpu_relax();
			if (backoff < 64)
				backoff *= 2;
			if (++spins % 128 == 0) {
				if (reader_gone(fp, i))
					break;
				if (now_ns() >= deadline) {
					fp_reader_revoke(fp, i, owner);
					break;
				}
				sched_yield();
			}
		}
	}
}

static void fp_sync(void *ctx, bool removed)
{
	struct viommu_fastpath *fp = ctx;
	uint64_t t0, epoch;

	removed |= fp->ep_removed;
	fp->ep_removed = false;
	if (!removed || fp->lazy)
		return;
	t0 = now_ns();
	if (fp->reader_fence) {
		/* W5, reader-fence mode: this seq_cst RMW is a full barrier (lock xadd): the unlinks
		 * and kills above are visible before the scan below reads any `active`. With the
		 * reader's seq_cst exchange in viommu_reader_enter() (its store before its lookups)
		 * this is Dekker's pattern: the scan sees the reader active, or the reader's
		 * lookups see the removal. */
		epoch = __atomic_add_fetch(&fp->meta->epoch, 2, __ATOMIC_SEQ_CST);
	} else {
		/* W5: make every reader thread's later loads see the unlinks/kills above, or make its
		 * `active` store visible to the scan below (asymmetric fence; pairs with
		 * viommu_reader_enter()'s compiler barrier). membarrier returns once that holds on
		 * every CPU. */
		membarrier(fp->membarrier_global ? MEMBARRIER_CMD_GLOBAL_EXPEDITED : MEMBARRIER_CMD_GLOBAL);
		epoch = LD(&fp->meta->epoch) + 2;
		__atomic_store_n(&fp->meta->epoch, epoch, __ATOMIC_SEQ_CST);
	}
	/* The BPF replica's copy of the epoch (kept in step; BPF programs do not read it): after
	 * the bump above, as every other store reaches the replica after the memfd. */
	if (fp->replica_delta)
		__atomic_store_n((uint64_t *)((char *)&fp->meta->epoch + fp->replica_delta), epoch,
				 __ATOMIC_SEQ_CST);
	wait_readers(fp, epoch, t0 + fp->grace_timeout_ns);
	if (fp->bpf_grace && fp->skel) {
		/* Running BPF programs: an ARRAY_OF_MAPS update returns after synchronize_rcu(). */
		uint32_t zero = 0;
		int inner = fp->sync_inner_fd;

		bpf_map_update_elem(bpf_map__fd(fp->skel->maps.viommu_sync), &zero, &inner, BPF_ANY);
	}
	META_ADD(grace_periods, 1);
	META_ADD(grace_ns_total, now_ns() - t0);
}

/* ---- set-up ---- */

static int on_fault(void *ctx, void *data, size_t len)
{
	struct viommu_fastpath *fp = ctx;
	const struct viommu_fault_rec *r = data;

	if (len < sizeof(*r))
		return 0;
	viommu_device_report_fault(fp->dev, r->endpoint, r->reason, r->access, r->address);
	return 0;
}

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) & ~(page - 1);
}

/* Bytes of shared map @i: elements rounded up to 8 bytes each (as the kernel's arrays),
 * pages rounded up; @n elements for the pools, the table's count for the rest. */
static size_t shm_bytes(int i, uint32_t n)
{
	return page_round((size_t)((viommu_shm_elem_size[i] + 7u) & ~7u) * n);
}

/* The memfd: every data map at off[i], sized, mapped writable here, then sealed so that no
 * other mapping can ever write it (readers in other processes get this very fd). Pages are
 * allocated on first touch: an idle device holds a few of them. */
static int shm_create(struct viommu_fastpath *fp)
{
	int fd = memfd_create("viommu-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *m;

	if (fd < 0)
		return -errno;
	fp->shm_fd = fd;
	if (ftruncate(fd, (off_t)fp->data_len))
		return -errno;
	m = mmap(NULL, fp->data_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	fp->base = m;
	/* Our mapping stays writable; every later mapping is read-only and can never become
	 * writable (the kernel clears VM_MAYWRITE), write() and fallocate() fail, the size is
	 * fixed (a reader cannot truncate it under us: SIGBUS in the writer), and no seal can be
	 * removed. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL))
		return -errno;
	return 0;
}

/* Copy what the memfd holds into the fresh replica at @dst: its data segments only (holes are
 * zero in both; reading them through our mapping would allocate them). */
static void shm_copy_to(const struct viommu_fastpath *fp, char *dst)
{
	off_t pos = 0, end = (off_t)fp->data_len;

	while (pos < end) {
		off_t d = lseek(fp->shm_fd, pos, SEEK_DATA), h;

		if (d < 0)
			return; /* ENXIO: no data past pos */
		h = lseek(fp->shm_fd, d, SEEK_HOLE);
		if (h < 0 || h > end)
			h = end;
		memcpy(dst + d, fp->base + d, (size_t)(h - d));
		pos = h;
	}
}

static int fp_bpf_fail(struct viommu_fastpath *fp, struct viommu_xlate_bpf *skel, int err)
{
	ring_buffer__free(fp->rb);
	fp->rb = NULL;
	if (fp->bpf_base)
		munmap(fp->bpf_base, fp->data_len);
	fp->bpf_base = NULL;
	fp->sync_inner_fd = -1;
	viommu_xlate_bpf__destroy(skel);
	return err;
}

int viommu_fastpath_bpf_enable(struct viommu_fastpath *fp)
{
	struct viommu_xlate_bpf *skel;
	struct bpf_map *maps[VIOMMU_SHM_COUNT];
	void *infos;
	int err;

	if (fp->skel)
		return 0;
	skel = viommu_xlate_bpf__open();
	if (!skel)
		return -errno;
	bpf_map__set_max_entries(skel->maps.viommu_nodes, fp->nodes_max);
	bpf_map__set_max_entries(skel->maps.viommu_leaves, fp->leaves_max);
	bpf_map__set_max_entries(skel->maps.viommu_ptes, fp->leaves_max);
	bpf_map__set_max_entries(skel->maps.viommu_extents, fp->extents_max);
	bpf_map__set_max_entries(skel->maps.viommu_hash, fp->view.hash_mask + 1);
	bpf_map__set_max_entries(skel->maps.viommu_pieces, fp->pieces_max);
	skel->rodata->viommu_hash_mask = fp->view.hash_mask;
	if ((err = viommu_xlate_bpf__load(skel)))
		return fp_bpf_fail(fp, skel, err);
	for (int i = 0; i < VIOMMU_SHM_COUNT; i++) { /* the table in viommu_abi.h */
		maps[i] = bpf_object__find_map_by_name(skel->obj, viommu_shm_name[i]);
		if (!maps[i] || shm_bytes(i, bpf_map__max_entries(maps[i])) != fp->len[i] ||
		    bpf_map__value_size(maps[i]) != viommu_shm_elem_size[i])
			return fp_bpf_fail(fp, skel, -EPROTO);
	}
	/* One reservation, the data maps at the memfd's offsets: the replica is then one constant
	 * offset away from every byte of the memfd (FP_STORE). */
	fp->bpf_base = mmap(NULL, fp->data_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (fp->bpf_base == MAP_FAILED) {
		fp->bpf_base = NULL;
		return fp_bpf_fail(fp, skel, -errno);
	}
	for (int i = 0; i < VIOMMU_SHM_DATA; i++)
		if (mmap(fp->bpf_base + fp->off[i], fp->len[i], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 bpf_map__fd(maps[i]), 0) == MAP_FAILED)
			return fp_bpf_fail(fp, skel, -errno);
	infos = mmap(NULL, fp->len[VIOMMU_SHM_READERS], PROT_READ | PROT_WRITE, MAP_SHARED,
		     bpf_map__fd(maps[VIOMMU_SHM_READERS]), 0);
	if (infos == MAP_FAILED)
		return fp_bpf_fail(fp, skel, -errno);
	fp->rb = ring_buffer__new(bpf_map__fd(skel->maps.viommu_faults), on_fault, fp, NULL);
	if (!fp->rb) {
		err = -errno;
		munmap(infos, fp->len[VIOMMU_SHM_READERS]);
		return fp_bpf_fail(fp, skel, err);
	}
	fp->sync_inner_fd = bpf_map__fd(skel->maps.viommu_sync_inner);
	/* No BPF program can run yet (nobody has its fd but us), and we are the writer: the copy
	 * is the state, and from the delta on every store goes to both copies. */
	shm_copy_to(fp, fp->bpf_base);
	memcpy(infos, fp->infos, VIOMMU_READER_INFOS * sizeof(*fp->infos));
	fp->infos = infos;
	memcpy(fp->maps, maps, sizeof(maps));
	fp->replica_delta = fp->bpf_base - fp->base;
	/* Release: for viommu_fastpath_bpf_translate() in other threads (acquire). */
	__atomic_store_n(&fp->skel, skel, __ATOMIC_RELEASE);
	return 0;
}

/* The replica for a reader (any thread): NULL until viommu_fastpath_bpf_enable() published it. */
static struct viommu_xlate_bpf *fp_skel(const struct viommu_fastpath *fp)
{
	return __atomic_load_n(&fp->skel, __ATOMIC_ACQUIRE);
}

/*
 * The writer's private arrays, zeroed: @n of @sz bytes each, at offsets *@off of the returned
 * region (64-byte aligned), which is fp->priv until viommu_fastpath_free(). An anonymous mapping
 * of their own, not calloc: calloc leaves untouched pages untouched only while glibc serves it
 * by mmap, and glibc raises its mmap threshold once the process has freed a large block, then
 * takes such arrays from the heap and clears them. In the bench's many_vms scenario, run after
 * the other scenarios, that was about 700 KiB of heap per idle device instead of none.
 */
static char *fp_priv_map(struct viommu_fastpath *fp, const size_t *sz, size_t *off, unsigned n)
{
	size_t len = 0;
	void *p;

	for (unsigned i = 0; i < n; i++) {
		off[i] = len;
		len += (sz[i] + 63) & ~(size_t)63;
	}
	len = (len + 4095) & ~(size_t)4095;
	p = mmap(NULL, len ? len : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	fp->priv = p;
	fp->priv_len = len ? len : 4096;
	return p;
}

struct viommu_fastpath *viommu_fastpath_new(struct viommu_device *dev,
					    const struct viommu_fastpath_opts *opts)
{
	struct viommu_fastpath_opts o = { 0 };
	const struct viommu_config *cfg = viommu_device_config(dev);
	struct viommu_observer obs;
	struct viommu_fastpath *fp;
	uint32_t cap_domains = 0, pieces_max;
	uint64_t cap_maps = 0;
	int err = 0, q, sv[2];

	if (opts)
		o = *opts;
	if (!o.nodes)
		o.nodes = VIOMMU_NODES_DEFAULT;
	if (!o.leaves)
		o.leaves = VIOMMU_LEAVES_DEFAULT;
	if (!o.extents)
		o.extents = VIOMMU_EXTENTS_DEFAULT;
	if (!o.hash_buckets)
		o.hash_buckets = VIOMMU_HASH_BUCKETS_DEFAULT;
	if (!o.windows)
		o.windows = VIOMMU_WINDOWS_DEFAULT;
	if (o.windows == VIOMMU_WINDOWS_NONE)
		o.windows = 0;
	if (!o.window_regions)
		o.window_regions = VIOMMU_WINDOW_REGIONS_DEFAULT;
	if (!o.piece_regions) /* the default, or the window's size if larger: it holds its window */
		o.piece_regions = o.window_regions > VIOMMU_PIECE_REGIONS_DEFAULT ? o.window_regions :
										 VIOMMU_PIECE_REGIONS_DEFAULT;
	if (!o.windows)
		o.window_regions = o.piece_regions = 0;
	if ((cfg->page_size_mask & -cfg->page_size_mask) < (1ull << VIOMMU_PAGE_SHIFT) ||
	    cfg->max_domains > VIOMMU_DOMAINS_MAX) {
		errno = ENOTSUP;
		return NULL;
	}
	if ((o.hash_buckets & (o.hash_buckets - 1)) || o.nodes > VIOMMU_INDEX_MAX || o.leaves > VIOMMU_INDEX_MAX ||
	    (o.window_regions & (o.window_regions - 1)) || o.window_regions > (1u << 20) ||
	    (o.piece_regions & (o.piece_regions - 1)) || o.piece_regions > (1u << 24) ||
	    o.piece_regions < o.window_regions || /* a piece window holds its window */
	    (uint64_t)o.windows * o.piece_regions > VIOMMU_INDEX_MAX ||
	    (uint64_t)o.leaves + (uint64_t)o.windows * o.window_regions > VIOMMU_INDEX_MAX ||
	    o.extents > VIOMMU_INDEX_MAX || o.nodes < 2) {
		errno = EINVAL;
		return NULL;
	}
	/* At least one entry: a BPF array map has one or more. */
	pieces_max = o.windows && o.piece_regions ? o.windows * o.piece_regions : 1;
	if (!o.overcommit) {
		/* Caps the pools can honour for any layout (docs/statuses.md, "Caps"), applied
		 * once everything else succeeded. */
		cap_domains = cfg->max_domains < o.nodes / 8 ? cfg->max_domains : o.nodes / 8;
		cap_maps = cap_domains ? (o.nodes - cap_domains) / VIOMMU_NODES_PER_MAP_WORST : 0;
		if (cap_maps > o.leaves / VIOMMU_LEAVES_PER_MAP_WORST)
			cap_maps = o.leaves / VIOMMU_LEAVES_PER_MAP_WORST;
		if (cap_maps > o.extents)
			cap_maps = o.extents;
		if (!cap_domains || !cap_maps) {
			errno = ENOSPC;
			return NULL;
		}
	}
	fp = calloc(1, sizeof(*fp));
	if (!fp)
		return NULL;
	fp->dev = dev;
	fp->lazy = o.lazy;
	fp->bpf_grace = o.bpf_grace;
	fp->reader_fence = o.reader_fence;
	fp->sync_inner_fd = -1;
	fp->shm_fd = fp->fault_tx = fp->fault_rx = -1;
	fp->grace_timeout_ns = (o.grace_timeout_ms ? o.grace_timeout_ms : VIOMMU_GRACE_TIMEOUT_MS_DEFAULT) *
			       1000000ull;
	/* The layout: the data maps in the memfd in the table's order, each page-aligned; the
	 * readers' summary apart (writer-private until a replica exists). */
	for (int i = 0; i < VIOMMU_SHM_COUNT; i++) {
		uint32_t n = i == VIOMMU_SHM_NODES ? o.nodes : i == VIOMMU_SHM_LEAVES || i == VIOMMU_SHM_PTES ? o.leaves + o.windows * o.window_regions :
			     i == VIOMMU_SHM_EXTENTS ? o.extents : i == VIOMMU_SHM_HASH ? o.hash_buckets :
			     i == VIOMMU_SHM_PIECES ? pieces_max : viommu_shm_entries[i];

		fp->len[i] = shm_bytes(i, n);
		if (i < VIOMMU_SHM_DATA) {
			fp->off[i] = fp->data_len;
			fp->data_len += fp->len[i];
		}
	}
	if ((err = shm_create(fp)))
		goto fail;
	fp->infos = fp->infos_private = calloc(VIOMMU_READER_INFOS, sizeof(*fp->infos));
	if (!fp->infos) {
		err = -ENOMEM;
		goto fail;
	}
	fp->meta = (void *)(fp->base + fp->off[VIOMMU_SHM_META]);
	fp->eps = (void *)(fp->base + fp->off[VIOMMU_SHM_EPS]);
	fp->ep_index = (void *)(fp->base + fp->off[VIOMMU_SHM_EP_INDEX]);
	fp->nodes = (void *)(fp->base + fp->off[VIOMMU_SHM_NODES]);
	fp->leaves = (void *)(fp->base + fp->off[VIOMMU_SHM_LEAVES]);
	fp->ptes = (void *)(fp->base + fp->off[VIOMMU_SHM_PTES]);
	fp->exts = (void *)(fp->base + fp->off[VIOMMU_SHM_EXTENTS]);
	fp->buckets = (void *)(fp->base + fp->off[VIOMMU_SHM_HASH]);
	fp->wins = (void *)(fp->base + fp->off[VIOMMU_SHM_WINDOWS]);
	fp->pieces = (void *)(fp->base + fp->off[VIOMMU_SHM_PIECES]);
	fp->piece_regions = o.piece_regions;
	fp->pieces_max = pieces_max;
	fp->leaves_pool = o.leaves;
	fp->win_regions = o.window_regions;
	fp->windows_max = o.windows;
	fp->view = (struct viommu_fp_view){
		.meta = fp->meta, .eps = fp->eps, .ep_index = fp->ep_index, .nodes = fp->nodes,
		.leaves = fp->leaves, .ptes = fp->ptes, .exts = fp->exts, .buckets = fp->buckets, .wins = fp->wins,
		.pieces = fp->pieces, .pieces_max = pieces_max,
		.nodes_max = o.nodes, .leaves_max = o.leaves + o.windows * o.window_regions, .extents_max = o.extents,
		.hash_mask = o.hash_buckets - 1,
	};
	if ((err = fp_share_init(fp)))
		goto fail;

	/* Writer-private bookkeeping, zeroed, in anonymous pages of its own, so that pages never
	 * touched cost nothing. */
	{
		const size_t sz[] = {
			(size_t)o.nodes * sizeof(uint32_t), (size_t)o.nodes * sizeof(uint16_t),
			(size_t)o.leaves * sizeof(uint32_t),
			((size_t)o.leaves + (size_t)o.windows * o.window_regions) * sizeof(uint16_t),
			(size_t)o.extents * sizeof(uint32_t), ((size_t)o.windows + 1) * sizeof(uint32_t),
			((size_t)cfg->max_domains + 1) * sizeof(uint32_t), ((size_t)cfg->max_domains + 1) * sizeof(uint32_t),
			((size_t)cfg->max_domains + 1) * sizeof(uint32_t), (size_t)o.windows * o.window_regions + 1,
			((size_t)cfg->max_domains + 1) * sizeof(uint32_t),
			((size_t)cfg->max_domains + 1) * sizeof(uint32_t), (size_t)VIOMMU_EP_ENTRIES * sizeof(uint32_t),
			(size_t)VIOMMU_EP_ENTRIES * sizeof(uint32_t),
		};
		size_t off[sizeof(sz) / sizeof(sz[0])];
		char *pv = fp_priv_map(fp, sz, off, sizeof(sz) / sizeof(sz[0]));

		if (!pv) {
			err = -ENOMEM;
			goto fail;
		}
		fp->node_free = (uint32_t *)(pv + off[0]);
		fp->node_used = (uint16_t *)(pv + off[1]);
		fp->leaf_free = (uint32_t *)(pv + off[2]);
		fp->leaf_used = (uint16_t *)(pv + off[3]);
		fp->ext_free = (uint32_t *)(pv + off[4]);
		fp->win_free = (uint32_t *)(pv + off[5]);
		fp->dom_win = (uint32_t *)(pv + off[6]);
		fp->dom_maps = (uint32_t *)(pv + off[7]);
		fp->dom_wide = (uint32_t *)(pv + off[8]);
		fp->win_live = (uint8_t *)(pv + off[9]);
		fp->dom_wpieces = (uint32_t *)(pv + off[10]);
		fp->dom_ep1 = (uint32_t *)(pv + off[11]);
		fp->ep_dnext = (uint32_t *)(pv + off[12]);
		fp->ep_dprev = (uint32_t *)(pv + off[13]);
		fp->dom_cap = cfg->max_domains;
	}
	/* Nodes and records are handed out below a high-water mark and made free (odd seq, I1)
	 * on first use: the pools' pages are touched, hence allocated, only as they fill. */
	fp->nodes_max = o.nodes;
	fp->leaves_max = o.leaves + o.windows * o.window_regions;
	fp->extents_max = o.extents;
	fp->node_free_n = fp->leaf_free_n = fp->ext_free_n = fp->node_hwm = fp->leaf_hwm = fp->ext_hwm = 0;
	fp->meta->abi_version = VIOMMU_ABI_VERSION;
	fp->meta->nodes_max = o.nodes;
	fp->meta->leaves_max = fp->leaves_max;
	fp->meta->windows_leaf = o.leaves;
	fp->meta->window_regions = o.window_regions;
	fp->meta->piece_regions = o.piece_regions;
	fp->meta->windows_max = o.windows;
	fp->meta->extents_max = o.extents;
	fp->meta->flags = o.reader_fence ? VIOMMU_META_F_READER_FENCE : 0;
	fp->meta->hash_mask = o.hash_buckets - 1;
	fp->meta->readers_max = VIOMMU_READERS_MAX;
	fp->meta->epoch = 2;
	ST_REL(&fp->meta->magic, VIOMMU_ABI_MAGIC);

	q = membarrier(MEMBARRIER_CMD_QUERY);
	fp->membarrier_global = q > 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED);
	if (q < 0 || !(q & (MEMBARRIER_CMD_GLOBAL | MEMBARRIER_CMD_GLOBAL_EXPEDITED))) {
		err = -ENOSYS;
		goto fail;
	}
	if (fp->membarrier_global)
		membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);

	/* Faults from readers of this process, BPF or not. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv)) {
		err = -errno;
		goto fail;
	}
	fp->fault_rx = sv[0];
	fp->fault_tx = sv[1];
	shutdown(fp->fault_rx, SHUT_WR);
	shutdown(fp->fault_tx, SHUT_RD);
	if (o.bpf && (err = viommu_fastpath_bpf_enable(fp)))
		goto fail;

	obs = (struct viommu_observer){
		.ctx = fp,
		.endpoint_changed = fp_endpoint_changed,
		.domain_created = fp_domain_created,
		.domain_destroyed = fp_domain_destroyed,
		.map = fp_map,
		.unmap = fp_unmap,
		.prefetch = fp_prefetch,
		.sync = fp->lazy ? NULL : fp_sync, /* lazy: no grace period, nothing to do (W5) */
	};
	if ((err = viommu_device_add_observer(dev, &obs)))
		goto fail;
	if (!o.overcommit && (err = viommu_device_limit_caps(dev, cap_domains, cap_maps)))
		goto fail;
	return fp;
fail:
	viommu_fastpath_free(fp);
	errno = err < 0 ? -err : EINVAL;
	return NULL;
}

void viommu_fastpath_free(struct viommu_fastpath *fp)
{
	if (!fp)
		return;
	if (fp->dev)
		viommu_device_remove_observer(fp->dev, fp);
	fp_share_free(fp);
	ring_buffer__free(fp->rb);
	if (fp->infos && fp->infos != fp->infos_private)
		munmap(fp->infos, fp->len[VIOMMU_SHM_READERS]);
	free(fp->infos_private);
	if (fp->bpf_base)
		munmap(fp->bpf_base, fp->data_len);
	viommu_xlate_bpf__destroy(fp->skel);
	if (fp->base)
		munmap(fp->base, fp->data_len);
	if (fp->shm_fd >= 0)
		close(fp->shm_fd);
	if (fp->fault_tx >= 0)
		close(fp->fault_tx);
	if (fp->fault_rx >= 0)
		close(fp->fault_rx);
	if (fp->priv)
		munmap(fp->priv, fp->priv_len);
	free(fp);
}

const struct viommu_fp_view *viommu_fastpath_view(const struct viommu_fastpath *fp)
{
	return &fp->view;
}

struct viommu_device *viommu_fastpath_device(const struct viommu_fastpath *fp)
{
	return fp->dev;
}

int viommu_fastpath_xdp_fd(const struct viommu_fastpath *fp)
{
	const struct viommu_xlate_bpf *skel = fp_skel(fp);

	return skel ? bpf_program__fd(skel->progs.viommu_xdp) : -ENODEV;
}

int viommu_fastpath_syscall_fd(const struct viommu_fastpath *fp)
{
	const struct viommu_xlate_bpf *skel = fp_skel(fp);

	return skel ? bpf_program__fd(skel->progs.viommu_xlate_batch) : -ENODEV;
}

int viommu_fastpath_bpf_stats(const struct viommu_fastpath *fp, struct viommu_stats *sum)
{
	const struct viommu_xlate_bpf *skel = fp_skel(fp);

	if (!skel) {
		memset(sum, 0, sizeof(*sum));
		return -ENODEV;
	}
	return viommu_stat_sum_bpf(bpf_map__fd(skel->maps.viommu_stats), sum);
}

/* One run of the syscall program over @n queries. */
static int bpf_batch_run(struct viommu_fastpath *fp, const struct viommu_query *q,
			 struct viommu_answer *a, unsigned n, bool report)
{
	struct viommu_batch b;
	LIBBPF_OPTS(bpf_test_run_opts, topts, .ctx_in = &b, .ctx_size_in = sizeof(b));

	b.n = n;
	b.report_faults = report;
	/* n == 0 may come with NULL arrays: memcpy must not see them (undefined even for 0 bytes). */
	if (n)
		memcpy(b.q, q, n * sizeof(*q));
	if (bpf_prog_test_run_opts(viommu_fastpath_syscall_fd(fp), &topts))
		return -errno;
	if (topts.retval)
		return -EINVAL;
	if (n)
		memcpy(a, b.a, n * sizeof(*a));
	return 0;
}

/* Concurrency: any thread (unlike the rest of this file): it only runs the syscall program on
 * batches on the caller's stack; the maps are the programs' own. The program answers MORE for
 * a range over more than VIOMMU_SPAN_MAX extents; such queries are continued in further runs
 * (one run for all of them each time) until every answer is final. */
int viommu_fastpath_bpf_translate(struct viommu_fastpath *fp, const struct viommu_query *q,
				  struct viommu_answer *a, unsigned n, bool report)
{
	struct viommu_query cq[VIOMMU_BULK_MAX];
	struct viommu_answer ca[VIOMMU_BULK_MAX];
	unsigned idx[VIOMMU_BULK_MAX], m;
	int err;

	if (n > VIOMMU_BULK_MAX)
		return -EINVAL;
	if (!fp_skel(fp))
		return -ENODEV; /* no BPF replica: viommu_fastpath_bpf_enable() on the device thread */
	if ((err = bpf_batch_run(fp, q, a, n, report)))
		return err;
	for (;;) {
		m = 0;
		for (unsigned i = 0; i < n; i++)
			if (a[i].result == VIOMMU_XLATE_MORE) {
				viommu_query_continue(&q[i], &a[i], &cq[m]);
				idx[m++] = i;
			}
		if (!m)
			return 0;
		if ((err = bpf_batch_run(fp, cq, ca, m, report)))
			return err;
		for (unsigned k = 0; k < m; k++) {
			struct viommu_answer *ai = &a[idx[k]];

			viommu_answer_fold(&q[idx[k]], ai, &ca[k]);
			/* A DMA past 2^64 faults only once folded: the program saw a HIT. */
			if (report && ai->result == VIOMMU_XLATE_FAULT && ca[k].result == VIOMMU_XLATE_HIT) {
				struct viommu_fault_rec rec = {
					.endpoint = q[idx[k]].endpoint, .reason = (__u8)ai->reason,
					.access = q[idx[k]].access & ~VIOMMU_QUERY_F_EXTENT,
					.address = ai->fault_addr,
				};
				LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &rec, .ctx_size_in = sizeof(rec));

				bpf_prog_test_run_opts(bpf_program__fd(fp_skel(fp)->progs.viommu_report_fault), &o);
			}
		}
	}
}

/* ---- counters ---- */

void viommu_fastpath_print_stat(struct viommu_fastpath *fp, FILE *out)
{
	fp_readers_summarise(fp);
	viommu_stat_print(fp->meta, fp->infos, fp->skel ? bpf_map__fd(fp->skel->maps.viommu_stats) : -1, out);
	{
		struct viommu_fastpath_mem m;

		if (!viommu_fastpath_memory(fp, &m))
			fprintf(out, "  memory         %.2f MiB shared (memfd, of %.1f MiB), BPF replica %s%.1f MiB\n",
				m.shm_bytes / 1048576.0, m.shm_size / 1048576.0, fp->skel ? "" : "none, ",
				m.bpf_bytes / 1048576.0);
	}
	if (fp->hash_full)
		fprintf(out, "  hash           %llu level-4 regions not indexed (bucket full)\n",
			(unsigned long long)fp->hash_full);
}

/* The kernel's own figure for a map: its fdinfo's "memlock:" line (what it charges). */
static uint64_t map_memlock(int fd)
{
	char path[64], line[128];
	uint64_t v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "memlock: %" SCNu64, &v) == 1)
			break;
	fclose(f);
	return v;
}

int viommu_fastpath_memory(const struct viommu_fastpath *fp, struct viommu_fastpath_mem *m)
{
	struct stat st;

	memset(m, 0, sizeof(*m));
	if (fstat(fp->shm_fd, &st))
		return -errno;
	m->shm_bytes = (uint64_t)st.st_blocks * 512;
	m->shm_size = fp->data_len;
	if (fp->skel) {
		for (int i = 0; i < VIOMMU_SHM_COUNT; i++)
			m->bpf_bytes += map_memlock(bpf_map__fd(fp->maps[i]));
		m->bpf_bytes += map_memlock(bpf_map__fd(fp->skel->maps.viommu_faults));
		m->bpf_bytes += map_memlock(bpf_map__fd(fp->skel->maps.viommu_stats));
	}
	return 0;
}
