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
 * Last line: `dpdk: T tx, R rx, C corrupt, M misses / E extents, I invalidations, S stale, F faults`;
 * exit 0 only when C and S are 0 and every frame the protocol promises came back.
 * DPDK_IOMMU=0: no ACCESS_PLATFORM (the bench's IOMMU-off figure; phases 2-4 skipped).
 * DPDK_PER_PAGE=1: QEMU-like one-page answers. DPDK_LAZY=1: INVALIDATEs not waited for. DPDK_QUIRKS=0: no DPDK 22.11 quirk handling.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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
static char tdir[64];
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

static int session_start(bool on, bool use_pool)
{
	struct viommu_iotlb_region reg = { 0, MEM_SIZE, mem, -1, 0 };
	struct viommu_vhost_user_opts o = vopts;
	char sock[128];
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
	attach_and_map_rings();
	s_extents0 = extents;
	layout();
	o.iommu = on;
	vu = viommu_vhost_user_new(fp, &o);
	if (!vu)
		return perror("vhost-user"), -1;
	reg.fd = memfd;
	if ((err = viommu_iotlb_add_region(viommu_vhost_user_iotlb(vu), &reg)))
		return fprintf(stderr, "region: %s\n", strerror(-err)), -1;
	snprintf(tdir, sizeof(tdir), "/tmp/viommu-dpdk.XXXXXX");
	if (!mkdtemp(tdir))
		return perror("mkdtemp"), -1;
	snprintf(sock, sizeof(sock), "%s/vhost.sock", tdir);
	tpid = start_testpmd(tdir, sock);
	for (int i = 0; i < 200 && access(sock, F_OK); i++)
		usleep(50000);
	if ((err = viommu_vhost_user_connect(vu, sock, 0))) {
		fprintf(stderr, "dpdk: connect: %s (%s); testpmd log in %s\n", strerror(-err),
			viommu_vhost_user_error(vu), tdir);
		return -1;
	}
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

static void session_end(void)
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
	if (tpid > 0) {
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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Frames [*next, *next + n) in 8 blocks: the median block's frames/s (the machine is shared:
 * one slow block says little), or -1 when they did not all come back. */
static double timed_traffic(uint32_t *next, uint32_t n, uint32_t total)
{
	double fps[8];
	unsigned nb = n >= 64 ? 8 : 1;

	for (unsigned b = 0; b < nb; b++) {
		uint32_t k = n / nb + (b < n % nb);
		uint64_t t0 = now_ns();

		if (traffic(*next, *next + k, total, 3000))
			return -1;
		*next += k;
		fps[b] = k / ((double)(now_ns() - t0) / 1e9);
	}
	qsort(fps, nb, sizeof(fps[0]), cmp_double);
	return nb == 1 ? fps[0] : (fps[3] + fps[4]) / 2;
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
	bool want_iommu = true, want_pool = true;
	double fps_strict = 0, fps_pool = 0, fps_off = 0;
	uint64_t rtt10 = 0, rtt50 = 0, rtt90 = 0, rtt_n = 0, strict_misses = 0, strict_extents = 0;
	uint64_t pool_misses = 0, pool_extents = 0, splits = 0, repushes = 0, nacks = 0;

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
	total = 3 * nframes + 128;
	seen = calloc(total, 1);

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
	if (session_start(want_iommu, false)) {
		session_end();
		return 1;
	}
	fps_strict = timed_traffic(&next, nframes, total);
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
	session_end();

	/* Sessions 2 and 3: long-lived buffer pools (mapped once, as a driver with a pool or in
	 * lazy mode keeps them), IOMMU on, then off: the fair on/off comparison, in this run. */
	if (want_iommu && want_pool && !fail) {
		if (session_start(true, true)) {
			session_end();
			return 1;
		}
		fps_pool = timed_traffic(&next, nframes, total);
		{
			struct viommu_iotlb *it = viommu_vhost_user_iotlb(vu);

			printf("dpdk: pools: %u misses for %llu extents, %llu held in the record\n",
			       (unsigned)viommu_iotlb_stats(it)->misses,
			       (unsigned long long)(extents - s_extents0),
			       (unsigned long long)viommu_iotlb_stats(it)->held_entries);
		}
		pool_misses = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->misses;
		pool_extents = extents - s_extents0;
		session_end();
		if (session_start(false, true)) {
			session_end();
			return 1;
		}
		fps_off = timed_traffic(&next, nframes, total);
		session_end();
		if (fps_pool < 0 || fps_off < 0) {
			fprintf(stderr, "dpdk: pool sessions: frames did not all come back\n");
			fail = 1;
		}
		printf("dpdk: pools: %u frames each, %.0f frames/s iommu on, %.0f off: on/off %.3f\n",
		       nframes, fps_pool, fps_off, fps_off > 0 ? fps_pool / fps_off : 0.0);
	}

	{
		uint64_t promised = tx - lost_allowed, lost = promised > rx ? promised - rx : 0;

		printf("dpdk: figures: miss round trip p10 %.1f us, p50 %.1f us, p90 %.1f us (%llu samples); misses per "
		       "extent %.3f per buffer (%llu / %llu), %.3f pools (%llu / %llu); frames/s per buffer "
		       "%.0f, pools on %.0f, off %.0f; %llu boundary splits, %llu ring re-pushes, %llu "
		       "nacks\n",
		       rtt10 / 1e3, rtt50 / 1e3, rtt90 / 1e3, (unsigned long long)rtt_n,
		       strict_extents ? (double)strict_misses / (double)strict_extents : 0.0,
		       (unsigned long long)strict_misses, (unsigned long long)strict_extents,
		       pool_extents ? (double)pool_misses / (double)pool_extents : 0.0,
		       (unsigned long long)pool_misses, (unsigned long long)pool_extents, fps_strict,
		       fps_pool, fps_off, (unsigned long long)splits, (unsigned long long)repushes,
		       (unsigned long long)nacks);
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
