// SPDX-License-Identifier: MIT
/*
 * The baselines (see baselines.h): models of QEMU's, Linux vhost's and DPDK's IOVA lookups.
 * Each follows its peer's data structure, allocation and locking; where a model departs from its
 * peer the comment says why. None of this is part of the device.
 */
#define _GNU_SOURCE
#include "baselines.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define BENCH_BULK 64

static void answer_hit(struct viommu_answer *a, uint64_t pa, uint64_t start, uint64_t end,
		       uint64_t phys, uint32_t flags)
{
	memset(a, 0, sizeof(*a));
	a->result = VIOMMU_XLATE_HIT;
	a->pa = pa;
	a->ext_start = start;
	a->ext_end = end;
	a->ext_phys = phys;
	a->ext_flags = flags;
}

static void answer_fault(struct viommu_answer *a, uint64_t addr)
{
	memset(a, 0, sizeof(*a));
	a->result = VIOMMU_XLATE_FAULT;
	a->reason = 2; /* VIRTIO_IOMMU_FAULT_R_MAPPING */
	a->fault_addr = addr;
}

/* ======================= gtree: QEMU virtio-iommu ======================= */

/* VirtIOIOMMUInterval / VirtIOIOMMUMapping: both g_malloc0'd per MAP, freed by the tree. */
struct bench_gtree_interval {
	uint64_t low, high; /* inclusive */
};

struct bench_gtree_mapping {
	uint64_t phys_addr;
	uint32_t flags;
};

struct bench_gtree_domain {
	uint32_t id;
	GTree *mappings;
};

struct bench_gtree_ep {
	uint32_t id;
	struct bench_gtree_domain *domain;
};

struct bench_gtree {
	pthread_mutex_t mutex; /* QemuRecMutex s->mutex: a recursive pthread mutex */
	GTree *domains, *endpoints; /* keyed by GUINT_TO_POINTER(id), int_cmp */
};

/* QEMU's interval_cmp: two intervals compare equal when they overlap, so a lookup with a 1-byte
 * key finds the mapping holding that byte. */
static gint gtree_interval_cmp(gconstpointer a, gconstpointer b, gpointer user_data)
{
	const struct bench_gtree_interval *ia = a, *ib = b;

	(void)user_data;
	if (ia->high < ib->low)
		return -1;
	if (ib->high < ia->low)
		return 1;
	return 0;
}

static gint gtree_int_cmp(gconstpointer a, gconstpointer b, gpointer user_data)
{
	guint ua = GPOINTER_TO_UINT(a), ub = GPOINTER_TO_UINT(b);

	(void)user_data;
	return (ua > ub) - (ua < ub);
}

static void gtree_domain_free(gpointer p)
{
	struct bench_gtree_domain *d = p;

	g_tree_destroy(d->mappings);
	g_free(d);
}

struct bench_gtree *bench_gtree_new(void)
{
	struct bench_gtree *g = g_malloc0(sizeof(*g));
	pthread_mutexattr_t attr;

	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&g->mutex, &attr);
	pthread_mutexattr_destroy(&attr);
	g->domains = g_tree_new_full(gtree_int_cmp, NULL, NULL, gtree_domain_free);
	g->endpoints = g_tree_new_full(gtree_int_cmp, NULL, NULL, g_free);
	return g;
}

void bench_gtree_free(struct bench_gtree *g)
{
	if (!g)
		return;
	g_tree_destroy(g->endpoints);
	g_tree_destroy(g->domains);
	pthread_mutex_destroy(&g->mutex);
	g_free(g);
}

int bench_gtree_attach(struct bench_gtree *g, uint32_t ep_id, uint32_t domain)
{
	struct bench_gtree_domain *d;
	struct bench_gtree_ep *ep;

	pthread_mutex_lock(&g->mutex);
	d = g_tree_lookup(g->domains, GUINT_TO_POINTER(domain));
	if (!d) {
		d = g_malloc0(sizeof(*d));
		d->id = domain;
		d->mappings = g_tree_new_full(gtree_interval_cmp, NULL, g_free, g_free);
		g_tree_insert(g->domains, GUINT_TO_POINTER(domain), d);
	}
	ep = g_tree_lookup(g->endpoints, GUINT_TO_POINTER(ep_id));
	if (!ep) {
		ep = g_malloc0(sizeof(*ep));
		ep->id = ep_id;
		g_tree_insert(g->endpoints, GUINT_TO_POINTER(ep_id), ep);
	}
	ep->domain = d;
	pthread_mutex_unlock(&g->mutex);
	return 0;
}

int bench_gtree_map(struct bench_gtree *g, uint32_t domain, const struct bench_extent *x)
{
	struct bench_gtree_interval *interval = g_malloc0(sizeof(*interval));
	struct bench_gtree_mapping *mapping;
	struct bench_gtree_domain *d;
	int ret = 0;

	interval->low = x->start;
	interval->high = x->end;
	pthread_mutex_lock(&g->mutex);
	d = g_tree_lookup(g->domains, GUINT_TO_POINTER(domain));
	if (!d) {
		g_free(interval);
		ret = -ENOENT;
	} else if (g_tree_lookup(d->mappings, interval)) {
		g_free(interval);
		ret = -EEXIST;
	} else {
		mapping = g_malloc0(sizeof(*mapping));
		mapping->phys_addr = x->phys;
		mapping->flags = x->flags;
		g_tree_insert(d->mappings, interval, mapping);
	}
	pthread_mutex_unlock(&g->mutex);
	return ret;
}

int bench_gtree_unmap(struct bench_gtree *g, uint32_t domain, uint64_t start, uint64_t end)
{
	struct bench_gtree_interval interval = { start, end }, *key;
	struct bench_gtree_mapping *val;
	struct bench_gtree_domain *d;
	int ret = 0;

	pthread_mutex_lock(&g->mutex);
	d = g_tree_lookup(g->domains, GUINT_TO_POINTER(domain));
	if (!d) {
		ret = -ENOENT;
		goto out;
	}
	/* QEMU removes overlapping mappings one lookup at a time; a split is S_RANGE. */
	while (g_tree_lookup_extended(d->mappings, &interval, (gpointer *)&key, (gpointer *)&val)) {
		if (interval.low <= key->low && interval.high >= key->high) {
			g_tree_remove(d->mappings, key);
		} else {
			ret = -ERANGE;
			break;
		}
	}
out:
	pthread_mutex_unlock(&g->mutex);
	return ret;
}

/* virtio_iommu_translate() for one byte: the endpoint, its domain, the mapping holding iova. */
static inline int gtree_lookup(struct bench_gtree *g, const struct viommu_query *q, uint64_t *pa,
			       struct bench_gtree_interval **kp, struct bench_gtree_mapping **vp)
{
	struct bench_gtree_interval interval = { q->iova, q->iova };
	struct bench_gtree_interval *key;
	struct bench_gtree_mapping *val;
	struct bench_gtree_ep *ep;
	int hit = 0;

	pthread_mutex_lock(&g->mutex);
	ep = g_tree_lookup(g->endpoints, GUINT_TO_POINTER(q->endpoint));
	if (ep && ep->domain &&
	    g_tree_lookup_extended(ep->domain->mappings, &interval, (gpointer *)&key, (gpointer *)&val) &&
	    (val->flags & q->access) == q->access) {
		*pa = q->iova - key->low + val->phys_addr;
		if (kp) {
			*kp = key;
			*vp = val;
		}
		hit = 1;
	}
	pthread_mutex_unlock(&g->mutex);
	return hit;
}

void bench_gtree_translate(struct bench_gtree *g, const struct viommu_query *q, struct viommu_answer *a)
{
	struct bench_gtree_interval *k;
	struct bench_gtree_mapping *v;
	uint64_t pa;

	if (gtree_lookup(g, q, &pa, &k, &v))
		answer_hit(a, pa, k->low, k->high, v->phys_addr, v->flags);
	else
		answer_fault(a, q->iova);
}

uint64_t bench_gtree_run(struct bench_gtree *g, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults)
{
	uint64_t sum = 0, miss = 0, pa = 0;

	for (size_t i = 0; i < ops; i++) {
		if (gtree_lookup(g, &q[(start + i) & qmask], &pa, NULL, NULL))
			sum += pa;
		else
			miss++;
	}
	*faults += miss;
	return sum;
}

uint64_t bench_gtree_run_bulk(struct bench_gtree *g, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults)
{
	/* QEMU has no bulk translate: 64 translations, each taking the mutex. */
	return bench_gtree_run(g, q, qmask, start * BENCH_BULK, ops * BENCH_BULK, faults);
}

/* ======================= itree: Linux vhost IOTLB ======================= */

/*
 * struct vhost_iotlb_map in an interval tree (include/linux/interval_tree_generic.h): a
 * red-black tree ordered by start, each node augmented with the largest `last` of its subtree,
 * so an overlap query descends only into subtrees that can hold an overlapping range. The
 * red-black code is CLRS's with a sentinel; rotations and splices keep subtree_last exact.
 */
struct bench_itree_node {
	struct bench_itree_node *left, *right, *parent;
	uint64_t start, last; /* inclusive */
	uint64_t subtree_last; /* max(last) over this subtree */
	uint64_t size, addr;
	uint32_t perm, red;
	struct bench_itree_node *next, *prev; /* vhost_iotlb's list of maps */
};

struct bench_itree {
	struct bench_itree_node *root, *leftmost; /* rb_root_cached */
	struct bench_itree_node nil; /* sentinel: black, subtree_last 0, never dereferenced as data */
	struct bench_itree_node head; /* list head */
	size_t nmaps;
};

#define ITNIL(t) (&(t)->nil)

struct bench_itree *bench_itree_new(void)
{
	struct bench_itree *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->nil.left = t->nil.right = t->nil.parent = ITNIL(t);
	t->root = t->leftmost = ITNIL(t);
	t->head.next = t->head.prev = &t->head;
	return t;
}

void bench_itree_free(struct bench_itree *t)
{
	if (!t)
		return;
	for (struct bench_itree_node *n = t->head.next, *nx; n != &t->head; n = nx) {
		nx = n->next;
		free(n);
	}
	free(t);
}

static inline uint64_t itree_compute_last(struct bench_itree *t, const struct bench_itree_node *n)
{
	uint64_t m = n->last;

	if (n->left != ITNIL(t) && n->left->subtree_last > m)
		m = n->left->subtree_last;
	if (n->right != ITNIL(t) && n->right->subtree_last > m)
		m = n->right->subtree_last;
	return m;
}

/* A rotation leaves the rotated pair's subtree set unchanged: only the two nodes need updating
 * (the new top inherits the old top's value), never the ancestors. */
static void itree_rotate_left(struct bench_itree *t, struct bench_itree_node *x)
{
	struct bench_itree_node *y = x->right;

	x->right = y->left;
	if (y->left != ITNIL(t))
		y->left->parent = x;
	y->parent = x->parent;
	if (x->parent == ITNIL(t))
		t->root = y;
	else if (x == x->parent->left)
		x->parent->left = y;
	else
		x->parent->right = y;
	y->left = x;
	x->parent = y;
	y->subtree_last = x->subtree_last;
	x->subtree_last = itree_compute_last(t, x);
}

static void itree_rotate_right(struct bench_itree *t, struct bench_itree_node *x)
{
	struct bench_itree_node *y = x->left;

	x->left = y->right;
	if (y->right != ITNIL(t))
		y->right->parent = x;
	y->parent = x->parent;
	if (x->parent == ITNIL(t))
		t->root = y;
	else if (x == x->parent->right)
		x->parent->right = y;
	else
		x->parent->left = y;
	y->right = x;
	x->parent = y;
	y->subtree_last = x->subtree_last;
	x->subtree_last = itree_compute_last(t, x);
}

static void itree_insert(struct bench_itree *t, struct bench_itree_node *z)
{
	struct bench_itree_node *y = ITNIL(t), *x = t->root;
	int leftmost = 1;

	/* Going down, every node passed gets z in its subtree (the augment's propagate). */
	while (x != ITNIL(t)) {
		y = x;
		if (x->subtree_last < z->last)
			x->subtree_last = z->last;
		if (z->start < x->start) {
			x = x->left;
		} else {
			x = x->right;
			leftmost = 0;
		}
	}
	z->parent = y;
	z->left = z->right = ITNIL(t);
	z->subtree_last = z->last;
	z->red = 1;
	if (y == ITNIL(t))
		t->root = z;
	else if (z->start < y->start)
		y->left = z;
	else
		y->right = z;
	if (leftmost)
		t->leftmost = z;
	while (z->parent->red) {
		struct bench_itree_node *gp = z->parent->parent, *u;

		if (z->parent == gp->left) {
			u = gp->right;
			if (u->red) {
				z->parent->red = 0;
				u->red = 0;
				gp->red = 1;
				z = gp;
			} else {
				if (z == z->parent->right) {
					z = z->parent;
					itree_rotate_left(t, z);
				}
				z->parent->red = 0;
				z->parent->parent->red = 1;
				itree_rotate_right(t, z->parent->parent);
			}
		} else {
			u = gp->left;
			if (u->red) {
				z->parent->red = 0;
				u->red = 0;
				gp->red = 1;
				z = gp;
			} else {
				if (z == z->parent->left) {
					z = z->parent;
					itree_rotate_right(t, z);
				}
				z->parent->red = 0;
				z->parent->parent->red = 1;
				itree_rotate_left(t, z->parent->parent);
			}
		}
	}
	t->root->red = 0;
}

static void itree_transplant(struct bench_itree *t, struct bench_itree_node *u, struct bench_itree_node *v)
{
	if (u->parent == ITNIL(t))
		t->root = v;
	else if (u == u->parent->left)
		u->parent->left = v;
	else
		u->parent->right = v;
	v->parent = u->parent;
}

static struct bench_itree_node *itree_min(struct bench_itree *t, struct bench_itree_node *n)
{
	while (n->left != ITNIL(t))
		n = n->left;
	return n;
}

static struct bench_itree_node *itree_successor(struct bench_itree *t, struct bench_itree_node *n)
{
	struct bench_itree_node *p;

	if (n->right != ITNIL(t))
		return itree_min(t, n->right);
	p = n->parent;
	while (p != ITNIL(t) && n == p->right) {
		n = p;
		p = p->parent;
	}
	return p;
}

static void itree_remove(struct bench_itree *t, struct bench_itree_node *z)
{
	struct bench_itree_node *x, *y = z;
	uint32_t y_red = y->red;

	if (t->leftmost == z)
		t->leftmost = itree_successor(t, z);
	if (z->left == ITNIL(t)) {
		x = z->right;
		itree_transplant(t, z, z->right);
	} else if (z->right == ITNIL(t)) {
		x = z->left;
		itree_transplant(t, z, z->left);
	} else {
		y = itree_min(t, z->right);
		y_red = y->red;
		x = y->right;
		if (y->parent == z) {
			x->parent = y;
		} else {
			itree_transplant(t, y, y->right);
			y->right = z->right;
			y->right->parent = y;
		}
		itree_transplant(t, z, y);
		y->left = z->left;
		y->left->parent = y;
		y->red = z->red;
	}
	/* Every node whose subtree lost z (or gained/lost y) lies on the path from x's parent to
	 * the root: recompute it before the fixup's rotations, which rely on exact children. */
	for (struct bench_itree_node *n = x->parent; n != ITNIL(t); n = n->parent)
		n->subtree_last = itree_compute_last(t, n);
	if (!y_red) {
		while (x != t->root && !x->red) {
			struct bench_itree_node *w;

			if (x == x->parent->left) {
				w = x->parent->right;
				if (w->red) {
					w->red = 0;
					x->parent->red = 1;
					itree_rotate_left(t, x->parent);
					w = x->parent->right;
				}
				if (!w->left->red && !w->right->red) {
					w->red = 1;
					x = x->parent;
				} else {
					if (!w->right->red) {
						w->left->red = 0;
						w->red = 1;
						itree_rotate_right(t, w);
						w = x->parent->right;
					}
					w->red = x->parent->red;
					x->parent->red = 0;
					w->right->red = 0;
					itree_rotate_left(t, x->parent);
					x = t->root;
				}
			} else {
				w = x->parent->left;
				if (w->red) {
					w->red = 0;
					x->parent->red = 1;
					itree_rotate_right(t, x->parent);
					w = x->parent->left;
				}
				if (!w->right->red && !w->left->red) {
					w->red = 1;
					x = x->parent;
				} else {
					if (!w->left->red) {
						w->right->red = 0;
						w->red = 1;
						itree_rotate_left(t, w);
						w = x->parent->left;
					}
					w->red = x->parent->red;
					x->parent->red = 0;
					w->left->red = 0;
					itree_rotate_right(t, x->parent);
					x = t->root;
				}
			}
		}
		x->red = 0;
	}
	t->nil.parent = ITNIL(t);
	t->nil.red = 0;
}

/* interval_tree_iter_first(): the leftmost node overlapping [start, last], or NULL. */
static inline struct bench_itree_node *itree_first(struct bench_itree *t, uint64_t start, uint64_t last)
{
	struct bench_itree_node *n = t->root;

	if (n == ITNIL(t) || n->subtree_last < start || t->leftmost->start > last)
		return NULL;
	for (;;) {
		if (n->left != ITNIL(t) && n->left->subtree_last >= start) {
			n = n->left; /* leftmost overlap, if any, is on the left */
			continue;
		}
		if (n->start <= last) {
			if (start <= n->last)
				return n;
			if (n->right != ITNIL(t)) {
				n = n->right;
				if (n->subtree_last >= start)
					continue;
			}
		}
		return NULL;
	}
}

int bench_itree_map(struct bench_itree *t, const struct bench_extent *x)
{
	struct bench_itree_node *m;

	if (x->end < x->start)
		return -EFAULT;
	m = malloc(sizeof(*m)); /* kmalloc(sizeof(*map), GFP_ATOMIC) */
	if (!m)
		return -ENOMEM;
	m->start = x->start;
	m->last = x->end;
	m->size = x->end - x->start + 1;
	m->addr = x->phys;
	m->perm = x->flags;
	t->nmaps++;
	itree_insert(t, m);
	m->prev = t->head.prev; /* list_add_tail */
	m->next = &t->head;
	t->head.prev->next = m;
	t->head.prev = m;
	return 0;
}

size_t bench_itree_unmap(struct bench_itree *t, uint64_t start, uint64_t end)
{
	struct bench_itree_node *m;
	size_t n = 0;

	while ((m = itree_first(t, start, end))) {
		itree_remove(t, m);
		m->prev->next = m->next;
		m->next->prev = m->prev;
		free(m);
		t->nmaps--;
		n++;
	}
	return n;
}

/* translate_desc()'s loop: the map holding addr, permission, then the next chunk of the range. */
static inline int itree_lookup(struct bench_itree *t, const struct viommu_query *q, uint64_t *pa,
			       struct bench_itree_node **first)
{
	uint64_t len = q->size ? q->size : 1, s = 0, addr = q->iova;
	struct bench_itree_node *m;

	while (len > s) {
		m = itree_first(t, addr, q->iova + len - 1);
		if (!m || m->start > addr || (m->perm & q->access) != q->access)
			return 0;
		if (s == 0) {
			*pa = m->addr + addr - m->start;
			if (first)
				*first = m;
		}
		s += m->size - addr + m->start;
		addr = m->last + 1;
	}
	return 1;
}

void bench_itree_translate(struct bench_itree *t, const struct viommu_query *q, struct viommu_answer *a)
{
	struct bench_itree_node *m = NULL;
	uint64_t pa = 0;

	if (itree_lookup(t, q, &pa, &m))
		answer_hit(a, pa, m->start, m->last, m->addr, m->perm);
	else
		answer_fault(a, q->iova);
}

uint64_t bench_itree_run(struct bench_itree *t, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults)
{
	uint64_t sum = 0, miss = 0, pa = 0;

	for (size_t i = 0; i < ops; i++) {
		if (itree_lookup(t, &q[(start + i) & qmask], &pa, NULL))
			sum += pa;
		else
			miss++;
	}
	*faults += miss;
	return sum;
}

uint64_t bench_itree_run_bulk(struct bench_itree *t, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults)
{
	/* vhost translates descriptor by descriptor under the vq mutex it already holds. */
	return bench_itree_run(t, q, qmask, start * BENCH_BULK, ops * BENCH_BULK, faults);
}

static int itree_check_node(struct bench_itree *t, const struct bench_itree_node *n, uint64_t lo,
			    uint64_t hi, int *black)
{
	int bl, br;

	if (n == ITNIL(t)) {
		*black = 1;
		return 0;
	}
	if (n->start < lo || n->start > hi)
		return -1;
	if (n->red && (n->left->red || n->right->red))
		return -1;
	if ((n->left != ITNIL(t) && n->left->parent != n) ||
	    (n->right != ITNIL(t) && n->right->parent != n))
		return -1;
	if (itree_check_node(t, n->left, lo, n->start, &bl) ||
	    itree_check_node(t, n->right, n->start, hi, &br) || bl != br)
		return -1;
	if (n->subtree_last != itree_compute_last(t, n))
		return -1;
	*black = bl + !n->red;
	return 0;
}

int bench_itree_check(const struct bench_itree *ct)
{
	struct bench_itree *t = (struct bench_itree *)ct;
	int black;

	if (t->root->red || itree_check_node(t, t->root, 0, UINT64_MAX, &black))
		return -1;
	if (t->root != ITNIL(t) && t->leftmost != itree_min(t, t->root))
		return -1;
	return 0;
}

/* ======================= sorted_list: DPDK 22.11 vhost IOTLB ======================= */

struct bench_slist_entry { /* struct vhost_iotlb_entry */
	TAILQ_ENTRY(bench_slist_entry) next;
	uint64_t iova, uaddr, size;
	uint8_t perm;
};

struct bench_slist {
	/* DPDK's rte_rwlock_t (vq->iotlb_lock); a pthread rwlock here: one atomic on the read
	 * side either way. */
	pthread_rwlock_t lock;
	TAILQ_HEAD(bench_slist_head, bench_slist_entry) list;
	/* The iotlb mempool: entries carved from one array, a LIFO of free ones. */
	struct bench_slist_entry *pool;
	struct bench_slist_entry **free;
	size_t nfree, cache_nr;
};

struct bench_slist *bench_slist_new(size_t pool)
{
	struct bench_slist *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->pool = calloc(pool, sizeof(*l->pool));
	l->free = calloc(pool, sizeof(*l->free));
	if (!l->pool || !l->free) {
		bench_slist_free(l);
		return NULL;
	}
	/* Pop order hands out pool[0] first, so entries appended in order sit in order in memory,
	 * as a freshly created mempool hands them out. */
	for (size_t i = 0; i < pool; i++)
		l->free[i] = &l->pool[pool - 1 - i];
	l->nfree = pool;
	pthread_rwlock_init(&l->lock, NULL);
	TAILQ_INIT(&l->list);
	return l;
}

void bench_slist_free(struct bench_slist *l)
{
	if (!l)
		return;
	if (l->pool)
		pthread_rwlock_destroy(&l->lock);
	free(l->pool);
	free(l->free);
	free(l);
}

static struct bench_slist_entry *slist_get(struct bench_slist *l, const struct bench_extent *x)
{
	struct bench_slist_entry *e;

	if (!l->nfree)
		return NULL; /* DPDK would evict a random entry; the harness sizes the pool instead */
	e = l->free[--l->nfree];
	e->iova = x->start;
	e->uaddr = x->phys;
	e->size = x->end - x->start + 1;
	e->perm = (uint8_t)x->flags;
	return e;
}

int bench_slist_map(struct bench_slist *l, const struct bench_extent *x)
{
	struct bench_slist_entry *e, *n;

	pthread_rwlock_wrlock(&l->lock);
	e = slist_get(l, x);
	if (!e) {
		pthread_rwlock_unlock(&l->lock);
		return -ENOMEM;
	}
	TAILQ_FOREACH(n, &l->list, next) {
		if (n->iova == e->iova) { /* "if iova already in list, assume identical" */
			l->free[l->nfree++] = e;
			goto unlock;
		} else if (n->iova > e->iova) {
			TAILQ_INSERT_BEFORE(n, e, next);
			l->cache_nr++;
			goto unlock;
		}
	}
	TAILQ_INSERT_TAIL(&l->list, e, next);
	l->cache_nr++;
unlock:
	pthread_rwlock_unlock(&l->lock);
	return 0;
}

int bench_slist_append(struct bench_slist *l, const struct bench_extent *x)
{
	struct bench_slist_entry *e, *last;

	pthread_rwlock_wrlock(&l->lock);
	last = TAILQ_LAST(&l->list, bench_slist_head);
	if (last && last->iova >= x->start) {
		pthread_rwlock_unlock(&l->lock);
		return -EINVAL;
	}
	e = slist_get(l, x);
	if (e) {
		TAILQ_INSERT_TAIL(&l->list, e, next);
		l->cache_nr++;
	}
	pthread_rwlock_unlock(&l->lock);
	return e ? 0 : -ENOMEM;
}

void bench_slist_unmap(struct bench_slist *l, uint64_t start, uint64_t end)
{
	struct bench_slist_entry *n, *tmp;
	uint64_t size = end - start + 1;

	pthread_rwlock_wrlock(&l->lock);
	for (n = TAILQ_FIRST(&l->list); n && (tmp = TAILQ_NEXT(n, next), 1); n = tmp) {
		/* Sorted list: nothing past the range. (<=: an entry starting right after the range
		 * is not part of it.) */
		if (start + size <= n->iova)
			break;
		if (start < n->iova + n->size) {
			TAILQ_REMOVE(&l->list, n, next);
			l->free[l->nfree++] = n;
			l->cache_nr--;
		}
	}
	pthread_rwlock_unlock(&l->lock);
}

/* vhost_user_iotlb_cache_find(): the list walk, caller holds the read lock. Returns the number
 * of bytes mapped from iova (< size: not fully mapped) and the address of iova. */
static inline uint64_t slist_find(struct bench_slist *l, uint64_t iova, uint64_t size, uint8_t perm,
				  uint64_t *vva_out, struct bench_slist_entry **first)
{
	struct bench_slist_entry *n;
	uint64_t offset, vva = 0, mapped = 0;
	int found = 0;

	TAILQ_FOREACH(n, &l->list, next) {
		if (iova < n->iova) /* sorted by iova: past it */
			break;
		if (iova >= n->iova + n->size)
			continue;
		if ((perm & n->perm) != perm) {
			mapped = 0;
			break;
		}
		offset = iova - n->iova;
		if (!found) {
			/* DPDK tests `!vva`; a flag here so that a mapping of address 0 works. */
			vva = n->uaddr + offset;
			found = 1;
			if (first)
				*first = n;
		}
		mapped += n->size - offset;
		iova = n->iova + n->size;
		if (mapped >= size)
			break;
	}
	*vva_out = vva;
	return mapped;
}

static inline int slist_lookup_locked(struct bench_slist *l, const struct viommu_query *q, uint64_t *pa,
				      struct bench_slist_entry **first)
{
	uint64_t size = q->size ? q->size : 1;

	return slist_find(l, q->iova, size, (uint8_t)q->access, pa, first) >= size;
}

void bench_slist_translate(struct bench_slist *l, const struct viommu_query *q, struct viommu_answer *a)
{
	struct bench_slist_entry *e = NULL;
	uint64_t pa = 0;
	int hit;

	pthread_rwlock_rdlock(&l->lock);
	hit = slist_lookup_locked(l, q, &pa, &e);
	if (hit)
		answer_hit(a, pa, e->iova, e->iova + e->size - 1, e->uaddr, e->perm);
	pthread_rwlock_unlock(&l->lock);
	if (!hit)
		answer_fault(a, q->iova);
}

uint64_t bench_slist_run(struct bench_slist *l, const struct viommu_query *q, size_t qmask,
			 size_t start, size_t ops, uint64_t *faults)
{
	uint64_t sum = 0, miss = 0, pa = 0;

	for (size_t i = 0; i < ops; i++) {
		int hit;

		pthread_rwlock_rdlock(&l->lock);
		hit = slist_lookup_locked(l, &q[(start + i) & qmask], &pa, NULL);
		pthread_rwlock_unlock(&l->lock);
		if (hit)
			sum += pa;
		else
			miss++;
	}
	*faults += miss;
	return sum;
}

uint64_t bench_slist_run_bulk(struct bench_slist *l, const struct viommu_query *q, size_t qmask,
			      size_t start, size_t ops, uint64_t *faults)
{
	uint64_t sum = 0, miss = 0, pa = 0;

	/* DPDK's datapath takes the read lock once per burst (virtio_dev_rx/tx). */
	for (size_t i = 0; i < ops; i++) {
		pthread_rwlock_rdlock(&l->lock);
		for (size_t j = 0; j < BENCH_BULK; j++) {
			if (slist_lookup_locked(l, &q[((start + i) * BENCH_BULK + j) & qmask], &pa, NULL))
				sum += pa;
			else
				miss++;
		}
		pthread_rwlock_unlock(&l->lock);
	}
	*faults += miss;
	return sum;
}
