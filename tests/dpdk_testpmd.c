/* SPDX-License-Identifier: MIT */
/*
 * The real test of the vhost-user frontend: Debian's dpdk-testpmd (net_vhost, iommu-support=1,
 * no hugepages, macswap) is the backend; this program is the VMM and the guest's virtio-net
 * driver. Guest memory is a memfd; the viommu device + fast path translate; rings and buffers are
 * mapped at IOVAs by requests to the device (each buffer its own MAP, IOVA-adjacent to the next
 * with memory that is not adjacent, and UNMAPped when the device is done with it, as Linux's
 * strict mode does). Frames go out on the TX queue and come back MAC-swapped on the RX queue,
 * compared byte for byte.
 *
 * Phases: 1 traffic (DPDK_FRAMES frames, sizes DPDK_SIZES in turn, content from DPDK_SEED);
 * 2 the posted RX buffers UNMAPped under traffic (the backend's misses on them fault; poisoned
 * memory must stay untouched), then mapped again (the faulted misses are answered then);
 * 3 a device reset (INVALIDATE of everything, rings included), re-ATTACH and re-MAP at the same
 * IOVAs: traffic must resume (the rings are re-pushed); 4 a TX buffer that straddles two
 * IOVA-adjacent extents whose memory is not adjacent (DPDK 22.11 would join them): it must never
 * come back corrupt.
 *
 * Then the pool rounds (one testpmd, a new connection per session): buffers in long-lived pools
 * mapped in 64 KiB extents after connect and before the vrings (as a driver maps its rings and RX
 * pool before DRIVER_OK), in four modes rotated over DPDK_ROUNDS rounds (default 12) of
 * DPDK_POOL_FRAMES frames (default DPDK_FRAMES): whole extents answered at the miss, the same
 * with prefill at MAP (must take no miss: the frontend holds the answers until the vrings exist,
 * as DPDK 22.11 drops UPDATEs for queues it does not have yet), per-page answers (QEMU's way),
 * IOMMU off (ACCESS_PLATFORM not negotiated). Ratios to the same round's off session, medians.
 * Before all that, the floor: the message thread's exchange between two plain threads placed
 * as the test places testpmd and itself.
 *
 * Placement: testpmd -l 0-1 (main lcore and control threads, the vhost-user message thread
 * among them, on CPU 0; the forwarding lcore on CPU 1); this process pins itself to CPU 0
 * (DPDK_PIN=0: left to the scheduler, which now and then puts it beside the forwarding lcore).
 *
 * Last line: `dpdk: T tx, R rx, C corrupt, M misses / E extents, I invalidations, S stale, F faults`;
 * exit 0 only when C and S are 0, every frame the protocol promises came back and the prefilled
 * pools took no miss. DPDK_JSON=file: the figures as JSON.
 * DPDK_IOMMU=0: no ACCESS_PLATFORM in session 1 (phases 2-4 and the pool rounds skipped);
 * DPDK_POOL=0: no pool rounds. In session 1: DPDK_PER_PAGE=1 QEMU-like one-page answers,
 * DPDK_LAZY=1 INVALIDATEs not waited for, DPDK_PREFILL=1 prefill, DPDK_QUIRKS=0 no DPDK 22.11
 * quirk handling.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "fastpath.h"
#include "iotlb.h"
#include "vhost_user.h"
#include "wire.h"

#define MEM_SIZE (32u << 20)
#define QSZ 256u
#define EP 8u
#define DOM 1u
#define SLOT 4096u
#define HDR 12u /* virtio_net_hdr_mrg_rxbuf: VERSION_1 */
#define NTX 256u
#define NRX 384u /* 256 posted, the rest unmapped, poisoned, waiting */
#define RING_GPA(q) (0x10000ull + (q) * 0x10000ull)
#define RING_IOVA(q) (0x40000000ull + (q) * 0x10000ull)
#define TX_GPA 0x100000ull
#define RX_GPA 0x400000ull
#define TX_IOVA 0x50000000ull
#define RX_IOVA 0x60000000ull
#define TXP_GPA 0x800000ull /* pools: memory contiguous, mapped in pool_extent pieces */
#define RXP_GPA 0xc00000ull
#define TXP_IOVA 0x70000000ull
#define RXP_IOVA 0x80000000ull
#define STRADDLE_IOVA 0x90000000ull /* phase 4: two IOVA-adjacent pages, memory apart */
#define STRADDLE_GPA0 0x1800000ull
#define STRADDLE_GPA1 0x1a00000ull
#define POISON 0xa5
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
struct avail {
	uint16_t flags, idx, ring[QSZ], used_event;
};
struct used {
	uint16_t flags, idx;
	struct {
		uint32_t id, len;
	} ring[QSZ];
	uint16_t avail_event;
};
struct queue {
	struct desc *desc;
	struct avail *avail;
	struct used *used;
	uint16_t last_used;
	int kick, call;
};

static struct viommu_device *dev;
static uint8_t *mem;
static struct viommu_vhost_user *vu;
static struct queue q[2]; /* 0 RX, 1 TX */
static bool iommu = true;
static uint32_t tx_gpa_of[NTX], rx_gpa_of[NRX];
static int tx_free[NTX], ntx_free;
static int rx_wait[NRX], rx_wait_head, rx_wait_n; /* unmapped RX slots, FIFO */
static uint32_t seed = 1;
static uint64_t tx_stride = SLOT;
static uint32_t tx_delay_us = 20;
static uint64_t pool_extent = 0x10000; /* DPDK_pool_extent: bytes per pool MAP */
static bool pool; /* buffers in long-lived pools: mapped once per session, never unmapped */
static uint64_t tx_iova = TX_IOVA, rx_iova = RX_IOVA;
static uint64_t tx, rx, corrupt, stale, extents, lost_allowed;
static uint64_t warmup_dropped; /* pool sessions' first frames testpmd dropped (pool_session) */
static uint8_t *seen; /* per frame: came back */
static uint32_t *sizes, nsizes;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static uint8_t req_status(const uint8_t *r, size_t len)
{
	uint8_t t[4] = { 0xff };

	viommu_device_request_buf(dev, r, len, t, sizeof(t));
	return t[0];
}

static void must(uint8_t st, const char *what)
{
	if (st != VIOMMU_S_OK) {
		fprintf(stderr, "dpdk: %s: status %u\n", what, st);
		exit(1);
	}
}

static void map(uint64_t iova, uint64_t len, uint64_t gpa, uint32_t flags)
{
	uint8_t r[64];

	if (!iommu)
		return;
	must(req_status(r, viommu_req_map(r, DOM, iova, iova + len - 1, gpa, flags)), "MAP");
	extents++;
}

static void unmap(uint64_t iova, uint64_t len)
{
	uint8_t r[64];

	if (!iommu)
		return;
	/* Returns once the backend acked the INVALIDATE (strict): the used length comes after. */
	must(req_status(r, viommu_req_unmap(r, DOM, iova, iova + len - 1)), "UNMAP");
}

/* The address the backend is given for guest-physical @gpa mapped at @iova. */
static uint64_t dma_addr(uint64_t iova, uint64_t gpa)
{
	return iommu ? iova : gpa;
}

static void attach_and_map_rings(void)
{
	uint8_t r[64];

	if (!iommu)
		return;
	must(req_status(r, viommu_req_attach(r, DOM, EP, 0)), "ATTACH");
	for (unsigned i = 0; i < 2; i++)
		map(RING_IOVA(i), 0x3000, RING_GPA(i), VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE);
}

/* Frame @seq: Ethernet header (dst, src, type 0x88b5), then seq, size, and bytes from the seed. */
static void make_frame(uint8_t *f, uint32_t seq, uint32_t len)
{
	uint32_t s = seed * 2654435761u + seq + 1;

	memcpy(f, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x88\xb5", 14);
	memcpy(f + 14, &seq, 4);
	memcpy(f + 18, &len, 4);
	for (uint32_t i = 22; i < len; i++)
		f[i] = (uint8_t)(rnd(&s) >> 7);
}

static void post_rx(int slot)
{
	struct queue *Q = &q[0];
	uint16_t i = Q->avail->idx % QSZ;
	uint64_t gpa = rx_gpa_of[slot];

	/* Unmapped since it was last used: nothing may have written it (stale translations). */
	for (unsigned k = 0; k < SLOT; k++)
		if (mem[gpa + k] != POISON) {
			stale++;
			break;
		}
	if (!pool)
		map(rx_iova + (uint64_t)slot * SLOT, SLOT, gpa, VIOMMU_MAP_F_WRITE);
	Q->desc[i] = (struct desc){ dma_addr(rx_iova + (uint64_t)slot * SLOT, gpa), SLOT,
				    VRING_DESC_F_WRITE, 0 };
	/* desc index = ring position: slot recorded by position */
	Q->avail->ring[i] = i;
	__atomic_store_n(&Q->avail->idx, (uint16_t)(Q->avail->idx + 1), __ATOMIC_RELEASE);
}

static int rx_slot_at[QSZ];

static void rx_refill(void)
{
	while (rx_wait_n && (uint16_t)(q[0].avail->idx - q[0].last_used) < QSZ) {
		int slot = rx_wait[rx_wait_head];

		rx_wait_head = (rx_wait_head + 1) % NRX;
		rx_wait_n--;
		rx_slot_at[q[0].avail->idx % QSZ] = slot;
		post_rx(slot);
	}
}

static void rx_retire(int slot)
{
	if (!pool)
		unmap(rx_iova + (uint64_t)slot * SLOT, SLOT);
	memset(mem + rx_gpa_of[slot], POISON, SLOT);
	rx_wait[(rx_wait_head + rx_wait_n) % NRX] = slot;
	rx_wait_n++;
}

static int tx_slot_at[QSZ];

static bool send_frame(uint32_t seq)
{
	struct queue *Q = &q[1];
	uint16_t i = Q->avail->idx % QSZ;
	uint32_t len = sizes[seq % nsizes];
	int slot;
	uint64_t gpa;

	if (!ntx_free || (uint16_t)(Q->avail->idx - Q->last_used) >= QSZ)
		return false;
	slot = tx_free[--ntx_free];
	gpa = tx_gpa_of[slot];
	memset(mem + gpa, 0, HDR);
	make_frame(mem + gpa + HDR, seq, len);
	if (!pool)
		map(tx_iova + (uint64_t)slot * tx_stride, SLOT, gpa, VIOMMU_MAP_F_READ);
	Q->desc[i] = (struct desc){ dma_addr(tx_iova + (uint64_t)slot * tx_stride, gpa), HDR + len, 0, 0 };
	Q->avail->ring[i] = i;
	tx_slot_at[i] = slot;
	__atomic_store_n(&Q->avail->idx, (uint16_t)(Q->avail->idx + 1), __ATOMIC_RELEASE);
	tx++;
	return true;
}

static void check_rx(const uint8_t *b, uint32_t len, uint64_t nframes)
{
	static uint8_t want[SLOT];
	uint32_t seq, flen;

	if (len < HDR + 22) {
		corrupt++;
		return;
	}
	b += HDR;
	len -= HDR;
	memcpy(&seq, b + 14, 4);
	memcpy(&flen, b + 18, 4);
	if (seq >= nframes || flen != len || len > SLOT - HDR || seen[seq]) {
		corrupt++;
		return;
	}
	make_frame(want, seq, flen);
	/* macswap: destination and source swapped */
	if (memcmp(b, want + 6, 6) || memcmp(b + 6, want, 6) || memcmp(b + 12, want + 12, len - 12)) {
		corrupt++;
		return;
	}
	seen[seq] = 1;
	rx++;
}

/* Reap used entries of both queues: TX buffers UNMAPped and freed; RX frames checked, their
 * buffers UNMAPped, poisoned and queued for re-posting. */
static void reap(uint64_t nframes)
{
	struct queue *T = &q[1], *R = &q[0];

	while (T->last_used != __atomic_load_n(&T->used->idx, __ATOMIC_ACQUIRE)) {
		uint32_t id = T->used->ring[T->last_used % QSZ].id % QSZ;
		int slot = tx_slot_at[id];

		T->last_used++;
		if (slot < 0)
			continue; /* phase 4's straddling frame: its own mappings */
		if (!pool)
			unmap(tx_iova + (uint64_t)slot * tx_stride, SLOT);
		memset(mem + tx_gpa_of[slot], POISON, SLOT);
		tx_free[ntx_free++] = slot;
	}
	while (R->last_used != __atomic_load_n(&R->used->idx, __ATOMIC_ACQUIRE)) {
		uint32_t id = R->used->ring[R->last_used % QSZ].id % QSZ;
		uint32_t len = R->used->ring[R->last_used % QSZ].len;
		int slot = rx_slot_at[id];

		check_rx(mem + rx_gpa_of[slot], len > SLOT ? SLOT : len, nframes);
		rx_retire(slot);
		R->last_used++;
	}
	rx_refill();
}

static int service(int ms)
{
	int r = viommu_vhost_user_poll(vu, ms);

	if (r < 0) {
		fprintf(stderr, "dpdk: the backend connection ended: %s\n", viommu_vhost_user_error(vu));
		return -1;
	}
	return 0;
}

/* Send frames [from, to) and wait for them (or @idle_ms without progress). */
static int traffic(uint32_t from, uint32_t to, uint64_t nframes, unsigned idle_ms)
{
	uint32_t next = from;
	uint64_t last_progress = now_ns(), seen_rx = rx;

	while (1) {
		while (next < to && (uint16_t)(q[1].avail->idx - q[1].last_used) < 64 && send_frame(next))
			next++;
		if (service(0))
			return -1;
		reap(nframes);
		if (rx != seen_rx || next < to) {
			if (rx != seen_rx)
				last_progress = now_ns();
			seen_rx = rx;
		}
		if (next == to && q[1].last_used == q[1].avail->idx) {
			bool all = true;

			for (uint32_t s = from; s < to && all; s++)
				all = seen[s];
			if (all)
				return 0;
		}
		if (now_ns() - last_progress > (uint64_t)idle_ms * 1000000ull)
			return 1;
	}
}

static pid_t start_testpmd(const char *dir, const char *sock)
{
	char vdev[256], cmdfile[256], prefix[64];
	pid_t pid;
	FILE *f;

	snprintf(cmdfile, sizeof(cmdfile), "%s/cmds", dir);
	f = fopen(cmdfile, "w");
	if (!f)
		return -1;
	/* Retry guest-RX bursts that end at a miss instead of dropping the frames (1 s in all).
	 * The delay is how long testpmd's forwarding core sleeps after a guest-RX burst that ended
	 * at a miss: every such miss costs at least that much (DPDK_TX_DELAY_US, default 20). */
	fprintf(f, "set fwd macswap retry\nset burst tx delay %u retry %u\n", tx_delay_us,
		1000000u / tx_delay_us);
	fclose(f);
	snprintf(vdev, sizeof(vdev), "net_vhost0,iface=%s,queues=1,iommu-support=%d,client=0", sock,
		 iommu);
	snprintf(prefix, sizeof(prefix), "--file-prefix=viommu%d", (int)getpid());
	pid = fork();
	if (pid == 0) {
		char log[256], cf[300];
		cpu_set_t all;

		/* testpmd places its own threads (-l): give it every CPU back. */
		CPU_ZERO(&all);
		for (int c = 0; c < CPU_SETSIZE; c++)
			CPU_SET(c, &all);
		sched_setaffinity(0, sizeof(all), &all);

		snprintf(log, sizeof(log), "%s/testpmd.log", dir);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 1);
		dup2(fd, 2);
		snprintf(cf, sizeof(cf), "--cmdline-file=%s", cmdfile);
		execlp("dpdk-testpmd", "dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci", prefix,
		       "-l", "0-1", "--vdev", vdev, "--", "--forward-mode=macswap", "--auto-start",
		       "--stats-period=1", "--total-num-mbufs=8192", cf, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* ---- sessions: one testpmd, one frontend, fresh rings ---- */

static struct viommu_fastpath *fp;
static int memfd;
static struct viommu_vhost_user_opts vopts; /* from the environment */
static pid_t tpid = -1;
static char tdir[64], tsock[128];
static uint64_t s_extents0, sum_misses, sum_invalidates, sum_faults;

/* Buffer layout. Per buffer: slots IOVA-adjacent, memory shuffled (no two neighbours adjacent in
 * memory), each slot its own MAP. Pools: slot i at pool base + i in IOVA and in memory. */
static void layout(void)
{
	uint32_t s = seed;

	tx_iova = pool ? TXP_IOVA : TX_IOVA;
	rx_iova = pool ? RXP_IOVA : RX_IOVA;
	for (unsigned i = 0; i < NTX; i++)
		tx_gpa_of[i] = (uint32_t)((pool ? TXP_GPA : TX_GPA) + (uint64_t)i * SLOT);
	for (unsigned i = 0; i < NRX; i++)
		rx_gpa_of[i] = (uint32_t)((pool ? RXP_GPA : RX_GPA) + (uint64_t)i * SLOT);
	for (unsigned i = NTX - 1; i > 0 && !pool; i--) {
		unsigned j = rnd(&s) % (i + 1);
		uint32_t t = tx_gpa_of[i];

		tx_gpa_of[i] = tx_gpa_of[j], tx_gpa_of[j] = t;
	}
	for (unsigned i = NRX - 1; i > 0 && !pool; i--) {
		unsigned j = rnd(&s) % (i + 1);
		uint32_t t = rx_gpa_of[i];

		rx_gpa_of[i] = rx_gpa_of[j], rx_gpa_of[j] = t;
	}
	ntx_free = 0;
	for (unsigned i = 0; i < NTX; i++)
		tx_free[ntx_free++] = (int)(NTX - 1 - i);
	rx_wait_head = rx_wait_n = 0;
	for (unsigned i = 0; i < NRX; i++) {
		memset(mem + rx_gpa_of[i], POISON, SLOT);
		rx_wait[rx_wait_n++] = (int)i;
	}
	if (pool && iommu) {
		for (uint64_t o = 0; o < NTX * SLOT; o += pool_extent)
			map(TXP_IOVA + o, pool_extent, TXP_GPA + o, VIOMMU_MAP_F_READ);
		for (uint64_t o = 0; o < NRX * SLOT; o += pool_extent)
			map(RXP_IOVA + o, pool_extent, RXP_GPA + o, VIOMMU_MAP_F_WRITE);
	}
}

/* A session: a fresh frontend on the device (reset, rings mapped), connected to testpmd (started
 * when none runs), then the buffers mapped (pools), then the vrings: the order of a guest whose
 * driver maps its rings and RX pool before DRIVER_OK, when the VMM sets the vrings up. Answers
 * for those MAPs (prefill) are held by the frontend until the vrings exist at the backend. */
static int session_start(bool on, bool use_pool, const struct viommu_vhost_user_opts *mo)
{
	struct viommu_iotlb_region reg = { 0, MEM_SIZE, mem, -1, 0 };
	struct viommu_vhost_user_opts o = *mo;
	int err = 0;

	iommu = on;
	pool = use_pool;
	viommu_device_reset(dev); /* no frontend observes it now: nothing to invalidate */
	for (unsigned i = 0; i < 2; i++) {
		memset(mem + RING_GPA(i), 0, 0x3000);
		q[i].desc = (void *)(mem + RING_GPA(i));
		q[i].avail = (void *)(mem + RING_GPA(i) + 0x1000);
		q[i].used = (void *)(mem + RING_GPA(i) + 0x2000);
		q[i].avail->flags = 1; /* no interrupts: we poll */
		q[i].last_used = 0;
	}
	o.iommu = on;
	vu = viommu_vhost_user_new(fp, &o);
	if (!vu)
		return perror("vhost-user"), -1;
	reg.fd = memfd;
	if ((err = viommu_iotlb_add_region(viommu_vhost_user_iotlb(vu), &reg)))
		return fprintf(stderr, "region: %s\n", strerror(-err)), -1;
	attach_and_map_rings();
	s_extents0 = extents;
	if (tpid < 0) {
		snprintf(tdir, sizeof(tdir), "/tmp/viommu-dpdk.XXXXXX");
		if (!mkdtemp(tdir))
			return perror("mkdtemp"), -1;
		snprintf(tsock, sizeof(tsock), "%s/vhost.sock", tdir);
		tpid = start_testpmd(tdir, tsock);
		for (int i = 0; i < 200 && access(tsock, F_OK); i++)
			usleep(50000);
	}
	/* testpmd serves every session: after the previous connection ends it takes a moment to
	 * listen again (ECONNREFUSED meanwhile, seen at a session start now and then): retry for up
	 * to 2 s. */
	for (int i = 0; (err = viommu_vhost_user_connect(vu, tsock, 0)) == -ECONNREFUSED && i < 40; i++)
		usleep(50000);
	if (err) {
		fprintf(stderr, "dpdk: connect: %s (%s); testpmd log in %s\n", strerror(-err),
			viommu_vhost_user_error(vu), tdir);
		return -1;
	}
	layout();
	for (unsigned i = 0; i < 2 && !err; i++) {
		uint64_t g = iommu ? RING_IOVA(i) : (uint64_t)(uintptr_t)(mem + RING_GPA(i));

		err = viommu_vhost_user_set_vring(vu, i, g, g + 0x1000, g + 0x2000, q[i].kick, q[i].call);
	}
	for (unsigned i = 0; i < 2 && !err; i++)
		err = viommu_vhost_user_enable(vu, i, true);
	if (err) {
		fprintf(stderr, "dpdk: vring setup: %s (%s)\n", strerror(-err), viommu_vhost_user_error(vu));
		return -1;
	}
	rx_refill();
	return 0;
}

/* The frontend goes (its vrings stopped, the connection closed); testpmd too unless @keep (the
 * next session connects to the same testpmd, as a VMM reconnects). */
static void session_end(bool keep)
{
	char cmd[128];

	if (vu) {
		const struct viommu_iotlb_stats *is = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu));

		sum_misses += is->misses;
		sum_invalidates += is->invalidates;
		sum_faults += is->faults;
		viommu_vhost_user_free(vu);
		vu = NULL;
	}
	if (tpid > 0 && !keep) {
		kill(tpid, SIGINT);
		for (int i = 0; i < 50 && waitpid(tpid, NULL, WNOHANG) == 0; i++)
			usleep(100000);
		kill(tpid, SIGKILL);
		waitpid(tpid, NULL, 0);
		tpid = -1;
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
		if (system(cmd))
			fprintf(stderr, "dpdk: could not remove %s\n", tdir);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Frames [*next, *next + n) in 8 blocks: the median block's frames/s (the machine is shared:
 * one slow block says little), or -1 when they did not all come back. *@all: frames/s over all
 * of them (the first misses included), *@best: the fastest block's, when not NULL. */
static double timed_traffic(uint32_t *next, uint32_t n, uint32_t total, double *all, double *best)
{
	double fps[8];
	unsigned nb = n >= 64 ? 8 : 1;
	uint64_t t00 = now_ns();

	for (unsigned b = 0; b < nb; b++) {
		uint32_t k = n / nb + (b < n % nb);
		uint64_t t0 = now_ns();

		if (traffic(*next, *next + k, total, 3000))
			return -1;
		*next += k;
		fps[b] = k / ((double)(now_ns() - t0) / 1e9);
	}
	if (all)
		*all = n / ((double)(now_ns() - t00) / 1e9);
	qsort(fps, nb, sizeof(fps[0]), cmp_double);
	if (best)
		*best = fps[nb - 1];
	return nb == 1 ? fps[0] : (fps[3] + fps[4]) / 2;
}

/* ---- the floor: the same exchange between two plain threads ---- */

/* What testpmd's vhost-user message thread does per IOTLB message, and no more: poll() (it
 * sleeps there), recvmsg of the 12-byte header, read of the 32-byte payload, sendmsg of the
 * 20-byte ack when NEED_REPLY is set. On the CPU testpmd's message thread uses. */
static int floor_fd[2];
static volatile int floor_stop;

static void pin_self(int cpu)
{
	cpu_set_t c;

	CPU_ZERO(&c);
	CPU_SET(cpu, &c);
	pthread_setaffinity_np(pthread_self(), sizeof(c), &c);
}

static void *floor_server(void *arg)
{
	uint8_t b[64];

	(void)arg;
	pin_self(0);
	for (;;) {
		struct pollfd p = { floor_fd[1], POLLIN, 0 };
		uint32_t flags;

		if (poll(&p, 1, -1) < 0)
			continue;
		if (recv(floor_fd[1], b, 12, 0) != 12 || read(floor_fd[1], b + 12, 32) != 32)
			return NULL;
		memcpy(&flags, b + 4, 4);
		if (flags & VIOMMU_VU_F_NEED_REPLY) {
			uint8_t r[20] = { 22, 0, 0, 0, 5, 0, 0, 0, 8 };

			if (send(floor_fd[1], r, sizeof(r), 0) != (ssize_t)sizeof(r))
				return NULL;
		}
	}
}

static void *floor_spin(void *arg)
{
	(void)arg;
	pin_self(1);
	while (!floor_stop)
		;
	return NULL;
}

/* p10/p50/p90 (ns) of @n exchanges of @msgs messages (the last one acked; in one send when
 * @one_send), the client (this thread, on CPU 0) busy-polling for the ack as the frontend does
 * in a VMM's loop. */
static void floor_measure(unsigned msgs, bool one_send, unsigned n, uint64_t out[3])
{
	uint32_t *lat = calloc(n, sizeof(*lat));

	for (int i = -100; i < (int)n; i++) {
		uint64_t t0 = now_ns();
		size_t got = 0;

		uint8_t m[4 * 44];

		for (unsigned k = 0; k < msgs; k++) {
			memset(m + 44 * k, 0, 44);
			m[44 * k] = 22, m[44 * k + 4] = 1, m[44 * k + 8] = 32;
			if (k == msgs - 1)
				m[44 * k + 4] |= VIOMMU_VU_F_NEED_REPLY;
			if (!one_send && send(floor_fd[0], m + 44 * k, 44, 0) != 44)
				goto out;
		}
		if (one_send && send(floor_fd[0], m, 44 * msgs, 0) != (ssize_t)(44 * msgs))
			goto out;
		while (got < 20) {
			uint8_t r[20];
			ssize_t k = recv(floor_fd[0], r, sizeof(r) - got, MSG_DONTWAIT);

			if (k > 0)
				got += (size_t)k;
		}
		if (i >= 0)
			lat[i] = (uint32_t)(now_ns() - t0);
	}
	qsort(lat, n, sizeof(*lat), cmp_u32);
	out[0] = lat[n / 10], out[1] = lat[n / 2], out[2] = lat[n * 9 / 10];
out:
	free(lat);
}

/* Both placements as the test runs them: the server (testpmd's message thread) and the client
 * (this process) on CPU 0, a third thread spinning on CPU 1 (testpmd's forwarding lcore). */
static void floor_run(uint64_t one[3], uint64_t two[3], uint64_t two1[3])
{
	pthread_t srv, spin;

	memset(one, 0, 3 * sizeof(*one));
	memset(two, 0, 3 * sizeof(*two));
	memset(two1, 0, 3 * sizeof(*two1));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, floor_fd))
		return;
	floor_stop = 0;
	pthread_create(&srv, NULL, floor_server, NULL);
	pthread_create(&spin, NULL, floor_spin, NULL);
	floor_measure(1, false, 4000, one);
	floor_measure(2, false, 4000, two);
	floor_measure(2, true, 4000, two1);
	floor_stop = 1;
	pthread_join(spin, NULL);
	shutdown(floor_fd[0], SHUT_RDWR); /* the server's recv ends: it returns */
	pthread_join(srv, NULL);
	close(floor_fd[0]);
	close(floor_fd[1]);
}

/* ---- the pool rounds: IOMMU on (three ways of answering) and off, one testpmd ---- */

enum { M_EXTENTS, M_PREFILL, M_PAGES, M_OFF, NMODES };
static const char *const mode_name[NMODES] = { "extents", "prefill", "pages", "off" };
#define MAX_ROUNDS 32

struct mode_figs {
	/* steady: the median of 8 blocks; cold: all frames after the first, first touches included */
	double fps[MAX_ROUNDS], cold[MAX_ROUNDS];
	/* the fastest of the 8 blocks: the least disturbed by other jobs on a shared machine */
	double best[MAX_ROUNDS];
	uint64_t misses, extents, deferred_sent;
};
static struct mode_figs mf[NMODES];
static uint32_t *pool_rtt; /* MISS -> UPDATE acked in the pool sessions (no INVALIDATE traffic) */
static uint64_t pool_rtt_n, pool_rtt_cap;

/* One session of mode @m on the running testpmd (round @r): a fresh connection, the pools
 * mapped after connect and before the vrings, @n frames. */
static int pool_session(unsigned m, unsigned r, uint32_t *next, uint32_t n, uint32_t total)
{
	struct viommu_vhost_user_opts o = vopts;
	const struct viommu_vhost_user_stats *vs;
	uint64_t k;

	o.iotlb.prefill = m == M_PREFILL;
	o.iotlb.per_page = m == M_PAGES;
	if (session_start(m != M_OFF, true, &o))
		return -1;
	/* One frame first, untimed: testpmd takes ~100 ms after a connection to forward at all,
	 * which would drown what the modes differ in (the first touch of each extent). While its
	 * forwarding is not yet set up for the new connection testpmd may take that frame from the
	 * TX ring and drop it without ever touching the RX ring (seen about one session start in
	 * five: one MISS, its UPDATE, no RX miss, nothing back): a backend may drop frames for a
	 * queue it has not made ready, so such a warm-up frame counts as allowed to be lost and the
	 * next one is sent, up to 5. Every timed frame after it must come back. */
	for (int tries = 0;; tries++) {
		int t = traffic(*next, *next + 1, total, 1000);

		(*next)++;
		if (!t)
			break;
		if (t < 0 || tries == 4)
			return -1;
		lost_allowed++;
		warmup_dropped++;
	}
	mf[m].fps[r] = timed_traffic(next, n - 1, total, &mf[m].cold[r], &mf[m].best[r]);
	vs = viommu_vhost_user_stats(vu);
	mf[m].misses += viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->misses;
	mf[m].extents += extents - s_extents0;
	mf[m].deferred_sent += vs->deferred_sent;
	k = vs->rtt_n < VIOMMU_VU_RTT_SAMPLES ? vs->rtt_n : VIOMMU_VU_RTT_SAMPLES;
	if (pool_rtt_n + k > pool_rtt_cap) {
		pool_rtt_cap = (pool_rtt_n + k) * 2;
		pool_rtt = realloc(pool_rtt, pool_rtt_cap * sizeof(*pool_rtt));
	}
	memcpy(pool_rtt + pool_rtt_n, vs->rtt_ns, k * sizeof(*pool_rtt));
	pool_rtt_n += k;
	session_end(true);
	return mf[m].fps[r] < 0 ? -1 : 0;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Phase 2: UNMAP every posted RX buffer under traffic: nothing delivered, no poisoned byte
 * touched, the backend's misses fault (at least one: testpmd tries the first posted buffer);
 * then MAP them again (the faulted misses are answered then). */
static int phase2(uint32_t *next, uint32_t total)
{
	uint16_t posted = (uint16_t)(q[0].avail->idx - q[0].last_used);
	uint64_t before = rx, faults0 = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->faults, faults;
	int fail = 0;

	for (uint16_t k = 0; k < posted; k++) {
		int slot = rx_slot_at[(q[0].last_used + k) % QSZ];

		unmap(rx_iova + (uint64_t)slot * SLOT, SLOT);
		memset(mem + rx_gpa_of[slot], POISON, SLOT);
	}
	for (uint32_t k = 0; k < 16; k++)
		send_frame((*next)++);
	for (uint64_t t = now_ns(); now_ns() - t < 300000000ull;)
		if (service(1))
			break;
	if (rx != before || q[0].last_used != __atomic_load_n(&q[0].used->idx, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "dpdk: phase 2: a frame was delivered into an unmapped buffer\n");
		corrupt++;
	}
	for (uint16_t k = 0; k < posted; k++) {
		int slot = rx_slot_at[(q[0].last_used + k) % QSZ];

		for (unsigned b = 0; b < SLOT; b++)
			if (mem[rx_gpa_of[slot] + b] != POISON) {
				stale++;
				break;
			}
	}
	faults = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->faults - faults0;
	printf("dpdk: phase 2: %u posted RX buffers unmapped, %llu faults\n", posted,
	       (unsigned long long)faults);
	if (faults < 1 || faults > posted) {
		fprintf(stderr, "dpdk: phase 2: %llu faults for %u unmapped buffers (want 1..%u)\n",
			(unsigned long long)faults, posted, posted);
		fail = 1;
	}
	for (uint16_t k = 0; k < posted; k++) {
		int slot = rx_slot_at[(q[0].last_used + k) % QSZ];

		map(rx_iova + (uint64_t)slot * SLOT, SLOT, rx_gpa_of[slot], VIOMMU_MAP_F_WRITE);
	}
	lost_allowed += 16; /* sent while nothing was mapped: testpmd may drop them */
	for (uint64_t t = now_ns(); now_ns() - t < 300000000ull;) {
		if (service(1))
			break;
		reap(total);
	}
	return fail;
}

/* Phase 3: device reset (everything invalidated, rings included), then the same mappings again:
 * traffic must resume (rings re-pushed). */
static int phase3(uint32_t *next, uint32_t total)
{
	uint64_t before;

	while (q[1].last_used != q[1].avail->idx && !service(1))
		reap(total);
	viommu_device_reset(dev);
	attach_and_map_rings();
	for (uint16_t k = 0; k < (uint16_t)(q[0].avail->idx - q[0].last_used); k++) {
		int slot = rx_slot_at[(q[0].last_used + k) % QSZ];

		map(rx_iova + (uint64_t)slot * SLOT, SLOT, rx_gpa_of[slot], VIOMMU_MAP_F_WRITE);
	}
	before = rx;
	*next += 32;
	if (traffic(*next - 32, *next, total, 3000)) {
		fprintf(stderr, "dpdk: phase 3: traffic did not resume after the reset (%llu of 32)\n",
			(unsigned long long)(rx - before));
		return 1;
	}
	printf("dpdk: phase 3: reset, re-mapped: 32 of 32 frames came back\n");
	return 0;
}

/* Phase 4: one TX frame in a buffer that straddles two IOVA-adjacent extents whose memory is not
 * adjacent. DPDK 22.11 would read it through the first extent's memory if it held both; the
 * bridge core never lets it hold both, so the frame either comes back intact or stalls (the
 * two halves evict each other). Never corrupt. Last in its session: a stalled frame holds the
 * TX queue. */
static int phase4(uint32_t *next, uint32_t total)
{
	static uint8_t f[SLOT];
	uint32_t seq = (*next)++, len = 200, cut = 100;
	struct queue *Q = &q[1];
	uint16_t i = Q->avail->idx % QSZ;
	uint64_t before = rx, t, m0 = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->misses;

	while (q[1].last_used != q[1].avail->idx && !service(1))
		reap(total);
	map(STRADDLE_IOVA, SLOT, STRADDLE_GPA0, VIOMMU_MAP_F_READ);
	map(STRADDLE_IOVA + SLOT, SLOT, STRADDLE_GPA1, VIOMMU_MAP_F_READ);
	memset(f, 0, HDR);
	make_frame(f + HDR, seq, len);
	memcpy(mem + STRADDLE_GPA0 + SLOT - cut, f, cut);
	memcpy(mem + STRADDLE_GPA1, f + cut, HDR + len - cut);
	/* What DPDK would send if it read on through the first extent's memory: not the frame. */
	memset(mem + STRADDLE_GPA0 + SLOT, 0x5a, SLOT);
	Q->desc[i] = (struct desc){ STRADDLE_IOVA + SLOT - cut, HDR + len, 0, 0 };
	Q->avail->ring[i] = i;
	tx_slot_at[i] = -1;
	__atomic_store_n(&Q->avail->idx, (uint16_t)(Q->avail->idx + 1), __ATOMIC_RELEASE);
	tx++;
	for (t = now_ns(); now_ns() - t < 200000000ull && rx == before && !corrupt;) {
		if (service(1))
			break;
		reap(total);
	}
	if (rx != before) {
		printf("dpdk: phase 4: the straddling frame came back intact\n");
	} else if (!corrupt) {
		printf("dpdk: phase 4: the straddling frame stalled for 200 ms (%llu misses, its halves "
		       "evicting each other), never corrupt\n",
		       (unsigned long long)(viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->misses - m0));
		lost_allowed++;
	}
	return 0;
}

int main(void)
{
	const char *e;
	uint32_t nframes = 4000, total, next = 0;
	int fail = 0;
	struct viommu_config cfg;
	char sizes_buf[256] = "64,128,256,512,1024,1514,60,1500,333,777";
	bool want_iommu = true, want_pool = true, pin = true;
	double fps_strict = 0, ratio[NMODES][MAX_ROUNDS], rmed[NMODES] = { 0 }, rmin[NMODES] = { 0 },
	       rmax[NMODES] = { 0 }, sfps[NMODES] = { 0 }, cfps[NMODES] = { 0 },
	       cmed[NMODES] = { 0 }, bmed[NMODES] = { 0 };
	uint64_t rtt10 = 0, rtt50 = 0, rtt90 = 0, rtt_n = 0, strict_misses = 0, strict_extents = 0;
	uint64_t prtt[3] = { 0 }, splits = 0, repushes = 0, nacks = 0, floor1[3] = { 0 },
		 floor2[3] = { 0 }, floor21[3] = { 0 };
	uint32_t rounds = 12, pool_frames = 0;
	const char *json = getenv("DPDK_JSON");
	char load[128] = "";

	if (geteuid() != 0) {
		printf("dpdk: skipped: not root (testpmd and the BPF fast path need root)\n");
		return 0;
	}
	if ((e = getenv("DPDK_SEED")))
		seed = (uint32_t)strtoul(e, NULL, 0) ?: 1;
	if ((e = getenv("DPDK_FRAMES")))
		nframes = (uint32_t)strtoul(e, NULL, 0);
	if ((e = getenv("DPDK_SIZES")))
		snprintf(sizes_buf, sizeof(sizes_buf), "%s", e);
	if ((e = getenv("DPDK_TX_STRIDE")))
		tx_stride = strtoull(e, NULL, 0);
	if ((e = getenv("DPDK_TX_DELAY_US")))
		tx_delay_us = (uint32_t)strtoul(e, NULL, 0) ?: 1;
	if ((e = getenv("DPDK_IOMMU")))
		want_iommu = atoi(e) != 0;
	if ((e = getenv("DPDK_POOL_EXTENT")))
		pool_extent = strtoull(e, NULL, 0) ?: SLOT;
	if ((e = getenv("DPDK_POOL")))
		want_pool = atoi(e) != 0;
	if ((e = getenv("DPDK_ROUNDS")))
		rounds = (uint32_t)strtoul(e, NULL, 0);
	if (rounds < 1 || rounds > MAX_ROUNDS)
		rounds = rounds < 1 ? 1 : MAX_ROUNDS;
	if ((e = getenv("DPDK_POOL_FRAMES")))
		pool_frames = (uint32_t)strtoul(e, NULL, 0);
	if ((e = getenv("DPDK_PIN")))
		pin = atoi(e) != 0;
	sizes = calloc(64, sizeof(*sizes));
	for (char *t = strtok(sizes_buf, ","); t && nsizes < 64; t = strtok(NULL, ",")) {
		uint32_t v = (uint32_t)strtoul(t, NULL, 0);

		if (v < 22 + 0 || v > SLOT - HDR || v > 2048) {
			fprintf(stderr, "dpdk: frame size %u outside 22..2048\n", v);
			return 2;
		}
		sizes[nsizes++] = v;
	}
	if (!nsizes || !nframes) {
		fprintf(stderr, "dpdk: no sizes or no frames\n");
		return 2;
	}
	if (!pool_frames)
		pool_frames = nframes;
	total = 2 * nframes + 128 + rounds * NMODES * pool_frames;
	seen = calloc(total, 1);

	/* CPU placement. testpmd runs with -l 0-1: its main lcore and every control thread, the
	 * vhost-user message thread (vhost-events) among them, on CPU 0; its forwarding lcore
	 * busy-polls CPU 1. This process (the VMM's device thread) goes on CPU 0 beside the message
	 * thread: left to the scheduler it lands on CPU 1 now and then, where it shares a core with
	 * the forwarding lcore, and then every session in that run is ~50 times slower (6-60k
	 * instead of ~330k frames/s: the unreliable on/off ratios before). On CPU 0 each message
	 * is a direct hand-off between the two threads (docs/vhost.md, "Where the round trip
	 * goes"). DPDK_PIN=0 leaves placement to the scheduler. */
	if (pin && sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
		cpu_set_t c0;

		CPU_ZERO(&c0);
		CPU_SET(0, &c0);
		if (sched_setaffinity(0, sizeof(c0), &c0))
			pin = false;
	} else {
		pin = false;
	}
	{
		FILE *f = fopen("/proc/loadavg", "r");

		if (f) {
			if (!fgets(load, sizeof(load), f))
				load[0] = 0;
			fclose(f);
			load[strcspn(load, "\n")] = 0;
		}
	}
	printf("dpdk: placement: %s; load average %s\n",
	       pin ? "this process on CPU 0 with testpmd's main lcore and control threads, testpmd's "
		     "forwarding lcore on CPU 1"
		   : "left to the scheduler (DPDK_PIN=0 or one CPU)",
	       load);

	if (pin) {
		floor_run(floor1, floor2, floor21);
		printf("dpdk: floor: two plain threads on CPU 0 over a unix socket (one spinning on CPU 1): "
		       "one acked message p10 %.1f p50 %.1f p90 %.1f us; two, the last acked, p10 %.1f "
		       "p50 %.1f p90 %.1f us, in one send p10 %.1f p50 %.1f p90 %.1f us\n",
		       floor1[0] / 1e3, floor1[1] / 1e3, floor1[2] / 1e3, floor2[0] / 1e3,
		       floor2[1] / 1e3, floor2[2] / 1e3, floor21[0] / 1e3, floor21[1] / 1e3,
		       floor21[2] / 1e3);
	}

	/* Guest memory and the device. */
	memfd = memfd_create("viommu-guest", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, MEM_SIZE))
		return perror("memfd"), 1;
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (mem == MAP_FAILED)
		return perror("mmap"), 1;
	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	if (!dev || viommu_device_add_endpoint(dev, EP, true, NULL, 0))
		return perror("device"), 1;
	fp = viommu_fastpath_new(dev, NULL);
	if (!fp)
		return perror("fast path"), 1;
	viommu_device_eventq_post(dev, 1u << 20);
	viommu_vhost_user_opts_default(&vopts);
	vopts.endpoint = EP;
	vopts.vring_num = QSZ;
	vopts.iotlb.per_page = (e = getenv("DPDK_PER_PAGE")) && atoi(e);
	vopts.iotlb.lazy = (e = getenv("DPDK_LAZY")) && atoi(e);
	vopts.iotlb.prefill = (e = getenv("DPDK_PREFILL")) && atoi(e);
	if ((e = getenv("DPDK_QUIRKS")) && !atoi(e))
		vopts.quirk_repush_rings = vopts.iotlb.quirk_adjacent_join = false;
	if ((e = getenv("DPDK_TRACK")))
		vopts.iotlb.track_held = atoi(e) != 0;
	for (unsigned i = 0; i < 2; i++) {
		q[i].kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		q[i].call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	}

	/* Session 1 (IOMMU on unless DPDK_IOMMU=0): every buffer mapped and strictly unmapped per
	 * frame (Linux's strict mode), then phases 2-4. */
	if (session_start(want_iommu, false, &vopts)) {
		session_end(false);
		return 1;
	}
	fps_strict = timed_traffic(&next, nframes, total, NULL, NULL);
	if (fps_strict < 0) {
		fprintf(stderr, "dpdk: phase 1 (traffic): %llu of %u frames came back\n",
			(unsigned long long)rx, nframes);
		fail = 1;
	}
	printf("dpdk: phase 1: %u frames, %.0f frames/s (iommu %s, %s)\n", nframes, fps_strict,
	       iommu ? "on" : "off", iommu ? "a MAP and a strict UNMAP per buffer" : "no mappings");
	{
		const struct viommu_iotlb_stats *is = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu));

		strict_misses = is->misses;
		strict_extents = extents - s_extents0;
	}
	if (iommu && !fail) {
		fail |= phase2(&next, total);
		fail |= phase3(&next, total);
	}
	{
		const struct viommu_vhost_user_stats *vs = viommu_vhost_user_stats(vu);

		/* Before phase 4, whose stall is a ping-pong of misses that says nothing of the
		 * round trip of an ordinary miss. */
		rtt10 = viommu_vhost_user_rtt_percentile(vu, 10);
		rtt50 = viommu_vhost_user_rtt_percentile(vu, 50);
		rtt90 = viommu_vhost_user_rtt_percentile(vu, 90);
		rtt_n = vs->rtt_n;
		repushes = vs->ring_repushes;
		nacks = vs->nacks;
		splits = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->boundary_splits;
	}
	if (iommu && !fail)
		fail |= phase4(&next, total);
	viommu_iotlb_print_stat(viommu_vhost_user_iotlb(vu), stdout);
	session_end(false);

	/* The pool rounds: buffers in long-lived pools (mapped once per session in 64 KiB extents
	 * with contiguous memory, as a driver with a page pool or in lazy mode keeps them), one
	 * testpmd for all of them (iommu-support=1; the IOMMU-off sessions just do not negotiate
	 * ACCESS_PLATFORM), a new connection per session. Each round runs the four modes once,
	 * in an order rotated by one each round: whole extents answered at the miss, the same plus
	 * prefill at MAP, per-page answers (QEMU's way), IOMMU off. Per session: frames/s of its
	 * fastest block, of its median block, and from cold (all frames, first touches included);
	 * each divided by the same round's off session, median over the rounds. The fastest-block
	 * ratio is the headline: other jobs on the machine can only slow a block down, and at
	 * load 3-4 they slowed whole sessions (median-block ratios of 0.39-0.55 in a run whose
	 * fastest-block ratios were 0.999-1.004). */
	if (want_iommu && want_pool && !fail) {
		for (unsigned r = 0; r < rounds && !fail; r++)
			for (unsigned k = 0; k < NMODES && !fail; k++)
				if (pool_session((r + k) % NMODES, r, &next, pool_frames, total)) {
					fprintf(stderr, "dpdk: pool round %u, %s: frames did not all come back\n",
						r, mode_name[(r + k) % NMODES]);
					fail = 1;
				}
		session_end(false);
	}
	if (want_iommu && want_pool && !fail) {
		double v[MAX_ROUNDS];

		for (unsigned m = 0; m < NMODES; m++) {
			for (unsigned r = 0; r < rounds; r++)
				ratio[m][r] = mf[m].fps[r] / mf[M_OFF].fps[r];
			memcpy(v, ratio[m], rounds * sizeof(v[0]));
			rmed[m] = median(v, rounds);
			rmin[m] = v[0], rmax[m] = v[rounds - 1];
			memcpy(v, mf[m].fps, rounds * sizeof(v[0]));
			sfps[m] = median(v, rounds);
			memcpy(v, mf[m].cold, rounds * sizeof(v[0]));
			cfps[m] = median(v, rounds);
			for (unsigned r = 0; r < rounds; r++)
				v[r] = mf[m].cold[r] / mf[M_OFF].cold[r];
			cmed[m] = median(v, rounds);
			for (unsigned r = 0; r < rounds; r++)
				v[r] = mf[m].best[r] / mf[M_OFF].best[r];
			bmed[m] = median(v, rounds);
		}
		if (pool_rtt_n) {
			qsort(pool_rtt, pool_rtt_n, sizeof(*pool_rtt), cmp_u32);
			for (unsigned i = 0; i < 3; i++)
				prtt[i] = pool_rtt[(pool_rtt_n - 1) * (i == 0 ? 10 : i == 1 ? 50 : 90) / 100];
		}
		for (unsigned m = 0; m < NMODES; m++)
			printf("dpdk: pools %-7s %u rounds of %u frames: %6.0f frames/s steady, %6.0f from cold "
			       "(medians); %llu misses / %llu extents (%.3f)%s%.0llu%s; %s/off median %.3f (min %.3f, "
			       "max %.3f), fastest blocks %.3f, from cold %.3f\n",
			       mode_name[m], rounds, pool_frames, sfps[m], cfps[m],
			       (unsigned long long)mf[m].misses, (unsigned long long)mf[m].extents,
			       mf[m].extents ? (double)mf[m].misses / (double)mf[m].extents : 0.0,
			       m == M_PREFILL ? ", " : "", m == M_PREFILL ? (unsigned long long)mf[m].deferred_sent : 0ull,
			       m == M_PREFILL ? " held answers sent as the vrings appeared" : "", mode_name[m],
			       rmed[m], rmin[m], rmax[m], bmed[m], cmed[m]);
		/* Prefilled pools take no miss: every extent was pushed once both vrings existed.
		 * (Sent before the vrings, DPDK 22.11 would have dropped them: the frontend holds
		 * them; without that, each extent misses once.) */
		if (mf[M_PREFILL].misses) {
			fprintf(stderr, "dpdk: pools prefill: %llu misses, want 0 (%llu answers sent when "
				"the vrings appeared)\n", (unsigned long long)mf[M_PREFILL].misses,
				(unsigned long long)mf[M_PREFILL].deferred_sent);
			fail = 1;
		}
	}

	{
		uint64_t promised = tx - lost_allowed, lost = promised > rx ? promised - rx : 0;

		if (warmup_dropped)
			printf("dpdk: %llu pool sessions' warm-up frames dropped by testpmd before its "
			       "forwarding was ready (allowed; the next one was sent)\n",
			       (unsigned long long)warmup_dropped);
		printf("dpdk: figures: miss round trip p10 %.1f us, p50 %.1f us, p90 %.1f us (%llu samples, "
		       "per buffer with strict UNMAPs); in the pool sessions p10 %.1f, p50 %.1f, p90 %.1f "
		       "(%llu); misses per extent %.3f per buffer (%llu / %llu), pools %.3f extents, %.3f "
		       "prefill, %.3f pages; frames/s per buffer %.0f; pools on/off %.3f, prefill/off %.3f, "
		       "pages/off %.3f (%u rounds, medians of the fastest blocks' ratios; of the median "
		       "blocks' %.3f, %.3f, %.3f); %llu boundary splits, %llu ring re-pushes, %llu nacks\n",
		       rtt10 / 1e3, rtt50 / 1e3, rtt90 / 1e3, (unsigned long long)rtt_n, prtt[0] / 1e3,
		       prtt[1] / 1e3, prtt[2] / 1e3, (unsigned long long)pool_rtt_n,
		       strict_extents ? (double)strict_misses / (double)strict_extents : 0.0,
		       (unsigned long long)strict_misses, (unsigned long long)strict_extents,
		       mf[M_EXTENTS].extents ? (double)mf[M_EXTENTS].misses / (double)mf[M_EXTENTS].extents : 0.0,
		       mf[M_PREFILL].extents ? (double)mf[M_PREFILL].misses / (double)mf[M_PREFILL].extents : 0.0,
		       mf[M_PAGES].extents ? (double)mf[M_PAGES].misses / (double)mf[M_PAGES].extents : 0.0,
		       fps_strict, bmed[M_EXTENTS], bmed[M_PREFILL], bmed[M_PAGES], rounds,
		       rmed[M_EXTENTS], rmed[M_PREFILL], rmed[M_PAGES],
		       (unsigned long long)splits, (unsigned long long)repushes, (unsigned long long)nacks);
		if (json) {
			FILE *f = fopen(json, "w");

			if (f) {
				fprintf(f, "{\n  \"seed\": %u, \"frames_per_session\": %u, \"pool_frames\": %u, "
					"\"rounds\": %u, \"pinned\": %s, \"loadavg\": \"%s\",\n",
					seed, nframes, pool_frames, rounds, pin ? "true" : "false", load);
				fprintf(f, "  \"miss_round_trip_us\": {\"per_buffer\": {\"p10\": %.1f, \"p50\": "
					"%.1f, \"p90\": %.1f, \"samples\": %llu}, \"pools\": {\"p10\": %.1f, "
					"\"p50\": %.1f, \"p90\": %.1f, \"samples\": %llu}},\n",
					rtt10 / 1e3, rtt50 / 1e3, rtt90 / 1e3, (unsigned long long)rtt_n,
					prtt[0] / 1e3, prtt[1] / 1e3, prtt[2] / 1e3,
					(unsigned long long)pool_rtt_n);
				fprintf(f, "  \"floor_us\": {\"one_acked\": {\"p10\": %.1f, \"p50\": %.1f, "
					"\"p90\": %.1f}, \"two_last_acked\": {\"p10\": %.1f, \"p50\": %.1f, "
					"\"p90\": %.1f}, \"two_in_one_send\": {\"p10\": %.1f, \"p50\": %.1f, "
					"\"p90\": %.1f}},\n",
					floor1[0] / 1e3, floor1[1] / 1e3, floor1[2] / 1e3, floor2[0] / 1e3,
					floor2[1] / 1e3, floor2[2] / 1e3, floor21[0] / 1e3, floor21[1] / 1e3,
					floor21[2] / 1e3);
				fprintf(f, "  \"per_buffer\": {\"misses\": %llu, \"extents\": %llu, "
					"\"frames_per_s\": %.0f, \"boundary_splits\": %llu},\n",
					(unsigned long long)strict_misses, (unsigned long long)strict_extents,
					fps_strict, (unsigned long long)splits);
				fprintf(f, "  \"pools\": {\n");
				for (unsigned m = 0; m < NMODES; m++) {
					fprintf(f, "    \"%s\": {\"misses\": %llu, \"extents\": %llu, "
						"\"frames_per_s_steady\": %.0f, \"frames_per_s_from_cold\": %.0f, "
						"\"ratio_to_off_median\": %.3f, \"ratio_min\": %.3f, "
						"\"ratio_max\": %.3f, \"ratio_fastest_blocks_median\": %.3f, "
						"\"ratio_from_cold_median\": %.3f, \"ratio_per_round\": [",
						mode_name[m], (unsigned long long)mf[m].misses,
						(unsigned long long)mf[m].extents, sfps[m], cfps[m], rmed[m],
						rmin[m], rmax[m], bmed[m], cmed[m]);
					for (unsigned r = 0; r < rounds; r++)
						fprintf(f, "%s%.3f", r ? ", " : "", ratio[m][r]);
					fprintf(f, "], \"frames_per_s_per_round\": [");
					for (unsigned r = 0; r < rounds; r++)
						fprintf(f, "%s%.0f", r ? ", " : "", mf[m].fps[r]);
					fprintf(f, "], \"from_cold_frames_per_s_per_round\": [");
					for (unsigned r = 0; r < rounds; r++)
						fprintf(f, "%s%.0f", r ? ", " : "", mf[m].cold[r]);
					fprintf(f, "]}%s\n", m + 1 < NMODES ? "," : "");
				}
				fprintf(f, "  }\n}\n");
				fclose(f);
			}
		}
		if (lost) {
			fprintf(stderr, "dpdk: %llu frames lost\n", (unsigned long long)lost);
			fail = 1;
		}
		printf("dpdk: %llu tx, %llu rx, %llu corrupt, %llu misses / %llu extents, %llu "
		       "invalidations, %llu stale, %llu faults\n",
		       (unsigned long long)tx, (unsigned long long)rx, (unsigned long long)corrupt,
		       (unsigned long long)sum_misses, (unsigned long long)extents,
		       (unsigned long long)sum_invalidates, (unsigned long long)stale,
		       (unsigned long long)sum_faults);
		return fail || corrupt || stale ? 1 : 0;
	}
}
