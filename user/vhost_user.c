/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user frontend (vhost_user.h) over the bridge core (iotlb.h).
 *
 * Backend messages and their outcomes (every message the backend sends is untrusted):
 *  main channel (replies only: we send every request)
 *   - a header announcing more than VIOMMU_VU_MAX_PAYLOAD bytes, a message without the reply
 *     flag or with another version, a reply when none is awaited, a reply to another request
 *     than the oldest awaited one, a reply whose size is not 8: disconnect (the stream or the
 *     request/reply pairing is lost).
 *   - a non-zero ack: counted (nacks); a setup call that awaited it returns -EIO.
 *  backend channel (requests only)
 *   - a header announcing more than VIOMMU_VU_MAX_PAYLOAD bytes: disconnect.
 *   - the reply flag or another version: ignored, counted (malformed).
 *   - BACKEND_IOTLB_MSG of a size other than 32, a type other than MISS, a perm outside 1-3:
 *     counted (malformed); a failure reply if NEED_REPLY.
 *   - any other request: counted (unsupported); a failure reply if NEED_REPLY.
 *   - a MISS: answered (UPDATE + NEED_REPLY) or faulted; an ack if NEED_REPLY.
 *   - file descriptors: closed at once, never used (fds_refused).
 *   - EOF or a socket error, including in the middle of a message: disconnect.
 *  waits: every reply or ack awaited has a deadline (ack_timeout_ms): disconnect past it.
 * Queues that do not exist yet: DPDK 22.11 copies an UPDATE into the vrings that exist when it
 * arrives (a vring exists from its first per-vring message) and drops it for the others. An
 * answer made while one of the NVRINGS vrings does not exist at the backend (a prefill at MAP
 * time before the VMM set the vrings up, a ring push for vring 0 before vring 1) is remembered
 * as (iova, perm), at most DEFER_MAX of them, and looked up again and sent when each vring
 * appears: what was unmapped meanwhile is not sent, what was remapped is sent as it is now.
 * With no vring at all, only a MISS's answer is sent (a backend that asked); a prefill is not.
 * After a disconnect, calls return -ENOTCONN; the device and the VMM go on.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fastpath.h"
#include "vhost_user.h"

#define PENDING_MAX 1024 /* replies awaited at once (a power of two) */
#define BURST 256 /* backend messages handled per poll */
#define NVRINGS 2
#define DEFER_MAX 256 /* answers held for vrings the backend does not have yet */

struct pending {
	uint32_t request;
	uint64_t t_miss; /* the MISS this UPDATE answers was read then (ns), or 0 */
	uint64_t value;
};

struct vring {
	bool exists; /* at the backend: a per-vring message was acked on this connection */
	bool set, enabled, repush;
	uint64_t desc, avail, used; /* IOVAs */
};

struct rx {
	uint8_t buf[VIOMMU_VU_HDR_SIZE + VIOMMU_VU_MAX_PAYLOAD];
	size_t len;
};

struct viommu_vhost_user {
	struct viommu_vhost_user_opts o;
	struct viommu_fastpath *fp;
	struct viommu_iotlb *it;
	int fd, bfd; /* main socket, our end of the backend channel */
	bool connected_once;
	uint64_t features, protocol_features;
	struct vring vr[NVRINGS];
	struct pending pend[PENDING_MAX];
	uint64_t seq_next, seq_done; /* sent with a reply awaited: seq_done < seq <= seq_next */
	uint64_t last_value; /* of the last reply completed */
	bool last_nack;
	struct rx mrx, brx;
	struct {
		uint64_t iova;
		uint8_t perm;
	} defer[DEFER_MAX];
	unsigned ndefer;
	char err[160];
	struct viommu_vhost_user_stats st;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void disconnect(struct viommu_vhost_user *vu, const char *fmt, ...)
{
	va_list ap;

	if (vu->fd < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(vu->err, sizeof(vu->err), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vhost-user: %s: disconnecting\n", vu->err);
	close(vu->fd);
	close(vu->bfd);
	vu->fd = vu->bfd = -1;
	vu->st.disconnects++;
}

/* ---- sending ---- */

static int send_fds(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * VIOMMU_IOTLB_MAX_REGIONS)];
		struct cmsghdr align;
	} c;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds) {
		struct cmsghdr *cm;

		memset(&c, 0, sizeof(c));
		mh.msg_control = c.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

/* Send a request, after @pre_len bytes of whole messages that await no reply (@pre: the quirk
 * split's INVALIDATE), in one sendmsg; when @reply (NEED_REPLY set, or a GET), queue it for its
 * reply and return its sequence number (> 0); else 0. -errno (and disconnected) on failure. */
static int64_t send_req_after(struct viommu_vhost_user *vu, const void *pre, size_t pre_len,
			      uint32_t request, bool reply, const void *payload, uint32_t size,
			      const int *fds, unsigned nfds, uint64_t t_miss)
{
	uint8_t buf[2 * (VIOMMU_VU_HDR_SIZE + VIOMMU_VU_MAX_PAYLOAD)];
	bool get = request == VIOMMU_VU_GET_FEATURES || request == VIOMMU_VU_GET_PROTOCOL_FEATURES ||
		   request == VIOMMU_VU_GET_VRING_BASE;
	struct viommu_vu_hdr h = { request, VIOMMU_VU_VERSION, size };
	int err;

	if (vu->fd < 0)
		return -ENOTCONN;
	if (reply && !get)
		h.flags |= VIOMMU_VU_F_NEED_REPLY;
	if (reply && vu->seq_next - vu->seq_done >= PENDING_MAX) {
		disconnect(vu, "%u replies outstanding", PENDING_MAX);
		return -ENOBUFS;
	}
	if (pre_len)
		memcpy(buf, pre, pre_len);
	memcpy(buf + pre_len, &h, sizeof(h));
	if (size)
		memcpy(buf + pre_len + VIOMMU_VU_HDR_SIZE, payload, size);
	err = send_fds(vu->fd, buf, pre_len + VIOMMU_VU_HDR_SIZE + size, fds, nfds);
	if (err) {
		disconnect(vu, "send of request %u: %s", request, strerror(-err));
		return err;
	}
	if (!reply)
		return 0;
	vu->seq_next++;
	vu->pend[vu->seq_next % PENDING_MAX] = (struct pending){ .request = request, .t_miss = t_miss };
	return (int64_t)vu->seq_next;
}

static int64_t send_req(struct viommu_vhost_user *vu, uint32_t request, bool reply,
			const void *payload, uint32_t size, const int *fds, unsigned nfds,
			uint64_t t_miss)
{
	return send_req_after(vu, NULL, 0, request, reply, payload, size, fds, nfds, t_miss);
}

/* An INVALIDATE whose ack is awaited: its sequence number, or -errno. */
static int64_t send_invalidate(struct viommu_vhost_user *vu, uint64_t iova, uint64_t size)
{
	struct viommu_vu_iotlb m = { .iova = iova, .size = size, .type = VIOMMU_VU_IOTLB_INVALIDATE };

	vu->st.invalidates_sent++;
	return send_req(vu, VIOMMU_VU_IOTLB_MSG, true, &m, sizeof(m), NULL, 0, 0);
}

/* An answer (and the invalidation the quirk split asks first) onto the main channel. The
 * split's INVALIDATE goes without NEED_REPLY: the backend handles the main channel in order, so
 * the UPDATE's ack confirms it too, and the backend spends no reply on it. Both go in one
 * sendmsg: the backend's message thread wakes once and finds both (sent apart, it can wake for
 * the first, sleep again and wake for the second). Together about 5 us off the median round
 * trip against testpmd on this machine (docs/vhost.md, "Where the round trip goes"). An UNMAP's INVALIDATE
 * (op_invalidate) is acked on its own: the UNMAP waits for it. */
static void send_answer(struct viommu_vhost_user *vu, const struct viommu_iotlb_entry *e,
			const struct viommu_iotlb_entry *inv, uint64_t t_miss)
{
	struct viommu_vu_iotlb up = { .iova = e->iova, .size = e->size, .uaddr = e->uaddr,
				      .perm = e->perm, .type = VIOMMU_VU_IOTLB_UPDATE };
	struct viommu_vu_iotlb in = { .iova = inv->iova, .size = inv->size,
				      .type = VIOMMU_VU_IOTLB_INVALIDATE };
	struct viommu_vu_hdr h = { VIOMMU_VU_IOTLB_MSG, VIOMMU_VU_VERSION, sizeof(in) };
	uint8_t pre[VIOMMU_VU_HDR_SIZE + sizeof(in)];
	unsigned have = 0;

	for (unsigned i = 0; i < NVRINGS; i++)
		have += vu->vr[i].exists;
	if (have < NVRINGS) {
		unsigned i = 0;

		/* A vring to come would not get it: hold it for then (the header's "Queues"), once. */
		while (i < vu->ndefer && (vu->defer[i].iova != e->iova || vu->defer[i].perm != e->perm))
			i++;
		if (i < vu->ndefer) {
			/* held already */
		} else if (vu->ndefer < DEFER_MAX) {
			vu->defer[vu->ndefer].iova = e->iova;
			vu->defer[vu->ndefer++].perm = e->perm;
			vu->st.deferred++;
		} else {
			vu->st.deferred_dropped++;
		}
		/* No vring would keep a prefill (nor need the split's INVALIDATE: none holds
		 * anything). A MISS (t_miss) is answered all the same: the backend asked. */
		if (vu->fd < 0 || (!have && !t_miss))
			return;
	}
	memcpy(pre, &h, sizeof(h));
	memcpy(pre + VIOMMU_VU_HDR_SIZE, &in, sizeof(in));
	if (inv->size)
		vu->st.invalidates_sent++;
	vu->st.updates_sent++;
	send_req_after(vu, pre, inv->size ? sizeof(pre) : 0, VIOMMU_VU_IOTLB_MSG, true, &up,
		       sizeof(up), NULL, 0, t_miss);
}

/* ---- receiving ---- */

/* Read what is there into @rx; close any fds that came with it. 0, or -1 after a disconnect. */
static int fill(struct viommu_vhost_user *vu, int fd, struct rx *rx, const char *name)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} c;
	struct iovec iov = { rx->buf + rx->len, sizeof(rx->buf) - rx->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.b,
			     .msg_controllen = sizeof(c.b) };
	ssize_t n;

	if (iov.iov_len == 0)
		return 0;
	n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	for (struct cmsghdr *cm = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				close(f);
				vu->st.fds_refused++;
			}
		}
	if (n <= 0) {
		disconnect(vu, "%s channel: %s%s", name, n ? strerror(errno) : "closed by the backend",
			   rx->len ? " in the middle of a message" : "");
		return -1;
	}
	rx->len += (size_t)n;
	return 0;
}

static void consume(struct rx *rx, size_t n)
{
	memmove(rx->buf, rx->buf + n, rx->len - n);
	rx->len -= n;
}

static void handle_reply(struct viommu_vhost_user *vu, const struct viommu_vu_hdr *h, uint64_t v)
{
	struct pending *p = &vu->pend[(vu->seq_done + 1) % PENDING_MAX];
	bool get = p->request == VIOMMU_VU_GET_FEATURES ||
		   p->request == VIOMMU_VU_GET_PROTOCOL_FEATURES ||
		   p->request == VIOMMU_VU_GET_VRING_BASE;

	vu->seq_done++;
	vu->last_value = v;
	vu->last_nack = !get && v != 0;
	vu->st.acks++;
	if (vu->last_nack)
		vu->st.nacks++;
	if (p->t_miss && !vu->last_nack) {
		vu->st.rtt_ns[vu->st.rtt_n++ % VIOMMU_VU_RTT_SAMPLES] =
			(uint32_t)((now_ns() - p->t_miss) > UINT32_MAX ? UINT32_MAX : now_ns() - p->t_miss);
	}
	(void)h;
}

static int service_main(struct viommu_vhost_user *vu)
{
	int handled = 0;

	if (fill(vu, vu->fd, &vu->mrx, "main"))
		return -ENOTCONN;
	while (vu->mrx.len >= VIOMMU_VU_HDR_SIZE) {
		struct viommu_vu_hdr h;
		uint64_t v;

		memcpy(&h, vu->mrx.buf, sizeof(h));
		if (h.size > VIOMMU_VU_MAX_PAYLOAD) {
			disconnect(vu, "main channel: a reply of %u bytes", h.size);
			return -ENOTCONN;
		}
		if (vu->mrx.len < VIOMMU_VU_HDR_SIZE + h.size)
			break;
		if ((h.flags & VIOMMU_VU_VERSION_MASK) != VIOMMU_VU_VERSION || !(h.flags & VIOMMU_VU_F_REPLY)) {
			disconnect(vu, "main channel: a message with flags 0x%x (not a reply)", h.flags);
			return -ENOTCONN;
		}
		if (vu->seq_done == vu->seq_next) {
			disconnect(vu, "main channel: a reply (request %u) nothing awaited", h.request);
			return -ENOTCONN;
		}
		if (h.request != vu->pend[(vu->seq_done + 1) % PENDING_MAX].request) {
			disconnect(vu, "main channel: a reply to request %u, awaiting %u", h.request,
				   vu->pend[(vu->seq_done + 1) % PENDING_MAX].request);
			return -ENOTCONN;
		}
		if (h.size != 8) {
			disconnect(vu, "main channel: a reply to request %u of %u bytes", h.request, h.size);
			return -ENOTCONN;
		}
		memcpy(&v, vu->mrx.buf + VIOMMU_VU_HDR_SIZE, 8);
		consume(&vu->mrx, VIOMMU_VU_HDR_SIZE + 8);
		handle_reply(vu, &h, v);
		handled++;
	}
	return handled;
}

static void backend_reply(struct viommu_vhost_user *vu, const struct viommu_vu_hdr *req, uint64_t v)
{
	struct {
		struct viommu_vu_hdr h;
		uint64_t v;
	} __attribute__((packed)) r = { { req->request, VIOMMU_VU_VERSION | VIOMMU_VU_F_REPLY, 8 }, v };

	/* Never blocks: a backend that does not read its own channel loses its replies. */
	if (send(vu->bfd, &r, sizeof(r), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(r))
		vu->st.replies_dropped++;
}

static void handle_miss(struct viommu_vhost_user *vu, const struct viommu_vu_iotlb *m, uint64_t t0)
{
	struct viommu_iotlb_entry e, inv;

	vu->st.misses++;
	if (viommu_iotlb_answer(vu->it, vu->o.endpoint, m->iova, m->perm, &e, &inv) == 0)
		send_answer(vu, &e, &inv, t0);
}

static int service_backend(struct viommu_vhost_user *vu)
{
	int handled = 0;

	if (fill(vu, vu->bfd, &vu->brx, "backend"))
		return -ENOTCONN;
	while (handled < BURST && vu->bfd >= 0) {
		struct viommu_vu_backend_msg m;
		int n = viommu_vu_backend_parse(vu->brx.buf, vu->brx.len, &m);
		uint64_t t0 = now_ns();

		if (n == 0)
			break;
		if (n < 0) {
			disconnect(vu, "backend channel: a message announcing %u bytes", m.hdr.size);
			return -ENOTCONN;
		}
		consume(&vu->brx, (size_t)n);
		vu->st.backend_msgs++;
		handled++;
		switch (m.kind) {
		case VIOMMU_VU_MSG_MISS:
			handle_miss(vu, &m.iotlb, t0);
			if (m.hdr.flags & VIOMMU_VU_F_NEED_REPLY)
				backend_reply(vu, &m.hdr, 0);
			break;
		case VIOMMU_VU_MSG_BAD_FLAGS:
			vu->st.malformed++;
			break;
		case VIOMMU_VU_MSG_BAD_IOTLB:
			vu->st.malformed++;
			if (m.hdr.flags & VIOMMU_VU_F_NEED_REPLY)
				backend_reply(vu, &m.hdr, 1);
			break;
		case VIOMMU_VU_MSG_UNSUPPORTED:
			vu->st.unsupported++;
			if (m.hdr.flags & VIOMMU_VU_F_NEED_REPLY)
				backend_reply(vu, &m.hdr, 1);
			break;
		}
		/* More may have arrived while we answered: read again when this batch is done. */
		if (vu->brx.len < VIOMMU_VU_HDR_SIZE && fill(vu, vu->bfd, &vu->brx, "backend"))
			return -ENOTCONN;
	}
	return handled;
}

int viommu_vhost_user_poll(struct viommu_vhost_user *vu, int timeout_ms)
{
	struct pollfd p[2] = { { vu->fd, POLLIN, 0 }, { vu->bfd, POLLIN, 0 } };
	int n, handled = 0, r;

	if (vu->fd < 0)
		return -ENOTCONN;
	n = poll(p, 2, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	/* The backend channel first: its MISSes hold the backend's datapath. */
	if (p[1].revents) {
		r = service_backend(vu);
		if (r < 0)
			return r;
		handled += r;
	}
	if (p[0].revents && vu->fd >= 0) {
		r = service_main(vu);
		if (r < 0)
			return r;
		handled += r;
	}
	return handled;
}

/* Wait (servicing both channels) until reply @seq came. 0, -ETIMEDOUT, -ENOTCONN. */
static int wait_seq(struct viommu_vhost_user *vu, uint64_t seq)
{
	uint64_t deadline = now_ns() + (uint64_t)vu->o.ack_timeout_ms * 1000000ull;

	while (vu->seq_done < seq) {
		uint64_t t = now_ns();
		int r;

		if (vu->fd < 0)
			return -ENOTCONN;
		if (t >= deadline) {
			vu->st.timeouts++;
			disconnect(vu, "no reply to request %u in %u ms",
				   vu->pend[(vu->seq_done + 1) % PENDING_MAX].request, vu->o.ack_timeout_ms);
			return -ETIMEDOUT;
		}
		r = viommu_vhost_user_poll(vu, (int)((deadline - t) / 1000000ull) + 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A request whose reply we need now: the reply's value, or -errno. */
static int call(struct viommu_vhost_user *vu, uint32_t request, const void *payload, uint32_t size,
		const int *fds, unsigned nfds, uint64_t *value)
{
	int64_t seq = send_req(vu, request, true, payload, size, fds, nfds, 0);
	int err;

	if (seq < 0)
		return (int)seq;
	err = wait_seq(vu, (uint64_t)seq);
	if (err)
		return err;
	/* seq was the newest awaited when sent, and replies come in order: last_value is its. */
	if (vu->seq_done == (uint64_t)seq) {
		if (value)
			*value = vu->last_value;
		if (vu->last_nack)
			return -EIO;
	}
	return 0;
}

/* ---- rings ---- */

static void ring_parts(const struct viommu_vhost_user *vu, const struct vring *r, uint64_t s[3],
		       uint64_t len[3])
{
	uint64_t n = vu->o.vring_num;

	s[0] = r->desc, len[0] = 16 * n;
	s[1] = r->avail, len[1] = 6 + 2 * n;
	s[2] = r->used, len[2] = 6 + 8 * n;
}

/* UPDATEs covering vring @idx (the queue exists). A part not mapped now is watched: a MAP that
 * covers it pushes it then (ops.remapped). */
static void push_ring(struct viommu_vhost_user *vu, unsigned idx)
{
	uint64_t s[3], len[3];

	ring_parts(vu, &vu->vr[idx], s, len);
	for (unsigned p = 0; p < 3; p++) {
		uint64_t at = s[p], end = s[p] + len[p];

		for (unsigned k = 0; at < end && k < 64; k++) {
			struct viommu_iotlb_entry e, inv;

			if (viommu_iotlb_lookup(vu->it, vu->o.endpoint, at, VIOMMU_IOTLB_PERM_RW, &e, &inv)) {
				viommu_iotlb_watch(vu->it, vu->o.endpoint, at, VIOMMU_IOTLB_PERM_RW);
				break;
			}
			send_answer(vu, &e, &inv, 0);
			if (e.iova + e.size <= at || e.iova + e.size == 0)
				break;
			at = e.iova + e.size;
		}
	}
	vu->st.ring_repushes++;
}

/* Vring @idx now exists at the backend: send what was held, looked up again (the mapping may
 * have changed or gone since). Still held for the vrings that do not exist yet. */
static void vring_exists(struct viommu_vhost_user *vu, unsigned idx)
{
	unsigned n = vu->ndefer;
	struct {
		uint64_t iova;
		uint8_t perm;
	} held[DEFER_MAX];

	vu->vr[idx].exists = true;
	if (!n || !(vu->features >> VIOMMU_VIRTIO_F_ACCESS_PLATFORM & 1)) {
		vu->ndefer = 0;
		return;
	}
	/* Taken first: send_answer holds them again while a vring is still missing. */
	memcpy(held, vu->defer, n * sizeof(held[0]));
	vu->ndefer = 0;
	for (unsigned i = 0; i < n && vu->fd >= 0; i++) {
		struct viommu_iotlb_entry e, inv;

		if (viommu_iotlb_lookup(vu->it, vu->o.endpoint, held[i].iova, held[i].perm, &e, &inv))
			continue;
		vu->st.deferred_sent++;
		send_answer(vu, &e, &inv, 0);
	}
}

/* ---- the bridge core's callbacks ---- */

static int op_invalidate(void *ctx, uint32_t ep, uint64_t first, uint64_t last)
{
	struct viommu_vhost_user *vu = ctx;
	/* [0, 2^64 - 1] cannot be said in one message: size 0 is a no-op to DPDK. The last byte of
	 * the space is left out; no ring or buffer ends there (an extent's end + 1 overflows). */
	uint64_t size = last - first + 1 ? last - first + 1 : UINT64_MAX;
	int64_t r;

	(void)ep;
	if (!(vu->features >> VIOMMU_VIRTIO_F_ACCESS_PLATFORM & 1))
		return 0; /* nothing was ever answered */
	r = send_invalidate(vu, first, size);
	if (r < 0)
		return (int)r;
	if (vu->o.quirk_repush_rings)
		for (unsigned i = 0; i < NVRINGS; i++) {
			uint64_t s[3], len[3];

			if (!vu->vr[i].set)
				continue;
			ring_parts(vu, &vu->vr[i], s, len);
			for (unsigned p = 0; p < 3; p++)
				if (s[p] <= last && first <= s[p] + len[p] - 1)
					vu->vr[i].repush = true;
		}
	return 0;
}

static int op_complete(void *ctx, bool strict)
{
	struct viommu_vhost_user *vu = ctx;
	int err = 0;

	if (strict)
		err = wait_seq(vu, vu->seq_next);
	/* After the INVALIDATEs (acked, in strict mode; in order on the channel in any case). */
	for (unsigned i = 0; i < NVRINGS && vu->fd >= 0; i++)
		if (vu->vr[i].repush) {
			vu->vr[i].repush = false;
			push_ring(vu, i);
		}
	return err;
}

static void op_remapped(void *ctx, uint32_t ep, uint64_t iova, uint8_t perm)
{
	struct viommu_vhost_user *vu = ctx;
	struct viommu_iotlb_entry e, inv;

	/* Not connected yet: held for the vrings (send_answer); after a disconnect: nothing. */
	if ((vu->fd >= 0 || !vu->connected_once) &&
	    viommu_iotlb_lookup(vu->it, ep, iova, perm, &e, &inv) == 0)
		send_answer(vu, &e, &inv, 0);
}

/* ---- setup ---- */

void viommu_vhost_user_opts_default(struct viommu_vhost_user_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->iommu = true;
	o->ack_timeout_ms = 2000;
	o->vring_num = 256;
	o->quirk_repush_rings = true;
	o->iotlb.quirk_adjacent_join = true;
	o->iotlb.track_held = true;
}

struct viommu_vhost_user *viommu_vhost_user_new(struct viommu_fastpath *fp,
						const struct viommu_vhost_user_opts *opts)
{
	struct viommu_vhost_user *vu = calloc(1, sizeof(*vu));
	struct viommu_iotlb_ops ops = { .invalidate = op_invalidate, .complete = op_complete,
					.remapped = op_remapped };
	int err;

	if (!vu)
		return NULL;
	if (opts)
		vu->o = *opts;
	else
		viommu_vhost_user_opts_default(&vu->o);
	if (!vu->o.ack_timeout_ms)
		vu->o.ack_timeout_ms = 2000;
	if (!vu->o.vring_num || vu->o.vring_num > 32768 || (vu->o.vring_num & (vu->o.vring_num - 1))) {
		free(vu);
		errno = EINVAL;
		return NULL;
	}
	vu->fd = vu->bfd = -1;
	vu->fp = fp;
	ops.ctx = vu;
	vu->it = viommu_iotlb_new(fp, &vu->o.iotlb, &ops);
	if (!vu->it) {
		err = errno;
		free(vu);
		errno = err;
		return NULL;
	}
	err = viommu_iotlb_serve(vu->it, vu->o.endpoint);
	if (err) {
		viommu_iotlb_free(vu->it);
		free(vu);
		errno = -err;
		return NULL;
	}
	return vu;
}

struct viommu_iotlb *viommu_vhost_user_iotlb(struct viommu_vhost_user *vu)
{
	return vu->it;
}

int viommu_vhost_user_connect(struct viommu_vhost_user *vu, const char *path, uint64_t extra_features)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { vu->o.ack_timeout_ms / 1000, (vu->o.ack_timeout_ms % 1000) * 1000 };
	uint64_t offered, proto, want, v;
	const struct viommu_iotlb_region *rg;
	unsigned nrg;
	int sv[2], fds[VIOMMU_IOTLB_MAX_REGIONS], err;
	struct {
		uint32_t n, pad;
		struct {
			uint64_t gpa, size, uaddr, offset;
		} r[VIOMMU_IOTLB_MAX_REGIONS];
	} mem = { 0 };

	if (vu->fd >= 0)
		return -EISCONN;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	vu->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (vu->fd < 0)
		return -errno;
	if (connect(vu->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		close(vu->fd);
		vu->fd = -1;
		return err;
	}
	/* A backend that stops reading cannot block us past the deadline either. */
	setsockopt(vu->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		err = -errno;
		close(vu->fd);
		vu->fd = -1;
		return err;
	}
	vu->bfd = sv[0];
	vu->err[0] = 0;
	vu->connected_once = true;
	for (unsigned i = 0; i < NVRINGS; i++)
		vu->vr[i].exists = false; /* a new connection: the backend has no vring */

	if ((err = call(vu, VIOMMU_VU_GET_FEATURES, NULL, 0, NULL, 0, &offered)))
		goto fail;
	want = (1ull << VIOMMU_VIRTIO_F_VERSION_1) | (1ull << VIOMMU_VU_F_PROTOCOL_FEATURES);
	if (vu->o.iommu)
		want |= 1ull << VIOMMU_VIRTIO_F_ACCESS_PLATFORM;
	if ((offered & want) != want) {
		err = -ENOTSUP;
		disconnect(vu, "backend offers features 0x%llx, not 0x%llx", (unsigned long long)offered,
			   (unsigned long long)want);
		goto fail;
	}
	want |= extra_features & offered;
	if ((err = call(vu, VIOMMU_VU_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0, &proto)))
		goto fail;
	v = (1ull << VIOMMU_VU_PROTOCOL_F_REPLY_ACK) | (1ull << VIOMMU_VU_PROTOCOL_F_BACKEND_REQ);
	if ((proto & v) != v) {
		err = -ENOTSUP;
		disconnect(vu, "backend offers protocol features 0x%llx, not REPLY_ACK and BACKEND_REQ",
			   (unsigned long long)proto);
		goto fail;
	}
	/* SET_PROTOCOL_FEATURES cannot be acked before REPLY_ACK is negotiated: not awaited. */
	if ((err = (int)send_req(vu, VIOMMU_VU_SET_PROTOCOL_FEATURES, false, &v, 8, NULL, 0, 0)) < 0)
		goto fail;
	vu->protocol_features = v;
	if ((err = call(vu, VIOMMU_VU_SET_OWNER, NULL, 0, NULL, 0, NULL)))
		goto fail;
	err = call(vu, VIOMMU_VU_SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1, NULL);
	close(sv[1]);
	if (err)
		goto fail;
	if ((err = call(vu, VIOMMU_VU_SET_FEATURES, &want, 8, NULL, 0, NULL)))
		goto fail;
	vu->features = want;
	rg = viommu_iotlb_regions(vu->it, &nrg);
	mem.n = nrg;
	for (unsigned i = 0; i < nrg; i++) {
		if (rg[i].fd < 0) {
			err = -EBADF;
			disconnect(vu, "memory region %u has no fd", i);
			goto fail;
		}
		mem.r[i].gpa = rg[i].gpa;
		mem.r[i].size = rg[i].size;
		mem.r[i].uaddr = (uint64_t)(uintptr_t)rg[i].hva;
		mem.r[i].offset = rg[i].fd_offset;
		fds[i] = rg[i].fd;
	}
	if ((err = call(vu, VIOMMU_VU_SET_MEM_TABLE, &mem, 8 + 32 * nrg, fds, nrg, NULL)))
		goto fail;
	return 0;
fail:
	if (vu->fd >= 0)
		disconnect(vu, "setup failed: %s", strerror(-err));
	return err;
}

uint64_t viommu_vhost_user_features(const struct viommu_vhost_user *vu)
{
	return vu->features;
}

int viommu_vhost_user_set_vring(struct viommu_vhost_user *vu, unsigned idx, uint64_t desc,
				uint64_t avail, uint64_t used, int kick_fd, int call_fd)
{
	uint32_t st[2] = { idx, vu->o.vring_num };
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} addr = { idx, 0, desc, used, avail, 0 };
	uint64_t k = idx, c = idx;
	int err;

	if (idx >= NVRINGS)
		return -EINVAL;
	if ((err = call(vu, VIOMMU_VU_SET_VRING_NUM, st, 8, NULL, 0, NULL)))
		return err;
	if (!vu->vr[idx].exists)
		vring_exists(vu, idx);
	st[1] = 0;
	if ((err = call(vu, VIOMMU_VU_SET_VRING_BASE, st, 8, NULL, 0, NULL)))
		return err;
	if ((err = call(vu, VIOMMU_VU_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL)))
		return err;
	vu->vr[idx] = (struct vring){ .exists = true, .set = true, .desc = desc, .avail = avail,
				      .used = used };
	/* The queue exists (from NUM on): push its rings now, before the KICK makes the backend
	 * translate them (it would miss otherwise: a round trip each). */
	if (vu->features >> VIOMMU_VIRTIO_F_ACCESS_PLATFORM & 1)
		push_ring(vu, idx);
	if (kick_fd < 0)
		k |= 0x100;
	if ((err = call(vu, VIOMMU_VU_SET_VRING_KICK, &k, 8, &kick_fd, kick_fd >= 0, NULL)))
		return err;
	if (call_fd < 0)
		c |= 0x100;
	return call(vu, VIOMMU_VU_SET_VRING_CALL, &c, 8, &call_fd, call_fd >= 0, NULL);
}

int viommu_vhost_user_enable(struct viommu_vhost_user *vu, unsigned idx, bool on)
{
	uint32_t st[2] = { idx, on };
	int err;

	if (idx >= NVRINGS)
		return -EINVAL;
	err = call(vu, VIOMMU_VU_SET_VRING_ENABLE, st, 8, NULL, 0, NULL);
	if (!err)
		vu->vr[idx].enabled = on;
	return err;
}

int viommu_vhost_user_stop(struct viommu_vhost_user *vu, unsigned idx, uint32_t *base)
{
	uint32_t st[2] = { idx, 0 };
	uint64_t v = 0;
	int err;

	if (idx >= NVRINGS)
		return -EINVAL;
	err = call(vu, VIOMMU_VU_GET_VRING_BASE, st, 8, NULL, 0, &v);
	if (!err) {
		vu->vr[idx].set = false;
		if (base)
			*base = (uint32_t)(v >> 32);
	}
	return err;
}

void viommu_vhost_user_fds(const struct viommu_vhost_user *vu, int fds[2])
{
	fds[0] = vu->fd;
	fds[1] = vu->bfd;
}

bool viommu_vhost_user_connected(const struct viommu_vhost_user *vu)
{
	return vu->fd >= 0;
}

const char *viommu_vhost_user_error(const struct viommu_vhost_user *vu)
{
	return vu->err;
}

void viommu_vhost_user_free(struct viommu_vhost_user *vu)
{
	if (!vu)
		return;
	for (unsigned i = 0; i < NVRINGS && vu->fd >= 0; i++)
		if (vu->vr[i].set)
			viommu_vhost_user_stop(vu, i, NULL);
	if (vu->fd >= 0) {
		close(vu->fd);
		close(vu->bfd);
	}
	viommu_iotlb_free(vu->it);
	free(vu);
}

const struct viommu_vhost_user_stats *viommu_vhost_user_stats(const struct viommu_vhost_user *vu)
{
	return &vu->st;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t viommu_vhost_user_rtt_percentile(const struct viommu_vhost_user *vu, unsigned p)
{
	uint64_t n = vu->st.rtt_n < VIOMMU_VU_RTT_SAMPLES ? vu->st.rtt_n : VIOMMU_VU_RTT_SAMPLES;
	uint32_t *s;
	uint64_t r;

	if (!n)
		return 0;
	s = malloc(n * sizeof(*s));
	if (!s)
		return 0;
	memcpy(s, vu->st.rtt_ns, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_u32);
	r = s[(n - 1) * (p > 100 ? 100 : p) / 100];
	free(s);
	return r;
}
