/* SPDX-License-Identifier: MIT */
/*
 * The viommu device core: the control plane of a virtio-iommu device.
 *
 * A VMM (or the replayer, or a virtqueue transport) hands it one request at a time as the driver
 * placed it in the request queue: the device-readable bytes and the device-writable buffer.
 * viommu_device_request() validates it per the virtio spec, applies it atomically (a rejected
 * request changes nothing), publishes the effect to every observer (the fast path, IOTLB bridges),
 * writes the tail (and PROBE properties) and returns the used length.
 *
 * The state kept here is authoritative: per-domain extent sets and the domain and endpoint
 * tables, each a B+tree (O(log n)). viommu_device_translate() answers DMA queries from it; the
 * fast path answers the same queries locklessly and is checked against this.
 *
 * Errors: functions return 0 or -errno; viommu_device_new() returns NULL and sets errno.
 * Concurrency: one thread owns a device; nothing here is safe to call concurrently. The fast path
 * (translator.h) is what readers on other threads and processes use.
 */
#ifndef VIOMMU_DEVICE_H
#define VIOMMU_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "viommu_abi.h"
#include "wire.h"

struct viommu_config {
	uint64_t page_size_mask; /* at least one bit; lowest set bit = granule */
	uint64_t input_start, input_end; /* inclusive */
	uint32_t domain_start, domain_end; /* inclusive */
	uint32_t probe_size; /* bytes of the PROBE properties buffer */
	uint8_t bypass; /* initial value of config `bypass` (0 or 1) */
	uint64_t features; /* device-type feature bits offered (bits 0-6) */
	/* Caps on guest-grown tables: answered with S_NOMEM, nothing changed. */
	uint32_t max_domains;
	uint32_t max_mappings_per_domain;
	uint64_t max_mappings;
	uint32_t max_endpoints; /* topology size (VMM-declared) */
	uint32_t max_pending_faults; /* fault records queued for the event queue */
};

/* Hard limits on the caps (viommu_device_new refuses more): what a config, even an untrusted one,
 * can make the device allocate up front is bounded (4 MiB of domain slots, 24 MiB of faults). */
#define VIOMMU_MAX_DOMAINS_LIMIT (1u << 20)
#define VIOMMU_MAX_FAULTS_LIMIT (1u << 20)
#define VIOMMU_PROBE_SIZE_LIMIT (1u << 20)

/* QEMU-like defaults (as the trace format's `device` line): 4 KiB granule, full ranges,
 * probe_size 512, bypass 1, features INPUT_RANGE|DOMAIN_RANGE|MAP_UNMAP|PROBE|MMIO|BYPASS_CONFIG,
 * caps 65536 domains, 1M mappings per domain, 4M mappings, 65536 endpoints, 1024 faults. */
void viommu_config_default(struct viommu_config *cfg);

#define VIOMMU_MAX_RESV 8

struct viommu_resv {
	uint64_t start, end; /* inclusive */
	uint8_t subtype; /* VIOMMU_RESV_MEM_T_* */
};

/* One mapping (one MAP request). */
struct viommu_extent {
	uint64_t start, end; /* IOVA, inclusive; start is the key in the domain's B+tree */
	uint64_t phys;
	uint32_t flags; /* VIOMMU_MAP_F_* */
};

struct viommu_domain {
	uint32_t id;
	uint32_t slot; /* dense index < max_domains, stable for the domain's life */
	bool bypass; /* created by ATTACH_F_BYPASS */
	uint32_t nr_endpoints;
};

/* What a DMA from an endpoint does right now: enum viommu_ep_state (bpf/viommu_abi.h), the
 * same values the fast path publishes per endpoint. */

struct viommu_endpoint {
	uint32_t id;
	bool access_platform;
	uint8_t nresv;
	struct viommu_resv resv[VIOMMU_MAX_RESV];
	struct viommu_domain *domain; /* NULL when unattached */
};

/*
 * Observers see every state change the moment the core applies it, in order, on the device
 * thread. `map` may fail (e.g. the fast path's pool is full): the core then undoes the request
 * and answers S_NOMEM. `sync` is called once the request (or batch) is applied and before its
 * used length is returned: an observer that must wait for readers (strict UNMAP) does it there.
 */
struct viommu_observer {
	void *ctx;
	/* May fail only when the endpoint is new (no room for it): the endpoint is then refused. */
	int (*endpoint_changed)(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st);
	int (*domain_created)(void *ctx, struct viommu_domain *dom);
	void (*domain_destroyed)(void *ctx, struct viommu_domain *dom);
	int (*map)(void *ctx, struct viommu_domain *dom, struct viommu_extent *ext);
	void (*unmap)(void *ctx, struct viommu_domain *dom, struct viommu_extent *ext);
	void (*sync)(void *ctx, bool removed); /* removed: something was unmapped/detached since last sync */
	/* A hint, no change: a MAP of @iova in @dom is about to be checked and stored, then passed
	 * to map(). The observer starts bringing in the lines its map() will write, so their misses
	 * overlap the store's own descent. It must not fail, write, or rely on the MAP happening.
	 * Device thread, as map(); only for a domain of more than VIOMMU_MAP_PREFETCH_EXTENTS
	 * mappings (below, the lines are in cache and the call would only cost instructions). */
	void (*prefetch)(void *ctx, const struct viommu_domain *dom, uint64_t iova);
};
#define VIOMMU_MAX_OBSERVERS 4
#define VIOMMU_MAP_PREFETCH_EXTENTS 16384 /* viommu_observer.prefetch: past this many mappings */

struct viommu_device_stats {
	uint64_t requests[VIOMMU_T_MAX + 1][VIOMMU_S_COUNT]; /* [type][status]; type 0 = unknown */
	uint64_t dropped_requests; /* used length 0: too short, unknown type, PROBE not offered */
	uint64_t faults_reported, faults_dropped;
};

struct viommu_device;

/* A device with @cfg (copied). NULL and errno EINVAL for a config the spec forbids
 * (page_size_mask 0, empty ranges, bypass > 1, both F_BYPASS and F_BYPASS_CONFIG, unknown bits)
 * or caps of 0 or above the VIOMMU_*_LIMIT bounds. */
struct viommu_device *viommu_device_new(const struct viommu_config *cfg);
void viommu_device_free(struct viommu_device *dev);
const struct viommu_config *viommu_device_config(const struct viommu_device *dev);
/* Lower the caps on guest-grown tables (never raises them): for an observer that can honour
 * less (the fast path's pools). 0, -EINVAL (a cap of 0), -EBUSY (the device already holds more,
 * or has handed out domain slots above @max_domains). Device thread. */
int viommu_device_limit_caps(struct viommu_device *dev, uint32_t max_domains, uint64_t max_mappings);

/* Declare an endpoint of the topology. -EEXIST, -EINVAL (bad region, overlapping regions, more
 * than one MSI region), -ENOSPC (regions do not fit probe_size, or max_endpoints reached). */
int viommu_device_add_endpoint(struct viommu_device *dev, uint32_t id, bool access_platform,
			       const struct viommu_resv *resv, unsigned nresv);
const struct viommu_endpoint *viommu_device_endpoint(const struct viommu_device *dev, uint32_t id);
enum viommu_ep_state viommu_device_endpoint_state(const struct viommu_device *dev, uint32_t id);

/* Features: what is offered, and the driver's accepted set (must be a subset: else -EINVAL).
 * Until the driver negotiates, the negotiated set is everything offered. */
uint64_t viommu_device_features(const struct viommu_device *dev);
int viommu_device_negotiate(struct viommu_device *dev, uint64_t features);
uint64_t viommu_device_negotiated(const struct viommu_device *dev);

/* Config space: 40 bytes, little-endian. Reads outside it return zeros for the missing bytes.
 * Writes: only the `bypass` byte, only with F_BYPASS_CONFIG negotiated, only values 0 and 1;
 * anything else is ignored and answered -EPERM (other fields / not negotiated) or -EINVAL. */
void viommu_device_config_read(const struct viommu_device *dev, uint32_t off, void *buf,
			       uint32_t len);
int viommu_device_config_write(struct viommu_device *dev, uint32_t off, const void *buf,
			       uint32_t len);

/* Device reset: every endpoint detached, every domain gone, `bypass` kept, features kept.
 * System reset: the same, and `bypass` back to its initial value. */
void viommu_device_reset(struct viommu_device *dev);
void viommu_device_system_reset(struct viommu_device *dev);

/* One request from the request queue. @rd: device-readable part; @wr: device-writable part,
 * whose last 4 bytes are the tail. Returns the used length: the writable length when answered,
 * 0 when the buffers were returned untouched (too short, unknown type, PROBE not negotiated). */
uint32_t viommu_device_request(struct viommu_device *dev, const struct iovec *rd, unsigned nrd,
			       const struct iovec *wr, unsigned nwr);
/* The same for one contiguous readable and one writable buffer. */
uint32_t viommu_device_request_buf(struct viommu_device *dev, const void *rd, size_t rd_len,
				   void *wr, size_t wr_len);

/* Batches (one queue kick): requests between begin and end are applied in order, and observers
 * sync once, at end. A VMM writes the batch's used entries after viommu_device_batch_end(). */
void viommu_device_batch_begin(struct viommu_device *dev);
void viommu_device_batch_end(struct viommu_device *dev);

/* Observers: at most VIOMMU_MAX_OBSERVERS. The observer is told the current state at once
 * (every endpoint, domain and extent) so it can be attached to a running device. */
int viommu_device_add_observer(struct viommu_device *dev, const struct viommu_observer *obs);
int viommu_device_remove_observer(struct viommu_device *dev, void *ctx);

/* DMA translation on the authoritative state, answered in the one answer type of every path
 * (struct viommu_answer, bpf/viommu_abi.h). Translate [iova, iova+size-1] (size 0 counts as 1)
 * for @access (VIOMMU_MAP_F_*): every byte must be mapped with @access, possibly by adjacent
 * extents; RESERVED and MSI regions of the endpoint fault. HIT: pa of byte iova, the extent
 * holding it; IDENTITY: pa = iova; FAULT: reason, fault_addr (the first failing byte). Never
 * RETRY or MORE. Does not report the fault: see viommu_device_report_fault(). Returns
 * out->result. */
enum viommu_xlate_result viommu_device_translate(const struct viommu_device *dev, uint32_t ep,
						 uint64_t iova, uint64_t size, uint32_t access,
						 struct viommu_answer *out);
/* The same for a query. */
enum viommu_xlate_result viommu_device_answer(const struct viommu_device *dev,
					      const struct viommu_query *q, struct viommu_answer *out);

/* Fault reporting. The VMM posts event queue buffers (eventq_post adds @n); a fault takes one,
 * or is counted as dropped when none is posted (or max_pending_faults are queued).
 * report_fault returns 0 or -ENOBUFS (dropped). fault_pop writes the oldest as the 24-byte wire
 * struct into @buf and returns 0, or -ENOENT when none is queued. */
void viommu_device_eventq_post(struct viommu_device *dev, uint32_t n);
int viommu_device_report_fault(struct viommu_device *dev, uint32_t ep, uint8_t reason,
			       uint32_t access, uint64_t addr);
int viommu_device_fault_pop(struct viommu_device *dev, struct viommu_wire_fault *buf);
/* Event queue buffers posted and not taken by a fault yet; the @i-th oldest queued fault
 * (0 or -ENOENT), without popping it. For save/restore (image.h). */
uint32_t viommu_device_eventq_credits(const struct viommu_device *dev);
int viommu_device_fault_peek(const struct viommu_device *dev, uint32_t i, struct viommu_wire_fault *buf);

/* Introspection. */
const struct viommu_device_stats *viommu_device_stats(const struct viommu_device *dev);
uint32_t viommu_device_nr_domains(const struct viommu_device *dev);
uint64_t viommu_device_nr_mappings(const struct viommu_device *dev);
const struct viommu_domain *viommu_device_domain(const struct viommu_device *dev, uint32_t id);
/* Calls @fn for each extent of domain @d (ascending start); stops at a non-zero return and
 * returns it. The count of them. */
int viommu_domain_for_each_extent(const struct viommu_domain *d,
				  int (*fn)(const struct viommu_extent *x, void *arg), void *arg);
uint64_t viommu_domain_nr_extents(const struct viommu_domain *d);
/* Calls @fn for each endpoint (ascending id); stops at a non-zero return and returns it. */
int viommu_device_for_each_endpoint(const struct viommu_device *dev,
				    int (*fn)(const struct viommu_endpoint *ep, void *arg), void *arg);

/* Calls @fn for each endpoint attached to domain @id (most recently attached first); stops at a
 * non-zero return and returns it. 0 when no such domain exists. @fn must not change the device. */
int viommu_device_for_each_domain_endpoint(const struct viommu_device *dev, uint32_t id,
					   int (*fn)(const struct viommu_endpoint *ep, void *arg),
					   void *arg);

/* Checks every internal invariant of the authoritative state (trees ordered and balanced,
 * extents disjoint, aligned and inside input_range, counts and caps, endpoint/domain links,
 * domain slots unique). O(n); for tests and the fuzzer. 0, -EUCLEAN, or -ENOMEM. */
int viommu_device_check(const struct viommu_device *dev);

#endif
