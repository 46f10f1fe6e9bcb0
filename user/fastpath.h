/* SPDX-License-Identifier: MIT */
/*
 * viommu_fastpath: the writer of the shared-memory translator. It observes a device core
 * (device.h) and mirrors every change into shared memory laid out as bpf/viommu_abi.h says before
 * the request completes: a sealed memfd that userspace readers (reader.h) in any process read,
 * and, once a BPF consumer is asked for (viommu_fastpath_bpf_enable), a replica in
 * BPF_F_MMAPABLE array maps that BPF programs read. Readers translate without locks.
 * Memory follows use: the memfd's pages are allocated on first touch (docs/design.md, "Memory").
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
	uint32_t nodes; /* interior radix node pool (default VIOMMU_NODES_DEFAULT) */
	uint32_t leaves; /* leaf pool, 512 pages each (default VIOMMU_LEAVES_DEFAULT) */
	uint32_t extents; /* extent records (default VIOMMU_EXTENTS_DEFAULT) */
	uint32_t hash_buckets; /* power of two (default VIOMMU_HASH_BUCKETS_DEFAULT) */
	bool lazy; /* no grace period on removal (lazy invalidation); default strict */
	bool bpf_grace; /* strict removal also waits for running BPF programs (synchronize_rcu) */
	/* Userspace readers pay a full fence in viommu_reader_enter() (~5 ns) and a strict removal
	 * needs no membarrier, so no IPI to the readers' CPUs: for frequent removals (Linux strict
	 * mode), where IPIs cost the readers more than the fences (docs/concurrency.md, W5). */
	bool reader_fence;
	/* A strict removal waits at most this long for readers inside a critical section; one
	 * still inside then is revoked (docs/concurrency.md, W5). Default
	 * VIOMMU_GRACE_TIMEOUT_MS_DEFAULT. */
	uint32_t grace_timeout_ms;
	/* Keep the device's caps even where the pools cannot hold them for every layout. By
	 * default the fast path lowers the device's caps (viommu_device_limit_caps) to what its
	 * pools hold whatever the guest's layout: VIOMMU_NODES_PER_MAP_WORST interior nodes and
	 * VIOMMU_LEAVES_PER_MAP_WORST leaves per mapping plus a root per domain, one record per
	 * mapping. With overcommit a MAP may answer NOMEM
	 * below the caps (one-page mappings scattered over 48 bits need 5-10 nodes each): for
	 * known dense layouts (benchmarks) and tests of pool exhaustion. */
	bool overcommit;
	/* Create the BPF replica now (viommu_fastpath_bpf_enable): BPF programs (the syscall batch,
	 * XDP, programs of other loaders through pins) translate from it. It costs its full size in
	 * kernel memory at once (the kernel allocates mmapable arrays whole: ~210 MB with the
	 * default pools and windows), so a device that serves only userspace readers leaves it
	 * off. */
	bool bpf;
	/* Windows (docs/design.md, "Windows"): how many domains may have one at once (default
	 * VIOMMU_WINDOWS_DEFAULT; VIOMMU_WINDOWS_NONE for none), and each one's size in 2 MiB
	 * regions (a power of two, default VIOMMU_WINDOW_REGIONS_DEFAULT: 4 GiB, where Linux's
	 * IOVA allocator puts a 32-bit-first device's mappings). Each window is that many leaves
	 * (6 KiB each) of address space past the pool, allocated as its pages are touched; not
	 * counted in the caps (a domain without a window uses the pool). */
	uint32_t windows;
	uint32_t window_regions;
	/* Each window's piece window (docs/design.md, "Piece windows"): its size in 2 MiB regions
	 * (a power of two up to 2^24, at least window_regions: it holds its window; default
	 * VIOMMU_PIECE_REGIONS_DEFAULT, 128 GiB), 8 B each, allocated as touched. */
	uint32_t piece_regions;
};
#define VIOMMU_WINDOWS_NONE UINT32_MAX
/* The radix nodes one MAP may need: a path of interior levels 1-4 and a leaf for its first
 * piece, and one for its last (the pieces between reuse the nodes of one or the other). */
#define VIOMMU_NODES_PER_MAP_WORST (2 * (VIOMMU_RADIX_LEVELS - 2))
#define VIOMMU_LEAVES_PER_MAP_WORST 2
#define VIOMMU_GRACE_TIMEOUT_MS_DEFAULT 250u

struct viommu_fastpath;

/* Create the shared memory (a memfd whose pages are allocated as the pools fill; with opts->bpf
 * also the BPF replica, loading bpf/xlate.bpf.c into the kernel), mirror @dev's current state and
 * observe it from now on; unless opts->overcommit, first lower @dev's caps to what the pools
 * hold for any layout: max_domains to at most nodes / 8, max_mappings to at most
 * (nodes - max_domains) / VIOMMU_NODES_PER_MAP_WORST, leaves / VIOMMU_LEAVES_PER_MAP_WORST
 * and the record pool. NULL + errno:
 * ENOTSUP for a device granule below 4 KiB or more than VIOMMU_DOMAINS_MAX domains; ENOSPC when
 * the pools cannot hold one domain and one mapping, EBUSY when @dev already holds more than
 * they can; ENOSYS without membarrier; with opts->bpf, EPERM / EINVAL when the kernel refuses
 * BPF (without it no BPF is needed). */
struct viommu_fastpath *viommu_fastpath_new(struct viommu_device *dev,
					    const struct viommu_fastpath_opts *opts);
/* Create the BPF replica now if it does not exist: load the programs, make the data maps at
 * the pools' sizes, copy the current state into them and from then on write both copies
 * (docs/concurrency.md, "The BPF replica"). Idempotent. viommu_fastpath_pin() calls it; the
 * program fds, viommu_fastpath_bpf_translate() and BPF grace periods (bpf_grace) need it.
 * 0, or -errno (EPERM / ENOSYS / EINVAL when the kernel refuses BPF). Device thread; before any
 * other thread calls viommu_fastpath_bpf_translate(). */
int viommu_fastpath_bpf_enable(struct viommu_fastpath *fp);

/* What the fast path's shared memory costs, as the kernel counts it. shm_bytes: the memfd's
 * allocated pages (st_blocks: what the kernel holds for it, whoever maps it); shm_size: its
 * size (the pools' reach); bpf_bytes: the replica's maps, ring buffer and counters (each map's
 * fdinfo "memlock"), 0 without one. Writer-private bookkeeping (heap) is not included. 0 or
 * -errno. Device thread. */
struct viommu_fastpath_mem {
	uint64_t shm_bytes, shm_size, bpf_bytes;
};
int viommu_fastpath_memory(const struct viommu_fastpath *fp, struct viommu_fastpath_mem *m);

/* Stops observing and unmaps/frees everything. Readers of this process must be closed first. */
void viommu_fastpath_free(struct viommu_fastpath *fp);

/* Pin the maps and programs under @dir for BPF programs of other loaders and `viommu stat`
 * (creates the BPF replica first if there is none).
 * @dir must not exist (it is created 0700, the pins 0600), or be a directory (not a symlink)
 * owned by this user and writable by nobody else, holding none of the pin names. Whoever can
 * open a pin can write the map: pins are for this user's own tools; untrusted readers come
 * through viommu_fastpath_add_reader(). -EEXIST (a pin name is taken: nothing of it removed),
 * -EPERM (owner or mode), -ENOTDIR, -ENAMETOOLONG. unpin removes only what pin created. */
int viommu_fastpath_pin(struct viommu_fastpath *fp, const char *dir);
void viommu_fastpath_unpin(struct viommu_fastpath *fp);

/* Add a reader in another process (viommu_reader_open_socket() at the other end) on @conn, a
 * connected AF_UNIX SOCK_SEQPACKET socket. On success the fast path owns @conn: the reader
 * lives as long as the connection (whatever PID namespace, sandbox or state its process is in)
 * and is reclaimed when the kernel ends it. It gets a read-only view (a sealed copy of the
 * data maps that no mapping but the writer's can write) and a slot page of its own. Returns the
 * reader's index, or -EPROTOTYPE (not SEQPACKET), -ENOSPC (VIOMMU_READERS_MAX such readers),
 * -errno; on failure @conn stays the caller's. */
int viommu_fastpath_add_reader(struct viommu_fastpath *fp, int conn);

/* In-process readers' slots (reader.c): claim one from any thread: the slot, and in @token
 * the registration it holds; NULL + ENOSPC when all VIOMMU_READERS_MAX are taken. Release it
 * with the same token. Concurrency: any thread. */
struct viommu_reader_slot *viommu_fastpath_claim_slot(struct viommu_fastpath *fp, uint32_t *token);
void viommu_fastpath_release_slot(struct viommu_fastpath *fp, const struct viommu_reader_slot *slot,
				  uint32_t token);
/* The syscall program through which callers of BPF_PROG_TEST_RUN report faults into the BPF
 * ring buffer; -ENODEV without the BPF replica. (Readers of this process report through a
 * socket of the fast path's, BPF or not.) */
int viommu_fastpath_fault_prog_fd(const struct viommu_fastpath *fp);
/* The socket readers of this process send their faults on (viommu_reader_report_fault). */
int viommu_fastpath_fault_fd(const struct viommu_fastpath *fp);

/* Translate @n (<= VIOMMU_BULK_MAX) queries in one BPF_PROG_TEST_RUN of the syscall program,
 * plus one more run per VIOMMU_SPAN_MAX extents for queries whose ranges cross more (the
 * program answers those VIOMMU_XLATE_MORE; the answers here are final: HIT, IDENTITY, FAULT, or
 * RETRY after a race with the writer). @report: faults go to the ring buffer (see
 * poll_faults). Returns 0 or -errno (-ENODEV: no BPF replica, see viommu_fastpath_bpf_enable).
 * Concurrency: a reader; any thread, concurrently with the writer (the batch lives on the stack). */
int viommu_fastpath_bpf_translate(struct viommu_fastpath *fp, const struct viommu_query *q,
				  struct viommu_answer *a, unsigned n, bool report);
/* Service readers (device thread, from the VMM's loop): move the faults readers reported (the
 * BPF ring buffer, the connections of readers in other processes) into the device's fault
 * queue, reclaim readers whose connection ended. Returns how many faults, or -errno. A
 * malformed message from a reader is dropped and counted (it never reaches the device). */
int viommu_fastpath_poll_faults(struct viommu_fastpath *fp);

/* The BPF readers' counters (viommu_stats), summed over the CPUs, into @sum: 0, -ENODEV
 * without the BPF replica, or -errno. Concurrency: any thread (a snapshot of per-CPU
 * counters that runs on other CPUs may be moving). */
struct viommu_stats;
int viommu_fastpath_bpf_stats(const struct viommu_fastpath *fp, struct viommu_stats *sum);

/* Program fds for in-kernel consumers and tests; -ENODEV without the BPF replica. */
int viommu_fastpath_xdp_fd(const struct viommu_fastpath *fp);
int viommu_fastpath_syscall_fd(const struct viommu_fastpath *fp);

/* Shared memory views, for readers in this process (reader.h). */
struct viommu_fp_view {
	const struct viommu_meta *meta;
	const struct viommu_ep_entry *eps;
	const __u64 *ep_index;
	const struct viommu_node *nodes;
	const struct viommu_leaf *leaves;
	const struct viommu_ptes *ptes;
	const struct viommu_extent_rec *exts;
	const struct viommu_hash_bucket *buckets;
	const struct viommu_window *wins;
	const __u64 *pieces;
	uint32_t nodes_max, leaves_max, extents_max, hash_mask, pieces_max;
};
const struct viommu_fp_view *viommu_fastpath_view(const struct viommu_fastpath *fp);
struct viommu_device *viommu_fastpath_device(const struct viommu_fastpath *fp);

/* Whether @got, a fast-path answer to @q, agrees with @want (from viommu_device_answer):
 * the same result, pa, extent, fault reason and address; or VIOMMU_XLATE_MORE (only BPF programs
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
void viommu_fastpath_print_stat(struct viommu_fastpath *fp, FILE *out);

#endif
