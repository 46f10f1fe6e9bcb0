/* SPDX-License-Identifier: MIT */
/*
 * viommu_vhost_kernel: the bridge between one viommu endpoint and one in-kernel vhost device
 * (vhost-net, vhost-vsock, vhost-scsi: the device IOTLB API of drivers/vhost/vhost.c is common).
 *
 * The kernel keeps its own IOTLB (IOVA -> VMM virtual address). On a gap it queues a MISS on the
 * vhost fd; the bridge answers it from the fast path (a viommu_reader: lockless, never the
 * device lock) with an UPDATE of the WHOLE extent that holds the IOVA, clipped to the one VMM
 * memory region its guest-physical address falls in, with the mapping's permissions. An unmapped
 * or forbidden IOVA, or a blocked endpoint, is answered with no UPDATE and a fault on the
 * device's event queue. The bridge observes the device: an UNMAP, DETACH, re-ATTACH, reset or
 * bypass change that removes access is followed by INVALIDATE of what it removed before the
 * request's used length is returned (strict); in lazy mode an UNMAP's INVALIDATE is written by
 * the next service call instead, outside the request.
 *
 * Use (the VMM, after VHOST_SET_OWNER and before the rings are set up):
 *
 *   viommu_vhost_kernel_negotiate(fd, my_features, &acked);       ACCESS_PLATFORM + MSG_V2
 *   b = viommu_vhost_kernel_attach(fp, fd, endpoint, regions, n, &opts);
 *   ... VHOST_SET_MEM_TABLE, SET_VRING_NUM/BASE/ADDR (IOVAs)/KICK/CALL ...
 *   viommu_vhost_kernel_prefill(b, used_iova, used_size);          before VHOST_NET_SET_BACKEND
 *   ... VHOST_NET_SET_BACKEND; then either opts.thread, or poll viommu_vhost_kernel_fd(b) in
 *   the VMM's loop and call viommu_vhost_kernel_service(b) when it is readable.
 *
 * The translation work is the shared bridge core's (user/iotlb.h: regions, whole-extent answers
 * clipped to one region, invalidation ranges from the device's observer events, faults); this
 * file adds the kernel's wire protocol, ring prefill, MAP prefill and the service loop.
 *
 * Concurrency contract (docs/vhost.md):
 *   - attach, detach, prefill and the observer callbacks run on the device thread (the thread
 *     that calls viommu_device_request(); the device core calls the callbacks).
 *   - fd mode (default): the VMM polls viommu_vhost_kernel_fd() in the device thread's loop and
 *     calls viommu_vhost_kernel_service() there. Nothing else to do.
 *   - thread mode (opts.thread): the bridge's own thread polls and serves. The bridge core is a
 *     device-thread object, so the two threads take turns on the bridge's lock: the service
 *     thread holds it while it answers, the device thread while it calls into the device
 *     (viommu_vhost_kernel_lock/unlock around requests, batches and resets). Strict
 *     INVALIDATEs are written inside the request (at the core's sync) under that lock, so an
 *     UPDATE is never written between a removal and its INVALIDATE. Lazy INVALIDATEs are
 *     written by service() under the same lock before any UPDATE it writes, and a prefill
 *     writes them first too: no UPDATE ever precedes an older INVALIDATE.
 *   - stats may be called from any thread.
 *   - The fast path must be created before the bridge (its observer then syncs first: the core
 *     flushes after the fast path has unpublished) and freed after it; the vhost fd must stay
 *     open until detach returns.
 *
 * Errors: 0 or -errno; attach returns NULL and sets errno.
 */
#ifndef VIOMMU_VHOST_KERNEL_H
#define VIOMMU_VHOST_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "iotlb.h"

struct viommu_fastpath;

/* A VMM memory region: guest-physical [gpa, gpa + size) is at VMM virtual address uaddr. */
struct viommu_vhost_region {
	uint64_t gpa, size, uaddr;
};
#define VIOMMU_VHOST_REGIONS_MAX VIOMMU_IOTLB_MAX_REGIONS /* the bridge core's limit */

enum viommu_vhost_prefill {
	VIOMMU_VHOST_PREFILL_NONE = 0, /* answer MISSes only (the rings must still be pushed by hand) */
	VIOMMU_VHOST_PREFILL_RINGS = 1, /* viommu_vhost_kernel_prefill() for the rings: QEMU's choice */
	/* also push every MAP of the endpoint's domain at its sync point, while fewer than
	 * max_iotlb_entries / 2 UPDATEs were pushed since the last full invalidation (the kernel
	 * evicts its oldest entry, in use or not, past max_iotlb_entries) */
	VIOMMU_VHOST_PREFILL_MAP = 2,
};

enum viommu_vhost_answer {
	VIOMMU_VHOST_ANSWER_EXTENT = 0, /* the whole extent, clipped to its region */
	VIOMMU_VHOST_ANSWER_PAGE = 1, /* one 4 KiB page (what QEMU answers): for comparisons */
};

struct viommu_vhost_opts {
	enum viommu_vhost_prefill prefill;
	enum viommu_vhost_answer answer;
	/* Lazy invalidation (a guest in lazy mode; the fast path's own `lazy` option is the same
	 * choice for readers): an UNMAP's INVALIDATE is not written inside the request (the kernel's
	 * write() is synchronous and takes every vq mutex). The request completes, the bridge's fd
	 * turns readable, and the next service() call (the bridge thread, or the VMM's loop) writes
	 * the ranges kept since, merged, before it answers any MISS; a prefill writes them first
	 * too. Until then vhost may still use the old translation: the guest's choice. DETACH,
	 * re-ATTACH, reset and bypass changes are still invalidated inside the request. Default
	 * strict: every INVALIDATE is written before the request's used length. */
	bool lazy;
	bool thread; /* run an own service thread; else the VMM polls viommu_vhost_kernel_fd() */
	uint32_t max_iotlb_entries; /* vhost.ko's max_iotlb_entries; 0: 2048 */
};

struct viommu_vhost_stats {
	uint64_t misses; /* MISS messages read */
	uint64_t updates; /* UPDATE messages written (answers and prefills) */
	uint64_t invalidates; /* INVALIDATE messages written */
	uint64_t invalidate_all; /* ... of them, the whole IOVA space (DETACH, reset, bypass) */
	uint64_t faults; /* MISSes and ACCESS_FAILs answered with a fault (no UPDATE): the core's count */
	uint64_t unbacked; /* MISSes translated to no VMM memory (MMIO): no UPDATE, a fault (also
			    * counted in faults) */
	uint64_t access_fails; /* ACCESS_FAIL messages read (each a fault unless mapped now) */
	uint64_t access_fails_mapped; /* ... for an IOVA that is mapped now (no fault) */
	uint64_t prefilled; /* UPDATEs pushed without a MISS */
	uint64_t prefill_skipped; /* MAP prefills left to MISSes (entry budget) */
	uint64_t retries; /* lookups that raced with the writer and were asked again */
	uint64_t unanswered; /* MISSes left unanswered after VHOST_RETRIES racing lookups */
	uint64_t write_errors; /* writes the kernel refused (each counted, the error kept) */
	uint64_t bad_messages; /* reads that were no MISS / ACCESS_FAIL */
	uint64_t service_ns; /* total time from a MISS read to its answer written */
	int last_write_error; /* -errno of the last refused write, 0 if none */
	uint64_t invalidates_deferred; /* lazy: INVALIDATEs written by service(), after the request */
	uint64_t invalidate_ns; /* total time inside INVALIDATE write()s (the kernel's handler) */
	uint64_t last_invalidate_at_ns; /* CLOCK_MONOTONIC when the last INVALIDATE write returned */
};

struct viommu_vhost_kernel;

/* Negotiate with a vhost fd on which VHOST_SET_OWNER was done: requires VIRTIO_F_ACCESS_PLATFORM
 * (bit 33) among the offered features and VHOST_BACKEND_F_IOTLB_MSG_V2 among the backend
 * features; sets backend features to exactly MSG_V2, then VHOST_SET_FEATURES to @features |
 * ACCESS_PLATFORM (which gives the device a new, empty IOTLB). @acked (may be NULL) gets what was
 * set. -EOPNOTSUPP when the kernel lacks either (with @why, if not NULL, saying which), or when
 * @features holds a bit the kernel does not offer; -errno of a failed ioctl. Device thread. */
int viommu_vhost_kernel_negotiate(int vhost_fd, uint64_t features, uint64_t *acked, const char **why);

/* Serve @endpoint of @fp's device to @vhost_fd (negotiated). @regions (copied; at most
 * VIOMMU_VHOST_REGIONS_MAX, non-overlapping) say where guest memory is in this process.
 * @opts may be NULL (defaults: no prefill, whole extents, strict, no thread). NULL + errno:
 * EINVAL (bad regions), ENOSPC (the device has VIOMMU_MAX_OBSERVERS), ENOMEM, or the reader's
 * or thread's error. Device thread. */
struct viommu_vhost_kernel *viommu_vhost_kernel_attach(struct viommu_fastpath *fp, int vhost_fd,
						       uint32_t endpoint,
						       const struct viommu_vhost_region *regions,
						       unsigned nregions,
						       const struct viommu_vhost_opts *opts);
/* Stop observing, stop the thread, INVALIDATE everything the kernel may hold from us, free.
 * The vhost fd is the caller's. Device thread. */
void viommu_vhost_kernel_detach(struct viommu_vhost_kernel *b);

/* Push the extents that hold [iova, iova + size - 1] now (rings before VHOST_NET_SET_BACKEND).
 * 0, -EFAULT when a byte of it is not mapped for reading (nothing is pushed for it),
 * -errno from the kernel. Device thread (or the service thread between service calls). */
int viommu_vhost_kernel_prefill(struct viommu_vhost_kernel *b, uint64_t iova, uint64_t size);

/* A pollable fd (epoll): readable when service() has work (a MISS, or lazy invalidations kept
 * since a request). */
int viommu_vhost_kernel_fd(const struct viommu_vhost_kernel *b);
/* Write pending lazy invalidations (merged), then answer every queued MISS / ACCESS_FAIL; never
 * blocks.
 * Returns how many messages it handled, or -errno (-EBADFD: the device has no IOTLB, i.e. the
 * features were set again without ACCESS_PLATFORM). One thread at a time (see above). */
int viommu_vhost_kernel_service(struct viommu_vhost_kernel *b);

/* Counters (a consistent copy). Any thread. */
void viommu_vhost_kernel_stats(struct viommu_vhost_kernel *b, struct viommu_vhost_stats *out);
void viommu_vhost_kernel_reset_stats(struct viommu_vhost_kernel *b);
/* Miss service times (MISS read -> UPDATE written) in ns, the first 65536 since the last reset:
 * copies up to @n into @out and returns how many were recorded. Any thread. */
unsigned viommu_vhost_kernel_service_times(struct viommu_vhost_kernel *b, uint32_t *out, unsigned n);

/* Thread mode (opts.thread): the device thread holds the bridge's lock around everything it asks
 * of the device (requests, batches, resets, config writes), so the bridge thread's MISS service
 * never runs inside a request. In fd mode they are not needed (everything is on one thread).
 * The lock is the bridge's, never the device's own. */
void viommu_vhost_kernel_lock(struct viommu_vhost_kernel *b);
void viommu_vhost_kernel_unlock(struct viommu_vhost_kernel *b);

#endif
