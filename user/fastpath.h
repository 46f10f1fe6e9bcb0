/* SPDX-License-Identifier: MIT */
/*
 * viommu_fastpath: the writer of the shared-memory translator. It observes a device core
 * (device.h) and mirrors every change into BPF_F_MMAPABLE array maps (bpf/viommu_abi.h) before the
 * request completes; readers (reader.h, BPF programs) translate from those maps without locks.
 *
 * Concurrency: one writer — every function here but viommu_fastpath_bpf_translate() (a reader,
 * safe from any thread) runs on the device thread, the same thread that
 * calls viommu_device_request(). Readers run anywhere (reader.h). docs/concurrency.md.
 * Errors: 0 or -errno; constructors NULL + errno.
 */
#ifndef VIOMMU_FASTPATH_H
#define VIOMMU_FASTPATH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "device.h"
#include "viommu_abi.h"

struct viommu_fastpath_opts {
	uint32_t nodes; /* radix node pool (default VIOMMU_NODES_DEFAULT) */
	uint32_t extents; /* extent records (default VIOMMU_EXTENTS_DEFAULT) */
	uint32_t hash_buckets; /* power of two (default VIOMMU_HASH_BUCKETS_DEFAULT) */
	bool lazy; /* no grace period on removal (lazy invalidation); default strict */
	bool bpf_grace; /* strict removal also waits for running BPF programs (synchronize_rcu) */
	/* Userspace readers pay a full fence in viommu_reader_enter() (~5 ns) and a strict removal
	 * needs no membarrier, so no IPI to the readers' CPUs: for frequent removals (Linux strict
	 * mode), where IPIs cost the readers more than the fences (docs/concurrency.md, W5). */
	bool reader_fence;
};

struct viommu_fastpath;

/* Create the maps (loads bpf/xlate.bpf.c into the kernel), mirror @dev's current state and
 * observe it from now on. NULL + errno: ENOTSUP for a device granule below 4 KiB or more than
 * VIOMMU_DOMAINS_MAX domains; EPERM / ENOSYS when the kernel refuses BPF. */
struct viommu_fastpath *viommu_fastpath_new(struct viommu_device *dev,
					    const struct viommu_fastpath_opts *opts);
/* Stops observing and unmaps/frees everything. Readers of this process must be closed first. */
void viommu_fastpath_free(struct viommu_fastpath *fp);

/* Pin the maps and programs under @dir (created 0700, files 0600) for readers in other
 * processes; viommu_fastpath_unpin() removes them. */
int viommu_fastpath_pin(struct viommu_fastpath *fp, const char *dir);
void viommu_fastpath_unpin(struct viommu_fastpath *fp);
/* Send the map fds over a connected unix socket (SCM_RIGHTS), data maps read-only. */
int viommu_fastpath_send_fds(struct viommu_fastpath *fp, int sock);

/* Translate @n (<= VIOMMU_BULK_MAX) queries in one BPF_PROG_TEST_RUN of the syscall program,
 * plus one more run per VIOMMU_SPAN_MAX extents for queries whose ranges cross more (the
 * program answers those VIOMMU_FP_MORE; the answers here are final: HIT, IDENT, FAULT, or
 * RETRY after a race with the writer). @report: faults go to the ring buffer (see
 * poll_faults). Returns 0 or -errno.
 * Concurrency: a reader; any thread, concurrently with the writer (the batch lives on the stack). */
int viommu_fastpath_bpf_translate(struct viommu_fastpath *fp, const struct viommu_query *q,
				  struct viommu_answer *a, unsigned n, bool report);
/* Move fault records from the BPF ring buffer into the device's fault queue; returns how many. */
int viommu_fastpath_poll_faults(struct viommu_fastpath *fp);

/* Program fds for in-kernel consumers and tests. */
int viommu_fastpath_xdp_fd(const struct viommu_fastpath *fp);
int viommu_fastpath_syscall_fd(const struct viommu_fastpath *fp);

/* Shared memory views, for readers in this process (reader.h). */
struct viommu_fp_view {
	const struct viommu_meta *meta;
	const struct viommu_ep_entry *eps;
	const __u64 *ep_index;
	const struct viommu_node *nodes;
	const struct viommu_extent_rec *exts;
	const struct viommu_hash_bucket *buckets;
	struct viommu_reader_slot *readers; /* writable: readers own their slot */
	uint32_t nodes_max, extents_max, hash_mask;
};
const struct viommu_fp_view *viommu_fastpath_view(const struct viommu_fastpath *fp);
struct viommu_device *viommu_fastpath_device(const struct viommu_fastpath *fp);

/* The answer every reader must give for @q: the device core's authoritative translation
 * (viommu_device_translate) in fast-path terms. For differential tests and benchmarks. */
void viommu_fastpath_expected(const struct viommu_device *dev, const struct viommu_query *q,
			      struct viommu_answer *a);
/* Whether @got, a fast-path answer to @q, agrees with @want (from viommu_fastpath_expected):
 * the same result, pa, extent, fault reason and address; or VIOMMU_FP_MORE (only BPF programs
 * answer it) with a consistent first extent and `next`, where the store's final answer is that
 * HIT, or a fault at or after `next` (or, for a DMA past 2^64, at its first byte). */
bool viommu_fastpath_agrees(const struct viommu_query *q, const struct viommu_answer *want,
			    const struct viommu_answer *got);

/* Checks the whole shared state from the writer's side: every live domain's radix (node identity
 * and generations, slot counts, no empty non-root node linked, leaves inside their live extent
 * records of the same domain), the hash (I6), and that every node and record in use is reachable
 * (nothing leaked). O(pool); for tests and the fuzzer. 0, -EUCLEAN or -ENOMEM. Device thread. */
int viommu_fastpath_check(const struct viommu_fastpath *fp);

/* Counters and occupancy (`viommu stat`). */
void viommu_fastpath_print_stat(const struct viommu_fastpath *fp, FILE *out);

#endif
