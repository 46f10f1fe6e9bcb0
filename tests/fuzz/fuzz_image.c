// SPDX-License-Identifier: MIT
/*
 * The save/restore image (user/image.c) as untrusted input. The input is an image body; the
 * harness writes a valid header over its first 32 bytes (magic, version, length, checksum), so
 * the fuzzer gets past the checksum and exercises the record checks and the rebuild. Oracles:
 * no crash or sanitizer report; a refused image sets errno and a reason; an accepted one gives a
 * device that passes viommu_device_check(), and saving it again and restoring that gives a
 * byte-identical image (save/restore is a fixed point).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "wire.h"

#define FAIL(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), abort())

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *img;
	struct viommu_device *dev, *dev2;
	void *s1, *s2;
	size_t l1, l2, n = size < 32 ? 32 : size;
	char why[200];

	if (size > (1u << 20))
		return 0;
	img = calloc(1, n);
	if (!img)
		return 0;
	memcpy(img, data, size);
	memcpy(img, VIOMMU_IMAGE_MAGIC, 8);
	viommu_put_le32(img + 8, VIOMMU_IMAGE_VERSION);
	viommu_put_le32(img + 12, 32);
	viommu_put_le64(img + 16, n);
	viommu_put_le32(img + 24, fnv1a(img + 32, n - 32));
	dev = viommu_device_restore(img, n, why, sizeof(why));
	free(img);
	if (!dev) {
		if (errno != EINVAL && errno != EPROTO && errno != ENOMEM)
			FAIL("restore failed with errno %d", errno);
		if (errno != ENOMEM && !why[0])
			FAIL("a refused image without a reason");
		return 0;
	}
	if (viommu_device_check(dev))
		FAIL("a restored device fails its own check");
	if (viommu_device_save(dev, &s1, &l1))
		FAIL("save failed");
	dev2 = viommu_device_restore(s1, l1, why, sizeof(why));
	if (!dev2)
		FAIL("the device's own image was refused: %s", why);
	if (viommu_device_save(dev2, &s2, &l2) || l1 != l2 || memcmp(s1, s2, l1))
		FAIL("save -> restore -> save is not a fixed point");
	free(s1);
	free(s2);
	viommu_device_free(dev2);
	viommu_device_free(dev);
	return 0;
}
