/* SPDX-License-Identifier: MIT */
/*
 * viommu_btree: a B+tree from u64 keys to pointers, for each domain's extent set in the device
 * core. Up to 32 keys per node, so a million extents are 4-5 levels deep instead of an AVL
 * tree's ~25: a MAP or UNMAP touches a handful of cache lines, not a chain of scattered nodes.
 * Leaves are linked both ways, so floor / ceil / next are one descent.
 *
 * Every operation is O(log n). Insert allocates (a split) and can fail with -ENOMEM, leaving the
 * tree unchanged; remove never fails. Values are the caller's; the tree never frees them.
 *
 * Concurrency: none. The device thread is the only user.
 */
#ifndef VIOMMU_BTREE_H
#define VIOMMU_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct viommu_btree_node;

struct viommu_btree {
	struct viommu_btree_node *root; /* NULL when empty */
	size_t count;
	/* NULL, or a leaf of this tree (viommu_btree_check() says so): the one the last insert
	 * or removal without a split or merge changed. A key between its first and last keys is
	 * in it (the separators above a leaf bound its keys), so an insert or removal of one needs
	 * no descent: an UNMAP of what a MAP just mapped, a MAP beside one. A merge, which frees
	 * a leaf, clears it first. */
	struct viommu_btree_node *finger;
};

static inline void viommu_btree_init(struct viommu_btree *t)
{
	t->root = NULL;
	t->count = 0;
	t->finger = NULL;
}

/* Frees every node; calls @fn (if not NULL) on every value first. The tree is then empty. */
void viommu_btree_destroy(struct viommu_btree *t, void (*fn)(void *val));
/* 0, -EEXIST (key present: unchanged), -ENOMEM (unchanged). @val must not be NULL. */
int viommu_btree_insert(struct viommu_btree *t, uint64_t key, void *val);
/* The same, in the same descent, unless @refuse (not NULL) says no, asked at the place found:
 * @pred the value of the greatest key < @key, @succ_key and @succ those of the smallest key >
 * @key (NULL when none). Also -EBUSY (refused: unchanged). */
typedef int viommu_btree_refuse_fn(void *arg, void *pred, uint64_t succ_key, void *succ);
int viommu_btree_insert_if(struct viommu_btree *t, uint64_t key, void *val, viommu_btree_refuse_fn *refuse,
			   void *arg);
/* Removes @key; returns its value, or NULL if absent. */
void *viommu_btree_remove(struct viommu_btree *t, uint64_t key);
/* The same, in the same descent, only if @take (not NULL) says yes, asked with the value found:
 * NULL (absent, or not taken: unchanged) or the value removed. */
typedef bool viommu_btree_take_fn(void *arg, void *val);
void *viommu_btree_remove_if(struct viommu_btree *t, uint64_t key, viommu_btree_take_fn *take, void *arg);
/* The value of exactly @key, of the greatest key <= @key, of the smallest key >= @key, of the
 * smallest key > @key, of the smallest key; or NULL. @found_key (may be NULL) gets the key. */
void *viommu_btree_find(const struct viommu_btree *t, uint64_t key);
void *viommu_btree_floor(const struct viommu_btree *t, uint64_t key, uint64_t *found_key);
void *viommu_btree_ceil(const struct viommu_btree *t, uint64_t key, uint64_t *found_key);
void *viommu_btree_next(const struct viommu_btree *t, uint64_t key, uint64_t *found_key);
void *viommu_btree_first(const struct viommu_btree *t, uint64_t *found_key);
/* Checks the whole tree: keys ordered within and across nodes, separators bound their subtrees,
 * every leaf at one depth, node fill (non-root nodes at least half full), leaf links, count.
 * 0 or -EUCLEAN. O(n); for tests and the fuzzer. */
int viommu_btree_check(const struct viommu_btree *t);

#endif
