/* SPDX-License-Identifier: MIT */
/*
 * viommu_image: the device's whole state as a versioned binary image, for live migration
 * (docs/image.md gives the format). Saved on the source, restored into a fresh device on the
 * destination; the VMM then creates the destination's fast path (viommu_fastpath_new), which
 * mirrors the restored state before any reader of it exists, so readers see the old device or
 * the new one, never a mix.
 *
 * The image is untrusted input (it crosses hosts): restore checks every field and rebuilds the
 * state through the device's own request path (each endpoint declared, each attachment and
 * mapping applied as the guest's request would be, each answered OK), so a restored device passes
 * every check a live one does. A bad image gives NULL, errno and a sentence naming what is wrong;
 * nothing is left behind.
 *
 * Not in the image: request counters (statistics), observers (the fast path, bridges: the
 * destination makes its own), virtqueue state (the transport's own, saved beside this).
 * Concurrency: the device thread; save reads the device, restore makes a new one.
 */
#ifndef VIOMMU_IMAGE_H
#define VIOMMU_IMAGE_H

#include <stddef.h>

#include "device.h"

#define VIOMMU_IMAGE_MAGIC "VIOMMUIM" /* 8 bytes, no terminator in the image */
#define VIOMMU_IMAGE_VERSION 1u
#define VIOMMU_IMAGE_MAX_BYTES (1ull << 32) /* restore refuses a bigger image */

/* Save @dev into a malloc'd buffer (*image, *len). 0 or -ENOMEM. */
int viommu_device_save(const struct viommu_device *dev, void **image, size_t *len);

/* Rewrite the header's total length (@len) and checksum after the records of @image were built
 * or edited by hand (tools, tests, the fuzzer), so that restore judges the records themselves.
 * @len must be at least the 32-byte header. */
void viommu_image_seal(void *image, size_t len);

/* A new device in the state @image describes. NULL + errno: EINVAL (malformed or inconsistent:
 * @why, if not NULL, gets a sentence of at most @why_len bytes), EPROTO (another version),
 * ENOMEM. */
struct viommu_device *viommu_device_restore(const void *image, size_t len, char *why, size_t why_len);

/* ---- the transport's record (virtqueue.h: viommu_virtio_save / viommu_virtio_restore) ----
 * The image code carries it, the transport encodes and checks it (docs/image.md, TRANSPORT). */
#define VIOMMU_IMAGE_TRANSPORT_BYTES 96u

/* Like viommu_device_save, with one TRANSPORT record of VIOMMU_IMAGE_TRANSPORT_BYTES bytes from
 * @transport before END. 0, -EINVAL (@transport NULL), -ENOMEM. */
int viommu_image_save_with_transport(const struct viommu_device *dev, const void *transport,
				     void **image, size_t *len);
/* The TRANSPORT record's payload in @image (VIOMMU_IMAGE_TRANSPORT_BYTES bytes, pointing into
 * @image), after the image's whole structure was checked as viommu_device_restore checks it.
 * 0; -ENOENT (a well-formed image without one), -EINVAL (malformed: @why), -EPROTO. */
int viommu_image_transport(const void *image, size_t len, const void **payload, char *why,
			   size_t why_len);

#endif
