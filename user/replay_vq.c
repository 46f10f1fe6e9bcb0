// SPDX-License-Identifier: MIT
/*
 * The replayer's guest driver over real virtqueues (replay_vq.h): Linux's virtio-iommu driver's
 * way of using the rings, written against the transport of virtqueue.h.
 */
#define _GNU_SOURCE
#include "replay_vq.h"
#include "virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* Guest memory: one memfd, three regions. */
#define MIB (1ull << 20)
#define A_GPA 0x100000000ull /* rings, tables, event buffers */
#define A_SIZE MIB
#define A_OFF 0ull
#define B1_GPA 0x40000000ull /* request buffers, first half */
#define B1_SIZE (8 * MIB)
#define B1_OFF (9 * MIB) /* after B2 in the file: adjacent in guest space only */
#define B2_GPA (B1_GPA + B1_SIZE)
#define B2_SIZE (8 * MIB)
#define B2_OFF (1 * MIB)
#define FILE_SIZE (17 * MIB)
/* Each batch's first buffer starts just below the B1/B2 seam, so it straddles two regions. */
#define B_BATCH_START (B2_GPA - 12) /* any readable part over 12 B crosses */
#define B_END (B2_GPA + B2_SIZE)

#define RQ_SIZE 256u
#define EQ_SIZE 64u
#define RQ_DESC (A_GPA + 0x0000)
#define RQ_AVAIL (A_GPA + 0x1000)
#define RQ_USED (A_GPA + 0x2000)
#define EQ_DESC (A_GPA + 0x3000)
#define EQ_AVAIL (A_GPA + 0x3400)
#define EQ_USED (A_GPA + 0x3800)
#define EVBUF (A_GPA + 0x4000) /* EQ_SIZE buffers, 32 B apart */
#define EVBUF_STRIDE 32u
#define ITABLE (A_GPA + 0x8000) /* RQ_SIZE tables of 2 descriptors */

struct slot {
	uint16_t head;
	uint64_t wr_gpa;
	size_t wr_len;
	uint32_t used;
	bool done;
	uint8_t *wr; /* read back after the flush */
};

struct viommu_vq_driver {
	struct viommu_device *dev;
	struct viommu_virtio *vd;
	uint64_t features; /* device-type bits */
	unsigned flags;
	int memfd;
	uint8_t *base; /* the guest's own mapping of the whole file */
	int kick[VIOMMU_VIRTIO_NQUEUES], call[VIOMMU_VIRTIO_NQUEUES];
	/* request queue */
	uint16_t rq_avail, rq_kicked, rq_last_used;
	unsigned nqueued, nresults;
	uint64_t bump;
	struct slot slots[RQ_SIZE];
	/* event queue */
	uint16_t eq_avail, eq_last_used;
	char problem[160];
};

static uint8_t *gpa_ptr(struct viommu_vq_driver *drv, uint64_t gpa)
{
	if (gpa >= A_GPA && gpa < A_GPA + A_SIZE)
		return drv->base + A_OFF + (gpa - A_GPA);
	if (gpa >= B1_GPA && gpa < B2_GPA)
		return drv->base + B1_OFF + (gpa - B1_GPA);
	return drv->base + B2_OFF + (gpa - B2_GPA);
}

/* Copy to/from guest memory across the B1/B2 seam. */
static void gcopy(struct viommu_vq_driver *drv, uint64_t gpa, void *host, size_t len, bool to_guest)
{
	while (len) {
		size_t k = len;

		if (gpa < B2_GPA && gpa + len > B2_GPA)
			k = (size_t)(B2_GPA - gpa);
		if (to_guest)
			memcpy(gpa_ptr(drv, gpa), host, k);
		else
			memcpy(host, gpa_ptr(drv, gpa), k);
		gpa += k;
		host = (uint8_t *)host + k;
		len -= k;
	}
}

static void gfill(struct viommu_vq_driver *drv, uint64_t gpa, uint8_t v, size_t len)
{
	uint8_t buf[4096];

	memset(buf, v, sizeof(buf));
	while (len) {
		size_t k = len < sizeof(buf) ? len : sizeof(buf);

		gcopy(drv, gpa, buf, k, true);
		gpa += k;
		len -= k;
	}
}

static void put_desc(struct viommu_vq_driver *drv, uint64_t table, unsigned i, uint64_t addr,
		     uint32_t len, uint16_t flags, uint16_t next)
{
	struct viommu_vring_desc *d = (struct viommu_vring_desc *)gpa_ptr(drv, table) + i;

	d->addr = htole64(addr);
	d->len = htole32(len);
	d->flags = htole16(flags);
	d->next = htole16(next);
}

static uint16_t *avail_ring(struct viommu_vq_driver *drv, uint64_t avail)
{
	return (uint16_t *)gpa_ptr(drv, avail);
}

/* Publish avail entry @head: the ring entry and descriptors before the index (release). */
static void avail_add(struct viommu_vq_driver *drv, uint64_t avail, unsigned size, uint16_t *idx,
		      uint16_t head)
{
	uint16_t *a = avail_ring(drv, avail);

	a[2 + *idx % size] = htole16(head);
	(*idx)++;
	__atomic_store_n(&a[1], htole16(*idx), __ATOMIC_RELEASE);
}

static uint16_t used_idx(struct viommu_vq_driver *drv, uint64_t used)
{
	return le16toh(__atomic_load_n((uint16_t *)gpa_ptr(drv, used + 2), __ATOMIC_ACQUIRE));
}

static struct viommu_vring_used_elem used_elem(struct viommu_vq_driver *drv, uint64_t used,
					       unsigned size, uint16_t i)
{
	struct viommu_vring_used_elem e =
		((struct viommu_vring_used_elem *)gpa_ptr(drv, used + 4))[i % size];

	e.id = le32toh(e.id);
	e.len = le32toh(e.len);
	return e;
}

static uint64_t drain_fd(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static int problem(struct viommu_vq_driver *drv, const char *fmt, unsigned a, unsigned b)
{
	snprintf(drv->problem, sizeof(drv->problem), fmt, a, b);
	return -EPROTO;
}

/* Kick queue @q through its eventfd and run the VMM's loop until the device is done with it. */
static int kick(struct viommu_vq_driver *drv, unsigned q)
{
	uint64_t one = 1;
	int ret;

	if (write(drv->kick[q], &one, sizeof(one)) != sizeof(one))
		return -errno;
	ret = viommu_virtio_poll(drv->vd);
	while (ret == 1) /* chains left over after the per-call bound: the VMM runs the queue again */
		ret = viommu_virtio_kick(drv->vd, VIOMMU_VIRTIO_REQUESTQ);
	return ret;
}

/* Bring the device up as Linux's virtio core and virtio-iommu probe do. */
static int bring_up(struct viommu_vq_driver *drv)
{
	uint8_t st = VIOMMU_VIRTIO_S_ACKNOWLEDGE | VIOMMU_VIRTIO_S_DRIVER;
	uint64_t f = drv->features | VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1);
	struct viommu_vq_config rq = { RQ_SIZE, RQ_DESC, RQ_AVAIL, RQ_USED };
	struct viommu_vq_config eq = { EQ_SIZE, EQ_DESC, EQ_AVAIL, EQ_USED };
	int err;

	if (drv->flags & VIOMMU_VQ_DRIVER_INDIRECT)
		f |= VIOMMU_FBIT(VIOMMU_VIRTIO_F_INDIRECT_DESC);
	if (drv->flags & VIOMMU_VQ_DRIVER_EVENT_IDX)
		f |= VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX);
	memset(drv->base + A_OFF, 0, A_SIZE);
	drv->rq_avail = drv->rq_kicked = drv->rq_last_used = 0;
	drv->eq_avail = drv->eq_last_used = 0;
	drv->nqueued = 0;
	drv->bump = B_BATCH_START;
	if ((err = viommu_virtio_set_status(drv->vd, VIOMMU_VIRTIO_S_ACKNOWLEDGE)) ||
	    (err = viommu_virtio_set_status(drv->vd, st)) ||
	    (err = viommu_virtio_set_driver_features(drv->vd, f)) ||
	    (err = viommu_virtio_set_status(drv->vd, st |= VIOMMU_VIRTIO_S_FEATURES_OK)))
		return err;
	if (!(viommu_virtio_status(drv->vd) & VIOMMU_VIRTIO_S_FEATURES_OK))
		return -EINVAL;
	if ((err = viommu_virtio_queue_setup(drv->vd, VIOMMU_VIRTIO_REQUESTQ, &rq)) ||
	    (err = viommu_virtio_queue_setup(drv->vd, VIOMMU_VIRTIO_EVENTQ, &eq)) ||
	    (err = viommu_virtio_set_status(drv->vd, st | VIOMMU_VIRTIO_S_DRIVER_OK)))
		return err;
	/* viommu_fill_evtq(): every event buffer posted, then one kick. */
	for (unsigned i = 0; i < EQ_SIZE; i++) {
		put_desc(drv, EQ_DESC, i, EVBUF + i * EVBUF_STRIDE, VIOMMU_EVENT_SIZE,
			 VIOMMU_VRING_DESC_F_WRITE, 0);
		avail_add(drv, EQ_AVAIL, EQ_SIZE, &drv->eq_avail, (uint16_t)i);
	}
	err = kick(drv, VIOMMU_VIRTIO_EVENTQ);
	return err < 0 ? err : 0;
}

/* The VMM's map of the guest's memory: the memfd, mapped by the device itself. */
static struct viommu_mem *guest_mem(struct viommu_vq_driver *drv)
{
	struct viommu_mem_region regions[3] = {
		{ .gpa = A_GPA, .size = A_SIZE, .fd_offset = A_OFF },
		{ .gpa = B1_GPA, .size = B1_SIZE, .fd_offset = B1_OFF },
		{ .gpa = B2_GPA, .size = B2_SIZE, .fd_offset = B2_OFF },
	};

	for (unsigned i = 0; i < 3; i++)
		regions[i].fd = drv->memfd;
	return viommu_mem_new(regions, 3);
}

/* The VMM wires its eventfds to the transport. */
static void wire_fds(struct viommu_vq_driver *drv)
{
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		viommu_virtio_set_kick_fd(drv->vd, q, drv->kick[q]);
		viommu_virtio_set_call_fd(drv->vd, q, drv->call[q]);
	}
}

struct viommu_vq_driver *viommu_vq_driver_new(struct viommu_device *dev, uint64_t features,
					      unsigned flags)
{
	struct viommu_vq_driver *drv = calloc(1, sizeof(*drv));
	struct viommu_mem *mem;
	int err = ENOMEM;

	if (!drv)
		return NULL;
	drv->dev = dev;
	drv->features = features;
	drv->flags = flags;
	drv->memfd = -1;
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++)
		drv->kick[q] = drv->call[q] = -1;
	drv->base = MAP_FAILED;
	drv->memfd = memfd_create("viommu-guest", MFD_CLOEXEC);
	if (drv->memfd < 0 || ftruncate(drv->memfd, FILE_SIZE))
		goto fail_errno;
	drv->base = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, drv->memfd, 0);
	if (drv->base == MAP_FAILED)
		goto fail_errno;
	if (!(drv->vd = viommu_virtio_new(dev)) || !(mem = guest_mem(drv)))
		goto fail_errno;
	viommu_virtio_set_mem(drv->vd, mem);
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		drv->kick[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		drv->call[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (drv->kick[q] < 0 || drv->call[q] < 0)
			goto fail_errno;
	}
	wire_fds(drv);
	if ((err = -bring_up(drv)))
		goto fail;
	return drv;
fail_errno:
	err = errno ? errno : ENOMEM;
fail:
	viommu_vq_driver_free(drv);
	errno = err;
	return NULL;
}

static void free_results(struct viommu_vq_driver *drv)
{
	for (unsigned i = 0; i < drv->nresults; i++) {
		free(drv->slots[i].wr);
		drv->slots[i].wr = NULL;
	}
	drv->nresults = 0;
}

void viommu_vq_driver_free(struct viommu_vq_driver *drv)
{
	if (!drv)
		return;
	free_results(drv);
	viommu_virtio_free(drv->vd);
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		if (drv->kick[q] >= 0)
			close(drv->kick[q]);
		if (drv->call[q] >= 0)
			close(drv->call[q]);
	}
	if (drv->base != MAP_FAILED)
		munmap(drv->base, FILE_SIZE);
	if (drv->memfd >= 0)
		close(drv->memfd);
	free(drv);
}

int viommu_vq_driver_add(struct viommu_vq_driver *drv, const uint8_t *rd, size_t rd_len,
			 size_t wr_len)
{
	bool indirect = drv->flags & VIOMMU_VQ_DRIVER_INDIRECT;
	unsigned cap = indirect ? RQ_SIZE : RQ_SIZE / 2;
	uint64_t buf = drv->bump, total = (uint64_t)rd_len + wr_len;
	struct slot *s;
	uint16_t head;

	if (!drv->nqueued)
		free_results(drv);
	if (total > B_END - B_BATCH_START || rd_len > UINT32_MAX || wr_len > UINT32_MAX)
		return -E2BIG;
	if (drv->nqueued == cap || total > B_END - drv->bump)
		return -ENOSPC; /* Linux: the queue is full, sync and retry */
	drv->bump += (total + 7) & ~7ull;
	/* The request as one buffer: readable part, then the writable part (poisoned). */
	gcopy(drv, buf, (void *)rd, rd_len, true);
	gfill(drv, buf + rd_len, 0xa5, wr_len);
	if (indirect) {
		uint64_t table = ITABLE + drv->nqueued * 32ull;

		head = (uint16_t)drv->nqueued;
		put_desc(drv, table, 0, buf, (uint32_t)rd_len, VIOMMU_VRING_DESC_F_NEXT, 1);
		put_desc(drv, table, 1, buf + rd_len, (uint32_t)wr_len, VIOMMU_VRING_DESC_F_WRITE, 0);
		put_desc(drv, RQ_DESC, head, table, 32, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	} else {
		head = (uint16_t)(2 * drv->nqueued);
		put_desc(drv, RQ_DESC, head, buf, (uint32_t)rd_len, VIOMMU_VRING_DESC_F_NEXT,
			 (uint16_t)(head + 1));
		put_desc(drv, RQ_DESC, head + 1u, buf + rd_len, (uint32_t)wr_len,
			 VIOMMU_VRING_DESC_F_WRITE, 0);
	}
	s = &drv->slots[drv->nqueued];
	s->head = head;
	s->wr_gpa = buf + rd_len;
	s->wr_len = wr_len;
	s->used = 0;
	s->done = false;
	avail_add(drv, RQ_AVAIL, RQ_SIZE, &drv->rq_avail, head);
	return (int)drv->nqueued++;
}

unsigned viommu_vq_driver_queued(const struct viommu_vq_driver *drv)
{
	return drv->nqueued;
}

/* virtqueue_kick_prepare(): with EVENT_IDX, kick only when the device's avail_event lies in
 * the entries added since the last kick; else unless the device set VRING_USED_F_NO_NOTIFY. */
static bool kick_needed(struct viommu_vq_driver *drv)
{
	uint8_t *used = gpa_ptr(drv, RQ_USED);
	uint16_t old = drv->rq_kicked, now = drv->rq_avail;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (drv->flags & VIOMMU_VQ_DRIVER_EVENT_IDX) {
		uint16_t event = le16toh(*(uint16_t *)(used + 4 + 8 * RQ_SIZE));

		return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
	}
	return !(le16toh(*(uint16_t *)used) & 1);
}

int viommu_vq_driver_flush(struct viommu_vq_driver *drv)
{
	uint16_t *avail = avail_ring(drv, RQ_AVAIL);
	unsigned n = drv->nqueued, got = 0;
	uint64_t calls;
	uint16_t idx;
	int ret;

	if (!n)
		return 0;
	if (!drv->vd)
		return problem(drv, "no transport (its restore failed) for %u requests (%u)", n, 0);
	drv->nqueued = 0;
	drv->nresults = n;
	drv->bump = B_BATCH_START;
	/* An interrupt for the next used entry (used_event with EVENT_IDX, else no NO_INTERRUPT). */
	avail[2 + RQ_SIZE] = htole16(drv->rq_last_used);
	avail[0] = 0;
	if (!kick_needed(drv))
		return problem(drv, "the device suppressed the kick for %u requests (%u)", n, 0);
	drv->rq_kicked = drv->rq_avail;
	ret = kick(drv, VIOMMU_VIRTIO_REQUESTQ);
	if (ret < 0 || (viommu_virtio_status(drv->vd) & VIOMMU_VIRTIO_S_NEEDS_RESET))
		return problem(drv, "the device failed the kick (%u) or needs a reset (status 0x%x)",
			       (unsigned)-ret, viommu_virtio_status(drv->vd));
	calls = drain_fd(drv->call[VIOMMU_VIRTIO_REQUESTQ]);
	idx = used_idx(drv, RQ_USED);
	for (; drv->rq_last_used != idx; drv->rq_last_used++) {
		struct viommu_vring_used_elem e = used_elem(drv, RQ_USED, RQ_SIZE, drv->rq_last_used);
		unsigned t = drv->flags & VIOMMU_VQ_DRIVER_INDIRECT ? e.id : e.id / 2;
		struct slot *s = &drv->slots[t];

		if (t >= n || s->head != e.id || s->done)
			return problem(drv, "used entry for descriptor %u, which is not in flight (%u)",
				       e.id, t);
		if (e.len > s->wr_len)
			return problem(drv, "used length %u beyond the writable %u bytes", e.len,
				       (unsigned)s->wr_len);
		s->done = true;
		s->used = e.len;
		s->wr = malloc(s->wr_len ? s->wr_len : 1);
		if (!s->wr)
			return -ENOMEM;
		gcopy(drv, s->wr_gpa, s->wr, s->wr_len, false);
		got++;
	}
	if (got != n)
		return problem(drv, "%u used entries for %u requests", got, n);
	if (calls != 1)
		return problem(drv, "%u notifications for one kick of %u requests", (unsigned)calls, n);
	return 0;
}

uint32_t viommu_vq_driver_result(struct viommu_vq_driver *drv, int token, const uint8_t **wr)
{
	struct slot *s = &drv->slots[token];

	*wr = s->wr;
	return s->used;
}

int viommu_vq_driver_event_pop(struct viommu_vq_driver *drv, struct viommu_wire_fault *f)
{
	struct viommu_vring_used_elem e;
	int ret;

	if (!drv->vd)
		return problem(drv, "no transport (its restore failed) (%u %u)", 0, 0);
	ret = viommu_virtio_deliver_faults(drv->vd);

	if (ret < 0)
		return problem(drv, "the device cannot deliver faults (%u), status 0x%x",
			       (unsigned)-ret, viommu_virtio_status(drv->vd));
	drain_fd(drv->call[VIOMMU_VIRTIO_EVENTQ]);
	if (drv->eq_last_used == used_idx(drv, EQ_USED))
		return -ENOENT;
	e = used_elem(drv, EQ_USED, EQ_SIZE, drv->eq_last_used++);
	if (e.id >= EQ_SIZE || e.len != VIOMMU_EVENT_SIZE)
		return problem(drv, "event buffer %u came back with used length %u", e.id, e.len);
	memcpy(f, gpa_ptr(drv, EVBUF + e.id * EVBUF_STRIDE), sizeof(*f));
	/* viommu_event_handler(): the buffer goes back, and the queue is kicked. */
	memset(gpa_ptr(drv, EVBUF + e.id * EVBUF_STRIDE), 0, EVBUF_STRIDE);
	avail_add(drv, EQ_AVAIL, EQ_SIZE, &drv->eq_avail, (uint16_t)e.id);
	ret = kick(drv, VIOMMU_VIRTIO_EVENTQ);
	return ret < 0 ? problem(drv, "eventq kick failed (%u) (%u)", (unsigned)-ret, 0) : 0;
}

int viommu_vq_driver_reset(struct viommu_vq_driver *drv, bool system)
{
	free_results(drv);
	if (system)
		viommu_virtio_system_reset(drv->vd);
	else
		viommu_virtio_set_status(drv->vd, 0);
	drain_fd(drv->call[0]);
	drain_fd(drv->call[1]);
	return bring_up(drv);
}

int viommu_vq_driver_config_write(struct viommu_vq_driver *drv, uint32_t off, const void *buf,
				  uint32_t len)
{
	return viommu_virtio_config_write(drv->vd, off, buf, len);
}

int viommu_vq_driver_save(struct viommu_vq_driver *drv, void **image, size_t *len)
{
	return viommu_virtio_save(drv->vd, image, len);
}

int viommu_vq_driver_restore(struct viommu_vq_driver *drv, struct viommu_device *dev,
			     const void *image, size_t len, char *why, size_t why_len)
{
	struct viommu_mem *mem;
	struct viommu_virtio *vd;

	/* The source's transport goes (it frees only its own memory map and buffers, never its
	 * device, which may be gone already). */
	viommu_virtio_free(drv->vd);
	drv->vd = NULL;
	drv->dev = dev;
	if (!(mem = guest_mem(drv))) {
		snprintf(why, why_len, "cannot map guest memory: %s", strerror(errno));
		return -errno;
	}
	if (!(vd = viommu_virtio_restore(dev, mem, image, len, why, why_len))) {
		int err = errno;

		viommu_mem_free(mem);
		return -err;
	}
	drv->vd = vd;
	wire_fds(drv);
	return 0;
}

const char *viommu_vq_driver_problem(const struct viommu_vq_driver *drv)
{
	return drv->problem;
}

struct viommu_virtio *viommu_vq_driver_transport(struct viommu_vq_driver *drv)
{
	return drv->vd;
}
