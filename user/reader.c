// SPDX-License-Identifier: MIT
/* Userspace readers: opening the view a reader in another process gets, bulk lookups, fault
 * reports. Nothing here knows the device: readers of the device's process are made by the
 * writer's side (share.c, viommu_reader_open). */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>


/* The writer's membarrier(GLOBAL_EXPEDITED) reaches only registered processes. A reader that
 * cannot register (seccomp, an old kernel) would lose the ordering R1 relies on without a word:
 * it takes the fence mode instead, and says so in its slot (`viommu stat` shows it). */
static void choose_grace_mode(struct viommu_reader *r)
{
	int q = (int)syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	r->fence = r->meta->flags & VIOMMU_META_F_READER_FENCE;
	if (!r->fence && (q < 0 || !(q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) ||
			  syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0)))
		r->fence = true;
	if (r->fence && !(r->meta->flags & VIOMMU_META_F_READER_FENCE))
		__atomic_store_n(&r->slot->flags, VIOMMU_READER_F_FENCE, __ATOMIC_RELAXED);
}

struct viommu_reader *viommu_reader_alloc(void)
{
	void *p = NULL;

	if (posix_memalign(&p, 64, sizeof(struct viommu_reader)))
		return errno = ENOMEM, NULL;
	return memset(p, 0, sizeof(struct viommu_reader));
}

void viommu_reader_ready(struct viommu_reader *r)
{
	choose_grace_mode(r);
	viommu_reader_tlb_flush(r);
}

/* Bytes of map @i of the message: its element size times its count. */
static uint64_t share_bytes(const struct viommu_share_hello *h, int i)
{
	uint64_t n = i == VIOMMU_SHM_NODES ? h->nodes_max :
		     i == VIOMMU_SHM_LEAVES || i == VIOMMU_SHM_PTES ? h->leaves_max :
		     i == VIOMMU_SHM_EXTENTS ? h->extents_max : i == VIOMMU_SHM_HASH ? h->hash_buckets :
		     i == VIOMMU_SHM_PIECES ? h->pieces_max : viommu_shm_entries[i];

	return n * viommu_shm_elem_size[i]; /* the table in viommu_abi.h */
}

/* The writer's message, checked whole before anything is mapped: every map inside the memfd,
 * in order, page-aligned, with the geometry the lookup will index by. */
static int share_check(const struct viommu_share_hello *h, int data_fd, int slot_fd)
{
	struct stat ds, ss;
	uint64_t end = 0, page = (uint64_t)sysconf(_SC_PAGESIZE);

	if (h->magic != VIOMMU_ABI_MAGIC || h->abi_version != VIOMMU_ABI_VERSION || !h->token)
		return -EPROTO;
	if (!h->nodes_max || h->nodes_max > VIOMMU_INDEX_MAX || !h->leaves_max ||
	    h->leaves_max > VIOMMU_INDEX_MAX || !h->extents_max ||
	    h->extents_max > VIOMMU_INDEX_MAX || !h->hash_buckets ||
	    (h->hash_buckets & (h->hash_buckets - 1)))
		return -EPROTO;
	if (fstat(data_fd, &ds) || fstat(slot_fd, &ss) || !S_ISREG(ds.st_mode) || !S_ISREG(ss.st_mode))
		return -EPROTO;
	if ((uint64_t)ds.st_size != h->data_bytes || (uint64_t)ss.st_size < VIOMMU_READER_SLOT_BYTES)
		return -EPROTO;
	for (int i = 0; i < VIOMMU_SHM_DATA; i++) {
		if (h->off[i] % page || h->off[i] < end || share_bytes(h, i) > h->data_bytes ||
		    h->off[i] > h->data_bytes - share_bytes(h, i))
			return -EPROTO;
		end = h->off[i] + share_bytes(h, i);
	}
	return 0;
}

struct viommu_reader *viommu_reader_open_socket(int sock)
{
	struct viommu_share_hello h;
	int fds[2] = { -1, -1 }, err = -EPROTO, nfds = 0;
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct viommu_reader *r = NULL;
	struct cmsghdr *c;
	ssize_t got;
	char *d;

	got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (got < 0)
		return NULL;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int)), tmp[4];

		if (n > 4)
			n = 4;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		memcpy(tmp, CMSG_DATA(c), (size_t)n * sizeof(int));
		for (int k = 0; k < n; k++) {
			if (nfds < 2)
				fds[nfds] = tmp[k];
			else
				close(tmp[k]); /* more than we asked for: not ours to keep */
			nfds++;
		}
	}
	if (got != (ssize_t)sizeof(h) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds != 2)
		goto fail;
	if ((err = share_check(&h, fds[0], fds[1])))
		goto fail;
	r = viommu_reader_alloc();
	if (!r) {
		err = -ENOMEM;
		goto fail;
	}
	r->conn = -1;
	/* Read-only, and it stays so: the memfd is sealed (F_SEAL_FUTURE_WRITE), so no mapping of
	 * it in this process can ever be writable, whatever this process does. */
	d = mmap(NULL, h.data_bytes, PROT_READ, MAP_SHARED, fds[0], 0);
	if (d == MAP_FAILED) {
		err = -errno;
		goto fail;
	}
	r->data = d;
	r->data_len = h.data_bytes;
	r->slot = mmap(NULL, VIOMMU_READER_SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	if (r->slot == MAP_FAILED) {
		r->slot = NULL;
		err = -errno;
		goto fail;
	}
	close(fds[0]);
	close(fds[1]);
	fds[0] = fds[1] = -1;
	r->meta = (const void *)(d + h.off[VIOMMU_SHM_META]);
	r->eps = (const void *)(d + h.off[VIOMMU_SHM_EPS]);
	r->ep_index = (const void *)(d + h.off[VIOMMU_SHM_EP_INDEX]);
	r->nodes = (const void *)(d + h.off[VIOMMU_SHM_NODES]);
	r->leaves = (const void *)(d + h.off[VIOMMU_SHM_LEAVES]);
	r->ptes = (const void *)(d + h.off[VIOMMU_SHM_PTES]);
	r->exts = (const void *)(d + h.off[VIOMMU_SHM_EXTENTS]);
	r->buckets = (const void *)(d + h.off[VIOMMU_SHM_HASH]);
	r->wins = (const void *)(d + h.off[VIOMMU_SHM_WINDOWS]);
	r->pieces = (const void *)(d + h.off[VIOMMU_SHM_PIECES]);
	r->pieces_max = h.pieces_max;
	r->nodes_max = h.nodes_max;
	r->leaves_max = h.leaves_max;
	r->extents_max = h.extents_max;
	r->hash_mask = h.hash_buckets - 1;
	r->token = h.token;
	if (__atomic_load_n(&r->meta->magic, __ATOMIC_ACQUIRE) != VIOMMU_ABI_MAGIC ||
	    r->meta->abi_version != VIOMMU_ABI_VERSION) {
		err = -EPROTO;
		goto fail;
	}
	r->conn = sock;
	viommu_reader_ready(r);
	return r;
fail:
	for (int k = 0; k < 2; k++)
		if (fds[k] >= 0)
			close(fds[k]);
	if (r) {
		r->conn = -1; /* still the caller's */
		viommu_reader_close(r);
	}
	errno = -err;
	return NULL;
}

void viommu_reader_close(struct viommu_reader *r)
{
	if (!r)
		return;
	if (r->release) {
		r->release(r); /* a reader of the device's process: its slot goes back */
	} else {
		if (r->slot)
			munmap(r->slot, VIOMMU_READER_SLOT_BYTES);
		if (r->data)
			munmap(r->data, r->data_len);
		if (r->conn >= 0)
			close(r->conn); /* the writer reclaims our registration */
	}
	free(r);
}

/*
 * Bulk lookups pipeline their cache misses (as DPDK's rte_hash bulk lookup does). A single
 * lookup is a chain of dependent loads: hash bucket -> the leaf's header and the page's PTE (or
 * an extent record, for a piece larger than a page) -> the record, only when the whole extent is
 * asked. Over a burst, each stage's addresses are known for every query before any of them is
 * needed, so the misses of one stage overlap: stage 1 prefetches every bucket, stage 2 reads the
 * buckets (now cached) and prefetches the lines they name, stage 3 (queries that want whole
 * extents) the records the leaves name; then the real, validated lookups run on warm lines.
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

/* The piece window word of @q's region, in the window of its endpoint's copy (which holds it),
 * read with acquire (piece_win_set()). */
static inline uint64_t window_word(const struct viommu_reader *r, const struct viommu_query *q)
{
	const struct viommu_reader_epw *c = &r->epw[q->endpoint % VIOMMU_READER_EPW];

	return __atomic_load_n(&c->wfirst[(q->iova - c->base) >> VIOMMU_HASH_SHIFT], __ATOMIC_ACQUIRE);
}

/* Stages 2-4 of a burst, for the queries that the windows do not take (@rest, @nrest of them):
 * the hash's buckets, then the extent records or leaves they name, then the records that
 * leaves name for whole-extent queries. Out of line: stage 1 keeps its state in registers. */
static __attribute__((noinline)) void prefetch_rest(const struct viommu_reader *r, const struct viommu_query *q,
						    const unsigned *rest, unsigned nrest)
{
	__u64 key[VIOMMU_BULK_MAX];
	__u32 leaf[VIOMMU_BULK_MAX];
	unsigned k;

	for (k = 0; k < nrest; k++) {
		unsigned i = rest[k];
		const struct viommu_ep_entry *e;

		key[i] = 0;
		if (q[i].endpoint >= VIOMMU_EP_DENSE) /* sparse ids: the lookup finds them */
			continue;
		e = &r->eps[q[i].endpoint];
		if (__atomic_load_n(&e->state, __ATOMIC_RELAXED) != VIOMMU_EP_ATTACHED)
			continue;
		key[i] = VIOMMU_HASH_KEY(__atomic_load_n(&e->domain_slot, __ATOMIC_RELAXED), q[i].iova);
		__builtin_prefetch(&r->buckets[viommu_hash_index(key[i], r->hash_mask)]);
	}
	for (k = 0; k < nrest; k++) {
		unsigned i = rest[k];
		__u64 slot = key[i] ? prefetch_slot(r, key[i]) : 0;
		__u32 idx = VIOMMU_SLOT_IDX(slot);

		leaf[i] = ~0u;
		if (VIOMMU_SLOT_TAG(slot) == VIOMMU_SLOT_EXTENT && idx < r->extents_max) {
			__builtin_prefetch(&r->exts[idx]);
		} else if (VIOMMU_SLOT_TAG(slot) == VIOMMU_SLOT_LEAF && idx < r->leaves_max) {
			__u32 si = VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, q[i].iova);

			__builtin_prefetch(&r->leaves[idx]);
			__builtin_prefetch(&r->ptes[idx].pte[si]);
			if (q[i].access & VIOMMU_QUERY_F_EXTENT) {
				__builtin_prefetch(&r->leaves[idx].ext[si]);
				leaf[i] = idx;
			}
		}
	}
	for (k = 0; k < nrest; k++) {
		unsigned i = rest[k];
		__u32 x;

		if (leaf[i] == ~0u)
			continue;
		x = __atomic_load_n(&r->leaves[leaf[i]].ext[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, q[i].iova)],
				    __ATOMIC_RELAXED);
		if (x && x - 1 < r->extents_max)
			__builtin_prefetch(&r->exts[x - 1]);
	}
}

/* Stage 1 of a burst. ptep[i]: the PTE, or the piece window word, that answers q[i] if a window
 * does, else NULL. Returns the queries whose ptep[] is a piece window word, not a PTE; *@win
 * gets the queries with a ptep[], *@used the endpoint copies (bit: slot) they were taken from. */
static uint64_t prefetch_burst(const struct viommu_reader *r, const struct viommu_query *q, unsigned n,
			       const __u64 **ptep, uint64_t *win, uint32_t *used)
{
	unsigned rest[VIOMMU_BULK_MAX], nrest = 0;
	uint64_t pc = 0, out = 0, lo, hi;
	/* The copies used, a byte each (a store a query, where a bit each took a shift and an OR
	 * of a spilled word), gathered into bits at the end. */
	uint8_t seen[VIOMMU_READER_EPW] = { 0 };

	/* A burst is mostly one endpoint's: first a loop of its own over the queries the first
	 * query's copy takes into its window, its fields in registers (the stores to ptep[] could
	 * alias the copy, for the compiler). From the first query it does not take (another
	 * endpoint, outside the window), the loop below, each query with its own copy.
	 * bench/icount, a burst of PAs at 4 KiB x 1K: 64.7 -> 58.7 instructions a query. */
	const uint32_t slot0 = n ? q[0].endpoint % VIOMMU_READER_EPW : 0;
	const uint32_t ep0 = r->epw[slot0].ep;
	const uint64_t base0 = r->epw[slot0].base, span0 = r->epw[slot0].span;
	const __u64 *const first0 = r->epw[slot0].first;
	unsigned i = 0;

	_Static_assert(VIOMMU_READER_EPW == 16, "two words of bytes");

	for (; i < n; i++) {
		const uint64_t off = q[i].iova - base0;

		if (viommu_reader_ep_out(ep0, &q[i]) | (uint64_t)(off >= span0))
			break;
		ptep[i] = &first0[off >> VIOMMU_PAGE_SHIFT];
		__builtin_prefetch(ptep[i]);
	}
	seen[slot0] = i != 0;
	/* Stage 1, the tests of viommu_reader_window() with the copy as it is: in the window, the
	 * page's PTE; past the window, in its piece window, the region's word. One line each, the
	 * whole lookup, prefetched. The others are listed, for the hash's buckets. */
	for (; i < n; i++) {
		const uint32_t slot = q[i].endpoint % VIOMMU_READER_EPW;
		const struct viommu_reader_epw *c = &r->epw[slot];
		const uint64_t off = q[i].iova - c->base;

		if (__builtin_expect(!viommu_reader_epw_out(c, &q[i]), 1)) {
			if (off < c->span) {
				ptep[i] = &c->first[off >> VIOMMU_PAGE_SHIFT];
				__builtin_prefetch(ptep[i]);
				seen[slot] = 1;
				continue;
			}
			if (q[i].iova - c->pbase < c->pspan) {
				ptep[i] = &c->pfirst[(q[i].iova - c->pbase) >> VIOMMU_HASH_SHIFT];
				__builtin_prefetch(ptep[i]);
				pc |= 1ull << i;
				seen[slot] = 1;
				continue;
			}
		}
		ptep[i] = NULL;
		out |= 1ull << i;
		rest[nrest++] = i;
	}
	if (nrest)
		prefetch_rest(r, q, rest, nrest);
	*win = ~out & (n < 64 ? (1ull << n) - 1 : ~0ull);
	/* Byte j (0 or 1) of a word to bit j: the multiplier's term for byte j moves it to bit
	 * 56 + j, and no two terms meet, so nothing carries. */
	memcpy(&lo, seen, 8);
	memcpy(&hi, seen + 8, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	lo = __builtin_bswap64(lo);
	hi = __builtin_bswap64(hi);
#endif
	*used = (uint32_t)((lo * 0x0102040810204080ull) >> 56 | ((hi * 0x0102040810204080ull) >> 56) << 8);
	return pc;
}

/* A HIT for byte @iova from the short path's validated lookup @f of it. */
static inline void answer_lk(struct viommu_answer *a, uint64_t iova, const struct viommu_lk *f)
{
	a->result = VIOMMU_XLATE_HIT;
	a->reason = 0;
	a->pa = f->ext_phys + (iova - f->ext_start);
	a->ext_start = f->ext_start;
	a->ext_end = f->ext_end;
	a->ext_phys = f->ext_phys;
	a->ext_flags = f->ext_flags;
	a->fault_addr = 0;
	a->next = 0;
}

/* Answer @a of query @i in a burst's mask and hit count, and this reader's slot's counters. */
static inline void bulk_tally(struct viommu_reader_slot *sl, const struct viommu_answer *a, unsigned i,
			      uint64_t *mask, uint64_t *hits)
{
	if (a->result == VIOMMU_XLATE_HIT || a->result == VIOMMU_XLATE_IDENTITY)
		*mask |= 1ull << i;
	*hits += a->result == VIOMMU_XLATE_HIT;
	if (a->result == VIOMMU_XLATE_IDENTITY)
		__atomic_store_n(&sl->identity, sl->identity + 1, __ATOMIC_RELAXED);
	else if (a->result == VIOMMU_XLATE_RETRY)
		__atomic_store_n(&sl->retries, sl->retries + 1, __ATOMIC_RELAXED);
}

/* Answer @t of query @q as a burst of PAs gives it (viommu_reader_translate_bulk_pa()): set in
 * @pa and 1 when it is a HIT or IDENTITY whose one run holds the whole range, else 0. */
static inline int pa_of(const struct viommu_query *q, const struct viommu_answer *t, uint64_t *pa)
{
	const uint64_t len1 = q->size ? q->size - 1 : 0; /* size 0 counts as 1 (viommu_query) */

	if (q->iova + len1 < q->iova)
		return 0; /* runs past 2^64: no one run holds it (identity answers it) */
	if (t->result == VIOMMU_XLATE_IDENTITY ||
	    (t->result == VIOMMU_XLATE_HIT && q->iova >= t->ext_start && len1 <= t->ext_end - q->iova)) {
		*pa = t->pa;
		return 1;
	}
	return 0;
}

/* The window's queries of a burst (@wmask), each answered from its PTE or its piece window word
 * (translate_burst()); the queries left unanswered are taken out of the mask returned. Inlined
 * twice: a burst with no piece window word (@any_piece false, the common case) pays no test of
 * @pieces a query. */
static inline __attribute__((always_inline)) uint64_t
window_answers(const struct viommu_reader *r, const struct viommu_query *q, struct viommu_answer *a, uint64_t *pa,
	       const __u64 *const *ptep, uint64_t wmask, uint64_t pieces, const bool to_pa, const bool any_piece)
{
	for (uint64_t m = wmask; m; m &= m - 1) {
		const unsigned i = (unsigned)__builtin_ctzll(m);
		uint64_t v = __atomic_load_n(ptep[i], __ATOMIC_ACQUIRE); /* pairs with W2, or piece_win_set() */

		if (!any_piece || !(pieces >> i & 1)) {
			if (!(~v & (((uint64_t)q[i].access << 1) | VIOMMU_PTE_PRESENT))) {
				if (!to_pa)
					viommu_answer_pte(&a[i], q[i].iova, v);
				else
					pa[i] = VIOMMU_PTE_PA(v) | (q[i].iova & ((1ull << VIOMMU_PAGE_SHIFT) - 1));
				continue;
			}
			if (v & VIOMMU_PTE_PRESENT)
				goto not_answered; /* an access fault: the general path says which */
			/* Not present: the region's word, which answers when the region is one
			 * published piece (8 bytes per 2 MiB, cached where the PTE was not). */
			v = window_word(r, &q[i]);
		}
		if (VIOMMU_SLOT_TAG(v) != VIOMMU_HASH_DIRECT ||
		    (VIOMMU_HASH_DIRECT_FLAGS(v) & q[i].access) != q[i].access)
			goto not_answered;
		if (!to_pa)
			viommu_answer_direct(&a[i], q[i].iova, v);
		else
			pa[i] = VIOMMU_HASH_DIRECT_PA(v) + (q[i].iova & ((1ull << VIOMMU_HASH_SHIFT) - 1));
		continue;
not_answered:
		wmask &= ~(1ull << i);
	}
	return wmask;
}

/* window_answers() for a burst whose every query's ptep[] is a PTE (@wmask holds the first @n,
 * none a piece window word), the common one: in order, with no mask to walk. A PTE that does
 * not answer is taken as window_answers() takes it: not present, the region's word; else the
 * query leaves the mask. bench/icount, a burst of PAs at 4 KiB x 1K: 58.7 -> 53.9
 * instructions a query (of answers: 69.7 -> 64.8). */
static inline __attribute__((always_inline)) uint64_t
window_answers_all(const struct viommu_reader *r, const struct viommu_query *q, struct viommu_answer *a,
		   uint64_t *pa, const __u64 *const *ptep, unsigned n, uint64_t wmask, const bool to_pa)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t v = __atomic_load_n(ptep[i], __ATOMIC_ACQUIRE); /* pairs with W2 */

		if (__builtin_expect(!(~v & (((uint64_t)q[i].access << 1) | VIOMMU_PTE_PRESENT)), 1)) {
			if (!to_pa)
				viommu_answer_pte(&a[i], q[i].iova, v);
			else
				pa[i] = VIOMMU_PTE_PA(v) | (q[i].iova & ((1ull << VIOMMU_PAGE_SHIFT) - 1));
			continue;
		}
		if (!(v & VIOMMU_PTE_PRESENT) && VIOMMU_SLOT_TAG(v = window_word(r, &q[i])) == VIOMMU_HASH_DIRECT &&
		    (VIOMMU_HASH_DIRECT_FLAGS(v) & q[i].access) == q[i].access) {
			if (!to_pa)
				viommu_answer_direct(&a[i], q[i].iova, v);
			else
				pa[i] = VIOMMU_HASH_DIRECT_PA(v) + (q[i].iova & ((1ull << VIOMMU_HASH_SHIFT) - 1));
			continue;
		}
		wmask &= ~(1ull << i); /* an access fault, raced, no piece: the general path answers */
	}
	return wmask;
}

/* One burst: into the answers @a, or (@to_pa) the PAs @pa. Inlined into both entry points, so
 * that each keeps only its own stores. */
static inline __attribute__((always_inline)) uint64_t
translate_burst(struct viommu_reader *r, const struct viommu_query *q, struct viommu_answer *a, uint64_t *pa,
		unsigned n, const bool to_pa)
{
	uint64_t mask = 0, hits = 0, wmask = 0, pieces, npa = 0;
	struct viommu_reader_slot *sl = r->slot;
	const __u64 *ptep[VIOMMU_BULK_MAX];
	uint32_t used = 0, bad = 0;
	struct viommu_answer t;
	struct epw_snap {
		const __u64 *seqp;
		uint64_t ep_seq;
	} snap[VIOMMU_READER_EPW];

#define BURST_ANSWER(i) (to_pa ? &t : &a[i])
	if (n > VIOMMU_BULK_MAX)
		n = VIOMMU_BULK_MAX;
	pieces = prefetch_burst(r, q, n, ptep, &wmask, &used);
	/* The lines are on their way. First the window's queries, each answered from its PTE
	 * (acquire) when present with every flag the access needs, or from its piece window word
	 * when that is a published piece's direct value with them: a loop of its own with no call
	 * in it, so that its state stays in registers (bench/icount: 83 instructions a query in
	 * all at 4 KiB x 1K, against 100 with one loop for every kind). Each endpoint copy they
	 * used has its seq re-checked once, after every PTE and word was read (I4, I13), and a
	 * failed re-check answers that endpoint's window queries again the long
	 * way, before anything is returned. Then the rest: the short path for what it takes (one
	 * page, no whole extent; it does not fill the reader TLB, a burst pipelines instead), else
	 * as one query would be. A window query is within one page: its PA is its answer. */
	if (pieces)
		wmask = window_answers(r, q, a, pa, ptep, wmask, pieces, to_pa, true);
	else if (wmask == (n < 64 ? (1ull << n) - 1 : ~0ull))
		wmask = window_answers_all(r, q, a, pa, ptep, n, wmask, to_pa);
	else
		wmask = window_answers(r, q, a, pa, ptep, wmask, 0, to_pa, false);
	/* What those answers were computed from: the loop below may replace a copy (a query of
	 * another endpoint in the same epw entry, a walk that refreshes one), so the re-check
	 * after it compares with these. */
	for (uint32_t u = used; u; u &= u - 1) {
		const struct viommu_reader_epw *c = &r->epw[__builtin_ctz(u)];

		snap[__builtin_ctz(u)] = (struct epw_snap){ c->seqp, c->ep_seq };
	}
	mask = wmask;
	hits = (uint64_t)__builtin_popcountll(wmask);
	for (uint64_t m = ~wmask & (n < 64 ? (1ull << n) - 1 : ~0ull); m; m &= m - 1) {
		unsigned i = (unsigned)__builtin_ctzll(m);
		uint64_t last = q[i].iova + (q[i].size ? q[i].size - 1 : 0);
		struct viommu_answer *ai = BURST_ANSWER(i);
		struct viommu_lk f;
		int got = 0;

		if (!ptep[i] && (got = viommu_reader_window(r, &q[i], ai))) { /* a copy made now */
			if (got == 1) {
				mask |= 1ull << i;
				hits++;
				if (to_pa)
					pa[i] = ai->pa;
			}
			continue;
		}
		if (!(q[i].access & VIOMMU_QUERY_F_EXTENT) && !((q[i].iova ^ last) >> VIOMMU_PAGE_SHIFT) &&
		    last >= q[i].iova) /* not a range that runs past 2^64 (it faults) */
			got = viommu_lookup_fast(r, q[i].endpoint, q[i].iova, &f);
		if (got == 1 && (f.ext_flags & q[i].access) == q[i].access) {
			answer_lk(ai, q[i].iova, &f);
		} else if (got == 2) {
			ai->result = VIOMMU_XLATE_FAULT;
			ai->reason = VIOMMU_FAULT_R_MAPPING;
			ai->pa = 0;
			ai->fault_addr = q[i].iova;
			ai->next = 0;
		} else {
			viommu_reader_translate(r, &q[i], ai);
		}
		bulk_tally(sl, ai, i, &mask, &hits);
		if (to_pa && (mask >> i & 1) && !pa_of(&q[i], ai, &pa[i]))
			npa |= 1ull << i;
	}
	/* The window's answers were good only if each copy they used was still good after their
	 * PTEs were read (acquire loads: these come after them). Else, again the long way. */
	for (uint32_t u = used; u; u &= u - 1) {
		const struct epw_snap *c = &snap[__builtin_ctz(u)];

		if (__atomic_load_n(c->seqp, __ATOMIC_ACQUIRE) != c->ep_seq)
			bad |= 1u << __builtin_ctz(u);
	}
	for (uint64_t m = bad ? wmask : 0; m; m &= m - 1) {
		unsigned i = (unsigned)__builtin_ctzll(m);
		struct viommu_answer *ai = BURST_ANSWER(i);

		if (!(bad >> (q[i].endpoint % VIOMMU_READER_EPW) & 1))
			continue;
		mask &= ~(1ull << i);
		hits--;
		viommu_reader_translate(r, &q[i], ai);
		bulk_tally(sl, ai, i, &mask, &hits);
		if (to_pa && (mask >> i & 1) && !pa_of(&q[i], ai, &pa[i]))
			npa |= 1ull << i;
	}
#undef BURST_ANSWER
	/* Counters of our own slot, once per burst: relaxed, read racily by `viommu stat`. */
	__atomic_store_n(&sl->lookups, sl->lookups + n, __ATOMIC_RELAXED);
	__atomic_store_n(&sl->hits, sl->hits + hits, __ATOMIC_RELAXED);
	return mask & ~npa;
}

uint64_t viommu_reader_translate_bulk(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a, unsigned n)
{
	return translate_burst(r, q, a, NULL, n, false);
}

uint64_t viommu_reader_translate_bulk_pa(struct viommu_reader *r, const struct viommu_query *q, uint64_t *pa,
					 unsigned n)
{
	return translate_burst(r, q, NULL, pa, n, true);
}

int viommu_reader_window_load(struct viommu_reader *r, uint32_t ep)
{
	const struct viommu_ep_entry *e;
	struct viommu_reader_epw *c = &r->epw[ep % VIOMMU_READER_EPW];
	const struct viommu_window *w;
	uint32_t dslot, st, wn, leaf, pn, pfirst;
	uint64_t s1, base, pbase, wflags;

	if (ep >= VIOMMU_EP_DENSE)
		return 0;
	e = &r->eps[ep];
	s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE); /* pairs with the writer's release (W3) */
	st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	dslot = __atomic_load_n(&e->domain_slot, __ATOMIC_ACQUIRE);
	if ((s1 & 1) || st != VIOMMU_EP_ATTACHED || dslot >= VIOMMU_DOMAINS_MAX)
		return 0;
	w = &r->wins[dslot];
	wn = __atomic_load_n(&w->regions, __ATOMIC_ACQUIRE); /* pairs with win_place()'s release */
	base = __atomic_load_n(&w->base, __ATOMIC_ACQUIRE);
	wflags = base & VIOMMU_WIN_F_MASK;
	base &= ~VIOMMU_WIN_F_MASK;
	leaf = __atomic_load_n(&w->leaf, __ATOMIC_ACQUIRE);
	pn = __atomic_load_n(&w->pregions, __ATOMIC_ACQUIRE); /* the same, for the piece window */
	pbase = __atomic_load_n(&w->pbase, __ATOMIC_ACQUIRE);
	pfirst = __atomic_load_n(&w->pfirst, __ATOMIC_ACQUIRE);
	/* The entry unchanged across the reads: they are the window of its domain (I4, I13). */
	if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) != s1)
		return 0;
	if (!wn || leaf > r->leaves_max || wn > r->leaves_max - leaf)
		wn = leaf = 0, base = 0; /* no window (a bad one is none: every index stays in bounds) */
	if (!pn || pfirst > r->pieces_max || pn > r->pieces_max - pfirst)
		pn = pfirst = 0, pbase = 0;
	/* The piece window holds the window (the writer places both over the same IOVA, the piece
	 * window no smaller): a window's miss reads its region's word. Else no window at all. */
	if (wn && (base < pbase || base - pbase > ((uint64_t)pn << VIOMMU_HASH_SHIFT) ||
		   ((uint64_t)wn << VIOMMU_HASH_SHIFT) > ((uint64_t)pn << VIOMMU_HASH_SHIFT) - (base - pbase)))
		wn = leaf = 0, base = 0;
	c->ep = ep;
	c->ep_seq = s1;
	c->base = base;
	c->span = (uint64_t)wn << VIOMMU_HASH_SHIFT;
	/* The PTE first, as in a flat table, and alone for a miss, while no piece lies in the
	 * window: the flags were read between two equal loads of the entry's seq, and the writer
	 * moves the seq on when the window gains its first piece (I13). With a piece there, the
	 * region's word first: a 2 MiB piece's PTEs are lines no one wrote, its word a line 8
	 * regions share. */
	c->pte_span = wflags & (VIOMMU_WIN_F_PIECES | VIOMMU_WIN_F_WIDE) ? 0 : c->span;
	c->first = r->ptes[leaf].pte;
	c->seqp = &e->seq;
	c->keyhi = VIOMMU_HASH_KEY(dslot, 0);
	c->pbase = pbase;
	c->pspan = (uint64_t)pn << VIOMMU_HASH_SHIFT;
	c->pfirst = r->pieces + pfirst;
	c->wfirst = c->pfirst + (wn ? (base - pbase) >> VIOMMU_HASH_SHIFT : 0);
	return 1;
}

int viommu_reader_window_slow(struct viommu_reader *r, const struct viommu_query *q,
			      struct viommu_answer *a)
{
	if (viommu_window_query_out(q))
		return 0; /* not a query the window takes */
	if (!viommu_reader_window_load(r, q->endpoint))
		return 0;
	return viommu_reader_window(r, q, a); /* the copy is made: its one branch passes now */
}

/* Fill TLB entry @t from the validated hit @lk of q->iova (@wraps: meta.wraps before the lookup). */
static inline void tlb_fill(struct viommu_reader *r, struct viommu_reader_tlb *t, const struct viommu_query *q,
			    const struct viommu_lk *lk, uint64_t wraps)
{
	if (q->endpoint >= VIOMMU_EP_DENSE || lk->direct)
		return; /* the entry finds its endpoint by id: dense ids only; a direct hash value
			 * has no word of its own to vouch for it */
	t->wraps = wraps;
	t->ep = q->endpoint;
	t->ep_seq = lk->ep_seq;
	if (lk->whole == 1) {
		/* The record's first word as validated: seq, domain slot, flags (little-endian). */
		t->wordp = (const __u64 *)&r->exts[lk->idx];
		t->word = lk->gen | (__u64)(uint16_t)lk->dslot << 32 | (__u64)lk->ext_flags << 48;
		t->flags = lk->ext_flags | VIOMMU_QUERY_F_EXTENT;
	} else {
		/* The page's PTE; a solo one (whole == 2) is the whole extent as well (I10). */
		t->wordp = &r->ptes[lk->idx].pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, q->iova)];
		t->word = lk->pte;
		t->flags = lk->ext_flags | (lk->whole ? VIOMMU_QUERY_F_EXTENT : 0);
	}
	t->start = lk->ext_start;
	t->end = lk->ext_end;
	t->phys = lk->ext_phys;
}

/* lk is filled by every path that answers HIT, the only answer the entry is filled from; GCC
 * cannot see that through the lookup's branches, and zeroing it costs a dozen stores a miss. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
uint32_t viommu_reader_translate_walk(struct viommu_reader *r, const struct viommu_query *q,
				      struct viommu_answer *a, struct viommu_reader_tlb *t)
{
	struct viommu_lk lk; /* every HIT fills what the entry below takes from it */
	/* Before the walk: a bump during it leaves the entry with the older value (dropped). */
	uint64_t wraps = __atomic_load_n(&r->meta->wraps, __ATOMIC_ACQUIRE);
	uint64_t last = q->iova + (q->size ? q->size - 1 : 0);

	/* A copy of the endpoint's window made before its domain had one stays valid (the entry
	 * does not change when a window is placed): the walk, slow anyway, refreshes it. */
	if (q->endpoint < VIOMMU_EP_DENSE) {
		const struct viommu_reader_epw *c = &r->epw[q->endpoint % VIOMMU_READER_EPW];

		if (c->ep != q->endpoint || !c->span ||
		    c->ep_seq != __atomic_load_n(&r->eps[q->endpoint].seq, __ATOMIC_RELAXED))
			viommu_reader_window_load(r, q->endpoint);
	}

	/* A query within one page, not asking for the whole extent: the short path, its state in
	 * registers (a lookup's stores, not only its loads, bound how many run at once). */
	if (!(q->access & VIOMMU_QUERY_F_EXTENT) && !((q->iova ^ last) >> VIOMMU_PAGE_SHIFT) &&
	    last >= q->iova) { /* not a range that runs past 2^64: it faults, as the store says */
		struct viommu_lk f;
		int got = viommu_lookup_fast(r, q->endpoint, q->iova, &f);

		if (got == 1 && (f.ext_flags & q->access) == q->access) {
			answer_lk(a, q->iova, &f);
			tlb_fill(r, t, q, &f, wraps);
			return VIOMMU_XLATE_HIT;
		}
		if (got == 2) {
			a->result = VIOMMU_XLATE_FAULT;
			a->reason = VIOMMU_FAULT_R_MAPPING;
			a->pa = 0;
			a->fault_addr = q->iova;
			a->next = 0;
			return VIOMMU_XLATE_FAULT;
		}
	}
	viommu_translate(r, q, a, &lk);
	if (__builtin_expect(a->result == VIOMMU_XLATE_MORE, 0))
		viommu_reader_translate_rest(r, q, a);
	/* A HIT over many extents fills the entry with the first one (lk), validated as for one. */
	if (a->result == VIOMMU_XLATE_HIT)
		tlb_fill(r, t, q, &lk, wraps);
	return a->result;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
		.access = q->access & ~VIOMMU_QUERY_F_EXTENT,
		.address = a->fault_addr,
	};

	if (a->result != VIOMMU_XLATE_FAULT || a->reason > 2)
		return -EINVAL;
	__atomic_store_n(&r->slot->faults[a->reason], r->slot->faults[a->reason] + 1, __ATOMIC_RELAXED);
	/* One message on the connection (another process) or on the fast path's fault socket (this
	 * process, any thread: each message is sent whole); the writer validates it. */
	if (r->conn < 0)
		return -ENOTCONN;
	if (send(r->conn, &rec, sizeof(rec), MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(rec))
		return 0;
	return errno == EAGAIN || errno == EWOULDBLOCK ? -ENOBUFS : -ENOTCONN;
}
