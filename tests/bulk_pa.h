/* SPDX-License-Identifier: MIT */
/*
 * viommu_reader_translate_bulk_pa() against the answers @want of the same @n (1-64) queries (the
 * store's, or a model's): bit i set exactly when q[i]'s range does not run past 2^64 and want[i]
 * is a HIT whose run holds all of it, or IDENTITY; then pa[i] is want[i].pa. Criterion tests
 * only.
 */
#ifndef VIOMMU_TEST_BULK_PA_H
#define VIOMMU_TEST_BULK_PA_H

#include <criterion/criterion.h>

#include "reader.h"

static inline void test_check_bulk_pa(struct viommu_reader *r, const struct viommu_query *q,
				      const struct viommu_answer *want, unsigned n, const char *who)
{
	uint64_t pa[VIOMMU_BULK_MAX], mask;

	cr_assert(n >= 1 && n <= VIOMMU_BULK_MAX);
	mask = viommu_reader_translate_bulk_pa(r, q, pa, n);
	cr_assert_eq(mask >> (n - 1) >> 1, 0, "%s: bits past the burst", who);
	for (unsigned i = 0; i < n; i++) {
		const struct viommu_answer *w = &want[i];
		const uint64_t len1 = q[i].size ? q[i].size - 1 : 0; /* size 0 counts as 1 */
		bool one_run = q[i].iova + len1 >= q[i].iova &&
			       (w->result == VIOMMU_XLATE_IDENTITY ||
				(w->result == VIOMMU_XLATE_HIT && w->ext_start <= q[i].iova &&
				 len1 <= w->ext_end - q[i].iova));

		cr_assert_eq(!!(mask >> i & 1), one_run,
			     "%s: ep 0x%x iova 0x%llx size 0x%llx access 0x%x: bulk_pa bit %d, the answer %u run "
			     "[0x%llx, 0x%llx]", who, q[i].endpoint, (unsigned long long)q[i].iova,
			     (unsigned long long)q[i].size, q[i].access, (int)(mask >> i & 1), w->result,
			     (unsigned long long)w->ext_start, (unsigned long long)w->ext_end);
		if (one_run)
			cr_assert_eq(pa[i], w->pa, "%s: ep 0x%x iova 0x%llx: bulk_pa 0x%llx, the answer 0x%llx", who,
				     q[i].endpoint, (unsigned long long)q[i].iova, (unsigned long long)pa[i],
				     (unsigned long long)w->pa);
	}
}

#endif
