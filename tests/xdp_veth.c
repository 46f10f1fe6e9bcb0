// SPDX-License-Identifier: MIT
/*
 * `make xdp`: viommu's XDP program on a real veth pair, attached through libxdp
 * (tests/xdp_env.h, user/xdp.h), fed descriptor frames by the peer through AF_PACKET.
 *
 * 1. Check: a device with XDP_EXTENTS 4 KiB mappings, XDP_CHECK_FRAMES queries (hits,
 *    identity, every fault reason), each answer the peer receives compared with the device
 *    core's store, each fault counted at the device.
 * 2. The figure: frames per second through the veth with viommu_xdp against its no-lookup twin
 *    viommu_xdp_nolookup (the same parsing and answer write), the same frames, XDP_ROUNDS
 *    interleaved rounds of XDP_ROUND_MS each, the median of the per-round ratios. The peer
 *    counts the answers that came back and drops them (its cheapest receive). Then each
 *    program's own time per frame on this path (the kernel's BPF run-time stats, in a pass of
 *    its own: the stats cost time) to say what bounds the ratio.
 *
 * Prints one summary line; XDP_JSON=FILE writes the figures. Exit 0, 1 when an answer was
 * wrong, 77 when the machine cannot run it (the reason printed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <xdp/libxdp.h>

#include "device.h"
#include "fastpath.h"
#include "wire.h"
#include "xdp.h"
#include "xdp_env.h"

#define BATCH 64

static unsigned env_u(const char *name, unsigned def)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 0) : def;
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545f4914f6cdd1dull;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(const double *v, unsigned n)
{
	double s[n];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_d);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static int quiet(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	return level == LIBXDP_WARN ? vfprintf(stderr, fmt, ap) : 0;
}
static int quiet_bpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libxdp's probe of its dispatcher makes libbpf warn where the kernel refuses it; the
	 * reason is said once, below. */
	(void)level, (void)fmt, (void)ap;
	return 0;
}

static uint8_t submit(struct viommu_device *dev, const uint8_t *r, size_t len)
{
	uint8_t t[4] = { 0xee };

	return viommu_device_request_buf(dev, r, len, t, sizeof(t)) == 4 ? t[0] : 0xff;
}

static struct viommu_device *dev;
static struct viommu_fastpath *fp;
static struct xdp_env env;
static uint64_t *mapped; /* the IOVA of each mapping */
static unsigned nmapped;
static bool multiprog;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("xdp: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void skip(const char *why)
{
	printf("xdp: skipped: %s\n", why);
	exit(77);
}

/* A query: hit (70%), identity (10%), or a fault of each kind. */
static void query(struct viommu_query *q)
{
	unsigned k = rnd() % 100;
	uint64_t off = rnd() & 0xfff;

	memset(q, 0, sizeof(*q));
	q->endpoint = 8;
	q->access = 1;
	q->size = 1 + (rnd() & 0x7f);
	if (q->size > 0x1000 - off)
		q->size = 0x1000 - off;
	q->iova = mapped[rnd() % nmapped] + off;
	if (k < 70)
		return;
	if (k < 80) {
		q->endpoint = 10;
		q->iova = rnd() & 0xffffffffffull;
	} else if (k < 85) {
		q->access = 2; /* read-only mappings: write fault */
	} else if (k < 90) {
		q->iova += 1ull << 40; /* nothing mapped up there */
	} else if (k < 95) {
		q->endpoint = 9; /* not attached */
	} else {
		q->endpoint = 1000 + (uint32_t)(rnd() % 1000); /* unknown */
	}
}

struct check {
	unsigned long long frames, hits, identity, faults, wrong;
};

/* Send @n queries, receive the answers, compare each with the store, count the faults at the
 * device. */
static void check_chunk(const struct viommu_query *q, unsigned n, struct check *c)
{
	struct viommu_answer want[n];
	bool answered[n];
	unsigned expect = 0, got = 0, nfaults = 0;
	struct xdp_env_frame f;
	struct viommu_wire_fault wf;
	int polled;

	memset(answered, 0, sizeof(answered));
	for (unsigned i = 0; i < n; i++) {
		viommu_device_answer(dev, &q[i], &want[i]);
		expect += want[i].result != VIOMMU_XLATE_FAULT;
		xdp_env_frame(&env, &f, &q[i], i);
		if (xdp_env_send(&env, &f, sizeof(f)))
			die("send: %s", strerror(errno));
	}
	c->frames += n;
	for (ssize_t len; (len = xdp_env_recv(&env, &f, sizeof(f), got < expect ? 2000 : 50)) > 0;) {
		struct viommu_answer a;
		uint64_t tag = f.tag;

		memcpy(&a, &f.a, sizeof(a));
		if (len != (ssize_t)sizeof(f) || tag >= n || answered[tag] ||
		    !viommu_fastpath_agrees(&q[tag], &want[tag], &a) || a.result == VIOMMU_XLATE_FAULT) {
			if (c->wrong++ < 5 && tag < n)
				fprintf(stderr, "xdp: WRONG: ep %u iova 0x%llx size %llu: XDP %u pa 0x%llx, "
					"store %u pa 0x%llx\n", q[tag].endpoint, (unsigned long long)q[tag].iova,
					(unsigned long long)q[tag].size, a.result, (unsigned long long)a.pa,
					want[tag].result, (unsigned long long)want[tag].pa);
			continue;
		}
		answered[tag] = true;
		got++;
		c->hits += a.result == VIOMMU_XLATE_HIT;
		c->identity += a.result == VIOMMU_XLATE_IDENTITY;
	}
	if (got != expect) {
		fprintf(stderr, "xdp: WRONG: %u of %u translations answered\n", got, expect);
		c->wrong += expect - got;
	}
	for (unsigned i = 0; i < n; i++)
		nfaults += !answered[i];
	polled = viommu_fastpath_poll_faults(fp);
	for (int k = 0; k < polled; k++)
		viommu_device_fault_pop(dev, &wf);
	if (polled != (int)nfaults) {
		fprintf(stderr, "xdp: WRONG: %u faults dropped, %d reached the device\n", nfaults, polled);
		c->wrong += (unsigned)abs((int)nfaults - polled);
	}
	c->faults += nfaults;
}

/* Frames per second through the veth with @prog attached: the answers the peer counted. */
static double run_round(bool nolookup, const struct xdp_env_frame *frames, unsigned nframes,
			unsigned ms, uint64_t *sent_out)
{
	struct viommu_xdp_opts o = { .nolookup = nolookup };
	struct viommu_xdp *x = viommu_xdp_attach(fp, env.host_if, &o);
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	uint64_t seen0, seen1, sent = 0;
	unsigned cur = 0;
	double t0, t1, warm;

	if (!x)
		die("viommu_xdp_attach: %s", strerror(errno));
	memset(msgs, 0, sizeof(msgs));
	for (int pass = 0; pass < 2; pass++) {
		warm = pass ? ms / 1e3 : 0.05;
		seen0 = xdp_env_peer_seen(&env);
		t0 = now_s();
		do {
			for (unsigned i = 0; i < BATCH; i++) {
				iov[i].iov_base = (void *)&frames[cur];
				iov[i].iov_len = sizeof(frames[cur]);
				msgs[i].msg_hdr.msg_iov = &iov[i];
				msgs[i].msg_hdr.msg_iovlen = 1;
				cur = cur + 1 == nframes ? 0 : cur + 1;
			}
			int r = sendmmsg(env.tx, msgs, BATCH, 0);

			if (r < 0 && errno != ENOBUFS && errno != EAGAIN)
				die("sendmmsg: %s", strerror(errno));
			if (pass)
				sent += r > 0 ? (unsigned)r : 0;
			t1 = now_s();
		} while (t1 - t0 < warm);
		seen1 = xdp_env_peer_seen(&env);
	}
	if (viommu_xdp_detach(x))
		die("viommu_xdp_detach failed");
	*sent_out = sent;
	return (seen1 - seen0) / (t1 - t0);
}

/* The program's own ns per frame on this path, from the kernel's run-time stats. */
static double prog_ns(bool nolookup, const struct xdp_env_frame *frames, unsigned nframes)
{
	struct viommu_xdp_opts o = { .nolookup = nolookup };
	struct viommu_xdp *x = viommu_xdp_attach(fp, env.host_if, &o);
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);
	int stats = bpf_enable_stats(BPF_STATS_RUN_TIME), fd;
	double ns = -1;

	if (!x)
		die("viommu_xdp_attach: %s", strerror(errno));
	if (stats >= 0) {
		for (unsigned i = 0; i < 200000; i++)
			xdp_env_send(&env, &frames[i % nframes], sizeof(frames[0]));
		fd = bpf_prog_get_fd_by_id(viommu_xdp_prog_id(x));
		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len) && info.run_cnt)
			ns = (double)info.run_time_ns / info.run_cnt;
		if (fd >= 0)
			close(fd);
		close(stats);
	}
	viommu_xdp_detach(x);
	return ns;
}

/* The CLI from the device's pins, as another process would: attach, an answer, detach. */
static void check_cli(const char *cli, struct check *c)
{
	const char *pins = "/sys/fs/bpf/viommu-xdp";
	struct viommu_query q = { .endpoint = 8, .access = 1, .iova = mapped[0] + 0x10, .size = 16 };
	struct viommu_answer want, a;
	struct xdp_env_frame f;
	char cmd[512];
	__u32 id = 1;
	int err;

	if ((err = viommu_fastpath_pin(fp, pins)))
		die("viommu_fastpath_pin %s: %s", pins, strerror(-err));
	snprintf(cmd, sizeof(cmd), "%s xdp attach " XDP_ENV_HOST " %s", cli, pins);
	printf("$ %s\n", cmd);
	fflush(stdout);
	if (system(cmd))
		die("the CLI's attach failed");
	viommu_device_answer(dev, &q, &want);
	xdp_env_frame(&env, &f, &q, 1);
	xdp_env_send(&env, &f, sizeof(f));
	memcpy(&a, &f.a, sizeof(a));
	if (xdp_env_recv(&env, &f, sizeof(f), 2000) != (ssize_t)sizeof(f) ||
	    (memcpy(&a, &f.a, sizeof(a)), !viommu_fastpath_agrees(&q, &want, &a)) || a.result != VIOMMU_XLATE_HIT) {
		fprintf(stderr, "xdp: WRONG: the program the CLI attached does not answer as the store\n");
		c->wrong++;
	}
	snprintf(cmd, sizeof(cmd), "%s xdp detach " XDP_ENV_HOST, cli);
	printf("$ %s\n", cmd);
	fflush(stdout);
	if (system(cmd) || bpf_xdp_query_id(env.host_if, 0, &id) || id)
		die("the CLI's detach failed or left a program on " XDP_ENV_HOST);
	viommu_fastpath_unpin(fp);
}

int main(int argc, char **argv)
{
	unsigned extents = env_u("XDP_EXTENTS", 4096), check_frames = env_u("XDP_CHECK_FRAMES", 16384);
	unsigned rounds = env_u("XDP_ROUNDS", 7), round_ms = env_u("XDP_ROUND_MS", 500);
	unsigned nframes = env_u("XDP_FRAMES", 4096);
	const char *json = getenv("XDP_JSON"), *why;
	struct viommu_resv msi = { 0xfee00000ull, 0xfeefffffull, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_config cfg;
	struct check c = { 0 };
	struct xdp_env_frame *frames;
	double fps_l[64], fps_n[64], ratio[64], ns_l, ns_n;
	uint64_t sent_l = 0, sent_n = 0, s;
	uint8_t r[64];

	if (rounds < 1 || rounds > 64)
		rounds = 7;
	libxdp_set_print(quiet);
	libbpf_set_print(quiet_bpf);
	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_pending_faults = 1 << 16;
	if (!(dev = viommu_device_new(&cfg)) || viommu_device_add_endpoint(dev, 8, true, &msi, 1) ||
	    viommu_device_add_endpoint(dev, 9, true, &msi, 1) || viommu_device_add_endpoint(dev, 10, false, NULL, 0))
		die("device: %s", strerror(errno));
	/* A dense layout (4 KiB pages within 1 GiB): the pools hold it whatever the caps say. */
	if (!(fp = viommu_fastpath_new(dev, &(struct viommu_fastpath_opts){ .overcommit = true, .bpf = true }))) {
		if (errno == EPERM || errno == ENOSYS)
			skip("the kernel refuses BPF to this process");
		die("viommu_fastpath_new: %s", strerror(errno));
	}
	if ((why = xdp_env_setup(&env, false)))
		skip(why);
	/* A bpffs of our own over /sys/fs/bpf (libxdp's, and the pins the CLI reads), in a mount
	 * namespace of this process's: nothing outside sees it, it goes when we exit. */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("bpf", "/sys/fs/bpf", "bpf", 0, NULL))
		skip("cannot mount a bpffs in a mount namespace of our own");
	viommu_device_eventq_post(dev, 1 << 16);
	/* XDP_EXTENTS read-only 4 KiB mappings at random pages of 1 GiB. */
	if (submit(dev, r, viommu_req_attach(r, 1, 8, 0)) != VIOMMU_S_OK)
		die("attach failed");
	mapped = calloc(extents, sizeof(*mapped));
	viommu_device_batch_begin(dev);
	for (unsigned tries = 0; nmapped < extents; tries++) {
		if (tries > 4 * extents)
			die("the device takes only %u of %u mappings", nmapped, extents);
		uint64_t iova = (1ull << 39) + (rnd() & 0x3ffff000ull);

		if (submit(dev, r, viommu_req_map(r, 1, iova, iova + 0xfff, rnd() & 0xffffffff000ull, 1)) == VIOMMU_S_OK)
			mapped[nmapped++] = iova;
	}
	viommu_device_batch_end(dev);

	/* 0. the CLI */
	if (argc > 1)
		check_cli(argv[1], &c);

	/* 1. answers against the store */
	{
		struct viommu_xdp *x = viommu_xdp_attach(fp, env.host_if, NULL);
		struct viommu_query q[1024];
		const char *legacy = viommu_xdp_legacy_reason();

		if (!x)
			die("viommu_xdp_attach: %s", strerror(errno));
		multiprog = viommu_xdp_multiprog(x);
		printf("xdp: attached to a veth through libxdp, %s mode%s%s%s\n", "native",
		       viommu_xdp_multiprog(x) ? ", in its multiprog dispatcher" : ", alone (libxdp's legacy mode: ",
		       viommu_xdp_multiprog(x) ? "" : legacy ? legacy : "libxdp could not load its dispatcher",
		       viommu_xdp_multiprog(x) ? "" : ")");
		for (unsigned done = 0; done < check_frames; done += 1024) {
			unsigned n = check_frames - done < 1024 ? check_frames - done : 1024;

			for (unsigned i = 0; i < n; i++)
				query(&q[i]);
			check_chunk(q, n, &c);
		}
		viommu_xdp_detach(x);
	}

	/* 2. the figure: the peer now drops what it counted */
	if (setns(env.peer_ns, CLONE_NEWNET) ||
	    bpf_xdp_attach(env.peer_if, bpf_program__fd(env.peer_prog->progs.viommu_test_drop),
			   XDP_FLAGS_DRV_MODE, NULL) || setns(env.host_ns, CLONE_NEWNET))
		die("the peer's drop program: %s", strerror(errno));
	frames = calloc(nframes, sizeof(*frames));
	for (unsigned i = 0; i < nframes; i++) { /* hits only: every frame answered */
		struct viommu_query q = { .endpoint = 8, .access = 1, .size = 64 };

		q.iova = mapped[rnd() % nmapped] + (rnd() & 0xf00);
		xdp_env_frame(&env, &frames[i], &q, i);
	}
	for (unsigned k = 0; k < rounds; k++) {
		/* interleaved, the order alternating */
		if (k % 2) {
			fps_n[k] = run_round(true, frames, nframes, round_ms, &s), sent_n += s;
			fps_l[k] = run_round(false, frames, nframes, round_ms, &s), sent_l += s;
		} else {
			fps_l[k] = run_round(false, frames, nframes, round_ms, &s), sent_l += s;
			fps_n[k] = run_round(true, frames, nframes, round_ms, &s), sent_n += s;
		}
		ratio[k] = fps_l[k] / fps_n[k];
	}
	ns_l = prog_ns(false, frames, nframes);
	ns_n = prog_ns(true, frames, nframes);
	{
		double fl = median(fps_l, rounds), fn = median(fps_n, rounds), rt = median(ratio, rounds);
		double rmin = ratio[0], rmax = ratio[0];
		/* If the lookup's own cost were all the difference: 1 / (1 + extra * fps). */
		double bound = ns_l > 0 && ns_n > 0 ? 1 / (1 + (ns_l - ns_n) * 1e-9 * fn) : 0;

		for (unsigned k = 1; k < rounds; k++) {
			rmin = ratio[k] < rmin ? ratio[k] : rmin;
			rmax = ratio[k] > rmax ? ratio[k] : rmax;
		}
		printf("xdp: per frame on this path: the program %.0f ns with the lookup, %.0f ns without; "
		       "the whole path %.0f ns (1 / fps without): expected ratio %.3f\n", ns_l, ns_n,
		       1e9 / fn, bound);
		printf("xdp: %llu frames, %llu hits, %llu identity, %llu faults, %llu wrong; with lookup %.0f fps, "
		       "without %.0f fps, ratio %.3f (rounds %u x %u ms, min %.3f max %.3f)\n", c.frames,
		       c.hits, c.identity, c.faults, c.wrong, fl, fn, rt, rounds, round_ms, rmin, rmax);
		if (json) {
			FILE *f = fopen(json, "w");
			struct utsname u;
			char date[32];
			time_t t = time(NULL);

			uname(&u);
			strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S%z", gmtime(&t));
			if (!f)
				die("%s: %s", json, strerror(errno));
			fprintf(f, "{\n  \"meta\": {\"command\": \"make xdp\", \"commit\": \"%s\", \"kernel\": \"%s %s\", \"date\": \"%s\", "
				"\"cpus\": %ld, \"mode\": \"native\", \"multiprog\": %s, \"extents\": %u, "
				"\"frames\": %u, \"frame_bytes\": %zu, \"rounds\": %u, \"round_ms\": %u},\n",
				getenv("VIOMMU_COMMIT") ? getenv("VIOMMU_COMMIT") : "", u.sysname, u.release, date, sysconf(_SC_NPROCESSORS_ONLN), multiprog ? "true" : "false", extents, nframes,
				sizeof(struct xdp_env_frame), rounds, round_ms);
			fprintf(f, "  \"check\": {\"frames\": %llu, \"hits\": %llu, \"identity\": %llu, "
				"\"faults\": %llu, \"wrong\": %llu},\n", c.frames, c.hits, c.identity, c.faults, c.wrong);
			fprintf(f, "  \"fps_lookup_median\": %.0f, \"fps_nolookup_median\": %.0f, \"ratio_median\": %.4f,\n",
				fl, fn, rt);
			fprintf(f, "  \"prog_ns_lookup\": %.1f, \"prog_ns_nolookup\": %.1f, \"ratio_expected\": %.4f,\n",
				ns_l, ns_n, bound);
			fprintf(f, "  \"sent_lookup\": %llu, \"sent_nolookup\": %llu,\n", (unsigned long long)sent_l,
				(unsigned long long)sent_n);
			fprintf(f, "  \"rounds\": [");
			for (unsigned k = 0; k < rounds; k++)
				fprintf(f, "%s{\"fps_lookup\": %.0f, \"fps_nolookup\": %.0f, \"ratio\": %.4f}",
					k ? ", " : "", fps_l[k], fps_n[k], ratio[k]);
			fprintf(f, "]\n}\n");
			fclose(f);
		}
	}
	free(frames);
	free(mapped);
	xdp_env_teardown(&env);
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
	return c.wrong ? 1 : 0;
}
