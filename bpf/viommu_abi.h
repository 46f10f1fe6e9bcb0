/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * viommu_abi.h — the one header shared by BPF programs and user code: the layout of the fast
 * path's shared memory, its limits and its encodings. The data maps of the table below live in
 * one sealed memfd at page-aligned offsets (what userspace readers in any process map), and,
 * once a BPF consumer is asked for, in a replica of BPF_F_MMAPABLE array maps of the same names,
 * sizes and layout (what BPF programs read), written in step with it.
 *
 * Writer: the device thread (user/fastpath.c) is the only writer of every map here except
 *         viommu_stats (per-CPU, BPF). A userspace reader writes only its own struct
 *         viommu_reader_slot, which lives in memory of its own (not in any map: docs/concurrency.md,
 *         "Trust").
 * Readers: BPF programs (bpf/viommu_lookup.h), userspace in any process (user/reader.h).
 * The publication protocol and its invariants are in docs/concurrency.md; the fields below say
 * which side writes them. Ranges are inclusive ([start, end]) as on the virtio wire.
 * Fixed-width types only, explicit padding, no pointers: indices into arrays instead.
 */
#ifndef VIOMMU_ABI_H
#define VIOMMU_ABI_H

#ifdef __bpf__
/* vmlinux.h provides __u8.. __u64 */
#else
#include <linux/types.h>
#include <stddef.h>
#endif
#include "viommu_spec.h"

#define VIOMMU_ABI_MAGIC   0x564d4d55u /* "VMMU" */
#define VIOMMU_ABI_VERSION 12u

/* ---- sizes (each #ifndef so a build may override; the maps are sized at load time) ---- */
#ifndef VIOMMU_EP_DENSE
#define VIOMMU_EP_DENSE 65536u /* endpoint ids below this index the table directly (PCI BDF) */
#endif
#ifndef VIOMMU_EP_SPARSE
#define VIOMMU_EP_SPARSE 1024u /* table entries for ids >= VIOMMU_EP_DENSE */
#endif
#define VIOMMU_EP_ENTRIES (VIOMMU_EP_DENSE + VIOMMU_EP_SPARSE)
#define VIOMMU_EP_INDEX_SLOTS (2 * VIOMMU_EP_SPARSE) /* open-addressed id -> entry index */
/* The longest probe sequence any sparse id can need: with linear probing and no deletion, an id
 * sits d slots past its home only if those d slots are taken, so d < VIOMMU_EP_SPARSE. Readers
 * bound their loop by meta.ep_probes (the longest the writer has used) and by this. */
#define VIOMMU_EP_INDEX_PROBES_MAX VIOMMU_EP_SPARSE
#ifndef VIOMMU_DOMAINS_MAX
#define VIOMMU_DOMAINS_MAX 65536u /* domain slots; the device core's max_domains must fit */
#endif
#ifndef VIOMMU_NODES_DEFAULT
#define VIOMMU_NODES_DEFAULT 16384u /* interior radix nodes, levels 0-4 (4 KiB each) */
#endif
#ifndef VIOMMU_LEAVES_DEFAULT
#define VIOMMU_LEAVES_DEFAULT 4096u /* leaves, level 5: 512 pages each (6 KiB each) */
#endif
#ifndef VIOMMU_WINDOWS_DEFAULT
#define VIOMMU_WINDOWS_DEFAULT 4u /* domains that can have a window of their own at once */
#endif
#ifndef VIOMMU_WINDOW_REGIONS_DEFAULT
#define VIOMMU_WINDOW_REGIONS_DEFAULT 2048u /* 2 MiB regions per window: 4 GiB of IOVA */
#endif
#ifndef VIOMMU_PIECE_REGIONS_DEFAULT
#define VIOMMU_PIECE_REGIONS_DEFAULT 65536u /* 2 MiB regions per piece window: 128 GiB of IOVA */
#endif
#ifndef VIOMMU_EXTENTS_DEFAULT
#define VIOMMU_EXTENTS_DEFAULT (1u << 21) /* extent records */
#endif
/* The BPF batch loads its queries' lines before its checked lookups from this many leaves in
 * use (meta.leaves_used; viommu_bpf_touch() in viommu_maps.bpf.h): fewer stay cached. */
#define VIOMMU_TOUCH_LEAVES_MIN 16u
#ifndef VIOMMU_HASH_BUCKETS_DEFAULT
#define VIOMMU_HASH_BUCKETS_DEFAULT 65536u /* power of two; VIOMMU_HASH_WAYS ways each */
#endif
#ifndef VIOMMU_READERS_MAX
#define VIOMMU_READERS_MAX 64u /* userspace readers in the device's process, and as many in others */
#endif
#define VIOMMU_READER_INFOS (2 * VIOMMU_READERS_MAX) /* viommu_readers: in-process, then others */
#define VIOMMU_BULK_MAX 64u /* queries per bulk lookup / per syscall-program run */
#define VIOMMU_RETRIES 4 /* bounded retries of a lookup that raced with the writer */

/* ---- the radix: 6 levels of 512 over IOVA bits 63..12 ----
 * Levels 0-4 are interior nodes (viommu_nodes) whose slots name a child or hold a whole piece of
 * an extent; level 5 is a leaf (viommu_leaves) that holds, per 4 KiB page, the translation
 * itself (a PTE: the page's PA and the mapping's flags), so that a lookup through the hash reads
 * one line that only this page's neighbours share, and nothing that depends on it. */
#define VIOMMU_PAGE_SHIFT 12
#define VIOMMU_RADIX_BITS 9
#define VIOMMU_RADIX_FANOUT 512u
#define VIOMMU_RADIX_LEVELS 6
/* Level L indexes bits [shift(L)+8 .. shift(L)]; a leaf there covers 2^shift(L) bytes:
 * L5 4 KiB, L4 2 MiB, L3 1 GiB, L2 512 GiB, L1 256 TiB, L0 2^57 B (only 128 slots used). */
#define VIOMMU_LEVEL_SHIFT(l) (VIOMMU_PAGE_SHIFT + VIOMMU_RADIX_BITS * (VIOMMU_RADIX_LEVELS - 1 - (l)))
/* A level-L node covers the IOVAs that agree with its base above this mask (level 0: all). */
#define VIOMMU_COVER_MASK(l) \
	((l) == 0 ? 0ull : ~((1ull << (VIOMMU_LEVEL_SHIFT(l) + VIOMMU_RADIX_BITS)) - 1))
/* Slot of @iova in a level-L node. */
#define VIOMMU_SLOT_OF(l, iova) ((__u32)((iova) >> VIOMMU_LEVEL_SHIFT(l)) & (VIOMMU_RADIX_FANOUT - 1))
#define VIOMMU_HASH_LEVEL 4 /* the hash indexes the content of level-4 slots (2 MiB regions) */
#define VIOMMU_HASH_SHIFT VIOMMU_LEVEL_SHIFT(VIOMMU_HASH_LEVEL) /* 21 */

/*
 * A slot (interior node entry, hash value) is one 64-bit word, written and read atomically:
 *   bits 0-1   tag: 0 empty, 1 child node, 2 extent (a whole piece), 3 leaf (level-4 slots only)
 *   bits 2-31  index into viommu_nodes, viommu_extents or viommu_leaves
 *   bits 32-63 generation: the target's seq when the slot was written
 * A reader follows a slot only if the target's seq still equals the generation.
 */
#define VIOMMU_SLOT_EMPTY  0ull
#define VIOMMU_SLOT_NODE   1ull
#define VIOMMU_SLOT_EXTENT 2ull
#define VIOMMU_SLOT_LEAF   3ull
#define VIOMMU_SLOT_TAG(s) ((s) & 3ull)
#define VIOMMU_SLOT_IDX(s) ((__u32)(((s) >> 2) & 0x3fffffffull))
#define VIOMMU_SLOT_GEN(s) ((__u32)((s) >> 32))
#define VIOMMU_SLOT_MAKE(tag, idx, gen) \
	((__u64)(tag) | ((__u64)(idx) << 2) | ((__u64)(gen) << 32))
#define VIOMMU_INDEX_MAX 0x3fffffffu

/* ---- viommu_endpoints: endpoint id -> state (dense ids direct, others via viommu_ep_index) ---- */
enum viommu_ep_state {
	VIOMMU_EP_UNKNOWN = 0, /* no such endpoint: fault R_UNKNOWN */
	VIOMMU_EP_BLOCKED = 1, /* unattached, not in bypass: fault R_DOMAIN */
	VIOMMU_EP_BYPASS = 2, /* identity (bypass) */
	VIOMMU_EP_ATTACHED = 3, /* translate through domain `slot`, radix `root` */
	VIOMMU_EP_IDENTITY = 4, /* no ACCESS_PLATFORM: identity */
};

struct viommu_ep_entry { /* writer: device thread; seqlock: seq odd while being written */
	/* 64 bits, so that it never comes back to a value a reader holds (2^63 changes): a
	 * reader's copy of the endpoint's window is vouched for by the seq alone (ABI v12; a
	 * 32-bit seq and meta.ep_wraps before) */
	__u64 seq;
	__u32 root; /* index of the domain's level-0 node */
	__u16 domain_slot; /* < VIOMMU_DOMAINS_MAX */
	__u8 state; /* enum viommu_ep_state */
	__u8 pad;
};

/* viommu_ep_index: for ids >= VIOMMU_EP_DENSE, u64 slots (id << 32 | entry index + 1), 0 = free.
 * Written once per endpoint (endpoints are never removed), probed linearly from
 * viommu_ep_hash(id); the writer probes the whole table, so any VIOMMU_EP_SPARSE ids fit, and
 * records in meta.ep_probes the longest probe sequence it used (I8). */

#define VIOMMU_EP_INDEX_MAKE(id, entry) (((__u64)(id) << 32) | ((__u64)(entry) + 1))
#define VIOMMU_EP_INDEX_ID(v) ((__u32)((v) >> 32))
#define VIOMMU_EP_INDEX_ENTRY(v) ((__u32)(v) - 1) /* the viommu_endpoints index (v != 0) */

/* Home slot of sparse id @ep: murmur3's 32-bit finaliser, so every bit of the id moves the slot
 * (ids differing only in the PCI segment, bits 16-31, spread like any others). One definition
 * for the writer, the userspace reader and BPF. */
static inline __u32 viommu_ep_hash(__u32 ep)
{
	ep ^= ep >> 16;
	ep *= 0x85ebca6bu;
	ep ^= ep >> 13;
	ep *= 0xc2b2ae35u;
	ep ^= ep >> 16;
	return ep & (VIOMMU_EP_INDEX_SLOTS - 1);
}

/* ---- viommu_nodes: the radix node pool ---- */
struct viommu_node { /* writer: device thread */
	__u32 seq; /* even: live generation; odd: free (or being reused) */
	__u16 level;
	__u16 pad;
	__u32 domain_slot; /* with level and base: which node this is (checked on misses) */
	/* Roots only: VIOMMU_ROOT_F_WALK while the domain has a mapping the hash does not index (a
	 * piece of 1 GiB or more, or a region whose two buckets were full); while clear, an IOVA
	 * whose region is in neither bucket is not mapped, with no walk (I6). */
	__u32 flags;
	__u64 base; /* first IOVA the node covers */
	__u64 slot[VIOMMU_RADIX_FANOUT];
};

/* ---- viommu_leaves: level 5, the pages of one 2 MiB region ----
 * A PTE is one 64-bit word: bit 0 present, bits 1-3 the mapping's VIRTIO_IOMMU_MAP_F_* flags,
 * bit 4 solo, bits 12-63 the page's PA; 0 = no mapping. The writer installs a MAP's PTEs without
 * the present bit, makes its record live, then sets the bit (W2): a PTE is present only while its
 * extent is live. ext[] names each page's extent record (index + 1, 0 none) for answers that
 * want the whole extent; a lookup that wants only the page never reads it.
 * A one-page MAP (the common case: a Linux guest maps most buffers a page at a time) has no
 * record: its PTE is the whole extent, marked VIOMMU_PTE_SOLO and stored present in one store
 * (nothing else to publish), and ext[] says VIOMMU_EXT_SOLO (which names no record: the index
 * it would give is past every pool). A whole-extent answer for such a page comes from the one
 * PTE load, so nothing can change between the PTE and what it stands for (I3). */
#define VIOMMU_PTE_PRESENT 1ull
#define VIOMMU_PTE_SOLO (1ull << 4)
#define VIOMMU_EXT_SOLO 0xffffffffu
#define VIOMMU_PTE_MAKE(pa, flags) \
	(((__u64)(pa) & ~0xfffull) | ((__u64)((flags) & VIOMMU_MAP_F_MASK) << 1) | VIOMMU_PTE_PRESENT)
#define VIOMMU_PTE_PA(pte) ((pte) & ~0xfffull)
#define VIOMMU_PTE_FLAGS(pte) ((__u32)((pte) >> 1) & VIOMMU_MAP_F_MASK)
struct viommu_leaf { /* writer: device thread */
	__u32 seq; /* even: live generation; odd: free (or being reused) */
	__u32 domain_slot; /* with base: which leaf this is (checked on every read) */
	__u64 base; /* first IOVA the leaf covers (2 MiB aligned) */
	__u64 pad[6]; /* the header has its line */
	__u32 ext[VIOMMU_RADIX_FANOUT];
};
/* ---- viommu_ptes: the PTEs of leaf i, page i of their own map ----
 * Apart from the leaf (header, ext[]) so that a run of leaves (a window, I13) has its PTEs in
 * one run of pages, 512 per page, as a flat page table has: the same lines and the same TLB
 * reach per translation. */
struct viommu_ptes { /* writer: device thread */
	__u64 pte[VIOMMU_RADIX_FANOUT];
};

#define VIOMMU_ROOT_F_WALK 1u

/* ---- viommu_windows: per domain slot, a direct window of leaves ----
 * A domain's window is a run of `regions` leaves, from index `leaf` of viommu_leaves (past the
 * pool: the window's own), that hold the pages of [base, base + regions * 2 MiB) in order:
 * region r of the window is leaf `leaf + r`, and nothing else ever lives there while the domain
 * owns the window. A lookup there reads the endpoint entry, this entry and the page's PTE: no
 * hash, no leaf header, as a flat page table reads one word (docs/design.md, "Windows").
 * The writer places a domain's window at its first MAP (the aligned block of the window's size
 * holding that IOVA) and keeps it for the domain's life; a 2 MiB piece inside it stays whole, a
 * word of the piece window below (which holds the window), so that a PTE not present there
 * means not mapped when its region's piece window word is 0, unless VIOMMU_WIN_F_WIDE says a
 * piece of 1 GiB or more overlaps the window (I13). Since ABI v8 such a piece also makes the
 * word of every window region it covers VIOMMU_PIECE_BUSY while it lives (set before its slot,
 * 0 after its slot is cleared), so a word of 0 alone says that no piece holds the region. A
 * userspace reader's copy reads the flags when it is made: with neither set, a PTE not present
 * is a miss with no word read, since the writer moves the seq of every endpoint in the domain
 * on when the window gains its first piece (ABI v12, I13).
 *   regions  0: no window. Stored (release) after leaf and base; readers load it first (acquire).
 *   base     the window's first IOVA (2 MiB aligned) | VIOMMU_WIN_F_* in its low bits.
 * The endpoint entry's seqlock vouches for all of it: a window changes hands only when its
 * domain goes, and its endpoints' entries change before that (I4). */
#define VIOMMU_WIN_F_WIDE 1ull
/* A 2 MiB piece lies inside the window (ABI v9), so a lookup there reads its region's piece
 * window word before the page's PTE (a piece's PTEs are lines no one wrote); without it, the PTE
 * first. Set before the piece's slot store, cleared after the last one's slot is empty (ABI v12,
 * as VIOMMU_WIN_F_WIDE: a userspace copy made with both clear takes a PTE not present for a
 * miss, I13). */
#define VIOMMU_WIN_F_PIECES 2ull
#define VIOMMU_WIN_F_MASK ((1ull << VIOMMU_HASH_SHIFT) - 1)
/* The same domain's piece window (ABI v7), placed with the window: entry r of the run of
 * `pregions` words of viommu_pieces from index `pfirst` holds the direct value
 * (VIOMMU_HASH_DIRECT_MAKE) of the published 2 MiB piece at pbase + r * 2 MiB, 0 otherwise, so
 * that such a piece is one word at a computed place, in the window or past it (the piece window
 * holds the window: piece_regions >= window_regions, placed over the same IOVA). Past the window
 * 0 says nothing (the hash and the walk answer); in it, with the page's PTE not present, that the
 * page is not mapped.
 * The writer makes an entry VIOMMU_PIECE_BUSY just after it stores the piece's slot (0 until
 * then: the record is not live, the page not mapped), its direct
 * value after the record went live, VIOMMU_PIECE_BUSY again before the slot is cleared and 0
 * after, so a direct value read there was the piece's translation at the instant of the load,
 * and 0 means no piece at all (I13), of 2 MiB or, in the window, larger (a larger piece keeps
 * the words of the window regions it covers VIOMMU_PIECE_BUSY, above); the endpoint entry's
 * seqlock vouches for the window as for the rest.
 *   pregions  0: no piece window. Stored (release) after pbase and pfirst.
 *   pbase     its first IOVA (aligned to its span). */
/* A piece window word while its piece is being mapped (record not live yet) or unmapped (slot
 * not cleared yet): not a direct value, and not 0: a reader asks the general path, which sees
 * what the radix and the record say, so that every path of a reader answers alike. */
#define VIOMMU_PIECE_BUSY VIOMMU_SLOT_EXTENT
struct viommu_window { /* writer: device thread */
	__u64 base;
	__u32 leaf;
	__u32 regions;
	__u64 pbase;
	__u32 pfirst;
	__u32 pregions;
};

/* ---- viommu_extents: one record per mapping (one MAP request) ---- */
struct viommu_extent_rec { /* writer: device thread */
	__u32 seq; /* even: live generation; odd: free */
	__u16 domain_slot; /* VIOMMU_DOMAINS_MAX <= 65536 */
	__u16 flags; /* VIRTIO_IOMMU_MAP_F_* */
	__u64 start; /* IOVA, inclusive */
	__u64 end; /* IOVA, inclusive */
	__u64 phys; /* PA of start */
};

/* ---- viommu_hash: (domain slot, 2 MiB region) -> level-4 slot content, 3-way buckets ----
 * A value is the level-4 slot's word (a leaf, or a piece being mapped), or, once the MAP of a
 * 2 MiB piece is published, the piece's translation itself (a direct value: tag
 * VIOMMU_HASH_DIRECT, which a slot never has at level 4): the piece's PA and the mapping's
 * flags, so that a lookup reads the bucket and nothing after it. A key's value changes in place
 * only from the slot word to the direct value (at publication), and for a lone page (below)
 * from the leaf's word to the page's value and back; a key is removed before its piece's record
 * dies, with the bucket's seq odd (ABI v11), so a reader that reads the bucket between two equal
 * even loads of seq read a value the key had (I6). */
#define VIOMMU_HASH_DIRECT 1ull /* a slot's VIOMMU_SLOT_NODE tag: never a level-4 slot's */
#define VIOMMU_HASH_DIRECT_MAKE(pa, flags) \
	(((__u64)(pa) & ~0xfffull) | ((__u64)((flags) & VIOMMU_MAP_F_MASK) << 2) | VIOMMU_HASH_DIRECT)
#define VIOMMU_HASH_DIRECT_PA(v) ((v) & ~0xfffull)
#define VIOMMU_HASH_DIRECT_FLAGS(v) ((__u32)((v) >> 2) & VIOMMU_MAP_F_MASK)
/* A lone page's direct value: a region outside the windows whose one mapping is one page (a
 * one-page MAP, its PTE solo) has, while that lasts, the page's translation as its value: the
 * page's index in the region (bits 52-60), its PA (bits 12-51; a PA of 2^52 or more keeps the
 * leaf's word) and flags, tag VIOMMU_HASH_DIRECT with VIOMMU_HASH_LONE. The value answers every
 * page of the region: that page, and not mapped for the others. The writer stores it after the
 * page's PTE is present, and puts the leaf's word back before another page of the region is
 * installed and before the page's PTE is cleared (I6). */
#define VIOMMU_HASH_LONE (1ull << 5) /* never set in a 2 MiB piece's direct value */
#define VIOMMU_HASH_LONE_PA_MASK 0x000ffffffffff000ull
#define VIOMMU_HASH_LONE_MAKE(pa, flags, page)                                                   \
	(((__u64)(pa) & VIOMMU_HASH_LONE_PA_MASK) | ((__u64)((page) & (VIOMMU_RADIX_FANOUT - 1)) << 52) | \
	 ((__u64)((flags) & VIOMMU_MAP_F_MASK) << 2) | VIOMMU_HASH_LONE | VIOMMU_HASH_DIRECT)
#define VIOMMU_HASH_LONE_PAGE(v) ((__u32)((v) >> 52) & (VIOMMU_RADIX_FANOUT - 1))
#define VIOMMU_HASH_LONE_PA(v) ((v) & VIOMMU_HASH_LONE_PA_MASK)
/* Three ways and a seq (ABI v11; four ways before): a way that went to another key and came
 * back between a reader's loads is told by the seq, which nothing in four ways could tell. */
#define VIOMMU_HASH_WAYS 3
struct viommu_hash_bucket { /* writer: device thread; one cache line */
	__u64 key[VIOMMU_HASH_WAYS]; /* 0 empty; else VIOMMU_HASH_KEY() */
	/* Odd while a key leaves a way (its key, then its value, cleared); a key entering a free
	 * way or a value changed in place leaves it alone. A reader takes what it read of the
	 * bucket only between two equal even loads of it (I6). Below 2^32, and every key is 2^43
	 * or more: the 16-byte load of key[2] with it never matches a key in its second lane. */
	__u32 seq;
	__u32 pad;
	__u64 val[VIOMMU_HASH_WAYS]; /* a level-4 slot word (leaf or extent), or a direct value */
	__u64 pad2;
};
/* Key: (domain slot + 1) above bit 43, the 2 MiB region number below (IOVA bits 63..21). */
#define VIOMMU_HASH_KEY_SHIFT 43
#define VIOMMU_HASH_KEY(dslot, iova) \
	((((__u64)(dslot) + 1) << VIOMMU_HASH_KEY_SHIFT) | ((__u64)(iova) >> VIOMMU_HASH_SHIFT))
#define VIOMMU_HASH_KEY_DSLOT(key) ((__u32)((key) >> VIOMMU_HASH_KEY_SHIFT) - 1) /* key != 0 */
#define VIOMMU_HASH_KEY_IOVA(key) \
	(((key) & ((1ull << VIOMMU_HASH_KEY_SHIFT) - 1)) << VIOMMU_HASH_SHIFT)

static inline __u64 viommu_hash_mix(__u64 key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	return key;
}

/* Two-choice hashing: a key lives in its first bucket, or in its second when the first was full
 * (the writer's choice at insertion); a key in neither is not indexed (readers walk). */
static inline __u32 viommu_hash_index(__u64 key, __u32 mask)
{
	return (__u32)viommu_hash_mix(key) & mask;
}

static inline __u32 viommu_hash_alt(__u64 key, __u32 mask)
{
	__u64 m = viommu_hash_mix(key);
	__u32 a = (__u32)m & mask, b = (__u32)(m >> 32) & mask;

	return b == a ? (a ^ 1) & mask : b;
}

/* ---- viommu_meta: one element, global state ---- */
struct viommu_meta { /* writer: device thread */
	/* line 0: set once at creation */
	__u32 magic; /* VIOMMU_ABI_MAGIC once the maps are initialised */
	__u32 abi_version;
	__u32 nodes_max, extents_max;
	__u32 hash_mask; /* buckets - 1 */
	__u32 readers_max;
	__u32 flags; /* VIOMMU_META_F_* */
	/* Sparse endpoint index: the longest probe sequence (slots read, home included) any
	 * indexed id needs, <= VIOMMU_EP_INDEX_PROBES_MAX. Only grows; stored (release) before
	 * the index slot that needed it. */
	__u32 ep_probes;
	/* Bumped once every 2^30 record frees and every pool leaf free: a reader's private cache
	 * entry filled before a bump is dropped, since a 32-bit generation it holds may since have
	 * wrapped, or the leaf it names come back (I10). Written that rarely, so it shares the
	 * constant line. */
	__u64 wraps;
	__u32 leaves_max; /* the pool's leaves and the windows' (those from windows_leaf on) */
	__u32 windows_leaf; /* the first window leaf: the pool has this many */
	__u32 window_regions; /* 2 MiB regions per window (a power of two), 0 without windows */
	__u32 windows_max;
	__u32 piece_regions; /* 2 MiB regions per piece window (a power of two), 0 without windows */
	__u32 pad1;
	/* line 1, alone: every viommu_reader_enter() reads it, the writer bumps it once per grace
	 * period. The counters below change on every publication; sharing a line with them cost a
	 * reader a cache miss per lookup under churn. */
	__u64 epoch; /* grace-period epoch, bumped by the writer (see readers) */
	__u64 pad2[7]; /* meta.ep_wraps in ABI v10-v11: endpoint seqs are 64-bit since v12 */
	/* line 2: occupancy and counters, for `viommu stat` */
	__u32 nodes_used, extents_used, domains_used, endpoints_used;
	__u32 hash_used;
	__u32 readers_revoked; /* readers the writer stopped waiting for (overstayed, W5) */
	__u32 leaves_used, windows_used;
	__u64 publications, grace_periods, grace_ns_total;
	__u32 solo_used; /* one-page mappings (no record: VIOMMU_PTE_SOLO) */
	__u32 pad3;
};

#define VIOMMU_META_F_READER_FENCE 1u /* readers fence on enter; grace periods send no IPI */

/* ---- a userspace reader's own slot: grace periods and its counters ----
 * Not in a map: every reader's slot is memory only that reader and the writer can write (a
 * page of a memfd sent to a reader in another process over its connection; writer-private
 * memory for readers in the device's process). The writer trusts nothing in it but bounds how
 * long it waits on `active` (docs/concurrency.md, W5 and "Trust"). */
#define VIOMMU_READER_F_FENCE 1u /* this reader fences on enter (membarrier unavailable to it) */
struct viommu_reader_slot {
	__u64 active; /* reader: 0 quiescent; else the epoch seen at viommu_reader_enter() | 1 */
	__u32 revoked; /* writer: nonzero once the writer stopped waiting for this reader */
	__u32 flags; /* reader: VIOMMU_READER_F_* */
	__u64 lookups, hits, identity, walks, hash_hits, retries; /* reader */
	__u64 faults[3]; /* reader: reported, by reason */
	__u64 pad[5];
};

/* ---- viommu_readers: the writer's summary of every reader, for `viommu stat` ----
 * Entries [0, VIOMMU_READERS_MAX) are readers in the device's process, the rest readers in
 * other processes. Written by the writer only (viommu_fastpath_poll_faults, print_stat). */
enum viommu_reader_state {
	VIOMMU_READER_FREE = 0,
	VIOMMU_READER_LOCAL = 1, /* a reader in the device's process */
	VIOMMU_READER_REMOTE = 2, /* a reader in another process, tied to its connection */
};
struct viommu_reader_info {
	__u32 state; /* enum viommu_reader_state */
	__u32 pid; /* REMOTE: the peer's pid in the writer's PID namespace (SO_PEERCRED) */
	__u32 flags; /* VIOMMU_READER_F_* as the reader declares them */
	__u32 revoked; /* the writer stopped waiting for it (overstayed a grace period) */
	__u64 lookups, hits, identity, retries; /* copied from the reader's slot: untrusted */
	__u64 faults[3];
	__u64 pad;
};

/* ---- the shared maps, written once: X(ID, name, element type, entries, who writes) ----
 * Every list of the maps (the BPF definitions in viommu_maps.bpf.h, the memfd's layout, the
 * writer's, the pins, the view a reader in another process gets, `viommu stat`'s checks) is
 * made from this table. The data maps, those a lookup reads, come first: in the memfd each
 * starts on a page, in this order, its elements rounded up to 8 bytes as the kernel's arrays
 * (so the replica's maps sit at the same offsets). Entries of NODES, LEAVES, PTES, EXTENTS, HASH
 * and PIECES are the defaults: the writer sizes those at creation (viommu_fastpath_opts); the memfd's
 * pages are allocated as they are first touched, the replica's maps whole. Not listed: the
 * per-CPU viommu_stats (BPF readers' counters), the viommu_faults ring buffer and viommu_sync. */
#define VIOMMU_MAPS(X)                                                                           \
	X(META, viommu_meta, struct viommu_meta, 1, "device thread")                            \
	X(EPS, viommu_endpoints, struct viommu_ep_entry, VIOMMU_EP_ENTRIES, "device thread")     \
	X(EP_INDEX, viommu_ep_index, __u64, VIOMMU_EP_INDEX_SLOTS, "device thread")              \
	X(NODES, viommu_nodes, struct viommu_node, VIOMMU_NODES_DEFAULT, "device thread")        \
	X(LEAVES, viommu_leaves, struct viommu_leaf, VIOMMU_LEAVES_DEFAULT, "device thread")     \
	X(PTES, viommu_ptes, struct viommu_ptes, VIOMMU_LEAVES_DEFAULT, "device thread")         \
	X(EXTENTS, viommu_extents, struct viommu_extent_rec, VIOMMU_EXTENTS_DEFAULT, "device thread") \
	X(HASH, viommu_hash, struct viommu_hash_bucket, VIOMMU_HASH_BUCKETS_DEFAULT, "device thread") \
	X(WINDOWS, viommu_windows, struct viommu_window, VIOMMU_DOMAINS_MAX, "device thread")    \
	X(PIECES, viommu_pieces, __u64, VIOMMU_WINDOWS_DEFAULT * VIOMMU_PIECE_REGIONS_DEFAULT,     \
	  "device thread")                                                                       \
	X(READERS, viommu_readers, struct viommu_reader_info, VIOMMU_READER_INFOS,               \
	  "device thread (a summary of the readers, for viommu stat)")
#define VIOMMU_SHM_ID_(id, ...) VIOMMU_SHM_##id,
enum viommu_shm_id { VIOMMU_MAPS(VIOMMU_SHM_ID_) VIOMMU_SHM_COUNT };
#define VIOMMU_SHM_DATA VIOMMU_SHM_READERS /* maps [0, VIOMMU_SHM_DATA): what lookups read */
#ifndef __bpf__
#define VIOMMU_SHM_NAME_(id, name, ...) [VIOMMU_SHM_##id] = #name,
#define VIOMMU_SHM_SIZE_(id, name, type, ...) [VIOMMU_SHM_##id] = sizeof(type),
#define VIOMMU_SHM_ENTRIES_(id, name, type, n, ...) [VIOMMU_SHM_##id] = (n),
static const char *const viommu_shm_name[VIOMMU_SHM_COUNT] __attribute__((unused)) = {
	VIOMMU_MAPS(VIOMMU_SHM_NAME_)
};
static const __u32 viommu_shm_elem_size[VIOMMU_SHM_COUNT] __attribute__((unused)) = {
	VIOMMU_MAPS(VIOMMU_SHM_SIZE_)
};
static const __u32 viommu_shm_entries[VIOMMU_SHM_COUNT] __attribute__((unused)) = {
	VIOMMU_MAPS(VIOMMU_SHM_ENTRIES_)
};
#endif

/* ---- sharing with a reader in another process: the one message the writer sends ----
 * Over a connected AF_UNIX SOCK_SEQPACKET socket, with two fds (SCM_RIGHTS): the data memfd
 * (the shared state itself, sealed at creation: every mapping of it but the writer's is read-only) and the reader's slot memfd
 * (one page, VIOMMU_READER_SLOT_BYTES). The reader validates every field against the memfd's
 * size before mapping anything. The reader sends struct viommu_fault_rec messages back; the
 * connection's end is the reader's end. */
#define VIOMMU_READER_SLOT_BYTES 4096u
struct viommu_share_hello {
	__u32 magic; /* VIOMMU_ABI_MAGIC */
	__u32 abi_version;
	__u32 reader; /* index of this reader's viommu_readers entry */
	__u32 nodes_max, extents_max, hash_buckets;
	__u32 token; /* the value the writer stores in the slot's `revoked` if it revokes it */
	__u32 leaves_max; /* pool and windows */
	__u32 windows_leaf, window_regions;
	__u32 pieces_max, piece_regions; /* viommu_pieces' entries, and a piece window's */
	__u64 data_bytes; /* size of the data memfd */
	__u64 off[VIOMMU_SHM_DATA]; /* page-aligned offset of each map's copy in the memfd */
};

/* ---- viommu_stats: per-CPU counters of BPF readers ---- */
struct viommu_stats {
	__u64 lookups, hits, identity, walks, hash_hits, retries;
	__u64 faults[3]; /* by reason: R_UNKNOWN, R_DOMAIN, R_MAPPING */
	__u64 pad;
};

/* ---- queries and answers (bulk lookups, the syscall program, fault records) ---- */
enum viommu_xlate_result {
	VIOMMU_XLATE_HIT = 0, /* pa valid, extent valid */
	VIOMMU_XLATE_IDENTITY = 1, /* identity: pa = iova */
	VIOMMU_XLATE_FAULT = 2, /* reason, fault_addr */
	VIOMMU_XLATE_RETRY = 3, /* raced with the writer VIOMMU_RETRIES times: ask again */
	/* A range over more than VIOMMU_SPAN_MAX extents: [iova, next - 1] is mapped with the
	 * access (its first VIOMMU_SPAN_MAX extents checked); pa and ext_* as for HIT (the extent
	 * holding iova); [next, last byte] is not checked yet. Ask again with the query
	 * viommu_query_continue() makes (bpf/viommu_lookup.h) and fold its answer in with
	 * viommu_answer_fold(). Userspace readers and viommu_fastpath_bpf_translate() do that
	 * themselves: only BPF programs (the syscall batch, XDP) answer MORE to their callers. */
	VIOMMU_XLATE_MORE = 4,
};

/* Extents one lookup checks before it answers VIOMMU_XLATE_MORE: bounds the BPF loop. */
#ifndef VIOMMU_SPAN_MAX
#define VIOMMU_SPAN_MAX 16
#endif

/* A query's access may also carry VIOMMU_QUERY_F_EXTENT: answer with the whole extent holding
 * iova (ext_start..ext_end), which costs the lookup a second dependent load (the extent record;
 * none for a one-page mapping, whose solo PTE is the whole extent).
 * Without it a query within one page is answered from the page's PTE alone and ext_* describe
 * at least that page (a run of the extent, the whole extent when a piece larger than a page
 * holds iova); a query whose range crosses a page boundary always gets whole extents. */
#define VIOMMU_QUERY_F_EXTENT (1u << 31)
#define VIOMMU_ACCESS_RW (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)
struct viommu_query {
	__u32 endpoint;
	__u32 access; /* VIRTIO_IOMMU_MAP_F_READ / _WRITE bits, and VIOMMU_QUERY_F_EXTENT */
	__u64 iova;
	__u64 size; /* bytes from iova; 0 counts as 1 */
};

struct viommu_answer {
	__u32 result; /* enum viommu_xlate_result */
	__u32 reason; /* fault reason */
	__u64 pa;
	__u64 ext_start, ext_end; /* HIT: a run of the extent holding iova (VIOMMU_QUERY_F_EXTENT) */
	__u64 ext_phys; /* the PA of ext_start */
	__u32 ext_flags; /* VIRTIO_IOMMU_MAP_F_* of the extent */
	__u32 pad;
	__u64 fault_addr;
	__u64 next; /* MORE: the first byte not yet checked (iova < next <= last byte); else 0 */
};

/* The syscall program's context: a batch of queries in, answers out. */
struct viommu_batch {
	__u32 n; /* <= VIOMMU_BULK_MAX */
	__u32 report_faults; /* 1: faults go to the viommu_faults ring buffer */
	struct viommu_query q[VIOMMU_BULK_MAX];
	struct viommu_answer a[VIOMMU_BULK_MAX];
};

/* A fault seen by a reader, as it reaches the device: a viommu_faults ring buffer record (BPF
 * programs), or one message on a reader's connection or the fast path's in-process socket. */
struct viommu_fault_rec {
	__u32 endpoint;
	__u8 reason;
	__u8 pad[3];
	__u32 access; /* VIOMMU_ACCESS_RW bits */
	__u32 pad2;
	__u64 address;
};

#ifndef __bpf__
_Static_assert(sizeof(struct viommu_ep_entry) == 16, "endpoint entry is 16 B");
_Static_assert(sizeof(struct viommu_node) == 24 + 8 * VIOMMU_RADIX_FANOUT, "node header 24 B");
_Static_assert(sizeof(struct viommu_extent_rec) == 32, "extent record is 32 B");
_Static_assert(sizeof(struct viommu_leaf) == 64 + 4 * VIOMMU_RADIX_FANOUT, "leaf header is one line");
_Static_assert(sizeof(struct viommu_ptes) == 4096, "a leaf's PTEs are one page");
_Static_assert(VIOMMU_DOMAINS_MAX <= 65536, "a domain slot fits the record's and the entry's 16 bits");
_Static_assert(sizeof(struct viommu_hash_bucket) == 64, "hash bucket is one cache line");
_Static_assert(offsetof(struct viommu_hash_bucket, seq) == 8 * VIOMMU_HASH_WAYS &&
		       offsetof(struct viommu_hash_bucket, val) == 32,
	       "hash bucket: keys and values in matching lanes of 16-byte loads");
_Static_assert(sizeof(struct viommu_reader_slot) == 128, "reader slot is two cache lines");
_Static_assert(sizeof(struct viommu_reader_info) == 80, "reader info is 80 B");
_Static_assert(sizeof(struct viommu_share_hello) == 136, "share hello is 136 B");
_Static_assert(sizeof(struct viommu_window) == 32, "window entry is 32 B");
_Static_assert(offsetof(struct viommu_meta, epoch) == 64 && offsetof(struct viommu_meta, nodes_used) == 128,
	       "meta: the epoch has a cache line of its own");
_Static_assert(sizeof(struct viommu_query) == 24, "query is 24 B");
_Static_assert(sizeof(struct viommu_answer) == 64, "answer is 64 B");
_Static_assert(sizeof(struct viommu_fault_rec) == 24, "fault record is 24 B");
_Static_assert(VIOMMU_LEVEL_SHIFT(5) == 12 && VIOMMU_LEVEL_SHIFT(0) == 57, "radix levels");
#endif

#endif
