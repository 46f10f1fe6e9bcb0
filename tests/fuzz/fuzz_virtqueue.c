// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over the split-ring walker and the virtio-iommu transport (user/virtqueue.c):
 * the guest writes anything into its rings, descriptors and indirect tables, in any order, and
 * kicks, resets and swaps its memory map between. Guest memory is three heap buffers (so ASan
 * sees any access outside them): two regions adjacent in guest space, one far above 4 GiB.
 *
 * Input: byte 0 selects the transport (bit 0 INDIRECT_DESC, bit 1 EVENT_IDX, bits 2-3 the queue
 * size 1, 2, 8 or 64), then operations, each an op byte and its arguments (a record cut short
 * ends the run):
 *   WRITE    le16 offset, u8 len, bytes: raw bytes into the ring region
 *   DESC     u8 where (bit 7: indirect area, else the ring's table), u8 base selector, le32 offset,
 *            le32 len, le16 flags, le16 next: one descriptor, its address picked near a region
 *            edge, inside, across, outside, or raw
 *   AVAIL    le16 head: append to the request queue's avail ring (and publish)
 *   REQUEST  u8 type selector, u8 slot: a well-formed request as Linux lays it out
 *   KICK     u8 queue
 *   FAULT    u8 endpoint: a fault reported by a reader, then delivered
 *   RESET    u8 kind: status 0 (bit 0: system reset), then the device brought up again
 *   MEM      u8: drop or restore the second region (the rings are re-resolved)
 *   AVAIL_IDX le16: the request queue's avail->idx set to anything
 *
 * Oracles besides the sanitizers: viommu_device_check() after every operation; every used
 * entry names a head below the queue size and a length no larger than the chain's writable
 * part could be; once DEVICE_NEEDS_RESET is set nothing more is used until a reset. At the end
 * the device and transport are migrated (viommu_virtio_save, viommu_device_restore,
 * viommu_virtio_restore): whatever state the guest drove them into, their own image must be
 * accepted and save again to the same bytes.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "virtqueue.h"
#include "wire.h"

#define FAIL(...)                                     \
	do {                                              \
		fprintf(stderr, "fuzz: " __VA_ARGS__);         \
		fputc('\n', stderr);                          \
		abort();                                      \
	} while (0)

#define R0_GPA 0x10000ull /* rings and tables */
#define R0_SIZE 0x4000u
#define R1_GPA (R0_GPA + R0_SIZE) /* buffers, adjacent to R0 */
#define R1_SIZE 0x1000u
#define R2_GPA 0x100000000ull /* far */
#define R2_SIZE 0x1000u
#define DESC (R0_GPA + 0x0000)
#define AVAIL (R0_GPA + 0x0400)
#define USED (R0_GPA + 0x0600)
#define EQ_DESC (R0_GPA + 0x0c00)
#define EQ_AVAIL (R0_GPA + 0x1000)
#define EQ_USED (R0_GPA + 0x1200)
#define ITAB (R0_GPA + 0x2000) /* indirect tables, 0x2000 bytes */
#define EQ_SIZE 4u

enum { OP_WRITE, OP_DESC, OP_AVAIL, OP_REQUEST, OP_KICK, OP_FAULT, OP_RESET, OP_MEM, OP_AVAIL_IDX,
       OP_COUNT };

struct world {
	uint8_t *r[3];
	struct viommu_device *dev;
	struct viommu_virtio *vd;
	uint16_t qsize, avail_idx, seen_used;
	uint64_t features;
	bool two_regions;
};

struct cursor {
	const uint8_t *p;
	size_t left;
};

static int take(struct cursor *c, void *dst, size_t n)
{
	if (c->left < n) {
		c->left = 0;
		return -1;
	}
	memcpy(dst, c->p, n);
	c->p += n;
	c->left -= n;
	return 0;
}

static uint8_t *r0(struct world *w, uint64_t gpa)
{
	return w->r[0] + (gpa - R0_GPA);
}

static void set_mem(struct world *w, bool two)
{
	struct viommu_mem_region reg[3] = {
		{ .gpa = R0_GPA, .size = R0_SIZE, .hva = w->r[0], .fd = -1 },
		{ .gpa = R2_GPA, .size = R2_SIZE, .hva = w->r[2], .fd = -1 },
		{ .gpa = R1_GPA, .size = R1_SIZE, .hva = w->r[1], .fd = -1 },
	};
	struct viommu_mem *m = viommu_mem_new(reg, two ? 3 : 2);

	if (!m)
		FAIL("viommu_mem_new refused a valid map");
	viommu_virtio_set_mem(w->vd, m);
	w->two_regions = two;
}

static void bring_up(struct world *w)
{
	struct viommu_vq_config rq = { w->qsize, DESC, AVAIL, USED };
	struct viommu_vq_config eq = { EQ_SIZE, EQ_DESC, EQ_AVAIL, EQ_USED };
	uint8_t st = VIOMMU_VIRTIO_S_ACKNOWLEDGE | VIOMMU_VIRTIO_S_DRIVER | VIOMMU_VIRTIO_S_FEATURES_OK;

	memset(w->r[0], 0, R0_SIZE);
	w->avail_idx = w->seen_used = 0;
	if (viommu_virtio_set_status(w->vd, st & ~VIOMMU_VIRTIO_S_FEATURES_OK) ||
	    viommu_virtio_set_driver_features(w->vd, w->features) ||
	    viommu_virtio_set_status(w->vd, st) || viommu_virtio_queue_setup(w->vd, 0, &rq) ||
	    viommu_virtio_queue_setup(w->vd, 1, &eq) ||
	    viommu_virtio_set_status(w->vd, st | VIOMMU_VIRTIO_S_DRIVER_OK))
		FAIL("bring-up refused");
	/* Event buffers: writable, 24 bytes, in R1's last bytes. */
	for (unsigned i = 0; i < EQ_SIZE; i++) {
		struct viommu_vring_desc *d = (struct viommu_vring_desc *)r0(w, EQ_DESC) + i;
		uint16_t *a = (uint16_t *)r0(w, EQ_AVAIL);

		d->addr = htole64(R1_GPA + R1_SIZE - 32 * (i + 1));
		d->len = htole32(24);
		d->flags = htole16(VIOMMU_VRING_DESC_F_WRITE);
		a[2 + i] = htole16((uint16_t)i);
	}
	((uint16_t *)r0(w, EQ_AVAIL))[1] = htole16(EQ_SIZE);
	viommu_virtio_kick(w->vd, 1);
}

static void publish(struct world *w, uint16_t head)
{
	uint16_t *a = (uint16_t *)r0(w, AVAIL);

	a[2 + w->avail_idx % w->qsize] = htole16(head);
	w->avail_idx++;
	a[1] = htole16(w->avail_idx);
}

static uint64_t pick_addr(uint8_t base, uint32_t off)
{
	switch (base % 6) {
	case 0:
		return R1_GPA + off % R1_SIZE; /* inside the buffers */
	case 1:
		return R1_GPA - (off % 64); /* across R0/R1 */
	case 2:
		return R1_GPA + R1_SIZE - (off % 64); /* across R1's end into nothing */
	case 3:
		return R2_GPA + off % R2_SIZE;
	case 4:
		return UINT64_MAX - (off % 4096); /* wraps */
	default:
		return (uint64_t)off << (base % 33); /* anywhere */
	}
}

/* A well-formed request: readable then writable, as two chained descriptors from @slot. */
static void request(struct world *w, uint8_t type, uint8_t slot)
{
	uint8_t rd[80];
	size_t len, wr = 4;
	uint16_t i = (uint16_t)(slot % w->qsize), j = (uint16_t)((slot + 1u) % w->qsize);
	uint64_t buf = R1_GPA + (slot % 16) * 128ull;
	struct viommu_vring_desc *d = (struct viommu_vring_desc *)r0(w, DESC);

	switch (type % 5) {
	case 0:
		len = viommu_req_attach(rd, type >> 4, 8, 0);
		break;
	case 1:
		len = viommu_req_map(rd, type >> 4, (uint64_t)slot << 12, ((uint64_t)slot << 12) + 0xfff,
				     0x80000, 3);
		break;
	case 2:
		len = viommu_req_unmap(rd, type >> 4, 0, UINT64_MAX);
		break;
	case 3:
		len = viommu_req_detach(rd, type >> 4, 8);
		break;
	default:
		len = viommu_req_probe(rd, 8);
		wr = 4; /* too small for the properties: INVAL */
		break;
	}
	memcpy(w->r[1] + (buf - R1_GPA), rd, len);
	d[i] = (struct viommu_vring_desc){ htole64(buf), htole32((uint32_t)len),
					   htole16(VIOMMU_VRING_DESC_F_NEXT), htole16(j) };
	if (i == j) /* a queue of one: the chain cannot have two descriptors */
		d[i].flags = 0;
	else
		d[j] = (struct viommu_vring_desc){ htole64(buf + len), htole32((uint32_t)wr),
						   htole16(VIOMMU_VRING_DESC_F_WRITE), 0 };
	publish(w, i);
}

/* Every used entry the device wrote in the last kick (its own index, not the guest-writable
 * used->idx): a head in the table, a sane length, none once the device needs a reset. */
static void check_used(struct world *w, bool was_broken)
{
	uint16_t idx = viommu_virtio_queue(w->vd, 0)->used_idx;

	if (was_broken && idx != w->seen_used)
		FAIL("used entries after DEVICE_NEEDS_RESET");
	if ((uint16_t)(idx - w->seen_used) > w->qsize)
		FAIL("%u used entries for one kick of a queue of %u",
		     (unsigned)(uint16_t)(idx - w->seen_used), w->qsize);
	for (; w->seen_used != idx; w->seen_used++) {
		const struct viommu_vring_used_elem *e =
			(const struct viommu_vring_used_elem *)r0(w, USED + 4) + w->seen_used % w->qsize;

		if (le32toh(e->id) >= w->qsize)
			FAIL("used entry names head %u of a queue of %u", le32toh(e->id), w->qsize);
		if (le32toh(e->len) > R0_SIZE + R1_SIZE + R2_SIZE)
			FAIL("used length %u larger than guest memory", le32toh(e->len));
	}
}

/* Save device and transport, free them, restore both over a new map of the same memory. */
static void migrate(struct world *w)
{
	struct viommu_mem_region reg[3] = {
		{ .gpa = R0_GPA, .size = R0_SIZE, .hva = w->r[0], .fd = -1 },
		{ .gpa = R2_GPA, .size = R2_SIZE, .hva = w->r[2], .fd = -1 },
		{ .gpa = R1_GPA, .size = R1_SIZE, .hva = w->r[1], .fd = -1 },
	};
	struct viommu_mem *m;
	void *img, *again;
	size_t len, len2;
	char why[200] = "";

	if (viommu_virtio_save(w->vd, &img, &len))
		FAIL("transport save failed");
	viommu_virtio_free(w->vd);
	viommu_device_free(w->dev);
	if (!(w->dev = viommu_device_restore(img, len, why, sizeof(why))))
		FAIL("the device's own image was refused: %s", why);
	if (!(m = viommu_mem_new(reg, w->two_regions ? 3 : 2)))
		FAIL("viommu_mem_new refused a valid map");
	if (!(w->vd = viommu_virtio_restore(w->dev, m, img, len, why, sizeof(why))))
		FAIL("the transport's own image was refused: %s", why);
	if (viommu_virtio_save(w->vd, &again, &len2) || len2 != len || memcmp(img, again, len))
		FAIL("transport save -> restore -> save is not a fixed point");
	if (viommu_device_check(w->dev))
		FAIL("viommu_device_check failed after a migration");
	free(img);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t sizes[4] = { 1, 2, 8, 64 };
	struct viommu_resv msi = { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI };
	struct cursor c = { data, size };
	struct viommu_config cfg;
	struct world w;
	uint8_t sel;

	if (take(&c, &sel, 1))
		return 0;
	memset(&w, 0, sizeof(w));
	w.r[0] = calloc(1, R0_SIZE);
	w.r[1] = calloc(1, R1_SIZE);
	w.r[2] = calloc(1, R2_SIZE);
	viommu_config_default(&cfg);
	cfg.max_domains = 64;
	w.dev = viommu_device_new(&cfg);
	if (!w.r[0] || !w.r[1] || !w.r[2] || !w.dev)
		FAIL("setup");
	viommu_device_add_endpoint(w.dev, 8, true, &msi, 1);
	w.vd = viommu_virtio_new(w.dev);
	w.qsize = sizes[(sel >> 2) & 3];
	w.features = viommu_device_features(w.dev) | VIOMMU_FBIT(VIOMMU_VIRTIO_F_VERSION_1);
	if (sel & 1)
		w.features |= VIOMMU_FBIT(VIOMMU_VIRTIO_F_INDIRECT_DESC);
	if (sel & 2)
		w.features |= VIOMMU_FBIT(VIOMMU_VIRTIO_F_EVENT_IDX);
	set_mem(&w, true);
	bring_up(&w);
	for (unsigned ops = 0; ops < 256 && c.left; ops++) {
		bool broken = viommu_virtio_status(w.vd) & VIOMMU_VIRTIO_S_NEEDS_RESET;
		uint8_t op, a[16];

		take(&c, &op, 1);
		switch (op % OP_COUNT) {
		case OP_WRITE: {
			uint8_t len;
			uint16_t off;

			if (take(&c, &off, 2) || take(&c, &len, 1) || len > c.left)
				break;
			off %= R0_SIZE;
			if (len > R0_SIZE - off)
				len = (uint8_t)(R0_SIZE - off);
			take(&c, w.r[0] + off, len);
			break;
		}
		case OP_DESC: {
			struct viommu_vring_desc *d;
			uint32_t off, len;
			uint16_t flags, next;

			if (take(&c, a, 2) || take(&c, &off, 4) || take(&c, &len, 4) ||
			    take(&c, &flags, 2) || take(&c, &next, 2))
				break;
			d = a[0] & 0x80 ? (struct viommu_vring_desc *)r0(&w, ITAB) + (a[0] & 0x7f) :
					  (struct viommu_vring_desc *)r0(&w, DESC) + a[0] % w.qsize;
			if (flags & VIOMMU_VRING_DESC_F_INDIRECT) /* point tables at the table area */
				off = (uint32_t)(ITAB - R0_GPA) + off % 0x2000;
			*d = (struct viommu_vring_desc){
				htole64(flags & VIOMMU_VRING_DESC_F_INDIRECT && a[1] & 1 ? R0_GPA + off :
											pick_addr(a[1], off)),
				htole32(len % 4 ? len : len % 0x3000), htole16(flags & 7), htole16(next % 130)
			};
			break;
		}
		case OP_AVAIL: {
			uint16_t head;

			if (take(&c, &head, 2))
				break;
			publish(&w, head % (w.qsize + 2u)); /* sometimes past the table */
			break;
		}
		case OP_REQUEST:
			if (take(&c, a, 2))
				break;
			request(&w, a[0], a[1]);
			break;
		case OP_KICK:
			if (take(&c, a, 1))
				break;
			w.seen_used = viommu_virtio_queue(w.vd, 0)->used_idx;
			viommu_virtio_kick(w.vd, a[0] & 1);
			check_used(&w, broken);
			break;
		case OP_FAULT:
			if (take(&c, a, 1))
				break;
			viommu_device_report_fault(w.dev, a[0], VIOMMU_FAULT_R_DOMAIN, 1, 0x1000);
			viommu_virtio_deliver_faults(w.vd);
			break;
		case OP_RESET:
			if (take(&c, a, 1))
				break;
			if (a[0] & 1)
				viommu_virtio_system_reset(w.vd);
			else
				viommu_virtio_set_status(w.vd, 0);
			bring_up(&w);
			break;
		case OP_MEM:
			set_mem(&w, !w.two_regions);
			break;
		case OP_AVAIL_IDX: {
			uint16_t idx;

			if (take(&c, &idx, 2))
				break;
			((uint16_t *)r0(&w, AVAIL))[1] = htole16(idx);
			w.avail_idx = idx;
			break;
		}
		}
		if (viommu_device_check(w.dev))
			FAIL("viommu_device_check failed after op %u", op % OP_COUNT);
	}
	migrate(&w);
	viommu_virtio_free(w.vd);
	viommu_device_free(w.dev);
	for (unsigned i = 0; i < 3; i++)
		free(w.r[i]);
	return 0;
}
