// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over the device core's request path: the guest is untrusted, so any bytes in
 * any order must give a spec answer, never a crash, a leak, UB, or a half-applied request.
 * Input format: user/fuzz_input.h. Seeds: the recorded traces' requests (`make fuzz` writes them
 * with `viommu replay --dump-requests`). Crashes found go to tests/fuzz/regressions/, which
 * `make test` replays.
 *
 * Oracles besides the sanitizers, checked after every operation:
 *  - used length is 0 (and the writable buffer untouched) or the whole writable length, with a
 *    known status and zeroed reserved bytes in the tail;
 *  - a request answered with an error leaves the state digest (endpoint attachments, domains,
 *    every extent) exactly as it was;
 *  - viommu_device_check(): trees, counts, caps, links, alignment;
 *  - translations are self-consistent with the extent they name and with the endpoint's state.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	return h * 0xff51afd7ed558ccdull;
}

static int digest_extent(const struct viommu_extent *x, void *arg)
{
	uint64_t *h = arg;

	*h = mix(mix(mix(mix(*h, x->start), x->end), x->phys), x->flags);
	return 0;
}

struct find_extent {
	uint64_t start;
	const struct viommu_extent *x;
};

static int find_extent(const struct viommu_extent *x, void *arg)
{
	struct find_extent *f = arg;

	if (x->start != f->start)
		return 0;
	f->x = x;
	return 1;
}

/* A digest of everything a request can change. */
static int digest_ep(const struct viommu_endpoint *ep, void *arg)
{
	uint64_t *h = arg;

	*h = mix(*h, ep->id);
	if (!ep->domain)
		return 0;
	*h = mix(*h, ep->domain->id | (uint64_t)ep->domain->bypass << 32);
	viommu_domain_for_each_extent(ep->domain, digest_extent, h);
	return 0;
}

static uint64_t digest(const struct viommu_device *dev)
{
	uint64_t h = mix(viommu_device_nr_domains(dev), viommu_device_nr_mappings(dev));
	uint8_t bypass;

	viommu_device_config_read(dev, offsetof(struct viommu_wire_config, bypass), &bypass, 1);
	h = mix(h, bypass);
	viommu_device_for_each_endpoint(dev, digest_ep, &h);
	return h;
}

static void do_request(struct viommu_device *dev, struct cursor *c, uint8_t op)
{
	static uint8_t rd[255], wr[VIOMMU_FUZZ_MAX_WR];
	uint8_t rd_len, wlen[2];
	size_t wr_len;
	uint64_t before;
	uint32_t used;

	if (take(c, &rd_len, 1) || take(c, wlen, 2) || take(c, rd, rd_len)) {
		c->left = 0;
		return;
	}
	wr_len = (size_t)(wlen[0] | wlen[1] << 8) % (VIOMMU_FUZZ_MAX_WR + 1);
	memset(wr, 0xa5, wr_len);
	before = digest(dev);
	if (op & VIOMMU_FUZZ_OP_SCATTER) {
		used = request_scattered(dev, rd, rd_len, wr, wr_len);
	} else {
		used = viommu_device_request_buf(dev, rd, rd_len, wr, wr_len);
	}
	if (used == 0) {
		for (size_t i = 0; i < wr_len; i++)
			if (wr[i] != 0xa5)
				FAIL("used 0 but byte %zu of the writable part was written", i);
		if (digest(dev) != before)
			FAIL("a request answered with used 0 changed the state");
		return;
	}
	if (used != wr_len || used < 4)
		FAIL("used %u for a writable part of %zu", used, wr_len);
	if (wr[used - 4] >= VIOMMU_S_COUNT || wr[used - 3] || wr[used - 2] || wr[used - 1])
		FAIL("bad tail %02x %02x %02x %02x", wr[used - 4], wr[used - 3], wr[used - 2],
		     wr[used - 1]);
	if (wr[used - 4] != VIOMMU_S_OK && digest(dev) != before)
		FAIL("request type %u answered %s but changed the state", rd_len ? rd[0] : 0,
		     viommu_status_name(wr[used - 4]));
	if (rd_len && rd[0] == VIOMMU_T_PROBE && wr[used - 4] != VIOMMU_S_OK && used > 4)
		for (size_t i = 0; i < used - 4; i++)
			if (wr[i] != 0xa5)
				FAIL("PROBE answered %s wrote properties", viommu_status_name(wr[used - 4]));
}

static void do_translate(struct viommu_device *dev, struct cursor *c)
{
	uint8_t sel, access, size_log;
	uint64_t iova, size, last;
	struct viommu_answer x;
	enum viommu_xlate_result res;
	enum viommu_ep_state st;
	uint32_t ep;

	if (take(c, &sel, 1) || take(c, &access, 1) || take(c, &size_log, 1) || take(c, &iova, 8)) {
		c->left = 0;
		return;
	}
	ep = sel < 8 ? endpoints[sel] : sel; /* sel >= 8: an id that mostly does not exist */
	access &= VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE;
	size = size_log >= 64 ? 0 : 1ull << (size_log % 64);
	last = iova + (size ? size - 1 : 0);
	st = viommu_device_endpoint_state(dev, ep);
	res = viommu_device_translate(dev, ep, iova, size, access, &x);
	switch (res) {
	case VIOMMU_XLATE_HIT: {
		const struct viommu_endpoint *e = viommu_device_endpoint(dev, ep);
		const struct viommu_extent *ext;

		if (st != VIOMMU_EP_ATTACHED || !e || !e->domain)
			FAIL("translated for an endpoint in state %d", st);
		if (iova < x.ext_start || iova > x.ext_end || x.pa != x.ext_phys + (iova - x.ext_start) ||
		    (x.ext_flags & access) != access)
			FAIL("translation inconsistent with its extent");
		{
			struct find_extent f = { x.ext_start, NULL };

			viommu_domain_for_each_extent(e->domain, find_extent, &f);
			ext = f.x;
		}
		if (!ext || ext->end != x.ext_end || ext->phys != x.ext_phys)
			FAIL("translated through an extent the domain does not hold");
		break;
	}
	case VIOMMU_XLATE_IDENTITY:
		if (st != VIOMMU_EP_BYPASS && st != VIOMMU_EP_IDENTITY)
			FAIL("identity for an endpoint in state %d", st);
		break;
	case VIOMMU_XLATE_FAULT:
		if (x.reason > VIOMMU_FAULT_R_MAPPING ||
		    (last >= iova && (x.fault_addr < iova || x.fault_addr > last)))
			FAIL("fault reason %u at 0x%llx outside the query", x.reason,
			     (unsigned long long)x.fault_addr);
		if ((st == VIOMMU_EP_UNKNOWN) != (x.reason == VIOMMU_FAULT_R_UNKNOWN))
			FAIL("fault reason %u for an endpoint in state %d", x.reason, st);
		viommu_device_report_fault(dev, ep, x.reason, access, x.fault_addr);
		break;
	default:
		FAIL("translate returned %d", res);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor c = { data, size };
	struct viommu_device *dev;
	struct viommu_wire_fault f;
	bool batch = false;
	uint8_t sel;
	int err;

	if (take(&c, &sel, 1))
		return 0;
	dev = make_device(sel);
	for (unsigned ops = 0; ops < VIOMMU_FUZZ_MAX_OPS && c.left; ops++) {
		uint8_t op, b[10];

		take(&c, &op, 1);
		switch ((op & 0x7f) % VIOMMU_FUZZ_OP_COUNT) {
		case VIOMMU_FUZZ_OP_REQUEST:
			do_request(dev, &c, op);
			break;
		case VIOMMU_FUZZ_OP_TRANSLATE:
			do_translate(dev, &c);
			break;
		case VIOMMU_FUZZ_OP_RESET:
			if (take(&c, b, 1))
				break;
			if (b[0] & 1)
				viommu_device_system_reset(dev);
			else
				viommu_device_reset(dev);
			if (viommu_device_nr_domains(dev) || viommu_device_nr_mappings(dev))
				FAIL("reset left domains or mappings");
			break;
		case VIOMMU_FUZZ_OP_CONFIG_WRITE: {
			uint64_t before = digest(dev);

			if (take(&c, b, 2) || b[1] > 8 || take(&c, b + 2, b[1]))
				break;
			err = viommu_device_config_write(dev, b[0], b + 2, b[1]);
			if (err && digest(dev) != before)
				FAIL("a refused config write (%d) changed the state", err);
			break;
		}
		case VIOMMU_FUZZ_OP_EVENTQ:
			if (take(&c, b, 1))
				break;
			viommu_device_eventq_post(dev, b[0]);
			for (unsigned i = 0; i < b[0] && !viommu_device_fault_pop(dev, &f); i++)
				if (f.reason > VIOMMU_FAULT_R_MAPPING)
					FAIL("fault record with reason %u", f.reason);
			break;
		case VIOMMU_FUZZ_OP_BATCH:
			if (batch)
				viommu_device_batch_end(dev);
			else
				viommu_device_batch_begin(dev);
			batch = !batch;
			break;
		case VIOMMU_FUZZ_OP_MAP_RUN: {
			uint32_t d;
			uint64_t s, e;

			map_run(dev, &c, &d, &s, &e);
			break;
		}
		}
		if ((err = viommu_device_check(dev)))
			FAIL("viommu_device_check: %d after op %u", err, ops);
	}
	if (batch)
		viommu_device_batch_end(dev);
	viommu_device_free(dev);
	return 0;
}
