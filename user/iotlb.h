/* SPDX-License-Identifier: MIT */
/*
 * viommu_iotlb: what every vhost IOTLB bridge shares (the kernel vhost-net bridge and the
 * vhost-user frontend, user/vhost_user.h). A bridge links this and adds only its wire protocol.
 *
 *  - VMM memory regions: guest-physical range -> VMM virtual address (and the memfd behind it,
 *    for vhost-user's SET_MEM_TABLE).
 *  - Answering a MISS: the IOVA is looked up through a viommu_reader (the fast path, never the
 *    device lock); the answer is the whole extent holding it, clipped to the one memory region
 *    its PA falls in, with the mapping's permission (write mappings widened to RW: the spec lets a
 *    device read them and DPDK asks RW for guest-RX buffers); unmapped, forbidden or blocked
 *    IOVAs get no answer, a fault on the event queue and a named counter.
 *  - Invalidation ranges: the bridge observes the device (device.h); UNMAPs in a served
 *    endpoint's domain and an endpoint leaving a translating state (DETACH, re-ATTACH, reset,
 *    bypass change) become ranges per endpoint, merged, flushed through the bridge's callbacks at
 *    the device's `sync` (strict: the callbacks wait for the consumer's confirmation there, before
 *    the request's used length is returned; lazy: sent there without waiting) or, with lazy +
 *    defer, only when the bridge calls viommu_iotlb_flush() outside the request.
 *  - Counters (misses, updates, invalidates, faults, service time).
 *
 * Concurrency: one thread, the device thread (the observer callbacks run there, and the flush
 * callbacks run inside viommu_device_request()/batch_end()). The lookups use the bridge's own
 * viommu_reader; nothing here takes a lock or touches the device's state but through its
 * observer interface and its fault queue (viommu_reader_report_fault).
 * Errors: 0 or -errno; constructors NULL + errno. This header is shared by both bridges: keep it
 * stable (add, do not change).
 */
#ifndef VIOMMU_IOTLB_H
#define VIOMMU_IOTLB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct viommu_fastpath;

#define VIOMMU_IOTLB_MAX_REGIONS 8 /* vhost-user's SET_MEM_TABLE limit */
#define VIOMMU_IOTLB_MAX_ENDPOINTS 8 /* endpoints one bridge serves */
#define VIOMMU_IOTLB_MAX_RANGES 64 /* pending ranges per endpoint; beyond, one covering range */

/* Consumer permission bits, as vhost's (VHOST_ACCESS_RO/WO/RW) and the spec's MAP_F_READ/WRITE. */
#define VIOMMU_IOTLB_PERM_RO 1u
#define VIOMMU_IOTLB_PERM_WO 2u
#define VIOMMU_IOTLB_PERM_RW 3u

struct viommu_iotlb_region {
	uint64_t gpa, size; /* guest-physical range [gpa, gpa + size) */
	void *hva; /* where the VMM mapped it (MAP_SHARED for vhost-user) */
	int fd; /* the memfd behind it, or -1 (the kernel bridge needs none) */
	uint64_t fd_offset; /* offset of gpa's byte in fd */
};

struct viommu_iotlb_opts {
	/* Invalidations are sent at the device's sync without waiting for confirmations, and ranges
	 * are kept for viommu_iotlb_flush() (the VMM's own timer) when the consumer cannot take them
	 * at once. Default strict: confirmed before the used length is returned. */
	bool lazy;
	/* Answer one granule (4 KiB) per miss, as QEMU does: the comparison mode of the bench. */
	bool per_page;
	/* The consumer joins IOVA-adjacent entries without checking that their user addresses are
	 * adjacent (DPDK 22.11): answers at a boundary with discontiguous memory are split so the
	 * boundary granule is answered alone, after invalidating the neighbour's (iotlb.c). */
	bool quirk_adjacent_join;
	/* A miss whose IOVA translates to a PA in no memory region (MMIO, a hole) is also a fault
	 * on the event queue (R_MAPPING at the IOVA), still -ENXIO and counted as unbacked. Off:
	 * no answer and no fault (the consumer's queue waits silently). The kernel bridge sets it:
	 * vhost-net never repeats a MISS, so the guest would not otherwise learn why its queue
	 * stopped. */
	bool fault_unbacked;
	/* Keep a record of what the consumer may hold (every answer the bridge sends, less every
	 * range invalidated): with quirk_adjacent_join, a boundary is split and the neighbour
	 * invalidated only when the record holds the neighbour's byte with a user address that does
	 * not follow on, and an answer invalidates its own range first only when the record holds
	 * something else there. Without it, every answer at a discontiguous boundary is split and
	 * invalidates (as before). The record over-approximates the consumer (evictions are not
	 * seen), never under: the quirk's safety does not depend on the consumer's evictions. */
	bool track_held;
	/* Push an answer for each MAP in a served endpoint's domain at the device's sync, through
	 * ops->remapped (as for a faulted miss the MAP covered): the consumer need not miss. */
	bool prefill;
	/* With lazy: UNMAP ranges are not sent at the device's sync at all. They are kept (merged:
	 * adjacent and overlapping ranges join) until viommu_iotlb_flush(), which the bridge calls
	 * outside the request (its service thread or poll loop), and ops->deferred tells the bridge
	 * at the sync that something waits. Endpoint changes (DETACH, re-ATTACH, reset, bypass) are
	 * never deferred: a sync that has one flushes everything. For consumers whose invalidation
	 * is synchronous (the kernel's write()): lazy alone would still send inside the request.
	 * No effect without lazy. */
	bool defer;
};

/* A consumer-side IOTLB entry: [iova, iova + size) at user address uaddr, perm RO/WO/RW. */
struct viommu_iotlb_entry {
	uint64_t iova, size, uaddr;
	uint8_t perm;
};

/* What a bridge does with the ranges (inclusive: [first, last]; [0, UINT64_MAX] = everything). */
struct viommu_iotlb_ops {
	void *ctx;
	/* Send an invalidation of [first, last] of endpoint @ep's translations to the consumer.
	 * 0 or -errno (counted; the flush goes on with the other ranges). */
	int (*invalidate)(void *ctx, uint32_t ep, uint64_t first, uint64_t last);
	/* After the invalidations of one flush: @strict = wait until the consumer confirmed every one
	 * (vhost-user: acks; kernel: nothing, write() is synchronous). 0 or -errno. */
	int (*complete)(void *ctx, bool strict);
	/* Optional: an IOVA that faulted earlier is now mapped (a MAP covered it): answer it as if
	 * the consumer had missed again (DPDK does not repeat a MISS until an UPDATE covers it). */
	void (*remapped)(void *ctx, uint32_t ep, uint64_t iova, uint8_t perm);
	/* Optional (opts.defer): a sync left @pending ranges for viommu_iotlb_flush(). Called on the
	 * device thread inside the request: only wake whoever flushes. */
	void (*deferred)(void *ctx, unsigned pending);
};

struct viommu_iotlb_stats {
	uint64_t misses; /* MISSes answered or faulted (viommu_iotlb_answer calls) */
	uint64_t updates; /* entries answered */
	uint64_t invalidates; /* ranges sent to the consumer */
	uint64_t invalidate_errors; /* ops->invalidate or ops->complete failed */
	uint64_t flushes; /* syncs or flush calls that sent something */
	uint64_t faults; /* misses with no translation (unmapped, forbidden, blocked, unknown) */
	uint64_t faults_dropped; /* ... whose fault report the event queue refused */
	uint64_t unbacked; /* misses whose PA is in no memory region (no answer; a fault only with
			    * opts.fault_unbacked, then also counted in faults) */
	uint64_t retries; /* lookups that raced the writer too often (no answer; consumer re-misses) */
	uint64_t boundary_splits; /* quirk_adjacent_join: answers split at a discontiguous boundary */
	uint64_t service_ns; /* total time inside viommu_iotlb_answer */
	uint64_t service_max_ns;
	/* Added with track_held / prefill (zero without them). */
	uint64_t held_spared; /* quirk answers that sent no INVALIDATE thanks to the record */
	uint64_t held_entries; /* entries in the record now */
	uint64_t held_overflows; /* the record filled up: conservative until a full invalidation */
	uint64_t prefills; /* MAPs pushed through ops->remapped */
	uint64_t prefills_dropped; /* MAPs beyond the prefill queue between two syncs */
	/* Added with defer (zero without it). */
	uint64_t deferrals; /* syncs that left their ranges for a later viommu_iotlb_flush() */
};

struct viommu_iotlb;

/* A bridge core for @fp's device (observes it from now on) calling @ops. NULL + errno
 * (ENOMEM, ENOSPC: the device has VIOMMU_MAX_OBSERVERS, or no reader slot). Device thread. */
struct viommu_iotlb *viommu_iotlb_new(struct viommu_fastpath *fp, const struct viommu_iotlb_opts *opts,
				      const struct viommu_iotlb_ops *ops);
/* Stops observing, closes the reader. Pending lazy ranges are dropped. Device thread. */
void viommu_iotlb_free(struct viommu_iotlb *it);

/* Declare a VMM memory region. -EINVAL (size 0, wraps, hva NULL), -EEXIST (overlaps one),
 * -ENOSPC (VIOMMU_IOTLB_MAX_REGIONS). Device thread, before the bridge uses it. */
int viommu_iotlb_add_region(struct viommu_iotlb *it, const struct viommu_iotlb_region *r);
/* The regions, in the order added. */
const struct viommu_iotlb_region *viommu_iotlb_regions(const struct viommu_iotlb *it, unsigned *n);
/* The region holding [gpa, gpa + len), or NULL. */
const struct viommu_iotlb_region *viommu_iotlb_region_of(const struct viommu_iotlb *it, uint64_t gpa,
							 uint64_t len);

/* Serve endpoint @ep: its invalidations go to ops. -EEXIST, -ENOSPC (VIOMMU_IOTLB_MAX_ENDPOINTS).
 * Device thread. */
int viommu_iotlb_serve(struct viommu_iotlb *it, uint32_t ep);

/*
 * Answer a MISS of endpoint @ep at @iova for @perm (RO/WO/RW; 0 is taken as RO).
 * 0: @out is the entry to UPDATE: it holds @iova, is never empty, lies in one extent and one
 *    memory region, and has the mapping's permission (RW for any write mapping). When
 *    @inval->size is not 0, [inval->iova, inval->iova + inval->size) must be invalidated first,
 *    on the same channel, before the UPDATE (quirk_adjacent_join: the answer's own range and the
 *    neighbours' boundary bytes, see iotlb.c).
 * -EFAULT: no translation for @perm (unmapped, not permitted, blocked, unknown endpoint,
 *    reserved region): reported on the device's event queue (faults / faults_dropped).
 * -ENXIO: translated, but the PA is in no memory region (MMIO): nothing to answer (unbacked);
 *    with opts.fault_unbacked also reported as a fault (faults / faults_dropped).
 * -EAGAIN: the lookup kept racing the writer (retries): the consumer will miss again.
 * Device thread (a bridge on another thread could send an UPDATE after the INVALIDATE that
 * should have removed it).
 */
int viommu_iotlb_answer(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
			struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval);

/* The same answer for a prefill (rings, re-pushes): no miss counted, no fault reported, nothing
 * remembered for `remapped` (with track_held, the answer goes into the record like a miss's: the
 * bridge must send what either returns). 0, -EFAULT, -ENXIO, -EAGAIN as above. Device thread. */
int viommu_iotlb_lookup(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
			struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval);

/* Call ops->remapped for (@ep, @iova, @perm) once a MAP (or a bypass) covers @iova: for prefills
 * that found nothing mapped (rings after a reset). Remembers the last 64 such and faulted misses.
 * Device thread. */
void viommu_iotlb_watch(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm);

/* Send every pending range (lazy mode: the VMM's flush timer, or the bridge's service thread
 * with opts.defer; strict mode flushes at each sync by itself). @wait: wait for confirmations.
 * Returns how many ranges were sent or -errno. Device thread, or whichever thread the bridge
 * serialises with it (the kernel bridge's lock). */
int viommu_iotlb_flush(struct viommu_iotlb *it, bool wait);
/* Ranges pending (lazy mode), over all endpoints. */
unsigned viommu_iotlb_pending(const struct viommu_iotlb *it);

const struct viommu_iotlb_stats *viommu_iotlb_stats(const struct viommu_iotlb *it);
void viommu_iotlb_print_stat(const struct viommu_iotlb *it, FILE *out);

/* Merge [first, last] into the sorted disjoint range list @r of *@n (capacity @cap): overlapping
 * and adjacent ranges join; when full, the two closest neighbours join (the list only ever
 * covers more). Pure; exposed for the tests. */
void viommu_iotlb_range_add(uint64_t (*r)[2], unsigned *n, unsigned cap, uint64_t first,
			    uint64_t last);

#endif
