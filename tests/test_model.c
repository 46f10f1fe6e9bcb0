// SPDX-License-Identifier: MIT
/*
 * Differential test against a model of the spec: random ATTACH / DETACH / MAP / UNMAP sequences
 * (UNMAPs that would split a mapping, long runs of adjacent small mappings so DMA ranges cross
 * more than VIOMMU_SPAN_MAX extents) go to the device as real request buffers and to a model
 * written here from the spec alone, deliberately simple: per domain a sorted array of mappings,
 * per endpoint the domain it is attached to. Every status must match; then random probe ranges
 * must get the model's answer from all three readers: the store (viommu_device_translate), the
 * userspace reader (single and bulk) and the BPF syscall program. Tests that need BPF skip
 * with the kernel's reason.
 *
 * The model's rules (virtio-iommu §5.13.6, with docs/statuses.md where the spec leaves room),
 * for a device with bypass 0, full domain and input ranges, a 4 KiB granule, no reserved
 * regions, and requests that are well formed (aligned, virt_end >= virt_start, flags R/W):
 *   ATTACH  unknown endpoint NOENT; else leave the old domain (destroyed, with its mappings,
 *           when its last endpoint leaves), create the domain if needed, OK.
 *   DETACH  unknown endpoint NOENT; not attached to that domain INVAL; else as leaving, OK.
 *   MAP     no such domain NOENT; overlaps a mapping INVAL; else OK.
 *   UNMAP   no such domain NOENT; a mapping partly inside [start, end] RANGE, nothing removed;
 *           else every mapping inside is removed, OK (also when there is none).
 *   DMA     unknown endpoint fault R_UNKNOWN; no ACCESS_PLATFORM identity; unattached fault
 *           R_DOMAIN (bypass 0); else every byte mapped with the access, across adjacent
 *           mappings: pa and the extent of the first byte; else fault R_MAPPING at the first
 *           byte that is not.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device.h"
#include "fastpath.h"
#include "reader.h"
#include "bpf_access.h"
#include "requests.h"
#include "bulk_pa.h"

#define M_EPS 4
#define M_DOMAINS 6 /* domain ids 1..6 */
#define M_MAPS 1024 /* per domain, well above what a run makes */

static const uint32_t ep_ids[M_EPS] = { 8, 9, 0x30100, 10 }; /* 10: no ACCESS_PLATFORM */

struct m_map {
	uint64_t start, end, phys;
	uint32_t flags;
};

struct m_domain {
	bool live;
	unsigned n;
	struct m_map maps[M_MAPS]; /* sorted by start, disjoint */
};

static struct model {
	struct m_domain dom[M_DOMAINS + 1];
	uint32_t attached[M_EPS]; /* domain id, 0 = none */
	/* The device's caps as the guest sees them (lowered by the fast path to what its pools
	 * hold): a MAP beyond one is NOMEM, after every other check. */
	uint64_t max_mappings, max_per_domain, total;
} M;

static uint64_t seed_state;

static uint64_t rnd(void)
{
	seed_state ^= seed_state << 13;
	seed_state ^= seed_state >> 7;
	seed_state ^= seed_state << 17;
	return seed_state;
}

static int m_ep(uint32_t id)
{
	for (int i = 0; i < M_EPS; i++)
		if (ep_ids[i] == id)
			return i;
	return -1;
}

static void m_leave(int e)
{
	uint32_t d = M.attached[e];

	M.attached[e] = 0;
	if (!d)
		return;
	for (int i = 0; i < M_EPS; i++)
		if (M.attached[i] == d)
			return;
	M.dom[d].live = false; /* the last endpoint left: the domain and its mappings go */
	M.total -= M.dom[d].n;
	M.dom[d].n = 0;
}

static uint8_t m_attach(uint32_t d, uint32_t id)
{
	int e = m_ep(id);

	if (e < 0)
		return VIOMMU_S_NOENT;
	if (M.attached[e] == d)
		return VIOMMU_S_OK;
	m_leave(e);
	M.dom[d].live = true;
	M.attached[e] = d;
	return VIOMMU_S_OK;
}

static uint8_t m_detach(uint32_t d, uint32_t id)
{
	int e = m_ep(id);

	if (e < 0)
		return VIOMMU_S_NOENT;
	if (M.attached[e] != d)
		return VIOMMU_S_INVAL;
	m_leave(e);
	return VIOMMU_S_OK;
}

static uint8_t m_map(uint32_t d, uint64_t start, uint64_t end, uint64_t phys, uint32_t flags)
{
	struct m_domain *dm = &M.dom[d];
	unsigned i;

	if (!dm->live)
		return VIOMMU_S_NOENT;
	for (i = 0; i < dm->n; i++)
		if (dm->maps[i].start <= end && start <= dm->maps[i].end)
			return VIOMMU_S_INVAL;
	if (dm->n >= M.max_per_domain || M.total >= M.max_mappings)
		return VIOMMU_S_NOMEM;
	cr_assert_lt(dm->n, M_MAPS, "the model's array is full");
	for (i = 0; i < dm->n && dm->maps[i].start < start; i++)
		;
	memmove(&dm->maps[i + 1], &dm->maps[i], (dm->n - i) * sizeof(dm->maps[0]));
	dm->maps[i] = (struct m_map){ start, end, phys, flags };
	dm->n++;
	M.total++;
	return VIOMMU_S_OK;
}

static uint8_t m_unmap(uint32_t d, uint64_t start, uint64_t end)
{
	struct m_domain *dm = &M.dom[d];
	unsigned i, k = 0;

	if (!dm->live)
		return VIOMMU_S_NOENT;
	for (i = 0; i < dm->n; i++) {
		const struct m_map *x = &dm->maps[i];

		if (x->start <= end && start <= x->end && (x->start < start || x->end > end))
			return VIOMMU_S_RANGE; /* would split it */
	}
	for (i = 0; i < dm->n; i++)
		if (!(dm->maps[i].start >= start && dm->maps[i].end <= end))
			dm->maps[k++] = dm->maps[i];
	M.total -= dm->n - k;
	dm->n = k;
	return VIOMMU_S_OK;
}

static void m_fault(struct viommu_answer *a, uint32_t reason, uint64_t addr)
{
	a->result = VIOMMU_XLATE_FAULT;
	a->reason = reason;
	a->fault_addr = addr;
}

static void m_translate(const struct viommu_query *q, struct viommu_answer *a)
{
	uint64_t last = q->iova + (q->size ? q->size - 1 : 0), cur = q->iova;
	int e = m_ep(q->endpoint);
	const struct m_domain *dm;
	bool first = true;

	memset(a, 0, sizeof(*a));
	if (e < 0)
		return m_fault(a, VIOMMU_FAULT_R_UNKNOWN, q->iova);
	if (q->endpoint == 10) {
		a->result = VIOMMU_XLATE_IDENTITY;
		a->pa = q->iova;
		return;
	}
	if (!M.attached[e])
		return m_fault(a, VIOMMU_FAULT_R_DOMAIN, q->iova);
	dm = &M.dom[M.attached[e]];
	cr_assert_geq(last, q->iova, "probes here stay below 2^64");
	for (;;) {
		const struct m_map *x = NULL;

		for (unsigned i = 0; i < dm->n; i++)
			if (dm->maps[i].start <= cur && cur <= dm->maps[i].end)
				x = &dm->maps[i];
		if (!x || (x->flags & q->access & ~VIOMMU_QUERY_F_EXTENT) != (q->access & ~VIOMMU_QUERY_F_EXTENT))
			return m_fault(a, VIOMMU_FAULT_R_MAPPING, cur);
		if (first) {
			a->pa = x->phys + (q->iova - x->start);
			a->ext_start = x->start;
			a->ext_end = x->end;
			a->ext_phys = x->phys;
			a->ext_flags = x->flags;
			first = false;
		}
		if (x->end >= last)
			break;
		cur = x->end + 1;
	}
	a->result = VIOMMU_XLATE_HIT;
}

/* ---- the device side ---- */

static struct viommu_device *dev;
static struct viommu_fastpath *fp;
static struct viommu_reader *rd;

static void setup_device(void)
{
	struct viommu_config cfg;
	struct viommu_fastpath_opts o = { .nodes = 2048, .extents = 16384, .hash_buckets = 256 };

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert_not_null(dev);
	for (int i = 0; i < M_EPS; i++)
		cr_assert_eq(viommu_device_add_endpoint(dev, ep_ids[i], ep_ids[i] != 10, NULL, 0), 0);
	o.bpf = true; /* every answer is checked on the BPF path too */
	fp = viommu_fastpath_new(dev, &o);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(fp, "viommu_fastpath_new: %s", strerror(errno));
	rd = viommu_reader_open(fp);
	cr_assert_not_null(rd);
	memset(&M, 0, sizeof(M));
	M.max_mappings = viommu_device_config(dev)->max_mappings;
	M.max_per_domain = viommu_device_config(dev)->max_mappings_per_domain;
}

static void teardown_device(void)
{
	viommu_reader_close(rd);
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
	rd = NULL;
	fp = NULL;
	dev = NULL;
}

/* IOVAs where the radix has boundaries worth crossing: low memory, a 1 GiB boundary (level-3
 * slots), a 512 GiB boundary (level-2). Windows of 256 pages, so requests collide. */
static uint64_t rnd_iova_page(void)
{
	static const uint64_t base[] = { 0, (1ull << 30) - (128ull << 12), (1ull << 39) - (128ull << 12) };

	return base[rnd() % 3] + ((rnd() % 256) << 12);
}

static uint64_t rnd_pages(void)
{
	switch (rnd() % 8) {
	case 0:
		return 1 + rnd() % 64;
	case 1:
		return 512; /* 2 MiB, maybe a level-4 leaf */
	default:
		return 1 + rnd() % 3;
	}
}

static const char *const op_names[] = { "ATTACH", "DETACH", "MAP", "UNMAP", "MAP run" };

static void step(unsigned seed, unsigned n)
{
	uint32_t d = 1 + (uint32_t)(rnd() % M_DOMAINS);
	uint32_t ep = rnd() % 16 ? ep_ids[rnd() % M_EPS] : 77; /* sometimes unknown */
	uint64_t start = rnd_iova_page(), pages = rnd_pages(), phys = (rnd() % (1ull << 36)) << 12;
	uint32_t flags = 1 + (uint32_t)(rnd() % 3);
	unsigned op = (unsigned)(rnd() % 16);
	uint8_t got, want;

	op = op < 2 ? 0 : op < 3 ? 1 : op < 9 ? 2 : op < 13 ? 3 : 4;
	switch (op) {
	case 0:
		want = m_attach(d, ep);
		got = test_attach(dev, d, ep, 0);
		break;
	case 1:
		want = m_detach(d, ep);
		got = test_detach(dev, d, ep);
		break;
	case 2:
		want = m_map(d, start, start + (pages << 12) - 1, phys, flags);
		got = test_map(dev, d, start, start + (pages << 12) - 1, phys, flags);
		break;
	case 3: /* often not on mapping boundaries: splits are refused */
		pages = rnd() % 4 ? pages : 64 + rnd() % 64;
		want = m_unmap(d, start, start + (pages << 12) - 1);
		got = test_unmap(dev, d, start, start + (pages << 12) - 1);
		break;
	default: { /* a scatter list's worth of adjacent small mappings, as Linux maps one */
		unsigned k = 17 + (unsigned)(rnd() % 48), sz = 1 + (unsigned)(rnd() % 2);

		if (!M.dom[d].live) { /* give the run a domain first */
			uint32_t a = ep_ids[rnd() % 3];

			want = m_attach(d, a);
			got = test_attach(dev, d, a, 0);
			cr_assert_eq(got, want, "seed %u step %u: ATTACH before a run: device %s, model %s",
				     seed, n, viommu_status_name(got), viommu_status_name(want));
		}
		for (unsigned i = 0; i < k; i++) {
			uint64_t s = start + ((uint64_t)i * sz << 12);
			uint32_t f = rnd() % 32 ? 3 : 1; /* now and then a read-only hole in the run */

			want = m_map(d, s, s + ((uint64_t)sz << 12) - 1, phys + ((uint64_t)(i * 5 % 97) << 12), f);
			got = test_map(dev, d, s, s + ((uint64_t)sz << 12) - 1,
				       phys + ((uint64_t)(i * 5 % 97) << 12), f);
			cr_assert_eq(got, want, "seed %u step %u: MAP run piece %u: device %s, model %s", seed, n,
				     i, viommu_status_name(got), viommu_status_name(want));
		}
		return;
	}
	}
	cr_assert_eq(got, want, "seed %u step %u: %s domain %u ep 0x%x [0x%llx +%llu pages]: device %s, model %s",
		     seed, n, op_names[op], d, ep, (unsigned long long)start, (unsigned long long)pages,
		     viommu_status_name(got), viommu_status_name(want));
}

static void same(unsigned seed, unsigned n, const char *who, const struct viommu_query *q,
		 const struct viommu_answer *want, const struct viommu_answer *got)
{
	bool ok = got->result == want->result;

	if (ok && want->result == VIOMMU_XLATE_HIT) /* the whole extent, or a run of it if not asked */
		ok = viommu_fastpath_agrees(q, want, got);
	else if (ok && want->result == VIOMMU_XLATE_IDENTITY)
		ok = got->pa == want->pa;
	else if (ok && want->result == VIOMMU_XLATE_FAULT)
		ok = got->reason == want->reason && got->fault_addr == want->fault_addr;
	cr_assert(ok, "seed %u step %u: %s: ep 0x%x iova 0x%llx size 0x%llx access %u: result %u pa 0x%llx "
		      "extent [0x%llx, 0x%llx] reason %u addr 0x%llx; model: result %u pa 0x%llx extent "
		      "[0x%llx, 0x%llx] reason %u addr 0x%llx",
		  seed, n, who, q->endpoint, (unsigned long long)q->iova, (unsigned long long)q->size,
		  q->access, got->result, (unsigned long long)got->pa, (unsigned long long)got->ext_start,
		  (unsigned long long)got->ext_end, got->reason, (unsigned long long)got->fault_addr,
		  want->result, (unsigned long long)want->pa, (unsigned long long)want->ext_start,
		  (unsigned long long)want->ext_end, want->reason, (unsigned long long)want->fault_addr);
}

/* Probes: often the start of a mapping and a long reach, so ranges cross many extents. */
static void probe(unsigned seed, unsigned n, unsigned nq, unsigned *long_hits)
{
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer want[VIOMMU_BULK_MAX], store, user[VIOMMU_BULK_MAX], one, bpf[VIOMMU_BULK_MAX];

	for (unsigned i = 0; i < nq; i++) {
		uint32_t e = (uint32_t)(rnd() % M_EPS);
		const struct m_domain *dm = &M.dom[M.attached[e]];
		uint64_t iova = rnd_iova_page() + (rnd() % 2 ? rnd() % 4096 : 0);

		if (M.attached[e] && dm->n && rnd() % 4)
			iova = dm->maps[rnd() % dm->n].start + (rnd() % 2 ? rnd() % 4096 : 0);
		q[i] = (struct viommu_query){
			.endpoint = rnd() % 32 ? ep_ids[e] : 0x40100,
			.access = (1 + (uint32_t)(rnd() % 3)) | (rnd() % 2 ? VIOMMU_QUERY_F_EXTENT : 0),
			.iova = iova,
			.size = rnd() % 3 ? 1 + rnd() % (96ull << 12) : 1 + rnd() % 16,
		};
		m_translate(&q[i], &want[i]);
	}
	viommu_reader_translate_bulk(rd, q, user, nq);
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, q, bpf, nq, false), 0);
	{
		char who[64];

		snprintf(who, sizeof(who), "seed %u step %u: the userspace reader (bulk PAs)", seed, n);
		test_check_bulk_pa(rd, q, want, nq, who);
	}
	for (unsigned i = 0; i < nq; i++) {
		viommu_device_answer(dev, &q[i], &store);
		same(seed, n, "the store", &q[i], &want[i], &store);
		same(seed, n, "the userspace reader (bulk)", &q[i], &want[i], &user[i]);
		viommu_reader_translate(rd, &q[i], &one);
		same(seed, n, "the userspace reader", &q[i], &want[i], &one);
		same(seed, n, "the BPF program", &q[i], &want[i], &bpf[i]);
		if (want[i].result == VIOMMU_XLATE_HIT && want[i].ext_end - q[i].iova < q[i].size - 1) {
			/* crossed into another extent: count those that crossed many */
			uint64_t last = q[i].iova + q[i].size - 1;
			unsigned crossed = 0;
			const struct m_domain *dm = &M.dom[M.attached[m_ep(q[i].endpoint)]];

			for (unsigned k = 0; k < dm->n; k++)
				crossed += dm->maps[k].start <= last && dm->maps[k].end >= q[i].iova;
			*long_hits += crossed > VIOMMU_SPAN_MAX;
		}
	}
}

static unsigned model_seeds(void)
{
	const char *s = getenv("VIOMMU_MODEL_SEEDS");

	return s ? (unsigned)strtoul(s, NULL, 0) : 48;
}

TestSuite(model); /* no .timeout: see tests/test_trust.c */

Test(model, random_request_sequences_agree_with_the_spec_model_on_every_path)
{
	unsigned seeds = model_seeds(), long_hits = 0, steps = 0;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned seed = 1; seed <= seeds; seed++) {
		setup_device();
		seed_state = 0x9e3779b97f4a7c15ull * seed;
		for (unsigned n = 0; n < 300; n++, steps++) {
			step(seed, n);
			if (n % 3 == 0)
				probe(seed, n, 24, &long_hits);
			if (n % 50 == 49) {
				cr_assert_eq(viommu_device_check(dev), 0, "seed %u step %u", seed, n);
				cr_assert_eq(viommu_fastpath_check(fp), 0, "seed %u step %u", seed, n);
			}
		}
		probe(seed, 300, VIOMMU_BULK_MAX, &long_hits);
		teardown_device();
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_log_info("model: %u seeds, %u requests, %u hits across more than %u extents, %.1f s", seeds, steps,
		    long_hits, VIOMMU_SPAN_MAX, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	cr_assert_gt(long_hits, 0, "some probes crossed more than VIOMMU_SPAN_MAX mappings");
}
