/* SPDX-License-Identifier: MIT */
/*
 * What the two fuzzers share (fuzz_request.c: the device core alone; fuzz_fastpath.c: the core
 * with the fast path observing it): the input cursor, the topology, and the device a config
 * selector byte describes (user/fuzz_input.h).
 */
#ifndef VIOMMU_FUZZ_HARNESS_H
#define VIOMMU_FUZZ_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "fuzz_input.h"

#define FAIL(...)                                     \
	do {                                              \
		fprintf(stderr, "fuzz: " __VA_ARGS__);         \
		fputc('\n', stderr);                          \
		abort();                                      \
	} while (0)

/* The topology: the endpoints the traces use, plus the interesting kinds. */
static const uint32_t endpoints[] = { 0, 1, 8, 24, 32, 40, 48, 0xffffffffu };
#define EP_NO_ACCESS_PLATFORM 40u
#define EP_RESERVED 48u

struct cursor {
	const uint8_t *p;
	size_t left;
};

static inline int take(struct cursor *c, void *dst, size_t n)
{
	if (c->left < n)
		return -1;
	memcpy(dst, c->p, n);
	c->p += n;
	c->left -= n;
	return 0;
}

static inline struct viommu_device *make_device(uint8_t sel)
{
	struct viommu_resv msi = { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_resv rsv[2] = { { 0x1000, 0x1fff, VIOMMU_RESV_MEM_T_RESERVED },
				      { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI } };
	struct viommu_config cfg;
	struct viommu_device *dev;

	viommu_config_default(&cfg);
	/* The domain slot stack is O(max_domains) per device: 1024 keeps inputs fast, and an input
	 * of 64 operations cannot create more domains than that anyway. */
	cfg.max_domains = 1024;
	if (sel & VIOMMU_FUZZ_CFG_GRANULE_512)
		cfg.page_size_mask = ~0x1ffull;
	else if (sel & VIOMMU_FUZZ_CFG_GRANULE_64K)
		cfg.page_size_mask = ~0xffffull;
	if (sel & VIOMMU_FUZZ_CFG_BYPASS_0)
		cfg.bypass = 0;
	if (sel & VIOMMU_FUZZ_CFG_LEGACY_BYPASS)
		cfg.features = (cfg.features & ~VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG)) |
			       VIOMMU_FBIT(VIOMMU_F_BYPASS);
	if (sel & VIOMMU_FUZZ_CFG_SMALL_CAPS) {
		cfg.max_domains = 4;
		cfg.max_mappings_per_domain = 8;
		cfg.max_mappings = 12;
		cfg.max_pending_faults = 4;
	}
	if (sel & VIOMMU_FUZZ_CFG_NARROW_INPUT) {
		cfg.input_start = 1u << 20;
		cfg.input_end = 0xffffffffull;
	}
	if (sel & VIOMMU_FUZZ_CFG_NARROW_DOMAINS) {
		cfg.domain_start = 1;
		cfg.domain_end = 64;
	}
	dev = viommu_device_new(&cfg);
	if (!dev)
		FAIL("viommu_device_new refused a valid config (selector 0x%02x)", sel);
	for (unsigned i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		uint32_t id = endpoints[i];
		int err = id == EP_RESERVED ?
				  viommu_device_add_endpoint(dev, id, true, rsv, 2) :
				  viommu_device_add_endpoint(dev, id, id != EP_NO_ACCESS_PLATFORM, &msi, 1);
		if (err)
			FAIL("add_endpoint %u: %d", id, err);
	}
	if (sel & VIOMMU_FUZZ_CFG_FEW_FEATURES) {
		uint64_t f = viommu_device_features(dev) & ~(VIOMMU_FBIT(VIOMMU_F_MAP_UNMAP) |
							     VIOMMU_FBIT(VIOMMU_F_PROBE));
		if (viommu_device_negotiate(dev, f))
			FAIL("negotiate a subset");
	}
	return dev;
}

/* A request as the scatter lists a guest may post (op bit 7, user/fuzz_input.h): split at half
 * (odd @wr_len), or cut into segments of 0-8 bytes, up to VIOMMU_FUZZ_SEGS, the rest in the
 * last one. Returns the used length. */
#define VIOMMU_FUZZ_SEGS 64
static inline uint32_t request_scattered(struct viommu_device *dev, uint8_t *rd, size_t rd_len,
					 uint8_t *wr, size_t wr_len)
{
	struct iovec r[VIOMMU_FUZZ_SEGS], w[VIOMMU_FUZZ_SEGS];
	unsigned nr = 0, nw = 0;
	size_t off;

	if (wr_len & 1) {
		struct iovec r2[2] = { { rd, rd_len / 2u }, { rd + rd_len / 2u, rd_len - rd_len / 2u } };
		struct iovec w2[2] = { { wr, wr_len / 2 }, { wr + wr_len / 2, wr_len - wr_len / 2 } };

		return viommu_device_request(dev, r2, 2, w2, 2);
	}
	for (off = 0; nr < VIOMMU_FUZZ_SEGS - 1 && off < rd_len; nr++) {
		size_t len = (rd_len + nr * 5) % 9;

		len = len > rd_len - off ? rd_len - off : len;
		r[nr] = (struct iovec){ rd + off, len };
		off += len;
	}
	r[nr++] = (struct iovec){ rd + off, rd_len - off };
	for (off = 0; nw < VIOMMU_FUZZ_SEGS - 1 && off < wr_len; nw++) {
		size_t len = (wr_len + nw * 3) % 9;

		len = len > wr_len - off ? wr_len - off : len;
		w[nw] = (struct iovec){ wr + off, len };
		off += len;
	}
	w[nw++] = (struct iovec){ wr + off, wr_len - off };
	return viommu_device_request(dev, r, nr, w, nw);
}

/* MAP_RUN (user/fuzz_input.h): adjacent MAP requests from a page-aligned IOVA. Returns 0 and
 * the run's [*start, *end] (as far as it was asked for), or -1 when the input ran out. */
static inline int map_run(struct viommu_device *dev, struct cursor *c, uint32_t *domain,
			  uint64_t *start, uint64_t *end)
{
	uint8_t b[3], rd[64], wr[4];
	uint64_t iova, sz;

	if (take(c, b, 3) || take(c, &iova, 8)) {
		c->left = 0;
		return -1;
	}
	iova &= ~0xfffull;
	sz = 0x1000ull << (b[2] % 3);
	*domain = b[0];
	*start = *end = iova;
	for (unsigned i = 0; i <= b[1] % 64u; i++) {
		uint64_t s = iova + i * sz;

		if (s + sz - 1 < s)
			break; /* the top of the space */
		viommu_device_request_buf(dev, rd,
					  viommu_req_map(rd, b[0], s, s + sz - 1, 0x80000000ull + (i * 7 % 64) * sz,
							 (i + 1) % 23 ? 3 : 1),
					  wr, sizeof(wr));
		*end = s + sz - 1;
	}
	return 0;
}

#endif
