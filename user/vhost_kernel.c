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
#include "reader.h"

#ifndef VIRTIO_F_ACCESS_PLATFORM
#define VIRTIO_F_ACCESS_PLATFORM 33
#endif
#define VHOST_PERM_MASK 3u /* VHOST_ACCESS_RO | VHOST_ACCESS_WO: the MAP_F_READ / WRITE bits */
#define PAGE_4K 4096ull
#define OPS_MAX 1024u /* queued removals beyond this collapse into one full invalidation */
#define TIMES_MAX 65536u
#define RETRY_MAX 64u

enum op_kind { OP_INVALIDATE, OP_INVALIDATE_ALL, OP_UPDATE };

struct op {
	uint8_t kind;
	uint32_t flags; /* UPDATE: VIOMMU_MAP_F_* */
	uint64_t start, end, phys; /* inclusive IOVA range; UPDATE: phys of start */
};

struct viommu_vhost_kernel {
	struct viommu_fastpath *fp;
	struct viommu_device *dev;
	struct viommu_reader *reader;
	int fd, epfd, evfd, stopfd;
	uint32_t endpoint;
	struct viommu_vhost_opts opts;
	unsigned nregions;
	struct viommu_vhost_region regions[VIOMMU_VHOST_REGIONS_MAX];

	/* Device thread only: what the endpoint can reach now. */
	enum viommu_ep_state state;
	const struct viommu_domain *domain;

	/* Under lock: the fd's writes, the op queue, counters, service times. */
	pthread_mutex_t lock;
	struct op *ops;
	unsigned nops;
	bool ops_all; /* the queue overflowed: one full invalidation stands for it */
	uint64_t pushed_since_all; /* UPDATEs since the last full invalidation (prefill budget) */
	struct viommu_vhost_stats st;
	uint32_t *times;
	unsigned ntimes;

	pthread_t thread;
	bool has_thread;
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

int viommu_vhost_clip(const struct viommu_vhost_region *regions, unsigned n, uint64_t iova,
		      uint64_t ext_start, uint64_t ext_end, uint64_t ext_phys, bool page,
		      uint64_t *lo, uint64_t *hi, uint64_t *uaddr)
{
	uint64_t pa = ext_phys + (iova - ext_start), below, above;

	for (unsigned i = 0; i < n; i++) {
		const struct viommu_vhost_region *r = &regions[i];

		if (pa < r->gpa || pa - r->gpa >= r->size)
			continue;
		/* Bytes of the extent on each side of iova that stay inside the region. */
		below = iova - ext_start;
		if (below > pa - r->gpa)
			below = pa - r->gpa;
		above = ext_end - iova;
		if (above > r->size - 1 - (pa - r->gpa))
			above = r->size - 1 - (pa - r->gpa);
		if (page) {
			if (below > (iova & (PAGE_4K - 1)))
				below = iova & (PAGE_4K - 1);
			if (above > PAGE_4K - 1 - (iova & (PAGE_4K - 1)))
				above = PAGE_4K - 1 - (iova & (PAGE_4K - 1));
		}
		*lo = iova - below;
		*hi = iova + above;
		*uaddr = r->uaddr + (pa - below - r->gpa);
		return (int)i;
	}
	return -1;
}

/* ---- writing to the kernel (under b->lock) ---- */

static int write_msg(struct viommu_vhost_kernel *b, uint8_t type, uint64_t iova, uint64_t size,
		     uint64_t uaddr, uint8_t perm)
{
	struct vhost_msg_v2 m;
	ssize_t w;

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.iova = iova;
	m.iotlb.size = size;
	m.iotlb.uaddr = uaddr;
	m.iotlb.perm = perm;
	m.iotlb.type = type;
	do
		w = write(b->fd, &m, sizeof(m));
	while (w < 0 && errno == EINTR);
	if (w == (ssize_t)sizeof(m)) {
		if (type == VHOST_IOTLB_UPDATE) {
			b->st.updates++;
			b->pushed_since_all++;
		} else {
			b->st.invalidates++;
		}
		return 0;
	}
	b->st.write_errors++;
	b->st.last_write_error = w < 0 ? -errno : -EIO;
	return b->st.last_write_error;
}

static int invalidate(struct viommu_vhost_kernel *b, uint64_t start, uint64_t end)
{
	/* Removes every entry overlapping [start, end] whole: every answer we made inside an
	 * extent, however it was clipped. */
	return write_msg(b, VHOST_IOTLB_INVALIDATE, start, end - start + 1, 0, 0);
}

static int invalidate_all(struct viommu_vhost_kernel *b)
{
	/* Not size 0 ("everything" only on kernels with the 2023 fix): [0, 2^64 - 2] overlaps
	 * every entry we can have made (none is the single byte 2^64 - 1). */
	int err = write_msg(b, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);

	if (!err) {
		b->st.invalidate_all++;
		b->pushed_since_all = 0;
	}
	return err;
}

/* UPDATEs for the extent [start, end] at @phys: one per memory region it crosses; pieces over
 * no region (holes, MMIO) are left to MISSes, which fault. */
static int push_extent(struct viommu_vhost_kernel *b, uint64_t start, uint64_t end, uint64_t phys,
		       uint32_t flags, bool prefill)
{
	uint64_t iova = start, lo, hi, ua, pa, next;
	uint8_t perm = flags & VHOST_PERM_MASK;
	int err;

	if (!perm)
		return 0;
	for (;;) {
		if (viommu_vhost_clip(b->regions, b->nregions, iova, start, end, phys, false, &lo, &hi,
				      &ua) >= 0) {
			err = write_msg(b, VHOST_IOTLB_UPDATE, lo, hi - lo + 1, ua, perm);
			if (err)
				return err;
			if (prefill)
				b->st.prefilled++;
			if (hi >= end)
				return 0;
			iova = hi + 1;
			continue;
		}
		/* skip to the next region that starts inside the rest of the extent */
		pa = phys + (iova - start);
		next = UINT64_MAX;
		for (unsigned i = 0; i < b->nregions; i++)
			if (b->regions[i].gpa > pa && b->regions[i].gpa < next)
				next = b->regions[i].gpa;
		if (next == UINT64_MAX || next - pa > end - iova)
			return 0;
		iova += next - pa;
	}
}

/* Write the queued ops in order (under b->lock). */
static void run_ops(struct viommu_vhost_kernel *b)
{
	if (b->ops_all) {
		invalidate_all(b);
		b->ops_all = false;
	}
	for (unsigned i = 0; i < b->nops; i++) {
		struct op *o = &b->ops[i];

		switch (o->kind) {
		case OP_INVALIDATE_ALL:
			invalidate_all(b);
			break;
		case OP_INVALIDATE:
			invalidate(b, o->start, o->end);
			break;
		case OP_UPDATE:
			if (b->pushed_since_all >= b->opts.max_iotlb_entries / 2)
				b->st.prefill_skipped++;
			else
				push_extent(b, o->start, o->end, o->phys, o->flags, true);
			break;
		}
	}
	b->nops = 0;
}

static void queue_op(struct viommu_vhost_kernel *b, uint8_t kind, uint64_t start, uint64_t end,
		     uint64_t phys, uint32_t flags)
{
	pthread_mutex_lock(&b->lock);
	if (kind == OP_INVALIDATE_ALL) {
		/* Everything queued before is subsumed by it, removals and prefills alike. */
		b->nops = 0;
		b->ops_all = true;
	} else if (b->nops == OPS_MAX) {
		if (kind == OP_UPDATE) {
			b->st.prefill_skipped++;
		} else {
			b->nops = 0;
			b->ops_all = true;
		}
	} else {
		b->ops[b->nops++] = (struct op){ .kind = kind, .flags = flags, .start = start,
						 .end = end, .phys = phys };
	}
	pthread_mutex_unlock(&b->lock);
}

static void poke(struct viommu_vhost_kernel *b)
{
	uint64_t one = 1;

	if (write(b->evfd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: it is readable anyway */
	}
}

/* ---- observer (device thread) ---- */

static bool reaches(enum viommu_ep_state s)
{
	return s == VIOMMU_EP_ATTACHED || s == VIOMMU_EP_BYPASS || s == VIOMMU_EP_IDENTITY;
}

static int obs_endpoint_changed(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st)
{
	struct viommu_vhost_kernel *b = ctx;

	if (ep->id != b->endpoint)
		return 0;
	if (st == b->state && ep->domain == b->domain)
		return 0;
	/* Leaving a state with access (detach, re-attach elsewhere, bypass off, reset): the kernel
	 * may hold answers from any extent of the old domain, or identity answers. */
	if (reaches(b->state))
		queue_op(b, OP_INVALIDATE_ALL, 0, 0, 0, 0);
	b->state = st;
	b->domain = st == VIOMMU_EP_ATTACHED ? ep->domain : NULL;
	/* With PREFILL_MAP the new domain's extents are pushed as they are mapped; those mapped
	 * before the attach are left to MISSes. */
	return 0;
}

static int obs_map(void *ctx, struct viommu_domain *dom, struct viommu_extent *ext)
{
	struct viommu_vhost_kernel *b = ctx;

	if (dom == b->domain && b->opts.prefill == VIOMMU_VHOST_PREFILL_MAP)
		queue_op(b, OP_UPDATE, ext->start, ext->end, ext->phys, ext->flags);
	return 0;
}

static void obs_unmap(void *ctx, struct viommu_domain *dom, struct viommu_extent *ext)
{
	struct viommu_vhost_kernel *b = ctx;

	if (dom == b->domain)
		queue_op(b, OP_INVALIDATE, ext->start, ext->end, 0, 0);
}

static void obs_sync(void *ctx, bool removed)
{
	struct viommu_vhost_kernel *b = ctx;

	(void)removed;
	if (b->opts.lazy) {
		poke(b); /* the service thread writes them */
		return;
	}
	/* Strict: the fast path (an earlier observer) has unpublished and waited for its readers;
	 * our service thread's lookups that saw the old translation wrote their UPDATEs under the
	 * lock, so these INVALIDATEs come after them. Once write() returns, no vhost worker uses
	 * the old translation (the kernel handler holds every vq mutex). */
	pthread_mutex_lock(&b->lock);
	run_ops(b);
	pthread_mutex_unlock(&b->lock);
}

/* ---- MISS service ---- */

static void report_fault(struct viommu_vhost_kernel *b, const struct viommu_query *q,
			 struct viommu_answer *a)
{
	b->st.faults++;
	if (a->result != VIOMMU_FP_FAULT) { /* a translation to no VMM memory */
		memset(a, 0, sizeof(*a));
		a->result = VIOMMU_FP_FAULT;
		a->reason = VIOMMU_FAULT_R_MAPPING;
		a->fault_addr = q->iova;
		b->st.faults_no_region++;
	} else if (a->reason == VIOMMU_FAULT_R_DOMAIN) {
		b->st.faults_domain++;
	} else if (a->reason == VIOMMU_FAULT_R_UNKNOWN) {
		b->st.faults_unknown++;
	} else {
		b->st.faults_mapping++;
	}
	/* Dropped when the event queue is full: the device counts that (faults_dropped). */
	(void)viommu_reader_report_fault(b->reader, q, a);
}

/* Under b->lock, inside a reader section. */
static void answer_miss(struct viommu_vhost_kernel *b, uint64_t iova, uint8_t perm)
{
	struct viommu_query q = { .endpoint = b->endpoint, .access = perm & VHOST_PERM_MASK,
				  .iova = iova, .size = 1 };
	struct viommu_answer a;
	uint64_t lo, hi, ua, start, end, phys;
	uint32_t flags;
	unsigned tries = 0;

	if (!q.access)
		q.access = VIOMMU_MAP_F_READ;
	while (viommu_reader_translate(b->reader, &q, &a) == VIOMMU_FP_RETRY && ++tries < RETRY_MAX) {
		b->st.retries++;
		sched_yield();
	}
	if (a.result == VIOMMU_FP_HIT) {
		start = a.ext_start;
		end = a.ext_end;
		phys = a.ext_phys;
		flags = a.ext_flags;
	} else if (a.result == VIOMMU_FP_IDENT) {
		/* bypass / no ACCESS_PLATFORM: identity, as large as the region allows */
		start = 0;
		end = UINT64_MAX;
		phys = 0;
		flags = VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE;
	} else {
		if (a.result == VIOMMU_FP_RETRY) { /* never final in practice; never garbage */
			a.result = VIOMMU_FP_FAULT;
			a.reason = VIOMMU_FAULT_R_MAPPING;
			a.fault_addr = iova;
		}
		report_fault(b, &q, &a);
		return;
	}
	if (viommu_vhost_clip(b->regions, b->nregions, iova, start, end, phys,
			      b->opts.answer == VIOMMU_VHOST_ANSWER_PAGE, &lo, &hi, &ua) < 0) {
		report_fault(b, &q, &a);
		return;
	}
	/* The mapping's permission, never an echo of the request (the used ring's MISS at
	 * SET_BACKEND asks RO, the worker then needs WO). */
	write_msg(b, VHOST_IOTLB_UPDATE, lo, hi - lo + 1, ua, flags & VHOST_PERM_MASK);
}

int viommu_vhost_kernel_service(struct viommu_vhost_kernel *b)
{
	struct vhost_msg_v2 m;
	uint64_t t0, cnt;
	int handled = 0;
	ssize_t n;

	/* Lazy invalidations (and MAP prefills) first: then MISSes answered below are answered
	 * after the removals they may follow. */
	if (read(b->evfd, &cnt, sizeof(cnt)) == sizeof(cnt) || b->opts.lazy) {
		pthread_mutex_lock(&b->lock);
		if (b->nops || b->ops_all)
			run_ops(b);
		pthread_mutex_unlock(&b->lock);
	}
	for (;;) {
		n = read(b->fd, &m, sizeof(m));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return handled;
			return -errno;
		}
		if (n == 0)
			return handled; /* a buffer too small: never with 72 bytes */
		t0 = now_ns();
		pthread_mutex_lock(&b->lock);
		handled++;
		if (n != (ssize_t)sizeof(m) || (m.type != VHOST_IOTLB_MSG_V2 && m.type != VHOST_IOTLB_MSG)) {
			b->st.bad_messages++;
		} else if (m.iotlb.type == VHOST_IOTLB_MISS) {
			b->st.misses++;
			/* Lookup and UPDATE inside one reader section and under the lock (see the
			 * contract in vhost_kernel.h). */
			viommu_reader_enter(b->reader);
			answer_miss(b, m.iotlb.iova, m.iotlb.perm);
			if (viommu_reader_exit(b->reader) == -ETIMEDOUT) {
				/* Revoked: the translation may have been removed meanwhile; the device
				 * thread's INVALIDATE waits for our lock, so it still comes after. */
			}
			uint64_t dt = now_ns() - t0;
			b->st.service_ns += dt;
			if (b->ntimes < TIMES_MAX)
				b->times[b->ntimes++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
		} else if (m.iotlb.type == VHOST_IOTLB_ACCESS_FAIL) {
			struct viommu_query q = { .endpoint = b->endpoint, .iova = m.iotlb.iova,
						  .size = 1, .access = m.iotlb.perm & VHOST_PERM_MASK };
			struct viommu_answer a = { .result = VIOMMU_FP_FAULT,
						   .reason = VIOMMU_FAULT_R_MAPPING,
						   .fault_addr = m.iotlb.iova };

			if (!q.access)
				q.access = VIOMMU_MAP_F_READ;
			b->st.access_fails++;
			report_fault(b, &q, &a);
		} else {
			b->st.bad_messages++;
		}
		pthread_mutex_unlock(&b->lock);
	}
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
	uint64_t last = iova + (size ? size - 1 : 0);
	int err = 0;

	pthread_mutex_lock(&b->lock);
	viommu_reader_enter(b->reader);
	for (;;) {
		struct viommu_query q = { .endpoint = b->endpoint, .access = VIOMMU_MAP_F_READ,
					  .iova = iova, .size = 1 };
		struct viommu_answer a;
		uint64_t lo, hi, ua;

		if (viommu_reader_translate(b->reader, &q, &a) != VIOMMU_FP_HIT ||
		    viommu_vhost_clip(b->regions, b->nregions, iova, a.ext_start, a.ext_end, a.ext_phys,
				      false, &lo, &hi, &ua) < 0) {
			err = -EFAULT;
			break;
		}
		err = write_msg(b, VHOST_IOTLB_UPDATE, lo, hi - lo + 1, ua, a.ext_flags & VHOST_PERM_MASK);
		if (err)
			break;
		b->st.prefilled++;
		if (hi >= last)
			break;
		iova = hi + 1;
	}
	viommu_reader_exit(b->reader);
	pthread_mutex_unlock(&b->lock);
	return err;
}

int viommu_vhost_kernel_fd(const struct viommu_vhost_kernel *b)
{
	return b->epfd;
}

void viommu_vhost_kernel_stats(struct viommu_vhost_kernel *b, struct viommu_vhost_stats *out)
{
	pthread_mutex_lock(&b->lock);
	*out = b->st;
	pthread_mutex_unlock(&b->lock);
}

void viommu_vhost_kernel_reset_stats(struct viommu_vhost_kernel *b)
{
	pthread_mutex_lock(&b->lock);
	memset(&b->st, 0, sizeof(b->st));
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
	if (b->reader)
		viommu_reader_close(b->reader);
	if (b->epfd >= 0)
		close(b->epfd);
	if (b->evfd >= 0)
		close(b->evfd);
	if (b->stopfd >= 0)
		close(b->stopfd);
	pthread_mutex_destroy(&b->lock);
	free(b->times);
	free(b->ops);
	free(b);
}

struct viommu_vhost_kernel *viommu_vhost_kernel_attach(struct viommu_fastpath *fp, int vhost_fd,
						       uint32_t endpoint,
						       const struct viommu_vhost_region *regions,
						       unsigned nregions,
						       const struct viommu_vhost_opts *opts)
{
	struct viommu_vhost_kernel *b;
	struct viommu_observer obs;
	struct epoll_event ev;
	int err;

	if (!fp || vhost_fd < 0 || !nregions || nregions > VIOMMU_VHOST_REGIONS_MAX) {
		errno = EINVAL;
		return NULL;
	}
	for (unsigned i = 0; i < nregions; i++) {
		if (!regions[i].size || regions[i].gpa + regions[i].size - 1 < regions[i].gpa) {
			errno = EINVAL;
			return NULL;
		}
		for (unsigned j = 0; j < i; j++)
			if (regions[i].gpa < regions[j].gpa + regions[j].size &&
			    regions[j].gpa < regions[i].gpa + regions[i].size) {
				errno = EINVAL;
				return NULL;
			}
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
	b->nregions = nregions;
	memcpy(b->regions, regions, nregions * sizeof(*regions));
	b->ops = calloc(OPS_MAX, sizeof(*b->ops));
	b->times = calloc(TIMES_MAX, sizeof(*b->times));
	b->reader = viommu_reader_open(fp);
	b->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	b->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!b->ops || !b->times || !b->reader || b->evfd < 0 || b->stopfd < 0 || b->epfd < 0)
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

	b->state = VIOMMU_EP_UNKNOWN;
	obs = (struct viommu_observer){ .ctx = b, .endpoint_changed = obs_endpoint_changed,
					.map = obs_map, .unmap = obs_unmap, .sync = obs_sync };
	/* Tells us the current state at once (endpoint_changed, and a map per extent). */
	err = viommu_device_add_observer(b->dev, &obs);
	if (err) {
		errno = -err;
		goto fail;
	}
	/* What the initial replay queued (MAP prefills): the kernel's IOTLB is new and empty. */
	pthread_mutex_lock(&b->lock);
	b->ops_all = false;
	run_ops(b);
	pthread_mutex_unlock(&b->lock);
	if (b->opts.thread) {
		err = pthread_create(&b->thread, NULL, service_thread, b);
		if (err) {
			viommu_device_remove_observer(b->dev, b);
			errno = err;
			goto fail;
		}
		b->has_thread = true;
	}
	return b;
fail:
	err = errno ? errno : ENOMEM;
	bridge_free(b);
	errno = err;
	return NULL;
}

void viommu_vhost_kernel_detach(struct viommu_vhost_kernel *b)
{
	uint64_t one = 1;

	if (!b)
		return;
	viommu_device_remove_observer(b->dev, b);
	if (b->has_thread) {
		if (write(b->stopfd, &one, sizeof(one)) < 0) {
			/* cannot fail on a fresh eventfd */
		}
		pthread_join(b->thread, NULL);
	}
	pthread_mutex_lock(&b->lock);
	b->nops = 0;
	invalidate_all(b);
	pthread_mutex_unlock(&b->lock);
	bridge_free(b);
}
