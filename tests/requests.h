/* SPDX-License-Identifier: MIT */
/*
 * Request helpers for the tests: one wire request built by user/wire.h, submitted to @dev as one
 * readable and one writable buffer; each returns the status byte of the tail.
 */
#ifndef VIOMMU_TEST_REQUESTS_H
#define VIOMMU_TEST_REQUESTS_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "device.h"

static inline uint8_t test_submit(struct viommu_device *dev, const uint8_t *r, size_t len)
{
	uint8_t t[4];

	cr_assert_eq(viommu_device_request_buf(dev, r, len, t, sizeof(t)), 4);
	return t[0];
}

static inline uint8_t test_attach(struct viommu_device *dev, uint32_t domain, uint32_t ep)
{
	uint8_t r[64];

	return test_submit(dev, r, viommu_req_attach(r, domain, ep, 0));
}

static inline uint8_t test_map(struct viommu_device *dev, uint32_t domain, uint64_t start,
			       uint64_t end, uint64_t phys, uint32_t flags)
{
	uint8_t r[64];

	return test_submit(dev, r, viommu_req_map(r, domain, start, end, phys, flags));
}

static inline uint8_t test_unmap(struct viommu_device *dev, uint32_t domain, uint64_t start,
				 uint64_t end)
{
	uint8_t r[64];

	return test_submit(dev, r, viommu_req_unmap(r, domain, start, end));
}

#endif
