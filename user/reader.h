/* SPDX-License-Identifier: MIT */
/*
 * viommu_reader: a userspace reader of the fast path, in the device's process or any other.
 * The lookup is inline (bpf/viommu_lookup.h over mmapped maps): no syscall, no lock, no write
 * to shared memory on the lookup itself.
 *
 * Concurrency: a reader is owned by one thread; any number of readers run beside the one writer.
 * Grace periods: a thread that uses a translation after the lookup (a DMA) brackets lookup + use
 * with viommu_reader_enter()/exit(); a strict UNMAP completes only after every reader that could
 * have seen the old translation has exited (docs/concurrency.md, I7), or, if one stays inside
 * longer than the fast path's grace timeout, after revoking it (exit() then says so).
 * Trust: a reader in another process sees the data read-only (the kernel enforces it) and can
 * write only its own slot; it lives as long as its connection (docs/concurrency.md, "Trust").
 */
#ifndef VIOMMU_READER_H
#define VIOMMU_READER_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "viommu_abi.h"

struct viommu_fastpath;

/* A reader-private cache of validated hits (an IOTLB of this thread). An entry is used only
 * after re-validating it against shared memory: what vouched for it still holds what it held
 * (a whole extent: its record's generation; a page, and a solo page's whole extent: its PTE),
 * and the endpoint entry the sequence it had (docs/concurrency.md, I10). */
#define VIOMMU_READER_TLB_BITS 6
#define VIOMMU_READER_TLB (1u << VIOMMU_READER_TLB_BITS)
struct viommu_reader_tlb { /* one cache line */
	/* What vouches for the entry: the 64-bit word at wordp still holds `word` (a whole extent:
	 * its record's first word, seq | domain slot | flags; a page: its PTE; a leaf freed bumps
	 * meta.wraps), and the endpoint entry's seq (dense ids only: the entry finds it by id). */
	const __u64 *wordp;
	__u64 word;
	uint32_t ep;
	uint32_t flags; /* the mapping's, | VIOMMU_QUERY_F_EXTENT when the entry is the whole extent */
	uint64_t ep_seq;
	uint64_t start, end, phys;
	uint64_t wraps; /* meta.wraps at the fill: a later bump drops the entry */
};
_Static_assert(sizeof(struct viommu_reader_tlb) == 64, "a reader TLB entry is one cache line");

/* A reader-private copy of an endpoint's window (I13): valid while the endpoint entry's seq is
 * still `ep_seq` (the window of a domain does not move while an endpoint is in it; the seq is
 * 64-bit and never comes back, ABI v12; a pool leaf freed does not touch a window). Filled out
 * of line (viommu_reader_window_load) when an endpoint is first seen, or by a walk. The
 * window's PTEs are one run of pages from `first`: page (iova - base) >> 12 of it, as in a flat
 * table. */
#define VIOMMU_READER_EPW 16u
struct viommu_reader_epw { /* two cache lines: what a window page's lookup reads is the first */
	uint32_t ep, pad;
	uint64_t ep_seq;
	uint64_t base; /* the window's first IOVA */
	/* The bytes from `base` whose lookups read the PTE first, and the PTE alone for a miss:
	 * `span`; or 0, the region's word first, when the copy was made with a piece in the
	 * window (the window entry's VIOMMU_WIN_F_PIECES or VIOMMU_WIN_F_WIDE). */
	uint64_t pte_span;
	const __u64 *first; /* the window's first PTE */
	const __u64 *seqp; /* the endpoint entry's seq */
	uint64_t span; /* the window's bytes; 0: no window */
	const __u64 *wfirst; /* the word of the window's first region (pfirst + (base - pbase) / 2 MiB) */
	/* second line */
	uint64_t keyhi; /* the domain's part of its hash keys: VIOMMU_HASH_KEY(dslot, 0) */
	/* The piece window: a word per 2 MiB region from pbase, `pfirst` the first (pspan 0: none). */
	uint64_t pbase, pspan;
	const __u64 *pfirst;
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct viommu_reader_epw) == 128, "a window copy is two cache lines");
_Static_assert(offsetof(struct viommu_reader_epw, wfirst) + sizeof(const __u64 *) == 64,
	       "a window page's lookup reads one line of its copy");

struct viommu_reader {
	/* the view: read-only (a sealed memfd's copy in other processes) */
	const struct viommu_meta *meta;
	const struct viommu_ep_entry *eps;
	const __u64 *ep_index;
	const struct viommu_node *nodes;
	const struct viommu_leaf *leaves;
	const struct viommu_ptes *ptes; /* leaves_max entries, as leaves */
	const struct viommu_extent_rec *exts;
	const struct viommu_hash_bucket *buckets;
	const struct viommu_window *wins; /* VIOMMU_DOMAINS_MAX entries */
	const __u64 *pieces; /* pieces_max entries */
	uint32_t nodes_max, leaves_max, extents_max, hash_mask, pieces_max;
	struct viommu_reader_slot *slot; /* this reader's own: grace periods and counters */
	uint32_t token; /* what the writer stores in slot->revoked when it revokes this reader */
	uint32_t depth; /* nesting of enter()/exit() */
	/* Fence mode: enter() is a full fence. The fast path's choice (VIOMMU_META_F_READER_FENCE),
	 * or this reader's own when it cannot register for the writer's membarrier (a seccomp
	 * sandbox, say): then slot->flags has VIOMMU_READER_F_FENCE. */
	bool fence;
	/* where faults go: the connection (another process) or the fast path's fault socket */
	int conn;
	/* private */
	void (*release)(struct viommu_reader *r); /* the device's process: gives the slot back */
	void *owner; /* the device's process: the fast path the slot belongs to */
	/* Each entry one cache line: the struct is allocated 64-byte aligned
	 * (viommu_reader_alloc). */
	struct viommu_reader_tlb tlb[VIOMMU_READER_TLB] __attribute__((aligned(64)));
	struct viommu_reader_epw epw[VIOMMU_READER_EPW];
	void *data;
	size_t data_len;
};

/* A zeroed reader, 64-byte aligned (its TLB entries are cache lines); free() releases it. */
struct viommu_reader *viommu_reader_alloc(void);
/* A reader in the device's process (share.c). NULL + errno (ENOSPC: all VIOMMU_READERS_MAX
 * taken). Concurrency: any thread. */
struct viommu_reader *viommu_reader_open(struct viommu_fastpath *fp);
/* For the writer's side only: a reader whose view and slot are set goes live (grace mode, an
 * empty reader TLB). */
void viommu_reader_ready(struct viommu_reader *r);
/* A reader in another process, from the writer's message on @sock (a connected AF_UNIX
 * SOCK_SEQPACKET socket whose other end the writer passed to viommu_fastpath_add_reader()).
 * The reader owns @sock from then on (closed by viommu_reader_close). Every field of the
 * message is validated before anything is mapped: NULL + EPROTO for a bad message. */
struct viommu_reader *viommu_reader_open_socket(int sock);
void viommu_reader_close(struct viommu_reader *r);

/* Translate one query; inline, lock-free, wait-free but for VIOMMU_RETRIES bounded retries per
 * extent crossed. Returns a->result (enum viommu_xlate_result): HIT, IDENTITY, FAULT, or RETRY only
 * when a lookup raced with the writer; never MORE (a range over more than VIOMMU_SPAN_MAX
 * extents is continued to its end). Does not report faults (see report_fault). */
static inline uint32_t viommu_reader_translate(struct viommu_reader *r, const struct viommu_query *q,
					       struct viommu_answer *a);
/* Up to 64 queries, answered as viommu_reader_translate() does; returns the mask of queries
 * answered HIT or IDENTITY (bit i = q[i]). */
uint64_t viommu_reader_translate_bulk(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a, unsigned n);
/* The same burst for a consumer that wants only where each DMA goes: bit i set when q[i]'s
 * whole range (size 0 counts as 1; not one that runs past 2^64) is mapped for its access as one
 * run of PA (a HIT within one run, or IDENTITY), with pa[i] the PA of its first byte. A clear bit says nothing more (pa[i] unspecified): a
 * fault, a raced lookup, or a range over several runs; ask viommu_reader_translate() for the
 * answer. Writes 8 bytes a query where the answers take 56. */
uint64_t viommu_reader_translate_bulk_pa(struct viommu_reader *r, const struct viommu_query *q, uint64_t *pa,
					 unsigned n);
/* Send a fault this reader saw to the device's event queue: through the fast path's BPF ring
 * buffer (this process) or the connection (another process); the device thread delivers it in
 * viommu_fastpath_poll_faults(). 0, -EINVAL (not a fault answer), -ENOBUFS (queue full),
 * -ENOTCONN (revoked or the writer is gone), -errno. Concurrency: the reader's own thread; any
 * number of readers at once (nothing here touches the device). */
int viommu_reader_report_fault(struct viommu_reader *r, const struct viommu_query *q,
			       const struct viommu_answer *a);

/* Does enter() fence (the fast path's reader-fence mode, or this reader's own because it could
 * not register for membarrier)? Is the reader inside a critical section? Any thread; racy reads
 * of this reader's own state, for tests and diagnostics. */
static inline bool viommu_reader_fence_mode(const struct viommu_reader *r)
{
	return r->fence;
}

static inline bool viommu_reader_inside(const struct viommu_reader *r)
{
	return __atomic_load_n(&r->slot->active, __ATOMIC_RELAXED) != 0;
}

/* Grace-period critical section (see above). Cost: two plain stores, no fence (the writer uses
 * membarrier), or an exchange in fence mode. Acts as rcu_read_lock()/rcu_read_unlock() for the
 * fast path's translations, and nests as they do: only the outermost pair marks the reader.
 * exit() returns 0; -ETIMEDOUT if the writer revoked this reader (it stayed inside past the
 * grace timeout: translations it held may have been removed before it exited, and no later
 * section is protected; close it and open another); -EINVAL for an exit without an enter. */
static inline void viommu_reader_enter(struct viommu_reader *r)
{
	uint64_t v;

	if (r->depth++)
		return; /* nested: the outermost section already holds the epoch */
	v = __atomic_load_n(&r->meta->epoch, __ATOMIC_RELAXED) | 1;
	if (r->fence) {
		/* Fence mode: a seq_cst exchange (xchg, a full fence) orders this store before our
		 * later loads; pairs with the writer's full barrier before its scan (W5/R1). */
		__atomic_exchange_n(&r->slot->active, v, __ATOMIC_SEQ_CST);
		return;
	}
	/* Relaxed: the writer's membarrier orders this store before our later loads (W5/R1). */
	__atomic_store_n(&r->slot->active, v, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST); /* compiler-only: keep lookups after the store */
}

static inline int viommu_reader_exit(struct viommu_reader *r)
{
	if (!r->depth)
		return -EINVAL;
	if (--r->depth)
		return 0;
	/* Release: every use of a translation happens before the writer sees us quiescent (R2). */
	__atomic_store_n(&r->slot->active, 0, __ATOMIC_RELEASE);
	return __atomic_load_n(&r->slot->revoked, __ATOMIC_RELAXED) == r->token ? -ETIMEDOUT : 0;
}

/* ---- the inline lookup: bpf/viommu_lookup.h over this reader's mappings ---- */
#define VIOMMU_CTX_PARAM struct viommu_reader *vr
#define VIOMMU_CTX_ARG vr
/* Every load is an acquire load (on x86-64 the same mov as a relaxed one): a field load then
 * orders the re-check of seq after it by itself, and pairs with the writer's release stores of
 * the fields (fastpath.c, W1-W3), so VIOMMU_FENCE_ACQ() need only stop the compiler.
 * ThreadSanitizer does not model fences (gcc refuses them under -fsanitize=thread); it does
 * model this. docs/concurrency.md, "Orderings at a glance". */
#define VIOMMU_LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VIOMMU_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VIOMMU_FENCE_ACQ() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#define VIOMMU_STAT(field) ((void)0)
#define viommu_acc_ep(r, i) ((i) < VIOMMU_EP_ENTRIES ? &(r)->eps[i] : (const struct viommu_ep_entry *)0)
#define viommu_acc_ep_index(r, i) (&(r)->ep_index[i])
#define viommu_acc_node(r, i) ((i) < (r)->nodes_max ? &(r)->nodes[i] : (const struct viommu_node *)0)
#define viommu_acc_leaf(r, i) ((i) < (r)->leaves_max ? &(r)->leaves[i] : (const struct viommu_leaf *)0)
#define viommu_acc_ptes(r, i) ((i) < (r)->leaves_max ? &(r)->ptes[i] : (const struct viommu_ptes *)0)
#define viommu_acc_ext(r, i) ((i) < (r)->extents_max ? &(r)->exts[i] : (const struct viommu_extent_rec *)0)
#define viommu_acc_bucket(r, i) (&(r)->buckets[i])
#define viommu_acc_win(r, i) ((i) < VIOMMU_DOMAINS_MAX ? &(r)->wins[i] : (const struct viommu_window *)0)
#define viommu_acc_piece(r, i) ((i) < (r)->pieces_max ? &(r)->pieces[i] : (const __u64 *)0)
#define viommu_acc_hash_mask(r) ((r)->hash_mask)
#define viommu_acc_ep_probes(r) __atomic_load_n(&(r)->meta->ep_probes, __ATOMIC_ACQUIRE)
/* viommu_reader_translate_walk() tries the short path itself, state in registers (reader.c). */
#define VIOMMU_TRANSLATE_SHORT_PATH 0
/* The bucket read in 16-byte loads (viommu_lookup.h); TSan models only the scalar atomics. */
#if defined(__SSE2__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#if !defined(__has_feature)
#define VIOMMU_BUCKET_SSE2 1
#elif !__has_feature(thread_sanitizer)
#define VIOMMU_BUCKET_SSE2 1
#endif
#endif
#include "viommu_lookup.h"

/* Out of line: a lookup that missed the reader TLB @t walks shared memory (the hash, the radix)
 * and fills @t from a validated HIT. Kept out of viommu_reader_translate() so that a TLB hit
 * pays for no spilled registers (2.6 ns, against 3.9 with the walk inlined). */
uint32_t viommu_reader_translate_walk(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a, struct viommu_reader_tlb *t);
/* Out of line, rare: the rest of a range that viommu_translate() answered MORE (more than
 * VIOMMU_SPAN_MAX extents), continued until the answer @a is final. Returns a->result. */
uint32_t viommu_reader_translate_rest(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a);

static inline void viommu_reader_tlb_flush(struct viommu_reader *r)
{
	for (unsigned i = 0; i < VIOMMU_READER_TLB; i++) {
		r->tlb[i].start = 1; /* start > end: empty */
		r->tlb[i].end = 0;
	}
	for (unsigned i = 0; i < VIOMMU_READER_EPW; i++)
		r->epw[i] = (struct viommu_reader_epw){ .ep = i + 1 }; /* no id of slot i: empty */
}

/* Out of line: (re)load dense endpoint @ep's window into its viommu_reader_epw entry, from a
 * consistent read of its entry (attached, seq even) and its domain's window entry. 1 if the
 * entry now holds @ep at its current seq, 0 if not (being written, not in a domain). */
int viommu_reader_window_load(struct viommu_reader *r, uint32_t ep);
/* Out of line: viommu_reader_window() for a query its one branch turned away: a copy to make
 * first, or a query it does not take (then 0). */
struct viommu_answer;
int viommu_reader_window_slow(struct viommu_reader *r, const struct viommu_query *q,
			      struct viommu_answer *a);

static inline int viommu_reader_window(struct viommu_reader *r, const struct viommu_query *q,
				       struct viommu_answer *a);

/* A FAULT for byte @iova, not mapped: the fields a miss answers with. Returns 2. */
static inline int viommu_reader_answer_miss(struct viommu_answer *a, uint64_t iova)
{
	a->result = VIOMMU_XLATE_FAULT;
	a->reason = VIOMMU_FAULT_R_MAPPING;
	a->pa = 0;
	a->fault_addr = iova;
	a->next = 0;
	return 2;
}

/*
 * Nonzero unless a copy of endpoint @ep's window (viommu_reader_epw_out(): copy @c's) is of
 * @q's endpoint and @q is a query a window takes: READ / WRITE / MMIO access only, within one
 * page (viommu_window_query_out()). The endpoint and the access
 * are one 8-byte word of the query, checked with one XOR and one AND: a copy holds a dense id
 * (viommu_reader_window_load() refuses the others), so an equal id is a dense one; an empty
 * copy holds its slot's index + 1, the id of no query that reaches its slot.
 */
static inline uint64_t viommu_reader_ep_out(uint32_t ep, const struct viommu_query *q)
{
	const uint64_t last = q->size - 1;
	uint64_t epacc;

	_Static_assert(offsetof(struct viommu_query, access) == sizeof(uint32_t) &&
			       offsetof(struct viommu_query, endpoint) == 0,
		       "endpoint and access are the query's first word");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(&epacc, q, sizeof(epacc));
#else
	epacc = q->endpoint | (uint64_t)q->access << 32;
#endif
	return ((epacc ^ ep) & ~((uint64_t)VIOMMU_MAP_F_MASK << 32)) |
	       ((last | (last + (q->iova & ((1ull << VIOMMU_PAGE_SHIFT) - 1)))) >> VIOMMU_PAGE_SHIFT);
}

static inline uint64_t viommu_reader_epw_out(const struct viommu_reader_epw *c, const struct viommu_query *q)
{
	return viommu_reader_ep_out(c->ep, q);
}

/* Nonzero unless the endpoint entry of copy @c is as it was when the copy was made: its 64-bit
 * seq the same (it never comes back to a value, I4). Acquire: after the loads of the lookup
 * before it. */
static inline uint64_t viommu_reader_epw_stale(const struct viommu_reader_epw *c)
{
	return __atomic_load_n(c->seqp, __ATOMIC_ACQUIRE) ^ c->ep_seq;
}

/*
 * The window (docs/design.md, "Windows"; I13), inline: a query within one page, not asking for
 * the whole extent, from a dense endpoint whose domain has a window holding the page: the
 * endpoint entry, the window entry (both shared by every lookup of the endpoint) and the page's
 * PTE, checked by the entry's seqlock alone. 1: answered HIT; 2: answered FAULT (the page is
 * not mapped); 0: the caller goes on.
 */
static inline int viommu_reader_window(struct viommu_reader *r, const struct viommu_query *q,
				       struct viommu_answer *a)
{
	const uint64_t iova = q->iova;
	const uint32_t ep = q->endpoint, acc = q->access;
	const struct viommu_reader_epw *c = &r->epw[ep % VIOMMU_READER_EPW];
	uint64_t off, pte, word;

	/* One branch for every reason not to: a query the window does not take, an endpoint
	 * whose window this reader has no copy of. */
	if (__builtin_expect(viommu_reader_epw_out(c, q), 0))
		return viommu_reader_window_slow(r, q, a);
	off = iova - c->base;
	if (__builtin_expect(off < c->pte_span, 1)) {
		/* A window page, its PTE first, as in a flat table: no piece in the window when the
		 * copy was made. Acquire: pairs with the writer's release of the PTE (W2), and
		 * orders the loads below after it. */
		pte = __atomic_load_n(&c->first[off >> VIOMMU_PAGE_SHIFT], __ATOMIC_ACQUIRE);
		if (__builtin_expect(!(~pte & (((uint64_t)acc << 1) | VIOMMU_PTE_PRESENT)), 1)) {
			if (__builtin_expect(viommu_reader_epw_stale(c), 0))
				return 0;
			viommu_answer_pte(a, iova, pte);
			return 1;
		}
		/* Not present, and the entry as copied (the seq's load after the PTE's): a miss.
		 * No piece of any size lay in the window when the copy was made (the window
		 * entry's flags, read under the entry's seqlock), and the writer moves the seq of
		 * every endpoint in the domain on before the window's first piece can be reached
		 * (win_flags_store()): so none was there since, and a page not present was not
		 * mapped (I13). With one branch: anything else (an access fault, raced) the walk
		 * answers. */
		if (__builtin_expect(!(viommu_reader_epw_stale(c) | (pte & VIOMMU_PTE_PRESENT)), 1))
			return viommu_reader_answer_miss(a, iova);
		return 0;
	}
	{
		/* The piece window, a word per 2 MiB region: it answers a published 2 MiB piece (a
		 * direct value), and says nothing otherwise (I13). Past the window, anything else:
		 * the TLB, then the walk. */
		uint64_t poff = iova - c->pbase;

		if (__builtin_expect(poff >= c->pspan, 0))
			return 0;
		/* Acquire: pairs with piece_win_set(), and orders the loads below after it. */
		word = __atomic_load_n(&c->pfirst[poff >> VIOMMU_HASH_SHIFT], __ATOMIC_ACQUIRE);
		/* A published piece's direct value with every flag the access needs, read while
		 * the entry was as copied (the seq after it, I4): bit 0 set (a piece window word is
		 * 0, VIOMMU_PIECE_BUSY or a direct value, and only the last has it) and the access's
		 * bits among its flags (bits 2-4), tested as a window PTE's are, with one mask (the
		 * access is READ | WRITE | MMIO only here: viommu_reader_epw_out() turned any other
		 * bit away). A direct value without a flag the access needs: the walk says which
		 * fault. (Bit 0 tested alone first, the flags and the seq in one branch after it:
		 * 2 MiB x 1K, 58 -> 55 instructions a lookup, and 4 KiB pages 48 -> 47, bench/icount;
		 * the flags' mask first cost the pages of a copy that reads the word first 3 more.) */
		_Static_assert(VIOMMU_HASH_DIRECT == 1 && !(VIOMMU_PIECE_BUSY & 1) &&
				       VIOMMU_HASH_DIRECT_FLAGS(VIOMMU_MAP_F_MASK << 2) == VIOMMU_MAP_F_MASK,
			       "a piece window word: bit 0 only in a direct value, its flags in bits 2-4");
		if (__builtin_expect(word & VIOMMU_HASH_DIRECT, 1)) {
			if (__builtin_expect(viommu_reader_epw_stale(c) |
						     (~word & (((uint64_t)acc << 2) | VIOMMU_HASH_DIRECT)),
					     0))
				return 0;
			viommu_answer_direct(a, iova, word);
			return 1;
		}
		if (off >= c->span)
			return 0;
	}
	/* A window page of a copy that reads the region's word first: the word was not a piece;
	 * the page's PTE. (Its hit is written out again, not shared with the PTE-first one
	 * through a label: shared, GCC computed the copy's address again on the PTE-first hit,
	 * 2 instructions more, bench/icount.) */
	pte = __atomic_load_n(&c->first[off >> VIOMMU_PAGE_SHIFT], __ATOMIC_ACQUIRE);
	if (!(~pte & (((uint64_t)acc << 1) | VIOMMU_PTE_PRESENT))) {
		if (viommu_reader_epw_stale(c))
			return 0;
		viommu_answer_pte(a, iova, pte);
		return 1;
	}
	/* Not present, and the region's word (read before it) 0, then the entry as copied: the
	 * page was not mapped at some instant between the two loads. A 2 MiB piece
	 * is its region's word, a larger one over the window makes every word it covers busy
	 * while it lives (I13), and a piece is made only over an empty range and its PTEs stay 0
	 * while it lives: if the word was 0 at the PTE's load, that instant; if a piece held the
	 * region then, the instant it went, the PTE still 0. Anything else (raced, a piece coming,
	 * going or larger, an access fault): the walk answers. */
	if (viommu_reader_epw_stale(c) | word | (pte & VIOMMU_PTE_PRESENT))
		return 0;
	return viommu_reader_answer_miss(a, iova);
}

/*
 * A published 2 MiB piece outside the window, or a lone page (a region whose one mapping is one
 * page, VIOMMU_HASH_LONE), inline: the hash's direct value (I6) in the region's first bucket,
 * for a query the window takes (one page, a dense endpoint whose copy
 * the reader holds). The bucket is the lookup's one line of shared memory beyond the endpoint
 * entry: no call, no reader TLB entry (a direct value has no word of its own to vouch for one),
 * so that independent lookups overlap their misses as window lookups do. 1: answered HIT; 2:
 * answered FAULT (another page of a lone page's region); 0: the walk answers (a leaf, a key in
 * its second bucket, not mapped, raced, an access fault).
 */
static inline int viommu_reader_direct(struct viommu_reader *r, const struct viommu_query *q,
				       struct viommu_answer *a)
{
	const struct viommu_reader_epw *c = &r->epw[q->endpoint % VIOMMU_READER_EPW];
	const uint64_t iova = q->iova, key = c->keyhi | (iova >> VIOMMU_HASH_SHIFT);
	__u64 v = 0;

	if (__builtin_expect(viommu_reader_epw_out(c, q), 0))
		return 0;
	/* The bucket's value for the key, read between two equal even loads of the bucket's seq
	 * (viommu_bucket_find, I6); the endpoint entry unchanged since the copy (so the key's
	 * domain slot is the endpoint's domain, I4, I10); every flag the access needs. */
	int found = viommu_bucket_find(r, viommu_hash_index(key, r->hash_mask), key, &v);

	if (__builtin_expect((int)(found <= 0) | (int)(VIOMMU_SLOT_TAG(v) != VIOMMU_HASH_DIRECT) |
				     (int)(viommu_reader_epw_stale(c) != 0) |
				     (int)((VIOMMU_HASH_DIRECT_FLAGS(v) & q->access) != q->access),
			     0))
		return 0;
	if (v & VIOMMU_HASH_LONE) {
		/* A lone page's value: the answer for its page; every other page of the region is
		 * not mapped. */
		if (VIOMMU_HASH_LONE_PAGE(v) != VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, iova))
			return viommu_reader_answer_miss(a, iova);
		viommu_answer_pte(a, iova, VIOMMU_PTE_MAKE(VIOMMU_HASH_LONE_PA(v), VIOMMU_HASH_DIRECT_FLAGS(v)));
		return 1;
	}
	viommu_answer_direct(a, iova, v);
	return 1;
}

/* The reader TLB, then a direct hash value, then the walk: what viommu_reader_window() did not
 * answer. */
static inline uint32_t viommu_reader_translate_tlb(struct viommu_reader *r, const struct viommu_query *q,
						   struct viommu_answer *a)
{
	/* Fibonacci hash of the page number: strided IOVAs spread over the whole cache. */
	uint32_t h = ((uint32_t)(q->iova >> VIOMMU_PAGE_SHIFT) ^ q->endpoint) * 0x9e3779b1u;
	struct viommu_reader_tlb *t = &r->tlb[h >> (32 - VIOMMU_READER_TLB_BITS)];
	uint64_t last = q->iova + (q->size ? q->size - 1 : 0);
	int d;

	if (t->ep == q->endpoint && q->iova >= t->start && last <= t->end && last >= q->iova &&
	    (t->flags & q->access) == q->access &&
	    /* I10: the record (or leaf) still live with that generation, the word it vouched with
	     * unchanged (acquires: they order the endpoint load after them), and the endpoint
	     * entry unchanged since the hit was validated. */
	    __atomic_load_n(t->wordp, __ATOMIC_ACQUIRE) == t->word &&
	    __atomic_load_n(&r->eps[t->ep].seq, __ATOMIC_ACQUIRE) == t->ep_seq &&
	    /* After the acquires above: a record's seq that wrapped back was stored after a bump
	     * of meta.wraps (churn_count() in fastpath.c), as a leaf's free was, so this load
	     * sees the bump. (The endpoint's seq is 64-bit: it never comes back.) */
	    __atomic_load_n(&r->meta->wraps, __ATOMIC_RELAXED) == t->wraps) {
		a->result = VIOMMU_XLATE_HIT;
		a->reason = 0;
		a->pa = t->phys + (q->iova - t->start);
		a->ext_start = t->start;
		a->ext_end = t->end;
		a->ext_phys = t->phys;
		a->ext_flags = t->flags & VIOMMU_MAP_F_MASK;
		a->fault_addr = 0;
		a->next = 0;
		return VIOMMU_XLATE_HIT;
	}
	if ((d = viommu_reader_direct(r, q, a)))
		return d == 1 ? VIOMMU_XLATE_HIT : VIOMMU_XLATE_FAULT;
	return viommu_reader_translate_walk(r, q, a, t);
}

static inline uint32_t viommu_reader_translate(struct viommu_reader *r, const struct viommu_query *q,
					       struct viommu_answer *a)
{
	int w = viommu_reader_window(r, q, a);

	if (__builtin_expect(w != 0, 1))
		return w == 1 ? VIOMMU_XLATE_HIT : VIOMMU_XLATE_FAULT;
	return viommu_reader_translate_tlb(r, q, a);
}

#endif
