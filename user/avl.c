// SPDX-License-Identifier: MIT
/* Intrusive AVL tree. Recursive insert/remove: the depth is at most ~1.44 log2(n) < 64. */
#include "avl.h"

#include <errno.h>
#include <stdbool.h>

static int h(const struct viommu_avl_node *n)
{
	return n ? n->height : 0;
}

static void fix(struct viommu_avl_node *n)
{
	int hl = h(n->left), hr = h(n->right);
	n->height = (hl > hr ? hl : hr) + 1;
}

static struct viommu_avl_node *rot_right(struct viommu_avl_node *n)
{
	struct viommu_avl_node *l = n->left;
	n->left = l->right;
	l->right = n;
	fix(n);
	fix(l);
	return l;
}

static struct viommu_avl_node *rot_left(struct viommu_avl_node *n)
{
	struct viommu_avl_node *r = n->right;
	n->right = r->left;
	r->left = n;
	fix(n);
	fix(r);
	return r;
}

static struct viommu_avl_node *balance(struct viommu_avl_node *n)
{
	int bf;

	fix(n);
	bf = h(n->left) - h(n->right);
	if (bf > 1) {
		if (h(n->left->left) < h(n->left->right))
			n->left = rot_left(n->left);
		return rot_right(n);
	}
	if (bf < -1) {
		if (h(n->right->right) < h(n->right->left))
			n->right = rot_right(n->right);
		return rot_left(n);
	}
	return n;
}

/*
 * Rebalance @n after one of its subtrees changed height, and report whether the height of the
 * subtree (now rooted at the return value) changed. When it did not, no ancestor can need
 * rebalancing, so the callers above stop: without this an insert or remove would read both
 * children of every node on the path, i.e. one extra cache miss per level in a large tree.
 */
static struct viommu_avl_node *rebalance(struct viommu_avl_node *n, bool *changed)
{
	int before = n->height;

	n = balance(n);
	*changed = n->height != before;
	return n;
}

static struct viommu_avl_node *insert(struct viommu_avl_node *root, struct viommu_avl_node *n,
				      int *err, bool *grew)
{
	if (!root) {
		n->left = n->right = NULL;
		n->height = 1;
		*grew = true;
		return n;
	}
	if (n->key < root->key)
		root->left = insert(root->left, n, err, grew);
	else if (n->key > root->key)
		root->right = insert(root->right, n, err, grew);
	else {
		*err = -EEXIST;
		*grew = false;
		return root;
	}
	return *grew ? rebalance(root, grew) : root;
}

int viommu_avl_insert(struct viommu_avl *t, struct viommu_avl_node *n)
{
	int err = 0;
	bool grew;

	t->root = insert(t->root, n, &err, &grew);
	if (!err)
		t->count++;
	return err;
}

static struct viommu_avl_node *remove_min(struct viommu_avl_node *n, struct viommu_avl_node **min,
					  bool *shrunk)
{
	if (!n->left) {
		*min = n;
		*shrunk = true;
		return n->right;
	}
	n->left = remove_min(n->left, min, shrunk);
	return *shrunk ? rebalance(n, shrunk) : n;
}

static struct viommu_avl_node *remove(struct viommu_avl_node *n, uint64_t key,
				      struct viommu_avl_node **out, bool *shrunk)
{
	if (!n) {
		*shrunk = false;
		return NULL;
	}
	if (key < n->key) {
		n->left = remove(n->left, key, out, shrunk);
	} else if (key > n->key) {
		n->right = remove(n->right, key, out, shrunk);
	} else {
		struct viommu_avl_node *min, *r;
		int before = n->height;

		*out = n;
		if (!n->right) {
			*shrunk = true;
			return n->left;
		}
		r = remove_min(n->right, &min, shrunk);
		min->right = r;
		min->left = n->left;
		min->height = before; /* min takes n's place; its height is n's until rebalanced */
		return *shrunk ? rebalance(min, shrunk) : min;
	}
	return *shrunk ? rebalance(n, shrunk) : n;
}

struct viommu_avl_node *viommu_avl_remove(struct viommu_avl *t, uint64_t key)
{
	struct viommu_avl_node *out = NULL;
	bool shrunk;

	t->root = remove(t->root, key, &out, &shrunk);
	if (out)
		t->count--;
	return out;
}

struct viommu_avl_node *viommu_avl_find(const struct viommu_avl *t, uint64_t key)
{
	struct viommu_avl_node *n = t->root;

	while (n && n->key != key)
		n = key < n->key ? n->left : n->right;
	return n;
}

struct viommu_avl_node *viommu_avl_floor(const struct viommu_avl *t, uint64_t key)
{
	struct viommu_avl_node *n = t->root, *best = NULL;

	while (n) {
		if (n->key == key)
			return n;
		if (n->key < key) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best;
}

struct viommu_avl_node *viommu_avl_ceil(const struct viommu_avl *t, uint64_t key)
{
	struct viommu_avl_node *n = t->root, *best = NULL;

	while (n) {
		if (n->key == key)
			return n;
		if (n->key > key) {
			best = n;
			n = n->left;
		} else {
			n = n->right;
		}
	}
	return best;
}

struct viommu_avl_node *viommu_avl_next(const struct viommu_avl *t, uint64_t key)
{
	return key == UINT64_MAX ? NULL : viommu_avl_ceil(t, key + 1);
}

struct viommu_avl_node *viommu_avl_first(const struct viommu_avl *t)
{
	struct viommu_avl_node *n = t->root;

	while (n && n->left)
		n = n->left;
	return n;
}

/* Height of @n's subtree if it is a valid AVL tree with keys in (lo, hi), else -1; counts nodes. */
static int check(const struct viommu_avl_node *n, const uint64_t *lo, const uint64_t *hi,
		 size_t *count)
{
	int hl, hr;

	if (!n)
		return 0;
	if ((lo && n->key <= *lo) || (hi && n->key >= *hi))
		return -1;
	(*count)++;
	hl = check(n->left, lo, &n->key, count);
	hr = check(n->right, &n->key, hi, count);
	if (hl < 0 || hr < 0 || hl - hr > 1 || hr - hl > 1)
		return -1;
	if (n->height != (hl > hr ? hl : hr) + 1)
		return -1;
	return n->height;
}

int viommu_avl_check(const struct viommu_avl *t)
{
	size_t count = 0;

	if (check(t->root, NULL, NULL, &count) < 0 || count != t->count)
		return -EUCLEAN;
	return 0;
}
