/* SPDX-License-Identifier: MIT */
/*
 * The in-kernel vhost IOTLB bridge (vhost_kernel.h). The protocol: Linux
 * include/uapi/linux/vhost_types.h (struct vhost_msg_v2) and drivers/vhost/vhost.c; what the
 * kernel does with each message: ../shared/reference/vhost-iotlb.md §2. Contract: docs/vhost.md.
 */
#include "vhost_kernel.h"

#include <errno.h>
#include <linux/vhost.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "fastpath.h"
#include "iotlb.h"

#ifndef VIRTIO_F_ACCESS_PLATFORM
#define VIRTIO_F_ACCESS_PLATFORM 33
#endif
#define VHOST_PERM_MASK 3u /* VHOST_ACCESS_RO | VHOST_ACCESS_WO: the MAP_F_READ / WRITE bits */
#define PAGE_4K 4096ull
#define OPS_MAX 1024u /* MAP prefills per sync; beyond, left to MISSes */
#define TIMES_MAX 65536u
#define RETRY_MAX 64u /* lookups racing the writer before a MISS is left unanswered */

struct viommu_vhost_kernel {
	struct viommu_fastpath *fp;
	struct viommu_device *dev;
	struct viommu_iotlb *core; /* answers, regions, invalidation ranges (user/iotlb.h) */
	int fd, epfd, evfd, stopfd;
	uint32_t endpoint;
	struct viommu_vhost_opts opts;

	/* PREFILL_MAP: extents mapped in the endpoint's domain since the last sync (device thread). */
	uint32_t domain; /* the endpoint's domain id while attached */
	bool attached;
	uint64_t (*prefill)[2];
	unsigned nprefill;

	/* Serialises the service thread with the device thread (thread mode), and the counters. */
	pthread_mutex_t lock;
	uint64_t pushed_since_all; /* UPDATEs since the last full invalidation (prefill budget) */
	uint64_t faults_base, unbacked_base; /* the core's counters at the last reset_stats */
	struct viommu_vhost_stats st;
	uint32_t *times;
	unsigned ntimes;

	pthread_t thread;
	bool has_thread;
	bool in_service; /* service() is flushing: lazy INVALIDATEs written after their request */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int viommu_vhost_kernel_negotiate(int fd, uint64_t features, uint64_t *acked, const char **why)
{
	uint64_t offered, backend;
	const char *dummy;

	if (!why)
		why = &dummy;
	*why = NULL;
	if (ioctl(fd, VHOST_GET_FEATURES, &offered) < 0) {
		*why = "VHOST_GET_FEATURES failed";
		return -errno;
	}
	if (!(offered & (1ull << VIRTIO_F_ACCESS_PLATFORM))) {
		*why = "the vhost device does not offer VIRTIO_F_ACCESS_PLATFORM (no device IOTLB)";
		return -EOPNOTSUPP;
	}
	features |= 1ull << VIRTIO_F_ACCESS_PLATFORM;
	if (features & ~offered) {
		*why = "a requested feature is not offered by the vhost device";
		return -EOPNOTSUPP;
	}
	if (ioctl(fd, VHOST_GET_BACKEND_FEATURES, &backend) < 0) {
		*why = "VHOST_GET_BACKEND_FEATURES failed (kernel before 5.0: no IOTLB_MSG_V2)";
		return errno == ENOTTY ? -EOPNOTSUPP : -errno;
	}
	if (!(backend & (1ull << VHOST_BACKEND_F_IOTLB_MSG_V2))) {
		*why = "the vhost device does not offer VHOST_BACKEND_F_IOTLB_MSG_V2";
		return -EOPNOTSUPP;
	}
	backend = 1ull << VHOST_BACKEND_F_IOTLB_MSG_V2; /* exactly: vhost-net refuses BATCH */
	if (ioctl(fd, VHOST_SET_BACKEND_FEATURES, &backend) < 0) {
		*why = "VHOST_SET_BACKEND_FEATURES(IOTLB_MSG_V2) failed";
		return -errno;
	}
	/* Creates a new, empty IOTLB (every call does: whoever sets features again must push the
	 * rings again). */
	if (ioctl(fd, VHOST_SET_FEATURES, &features) < 0) {
		*why = "VHOST_SET_FEATURES failed";
		return -errno;
	}
	if (acked)
		*acked = features;
	return 0;
}

/* ---- writing to the kernel (under b->lock) ---- */

static int write_msg(struct viommu_vhost_kernel *b, uint8_t type, uint64_t iova, uint64_t size,
		     uint64_t uaddr, uint8_t perm)
{
	struct vhost_msg_v2 m;
	uint64_t t0;
	ssize_t w;

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.iova = iova;
	m.iotlb.size = size;
	m.iotlb.uaddr = uaddr;
	m.iotlb.perm = perm;
	m.iotlb.type = type;
	t0 = now_ns();
	do
		w = write(b->fd, &m, sizeof(m));
	while (w < 0 && errno == EINTR);
	if (w == (ssize_t)sizeof(m)) {
		if (type == VHOST_IOTLB_UPDATE) {
			b->st.updates++;
			b->pushed_since_all++;
		} else {
			/* The kernel took every vq mutex for it: its cost to the queues is this. */
			b->st.last_invalidate_at_ns = now_ns();
			b->st.invalidate_ns += b->st.last_invalidate_at_ns - t0;
			b->st.invalidates++;
			if (b->in_service)
				b->st.invalidates_deferred++;
		}
		return 0;
	}
	b->st.write_errors++;
	b->st.last_write_error = w < 0 ? -errno : -EIO;
	return b->st.last_write_error;
}

/* The core's flush: [first, last] of the endpoint's translations, written at its sync (strict:
 * inside the request, before its used length; once write() returns no vhost worker uses the old
 * translation, the kernel's handler holding every vq mutex) or at viommu_iotlb_flush (lazy). */
static int core_invalidate(void *ctx, uint32_t ep, uint64_t first, uint64_t last)
{
	struct viommu_vhost_kernel *b = ctx;
	int err;

	(void)ep;
	if (first == 0 && last == UINT64_MAX) {
		/* Not size 0 ("everything" only on kernels with the 2023 fix): [0, 2^64 - 2] overlaps
		 * every entry we can have made (none is the single byte 2^64 - 1). */
		err = write_msg(b, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
		if (!err) {
			b->st.invalidate_all++;
			b->pushed_since_all = 0;
		}
		return err;
	}
	/* Removes every entry overlapping the range whole: every answer made inside it. */
	return write_msg(b, VHOST_IOTLB_INVALIDATE, first, last - first + 1, 0, 0);
}

static int core_complete(void *ctx, bool strict)
{
	(void)ctx;
	(void)strict; /* write() is synchronous: nothing to wait for */
	return 0;
}

/* Lazy mode: a sync (inside a request, device thread) left UNMAP ranges with the core. Only wake
 * the flusher: service() writes them (the bridge thread, or the VMM's loop polling our fd). */
static void core_deferred(void *ctx, unsigned pending)
{
	struct viommu_vhost_kernel *b = ctx;
	uint64_t one = 1;

	(void)pending;
	if (write(b->evfd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is at its maximum, so it is readable already */
	}
}

/* Lazy mode: before any UPDATE, the INVALIDATEs still held back, so an UPDATE is never followed by
 * an older INVALIDATE that would remove it, and no UPDATE joins a stale entry the kernel still
 * holds for the same IOVA. */
static void flush_deferred(struct viommu_vhost_kernel *b)
{
	if (b->opts.lazy && viommu_iotlb_pending(b->core))
		viommu_iotlb_flush(b->core, false);
}

/* Push the entries for [iova, last] now, from the fast path (no MISS). -EFAULT: a byte of it is
 * not mapped for reading. Device thread (or under the lock in thread mode). */
static int push_range(struct viommu_vhost_kernel *b, uint64_t iova, uint64_t last, bool budget)
{
	flush_deferred(b);
	for (;;) {
		struct viommu_iotlb_entry e, inval;
		int err = viommu_iotlb_lookup(b->core, b->endpoint, iova, VIOMMU_IOTLB_PERM_RO, &e, &inval);

		for (unsigned t = 0; err == -EAGAIN && t < RETRY_MAX; t++) {
			sched_yield();
			err = viommu_iotlb_lookup(b->core, b->endpoint, iova, VIOMMU_IOTLB_PERM_RO, &e, &inval);
		}
		if (err)
			return err == -EAGAIN ? -EAGAIN : -EFAULT;
		if (budget && b->pushed_since_all >= b->opts.max_iotlb_entries / 2) {
			b->st.prefill_skipped++;
			return 0;
		}
		if (inval.size && (err = write_msg(b, VHOST_IOTLB_INVALIDATE, inval.iova, inval.size, 0, 0)))
			return err;
		if ((err = write_msg(b, VHOST_IOTLB_UPDATE, e.iova, e.size, e.uaddr, e.perm)))
			return err;
		b->st.prefilled++;
		if (e.iova + e.size - 1 >= last || e.iova + e.size == 0)
			return 0;
		iova = e.iova + e.size;
	}
}

/* ---- PREFILL_MAP: a small observer of our own, after the core's ---- */

static int pobs_endpoint_changed(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st)
{
	struct viommu_vhost_kernel *b = ctx;

	if (ep->id == b->endpoint) {
		b->attached = st == VIOMMU_EP_ATTACHED && ep->domain;
		b->domain = b->attached ? ep->domain->id : 0;
	}
	return 0;
}

static int pobs_map(void *ctx, struct viommu_domain *dom, struct viommu_extent *ext)
{
	struct viommu_vhost_kernel *b = ctx;

	if (!b->attached || dom->id != b->domain)
		return 0;
	if (b->nprefill == OPS_MAX)
		b->st.prefill_skipped++;
	else {
		b->prefill[b->nprefill][0] = ext->start;
		b->prefill[b->nprefill++][1] = ext->end;
	}
	return 0;
}

static void pobs_sync(void *ctx, bool removed)
{
	struct viommu_vhost_kernel *b = ctx;

	(void)removed;
	/* After the fast path published (an earlier observer): what is still mapped now is pushed;
	 * an extent mapped and unmapped in the same batch is found unmapped and skipped. */
	for (unsigned i = 0; i < b->nprefill; i++)
		push_range(b, b->prefill[i][0], b->prefill[i][1], true);
	b->nprefill = 0;
}

/* One MISS (under b->lock). The lookup is the core's: a fast-path reader, the whole extent
 * clipped to its region, the mapping's permission; a fault goes to the event queue. */
static void answer_miss(struct viommu_vhost_kernel *b, uint64_t iova, uint8_t perm)
{
	struct viommu_iotlb_entry e, inval;
	int err = viommu_iotlb_answer(b->core, b->endpoint, iova, perm, &e, &inval);

	/* A lookup that raced the writer: the kernel does not repeat a MISS by itself (the vq
	 * waits for an UPDATE holding it), so ask again. */
	for (unsigned t = 0; err == -EAGAIN && t < RETRY_MAX; t++) {
		b->st.retries++;
		sched_yield();
		err = viommu_iotlb_answer(b->core, b->endpoint, iova, perm, &e, &inval);
	}
	if (err == -EAGAIN)
		b->st.unanswered++;
	if (err)
		return; /* -EFAULT: faulted; -ENXIO: no VMM memory, faulted too (both reported by the core) */
	if (inval.size && write_msg(b, VHOST_IOTLB_INVALIDATE, inval.iova, inval.size, 0, 0))
		return;
	/* The mapping's permission, never an echo of the request (the used ring's MISS at
	 * SET_BACKEND asks RO, the worker then needs WO). */
	write_msg(b, VHOST_IOTLB_UPDATE, e.iova, e.size, e.uaddr, e.perm);
}

int viommu_vhost_kernel_service(struct viommu_vhost_kernel *b)
{
	struct vhost_msg_v2 m;
	uint64_t t0, cnt, dt;
	int handled = 0;
	ssize_t n;

	if (read(b->evfd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: no lazy flush asked for */
	}
	pthread_mutex_lock(&b->lock);
	/* Lazy mode: the ranges the core kept since the last sync, merged, before any answer. */
	b->in_service = true;
	flush_deferred(b);
	b->in_service = false;
	for (;;) {
		n = read(b->fd, &m, sizeof(m));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			pthread_mutex_unlock(&b->lock);
			return errno == EAGAIN ? handled : -errno;
		}
		if (n == 0)
			break; /* a buffer too small: never with 72 bytes */
		t0 = now_ns();
		handled++;
		if (n != (ssize_t)sizeof(m) || (m.type != VHOST_IOTLB_MSG_V2 && m.type != VHOST_IOTLB_MSG)) {
			b->st.bad_messages++;
		} else if (m.iotlb.type == VHOST_IOTLB_MISS) {
			b->st.misses++;
			answer_miss(b, m.iotlb.iova, m.iotlb.perm);
			dt = now_ns() - t0;
			b->st.service_ns += dt;
			if (b->ntimes < TIMES_MAX)
				b->times[b->ntimes++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
		} else if (m.iotlb.type == VHOST_IOTLB_ACCESS_FAIL) {
			/* The kernel found no access where we answered one: a fault, as for a MISS
			 * the core cannot answer (the core reports it when the IOVA faults now). */
			struct viommu_iotlb_entry e, inval;

			b->st.access_fails++;
			if (!viommu_iotlb_answer(b->core, b->endpoint, m.iotlb.iova, m.iotlb.perm, &e, &inval))
				b->st.access_fails_mapped++;
		} else {
			b->st.bad_messages++;
		}
	}
	pthread_mutex_unlock(&b->lock);
	return handled;
}

static void *service_thread(void *arg)
{
	struct viommu_vhost_kernel *b = arg;
	struct epoll_event ev[4];

	for (;;) {
		int n = epoll_wait(b->epfd, ev, 4, -1);

		for (int i = 0; i < n; i++)
			if (ev[i].data.fd == b->stopfd)
				return NULL;
		if (n > 0 && viommu_vhost_kernel_service(b) == -EBADFD)
			return NULL; /* no IOTLB any more: nothing to serve */
	}
}

int viommu_vhost_kernel_prefill(struct viommu_vhost_kernel *b, uint64_t iova, uint64_t size)
{
	int err;

	pthread_mutex_lock(&b->lock);
	err = push_range(b, iova, iova + (size ? size - 1 : 0), false);
	pthread_mutex_unlock(&b->lock);
	return err;
}

void viommu_vhost_kernel_lock(struct viommu_vhost_kernel *b)
{
	pthread_mutex_lock(&b->lock);
}

void viommu_vhost_kernel_unlock(struct viommu_vhost_kernel *b)
{
	pthread_mutex_unlock(&b->lock);
}

int viommu_vhost_kernel_fd(const struct viommu_vhost_kernel *b)
{
	return b->epfd;
}

void viommu_vhost_kernel_stats(struct viommu_vhost_kernel *b, struct viommu_vhost_stats *out)
{
	const struct viommu_iotlb_stats *cs;

	pthread_mutex_lock(&b->lock);
	*out = b->st;
	cs = viommu_iotlb_stats(b->core);
	out->faults = cs->faults - b->faults_base;
	out->unbacked = cs->unbacked - b->unbacked_base;
	pthread_mutex_unlock(&b->lock);
}

void viommu_vhost_kernel_reset_stats(struct viommu_vhost_kernel *b)
{
	pthread_mutex_lock(&b->lock);
	memset(&b->st, 0, sizeof(b->st));
	b->faults_base = viommu_iotlb_stats(b->core)->faults;
	b->unbacked_base = viommu_iotlb_stats(b->core)->unbacked;
	b->ntimes = 0;
	pthread_mutex_unlock(&b->lock);
}

unsigned viommu_vhost_kernel_service_times(struct viommu_vhost_kernel *b, uint32_t *out, unsigned n)
{
	unsigned got;

	pthread_mutex_lock(&b->lock);
	got = b->ntimes;
	memcpy(out, b->times, (n < got ? n : got) * sizeof(*out));
	pthread_mutex_unlock(&b->lock);
	return got;
}

static void bridge_free(struct viommu_vhost_kernel *b)
{
	if (b->epfd >= 0)
		close(b->epfd);
	if (b->evfd >= 0)
		close(b->evfd);
	if (b->stopfd >= 0)
		close(b->stopfd);
	pthread_mutex_destroy(&b->lock);
	free(b->times);
	free(b->prefill);
	free(b);
}

struct viommu_vhost_kernel *viommu_vhost_kernel_attach(struct viommu_fastpath *fp, int vhost_fd,
						       uint32_t endpoint,
						       const struct viommu_vhost_region *regions,
						       unsigned nregions,
						       const struct viommu_vhost_opts *opts)
{
	struct viommu_vhost_kernel *b;
	struct epoll_event ev;
	int err;

	if (!fp || vhost_fd < 0 || !nregions || nregions > VIOMMU_VHOST_REGIONS_MAX) {
		errno = EINVAL;
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	pthread_mutex_init(&b->lock, NULL);
	b->epfd = b->evfd = b->stopfd = -1;
	b->fp = fp;
	b->dev = viommu_fastpath_device(fp);
	b->fd = vhost_fd;
	b->endpoint = endpoint;
	if (opts)
		b->opts = *opts;
	if (!b->opts.max_iotlb_entries)
		b->opts.max_iotlb_entries = 2048;
	b->prefill = calloc(OPS_MAX, sizeof(*b->prefill));
	b->times = calloc(TIMES_MAX, sizeof(*b->times));
	b->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	b->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	errno = ENOMEM;
	if (!b->prefill || !b->times || b->evfd < 0 || b->stopfd < 0 || b->epfd < 0)
		goto fail;
	ev = (struct epoll_event){ .events = EPOLLIN, .data.fd = b->fd };
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->fd, &ev) < 0)
		goto fail;
	ev.data.fd = b->evfd;
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->evfd, &ev) < 0)
		goto fail;
	ev.data.fd = b->stopfd;
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->stopfd, &ev) < 0)
		goto fail;

	/* The core: observes the device after the fast path, so its flush at sync comes after the
	 * fast path has unpublished and waited for its readers. */
	{
		/* fault_unbacked: the kernel never repeats a MISS, so an IOVA mapped to MMIO would
		 * otherwise stall its queue with nothing on the event queue. */
		struct viommu_iotlb_opts co = { .lazy = b->opts.lazy,
						.defer = b->opts.lazy, /* write() would be inside the request */
						.per_page = b->opts.answer == VIOMMU_VHOST_ANSWER_PAGE,
						.fault_unbacked = true };
		struct viommu_iotlb_ops ops = { .ctx = b, .invalidate = core_invalidate,
						.complete = core_complete, .deferred = core_deferred };

		b->core = viommu_iotlb_new(fp, &co, &ops);
		if (!b->core)
			goto fail;
	}
	for (unsigned i = 0; i < nregions; i++) {
		struct viommu_iotlb_region r = { .gpa = regions[i].gpa, .size = regions[i].size,
						 .hva = (void *)(uintptr_t)regions[i].uaddr, .fd = -1 };

		if ((err = viommu_iotlb_add_region(b->core, &r))) {
			errno = -err;
			goto fail;
		}
	}
	if ((err = viommu_iotlb_serve(b->core, endpoint))) {
		errno = -err;
		goto fail;
	}
	if (b->opts.prefill == VIOMMU_VHOST_PREFILL_MAP) {
		struct viommu_observer obs = { .ctx = b, .endpoint_changed = pobs_endpoint_changed,
					       .map = pobs_map, .sync = pobs_sync };

		if ((err = viommu_device_add_observer(b->dev, &obs))) {
			errno = -err;
			goto fail;
		}
		b->nprefill = 0; /* the replay of what was mapped before: left to MISSes */
	}
	if (b->opts.thread) {
		err = pthread_create(&b->thread, NULL, service_thread, b);
		if (err) {
			errno = err;
			goto fail;
		}
		b->has_thread = true;
	}
	return b;
fail:
	err = errno ? errno : ENOMEM;
	if (b->opts.prefill == VIOMMU_VHOST_PREFILL_MAP)
		viommu_device_remove_observer(b->dev, b);
	viommu_iotlb_free(b->core);
	bridge_free(b);
	errno = err;
	return NULL;
}

void viommu_vhost_kernel_detach(struct viommu_vhost_kernel *b)
{
	uint64_t one = 1;

	if (!b)
		return;
	if (b->has_thread) {
		if (write(b->stopfd, &one, sizeof(one)) < 0) {
			/* cannot fail on a fresh eventfd */
		}
		pthread_join(b->thread, NULL);
	}
	if (b->opts.prefill == VIOMMU_VHOST_PREFILL_MAP)
		viommu_device_remove_observer(b->dev, b);
	viommu_iotlb_free(b->core);
	/* Nothing the kernel holds from us may outlive the bridge. */
	core_invalidate(b, b->endpoint, 0, UINT64_MAX);
	bridge_free(b);
}
