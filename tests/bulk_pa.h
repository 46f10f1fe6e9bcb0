/* SPDX-License-Identifier: MIT */
/*
 * viommu_reader_translate_bulk_pa() against the answers @want of the same @n queries (the
 * store's, or a model's): bit i set exactly when want[i] is a HIT whose run holds q[i]'s whole
 * range, or IDENTITY, and then pa[i] is want[i].pa. Criterion tests only.
 */
#ifndef VIOMMU_TEST_BULK_PA_H
#define VIOMMU_TEST_BULK_PA_H

#include <criterion/criterion.h>

#include "reader.h"

static inline void test_check_bulk_pa(struct viommu_reader *r, const struct viommu_query *q,
				      const struct viommu_answer *want, unsigned n, const char *who)
{
	uint64_t pa[VIOMMU_BULK_MAX], mask;

	cr_assert_leq(n, VIOMMU_BULK_MAX);
	mask = viommu_reader_translate_bulk_pa(r, q, pa, n);
	cr_assert_eq(mask >> (n - 1) >> 1, 0, "%s: bits past the burst", who);
	for (unsigned i = 0; i < n; i++) {
		const struct viommu_answer *w = &want[i];
		bool one_run = w->result == VIOMMU_XLATE_IDENTITY ||
			       (w->result == VIOMMU_XLATE_HIT && q[i].size && w->ext_start <= q[i].iova &&
				q[i].size - 1 <= w->ext_end - q[i].iova);

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
