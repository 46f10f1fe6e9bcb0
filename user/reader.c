// SPDX-License-Identifier: MIT
/* Userspace readers: opening the shared maps (this process or another), bulk lookups, faults. */
#include "reader.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>

#include "device.h"
#include "fastpath.h"

enum { R_META, R_EPS, R_EPIDX, R_NODES, R_EXTS, R_HASH, R_READERS, R_COUNT };

static const char *const names[R_COUNT] = {
	"viommu_meta", "viommu_endpoints", "viommu_ep_index", "viommu_nodes",
	"viommu_extents", "viommu_hash", "viommu_readers",
};

/* Claim a free reader slot (pid 0 -> ours). Slots are shared by every process. */
static int claim_slot(struct viommu_reader *r, struct viommu_reader_slot *slots, uint32_t max)
{
	uint32_t pid = (uint32_t)getpid();

	for (uint32_t i = 0; i < max; i++) {
		uint32_t zero = 0;

		if (__atomic_compare_exchange_n(&slots[i].pid, &zero, pid, false, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			r->slot = &slots[i];
			__atomic_store_n(&r->slot->tid, (uint32_t)syscall(SYS_gettid), __ATOMIC_RELAXED);
			__atomic_store_n(&r->slot->active, 0, __ATOMIC_RELAXED);
			return 0;
		}
	}
	return -ENOSPC;
}

/* The writer's membarrier(GLOBAL_EXPEDITED) reaches only registered processes. */
static void register_membarrier(void)
{
	int q = (int)syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	if (q > 0 && (q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
		syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0);
}

struct viommu_reader *viommu_reader_open(struct viommu_fastpath *fp)
{
	const struct viommu_fp_view *v = viommu_fastpath_view(fp);
	struct viommu_reader *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return NULL;
	r->meta = v->meta;
	r->fence = v->meta->flags & VIOMMU_META_F_READER_FENCE;
	r->eps = v->eps;
	r->ep_index = v->ep_index;
	r->nodes = v->nodes;
	r->exts = v->exts;
	r->buckets = v->buckets;
	r->nodes_max = v->nodes_max;
	r->extents_max = v->extents_max;
	r->hash_mask = v->hash_mask;
	r->dev = viommu_fastpath_device(fp);
	r->fault_prog_fd = -1;
	if ((err = claim_slot(r, v->readers, VIOMMU_READERS_MAX))) {
		free(r);
		errno = -err;
		return NULL;
	}
	register_membarrier();
	viommu_reader_tlb_flush(r);
	return r;
}

/* Map the fds (R_COUNT maps + the fault program) into a reader of another process. */
static struct viommu_reader *open_fds(int fds[R_COUNT + 1])
{
	struct viommu_reader *r = calloc(1, sizeof(*r));
	int err = 0;

	if (!r) {
		err = -ENOMEM;
		goto fail;
	}
	r->fault_prog_fd = fds[R_COUNT];
	for (int i = 0; i < R_COUNT; i++) {
		struct bpf_map_info info = { 0 };
		__u32 len = sizeof(info);
		size_t bytes, page = (size_t)sysconf(_SC_PAGESIZE);

		r->fds[i] = fds[i];
		if (bpf_obj_get_info_by_fd(fds[i], &info, &len)) {
			err = -errno;
			goto fail;
		}
		bytes = (((info.value_size + 7) & ~7u) * (size_t)info.max_entries + page - 1) & ~(page - 1);
		/* Read-only for the data maps: the kernel clears VM_MAYWRITE on a read-only mapping
		 * of a BPF map, so once the fd is closed this process cannot write the translator
		 * (mprotect refuses). A BPF_F_RDONLY fd cannot be mmapped at all (the kernel needs
		 * VM_SHARED, which a read-only file loses), hence a read-write fd, closed at once. */
		r->maps[i] = mmap(NULL, bytes, i == R_READERS ? PROT_READ | PROT_WRITE : PROT_READ,
				  MAP_SHARED, fds[i], 0);
		if (r->maps[i] == MAP_FAILED) {
			r->maps[i] = NULL;
			err = -errno;
			goto fail;
		}
		close(fds[i]);
		r->fds[i] = fds[i] = -1;
		r->map_len[i] = bytes;
		r->nmaps = i + 1;
		if (i == R_NODES)
			r->nodes_max = info.max_entries;
		else if (i == R_EXTS)
			r->extents_max = info.max_entries;
		else if (i == R_HASH)
			r->hash_mask = info.max_entries - 1;
	}
	r->meta = r->maps[R_META];
	r->eps = r->maps[R_EPS];
	r->ep_index = r->maps[R_EPIDX];
	r->nodes = r->maps[R_NODES];
	r->exts = r->maps[R_EXTS];
	r->buckets = r->maps[R_HASH];
	if (__atomic_load_n(&r->meta->magic, __ATOMIC_ACQUIRE) != VIOMMU_ABI_MAGIC ||
	    r->meta->abi_version != VIOMMU_ABI_VERSION) {
		err = -EPROTO;
		goto fail;
	}
	if ((err = claim_slot(r, r->maps[R_READERS], VIOMMU_READERS_MAX)))
		goto fail;
	r->fence = r->meta->flags & VIOMMU_META_F_READER_FENCE;
	register_membarrier();
	viommu_reader_tlb_flush(r);
	return r;
fail:
	if (r) {
		viommu_reader_close(r);
	} else {
		for (int i = 0; i <= R_COUNT; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	}
	errno = -err;
	return NULL;
}

struct viommu_reader *viommu_reader_open_pinned(const char *dir)
{
	int fds[R_COUNT + 1];
	char path[512];

	for (int i = 0; i <= R_COUNT; i++)
		fds[i] = -1;
	for (int i = 0; i <= R_COUNT; i++) {
		int err;

		snprintf(path, sizeof(path), "%s/%s", dir, i < R_COUNT ? names[i] : "viommu_report_fault");
		fds[i] = bpf_obj_get(path);
		if (fds[i] < 0) {
			err = errno;
			for (int j = 0; j < i; j++)
				close(fds[j]);
			errno = err;
			return NULL;
		}
	}
	return open_fds(fds);
}

struct viommu_reader *viommu_reader_open_socket(int sock)
{
	int fds[R_COUNT + 1];
	char cbuf[CMSG_SPACE(sizeof(fds))], tag;
	struct iovec iov = { .iov_base = &tag, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;

	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0)
		return NULL;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(fds))) {
		errno = EPROTO;
		return NULL;
	}
	memcpy(fds, CMSG_DATA(c), sizeof(fds));
	return open_fds(fds);
}

void viommu_reader_close(struct viommu_reader *r)
{
	if (!r)
		return;
	if (r->slot) {
		__atomic_store_n(&r->slot->active, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&r->slot->pid, 0, __ATOMIC_RELEASE);
	}
	for (int i = 0; i < r->nmaps; i++)
		if (r->maps[i])
			munmap(r->maps[i], r->map_len[i]);
	for (int i = 0; i < r->nmaps; i++)
		if (r->fds[i] >= 0)
			close(r->fds[i]);
	if (r->fault_prog_fd >= 0)
		close(r->fault_prog_fd);
	free(r);
}

static void count(struct viommu_reader *r, const struct viommu_answer *a)
{
	struct viommu_reader_slot *s = r->slot;

	/* Counters of our own slot: relaxed, read racily by `viommu stat`. */
	__atomic_store_n(&s->lookups, s->lookups + 1, __ATOMIC_RELAXED);
	if (a->result == VIOMMU_FP_HIT)
		__atomic_store_n(&s->hits, s->hits + 1, __ATOMIC_RELAXED);
	else if (a->result == VIOMMU_FP_IDENT)
		__atomic_store_n(&s->identity, s->identity + 1, __ATOMIC_RELAXED);
	else if (a->result == VIOMMU_FP_RETRY)
		__atomic_store_n(&s->retries, s->retries + 1, __ATOMIC_RELAXED);
}

/*
 * Bulk lookups pipeline their cache misses (as DPDK's rte_hash bulk lookup does). A single
 * lookup is a chain of dependent misses: hash bucket -> level-5 node (header and slot lines) ->
 * extent record. Over a burst, each stage's addresses are known for every query before any of
 * them is needed, so the misses of one stage overlap: stage 1 prefetches every bucket, stage 2
 * reads the buckets (now cached) and prefetches the nodes or records they name, stage 3 reads
 * the node slots and prefetches the records; then the real, validated lookups run on warm lines.
 * The stages only compute addresses from unvalidated loads and prefetch them: a racing writer
 * can make a prefetch useless, never an answer wrong (the lookups validate everything).
 */
/* The slot word the hash holds for @key (0 if none), unvalidated: for prefetching only. */
static __u64 prefetch_slot(const struct viommu_reader *r, __u64 key)
{
	const struct viommu_hash_bucket *b = &r->buckets[viommu_hash_index(key, r->hash_mask)];

	for (int w = 0; w < VIOMMU_HASH_WAYS; w++)
		if (__atomic_load_n(&b->key[w], __ATOMIC_RELAXED) == key)
			return __atomic_load_n(&b->val[w], __ATOMIC_RELAXED);
	return 0;
}

static void prefetch_burst(const struct viommu_reader *r, const struct viommu_query *q, unsigned n)
{
	__u64 key[VIOMMU_BULK_MAX], slot[VIOMMU_BULK_MAX];
	const unsigned l5 = VIOMMU_LEVEL_SHIFT(VIOMMU_RADIX_LEVELS - 1);

	for (unsigned i = 0; i < n; i++) {
		const struct viommu_ep_entry *e;

		key[i] = 0;
		if (q[i].endpoint >= VIOMMU_EP_DENSE) /* sparse ids: the lookup finds them */
			continue;
		e = &r->eps[q[i].endpoint];
		if (__atomic_load_n(&e->state, __ATOMIC_RELAXED) != VIOMMU_FP_ATTACHED)
			continue;
		key[i] = VIOMMU_HASH_KEY(__atomic_load_n(&e->domain_slot, __ATOMIC_RELAXED), q[i].iova);
		__builtin_prefetch(&r->buckets[viommu_hash_index(key[i], r->hash_mask)]);
	}
	for (unsigned i = 0; i < n; i++) {
		__u32 idx;

		slot[i] = key[i] ? prefetch_slot(r, key[i]) : 0;
		if (!slot[i])
			continue;
		idx = VIOMMU_SLOT_IDX(slot[i]);
		if (VIOMMU_SLOT_TAG(slot[i]) == VIOMMU_SLOT_EXTENT && idx < r->extents_max) {
			__builtin_prefetch(&r->exts[idx]);
			slot[i] = 0;
		} else if (VIOMMU_SLOT_TAG(slot[i]) == VIOMMU_SLOT_NODE && idx < r->nodes_max) {
			__builtin_prefetch(&r->nodes[idx]);
			__builtin_prefetch(&r->nodes[idx].slot[(q[i].iova >> l5) & (VIOMMU_RADIX_FANOUT - 1)]);
		} else {
			slot[i] = 0;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		__u64 ent;
		__u32 idx;

		if (!key[i] || VIOMMU_SLOT_TAG(slot[i]) != VIOMMU_SLOT_NODE)
			continue;
		ent = __atomic_load_n(&r->nodes[VIOMMU_SLOT_IDX(slot[i])]
					       .slot[(q[i].iova >> l5) & (VIOMMU_RADIX_FANOUT - 1)],
				      __ATOMIC_RELAXED);
		idx = VIOMMU_SLOT_IDX(ent);
		if (VIOMMU_SLOT_TAG(ent) == VIOMMU_SLOT_EXTENT && idx < r->extents_max)
			__builtin_prefetch(&r->exts[idx]);
	}
}

uint64_t viommu_reader_translate_bulk(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a, unsigned n)
{
	uint64_t mask = 0;

	if (n > VIOMMU_BULK_MAX)
		n = VIOMMU_BULK_MAX;
	prefetch_burst(r, q, n);
	for (unsigned i = 0; i < n; i++) {
		viommu_reader_translate(r, &q[i], &a[i]);
		if (a[i].result == VIOMMU_FP_HIT || a[i].result == VIOMMU_FP_IDENT)
			mask |= 1ull << i;
		count(r, &a[i]);
	}
	return mask;
}

uint32_t viommu_reader_translate_rest(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a)
{
	struct viommu_query c;
	struct viommu_answer ca;

	/* Terminates: each MORE moves next forward by at least VIOMMU_SPAN_MAX extents. */
	do {
		viommu_query_continue(q, a, &c);
		viommu_translate(r, &c, &ca, NULL);
	} while (!viommu_answer_fold(q, a, &ca));
	return a->result;
}

int viommu_reader_report_fault(struct viommu_reader *r, const struct viommu_query *q,
			       const struct viommu_answer *a)
{
	struct viommu_fault_rec rec = {
		.endpoint = q->endpoint,
		.reason = (uint8_t)a->reason,
		.access = q->access,
		.address = a->fault_addr,
	};

	if (a->result != VIOMMU_FP_FAULT || a->reason > 2)
		return -EINVAL;
	__atomic_store_n(&r->slot->faults[a->reason], r->slot->faults[a->reason] + 1, __ATOMIC_RELAXED);
	if (r->dev)
		return viommu_device_report_fault(r->dev, rec.endpoint, rec.reason, rec.access,
						  rec.address);
	/* Another process: through the device's BPF ring buffer. */
	{
		LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &rec, .ctx_size_in = sizeof(rec));

		if (bpf_prog_test_run_opts(r->fault_prog_fd, &o))
			return -errno;
		return o.retval ? -ENOBUFS : 0;
	}
}

/* ---- `viommu stat` ---- */

void viommu_stat_print(const struct viommu_meta *m, const struct viommu_reader_slot *slots,
		       int stats_fd, FILE *out)
{
	struct viommu_stats bpf = { 0 };
	int ncpu = libbpf_num_possible_cpus();
	uint64_t ul = 0, uh = 0, ui = 0, ur = 0, uf[3] = { 0, 0, 0 };
	unsigned nreaders = 0;
	double slots_total = (double)(m->hash_mask + 1) * VIOMMU_HASH_WAYS;

	if (stats_fd >= 0 && ncpu > 0) {
		struct viommu_stats *per = calloc((size_t)ncpu, sizeof(*per));
		uint32_t zero = 0;

		if (per && !bpf_map_lookup_elem(stats_fd, &zero, per)) {
			for (int c = 0; c < ncpu; c++) {
				bpf.lookups += per[c].lookups;
				bpf.hits += per[c].hits;
				bpf.identity += per[c].identity;
				bpf.walks += per[c].walks;
				bpf.hash_hits += per[c].hash_hits;
				bpf.retries += per[c].retries;
				for (int r = 0; r < 3; r++)
					bpf.faults[r] += per[c].faults[r];
			}
		}
		free(per);
	}
	for (uint32_t i = 0; i < VIOMMU_READERS_MAX; i++) {
		const struct viommu_reader_slot *r = &slots[i];

		nreaders += __atomic_load_n(&r->pid, __ATOMIC_RELAXED) != 0;
		ul += __atomic_load_n(&r->lookups, __ATOMIC_RELAXED);
		uh += __atomic_load_n(&r->hits, __ATOMIC_RELAXED);
		ui += __atomic_load_n(&r->identity, __ATOMIC_RELAXED);
		ur += __atomic_load_n(&r->retries, __ATOMIC_RELAXED);
		for (int k = 0; k < 3; k++)
			uf[k] += __atomic_load_n(&r->faults[k], __ATOMIC_RELAXED);
	}
	fprintf(out, "fast path (shared memory in BPF maps)\n");
	fprintf(out, "  endpoints      %u\n", m->endpoints_used);
	fprintf(out, "  domains        %u\n", m->domains_used);
	fprintf(out, "  extents        %u / %u (%zu B each)\n", m->extents_used, m->extents_max,
		sizeof(struct viommu_extent_rec));
	fprintf(out, "  radix nodes    %u / %u (%.2f MiB)\n", m->nodes_used, m->nodes_max,
		m->nodes_used * sizeof(struct viommu_node) / 1048576.0);
	fprintf(out, "  hash           %u / %.0f slots (load %.4f)\n", m->hash_used, slots_total,
		m->hash_used / slots_total);
	fprintf(out, "  bytes/extent   %zu record + %.1f radix (amortised)\n",
		sizeof(struct viommu_extent_rec),
		m->extents_used ? (double)m->nodes_used * sizeof(struct viommu_node) / m->extents_used : 0.0);
	fprintf(out, "  publications   %llu, grace periods %llu (mean %.1f us, %s)\n",
		(unsigned long long)m->publications, (unsigned long long)m->grace_periods,
		m->grace_periods ? m->grace_ns_total / 1e3 / m->grace_periods : 0.0,
		m->flags & VIOMMU_META_F_READER_FENCE ? "reader fences" : "membarrier");
	fprintf(out, "  bpf readers    %llu lookups: %llu hits, %llu identity, %llu faults "
		     "(unknown %llu, domain %llu, mapping %llu); %llu hash hits, %llu walks, %llu retries\n",
		(unsigned long long)bpf.lookups, (unsigned long long)bpf.hits,
		(unsigned long long)bpf.identity,
		(unsigned long long)(bpf.faults[0] + bpf.faults[1] + bpf.faults[2]),
		(unsigned long long)bpf.faults[0], (unsigned long long)bpf.faults[1],
		(unsigned long long)bpf.faults[2], (unsigned long long)bpf.hash_hits,
		(unsigned long long)bpf.walks, (unsigned long long)bpf.retries);
	fprintf(out, "  user readers   %u open; %llu lookups: %llu hits, %llu identity, %llu retries; "
		     "faults reported unknown %llu, domain %llu, mapping %llu\n",
		nreaders, (unsigned long long)ul, (unsigned long long)uh, (unsigned long long)ui,
		(unsigned long long)ur, (unsigned long long)uf[0], (unsigned long long)uf[1],
		(unsigned long long)uf[2]);
}
