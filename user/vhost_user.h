/* SPDX-License-Identifier: MIT */
/*
 * viommu_vhost_user: the VMM side (frontend) of vhost-user for one virtio-net device whose
 * backend (DPDK, OVS-DPDK, ...) translates through viommu: ACCESS_PLATFORM negotiated, rings at
 * IOVAs, the backend's IOTLB MISSes answered from the fast path (user/iotlb.h) with whole
 * extents, INVALIDATEs confirmed before the device completes an UNMAP / DETACH / reset / bypass
 * change (strict) or sent without waiting (lazy).
 *
 * One event loop serves both sockets: while waiting for any reply or ack the backend channel is
 * serviced (a backend may miss before it acks: DPDK translates rings inside SET_VRING_KICK).
 * Every message from the backend is untrusted: sizes, types, flags and payloads are validated,
 * and each kind of fault has one outcome (vhost_user.c, "Backend messages"): ignored and
 * counted, answered with a failure, or the connection closed (the device and the VMM go on;
 * later calls return -ENOTCONN). Memory is bounded (one message buffer per socket, a fixed ack
 * queue) and every wait has a deadline (opts.ack_timeout_ms).
 *
 * Concurrency: one thread, the device thread (the same that calls viommu_device_request(): the
 * iotlb's strict flush runs this loop from inside it). Nothing here is safe to call
 * concurrently. Errors: 0 or -errno; constructors NULL + errno.
 */
#ifndef VIOMMU_VHOST_USER_H
#define VIOMMU_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "iotlb.h"

/* ---- wire format (docs/interop/vhost-user.rst; host byte order) ---- */
enum {
	VIOMMU_VU_GET_FEATURES = 1,
	VIOMMU_VU_SET_FEATURES = 2,
	VIOMMU_VU_SET_OWNER = 3,
	VIOMMU_VU_SET_MEM_TABLE = 5,
	VIOMMU_VU_SET_VRING_NUM = 8,
	VIOMMU_VU_SET_VRING_ADDR = 9,
	VIOMMU_VU_SET_VRING_BASE = 10,
	VIOMMU_VU_GET_VRING_BASE = 11,
	VIOMMU_VU_SET_VRING_KICK = 12,
	VIOMMU_VU_SET_VRING_CALL = 13,
	VIOMMU_VU_GET_PROTOCOL_FEATURES = 15,
	VIOMMU_VU_SET_PROTOCOL_FEATURES = 16,
	VIOMMU_VU_SET_VRING_ENABLE = 18,
	VIOMMU_VU_SET_BACKEND_REQ_FD = 21,
	VIOMMU_VU_IOTLB_MSG = 22,
};
/* Backend-channel requests. */
#define VIOMMU_VU_BACKEND_IOTLB_MSG 1
#define VIOMMU_VU_VERSION 0x1u
#define VIOMMU_VU_VERSION_MASK 0x3u
#define VIOMMU_VU_F_REPLY 0x4u
#define VIOMMU_VU_F_NEED_REPLY 0x8u
#define VIOMMU_VU_HDR_SIZE 12u
#define VIOMMU_VU_MAX_PAYLOAD 264u /* the largest we send or accept: SET_MEM_TABLE of 8 */
#define VIOMMU_VU_PROTOCOL_F_REPLY_ACK 3
#define VIOMMU_VU_PROTOCOL_F_BACKEND_REQ 5
#define VIOMMU_VU_F_PROTOCOL_FEATURES 30
#define VIOMMU_VIRTIO_F_VERSION_1 32
#define VIOMMU_VIRTIO_F_ACCESS_PLATFORM 33
#define VIOMMU_VU_IOTLB_MISS 1
#define VIOMMU_VU_IOTLB_UPDATE 2
#define VIOMMU_VU_IOTLB_INVALIDATE 3

struct viommu_vu_hdr {
	uint32_t request, flags, size;
};

struct viommu_vu_iotlb {
	uint64_t iova, size, uaddr;
	uint8_t perm, type;
	uint8_t pad[6];
};
_Static_assert(sizeof(struct viommu_vu_iotlb) == 32, "vhost iotlb msg is 32 B");

/* A backend-channel message, as viommu_vu_backend_parse() validated it. */
struct viommu_vu_backend_msg {
	struct viommu_vu_hdr hdr;
	enum {
		VIOMMU_VU_MSG_MISS, /* iotlb: a valid MISS (perm 1-3) */
		VIOMMU_VU_MSG_UNSUPPORTED, /* a well-formed request we do not serve */
		VIOMMU_VU_MSG_BAD_IOTLB, /* BACKEND_IOTLB_MSG with a wrong size, type or perm */
		VIOMMU_VU_MSG_BAD_FLAGS, /* a reply flag or an unknown version on a request */
	} kind;
	struct viommu_vu_iotlb iotlb;
};

/*
 * Parse one backend-channel message from the @len bytes at @buf (a byte stream: the start of the
 * unread data). Returns the bytes the message takes (header + payload) and fills @m; 0 when
 * @len does not hold a whole message yet; -EMSGSIZE when the header announces a payload over
 * VIOMMU_VU_MAX_PAYLOAD (the stream cannot be resynchronised: disconnect). Pure; for the
 * fuzzer too. Any thread.
 */
int viommu_vu_backend_parse(const void *buf, size_t len, struct viommu_vu_backend_msg *m);

/* ---- the frontend ---- */
struct viommu_vhost_user_opts {
	uint32_t endpoint; /* the virtio-net device's endpoint id at the viommu device */
	/* Negotiate ACCESS_PLATFORM (default true via viommu_vhost_user_opts_default). Without it
	 * ring addresses are VMM virtual addresses and no IOTLB message flows (IOMMU-off mode). */
	bool iommu;
	uint32_t ack_timeout_ms; /* every reply and ack; default 2000 */
	uint32_t vring_num; /* default 256 */
	/* DPDK 22.11 quirks (default on): rings re-pushed after an INVALIDATE over them; the iotlb
	 * core's adjacent-join split (set opts.quirk_adjacent_join on the iotlb). */
	bool quirk_repush_rings;
	struct viommu_iotlb_opts iotlb; /* for the bridge core this frontend creates */
};
void viommu_vhost_user_opts_default(struct viommu_vhost_user_opts *o);

struct viommu_vhost_user_stats {
	uint64_t backend_msgs, misses, updates_sent, invalidates_sent, acks, nacks;
	uint64_t unsupported, malformed, fds_refused, replies_dropped, ring_repushes;
	uint64_t timeouts, disconnects;
	/* Answers (misses, prefills, ring pushes) made while a vring the backend will have did not
	 * exist yet there (DPDK 22.11 puts an UPDATE only into the queues that exist when it
	 * arrives): held (deferred, with no message sent when no queue exists at all), then looked
	 * up again and sent as each queue appears (deferred_sent); beyond the hold's capacity they
	 * are left to the backend's misses (deferred_dropped). */
	uint64_t deferred, deferred_sent, deferred_dropped;
	/* MISS read -> its UPDATE acked, in ns: the last VIOMMU_VU_RTT_SAMPLES of them */
#define VIOMMU_VU_RTT_SAMPLES 16384
	uint64_t rtt_n;
	uint32_t rtt_ns[VIOMMU_VU_RTT_SAMPLES];
};

struct viommu_vhost_user;

/* A frontend for @fp's device; creates its bridge core (viommu_vhost_user_iotlb) serving
 * opts->endpoint. Add the memory regions to that, then connect. NULL + errno. Device thread. */
struct viommu_vhost_user *viommu_vhost_user_new(struct viommu_fastpath *fp,
						const struct viommu_vhost_user_opts *opts);
struct viommu_iotlb *viommu_vhost_user_iotlb(struct viommu_vhost_user *vu);

/* Connect to the backend listening on @path; negotiate (features: VERSION_1 | ACCESS_PLATFORM |
 * PROTOCOL_FEATURES and whatever of @extra_features the backend offers; protocol features
 * REPLY_ACK | BACKEND_REQ, which must be offered), SET_OWNER, SET_BACKEND_REQ_FD, SET_MEM_TABLE
 * from the iotlb's regions (each needs an fd). -ENOTSUP (backend lacks a needed feature),
 * -EPROTO, -ETIMEDOUT, -errno of connect. */
int viommu_vhost_user_connect(struct viommu_vhost_user *vu, const char *path, uint64_t extra_features);
/* The features negotiated (after connect). */
uint64_t viommu_vhost_user_features(const struct viommu_vhost_user *vu);

/* Set up vring @idx: NUM, BASE 0, ADDR (@desc/@avail/@used: IOVAs, or VMM addresses without
 * iommu), then UPDATEs for the rings, KICK and CALL (eventfds; passed by SCM_RIGHTS). Each
 * message acked. Not enabled. The queue exists at the backend from NUM on: answers held until
 * then (prefills at MAP before the vrings, even before connect; stats.deferred) are looked up
 * again and sent once NUM is acked, so every queue gets them. */
int viommu_vhost_user_set_vring(struct viommu_vhost_user *vu, unsigned idx, uint64_t desc,
				uint64_t avail, uint64_t used, int kick_fd, int call_fd);
int viommu_vhost_user_enable(struct viommu_vhost_user *vu, unsigned idx, bool on);
/* GET_VRING_BASE: stops vring @idx; *@base = the backend's next avail index. */
int viommu_vhost_user_stop(struct viommu_vhost_user *vu, unsigned idx, uint32_t *base);

/* Service both sockets: wait up to @timeout_ms for something, then handle what is there (at most
 * 256 backend messages). Returns how many messages were handled, or -ENOTCONN. */
int viommu_vhost_user_poll(struct viommu_vhost_user *vu, int timeout_ms);
/* The two fds to poll for POLLIN (main, backend channel) in a VMM's own loop; -1 when closed. */
void viommu_vhost_user_fds(const struct viommu_vhost_user *vu, int fds[2]);
bool viommu_vhost_user_connected(const struct viommu_vhost_user *vu);
/* Why the connection was closed, or "". */
const char *viommu_vhost_user_error(const struct viommu_vhost_user *vu);

/* Stops the vrings it set up (GET_VRING_BASE), closes the sockets, frees the bridge core. */
void viommu_vhost_user_free(struct viommu_vhost_user *vu);

const struct viommu_vhost_user_stats *viommu_vhost_user_stats(const struct viommu_vhost_user *vu);
/* p-th percentile (0-100) of the recorded MISS round trips, in ns (0 when none). */
uint64_t viommu_vhost_user_rtt_percentile(const struct viommu_vhost_user *vu, unsigned p);

#endif
