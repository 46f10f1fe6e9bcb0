// SPDX-License-Identifier: MIT
/* The intrusive AVL tree under every table of the device core, against a sorted array. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "avl.h"

#define N 4096

static uint64_t rng = 0x1234567;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

Test(avl, empty_tree_finds_nothing)
{
	struct viommu_avl t;

	viommu_avl_init(&t);
	cr_assert_null(viommu_avl_find(&t, 0));
	cr_assert_null(viommu_avl_floor(&t, UINT64_MAX));
	cr_assert_null(viommu_avl_ceil(&t, 0));
	cr_assert_null(viommu_avl_first(&t));
	cr_assert_null(viommu_avl_remove(&t, 5));
	cr_assert_eq(viommu_avl_check(&t), 0);
}

Test(avl, duplicate_key_is_refused_and_tree_unchanged)
{
	struct viommu_avl t;
	struct viommu_avl_node a = { .key = 7 }, b = { .key = 7 };

	viommu_avl_init(&t);
	cr_assert_eq(viommu_avl_insert(&t, &a), 0);
	cr_assert_eq(viommu_avl_insert(&t, &b), -EEXIST);
	cr_assert_eq(t.count, 1);
	cr_assert_eq(viommu_avl_find(&t, 7), &a);
	cr_assert_eq(viommu_avl_check(&t), 0);
}

Test(avl, extreme_keys_work_as_any_other)
{
	struct viommu_avl t;
	struct viommu_avl_node lo = { .key = 0 }, hi = { .key = UINT64_MAX };

	viommu_avl_init(&t);
	viommu_avl_insert(&t, &hi);
	viommu_avl_insert(&t, &lo);
	cr_assert_eq(viommu_avl_floor(&t, UINT64_MAX - 1), &lo);
	cr_assert_eq(viommu_avl_ceil(&t, 1), &hi);
	cr_assert_eq(viommu_avl_next(&t, 0), &hi);
	cr_assert_null(viommu_avl_next(&t, UINT64_MAX));
	cr_assert_eq(viommu_avl_first(&t), &lo);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Reference answers from a sorted array of the live keys. */
static const uint64_t *ref_floor(const uint64_t *k, size_t n, uint64_t key)
{
	const uint64_t *best = NULL;

	for (size_t i = 0; i < n && k[i] <= key; i++)
		best = &k[i];
	return best;
}

static const uint64_t *ref_ceil(const uint64_t *k, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		if (k[i] >= key)
			return &k[i];
	return NULL;
}

Test(avl, random_inserts_and_removes_match_a_sorted_array_and_stay_balanced)
{
	static struct viommu_avl_node nodes[N];
	static uint64_t live[N];
	static bool in[N];
	struct viommu_avl t;
	size_t nlive;

	viommu_avl_init(&t);
	for (unsigned i = 0; i < N; i++)
		nodes[i].key = (next_rand() % (N * 8)) * 16 + i % 16; /* unique: low bits = i % 16 */
	for (unsigned i = 0; i < N; i++)
		for (unsigned j = 0; j < i; j++)
			if (nodes[j].key == nodes[i].key)
				nodes[i].key = UINT64_MAX - i; /* rare collision: make it unique */
	for (unsigned round = 0; round < 20000; round++) {
		unsigned i = next_rand() % N;

		if (in[i]) {
			cr_assert_eq(viommu_avl_remove(&t, nodes[i].key), &nodes[i]);
			in[i] = false;
		} else {
			cr_assert_eq(viommu_avl_insert(&t, &nodes[i]), 0);
			in[i] = true;
		}
		if (round % 512)
			continue;
		cr_assert_eq(viommu_avl_check(&t), 0, "round %u", round);
		nlive = 0;
		for (unsigned j = 0; j < N; j++)
			if (in[j])
				live[nlive++] = nodes[j].key;
		qsort(live, nlive, sizeof(live[0]), cmp_u64);
		cr_assert_eq(t.count, nlive);
		for (unsigned q = 0; q < 200; q++) {
			uint64_t key = next_rand() % (N * 8 * 16 + 32);
			const uint64_t *f = ref_floor(live, nlive, key), *c = ref_ceil(live, nlive, key);
			const uint64_t *nx = ref_ceil(live, nlive, key + 1);
			struct viommu_avl_node *tf = viommu_avl_floor(&t, key);
			struct viommu_avl_node *tc = viommu_avl_ceil(&t, key);
			struct viommu_avl_node *tn = viommu_avl_next(&t, key);

			cr_assert_eq(tf ? tf->key : 1, f ? *f : 1, "floor(%llu)", (unsigned long long)key);
			cr_assert_eq(tc ? tc->key : 1, c ? *c : 1, "ceil(%llu)", (unsigned long long)key);
			cr_assert_eq(tn ? tn->key : 1, nx ? *nx : 1, "next(%llu)", (unsigned long long)key);
		}
	}
}

Test(avl, sequential_inserts_keep_the_height_logarithmic)
{
	static struct viommu_avl_node nodes[1 << 16];
	struct viommu_avl t;

	viommu_avl_init(&t);
	for (unsigned i = 0; i < 1u << 16; i++) {
		nodes[i].key = i;
		viommu_avl_insert(&t, &nodes[i]);
	}
	/* An AVL tree of n nodes is at most 1.44 log2(n + 2) high: 23 for 2^16. */
	cr_assert_leq(t.root->height, 23);
	cr_assert_eq(viommu_avl_check(&t), 0);
}

Test(avl, check_detects_a_corrupted_tree)
{
	struct viommu_avl t;
	struct viommu_avl_node n[3] = { { .key = 1 }, { .key = 2 }, { .key = 3 } };

	viommu_avl_init(&t);
	for (int i = 0; i < 3; i++)
		viommu_avl_insert(&t, &n[i]);
	cr_assert_eq(viommu_avl_check(&t), 0);
	t.root->left->key = 9; /* out of order */
	cr_assert_eq(viommu_avl_check(&t), -EUCLEAN);
}
