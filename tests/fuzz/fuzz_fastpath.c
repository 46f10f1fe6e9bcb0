// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over the request path with the fast path attached: whatever a hostile guest
 * sends, the lockless shared-memory translator (real BPF maps, and the real BPF program) must
 * answer exactly as the device core's authoritative store, and nothing it allocates may leak.
 * Same input format and seeds as fuzz_request.c (user/fuzz_input.h).
 *
 * Devices (with their fast paths) are made once per config and kept across inputs: creating BPF
 * maps per input would cost ~50 ms. Each input starts with a system reset, and the reset's
 * result is itself checked: no domain, node or record left in use. The pools are tiny (32 nodes,
 * 16 records, 4 hash buckets) so exhaustion and rollback are exercised all the time; the
 * selector's 512-byte-granule bit, which the fast path cannot serve, selects instead pools big
 * enough (128 records) for MAP_RUN's runs of up to 64 adjacent mappings, whose probes cross
 * more than VIOMMU_SPAN_MAX extents. Requests with op bit 7 arrive as long scatter lists.
 *
 * Oracles, besides the sanitizers, after every operation: viommu_device_check() and
 * viommu_fastpath_check() (radix identity, generations, slot counts, hash, no leak); and the
 * userspace reader answers every query of the input so far as the store does (same result,
 * PA, extent, fault reason and address). At the end of an input, the BPF program answers the
 * same queries in one batch, and must agree too.
 */
#include <errno.h>

#include "fastpath.h"
#include "fuzz_harness.h"
#include "reader.h"

#define MAX_QUERIES 32

struct variant {
	struct viommu_device *dev;
	struct viommu_fastpath *fp;
	struct viommu_reader *r;
};

/* Config bits that matter to the fast path (a granule below 4 KiB is not served by it; ranges
 * are the core's business): 32 devices at most, each made once. */
#define SEL_MASK                                                                    \
	(VIOMMU_FUZZ_CFG_GRANULE_64K | VIOMMU_FUZZ_CFG_BYPASS_0 | VIOMMU_FUZZ_CFG_LEGACY_BYPASS | \
	 VIOMMU_FUZZ_CFG_SMALL_CAPS | VIOMMU_FUZZ_CFG_FEW_FEATURES)

static struct variant variants[256];

#define SEL_BIG_POOLS VIOMMU_FUZZ_CFG_GRANULE_512

static struct variant *variant_get(uint8_t sel)
{
	/* overcommit: keep the caps, so that the pools run out (the rollback paths) */
	struct viommu_fastpath_opts o = { .nodes = 32, .leaves = 6, .extents = 16, .hash_buckets = 4,
					  .overcommit = true };
	struct variant *v = &variants[sel];

	if (v->dev)
		return v;
	if (sel & SEL_BIG_POOLS)
		o = (struct viommu_fastpath_opts){ .nodes = 64, .leaves = 32, .extents = 128, .hash_buckets = 16,
						   .overcommit = true };
	v->dev = make_device(sel & SEL_MASK);
	o.bpf = true; /* the BPF program answers the same queries at the end */
	/* Windows as small as the pools (a window of 8 MiB; one domain of two without one when
	 * a third arrives): the inputs' IOVAs fall inside, across and outside them, and a replica
	 * of default windows (48 MiB) would cost every check of it more than the input. */
	o.windows = 2;
	o.window_regions = 4;
	v->fp = viommu_fastpath_new(v->dev, &o);
	if (!v->fp)
		FAIL("viommu_fastpath_new: %s (run as root on a kernel with BPF)", strerror(errno));
	v->r = viommu_reader_open(v->fp);
	if (!v->r)
		FAIL("viommu_reader_open: %s", strerror(errno));
	return v;
}

static void same(const struct viommu_query *q, const struct viommu_answer *want,
		 const struct viommu_answer *got, const char *who)
{
	bool ok = got->result == want->result;

	if (ok && want->result == VIOMMU_XLATE_HIT) /* the whole extent, or a run of it if not asked */
		ok = viommu_fastpath_agrees(q, want, got);
	else if (ok && want->result == VIOMMU_XLATE_IDENTITY)
		ok = got->pa == want->pa;
	else if (ok && want->result == VIOMMU_XLATE_FAULT)
		ok = got->reason == want->reason && got->fault_addr == want->fault_addr;
	if (!ok)
		FAIL("%s disagrees with the store: ep %u iova 0x%llx size 0x%llx access %u: result %u "
		     "pa 0x%llx reason %u addr 0x%llx; store: result %u pa 0x%llx reason %u addr 0x%llx",
		     who, q->endpoint, (unsigned long long)q->iova, (unsigned long long)q->size,
		     q->access, got->result, (unsigned long long)got->pa, got->reason,
		     (unsigned long long)got->fault_addr, want->result, (unsigned long long)want->pa,
		     want->reason, (unsigned long long)want->fault_addr);
}

static void check_all(struct variant *v, const struct viommu_query *q, unsigned nq)
{
	int err;

	if ((err = viommu_device_check(v->dev)))
		FAIL("viommu_device_check: %d", err);
	if ((err = viommu_fastpath_check(v->fp)))
		FAIL("viommu_fastpath_check: %d", err);
	struct viommu_answer want[MAX_QUERIES], got[MAX_QUERIES];
	uint64_t pa[MAX_QUERIES], mask, pmask;

	for (unsigned i = 0; i < nq; i++) {
		viommu_device_answer(v->dev, &q[i], &want[i]);
		viommu_reader_translate(v->r, &q[i], &got[i]);
		same(&q[i], &want[i], &got[i], "the userspace reader");
	}
	if (!nq)
		return;
	/* The bursts: of answers, and of PAs (a bit exactly for a range that is one run, not past
	 * 2^64, of a HIT or IDENTITY; its PA the store's). */
	mask = viommu_reader_translate_bulk(v->r, q, got, nq);
	pmask = viommu_reader_translate_bulk_pa(v->r, q, pa, nq);
	for (unsigned i = 0; i < nq; i++) {
		const struct viommu_answer *w = &want[i];
		const uint64_t len1 = q[i].size ? q[i].size - 1 : 0;
		bool hit = w->result == VIOMMU_XLATE_HIT || w->result == VIOMMU_XLATE_IDENTITY;
		bool one_run = q[i].iova + len1 >= q[i].iova &&
			       (w->result == VIOMMU_XLATE_IDENTITY ||
				(w->result == VIOMMU_XLATE_HIT && w->ext_start <= q[i].iova &&
				 len1 <= w->ext_end - q[i].iova));

		same(&q[i], w, &got[i], "the userspace reader's burst");
		if (!!(mask >> i & 1) != hit)
			FAIL("the burst's mask bit %u is %d for result %u", i, (int)(mask >> i & 1), w->result);
		if (!!(pmask >> i & 1) != one_run || (one_run && pa[i] != w->pa))
			FAIL("the burst of PAs: ep %u iova 0x%llx size 0x%llx access %u: bit %d pa 0x%llx; store: "
			     "result %u pa 0x%llx run [0x%llx, 0x%llx]",
			     q[i].endpoint, (unsigned long long)q[i].iova, (unsigned long long)q[i].size, q[i].access,
			     (int)(pmask >> i & 1), (unsigned long long)pa[i], w->result, (unsigned long long)w->pa,
			     (unsigned long long)w->ext_start, (unsigned long long)w->ext_end);
	}
}

/* Queries at the edges of a request's range: its first and last byte, and the bytes around. */
static unsigned add_queries(struct viommu_query *q, unsigned nq, const uint8_t *rd, size_t len)
{
	uint64_t start, end;

	if (len < 24 || (rd[0] != VIOMMU_T_MAP && rd[0] != VIOMMU_T_UNMAP))
		return nq;
	start = viommu_le64(rd + 8);
	end = viommu_le64(rd + 16);
	for (int k = 0; k < 4 && nq < MAX_QUERIES; k++) {
		uint64_t iova = k == 0 ? start : k == 1 ? end : k == 2 ? start - 1 : end + 1;

		q[nq++] = (struct viommu_query){ .endpoint = endpoints[(rd[1] ^ k) % 8],
						 .access = 1u + (k & 1), .iova = iova, .size = 1 };
	}
	return nq;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor c = { data, size };
	struct viommu_query q[MAX_QUERIES];
	struct viommu_answer want[MAX_QUERIES], got[MAX_QUERIES];
	const struct viommu_meta *m;
	struct variant *v;
	bool batch = false;
	unsigned nq = 0;
	uint8_t sel;

	if (take(&c, &sel, 1))
		return 0;
	v = variant_get(sel & (SEL_MASK | SEL_BIG_POOLS));
	m = viommu_fastpath_view(v->fp)->meta;
	viommu_device_system_reset(v->dev);
	if (m->domains_used || m->nodes_used || m->leaves_used || m->extents_used || m->solo_used ||
	    m->hash_used)
		FAIL("a reset left %u domains, %u nodes, %u leaves, %u records, %u solo pages, %u hash entries in use",
		     m->domains_used, m->nodes_used, m->leaves_used, m->extents_used, m->solo_used, m->hash_used);
	for (unsigned ops = 0; ops < VIOMMU_FUZZ_MAX_OPS && c.left; ops++) {
		uint8_t op, b[12], rd[255], wr[VIOMMU_FUZZ_MAX_WR];
		uint64_t iova;

		take(&c, &op, 1);
		switch ((op & 0x7f) % VIOMMU_FUZZ_OP_COUNT) {
		case VIOMMU_FUZZ_OP_REQUEST:
			if (take(&c, b, 3) || take(&c, rd, b[0])) {
				c.left = 0;
				break;
			}
			if (op & VIOMMU_FUZZ_OP_SCATTER)
				request_scattered(v->dev, rd, b[0], wr,
						  (b[1] | b[2] << 8) % (VIOMMU_FUZZ_MAX_WR + 1));
			else
				viommu_device_request_buf(v->dev, rd, b[0], wr,
							  (b[1] | b[2] << 8) % (VIOMMU_FUZZ_MAX_WR + 1));
			nq = add_queries(q, nq, rd, b[0]);
			break;
		case VIOMMU_FUZZ_OP_TRANSLATE:
			if (take(&c, b, 3) || take(&c, &iova, 8)) {
				c.left = 0;
				break;
			}
			if (nq < MAX_QUERIES)
				q[nq++] = (struct viommu_query){
					.endpoint = b[0] < 8 ? endpoints[b[0]] : b[0],
					.access = (b[1] & 3u) | (b[1] & 4u ? VIOMMU_QUERY_F_EXTENT : 0),
					.iova = iova,
					.size = b[2] >= 64 ? 0 : 1ull << (b[2] % 64),
				};
			break;
		case VIOMMU_FUZZ_OP_RESET:
			if (take(&c, b, 1))
				break;
			if (b[0] & 1)
				viommu_device_system_reset(v->dev);
			else
				viommu_device_reset(v->dev);
			break;
		case VIOMMU_FUZZ_OP_CONFIG_WRITE:
			if (take(&c, b, 2) || b[1] > 8 || take(&c, b + 2, b[1]))
				break;
			viommu_device_config_write(v->dev, b[0], b + 2, b[1]);
			break;
		case VIOMMU_FUZZ_OP_EVENTQ:
			take(&c, b, 1);
			break;
		case VIOMMU_FUZZ_OP_BATCH:
			if (batch)
				viommu_device_batch_end(v->dev);
			else
				viommu_device_batch_begin(v->dev);
			batch = !batch;
			break;
		case VIOMMU_FUZZ_OP_MAP_RUN: {
			uint32_t d;
			uint64_t s, e;

			if (map_run(v->dev, &c, &d, &s, &e))
				break;
			/* DMAs across the run: all of it, from inside it, and one byte past it, by
			 * every endpoint (whichever is attached to the domain). */
			for (unsigned k = 0; k < 8 && nq < MAX_QUERIES; k++)
				q[nq++] = (struct viommu_query){
					.endpoint = endpoints[(d + k) % 8],
					.access = 1u + (k & 1),
					.iova = k < 4 ? s : s + (e - s) / 3 + k,
					.size = k % 4 == 3 ? e - s + 2 : e - s + 1 - (k < 4 ? 0 : (e - s) / 3 + k),
				};
			break;
		}
		}
		check_all(v, q, nq);
	}
	if (batch)
		viommu_device_batch_end(v->dev);
	/* The BPF program, on the same shared memory. */
	if (nq) {
		if (viommu_fastpath_bpf_translate(v->fp, q, got, nq, false))
			FAIL("viommu_fastpath_bpf_translate: %s", strerror(errno));
		for (unsigned i = 0; i < nq; i++) {
			viommu_device_answer(v->dev, &q[i], &want[i]);
			same(&q[i], &want[i], &got[i], "the BPF program");
		}
	}
	return 0;
}
