// SPDX-License-Identifier: MIT
/*
 * many_vms (issue 11, "Many VMs per host"): N devices with fast paths in one process, as a host
 * running N VMs holds them, each with a Linux guest's mapping set: one-page MAPs clustered in a
 * few regions that grow down from the top of their windows (Linux's IOVA allocator: below 4 GiB
 * first, then 64-bit windows), with holes where pages were unmapped. Device 0 holds 10K
 * mappings; the others a log-uniform count between 300 and 10K.
 *
 * Memory, measured three ways and reported per device:
 *   shm   the memfds' allocated pages (fstat st_blocks, viommu_fastpath_memory): kernel memory
 *         held for the fast path's shared state whoever maps it; exact per device;
 *   heap  this process's RssAnon delta (/proc/self/status) over the N devices: the device
 *         cores' stores and the writers' bookkeeping (anonymous memory actually touched);
 *   sys   /proc/meminfo deltas of Shmem and VmallocUsed (system-wide, so other processes add
 *         noise): a cross-check that nothing else grew, and where the BPF replica shows up.
 * Then, for comparison, devices made as before this change (the BPF maps at the default
 * sizes: viommu_fastpath_opts.bpf), whose kernel memory is each map's fdinfo "memlock".
 *
 * Lookups: random single lookups over all N devices (each query through its device's reader),
 * against the same loop over device 0 alone and over one device holding the same mappings (one
 * domain and endpoint per guest), timed together; every answer is first checked against the
 * store of the device that answers it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenarios.h"
#include "wire.h"

#define VMS_EP 8u
#define VMS_DOMAIN 1u
#define VMS_CAP_MAPPINGS 12288u /* the caps each device promises: a 10K guest fits */
#define VMS_CAP_DOMAINS 64u

struct vms_vm {
	struct viommu_device *dev;
	struct viommu_fastpath *fp;
	struct viommu_reader *rd;
	uint64_t *iova; /* the mapped pages */
	size_t n;
};

struct vms_ctx {
	struct vms_vm *vm;
	unsigned nvm;
	uint32_t *vm_of; /* per query: the device it goes to */
	struct viommu_reader **rd; /* per device */
	struct viommu_query *q;
	size_t nq;
	uint32_t *vm0_of; /* the single-device set: device 0 for every query */
	struct viommu_query *q0;
	uint64_t mapped;
	double mem_idle, mem_full, mem_vm0; /* bytes per device: shm + heap; device 0's shm */
	/* The same mappings in one device, one domain and endpoint per guest: what N fast paths
	 * cost against one holding as much. */
	struct vms_vm big;
	struct viommu_reader **big_rd; /* nvm copies of big.rd */
	struct viommu_query *qbig; /* q with each guest's endpoint in the big device */
	double mem_big;
};

/* ---- memory figures ---- */

struct vms_mem {
	long rss_anon, rss_shmem, shmem, vmalloc; /* kB */
};

static long kb_field(const char *path, const char *name)
{
	char line[256];
	size_t len = strlen(name);
	long v = -1;
	FILE *f = fopen(path, "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static struct vms_mem vms_mem_now(void)
{
	return (struct vms_mem){
		.rss_anon = kb_field("/proc/self/status", "RssAnon"),
		.rss_shmem = kb_field("/proc/self/status", "RssShmem"),
		.shmem = kb_field("/proc/meminfo", "Shmem"),
		.vmalloc = kb_field("/proc/meminfo", "VmallocUsed"),
	};
}

static uint64_t vms_shm_bytes(const struct vms_vm *vm, unsigned n, uint64_t *bpf)
{
	uint64_t sum = 0;

	*bpf = 0;
	for (unsigned i = 0; i < n; i++) {
		struct viommu_fastpath_mem m;

		if (viommu_fastpath_memory(vm[i].fp, &m))
			bench_fail("viommu_fastpath_memory: %s", strerror(errno));
		sum += m.shm_bytes;
		*bpf += m.bpf_bytes;
	}
	return sum;
}

/* ---- devices ---- */

static struct viommu_device *vms_device(void)
{
	struct viommu_config cfg;
	struct viommu_device *dev;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_domains = VMS_CAP_DOMAINS;
	cfg.max_mappings = VMS_CAP_MAPPINGS;
	cfg.max_mappings_per_domain = VMS_CAP_MAPPINGS;
	dev = viommu_device_new(&cfg);
	if (!dev)
		bench_fail("viommu_device_new: %s", strerror(errno));
	if (viommu_device_add_endpoint(dev, VMS_EP, true, NULL, 0))
		bench_fail("viommu_device_add_endpoint failed");
	return dev;
}

/* Pools sized for the caps, for any layout (no overcommit): the fast path derives the same caps
 * from them (viommu_fastpath_new), and the memfd makes the pools' size cost address space
 * only. */
static void vms_opts(struct viommu_fastpath_opts *o)
{
	*o = (struct viommu_fastpath_opts){
		.nodes = VMS_CAP_DOMAINS + VIOMMU_NODES_PER_MAP_WORST * VMS_CAP_MAPPINGS,
		.leaves = VIOMMU_LEAVES_PER_MAP_WORST * VMS_CAP_MAPPINGS,
		.extents = VMS_CAP_MAPPINGS,
		.lazy = true,
	};
}

/* A Linux guest's IOVAs: @n pages in 4 clusters growing down from their windows' tops, one hole
 * every ~16 pages (unmapped pages the allocator has not reused yet). */
static void vms_layout(struct vms_vm *vm, size_t n, uint64_t seed)
{
	static const uint64_t top[4] = { 1ull << 32, 3ull << 30, 1ull << 39, 1ull << 47 };
	static const unsigned share[4] = { 60, 20, 15, 5 }; /* percent of the pages */
	uint64_t s = seed;
	size_t k = 0;

	vm->iova = bench_calloc(n, sizeof(*vm->iova));
	for (int c = 0; c < 4; c++) {
		size_t m = c == 3 ? n - k : n * share[c] / 100;
		uint64_t iova = top[c];

		for (size_t i = 0; i < m; i++) {
			iova -= 4096;
			if (bench_rand(&s) % 16 == 0)
				iova -= 4096;
			vm->iova[k++] = iova;
		}
	}
	vm->n = k;
}

/* @vm's mappings into @dev's @domain, attached to @ep. */
static void vms_populate(struct viommu_device *dev, uint32_t domain, uint32_t ep, const struct vms_vm *vm,
			 uint64_t seed)
{
	uint8_t r[VIOMMU_RD_LEN(struct viommu_wire_map)], a[VIOMMU_RD_LEN(struct viommu_wire_attach)];
	uint64_t s = seed;
	uint8_t st;

	viommu_req_attach(a, domain, ep, 0);
	if ((st = bench_req_send(dev, a, sizeof(a))) != VIOMMU_S_OK)
		bench_fail("many_vms: ATTACH: status %u", st);
	viommu_device_batch_begin(dev);
	for (size_t i = 0; i < vm->n; i++) {
		uint64_t phys = ((bench_rand(&s) % (1ull << 22)) + 1) << 12; /* 16 GiB of guest RAM */

		viommu_req_map(r, domain, vm->iova[i], vm->iova[i] + 4095, phys,
			       VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE);
		if ((st = bench_req_send(dev, r, sizeof(r))) != VIOMMU_S_OK)
			bench_fail("many_vms: MAP 0x%llx (%zu of %zu): status %u",
				   (unsigned long long)vm->iova[i], i, vm->n, st);
		if (i % 64 == 63) { /* a queue kick per 64 requests, as a guest's batches */
			viommu_device_batch_end(dev);
			viommu_device_batch_begin(dev);
		}
	}
	viommu_device_batch_end(dev);
}

/* One device holding every guest's mappings, guest i in domain i + 1 behind endpoint 8 + i;
 * pools sized for these layouts (overcommit, as the benchmark's worlds). */
static void vms_big(struct vms_ctx *x, uint64_t seed)
{
	struct viommu_config cfg;
	struct viommu_fastpath_opts o = { .lazy = true, .overcommit = true };
	struct viommu_fastpath_mem m;
	struct vms_mem m0 = vms_mem_now(), m1;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_domains = x->nvm + 1;
	x->big.dev = viommu_device_new(&cfg);
	if (!x->big.dev)
		bench_fail("viommu_device_new: %s", strerror(errno));
	for (unsigned i = 0; i < x->nvm; i++)
		if (viommu_device_add_endpoint(x->big.dev, VMS_EP + i, true, NULL, 0))
			bench_fail("viommu_device_add_endpoint failed");
	o.nodes = 16 * x->nvm + 1024;
	o.leaves = (uint32_t)(x->mapped / 256 + 16 * x->nvm);
	o.extents = (uint32_t)(x->mapped + 1024);
	if (!(x->big.fp = viommu_fastpath_new(x->big.dev, &o)))
		bench_fail("many_vms: viommu_fastpath_new (one device): %s", strerror(errno));
	for (unsigned i = 0; i < x->nvm; i++)
		vms_populate(x->big.dev, 1 + i, VMS_EP + i, &x->vm[i], seed * 31 + i);
	if (!(x->big.rd = viommu_reader_open(x->big.fp)))
		bench_fail("many_vms: viommu_reader_open: %s", strerror(errno));
	m1 = vms_mem_now();
	if (viommu_fastpath_memory(x->big.fp, &m))
		bench_fail("viommu_fastpath_memory: %s", strerror(errno));
	x->mem_big = (double)m.shm_bytes + (double)(m1.rss_anon - m0.rss_anon) * 1024.0;
	printf("# many_vms one device with the same %llu mappings in %u domains: shm %.1f MiB, heap %.1f MiB\n",
	       (unsigned long long)x->mapped, x->nvm, m.shm_bytes / 1048576.0,
	       (m1.rss_anon - m0.rss_anon) / 1024.0);
}

static unsigned vms_count(void)
{
	const char *e = getenv("VIOMMU_BENCH_VMS");

	if (e && atoi(e) > 0)
		return (unsigned)atoi(e);
	return bench_opt.mode == BENCH_SMOKE ? 8 : bench_opt.mode == BENCH_QUICK ? 200 : 1000;
}

/* ---- the scenario ---- */

int setup_vms(struct bench_ctx *c)
{
	struct vms_ctx *x = bench_calloc(1, sizeof(*x));
	struct viommu_fastpath_opts o;
	struct vms_mem m0, m1, m2;
	uint64_t seed = 0x7a11ull, bpf, shm_idle, shm_full, mapped = 0, t0, pop_seed;
	unsigned n = vms_count();

	c->priv = x;
	x->nvm = n;
	x->vm = bench_calloc(n, sizeof(*x->vm));
	vms_opts(&o);
	m0 = vms_mem_now();
	t0 = bench_now_ns();
	for (unsigned i = 0; i < n; i++) {
		x->vm[i].dev = vms_device();
		x->vm[i].fp = viommu_fastpath_new(x->vm[i].dev, &o);
		if (!x->vm[i].fp)
			bench_fail("many_vms: viommu_fastpath_new (device %u): %s", i, strerror(errno));
	}
	m1 = vms_mem_now();
	shm_idle = vms_shm_bytes(x->vm, n, &bpf);
	printf("# many_vms: %u devices made in %.2f s (caps %u domains, %u mappings each; pools %u nodes, "
	       "%u leaves, %u records: %.0f MiB of memfd each, untouched)\n", n,
	       (bench_now_ns() - t0) / 1e9, VMS_CAP_DOMAINS, VMS_CAP_MAPPINGS, o.nodes, o.leaves,
	       o.extents,
	       ((double)o.nodes * sizeof(struct viommu_node) + (double)o.leaves * (sizeof(struct viommu_leaf) + sizeof(struct viommu_ptes)) +
		(double)o.extents * sizeof(struct viommu_extent_rec) +
		(double)VIOMMU_HASH_BUCKETS_DEFAULT * sizeof(struct viommu_hash_bucket)) / 1048576.0);
	printf("# many_vms idle, per device: shm %.1f KiB (memfd st_blocks), heap %.1f KiB (RssAnon), "
	       "sys Shmem %+.1f KiB, VmallocUsed %+.1f KiB, BPF %llu B\n",
	       shm_idle / 1024.0 / n, (double)(m1.rss_anon - m0.rss_anon) / n,
	       (double)(m1.shmem - m0.shmem) / n, (double)(m1.vmalloc - m0.vmalloc) / n,
	       (unsigned long long)bpf);
	t0 = bench_now_ns();
	pop_seed = seed;
	for (unsigned i = 0; i < n; i++) {
		/* Device 0: the 10K guest; the rest log-uniform in [300, 10K]. */
		double u = (double)(bench_rand(&seed) >> 11) / 9007199254740992.0;
		size_t cnt = i == 0 ? 10000 : (size_t)(300.0 * pow(10000.0 / 300.0, u));

		vms_layout(&x->vm[i], cnt, seed + i);
		vms_populate(x->vm[i].dev, VMS_DOMAIN, VMS_EP, &x->vm[i], pop_seed * 31 + i);
		mapped += x->vm[i].n;
		if (!(x->vm[i].rd = viommu_reader_open(x->vm[i].fp)))
			bench_fail("many_vms: viommu_reader_open: %s", strerror(errno));
	}
	m2 = vms_mem_now();
	shm_full = vms_shm_bytes(x->vm, n, &bpf);
	{
		uint64_t b0, s0 = vms_shm_bytes(x->vm, 1, &b0);

		printf("# many_vms: %llu mappings over %u devices (mean %.0f) in %.2f s\n",
		       (unsigned long long)mapped, n, (double)mapped / n, (bench_now_ns() - t0) / 1e9);
		printf("# many_vms mapped, per device: shm %.1f KiB, heap %.1f KiB, sys Shmem %+.1f KiB, "
		       "VmallocUsed %+.1f KiB, BPF %llu B; device 0 (10000 mappings): shm %.1f KiB\n",
		       shm_full / 1024.0 / n, (double)(m2.rss_anon - m0.rss_anon) / n,
		       (double)(m2.shmem - m0.shmem) / n, (double)(m2.vmalloc - m0.vmalloc) / n,
		       (unsigned long long)bpf, s0 / 1024.0);
		printf("# many_vms total: shm %.1f MiB, heap %.1f MiB, RssShmem %.1f MiB for %u devices\n",
		       shm_full / 1048576.0, (m2.rss_anon - m0.rss_anon) / 1024.0,
		       (m2.rss_shmem - m0.rss_shmem) / 1024.0, n);
		x->mem_idle = (double)shm_idle / n + (double)(m1.rss_anon - m0.rss_anon) * 1024.0 / n;
		x->mem_full = (double)shm_full / n + (double)(m2.rss_anon - m0.rss_anon) * 1024.0 / n;
		x->mem_vm0 = (double)s0;
		x->mapped = mapped;
	}
	vms_big(x, pop_seed);
	/* The queries: random mapped pages of random devices; device 0's alone for the baseline. */
	x->nq = bench_opt.nq;
	x->q = bench_calloc(x->nq, sizeof(*x->q));
	x->q0 = bench_calloc(x->nq, sizeof(*x->q0));
	x->vm_of = bench_calloc(x->nq, sizeof(*x->vm_of));
	x->vm0_of = bench_calloc(x->nq, sizeof(*x->vm0_of));
	x->rd = bench_calloc(n, sizeof(*x->rd));
	x->big_rd = bench_calloc(n, sizeof(*x->big_rd));
	x->qbig = bench_calloc(x->nq, sizeof(*x->qbig));
	for (unsigned i = 0; i < n; i++) {
		x->rd[i] = x->vm[i].rd;
		x->big_rd[i] = x->big.rd;
	}
	for (size_t k = 0; k < x->nq; k++) {
		uint32_t v = (uint32_t)(bench_rand(&seed) % n);
		const struct vms_vm *vm = &x->vm[v];

		x->vm_of[k] = v;
		x->q[k] = (struct viommu_query){ .endpoint = VMS_EP, .access = VIOMMU_MAP_F_READ,
						 .iova = vm->iova[bench_rand(&seed) % vm->n] + bench_rand(&seed) % 4096,
						 .size = 1 };
		x->q0[k] = (struct viommu_query){ .endpoint = VMS_EP, .access = VIOMMU_MAP_F_READ,
						  .iova = x->vm[0].iova[bench_rand(&seed) % x->vm[0].n] +
							  bench_rand(&seed) % 4096,
						  .size = 1 };
		x->qbig[k] = x->q[k];
		x->qbig[k].endpoint = VMS_EP + v;
	}
	return 0;
}

/* Devices made as before this change: the BPF maps at the default sizes, per device. */
static void vms_before(void)
{
	unsigned k = bench_opt.mode == BENCH_SMOKE ? 1 : 4;
	struct vms_vm *vm = bench_calloc(k, sizeof(*vm));
	struct vms_mem m0 = vms_mem_now(), m1;
	uint64_t bpf, shm;

	for (unsigned i = 0; i < k; i++) {
		vm[i].dev = vms_device();
		vm[i].fp = viommu_fastpath_new(vm[i].dev, &(struct viommu_fastpath_opts){ .bpf = true, .overcommit = true });
		if (!vm[i].fp) {
			printf("# many_vms: the BPF replica for comparison skipped: %s\n", strerror(errno));
			k = i;
			break;
		}
	}
	m1 = vms_mem_now();
	shm = vms_shm_bytes(vm, k, &bpf);
	if (k)
		printf("# many_vms with the BPF replica (default pools, as every device was before): "
		       "per idle device BPF memlock %.1f MiB, VmallocUsed %+.1f MiB, shm %.1f KiB, heap %.1f KiB\n",
		       bpf / 1048576.0 / k, (m1.vmalloc - m0.vmalloc) / 1024.0 / k, shm / 1024.0 / k,
		       (double)(m1.rss_anon - m0.rss_anon) / k);
	for (unsigned i = 0; i < k; i++) {
		viommu_fastpath_free(vm[i].fp);
		viommu_device_free(vm[i].dev);
	}
	free(vm);
}

struct vms_job_ctx {
	struct viommu_reader **rd;
	const uint32_t *vm_of;
};

__attribute__((flatten)) static uint64_t run_vms(struct bench_job *j, size_t ops)
{
	const struct vms_job_ctx *c = j->ctx;
	struct viommu_answer a = { 0 };
	const struct viommu_query *qv = j->q;
	const size_t qmask = j->qmask, cursor = j->cursor;
	uint64_t sum = 0, miss = 0;

	for (size_t i = 0; i < ops; i++) {
		size_t k = (cursor + i) & qmask;

		if (viommu_reader_translate(c->rd[c->vm_of[k]], &qv[k], &a) <= VIOMMU_XLATE_IDENTITY)
			sum += a.pa;
		else
			miss++;
	}
	j->faults += miss;
	j->cursor += ops;
	return sum;
}

static void vms_verify(const struct vms_ctx *x, const struct viommu_query *q, const uint32_t *vm_of, bool big)
{
	for (size_t k = 0; k < x->nq; k++) {
		const struct vms_vm *vm = big ? &x->big : &x->vm[vm_of[k]];
		struct viommu_answer want, got;

		viommu_device_answer(vm->dev, &q[k], &want);
		viommu_reader_translate(vm->rd, &q[k], &got);
		bench_check_answer("viommu", "many_vms", &q[k], &want, &got, false);
	}
}

void run_vms_scenario(struct bench_ctx *c)
{
	struct vms_ctx *x = c->priv;
	struct vms_job_ctx jc[3] = { { x->rd, x->vm_of }, { x->rd, x->vm0_of }, { x->big_rd, x->vm_of } };
	struct bench_job j[3];
	struct bench_stats st[3];
	char variant[24], note[64];

	vms_verify(x, x->q, x->vm_of, false);
	vms_verify(x, x->q0, x->vm0_of, false);
	vms_verify(x, x->qbig, x->vm_of, true);
	j[0] = (struct bench_job){ .run = run_vms, .ctx = &jc[0], .q = x->q, .qmask = x->nq - 1, .per_op = 1 };
	j[1] = (struct bench_job){ .run = run_vms, .ctx = &jc[1], .q = x->q0, .qmask = x->nq - 1, .per_op = 1 };
	j[2] = (struct bench_job){ .run = run_vms, .ctx = &jc[2], .q = x->qbig, .qmask = x->nq - 1, .per_op = 1 };
	bench_measure_group(j, 3, st);
	for (int k = 0; k < 3; k++)
		if (j[k].faults)
			bench_fail("many_vms: %llu lookups missed", (unsigned long long)j[k].faults);
	snprintf(variant, sizeof(variant), "%u devices", x->nvm);
	snprintf(note, sizeof(note), "per device: idle %.2f MiB, mapped %.2f MiB", x->mem_idle / 1048576.0,
		 x->mem_full / 1048576.0);
	bench_row_print(bench_row_add("many_vms", "4k", x->mapped, 1, "viommu", variant, &st[0], note));
	snprintf(note, sizeof(note), "device 0 alone (10K mappings): shm %.2f MiB", x->mem_vm0 / 1048576.0);
	bench_row_print(bench_row_add("many_vms", "4k", x->vm[0].n, 1, "viommu", "1 device", &st[1], note));
	snprintf(variant, sizeof(variant), "1 device, %u domains", x->nvm);
	snprintf(note, sizeof(note), "the same mappings in one fast path: %.2f MiB", x->mem_big / 1048576.0);
	bench_row_print(bench_row_add("many_vms", "4k", x->mapped, 1, "viommu", variant, &st[2], note));
	printf("# many_vms: a lookup over %u devices costs %.2fx one over device 0 alone, %.2fx one over the "
	       "same mappings in one device\n", x->nvm, st[0].median / st[1].median, st[0].median / st[2].median);
	vms_before();
}

void teardown_vms(struct bench_ctx *c)
{
	struct vms_ctx *x = c->priv;

	for (unsigned i = 0; i < x->nvm; i++) {
		viommu_reader_close(x->vm[i].rd);
		viommu_fastpath_free(x->vm[i].fp);
		viommu_device_free(x->vm[i].dev);
		free(x->vm[i].iova);
	}
	viommu_reader_close(x->big.rd);
	viommu_fastpath_free(x->big.fp);
	viommu_device_free(x->big.dev);
	free(x->big_rd);
	free(x->qbig);
	free(x->vm);
	free(x->q);
	free(x->q0);
	free(x->vm_of);
	free(x->vm0_of);
	free(x->rd);
	free(x);
}
