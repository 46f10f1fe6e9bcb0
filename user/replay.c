// SPDX-License-Identifier: MIT
/*
 * Trace replay. A file is streamed: each line is read, parsed and executed before the next is
 * read, so memory does not grow with the file's length (only with its longest line, the topology
 * declared by its set-up lines, and the device's own state). A syntax error stops the file at
 * that line (with the line number), after the lines before it have run.
 */
#include "replay.h"

#include "image.h"
#include "fuzz_input.h"
#include "replay_vq.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#define MAX_TOKENS 32
#define MAX_RAW 4096
#define MAX_WRITABLE (1u << 20)
#define MAX_RESV_EXPECT VIOMMU_MAX_RESV

enum verb {
	V_DEVICE, V_ENDPOINT, V_NEGOTIATE, V_ATTACH, V_DETACH, V_MAP, V_UNMAP, V_PROBE, V_RAW,
	V_KICK, V_SET_BYPASS, V_RESET, V_SYSTEM_RESET, V_TRANSLATE,
};

static const char *const verbs[] = {
	[V_DEVICE] = "device", [V_ENDPOINT] = "endpoint", [V_NEGOTIATE] = "negotiate",
	[V_ATTACH] = "attach", [V_DETACH] = "detach", [V_MAP] = "map", [V_UNMAP] = "unmap",
	[V_PROBE] = "probe", [V_RAW] = "raw", [V_KICK] = "kick", [V_SET_BYPASS] = "set_bypass",
	[V_RESET] = "reset", [V_SYSTEM_RESET] = "system_reset", [V_TRANSLATE] = "translate",
};

/* Keys each verb takes (besides the expectations of request lines). */
#define MAX_VERB_KEYS 12
static const char *const verb_keys[][MAX_VERB_KEYS] = {
	[V_DEVICE] = { "page_size_mask", "input_start", "input_end", "domain_start", "domain_end",
		       "probe_size", "bypass", "features", "max_domains", "max_mappings_per_domain",
		       "max_mappings" },
	[V_ENDPOINT] = { "id", "resv", "access_platform" },
	[V_NEGOTIATE] = { "features" },
	[V_ATTACH] = { "domain", "endpoint", "flags" },
	[V_DETACH] = { "domain", "endpoint" },
	[V_MAP] = { "domain", "virt_start", "virt_end", "phys_start", "flags" },
	[V_UNMAP] = { "domain", "virt_start", "virt_end" },
	[V_PROBE] = { "endpoint", "resv_mem" },
	[V_RAW] = { "hex", "writable" },
	[V_KICK] = { "n" },
	[V_SET_BYPASS] = { "value" },
	[V_RESET] = { 0 },
	[V_SYSTEM_RESET] = { 0 },
	[V_TRANSLATE] = { "endpoint", "iova", "size", "access", "expect" },
};

/* Required keys, as a bitmask over verb_keys[v]. */
static const unsigned verb_required[] = {
	[V_ENDPOINT] = 1u << 0, [V_NEGOTIATE] = 1u << 0, [V_ATTACH] = 0x7, [V_DETACH] = 0x3,
	[V_MAP] = 0x1f, [V_UNMAP] = 0x7, [V_PROBE] = 0x1, [V_RAW] = 0x1, [V_SET_BYPASS] = 0x1,
	[V_TRANSLATE] = 0x1b,
};

struct kv {
	const char *key;
	const char *val;
};

/* One parsed line; the kv pointers point into the line buffer, valid until the next line is read. */
struct line {
	unsigned lineno;
	enum verb verb;
	unsigned nkv;
	struct kv kv[MAX_TOKENS];
};

struct pending;

/* An `endpoint` set-up line, kept until the device is created at the first request. */
struct ep_decl {
	unsigned lineno;
	uint32_t id;
	bool access_platform;
	unsigned nresv;
	struct viommu_resv resv[VIOMMU_MAX_RESV];
};

struct run {
	const char *path;
	const struct viommu_replay_opts *o;
	struct viommu_replay_totals *tot;
	FILE *err; /* opts->err, or stderr */
	/* set-up, until the first request line */
	struct viommu_config cfg;
	uint64_t negotiate;
	bool have_negotiate;
	struct ep_decl *eps;
	size_t neps, eps_cap;
	bool implicit_eps; /* no endpoint declared: each id named by a line exists */
	/* execution */
	struct viommu_device *dev;
	struct viommu_replay_reader readers[3];
	unsigned nreaders;
	bool in_batch;
	/* --via=virtqueue: the guest driver, and the requests in its ring not yet answered */
	struct viommu_vq_driver *drv;
	struct pending *pend;
	size_t npend, pend_cap;
	bool vq_broken; /* the device failed the rings: the file stops */
	uint64_t vq_added; /* request lines put in the ring (--restore-every counts these) */
	bool read_failed; /* the stream could not be read to its end: an I/O error */
	bool reopening; /* open_readers() after a restore: skips were said the first time */
	uint64_t restores;
	bool restore_due;
	uint64_t requests, probes, mismatches;
	uint64_t by_type[VIOMMU_T_MAX + 1][VIOMMU_S_COUNT + 1]; /* [..][COUNT] = used 0 */
	double busy_s; /* time spent inside the device's request path */
	/* --dump-requests: the seed being filled (fuzz_input.h) */
	uint8_t *seed;
	size_t seed_len, seed_requests;
	unsigned seeds;
};

/* A token echoed in an error is cut to SHOW_MAX characters: a line may be megabytes long. */
#define SHOW_MAX 64
#define SHOW_FMT "%.*s%s"
#define SHOW(s) SHOW_MAX, (s), (strnlen((s), SHOW_MAX + 1) > SHOW_MAX ? "..." : "")

static bool is_request(enum verb v)
{
	return v >= V_ATTACH && v <= V_RAW;
}

static bool is_setup(enum verb v)
{
	return v <= V_NEGOTIATE;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	int base = 10;

	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!isxdigit((unsigned char)*s))
			return -EINVAL;
	}
	errno = 0;
	*out = strtoull(s, &end, base);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

static const char *get(const struct line *l, const char *key)
{
	for (unsigned i = 0; i < l->nkv; i++)
		if (!strcmp(l->kv[i].key, key))
			return l->kv[i].val;
	return NULL;
}

static int get_u64(const struct line *l, const char *key, uint64_t def, uint64_t *out)
{
	const char *v = get(l, key);

	if (!v) {
		*out = def;
		return 0;
	}
	return parse_u64(v, out);
}

#define ERR(r, l, ...)                                                   \
	do {                                                                 \
		fprintf((r)->err, "%s:%u: ", (r)->path, (l)->lineno);            \
		fprintf((r)->err, __VA_ARGS__);                                  \
		fputc('\n', (r)->err);                                           \
	} while (0)

static bool key_known(enum verb v, const char *key)
{
	for (unsigned i = 0; i < MAX_VERB_KEYS && verb_keys[v][i]; i++)
		if (!strcmp(verb_keys[v][i], key))
			return true;
	if (is_request(v) && (!strcmp(key, "status") || !strcmp(key, "used")))
		return true;
	return false;
}

static bool key_repeatable(enum verb v, const char *key)
{
	return (v == V_ENDPOINT && !strcmp(key, "resv")) || (v == V_PROBE && !strcmp(key, "resv_mem"));
}

/* Tokenise one line; returns 1 for a line with a verb, 0 for blank/comment, -EINVAL on error. */
static int parse_line(struct run *f, char *buf, unsigned lineno, struct line *l)
{
	char *save = NULL, *tok;
	unsigned seen_required = 0;

	l->lineno = lineno;
	l->nkv = 0;
	tok = strtok_r(buf, " \t\r\n", &save);
	if (!tok || tok[0] == '#')
		return 0;
	for (l->verb = 0; l->verb < sizeof(verbs) / sizeof(verbs[0]); l->verb++)
		if (!strcmp(tok, verbs[l->verb]))
			break;
	if (l->verb == sizeof(verbs) / sizeof(verbs[0])) {
		ERR(f, l, "unknown verb '" SHOW_FMT "'", SHOW(tok));
		return -EINVAL;
	}
	while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
		char *eq;

		if (tok[0] == '#')
			break;
		eq = strchr(tok, '=');
		if (!eq || eq == tok) {
			ERR(f, l, "'" SHOW_FMT "' is not key=value", SHOW(tok));
			return -EINVAL;
		}
		*eq = 0;
		if (!key_known(l->verb, tok)) {
			ERR(f, l, "%s takes no key '" SHOW_FMT "'", verbs[l->verb], SHOW(tok));
			return -EINVAL;
		}
		if (!key_repeatable(l->verb, tok) && get(l, tok)) {
			ERR(f, l, "key '" SHOW_FMT "' given twice", SHOW(tok));
			return -EINVAL;
		}
		if (l->nkv == MAX_TOKENS) {
			ERR(f, l, "too many tokens");
			return -EINVAL;
		}
		for (unsigned i = 0; i < MAX_VERB_KEYS && verb_keys[l->verb][i]; i++)
			if (!strcmp(verb_keys[l->verb][i], tok))
				seen_required |= 1u << i;
		l->kv[l->nkv].key = tok;
		l->kv[l->nkv].val = eq + 1;
		l->nkv++;
	}
	if (l->verb < sizeof(verb_required) / sizeof(verb_required[0]) &&
	    (seen_required & verb_required[l->verb]) != verb_required[l->verb]) {
		for (unsigned i = 0; i < MAX_VERB_KEYS; i++)
			if ((verb_required[l->verb] & (1u << i)) && !(seen_required & (1u << i))) {
				ERR(f, l, "%s needs %s=", verbs[l->verb], verb_keys[l->verb][i]);
				break;
			}
		return -EINVAL;
	}
	return 1;
}

/* ---- execution ---- */

#define MISMATCH(r, l, ...)                                              \
	do {                                                                 \
		fprintf((r)->err, "%s:%u: mismatch: ", (r)->path, (l)->lineno);  \
		fprintf((r)->err, __VA_ARGS__);                                  \
		fputc('\n', (r)->err);                                           \
		(r)->mismatches++;                                               \
	} while (0)

static enum viommu_xlate_result store_translate(void *ctx, const struct viommu_query *q,
						struct viommu_answer *out)
{
	struct viommu_device *dev = ctx;
	enum viommu_xlate_result res = viommu_device_answer(dev, q, out);

	if (res == VIOMMU_XLATE_FAULT)
		viommu_device_report_fault(dev, q->endpoint, (uint8_t)out->reason, q->access,
					   out->fault_addr);
	return res;
}

static int open_store(struct viommu_device *dev, struct viommu_replay_reader *r)
{
	r->name = "store";
	r->ctx = dev;
	r->translate = store_translate;
	return 0;
}

static int status_parse(const char *s, int *out)
{
	uint64_t v;

	if (!strcmp(s, "ERR")) {
		*out = -1;
		return 0;
	}
	for (unsigned i = 0; i < VIOMMU_S_COUNT; i++)
		if (!strcmp(s, viommu_status_name(i))) {
			*out = (int)i;
			return 0;
		}
	if (parse_u64(s, &v) || v > 0xff)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

static int resv_parse(const char *s, struct viommu_resv *r)
{
	char buf[128], *a, *b;
	uint64_t start, end;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	a = strchr(buf, ':');
	if (!a)
		return -EINVAL;
	*a++ = 0;
	b = strchr(a, ':');
	if (!b)
		return -EINVAL;
	*b++ = 0;
	if (!strcmp(buf, "msi"))
		r->subtype = VIOMMU_RESV_MEM_T_MSI;
	else if (!strcmp(buf, "reserved"))
		r->subtype = VIOMMU_RESV_MEM_T_RESERVED;
	else
		return -EINVAL;
	if (parse_u64(a, &start) || parse_u64(b, &end) || start > end)
		return -EINVAL;
	r->start = start;
	r->end = end;
	return 0;
}

static double now_s(void);
static void vq_flush(struct run *r);

/* Completes the pending batch: observers sync (grace periods) here, so it counts as device time.
 * Via virtqueue: the driver kicks once and every request of the batch is answered. */
static void end_batch(struct run *r)
{
	if (r->drv) {
		vq_flush(r);
		return;
	}
	if (r->in_batch) {
		double t0 = now_s();

		viommu_device_batch_end(r->dev);
		r->busy_s += now_s() - t0;
		r->in_batch = false;
	}
}

/* Expected outcome of a probe. kind: 0 = PA, 1 = identity, 2 = fault. */
struct expect {
	int kind;
	uint64_t pa;
	uint8_t reason;
	bool whole; /* kind 0 asked with VIOMMU_QUERY_F_EXTENT: the answer is [ext_start, ext_end] */
	uint64_t ext_start, ext_end;
};

static int expect_parse(const char *s, struct expect *e)
{
	*e = (struct expect){ 0 };
	if (!strcmp(s, "bypass")) {
		e->kind = 1;
	} else if (!strcmp(s, "fault:domain")) {
		e->kind = 2;
		e->reason = VIOMMU_FAULT_R_DOMAIN;
	} else if (!strcmp(s, "fault:mapping")) {
		e->kind = 2;
		e->reason = VIOMMU_FAULT_R_MAPPING;
	} else if (!strcmp(s, "fault:unknown")) {
		e->kind = 2;
		e->reason = VIOMMU_FAULT_R_UNKNOWN;
	} else {
		e->kind = 0;
		return parse_u64(s, &e->pa);
	}
	return 0;
}

static const char *reason_name(uint32_t r)
{
	return r == VIOMMU_FAULT_R_DOMAIN ? "fault:domain" :
	       r == VIOMMU_FAULT_R_MAPPING ? "fault:mapping" : "fault:unknown";
}

/* What a non-HIT answer was, for a mismatch message. */
static const char *answer_name(const struct viommu_answer *a)
{
	return a->result == VIOMMU_XLATE_IDENTITY ? "bypass" :
	       a->result == VIOMMU_XLATE_FAULT ? reason_name(a->reason) : "retry (raced a writer)";
}

/* The next fault report: popped from the device, or via virtqueue read off the event queue. */
static int fault_pop(struct run *r, struct viommu_wire_fault *fr)
{
	int err;

	if (!r->drv)
		return viommu_device_fault_pop(r->dev, fr);
	err = viommu_vq_driver_event_pop(r->drv, fr);
	if (err == -EPROTO) {
		fprintf(r->err, "%s: via virtqueue: %s\n", r->path, viommu_vq_driver_problem(r->drv));
		r->mismatches++;
		r->vq_broken = true;
	}
	return err;
}

/* Run one probe through every reader and check the answer and each fault report. */
static void probe(struct run *r, const struct line *l, uint32_t ep, uint64_t iova, uint64_t size,
		  uint32_t access, const struct expect *e)
{
	uint64_t last = iova + (size ? size - 1 : 0);
	struct viommu_wire_fault fr;

	end_batch(r);
	r->probes++;
	while (fault_pop(r, &fr) == 0)
		; /* nothing stale from earlier lines */
	for (unsigned i = 0; i < r->nreaders; i++) {
		struct viommu_replay_reader *rd = &r->readers[i];
		struct viommu_query q = { .endpoint = ep, .access = access, .iova = iova, .size = size };
		struct viommu_answer x;
		enum viommu_xlate_result res;

		if (!r->drv) /* via virtqueue the driver keeps the event queue full */
			viommu_device_eventq_post(r->dev, 1); /* the driver keeps a buffer posted */
		res = rd->translate(rd->ctx, &q, &x);
		switch (e->kind) {
		case 0:
			if (res != VIOMMU_XLATE_HIT || x.pa != e->pa)
				MISMATCH(r, l, "[%s] expected 0x%llx, got %s 0x%llx", rd->name,
					 (unsigned long long)e->pa,
					 res == VIOMMU_XLATE_HIT ? "pa" : answer_name(&x),
					 (unsigned long long)(res == VIOMMU_XLATE_FAULT ? x.fault_addr : x.pa));
			else if (e->whole && (x.ext_start != e->ext_start || x.ext_end != e->ext_end))
				MISMATCH(r, l, "[%s] expected the whole extent [0x%llx, 0x%llx], got [0x%llx, 0x%llx]",
					 rd->name, (unsigned long long)e->ext_start, (unsigned long long)e->ext_end,
					 (unsigned long long)x.ext_start, (unsigned long long)x.ext_end);
			break;
		case 1:
			if (res != VIOMMU_XLATE_IDENTITY || x.pa != iova)
				MISMATCH(r, l, "[%s] expected bypass, got %s", rd->name,
					 res == VIOMMU_XLATE_HIT ? "a translation" : answer_name(&x));
			break;
		case 2:
			if (res != VIOMMU_XLATE_FAULT || x.reason != e->reason)
				MISMATCH(r, l, "[%s] expected %s, got %s", rd->name, reason_name(e->reason),
					 res == VIOMMU_XLATE_HIT ? "a translation" : answer_name(&x));
			break;
		}
		/* Exactly one report for a fault, none otherwise. */
		if (fault_pop(r, &fr) == 0) {
			uint32_t flags = viommu_le32(&fr.flags);
			uint64_t addr = viommu_le64(&fr.address);

			if (e->kind != 2)
				MISMATCH(r, l, "[%s] fault reported for a probe that should not fault",
					 rd->name);
			else if (fr.reason != e->reason || viommu_le32(&fr.endpoint) != ep ||
				 (flags & (VIOMMU_FAULT_F_READ | VIOMMU_FAULT_F_WRITE)) !=
					 (access & ~VIOMMU_QUERY_F_EXTENT) ||
				 !(flags & VIOMMU_FAULT_F_ADDRESS) || addr < iova ||
				 (last >= iova && addr > last))
				MISMATCH(r, l,
					 "[%s] fault report reason=%u endpoint=%u flags=0x%x address=0x%llx",
					 rd->name, fr.reason, viommu_le32(&fr.endpoint), flags,
					 (unsigned long long)addr);
			if (fault_pop(r, &fr) == 0)
				MISMATCH(r, l, "[%s] more than one fault report", rd->name);
		} else if (e->kind == 2) {
			MISMATCH(r, l, "[%s] no fault report on the event queue", rd->name);
		}
	}
}

static uint32_t access_of_flags(uint64_t flags)
{
	return (uint32_t)(flags & (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE));
}

/*
 * --dma-probes asks the device which endpoint can see a domain, after the request ran: whatever
 * put it there (a structured line, a raw request, a move, a reset) and whatever it is (an endpoint
 * without ACCESS_PLATFORM is identity, as the device treats it), the probe expects what the
 * device's own state implies; the address it expects comes from the line.
 */
struct probe_pick {
	const struct viommu_device *dev;
	uint32_t ep;
	enum viommu_ep_state st;
	bool found;
};

/* Prefer an endpoint whose DMA is translated; else any endpoint of the domain. */
static int pick_endpoint(const struct viommu_endpoint *ep, void *arg)
{
	struct probe_pick *p = arg;
	enum viommu_ep_state st = viommu_device_endpoint_state(p->dev, ep->id);

	if (!p->found || st == VIOMMU_EP_ATTACHED) {
		p->ep = ep->id;
		p->st = st;
		p->found = true;
	}
	return st == VIOMMU_EP_ATTACHED;
}

static bool domain_endpoint(struct run *r, uint32_t domain, struct probe_pick *p)
{
	memset(p, 0, sizeof(*p));
	p->dev = r->dev;
	viommu_device_for_each_domain_endpoint(r->dev, domain, pick_endpoint, p);
	return p->found;
}

static void dma_probe_map(struct run *r, const struct line *l, uint32_t domain, uint64_t start,
			  uint64_t end, uint64_t phys, uint64_t flags)
{
	uint32_t access = access_of_flags(flags);
	struct expect e = { .kind = 0 };
	struct probe_pick p;

	if (!access || !domain_endpoint(r, domain, &p))
		return;
	if (p.st != VIOMMU_EP_ATTACHED) { /* identity (no ACCESS_PLATFORM): the mapping is unused */
		e.kind = 1;
		probe(r, l, p.ep, start, 1, access, &e);
		return;
	}
	e.pa = phys;
	probe(r, l, p.ep, start, 1, access, &e);
	/* The last byte as a vhost bridge asks for it: the whole extent (the short path answers
	 * only the page otherwise). */
	e.pa = phys + (end - start);
	e.whole = true;
	e.ext_start = start;
	e.ext_end = end;
	probe(r, l, p.ep, end, 1, access | VIOMMU_QUERY_F_EXTENT, &e);
}

static void dma_probe_unmap(struct run *r, const struct line *l, uint32_t domain, uint64_t start)
{
	struct expect e = { .kind = 2, .reason = VIOMMU_FAULT_R_MAPPING };
	struct probe_pick p;

	if (!domain_endpoint(r, domain, &p))
		return;
	if (p.st != VIOMMU_EP_ATTACHED)
		e.kind = 1;
	probe(r, l, p.ep, start, 1, VIOMMU_MAP_F_READ, &e);
}

static int hexbytes(const char *s, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = strlen(s);

	if (n % 2 || n / 2 > cap)
		return -EINVAL;
	for (size_t i = 0; i < n / 2; i++) {
		char b[3] = { s[2 * i], s[2 * i + 1], 0 };
		char *end;

		if (!isxdigit((unsigned char)b[0]) || !isxdigit((unsigned char)b[1]))
			return -EINVAL;
		out[i] = (uint8_t)strtoul(b, &end, 16);
	}
	*len = n / 2;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- fuzzer seeds (--dump-requests): VIOMMU_FUZZ_SEED_REQUESTS requests per file ---- */

static void seed_flush(struct run *r)
{
	char name[4096];
	const char *base = strrchr(r->path, '/');
	size_t len = r->seed_len;
	int e = 0;
	FILE *fp;

	if (!r->seed_requests)
		return;
	r->seed_len = r->seed_requests = 0;
	if (r->tot->dump_failed)
		return;
	snprintf(name, sizeof(name), "%s/%s-%04u", r->o->dump_dir, base ? base + 1 : r->path,
		 r->seeds++);
	errno = 0;
	if (!(fp = fopen(name, "wb"))) {
		e = errno;
	} else {
		if (fwrite(r->seed, 1, len, fp) != len)
			e = errno ? errno : EIO;
		if (fclose(fp) && !e)
			e = errno ? errno : EIO;
	}
	if (e) {
		/* Once for the whole run: the directory will not take the next seed either. */
		fprintf(r->err, "replay: --dump-requests: cannot write seed %s: %s\n", name, strerror(e));
		r->tot->dump_failed = true;
		r->mismatches++;
	}
}

static void seed_add(struct run *r, const uint8_t *rd, size_t rd_len, size_t wr_len)
{
	uint8_t *rec;

	if (!r->o->dump_dir || r->tot->dump_failed || rd_len > 255 || wr_len > VIOMMU_FUZZ_MAX_WR)
		return;
	if (!r->seed && !(r->seed = malloc(1 + VIOMMU_FUZZ_SEED_REQUESTS * (4 + 255))))
		return;
	if (!r->seed_len)
		r->seed[r->seed_len++] = 0; /* default config, as the traces */
	rec = r->seed + r->seed_len;
	rec[0] = VIOMMU_FUZZ_OP_REQUEST;
	rec[1] = (uint8_t)rd_len;
	rec[2] = (uint8_t)wr_len;
	rec[3] = (uint8_t)(wr_len >> 8);
	memcpy(rec + 4, rd, rd_len);
	r->seed_len += 4 + rd_len;
	if (++r->seed_requests == VIOMMU_FUZZ_SEED_REQUESTS)
		seed_flush(r);
}

/* What a request line says besides its request: the expected status and used length. */
struct request_expect {
	int status; /* -2: none given, -1: ERR (any error), else VIOMMU_S_* */
	bool want_used;
	uint64_t used;
};

/* --via=virtqueue: a request line in the ring, answered at the next flush. The line is copied
 * (its strings live in the line buffer, which the next line overwrites). */
struct pending {
	struct line l;
	char *text;
	uint64_t v[5];
	struct request_expect e;
	uint8_t *rd;
	size_t rd_len, wr_len;
	int token;
};

/* The line's numbers (v[i] for verb_keys[verb][i], i < 5) and its expectations. */
static int request_args(struct run *r, const struct line *l, uint64_t v[5], struct request_expect *e)
{
	const char *s;

	for (unsigned i = 0; i < 5 && verb_keys[l->verb][i]; i++) {
		if (!strcmp(verb_keys[l->verb][i], "resv_mem") || !strcmp(verb_keys[l->verb][i], "hex"))
			continue;
		if (get_u64(l, verb_keys[l->verb][i], 0, &v[i])) {
			ERR(r, l, "bad number in %s=", verb_keys[l->verb][i]);
			return -EINVAL;
		}
	}
	e->status = -2;
	if ((s = get(l, "status")) && status_parse(s, &e->status)) {
		ERR(r, l, "bad status '" SHOW_FMT "'", SHOW(s));
		return -EINVAL;
	}
	if ((s = get(l, "used"))) {
		e->want_used = true;
		if (parse_u64(s, &e->used)) {
			ERR(r, l, "bad used=");
			return -EINVAL;
		}
	}
	return 0;
}

/* The request's readable part in @rd (MAX_RAW bytes, zeroed) and the writable length. */
static int build_request(struct run *r, const struct line *l, const uint64_t v[5], uint8_t *rd,
			 size_t *rd_len, size_t *wr_len)
{
	*wr_len = 4;
	switch (l->verb) {
	case V_ATTACH:
	case V_DETACH:
		if (v[0] > UINT32_MAX || v[1] > UINT32_MAX || v[2] > UINT32_MAX) {
			ERR(r, l, "domain, endpoint and flags are 32-bit");
			return -EINVAL;
		}
		*rd_len = l->verb == V_ATTACH ?
				  viommu_req_attach(rd, (uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2]) :
				  viommu_req_detach(rd, (uint32_t)v[0], (uint32_t)v[1]);
		return 0;
	case V_MAP:
		if (v[0] > UINT32_MAX || v[4] > UINT32_MAX) {
			ERR(r, l, "domain and flags are 32-bit");
			return -EINVAL;
		}
		*rd_len = viommu_req_map(rd, (uint32_t)v[0], v[1], v[2], v[3], (uint32_t)v[4]);
		return 0;
	case V_UNMAP:
		if (v[0] > UINT32_MAX) {
			ERR(r, l, "domain is 32-bit");
			return -EINVAL;
		}
		*rd_len = viommu_req_unmap(rd, (uint32_t)v[0], v[1], v[2]);
		return 0;
	case V_PROBE:
		if (v[0] > UINT32_MAX) {
			ERR(r, l, "endpoint is 32-bit");
			return -EINVAL;
		}
		*rd_len = viommu_req_probe(rd, (uint32_t)v[0]);
		*wr_len = viommu_device_config(r->dev)->probe_size + 4;
		return 0;
	case V_RAW: {
		uint64_t w;

		if (hexbytes(get(l, "hex"), rd, MAX_RAW, rd_len)) {
			ERR(r, l, "bad hex= (pairs of hex digits, at most %d bytes)", MAX_RAW);
			return -EINVAL;
		}
		if (get_u64(l, "writable", 4, &w) || w > MAX_WRITABLE) {
			ERR(r, l, "bad writable= (at most %u)", MAX_WRITABLE);
			return -EINVAL;
		}
		*wr_len = (size_t)w;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

/* Hand the request to the device inside the current batch (opening one), timed and counted;
 * returns the used length. */
static uint32_t submit_request(struct run *r, const uint8_t *rd, size_t rd_len, uint8_t *wr,
			       size_t wr_len)
{
	uint32_t used;
	double t0;

	if (!r->in_batch) {
		viommu_device_batch_begin(r->dev);
		r->in_batch = true;
	}
	seed_add(r, rd, rd_len, wr_len);
	t0 = now_s();
	used = viommu_device_request_buf(r->dev, rd, rd_len, wr, wr_len);
	r->busy_s += now_s() - t0;
	return used;
}

/* A request answered (directly or through the rings): counted by type and status. */
static void count_request(struct run *r, const uint8_t *rd, size_t rd_len, const uint8_t *wr,
			  uint32_t used)
{
	unsigned type = rd_len ? rd[0] : 0, st;

	r->requests++;
	st = used >= 4 ? wr[used - 4] : VIOMMU_S_COUNT;
	if (type > VIOMMU_T_MAX)
		type = 0;
	if (st > VIOMMU_S_COUNT)
		st = VIOMMU_S_COUNT;
	r->by_type[type][used ? st : VIOMMU_S_COUNT]++;
}

/* The used length and status against the line's expectations; nothing written but the tail
 * (and an accepted PROBE's properties) into the poisoned buffer. */
static void check_used(struct run *r, const struct line *l, const struct request_expect *e,
		       const uint8_t *rd, size_t rd_len, const uint8_t *wr, size_t wr_len, uint32_t used)
{
	if (e->want_used && used != e->used)
		MISMATCH(r, l, "used length %u, expected %llu", used, (unsigned long long)e->used);
	if (e->status != -2) {
		if (!used)
			MISMATCH(r, l, "no status written (used 0), expected %s",
				 e->status < 0 ? "ERR" : viommu_status_name((unsigned)e->status));
		else if (e->status == -1 ? wr[used - 4] == VIOMMU_S_OK : wr[used - 4] != e->status)
			MISMATCH(r, l, "status %s, expected %s", viommu_status_name(wr[used - 4]),
				 e->status < 0 ? "ERR" : viommu_status_name((unsigned)e->status));
		else if (used && (wr[used - 3] | wr[used - 2] | wr[used - 1]))
			MISMATCH(r, l, "tail reserved bytes not zeroed");
	}
	if (used == 0) {
		for (size_t i = 0; i < wr_len; i++)
			if (wr[i] != 0xa5) {
				MISMATCH(r, l, "used 0 but the buffer was written");
				break;
			}
	} else if (used >= 4 && (l->verb != V_PROBE || wr[used - 4] != VIOMMU_S_OK) &&
		   !(l->verb == V_RAW && rd_len && rd[0] == VIOMMU_T_PROBE && wr[used - 4] == VIOMMU_S_OK)) {
		/* Only an accepted PROBE writes before the tail. */
		for (size_t i = 0; i < used - 4; i++)
			if (wr[i] != 0xa5) {
				MISMATCH(r, l, "bytes before the tail were written");
				break;
			}
	}
}

/* An accepted PROBE line: the RESV_MEM properties, exactly and in order. */
static int check_probe(struct run *r, const struct line *l, const uint8_t *wr, size_t wr_len)
{
	struct viommu_resv want[MAX_RESV_EXPECT];
	unsigned nwant = 0, ngot = 0;
	size_t off = 0, psize = wr_len - 4;

	for (unsigned i = 0; i < l->nkv; i++) {
		if (strcmp(l->kv[i].key, "resv_mem"))
			continue;
		if (nwant == MAX_RESV_EXPECT || resv_parse(l->kv[i].val, &want[nwant])) {
			ERR(r, l, "bad resv_mem=" SHOW_FMT, SHOW(l->kv[i].val));
			return -EINVAL;
		}
		nwant++;
	}
	while (off + 4 <= psize) {
		uint16_t type = viommu_le16(wr + off) & VIOMMU_PROBE_T_MASK;
		uint16_t len = viommu_le16(wr + off + 2);

		if (type == VIOMMU_PROBE_T_NONE)
			break;
		if (off + 4 + len > psize) {
			MISMATCH(r, l, "property at %zu runs past the buffer", off);
			break;
		}
		if (type == VIOMMU_PROBE_T_RESV_MEM && len == 20) {
			uint8_t sub = wr[off + 4];
			uint64_t a = viommu_le64(wr + off + 8), b = viommu_le64(wr + off + 16);

			if (ngot >= nwant || want[ngot].subtype != sub || want[ngot].start != a ||
			    want[ngot].end != b)
				MISMATCH(r, l, "unexpected RESV_MEM %u:0x%llx:0x%llx", sub,
					 (unsigned long long)a, (unsigned long long)b);
			ngot++;
		}
		off += 4 + len;
	}
	for (size_t i = off; i < psize && i < viommu_device_config(r->dev)->probe_size; i++)
		if (wr[i]) {
			MISMATCH(r, l, "property buffer not zero-filled after the last property");
			break;
		}
	if (ngot < nwant)
		MISMATCH(r, l, "%u RESV_MEM properties, expected %u", ngot, nwant);
	return 0;
}

/* A request's answer against its line: counted, status and used length checked, PROBE
 * properties checked, then --dma-probes. */
static int finish_request(struct run *r, const struct line *l, const uint64_t v[5],
			  const struct request_expect *e, const uint8_t *rd, size_t rd_len,
			  const uint8_t *wr, size_t wr_len, uint32_t used)
{
	int err = 0;

	count_request(r, rd, rd_len, wr, used);
	check_used(r, l, e, rd, rd_len, wr, wr_len, used);
	if (l->verb == V_PROBE && used && wr[used - 4] == VIOMMU_S_OK)
		err = check_probe(r, l, wr, wr_len);
	/* --dma-probes: after an accepted MAP / UNMAP line, as the device now stands. */
	if (!err && used && wr[used - 4] == VIOMMU_S_OK) {
		if (r->o->dma_probes && l->verb == V_MAP)
			dma_probe_map(r, l, (uint32_t)v[0], v[1], v[2], v[3], v[4]);
		else if (r->o->dma_probes && l->verb == V_UNMAP)
			dma_probe_unmap(r, l, (uint32_t)v[0], v[1]);
	}
	return err;
}

/* ---- --via=virtqueue ---- */

static void pending_free(struct pending *p)
{
	free(p->text);
	free(p->rd);
}

/* The requests of the batch in the ring: one kick, every answer, then each checked in order
 * (a --dma-probes probe inside finish_request ends no batch: none is pending any more). */
static void vq_flush(struct run *r)
{
	size_t n = r->npend;
	double t0;
	int err;

	if (!n)
		return;
	r->npend = 0;
	t0 = now_s();
	err = viommu_vq_driver_flush(r->drv);
	r->busy_s += now_s() - t0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &r->pend[i];
		const uint8_t *wr;

		if (!err && !r->vq_broken) {
			uint32_t used = viommu_vq_driver_result(r->drv, p->token, &wr);

			if (finish_request(r, &p->l, p->v, &p->e, p->rd, p->rd_len, wr, p->wr_len, used))
				r->vq_broken = true; /* a bad expectation: the file stops, as directly */
		}
		pending_free(p);
	}
	if (err) {
		fprintf(r->err, "%s:%u: via virtqueue: %s\n", r->path, r->pend[0].l.lineno,
			err == -EPROTO ? viommu_vq_driver_problem(r->drv) : strerror(-err));
		r->mismatches++;
		r->vq_broken = true;
	}
}

/* Copy @l (and the strings it points into) into @p. */
static int line_dup(struct pending *p, const struct line *l)
{
	size_t len = 0, off = 0;

	for (unsigned i = 0; i < l->nkv; i++)
		len += strlen(l->kv[i].key) + strlen(l->kv[i].val) + 2;
	p->l = *l;
	p->text = malloc(len ? len : 1);
	if (!p->text)
		return -ENOMEM;
	for (unsigned i = 0; i < l->nkv; i++) {
		size_t k = strlen(l->kv[i].key) + 1, v = strlen(l->kv[i].val) + 1;

		memcpy(p->text + off, l->kv[i].key, k);
		p->l.kv[i].key = p->text + off;
		memcpy(p->text + off + k, l->kv[i].val, v);
		p->l.kv[i].val = p->text + off + k;
		off += k + v;
	}
	return 0;
}

/* Put a request line in the ring; flushed when the ring is full, at the batch's end, or at once
 * when --dma-probes will probe it (the direct path's probe ends its batch there too). */
static int vq_request(struct run *r, const struct line *l, const uint64_t v[5],
		      const struct request_expect *e, const uint8_t *rd, size_t rd_len, size_t wr_len)
{
	struct pending *p;
	int token;

	if (r->vq_broken)
		return -EIO;
	seed_add(r, rd, rd_len, wr_len);
	token = viommu_vq_driver_add(r->drv, rd, rd_len, wr_len);
	if (token == -ENOSPC) {
		vq_flush(r); /* Linux: the queue is full, sync and retry */
		if (r->vq_broken)
			return -EIO;
		token = viommu_vq_driver_add(r->drv, rd, rd_len, wr_len);
	}
	if (token < 0) {
		ERR(r, l, "via virtqueue: the request does not fit the guest's buffers: %s",
		    strerror(-token));
		return token;
	}
	if (r->npend == r->pend_cap) {
		size_t nc = r->pend_cap ? 2 * r->pend_cap : 64;
		struct pending *np = realloc(r->pend, nc * sizeof(*np));

		if (!np)
			return -ENOMEM;
		r->pend = np;
		r->pend_cap = nc;
	}
	p = &r->pend[r->npend];
	memset(p, 0, sizeof(*p));
	if (line_dup(p, l) || !(p->rd = malloc(rd_len ? rd_len : 1))) {
		pending_free(p);
		return -ENOMEM;
	}
	memcpy(p->rd, rd, rd_len);
	memcpy(p->v, v, sizeof(p->v));
	p->e = *e;
	p->rd_len = rd_len;
	p->wr_len = wr_len;
	p->token = token;
	r->npend++;
	if (r->o->dma_probes && (l->verb == V_MAP || l->verb == V_UNMAP))
		vq_flush(r);
	return r->vq_broken ? -EIO : 0;
}

/* Build and submit one request line; check status/used. */
static int open_readers(struct run *r);

static void close_readers(struct run *r)
{
	for (unsigned i = 0; i < r->nreaders; i++)
		if (r->readers[i].close)
			r->readers[i].close(r->readers[i].ctx);
	r->nreaders = 0;
}

/* --restore-every: the device goes through an image (saved, freed, restored, its readers and
 * fast path made anew), as in a live migration; a failure is a mismatch. */
static void restore_cycle(struct run *r, const struct line *l)
{
	char why[200];
	void *img = NULL;
	size_t len = 0;
	/* Via virtqueue the transport's state goes into the image too; requests the driver added
	 * and did not flush stay in the rings, in flight across the restore. */
	int err = r->drv ? viommu_vq_driver_save(r->drv, &img, &len) :
			   viommu_device_save(r->dev, &img, &len);

	if (err) {
		MISMATCH(r, l, "cannot save the device: %s", strerror(-err));
		return;
	}
	close_readers(r);
	viommu_device_free(r->dev);
	r->dev = viommu_device_restore(img, len, why, sizeof(why));
	if (r->dev && r->drv && viommu_vq_driver_restore(r->drv, r->dev, img, len, why, sizeof(why))) {
		MISMATCH(r, l, "the transport's own image was refused: %s", why);
		r->vq_broken = true;
		free(img);
		return; /* the run stops at this line (vq_broken: no transport) */
	}
	free(img);
	if (!r->dev) {
		MISMATCH(r, l, "the device's own image was refused: %s", why);
		return; /* the run stops at this line (no device) */
	}
	r->restores++;
	r->reopening = true;
	if (open_readers(r))
		MISMATCH(r, l, "cannot reopen the readers after a restore");
	r->reopening = false;
}

static int do_request(struct run *r, const struct line *l)
{
	uint8_t rd[MAX_RAW], *wr;
	size_t rd_len = 0, wr_len = 4;
	uint64_t v[5] = { 0 };
	struct request_expect e = { 0 };
	uint32_t used;
	int err;

	memset(rd, 0, sizeof(rd));
	if ((err = request_args(r, l, v, &e)) || (err = build_request(r, l, v, rd, &rd_len, &wr_len)))
		return err;
	if (r->drv) {
		/* Counted as added: the restore then comes with this request still in the ring. */
		err = vq_request(r, l, v, &e, rd, rd_len, wr_len);
		if (!err && r->o->restore_every && ++r->vq_added % r->o->restore_every == 0)
			r->restore_due = true;
		return err;
	}
	wr = calloc(1, wr_len ? wr_len : 1);
	if (!wr)
		return -ENOMEM;
	/* A device must not rely on the writable buffer's contents: poison it. */
	memset(wr, 0xa5, wr_len);
	used = submit_request(r, rd, rd_len, wr, wr_len);
	err = finish_request(r, l, v, &e, rd, rd_len, wr, wr_len, used);
	free(wr);
	if (r->o->restore_every && r->requests % r->o->restore_every == 0)
		r->restore_due = true; /* at the next line that leaves no batch open */
	return err;
}

static int do_translate(struct run *r, const struct line *l)
{
	uint64_t ep, iova, size;
	const char *acc = get(l, "access");
	uint32_t access;
	struct expect e;

	if (get_u64(l, "endpoint", 0, &ep) || ep > UINT32_MAX || get_u64(l, "iova", 0, &iova) ||
	    get_u64(l, "size", 1, &size) || size == 0) {
		ERR(r, l, "bad endpoint=, iova= or size=");
		return -EINVAL;
	}
	if (!strcmp(acc, "r"))
		access = VIOMMU_MAP_F_READ;
	else if (!strcmp(acc, "w"))
		access = VIOMMU_MAP_F_WRITE;
	else if (!strcmp(acc, "rw"))
		access = VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE;
	else {
		ERR(r, l, "access= is r, w or rw");
		return -EINVAL;
	}
	if (expect_parse(get(l, "expect"), &e)) {
		ERR(r, l, "bad expect=");
		return -EINVAL;
	}
	probe(r, l, (uint32_t)ep, iova, size, access, &e);
	return 0;
}

/* One set-up line (before the first request): device config, an endpoint, negotiation. */
/* A `device` line: config fields, each checked to fit. */
static int setup_device(struct run *r, const struct line *l)
{
	static const struct {
		const char *key;
		size_t off, size;
	} dev_keys[] = {
		{ "page_size_mask", offsetof(struct viommu_config, page_size_mask), 8 },
		{ "input_start", offsetof(struct viommu_config, input_start), 8 },
		{ "input_end", offsetof(struct viommu_config, input_end), 8 },
		{ "domain_start", offsetof(struct viommu_config, domain_start), 4 },
		{ "domain_end", offsetof(struct viommu_config, domain_end), 4 },
		{ "probe_size", offsetof(struct viommu_config, probe_size), 4 },
		{ "bypass", offsetof(struct viommu_config, bypass), 1 },
		{ "features", offsetof(struct viommu_config, features), 8 },
		{ "max_domains", offsetof(struct viommu_config, max_domains), 4 },
		{ "max_mappings_per_domain", offsetof(struct viommu_config, max_mappings_per_domain), 4 },
		{ "max_mappings", offsetof(struct viommu_config, max_mappings), 8 },
	};
	struct viommu_config *cfg = &r->cfg;

	for (unsigned k = 0; k < l->nkv; k++) {
		for (unsigned d = 0; d < sizeof(dev_keys) / sizeof(dev_keys[0]); d++) {
			uint64_t v;

			if (strcmp(l->kv[k].key, dev_keys[d].key))
				continue;
			if (parse_u64(l->kv[k].val, &v) ||
			    (dev_keys[d].size < 8 && v >> (8 * dev_keys[d].size))) {
				ERR(r, l, "bad %s=", dev_keys[d].key);
				return -EINVAL;
			}
			if (dev_keys[d].size == 8)
				*(uint64_t *)((char *)cfg + dev_keys[d].off) = v;
			else if (dev_keys[d].size == 4)
				*(uint32_t *)((char *)cfg + dev_keys[d].off) = (uint32_t)v;
			else
				*(uint8_t *)((char *)cfg + dev_keys[d].off) = (uint8_t)v;
		}
	}
	return 0;
}

/* An `endpoint` line: kept until the device is created at the first request. */
static int setup_endpoint(struct run *r, const struct line *l)
{
	struct ep_decl *d;
	uint64_t id, ap;

	if (r->neps == r->eps_cap) {
		size_t nc = r->eps_cap ? 2 * r->eps_cap : 16;
		struct ep_decl *n = realloc(r->eps, nc * sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->eps = n;
		r->eps_cap = nc;
	}
	d = &r->eps[r->neps];
	memset(d, 0, sizeof(*d));
	d->lineno = l->lineno;
	if (get_u64(l, "id", 0, &id) || id > UINT32_MAX ||
	    get_u64(l, "access_platform", 1, &ap) || ap > 1) {
		ERR(r, l, "bad id= or access_platform=");
		return -EINVAL;
	}
	d->id = (uint32_t)id;
	d->access_platform = ap;
	for (unsigned k = 0; k < l->nkv; k++) {
		if (strcmp(l->kv[k].key, "resv"))
			continue;
		if (d->nresv == VIOMMU_MAX_RESV || resv_parse(l->kv[k].val, &d->resv[d->nresv])) {
			ERR(r, l, "bad resv=" SHOW_FMT " (msi|reserved:START:END, at most %d)",
			    SHOW(l->kv[k].val), VIOMMU_MAX_RESV);
			return -EINVAL;
		}
		d->nresv++;
	}
	r->neps++;
	return 0;
}

static int setup_line(struct run *r, const struct line *l)
{
	if (l->verb == V_DEVICE)
		return setup_device(r, l);
	if (l->verb == V_NEGOTIATE) {
		if (get_u64(l, "features", 0, &r->negotiate)) {
			ERR(r, l, "bad features=");
			return -EINVAL;
		}
		r->have_negotiate = true;
		return 0;
	}
	return setup_endpoint(r, l);
}

/* At the first request (or the end of a file without one): create the device from the set-up
 * lines, declare the topology, negotiate, open the readers. */
static int start(struct run *r)
{
	r->dev = viommu_device_new(&r->cfg);
	if (!r->dev) {
		fprintf(r->err, "%s: the device line describes a device the spec forbids, or caps above "
			"viommu's limits (device.h): %s\n",
			r->path, strerror(errno));
		return -EINVAL;
	}
	for (size_t i = 0; i < r->neps; i++) {
		const struct ep_decl *d = &r->eps[i];
		int err = viommu_device_add_endpoint(r->dev, d->id, d->access_platform, d->resv, d->nresv);

		if (err) {
			fprintf(r->err, "%s:%u: endpoint rejected: %s\n", r->path, d->lineno, strerror(-err));
			return err;
		}
	}
	r->implicit_eps = !r->neps;
	free(r->eps); /* the device holds the topology now */
	r->eps = NULL;
	r->eps_cap = 0;
	if (r->have_negotiate && ((r->negotiate & ~viommu_device_features(r->dev)) ||
				  (!r->o->via && viommu_device_negotiate(r->dev, r->negotiate)))) {
		fprintf(r->err, "%s: negotiate features=0x%llx is not a subset of the offered 0x%llx\n",
			r->path, (unsigned long long)r->negotiate,
			(unsigned long long)viommu_device_features(r->dev));
		return -EINVAL;
	}
	if (r->o->via) {
		/* The guest negotiates through the transport and brings the rings up. */
		unsigned flags = r->o->via == VIOMMU_VIA_VIRTQUEUE ?
					 VIOMMU_VQ_DRIVER_INDIRECT | VIOMMU_VQ_DRIVER_EVENT_IDX : 0;

		r->drv = viommu_vq_driver_new(r->dev,
					      r->have_negotiate ? r->negotiate :
								  viommu_device_features(r->dev),
					      flags);
		if (!r->drv) {
			fprintf(r->err, "%s: cannot bring the device up on virtqueues: %s\n", r->path,
				strerror(errno));
			return -errno;
		}
	}
	return open_readers(r);
}

/* A file that declares no endpoint: every endpoint id its lines name exists, with the default MSI
 * window. Streaming cannot look ahead, so each is declared when a line first names it. */
static void implicit_endpoint(struct run *r, const struct line *l)
{
	struct viommu_resv msi = { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI };
	const char *s = get(l, "endpoint");
	uint64_t id;

	if (s && !parse_u64(s, &id) && id <= UINT32_MAX && !viommu_device_endpoint(r->dev, (uint32_t)id))
		viommu_device_add_endpoint(r->dev, (uint32_t)id, true, &msi, 1);
}

static int open_readers(struct run *r)
{
	static const struct {
		unsigned path;
		viommu_replay_open_fn fn;
		const char *name;
	} table[] = {
		{ VIOMMU_PATH_USER, viommu_replay_open_user, "user" },
		{ VIOMMU_PATH_BPF, viommu_replay_open_bpf, "bpf" },
	};

	if (r->o->paths & VIOMMU_PATH_STORE)
		open_store(r->dev, &r->readers[r->nreaders++]);
	for (unsigned i = 0; i < 2; i++) {
		int err;

		if (!(r->o->paths & table[i].path))
			continue;
		memset(&r->readers[r->nreaders], 0, sizeof(r->readers[0]));
		err = table[i].fn(r->dev, &r->readers[r->nreaders]);
		if (err == -ENOTSUP) {
			/* The fast path serves 4 KiB-granule devices only (fastpath.h): the store
			 * still answers, and the skip is said, not hidden. */
			if (!r->reopening)
				fprintf(r->o->out, "%s: the %s path does not serve this device (%s): skipped\n",
					r->path, table[i].name, strerror(-err));
			continue;
		}
		if (err) {
			fprintf(stderr, "replay: cannot open the %s path: %s\n", table[i].name,
				strerror(-err));
			return err;
		}
		r->nreaders++;
	}
	return 0;
}

static int count_ep(const struct viommu_endpoint *ep, void *arg)
{
	uint32_t *n = arg;

	n[0]++;
	n[1] += ep->domain != NULL;
	return 0;
}

static void summary(struct run *r, FILE *out)
{
	uint32_t eps[2] = { 0, 0 };

	fprintf(out, "%s\n", r->path);
	for (unsigned t = 0; t <= VIOMMU_T_MAX; t++) {
		uint64_t total = 0;

		for (unsigned s = 0; s <= VIOMMU_S_COUNT; s++)
			total += r->by_type[t][s];
		if (!total)
			continue;
		fprintf(out, "  %-8s %7llu ", viommu_type_name(t), (unsigned long long)total);
		for (unsigned s = 0; s <= VIOMMU_S_COUNT; s++)
			if (r->by_type[t][s])
				fprintf(out, " %s=%llu", s == VIOMMU_S_COUNT ? "used0" : viommu_status_name(s),
					(unsigned long long)r->by_type[t][s]);
		fputc('\n', out);
	}
	if (r->dev)
		viommu_device_for_each_endpoint(r->dev, count_ep, eps);
	fprintf(out, "  final: %u domains, %u/%u endpoints attached, %llu mappings\n",
		r->dev ? viommu_device_nr_domains(r->dev) : 0, eps[1], eps[0],
		(unsigned long long)(r->dev ? viommu_device_nr_mappings(r->dev) : 0));
	if (r->busy_s > 0)
		fprintf(out, "  %llu requests in %.3f ms of device time: %.0f requests/s\n",
			(unsigned long long)r->requests, r->busy_s * 1e3, r->requests / r->busy_s);
	if (r->restores)
		fprintf(out, "  %llu save/restore cycles\n", (unsigned long long)r->restores);
	fprintf(out, "  %llu probes, %llu mismatches\n", (unsigned long long)r->probes,
		(unsigned long long)r->mismatches);
}

/* Execute one line after set-up. */
static int exec_line(struct run *r, const struct line *l)
{
	uint64_t v;
	int err = 0;

	switch (l->verb) {
	case V_KICK:
		if (get_u64(l, "n", 0, &v)) {
			ERR(r, l, "bad n=");
			err = -EINVAL;
		}
		end_batch(r);
		break;
	case V_SET_BYPASS: {
		uint8_t b;

		if (get_u64(l, "value", 0, &v) || v > 1) {
			ERR(r, l, "value= is 0 or 1");
			return -EINVAL;
		}
		end_batch(r);
		b = (uint8_t)v;
		/* Ignored by the device unless BYPASS_CONFIG was negotiated (spec). */
		if (r->drv)
			viommu_vq_driver_config_write(r->drv, offsetof(struct viommu_wire_config, bypass),
						      &b, 1);
		else
			viommu_device_config_write(r->dev, offsetof(struct viommu_wire_config, bypass),
						   &b, 1);
		break;
	}
	case V_RESET:
	case V_SYSTEM_RESET:
		end_batch(r);
		if (r->drv) {
			/* Status 0 (or a platform reset), then the driver brings the device up again. */
			if ((err = viommu_vq_driver_reset(r->drv, l->verb == V_SYSTEM_RESET))) {
				ERR(r, l, "via virtqueue: the device did not come back up: %s",
				    strerror(-err));
				r->vq_broken = true;
			}
		} else if (l->verb == V_RESET) {
			viommu_device_reset(r->dev);
		} else {
			viommu_device_system_reset(r->dev);
		}
		break;
	case V_TRANSLATE:
		err = do_translate(r, l);
		break;
	default:
		err = do_request(r, l);
		break;
	}
	if (!err && r->restore_due && !r->in_batch) {
		r->restore_due = false;
		restore_cycle(r, l);
		if (!r->dev || (r->drv && !viommu_vq_driver_transport(r->drv)))
			return -EIO;
	}
	return err;
}

/* Read, parse and run @fp line by line. */
static int run_stream(struct run *r, FILE *fp)
{
	char *buf = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int err = 0;

	errno = 0;
	while (getline(&buf, &cap, fp) >= 0) {
		struct line l;
		int ret = parse_line(r, buf, ++lineno, &l);

		if (ret < 0) {
			err = ret;
			break;
		}
		if (ret == 0)
			continue;
		if (is_setup(l.verb)) {
			if (r->dev) {
				ERR(r, &l, "%s after the first request", verbs[l.verb]);
				err = -EINVAL;
				break;
			}
			if ((err = setup_line(r, &l)))
				break;
			continue;
		}
		if (!r->dev && (err = start(r)))
			break;
		if (r->implicit_eps)
			implicit_endpoint(r, &l);
		if ((err = exec_line(r, &l)) || (r->vq_broken && (err = -EIO)))
			break;
		errno = 0;
	}
	if (!err && ferror(fp)) {
		err = errno ? -errno : -EIO;
		r->read_failed = true;
		fprintf(r->err, "%s: cannot read: read error after line %u: %s\n", r->path, lineno,
			strerror(-err));
	}
	free(buf);
	if (!err && !r->dev)
		err = start(r); /* set-up lines only, or nothing: the device still reports its state */
	if (!err && r->drv) {
		end_batch(r); /* the rest of the ring's last batch, answered and checked */
		if (r->vq_broken)
			err = -EIO;
	}
	return err;
}

int viommu_replay_stream(FILE *fp, const char *name, const struct viommu_replay_opts *opts,
			 struct viommu_replay_totals *tot)
{
	struct run r;
	int err;

	memset(&r, 0, sizeof(r));
	r.path = name;
	r.o = opts;
	r.tot = tot;
	r.err = opts->err ? opts->err : stderr;
	viommu_config_default(&r.cfg);
	tot->files++;
	err = run_stream(&r, fp);
	if (r.dev) {
		end_batch(&r);
		if (opts->dump_dir)
			seed_flush(&r);
		if (!opts->quiet || r.mismatches)
			summary(&r, opts->out);
		for (unsigned i = 0; i < r.nreaders; i++) {
			if (opts->stat && r.readers[i].print_stat)
				r.readers[i].print_stat(r.readers[i].ctx, opts->out);
			if (r.readers[i].close)
				r.readers[i].close(r.readers[i].ctx);
		}
		for (size_t i = 0; i < r.npend; i++)
			pending_free(&r.pend[i]); /* a file stopped with requests in the ring */
		viommu_vq_driver_free(r.drv);
		viommu_device_free(r.dev);
	}
	if (err && r.read_failed)
		tot->unreadable++;
	else if (err)
		r.mismatches++;
	tot->requests += r.requests;
	tot->probes += r.probes;
	tot->mismatches += r.mismatches;
	free(r.seed);
	free(r.eps);
	free(r.pend);
	return err;
}

int viommu_replay_file(const char *path, const struct viommu_replay_opts *opts,
		       struct viommu_replay_totals *tot)
{
	FILE *err_out = opts->err ? opts->err : stderr;
	struct stat st;
	FILE *fp;
	int err;

	fp = fopen(path, "r");
	if (!fp || fstat(fileno(fp), &st)) {
		err = -errno;
		fprintf(err_out, "%s: cannot read: %s\n", path, strerror(errno));
	} else if (S_ISDIR(st.st_mode)) {
		/* fopen() takes a directory; reading it fails. Say so rather than replay nothing. */
		err = -EISDIR;
		fprintf(err_out, "%s: cannot read: is a directory, not a trace file\n", path);
	} else {
		err = viommu_replay_stream(fp, path, opts, tot);
		fclose(fp);
		return err;
	}
	if (fp)
		fclose(fp);
	tot->files++;
	tot->unreadable++;
	return err;
}

int viommu_replay_dump_dir_check(const char *dir)
{
	struct stat st;

	if (stat(dir, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (access(dir, W_OK | X_OK))
		return -errno;
	return 0;
}
