// SPDX-License-Identifier: MIT
/*
 * B+tree (btree.h). Values live in the leaves; an internal node with n keys has n + 1 children,
 * and its key[j] separates child[j] (keys < key[j]) from child[j + 1] (keys >= key[j]).
 * Non-root nodes hold BT_MIN..BT_MAX keys. Nodes have room for one key more than BT_MAX: an
 * insert first overflows a node, then splits it.
 *
 * Insert allocates every node it may need on the way down and changes nothing until the way
 * back up, so -ENOMEM leaves the tree as it was.
 */
#include "btree.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define BT_MAX 32
#define BT_MIN (BT_MAX / 2)

struct viommu_btree_node {
	uint32_t n;
	uint32_t leaf;
	struct viommu_btree_node *prev, *next; /* leaves: in key order */
	uint64_t key[BT_MAX + 1];
	void *ptr[BT_MAX + 2]; /* leaf: values [0, n); internal: children [0, n] */
};

typedef struct viommu_btree_node node_t;

static node_t *node_new(bool leaf)
{
	node_t *x = calloc(1, sizeof(*x));

	if (x)
		x->leaf = leaf;
	return x;
}

/* The number of keys < @k (the index of the first key >= @k). */
static unsigned lower(const node_t *x, uint64_t k)
{
	unsigned lo = 0, hi = x->n;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (x->key[mid] < k)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The number of keys <= @k: in an internal node, the child that holds @k. */
static unsigned upper(const node_t *x, uint64_t k)
{
	unsigned lo = 0, hi = x->n;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (x->key[mid] <= k)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Every line of node @x on its way (560 bytes: 9 lines, 10 where malloc's 16-byte alignment
 * puts its start mid-line): its binary search then waits for one miss, not for a chain of
 * three or four. */
static inline __attribute__((always_inline)) void node_prefetch(const node_t *x)
{
	_Static_assert(sizeof(*x) <= 9 * 64, "a node is at most 10 lines");
	const char *p = (const char *)x;

	__builtin_prefetch(p);
	__builtin_prefetch(p + 64);
	__builtin_prefetch(p + 128);
	__builtin_prefetch(p + 192);
	__builtin_prefetch(p + 256);
	__builtin_prefetch(p + 320);
	__builtin_prefetch(p + 384);
	__builtin_prefetch(p + 448);
	__builtin_prefetch(p + 512);
	__builtin_prefetch(p + sizeof(*x) - 1);
}

/* Past this many keys a tree's nodes (~24 keys and 560 bytes each) outgrow the first two cache
 * levels, and a descent prefetches each node it enters (below it the prefetches only cost
 * instructions: 38 a MAP+UNMAP pair). MAP+UNMAP at 1M in alternate quick runs: -12 %. */
#define BT_PREFETCH_KEYS 16384

static inline __attribute__((always_inline)) const node_t *leaf_of(const struct viommu_btree *t, uint64_t k)
{
	const node_t *x = t->root;
	const bool pf = t->count > BT_PREFETCH_KEYS;

	while (!x->leaf) {
		x = x->ptr[upper(x, k)];
		if (pf)
			node_prefetch(x);
	}
	return x;
}

/* The leaf a descent for @k would reach: the finger's when @k lies between its first and last
 * keys (the separators above a leaf bound its keys, so they bound @k too), else a descent's. */
static inline __attribute__((always_inline)) node_t *leaf_at(const struct viommu_btree *t, uint64_t k)
{
	node_t *f = t->finger;

	if (f && f->n && k >= f->key[0] && k <= f->key[f->n - 1])
		return f;
	return (node_t *)leaf_of(t, k);
}

/* ---- insert ---- */

static void split_leaf(node_t *x, node_t *r, uint64_t *sep)
{
	unsigned keep = (BT_MAX + 1) / 2;

	r->n = x->n - keep;
	memcpy(r->key, x->key + keep, r->n * sizeof(x->key[0]));
	memcpy(r->ptr, x->ptr + keep, r->n * sizeof(x->ptr[0]));
	x->n = keep;
	r->next = x->next;
	if (x->next)
		x->next->prev = r;
	r->prev = x;
	x->next = r;
	*sep = r->key[0];
}

static void split_internal(node_t *x, node_t *r, uint64_t *sep)
{
	unsigned keep = (BT_MAX + 1) / 2; /* keys left; key[keep] moves up */

	r->n = x->n - keep - 1;
	memcpy(r->key, x->key + keep + 1, r->n * sizeof(x->key[0]));
	memcpy(r->ptr, x->ptr + keep + 1, (r->n + 1) * sizeof(x->ptr[0]));
	*sep = x->key[keep];
	x->n = keep;
}

/* What an insert asks its caller about the place it found (viommu_btree_insert_if). */
struct ins_ask {
	viommu_btree_refuse_fn *refuse;
	void *arg;
};

/* Key @k and value @v into leaf @x, which has room (BT_MAX + 1 keys at most: ins() splits after),
 * unless @k is there (-EEXIST) or @ask refuses the place (-EBUSY): then @x is unchanged. */
static int leaf_ins(node_t *x, uint64_t k, void *v, const struct ins_ask *ask)
{
	unsigned i = lower(x, k);

	if (i < x->n && x->key[i] == k)
		return -EEXIST;
	if (ask->refuse) {
		/* The neighbours: in this leaf, else at the end of the one before or the start of
		 * the one after. */
		const node_t *pl = i ? x : x->prev, *sl = i < x->n ? x : x->next;
		unsigned pi = i ? i - 1 : pl ? pl->n - 1 : 0, si = i < x->n ? i : 0;

		if (ask->refuse(ask->arg, pl ? pl->ptr[pi] : NULL, sl ? sl->key[si] : 0, sl ? sl->ptr[si] : NULL))
			return -EBUSY;
	}
	memmove(x->key + i + 1, x->key + i, (x->n - i) * sizeof(x->key[0]));
	memmove(x->ptr + i + 1, x->ptr + i, (x->n - i) * sizeof(x->ptr[0]));
	x->key[i] = k;
	x->ptr[i] = v;
	x->n++;
	return 0;
}

/* Insert into the subtree @x. When @x overflowed and split, *@split is its new right sibling and
 * *@sep the separator for the parent. */
static int ins(node_t *x, uint64_t k, void *v, node_t **split, uint64_t *sep, const struct ins_ask *ask)
{
	node_t *r = NULL, *cs;
	uint64_t csep;
	unsigned i;
	int err;

	*split = NULL;
	if (x->n == BT_MAX && !(r = node_new(x->leaf)))
		return -ENOMEM; /* allocated before anything changes */
	if (x->leaf) {
		if ((err = leaf_ins(x, k, v, ask))) {
			if (r)
				free(r);
			return err;
		}
		if (r) {
			split_leaf(x, r, sep);
			*split = r;
		}
		return 0;
	}
	i = upper(x, k);
	err = ins(x->ptr[i], k, v, &cs, &csep, ask);
	if (err || !cs) {
		if (r) /* rare: a full node on the path; free(NULL) is a call on every insert */
			free(r);
		return err;
	}
	memmove(x->key + i + 1, x->key + i, (x->n - i) * sizeof(x->key[0]));
	memmove(x->ptr + i + 2, x->ptr + i + 1, (x->n - i) * sizeof(x->ptr[0]));
	x->key[i] = csep;
	x->ptr[i + 1] = cs;
	x->n++;
	if (x->n > BT_MAX) {
		split_internal(x, r, sep);
		*split = r;
	} else if (r) {
		free(r);
	}
	return 0;
}

int viommu_btree_insert(struct viommu_btree *t, uint64_t key, void *val)
{
	return viommu_btree_insert_if(t, key, val, NULL, NULL);
}

int viommu_btree_insert_if(struct viommu_btree *t, uint64_t key, void *val, viommu_btree_refuse_fn *refuse,
			   void *arg)
{
	const struct ins_ask ask = { refuse, arg };
	node_t *root = NULL, *split;
	bool made = false;
	uint64_t sep;
	int err;

	if (t->root) {
		/* The common case, a leaf with room: its insert moves no separator (the key lies in
		 * the leaf's bounds) and allocates nothing, so one descent, no recursion. */
		node_t *x = leaf_at(t, key);

		if (x->n < BT_MAX) {
			if (!(err = leaf_ins(x, key, val, &ask))) {
				t->count++;
				t->finger = x;
			}
			return err;
		}
	}
	if (!t->root) {
		if (!(t->root = node_new(true)))
			return -ENOMEM;
		made = true; /* an empty tree's: gone again if the insert fails */
	}
	if (t->root->n == BT_MAX && !(root = node_new(false)))
		return -ENOMEM;
	err = ins(t->root, key, val, &split, &sep, &ask);
	if (err) {
		free(root);
		if (made) {
			free(t->root);
			t->root = NULL;
		}
		return err;
	}
	if (split) {
		root->n = 1;
		root->key[0] = sep;
		root->ptr[0] = t->root;
		root->ptr[1] = split;
		t->root = root;
	} else if (root) {
		free(root);
	}
	t->count++;
	return 0;
}

/* ---- remove ---- */

static void borrow_left(node_t *x, unsigned i)
{
	node_t *c = x->ptr[i], *l = x->ptr[i - 1];

	memmove(c->key + 1, c->key, c->n * sizeof(c->key[0]));
	if (c->leaf) {
		memmove(c->ptr + 1, c->ptr, c->n * sizeof(c->ptr[0]));
		c->key[0] = l->key[l->n - 1];
		c->ptr[0] = l->ptr[l->n - 1];
		x->key[i - 1] = c->key[0];
	} else {
		memmove(c->ptr + 1, c->ptr, (c->n + 1) * sizeof(c->ptr[0]));
		c->key[0] = x->key[i - 1];
		c->ptr[0] = l->ptr[l->n];
		x->key[i - 1] = l->key[l->n - 1];
	}
	l->n--;
	c->n++;
}

static void borrow_right(node_t *x, unsigned i)
{
	node_t *c = x->ptr[i], *r = x->ptr[i + 1];

	if (c->leaf) {
		c->key[c->n] = r->key[0];
		c->ptr[c->n] = r->ptr[0];
		memmove(r->key, r->key + 1, (r->n - 1) * sizeof(r->key[0]));
		memmove(r->ptr, r->ptr + 1, (r->n - 1) * sizeof(r->ptr[0]));
		x->key[i] = r->key[0];
	} else {
		c->key[c->n] = x->key[i];
		c->ptr[c->n + 1] = r->ptr[0];
		x->key[i] = r->key[0];
		memmove(r->key, r->key + 1, (r->n - 1) * sizeof(r->key[0]));
		memmove(r->ptr, r->ptr + 1, r->n * sizeof(r->ptr[0]));
	}
	c->n++;
	r->n--;
}

/* Merge child i + 1 into child i and drop separator i. */
static void merge(node_t *x, unsigned i)
{
	node_t *l = x->ptr[i], *r = x->ptr[i + 1];

	if (l->leaf) {
		memcpy(l->key + l->n, r->key, r->n * sizeof(r->key[0]));
		memcpy(l->ptr + l->n, r->ptr, r->n * sizeof(r->ptr[0]));
		l->n += r->n;
		l->next = r->next;
		if (r->next)
			r->next->prev = l;
	} else {
		l->key[l->n] = x->key[i];
		memcpy(l->key + l->n + 1, r->key, r->n * sizeof(r->key[0]));
		memcpy(l->ptr + l->n + 1, r->ptr, (r->n + 1) * sizeof(r->ptr[0]));
		l->n += 1 + r->n;
	}
	memmove(x->key + i, x->key + i + 1, (x->n - i - 1) * sizeof(x->key[0]));
	memmove(x->ptr + i + 1, x->ptr + i + 2, (x->n - i - 1) * sizeof(x->ptr[0]));
	x->n--;
	free(r);
}

/* What a removal asks its caller about the value found (viommu_btree_remove_if). */
struct del_ask {
	viommu_btree_take_fn *take;
	void *arg;
};

/* Key @i of leaf @x out; its value. */
static void *leaf_take(node_t *x, unsigned i)
{
	void *v = x->ptr[i];

	memmove(x->key + i, x->key + i + 1, (x->n - i - 1) * sizeof(x->key[0]));
	memmove(x->ptr + i, x->ptr + i + 1, (x->n - i - 1) * sizeof(x->ptr[0]));
	x->n--;
	return v;
}

static void *del(node_t *x, uint64_t k, const struct del_ask *ask)
{
	node_t *c;
	unsigned i;
	void *v;

	if (x->leaf) {
		i = lower(x, k);
		if (i >= x->n || x->key[i] != k)
			return NULL;
		if (ask->take && !ask->take(ask->arg, x->ptr[i]))
			return NULL; /* nothing changed yet: every level above sees NULL */
		return leaf_take(x, i);
	}
	i = upper(x, k);
	v = del(x->ptr[i], k, ask);
	c = x->ptr[i];
	if (!v || c->n >= BT_MIN)
		return v;
	if (i > 0 && ((node_t *)x->ptr[i - 1])->n > BT_MIN)
		borrow_left(x, i);
	else if (i < x->n && ((node_t *)x->ptr[i + 1])->n > BT_MIN)
		borrow_right(x, i);
	else if (i > 0)
		merge(x, i - 1);
	else
		merge(x, i);
	return v;
}

void *viommu_btree_remove(struct viommu_btree *t, uint64_t key)
{
	return viommu_btree_remove_if(t, key, NULL, NULL);
}

void *viommu_btree_remove_if(struct viommu_btree *t, uint64_t key, viommu_btree_take_fn *take, void *arg)
{
	const struct del_ask ask = { take, arg };
	node_t *root = t->root, *x;
	unsigned i;
	void *v;

	if (!root)
		return NULL;
	x = leaf_at(t, key);
	if (x->n > BT_MIN || x == root) {
		/* The common case, a leaf that stays at least half full (or the root): nothing to
		 * rebalance, and a separator may stay below its leaf's first key. One descent. */
		i = lower(x, key);
		if (i >= x->n || x->key[i] != key || (take && !take(arg, x->ptr[i])))
			return NULL;
		v = leaf_take(x, i);
		t->count--;
		t->finger = x;
		if (x == root && x->n == 0) {
			t->root = t->finger = NULL;
			free(root);
		}
		return v;
	}
	t->finger = NULL; /* a merge frees a leaf */
	if (!(v = del(root, key, &ask)))
		return NULL;
	t->count--;
	if (!root->leaf && root->n == 0) {
		t->root = root->ptr[0];
		free(root);
	} else if (root->leaf && root->n == 0) {
		t->root = NULL;
		free(root);
	}
	return v;
}

/* ---- queries ---- */

void *viommu_btree_find(const struct viommu_btree *t, uint64_t key)
{
	const node_t *x;
	unsigned i;

	if (!t->root)
		return NULL;
	x = leaf_of(t, key);
	i = lower(x, key);
	return i < x->n && x->key[i] == key ? x->ptr[i] : NULL;
}

void *viommu_btree_floor(const struct viommu_btree *t, uint64_t key, uint64_t *found_key)
{
	const node_t *x;
	unsigned i;

	if (!t->root)
		return NULL;
	x = leaf_of(t, key);
	i = upper(x, key);
	if (i == 0) {
		/* Every key here is > @key; the previous leaf's are all below this leaf's lower
		 * bound, which is <= @key. */
		if (!(x = x->prev))
			return NULL;
		i = x->n;
	}
	if (found_key)
		*found_key = x->key[i - 1];
	return x->ptr[i - 1];
}

void *viommu_btree_ceil(const struct viommu_btree *t, uint64_t key, uint64_t *found_key)
{
	const node_t *x;
	unsigned i;

	if (!t->root)
		return NULL;
	x = leaf_of(t, key);
	i = lower(x, key);
	if (i == x->n) {
		if (!(x = x->next))
			return NULL;
		i = 0;
	}
	if (found_key)
		*found_key = x->key[i];
	return x->ptr[i];
}

void *viommu_btree_next(const struct viommu_btree *t, uint64_t key, uint64_t *found_key)
{
	return key == UINT64_MAX ? NULL : viommu_btree_ceil(t, key + 1, found_key);
}

void *viommu_btree_first(const struct viommu_btree *t, uint64_t *found_key)
{
	return viommu_btree_ceil(t, 0, found_key);
}

/* ---- teardown and self-check ---- */

static void destroy(node_t *x, void (*fn)(void *))
{
	for (unsigned i = 0; i < x->n + !x->leaf; i++) {
		if (x->leaf) {
			if (fn)
				fn(x->ptr[i]);
		} else {
			destroy(x->ptr[i], fn);
		}
	}
	free(x);
}

void viommu_btree_destroy(struct viommu_btree *t, void (*fn)(void *val))
{
	if (t->root)
		destroy(t->root, fn);
	viommu_btree_init(t);
}

struct check {
	int leaf_depth;
	const node_t *last_leaf;
	size_t count;
	const node_t *finger;
	bool finger_seen;
};

/* Keys of @x's subtree must lie in [lo, hi) (each bound only if its flag is set). */
static int check(const node_t *x, int depth, bool root, bool has_lo, uint64_t lo, bool has_hi,
		 uint64_t hi, struct check *c)
{
	if (x->n > BT_MAX || (!root && x->n < BT_MIN) || (!x->leaf && x->n == 0))
		return -EUCLEAN;
	for (unsigned i = 0; i < x->n; i++)
		if ((i && x->key[i] <= x->key[i - 1]) || (has_lo && x->key[i] < lo) ||
		    (has_hi && x->key[i] >= hi))
			return -EUCLEAN;
	if (x->leaf) {
		if (c->leaf_depth < 0)
			c->leaf_depth = depth;
		if (depth != c->leaf_depth || x->prev != c->last_leaf ||
		    (c->last_leaf && c->last_leaf->next != x))
			return -EUCLEAN;
		for (unsigned i = 0; i < x->n; i++)
			if (!x->ptr[i])
				return -EUCLEAN;
		c->last_leaf = x;
		c->count += x->n;
		c->finger_seen |= x == c->finger;
		return 0;
	}
	for (unsigned i = 0; i <= x->n; i++) {
		int err = check(x->ptr[i], depth + 1, false, i ? true : has_lo, i ? x->key[i - 1] : lo,
				i < x->n ? true : has_hi, i < x->n ? x->key[i] : hi, c);

		if (err)
			return err;
	}
	return 0;
}

int viommu_btree_check(const struct viommu_btree *t)
{
	struct check c = { .leaf_depth = -1, .finger = t->finger };

	if (!t->root)
		return t->count || t->finger ? -EUCLEAN : 0;
	if (t->root->leaf && t->root->n == 0)
		return -EUCLEAN; /* an empty tree has no root */
	if (check(t->root, 0, true, false, 0, false, 0, &c) || c.count != t->count ||
	    (c.last_leaf && c.last_leaf->next))
		return -EUCLEAN;
	if (t->finger && !c.finger_seen)
		return -EUCLEAN; /* the finger names no leaf of the tree: freed, or another tree's */
	return 0;
}
