// SPDX-License-Identifier: MIT
/* The B+tree under each domain's extents, against a sorted array of the live keys. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "btree.h"

#define N 20000

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Values are the keys' addresses in this array, so a wrong value is caught too. */
static uint64_t keys[N];
static bool in[N];

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void check_queries(const struct viommu_btree *t, uint64_t *live, size_t nlive)
{
	for (int q = 0; q < 300; q++) {
		uint64_t key = q < 4 ? (uint64_t[]){ 0, 1, UINT64_MAX, UINT64_MAX - 1 }[q] :
				       next_rand() % (N * 64ull);
		size_t lo = 0, hi = nlive;
		uint64_t got_key;
		const uint64_t *v;

		while (lo < hi) { /* first live key >= key */
			size_t mid = (lo + hi) / 2;

			if (live[mid] < key)
				lo = mid + 1;
			else
				hi = mid;
		}
		v = viommu_btree_ceil(t, key, &got_key);
		cr_assert_eq(v ? *v : 1, lo < nlive ? live[lo] : 1, "ceil(%llu)", (unsigned long long)key);
		if (v)
			cr_assert_eq(got_key, *v);
		v = viommu_btree_floor(t, key, NULL);
		if (lo < nlive && live[lo] == key)
			cr_assert_eq(v ? *v : 1, key, "floor(%llu) is the key itself", (unsigned long long)key);
		else
			cr_assert_eq(v ? *v : 1, lo ? live[lo - 1] : 1, "floor(%llu)", (unsigned long long)key);
		v = viommu_btree_next(t, key, NULL);
		{
			size_t nx = lo < nlive && live[lo] == key ? lo + 1 : lo;

			cr_assert_eq(v ? *v : 1, nx < nlive ? live[nx] : 1, "next(%llu)", (unsigned long long)key);
		}
		v = viommu_btree_find(t, key);
		cr_assert_eq(v != NULL, lo < nlive && live[lo] == key);
	}
}

Test(btree, random_inserts_and_removes_match_a_sorted_array_and_stay_balanced)
{
	static uint64_t live[N];
	struct viommu_btree t;
	size_t nlive;

	viommu_btree_init(&t);
	for (unsigned i = 0; i < N; i++)
		keys[i] = (uint64_t)i * 64 + next_rand() % 64; /* unique, in random order below */
	for (unsigned round = 0; round < 200000; round++) {
		/* Phases: grow to most of N, shrink to few, grow again: every merge and split path. */
		unsigned phase = (round / 40000) % 2, i = next_rand() % N;
		bool add = phase == 0 ? next_rand() % 4 != 0 : next_rand() % 4 == 0;

		if (in[i] && !add) {
			cr_assert_eq(viommu_btree_remove(&t, keys[i]), &keys[i]);
			in[i] = false;
		} else if (!in[i] && add) {
			cr_assert_eq(viommu_btree_insert(&t, keys[i], &keys[i]), 0);
			in[i] = true;
		} else if (in[i]) {
			cr_assert_eq(viommu_btree_insert(&t, keys[i], &keys[i]), -EEXIST);
		} else {
			cr_assert_null(viommu_btree_remove(&t, keys[i]));
		}
		if (round % 4000)
			continue;
		cr_assert_eq(viommu_btree_check(&t), 0, "round %u", round);
		nlive = 0;
		for (unsigned j = 0; j < N; j++)
			if (in[j])
				live[nlive++] = keys[j];
		qsort(live, nlive, sizeof(live[0]), cmp_u64);
		cr_assert_eq(t.count, nlive);
		check_queries(&t, live, nlive);
	}
	viommu_btree_destroy(&t, NULL);
	cr_assert_null(t.root);
}

Test(btree, every_operation_keeps_the_tree_valid_through_splits_and_merges)
{
	struct viommu_btree t;

	viommu_btree_init(&t);
	for (unsigned i = 0; i < 3001; i++) {
		cr_assert_eq(viommu_btree_insert(&t, i * 7919ull % 3001, &keys[0]), 0);
		cr_assert_eq(viommu_btree_check(&t), 0, "after insert %u", i);
	}
	for (unsigned i = 0; i < 3001; i++) {
		cr_assert_not_null(viommu_btree_remove(&t, i * 4099ull % 3001));
		cr_assert_eq(viommu_btree_check(&t), 0, "after remove %u", i);
	}
	cr_assert_eq(t.count, 0);
	cr_assert_null(t.root, "an empty tree frees its last node");
}

Test(btree, extreme_keys_and_an_empty_tree)
{
	struct viommu_btree t;
	uint64_t k;

	viommu_btree_init(&t);
	cr_assert_null(viommu_btree_floor(&t, UINT64_MAX, NULL));
	cr_assert_null(viommu_btree_first(&t, NULL));
	cr_assert_eq(viommu_btree_insert(&t, UINT64_MAX, &keys[1]), 0);
	cr_assert_eq(viommu_btree_insert(&t, 0, &keys[0]), 0);
	cr_assert_eq(viommu_btree_floor(&t, UINT64_MAX - 1, &k), &keys[0]);
	cr_assert_eq(k, 0);
	cr_assert_eq(viommu_btree_next(&t, 0, &k), &keys[1]);
	cr_assert_eq(k, UINT64_MAX);
	cr_assert_null(viommu_btree_next(&t, UINT64_MAX, NULL));
	viommu_btree_destroy(&t, NULL);
}

static unsigned destroyed;

static void count_value(void *v)
{
	(void)v;
	destroyed++;
}

Test(btree, destroy_hands_every_value_back)
{
	struct viommu_btree t;

	viommu_btree_init(&t);
	for (unsigned i = 0; i < 1000; i++)
		viommu_btree_insert(&t, i, &keys[i]);
	viommu_btree_destroy(&t, count_value);
	cr_assert_eq(destroyed, 1000);
	cr_assert_eq(t.count, 0);
}

/* What insert_if asked, and what it answers. */
struct asked {
	unsigned calls;
	const void *pred, *succ;
	uint64_t succ_key;
	int refuse;
};

static int record_refuse(void *arg, void *pred, uint64_t succ_key, void *succ)
{
	struct asked *a = arg;

	a->calls++;
	a->pred = pred;
	a->succ = succ;
	a->succ_key = succ_key;
	return a->refuse;
}

/* insert_if asks about the new key's true neighbours, in its leaf or across a leaf boundary (the
 * keys are dense enough for hundreds of leaves), and a refusal leaves the tree as it was. */
Test(btree, insert_if_asks_about_the_true_neighbours_and_a_refusal_changes_nothing)
{
	struct viommu_btree t;
	static uint64_t k[4096];

	viommu_btree_init(&t);
	for (unsigned i = 0; i < 4096; i++) {
		k[i] = 16 * (uint64_t)i + 8;
		cr_assert_eq(viommu_btree_insert(&t, k[i], &k[i]), 0);
	}
	/* Removals leave separators below their leaves' first keys: a new key can then land at
	 * the start of a leaf whose neighbour before it is the previous leaf's last key. */
	for (unsigned i = 0; i < 4096; i += 3)
		cr_assert_eq(viommu_btree_remove(&t, k[i]), &k[i]);
	for (uint64_t key = 0; key < 16 * 4096 + 32; key += 3) {
		struct asked a = { .refuse = (int)(key % 2) };
		uint64_t fk;
		const void *want_pred = viommu_btree_floor(&t, key, &fk), *want_succ;
		uint64_t want_succ_key = 0;
		int err;

		if (want_pred && fk == key)
			continue; /* present: -EEXIST before anything is asked */
		want_succ = viommu_btree_ceil(&t, key, &want_succ_key);
		err = viommu_btree_insert_if(&t, key, &k[0], record_refuse, &a);
		cr_assert_eq(a.calls, 1);
		cr_assert_eq(a.pred, want_pred, "key %llu: asked with pred %p, floor says %p", (unsigned long long)key,
			     a.pred, want_pred);
		cr_assert_eq(a.succ, want_succ, "key %llu: asked with succ %p, ceil says %p", (unsigned long long)key,
			     a.succ, want_succ);
		if (want_succ)
			cr_assert_eq(a.succ_key, want_succ_key);
		if (a.refuse) {
			cr_assert_eq(err, -EBUSY);
			cr_assert_eq(t.count, 4096 - 1366);
			cr_assert_null(viommu_btree_find(&t, key));
		} else {
			cr_assert_eq(err, 0);
			cr_assert_eq(viommu_btree_remove(&t, key), &k[0]);
		}
		cr_assert_eq(viommu_btree_check(&t), 0);
	}
	viommu_btree_destroy(&t, NULL);
}

/* A refusal on an empty tree leaves it empty: no root made for the insert stays behind. */
Test(btree, insert_if_refused_on_an_empty_tree_leaves_it_empty)
{
	struct viommu_btree t;
	struct asked a = { .refuse = 1 };
	uint64_t v;

	viommu_btree_init(&t);
	cr_assert_eq(viommu_btree_insert_if(&t, 42, &v, record_refuse, &a), -EBUSY);
	cr_assert_eq(a.calls, 1);
	cr_assert_null(a.pred);
	cr_assert_null(a.succ);
	cr_assert_null(t.root);
	cr_assert_eq(t.count, 0);
	cr_assert_eq(viommu_btree_check(&t), 0);
	a.refuse = 0;
	cr_assert_eq(viommu_btree_insert_if(&t, 42, &v, record_refuse, &a), 0);
	cr_assert_eq(viommu_btree_find(&t, 42), &v);
	viommu_btree_destroy(&t, NULL);
}

/* What remove_if's question was asked, and what it answered. */
struct taken {
	unsigned calls;
	const void *val;
	bool take;
};

static bool record_take(void *arg, void *val)
{
	struct taken *a = arg;

	a->calls++;
	a->val = val;
	return a->take;
}

/* remove_if asks once, with the value of exactly its key, and only when the key is there; a "no"
 * leaves the tree as it was, a "yes" removes that key alone, through merges and borrows (hundreds
 * of leaves, removed down to none). */
Test(btree, remove_if_asks_about_the_value_of_its_key_and_a_no_changes_nothing)
{
	struct viommu_btree t;
	static uint64_t k[4096];
	size_t count = 4096;

	viommu_btree_init(&t);
	for (unsigned i = 0; i < 4096; i++) {
		k[i] = 16 * (uint64_t)i + 8;
		cr_assert_eq(viommu_btree_insert(&t, k[i], &k[i]), 0);
	}
	for (unsigned round = 0; round < 2; round++)
		for (unsigned j = 0; j < 4096; j++) {
			unsigned i = (j * 1237u) % 4096; /* every key once, in a scattered order */
			struct taken a = { .take = round == 1 };
			void *got = viommu_btree_remove_if(&t, k[i] + 1, record_take, &a);

			cr_assert_null(got, "key %u + 1 is not in the tree", i);
			cr_assert_eq(a.calls, 0, "asked about an absent key");
			got = viommu_btree_remove_if(&t, k[i], record_take, &a);
			cr_assert_eq(a.calls, 1);
			cr_assert_eq(a.val, &k[i]);
			if (round == 0) {
				cr_assert_null(got);
				cr_assert_eq(viommu_btree_find(&t, k[i]), &k[i]);
			} else {
				cr_assert_eq(got, &k[i]);
				cr_assert_null(viommu_btree_find(&t, k[i]));
				count--;
			}
			cr_assert_eq(t.count, count);
			if (j % 64 == 0 || count < 64)
				cr_assert_eq(viommu_btree_check(&t), 0, "round %u, after %u", round, j);
		}
	cr_assert_null(t.root);
	viommu_btree_destroy(&t, NULL);
}

/* The finger under every operation, the tree checked after each (a finger naming a freed leaf
 * fails it), insert_if's neighbours and remove_if's refusals against floor and ceil. Keys near
 * the last one touched, so that the finger is taken often; growing, then shrinking. */
Test(btree, the_finger_answers_every_insert_and_removal_as_a_descent_would_and_never_outlives_its_leaf)
{
	struct viommu_btree t;
	static uint64_t k[6000];
	static bool present[6000];
	uint64_t r = 12345;
	unsigned last = 0;

	viommu_btree_init(&t);
	for (unsigned i = 0; i < 6000; i++)
		k[i] = 4 * (uint64_t)i;
	for (unsigned round = 0; round < 80000; round++) {
		unsigned i, op;

		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		/* often near the last key touched */
		i = (r >> 8) % 4 == 0 ? (unsigned)((r >> 16) % 6000) : (unsigned)((last + (r >> 16) % 64 + 6000 - 32) % 6000);
		last = i;
		op = (unsigned)(r >> 40) % 8;
		if (op < 4 && (round / 20000) % 2) /* grow, then shrink */
			op += 4;
		if (op < 4) {
			struct asked a = { .refuse = (int)((r >> 50) % 5 == 0) };
			uint64_t fk = 0, sk = 0;
			void *wp = viommu_btree_floor(&t, k[i], &fk), *ws;
			int err;

			if (wp && fk == k[i])
				wp = NULL, fk = 0, ws = NULL;
			ws = viommu_btree_ceil(&t, k[i], &sk);
			if (ws && sk == k[i])
				ws = NULL;
			err = viommu_btree_insert_if(&t, k[i], &k[i], record_refuse, &a);
			if (present[i]) {
				cr_assert_eq(err, -EEXIST);
			} else {
				cr_assert_eq(a.calls, 1);
				cr_assert_eq(a.pred, wp, "round %u key %llu pred", round, (unsigned long long)k[i]);
				cr_assert_eq(a.succ, ws, "round %u key %llu succ", round, (unsigned long long)k[i]);
				if (a.refuse)
					cr_assert_eq(err, -EBUSY);
				else {
					cr_assert_eq(err, 0);
					present[i] = true;
				}
			}
		} else if (op < 7) {
			struct taken a = { .take = (r >> 52) % 4 != 0 };
			void *got = viommu_btree_remove_if(&t, k[i] + (op == 6), record_take, &a);

			if (op == 6 || !present[i]) {
				cr_assert_null(got);
				cr_assert_eq(a.calls, 0);
			} else if (a.take) {
				cr_assert_eq(got, &k[i]);
				present[i] = false;
			} else {
				cr_assert_null(got);
			}
		} else {
			void *got = viommu_btree_remove(&t, k[i]);

			cr_assert_eq(got, present[i] ? &k[i] : NULL);
			present[i] = false;
		}
		cr_assert_eq(viommu_btree_check(&t), 0, "round %u", round);
	}
	viommu_btree_destroy(&t, NULL);
	cr_assert_null(t.finger);
}
