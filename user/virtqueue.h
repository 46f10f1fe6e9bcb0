/* SPDX-License-Identifier: MIT */
/*
 * The device on real virtqueues: split rings (virtio 1.x: VERSION_1, INDIRECT_DESC, EVENT_IDX)
 * over guest memory given as regions, the request queue drained in batches into the device core,
 * the event queue fed with fault reports, and the transport state a VMM drives (features,
 * status, config space, queue setup, kicks and calls as eventfds or callbacks).
 *
 * Three layers, each usable alone:
 *  - struct viommu_mem: the guest's memory map (guest-physical range -> host address, or a file
 *    descriptor such as a memfd, mapped here). Everything the guest names is looked up in it;
 *    nothing outside it is ever read or written.
 *  - struct viommu_vq: one split virtqueue and its walker. The guest is hostile: every chain is
 *    checked (enum viommu_vq_bad) before a byte of it reaches the device core.
 *  - struct viommu_virtio: the virtio-iommu device (queue 0 requestq, queue 1 eventq) on a
 *    struct viommu_device.
 *
 * A bad chain sets DEVICE_NEEDS_RESET (docs/statuses.md, "Bad descriptor chains"): the chains
 * before it in the batch complete normally, it and everything after it are left alone, nothing
 * of it reaches the device core, and both queues stay stopped until the driver resets the device.
 *
 * Errors: 0 or -errno; constructors return NULL and set errno.
 *
 * Threading: every function here runs on the device thread, the one that owns the
 * struct viommu_device (device.h): none may run concurrently with another on the same object,
 * nor with a call on the device. The guest (vCPUs, another process sharing the memfd) writes the
 * rings concurrently: the walker reads what the driver publishes with the ordering the virtio
 * spec asks for (an acquire load of avail->idx before the ring and descriptors are read; a
 * release store of used->idx after the used entries; a full fence before reading the driver's
 * suppression fields), reads each descriptor once, and never trusts a value it read twice. Kick
 * eventfds may be written by any thread or by KVM (ioeventfd); call eventfds and callbacks are
 * signalled from the device thread, inside the function that published the used entries.
 */
#ifndef VIOMMU_VIRTQUEUE_H
#define VIOMMU_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "device.h"

/* ---- virtio constants (virtio 1.x, "Basic Facilities of a Virtio Device") ---- */

/* Transport feature bits this device offers besides its own (VIOMMU_F_*, bits 0-6). */
#define VIOMMU_VIRTIO_F_INDIRECT_DESC 28
#define VIOMMU_VIRTIO_F_EVENT_IDX 29
#define VIOMMU_VIRTIO_F_VERSION_1 32

/* Device status bits. */
#define VIOMMU_VIRTIO_S_ACKNOWLEDGE 1u
#define VIOMMU_VIRTIO_S_DRIVER 2u
#define VIOMMU_VIRTIO_S_DRIVER_OK 4u
#define VIOMMU_VIRTIO_S_FEATURES_OK 8u
#define VIOMMU_VIRTIO_S_NEEDS_RESET 64u
#define VIOMMU_VIRTIO_S_FAILED 128u

/* Split ring layout (little-endian). */
#define VIOMMU_VRING_DESC_F_NEXT 1u
#define VIOMMU_VRING_DESC_F_WRITE 2u
#define VIOMMU_VRING_DESC_F_INDIRECT 4u
#define VIOMMU_VRING_AVAIL_F_NO_INTERRUPT 1u

struct viommu_vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct viommu_vring_desc) == 16, "virtq_desc is 16 bytes");

struct viommu_vring_used_elem {
	uint32_t id;
	uint32_t len;
};

/* Bytes of each part for a queue of @n entries, event fields included (virtio 1.x). */
#define VIOMMU_VRING_DESC_SIZE(n) (16ull * (n))
#define VIOMMU_VRING_AVAIL_SIZE(n) (6ull + 2ull * (n))
#define VIOMMU_VRING_USED_SIZE(n) (6ull + 8ull * (n))

/* ---- limits ---- */
#define VIOMMU_VQ_MAX_SIZE 1024u /* largest queue size accepted (a power of 2) */
#define VIOMMU_VQ_MAX_INDIRECT 1024u /* descriptors in one indirect table */
#define VIOMMU_VQ_MAX_IOV 2048u /* host segments in one chain (descriptors split at regions) */
#define VIOMMU_MEM_MAX_REGIONS 32u
#define VIOMMU_EVENT_SIZE 24u /* struct viommu_wire_fault */

/* ---- guest memory ---- */

struct viommu_mem_region {
	uint64_t gpa; /* first guest-physical byte */
	uint64_t size; /* bytes, > 0; gpa + size - 1 must not wrap */
	void *hva; /* where the VMM mapped it; NULL: map @fd at @fd_offset here (MAP_SHARED) */
	int fd; /* used only when hva is NULL (a memfd, a hugetlbfs file) */
	uint64_t fd_offset;
};

struct viommu_mem;

/* A memory map of @n regions (copied; fds are mapped, not kept: the caller may close them).
 * NULL and errno: EINVAL (no region, more than VIOMMU_MEM_MAX_REGIONS, a size of 0, a range that
 * wraps, overlapping regions, neither hva nor fd), or mmap's errno. Any thread; the map is
 * immutable, so any number of threads may use it at once. */
struct viommu_mem *viommu_mem_new(const struct viommu_mem_region *r, unsigned n);
/* Unmaps what viommu_mem_new mapped. */
void viommu_mem_free(struct viommu_mem *m);
/* [gpa, gpa+len-1] as host segments (split where regions meet), appended to @iov (which holds
 * @max) at *@n. 0; -EFAULT when a byte is outside every region or the range wraps past 2^64;
 * -E2BIG when more than @max segments would be needed. len 0 adds nothing. */
int viommu_mem_map(const struct viommu_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
		   unsigned *n, unsigned max);
/* The host address of [gpa, gpa+len-1] when it lies inside one region, else NULL. */
void *viommu_mem_ptr(const struct viommu_mem *m, uint64_t gpa, uint64_t len);

/* ---- one split virtqueue ---- */

/* Why a chain was refused (the walker's verdict; counted per reason). */
enum viommu_vq_bad {
	VIOMMU_VQ_OK = 0,
	VIOMMU_VQ_BAD_AVAIL_IDX, /* avail->idx ran more than the queue size ahead of the device */
	VIOMMU_VQ_BAD_HEAD, /* a head index >= queue size */
	VIOMMU_VQ_BAD_NEXT, /* a next index >= queue size (or indirect table length) */
	VIOMMU_VQ_BAD_LOOP, /* more descriptors than the table holds: the chain loops */
	VIOMMU_VQ_BAD_ADDR, /* a buffer outside the guest's regions, or addr + len wraps */
	VIOMMU_VQ_BAD_LEN, /* the chain's total length does not fit 32 bits */
	VIOMMU_VQ_BAD_ORDER, /* a device-readable descriptor after a device-writable one */
	VIOMMU_VQ_BAD_INDIRECT_FEATURE, /* INDIRECT while INDIRECT_DESC is not negotiated */
	VIOMMU_VQ_BAD_INDIRECT_NEXT, /* INDIRECT together with NEXT */
	VIOMMU_VQ_BAD_INDIRECT_NESTED, /* INDIRECT inside an indirect table */
	VIOMMU_VQ_BAD_INDIRECT_SIZE, /* table length 0, not a multiple of 16, or too long */
	VIOMMU_VQ_BAD_IOV, /* more than VIOMMU_VQ_MAX_IOV host segments (a device limit) */
	VIOMMU_VQ_BAD_DIRECTION, /* eventq: a device-readable descriptor */
	VIOMMU_VQ_BAD_COUNT,
};
const char *viommu_vq_bad_name(enum viommu_vq_bad why);

/* Where the driver put the rings (guest-physical) and their size. */
struct viommu_vq_config {
	uint16_t size; /* a power of 2, 1..VIOMMU_VQ_MAX_SIZE */
	uint64_t desc; /* 16-byte aligned */
	uint64_t avail; /* 2-byte aligned */
	uint64_t used; /* 4-byte aligned */
};

/* A popped chain: the device-readable segments, then the device-writable ones. */
struct viommu_vq_chain {
	uint16_t head;
	unsigned nrd, nwr; /* rd = iov[0 .. nrd-1], wr = iov[nrd .. nrd+nwr-1] */
	uint32_t rd_len, wr_len;
	struct iovec *iov; /* VIOMMU_VQ_MAX_IOV entries, owned by the queue */
};

struct viommu_vq {
	struct viommu_vq_config cfg;
	bool ready; /* resolved and enabled */
	bool indirect, event_idx; /* negotiated */
	const struct viommu_mem *mem;
	/* Host views of the rings (inside one region each, alignment checked). */
	struct viommu_vring_desc *desc;
	uint16_t *avail; /* flags, idx, ring[size], used_event */
	uint8_t *used; /* flags, idx, ring[size] of used elems, avail_event */
	uint16_t last_avail; /* next avail entry the device reads */
	uint16_t used_idx; /* next used entry the device writes (published or not) */
	uint16_t signalled_used; /* used_idx at the last notification decision */
	bool signalled_valid;
	enum viommu_vq_bad last_bad;
	uint64_t bad[VIOMMU_VQ_BAD_COUNT];
	struct iovec iov[VIOMMU_VQ_MAX_IOV];
	struct viommu_vring_desc table[VIOMMU_VQ_MAX_INDIRECT]; /* one indirect table, copied */
};

/* Set up @vq over @mem with @cfg: the rings must lie inside @mem, aligned as the spec says (host
 * addresses too). 0, -EINVAL (size not a power of 2 or too big, misaligned), -EFAULT (a ring
 * outside the regions). Indices start at 0. */
int viommu_vq_init(struct viommu_vq *vq, const struct viommu_mem *mem,
		   const struct viommu_vq_config *cfg, bool indirect, bool event_idx);
/* The next chain the driver made available: 0 and @c filled (last_avail moves on); -EAGAIN when
 * none is; -EBADMSG for a bad chain (vq->last_bad says why; last_avail stays, nothing of the
 * chain was touched). Reads avail->idx with acquire (pairs with the driver's write barrier
 * before it publishes avail->idx). */
int viommu_vq_pop(struct viommu_vq *vq, struct viommu_vq_chain *c);
/* Write a used entry (not yet visible: see publish). */
void viommu_vq_push(struct viommu_vq *vq, uint16_t head, uint32_t len);
/* Make every pushed entry visible: a release store of used->idx (pairs with the driver's read
 * barrier after it reads used->idx). */
void viommu_vq_publish(struct viommu_vq *vq);
/* Whether the driver wants a notification for what was published since the last call:
 * used_event with EVENT_IDX, else the NO_INTERRUPT flag. A full fence first (orders the
 * used->idx store before the load of the driver's suppression field). */
bool viommu_vq_need_notify(struct viommu_vq *vq);
/* With EVENT_IDX: ask to be kicked for the next chain (avail_event = last_avail), then a full
 * fence; returns true when chains arrived meanwhile (the caller drains again). Without
 * EVENT_IDX: returns whether chains are available. */
bool viommu_vq_arm(struct viommu_vq *vq);
/* Chains available and not popped (0 when avail->idx is bad). */
uint16_t viommu_vq_pending(const struct viommu_vq *vq);

/* ---- the virtio-iommu device ---- */

#define VIOMMU_VIRTIO_REQUESTQ 0u
#define VIOMMU_VIRTIO_EVENTQ 1u
#define VIOMMU_VIRTIO_NQUEUES 2u

struct viommu_virtio;

/* Called on the device thread when queue @q should interrupt the guest (instead of, or besides,
 * writing the call eventfd), and with q = VIOMMU_VIRTIO_CONFIG when the device signals a config
 * change (it set DEVICE_NEEDS_RESET). */
#define VIOMMU_VIRTIO_CONFIG 0xffffu
typedef void (*viommu_virtio_call_fn)(void *ctx, unsigned q);

struct viommu_virtio_stats {
	uint64_t kicks; /* requestq drains started */
	uint64_t batches; /* batches applied (each: one publication, one used->idx store) */
	uint64_t requests; /* chains handed to the device core */
	uint64_t notifications[VIOMMU_VIRTIO_NQUEUES];
	uint64_t suppressed[VIOMMU_VIRTIO_NQUEUES]; /* publications the driver asked not to hear of */
	uint64_t events; /* fault reports written into event buffers */
	uint64_t events_short; /* event buffers shorter than 24 bytes: returned with used 0 */
	uint64_t bad_chains[VIOMMU_VQ_BAD_COUNT];
	uint64_t needs_reset; /* times DEVICE_NEEDS_RESET was set */
};

/* The transport over @dev (not owned; it must outlive the transport). Status 0, no features, no
 * memory, queues disabled. NULL and errno ENOMEM. */
struct viommu_virtio *viommu_virtio_new(struct viommu_device *dev);
/* Does not close the eventfds it was given (the caller owns them). */
void viommu_virtio_free(struct viommu_virtio *vd);
struct viommu_device *viommu_virtio_device(struct viommu_virtio *vd);

/* The guest's memory map. The transport takes @mem (frees it, and the one it replaces). Enabled
 * queues are resolved again in the new map; if a ring falls outside it the device sets
 * DEVICE_NEEDS_RESET. 0 or -EINVAL (@mem NULL). */
int viommu_virtio_set_mem(struct viommu_virtio *vd, struct viommu_mem *mem);

/* Features: offered = the device's (viommu_device_features) | VERSION_1 | INDIRECT_DESC |
 * EVENT_IDX. The driver's set is taken while FEATURES_OK is not yet set: -EINVAL when it is not
 * a subset of the offer or lacks VERSION_1 (no legacy interface), -EBUSY after FEATURES_OK.
 * The device-type bits go to viommu_device_negotiate(). */
uint64_t viommu_virtio_features(const struct viommu_virtio *vd);
int viommu_virtio_set_driver_features(struct viommu_virtio *vd, uint64_t features);
uint64_t viommu_virtio_driver_features(const struct viommu_virtio *vd);

/* Device status. Writing 0 is a device reset: viommu_device_reset(), queues disabled and
 * forgotten, features cleared, posted event buffers dropped. FEATURES_OK is kept only if the
 * driver's features were accepted (read it back, as the spec says). DRIVER_OK enables the queues
 * that are set up (each ring resolved in the memory map; a ring outside it: -EFAULT, status
 * unchanged). Other writes: -EINVAL for bits the driver may not set (NEEDS_RESET) or clear. */
uint8_t viommu_virtio_status(const struct viommu_virtio *vd);
int viommu_virtio_set_status(struct viommu_virtio *vd, uint8_t status);
/* System (platform) reset: viommu_device_system_reset() (config `bypass` back to its initial
 * value) and the same as a status-0 reset. */
void viommu_virtio_system_reset(struct viommu_virtio *vd);

/* Queue setup, before DRIVER_OK (-EBUSY after): @q is VIOMMU_VIRTIO_REQUESTQ or _EVENTQ
 * (-EINVAL otherwise); -EINVAL for a size that is not a power of 2 up to the queue's maximum. */
uint16_t viommu_virtio_queue_max_size(const struct viommu_virtio *vd, unsigned q);
int viommu_virtio_queue_setup(struct viommu_virtio *vd, unsigned q,
			      const struct viommu_vq_config *cfg);

/* Config space (40 bytes, device.h): reads and writes go to the device. */
void viommu_virtio_config_read(const struct viommu_virtio *vd, uint32_t off, void *buf,
			       uint32_t len);
int viommu_virtio_config_write(struct viommu_virtio *vd, uint32_t off, const void *buf,
			       uint32_t len);

/* Kicks and calls. A kick eventfd (an ioeventfd, or any eventfd the VMM writes on a queue
 * notify) is read by viommu_virtio_poll(); a call eventfd (an irqfd) gets 1 added per
 * notification; a callback is called per notification. -1 / NULL removes. The fds are not
 * closed by the transport. 0 or -EINVAL (bad queue). */
int viommu_virtio_set_kick_fd(struct viommu_virtio *vd, unsigned q, int fd);
int viommu_virtio_set_call_fd(struct viommu_virtio *vd, unsigned q, int fd);
/* q = VIOMMU_VIRTIO_CONFIG: the config fd and callback (DEVICE_NEEDS_RESET). */
int viommu_virtio_set_call_cb(struct viommu_virtio *vd, unsigned q, viommu_virtio_call_fn fn,
			      void *ctx);

/* The guest notified queue @q. requestq: every chain available is applied in order inside one
 * device batch (viommu_device_batch_begin/end: one publication, one grace period), then all its
 * used entries are written, used->idx is stored once, and the guest is notified at most once
 * (EVENT_IDX / NO_INTERRUPT respected); up to VIOMMU_VIRTIO_MAX_BATCHES batches of a queue's
 * size per call. eventq: the new buffers are counted as posted (viommu_device_eventq_post) and
 * pending faults are delivered. Returns 0 when the queue is drained, 1 when chains are still
 * available (the bound was reached: call again), -EIO when the device needs a reset (now or
 * already), -EINVAL for a bad queue, -EAGAIN when the queue is not enabled (not DRIVER_OK). */
#define VIOMMU_VIRTIO_MAX_BATCHES 16u
int viommu_virtio_kick(struct viommu_virtio *vd, unsigned q);
/* Reads every kick eventfd without blocking (set them O_NONBLOCK) and kicks the queues that
 * were notified, then delivers faults. Returns what viommu_virtio_kick returned for the
 * requestq (0 when it was not kicked), or -errno from read(). */
int viommu_virtio_poll(struct viommu_virtio *vd);
/* Moves the device's queued fault reports (viommu_device_fault_pop: every reader's faults reach
 * it, viommu_fastpath_poll_faults included) into posted event buffers, one used->idx store and
 * at most one notification. Call it after anything that may have reported faults. Returns the
 * number delivered, or -EIO (the device needs a reset; the faults stay queued). */
int viommu_virtio_deliver_faults(struct viommu_virtio *vd);

/* ---- save and restore (live migration; docs/image.md, the TRANSPORT record) ----
 * The transport's state (driver features, status, each queue's size, ring addresses, indices
 * and notification state, the event buffers credited to the device) goes into the device's
 * image as one TRANSPORT record. Not saved: statistics, eventfds and callbacks (the destination
 * wires its own), guest memory (the VMM migrates it; the rings and the buffers the driver made
 * available stay there, so requests in the rings and not yet taken complete after restore).
 *
 * Save: the device's image (viommu_device_save) with the TRANSPORT record. 0 or -ENOMEM.
 * Restore, on the destination: dev = viommu_device_restore(image), then
 * viommu_virtio_restore(dev, mem, image): a transport in the saved state over @dev and @mem.
 * The record is untrusted: reserved bytes, status bits and their order, features (offered,
 * VERSION_1, the same as @dev negotiated), queue sizes and alignment, every enabled ring inside
 * @mem, indices (no chain in flight: the device never holds one between calls), and the event
 * buffers held against @dev's free credits and queued faults are all checked before it is used.
 * On success the transport takes @mem (may be NULL when the status has no DRIVER_OK); on
 * failure NULL, errno (EINVAL with @why, of at most @why_len bytes, naming the field; EPROTO;
 * ENOMEM) and neither @dev nor @mem was touched (the caller still owns @mem). */
int viommu_virtio_save(const struct viommu_virtio *vd, void **image, size_t *len);
struct viommu_virtio *viommu_virtio_restore(struct viommu_device *dev, struct viommu_mem *mem,
					    const void *image, size_t len, char *why, size_t why_len);

const struct viommu_virtio_stats *viommu_virtio_stats(const struct viommu_virtio *vd);
/* The queue (for tests and introspection; NULL for a bad @q). */
const struct viommu_vq *viommu_virtio_queue(const struct viommu_virtio *vd, unsigned q);

#endif
