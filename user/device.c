// SPDX-License-Identifier: MIT
/*
 * The virtio-iommu device core. See device.h for the contract and docs/design.md for the data
 * structures; docs/statuses.md lists the statuses chosen where the spec names none.
 *
 * Every request handler follows one shape: check everything (no state touched), then apply.
 * The only step that can fail after a change has started is an observer's map, which is undone.
 */
#include "device.h"

#include "btree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang's way of saying it */
#define VIOMMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(VIOMMU_ASAN)
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(a, n) ((void)(a), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(a, n) ((void)(a), (void)(n))
#endif

#define VIOMMU_EXT_CACHE 16

struct viommu_device {
	struct viommu_config cfg;
	uint64_t granule;
	uint64_t negotiated;
	uint8_t bypass; /* current config `bypass` */

	struct viommu_btree endpoints; /* id -> struct ep_priv */
	struct viommu_btree domains; /* id -> struct dom_priv */
	uint64_t nr_mappings;

	uint32_t *slot_free; /* stack of freed domain slots */
	uint32_t slot_free_n;
	uint32_t slot_hwm; /* slots [0, slot_hwm) have been handed out at least once */

	struct viommu_observer obs[VIOMMU_MAX_OBSERVERS];
	unsigned nobs;
	bool in_batch, dirty, removed;

	struct viommu_wire_fault *faults; /* ring of max_pending_faults */
	uint32_t fault_head, fault_count, event_credits;

	/* Extent records an UNMAP freed, for the next MAPs (ext_new, ext_put): a MAP+UNMAP pair
	 * costs no malloc and no free, about 130 instructions (malloc's own per-thread cache
	 * still does ~40 for malloc and ~100 for free). */
	struct viommu_extent *ext_cache[VIOMMU_EXT_CACHE];
	unsigned ext_cached;
	/* The domain of the last MAP or UNMAP (dom_of_request): a guest maps into one domain at a
	 * time. Forgotten when that domain is destroyed, the only place a domain is freed while
	 * the device lives. */
	struct dom_priv *dom_last;

	struct viommu_device_stats stats;
};

/* Endpoints of one domain, for RESV checks on MAP: kept beside the endpoint, not in the ABI. */
struct ep_priv {
	struct viommu_endpoint ep;
	struct ep_priv *dom_next;
};

struct dom_priv {
	struct viommu_domain dom;
	struct viommu_btree extents; /* start -> struct viommu_extent */
	struct ep_priv *eps;
};

void viommu_config_default(struct viommu_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->page_size_mask = 0xfffffffffffff000ULL;
	cfg->input_start = 0;
	cfg->input_end = UINT64_MAX;
	cfg->domain_start = 0;
	cfg->domain_end = UINT32_MAX;
	cfg->probe_size = 512;
	cfg->bypass = 1;
	cfg->features = VIOMMU_FBIT(VIOMMU_F_INPUT_RANGE) | VIOMMU_FBIT(VIOMMU_F_DOMAIN_RANGE) |
			VIOMMU_FBIT(VIOMMU_F_MAP_UNMAP) | VIOMMU_FBIT(VIOMMU_F_PROBE) |
			VIOMMU_FBIT(VIOMMU_F_MMIO) | VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG);
	cfg->max_domains = 65536;
	cfg->max_mappings_per_domain = 1u << 20;
	cfg->max_mappings = 4u << 20;
	cfg->max_endpoints = 65536;
	cfg->max_pending_faults = 1024;
}

static bool has(const struct viommu_device *dev, int bit)
{
	return dev->negotiated & VIOMMU_FBIT(bit);
}

/* input_range and domain_range bind the device as soon as it offers their feature, whether or not
 * the driver accepts it. Spec: "If the VIRTIO_IOMMU_F_INPUT_RANGE feature is offered, input_range
 * contains the virtual address range that the IOMMU is able to translate. Any mapping request to
 * virtual addresses outside of this range fails." (and likewise domain_range for domain IDs). Only
 * the driver's MUST NOT is conditioned on negotiation. */
static bool domain_in_range(const struct viommu_device *dev, uint32_t domain)
{
	return !(dev->cfg.features & VIOMMU_FBIT(VIOMMU_F_DOMAIN_RANGE)) ||
	       (domain >= dev->cfg.domain_start && domain <= dev->cfg.domain_end);
}

static bool input_in_range(const struct viommu_device *dev, uint64_t start, uint64_t end)
{
	return !(dev->cfg.features & VIOMMU_FBIT(VIOMMU_F_INPUT_RANGE)) ||
	       (start >= dev->cfg.input_start && end <= dev->cfg.input_end);
}

struct viommu_device *viommu_device_new(const struct viommu_config *cfg)
{
	struct viommu_device *dev;

	if (!cfg->page_size_mask || cfg->input_start > cfg->input_end ||
	    cfg->domain_start > cfg->domain_end || cfg->bypass > 1 ||
	    (cfg->features & ~VIOMMU_FEATURES_KNOWN) ||
	    ((cfg->features & VIOMMU_FBIT(VIOMMU_F_BYPASS)) &&
	     (cfg->features & VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG))) ||
	    !cfg->max_domains || cfg->max_domains > VIOMMU_MAX_DOMAINS_LIMIT ||
	    !cfg->max_pending_faults || cfg->max_pending_faults > VIOMMU_MAX_FAULTS_LIMIT ||
	    cfg->probe_size > VIOMMU_PROBE_SIZE_LIMIT) {
		errno = EINVAL;
		return NULL;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;
	dev->cfg = *cfg;
	dev->granule = cfg->page_size_mask & -cfg->page_size_mask;
	dev->negotiated = cfg->features;
	dev->bypass = cfg->bypass;
	viommu_btree_init(&dev->endpoints);
	viommu_btree_init(&dev->domains);
	dev->slot_free = calloc(cfg->max_domains, sizeof(*dev->slot_free));
	dev->faults = calloc(cfg->max_pending_faults, sizeof(*dev->faults));
	if (!dev->slot_free || !dev->faults) {
		viommu_device_free(dev);
		errno = ENOMEM;
		return NULL;
	}
	return dev;
}

static void domain_free_extents(struct dom_priv *dp)
{
	viommu_btree_destroy(&dp->extents, free);
}

/* A record for a MAP: one an UNMAP gave back, else malloc's (not calloc's: glibc's calloc skips
 * its per-thread cache). NULL: no memory. */
static struct viommu_extent *ext_new(struct viommu_device *dev)
{
	struct viommu_extent *x;

	if (!dev->ext_cached)
		return malloc(sizeof(*x));
	x = dev->ext_cache[--dev->ext_cached];
	ASAN_UNPOISON_MEMORY_REGION(x, sizeof(*x));
	return x;
}

/* @x is no one's any more: kept for the next MAP while there is room (poisoned under ASan, so a
 * use after this is still reported), else freed. */
static void ext_put(struct viommu_device *dev, struct viommu_extent *x)
{
	if (dev->ext_cached == VIOMMU_EXT_CACHE) {
		free(x);
		return;
	}
	ASAN_POISON_MEMORY_REGION(x, sizeof(*x));
	dev->ext_cache[dev->ext_cached++] = x;
}

void viommu_device_free(struct viommu_device *dev)
{
	struct dom_priv *dp;
	uint64_t key;

	if (!dev)
		return;
	while ((dp = viommu_btree_first(&dev->domains, &key))) {
		viommu_btree_remove(&dev->domains, key);
		domain_free_extents(dp);
		free(dp);
	}
	viommu_btree_destroy(&dev->endpoints, free);
	while (dev->ext_cached)
		free(ext_new(dev));
	free(dev->slot_free);
	free(dev->faults);
	free(dev);
}

const struct viommu_config *viommu_device_config(const struct viommu_device *dev)
{
	return &dev->cfg;
}

int viommu_device_limit_caps(struct viommu_device *dev, uint32_t max_domains, uint64_t max_mappings)
{
	if (!max_domains || !max_mappings)
		return -EINVAL;
	if (max_domains > dev->cfg.max_domains)
		max_domains = dev->cfg.max_domains;
	if (max_mappings > dev->cfg.max_mappings)
		max_mappings = dev->cfg.max_mappings;
	/* Domain slots are handed out below a high-water mark: it must fit the new cap too. */
	if (dev->slot_hwm > max_domains || dev->nr_mappings > max_mappings)
		return -EBUSY;
	dev->cfg.max_domains = max_domains;
	dev->cfg.max_mappings = max_mappings;
	if (dev->cfg.max_mappings_per_domain > max_mappings)
		dev->cfg.max_mappings_per_domain = (uint32_t)max_mappings;
	return 0;
}

/* The core's private wrapper of a domain. */
static struct dom_priv *dom_priv_of(struct viommu_domain *d)
{
	return (struct dom_priv *)((char *)d - offsetof(struct dom_priv, dom));
}

static struct ep_priv *ep_find(const struct viommu_device *dev, uint32_t id)
{
	return viommu_btree_find(&dev->endpoints, id);
}

static struct dom_priv *dom_find(const struct viommu_device *dev, uint32_t id)
{
	return viommu_btree_find(&dev->domains, id);
}

/* dom_find() for a MAP or UNMAP: the last one's domain again without a descent (about 60
 * instructions a MAP+UNMAP pair). */
static struct dom_priv *dom_of_request(struct viommu_device *dev, uint32_t id)
{
	struct dom_priv *dp = dev->dom_last;

	if (dp && dp->dom.id == id)
		return dp;
	return dev->dom_last = dom_find(dev, id);
}

/* Is an unattached endpoint in bypass? BYPASS_CONFIG offered: config `bypass` decides, even if
 * the driver never negotiated it (spec). Legacy F_BYPASS: only once negotiated. */
static bool unattached_bypass(const struct viommu_device *dev)
{
	if (dev->cfg.features & VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG))
		return dev->bypass;
	return has(dev, VIOMMU_F_BYPASS);
}

static enum viommu_ep_state ep_state(const struct viommu_device *dev, const struct viommu_endpoint *ep)
{
	if (!ep->access_platform)
		return VIOMMU_EP_IDENTITY;
	if (ep->domain)
		return ep->domain->bypass ? VIOMMU_EP_BYPASS : VIOMMU_EP_ATTACHED;
	return unattached_bypass(dev) ? VIOMMU_EP_BYPASS : VIOMMU_EP_BLOCKED;
}

enum viommu_ep_state viommu_device_endpoint_state(const struct viommu_device *dev, uint32_t id)
{
	struct ep_priv *e = ep_find(dev, id);

	return e ? ep_state(dev, &e->ep) : VIOMMU_EP_UNKNOWN;
}

const struct viommu_endpoint *viommu_device_endpoint(const struct viommu_device *dev, uint32_t id)
{
	struct ep_priv *e = ep_find(dev, id);

	return e ? &e->ep : NULL;
}

/* ---- observers ---- */

static int notify_ep_state(struct viommu_device *dev, const struct viommu_endpoint *ep,
			   enum viommu_ep_state st)
{
	int err = 0;

	for (unsigned i = 0; i < dev->nobs; i++)
		if (dev->obs[i].endpoint_changed) {
			int e = dev->obs[i].endpoint_changed(dev->obs[i].ctx, ep, st);

			err = err ? err : e;
		}
	dev->dirty = true;
	return err;
}

static int notify_ep(struct viommu_device *dev, const struct viommu_endpoint *ep)
{
	return notify_ep_state(dev, ep, ep_state(dev, ep));
}

static void notify_unmap(struct viommu_device *dev, struct viommu_domain *d, struct viommu_extent *x)
{
	for (unsigned i = 0; i < dev->nobs; i++)
		if (dev->obs[i].unmap)
			dev->obs[i].unmap(dev->obs[i].ctx, d, x);
	dev->dirty = dev->removed = true;
}

/* All observers map @x, or none does. */
static int notify_map(struct viommu_device *dev, struct viommu_domain *d, struct viommu_extent *x)
{
	for (unsigned i = 0; i < dev->nobs; i++) {
		int err = dev->obs[i].map ? dev->obs[i].map(dev->obs[i].ctx, d, x) : 0;

		if (err) {
			while (i--)
				if (dev->obs[i].unmap)
					dev->obs[i].unmap(dev->obs[i].ctx, d, x);
			return err;
		}
	}
	dev->dirty = true;
	return 0;
}

static int notify_domain_created(struct viommu_device *dev, struct viommu_domain *d)
{
	for (unsigned i = 0; i < dev->nobs; i++) {
		int err = dev->obs[i].domain_created ?
				  dev->obs[i].domain_created(dev->obs[i].ctx, d) : 0;

		if (err) {
			while (i--)
				if (dev->obs[i].domain_destroyed)
					dev->obs[i].domain_destroyed(dev->obs[i].ctx, d);
			return err;
		}
	}
	return 0;
}

/* Inlined: a request calls it once, and it returns at once or loops over an observer or two. */
static inline __attribute__((always_inline)) void sync_observers(struct viommu_device *dev)
{
	if (dev->in_batch || !dev->dirty)
		return;
	for (unsigned i = 0; i < dev->nobs; i++)
		if (dev->obs[i].sync)
			dev->obs[i].sync(dev->obs[i].ctx, dev->removed);
	dev->dirty = dev->removed = false;
}

void viommu_device_batch_begin(struct viommu_device *dev)
{
	dev->in_batch = true;
}

void viommu_device_batch_end(struct viommu_device *dev)
{
	dev->in_batch = false;
	sync_observers(dev);
}

/* ---- domains ---- */

static struct dom_priv *domain_create(struct viommu_device *dev, uint32_t id, bool bypass)
{
	struct dom_priv *dp;

	if ((!dev->slot_free_n && dev->slot_hwm == dev->cfg.max_domains) ||
	    !(dp = calloc(1, sizeof(*dp))))
		return NULL;
	dp->dom.id = id;
	dp->dom.bypass = bypass;
	viommu_btree_init(&dp->extents);
	/* Into the table first: the only step that can fail for want of memory, before any
	 * observer hears of the domain. */
	if (viommu_btree_insert(&dev->domains, id, dp)) {
		free(dp);
		return NULL;
	}
	/* Freed slots first (LIFO), then a new one: the stack's pages are touched only as used. */
	dp->dom.slot = dev->slot_free_n ? dev->slot_free[--dev->slot_free_n] : dev->slot_hwm++;
	if (notify_domain_created(dev, &dp->dom)) {
		dev->slot_free[dev->slot_free_n++] = dp->dom.slot;
		viommu_btree_remove(&dev->domains, id);
		free(dp);
		return NULL;
	}
	return dp;
}

static void domain_destroy(struct viommu_device *dev, struct dom_priv *dp)
{
	struct viommu_domain *d = &dp->dom;
	struct viommu_extent *x;

	for (x = viommu_btree_first(&dp->extents, NULL); x;
	     x = viommu_btree_next(&dp->extents, x->start, NULL))
		notify_unmap(dev, d, x);
	dev->nr_mappings -= dp->extents.count;
	viommu_btree_destroy(&dp->extents, free);
	for (unsigned i = 0; i < dev->nobs; i++)
		if (dev->obs[i].domain_destroyed)
			dev->obs[i].domain_destroyed(dev->obs[i].ctx, d);
	viommu_btree_remove(&dev->domains, d->id);
	dev->slot_free[dev->slot_free_n++] = d->slot;
	dev->dirty = dev->removed = true;
	if (dev->dom_last == dp)
		dev->dom_last = NULL;
	free(dp);
}

static void dom_unlink_ep(struct dom_priv *dp, struct ep_priv *e)
{
	for (struct ep_priv **pp = &dp->eps; *pp; pp = &(*pp)->dom_next) {
		if (*pp == e) {
			*pp = e->dom_next;
			break;
		}
	}
	e->dom_next = NULL;
}

/* Detach @e from its domain (if any), destroying the domain when it was the last endpoint.
 * @notify: publish the endpoint's new state (false when the caller re-attaches at once). */
static void ep_detach(struct viommu_device *dev, struct ep_priv *e, bool notify)
{
	struct dom_priv *dp;

	if (!e->ep.domain)
		return;
	dp = dom_priv_of(e->ep.domain);
	dom_unlink_ep(dp, e);
	e->ep.domain = NULL;
	if (notify)
		notify_ep(dev, &e->ep);
	dev->removed = true;
	if (--dp->dom.nr_endpoints == 0)
		domain_destroy(dev, dp);
}

/* ---- endpoints (topology) ---- */

static bool ranges_overlap(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
	return a0 <= b1 && b0 <= a1;
}

int viommu_device_add_endpoint(struct viommu_device *dev, uint32_t id, bool access_platform,
			       const struct viommu_resv *resv, unsigned nresv)
{
	struct ep_priv *e;
	unsigned nmsi = 0;

	if (nresv > VIOMMU_MAX_RESV)
		return -ENOSPC;
	if ((dev->cfg.features & VIOMMU_FBIT(VIOMMU_F_PROBE)) &&
	    (uint64_t)nresv * sizeof(struct viommu_wire_resv_mem) > dev->cfg.probe_size)
		return -ENOSPC;
	for (unsigned i = 0; i < nresv; i++) {
		if (resv[i].start > resv[i].end || resv[i].subtype > VIOMMU_RESV_MEM_T_MSI)
			return -EINVAL;
		nmsi += resv[i].subtype == VIOMMU_RESV_MEM_T_MSI;
		for (unsigned j = 0; j < i; j++)
			if (ranges_overlap(resv[i].start, resv[i].end, resv[j].start, resv[j].end))
				return -EINVAL;
	}
	if (nmsi > 1)
		return -EINVAL;
	if (ep_find(dev, id))
		return -EEXIST;
	if (dev->endpoints.count >= dev->cfg.max_endpoints)
		return -ENOSPC;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ep.id = id;
	e->ep.access_platform = access_platform;
	e->ep.nresv = (uint8_t)nresv;
	if (nresv)
		memcpy(e->ep.resv, resv, nresv * sizeof(*resv));
	if (viommu_btree_insert(&dev->endpoints, id, e)) {
		free(e);
		return -ENOMEM;
	}
	if (notify_ep(dev, &e->ep)) {
		/* An observer has no room for it: refuse the endpoint everywhere. */
		notify_ep_state(dev, &e->ep, VIOMMU_EP_UNKNOWN);
		viommu_btree_remove(&dev->endpoints, id);
		free(e);
		sync_observers(dev);
		return -ENOSPC;
	}
	sync_observers(dev);
	return 0;
}

int viommu_domain_for_each_extent(const struct viommu_domain *d,
				  int (*fn)(const struct viommu_extent *x, void *arg), void *arg)
{
	const struct dom_priv *dp = (const struct dom_priv *)((const char *)d - offsetof(struct dom_priv, dom));
	uint64_t key;
	int ret;

	for (const struct viommu_extent *x = viommu_btree_first(&dp->extents, &key); x;
	     x = viommu_btree_next(&dp->extents, key, &key))
		if ((ret = fn(x, arg)))
			return ret;
	return 0;
}

uint64_t viommu_domain_nr_extents(const struct viommu_domain *d)
{
	return ((const struct dom_priv *)((const char *)d - offsetof(struct dom_priv, dom)))->extents.count;
}

int viommu_device_for_each_endpoint(const struct viommu_device *dev,
				    int (*fn)(const struct viommu_endpoint *ep, void *arg), void *arg)
{
	uint64_t key;
	int ret;

	for (struct ep_priv *e = viommu_btree_first(&dev->endpoints, &key); e;
	     e = viommu_btree_next(&dev->endpoints, key, &key))
		if ((ret = fn(&e->ep, arg)))
			return ret;
	return 0;
}

static int renotify_ep(const struct viommu_endpoint *ep, void *arg)
{
	notify_ep(arg, ep);
	return 0;
}

/* ---- features, config, reset ---- */

uint64_t viommu_device_features(const struct viommu_device *dev)
{
	return dev->cfg.features;
}

uint64_t viommu_device_negotiated(const struct viommu_device *dev)
{
	return dev->negotiated;
}

int viommu_device_negotiate(struct viommu_device *dev, uint64_t features)
{
	bool before = unattached_bypass(dev);

	if (features & ~dev->cfg.features)
		return -EINVAL;
	dev->negotiated = features;
	if (before != unattached_bypass(dev)) {
		viommu_device_for_each_endpoint(dev, renotify_ep, dev);
		dev->removed = true;
		sync_observers(dev);
	}
	return 0;
}

static void config_bytes(const struct viommu_device *dev, uint8_t out[40])
{
	memset(out, 0, 40);
	viommu_put_le64(out + 0, dev->cfg.page_size_mask);
	viommu_put_le64(out + 8, dev->cfg.input_start);
	viommu_put_le64(out + 16, dev->cfg.input_end);
	viommu_put_le32(out + 24, dev->cfg.domain_start);
	viommu_put_le32(out + 28, dev->cfg.domain_end);
	viommu_put_le32(out + 32, dev->cfg.probe_size);
	out[36] = dev->bypass;
}

void viommu_device_config_read(const struct viommu_device *dev, uint32_t off, void *buf,
			       uint32_t len)
{
	uint8_t cfg[40];

	config_bytes(dev, cfg);
	for (uint32_t i = 0; i < len; i++)
		((uint8_t *)buf)[i] = (uint64_t)off + i < sizeof(cfg) ? cfg[off + i] : 0;
}

static void set_bypass(struct viommu_device *dev, uint8_t value)
{
	if (dev->bypass == value)
		return;
	dev->bypass = value;
	viommu_device_for_each_endpoint(dev, renotify_ep, dev);
	dev->removed = true;
	sync_observers(dev);
}

int viommu_device_config_write(struct viommu_device *dev, uint32_t off, const void *buf,
			       uint32_t len)
{
	uint8_t v;

	if (off != offsetof(struct viommu_wire_config, bypass) || len != 1 ||
	    !has(dev, VIOMMU_F_BYPASS_CONFIG))
		return -EPERM;
	v = *(const uint8_t *)buf;
	if (v > 1)
		return -EINVAL;
	set_bypass(dev, v);
	return 0;
}

static void reset(struct viommu_device *dev)
{
	struct dom_priv *dp;
	uint64_t key;

	/* Endpoints first, so no reader follows an endpoint into a dying domain. */
	for (struct ep_priv *e = viommu_btree_first(&dev->endpoints, &key); e;
	     e = viommu_btree_next(&dev->endpoints, key, &key))
		ep_detach(dev, e, true);
	while ((dp = viommu_btree_first(&dev->domains, NULL)))
		domain_destroy(dev, dp);
	dev->fault_head = dev->fault_count = dev->event_credits = 0;
	dev->removed = dev->dirty = true;
}

void viommu_device_reset(struct viommu_device *dev)
{
	reset(dev);
	sync_observers(dev);
}

void viommu_device_system_reset(struct viommu_device *dev)
{
	reset(dev);
	dev->bypass = dev->cfg.bypass;
	viommu_device_for_each_endpoint(dev, renotify_ep, dev);
	sync_observers(dev);
}

/* ---- requests ---- */

static uint8_t do_attach(struct viommu_device *dev, const uint8_t *r)
{
	uint32_t domain = viommu_le32(r + 4), epid = viommu_le32(r + 8), flags = viommu_le32(r + 12);
	bool bypass = flags & VIOMMU_ATTACH_F_BYPASS;
	struct ep_priv *e;
	struct dom_priv *dp;

	if (viommu_le32(r + 16) != 0)
		return VIOMMU_S_INVAL;
	if ((flags & ~VIOMMU_ATTACH_F_BYPASS) || (bypass && !has(dev, VIOMMU_F_BYPASS_CONFIG)))
		return VIOMMU_S_INVAL;
	if (!domain_in_range(dev, domain))
		return VIOMMU_S_RANGE;
	if (!(e = ep_find(dev, epid)))
		return VIOMMU_S_NOENT;
	dp = dom_find(dev, domain);
	if (dp) {
		if (dp->dom.bypass != bypass)
			return VIOMMU_S_INVAL;
		if (e->ep.domain == &dp->dom)
			return VIOMMU_S_OK;
		/* The endpoint's reserved regions must not be mapped in its new domain. */
		for (unsigned i = 0; i < e->ep.nresv; i++) {
			struct viommu_extent *x = viommu_btree_floor(&dp->extents, e->ep.resv[i].end, NULL);

			if (x && x->end >= e->ep.resv[i].start)
				return VIOMMU_S_UNSUPP;
		}
	} else {
		if (!(dp = domain_create(dev, domain, bypass)))
			return VIOMMU_S_NOMEM;
	}
	/* Spec: attaching an attached endpoint is DETACH + ATTACH. Move it first, so readers see
	 * old-domain or new-domain state, then let the old domain die if it is now empty. */
	{
		struct dom_priv *old = e->ep.domain ?
			dom_priv_of(e->ep.domain) : NULL;

		if (old)
			dom_unlink_ep(old, e);
		/* Leaving bypass (global or a bypass domain) removes the identity translation:
		 * a strict observer must wait for readers that may hold it (I7). */
		if (ep_state(dev, &e->ep) == VIOMMU_EP_BYPASS)
			dev->removed = true;
		e->ep.domain = &dp->dom;
		e->dom_next = dp->eps;
		dp->eps = e;
		dp->dom.nr_endpoints++;
		notify_ep(dev, &e->ep);
		if (old) {
			dev->removed = true;
			if (--old->dom.nr_endpoints == 0)
				domain_destroy(dev, old);
		}
	}
	return VIOMMU_S_OK;
}

static uint8_t do_detach(struct viommu_device *dev, const uint8_t *r)
{
	uint32_t domain = viommu_le32(r + 4), epid = viommu_le32(r + 8);
	struct ep_priv *e;

	if (!domain_in_range(dev, domain))
		return VIOMMU_S_RANGE;
	if (!(e = ep_find(dev, epid)))
		return VIOMMU_S_NOENT;
	if (!e->ep.domain || e->ep.domain->id != domain)
		return VIOMMU_S_INVAL;
	ep_detach(dev, e, true);
	return VIOMMU_S_OK;
}

/* Common checks of MAP and UNMAP on the domain and the IOVA range, after their own check of
 * VIOMMU_F_MAP_UNMAP. Inlined into both (see copy_small()). */
static inline __attribute__((always_inline)) uint8_t check_range(struct viommu_device *dev, uint32_t domain,
								 uint64_t start, uint64_t end, struct dom_priv **out)
{
	struct dom_priv *dp;

	if (!domain_in_range(dev, domain))
		return VIOMMU_S_RANGE;
	if (!(dp = dom_of_request(dev, domain)))
		return VIOMMU_S_NOENT;
	if (dp->dom.bypass)
		return VIOMMU_S_INVAL;
	if (end < start)
		return VIOMMU_S_INVAL;
	if (!input_in_range(dev, start, end))
		return VIOMMU_S_RANGE;
	*out = dp;
	return VIOMMU_S_OK;
}

/* viommu_btree_refuse_fn for a MAP of @arg: it overlaps the mapping before its place (which ends
 * at or after its start) or the one after (which starts at or before its end). */
static int map_overlaps(void *arg, void *pred, uint64_t succ_key, void *succ)
{
	const struct viommu_extent *x = arg, *p = pred;

	return (p && p->end >= x->start) || (succ && succ_key <= x->end);
}

/* A MAP of [@start, @end] that cannot be made for want of room (a cap, or memory): INVAL all the
 * same when it overlaps a mapping, since the request is wrong whatever the room. */
static uint8_t map_nomem(struct dom_priv *dp, uint64_t start, uint64_t end)
{
	const struct viommu_extent *x = viommu_btree_floor(&dp->extents, end, NULL);

	return x && x->end >= start ? VIOMMU_S_INVAL : VIOMMU_S_NOMEM;
}

static uint8_t do_map(struct viommu_device *dev, const uint8_t *r)
{
	uint32_t domain = viommu_le32(r + 4), flags = viommu_le32(r + 32);
	uint64_t start = viommu_le64(r + 8), end = viommu_le64(r + 16), phys = viommu_le64(r + 24);
	uint64_t mask = dev->granule - 1;
	struct viommu_extent *x;
	struct dom_priv *dp;
	uint8_t st;

	if (!has(dev, VIOMMU_F_MAP_UNMAP))
		return VIOMMU_S_UNSUPP;
	if ((flags & ~VIOMMU_MAP_F_MASK) ||
	    ((flags & VIOMMU_MAP_F_MMIO) && !has(dev, VIOMMU_F_MMIO)))
		return VIOMMU_S_INVAL;
	if ((st = check_range(dev, domain, start, end, &dp)))
		return st;
	/* end + 1 wraps to 0 for the last page of the space: aligned. */
	if ((start & mask) || (phys & mask) || ((end + 1) & mask))
		return VIOMMU_S_RANGE;
	if (phys + (end - start) < phys)
		return VIOMMU_S_RANGE;
	/* The driver MUST make virt_end > virt_start: a one-byte MAP (possible only with a 1-byte
	 * granule; any larger granule answered RANGE above) is malformed. */
	if (end == start)
		return VIOMMU_S_INVAL;
	/* Past a few thousand mappings the lines the observers' map() writes are misses (and, in
	 * a VM, page walks): the hint lets them overlap the descent below (viommu_observer). Below,
	 * they are in cache and the hint would only cost instructions. */
	if (dp->extents.count > VIOMMU_MAP_PREFETCH_EXTENTS)
		for (unsigned i = 0; i < dev->nobs; i++)
			if (dev->obs[i].prefetch)
				dev->obs[i].prefetch(dev->obs[i].ctx, &dp->dom, start);
	for (struct ep_priv *e = dp->eps; e; e = e->dom_next)
		for (unsigned i = 0; i < e->ep.nresv; i++)
			if (ranges_overlap(start, end, e->ep.resv[i].start, e->ep.resv[i].end))
				return VIOMMU_S_INVAL;
	if (dp->extents.count >= dev->cfg.max_mappings_per_domain ||
	    dev->nr_mappings >= dev->cfg.max_mappings)
		return map_nomem(dp, start, end);
	if (!(x = ext_new(dev)))
		return map_nomem(dp, start, end);
	*x = (struct viommu_extent){ .start = start, .end = end, .phys = phys, .flags = flags };
	/* The overlap check in the insert's own descent (map_overlaps): one walk down the tree. */
	switch (viommu_btree_insert_if(&dp->extents, start, x, map_overlaps, x)) {
	case 0:
		break;
	case -EBUSY:
	case -EEXIST: /* a mapping starts there: overlaps too */
		ext_put(dev, x);
		return VIOMMU_S_INVAL;
	default: /* -ENOMEM (a node to split into), before the overlap was asked: the tree is unchanged */
		ext_put(dev, x);
		return map_nomem(dp, start, end);
	}
	if (notify_map(dev, &dp->dom, x)) {
		viommu_btree_remove(&dp->extents, start);
		ext_put(dev, x);
		return VIOMMU_S_NOMEM;
	}
	dev->nr_mappings++;
	return VIOMMU_S_OK;
}

/* viommu_btree_take_fn for an UNMAP whose range starts where the mapping @val does: it takes the
 * mapping when the range ends where the mapping does (*@arg). */
static bool unmap_exact(void *arg, void *val)
{
	return ((const struct viommu_extent *)val)->end == *(const uint64_t *)arg;
}

static uint8_t do_unmap(struct viommu_device *dev, const uint8_t *r)
{
	uint32_t domain = viommu_le32(r + 4);
	uint64_t start = viommu_le64(r + 8), end = viommu_le64(r + 16), key;
	struct viommu_extent *x;
	struct dom_priv *dp;
	uint8_t st;

	if (!has(dev, VIOMMU_F_MAP_UNMAP))
		return VIOMMU_S_UNSUPP;
	if (viommu_le32(r + 24) != 0)
		return VIOMMU_S_INVAL;
	if ((st = check_range(dev, domain, start, end, &dp)))
		return st;
	/* The common UNMAP, of exactly one mapping (what the Linux driver sends): nothing else can
	 * lie in [start, end], which that mapping covers. Found and removed in one descent. */
	if ((x = viommu_btree_remove_if(&dp->extents, start, unmap_exact, &end))) {
		notify_unmap(dev, &dp->dom, x);
		ext_put(dev, x);
		dev->nr_mappings--;
		return VIOMMU_S_OK;
	}
	x = viommu_btree_floor(&dp->extents, end, &key);
	/* Atomic: only the extents holding `start` or `end` can be split; check both first. */
	if (x && x->end > end)
		return VIOMMU_S_RANGE;
	x = viommu_btree_floor(&dp->extents, start, NULL);
	if (x && x->start < start && x->end >= start)
		return VIOMMU_S_RANGE;
	while ((x = viommu_btree_ceil(&dp->extents, start, &key)) && key <= end) {
		notify_unmap(dev, &dp->dom, x);
		viommu_btree_remove(&dp->extents, key);
		ext_put(dev, x);
		dev->nr_mappings--;
	}
	return VIOMMU_S_OK;
}

/* PROBE writes its properties into @props (probe_size bytes, zero-filled). */
static uint8_t do_probe(struct viommu_device *dev, const uint8_t *r, uint8_t *props)
{
	struct ep_priv *e = ep_find(dev, viommu_le32(r + 4));

	if (!e)
		return VIOMMU_S_NOENT;
	for (unsigned i = 0; i < e->ep.nresv; i++) {
		uint8_t *p = props + i * sizeof(struct viommu_wire_resv_mem);

		viommu_put_le16(p, VIOMMU_PROBE_T_RESV_MEM);
		viommu_put_le16(p + 2, sizeof(struct viommu_wire_resv_mem) - 4);
		p[4] = e->ep.resv[i].subtype;
		viommu_put_le64(p + 8, e->ep.resv[i].start);
		viommu_put_le64(p + 16, e->ep.resv[i].end);
	}
	return VIOMMU_S_OK;
}

static size_t iov_total(const struct iovec *v, unsigned n)
{
	size_t t = 0;

	if (n == 1) /* every request virtqueue.c pops, each way: no loop */
		return v->iov_len;
	for (unsigned i = 0; i < n; i++) {
		if (t + v[i].iov_len < t)
			return SIZE_MAX;
		t += v[i].iov_len;
	}
	return t;
}

/*
 * @len bytes from @s to @d. MAP (36 bytes readable), UNMAP (28), ATTACH (24) and DETACH (20) are
 * two copies of a fixed size that overlap in the middle: a few moves, where a memcpy of a variable
 * length is a call and a dispatch on the length. Each byte of @d is some byte the guest had at @s
 * while it was read; the request is parsed from @d alone. (With check_range() and
 * sync_observers() inlined: bench/icount 4k:1024 map_unmap, 1159 -> 1053 instructions a pair.)
 */
static inline void copy_small(uint8_t *d, const uint8_t *s, size_t len)
{
	if (len >= 32 && len <= 64) {
		memcpy(d, s, 32);
		memcpy(d + len - 32, s + len - 32, 32);
	} else if (len >= 16 && len < 32) {
		memcpy(d, s, 16);
		memcpy(d + len - 16, s + len - 16, 16);
	} else {
		memcpy(d, s, len);
	}
}

/*
 * A transport may pass an empty descriptor as {NULL, 0}: memcpy with a NULL pointer is undefined
 * even for 0 bytes, so empty segments are skipped before any pointer is used (iov_read and
 * iov_write).
 */
static void iov_read(const struct iovec *v, unsigned n, void *dst, size_t len)
{
	uint8_t *d = dst;

	if (n == 1 && v->iov_len >= len) { /* one buffer (every request virtqueue.c pops): no loop */
		copy_small(d, v->iov_base, len);
		return;
	}
	for (unsigned i = 0; i < n && len; i++) {
		size_t c = v[i].iov_len < len ? v[i].iov_len : len;

		if (!c)
			continue;
		memcpy(d, v[i].iov_base, c);
		d += c;
		len -= c;
	}
}

static void iov_write(const struct iovec *v, unsigned n, size_t off, const void *src, size_t len)
{
	const uint8_t *s = src;

	if (n == 1 && off <= v->iov_len && v->iov_len - off >= len) { /* one buffer: no loop */
		memcpy((uint8_t *)v->iov_base + off, s, len);
		return;
	}
	for (unsigned i = 0; i < n && len; i++) {
		if (!v[i].iov_len || off >= v[i].iov_len) {
			off -= v[i].iov_len;
			continue;
		}
		size_t c = v[i].iov_len - off < len ? v[i].iov_len - off : len;

		memcpy((uint8_t *)v[i].iov_base + off, s, c);
		s += c;
		len -= c;
		off = 0;
	}
}

static const size_t req_size[VIOMMU_T_MAX + 1] = {
	[VIOMMU_T_ATTACH] = VIOMMU_RD_LEN(struct viommu_wire_attach),
	[VIOMMU_T_DETACH] = VIOMMU_RD_LEN(struct viommu_wire_detach),
	[VIOMMU_T_MAP] = VIOMMU_RD_LEN(struct viommu_wire_map),
	[VIOMMU_T_UNMAP] = VIOMMU_RD_LEN(struct viommu_wire_unmap),
	[VIOMMU_T_PROBE] = sizeof(struct viommu_wire_probe),
};

uint32_t viommu_device_request(struct viommu_device *dev, const struct iovec *rd, unsigned nrd,
			       const struct iovec *wr, unsigned nwr)
{
	size_t rd_len = iov_total(rd, nrd), wr_len = iov_total(wr, nwr);
	uint8_t req[sizeof(struct viommu_wire_probe)] = { 0 };
	uint8_t tail[4] = { 0 };
	uint8_t type;

	if (rd_len < sizeof(struct viommu_wire_head) || wr_len < sizeof(tail) ||
	    wr_len > UINT32_MAX) {
		dev->stats.dropped_requests++;
		return 0;
	}
	iov_read(rd, nrd, req, rd_len < sizeof(req) ? rd_len : sizeof(req));
	type = req[0];
	if (type == 0 || type > VIOMMU_T_MAX ||
	    (type == VIOMMU_T_PROBE && !has(dev, VIOMMU_F_PROBE))) {
		dev->stats.dropped_requests++;
		return 0;
	}
	if (rd_len < req_size[type]) {
		tail[0] = VIOMMU_S_INVAL;
	} else {
		switch (type) {
		case VIOMMU_T_ATTACH:
			tail[0] = do_attach(dev, req);
			break;
		case VIOMMU_T_DETACH:
			tail[0] = do_detach(dev, req);
			break;
		case VIOMMU_T_MAP:
			tail[0] = do_map(dev, req);
			break;
		case VIOMMU_T_UNMAP:
			tail[0] = do_unmap(dev, req);
			break;
		case VIOMMU_T_PROBE:
			if (wr_len - sizeof(tail) < dev->cfg.probe_size) {
				tail[0] = VIOMMU_S_INVAL;
			} else {
				uint8_t *props = calloc(1, dev->cfg.probe_size ? dev->cfg.probe_size : 1);

				if (!props) {
					tail[0] = VIOMMU_S_DEVERR;
					break;
				}
				tail[0] = do_probe(dev, req, props);
				if (tail[0] == VIOMMU_S_OK)
					iov_write(wr, nwr, 0, props, dev->cfg.probe_size);
				free(props);
			}
			break;
		}
	}
	dev->stats.requests[type][tail[0]]++;
	sync_observers(dev);
	if (nwr == 1) /* one buffer of wr_len >= 4 bytes: the tail is its last 4, one store */
		memcpy((uint8_t *)wr->iov_base + wr_len - sizeof(tail), tail, sizeof(tail));
	else
		iov_write(wr, nwr, wr_len - sizeof(tail), tail, sizeof(tail));
	return (uint32_t)wr_len;
}

uint32_t viommu_device_request_buf(struct viommu_device *dev, const void *rd, size_t rd_len,
				   void *wr, size_t wr_len)
{
	struct iovec r = { .iov_base = (void *)rd, .iov_len = rd_len };
	struct iovec w = { .iov_base = wr, .iov_len = wr_len };

	return viommu_device_request(dev, &r, 1, &w, 1);
}

/* ---- observers: registration ---- */

int viommu_device_add_observer(struct viommu_device *dev, const struct viommu_observer *obs)
{
	struct viommu_observer *o;
	struct dom_priv *dp;
	struct ep_priv *e;
	uint64_t key;

	if (dev->nobs >= VIOMMU_MAX_OBSERVERS)
		return -ENOSPC;
	o = &dev->obs[dev->nobs];
	*o = *obs;
	/* Tell the newcomer the current state: domains with their extents, then endpoints. */
	for (dp = viommu_btree_first(&dev->domains, &key); dp;
	     dp = viommu_btree_next(&dev->domains, key, &key)) {
		struct viommu_domain *d = &dp->dom;
		int err = o->domain_created ? o->domain_created(o->ctx, d) : 0;

		for (struct viommu_extent *x = viommu_btree_first(&dp->extents, NULL); !err && x;
		     x = viommu_btree_next(&dp->extents, x->start, NULL))
			err = o->map ? o->map(o->ctx, d, x) : 0;
		if (err)
			return err; /* the observer is not registered; it cleans up its own state */
	}
	for (e = viommu_btree_first(&dev->endpoints, &key); e;
	     e = viommu_btree_next(&dev->endpoints, key, &key)) {
		struct viommu_endpoint *ep = &e->ep;

		if (o->endpoint_changed && o->endpoint_changed(o->ctx, ep, ep_state(dev, ep)))
			return -ENOSPC;
	}
	if (o->sync)
		o->sync(o->ctx, false);
	dev->nobs++;
	return 0;
}

int viommu_device_remove_observer(struct viommu_device *dev, void *ctx)
{
	for (unsigned i = 0; i < dev->nobs; i++) {
		if (dev->obs[i].ctx == ctx) {
			memmove(&dev->obs[i], &dev->obs[i + 1], (dev->nobs - i - 1) * sizeof(dev->obs[0]));
			dev->nobs--;
			return 0;
		}
	}
	return -ENOENT;
}

/* ---- translation (the reference the fast path is checked against) ---- */

static enum viommu_xlate_result fault(struct viommu_answer *out, uint8_t reason, uint64_t addr)
{
	out->reason = reason;
	out->fault_addr = addr;
	return out->result = VIOMMU_XLATE_FAULT;
}

enum viommu_xlate_result viommu_device_translate(const struct viommu_device *dev, uint32_t epid,
						 uint64_t iova, uint64_t size, uint32_t access,
						 struct viommu_answer *out)
{
	struct ep_priv *e = ep_find(dev, epid);
	uint64_t last = iova + (size ? size - 1 : 0), cur = iova;
	bool first = true;

	memset(out, 0, sizeof(*out));
	access &= ~VIOMMU_QUERY_F_EXTENT; /* the store always answers with whole extents */
	if (!e)
		return fault(out, VIOMMU_FAULT_R_UNKNOWN, iova);
	switch (ep_state(dev, &e->ep)) {
	case VIOMMU_EP_IDENTITY:
	case VIOMMU_EP_BYPASS:
		out->pa = iova;
		return out->result = VIOMMU_XLATE_IDENTITY;
	case VIOMMU_EP_BLOCKED:
		return fault(out, VIOMMU_FAULT_R_DOMAIN, iova);
	default:
		break;
	}
	if (last < iova) /* the range runs past 2^64: the byte after the top does not exist */
		last = UINT64_MAX;
	for (;;) {
		struct viommu_extent *x = viommu_btree_floor(&dom_priv_of(e->ep.domain)->extents, cur, NULL);

		if (!x || x->end < cur || (x->flags & access) != access)
			return fault(out, VIOMMU_FAULT_R_MAPPING, cur);
		for (unsigned i = 0; i < e->ep.nresv; i++)
			if (ranges_overlap(cur, x->end < last ? x->end : last, e->ep.resv[i].start,
					   e->ep.resv[i].end))
				return fault(out, VIOMMU_FAULT_R_MAPPING,
					     e->ep.resv[i].start > cur ? e->ep.resv[i].start : cur);
		if (first) {
			out->pa = x->phys + (iova - x->start);
			out->ext_start = x->start;
			out->ext_end = x->end;
			out->ext_phys = x->phys;
			out->ext_flags = x->flags;
			first = false;
		}
		if (x->end >= last)
			break;
		cur = x->end + 1;
	}
	if (iova + (size ? size - 1 : 0) < iova) /* runs past 2^64: the DMA as a whole faults */
		return fault(out, VIOMMU_FAULT_R_MAPPING, iova);
	return out->result = VIOMMU_XLATE_HIT;
}

enum viommu_xlate_result viommu_device_answer(const struct viommu_device *dev,
					      const struct viommu_query *q, struct viommu_answer *out)
{
	return viommu_device_translate(dev, q->endpoint, q->iova, q->size, q->access, out);
}

/* ---- faults ---- */

void viommu_device_eventq_post(struct viommu_device *dev, uint32_t n)
{
	dev->event_credits = UINT32_MAX - dev->event_credits < n ? UINT32_MAX : dev->event_credits + n;
}

int viommu_device_report_fault(struct viommu_device *dev, uint32_t ep, uint8_t reason,
			       uint32_t access, uint64_t addr)
{
	struct viommu_wire_fault *f;

	if (!dev->event_credits || dev->fault_count >= dev->cfg.max_pending_faults) {
		dev->stats.faults_dropped++;
		return -ENOBUFS;
	}
	dev->event_credits--;
	f = &dev->faults[(dev->fault_head + dev->fault_count++) % dev->cfg.max_pending_faults];
	memset(f, 0, sizeof(*f));
	f->reason = reason;
	viommu_put_le32(&f->flags, (access & (VIOMMU_FAULT_F_READ | VIOMMU_FAULT_F_WRITE)) |
					   VIOMMU_FAULT_F_ADDRESS);
	viommu_put_le32(&f->endpoint, ep);
	viommu_put_le64(&f->address, addr);
	dev->stats.faults_reported++;
	return 0;
}

uint32_t viommu_device_eventq_credits(const struct viommu_device *dev)
{
	return dev->event_credits;
}

int viommu_device_fault_peek(const struct viommu_device *dev, uint32_t i, struct viommu_wire_fault *buf)
{
	if (i >= dev->fault_count)
		return -ENOENT;
	*buf = dev->faults[(dev->fault_head + i) % dev->cfg.max_pending_faults];
	return 0;
}

int viommu_device_fault_pop(struct viommu_device *dev, struct viommu_wire_fault *buf)
{
	if (!dev->fault_count)
		return -ENOENT;
	*buf = dev->faults[dev->fault_head];
	dev->fault_head = (dev->fault_head + 1) % dev->cfg.max_pending_faults;
	dev->fault_count--;
	return 0;
}

/* ---- introspection ---- */

const struct viommu_device_stats *viommu_device_stats(const struct viommu_device *dev)
{
	return &dev->stats;
}

uint32_t viommu_device_nr_domains(const struct viommu_device *dev)
{
	return (uint32_t)dev->domains.count;
}

uint64_t viommu_device_nr_mappings(const struct viommu_device *dev)
{
	return dev->nr_mappings;
}

const struct viommu_domain *viommu_device_domain(const struct viommu_device *dev, uint32_t id)
{
	struct dom_priv *dp = dom_find(dev, id);

	return dp ? &dp->dom : NULL;
}

int viommu_device_for_each_domain_endpoint(const struct viommu_device *dev, uint32_t id,
					   int (*fn)(const struct viommu_endpoint *ep, void *arg),
					   void *arg)
{
	struct dom_priv *dp = dom_find(dev, id);
	int ret;

	for (struct ep_priv *e = dp ? dp->eps : NULL; e; e = e->dom_next)
		if ((ret = fn(&e->ep, arg)))
			return ret;
	return 0;
}

/* ---- self-check (tests and the fuzzer) ---- */

struct check_ctx {
	const struct viommu_device *dev;
	uint32_t attached; /* endpoints with a domain */
	int err;
};

static int check_ep(const struct viommu_endpoint *ep, void *arg)
{
	struct check_ctx *c = arg;
	const struct ep_priv *e = (const struct ep_priv *)ep;
	const struct dom_priv *dp;
	bool linked = false;

	if (!ep->domain)
		return 0;
	c->attached++;
	/* The endpoint's domain is live and lists the endpoint. */
	dp = dom_find(c->dev, ep->domain->id);
	if (!dp || &dp->dom != ep->domain)
		return c->err = -EUCLEAN;
	for (const struct ep_priv *i = dp->eps; i; i = i->dom_next)
		linked |= i == e;
	return linked ? 0 : (c->err = -EUCLEAN);
}

static int check_domain(const struct viommu_device *dev, const struct dom_priv *dp, uint64_t id,
			uint64_t *mappings, uint32_t *endpoints, uint32_t *slots, size_t *nslots)
{
	const struct viommu_extent *e;
	uint64_t prev_end = 0, key;
	bool first = true;
	uint32_t neps = 0;

	slots[(*nslots)++] = dp->dom.slot;
	if (dp->dom.id != id || dp->dom.slot >= dev->cfg.max_domains ||
	    !dp->dom.nr_endpoints || viommu_btree_check(&dp->extents) ||
	    dp->extents.count > dev->cfg.max_mappings_per_domain ||
	    (dp->dom.bypass && dp->extents.count))
		return -EUCLEAN;
	for (const struct ep_priv *e = dp->eps; e; e = e->dom_next)
		if (++neps > dp->dom.nr_endpoints || e->ep.domain != &dp->dom)
			return -EUCLEAN;
	if (neps != dp->dom.nr_endpoints)
		return -EUCLEAN;
	*endpoints += neps;
	/* Extents: ordered, disjoint, inside input_range (when offered), granule-aligned. */
	for (e = viommu_btree_first(&dp->extents, &key); e;
	     e = viommu_btree_next(&dp->extents, key, &key)) {
		if (e->start != key || e->end < e->start || (!first && e->start <= prev_end) ||
		    !input_in_range(dev, e->start, e->end) ||
		    (e->start & (dev->granule - 1)) || ((e->end + 1) & (dev->granule - 1)))
			return -EUCLEAN;
		prev_end = e->end;
		first = false;
		(*mappings)++;
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int viommu_device_check(const struct viommu_device *dev)
{
	struct check_ctx c = { .dev = dev };
	uint64_t mappings = 0;
	uint32_t endpoints = 0, *slots;
	size_t nslots = 0;
	int err;

	if (viommu_btree_check(&dev->endpoints) || viommu_btree_check(&dev->domains) ||
	    dev->domains.count > dev->cfg.max_domains ||
	    dev->slot_free_n + dev->domains.count != dev->slot_hwm ||
	    dev->slot_hwm > dev->cfg.max_domains ||
	    dev->nr_mappings > dev->cfg.max_mappings || dev->bypass > 1 ||
	    dev->fault_count > dev->cfg.max_pending_faults)
		return -EUCLEAN;
	slots = malloc((dev->domains.count + 1) * sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	err = 0;
	{
		uint64_t key;

		for (const struct dom_priv *dp = viommu_btree_first(&dev->domains, &key); dp && !err;
		     dp = viommu_btree_next(&dev->domains, key, &key))
			err = check_domain(dev, dp, key, &mappings, &endpoints, slots, &nslots);
	}
	/* Slots of live domains are unique. */
	qsort(slots, nslots, sizeof(*slots), cmp_u32);
	for (size_t i = 1; !err && i < nslots; i++)
		if (slots[i] == slots[i - 1])
			err = -EUCLEAN;
	free(slots);
	if (err)
		return err;
	viommu_device_for_each_endpoint(dev, check_ep, &c);
	if (c.err || mappings != dev->nr_mappings || endpoints != c.attached)
		return -EUCLEAN;
	return 0;
}

static const char *const status_names[VIOMMU_S_COUNT] = {
	"OK", "IOERR", "UNSUPP", "DEVERR", "INVAL", "RANGE", "NOENT", "FAULT", "NOMEM",
};

const char *viommu_status_name(unsigned status)
{
	return status < VIOMMU_S_COUNT ? status_names[status] : "?";
}

const char *viommu_type_name(unsigned type)
{
	static const char *const names[] = { "unknown", "attach", "detach", "map", "unmap", "probe" };

	return type <= VIOMMU_T_MAX ? names[type] : "unknown";
}
