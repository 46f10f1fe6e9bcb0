// SPDX-License-Identifier: MIT
/*
 * The split-ring walker against hostile rings, and the virtio-iommu transport on it: batches,
 * notifications, DEVICE_NEEDS_RESET, the event queue, features and status.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"
#include "requests.h"
#include "virtqueue.h"

#define GPA 0x10000000ull
#define MEM_SIZE (1u << 20)
#define QSIZE 16u
#define DESC (GPA + 0x0000)
#define AVAIL (GPA + 0x1000)
#define USED (GPA + 0x2000)
#define ITAB (GPA + 0x4000)
#define EQ_DESC (GPA + 0x6000)
#define EQ_AVAIL (GPA + 0x7000)
#define EQ_USED (GPA + 0x8000)
#define BUF (GPA + 0x10000)

struct guest {
	uint8_t *mem;
	struct viommu_mem *m;
	struct viommu_vq *vq;
	uint16_t avail_idx, eq_avail_idx;
};

static void *gp(struct guest *g, uint64_t gpa)
{
	return g->mem + (gpa - GPA);
}

static void put_desc(struct guest *g, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	struct viommu_vring_desc *d = (struct viommu_vring_desc *)gp(g, table) + i;

	d->addr = htole64(addr);
	d->len = htole32(len);
	d->flags = htole16(flags);
	d->next = htole16(next);
}

static void make_avail(struct guest *g, uint64_t avail, uint16_t *idx, uint16_t head)
{
	uint16_t *a = gp(g, avail);

	a[2 + *idx % QSIZE] = htole16(head);
	(*idx)++;
	a[1] = htole16(*idx);
}

static void post(struct guest *g, uint16_t head)
{
	make_avail(g, AVAIL, &g->avail_idx, head);
}

static void guest_init(struct guest *g)
{
	struct viommu_mem_region r = { .gpa = GPA, .size = MEM_SIZE, .fd = -1 };

	memset(g, 0, sizeof(*g));
	g->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(g->mem != MAP_FAILED);
	r.hva = g->mem;
	g->m = viommu_mem_new(&r, 1);
	cr_assert(g->m);
}

static struct viommu_vq *walker(struct guest *g, bool indirect)
{
	struct viommu_vq_config c = { QSIZE, DESC, AVAIL, USED };

	guest_init(g);
	g->vq = calloc(1, sizeof(*g->vq));
	cr_assert(g->vq);
	cr_assert_eq(viommu_vq_init(g->vq, g->m, &c, indirect, false), 0);
	return g->vq;
}

static void guest_fini(struct guest *g)
{
	free(g->vq);
	viommu_mem_free(g->m);
	munmap(g->mem, MEM_SIZE);
}

/* A refused chain: the verdict, and nothing consumed. */
static void assert_bad(struct guest *g, enum viommu_vq_bad why)
{
	struct viommu_vq_chain c;
	uint16_t before = g->vq->last_avail;

	cr_assert_eq(viommu_vq_pop(g->vq, &c), -EBADMSG);
	cr_assert_eq(g->vq->last_bad, why, "verdict %s, expected %s", viommu_vq_bad_name(g->vq->last_bad),
		     viommu_vq_bad_name(why));
	cr_assert_eq(g->vq->last_avail, before, "a refused chain is not consumed");
}

/* ---- the walker ---- */

Test(vq_walker, pops_a_readable_then_writable_chain_as_two_segments)
{
	struct guest g;
	struct viommu_vq_chain c;

	walker(&g, false);
	put_desc(&g, DESC, 3, BUF, 24, VIOMMU_VRING_DESC_F_NEXT, 7);
	put_desc(&g, DESC, 7, BUF + 24, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	post(&g, 3);
	cr_assert_eq(viommu_vq_pop(g.vq, &c), 0);
	cr_assert_eq(c.head, 3);
	cr_assert_eq(c.nrd, 1);
	cr_assert_eq(c.nwr, 1);
	cr_assert_eq(c.rd_len, 24);
	cr_assert_eq(c.wr_len, 4);
	cr_assert_eq(c.iov[0].iov_base, gp(&g, BUF));
	cr_assert_eq(c.iov[1].iov_base, gp(&g, BUF + 24));
	cr_assert_eq(viommu_vq_pop(g.vq, &c), -EAGAIN, "one chain only");
	guest_fini(&g);
}

Test(vq_walker, refuses_a_head_index_beyond_the_queue_size)
{
	struct guest g;

	walker(&g, false);
	post(&g, QSIZE);
	assert_bad(&g, VIOMMU_VQ_BAD_HEAD);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_next_index_beyond_the_queue_size)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, BUF, 8, VIOMMU_VRING_DESC_F_NEXT, QSIZE);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_NEXT);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_chain_that_loops)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, BUF, 8, VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, DESC, 1, BUF, 8, VIOMMU_VRING_DESC_F_NEXT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_LOOP);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_descriptor_that_points_at_itself)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 5, BUF, 8, VIOMMU_VRING_DESC_F_NEXT, 5);
	post(&g, 5);
	assert_bad(&g, VIOMMU_VQ_BAD_LOOP);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_buffer_outside_guest_memory)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, GPA + MEM_SIZE, 8, 0, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_ADDR);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_buffer_that_runs_past_the_end_of_its_region)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, GPA + MEM_SIZE - 4, 8, 0, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_ADDR);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_buffer_whose_end_wraps_past_2_to_the_64)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, UINT64_MAX - 3, 8, 0, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_ADDR);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_chain_longer_than_2_to_the_32_minus_1_bytes)
{
	/* Two 2 GiB descriptors inside a 4 GiB region reserved (never touched) for the test. */
	size_t big = (size_t)1 << 32;
	uint8_t *res = mmap(NULL, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct guest g;
	struct viommu_mem_region r[2] = { { .gpa = GPA, .size = MEM_SIZE, .fd = -1 },
					   { .gpa = 1ull << 40, .size = big, .hva = res, .fd = -1 } };
	struct viommu_vq_config c = { QSIZE, DESC, AVAIL, USED };

	cr_assert(res != MAP_FAILED);
	walker(&g, false);
	r[0].hva = g.mem;
	viommu_mem_free(g.m);
	g.m = viommu_mem_new(r, 2);
	cr_assert(g.m);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &c, false, false), 0);
	put_desc(&g, DESC, 0, 1ull << 40, 0x80000000u, VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, DESC, 1, (1ull << 40) + 0x80000000u, 0x80000000u, VIOMMU_VRING_DESC_F_WRITE, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_LEN);
	guest_fini(&g);
	munmap(res, big);
}

Test(vq_walker, refuses_a_readable_descriptor_after_a_writable_one)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, DESC, 0, BUF, 4, VIOMMU_VRING_DESC_F_WRITE | VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, DESC, 1, BUF + 4, 24, 0, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_ORDER);
	guest_fini(&g);
}

Test(vq_walker, splits_a_buffer_across_adjacent_regions_into_two_segments)
{
	struct guest g;
	struct viommu_vq_chain c;
	uint8_t *other = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct viommu_mem_region r[2] = { { .gpa = GPA, .size = MEM_SIZE, .fd = -1 },
					   { .gpa = GPA + MEM_SIZE, .size = 4096, .hva = other, .fd = -1 } };
	struct viommu_vq_config cfg = { QSIZE, DESC, AVAIL, USED };

	walker(&g, false);
	r[0].hva = g.mem;
	viommu_mem_free(g.m);
	g.m = viommu_mem_new(r, 2);
	cr_assert(g.m);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &cfg, false, false), 0);
	put_desc(&g, DESC, 0, GPA + MEM_SIZE - 8, 16, 0, 0);
	post(&g, 0);
	cr_assert_eq(viommu_vq_pop(g.vq, &c), 0);
	cr_assert_eq(c.nrd, 2);
	cr_assert_eq(c.rd_len, 16);
	cr_assert_eq(c.iov[0].iov_base, g.mem + MEM_SIZE - 8);
	cr_assert_eq(c.iov[0].iov_len, 8);
	cr_assert_eq(c.iov[1].iov_base, other);
	cr_assert_eq(c.iov[1].iov_len, 8);
	guest_fini(&g);
	munmap(other, 4096);
}

Test(vq_walker, reads_a_chain_through_an_indirect_table)
{
	struct guest g;
	struct viommu_vq_chain c;

	walker(&g, true);
	put_desc(&g, ITAB, 0, BUF, 20, VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, ITAB, 1, BUF + 20, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	put_desc(&g, DESC, 2, ITAB, 32, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 2);
	cr_assert_eq(viommu_vq_pop(g.vq, &c), 0);
	cr_assert_eq(c.head, 2);
	cr_assert_eq(c.rd_len, 20);
	cr_assert_eq(c.wr_len, 4);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_descriptor_when_the_feature_is_not_negotiated)
{
	struct guest g;

	walker(&g, false);
	put_desc(&g, ITAB, 0, BUF, 20, 0, 0);
	put_desc(&g, DESC, 0, ITAB, 16, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_FEATURE);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_descriptor_that_also_has_next)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, ITAB, 0, BUF, 20, 0, 0);
	put_desc(&g, DESC, 0, ITAB, 16, VIOMMU_VRING_DESC_F_INDIRECT | VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, DESC, 1, BUF + 20, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_NEXT);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_table_inside_an_indirect_table)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, ITAB, 0, ITAB + 0x100, 16, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	put_desc(&g, ITAB + 0x100, 0, BUF, 20, 0, 0);
	put_desc(&g, DESC, 0, ITAB, 16, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_NESTED);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_table_of_length_zero)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, DESC, 0, ITAB, 0, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_SIZE);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_table_whose_length_is_not_a_multiple_of_16)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, DESC, 0, ITAB, 24, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_SIZE);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_table_longer_than_the_device_takes)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, DESC, 0, ITAB, 16 * (VIOMMU_VQ_MAX_INDIRECT + 1), VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_INDIRECT_SIZE);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_indirect_table_outside_guest_memory)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, DESC, 0, GPA + MEM_SIZE - 16, 32, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_ADDR);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_next_index_beyond_the_indirect_table)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, ITAB, 0, BUF, 20, VIOMMU_VRING_DESC_F_NEXT, 2); /* the table holds 2 */
	put_desc(&g, ITAB, 1, BUF + 20, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	put_desc(&g, DESC, 0, ITAB, 32, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_NEXT);
	guest_fini(&g);
}

Test(vq_walker, refuses_a_loop_inside_an_indirect_table)
{
	struct guest g;

	walker(&g, true);
	put_desc(&g, ITAB, 0, BUF, 20, VIOMMU_VRING_DESC_F_NEXT, 1);
	put_desc(&g, ITAB, 1, BUF + 20, 4, VIOMMU_VRING_DESC_F_NEXT, 0);
	put_desc(&g, DESC, 0, ITAB, 32, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_LOOP);
	guest_fini(&g);
}

Test(vq_walker, refuses_an_avail_index_more_than_a_queue_size_ahead)
{
	struct guest g;
	uint16_t *a;

	walker(&g, false);
	a = gp(&g, AVAIL);
	a[1] = htole16(QSIZE + 1);
	assert_bad(&g, VIOMMU_VQ_BAD_AVAIL_IDX);
	guest_fini(&g);
}

Test(vq_walker, takes_an_avail_index_that_wraps_past_65535)
{
	struct guest g;
	struct viommu_vq_chain c;

	walker(&g, false);
	g.vq->last_avail = g.avail_idx = 0xffff;
	put_desc(&g, DESC, 0, BUF, 8, 0, 0);
	post(&g, 0);
	post(&g, 0);
	cr_assert_eq(viommu_vq_pop(g.vq, &c), 0);
	cr_assert_eq(viommu_vq_pop(g.vq, &c), 0);
	cr_assert_eq(g.vq->last_avail, 1);
	guest_fini(&g);
}

Test(vq_walker, refuses_rings_outside_guest_memory_or_misaligned)
{
	struct guest g;
	struct viommu_vq_config outside = { QSIZE, GPA + MEM_SIZE - 16, AVAIL, USED };
	struct viommu_vq_config misaligned = { QSIZE, DESC + 8, AVAIL, USED };
	struct viommu_vq_config not_pow2 = { 12, DESC, AVAIL, USED };

	walker(&g, false);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &outside, false, false), -EFAULT);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &misaligned, false, false), -EINVAL);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &not_pow2, false, false), -EINVAL);
	guest_fini(&g);
}

Test(vq_mem, refuses_overlapping_or_wrapping_regions)
{
	uint8_t buf[64];
	struct viommu_mem_region overlap[2] = { { .gpa = 0, .size = 32, .hva = buf, .fd = -1 },
						{ .gpa = 16, .size = 32, .hva = buf, .fd = -1 } };
	struct viommu_mem_region wrap = { .gpa = UINT64_MAX - 7, .size = 16, .hva = buf, .fd = -1 };
	struct viommu_mem_region empty = { .gpa = 0, .size = 0, .hva = buf, .fd = -1 };

	cr_assert_null(viommu_mem_new(overlap, 2));
	cr_assert_null(viommu_mem_new(&wrap, 1));
	cr_assert_null(viommu_mem_new(&empty, 1));
}

Test(vq_mem, maps_a_memfd_given_by_fd)
{
	int fd = memfd_create("vq-test", 0);
	struct viommu_mem_region r = { .gpa = 0x1000, .size = 4096, .fd = fd };
	struct viommu_mem *m;
	uint8_t *p;

	cr_assert(fd >= 0 && !ftruncate(fd, 4096));
	cr_assert(pwrite(fd, "viommu", 6, 16) == 6);
	m = viommu_mem_new(&r, 1);
	cr_assert(m);
	p = viommu_mem_ptr(m, 0x1010, 6);
	cr_assert(p && !memcmp(p, "viommu", 6));
	cr_assert_null(viommu_mem_ptr(m, 0x1ffc, 8), "past the region's end");
	viommu_mem_free(m);
	close(fd);
}

/* ---- the transport ---- */

struct vdev {
	struct guest g;
	struct viommu_device *dev;
	struct viommu_virtio *vd;
	unsigned calls[2], config_calls, syncs;
	uint16_t used_at_sync;
	uint16_t next_buf;
};

static void on_call(void *ctx, unsigned q)
{
	struct vdev *v = ctx;

	if (q == VIOMMU_VIRTIO_CONFIG)
		v->config_calls++;
	else
		v->calls[q]++;
}

static void on_sync(void *ctx, bool removed)
{
	struct vdev *v = ctx;

	(void)removed;
	v->syncs++;
	v->used_at_sync = le16toh(*(uint16_t *)gp(&v->g, USED + 2));
}

static void vdev_up(struct vdev *v, uint64_t transport)
{
	struct viommu_resv msi = { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_observer obs = { .ctx = v, .sync = on_sync };
	struct viommu_vq_config rq = { QSIZE, DESC, AVAIL, USED };
	struct viommu_vq_config eq = { QSIZE, EQ_DESC, EQ_AVAIL, EQ_USED };
	struct viommu_config cfg;
	uint8_t st = VIOMMU_VIRTIO_S_ACKNOWLEDGE | VIOMMU_VIRTIO_S_DRIVER;

	memset(v, 0, sizeof(*v));
	guest_init(&v->g);
	viommu_config_default(&cfg);
	v->dev = viommu_device_new(&cfg);
	cr_assert(v->dev);
	cr_assert_eq(viommu_device_add_endpoint(v->dev, 8, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_observer(v->dev, &obs), 0);
	v->syncs = 0;
	v->vd = viommu_virtio_new(v->dev);
	cr_assert(v->vd);
	cr_assert_eq(viommu_virtio_set_mem(v->vd, v->g.m), 0);
	v->g.m = NULL; /* the transport owns it */
	viommu_virtio_set_call_cb(v->vd, 0, on_call, v);
	viommu_virtio_set_call_cb(v->vd, 1, on_call, v);
	viommu_virtio_set_call_cb(v->vd, VIOMMU_VIRTIO_CONFIG, on_call, v);
	cr_assert_eq(viommu_virtio_set_status(v->vd, st), 0);
	cr_assert_eq(viommu_virtio_set_driver_features(
			     v->vd, viommu_device_features(v->dev) |
					    VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1) | transport),
		     0);
	cr_assert_eq(viommu_virtio_set_status(v->vd, st |= VIOMMU_VIRTIO_S_FEATURES_OK), 0);
	cr_assert(viommu_virtio_status(v->vd) & VIOMMU_VIRTIO_S_FEATURES_OK);
	cr_assert_eq(viommu_virtio_queue_setup(v->vd, 0, &rq), 0);
	cr_assert_eq(viommu_virtio_queue_setup(v->vd, 1, &eq), 0);
	cr_assert_eq(viommu_virtio_set_status(v->vd, st | VIOMMU_VIRTIO_S_DRIVER_OK), 0);
}

static void vdev_down(struct vdev *v)
{
	cr_assert_eq(viommu_device_check(v->dev), 0);
	viommu_virtio_free(v->vd);
	viommu_device_free(v->dev);
	munmap(v->g.mem, MEM_SIZE);
}

/* Queue one request (two chained descriptors at 2k, 2k+1); returns the tail's guest address. */
static uint64_t queue_req(struct vdev *v, const uint8_t *rd, size_t len)
{
	uint16_t k = v->next_buf++;
	uint64_t buf = BUF + k * 0x100ull;

	memcpy(gp(&v->g, buf), rd, len);
	memset(gp(&v->g, buf + len), 0xa5, 4);
	put_desc(&v->g, DESC, 2u * k % QSIZE, buf, (uint32_t)len, VIOMMU_VRING_DESC_F_NEXT,
		 (uint16_t)((2u * k + 1) % QSIZE));
	put_desc(&v->g, DESC, (2u * k + 1) % QSIZE, buf + len, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	post(&v->g, (uint16_t)(2u * k % QSIZE));
	return buf + len;
}

static uint16_t used_idx(struct vdev *v, uint64_t used)
{
	return le16toh(*(uint16_t *)gp(&v->g, used + 2));
}

Test(vq_device, applies_every_request_of_a_kick_in_one_batch_before_any_used_entry)
{
	struct vdev v;
	uint8_t r[64];
	uint64_t t1, t2, t3;

	vdev_up(&v, 0);
	t1 = queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	t2 = queue_req(&v, r, viommu_req_map(r, 1, 0x1000, 0x1fff, 0x80000, 3));
	t3 = queue_req(&v, r, viommu_req_map(r, 1, 0x1000, 0x1fff, 0x80000, 3));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(v.syncs, 1, "one publication for the batch");
	cr_assert_eq(v.used_at_sync, 0, "no used entry visible when the batch was published");
	cr_assert_eq(used_idx(&v, USED), 3);
	cr_assert_eq(*(uint8_t *)gp(&v.g, t1), VIOMMU_S_OK);
	cr_assert_eq(*(uint8_t *)gp(&v.g, t2), VIOMMU_S_OK);
	cr_assert_eq(*(uint8_t *)gp(&v.g, t3), VIOMMU_S_INVAL, "in order: the second MAP overlaps");
	cr_assert_eq(v.calls[0], 1, "one notification");
	vdev_down(&v);
}

Test(vq_device, respects_the_no_interrupt_flag)
{
	struct vdev v;
	uint8_t r[64];

	vdev_up(&v, 0);
	((uint16_t *)gp(&v.g, AVAIL))[0] = htole16(VIOMMU_VRING_AVAIL_F_NO_INTERRUPT);
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(used_idx(&v, USED), 1);
	cr_assert_eq(v.calls[0], 0);
	vdev_down(&v);
}

Test(vq_device, notifies_with_event_idx_only_when_used_event_is_crossed)
{
	struct vdev v;
	uint8_t r[64];
	uint16_t *used_event;

	vdev_up(&v, VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX));
	used_event = (uint16_t *)gp(&v.g, AVAIL) + 2 + QSIZE;
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(v.calls[0], 1, "the first publication notifies");
	*used_event = htole16(5); /* the driver wants to hear when entry 5 is used */
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(v.calls[0], 1, "used index 2 does not cross used_event 5");
	for (int i = 0; i < 4; i++)
		queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(v.calls[0], 2, "used index 6 crosses used_event 5: one notification");
	vdev_down(&v);
}

Test(vq_device, asks_for_the_next_kick_with_avail_event)
{
	struct vdev v;
	uint8_t r[64];

	vdev_up(&v, VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX));
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(le16toh(*(uint16_t *)gp(&v.g, USED + 4 + 8 * QSIZE)), 2);
	vdev_down(&v);
}

Test(vq_device, sets_needs_reset_on_a_bad_chain_and_applies_nothing_of_it)
{
	struct vdev v;
	uint8_t r[64];
	uint64_t t1;

	vdev_up(&v, 0);
	t1 = queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	queue_req(&v, r, viommu_req_map(r, 1, 0x1000, 0x1fff, 0x80000, 3));
	/* The MAP's writable descriptor now points outside guest memory. */
	put_desc(&v.g, DESC, 3, GPA + MEM_SIZE, 4, VIOMMU_VRING_DESC_F_WRITE, 0);
	queue_req(&v, r, viommu_req_map(r, 1, 0x4000, 0x4fff, 0x90000, 3));
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), -EIO);
	cr_assert(viommu_virtio_status(v.vd) & VIOMMU_VIRTIO_S_NEEDS_RESET);
	cr_assert_eq(v.config_calls, 1, "the driver is told (config change)");
	cr_assert_eq(used_idx(&v, USED), 1, "the chain before the bad one completed");
	cr_assert_eq(*(uint8_t *)gp(&v.g, t1), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_nr_mappings(v.dev), 0, "neither the bad MAP nor the one after it");
	cr_assert_eq(viommu_virtio_stats(v.vd)->bad_chains[VIOMMU_VQ_BAD_ADDR], 1);
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), -EIO, "stopped until reset");
	cr_assert_eq(viommu_virtio_set_status(v.vd, 0), 0);
	cr_assert_eq(viommu_virtio_status(v.vd), 0, "a reset clears NEEDS_RESET");
	cr_assert_eq(viommu_device_endpoint_state(v.dev, 8) == VIOMMU_EP_ATTACHED, false,
		     "the device reset detached the endpoint");
	vdev_down(&v);
}

/* Post event buffer @i (writable, @len bytes, at BUF + 0x8000 + i * 32). */
static void post_event(struct vdev *v, uint16_t i, uint32_t len, uint16_t flags)
{
	put_desc(&v->g, EQ_DESC, i, BUF + 0x8000 + i * 32u, len, flags, 0);
	make_avail(&v->g, EQ_AVAIL, &v->g.eq_avail_idx, i);
}

Test(vq_device, delivers_a_fault_into_a_posted_event_buffer)
{
	struct vdev v;
	struct viommu_answer a;
	struct viommu_wire_fault *f;

	vdev_up(&v, 0);
	post_event(&v, 0, 24, VIOMMU_VRING_DESC_F_WRITE);
	cr_assert_eq(viommu_virtio_kick(v.vd, 1), 0);
	cr_assert_eq(viommu_device_translate(v.dev, 99, 0x1000, 1, VIOMMU_MAP_F_READ, &a),
		     VIOMMU_XLATE_FAULT);
	cr_assert_eq(viommu_device_report_fault(v.dev, 99, (uint8_t)a.reason, VIOMMU_MAP_F_READ,
						a.fault_addr),
		     0, "the posted buffer is a credit");
	cr_assert_eq(viommu_virtio_deliver_faults(v.vd), 1);
	cr_assert_eq(used_idx(&v, EQ_USED), 1);
	f = gp(&v.g, BUF + 0x8000);
	cr_assert_eq(f->reason, VIOMMU_FAULT_R_UNKNOWN);
	cr_assert_eq(le32toh(f->endpoint), 99);
	cr_assert_eq(le64toh(f->address), 0x1000);
	cr_assert_eq(v.calls[1], 1);
	vdev_down(&v);
}

Test(vq_device, drops_a_fault_when_no_event_buffer_is_posted)
{
	struct vdev v;

	vdev_up(&v, 0);
	cr_assert_eq(viommu_device_report_fault(v.dev, 8, VIOMMU_FAULT_R_DOMAIN, 1, 0), -ENOBUFS);
	cr_assert_eq(viommu_virtio_deliver_faults(v.vd), 0);
	vdev_down(&v);
}

Test(vq_device, returns_an_event_buffer_shorter_than_a_report_with_used_length_0)
{
	struct vdev v;

	vdev_up(&v, 0);
	post_event(&v, 0, 16, VIOMMU_VRING_DESC_F_WRITE);
	cr_assert_eq(viommu_virtio_kick(v.vd, 1), 0);
	cr_assert_eq(viommu_device_report_fault(v.dev, 8, VIOMMU_FAULT_R_DOMAIN, 1, 0), 0);
	cr_assert_eq(viommu_virtio_deliver_faults(v.vd), 1);
	cr_assert_eq(le32toh(((uint32_t *)gp(&v.g, EQ_USED + 4))[1]), 0, "used length 0");
	cr_assert_eq(viommu_virtio_stats(v.vd)->events_short, 1);
	vdev_down(&v);
}

Test(vq_device, sets_needs_reset_on_a_device_readable_event_buffer)
{
	struct vdev v;

	vdev_up(&v, 0);
	post_event(&v, 0, 24, 0);
	cr_assert_eq(viommu_virtio_kick(v.vd, 1), -EIO, "refused when the device looks at it");
	cr_assert_eq(viommu_virtio_deliver_faults(v.vd), -EIO);
	cr_assert(viommu_virtio_status(v.vd) & VIOMMU_VIRTIO_S_NEEDS_RESET);
	cr_assert_eq(used_idx(&v, EQ_USED), 0);
	vdev_down(&v);
}

Test(vq_device, refuses_driver_features_without_version_1_or_beyond_the_offer)
{
	struct viommu_config cfg;
	struct viommu_device *dev;
	struct viommu_virtio *vd;

	viommu_config_default(&cfg);
	dev = viommu_device_new(&cfg);
	vd = viommu_virtio_new(dev);
	cr_assert_eq(viommu_virtio_set_driver_features(vd, viommu_device_features(dev)), -EINVAL);
	cr_assert_eq(viommu_virtio_set_driver_features(vd, VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1) |
								  VIOMMU_FBIT(40)),
		     -EINVAL);
	cr_assert_eq(viommu_virtio_set_status(vd, VIOMMU_VIRTIO_S_ACKNOWLEDGE |
							  VIOMMU_VIRTIO_S_DRIVER |
							  VIOMMU_VIRTIO_S_FEATURES_OK),
		     0);
	cr_assert_eq(viommu_virtio_status(vd) & VIOMMU_VIRTIO_S_FEATURES_OK, 0,
		     "FEATURES_OK does not stick without accepted features");
	viommu_virtio_free(vd);
	viommu_device_free(dev);
}

Test(vq_device, refuses_driver_ok_when_a_ring_lies_outside_guest_memory)
{
	struct vdev v;
	struct viommu_vq_config bad = { QSIZE, GPA + MEM_SIZE, AVAIL, USED };
	uint8_t st = VIOMMU_VIRTIO_S_ACKNOWLEDGE | VIOMMU_VIRTIO_S_DRIVER | VIOMMU_VIRTIO_S_FEATURES_OK;

	vdev_up(&v, 0);
	cr_assert_eq(viommu_virtio_set_status(v.vd, 0), 0);
	cr_assert_eq(viommu_virtio_set_status(v.vd, st & ~VIOMMU_VIRTIO_S_FEATURES_OK), 0);
	cr_assert_eq(viommu_virtio_set_driver_features(v.vd, VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1) |
								    viommu_device_features(v.dev)),
		     0);
	cr_assert_eq(viommu_virtio_set_status(v.vd, st), 0);
	cr_assert_eq(viommu_virtio_queue_setup(v.vd, 0, &bad), 0);
	cr_assert_eq(viommu_virtio_set_status(v.vd, st | VIOMMU_VIRTIO_S_DRIVER_OK), -EFAULT);
	cr_assert_eq(viommu_virtio_status(v.vd) & VIOMMU_VIRTIO_S_DRIVER_OK, 0);
	vdev_down(&v);
}

Test(vq_device, runs_a_queue_kicked_through_its_eventfd)
{
	struct vdev v;
	uint8_t r[64];
	int kick = eventfd(0, EFD_NONBLOCK), call = eventfd(0, EFD_NONBLOCK);
	uint64_t one = 1, n = 0;

	vdev_up(&v, 0);
	cr_assert(kick >= 0 && call >= 0);
	viommu_virtio_set_kick_fd(v.vd, 0, kick);
	viommu_virtio_set_call_fd(v.vd, 0, call);
	queue_req(&v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_poll(v.vd), 0);
	cr_assert_eq(used_idx(&v, USED), 0, "not kicked: nothing run");
	cr_assert_eq(write(kick, &one, 8), 8);
	cr_assert_eq(viommu_virtio_poll(v.vd), 0);
	cr_assert_eq(used_idx(&v, USED), 1);
	cr_assert_eq(read(call, &n, 8), 8);
	cr_assert_eq(n, 1, "one notification on the call eventfd");
	vdev_down(&v);
	close(kick);
	close(call);
}

Test(vq_device, passes_config_space_reads_and_writes_to_the_device)
{
	struct vdev v;
	uint8_t b = 0;

	vdev_up(&v, 0);
	cr_assert_eq(viommu_virtio_config_write(v.vd, offsetof(struct viommu_wire_config, bypass), &b, 1), 0);
	b = 7;
	viommu_virtio_config_read(v.vd, offsetof(struct viommu_wire_config, bypass), &b, 1);
	cr_assert_eq(b, 0);
	viommu_virtio_system_reset(v.vd);
	viommu_virtio_config_read(v.vd, offsetof(struct viommu_wire_config, bypass), &b, 1);
	cr_assert_eq(b, 1, "a system reset restores the initial bypass");
	cr_assert_eq(viommu_virtio_status(v.vd), 0);
	vdev_down(&v);
}

Test(vq_walker, refuses_a_chain_of_more_host_segments_than_the_device_takes)
{
	/* 31 tiny regions adjacent in guest space: one descriptor over them is 31 segments, and a
	 * table of 100 such descriptors is 3100, above VIOMMU_VQ_MAX_IOV. */
	struct viommu_mem_region r[32];
	static uint8_t tiny[31][64];
	struct viommu_vq_config cfg = { QSIZE, DESC, AVAIL, USED };
	struct guest g;

	walker(&g, true);
	r[0] = (struct viommu_mem_region){ .gpa = GPA, .size = MEM_SIZE, .hva = g.mem, .fd = -1 };
	for (unsigned i = 0; i < 31; i++)
		r[i + 1] = (struct viommu_mem_region){ .gpa = 1ull << 32 | i * 64ull, .size = 64,
						       .hva = tiny[i], .fd = -1 };
	viommu_mem_free(g.m);
	g.m = viommu_mem_new(r, 32);
	cr_assert(g.m);
	cr_assert_eq(viommu_vq_init(g.vq, g.m, &cfg, true, false), 0);
	for (unsigned i = 0; i < 100; i++)
		put_desc(&g, ITAB, i, 1ull << 32, 31 * 64, i < 99 ? VIOMMU_VRING_DESC_F_NEXT : 0,
			 (uint16_t)(i + 1));
	put_desc(&g, DESC, 0, ITAB, 16 * 100, VIOMMU_VRING_DESC_F_INDIRECT, 0);
	post(&g, 0);
	assert_bad(&g, VIOMMU_VQ_BAD_IOV);
	guest_fini(&g);
}

/* ---- save and restore of the transport (docs/image.md, TRANSPORT) ---- */

static struct viommu_mem *guest_map(struct vdev *v)
{
	struct viommu_mem_region r = { .gpa = GPA, .size = MEM_SIZE, .hva = v->g.mem, .fd = -1 };
	struct viommu_mem *m = viommu_mem_new(&r, 1);

	cr_assert(m);
	return m;
}

/* A device mid-traffic: one request answered, three event buffers posted and one fault queued
 * in one of them, two requests made available and not kicked (in flight), EVENT_IDX with the
 * driver's used_event at 0 (the next publication needs no notification). Returns the tails of
 * the two requests in flight. */
static void mid_traffic(struct vdev *v, uint64_t *t2, uint64_t *t3)
{
	uint8_t r[64];

	vdev_up(v, VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX));
	queue_req(v, r, viommu_req_attach(r, 1, 8, 0));
	cr_assert_eq(viommu_virtio_kick(v->vd, 0), 0);
	cr_assert_eq(v->calls[0], 1);
	for (uint16_t i = 0; i < 3; i++)
		post_event(v, i, 24, VIOMMU_VRING_DESC_F_WRITE);
	cr_assert_eq(viommu_virtio_kick(v->vd, 1), 0);
	cr_assert_eq(viommu_device_report_fault(v->dev, 8, VIOMMU_FAULT_R_MAPPING, VIOMMU_MAP_F_WRITE,
						0x7000),
		     0);
	*t2 = queue_req(v, r, viommu_req_map(r, 1, 0x1000, 0x1fff, 0x80000, 3));
	*t3 = queue_req(v, r, viommu_req_map(r, 1, 0x1000, 0x1fff, 0x80000, 3));
}

Test(virtqueue, a_transport_saved_mid_traffic_completes_its_requests_in_flight_after_restore)
{
	struct vdev v;
	uint64_t t2, t3;
	void *img, *again;
	size_t len, len2;
	char why[200] = "";
	struct viommu_wire_fault *f;

	mid_traffic(&v, &t2, &t3);
	cr_assert_eq(viommu_virtio_save(v.vd, &img, &len), 0);
	viommu_virtio_free(v.vd);
	viommu_device_free(v.dev);

	v.dev = viommu_device_restore(img, len, why, sizeof(why));
	cr_assert(v.dev, "%s", why);
	v.vd = viommu_virtio_restore(v.dev, guest_map(&v), img, len, why, sizeof(why));
	cr_assert(v.vd, "%s", why);
	viommu_virtio_set_call_cb(v.vd, 0, on_call, &v);
	viommu_virtio_set_call_cb(v.vd, 1, on_call, &v);
	cr_assert_eq(viommu_virtio_save(v.vd, &again, &len2), 0);
	cr_assert(len2 == len && !memcmp(img, again, len), "restored, it saves to the same bytes");
	free(again);
	free(img);

	cr_assert_eq(viommu_virtio_status(v.vd) & VIOMMU_VIRTIO_S_DRIVER_OK, VIOMMU_VIRTIO_S_DRIVER_OK);
	cr_assert_eq(viommu_virtio_kick(v.vd, 0), 0);
	cr_assert_eq(used_idx(&v, USED), 3, "both requests in flight were answered");
	cr_assert_eq(*(uint8_t *)gp(&v.g, t2), VIOMMU_S_OK);
	cr_assert_eq(*(uint8_t *)gp(&v.g, t3), VIOMMU_S_INVAL, "in order: the second MAP overlaps");
	cr_assert_eq(viommu_device_nr_mappings(v.dev), 1);
	cr_assert_eq(v.calls[0], 1, "used_event 0 was crossed before the save: no new notification");
	cr_assert_eq(le16toh(*(uint16_t *)gp(&v.g, USED + 4 + 8 * QSIZE)), 3, "avail_event asked");

	cr_assert_eq(viommu_virtio_deliver_faults(v.vd), 1, "the queued fault reaches its buffer");
	cr_assert_eq(used_idx(&v, EQ_USED), 1);
	f = gp(&v.g, BUF + 0x8000);
	cr_assert_eq(le32toh(f->endpoint), 8);
	cr_assert_eq(le64toh(f->address), 0x7000);
	cr_assert_eq(v.calls[1], 1);
	cr_assert_eq(viommu_device_eventq_credits(v.dev), 2, "two posted buffers still free");
	vdev_down(&v);
}

struct tr_edit {
	const char *what;
	unsigned off, size; /* in the TRANSPORT payload; a little-endian field */
	uint64_t xor;
};

static const struct tr_edit tr_edits[] = {
	{ "a feature not offered", 0, 8, 1ull << 40 },
	{ "features without VERSION_1", 0, 8, 1ull << 32 },
	{ "device features unlike the device's negotiation", 0, 8, 1ull << 1 },
	{ "an unknown status bit", 8, 1, 0x10 },
	{ "DRIVER_OK without FEATURES_OK", 8, 1, VIOMMU_VIRTIO_S_FEATURES_OK },
	{ "queues enabled without DRIVER_OK", 8, 1, VIOMMU_VIRTIO_S_DRIVER_OK },
	{ "a reserved byte after the status", 9, 1, 1 },
	{ "event buffers held unlike the device's credits and faults", 10, 2, 1 },
	{ "event buffers held: 2^16 - 1 more", 10, 2, 0x8000 },
	{ "a reserved header byte", 13, 1, 0x40 },
	{ "a queue size not a power of 2", 16 + 24, 2, QSIZE ^ 3 },
	{ "a queue size above the maximum", 16 + 24, 2, QSIZE ^ 2048 },
	{ "a queue size of 0", 16 + 24, 2, QSIZE },
	{ "a misaligned descriptor table", 16, 8, 8 },
	{ "a misaligned used ring", 16 + 16, 8, 2 },
	{ "a descriptor table outside guest memory", 16, 8, DESC ^ (GPA + MEM_SIZE) },
	{ "a used ring running past the end of guest memory", 16 + 16, 8, USED ^ (GPA + MEM_SIZE - 64) },
	{ "an avail ring at a wrapping address", 56 + 8, 8, EQ_AVAIL ^ ~1ull },
	{ "a request in flight inside the device", 16 + 28, 2, 1 },
	{ "a used index behind", 56 + 30, 2, 0x100 },
	{ "an unknown queue flag", 16 + 26, 1, 0x80 },
	{ "a reserved queue byte", 16 + 27, 1, 1 },
	{ "a reserved queue tail byte", 56 + 39, 1, 0x80 },
	{ "a queue disabled under DRIVER_OK without NEEDS_RESET", 56 + 26, 1, 2 },
	{ "a queue not set up with a state", 56 + 26, 1, 7 },
};

Test(virtqueue, hostile_transport_records_are_refused_whole_leaving_device_and_memory_alone)
{
	struct vdev v;
	uint64_t t2, t3;
	uint8_t *img, *bad;
	size_t len;
	char why[200];
	size_t at;

	mid_traffic(&v, &t2, &t3);
	cr_assert_eq(viommu_virtio_save(v.vd, (void **)&img, &len), 0);
	at = len - 8 - VIOMMU_IMAGE_TRANSPORT_BYTES; /* the record right before END's header */
	cr_assert_eq(le16toh(*(uint16_t *)(img + at - 8)), 8, "TRANSPORT is the last record");
	bad = malloc(len);
	cr_assert(bad);
	for (size_t i = 0; i < sizeof(tr_edits) / sizeof(tr_edits[0]); i++) {
		const struct tr_edit *e = &tr_edits[i];
		struct viommu_device *dev;
		struct viommu_mem *mem = guest_map(&v);
		uint64_t x = 0;

		memcpy(bad, img, len);
		memcpy(&x, bad + at + e->off, e->size);
		x = htole64(le64toh(x) ^ e->xor);
		memcpy(bad + at + e->off, &x, e->size);
		viommu_image_seal(bad, len);
		dev = viommu_device_restore(bad, len, why, sizeof(why));
		cr_assert(dev, "%s: the device's records are intact: %s", e->what, why);
		why[0] = 0;
		errno = 0;
		cr_assert_null(viommu_virtio_restore(dev, mem, bad, len, why, sizeof(why)), "%s: accepted",
			       e->what);
		cr_assert_eq(errno, EINVAL, "%s", e->what);
		cr_assert(why[0], "%s: no reason given", e->what);
		cr_assert_eq(viommu_device_check(dev), 0);
		cr_assert_eq(viommu_device_eventq_credits(dev), 2, "%s: device touched", e->what);
		cr_assert_eq(viommu_device_nr_mappings(dev), 0, "%s: device touched", e->what);
		cr_assert(viommu_mem_ptr(mem, DESC, 16), "%s: the memory map is still the caller's", e->what);
		viommu_mem_free(mem); /* a double free under ASan if restore had taken it */
		viommu_device_free(dev);
	}
	free(bad);

	/* Unedited it is accepted; without memory, or from a device-only image, it is not. */
	{
		struct viommu_device *dev = viommu_device_restore(img, len, why, sizeof(why));
		struct viommu_mem *mem = guest_map(&v);
		struct viommu_virtio *vd;
		void *plain;
		size_t plen;

		cr_assert(dev);
		cr_assert_null(viommu_virtio_restore(dev, NULL, img, len, why, sizeof(why)),
			       "DRIVER_OK needs a memory map");
		cr_assert_eq(viommu_device_save(dev, &plain, &plen), 0);
		errno = 0;
		cr_assert_null(viommu_virtio_restore(dev, mem, plain, plen, why, sizeof(why)),
			       "a device-only image holds no transport");
		cr_assert_eq(errno, EINVAL);
		viommu_mem_free(mem);
		free(plain);
		vd = viommu_virtio_restore(dev, guest_map(&v), img, len, why, sizeof(why));
		cr_assert(vd, "%s", why);
		viommu_virtio_free(vd);
		viommu_device_free(dev);
	}
	free(img);
	vdev_down(&v);
}
