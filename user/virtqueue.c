// SPDX-License-Identifier: MIT
/*
 * Split virtqueues over guest memory, and the virtio-iommu device on them (virtqueue.h).
 *
 * Invariants the walker keeps against a hostile driver:
 *  1. Every guest address is looked up in the memory map before use; a range that leaves the
 *     regions or wraps past 2^64 refuses the chain. Nothing outside the regions is touched.
 *  2. Each descriptor (and each indirect table, whole) is copied once, then checked and used
 *     from the copy: a driver rewriting it meanwhile changes nothing the device decided.
 *  3. A chain is checked whole before any of it reaches the device core: a refused chain has
 *     applied nothing and written nothing.
 *  4. Every walk is bounded: at most `size` descriptors in the ring's table, at most the table
 *     length in an indirect one, at most one indirect table per chain.
 *  5. The device reads avail->idx once per pop, with acquire, and stores used->idx once per
 *     batch, with release; indices are free-running 16-bit counters, compared modulo 2^16.
 */
#include "virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"
#include "wire.h"

/* ---- guest memory ---- */

struct viommu_mem {
	unsigned n;
	struct viommu_mem_region r[VIOMMU_MEM_MAX_REGIONS]; /* sorted by gpa */
	bool mapped[VIOMMU_MEM_MAX_REGIONS]; /* mmapped here (unmapped at free) */
};

static int region_cmp(const void *a, const void *b)
{
	const struct viommu_mem_region *x = a, *y = b;

	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

struct viommu_mem *viommu_mem_new(const struct viommu_mem_region *r, unsigned n)
{
	struct viommu_mem *m;

	if (!r || !n || n > VIOMMU_MEM_MAX_REGIONS) {
		errno = EINVAL;
		return NULL;
	}
	for (unsigned i = 0; i < n; i++)
		if (!r[i].size || r[i].gpa + (r[i].size - 1) < r[i].gpa || r[i].size > SIZE_MAX ||
		    (!r[i].hva && r[i].fd < 0)) {
			errno = EINVAL;
			return NULL;
		}
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->n = n;
	memcpy(m->r, r, n * sizeof(*r));
	qsort(m->r, n, sizeof(m->r[0]), region_cmp);
	for (unsigned i = 1; i < n; i++)
		if (m->r[i].gpa <= m->r[i - 1].gpa + (m->r[i - 1].size - 1)) {
			free(m);
			errno = EINVAL;
			return NULL;
		}
	for (unsigned i = 0; i < n; i++) {
		void *p;

		if (m->r[i].hva)
			continue;
		p = mmap(NULL, (size_t)m->r[i].size, PROT_READ | PROT_WRITE, MAP_SHARED, m->r[i].fd,
			 (off_t)m->r[i].fd_offset);
		if (p == MAP_FAILED) {
			int e = errno;

			viommu_mem_free(m);
			errno = e;
			return NULL;
		}
		m->r[i].hva = p;
		m->mapped[i] = true;
	}
	return m;
}

void viommu_mem_free(struct viommu_mem *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		if (m->mapped[i])
			munmap(m->r[i].hva, (size_t)m->r[i].size);
	free(m);
}

static const struct viommu_mem_region *region_of(const struct viommu_mem *m, uint64_t gpa)
{
	for (unsigned i = 0; i < m->n; i++) {
		if (gpa < m->r[i].gpa)
			return NULL; /* sorted: no later region holds it */
		if (gpa - m->r[i].gpa < m->r[i].size)
			return &m->r[i];
	}
	return NULL;
}

int viommu_mem_map(const struct viommu_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
		   unsigned *n, unsigned max)
{
	if (!len)
		return 0;
	if (gpa + (len - 1) < gpa)
		return -EFAULT;
	while (len) {
		const struct viommu_mem_region *r = region_of(m, gpa);
		uint64_t off, chunk;

		if (!r)
			return -EFAULT;
		off = gpa - r->gpa;
		chunk = r->size - off < len ? r->size - off : len;
		if (*n >= max)
			return -E2BIG;
		iov[*n].iov_base = (uint8_t *)r->hva + off;
		iov[*n].iov_len = (size_t)chunk;
		(*n)++;
		gpa += chunk; /* cannot wrap: the last byte was checked above */
		len -= chunk;
	}
	return 0;
}

void *viommu_mem_ptr(const struct viommu_mem *m, uint64_t gpa, uint64_t len)
{
	const struct viommu_mem_region *r = region_of(m, gpa);

	if (!r || !len || len > r->size - (gpa - r->gpa))
		return NULL;
	return (uint8_t *)r->hva + (gpa - r->gpa);
}

/* ---- one split virtqueue ---- */

static const char *const bad_names[VIOMMU_VQ_BAD_COUNT] = {
	[VIOMMU_VQ_OK] = "ok",
	[VIOMMU_VQ_BAD_AVAIL_IDX] = "avail index runs ahead by more than the queue size",
	[VIOMMU_VQ_BAD_HEAD] = "head index out of the table",
	[VIOMMU_VQ_BAD_NEXT] = "next index out of the table",
	[VIOMMU_VQ_BAD_LOOP] = "descriptor chain loops",
	[VIOMMU_VQ_BAD_ADDR] = "buffer outside guest memory",
	[VIOMMU_VQ_BAD_LEN] = "chain longer than 2^32 - 1 bytes",
	[VIOMMU_VQ_BAD_ORDER] = "device-readable descriptor after a device-writable one",
	[VIOMMU_VQ_BAD_INDIRECT_FEATURE] = "indirect descriptor without INDIRECT_DESC",
	[VIOMMU_VQ_BAD_INDIRECT_NEXT] = "indirect descriptor with NEXT",
	[VIOMMU_VQ_BAD_INDIRECT_NESTED] = "indirect descriptor inside an indirect table",
	[VIOMMU_VQ_BAD_INDIRECT_SIZE] = "indirect table of a bad length",
	[VIOMMU_VQ_BAD_IOV] = "more host segments than the device takes",
	[VIOMMU_VQ_BAD_DIRECTION] = "device-readable buffer on the event queue",
};

const char *viommu_vq_bad_name(enum viommu_vq_bad why)
{
	return (unsigned)why < VIOMMU_VQ_BAD_COUNT ? bad_names[why] : "?";
}

/* The host address of a ring part: inside one region, aligned there as in the guest. */
static void *ring_ptr(const struct viommu_mem *m, uint64_t gpa, uint64_t len, uint64_t align)
{
	void *p;

	if (gpa & (align - 1))
		return NULL;
	p = viommu_mem_ptr(m, gpa, len);
	if (!p || ((uintptr_t)p & (align - 1)))
		return NULL;
	return p;
}

int viommu_vq_init(struct viommu_vq *vq, const struct viommu_mem *mem,
		   const struct viommu_vq_config *cfg, bool indirect, bool event_idx)
{
	uint16_t n = cfg->size;

	vq->ready = false;
	if (!n || (n & (n - 1)) || n > VIOMMU_VQ_MAX_SIZE || (cfg->desc & 15) || (cfg->avail & 1) ||
	    (cfg->used & 3))
		return -EINVAL;
	if (!mem)
		return -EFAULT;
	vq->desc = ring_ptr(mem, cfg->desc, VIOMMU_VRING_DESC_SIZE(n), 16);
	vq->avail = ring_ptr(mem, cfg->avail, VIOMMU_VRING_AVAIL_SIZE(n), 2);
	vq->used = ring_ptr(mem, cfg->used, VIOMMU_VRING_USED_SIZE(n), 4);
	if (!vq->desc || !vq->avail || !vq->used)
		return -EFAULT;
	vq->cfg = *cfg;
	vq->mem = mem;
	vq->indirect = indirect;
	vq->event_idx = event_idx;
	vq->last_avail = vq->used_idx = vq->signalled_used = 0;
	vq->signalled_valid = false;
	vq->last_bad = VIOMMU_VQ_OK;
	vq->ready = true;
	return 0;
}

static uint16_t avail_idx_acquire(const struct viommu_vq *vq)
{
	/* Acquire: pairs with the driver's write barrier between filling the ring entry (and the
	 * descriptors) and storing avail->idx; the entries read after this are the published ones. */
	return le16toh(__atomic_load_n(&vq->avail[1], __ATOMIC_ACQUIRE));
}

uint16_t viommu_vq_pending(const struct viommu_vq *vq)
{
	uint16_t n;

	if (!vq->ready)
		return 0;
	n = (uint16_t)(avail_idx_acquire(vq) - vq->last_avail);
	return n > vq->cfg.size ? 0 : n;
}

static int bad(struct viommu_vq *vq, enum viommu_vq_bad why)
{
	vq->last_bad = why;
	vq->bad[why]++;
	return -EBADMSG;
}

/* Copy one descriptor out of guest memory (once; relaxed loads of a guest-written table). */
static void desc_copy(struct viommu_vring_desc *d, const struct viommu_vring_desc *src)
{
	d->addr = le64toh(__atomic_load_n(&src->addr, __ATOMIC_RELAXED));
	d->len = le32toh(__atomic_load_n(&src->len, __ATOMIC_RELAXED));
	d->flags = le16toh(__atomic_load_n(&src->flags, __ATOMIC_RELAXED));
	d->next = le16toh(__atomic_load_n(&src->next, __ATOMIC_RELAXED));
}

/* Copy an indirect table into vq->table (it may span regions): 0 or a verdict. */
static enum viommu_vq_bad table_copy(struct viommu_vq *vq, uint64_t gpa, uint32_t len)
{
	struct iovec iov[VIOMMU_MEM_MAX_REGIONS];
	unsigned n = 0;
	size_t off = 0;
	uint8_t *dst = (uint8_t *)vq->table;

	if (!len || len % sizeof(struct viommu_vring_desc) ||
	    len / sizeof(struct viommu_vring_desc) > VIOMMU_VQ_MAX_INDIRECT)
		return VIOMMU_VQ_BAD_INDIRECT_SIZE;
	if (viommu_mem_map(vq->mem, gpa, len, iov, &n, VIOMMU_MEM_MAX_REGIONS))
		return VIOMMU_VQ_BAD_ADDR;
	for (unsigned i = 0; i < n; i++) {
		memcpy(dst + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	for (unsigned i = 0; i < len / sizeof(struct viommu_vring_desc); i++) {
		struct viommu_vring_desc d;

		desc_copy(&d, &vq->table[i]);
		vq->table[i] = d;
	}
	return VIOMMU_VQ_OK;
}

int viommu_vq_pop(struct viommu_vq *vq, struct viommu_vq_chain *c)
{
	const struct viommu_vring_desc *table = vq->desc;
	uint32_t tsize = vq->cfg.size, count = 0;
	bool in_table = false, seen_write = false;
	uint64_t total = 0;
	uint16_t avail, i;
	unsigned n = 0;

	if (!vq->ready)
		return -EAGAIN;
	avail = avail_idx_acquire(vq);
	if (avail == vq->last_avail)
		return -EAGAIN;
	if ((uint16_t)(avail - vq->last_avail) > vq->cfg.size)
		return bad(vq, VIOMMU_VQ_BAD_AVAIL_IDX);
	i = le16toh(__atomic_load_n(&vq->avail[2 + vq->last_avail % vq->cfg.size], __ATOMIC_RELAXED));
	if (i >= vq->cfg.size)
		return bad(vq, VIOMMU_VQ_BAD_HEAD);
	c->head = i;
	c->nrd = c->nwr = 0;
	c->rd_len = c->wr_len = 0;
	c->iov = vq->iov;
	for (;;) {
		struct viommu_vring_desc d;

		if (++count > tsize)
			return bad(vq, VIOMMU_VQ_BAD_LOOP);
		if (in_table)
			d = table[i]; /* already a host-endian copy */
		else
			desc_copy(&d, &table[i]);
		if (d.flags & VIOMMU_VRING_DESC_F_INDIRECT) {
			enum viommu_vq_bad why;

			if (in_table)
				return bad(vq, VIOMMU_VQ_BAD_INDIRECT_NESTED);
			if (!vq->indirect)
				return bad(vq, VIOMMU_VQ_BAD_INDIRECT_FEATURE);
			if (d.flags & VIOMMU_VRING_DESC_F_NEXT)
				return bad(vq, VIOMMU_VQ_BAD_INDIRECT_NEXT);
			/* The WRITE flag of the descriptor naming a table is ignored (spec MUST). */
			if ((why = table_copy(vq, d.addr, d.len)))
				return bad(vq, why);
			table = vq->table;
			tsize = d.len / sizeof(struct viommu_vring_desc);
			in_table = true;
			count = 0;
			i = 0;
			continue;
		}
		if (d.flags & VIOMMU_VRING_DESC_F_WRITE)
			seen_write = true;
		else if (seen_write)
			return bad(vq, VIOMMU_VQ_BAD_ORDER);
		total += d.len;
		if (total > UINT32_MAX)
			return bad(vq, VIOMMU_VQ_BAD_LEN);
		switch (viommu_mem_map(vq->mem, d.addr, d.len, vq->iov, &n, VIOMMU_VQ_MAX_IOV)) {
		case 0:
			break;
		case -E2BIG:
			return bad(vq, VIOMMU_VQ_BAD_IOV);
		default:
			return bad(vq, VIOMMU_VQ_BAD_ADDR);
		}
		/* Readable segments all come first (checked above), so n splits at nrd. */
		if (d.flags & VIOMMU_VRING_DESC_F_WRITE) {
			c->wr_len += d.len;
			c->nwr = n - c->nrd;
		} else {
			c->rd_len += d.len;
			c->nrd = n;
		}
		if (!(d.flags & VIOMMU_VRING_DESC_F_NEXT))
			break;
		i = d.next;
		if (i >= tsize)
			return bad(vq, VIOMMU_VQ_BAD_NEXT);
	}
	vq->last_avail++;
	return 0;
}

void viommu_vq_push(struct viommu_vq *vq, uint16_t head, uint32_t len)
{
	struct viommu_vring_used_elem *e =
		(struct viommu_vring_used_elem *)(vq->used + 4) + vq->used_idx % vq->cfg.size;

	/* Plain stores: not visible to the driver until viommu_vq_publish's release. */
	__atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, htole32(len), __ATOMIC_RELAXED);
	vq->used_idx++;
}

void viommu_vq_publish(struct viommu_vq *vq)
{
	/* Release: the used entries (and the bytes the device wrote into the buffers) are visible
	 * before the index that hands them over; pairs with the driver's read barrier after it
	 * loads used->idx. */
	__atomic_store_n((uint16_t *)(vq->used + 2), htole16(vq->used_idx), __ATOMIC_RELEASE);
}

bool viommu_vq_need_notify(struct viommu_vq *vq)
{
	uint16_t old = vq->signalled_used, now = vq->used_idx;
	bool valid = vq->signalled_valid;

	/* Full fence: the used->idx store must be visible before we read the driver's used_event /
	 * flags, or a driver that re-enabled interrupts after reading the old used->idx would wait
	 * for a notification we decided not to send (the store-load pairing of virtio's
	 * "virtio_mb" in both sides). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq->signalled_used = now;
	vq->signalled_valid = true;
	if (vq->event_idx) {
		uint16_t event = le16toh(__atomic_load_n(&vq->avail[2 + vq->cfg.size], __ATOMIC_RELAXED));

		if (!valid)
			return true;
		/* vring_need_event(): the driver's used_event lies in (old, now]. */
		return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
	}
	if (valid && old == now)
		return false;
	return !(le16toh(__atomic_load_n(&vq->avail[0], __ATOMIC_RELAXED)) &
		 VIOMMU_VRING_AVAIL_F_NO_INTERRUPT);
}

bool viommu_vq_arm(struct viommu_vq *vq)
{
	if (!vq->ready)
		return false;
	if (vq->event_idx) {
		uint16_t *avail_event = (uint16_t *)(vq->used + 4 + 8ull * vq->cfg.size);

		__atomic_store_n(avail_event, htole16(vq->last_avail), __ATOMIC_RELAXED);
		/* Full fence: avail_event must be visible before we look at avail->idx again, or a
		 * driver that read the old avail_event skips its kick while we miss its chain. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	return avail_idx_acquire(vq) != vq->last_avail;
}

/* ---- the virtio-iommu device ---- */

struct viommu_virtio {
	struct viommu_device *dev;
	struct viommu_mem *mem;
	uint8_t status;
	uint64_t driver_features;
	bool features_ok; /* the driver's features were accepted */
	struct {
		struct viommu_vq_config cfg;
		bool configured;
		int kick_fd, call_fd;
		viommu_virtio_call_fn call;
		void *call_ctx;
	} q[VIOMMU_VIRTIO_NQUEUES];
	int config_fd;
	viommu_virtio_call_fn config_call;
	void *config_ctx;
	uint16_t event_credited; /* eventq avail->idx already posted to the device as credits */
	struct viommu_virtio_stats stats;
	struct {
		uint16_t head;
		uint32_t len;
	} *done; /* one batch's used entries, VIOMMU_VQ_MAX_SIZE */
	struct viommu_vq vq[VIOMMU_VIRTIO_NQUEUES];
};

#define OFFERED_TRANSPORT                                                                   \
	(VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1) | VIOMMU_FBIT(VIOMMU_VIRTIO_F_INDIRECT_DESC) | \
	 VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX))

struct viommu_virtio *viommu_virtio_new(struct viommu_device *dev)
{
	struct viommu_virtio *vd;

	if (!dev) {
		errno = EINVAL;
		return NULL;
	}
	vd = calloc(1, sizeof(*vd));
	if (!vd)
		return NULL;
	vd->done = calloc(VIOMMU_VQ_MAX_SIZE, sizeof(*vd->done));
	if (!vd->done) {
		free(vd);
		errno = ENOMEM;
		return NULL;
	}
	vd->dev = dev;
	vd->config_fd = -1;
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++)
		vd->q[q].kick_fd = vd->q[q].call_fd = -1;
	return vd;
}

void viommu_virtio_free(struct viommu_virtio *vd)
{
	if (!vd)
		return;
	viommu_mem_free(vd->mem);
	free(vd->done);
	free(vd);
}

struct viommu_device *viommu_virtio_device(struct viommu_virtio *vd)
{
	return vd->dev;
}

static void signal_fd(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the guest is interrupted anyway. */
	}
}

static void notify(struct viommu_virtio *vd, unsigned q)
{
	vd->stats.notifications[q]++;
	signal_fd(vd->q[q].call_fd);
	if (vd->q[q].call)
		vd->q[q].call(vd->q[q].call_ctx, q);
}

/* The driver is told once (config change notification, spec: SHOULD) and both queues stop. */
static void needs_reset(struct viommu_virtio *vd)
{
	if (vd->status & VIOMMU_VIRTIO_S_NEEDS_RESET)
		return;
	vd->status |= VIOMMU_VIRTIO_S_NEEDS_RESET;
	vd->stats.needs_reset++;
	signal_fd(vd->config_fd);
	if (vd->config_call)
		vd->config_call(vd->config_ctx, VIOMMU_VIRTIO_CONFIG);
}

static bool running(const struct viommu_virtio *vd)
{
	return (vd->status & VIOMMU_VIRTIO_S_DRIVER_OK) && !(vd->status & VIOMMU_VIRTIO_S_NEEDS_RESET);
}

static int enable_queues(struct viommu_virtio *vd, struct viommu_vq *out)
{
	bool indirect = vd->driver_features & VIOMMU_FBIT(VIOMMU_VIRTIO_F_INDIRECT_DESC);
	bool event_idx = vd->driver_features & VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX);

	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		int err;

		out[q].ready = false;
		if (!vd->q[q].configured)
			continue;
		err = viommu_vq_init(&out[q], vd->mem, &vd->q[q].cfg, indirect, event_idx);
		if (err)
			return err;
	}
	return 0;
}

int viommu_virtio_set_mem(struct viommu_virtio *vd, struct viommu_mem *mem)
{
	if (!mem)
		return -EINVAL;
	viommu_mem_free(vd->mem);
	vd->mem = mem;
	/* Re-resolve the running rings in the new map, keeping their indices. */
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		struct viommu_vq *vq = &vd->vq[q];
		uint16_t la = vq->last_avail, ui = vq->used_idx, su = vq->signalled_used;
		bool sv = vq->signalled_valid;

		if (!vq->ready)
			continue;
		if (viommu_vq_init(vq, mem, &vq->cfg, vq->indirect, vq->event_idx)) {
			needs_reset(vd);
			continue;
		}
		vq->last_avail = la;
		vq->used_idx = ui;
		vq->signalled_used = su;
		vq->signalled_valid = sv;
	}
	return 0;
}

uint64_t viommu_virtio_features(const struct viommu_virtio *vd)
{
	return viommu_device_features(vd->dev) | OFFERED_TRANSPORT;
}

int viommu_virtio_set_driver_features(struct viommu_virtio *vd, uint64_t features)
{
	if (vd->status & VIOMMU_VIRTIO_S_FEATURES_OK)
		return -EBUSY;
	if ((features & ~viommu_virtio_features(vd)) ||
	    !(features & VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1)))
		return -EINVAL;
	if (viommu_device_negotiate(vd->dev, features & VIOMMU_FEATURES_KNOWN))
		return -EINVAL;
	vd->driver_features = features;
	vd->features_ok = true;
	return 0;
}

uint64_t viommu_virtio_driver_features(const struct viommu_virtio *vd)
{
	return vd->driver_features;
}

uint8_t viommu_virtio_status(const struct viommu_virtio *vd)
{
	return vd->status;
}

static void transport_reset(struct viommu_virtio *vd)
{
	vd->status = 0;
	vd->driver_features = 0;
	vd->features_ok = false;
	vd->event_credited = 0;
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		memset(&vd->q[q].cfg, 0, sizeof(vd->q[q].cfg));
		vd->q[q].configured = false;
		vd->vq[q].ready = false;
	}
}

int viommu_virtio_set_status(struct viommu_virtio *vd, uint8_t status)
{
	uint8_t cur = vd->status;

	if (status == 0) {
		/* Device reset: the core first (detaches everything, drops posted event buffers and
		 * queued faults), then the queues. */
		viommu_device_reset(vd->dev);
		transport_reset(vd);
		return 0;
	}
	if (status & VIOMMU_VIRTIO_S_NEEDS_RESET)
		return -EINVAL; /* the device's bit */
	if ((cur & ~VIOMMU_VIRTIO_S_NEEDS_RESET) & ~status)
		return -EINVAL; /* only a reset clears bits */
	if ((status & VIOMMU_VIRTIO_S_FEATURES_OK) && !vd->features_ok)
		status &= (uint8_t)~VIOMMU_VIRTIO_S_FEATURES_OK; /* the driver reads it back */
	if ((status & VIOMMU_VIRTIO_S_DRIVER_OK) && !(cur & VIOMMU_VIRTIO_S_DRIVER_OK)) {
		int err;

		if (!(status & VIOMMU_VIRTIO_S_FEATURES_OK))
			return -EINVAL;
		if (!vd->mem)
			return -EFAULT;
		if ((err = enable_queues(vd, vd->vq))) {
			for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++)
				vd->vq[q].ready = false;
			return err;
		}
		vd->event_credited = 0;
	}
	vd->status = (uint8_t)(status | (cur & VIOMMU_VIRTIO_S_NEEDS_RESET));
	return 0;
}

void viommu_virtio_system_reset(struct viommu_virtio *vd)
{
	viommu_device_system_reset(vd->dev);
	transport_reset(vd);
}

uint16_t viommu_virtio_queue_max_size(const struct viommu_virtio *vd, unsigned q)
{
	(void)vd;
	return q < VIOMMU_VIRTIO_NQUEUES ? VIOMMU_VQ_MAX_SIZE : 0;
}

int viommu_virtio_queue_setup(struct viommu_virtio *vd, unsigned q,
			      const struct viommu_vq_config *cfg)
{
	if (q >= VIOMMU_VIRTIO_NQUEUES || !cfg)
		return -EINVAL;
	if (vd->status & VIOMMU_VIRTIO_S_DRIVER_OK)
		return -EBUSY;
	if (!cfg->size || (cfg->size & (cfg->size - 1)) || cfg->size > VIOMMU_VQ_MAX_SIZE ||
	    (cfg->desc & 15) || (cfg->avail & 1) || (cfg->used & 3))
		return -EINVAL;
	vd->q[q].cfg = *cfg;
	vd->q[q].configured = true;
	return 0;
}

void viommu_virtio_config_read(const struct viommu_virtio *vd, uint32_t off, void *buf,
			       uint32_t len)
{
	viommu_device_config_read(vd->dev, off, buf, len);
}

int viommu_virtio_config_write(struct viommu_virtio *vd, uint32_t off, const void *buf,
			       uint32_t len)
{
	return viommu_device_config_write(vd->dev, off, buf, len);
}

int viommu_virtio_set_kick_fd(struct viommu_virtio *vd, unsigned q, int fd)
{
	if (q >= VIOMMU_VIRTIO_NQUEUES)
		return -EINVAL;
	vd->q[q].kick_fd = fd < 0 ? -1 : fd;
	return 0;
}

int viommu_virtio_set_call_fd(struct viommu_virtio *vd, unsigned q, int fd)
{
	if (q == VIOMMU_VIRTIO_CONFIG) {
		vd->config_fd = fd < 0 ? -1 : fd;
		return 0;
	}
	if (q >= VIOMMU_VIRTIO_NQUEUES)
		return -EINVAL;
	vd->q[q].call_fd = fd < 0 ? -1 : fd;
	return 0;
}

int viommu_virtio_set_call_cb(struct viommu_virtio *vd, unsigned q, viommu_virtio_call_fn fn,
			      void *ctx)
{
	if (q == VIOMMU_VIRTIO_CONFIG) {
		vd->config_call = fn;
		vd->config_ctx = ctx;
		return 0;
	}
	if (q >= VIOMMU_VIRTIO_NQUEUES)
		return -EINVAL;
	vd->q[q].call = fn;
	vd->q[q].call_ctx = ctx;
	return 0;
}

/* Publish what was pushed on queue @q and notify at most once. */
static void complete(struct viommu_virtio *vd, unsigned q)
{
	struct viommu_vq *vq = &vd->vq[q];

	viommu_vq_publish(vq);
	if (viommu_vq_need_notify(vq))
		notify(vd, q);
	else
		vd->stats.suppressed[q]++;
}

static void count_bad(struct viommu_virtio *vd, unsigned q)
{
	vd->stats.bad_chains[vd->vq[q].last_bad]++;
	needs_reset(vd);
}

/* One batch: up to `size` chains applied in order inside one device batch, then their used
 * entries, one used->idx store, at most one notification. Returns chains handled, or -EIO. */
static int requestq_batch(struct viommu_virtio *vd)
{
	struct viommu_vq *vq = &vd->vq[VIOMMU_VIRTIO_REQUESTQ];
	struct viommu_vq_chain c;
	unsigned n = 0;
	int err = 0;

	viommu_device_batch_begin(vd->dev);
	while (n < vq->cfg.size) {
		err = viommu_vq_pop(vq, &c);
		if (err)
			break;
		vd->done[n].head = c.head;
		vd->done[n].len = viommu_device_request(vd->dev, c.iov, c.nrd, c.iov + c.nrd, c.nwr);
		n++;
	}
	/* Publication (and a strict grace period) before any used entry is visible. */
	viommu_device_batch_end(vd->dev);
	vd->stats.requests += n;
	if (n) {
		for (unsigned i = 0; i < n; i++)
			viommu_vq_push(vq, vd->done[i].head, vd->done[i].len);
		vd->stats.batches++;
		complete(vd, VIOMMU_VIRTIO_REQUESTQ);
	}
	if (err == -EBADMSG) {
		count_bad(vd, VIOMMU_VIRTIO_REQUESTQ);
		return -EIO;
	}
	return (int)n;
}

static int requestq_kick(struct viommu_virtio *vd)
{
	struct viommu_vq *vq = &vd->vq[VIOMMU_VIRTIO_REQUESTQ];

	vd->stats.kicks++;
	for (unsigned b = 0; b < VIOMMU_VIRTIO_MAX_BATCHES; b++) {
		int n = requestq_batch(vd);

		if (n < 0)
			return n;
		/* Drained: arm (EVENT_IDX: ask for the next kick) and look once more. */
		if (n < vq->cfg.size && !viommu_vq_arm(vq))
			return 0;
	}
	return viommu_vq_arm(vq) ? 1 : 0;
}

/* New eventq buffers become credits in the device (each takes one fault report). */
static int eventq_take(struct viommu_virtio *vd)
{
	struct viommu_vq *vq = &vd->vq[VIOMMU_VIRTIO_EVENTQ];
	uint16_t idx, fresh;

	if (!vq->ready)
		return 0;
	idx = avail_idx_acquire(vq);
	if ((uint16_t)(idx - vq->last_avail) > vq->cfg.size) {
		vq->last_bad = VIOMMU_VQ_BAD_AVAIL_IDX;
		vq->bad[VIOMMU_VQ_BAD_AVAIL_IDX]++;
		count_bad(vd, VIOMMU_VIRTIO_EVENTQ);
		return -EIO;
	}
	fresh = (uint16_t)(idx - vd->event_credited);
	/* Credits are the buffers not yet counted; a driver that moved idx backwards to below what
	 * was counted (fresh > size) gets nothing new until it catches up. */
	if (fresh && fresh <= vq->cfg.size) {
		viommu_device_eventq_post(vd->dev, fresh);
		vd->event_credited = idx;
	}
	viommu_vq_arm(vq);
	return 0;
}

int viommu_virtio_deliver_faults(struct viommu_virtio *vd)
{
	struct viommu_vq *vq = &vd->vq[VIOMMU_VIRTIO_EVENTQ];
	struct viommu_wire_fault f;
	int delivered = 0, ret = 0;

	if (vd->status & VIOMMU_VIRTIO_S_NEEDS_RESET)
		return -EIO;
	if (!running(vd) || !vq->ready)
		return 0;
	if (eventq_take(vd))
		return -EIO;
	for (;;) {
		struct viommu_vq_chain c;
		int err = viommu_vq_pop(vq, &c);

		if (err == -EAGAIN)
			break; /* no buffer: the faults stay queued (the device holds no credit) */
		if (err) {
			count_bad(vd, VIOMMU_VIRTIO_EVENTQ);
			ret = -EIO;
			break;
		}
		if (c.nrd) {
			vq->last_bad = VIOMMU_VQ_BAD_DIRECTION;
			vq->bad[VIOMMU_VQ_BAD_DIRECTION]++;
			vq->last_avail--; /* not consumed: the device stops here */
			count_bad(vd, VIOMMU_VIRTIO_EVENTQ);
			ret = -EIO;
			break;
		}
		if (viommu_device_fault_pop(vd->dev, &f)) {
			vq->last_avail--; /* nothing to report: the buffer stays posted */
			break;
		}
		if (c.wr_len < VIOMMU_EVENT_SIZE) {
			/* Too small for a report (spec: do not spread it): returned empty. */
			vd->stats.events_short++;
			viommu_vq_push(vq, c.head, 0);
		} else {
			const uint8_t *src = (const uint8_t *)&f;
			size_t off = 0;

			for (unsigned i = 0; off < sizeof(f) && i < c.nwr; i++) {
				struct iovec *v = &c.iov[c.nrd + i];
				size_t k = v->iov_len < sizeof(f) - off ? v->iov_len : sizeof(f) - off;

				memcpy(v->iov_base, src + off, k);
				off += k;
			}
			vd->stats.events++;
			viommu_vq_push(vq, c.head, VIOMMU_EVENT_SIZE);
		}
		delivered++;
	}
	if (delivered)
		complete(vd, VIOMMU_VIRTIO_EVENTQ);
	return ret ? ret : delivered;
}

int viommu_virtio_kick(struct viommu_virtio *vd, unsigned q)
{
	int err;

	if (q >= VIOMMU_VIRTIO_NQUEUES)
		return -EINVAL;
	if (vd->status & VIOMMU_VIRTIO_S_NEEDS_RESET)
		return -EIO;
	if (!running(vd) || !vd->vq[q].ready)
		return -EAGAIN;
	if (q == VIOMMU_VIRTIO_REQUESTQ)
		return requestq_kick(vd);
	if ((err = eventq_take(vd)))
		return err;
	err = viommu_virtio_deliver_faults(vd);
	return err < 0 ? err : 0;
}

int viommu_virtio_poll(struct viommu_virtio *vd)
{
	int ret = 0;

	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		uint64_t v;
		int err;

		if (vd->q[q].kick_fd < 0)
			continue;
		if (read(vd->q[q].kick_fd, &v, sizeof(v)) != sizeof(v)) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return -errno;
		}
		err = viommu_virtio_kick(vd, q);
		if (q == VIOMMU_VIRTIO_REQUESTQ)
			ret = err == -EAGAIN ? 0 : err;
	}
	viommu_virtio_deliver_faults(vd);
	return ret;
}

const struct viommu_virtio_stats *viommu_virtio_stats(const struct viommu_virtio *vd)
{
	return &vd->stats;
}

const struct viommu_vq *viommu_virtio_queue(const struct viommu_virtio *vd, unsigned q)
{
	return q < VIOMMU_VIRTIO_NQUEUES ? &vd->vq[q] : NULL;
}

/* ---- save and restore (docs/image.md, the TRANSPORT record) ---- */

#define TR_HDR 16 /* driver features u64, status u8, 1 reserved, event_credited u16, 4 reserved */
#define TR_QUEUE 40 /* per queue, requestq then eventq */
#define TRQ_CONFIGURED 1u
#define TRQ_ENABLED 2u
#define TRQ_SIGNALLED_VALID 4u
#define STATUS_KNOWN                                                                        \
	(VIOMMU_VIRTIO_S_ACKNOWLEDGE | VIOMMU_VIRTIO_S_DRIVER | VIOMMU_VIRTIO_S_DRIVER_OK |   \
	 VIOMMU_VIRTIO_S_FEATURES_OK | VIOMMU_VIRTIO_S_NEEDS_RESET | VIOMMU_VIRTIO_S_FAILED)
_Static_assert(TR_HDR + VIOMMU_VIRTIO_NQUEUES * TR_QUEUE == VIOMMU_IMAGE_TRANSPORT_BYTES,
	       "the TRANSPORT record's size");

int viommu_virtio_save(const struct viommu_virtio *vd, void **image, size_t *len)
{
	uint8_t t[VIOMMU_IMAGE_TRANSPORT_BYTES] = { 0 };

	viommu_put_le64(t, vd->driver_features);
	t[8] = vd->status;
	viommu_put_le16(t + 10, vd->event_credited);
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		const struct viommu_vq *vq = &vd->vq[q];
		uint8_t *p = t + TR_HDR + q * TR_QUEUE;

		if (!vd->q[q].configured)
			continue;
		viommu_put_le64(p, vd->q[q].cfg.desc);
		viommu_put_le64(p + 8, vd->q[q].cfg.avail);
		viommu_put_le64(p + 16, vd->q[q].cfg.used);
		viommu_put_le16(p + 24, vd->q[q].cfg.size);
		p[26] = TRQ_CONFIGURED;
		if (!vq->ready)
			continue; /* a disabled queue's indices mean nothing: saved as 0 */
		p[26] |= TRQ_ENABLED | (vq->signalled_valid ? TRQ_SIGNALLED_VALID : 0);
		viommu_put_le16(p + 28, vq->last_avail);
		viommu_put_le16(p + 30, vq->used_idx);
		viommu_put_le16(p + 32, vq->signalled_used);
	}
	return viommu_image_save_with_transport(vd->dev, t, image, len);
}

static int tr_bad(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool tr_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* The record checked against itself, @dev and @mem, and applied to @vd (a fresh transport on
 * @dev, freed by the caller on failure: nothing else is touched). */
static int tr_apply(struct viommu_virtio *vd, const uint8_t *t, struct viommu_mem *mem, char *why,
		    size_t why_len)
{
	uint64_t f = viommu_le64(t);
	uint8_t st = t[8];
	uint16_t credited = viommu_le16(t + 10);
	bool driver_ok = st & VIOMMU_VIRTIO_S_DRIVER_OK;
	uint32_t queued = 0;
	struct viommu_wire_fault wf;

	if (t[9] || !tr_zero(t + 12, 4) || (st & ~STATUS_KNOWN))
		return tr_bad(why, why_len, "transport: reserved bytes or unknown status bits set");
	if (f && ((f & ~viommu_virtio_features(vd)) || !(f & VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1)) ||
		  (f & VIOMMU_FEATURES_KNOWN) != viommu_device_negotiated(vd->dev)))
		return tr_bad(why, why_len,
			      "transport: driver features 0x%llx not offered, without VERSION_1, or "
			      "not the device's negotiated 0x%llx",
			      (unsigned long long)f, (unsigned long long)viommu_device_negotiated(vd->dev));
	if (((st & VIOMMU_VIRTIO_S_FEATURES_OK) && !f) ||
	    (driver_ok && !(st & VIOMMU_VIRTIO_S_FEATURES_OK)))
		return tr_bad(why, why_len, "transport: status 0x%x without the features it implies", st);
	if (driver_ok && !mem)
		return tr_bad(why, why_len, "transport: DRIVER_OK and no memory map");
	vd->driver_features = f;
	vd->features_ok = f != 0;
	vd->status = st;
	for (unsigned q = 0; q < VIOMMU_VIRTIO_NQUEUES; q++) {
		const uint8_t *p = t + TR_HDR + q * TR_QUEUE;
		struct viommu_vq_config cfg = { viommu_le16(p + 24), viommu_le64(p), viommu_le64(p + 8),
						viommu_le64(p + 16) };
		uint8_t fl = p[26];
		uint16_t la = viommu_le16(p + 28), ui = viommu_le16(p + 30), su = viommu_le16(p + 32);
		struct viommu_vq *vq = &vd->vq[q];
		int err;

		if ((fl & ~(TRQ_CONFIGURED | TRQ_ENABLED | TRQ_SIGNALLED_VALID)) || p[27] ||
		    !tr_zero(p + 34, 6))
			return tr_bad(why, why_len, "transport: queue %u: unknown flags or reserved bytes set", q);
		if (!(fl & TRQ_CONFIGURED)) {
			if (!tr_zero(p, TR_QUEUE))
				return tr_bad(why, why_len, "transport: queue %u: not set up, yet has a state", q);
			continue;
		}
		if (!cfg.size || (cfg.size & (cfg.size - 1)) || cfg.size > VIOMMU_VQ_MAX_SIZE ||
		    (cfg.desc & 15) || (cfg.avail & 1) || (cfg.used & 3))
			return tr_bad(why, why_len, "transport: queue %u: size %u or ring alignment invalid",
				      q, cfg.size);
		vd->q[q].cfg = cfg;
		vd->q[q].configured = true;
		if (!(fl & TRQ_ENABLED)) {
			/* DRIVER_OK enables every queue set up; one left disabled means a ring fell out
			 * of a new memory map, which set NEEDS_RESET. */
			if ((fl & TRQ_SIGNALLED_VALID) || la || ui || su ||
			    (driver_ok && !(st & VIOMMU_VIRTIO_S_NEEDS_RESET)))
				return tr_bad(why, why_len, "transport: queue %u: disabled, yet has a state", q);
			continue;
		}
		if (!driver_ok)
			return tr_bad(why, why_len, "transport: queue %u enabled without DRIVER_OK", q);
		/* The device completes every chain it pops before it returns (a batch is pushed and
		 * published whole; an event buffer is used or given back at once): none in flight. */
		if (la != ui)
			return tr_bad(why, why_len,
				      "transport: queue %u: %u chains in flight (last_avail %u, used %u)", q,
				      (uint16_t)(la - ui), la, ui);
		err = viommu_vq_init(vq, mem, &cfg, f & VIOMMU_FBIT(VIOMMU_VIRTIO_F_INDIRECT_DESC),
				     f & VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX));
		if (err)
			return tr_bad(why, why_len, "transport: queue %u: rings %s", q,
				      err == -EFAULT ? "outside the memory map" : "misaligned in host memory");
		vq->last_avail = la;
		vq->used_idx = ui;
		vq->signalled_used = su;
		vq->signalled_valid = fl & TRQ_SIGNALLED_VALID;
	}
	/* Event buffers: those credited and not yet used are the device's credits plus the faults
	 * queued (each took a credit and still waits for its buffer). */
	while (viommu_device_fault_peek(vd->dev, queued, &wf) == 0)
		queued++;
	if (!vd->vq[VIOMMU_VIRTIO_EVENTQ].ready) {
		/* A ring that fell out of a new memory map leaves its count behind, unused until the
		 * reset the device asked for clears it; otherwise a disabled eventq holds nothing. */
		bool stranded = vd->q[VIOMMU_VIRTIO_EVENTQ].configured && driver_ok &&
				(st & VIOMMU_VIRTIO_S_NEEDS_RESET);

		if (credited && !stranded)
			return tr_bad(why, why_len, "transport: event buffers credited on a disabled eventq");
	} else if ((uint16_t)(credited - vd->vq[VIOMMU_VIRTIO_EVENTQ].last_avail) !=
		   (uint64_t)viommu_device_eventq_credits(vd->dev) + queued) {
		return tr_bad(why, why_len,
			      "transport: %u event buffers held, the device counts %u free and %u faults",
			      (uint16_t)(credited - vd->vq[VIOMMU_VIRTIO_EVENTQ].last_avail),
			      viommu_device_eventq_credits(vd->dev), queued);
	}
	vd->event_credited = credited;
	return 0;
}

struct viommu_virtio *viommu_virtio_restore(struct viommu_device *dev, struct viommu_mem *mem,
					    const void *image, size_t len, char *why, size_t why_len)
{
	struct viommu_virtio *vd;
	const void *t;
	int err;

	if (!dev || !image) {
		errno = EINVAL;
		return NULL;
	}
	if ((err = viommu_image_transport(image, len, &t, why, why_len))) {
		errno = err == -ENOENT ? EINVAL : -err;
		return NULL;
	}
	if (!(vd = viommu_virtio_new(dev)))
		return NULL;
	if ((err = tr_apply(vd, t, mem, why, why_len))) {
		viommu_virtio_free(vd); /* vd->mem is still NULL: @mem stays the caller's */
		errno = -err;
		return NULL;
	}
	vd->mem = mem;
	return vd;
}
