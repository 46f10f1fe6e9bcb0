/* SPDX-License-Identifier: MIT */
/*
 * The fast path's writer state, shared by the files that make up the writer: fastpath.c (the
 * publication protocol and grace periods) and share.c (readers in other processes, the sealed
 * copy of the maps they read, pins). Device thread only, except where a field says otherwise.
 */
#ifndef VIOMMU_FASTPATH_INT_H
#define VIOMMU_FASTPATH_INT_H

#include <stddef.h>

#include "fastpath.h"

/*
 * A reader's registration. `owner` is (generation << 2) | state: readers in the device's
 * process claim and release theirs from any thread (CAS), the writer revokes with a CAS that
 * names the generation it saw, so a slot closed and claimed anew in between is never revoked
 * by mistake. Readers in other processes are added and dropped on the device thread only.
 */
enum { FP_READER_FREE = 0, FP_READER_CLAIMING = 1, FP_READER_LIVE = 2, FP_READER_REVOKED = 3 };
#define FP_OWNER_STATE(o) ((o) & 3u)
#define FP_OWNER_GEN(o) ((o) >> 2)

struct fp_reader {
	uint32_t owner; /* atomic, see above */
	uint32_t pid; /* other process: SO_PEERCRED pid, in our PID namespace (reports only) */
	struct viommu_reader_slot *slot; /* writer-private page, or the mapping of its memfd */
	int conn; /* other process: the connection; its end is the reader's end; else -1 */
};

struct viommu_fastpath {
	struct viommu_device *dev;
	/* The shared memory (issue 11, "Many VMs per host"): the data maps of viommu_abi.h's table
	 * live in one memfd, mapped once at base + off[i]. Its pages are allocated on first touch,
	 * so its memory follows the pools' high-water marks, not their sizes. Sealed from the
	 * start (F_SEAL_FUTURE_WRITE): no mapping of it but this one can write, so it is what
	 * readers in other processes map, read-only; readers of this process read it too. */
	char *base;
	int shm_fd;
	size_t off[VIOMMU_SHM_COUNT], len[VIOMMU_SHM_COUNT], data_len;
	struct viommu_fp_view view;

	/* writable aliases of the view */
	struct viommu_meta *meta;
	struct viommu_ep_entry *eps;
	__u64 *ep_index;
	struct viommu_node *nodes;
	struct viommu_leaf *leaves;
	struct viommu_ptes *ptes; /* leaf i's PTEs: ptes[i] */
	struct viommu_extent_rec *exts;
	struct viommu_hash_bucket *buckets;
	/* The writer's summary of the readers, for `viommu stat`: writer-private memory until the
	 * BPF replica exists, then its viommu_readers map (what the pins show). */
	struct viommu_reader_info *infos;

	/* writer-private bookkeeping (never read by readers), the arrays in one anonymous mapping
	 * of their own (priv, priv_len: fp_priv_map) */
	void *priv;
	size_t priv_len;
	uint32_t *node_free, node_free_n;
	uint16_t *node_used; /* non-empty slots per node */
	uint32_t *leaf_free, leaf_free_n;
	uint16_t *leaf_used; /* pages with a PTE (installed or present) per leaf */
	uint32_t *ext_free, ext_free_n;
	/* Indices at and above these were never handed out: their pages are untouched (holes of
	 * the memfd, zero, seq 0) and no slot word names them. Free lists first, then these. */
	uint32_t node_hwm, leaf_hwm, ext_hwm, nodes_max, leaves_max, extents_max;
	/* Windows: leaves [leaves_pool, leaves_max) are windows_max windows of win_regions each
	 * (leaves_max counts both: what readers bound indices by). */
	uint32_t leaves_pool, win_regions, windows_max;
	/* Piece windows: window n's are viommu_pieces[n * piece_regions, + piece_regions). */
	__u64 *pieces;
	uint32_t piece_regions, pieces_max;
	uint32_t *win_free, win_free_n, win_hwm; /* window numbers */
	uint8_t *win_live; /* per window leaf: live (the pool's leaves use their free list) */
	/* per domain slot, the device's max_domains of them (dom_cap; heap, not 768 KiB in every
	 * device) */
	uint32_t dom_cap;
	uint32_t *dom_win; /* the domain's window number + 1, 0 none */
	uint32_t *dom_maps; /* live mappings */
	uint32_t *dom_wide; /* pieces of 1 GiB+ overlapping its window (I13) */
	uint32_t *dom_wpieces; /* installed 2 MiB pieces inside its window (VIOMMU_WIN_F_PIECES) */
	/* The endpoint entries attached to each domain slot, a list each: dom_ep1[dslot] the
	 * first entry's index + 1, ep_dnext[i] / ep_dprev[i] the next / previous one's + 1 (0:
	 * none), so that an entry leaves in O(1). win_flags_store() bumps their seqs (I13). */
	uint32_t *dom_ep1, *ep_dnext, *ep_dprev;
	struct viommu_window *wins;
	uint64_t churn; /* record frees, for meta.wraps */
	uint32_t dom_root[VIOMMU_DOMAINS_MAX];
	/* per domain: mappings the hash does not index (pieces of 1 GiB or more, regions left out
	 * of full buckets); the root's VIOMMU_ROOT_F_WALK says whether it is nonzero */
	uint32_t dom_walk[VIOMMU_DOMAINS_MAX];
	bool dom_live[VIOMMU_DOMAINS_MAX];
	uint32_t dom_slots; /* slots below this have been used (the core hands them out densely) */
	uint32_t sparse_used;
	uint64_t hash_full; /* level-4 slots not indexed: bucket full */

	bool lazy, bpf_grace, reader_fence, membarrier_global;
	bool ep_removed; /* an endpoint lost a translation since the last sync (W5) */
	uint64_t grace_timeout_ns;
	uint64_t bad_messages; /* malformed messages from readers, dropped */
	/* Faults reported by readers of this process: a SOCK_SEQPACKET pair, any thread sends on
	 * fault_tx (one message each, atomic), the device thread drains fault_rx. */
	int fault_tx, fault_rx;

	/* The BPF replica (viommu_fastpath_bpf_enable): NULL until a BPF consumer is asked for.
	 * Then the data maps are BPF_F_MMAPABLE arrays mapped at bpf_base + off[i] (the same
	 * offsets as the memfd), a copy written in step with it: replica_delta = bpf_base - base,
	 * 0 without a replica. `skel` is published (release) last; readers of it acquire. */
	struct viommu_xlate_bpf *skel;
	struct bpf_map *maps[VIOMMU_SHM_COUNT];
	char *bpf_base;
	ptrdiff_t replica_delta;
	int sync_inner_fd;
	struct ring_buffer *rb;
	struct viommu_reader_info *infos_private; /* the summary before the replica */

	/* readers: [0, VIOMMU_READERS_MAX) in this process, the rest in other processes */
	struct fp_reader readers[VIOMMU_READER_INFOS];
	struct viommu_reader_slot *local_slots; /* VIOMMU_READERS_MAX, writer-private memory */

	/* pins: what this device created, so that it never removes anything else */
	char pin_dir[256];
	bool pin_dir_made;
	uint32_t pins_made; /* bit i: pin i of share.c's pin table */
};

/*
 * Every store to a data map goes through these: to the memfd and, once the BPF replica exists,
 * to the same offset in it, in the same order, with the same memory order (so each copy on its
 * own follows the publication protocol). @v is evaluated once.
 */
#define FP_STORE(fp, p, v, mo)                                                              \
	do {                                                                                \
		__typeof__(p) p_ = (p);                                                     \
		__typeof__(*p_) v_ = (v);                                                   \
		__atomic_store_n(p_, v_, mo);                                               \
		if ((fp)->replica_delta)                                                    \
			__atomic_store_n((__typeof__(p_))((char *)p_ + (fp)->replica_delta), v_, mo); \
	} while (0)
#define ST(p, v) FP_STORE(fp, p, v, __ATOMIC_RELAXED)
#define ST_REL(p, v) FP_STORE(fp, p, v, __ATOMIC_RELEASE)
#define ST_SC(p, v) FP_STORE(fp, p, v, __ATOMIC_SEQ_CST)
/* meta counters (`viommu stat`): one writer, relaxed */
#define META_ADD(field, d) ST(&fp->meta->field, fp->meta->field + (d))

/* Domain @dslot's piece window word for the 2 MiB region at @addr (I13), or NULL: none there.
 * The writer's thread (fastpath.c, and fastpath_check.c's self-check). */
static inline __u64 *fp_piece_word(const struct viommu_fastpath *fp, uint32_t dslot, uint64_t addr)
{
	uint32_t w = fp->dom_win[dslot];
	uint64_t r = (addr - __atomic_load_n(&fp->wins[dslot].pbase, __ATOMIC_RELAXED)) >> VIOMMU_HASH_SHIFT;

	return w && r < fp->piece_regions ? &fp->pieces[(uint64_t)(w - 1) * fp->piece_regions + r] : NULL;
}

/* fastpath.c: the sparse endpoint index: @id's entry, or -1 (with @alloc: made if absent). */
int64_t fp_ep_index_find(struct viommu_fastpath *fp, uint32_t id, bool alloc);

/* share.c */
int fp_share_init(struct viommu_fastpath *fp);
/* Faults from a reader connection or the in-process fault socket: at most @max messages, each
 * a whole struct viommu_fault_rec with a known reason and access bits (else dropped and
 * counted). How many reached the device; *@ended when the connection has ended. */
int fp_drain_faults(struct viommu_fastpath *fp, int fd, int max, bool *ended);
void fp_share_free(struct viommu_fastpath *fp);
/* A reader in another process whose connection has ended: 1 (dropped), else 0. */
int fp_reader_reap(struct viommu_fastpath *fp, uint32_t i);
void fp_reader_drop(struct viommu_fastpath *fp, uint32_t i);
/* Give up on reader @i (@owner as seen by the scan): it overstayed a grace period. */
void fp_reader_revoke(struct viommu_fastpath *fp, uint32_t i, uint32_t owner);
void fp_readers_summarise(struct viommu_fastpath *fp);

#endif
