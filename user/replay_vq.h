/* SPDX-License-Identifier: MIT */
/*
 * The driver side of `viommu replay --via=virtqueue`: a model of Linux's virtio-iommu driver
 * (drivers/iommu/virtio-iommu.c) over real split rings in shared memory, talking to the device
 * through the transport of virtqueue.h exactly as a VMM would wire it (kick and call eventfds).
 *
 * Guest memory is one memfd seen through three regions: the rings, indirect tables and event
 * buffers at 4 GiB (64-bit addresses), and request buffers in two regions adjacent in guest
 * space but apart in the file, so the first request of every batch straddles them (the device
 * sees it as two host segments). Each request is one buffer, its device-readable part then its
 * device-writable part, added as two scatter entries (one indirect descriptor over a table of
 * two when INDIRECT_DESC is negotiated, else two chained descriptors); the driver kicks once per
 * batch and reaps every used entry; the event queue is kept full of 24-byte buffers, each
 * re-posted (and the queue kicked) once read. The driver asks for an interrupt on every used
 * entry and checks that each kick brought exactly one.
 *
 * Concurrency: one thread (the replayer's) plays guest and VMM in turn.
 */
#ifndef VIOMMU_REPLAY_VQ_H
#define VIOMMU_REPLAY_VQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

struct viommu_vq_driver;

#define VIOMMU_VQ_DRIVER_INDIRECT (1u << 0) /* negotiate INDIRECT_DESC */
#define VIOMMU_VQ_DRIVER_EVENT_IDX (1u << 1) /* negotiate EVENT_IDX */

/* A guest on @dev negotiating @features (device-type bits; transport bits from @flags) and
 * bringing the device up (status, queues, event buffers). NULL and errno. */
struct viommu_vq_driver *viommu_vq_driver_new(struct viommu_device *dev, uint64_t features,
					      unsigned flags);
void viommu_vq_driver_free(struct viommu_vq_driver *drv);

/* Queue one request (not kicked). Returns a token (>= 0) for viommu_vq_driver_result, or
 * -ENOSPC when the ring or the buffer space is full (flush first), -E2BIG when it can never fit.
 * The writable part is filled with 0xa5 (a device must not rely on it). */
int viommu_vq_driver_add(struct viommu_vq_driver *drv, const uint8_t *rd, size_t rd_len,
			 size_t wr_len);
/* Kick the request queue once, let the device run (its kick eventfd, viommu_virtio_poll), and
 * reap every used entry. 0, or -EPROTO with viommu_vq_driver_problem() saying what the device
 * did wrong (an entry missing or unknown, not exactly one notification, NEEDS_RESET). */
int viommu_vq_driver_flush(struct viommu_vq_driver *drv);
/* The answer to a request of the last flush: its used length, and a copy of its writable part
 * read back from guest memory (valid until the next add). */
uint32_t viommu_vq_driver_result(struct viommu_vq_driver *drv, int token, const uint8_t **wr);
/* Requests queued and not yet flushed. */
unsigned viommu_vq_driver_queued(const struct viommu_vq_driver *drv);

/* The VMM delivers queued faults (viommu_virtio_deliver_faults), then the guest reads the next
 * fault report off the event queue and re-posts its buffer. 0, -ENOENT (none), -EPROTO. */
int viommu_vq_driver_event_pop(struct viommu_vq_driver *drv, struct viommu_wire_fault *f);

/* Device reset (status 0) or system reset, then the driver brings the device up again with
 * the same features. 0 or -errno. */
int viommu_vq_driver_reset(struct viommu_vq_driver *drv, bool system);
/* A config-space write through the transport. */
int viommu_vq_driver_config_write(struct viommu_vq_driver *drv, uint32_t off, const void *buf,
				  uint32_t len);

/* Live migration of the device under the guest: save device and transport into one image
 * (viommu_virtio_save); later, with @dev restored from that image, the transport is restored
 * over it and a new map of the same memfd (viommu_virtio_restore) and rewired to the driver's
 * eventfds. Requests added and not yet flushed stay in the rings and are answered by the
 * restored device at the next flush. The old transport is freed first (its device may already
 * be freed). 0 or -errno (@why says why; the driver then has no transport: free it). */
int viommu_vq_driver_save(struct viommu_vq_driver *drv, void **image, size_t *len);
int viommu_vq_driver_restore(struct viommu_vq_driver *drv, struct viommu_device *dev,
			     const void *image, size_t len, char *why, size_t why_len);

const char *viommu_vq_driver_problem(const struct viommu_vq_driver *drv);
struct viommu_virtio *viommu_vq_driver_transport(struct viommu_vq_driver *drv);

#endif
