// SPDX-License-Identifier: MIT
/*
 * Checks of the fast path, for tests, the fuzzers and the replayer: the writer's self-check of
 * the whole shared state (against the device core's store, the BPF replica against the memfd, the
 * radix, the hash and the sparse index against each other) and the oracle that says whether a
 * fast-path answer agrees with the store's. Device thread (the self-check reads writer state).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fastpath_int.h"

/* ---- self-check (tests and the fuzzer) ---- */

struct fp_check {
	const struct viommu_fastpath *fp;
	uint8_t *ext_seen; /* one byte per record index below the high-water mark */
	uint32_t nodes, leaves, extents, solos;
	uint32_t walk; /* this domain's mappings the hash does not index */
	uint32_t wide; /* this domain's pieces of 1 GiB+ over its window (I13) */
	uint32_t wpieces; /* its 2 MiB pieces inside its window (VIOMMU_WIN_F_PIECES) */
	uint32_t win_leaves; /* window leaves reached */
	uint64_t pieces; /* piece window entries the radix accounts for (nonzero) */
};

/* Is @idx a leaf the writer handed out: below the pool's high-water mark, or the window leaf
 * of (@dslot, @base) while it is live (I13)? */
static bool leaf_ok(const struct viommu_fastpath *fp, uint32_t dslot, uint32_t idx, uint64_t base)
{
	uint32_t w = fp->dom_win[dslot];
	uint64_t wb, r;

	if (idx < fp->leaves_pool)
		return idx < fp->leaf_hwm;
	if (!w || idx >= fp->leaves_max || !fp->win_live[idx - fp->leaves_pool])
		return false;
	wb = fp->wins[dslot].base & ~VIOMMU_WIN_F_MASK;
	r = (base - wb) >> VIOMMU_HASH_SHIFT;
	return base >= wb && r < fp->win_regions && idx == fp->leaves_pool + (w - 1) * fp->win_regions + r;
}

/* Does domain @dslot's window hold @addr? */
static bool win_holds(const struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr)
{
	uint64_t wb = fp->wins[dslot].base & ~VIOMMU_WIN_F_MASK;

	return fp->dom_win[dslot] && addr >= wb && ((addr - wb) >> VIOMMU_HASH_SHIFT) < fp->win_regions;
}

static int see_record(struct fp_check *c, uint32_t xi)
{
	if (xi >= c->fp->ext_hwm)
		return -EUCLEAN;
	if (!c->ext_seen[xi]) {
		c->ext_seen[xi] = 1;
		c->extents++;
	}
	return 0;
}

/* Leaf @idx must be the live leaf (@gen) of (@dslot, @base): every page with a record has the
 * PTE that record gives it, present (no MAP is half-published between requests); a solo page
 * (a one-page mapping, no record) a present solo PTE; every other PTE is 0. */
static int check_leaf(struct fp_check *c, uint32_t dslot, uint32_t idx, uint32_t gen, uint64_t base)
{
	const struct viommu_fastpath *fp = c->fp;
	const struct viommu_leaf *f;
	uint32_t used = 0;

	if (!leaf_ok(fp, dslot, idx, base))
		return -EUCLEAN;
	c->win_leaves += idx >= fp->leaves_pool;
	f = &fp->leaves[idx];
	if ((f->seq & 1) || f->seq != gen || f->domain_slot != dslot || f->base != base)
		return -EUCLEAN;
	c->leaves++;
	for (uint32_t si = 0; si < VIOMMU_RADIX_FANOUT; si++) {
		uint64_t page = base + ((uint64_t)si << VIOMMU_PAGE_SHIFT);
		const struct viommu_extent_rec *x;
		uint32_t xi = f->ext[si];

		if (!xi) {
			if (fp->ptes[idx].pte[si])
				return -EUCLEAN;
			continue;
		}
		used++;
		if (xi == VIOMMU_EXT_SOLO) {
			uint64_t pte = fp->ptes[idx].pte[si];

			/* What the store says of it is checked from the store's side (check_record). */
			if ((pte & 0xfffull & ~(uint64_t)(VIOMMU_PTE_SOLO | VIOMMU_PTE_PRESENT |
							 (VIOMMU_MAP_F_MASK << 1))) ||
			    !(pte & VIOMMU_PTE_SOLO) || !(pte & VIOMMU_PTE_PRESENT))
				return -EUCLEAN;
			c->solos++;
			continue;
		}
		if (see_record(c, xi - 1))
			return -EUCLEAN;
		x = &fp->exts[xi - 1];
		if ((x->seq & 1) || x->domain_slot != dslot || page < x->start || page + 0xfff > x->end ||
		    fp->ptes[idx].pte[si] != VIOMMU_PTE_MAKE(x->phys + (page - x->start), x->flags))
			return -EUCLEAN;
	}
	if (used != fp->leaf_used[idx] || !used)
		return -EUCLEAN; /* I2: no empty leaf stays linked */
	return 0;
}

/* What the hash holds for the level-4 slot word @w of the region at @start: the word, or for a
 * 2 MiB piece of a live (published) record its direct value (I6). */
static uint64_t hash_value(const struct viommu_fastpath *fp, uint64_t w, uint64_t start)
{
	const struct viommu_extent_rec *x;

	if (VIOMMU_SLOT_TAG(w) != VIOMMU_SLOT_EXTENT || VIOMMU_SLOT_IDX(w) >= fp->ext_hwm)
		return w;
	x = &fp->exts[VIOMMU_SLOT_IDX(w)];
	if (x->seq & 1)
		return w;
	return VIOMMU_HASH_DIRECT_MAKE(x->phys + (start - x->start), x->flags);
}

/* What the hash may hold instead for the level-4 slot word @w of a leaf outside the windows
 * whose one page is a one-page mapping: that page's direct value (VIOMMU_HASH_LONE, I6); else 0,
 * which no key's value is. check_leaf() has checked the leaf. */
static uint64_t lone_value(const struct viommu_fastpath *fp, uint64_t w)
{
	uint32_t li = VIOMMU_SLOT_IDX(w);

	if (VIOMMU_SLOT_TAG(w) != VIOMMU_SLOT_LEAF || li >= fp->leaves_pool || fp->leaf_used[li] != 1)
		return 0;
	for (uint32_t si = 0; si < VIOMMU_RADIX_FANOUT; si++) {
		uint64_t pte = fp->ptes[li].pte[si];

		if (pte)
			return (pte & VIOMMU_PTE_SOLO) && (pte & VIOMMU_PTE_PRESENT) &&
					       !(VIOMMU_PTE_PA(pte) & ~VIOMMU_HASH_LONE_PA_MASK) ?
				       VIOMMU_HASH_LONE_MAKE(VIOMMU_PTE_PA(pte), VIOMMU_PTE_FLAGS(pte), si) :
				       0;
	}
	return 0;
}

/* Node @idx must be the live node (@gen) of (@dslot, @level, @base); walk its slots. */
static int check_node(struct fp_check *c, uint32_t dslot, uint32_t idx, uint32_t gen, int level,
		      uint64_t base)
{
	const struct viommu_fastpath *fp = c->fp;
	const struct viommu_node *n;
	uint32_t used = 0;

	if (idx >= fp->node_hwm)
		return -EUCLEAN;
	n = &fp->nodes[idx];
	if ((n->seq & 1) || (gen != ~0u && n->seq != gen) || n->level != level ||
	    n->domain_slot != dslot || n->base != base)
		return -EUCLEAN;
	c->nodes++;
	for (uint32_t si = 0; si < VIOMMU_RADIX_FANOUT; si++) {
		uint64_t w = n->slot[si], start = base + ((uint64_t)si << VIOMMU_LEVEL_SHIFT(level));
		uint64_t last = start + ((1ull << VIOMMU_LEVEL_SHIFT(level)) - 1);
		int err = 0;

		if (!w)
			continue;
		used++;
		if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_LEAF) {
			if (level != VIOMMU_RADIX_LEVELS - 2 ||
			    (err = check_leaf(c, dslot, VIOMMU_SLOT_IDX(w), VIOMMU_SLOT_GEN(w), start)))
				return err ? err : -EUCLEAN;
		} else if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_NODE) {
			if (level >= VIOMMU_RADIX_LEVELS - 2)
				return -EUCLEAN;
			if ((err = check_node(c, dslot, VIOMMU_SLOT_IDX(w), VIOMMU_SLOT_GEN(w), level + 1,
					      start)))
				return err;
		} else if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EXTENT) {
			const struct viommu_extent_rec *x;
			uint32_t xi = VIOMMU_SLOT_IDX(w);

			if (see_record(c, xi))
				return -EUCLEAN;
			x = &fp->exts[xi];
			if (x->seq != VIOMMU_SLOT_GEN(w) || (x->seq & 1) || x->domain_slot != dslot ||
			    start < x->start || last > x->end)
				return -EUCLEAN;
			/* I13: the pieces of 1 GiB or more over the window counted; a published 2 MiB
			 * piece in the piece window (which holds the window) is its direct value there,
			 * and inside the window no leaf of its region is linked (the slot is the piece). */
			if (fp->dom_win[dslot]) {
				uint64_t wb = fp->wins[dslot].base & ~VIOMMU_WIN_F_MASK;
				uint64_t we = wb + ((uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT) - 1;

				if (level < VIOMMU_HASH_LEVEL && start <= we && last >= wb) {
					/* And the word of every region of the window it covers busy. */
					c->wide++;
					for (uint64_t a = start > wb ? start : wb; a <= (last < we ? last : we) && a >= wb;
					     a += 1ull << VIOMMU_HASH_SHIFT) {
						const __u64 *pe = fp_piece_word(fp, dslot, a);

						if (!pe || *pe != VIOMMU_PIECE_BUSY)
							return -EUCLEAN;
						c->pieces++;
					}
				}
				if (level == VIOMMU_HASH_LEVEL && start >= wb && start <= we && !fp_piece_word(fp, dslot, start))
					return -EUCLEAN;
			}
			if (level == VIOMMU_HASH_LEVEL) {
				const __u64 *pe = fp_piece_word(fp, dslot, start);
				uint64_t v = hash_value(fp, w, start);

				if (pe && *pe != (VIOMMU_SLOT_TAG(v) == VIOMMU_HASH_DIRECT ? v : 0))
					return -EUCLEAN;
				c->pieces += pe && *pe;
				c->wpieces += pe && VIOMMU_SLOT_TAG(*pe) == VIOMMU_HASH_DIRECT && win_holds(fp, dslot, start);
			}
		} else {
			return -EUCLEAN;
		}
		/* The hash holds a level-4 slot's word or nothing (I6). */
		if (level == VIOMMU_HASH_LEVEL) {
			uint64_t key = VIOMMU_HASH_KEY(dslot, start);
			const struct viommu_hash_bucket *b[2] = {
				&fp->buckets[viommu_hash_index(key, fp->view.hash_mask)],
				&fp->buckets[viommu_hash_alt(key, fp->view.hash_mask)],
			};
			int seen = 0;

			for (int i = 0; i < (b[0] == b[1] ? 1 : 2); i++)
				for (int wy = 0; wy < VIOMMU_HASH_WAYS; wy++)
					if (b[i]->key[wy] == key) {
						if (b[i]->val[wy] != hash_value(fp, w, start) &&
						    b[i]->val[wy] != lone_value(fp, w))
							return -EUCLEAN;
						seen++;
					}
			if (seen > 1)
				return -EUCLEAN; /* a key once in the table */
			c->walk += !seen;
		} else if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EXTENT) {
			c->walk++; /* a piece above level 4: never in the hash */
		}
	}
	if (used != fp->node_used[idx] || (level > 0 && !used))
		return -EUCLEAN; /* I2: no empty non-root node stays linked */
	return 0;
}

static int viommu_fastpath_check_radix(const struct viommu_fastpath *fp, uint64_t store_extents,
				       uint64_t store_solos);

/* Domain @d's window entry says what the writer holds (I13): none, or its window's leaves and
 * an aligned base, VIOMMU_WIN_F_WIDE exactly while @wide pieces of 1 GiB+ lie over it,
 * VIOMMU_WIN_F_PIECES exactly while @wpieces 2 MiB pieces lie inside it. */
static int check_window(const struct viommu_fastpath *fp, uint32_t d, uint32_t wide, uint32_t wpieces)
{
	const struct viommu_window *w = &fp->wins[d];
	uint32_t n = fp->dom_win[d];
	uint64_t span = (uint64_t)fp->win_regions << VIOMMU_HASH_SHIFT;

	if (!n)
		return w->regions || w->base || w->leaf || w->pregions || w->pbase || w->pfirst || fp->dom_wide[d] ||
				       fp->dom_wpieces[d] ?
			       -EUCLEAN : 0;
	if (w->pregions != fp->piece_regions || w->pfirst != (n - 1) * fp->piece_regions ||
	    (w->pbase & (((uint64_t)fp->piece_regions << VIOMMU_HASH_SHIFT) - 1)))
		return -EUCLEAN;
	if (n > fp->windows_max || w->regions != fp->win_regions ||
	    w->leaf != fp->leaves_pool + (n - 1) * fp->win_regions ||
	    ((w->base & ~VIOMMU_WIN_F_MASK) & (span - 1)) ||
	    (w->base & VIOMMU_WIN_F_MASK) != ((wide ? VIOMMU_WIN_F_WIDE : 0) | (wpieces ? VIOMMU_WIN_F_PIECES : 0)) ||
	    fp->dom_wide[d] != wide || fp->dom_wpieces[d] != wpieces)
		return -EUCLEAN;
	return 0;
}

/* The shared state says what the store says: every endpoint's entry, every extent's record
 * (or a one-page extent's solo PTE). */
struct fp_check_store {
	const struct viommu_fastpath *fp;
	uint8_t *dom_seen;
	uint64_t extents, solos;
	uint64_t attached; /* endpoints attached to a domain */
};

/* Is entry @i on domain slot @d's list of attached entries (win_flags_store() moves their
 * seqs), its links both ways right? A list longer than the table is a loop: not. */
static bool dom_list_holds(const struct viommu_fastpath *fp, uint32_t d, int64_t i)
{
	uint32_t n = 0, prev = 0;

	for (uint32_t k = fp->dom_ep1[d]; k && n < VIOMMU_EP_ENTRIES; prev = k, k = fp->ep_dnext[k - 1], n++) {
		if (fp->ep_dprev[k - 1] != prev)
			return false;
		if (k == (uint64_t)i + 1)
			return true;
	}
	return false;
}

/* The entries on every domain slot's list, each at most VIOMMU_EP_ENTRIES. */
static uint64_t dom_lists_len(const struct viommu_fastpath *fp)
{
	uint64_t total = 0;

	for (uint32_t d = 0; d < fp->dom_slots; d++) {
		uint32_t n = 0;

		for (uint32_t k = fp->dom_ep1[d]; k && n <= VIOMMU_EP_ENTRIES; k = fp->ep_dnext[k - 1])
			n++;
		total += n;
	}
	return total;
}

/* The record the radix of domain slot @dslot names for @iova, or -1; VIOMMU_EXT_SOLO, and the
 * page's PTE in *@pte, for a solo page. */
static int64_t record_at(const struct viommu_fastpath *fp, uint32_t dslot, uint64_t iova, uint64_t *pte)
{
	uint32_t idx = fp->dom_root[dslot];

	for (int l = 0; l < VIOMMU_RADIX_LEVELS - 1; l++) {
		uint64_t w = fp->nodes[idx].slot[VIOMMU_SLOT_OF(l, iova)];

		if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_EXTENT)
			return VIOMMU_SLOT_IDX(w);
		if (VIOMMU_SLOT_TAG(w) == VIOMMU_SLOT_LEAF) {
			uint32_t xi;

			if (l != VIOMMU_RADIX_LEVELS - 2 ||
			    !leaf_ok(fp, dslot, VIOMMU_SLOT_IDX(w), iova & VIOMMU_COVER_MASK(VIOMMU_RADIX_LEVELS - 1)))
				return -1;
			xi = fp->leaves[VIOMMU_SLOT_IDX(w)].ext[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova)];
			*pte = fp->ptes[VIOMMU_SLOT_IDX(w)].pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova)];
			if (xi == VIOMMU_EXT_SOLO)
				return VIOMMU_EXT_SOLO;
			return xi ? (int64_t)xi - 1 : -1;
		}
		if (VIOMMU_SLOT_TAG(w) != VIOMMU_SLOT_NODE || VIOMMU_SLOT_IDX(w) >= fp->node_hwm)
			return -1;
		idx = VIOMMU_SLOT_IDX(w);
	}
	return -1;
}

struct record_check {
	struct fp_check_store *c;
	uint32_t dslot;
};

/* The record the radix names for extent @x is live and says what @x says. */
static int check_record(const struct viommu_extent *x, void *arg)
{
	struct record_check *rc = arg;
	const struct viommu_fastpath *fp = rc->c->fp;
	uint64_t pte = 0;
	int64_t ri = record_at(fp, rc->dslot, x->start, &pte);
	const struct viommu_extent_rec *r;

	if (ri == VIOMMU_EXT_SOLO) { /* exactly this one page, its PTE the whole mapping */
		if (x->end - x->start != (1ull << VIOMMU_PAGE_SHIFT) - 1 ||
		    pte != (VIOMMU_PTE_MAKE(x->phys, x->flags) | VIOMMU_PTE_SOLO))
			return -EUCLEAN;
		rc->c->solos++;
		return 0;
	}
	/* A mapping of one page is always solo: a record for one would be the writer's slip. */
	if (ri < 0 || ri >= fp->ext_hwm || x->end - x->start == (1ull << VIOMMU_PAGE_SHIFT) - 1)
		return -EUCLEAN;
	r = &fp->exts[ri];
	if ((r->seq & 1) || r->domain_slot != rc->dslot || r->start != x->start || r->end != x->end ||
	    r->phys != x->phys || r->flags != x->flags)
		return -EUCLEAN;
	rc->c->extents++;
	return 0;
}

static int check_domain_records(struct fp_check_store *c, const struct viommu_domain *d)
{
	struct record_check rc = { c, d->slot };

	if (c->dom_seen[d->slot])
		return 0;
	c->dom_seen[d->slot] = 1;
	return viommu_domain_for_each_extent(d, check_record, &rc);
}

static int check_endpoint(const struct viommu_endpoint *ep, void *arg)
{
	struct fp_check_store *c = arg;
	const struct viommu_fastpath *fp = c->fp;
	enum viommu_ep_state st = viommu_device_endpoint_state(fp->dev, ep->id);
	int64_t i = fp_ep_index_find((struct viommu_fastpath *)fp, ep->id, false);
	const struct viommu_ep_entry *e;

	if (i < 0)
		return st == VIOMMU_EP_UNKNOWN ? 0 : -EUCLEAN;
	e = &fp->eps[i];
	if ((e->seq & 1) || e->state != (uint8_t)st)
		return -EUCLEAN;
	if (st == VIOMMU_EP_ATTACHED &&
	    (e->domain_slot != ep->domain->slot || e->root != fp->dom_root[ep->domain->slot] ||
	     !dom_list_holds(fp, e->domain_slot, i)))
		return -EUCLEAN;
	c->attached += st == VIOMMU_EP_ATTACHED;
	/* Every domain with an endpoint, translated or not (no ACCESS_PLATFORM, bypass). */
	return ep->domain ? check_domain_records(c, ep->domain) : 0;
}

/* Nonzero entries of viommu_pieces, read where the memfd has data only (reading its holes
 * would allocate them). */
static uint64_t count_piece_entries(const struct viommu_fastpath *fp)
{
	off_t pos = (off_t)fp->off[VIOMMU_SHM_PIECES], end = pos + (off_t)fp->len[VIOMMU_SHM_PIECES];
	uint64_t n = 0;

	while (pos < end) {
		off_t d = lseek(fp->shm_fd, pos, SEEK_DATA), h;

		if (d < 0 || d >= end)
			break;
		h = lseek(fp->shm_fd, d, SEEK_HOLE);
		if (h < 0 || h > end)
			h = end;
		for (off_t k = d; k < h; k += 8)
			n += *(const __u64 *)(fp->base + k) != 0;
		pos = h;
	}
	return n;
}

/* The BPF replica is the memfd, byte for byte: where the memfd has data, the same bytes; where
 * it has a hole (never touched), zeros (read from the replica only: reading the memfd's holes
 * would allocate them). */
static int check_replica(const struct viommu_fastpath *fp)
{
	static const char zero[4096];
	const char *rep = fp->base + fp->replica_delta;
	off_t pos = 0, end = (off_t)fp->data_len;

	if (!fp->replica_delta)
		return 0;
	while (pos < end) {
		off_t d = lseek(fp->shm_fd, pos, SEEK_DATA), h;

		if (d < 0)
			d = end; /* ENXIO: no data past pos */
		for (off_t k = pos; k < d; k += (off_t)sizeof(zero)) { /* a hole: zero in the replica */
			size_t n = d - k < (off_t)sizeof(zero) ? (size_t)(d - k) : sizeof(zero);

			if (memcmp(rep + k, zero, n))
				return -EUCLEAN;
		}
		if (d == end)
			break;
		h = lseek(fp->shm_fd, d, SEEK_HOLE);
		if (h < 0 || h > end)
			h = end;
		if (memcmp(fp->base + d, rep + d, (size_t)(h - d)))
			return -EUCLEAN;
		pos = h;
	}
	return 0;
}

int viommu_fastpath_check(const struct viommu_fastpath *fp)
{
	struct fp_check_store cs = { .fp = fp };
	int serr;

	/* First: the shared state against the store (a map written by anyone but the writer, e.g.
	 * through a pin, differs from it), and the BPF replica against the memfd. */
	cs.dom_seen = calloc(VIOMMU_DOMAINS_MAX, 1);
	if (!cs.dom_seen)
		return -ENOMEM;
	serr = viommu_device_for_each_endpoint(fp->dev, check_endpoint, &cs);
	free(cs.dom_seen);
	if (serr || dom_lists_len(fp) != cs.attached) /* the lists hold the attached, no more */
		return -EUCLEAN;
	if (check_replica(fp))
		return -EUCLEAN;
	return viommu_fastpath_check_radix(fp, cs.extents, cs.solos);
}

static int viommu_fastpath_check_radix(const struct viommu_fastpath *fp, uint64_t store_extents,
				       uint64_t store_solos)
{
	struct fp_check c = { .fp = fp };
	uint32_t domains = 0;
	int err = 0;

	c.ext_seen = calloc(fp->ext_hwm + 1, 1);
	if (!c.ext_seen)
		return -ENOMEM;
	for (uint32_t d = 0; d < fp->dom_slots && !err; d++) {
		if (!fp->dom_live[d])
			continue;
		domains++;
		c.walk = c.wide = c.wpieces = 0;
		err = check_node(&c, d, fp->dom_root[d], ~0u, 0, 0);
		/* The root says "walk on a hash miss" exactly while the hash leaves something out (I6). */
		if (!err && (c.walk != fp->dom_walk[d] ||
			     fp->nodes[fp->dom_root[d]].flags != (c.walk ? VIOMMU_ROOT_F_WALK : 0u)))
			err = -EUCLEAN;
		if (!err && (err = check_window(fp, d, c.wide, c.wpieces)))
			break;
		for (uint32_t e = d + 1; e < fp->dom_slots && !err; e++) /* a window has one owner */
			if (fp->dom_live[e] && fp->dom_win[d] && fp->dom_win[e] == fp->dom_win[d])
				err = -EUCLEAN;
	}
	free(c.ext_seen);
	if (err)
		return err;
	/* Every nonzero piece window entry is one the radix accounts for (no stray translation). */
	if (count_piece_entries(fp) != c.pieces)
		return -EUCLEAN;
	/* Every node and record in use is reachable: nothing leaked. */
	{
		uint32_t live = 0; /* window leaves live: exactly those reached */

		for (size_t i = 0; i < (size_t)fp->windows_max * fp->win_regions; i++)
			live += fp->win_live[i];
		if (live != c.win_leaves)
			return -EUCLEAN;
	}
	if (domains != fp->meta->domains_used || c.nodes != fp->meta->nodes_used ||
	    c.leaves != fp->meta->leaves_used || c.extents != fp->meta->extents_used ||
	    fp->node_free_n + fp->meta->nodes_used != fp->node_hwm ||
	    fp->leaf_free_n + fp->meta->leaves_used - c.win_leaves != fp->leaf_hwm ||
	    fp->ext_free_n + fp->meta->extents_used != fp->ext_hwm)
		return -EUCLEAN;
	/* A domain lives while it has an endpoint: the records reached from the store's domains
	 * are exactly the live ones. */
	if (store_extents != c.extents || store_solos != c.solos || c.solos != fp->meta->solo_used)
		return -EUCLEAN;
	/* The sparse endpoint index (I8): every id once, above the dense range, naming its own
	 * entry, reachable by linear probing from its home within meta.ep_probes slots. */
	{
		uint32_t n = 0;

		for (uint32_t i = 0; i < VIOMMU_EP_INDEX_SLOTS; i++) {
			uint64_t v = fp->ep_index[i];
			uint32_t id = VIOMMU_EP_INDEX_ID(v), e = VIOMMU_EP_INDEX_ENTRY(v), h, d;

			if (!v)
				continue;
			n++;
			h = viommu_ep_hash(id);
			d = (i - h) & (VIOMMU_EP_INDEX_SLOTS - 1);
			if (id < VIOMMU_EP_DENSE || e < VIOMMU_EP_DENSE ||
			    e >= VIOMMU_EP_DENSE + fp->sparse_used || d >= fp->meta->ep_probes ||
			    fp->meta->ep_probes > VIOMMU_EP_INDEX_PROBES_MAX)
				return -EUCLEAN;
			for (uint32_t k = 0; k < d; k++)
				if (!fp->ep_index[(h + k) & (VIOMMU_EP_INDEX_SLOTS - 1)])
					return -EUCLEAN; /* a reader would stop at this hole */
			for (uint32_t j = 0; j < i; j++)
				if (fp->ep_index[j] && (VIOMMU_EP_INDEX_ID(fp->ep_index[j]) == id ||
							VIOMMU_EP_INDEX_ENTRY(fp->ep_index[j]) == e))
					return -EUCLEAN;
		}
		if (n != fp->sparse_used)
			return -EUCLEAN;
	}
	/* Every hash entry is a live domain's non-empty level-4 slot, with its word or, for a lone
	 * page, the page's direct value (I6). */
	for (uint32_t b = 0; b <= fp->view.hash_mask; b++) {
		/* Between requests no key is leaving a way: every seq even; the pads 0 (a key is
		 * 2^43 or more, so the lane that holds seq never matches one, I6). */
		if ((fp->buckets[b].seq & 1) || fp->buckets[b].pad || fp->buckets[b].pad2)
			return -EUCLEAN;
		for (int w = 0; w < VIOMMU_HASH_WAYS; w++) {
			uint64_t key = fp->buckets[b].key[w], iova, word = 0;
			uint32_t d = VIOMMU_HASH_KEY_DSLOT(key), idx;

			if (!key)
				continue;
			if (!(key >> VIOMMU_HASH_KEY_SHIFT) || d >= VIOMMU_DOMAINS_MAX || !fp->dom_live[d] ||
			    (b != viommu_hash_index(key, fp->view.hash_mask) &&
			     b != viommu_hash_alt(key, fp->view.hash_mask)))
				return -EUCLEAN; /* not in one of its two buckets: no reader finds it */
			iova = VIOMMU_HASH_KEY_IOVA(key);
			idx = fp->dom_root[d];
			for (int l = 0; l <= VIOMMU_HASH_LEVEL; l++) {
				word = fp->nodes[idx].slot[VIOMMU_SLOT_OF(l, iova)];
				if (l < VIOMMU_HASH_LEVEL && VIOMMU_SLOT_TAG(word) != VIOMMU_SLOT_NODE)
					return -EUCLEAN;
				idx = VIOMMU_SLOT_IDX(word);
			}
			if (!word || (hash_value(fp, word, iova) != fp->buckets[b].val[w] &&
				      lone_value(fp, word) != fp->buckets[b].val[w]))
				return -EUCLEAN;
		}
	}
	return 0;
}

/* A HIT agrees with the store's: the same PA, and ext_* the whole extent when the query asked
 * for it or its range crosses a page; otherwise a run of that extent holding the query (at least
 * its page: VIOMMU_QUERY_F_EXTENT). */
static bool hit_agrees(const struct viommu_query *q, const struct viommu_answer *want,
		       const struct viommu_answer *got)
{
	uint64_t last = q->iova + (q->size ? q->size - 1 : 0);

	if (got->pa != want->pa)
		return false;
	if ((q->access & VIOMMU_QUERY_F_EXTENT) || ((q->iova ^ last) >> VIOMMU_PAGE_SHIFT))
		return got->ext_start == want->ext_start && got->ext_end == want->ext_end &&
		       got->ext_phys == want->ext_phys && got->ext_flags == want->ext_flags;
	return got->ext_start >= want->ext_start && got->ext_end <= want->ext_end &&
	       got->ext_start <= q->iova && got->ext_end >= last &&
	       got->ext_phys == want->ext_phys + (got->ext_start - want->ext_start) &&
	       got->ext_flags == want->ext_flags;
}

bool viommu_fastpath_agrees(const struct viommu_query *q, const struct viommu_answer *want,
			    const struct viommu_answer *got)
{
	uint64_t last = q->iova + (q->size ? q->size - 1 : 0);
	uint32_t acc = q->access & ~VIOMMU_QUERY_F_EXTENT;

	if (got->result == VIOMMU_XLATE_MORE) {
		/* The checked part [iova, next - 1] is mapped with the access: the store's final
		 * answer is a HIT with the same first extent, or a fault past the checked part, or
		 * the fault of a DMA past 2^64 (at its first byte). */
		bool wraps = last < q->iova;

		if (got->next <= q->iova || (!wraps && got->next > last) ||
		    got->ext_start > q->iova || got->ext_end < q->iova ||
		    got->pa != got->ext_phys + (q->iova - got->ext_start) ||
		    (got->ext_flags & acc) != acc)
			return false;
		if (want->result == VIOMMU_XLATE_HIT)
			return got->pa == want->pa && got->ext_start == want->ext_start &&
			       got->ext_end == want->ext_end;
		return want->result == VIOMMU_XLATE_FAULT && want->reason == VIOMMU_FAULT_R_MAPPING &&
		       (want->fault_addr >= got->next || (wraps && want->fault_addr == q->iova));
	}
	if (got->result != want->result)
		return false;
	switch (want->result) {
	case VIOMMU_XLATE_HIT:
		return hit_agrees(q, want, got);
	case VIOMMU_XLATE_IDENTITY:
		return got->pa == want->pa;
	case VIOMMU_XLATE_FAULT:
		return got->reason == want->reason && got->fault_addr == want->fault_addr;
	default:
		return false;
	}
}
