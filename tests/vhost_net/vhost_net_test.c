/* SPDX-License-Identifier: MIT */
/*
 * The vhost-net test: a VMM in miniature, run as /init's payload in a guest that booted Debian's
 * 6.1 kernel (tests/vhost_net/run-guest). It plays both the guest driver and the VMM:
 *
 *   - guest memory: a memfd, two VMM memory regions (gpa 0 and gpa 4 GiB);
 *   - a viommu device with its BPF fast path; the driver's requests ATTACH endpoint 0x18 and MAP
 *     the rings and buffer pools at IOVAs as the Linux driver places them (top-down below 4 GiB,
 *     rings in small coherent mappings, pools in 2 MiB extents, RX buffers write-only);
 *   - /dev/vhost-net with ACCESS_PLATFORM (ring addresses are IOVAs) and a tap backend; the
 *     bridge (user/vhost_kernel.c) answers the kernel's MISSes from the fast path;
 *   - frames: the driver puts TX frames in descriptor chains, which must come out of the tap
 *     byte for byte (read with AF_PACKET); frames sent on the tap must land in the RX buffers
 *     byte for byte.
 *
 * Phases (each fact counted and asserted): traffic with whole-extent answers (misses per extent
 * <= 1); the same with per-page answers (QEMU's way) for the comparison; UNMAP -> no stale access
 * (TX and RX: a DMA to the unmapped buffer faults, the memory is neither read nor written),
 * re-MAP -> works; hostile guest (rings at absurd IOVAs, rings unmapped under traffic, MAP/UNMAP
 * floods during traffic, reset mid-transfer); lazy mode (the UNMAP completes first, the bridge's
 * next service call writes the INVALIDATE, no access after it); DETACH and reset leave vhost
 * nothing it can reach. Figures: IOMMU on/off, and TX beside INVALIDATEs against controls that do
 * the same work without them (docs/vhost.md, "What an INVALIDATE costs TX").
 *
 * Environment: VHOST_NET_SEED (default 1), VHOST_NET_FRAMES (frames per direction in the main
 * phase, default 2000), VHOST_NET_SIZES (comma-separated frame sizes in bytes, 60..65536, used in
 * turn). Last line: the summary; exit 0 only when every check holds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/vhost.h>
#include <net/ethernet.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "fastpath.h"
#include "vhost_kernel.h"
#include "wire.h"

/* ---- guest memory and its layout ---- */
#define MEM0_GPA 0x0ull
#define MEM1_GPA 0x100000000ull
#define MEM_SIZE (24ull << 20) /* per region */

#define EP 0x18u /* PCI 00:03.0, as the recorded Linux traces */
#define DOMAIN 1u
/* A second endpoint in a domain of its own: the same MAP/UNMAP work as the churn in DOMAIN, but
 * no bridge serves it, so it sends vhost nothing (the control of the invalidation-stall figure). */
#define EP2 0x20u
#define DOMAIN2 2u

#define QSZ 256u
#define RING_SIZE 0x4000ull /* desc 4096 + avail, used at +8 KiB */
#define USED_OFF 0x2000ull

/* gpa, iova, size, flags of each mapping the driver makes */
struct mapping {
	const char *name;
	uint64_t gpa, iova, size;
	uint32_t flags;
};
enum { M_RXRING, M_TXRING, M_RXHDR, M_TXHDR, M_TXPOOL0, M_TXPOOL1, M_RXPOOL0, M_RXPOOL1,
       M_TXVICTIM, M_RXVICTIM, M_COUNT };
#define RW (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)
static const struct mapping maps[M_COUNT] = {
	[M_RXRING] = { "rx ring", 0x10000, 0xffffc000, RING_SIZE, RW },
	[M_TXRING] = { "tx ring", 0x14000, 0xffff8000, RING_SIZE, RW },
	[M_RXHDR] = { "rx headers", MEM1_GPA + 0x1000, 0xffff6000, 0x1000, VIOMMU_MAP_F_WRITE },
	[M_TXHDR] = { "tx headers", 0x20000, 0xffff5000, 0x1000, VIOMMU_MAP_F_READ },
	[M_TXPOOL0] = { "tx pool 0", 0x200000, 0xffa00000, 0x200000, VIOMMU_MAP_F_READ },
	[M_TXPOOL1] = { "tx pool 1", 0x400000, 0xffc00000, 0x200000, VIOMMU_MAP_F_READ },
	[M_RXPOOL0] = { "rx pool 0", MEM1_GPA + 0x200000, 0xff600000, 0x200000, VIOMMU_MAP_F_WRITE },
	[M_RXPOOL1] = { "rx pool 1", MEM1_GPA + 0x400000, 0xff800000, 0x200000, VIOMMU_MAP_F_WRITE },
	[M_TXVICTIM] = { "tx victim", 0x800000, 0xfe000000, 0x20000, VIOMMU_MAP_F_READ },
	[M_RXVICTIM] = { "rx victim", MEM1_GPA + 0x800000, 0xfe100000, 0x20000, VIOMMU_MAP_F_WRITE },
};
#define SLOT 0x14000ull /* 80 KiB per frame buffer: slots straddle the 2 MiB extent boundary */
#define NSLOTS 48u /* in the 4 MiB pools */
#define BATCH 32u /* frames in flight per direction; BATCH * 8 descriptors = QSZ */
#define FRAME_MAX 65535u /* a tap MTU is at most 65521 */
#define HDR 12u /* virtio-net header with VERSION_1 */

static uint8_t *mem[2];
static struct viommu_vhost_region regions[2];

static void *gpa_ptr(uint64_t gpa)
{
	if (gpa >= MEM1_GPA)
		return mem[1] + (gpa - MEM1_GPA);
	return mem[0] + gpa;
}

/* The driver's view: a buffer at an IOVA inside one of our mappings (the driver knows which
 * page it mapped where; this is not a translation the device relies on). */
static uint8_t *iova_ptr(unsigned m, uint64_t iova)
{
	return gpa_ptr(maps[m].gpa + (iova - maps[m].iova));
}

/* What the driver writes in a descriptor: the IOVA, or the GPA for a device without
 * ACCESS_PLATFORM (the "IOMMU off" figure). */
static bool gpa_mode;
static uint64_t dma(unsigned m, uint64_t iova)
{
	return gpa_mode ? maps[m].gpa + (iova - maps[m].iova) : iova;
}

/* ---- reporting ---- */
static unsigned failures;
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("  FAIL: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
	failures++;
}
#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the device and the driver's requests ---- */
static struct viommu_device *dev;
static struct viommu_fastpath *fp;

/* The bridge in thread mode: the device thread holds its lock while it calls into the device
 * (user/vhost_kernel.h, the concurrency contract). */
static struct viommu_vhost_kernel *bridge;
static bool bridge_thread;
static void dev_lock(void)
{
	if (bridge && bridge_thread)
		viommu_vhost_kernel_lock(bridge);
}

static void dev_unlock(void)
{
	if (bridge && bridge_thread)
		viommu_vhost_kernel_unlock(bridge);
}

static uint64_t now_ns(void);
static uint64_t req_done_ns; /* when the last request completed (its used length, under the lock) */
static uint8_t request(const uint8_t *r, size_t len)
{
	uint8_t tail[4] = { 0xff };

	dev_lock();
	viommu_device_batch_begin(dev);
	if (viommu_device_request_buf(dev, r, len, tail, sizeof(tail)) != sizeof(tail))
		tail[0] = 0xff;
	viommu_device_batch_end(dev); /* observers synced: strict INVALIDATEs are done */
	req_done_ns = now_ns();
	dev_unlock();
	return tail[0];
}

static void device_reset(void)
{
	dev_lock();
	viommu_device_batch_begin(dev);
	viommu_device_reset(dev);
	viommu_device_batch_end(dev);
	dev_unlock();
	viommu_device_eventq_post(dev, 256); /* a reset returned the driver's event buffers */
}

static uint8_t map_one(unsigned m)
{
	uint8_t r[64];

	return request(r, viommu_req_map(r, DOMAIN, maps[m].iova, maps[m].iova + maps[m].size - 1,
					 maps[m].gpa, maps[m].flags));
}

static uint8_t unmap_one(unsigned m)
{
	uint8_t r[64];

	return request(r, viommu_req_unmap(r, DOMAIN, maps[m].iova, maps[m].iova + maps[m].size - 1));
}

static uint8_t attach(void)
{
	uint8_t r[64];

	return request(r, viommu_req_attach(r, DOMAIN, EP, 0));
}

static uint8_t detach(void)
{
	uint8_t r[64];

	return request(r, viommu_req_detach(r, DOMAIN, EP));
}

static void map_all(void)
{
	for (unsigned m = 0; m < M_COUNT; m++)
		CHECK(map_one(m) == VIOMMU_S_OK, "MAP %s", maps[m].name);
}

/* Faults the device queued for the event queue since the last call, by reason. */
static unsigned fault_counts[3];
static unsigned drain_faults(uint64_t want_addr_lo, uint64_t want_addr_hi, unsigned *in_range)
{
	struct viommu_wire_fault f;
	unsigned n = 0;

	dev_lock();
	viommu_fastpath_poll_faults(fp);
	while (viommu_device_fault_pop(dev, &f) == 0) {
		uint64_t addr = viommu_le64(&f.address);

		n++;
		if (f.reason < 3)
			fault_counts[f.reason]++;
		if (in_range && addr >= want_addr_lo && addr <= want_addr_hi)
			(*in_range)++;
	}
	viommu_device_eventq_post(dev, n);
	dev_unlock();
	return n;
}

/* ---- virtqueues (split rings, the driver side) ---- */

struct vq {
	unsigned index, ring; /* vq index, mapping of its rings */
	struct vring_desc *desc;
	uint16_t *avail; /* flags, idx, ring[QSZ] */
	uint8_t *used; /* flags, idx, ring[QSZ] of used_elem */
	uint16_t avail_idx, used_seen;
	int kick, call;
};
static struct vq rxq = { .index = 0, .ring = M_RXRING }, txq = { .index = 1, .ring = M_TXRING };

static void vq_init(struct vq *q)
{
	uint8_t *base = gpa_ptr(maps[q->ring].gpa);

	memset(base, 0, RING_SIZE);
	q->desc = (struct vring_desc *)base;
	q->avail = (uint16_t *)(base + QSZ * sizeof(struct vring_desc));
	q->used = base + USED_OFF;
	q->avail_idx = q->used_seen = 0;
	if (q->kick <= 0) {
		q->kick = eventfd(0, EFD_NONBLOCK);
		q->call = eventfd(0, EFD_NONBLOCK);
	}
}

static uint16_t used_idx(struct vq *q)
{
	/* Acquire: the used element and the buffer it describes are read after (virtio). */
	return __atomic_load_n((uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE);
}

static struct vring_used_elem used_elem(struct vq *q, uint16_t i)
{
	struct vring_used_elem e;

	memcpy(&e, q->used + 4 + (i % QSZ) * sizeof(e), sizeof(e));
	return e;
}

static void avail_push(struct vq *q, uint16_t head)
{
	q->avail[2 + q->avail_idx % QSZ] = head;
	q->avail_idx++;
	/* Release: the descriptors and the ring entry before the index the device reads. */
	__atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct vq *q)
{
	uint64_t one = 1;

	if (write(q->kick, &one, sizeof(one)) != sizeof(one))
		fail("kick");
}

/* Wait until the used index reaches @want or @ms pass; returns the used index. */
static uint16_t wait_used(struct vq *q, uint16_t want, unsigned ms, void (*service)(void))
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull, cnt;
	uint16_t u;

	while ((uint16_t)((u = used_idx(q)) - want) > 0x8000 && now_ns() < end) {
		struct pollfd p = { .fd = q->call, .events = POLLIN };

		if (service)
			service();
		poll(&p, 1, service ? 1 : 10);
		if (read(q->call, &cnt, sizeof(cnt)) < 0) {
			/* EAGAIN: nothing signalled yet */
		}
	}
	return u;
}

/* ---- frames ---- */
static uint32_t seed;
static unsigned *sizes, nsizes;
static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t host_mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };
#define ETHERTYPE_TEST 0x88b5 /* IEEE local experimental */

static uint32_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (uint32_t)(*s >> 11);
}

/* The frame with sequence @seq, direction @dir: deterministic from the seed. */
static void frame_make(uint8_t *buf, unsigned len, uint32_t seq, int dir)
{
	uint64_t s = ((uint64_t)seed << 32 | seq) * 0x9e3779b97f4a7c15ull + (uint64_t)dir + 1;

	memcpy(buf, dir ? guest_mac : host_mac, 6);
	memcpy(buf + 6, dir ? host_mac : guest_mac, 6);
	buf[12] = ETHERTYPE_TEST >> 8;
	buf[13] = ETHERTYPE_TEST & 0xff;
	memcpy(buf + 14, &seq, 4);
	buf[18] = (uint8_t)dir;
	for (unsigned i = 19; i < len; i++)
		buf[i] = (uint8_t)rnd(&s);
}

/* ---- the tap and its AF_PACKET socket ---- */
static int tapfd = -1, pkt = -1, ifindex;

static int tap_setup(void)
{
	struct ifreq ifr;
	int hdr = HDR, s, bufsz = 16 << 20;
	struct sockaddr_ll sll;
	FILE *f;

	tapfd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tapfd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "vn0");
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(tapfd, TUNSETIFF, &ifr) < 0 || ioctl(tapfd, TUNSETVNETHDRSZ, &hdr) < 0)
		return -errno;
	/* Else the host's ND/MLD frames land in the guest's RX queue. */
	f = fopen("/proc/sys/net/ipv6/conf/vn0/disable_ipv6", "w");
	if (f) {
		fputs("1\n", f);
		fclose(f);
	}
	s = socket(AF_INET, SOCK_DGRAM, 0);
	/* The largest a tap takes (65535 minus its Ethernet header): frames up to 65535 bytes. */
	ifr.ifr_mtu = 65521;
	if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
		return -errno;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 || ioctl(s, SIOCGIFINDEX, &ifr) < 0)
		return -errno;
	ifindex = ifr.ifr_ifindex;
	close(s);
	/* The guest's TX frames are received by the tap device: read them there. Frames we send
	 * on it are transmitted to the tap: they are the guest's RX. */
	pkt = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (pkt < 0)
		return -errno;
	setsockopt(pkt, SOL_SOCKET, SO_RCVBUFFORCE, &bufsz, sizeof(bufsz));
	setsockopt(pkt, SOL_SOCKET, SO_SNDBUFFORCE, &bufsz, sizeof(bufsz));
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = ifindex;
	if (bind(pkt, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return -errno;
	return 0;
}

static int pkt_send(const uint8_t *buf, unsigned len)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6 };

	memcpy(sll.sll_addr, buf, 6);
	for (int tries = 0; tries < 1000; tries++) {
		if (sendto(pkt, buf, len, 0, (struct sockaddr *)&sll, sizeof(sll)) == (ssize_t)len)
			return 0;
		if (errno != ENOBUFS && errno != EAGAIN)
			return -errno;
		usleep(1000);
	}
	return -ENOBUFS;
}

/* One frame the tap received (a guest TX), or -1 when none within @ms. Our own sends (outgoing)
 * and foreign frames are skipped. */
static uint8_t rxbuf[FRAME_MAX + 64];
static long pkt_recv(unsigned ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;

	for (;;) {
		struct sockaddr_ll sll;
		socklen_t sl = sizeof(sll);
		ssize_t n = recvfrom(pkt, rxbuf, sizeof(rxbuf), 0, (struct sockaddr *)&sll, &sl);

		if (n >= 0) {
			if (sll.sll_pkttype == PACKET_OUTGOING || n < 19 ||
			    rxbuf[12] != ETHERTYPE_TEST >> 8 || rxbuf[13] != (ETHERTYPE_TEST & 0xff) ||
			    rxbuf[18] != 1)
				continue;
			return n;
		}
		if (errno != EAGAIN)
			return -1;
		if (now_ns() >= end)
			return -1;
		struct pollfd p = { .fd = pkt, .events = POLLIN };
		poll(&p, 1, 5);
	}
}

/* ---- vhost-net ---- */
static int vhost = -1;
struct counts {
	uint64_t tx, rx, corrupt, lost, stale;
	uint64_t want_tx, want_rx; /* frames sent that must arrive (a parked one counts once restored) */
};
static struct counts tot;

static int vhost_setup_rings(int fd, bool iova, bool init)
{
	struct vq *qs[2] = { &rxq, &txq };

	for (int i = 0; i < 2; i++) {
		struct vq *q = qs[i];
		const struct mapping *m = &maps[q->ring];
		uint64_t base = iova ? m->iova : (uint64_t)(uintptr_t)gpa_ptr(m->gpa);
		struct vhost_vring_state num = { q->index, QSZ }, vbase = { q->index, 0 };
		struct vhost_vring_addr a = {
			.index = q->index,
			.desc_user_addr = base,
			.avail_user_addr = base + QSZ * sizeof(struct vring_desc),
			.used_user_addr = base + USED_OFF,
		};
		struct vhost_vring_file k = { q->index, q->kick }, c = { q->index, q->call };

		if (init)
			vq_init(q);
		k.fd = q->kick;
		c.fd = q->call;
		if (ioctl(fd, VHOST_SET_VRING_NUM, &num) < 0 || ioctl(fd, VHOST_SET_VRING_BASE, &vbase) < 0 ||
		    ioctl(fd, VHOST_SET_VRING_ADDR, &a) < 0 || ioctl(fd, VHOST_SET_VRING_KICK, &k) < 0 ||
		    ioctl(fd, VHOST_SET_VRING_CALL, &c) < 0)
			return -errno;
	}
	return 0;
}

static int vhost_mem_table(int fd, bool iommu)
{
	struct {
		struct vhost_memory m;
		struct vhost_memory_region r[2];
	} t;

	memset(&t, 0, sizeof(t));
	t.m.nregions = 2;
	for (int i = 0; i < 2; i++) {
		t.r[i].guest_phys_addr = regions[i].gpa;
		t.r[i].memory_size = regions[i].size;
		t.r[i].userspace_addr = regions[i].uaddr;
	}
	(void)iommu;
	return ioctl(fd, VHOST_SET_MEM_TABLE, &t) < 0 ? -errno : 0;
}

static int set_backend(int fd, int backend)
{
	for (unsigned i = 0; i < 2; i++) {
		struct vhost_vring_file b = { i, backend };

		if (ioctl(fd, VHOST_NET_SET_BACKEND, &b) < 0)
			return -errno;
	}
	return 0;
}

/* ---- traffic ---- */

/* TX chain for frame @seq of @len bytes in slot @slot: [header][data pieces of <= 16 KiB, the
 * first piece of 1-3 KiB so chains vary]. Descriptors: 8 per in-flight frame (@k). */
static uint16_t tx_chain(unsigned k, unsigned slot, uint32_t seq, unsigned len, uint64_t data_iova,
			 unsigned data_map)
{
	struct vring_desc *d = &txq.desc[k * 8];
	uint8_t *hdr = iova_ptr(M_TXHDR, maps[M_TXHDR].iova + k * 16);
	unsigned n = 0, off = 0, first = 1024 + (seq % 3) * 1024;

	(void)slot;
	memset(hdr, 0, HDR);
	frame_make(iova_ptr(data_map, data_iova), len, seq, 1);
	d[n++] = (struct vring_desc){ dma(M_TXHDR, maps[M_TXHDR].iova + k * 16), HDR,
				      VRING_DESC_F_NEXT, 0 };
	while (off < len && n < 8) {
		unsigned piece = n == 1 ? first : 16384;

		if (piece > len - off || n == 7)
			piece = len - off;
		d[n] = (struct vring_desc){ .addr = dma(data_map, data_iova + off), .len = piece, .flags = VRING_DESC_F_NEXT };
		off += piece;
		n++;
	}
	for (unsigned i = 0; i < n; i++)
		d[i].next = (uint16_t)(k * 8 + i + 1);
	d[n - 1].flags = 0;
	return (uint16_t)(k * 8);
}

static uint64_t tx_slot_iova(unsigned slot)
{
	return maps[M_TXPOOL0].iova + slot * SLOT;
}

static unsigned tx_slot_map(unsigned slot)
{
	return tx_slot_iova(slot) < maps[M_TXPOOL1].iova ? M_TXPOOL0 : M_TXPOOL1;
}

/* RX chain @k: [header (WO)][4 x 16 KiB of slot k (WO)]. */
static uint64_t rx_slot_iova(unsigned slot)
{
	return maps[M_RXPOOL0].iova + slot * SLOT;
}

static unsigned rx_slot_map(unsigned slot)
{
	return rx_slot_iova(slot) < maps[M_RXPOOL1].iova ? M_RXPOOL0 : M_RXPOOL1;
}

static uint16_t rx_chain(unsigned k, unsigned data_map, uint64_t data_iova)
{
	struct vring_desc *d = &rxq.desc[k * 8];

	d[0] = (struct vring_desc){ dma(M_RXHDR, maps[M_RXHDR].iova + k * 16), HDR,
				    VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, (uint16_t)(k * 8 + 1) };
	for (unsigned i = 0; i < 4; i++)
		d[1 + i] = (struct vring_desc){ dma(data_map, data_iova + i * 16384ull), 16384,
						VRING_DESC_F_WRITE | (i < 3 ? VRING_DESC_F_NEXT : 0),
						(uint16_t)(k * 8 + 2 + i) };
	return (uint16_t)(k * 8);
}

static void (*service_fn)(void); /* fd-driven bridge: called while waiting */
static void service_bridge(void)
{
	struct pollfd p = { .fd = viommu_vhost_kernel_fd(bridge), .events = POLLIN };

	if (poll(&p, 1, 0) > 0)
		viommu_vhost_kernel_service(bridge);
}

static uint32_t tx_seq, rx_seq;
static uint8_t expect[FRAME_MAX];
/* When set, run_tx records each batch's kick -> all used time (us) here. */
#define TX_LAT_MAX 4096u
static uint32_t *tx_lat;
static unsigned tx_nlat;

/* @n TX frames in batches; checks each comes out of the tap byte for byte. */
static void run_tx(unsigned n, unsigned *size_i, struct counts *c)
{
	while (n) {
		unsigned k = n < BATCH ? n : BATCH, lens[BATCH];
		uint32_t seqs[BATCH];
		uint16_t want;
		uint64_t t;

		for (unsigned i = 0; i < k; i++) {
			unsigned slot = (tx_seq + i) % NSLOTS;

			lens[i] = sizes[(*size_i)++ % nsizes];
			seqs[i] = tx_seq + i;
			avail_push(&txq, tx_chain(i, slot, seqs[i], lens[i], tx_slot_iova(slot),
						  tx_slot_map(slot)));
		}
		want = (uint16_t)(txq.used_seen + k);
		c->want_tx += k;
		t = now_ns();
		kick(&txq);
		wait_used(&txq, want, 20000, service_fn);
		if (tx_lat && tx_nlat < TX_LAT_MAX)
			tx_lat[tx_nlat++] = (uint32_t)((now_ns() - t) / 1000);
		for (unsigned i = 0; i < k; i++) {
			long got = pkt_recv(2000);

			if (got < 0) {
				c->lost++;
				continue;
			}
			uint32_t s;
			memcpy(&s, rxbuf + 14, 4);
			unsigned j = 0;
			while (j < k && seqs[j] != s)
				j++;
			if (j == k) {
				c->corrupt++; /* a frame we did not send in this batch */
				continue;
			}
			frame_make(expect, lens[j], s, 1);
			if ((unsigned long)got != lens[j] || memcmp(rxbuf, expect, lens[j]))
				c->corrupt++;
			else
				c->tx++;
		}
		txq.used_seen = used_idx(&txq);
		tx_seq += k;
		n -= k;
	}
}

/* @n RX frames: post buffers, send on the tap, check each used buffer byte for byte. */
static void run_rx(unsigned n, unsigned *size_i, struct counts *c)
{
	while (n) {
		unsigned k = n < BATCH ? n : BATCH, lens[BATCH];
		uint16_t want, got;

		for (unsigned i = 0; i < k; i++) {
			uint8_t *hdr = iova_ptr(M_RXHDR, maps[M_RXHDR].iova + i * 16);

			memset(hdr, 0xee, HDR);
			avail_push(&rxq, rx_chain(i, rx_slot_map(i), rx_slot_iova(i)));
		}
		kick(&rxq);
		for (unsigned i = 0; i < k; i++) {
			lens[i] = sizes[(*size_i)++ % nsizes];
			frame_make(expect, lens[i], rx_seq + i, 0);
			if (pkt_send(expect, lens[i]))
				fail("AF_PACKET send of %u bytes: %s", lens[i], strerror(errno));
		}
		want = (uint16_t)(rxq.used_seen + k);
		c->want_rx += k;
		got = wait_used(&rxq, want, 20000, service_fn);
		for (uint16_t u = rxq.used_seen; u != got; u++) {
			struct vring_used_elem e = used_elem(&rxq, u);
			unsigned chain = e.id / 8, j;
			uint32_t s;
			uint8_t *data = iova_ptr(rx_slot_map(chain), rx_slot_iova(chain));

			memcpy(&s, data + 14, 4);
			j = s - rx_seq;
			if (e.id % 8 || chain >= k || e.len < HDR || j >= k) {
				c->corrupt++;
				continue;
			}
			frame_make(expect, lens[j], s, 0);
			if (e.len != HDR + lens[j] || memcmp(data, expect, lens[j]))
				c->corrupt++;
			else
				c->rx++;
		}
		c->lost += (uint16_t)(want - got) < 0x8000 ? (uint16_t)(want - got) : 0;
		rxq.used_seen = got;
		rx_seq += k;
		n -= k;
	}
}


/* ---- phases ---- */

static int bridge_open(const struct viommu_vhost_opts *o)
{
	bridge = viommu_vhost_kernel_attach(fp, vhost, EP, regions, 2, o);
	if (!bridge)
		return -errno;
	bridge_thread = o->thread;
	service_fn = o->thread ? NULL : service_bridge;
	return 0;
}

static int bridge_start(enum viommu_vhost_answer answer, bool thread)
{
	struct viommu_vhost_opts o = { .prefill = VIOMMU_VHOST_PREFILL_RINGS, .answer = answer,
				       .thread = thread };

	return bridge_open(&o);
}

/* The summary counts every bridge of the run (the line before it says so). */
static uint64_t all_invalidates, all_invalidate_all, all_deferred, all_faults;
static unsigned all_bridges;
static void bridge_stop(void)
{
	struct viommu_vhost_stats st;

	viommu_vhost_kernel_stats(bridge, &st);
	all_invalidates += st.invalidates;
	all_invalidate_all += st.invalidate_all;
	all_deferred += st.invalidates_deferred;
	all_faults += st.faults;
	all_bridges++;
	viommu_vhost_kernel_detach(bridge);
	bridge = NULL;
	service_fn = NULL;
}

static void traffic(unsigned frames, unsigned *size_i, struct counts *c)
{
	for (unsigned done = 0; done < frames; done += BATCH) {
		unsigned k = frames - done < BATCH ? frames - done : BATCH;

		run_tx(k, size_i, c);
		run_rx(k, size_i, c);
	}
}

static void add(struct counts *c)
{
	tot.tx += c->tx;
	tot.rx += c->rx;
	tot.corrupt += c->corrupt;
	tot.lost += c->lost;
	tot.stale += c->stale;
	tot.want_tx += c->want_tx;
	tot.want_rx += c->want_rx;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t times[65536];
static void service_percentiles(uint32_t *p50, uint32_t *p90)
{
	unsigned n = viommu_vhost_kernel_service_times(bridge, times, 65536);

	if (n > 65536)
		n = 65536;
	*p50 = *p90 = 0;
	if (!n)
		return;
	qsort(times, n, sizeof(times[0]), cmp_u32);
	*p50 = times[n / 2];
	*p90 = times[n * 9 / 10];
}

/* A TX chain whose data is in mapping @m (one frame of @len), pushed and kicked; returns the
 * frame's seq. */
static uint32_t tx_one(unsigned m, unsigned len)
{
	uint32_t seq = tx_seq++;

	avail_push(&txq, tx_chain(0, 0, seq, len, maps[m].iova, m));
	kick(&txq);
	return seq;
}

/* After the guest's access was removed: a TX from the buffer and an RX into one must neither read
 * nor write it; the MISSes become faults. @tx_m/@rx_m: the buffers' mappings; returns the faults
 * seen for them. */
static unsigned check_no_access(const char *what, unsigned tx_m, unsigned rx_m, struct counts *c,
				uint32_t *pending_tx)
{
	unsigned faults = 0, in = 0;
	uint16_t before = txq.used_seen;
	uint8_t *rxdata = iova_ptr(rx_m, maps[rx_m].iova);

	/* The VMM may give the page to someone else now: whatever vhost reads is not the frame. */
	memset(iova_ptr(tx_m, maps[tx_m].iova), 0x5a, 2048);
	*pending_tx = tx_one(tx_m, 1514);
	memset(iova_ptr(tx_m, maps[tx_m].iova), 0x5a, 2048); /* tx_one wrote the frame: poison it */
	if (wait_used(&txq, (uint16_t)(before + 1), 1500, service_fn) != before)
		c->stale++, fail("%s: vhost completed a TX from a buffer it cannot reach", what);
	if (pkt_recv(300) >= 0)
		c->stale++, fail("%s: a frame left the tap from a buffer vhost cannot reach", what);
	faults += drain_faults(maps[tx_m].iova, maps[tx_m].iova + maps[tx_m].size - 1, &in);

	memset(rxdata, 0x5a, 4 * 16384);
	memset(iova_ptr(M_RXHDR, maps[M_RXHDR].iova), 0x5a, HDR);
	before = rxq.used_seen;
	avail_push(&rxq, rx_chain(0, rx_m, maps[rx_m].iova));
	kick(&rxq);
	frame_make(expect, 1514, rx_seq, 0);
	pkt_send(expect, 1514);
	if (wait_used(&rxq, (uint16_t)(before + 1), 1500, service_fn) != before)
		c->stale++, fail("%s: vhost completed an RX into a buffer it cannot reach", what);
	for (unsigned i = 0; i < 4 * 16384; i++)
		if (rxdata[i] != 0x5a) {
			c->stale++;
			fail("%s: vhost wrote a buffer it cannot reach (byte %u)", what, i);
			break;
		}
	faults += drain_faults(maps[rx_m].iova, maps[rx_m].iova + maps[rx_m].size - 1, &in);
	struct viommu_vhost_stats bs;
	viommu_vhost_kernel_stats(bridge, &bs);
	printf("  %s: TX and RX to the buffers: no completion, memory untouched, %u faults (%u at "
	       "their IOVAs); bridge: %llu misses, %llu faults, %llu updates so far\n", what, faults, in,
	       (unsigned long long)bs.misses, (unsigned long long)bs.faults,
	       (unsigned long long)bs.updates);
	return faults;
}

/* Access restored (re-MAP, re-ATTACH): the parked TX and RX complete, byte for byte. */
static void check_access_back(const char *what, unsigned tx_m, unsigned rx_m, uint32_t tx_seqno,
			      struct counts *c)
{
	uint16_t want = (uint16_t)(txq.used_seen + 1);
	long got;
	struct vring_used_elem e;
	uint8_t *rxdata = iova_ptr(rx_m, maps[rx_m].iova);

	c->want_tx++;
	c->want_rx++;
	frame_make(iova_ptr(tx_m, maps[tx_m].iova), 1514, tx_seqno, 1);
	kick(&txq);
	if (wait_used(&txq, want, 5000, service_fn) != want)
		c->lost++, fail("%s: the parked TX did not complete", what);
	txq.used_seen = used_idx(&txq);
	got = pkt_recv(3000);
	frame_make(expect, 1514, tx_seqno, 1);
	if (got < 0)
		c->lost++, fail("%s: the parked TX frame did not arrive", what);
	else if (got != 1514 || memcmp(rxbuf, expect, 1514))
		c->corrupt++, fail("%s: the parked TX frame differs", what);
	else
		c->tx++;

	want = (uint16_t)(rxq.used_seen + 1);
	kick(&rxq);
	if (wait_used(&rxq, want, 5000, service_fn) != want) {
		c->lost++, fail("%s: the parked RX did not complete", what);
		return;
	}
	e = used_elem(&rxq, rxq.used_seen);
	rxq.used_seen = want;
	frame_make(expect, 1514, rx_seq, 0);
	rx_seq++;
	if (e.len != HDR + 1514 || memcmp(rxdata, expect, 1514))
		c->corrupt++, fail("%s: the parked RX frame differs", what);
	else
		c->rx++;
	printf("  %s: the parked TX and RX completed\n", what);
}

/* ---- the figures: interleaved blocks in one run ---- */

/* A second vhost-net on the same rings without ACCESS_PLATFORM (descriptors hold GPAs): the
 * IOMMU-off side. Only one of the two holds the tap at a time. */
static int off_fd = -1;

static int vring_base(int fd, struct vq *q)
{
	struct vhost_vring_state st = { q->index, q->avail_idx };

	return ioctl(fd, VHOST_SET_VRING_BASE, &st) < 0 ? -errno : 0;
}

/* Hand the tap and both queues from vhost fd @from to @to, between blocks: every buffer posted
 * was used, so the next one @to takes is at the avail index; SET_BACKEND reads used->idx. */
static int backend_switch(int from, int to)
{
	int err;

	if ((err = set_backend(from, -1)) || (err = vring_base(to, &rxq)) || (err = vring_base(to, &txq)))
		return err;
	return set_backend(to, tapfd);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Churn beside TX (a thread of its own, one cycle about every millisecond while TX runs; it plays
 * the device thread, every request under the bridge's lock). The TX victim is an extent no frame
 * of the block uses. Five kinds, rotated over the rounds:
 *   quiet      no churn thread;
 *   wakeups    the thread wakes every millisecond and does nothing;
 *   control    the victim unmapped and mapped again in DOMAIN2 (the same requests and fast-path
 *              work; no bridge serves it, so no vhost message), then the bridge's prefill of the
 *              victim in DOMAIN: the same lookup and the same UPDATE write() as `with`. Without an
 *              INVALIDATE vhost keeps each UPDATE as one more entry; they are dropped between
 *              blocks, untimed;
 *   lock-only  control plus, where `with` has its INVALIDATE, one write() of a message vhost
 *              refuses (EFAULT) after taking the device mutex and every vq mutex (an iotlb
 *              message of type ACCESS_FAIL): an INVALIDATE's syscall and locks, nothing removed,
 *              no ring cache emptied;
 *   with       the victim unmapped (the bridge writes its INVALIDATE inside the request) and
 *              mapped again in DOMAIN, then the same prefill.
 * Each cycle's CPU time is measured on the churn thread (CLOCK_THREAD_CPUTIME_ID: it includes the
 * kernel's handling of its writes, which runs in this thread). */
static unsigned churn_cycles;
static uint64_t churn_cpu_ns, unmap_cpu_ns, unmap_wall_ns, lockw_ns, lockw_cpu_ns, lockw_n;
static bool churn_stop;
static void churn_none(void)
{
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void churn_prefill(void)
{
	CHECK(!viommu_vhost_kernel_prefill(bridge, maps[M_TXVICTIM].iova, maps[M_TXVICTIM].size),
	      "churn prefill");
}

static void churn_own(void)
{
	uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
	uint8_t st = unmap_one(M_TXVICTIM);

	unmap_wall_ns += now_ns() - t0;
	unmap_cpu_ns += thread_cpu_ns() - c0;
	CHECK(st == VIOMMU_S_OK && map_one(M_TXVICTIM) == VIOMMU_S_OK, "churn");
	churn_prefill();
}

static void churn_other_unmap(void)
{
	uint8_t r[64];
	const struct mapping *m = &maps[M_TXVICTIM];
	uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
	uint8_t st = request(r, viommu_req_unmap(r, DOMAIN2, m->iova, m->iova + m->size - 1));

	unmap_wall_ns += now_ns() - t0;
	unmap_cpu_ns += thread_cpu_ns() - c0;
	CHECK(st == VIOMMU_S_OK, "control churn UNMAP");
}

static void churn_other_map(void)
{
	uint8_t r[64];
	const struct mapping *m = &maps[M_TXVICTIM];

	CHECK(request(r, viommu_req_map(r, DOMAIN2, m->iova, m->iova + m->size - 1, m->gpa, m->flags)) ==
	      VIOMMU_S_OK, "control churn MAP");
}

static void churn_ctrl(void)
{
	churn_other_unmap();
	churn_other_map();
	churn_prefill();
}

static void churn_lockwrite(void)
{
	struct vhost_msg_v2 m;
	uint64_t t, c0;
	ssize_t w;

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.type = VHOST_IOTLB_ACCESS_FAIL; /* vhost.c: the default case, after the locks */
	m.iotlb.iova = maps[M_TXVICTIM].iova;
	m.iotlb.size = maps[M_TXVICTIM].size;
	churn_other_unmap();
	dev_lock(); /* where `with` writes its INVALIDATE: inside the request, under the lock */
	c0 = thread_cpu_ns();
	t = now_ns();
	w = write(vhost, &m, sizeof(m));
	lockw_ns += now_ns() - t;
	lockw_cpu_ns += thread_cpu_ns() - c0;
	lockw_n++;
	dev_unlock();
	CHECK(w < 0 && errno == EFAULT, "the lock-only write is refused with EFAULT (%zd, %s)", w,
	      strerror(errno));
	churn_other_map();
	churn_prefill();
}

static void *churn_main(void *arg)
{
	void (*fn)(void) = (void (*)(void))arg;

	while (!__atomic_load_n(&churn_stop, __ATOMIC_ACQUIRE)) {
		uint64_t c0 = thread_cpu_ns();

		fn();
		churn_cpu_ns += thread_cpu_ns() - c0;
		churn_cycles++;
		usleep(1000);
	}
	return NULL;
}

static uint32_t pct_u32(uint32_t *v, unsigned n, unsigned pct)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u32);
	return v[(uint64_t)(n - 1) * pct / 100];
}

/* ---- hostile rings ---- */

/* The driver moves queue @q's ring to IOVA @iova, its memory to @gpa (copied: the queue is idle;
 * @copy false when @gpa is no memory), the VMM tells vhost as QEMU does: backend off, ring
 * addresses, base, the ring pushed (SET_BACKEND reads used->idx), backend on. Returns the first
 * refusal (-errno); *@prefill_err gets the prefill's. */
static int ring_move(struct vq *q, uint64_t iova, uint64_t gpa, bool copy, int *prefill_err)
{
	struct vhost_vring_file off = { q->index, -1 }, on = { q->index, tapfd };
	struct vhost_vring_addr a = { .index = q->index, .desc_user_addr = iova,
				      .avail_user_addr = iova + QSZ * sizeof(struct vring_desc),
				      .used_user_addr = iova + USED_OFF };
	struct vhost_vring_state base = { q->index, q->avail_idx };

	if (ioctl(vhost, VHOST_NET_SET_BACKEND, &off) < 0)
		return -errno;
	if (copy) {
		uint8_t *to = gpa_ptr(gpa);

		memmove(to, q->desc, RING_SIZE);
		q->desc = (struct vring_desc *)to;
		q->avail = (uint16_t *)(to + QSZ * sizeof(struct vring_desc));
		q->used = to + USED_OFF;
	}
	if (ioctl(vhost, VHOST_SET_VRING_ADDR, &a) < 0 || ioctl(vhost, VHOST_SET_VRING_BASE, &base) < 0)
		return -errno;
	*prefill_err = viommu_vhost_kernel_prefill(bridge, iova, RING_SIZE);
	return ioctl(vhost, VHOST_NET_SET_BACKEND, &on) < 0 ? -errno : 0;
}

static uint8_t map_raw(uint32_t domain, uint64_t iova, uint64_t last, uint64_t gpa, uint32_t flags)
{
	uint8_t r[64];

	return request(r, viommu_req_map(r, domain, iova, last, gpa, flags));
}

static uint8_t unmap_raw(uint32_t domain, uint64_t iova, uint64_t last)
{
	uint8_t r[64];

	return request(r, viommu_req_unmap(r, domain, iova, last));
}

/* The MAP/UNMAP flood on its own thread, concurrent with traffic: it plays the device thread
 * (every request under the bridge's lock, dev_lock) while the bridge's thread serves misses. */
static bool flood_stop;
static unsigned flood_maps, flood_unmaps;
static void *flood_main(void *arg)
{
	uint64_t s = (uint64_t)seed * 0x2545f4914f6cdd1dull + 7;
	uint8_t st;

	(void)arg;
	while (!__atomic_load_n(&flood_stop, __ATOMIC_ACQUIRE)) {
		/* unrelated extents, some right next to the pools the traffic uses */
		uint64_t iova = (rnd(&s) & 1) ? 0x20000000ull + (uint64_t)(rnd(&s) % 4096) * 0x10000
					      : maps[M_RXPOOL0].iova - 0x10000 * (1 + rnd(&s) % 4);

		st = map_raw(DOMAIN, iova, iova + 0xffff, 0x900000 + (rnd(&s) % 16) * 0x10000,
			     VIOMMU_MAP_F_READ);
		flood_maps++;
		if (st == VIOMMU_S_OK && unmap_raw(DOMAIN, iova, iova + 0xffff) == VIOMMU_S_OK)
			flood_unmaps++;
	}
	return NULL;
}

static unsigned parse_sizes(const char *s)
{
	unsigned n = 0, cap = 16;

	sizes = malloc(cap * sizeof(*sizes));
	while (s && *s) {
		char *end;
		unsigned long v = strtoul(s, &end, 0);

		if (end == s || v < 60 || v > FRAME_MAX) {
			fprintf(stderr, "VHOST_NET_SIZES: sizes are 60..%u bytes, comma-separated\n", FRAME_MAX);
			exit(2);
		}
		if (n == cap)
			sizes = realloc(sizes, (cap *= 2) * sizeof(*sizes));
		sizes[n++] = (unsigned)v;
		s = *end == ',' ? end + 1 : end;
	}
	return n;
}

int main(void)
{
	const char *e;
	unsigned frames = 2000, size_i = 0, faults_seen = 0;
	struct viommu_config cfg;
	struct viommu_fastpath_opts fo = { .nodes = 16384, .extents = 1u << 16, .hash_buckets = 4096 };
	struct viommu_vhost_stats st;
	uint64_t acked, misses_extent, misses_page, extents_used = 0, t0;
	double fps_extent, fps_page;
	uint32_t p50, p90, pending;
	const char *why;
	int memfd, err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	seed = (e = getenv("VHOST_NET_SEED")) ? (uint32_t)strtoul(e, NULL, 0) : 1;
	if ((e = getenv("VHOST_NET_FRAMES")))
		frames = (unsigned)strtoul(e, NULL, 0);
	nsizes = parse_sizes((e = getenv("VHOST_NET_SIZES")) ? e :
			     "60,1514,128,9000,590,65535,4096,1500,32768,256,16384,1024");
	if (!nsizes || frames < 1) {
		fprintf(stderr, "vhost-net: nothing to send\n");
		return 2;
	}
	printf("vhost-net: seed %u, %u frames per direction, %u sizes\n", seed, frames, nsizes);

	/* Guest memory: one memfd, two VMM regions. */
	memfd = memfd_create("guest-ram", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, 2 * MEM_SIZE) < 0) {
		perror("memfd");
		return 1;
	}
	for (int i = 0; i < 2; i++) {
		mem[i] = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, i * MEM_SIZE);
		if (mem[i] == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		regions[i] = (struct viommu_vhost_region){ i ? MEM1_GPA : MEM0_GPA, MEM_SIZE,
							   (uint64_t)(uintptr_t)mem[i] };
	}

	/* The device, its fast path, the driver's ATTACH and MAPs. */
	viommu_config_default(&cfg);
	cfg.bypass = 0; /* a detached endpoint is blocked, not identity */
	dev = viommu_device_new(&cfg);
	if (!dev || viommu_device_add_endpoint(dev, EP, true, NULL, 0) ||
	    viommu_device_add_endpoint(dev, EP2, true, NULL, 0)) {
		perror("viommu_device_new");
		return 1;
	}
	fp = viommu_fastpath_new(dev, &fo);
	if (!fp) {
		printf("vhost-net: the fast path cannot be created in the guest: %s\n", strerror(errno));
		return 1;
	}
	viommu_device_eventq_post(dev, 256);
	CHECK(attach() == VIOMMU_S_OK, "ATTACH");
	map_all();
	{
		uint8_t r[64];
		const struct mapping *m = &maps[M_TXVICTIM];

		CHECK(request(r, viommu_req_attach(r, DOMAIN2, EP2, 0)) == VIOMMU_S_OK &&
		      map_raw(DOMAIN2, m->iova, m->iova + m->size - 1, m->gpa, m->flags) == VIOMMU_S_OK,
		      "the control endpoint's ATTACH and MAP");
	}

	/* vhost-net: owner, ACCESS_PLATFORM + MSG_V2, the bridge, memory, rings (IOVAs), tap. */
	vhost = open("/dev/vhost-net", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (vhost < 0 || ioctl(vhost, VHOST_SET_OWNER) < 0) {
		printf("vhost-net: /dev/vhost-net: %s\n", strerror(errno));
		return 1;
	}
	err = viommu_vhost_kernel_negotiate(vhost, 1ull << 32 /* VERSION_1 */, &acked, &why);
	if (err) {
		printf("vhost-net: negotiation refused: %s (%s)\n", why, strerror(-err));
		return 1;
	}
	if ((err = bridge_start(VIOMMU_VHOST_ANSWER_EXTENT, true)) ||
	    (err = vhost_mem_table(vhost, true)) || (err = vhost_setup_rings(vhost, true, true)) ||
	    (err = tap_setup())) {
		printf("vhost-net: setup (%s): %s\n", !bridge ? "bridge" : tapfd < 0 ? "vhost" : "tap",
		       strerror(-err));
		return 1;
	}
	/* The IOMMU-off twin on the same rings (GPAs, no IOTLB); it takes the tap only in its blocks. */
	{
		uint64_t f1 = 1ull << 32;

		off_fd = open("/dev/vhost-net", O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (off_fd < 0 || ioctl(off_fd, VHOST_SET_OWNER) < 0 ||
		    ioctl(off_fd, VHOST_SET_FEATURES, &f1) < 0 || vhost_mem_table(off_fd, false) ||
		    vhost_setup_rings(off_fd, false, false)) {
			printf("vhost-net: the IOMMU-off vhost-net: %s\n", strerror(errno));
			return 1;
		}
	}
	/* The used rings must be in the IOTLB before SET_BACKEND (it reads used->idx). */
	CHECK(!viommu_vhost_kernel_prefill(bridge, maps[M_RXRING].iova, RING_SIZE) &&
	      !viommu_vhost_kernel_prefill(bridge, maps[M_TXRING].iova, RING_SIZE), "ring prefill");
	if ((err = set_backend(vhost, tapfd))) {
		printf("vhost-net: VHOST_NET_SET_BACKEND: %s\n", strerror(-err));
		return 1;
	}
	printf("vhost-net: features %#llx acked, backend tap vn0, bridge on endpoint %#x\n",
	       (unsigned long long)acked, EP);

	/* Phase 1: whole-extent answers, the bridge's own thread. */
	{
		struct counts c = { 0 };

		viommu_vhost_kernel_reset_stats(bridge);
		t0 = now_ns();
		traffic(frames, &size_i, &c);
		fps_extent = (double)(c.tx + c.rx) * 1e9 / (double)(now_ns() - t0);
		viommu_vhost_kernel_stats(bridge, &st);
		service_percentiles(&p50, &p90);
		misses_extent = st.misses;
		/* the extents this traffic uses: headers and pools (the rings were prefilled) */
		extents_used = 6;
		printf("  extents: %llu tx, %llu rx, %llu corrupt, %llu lost; %llu misses for %llu "
		       "extents, %llu updates (%llu prefilled); miss service p50 %u ns, p90 %u ns; "
		       "%.0f frames/s\n",
		       (unsigned long long)c.tx, (unsigned long long)c.rx,
		       (unsigned long long)c.corrupt, (unsigned long long)c.lost,
		       (unsigned long long)st.misses, (unsigned long long)extents_used,
		       (unsigned long long)st.updates, (unsigned long long)st.prefilled, p50, p90,
		       fps_extent);
		CHECK(c.tx == frames && c.rx == frames, "extents: every frame arrives");
		CHECK(st.misses <= extents_used, "extents: misses per extent <= 1 (%llu misses)",
		      (unsigned long long)st.misses);
		CHECK(st.faults == 0, "extents: no faults in clean traffic");
		add(&c);
	}

	/* Figure: IOMMU on vs off, in blocks that alternate in one run (on-off, off-on, ...), the tap
	 * handed between the two vhost-nets; the ratio of each round, their median. */
	double onoff_med = 0, onoff_min = 0, onoff_max = 0, fps_on = 0, fps_off = 0;
	unsigned ab_rounds = 12, ab_blk = frames / 4 / BATCH * BATCH;
	uint64_t ab_misses = 0;
	{
		struct counts c = { 0 };
		double ratio[16], on_t = 0, off_t = 0;
		bool cur_on = true;
		unsigned want = 0;

		if (ab_blk < BATCH)
			ab_blk = BATCH;
		viommu_vhost_kernel_reset_stats(bridge);
		for (unsigned r = 0; r < ab_rounds; r++) {
			double f[2] = { 0, 0 };

			for (unsigned j = 0; j < 2; j++) {
				bool on = (r & 1) ? j == 1 : j == 0;
				uint64_t t;

				if (on != cur_on) {
					err = backend_switch(on ? off_fd : vhost, on ? vhost : off_fd);
					CHECK(!err, "hand the tap to the IOMMU-%s vhost-net: %s", on ? "on" : "off",
					      strerror(-err));
					cur_on = on;
				}
				gpa_mode = !on;
				t = now_ns();
				traffic(ab_blk, &size_i, &c);
				t = now_ns() - t;
				gpa_mode = false;
				want += ab_blk;
				f[on] = 2.0 * ab_blk * 1e9 / (double)t;
				*(on ? &on_t : &off_t) += (double)t;
			}
			ratio[r] = f[1] / f[0];
		}
		if (!cur_on)
			CHECK(!backend_switch(off_fd, vhost), "the tap back to the IOMMU-on vhost-net");
		viommu_vhost_kernel_stats(bridge, &st);
		ab_misses = st.misses;
		fps_on = 2.0 * ab_blk * ab_rounds * 1e9 / on_t;
		fps_off = 2.0 * ab_blk * ab_rounds * 1e9 / off_t;
		onoff_med = median(ratio, ab_rounds);
		onoff_min = ratio[0];
		onoff_max = ratio[ab_rounds - 1];
		printf("  on/off: %u rounds of %u frames per direction each side, alternating: %llu tx, "
		       "%llu rx, %llu corrupt, %llu lost; %.0f vs %.0f frames/s; ratio median %.3f "
		       "(min %.3f, max %.3f); %llu misses on the on side\n", ab_rounds, ab_blk,
		       (unsigned long long)c.tx, (unsigned long long)c.rx, (unsigned long long)c.corrupt,
		       (unsigned long long)c.lost, fps_on, fps_off, onoff_med, onoff_min, onoff_max,
		       (unsigned long long)ab_misses);
		CHECK(c.tx == want && c.rx == want, "on/off: every frame arrives");
		CHECK(ab_misses == 0, "on/off: no misses once the extents are in the IOTLB");
		add(&c);
	}

	/* Figure: TX of buffers in untouched extents beside churn of the TX victim: quiet, control (the
	 * same requests, lookup and UPDATE, no INVALIDATE), lock-only (control plus a write() that
	 * takes vhost's locks and changes nothing), with INVALIDATE; rotated over the rounds, TX only.
	 * On the guest's one vCPU whatever the churn thread runs is time TX does not get, so each
	 * kind's churn CPU share is measured too: it predicts the ratio if the INVALIDATE costs TX its
	 * CPU time and nothing more (no waiting on its locks). */
	enum { K_QUIET, K_WAKE, K_CTRL, K_LOCKW, K_WITH, K_N };
	double st_fps[K_N] = { 0 }, st_cpu_us[K_N] = { 0 }, st_share[K_N] = { 0 };
	double st_wc = 0, st_wl = 0, st_lc = 0, st_cw = 0, st_wq = 0, st_pred = 0, inv_us = 0, lockw_us = 0;
	double st_unmap_us[K_N] = { 0 }, st_unmap_wall_us[K_N] = { 0 }, lockw_cpu_us = 0;
	double inval_per_s = 0;
	unsigned st_rounds = 15, st_cycles[K_N] = { 0 };
	uint32_t st_lat[K_N][3];
	uint64_t txonly = 0;
	{
		struct counts c = { 0 };
		void (*churn[K_N])(void) = { churn_none, churn_none, churn_ctrl, churn_lockwrite, churn_own };
		double t_sum[K_N] = { 0 }, cpu[K_N] = { 0 }, ucpu[K_N] = { 0 }, uwall[K_N] = { 0 }, r_wc[16], r_wl[16], r_lc[16],
		       r_cw[16], r_wq[16];
		static uint32_t lat[K_N][TX_LAT_MAX];
		unsigned nlat[K_N] = { 0 };
		uint64_t want = 0, inv0, invns0, invw;

		viommu_vhost_kernel_stats(bridge, &st);
		inv0 = st.invalidates;
		invns0 = st.invalidate_ns;
		lockw_ns = lockw_cpu_ns = lockw_n = 0;
		for (unsigned r = 0; r < st_rounds; r++) {
			double f[K_N];

			for (unsigned j = 0; j < K_N; j++) {
				unsigned k = (r + j) % K_N;
				uint64_t t;
				pthread_t th;

				churn_cycles = 0;
				churn_cpu_ns = unmap_cpu_ns = unmap_wall_ns = 0;
				__atomic_store_n(&churn_stop, false, __ATOMIC_RELEASE);
				if (k != K_QUIET && pthread_create(&th, NULL, churn_main, (void *)churn[k]))
					fail("churn thread");
				tx_lat = lat[k];
				tx_nlat = nlat[k];
				t = now_ns();
				run_tx(ab_blk, &size_i, &c);
				t = now_ns() - t;
				nlat[k] = tx_nlat;
				tx_lat = NULL;
				__atomic_store_n(&churn_stop, true, __ATOMIC_RELEASE);
				if (k != K_QUIET)
					pthread_join(th, NULL);
				want += ab_blk;
				st_cycles[k] += churn_cycles;
				cpu[k] += (double)churn_cpu_ns;
				ucpu[k] += (double)unmap_cpu_ns;
				uwall[k] += (double)unmap_wall_ns;
				t_sum[k] += (double)t;
				f[k] = ab_blk * 1e9 / (double)t;
				/* Untimed: the control's UPDATEs are extra entries in vhost (no INVALIDATE
				 * removed them): one INVALIDATE of the victim drops them all. */
				if (k == K_CTRL || k == K_LOCKW)
					CHECK(unmap_one(M_TXVICTIM) == VIOMMU_S_OK &&
					      map_one(M_TXVICTIM) == VIOMMU_S_OK, "drop the control's entries");
			}
			r_wc[r] = f[K_WITH] / f[K_CTRL];
			r_wl[r] = f[K_WITH] / f[K_LOCKW];
			r_lc[r] = f[K_LOCKW] / f[K_CTRL];
			r_cw[r] = f[K_CTRL] / f[K_WAKE];
			r_wq[r] = f[K_WAKE] / f[K_QUIET];
		}
		viommu_vhost_kernel_stats(bridge, &st);
		for (unsigned k = 0; k < K_N; k++) {
			st_fps[k] = ab_blk * st_rounds * 1e9 / t_sum[k];
			st_share[k] = cpu[k] / t_sum[k];
			st_cpu_us[k] = st_cycles[k] ? cpu[k] / st_cycles[k] / 1e3 : 0;
			st_unmap_us[k] = st_cycles[k] ? ucpu[k] / st_cycles[k] / 1e3 : 0;
			st_unmap_wall_us[k] = st_cycles[k] ? uwall[k] / st_cycles[k] / 1e3 : 0;
			st_lat[k][0] = pct_u32(lat[k], nlat[k], 50);
			st_lat[k][1] = pct_u32(lat[k], nlat[k], 99);
			st_lat[k][2] = pct_u32(lat[k], nlat[k], 100);
		}
		st_wc = median(r_wc, st_rounds);
		st_wl = median(r_wl, st_rounds);
		st_lc = median(r_lc, st_rounds);
		st_cw = median(r_cw, st_rounds);
		st_wq = median(r_wq, st_rounds);
		/* TX gets what the churn does not take: (1 - share) of the vCPU in each kind. */
		st_pred = (1 - st_share[K_WITH]) / (1 - st_share[K_CTRL]);
		invw = st.invalidates - inv0;
		inv_us = invw ? (double)(st.invalidate_ns - invns0) / (double)invw / 1e3 : 0;
		lockw_us = lockw_n ? (double)lockw_ns / (double)lockw_n / 1e3 : 0;
		lockw_cpu_us = lockw_n ? (double)lockw_cpu_ns / (double)lockw_n / 1e3 : 0;
		inval_per_s = st_cycles[K_WITH] * 1e9 / t_sum[K_WITH];
		printf("  invalidation beside TX: %llu tx, %llu corrupt, %llu lost; %u rounds of %u kinds "
		       "rotated; TX frames/s quiet %.0f, wakeups %.0f (%u), control %.0f (%u cycles), "
		       "lock-only write %.0f (%u), with INVALIDATE %.0f (%u, %.0f INVALIDATEs/s); medians "
		       "with/lock-only %.3f, lock-only/control %.3f, with/control %.3f, control/wakeups "
		       "%.3f, wakeups/quiet %.3f; %llu faults\n",
		       (unsigned long long)c.tx, (unsigned long long)c.corrupt, (unsigned long long)c.lost,
		       st_rounds, (unsigned)K_N, st_fps[K_QUIET], st_fps[K_WAKE], st_cycles[K_WAKE],
		       st_fps[K_CTRL], st_cycles[K_CTRL], st_fps[K_LOCKW], st_cycles[K_LOCKW],
		       st_fps[K_WITH], st_cycles[K_WITH], inval_per_s, st_wl, st_lc, st_wc, st_cw, st_wq,
		       (unsigned long long)st.faults);
		printf("  invalidation beside TX, where it goes: churn CPU per cycle control %.1f us, "
		       "lock-only %.1f us, with %.1f us; UNMAP request CPU control %.1f us, with "
		       "(INVALIDATE inside) %.1f us, elapsed %.1f us and %.1f us; write() elapsed INVALIDATE %.1f us, lock-only %.1f us "
		       "(CPU %.1f us: the rest waits for the vq mutex a vhost worker holds); "
		       "churn share of the vCPU %.2f%%, %.2f%%, %.2f%%, so with/control from CPU alone "
		       "%.3f; TX batch of %u kick->used us p50/p99/max: quiet %u/%u/%u, wakeups %u/%u/%u, "
		       "control %u/%u/%u, lock-only %u/%u/%u, with %u/%u/%u\n",
		       st_cpu_us[K_CTRL], st_cpu_us[K_LOCKW], st_cpu_us[K_WITH], st_unmap_us[K_CTRL],
		       st_unmap_us[K_WITH], st_unmap_wall_us[K_CTRL], st_unmap_wall_us[K_WITH], inv_us, lockw_us, lockw_cpu_us,
		       100 * st_share[K_CTRL], 100 * st_share[K_LOCKW], 100 * st_share[K_WITH], st_pred,
		       BATCH, st_lat[K_QUIET][0], st_lat[K_QUIET][1], st_lat[K_QUIET][2],
		       st_lat[K_WAKE][0], st_lat[K_WAKE][1], st_lat[K_WAKE][2], st_lat[K_CTRL][0], st_lat[K_CTRL][1], st_lat[K_CTRL][2], st_lat[K_LOCKW][0],
		       st_lat[K_LOCKW][1], st_lat[K_LOCKW][2], st_lat[K_WITH][0], st_lat[K_WITH][1],
		       st_lat[K_WITH][2]);
		CHECK(c.tx == want, "invalidation beside TX: every frame arrives");
		CHECK(invw >= st_cycles[K_WITH], "an INVALIDATE per churn UNMAP (%llu for %u)",
		      (unsigned long long)invw, st_cycles[K_WITH]);
		CHECK(st.faults == 0, "invalidation beside TX: no faults");
		CHECK(st_cycles[K_WAKE] && st_cycles[K_CTRL] && st_cycles[K_LOCKW] && st_cycles[K_WITH],
		      "every churn kind ran");
		txonly = c.tx;
		add(&c);
	}
	bridge_stop();

	/* Phase 2: per-page answers (QEMU's way), the VMM's loop driving the bridge by its fd. */
	{
		struct counts c = { 0 };
		unsigned n = frames / 4 < BATCH ? BATCH : frames / 4;

		CHECK(!bridge_start(VIOMMU_VHOST_ANSWER_PAGE, false), "page bridge");
		t0 = now_ns();
		traffic(n, &size_i, &c);
		fps_page = (double)(c.tx + c.rx) * 1e9 / (double)(now_ns() - t0);
		viommu_vhost_kernel_stats(bridge, &st);
		misses_page = st.misses;
		printf("  pages: %llu tx, %llu rx, %llu corrupt, %llu lost; %llu misses (%.2f per "
		       "frame, extents: %.4f); %.0f frames/s\n",
		       (unsigned long long)c.tx, (unsigned long long)c.rx,
		       (unsigned long long)c.corrupt, (unsigned long long)c.lost,
		       (unsigned long long)st.misses, (double)st.misses / (2.0 * n),
		       (double)misses_extent / (2.0 * frames), fps_page);
		CHECK(c.tx == n && c.rx == n, "pages: every frame arrives");
		CHECK(misses_page > misses_extent, "pages: more misses than whole extents");
		add(&c);
		bridge_stop();
		CHECK(!bridge_start(VIOMMU_VHOST_ANSWER_EXTENT, true), "extent bridge again");
	}

	/* Phase 3: UNMAP -> no stale access; re-MAP -> works again. */
	{
		struct counts c = { 0 };
		uint8_t tx_st, rx_st;

		drain_faults(0, 0, NULL);
		tx_one(M_TXVICTIM, 1514); /* warm: the kernel holds the victims' translations */
		c.want_tx++;
		c.tx += wait_used(&txq, (uint16_t)(txq.used_seen + 1), 5000, service_fn) ==
				(uint16_t)(txq.used_seen + 1) && pkt_recv(3000) == 1514;
		txq.used_seen = used_idx(&txq);
		tx_st = unmap_one(M_TXVICTIM);
		rx_st = unmap_one(M_RXVICTIM);
		CHECK(tx_st == VIOMMU_S_OK && rx_st == VIOMMU_S_OK, "UNMAP victims");
		viommu_vhost_kernel_stats(bridge, &st);
		CHECK(st.invalidates >= 2, "UNMAP: an INVALIDATE per extent before the used length");
		faults_seen = check_no_access("unmap", M_TXVICTIM, M_RXVICTIM, &c, &pending);
		CHECK(faults_seen >= 2, "unmap: the MISSes became faults (%u)", faults_seen);
		CHECK(map_one(M_TXVICTIM) == VIOMMU_S_OK && map_one(M_RXVICTIM) == VIOMMU_S_OK, "re-MAP");
		check_access_back("re-map", M_TXVICTIM, M_RXVICTIM, pending, &c);
		add(&c);
	}

	/* Phase 4: hostile guest. */
	{
		struct counts c = { 0 };
		uint8_t r[64];
		uint64_t s = seed;
		unsigned flood = 0;

		/* MAP/UNMAP floods during traffic: unrelated extents come and go (each UNMAP an
		 * INVALIDATE, which also empties the kernel's ring caches). */
		for (unsigned round = 0; round < 8; round++) {
			unsigned k = BATCH;

			for (unsigned i = 0; i < 64; i++) {
				uint64_t iova = 0x10000000ull + (uint64_t)(rnd(&s) % 4096) * 0x10000;
				uint8_t st1 = request(r, viommu_req_map(r, DOMAIN, iova, iova + 0xffff,
								       0x900000 + (i % 16) * 0x10000,
								       VIOMMU_MAP_F_READ));

				if (st1 == VIOMMU_S_OK)
					request(r, viommu_req_unmap(r, DOMAIN, iova, iova + 0xffff));
				flood++;
			}
			run_tx(k, &size_i, &c);
			run_rx(k, &size_i, &c);
		}
		/* Rings at absurd IOVAs: the TX ring moved (backend off, addresses, base, push, backend
		 * on) to the top of the 64-bit space, to a page-unaligned IOVA whose descriptor table
		 * crosses a page, across two extents, and onto MMIO; traffic runs on each that vhost
		 * takes; a MAP at an unaligned IOVA is refused. */
		{
			static const struct {
				const char *name;
				uint64_t map_iova[2], map_size[2], map_gpa[2], ring_iova, ring_gpa;
				bool memory;
			} places[] = {
				{ "top of the IOVA space", { 0ull - 0x4000, 0 }, { 0x4000, 0 }, { 0x40000, 0 },
				  0ull - 0x4000, 0x40000, true },
				{ "unaligned", { 0x70000000, 0 }, { 0x6000, 0 }, { 0x30000, 0 }, 0x70000ff0,
				  0x30ff0, true },
				{ "across two extents", { 0x71000000, 0x71001000 }, { 0x1000, 0x4000 },
				  { 0x38000, 0x39000 }, 0x71000800, 0x38800, true },
				{ "on MMIO", { 0x72000000, 0 }, { 0x4000, 0 }, { 0xfee00000, 0 }, 0x72000000,
				  0xfee00000, false },
			};
			unsigned prev = ~0u, moved = 0;

			for (unsigned i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
				struct counts rc = { 0 };
				int perr = 0, berr;
				unsigned f, in = 0;

				for (unsigned m = 0; m < 2 && places[i].map_size[m]; m++)
					CHECK(map_raw(DOMAIN, places[i].map_iova[m],
						      places[i].map_iova[m] + places[i].map_size[m] - 1,
						      places[i].map_gpa[m], RW) == VIOMMU_S_OK,
					      "MAP the ring %s", places[i].name);
				drain_faults(0, 0, NULL);
				berr = ring_move(&txq, places[i].ring_iova, places[i].ring_gpa,
						 places[i].memory, &perr);
				if (places[i].memory) {
					CHECK(!berr && !perr, "TX ring %s: vhost takes it (%s, prefill %s)",
					      places[i].name, strerror(-berr), strerror(-perr));
					traffic(BATCH, &size_i, &rc);
					CHECK(rc.tx == BATCH && rc.rx == BATCH && !rc.corrupt,
					      "TX ring %s: every frame arrives", places[i].name);
					moved++;
				} else {
					/* vhost reads used->idx at SET_BACKEND: a MISS the bridge cannot answer
					 * with memory, so a fault, and vhost refuses the ring (EFAULT). */
					usleep(100000);
					f = drain_faults(places[i].ring_iova, places[i].ring_iova + RING_SIZE - 1, &in);
					CHECK(berr == -EFAULT && perr == -EFAULT && in >= 1,
					      "TX ring %s: refused with a fault (SET_BACKEND %s, prefill %s, %u "
					      "faults, %u at the ring)", places[i].name, strerror(-berr),
					      strerror(-perr), f, in);
				}
				printf("  ring %s (IOVA %#llx): %s\n", places[i].name,
				       (unsigned long long)places[i].ring_iova,
				       places[i].memory ? (rc.tx == BATCH && rc.rx == BATCH ? "traffic flows"
											    : "traffic FAILED")
							: (berr == -EFAULT && in ? "refused, a fault at the ring"
										 : "NOT refused"));
				add(&rc);
				/* the guest unmaps where the ring was (an INVALIDATE each) */
				if (prev != ~0u)
					for (unsigned m = 0; m < 2 && places[prev].map_size[m]; m++)
						CHECK(unmap_raw(DOMAIN, places[prev].map_iova[m],
								places[prev].map_iova[m] + places[prev].map_size[m] - 1) ==
						      VIOMMU_S_OK, "UNMAP the old ring %s", places[prev].name);
				prev = ~0u;
				if (!places[i].memory)
					for (unsigned m = 0; m < 2 && places[i].map_size[m]; m++)
						unmap_raw(DOMAIN, places[i].map_iova[m],
							  places[i].map_iova[m] + places[i].map_size[m] - 1);
				else
					prev = i;
			}
			{
				int perr = 0, berr = ring_move(&txq, maps[M_TXRING].iova, maps[M_TXRING].gpa,
							       true, &perr);
				struct counts rc = { 0 };

				CHECK(!berr && !perr, "the TX ring back home");
				for (unsigned m = 0; prev != ~0u && m < 2 && places[prev].map_size[m]; m++)
					unmap_raw(DOMAIN, places[prev].map_iova[m],
						  places[prev].map_iova[m] + places[prev].map_size[m] - 1);
				traffic(BATCH, &size_i, &rc);
				CHECK(rc.tx == BATCH && rc.rx == BATCH && !rc.corrupt, "TX ring home: every frame");
				add(&rc);
			}
			CHECK(map_raw(DOMAIN, 0x73000010, 0x7300100f, 0x30000, RW) != VIOMMU_S_OK,
			      "a MAP at an unaligned IOVA is refused");
			CHECK(map_raw(DOMAIN, 0x73000000, 0x73000fff, 0x30010, RW) != VIOMMU_S_OK,
			      "a MAP of an unaligned address is refused");
			(void)moved;
		}

		/* A MAP/UNMAP flood on its own thread concurrent with traffic, the bridge's thread
		 * answering one page per miss meanwhile (so it serves misses all along): thread mode's
		 * contract under load. */
		{
			struct counts fc = { 0 };
			pthread_t th;
			uint64_t inv0;

			bridge_stop();
			CHECK(!bridge_start(VIOMMU_VHOST_ANSWER_PAGE, true), "page bridge, thread mode");
			viommu_vhost_kernel_stats(bridge, &st);
			inv0 = st.invalidates;
			flood_maps = flood_unmaps = 0;
			__atomic_store_n(&flood_stop, false, __ATOMIC_RELEASE);
			CHECK(!pthread_create(&th, NULL, flood_main, NULL), "flood thread");
			traffic(4 * BATCH, &size_i, &fc);
			__atomic_store_n(&flood_stop, true, __ATOMIC_RELEASE);
			pthread_join(th, NULL);
			viommu_vhost_kernel_stats(bridge, &st);
			printf("  concurrent flood: %u MAP / %u UNMAP on their own thread during %llu tx, "
			       "%llu rx (%llu corrupt, %llu lost); bridge: %llu misses served, %llu "
			       "INVALIDATEs, %llu faults, %llu unanswered, %llu refused writes\n",
			       flood_maps, flood_unmaps, (unsigned long long)fc.tx, (unsigned long long)fc.rx,
			       (unsigned long long)fc.corrupt, (unsigned long long)fc.lost,
			       (unsigned long long)st.misses, (unsigned long long)(st.invalidates - inv0),
			       (unsigned long long)st.faults, (unsigned long long)st.unanswered,
			       (unsigned long long)st.write_errors);
			CHECK(fc.tx == 4 * BATCH && fc.rx == 4 * BATCH && !fc.corrupt,
			      "concurrent flood: every frame arrives");
			CHECK(flood_unmaps > 0 && st.misses > 0, "concurrent flood: both sides worked");
			CHECK(st.invalidates - inv0 >= flood_unmaps, "concurrent flood: an INVALIDATE per UNMAP");
			CHECK(st.faults == 0 && st.unanswered == 0 && st.write_errors == 0,
			      "concurrent flood: no fault, every miss answered, no refused write");
			add(&fc);
			bridge_stop();
			CHECK(!bridge_start(VIOMMU_VHOST_ANSWER_EXTENT, true), "extent bridge again");
		}

		/* The TX ring unmapped under traffic: the batch stalls (faults), re-MAP resumes it. */
		{
			unsigned base = txq.used_seen, k = 8;
			uint32_t seqs[8];

			c.want_tx += k;
			for (unsigned i = 0; i < k; i++) {
				seqs[i] = tx_seq++;
				avail_push(&txq, tx_chain(i, 0, seqs[i], 1514, tx_slot_iova(i), tx_slot_map(i)));
			}
			CHECK(unmap_one(M_TXRING) == VIOMMU_S_OK, "UNMAP the TX ring");
			kick(&txq);
			usleep(300000);
			CHECK(used_idx(&txq) == base, "no TX completes while its ring is unmapped");
			faults_seen += drain_faults(0, UINT64_MAX, NULL);
			CHECK(map_one(M_TXRING) == VIOMMU_S_OK, "re-MAP the TX ring");
			/* (the guest's own driver would re-kick after restoring) */
			kick(&txq);
			wait_used(&txq, (uint16_t)(base + k), 5000, service_fn);
			txq.used_seen = used_idx(&txq);
			for (unsigned i = 0; i < k; i++) {
				long got = pkt_recv(3000);
				uint32_t sq;

				if (got < 0) {
					c.lost++;
					continue;
				}
				memcpy(&sq, rxbuf + 14, 4);
				frame_make(expect, 1514, sq, 1);
				if (got != 1514 || memcmp(rxbuf, expect, 1514) || sq < seqs[0] || sq > seqs[k - 1])
					c.corrupt++;
				else
					c.tx++;
			}
		}
		/* Device reset mid-transfer: the batch in flight stops where it is; after the guest
		 * re-ATTACHes and re-MAPs, the rest completes. */
		{
			unsigned k = 16, got_frames = 0;
			uint32_t first = tx_seq;

			c.want_tx += k;
			for (unsigned i = 0; i < k; i++)
				avail_push(&txq, tx_chain(i, 0, tx_seq++, 9000, tx_slot_iova(i), tx_slot_map(i)));
			kick(&txq);
			device_reset();
			usleep(200000);
			faults_seen += drain_faults(0, UINT64_MAX, NULL);
			CHECK(attach() == VIOMMU_S_OK, "re-ATTACH after reset");
			map_all();
			CHECK(!viommu_vhost_kernel_prefill(bridge, maps[M_TXRING].iova, RING_SIZE),
			      "ring prefill after reset");
			kick(&txq);
			wait_used(&txq, (uint16_t)(txq.used_seen + k), 5000, service_fn);
			txq.used_seen = used_idx(&txq);
			for (unsigned i = 0; i < k; i++) {
				long got = pkt_recv(3000);
				uint32_t sq;

				if (got < 0) {
					c.lost++;
					continue;
				}
				memcpy(&sq, rxbuf + 14, 4);
				frame_make(expect, 9000, sq, 1);
				if (got != 9000 || memcmp(rxbuf, expect, 9000) || sq - first >= k)
					c.corrupt++;
				else
					c.tx++, got_frames++;
			}
			CHECK(got_frames == k, "reset mid-transfer: every frame arrives once (%u/%u)",
			      got_frames, k);
		}
		printf("  hostile: %u MAP/UNMAP during traffic, TX ring unmapped under traffic, reset "
		       "mid-transfer: %llu tx, %llu rx, %llu corrupt, %llu lost\n", flood,
		       (unsigned long long)c.tx, (unsigned long long)c.rx,
		       (unsigned long long)c.corrupt, (unsigned long long)c.lost);
		add(&c);
	}

	/* PREFILL_MAP: every MAP pushed at its sync, so traffic takes no miss; past
	 * max_iotlb_entries / 2 UPDATEs since the last full invalidation the rest is left to misses
	 * (vhost evicts its oldest entry beyond 2048, in use or not). */
	{
		struct viommu_vhost_opts o = { .prefill = VIOMMU_VHOST_PREFILL_MAP, .thread = true };
		static const unsigned again[] = { M_RXRING, M_TXRING, M_RXHDR, M_TXHDR, M_TXPOOL0,
						  M_TXPOOL1, M_RXPOOL0, M_RXPOOL1 };
		struct counts c = { 0 };
		unsigned many = 1100, mapped = 0;
		uint64_t misses_before;

		bridge_stop(); /* a full INVALIDATE: vhost holds nothing of ours now */
		CHECK(!bridge_open(&o), "PREFILL_MAP bridge");
		for (unsigned i = 0; i < sizeof(again) / sizeof(again[0]); i++)
			CHECK(unmap_one(again[i]) == VIOMMU_S_OK && map_one(again[i]) == VIOMMU_S_OK,
			      "re-MAP %s", maps[again[i]].name);
		viommu_vhost_kernel_stats(bridge, &st);
		misses_before = st.misses;
		traffic(2 * BATCH, &size_i, &c);
		viommu_vhost_kernel_stats(bridge, &st);
		printf("  prefill on MAP: %llu pushed, %llu tx, %llu rx, %llu misses\n",
		       (unsigned long long)st.prefilled, (unsigned long long)c.tx, (unsigned long long)c.rx,
		       (unsigned long long)(st.misses - misses_before));
		CHECK(st.prefilled >= 8 && st.misses == misses_before,
		      "prefill on MAP: the traffic takes no miss (%llu)",
		      (unsigned long long)(st.misses - misses_before));
		for (unsigned i = 0; i < many; i++)
			mapped += map_raw(DOMAIN, 0x40000000ull + i * 0x2000ull, 0x40000fffull + i * 0x2000ull,
					  0x900000, VIOMMU_MAP_F_READ) == VIOMMU_S_OK;
		viommu_vhost_kernel_stats(bridge, &st);
		traffic(2 * BATCH, &size_i, &c);
		printf("  prefill budget: %u more MAPs, %llu pushed in all, %llu left to misses "
		       "(budget %u)\n", mapped, (unsigned long long)st.prefilled,
		       (unsigned long long)st.prefill_skipped, 2048 / 2);
		CHECK(mapped == many && st.updates <= 2048 / 2 && st.prefill_skipped >= many + 8 - 2048 / 2,
		      "prefill budget: at most max_iotlb_entries / 2 UPDATEs (%llu), the rest skipped",
		      (unsigned long long)st.updates);
		CHECK(c.tx == 4 * BATCH && c.rx == 4 * BATCH && !c.corrupt, "prefill: every frame arrives");
		for (unsigned i = 0; i < many; i++)
			unmap_raw(DOMAIN, 0x40000000ull + i * 0x2000ull, 0x40000fffull + i * 0x2000ull);
		add(&c);
		bridge_stop();
	}

	/* Lazy mode (the guest's choice): an UNMAP completes before its INVALIDATE is written. Here
	 * the VMM's loop drives the bridge (fd mode), so the flush point is explicit: right after the
	 * UNMAPs nothing was written and vhost still sends a frame from the unmapped buffer (the old
	 * translation, which lazy mode allows until the flush); the bridge's fd is readable; the next
	 * service call writes the INVALIDATEs; from then on no access. Then thread mode: the bridge's
	 * thread writes it once the request has completed. */
	{
		struct viommu_vhost_opts o = { .prefill = VIOMMU_VHOST_PREFILL_RINGS, .lazy = true };
		struct counts c = { 0 };
		struct pollfd p;
		uint64_t inv0, inv_at_done, done;
		unsigned f;
		long got;
		bool window = false;

		CHECK(!bridge_open(&o), "lazy bridge");
		CHECK(!viommu_vhost_kernel_prefill(bridge, maps[M_RXRING].iova, RING_SIZE) &&
		      !viommu_vhost_kernel_prefill(bridge, maps[M_TXRING].iova, RING_SIZE), "lazy: rings");
		traffic(BATCH, &size_i, &c);
		tx_one(M_TXVICTIM, 1514); /* warm: vhost holds the TX victim */
		c.want_tx++;
		c.tx += wait_used(&txq, (uint16_t)(txq.used_seen + 1), 5000, service_fn) ==
				(uint16_t)(txq.used_seen + 1) && pkt_recv(3000) == 1514;
		txq.used_seen = used_idx(&txq);
		viommu_vhost_kernel_stats(bridge, &st);
		inv0 = st.invalidates;
		CHECK(unmap_one(M_TXVICTIM) == VIOMMU_S_OK && unmap_one(M_RXVICTIM) == VIOMMU_S_OK,
		      "lazy: UNMAP victims");
		done = req_done_ns;
		viommu_vhost_kernel_stats(bridge, &st);
		inv_at_done = st.invalidates - inv0;
		CHECK(st.invalidates == inv0, "lazy: the UNMAPs completed with no INVALIDATE written (%llu)",
		      (unsigned long long)(st.invalidates - inv0));
		p = (struct pollfd){ .fd = viommu_vhost_kernel_fd(bridge), .events = POLLIN };
		CHECK(poll(&p, 1, 0) == 1, "lazy: the bridge's fd asks for a service call");
		/* Before the flush point: vhost still holds the old TX translation (no service call
		 * while waiting: that would flush). */
		{
			uint32_t seq = tx_one(M_TXVICTIM, 1514);
			uint16_t want = (uint16_t)(txq.used_seen + 1);

			c.want_tx++;
			CHECK(wait_used(&txq, want, 3000, NULL) == want,
			      "lazy: before the flush vhost still sends from the old translation");
			txq.used_seen = used_idx(&txq);
			got = pkt_recv(3000);
			frame_make(expect, 1514, seq, 1);
			if (got == 1514 && !memcmp(rxbuf, expect, 1514))
				c.tx++, window = true;
			else
				c.lost++, fail("lazy: the frame sent before the flush did not arrive");
		}
		viommu_vhost_kernel_stats(bridge, &st);
		CHECK(st.invalidates == inv0, "lazy: still nothing written before the service call");
		service_bridge(); /* the flush point */
		viommu_vhost_kernel_stats(bridge, &st);
		CHECK(st.invalidates == inv0 + 2 && st.invalidates_deferred >= 2 &&
		      st.last_invalidate_at_ns > done,
		      "lazy: the service call wrote both INVALIDATEs after the UNMAPs completed (%llu, %llu "
		      "deferred)", (unsigned long long)(st.invalidates - inv0),
		      (unsigned long long)st.invalidates_deferred);
		printf("  lazy unmap: UNMAPs completed with %llu INVALIDATEs written; a TX from the buffer "
		       "before the flush %s; the service call wrote %llu, the last %.0f us after the "
		       "request completed\n", (unsigned long long)inv_at_done,
		       window ? "still went out (the old translation)" : "did NOT go out",
		       (unsigned long long)(st.invalidates - inv0 - inv_at_done),
		       (double)(int64_t)(st.last_invalidate_at_ns - done) / 1e3);
		f = check_no_access("lazy, after the flush", M_TXVICTIM, M_RXVICTIM, &c, &pending);
		CHECK(f >= 2, "lazy unmap: faults (%u)", f);
		faults_seen += f;
		CHECK(map_one(M_TXVICTIM) == VIOMMU_S_OK && map_one(M_RXVICTIM) == VIOMMU_S_OK,
		      "lazy: re-MAP");
		check_access_back("lazy re-map", M_TXVICTIM, M_RXVICTIM, pending, &c);
		CHECK(c.tx == BATCH + 3 && c.rx == BATCH + 1, "lazy: every frame arrives");
		bridge_stop();

		/* Thread mode: written by the bridge's thread after the request released the lock. */
		o.thread = true;
		CHECK(!bridge_open(&o), "lazy bridge, thread mode");
		viommu_vhost_kernel_stats(bridge, &st);
		inv0 = st.invalidates;
		CHECK(unmap_one(M_TXVICTIM) == VIOMMU_S_OK, "lazy thread: UNMAP");
		done = req_done_ns;
		for (unsigned i = 0; i < 1000 && st.invalidates == inv0; i++) {
			usleep(1000);
			viommu_vhost_kernel_stats(bridge, &st);
		}
		CHECK(st.invalidates == inv0 + 1 && st.invalidates_deferred == 1 &&
		      st.last_invalidate_at_ns > done,
		      "lazy thread: the bridge's thread wrote the INVALIDATE after the request completed");
		printf("  lazy, bridge thread: the INVALIDATE written %.0f us after the UNMAP completed\n",
		       (double)(int64_t)(st.last_invalidate_at_ns - done) / 1e3);
		CHECK(map_one(M_TXVICTIM) == VIOMMU_S_OK, "lazy thread: re-MAP");
		add(&c);
		bridge_stop();
		CHECK(!bridge_start(VIOMMU_VHOST_ANSWER_EXTENT, true), "extent bridge again");
	}

	/* Phase 5: DETACH and reset leave vhost nothing it can reach. */
	{
		struct counts c = { 0 };
		unsigned f;

		CHECK(detach() == VIOMMU_S_OK, "DETACH");
		f = check_no_access("detach", M_TXVICTIM, M_RXVICTIM, &c, &pending);
		CHECK(f >= 1 && fault_counts[VIOMMU_FAULT_R_DOMAIN] >= 1,
		      "detach: faults with reason DOMAIN (%u)", f);
		faults_seen += f;
		CHECK(attach() == VIOMMU_S_OK, "re-ATTACH");
		map_all();
		check_access_back("re-attach", M_TXVICTIM, M_RXVICTIM, pending, &c);
		device_reset();
		f = check_no_access("reset", M_TXVICTIM, M_RXVICTIM, &c, &pending);
		CHECK(f >= 1, "reset: faults (%u)", f);
		faults_seen += f;
		add(&c);
	}
	bridge_stop();
	set_backend(vhost, -1);
	close(off_fd);
	printf("vhost-net figures: miss service p50 %u ns p90 %u ns; frames/s extents %.0f, pages "
	       "%.0f; extents/pages %.2f; misses per frame extents %.4f pages %.3f; on/off "
	       "interleaved %u rounds: median %.3f (min %.3f, max %.3f; %.0f vs %.0f frames/s); TX "
	       "beside %.0f INVALIDATEs/s, medians: with/lock-only %.3f, lock-only/control %.3f, "
	       "with/control %.3f (from churn CPU alone %.3f), control/wakeups %.3f, wakeups/quiet "
	       "%.3f (%.0f, %.0f, %.0f, %.0f, %.0f frames/s with, lock-only, control, wakeups, quiet; "
	       "INVALIDATE write() %.1f us)\n",
	       p50, p90, fps_extent, fps_page, fps_page > 0 ? fps_extent / fps_page : 0,
	       (double)misses_extent / (2.0 * frames),
	       (double)misses_page / (2.0 * (frames / 4 < BATCH ? BATCH : frames / 4)), ab_rounds,
	       onoff_med, onoff_min, onoff_max, fps_on, fps_off, inval_per_s, st_wl, st_lc, st_wc,
	       st_pred, st_cw, st_wq, st_fps[K_WITH], st_fps[K_LOCKW], st_fps[K_CTRL], st_fps[K_WAKE],
	       st_fps[K_QUIET], inv_us);
	CHECK(tot.corrupt == 0 && tot.stale == 0 && tot.lost == 0, "every frame, none corrupt or stale");
	CHECK(tot.tx == tot.want_tx && tot.rx == tot.want_rx, "every frame expected arrived (%llu/%llu "
	      "tx, %llu/%llu rx)", (unsigned long long)tot.tx, (unsigned long long)tot.want_tx,
	      (unsigned long long)tot.rx, (unsigned long long)tot.want_rx);
	/* What the summary's numbers are: tx and rx differ because the invalidation figure and the
	 * hostile phase send TX only; what counts is that each matches what was expected back. */
	printf("vhost-net: counted: tx %llu of %llu expected (%llu of them TX-only, in the invalidation "
	       "figure), rx %llu of %llu expected; misses / extents of the whole-extent phase; "
	       "invalidations: INVALIDATEs written by the run's %u bridges (%llu of them full, %llu lazy "
	       "after their request); faults: MISSes answered with a fault, all in the unmap, ring, "
	       "detach and reset checks\n",
	       (unsigned long long)tot.tx, (unsigned long long)tot.want_tx,
	       (unsigned long long)txonly, (unsigned long long)tot.rx,
	       (unsigned long long)tot.want_rx, all_bridges, (unsigned long long)all_invalidate_all,
	       (unsigned long long)all_deferred);
	printf("vhost-net: %llu tx, %llu rx, %llu corrupt, %llu misses / %llu extents, %llu "
	       "invalidations, %llu stale, %llu faults\n",
	       (unsigned long long)tot.tx, (unsigned long long)tot.rx,
	       (unsigned long long)tot.corrupt, (unsigned long long)misses_extent,
	       (unsigned long long)extents_used, (unsigned long long)all_invalidates,
	       (unsigned long long)tot.stale, (unsigned long long)all_faults);
	(void)faults_seen;
	return failures ? 1 : 0;
}
