// SPDX-License-Identifier: MIT
/*
 * The save/restore image (user/image.c) as untrusted input. The input is an image body; the
 * harness writes a valid header over its first 32 bytes (magic, version, length, checksum), so
 * the fuzzer gets past the checksum and exercises the record checks and the rebuild. Oracles:
 * no crash or sanitizer report; a refused image sets errno and a reason; an accepted one gives a
 * device that passes viommu_device_check(), and saving it again and restoring that gives a
 * byte-identical image (save/restore is a fixed point). The TRANSPORT record, if any, is then
 * restored over the device and a fixed 1 MiB memory map at GUEST_GPA: refused with EINVAL and a
 * reason, or accepted, and then the transport and its device save, restore and save again to
 * the same bytes, and a kick of each queue over the (zeroed) guest memory does not crash.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>

#include "image.h"
#include "virtqueue.h"
#include "wire.h"

#define FAIL(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), abort())

#define GUEST_GPA 0x10000000ull
#define GUEST_SIZE (1u << 20)

static struct viommu_mem *guest_map(void)
{
	static uint8_t *guest;
	struct viommu_mem_region r = { .gpa = GUEST_GPA, .size = GUEST_SIZE, .fd = -1 };

	if (!guest) {
		guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (guest == MAP_FAILED)
			FAIL("mmap");
	}
	memset(guest, 0, GUEST_SIZE);
	r.hva = guest;
	return viommu_mem_new(&r, 1);
}

/* The image's TRANSPORT record over @dev (restored from @img). */
static void transport(struct viommu_device *dev, const uint8_t *img, size_t n)
{
	struct viommu_mem *mem = guest_map();
	struct viommu_virtio *vd, *vd2;
	struct viommu_device *dev2;
	void *s1, *s2;
	size_t l1, l2;
	char why[200] = "";

	if (!mem)
		FAIL("memory map");
	vd = viommu_virtio_restore(dev, mem, img, n, why, sizeof(why));
	if (!vd) {
		if (errno != EINVAL && errno != ENOMEM)
			FAIL("transport restore failed with errno %d", errno);
		if (errno != ENOMEM && !why[0])
			FAIL("a refused transport without a reason");
		viommu_mem_free(mem); /* still the caller's */
		return;
	}
	if (viommu_virtio_save(vd, &s1, &l1))
		FAIL("transport save failed");
	if (!(dev2 = viommu_device_restore(s1, l1, why, sizeof(why))))
		FAIL("the transport's own image: device refused: %s", why);
	if (!(mem = guest_map()) || !(vd2 = viommu_virtio_restore(dev2, mem, s1, l1, why, sizeof(why))))
		FAIL("the transport's own image was refused: %s", why);
	if (viommu_virtio_save(vd2, &s2, &l2) || l1 != l2 || memcmp(s1, s2, l1))
		FAIL("transport save -> restore -> save is not a fixed point");
	viommu_virtio_kick(vd2, VIOMMU_VIRTIO_REQUESTQ);
	viommu_virtio_kick(vd2, VIOMMU_VIRTIO_EVENTQ);
	if (viommu_device_check(dev2))
		FAIL("a device under a restored transport fails its own check");
	free(s1);
	free(s2);
	viommu_virtio_free(vd2);
	viommu_device_free(dev2);
	viommu_virtio_free(vd);
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
	viommu_image_seal(img, n);
	dev = viommu_device_restore(img, n, why, sizeof(why));
	if (dev)
		transport(dev, img, n);
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
