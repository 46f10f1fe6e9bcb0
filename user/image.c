// SPDX-License-Identifier: MIT
/* Save and restore: the device's state as a versioned image (docs/image.md). */
#include "image.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* ---- the format (docs/image.md): little-endian, 8-byte aligned records ---- */

#define HDR_BYTES 32
#define REC_HDR_BYTES 8
enum rec_type {
	REC_CONFIG = 1,
	REC_STATE = 2,
	REC_ENDPOINT = 3,
	REC_ATTACH = 4,
	REC_MAP = 5,
	REC_FAULT = 6,
	REC_END = 7,
	REC_TRANSPORT = 8, /* optional, between the last FAULT and END (virtqueue.h) */
};
#define CONFIG_BYTES 72
#define STATE_BYTES 16
#define EP_BYTES 8
#define RESV_BYTES 24
#define ATTACH_BYTES 12
#define MAP_BYTES 32
#define FAULT_BYTES 24

_Static_assert(sizeof(struct viommu_wire_fault) == FAULT_BYTES, "a fault record is the wire fault");

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

void viommu_image_seal(void *image, size_t len)
{
	uint8_t *p = image;

	viommu_put_le64(p + 16, len);
	viommu_put_le32(p + 24, fnv1a(p + HDR_BYTES, len - HDR_BYTES));
}

/* ---- save ---- */

struct out {
	uint8_t *buf;
	size_t len, cap;
	uint32_t records;
	int err;
};

/* Room for a record of @n payload bytes; its payload (zeroed), or NULL (out->err set). */
static uint8_t *rec(struct out *o, enum rec_type type, size_t n)
{
	size_t need = REC_HDR_BYTES + ((n + 7) & ~(size_t)7);
	uint8_t *r;

	if (o->err)
		return NULL;
	if (o->len + need > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		uint8_t *b;

		while (cap < o->len + need)
			cap *= 2;
		if (!(b = realloc(o->buf, cap))) {
			o->err = -ENOMEM;
			return NULL;
		}
		o->buf = b;
		o->cap = cap;
	}
	r = o->buf + o->len;
	memset(r, 0, need);
	viommu_put_le16(r, (uint16_t)type);
	viommu_put_le32(r + 4, (uint32_t)n);
	o->len += need;
	o->records++;
	return r + REC_HDR_BYTES;
}

static int save_endpoint(const struct viommu_endpoint *ep, void *arg)
{
	uint8_t *p = rec(arg, REC_ENDPOINT, EP_BYTES + (size_t)ep->nresv * RESV_BYTES);

	if (!p)
		return -ENOMEM;
	viommu_put_le32(p, ep->id);
	p[4] = ep->access_platform;
	p[5] = ep->nresv;
	for (unsigned i = 0; i < ep->nresv; i++) {
		uint8_t *r = p + EP_BYTES + i * RESV_BYTES;

		viommu_put_le64(r, ep->resv[i].start);
		viommu_put_le64(r + 8, ep->resv[i].end);
		r[16] = ep->resv[i].subtype;
	}
	return 0;
}

struct attach_pass {
	struct out *o;
	uint32_t *doms;
	size_t ndoms;
};

static int save_attach(const struct viommu_endpoint *ep, void *arg)
{
	struct attach_pass *a = arg;
	uint8_t *p;

	if (!ep->domain)
		return 0;
	if (!(p = rec(a->o, REC_ATTACH, ATTACH_BYTES)))
		return -ENOMEM;
	viommu_put_le32(p, ep->id);
	viommu_put_le32(p + 4, ep->domain->id);
	viommu_put_le32(p + 8, ep->domain->bypass ? VIOMMU_ATTACH_F_BYPASS : 0);
	a->doms[a->ndoms++] = ep->domain->id;
	return 0;
}

static int count_eps(const struct viommu_endpoint *ep, void *arg)
{
	(void)ep;
	++*(size_t *)arg;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void save_config(struct out *o, const struct viommu_device *dev)
{
	const struct viommu_config *c = viommu_device_config(dev);
	uint8_t *p = rec(o, REC_CONFIG, CONFIG_BYTES), bypass = 0;

	if (p) {
		viommu_put_le64(p, c->page_size_mask);
		viommu_put_le64(p + 8, c->input_start);
		viommu_put_le64(p + 16, c->input_end);
		viommu_put_le32(p + 24, c->domain_start);
		viommu_put_le32(p + 28, c->domain_end);
		viommu_put_le32(p + 32, c->probe_size);
		p[36] = c->bypass;
		viommu_put_le64(p + 40, c->features);
		viommu_put_le32(p + 48, c->max_domains);
		viommu_put_le32(p + 52, c->max_mappings_per_domain);
		viommu_put_le64(p + 56, c->max_mappings);
		viommu_put_le32(p + 64, c->max_endpoints);
		viommu_put_le32(p + 68, c->max_pending_faults);
	}
	viommu_device_config_read(dev, offsetof(struct viommu_wire_config, bypass), &bypass, 1);
	if ((p = rec(o, REC_STATE, STATE_BYTES))) {
		viommu_put_le64(p, viommu_device_negotiated(dev));
		p[8] = bypass;
		viommu_put_le32(p + 12, viommu_device_eventq_credits(dev));
	}
}

struct map_pass {
	struct out *o;
	uint32_t domain;
};

static int save_map(const struct viommu_extent *x, void *arg)
{
	struct map_pass *m = arg;
	uint8_t *p = rec(m->o, REC_MAP, MAP_BYTES);

	if (!p)
		return -ENOMEM;
	viommu_put_le32(p, m->domain);
	viommu_put_le32(p + 4, x->flags);
	viommu_put_le64(p + 8, x->start);
	viommu_put_le64(p + 16, x->end);
	viommu_put_le64(p + 24, x->phys);
	return 0;
}

static void save_maps(struct out *o, const struct viommu_device *dev, uint32_t *doms, size_t ndoms)
{
	qsort(doms, ndoms, sizeof(*doms), cmp_u32);
	for (size_t i = 0; i < ndoms; i++) {
		struct map_pass m = { o, doms[i] };

		if (!i || doms[i] != doms[i - 1])
			viommu_domain_for_each_extent(viommu_device_domain(dev, doms[i]), save_map, &m);
	}
}

/* The device's records, then @tlen bytes of @transport as a TRANSPORT record if @transport. */
static int save_image(const struct viommu_device *dev, const void *transport, size_t tlen,
		      void **image, size_t *len)
{
	struct out o = { 0 };
	struct attach_pass a = { .o = &o };
	struct viommu_wire_fault f;
	size_t neps = 0;

	/* The header, filled in last. */
	if (!(o.buf = calloc(1, 4096)))
		return -ENOMEM;
	o.cap = 4096;
	o.len = HDR_BYTES;
	save_config(&o, dev);
	viommu_device_for_each_endpoint(dev, save_endpoint, &o);
	viommu_device_for_each_endpoint(dev, count_eps, &neps);
	if (!(a.doms = malloc((neps + 1) * sizeof(*a.doms))))
		o.err = -ENOMEM;
	else
		viommu_device_for_each_endpoint(dev, save_attach, &a);
	if (a.doms)
		save_maps(&o, dev, a.doms, a.ndoms);
	free(a.doms);
	for (uint32_t i = 0; viommu_device_fault_peek(dev, i, &f) == 0; i++) {
		uint8_t *p = rec(&o, REC_FAULT, FAULT_BYTES);

		if (p)
			memcpy(p, &f, FAULT_BYTES); /* already little-endian: the wire's own bytes */
	}
	if (transport) {
		uint8_t *p = rec(&o, REC_TRANSPORT, tlen);

		if (p)
			memcpy(p, transport, tlen);
	}
	rec(&o, REC_END, 0);
	if (o.err) {
		free(o.buf);
		return o.err;
	}
	memcpy(o.buf, VIOMMU_IMAGE_MAGIC, 8);
	viommu_put_le32(o.buf + 8, VIOMMU_IMAGE_VERSION);
	viommu_put_le32(o.buf + 12, HDR_BYTES);
	viommu_put_le32(o.buf + 28, o.records);
	viommu_image_seal(o.buf, o.len);
	*image = o.buf;
	*len = o.len;
	return 0;
}

int viommu_device_save(const struct viommu_device *dev, void **image, size_t *len)
{
	return save_image(dev, NULL, 0, image, len);
}

int viommu_image_save_with_transport(const struct viommu_device *dev, const void *transport,
				     void **image, size_t *len)
{
	if (!transport)
		return -EINVAL;
	return save_image(dev, transport, VIOMMU_IMAGE_TRANSPORT_BYTES, image, len);
}

/* ---- restore ---- */

struct in {
	const uint8_t *img;
	size_t len;
	char *why;
	size_t why_len;
};

static int bad(struct in *in, const char *fmt, ...)
{
	va_list ap;

	if (in->why && in->why_len) {
		va_start(ap, fmt);
		vsnprintf(in->why, in->why_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* The image's structure, before anything is built: header, every record's type, length and
 * padding, the order CONFIG STATE ENDPOINT* ATTACH* MAP* FAULT* END, nothing after END. */
static int check_structure(struct in *in)
{
	const uint8_t *p = in->img;
	uint32_t records, n = 0;
	size_t off = HDR_BYTES;
	int last = 0;

	if (in->len < HDR_BYTES || memcmp(p, VIOMMU_IMAGE_MAGIC, 8))
		return bad(in, "not a viommu image (no magic)");
	if (viommu_le32(p + 8) != VIOMMU_IMAGE_VERSION) {
		bad(in, "image version %u, this build reads %u", viommu_le32(p + 8), VIOMMU_IMAGE_VERSION);
		return -EPROTO;
	}
	if (viommu_le32(p + 12) != HDR_BYTES || viommu_le64(p + 16) != in->len)
		return bad(in, "header: length %llu for %zu bytes",
			   (unsigned long long)viommu_le64(p + 16), in->len);
	if (viommu_le32(p + 24) != fnv1a(p + HDR_BYTES, in->len - HDR_BYTES))
		return bad(in, "checksum mismatch: the image is damaged");
	records = viommu_le32(p + 28);
	while (off < in->len) {
		uint16_t type;
		uint32_t rlen;
		size_t padded;
		bool ok;

		/* The record header must fit before a byte of it is read (found by the fuzzer). */
		if (in->len - off < REC_HDR_BYTES)
			return bad(in, "record %u at byte %zu: truncated", n, off);
		type = viommu_le16(p + off);
		rlen = viommu_le32(p + off + 4);
		padded = ((size_t)rlen + 7) & ~(size_t)7;
		if (viommu_le16(p + off + 2) || padded > in->len - off - REC_HDR_BYTES)
			return bad(in, "record %u at byte %zu: truncated", n, off);
		switch (type) {
		case REC_CONFIG: ok = rlen == CONFIG_BYTES && last == 0; break;
		case REC_STATE: ok = rlen == STATE_BYTES && last == REC_CONFIG; break;
		case REC_ENDPOINT:
			ok = rlen >= EP_BYTES && (rlen - EP_BYTES) % RESV_BYTES == 0 &&
			     p[off + REC_HDR_BYTES + 5] == (rlen - EP_BYTES) / RESV_BYTES &&
			     last >= REC_STATE && last <= REC_ENDPOINT;
			break;
		case REC_ATTACH: ok = rlen == ATTACH_BYTES && last >= REC_STATE && last <= REC_ATTACH; break;
		case REC_MAP: ok = rlen == MAP_BYTES && last >= REC_STATE && last <= REC_MAP; break;
		case REC_FAULT: ok = rlen == FAULT_BYTES && last >= REC_STATE && last <= REC_FAULT; break;
		case REC_TRANSPORT:
			ok = rlen == VIOMMU_IMAGE_TRANSPORT_BYTES && last >= REC_STATE && last <= REC_FAULT;
			break;
		case REC_END: ok = rlen == 0 && last >= REC_STATE; break;
		default: return bad(in, "record %u: unknown type %u", n, type);
		}
		if (!ok)
			return bad(in, "record %u (type %u, %u bytes): wrong size or out of order", n, type, rlen);
		if (!zero(p + off + REC_HDR_BYTES + rlen, padded - rlen))
			return bad(in, "record %u: padding is not zero", n);
		last = type;
		off += REC_HDR_BYTES + padded;
		n++;
		if (type == REC_END)
			break;
	}
	if (last != REC_END || off != in->len || n != records)
		return bad(in, "the image does not end with its END record (%u records, header says %u)",
			   n, records);
	return 0;
}

static int restore_config(struct in *in, const uint8_t *p, struct viommu_config *c)
{
	memset(c, 0, sizeof(*c));
	c->page_size_mask = viommu_le64(p);
	c->input_start = viommu_le64(p + 8);
	c->input_end = viommu_le64(p + 16);
	c->domain_start = viommu_le32(p + 24);
	c->domain_end = viommu_le32(p + 28);
	c->probe_size = viommu_le32(p + 32);
	c->bypass = p[36];
	c->features = viommu_le64(p + 40);
	c->max_domains = viommu_le32(p + 48);
	c->max_mappings_per_domain = viommu_le32(p + 52);
	c->max_mappings = viommu_le64(p + 56);
	c->max_endpoints = viommu_le32(p + 64);
	c->max_pending_faults = viommu_le32(p + 68);
	if (!zero(p + 37, 3))
		return bad(in, "config: reserved bytes set");
	return 0;
}

static int restore_endpoint(struct in *in, struct viommu_device *dev, const uint8_t *p)
{
	struct viommu_resv resv[VIOMMU_MAX_RESV];
	unsigned nresv = p[5];
	int err;

	if (nresv > VIOMMU_MAX_RESV || p[4] > 1 || p[6] || p[7])
		return bad(in, "endpoint 0x%x: malformed", viommu_le32(p));
	for (unsigned i = 0; i < nresv; i++) {
		const uint8_t *r = p + EP_BYTES + i * RESV_BYTES;

		resv[i] = (struct viommu_resv){ viommu_le64(r), viommu_le64(r + 8), r[16] };
		if (r[16] > VIOMMU_RESV_MEM_T_MSI || !zero(r + 17, 7))
			return bad(in, "endpoint 0x%x: reserved region %u malformed", viommu_le32(p), i);
	}
	if ((err = viommu_device_add_endpoint(dev, viommu_le32(p), p[4], resv, nresv)))
		return bad(in, "endpoint 0x%x refused: %s", viommu_le32(p), strerror(-err));
	return 0;
}

static int restore_state(struct in *in, struct viommu_device *dev, const uint8_t *p)
{
	uint8_t bypass = p[8];
	uint64_t features = viommu_le64(p);

	if (!zero(p + 9, 3) || bypass > 1)
		return bad(in, "state: malformed");
	if (viommu_device_negotiate(dev, features))
		return bad(in, "state: negotiated features 0x%llx not offered", (unsigned long long)features);
	if (bypass != viommu_device_config(dev)->bypass &&
	    viommu_device_config_write(dev, offsetof(struct viommu_wire_config, bypass), &bypass, 1))
		return bad(in, "state: bypass %u without BYPASS_CONFIG negotiated", bypass);
	return 0;
}

/* One request through the device's own path: it must be answered OK. */
static int apply(struct in *in, struct viommu_device *dev, const uint8_t *rd, size_t len,
		 const char *what, unsigned n)
{
	uint8_t tail[4];

	if (viommu_device_request_buf(dev, rd, len, tail, sizeof(tail)) != sizeof(tail) ||
	    tail[0] != VIOMMU_S_OK)
		return bad(in, "%s record %u refused by the device (status %u)", what, n, tail[0]);
	return 0;
}

static int restore_attach(struct in *in, struct viommu_device *dev, const uint8_t *p, unsigned n)
{
	const struct viommu_endpoint *ep = viommu_device_endpoint(dev, viommu_le32(p));
	uint8_t r[64];

	/* A second ATTACH of one endpoint would move it: an image has one per endpoint. */
	if (ep && ep->domain)
		return bad(in, "attach record %u: endpoint 0x%x attached twice", n, ep->id);
	return apply(in, dev, r, viommu_req_attach(r, viommu_le32(p + 4), viommu_le32(p), viommu_le32(p + 8)),
		     "attach", n);
}

static int restore_map(struct in *in, struct viommu_device *dev, const uint8_t *p, unsigned n)
{
	uint8_t r[64];

	return apply(in, dev, r, viommu_req_map(r, viommu_le32(p), viommu_le64(p + 8), viommu_le64(p + 16),
						viommu_le64(p + 24), viommu_le32(p + 4)),
		     "map", n);
}

/* A queued fault: reported again, it must come out byte for byte as saved. */
static int restore_fault(struct in *in, struct viommu_device *dev, const uint8_t *p, uint32_t i)
{
	struct viommu_wire_fault f;
	uint32_t flags = viommu_le32(p + 4);

	if (p[0] > VIOMMU_FAULT_R_MAPPING || !(flags & VIOMMU_FAULT_F_ADDRESS) ||
	    viommu_device_report_fault(dev, viommu_le32(p + 8), p[0],
				       flags & (VIOMMU_FAULT_F_READ | VIOMMU_FAULT_F_WRITE), viommu_le64(p + 16)) ||
	    viommu_device_fault_peek(dev, i, &f) || memcmp(&f, p, FAULT_BYTES))
		return bad(in, "fault record %u: malformed, or more than max_pending_faults", i);
	return 0;
}

/* Pass 2: build the device record by record. Attachments and mappings go in as one batch (one
 * sync); each queued fault takes a buffer posted for it; the saved free buffers come last. */
static int build(struct in *in, struct viommu_device **out)
{
	struct viommu_device *dev = NULL;
	struct viommu_config cfg;
	uint32_t credits = 0, nfault = 0;
	bool batch = false;
	unsigned n = 0;
	int err = 0;

	for (size_t off = HDR_BYTES; !err && off < in->len; n++) {
		const uint8_t *p = in->img + off + REC_HDR_BYTES;
		uint16_t type = viommu_le16(in->img + off);

		off += REC_HDR_BYTES + (((size_t)viommu_le32(in->img + off + 4) + 7) & ~(size_t)7);
		if ((type == REC_ATTACH || type == REC_MAP) && !batch) {
			viommu_device_batch_begin(dev);
			batch = true;
		} else if ((type == REC_FAULT || type == REC_TRANSPORT || type == REC_END) && batch) {
			viommu_device_batch_end(dev);
			batch = false;
		}
		switch (type) {
		case REC_CONFIG:
			if ((err = restore_config(in, p, &cfg)))
				break;
			if (!(dev = viommu_device_new(&cfg)))
				err = errno == ENOMEM ? -ENOMEM :
							bad(in, "config refused (the spec forbids it, or caps "
								"above the limits)");
			break;
		case REC_STATE:
			credits = viommu_le32(p + 12);
			err = restore_state(in, dev, p);
			break;
		case REC_ENDPOINT: err = restore_endpoint(in, dev, p); break;
		case REC_ATTACH: err = restore_attach(in, dev, p, n); break;
		case REC_MAP: err = restore_map(in, dev, p, n); break;
		case REC_FAULT:
			viommu_device_eventq_post(dev, 1);
			err = restore_fault(in, dev, p, nfault++);
			break;
		case REC_TRANSPORT:
			break; /* the transport's (viommu_virtio_restore), checked there */
		default: /* REC_END */
			viommu_device_eventq_post(dev, credits);
			break;
		}
	}
	if (batch)
		viommu_device_batch_end(dev);
	*out = dev;
	return err;
}

struct viommu_device *viommu_device_restore(const void *image, size_t len, char *why, size_t why_len)
{
	struct in in = { image, len, why, why_len };
	struct viommu_device *dev = NULL;
	int err;

	if (why && why_len)
		why[0] = 0;
	if (len > VIOMMU_IMAGE_MAX_BYTES) {
		errno = -bad(&in, "image of %zu bytes: more than the %llu accepted", len,
			     (unsigned long long)VIOMMU_IMAGE_MAX_BYTES);
		return NULL;
	}
	if ((err = check_structure(&in)) || (err = build(&in, &dev))) {
		viommu_device_free(dev);
		errno = -err;
		return NULL;
	}
	return dev;
}

int viommu_image_transport(const void *image, size_t len, const void **payload, char *why,
			   size_t why_len)
{
	struct in in = { image, len, why, why_len };
	int err;

	if (why && why_len)
		why[0] = 0;
	if (len > VIOMMU_IMAGE_MAX_BYTES)
		return bad(&in, "image of %zu bytes: more than the %llu accepted", len,
			   (unsigned long long)VIOMMU_IMAGE_MAX_BYTES);
	if ((err = check_structure(&in)))
		return err;
	/* Well formed: walk the records to the one TRANSPORT, which comes right before END. */
	for (size_t off = HDR_BYTES; off < len;) {
		const uint8_t *h = in.img + off;

		if (viommu_le16(h) == REC_TRANSPORT) {
			*payload = h + REC_HDR_BYTES;
			return 0;
		}
		off += REC_HDR_BYTES + (((size_t)viommu_le32(h + 4) + 7) & ~(size_t)7);
	}
	bad(&in, "the image holds no transport record (a device saved alone)");
	return -ENOENT;
}
