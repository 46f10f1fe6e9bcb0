/* SPDX-License-Identifier: MIT */
/*
 * The bridge core every vhost IOTLB bridge shares: memory regions, MISS answers from the fast
 * path, invalidation ranges from the device's observer events, counters. See iotlb.h.
 *
 * Answers. The fast path returns the whole extent holding the IOVA (ext_start..ext_end at
 * ext_phys). It is clipped to the memory region its PA falls in, so the answer's user addresses
 * are contiguous. Identity endpoints (bypass, no ACCESS_PLATFORM) answer the whole space clipped
 * the same way.
 *
 * The adjacent-join quirk (DPDK 22.11 lib/vhost/iotlb.c: a lookup walks on into the next entry
 * when its IOVA starts where the last ended, and keeps using the first entry's user address).
 * Two IOVA-adjacent answers whose user addresses are not adjacent would then send a DMA over the
 * boundary into the wrong memory. So, at a boundary where the neighbouring byte translates to a
 * user address that does not follow on ("discontiguous"), the answer leaves out the boundary
 * granule; a miss inside that granule is answered with the granule alone, after invalidating the
 * neighbour's byte next to it (which removes the neighbour's boundary entry whole). The two sides
 * of a discontiguous boundary are then never in the consumer at once. A DMA that itself straddles
 * such a boundary can only be served by alternating the two (it never completes: that is the
 * consumer's bug, and no data goes astray). Every quirk answer also invalidates its own range
 * first: the consumer drops an UPDATE whose IOVA already starts an entry, which would leave an
 * older, smaller entry in place and the miss repeating.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device.h"
#include "fastpath.h"
#include "iotlb.h"
#include "reader.h"

#define GRANULE 4096ull
#define FAULT_MEMORY 64 /* faulted misses remembered for `remapped` */
#define HELD_MAX 65536 /* track_held: entries recorded before the record turns conservative */
#define PREFILL_MAX 512 /* prefill: MAPs queued between two syncs */

struct served {
	uint32_t id;
	enum viommu_ep_state state;
	uint32_t domain; /* when ATTACHED */
	uint64_t ranges[VIOMMU_IOTLB_MAX_RANGES][2];
	unsigned nranges;
	bool urgent; /* an endpoint change is pending: flushed at the sync even with opts.defer */
};

struct faulted {
	uint32_t ep;
	uint8_t perm;
	uint8_t state; /* 0 free, 1 faulted, 2 remapped (to be answered at sync) */
	uint64_t iova;
};

/* track_held: an entry the consumer may hold, [iova, last] at uaddr. Sorted by iova; disjoint
 * (an answer that overlaps a recorded entry other than itself invalidates its range first, and
 * an invalidation removes every overlapping entry whole, as the consumers do). */
struct held {
	uint32_t ep;
	uint64_t iova, last, uaddr;
};

struct prefill {
	uint32_t ep;
	uint8_t perm;
	uint64_t iova;
};

struct viommu_iotlb {
	struct viommu_fastpath *fp;
	struct viommu_device *dev;
	struct viommu_reader *reader;
	struct viommu_iotlb_opts opts;
	struct viommu_iotlb_ops ops;
	struct viommu_iotlb_region regions[VIOMMU_IOTLB_MAX_REGIONS];
	unsigned nregions;
	struct served served[VIOMMU_IOTLB_MAX_ENDPOINTS];
	unsigned nserved;
	struct faulted faulted[FAULT_MEMORY];
	unsigned faulted_next;
	bool in_flush;
	struct held *held;
	unsigned nheld, held_cap;
	bool held_overflow; /* entries were lost: assume anything may be held */
	struct prefill prefill[PREFILL_MAX];
	unsigned nprefill;
	struct viommu_iotlb_stats st;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct served *served_find(struct viommu_iotlb *it, uint32_t ep)
{
	for (unsigned i = 0; i < it->nserved; i++)
		if (it->served[i].id == ep)
			return &it->served[i];
	return NULL;
}

static bool translating(enum viommu_ep_state st)
{
	return st == VIOMMU_EP_ATTACHED || st == VIOMMU_EP_BYPASS || st == VIOMMU_EP_IDENTITY;
}

/* ---- the record of what the consumer may hold (track_held) ---- */

/* Index of the first entry whose (ep, last) is at or after (@ep, @iova). */
static unsigned held_lower(const struct viommu_iotlb *it, uint32_t ep, uint64_t iova)
{
	unsigned lo = 0, hi = it->nheld;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct held *h = &it->held[mid];

		if (h->ep < ep || (h->ep == ep && h->last < iova))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The recorded entry of @ep holding byte @iova, or NULL. */
static const struct held *held_at(const struct viommu_iotlb *it, uint32_t ep, uint64_t iova)
{
	unsigned i = held_lower(it, ep, iova);

	if (i < it->nheld && it->held[i].ep == ep && it->held[i].iova <= iova)
		return &it->held[i];
	return NULL;
}

/* Forget every entry of @ep overlapping [first, last] (the consumer removes them whole). */
static void held_remove(struct viommu_iotlb *it, uint32_t ep, uint64_t first, uint64_t last)
{
	unsigned i = held_lower(it, ep, first), j = i;

	while (j < it->nheld && it->held[j].ep == ep && it->held[j].iova <= last)
		j++;
	if (j > i) /* (held may still be NULL: memmove's arguments must not be) */
		memmove(&it->held[i], &it->held[j], (it->nheld - j) * sizeof(it->held[0]));
	it->nheld -= j - i;
	/* A full invalidation (vhost-user's is [0, 2^64 - 2]) of the only endpoint: whatever the
	 * record lost is gone from the consumer too. */
	if (first == 0 && last >= UINT64_MAX - 1 && it->nserved <= 1)
		it->held_overflow = false;
	it->st.held_entries = it->nheld;
}

/* Record [iova, last] at @uaddr (nothing of @ep overlaps it: see answer()). */
static void held_add(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint64_t last,
		     uint64_t uaddr)
{
	unsigned i;

	if (it->nheld == it->held_cap) {
		unsigned cap = it->held_cap ? it->held_cap * 2 : 256;
		struct held *n = cap <= HELD_MAX ? realloc(it->held, cap * sizeof(*n)) : NULL;

		if (!n) {
			if (!it->held_overflow)
				it->st.held_overflows++;
			it->held_overflow = true;
			return;
		}
		it->held = n;
		it->held_cap = cap;
	}
	i = held_lower(it, ep, iova);
	memmove(&it->held[i + 1], &it->held[i], (it->nheld - i) * sizeof(it->held[0]));
	it->held[i] = (struct held){ ep, iova, last, uaddr };
	it->nheld++;
	it->st.held_entries = it->nheld;
}

/* ---- ranges ---- */

void viommu_iotlb_range_add(uint64_t (*r)[2], unsigned *n, unsigned cap, uint64_t first,
			    uint64_t last)
{
	unsigned i = 0, j;

	if (first > last || !cap)
		return;
	while (i < *n && r[i][1] < first && r[i][1] + 1 != first)
		i++;
	/* r[i] is the first range that overlaps or touches [first, last], or lies after it. */
	j = i;
	while (j < *n && (r[j][0] <= last || (last != UINT64_MAX && r[j][0] == last + 1))) {
		if (r[j][0] < first)
			first = r[j][0];
		if (r[j][1] > last)
			last = r[j][1];
		j++;
	}
	if (j > i) { /* ranges i..j-1 merge into one */
		r[i][0] = first;
		r[i][1] = last;
		memmove(&r[i + 1], &r[j], (*n - j) * sizeof(r[0]));
		*n -= j - i - 1;
		return;
	}
	if (*n == cap) {
		/* Full: join the two closest neighbours (the list only ever covers more), then
		 * insert. With cap 1 the one range grows to cover the new one. */
		unsigned best = 0;
		uint64_t gap = UINT64_MAX;

		if (cap == 1) {
			r[0][0] = r[0][0] < first ? r[0][0] : first;
			r[0][1] = r[0][1] > last ? r[0][1] : last;
			return;
		}
		for (unsigned k = 0; k + 1 < *n; k++)
			if (r[k + 1][0] - r[k][1] < gap) {
				gap = r[k + 1][0] - r[k][1];
				best = k;
			}
		r[best][1] = r[best + 1][1];
		memmove(&r[best + 1], &r[best + 2], (*n - best - 2) * sizeof(r[0]));
		(*n)--;
		viommu_iotlb_range_add(r, n, cap, first, last);
		return;
	}
	memmove(&r[i + 1], &r[i], (*n - i) * sizeof(r[0]));
	r[i][0] = first;
	r[i][1] = last;
	(*n)++;
}

static void pend(struct served *s, uint64_t first, uint64_t last)
{
	viommu_iotlb_range_add(s->ranges, &s->nranges, VIOMMU_IOTLB_MAX_RANGES, first, last);
}

/* ---- observer ---- */

static int obs_endpoint_changed(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st)
{
	struct viommu_iotlb *it = ctx;
	struct served *s = served_find(it, ep->id);
	uint32_t dom = ep->domain ? ep->domain->id : 0;

	if (!s)
		return 0;
	/* Leaving a translating state, or moving to another domain: everything answered for this
	 * endpoint may be wrong now. */
	if (translating(s->state) &&
	    (st != s->state || (st == VIOMMU_EP_ATTACHED && dom != s->domain))) {
		pend(s, 0, UINT64_MAX);
		s->urgent = true;
	}
	s->state = st;
	s->domain = dom;
	if (st == VIOMMU_EP_BYPASS || st == VIOMMU_EP_IDENTITY)
		for (unsigned i = 0; i < FAULT_MEMORY; i++)
			if (it->faulted[i].state == 1 && it->faulted[i].ep == ep->id)
				it->faulted[i].state = 2;
	return 0;
}

static int obs_map(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	struct viommu_iotlb *it = ctx;

	for (unsigned i = 0; i < FAULT_MEMORY; i++) {
		struct faulted *f = &it->faulted[i];
		struct served *s;

		if (f->state != 1 || f->iova < x->start || f->iova > x->end)
			continue;
		s = served_find(it, f->ep);
		if (s && s->state == VIOMMU_EP_ATTACHED && s->domain == d->id)
			f->state = 2;
	}
	if (it->opts.prefill && it->ops.remapped)
		for (unsigned i = 0; i < it->nserved; i++) {
			struct served *s = &it->served[i];

			if (s->state != VIOMMU_EP_ATTACHED || s->domain != d->id)
				continue;
			if (it->nprefill == PREFILL_MAX) {
				it->st.prefills_dropped++;
				continue;
			}
			/* Answered at sync, once the fast path has published the MAP. */
			it->prefill[it->nprefill++] = (struct prefill){ s->id, VIOMMU_IOTLB_PERM_RO, x->start };
		}
	return 0;
}

static void obs_unmap(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	struct viommu_iotlb *it = ctx;

	for (unsigned i = 0; i < it->nserved; i++)
		if (it->served[i].state == VIOMMU_EP_ATTACHED && it->served[i].domain == d->id)
			pend(&it->served[i], x->start, x->end);
}

static int flush(struct viommu_iotlb *it, bool wait)
{
	int sent = 0, err;

	if (it->in_flush)
		return 0; /* a sync from inside a flush's wait: the outer flush sends it */
	it->in_flush = true;
	/* Sent before anything is waited for: one round trip for all of them. */
	for (unsigned i = 0; i < it->nserved; i++) {
		struct served *s = &it->served[i];

		/* Take the list first: ops may run the event loop, which may add ranges. */
		while (s->nranges) {
			uint64_t first = s->ranges[0][0], last = s->ranges[0][1];

			memmove(&s->ranges[0], &s->ranges[1], (s->nranges - 1) * sizeof(s->ranges[0]));
			s->nranges--;
			if (!s->nranges)
				s->urgent = false;
			it->st.invalidates++;
			sent++;
			if (it->opts.track_held)
				held_remove(it, s->id, first, last);
			if (it->ops.invalidate && (err = it->ops.invalidate(it->ops.ctx, s->id, first, last)))
				it->st.invalidate_errors++;
		}
	}
	if (sent) {
		it->st.flushes++;
		if (it->ops.complete && it->ops.complete(it->ops.ctx, wait))
			it->st.invalidate_errors++;
	}
	it->in_flush = false;
	return sent;
}

static void obs_sync(void *ctx, bool removed)
{
	struct viommu_iotlb *it = ctx;

	(void)removed; /* the ranges say it; an endpoint change the core does not count is in them */
	if (it->opts.lazy && it->opts.defer && !it->in_flush) {
		bool urgent = false;

		for (unsigned i = 0; i < it->nserved; i++)
			urgent |= it->served[i].urgent;
		/* Answers this sync sends (remapped faults, prefills) must not precede an older
		 * INVALIDATE of the same IOVAs: flush first. */
		if (it->ops.remapped) {
			urgent |= it->nprefill > 0;
			for (unsigned i = 0; i < FAULT_MEMORY; i++)
				urgent |= it->faulted[i].state == 2;
		}
		if (urgent) {
			flush(it, false);
		} else if (viommu_iotlb_pending(it)) {
			/* Left for the bridge's flush outside the request: it merges with whatever
			 * else is unmapped before then. */
			it->st.deferrals++;
			if (it->ops.deferred)
				it->ops.deferred(it->ops.ctx, viommu_iotlb_pending(it));
		}
	} else {
		flush(it, !it->opts.lazy);
	}
	/* Faulted misses a MAP (or a bypass) has now covered: answer them (after the fast path has
	 * published: it is the earlier observer). */
	if (it->ops.remapped && !it->in_flush)
		for (unsigned i = 0; i < FAULT_MEMORY; i++)
			if (it->faulted[i].state == 2) {
				it->faulted[i].state = 0;
				it->ops.remapped(it->ops.ctx, it->faulted[i].ep, it->faulted[i].iova,
						 it->faulted[i].perm);
			}
	if (it->ops.remapped && !it->in_flush) {
		unsigned n = it->nprefill;

		/* Taken first: the callback may run the bridge's event loop. A MAP unmapped again
		 * before this sync finds nothing and sends nothing. */
		it->nprefill = 0;
		for (unsigned i = 0; i < n; i++) {
			it->st.prefills++;
			it->ops.remapped(it->ops.ctx, it->prefill[i].ep, it->prefill[i].iova,
					 it->prefill[i].perm);
		}
	}
}

/* ---- life ---- */

struct viommu_iotlb *viommu_iotlb_new(struct viommu_fastpath *fp, const struct viommu_iotlb_opts *opts,
				      const struct viommu_iotlb_ops *ops)
{
	struct viommu_iotlb *it = calloc(1, sizeof(*it));
	struct viommu_observer obs = {
		.endpoint_changed = obs_endpoint_changed,
		.map = obs_map,
		.unmap = obs_unmap,
		.sync = obs_sync,
	};
	int err;

	if (!it)
		return NULL;
	it->fp = fp;
	it->dev = viommu_fastpath_device(fp);
	if (opts)
		it->opts = *opts;
	if (ops)
		it->ops = *ops;
	it->reader = viommu_reader_open(fp);
	if (!it->reader) {
		err = errno;
		free(it);
		errno = err;
		return NULL;
	}
	obs.ctx = it;
	err = viommu_device_add_observer(it->dev, &obs);
	if (err) {
		viommu_reader_close(it->reader);
		free(it);
		errno = -err;
		return NULL;
	}
	return it;
}

void viommu_iotlb_free(struct viommu_iotlb *it)
{
	if (!it)
		return;
	viommu_device_remove_observer(it->dev, it);
	viommu_reader_close(it->reader);
	free(it->held);
	free(it);
}

int viommu_iotlb_add_region(struct viommu_iotlb *it, const struct viommu_iotlb_region *r)
{
	if (!r->size || !r->hva || r->gpa + r->size - 1 < r->gpa)
		return -EINVAL;
	for (unsigned i = 0; i < it->nregions; i++) {
		const struct viommu_iotlb_region *o = &it->regions[i];

		if (r->gpa <= o->gpa + o->size - 1 && o->gpa <= r->gpa + r->size - 1)
			return -EEXIST;
	}
	if (it->nregions == VIOMMU_IOTLB_MAX_REGIONS)
		return -ENOSPC;
	it->regions[it->nregions++] = *r;
	return 0;
}

const struct viommu_iotlb_region *viommu_iotlb_regions(const struct viommu_iotlb *it, unsigned *n)
{
	*n = it->nregions;
	return it->regions;
}

const struct viommu_iotlb_region *viommu_iotlb_region_of(const struct viommu_iotlb *it, uint64_t gpa,
							 uint64_t len)
{
	uint64_t last = gpa + (len ? len - 1 : 0);

	if (last < gpa)
		return NULL;
	for (unsigned i = 0; i < it->nregions; i++) {
		const struct viommu_iotlb_region *r = &it->regions[i];

		if (gpa >= r->gpa && last <= r->gpa + r->size - 1)
			return r;
	}
	return NULL;
}

int viommu_iotlb_serve(struct viommu_iotlb *it, uint32_t ep)
{
	const struct viommu_endpoint *e = viommu_device_endpoint(it->dev, ep);
	struct served *s;

	if (served_find(it, ep))
		return -EEXIST;
	if (it->nserved == VIOMMU_IOTLB_MAX_ENDPOINTS)
		return -ENOSPC;
	s = &it->served[it->nserved++];
	memset(s, 0, sizeof(*s));
	s->id = ep;
	s->state = viommu_device_endpoint_state(it->dev, ep);
	s->domain = e && e->domain ? e->domain->id : 0;
	return 0;
}

/* ---- answers ---- */

/* What byte @iova of @ep translates to, whatever the access: 1 and *uaddr / *region-clipped
 * extent when it is backed by a region; 0 when it has no translation or no region; -EAGAIN. */
struct byte_xlate {
	uint32_t result; /* VIOMMU_XLATE_* */
	uint64_t lo, hi; /* the extent clipped to the region (IOVA, inclusive) */
	uint64_t uaddr_lo; /* user address of lo */
	uint32_t flags;
	const struct viommu_iotlb_region *region;
	struct viommu_answer a;
};

static void lookup(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint32_t access,
		   struct byte_xlate *x)
{
	struct viommu_query q = { .endpoint = ep, .access = access, .iova = iova, .size = 1 };
	uint64_t start, end, pa, below, above;

	viommu_reader_enter(it->reader);
	x->result = viommu_reader_translate(it->reader, &q, &x->a);
	viommu_reader_exit(it->reader);
	x->region = NULL;
	if (x->result == VIOMMU_XLATE_HIT) {
		start = x->a.ext_start;
		end = x->a.ext_end;
		pa = x->a.pa;
		x->flags = x->a.ext_flags;
	} else if (x->result == VIOMMU_XLATE_IDENTITY) {
		start = 0;
		end = UINT64_MAX;
		pa = iova;
		x->flags = VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE;
	} else {
		return;
	}
	x->region = viommu_iotlb_region_of(it, pa, 1);
	if (!x->region)
		return;
	below = pa - x->region->gpa; /* bytes of the region below pa */
	above = x->region->gpa + x->region->size - 1 - pa;
	x->lo = iova - (iova - start < below ? iova - start : below);
	x->hi = iova + (end - iova < above ? end - iova : above);
	x->uaddr_lo = (uint64_t)(uintptr_t)x->region->hva + (pa - x->region->gpa) - (iova - x->lo);
}

/* Whether the byte at @iova (a neighbour of an answer) may be held by the consumer with a user
 * address other than @uaddr (what would follow on from the answer). */
static bool discontiguous(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint64_t uaddr)
{
	struct byte_xlate n;

	lookup(it, ep, iova, 0, &n);
	if (n.result == VIOMMU_XLATE_RETRY)
		return true; /* cannot tell: assume the worst */
	if (!n.region)
		return false; /* no translation or no memory: never answered, nothing held */
	return n.uaddr_lo + (iova - n.lo) != uaddr;
}

/* quirk_adjacent_join: whether the consumer may hold byte @iova (next to an answer) at a user
 * address other than @uaddr (what would follow on from the answer). Without track_held, or when
 * the record overflowed, whenever that byte translates elsewhere (it may have been answered). */
static bool neighbour_conflicts(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint64_t uaddr)
{
	const struct held *h;

	if (!it->opts.track_held || it->held_overflow)
		return discontiguous(it, ep, iova, uaddr);
	h = held_at(it, ep, iova);
	return h && h->uaddr + (iova - h->iova) != uaddr;
}

/* quirk_adjacent_join: whether [lo, hi] must be invalidated before answering it at @uaddr: the
 * consumer may hold an entry there (other than exactly this answer, which it would keep). */
static bool own_range_held(struct viommu_iotlb *it, uint32_t ep, uint64_t lo, uint64_t hi,
			   uint64_t uaddr)
{
	unsigned i;

	if (!it->opts.track_held || it->held_overflow)
		return true;
	i = held_lower(it, ep, lo);
	if (i >= it->nheld || it->held[i].ep != ep || it->held[i].iova > hi)
		return false; /* nothing recorded in [lo, hi] */
	return !(it->held[i].iova == lo && it->held[i].last == hi && it->held[i].uaddr == uaddr);
}

void viommu_iotlb_watch(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm)
{
	struct faulted *f = &it->faulted[it->faulted_next++ % FAULT_MEMORY];

	f->ep = ep;
	f->iova = iova;
	f->perm = perm;
	f->state = 1;
}

static int answer(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
		  struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval, bool miss);

int viommu_iotlb_answer(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
			struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval)
{
	return answer(it, ep, iova, perm, out, inval, true);
}

int viommu_iotlb_lookup(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
			struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval)
{
	return answer(it, ep, iova, perm, out, inval, false);
}

static int answer(struct viommu_iotlb *it, uint32_t ep, uint64_t iova, uint8_t perm,
		  struct viommu_iotlb_entry *out, struct viommu_iotlb_entry *inval, bool miss)
{
	uint64_t t0 = now_ns(), lo, hi, dt;
	uint32_t allowed, want = perm ? perm & VIOMMU_IOTLB_PERM_RW : VIOMMU_IOTLB_PERM_RO;
	struct byte_xlate x;
	int ret = 0;

	if (miss)
		it->st.misses++;
	inval->size = 0;
	lookup(it, ep, iova, 0, &x);
	if (x.result == VIOMMU_XLATE_RETRY) {
		it->st.retries++;
		ret = -EAGAIN;
		goto out;
	}
	allowed = x.flags & (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE);
	if (allowed & VIOMMU_MAP_F_WRITE)
		allowed |= VIOMMU_MAP_F_READ; /* widened: see iotlb.h */
	if (x.result == VIOMMU_XLATE_FAULT || (want & ~allowed)) {
		struct viommu_query q = { .endpoint = ep, .access = want, .iova = iova, .size = 1 };
		struct viommu_answer fa = { .result = VIOMMU_XLATE_FAULT, .reason = VIOMMU_FAULT_R_MAPPING,
					    .fault_addr = iova };

		ret = -EFAULT;
		if (!miss)
			goto out;
		it->st.faults++;
		if (viommu_reader_report_fault(it->reader, &q,
					       x.result == VIOMMU_XLATE_FAULT ? &x.a : &fa))
			it->st.faults_dropped++;
		/* Remembered: a later MAP that covers it gets it answered (ops->remapped). */
		viommu_iotlb_watch(it, ep, iova, (uint8_t)want);
		goto out;
	}
	if (!x.region) {
		it->st.unbacked++;
		ret = -ENXIO;
		if (miss && it->opts.fault_unbacked) {
			/* The guest mapped the IOVA to something that is not memory (MMIO): no
			 * consumer can reach it, and the guest learns why its queue stopped. */
			struct viommu_query q = { .endpoint = ep, .access = want, .iova = iova, .size = 1 };
			struct viommu_answer fa = { .result = VIOMMU_XLATE_FAULT,
						    .reason = VIOMMU_FAULT_R_MAPPING, .fault_addr = iova };

			it->st.faults++;
			if (viommu_reader_report_fault(it->reader, &q, &fa))
				it->st.faults_dropped++;
			viommu_iotlb_watch(it, ep, iova, (uint8_t)want);
		}
		goto out;
	}
	lo = x.lo;
	hi = x.hi;
	if (it->opts.per_page) {
		if (lo < (iova & ~(GRANULE - 1)))
			lo = iova & ~(GRANULE - 1);
		if (hi > (iova | (GRANULE - 1)))
			hi = iova | (GRANULE - 1);
	}
	if (it->opts.quirk_adjacent_join) {
		uint64_t ulo = x.uaddr_lo + (lo - x.lo), uhi = ulo + (hi - lo);
		bool pd = lo > 0 && neighbour_conflicts(it, ep, lo - 1, ulo - 1);
		bool nd = hi < UINT64_MAX && neighbour_conflicts(it, ep, hi + 1, uhi + 1);
		uint64_t ilo = lo, ihi = hi, first, last;
		bool own;

		if (pd || nd) {
			it->st.boundary_splits++;
			if (pd)
				ilo = hi - lo + 1 > GRANULE ? lo + GRANULE : hi + 1;
			if (nd)
				ihi = hi - lo + 1 > GRANULE ? hi - GRANULE : lo - 1;
			if (ilo <= ihi && ilo != hi + 1 && ihi != lo - 1 && iova >= ilo && iova <= ihi) {
				lo = ilo; /* the interior: neighbours are its own extent's granules */
				hi = ihi;
				pd = nd = false;
			} else if (iova - lo < GRANULE && pd) {
				hi = hi - lo + 1 > GRANULE ? lo + GRANULE - 1 : hi; /* the low granule */
				nd = nd && hi == x.hi;
			} else {
				lo = hi - lo + 1 > GRANULE ? hi - GRANULE + 1 : lo; /* the high granule */
				pd = pd && lo == x.lo;
			}
		}
		/* Our own range, unless the record shows nothing there but this very answer (an UPDATE
		 * whose IOVA already starts an entry is dropped); the neighbour's byte where the
		 * granule touches it. */
		own = own_range_held(it, ep, lo, hi, x.uaddr_lo + (lo - x.lo));
		first = pd ? lo - 1 : lo;
		last = nd ? hi + 1 : hi;
		if (own || pd || nd) {
			inval->iova = first;
			inval->size = last - first + 1;
		} else {
			it->st.held_spared++;
		}
		inval->uaddr = 0;
		inval->perm = 0;
	}
	out->iova = lo;
	out->size = hi - lo + 1; /* never 0: a region is at most 2^64 - 1 bytes */
	out->uaddr = x.uaddr_lo + (lo - x.lo);
	out->perm = (uint8_t)allowed;
	if (it->opts.track_held && it->opts.quirk_adjacent_join) {
		if (inval->size)
			held_remove(it, ep, inval->iova, inval->iova + inval->size - 1);
		if (!held_at(it, ep, lo))
			held_add(it, ep, lo, hi, out->uaddr);
	}
	if (miss)
		it->st.updates++;
out:
	if (!miss)
		return ret;
	dt = now_ns() - t0;
	it->st.service_ns += dt;
	if (dt > it->st.service_max_ns)
		it->st.service_max_ns = dt;
	return ret;
}

int viommu_iotlb_flush(struct viommu_iotlb *it, bool wait)
{
	return flush(it, wait);
}

unsigned viommu_iotlb_pending(const struct viommu_iotlb *it)
{
	unsigned n = 0;

	for (unsigned i = 0; i < it->nserved; i++)
		n += it->served[i].nranges;
	return n;
}

const struct viommu_iotlb_stats *viommu_iotlb_stats(const struct viommu_iotlb *it)
{
	return &it->st;
}

void viommu_iotlb_print_stat(const struct viommu_iotlb *it, FILE *out)
{
	const struct viommu_iotlb_stats *s = &it->st;

	fprintf(out, "iotlb: %llu misses, %llu updates, %llu invalidates (%llu flushes, %llu errors), "
		"%llu faults (%llu dropped), %llu unbacked, %llu retries, %llu boundary splits, "
		"service mean %.2f us max %.2f us\n",
		(unsigned long long)s->misses, (unsigned long long)s->updates,
		(unsigned long long)s->invalidates, (unsigned long long)s->flushes,
		(unsigned long long)s->invalidate_errors, (unsigned long long)s->faults,
		(unsigned long long)s->faults_dropped, (unsigned long long)s->unbacked,
		(unsigned long long)s->retries, (unsigned long long)s->boundary_splits,
		s->misses ? (double)s->service_ns / (double)s->misses / 1e3 : 0.0,
		(double)s->service_max_ns / 1e3);
}
