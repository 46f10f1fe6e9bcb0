/* SPDX-License-Identifier: MIT */
/*
 * viommu_avl: an intrusive AVL tree keyed by a u64, used by the control plane for
 * the extent set of each domain, the domain table and the endpoint table.
 *
 * Every operation is O(log n). No allocation: the caller embeds a
 * struct viommu_avl_node in its own object and owns its memory.
 *
 * Concurrency: none. The device thread is the only user (one writer, no readers).
 */
#ifndef VIOMMU_AVL_H
#define VIOMMU_AVL_H

#include <stddef.h>
#include <stdint.h>

struct viommu_avl_node {
	struct viommu_avl_node *left, *right;
	uint64_t key;
	int height;
};

struct viommu_avl {
	struct viommu_avl_node *root;
	size_t count;
};

#define viommu_avl_entry(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

static inline void viommu_avl_init(struct viommu_avl *t)
{
	t->root = NULL;
	t->count = 0;
}

/* Insert @n with n->key set. Returns 0, or -EEXIST if the key is present (tree unchanged). */
int viommu_avl_insert(struct viommu_avl *t, struct viommu_avl_node *n);
/* Remove the node whose key is @key; returns it, or NULL if absent. */
struct viommu_avl_node *viommu_avl_remove(struct viommu_avl *t, uint64_t key);
/* The node with exactly @key, or NULL. */
struct viommu_avl_node *viommu_avl_find(const struct viommu_avl *t, uint64_t key);
/* The node with the greatest key <= @key, or NULL. */
struct viommu_avl_node *viommu_avl_floor(const struct viommu_avl *t, uint64_t key);
/* The node with the smallest key >= @key, or NULL. */
struct viommu_avl_node *viommu_avl_ceil(const struct viommu_avl *t, uint64_t key);
/* The node with the smallest key > @key, or NULL. */
struct viommu_avl_node *viommu_avl_next(const struct viommu_avl *t, uint64_t key);
/* The node with the smallest key, or NULL. */
struct viommu_avl_node *viommu_avl_first(const struct viommu_avl *t);
/* Checks the whole tree (keys ordered, heights right, balanced, count right): 0 or -EUCLEAN.
 * O(n); for tests and the fuzzer. */
int viommu_avl_check(const struct viommu_avl *t);

#endif
