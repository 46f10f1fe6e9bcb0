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

/* Submit @len bytes of request: the device answers with exactly a tail whose reserved bytes
 * are zero; returns its status. */
static inline uint8_t test_submit(struct viommu_device *dev, const uint8_t *r, size_t len)
{
	uint8_t t[4] = { 0xee, 0xee, 0xee, 0xee };

	cr_assert_eq(viommu_device_request_buf(dev, r, len, t, sizeof(t)), 4);
	cr_assert(!t[1] && !t[2] && !t[3], "tail reserved bytes are zero");
	return t[0];
}

/* How the helpers below hand a request over: test_submit(), unless the test defines
 * TEST_SUBMIT (same signature) before including this header — test_stress.c scatters each
 * request over two buffers and counts its status. */
#ifndef TEST_SUBMIT
#define TEST_SUBMIT test_submit
#endif

static inline uint8_t test_attach(struct viommu_device *dev, uint32_t domain, uint32_t ep,
				  uint32_t flags)
{
	uint8_t r[64];

	return TEST_SUBMIT(dev, r, viommu_req_attach(r, domain, ep, flags));
}

static inline uint8_t test_detach(struct viommu_device *dev, uint32_t domain, uint32_t ep)
{
	uint8_t r[64];

	return TEST_SUBMIT(dev, r, viommu_req_detach(r, domain, ep));
}

static inline uint8_t test_map(struct viommu_device *dev, uint32_t domain, uint64_t start,
			       uint64_t end, uint64_t phys, uint32_t flags)
{
	uint8_t r[64];

	return TEST_SUBMIT(dev, r, viommu_req_map(r, domain, start, end, phys, flags));
}

static inline uint8_t test_unmap(struct viommu_device *dev, uint32_t domain, uint64_t start,
				 uint64_t end)
{
	uint8_t r[64];

	return TEST_SUBMIT(dev, r, viommu_req_unmap(r, domain, start, end));
}

#endif
