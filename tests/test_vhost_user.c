/* SPDX-License-Identifier: MIT */
/*
 * The bridge core (user/iotlb.h) on a real device + fast path, and the vhost-user frontend
 * (user/vhost_user.h) against a hostile backend: a child process that speaks vhost-user badly
 * over a real UNIX socket (truncated messages, oversized headers, unknown requests, a flood of
 * misses for unmapped IOVAs, acks that never come, a disconnect in the middle of a message).
 * The well-behaved backend is the real dpdk-testpmd: `make dpdk` (tests/dpdk_testpmd.c).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bpf_access.h"
#include "device.h"
#include "fastpath.h"
#include "iotlb.h"
#include "requests.h"
#include "vhost_user.h"

#define EP 8u

static struct viommu_device *dev;
static struct viommu_fastpath *fp;

static void setup(void)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, EP, true, NULL, 0), 0);
	fp = viommu_fastpath_new(dev, NULL);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno); /* a verifier refusal fails, never skips */
	cr_assert(fp);
	viommu_device_eventq_post(dev, 1024);
}

static void teardown(void)
{
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
}

static uint8_t memory[1 << 20] __attribute__((aligned(4096)));

static struct viommu_iotlb *new_iotlb(bool quirk, const struct viommu_iotlb_ops *ops)
{
	struct viommu_iotlb_opts o = { .quirk_adjacent_join = quirk };
	struct viommu_iotlb *it = viommu_iotlb_new(fp, &o, ops);
	struct viommu_iotlb_region r = { 0x100000, sizeof(memory), memory, -1, 0 };

	cr_assert(it);
	cr_assert_eq(viommu_iotlb_add_region(it, &r), 0);
	cr_assert_eq(viommu_iotlb_serve(it, EP), 0);
	return it;
}

Test(iotlb, ranges_join_when_they_overlap_or_touch_and_only_grow_when_the_list_is_full)
{
	uint64_t r[3][2];
	unsigned n = 0;

	viommu_iotlb_range_add(r, &n, 3, 100, 199);
	viommu_iotlb_range_add(r, &n, 3, 300, 399);
	viommu_iotlb_range_add(r, &n, 3, 200, 250); /* touches the first */
	cr_assert_eq(n, 2);
	cr_assert(r[0][0] == 100 && r[0][1] == 250 && r[1][0] == 300 && r[1][1] == 399);
	viommu_iotlb_range_add(r, &n, 3, 1000, 1000);
	viommu_iotlb_range_add(r, &n, 3, 5000, 5000); /* full: the two closest join */
	cr_assert_eq(n, 3);
	cr_assert(r[0][0] == 100 && r[0][1] == 399 && r[1][0] == 1000 && r[2][0] == 5000);
	viommu_iotlb_range_add(r, &n, 3, 0, UINT64_MAX);
	cr_assert(n == 1 && r[0][0] == 0 && r[0][1] == UINT64_MAX);
}

Test(iotlb, a_miss_is_answered_with_the_whole_extent_clipped_to_its_memory_region,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = new_iotlb(false, NULL);
	struct viommu_iotlb_entry e, inv;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	/* 64 KiB mapped, the last 16 KiB of it beyond the region's end */
	cr_assert_eq(test_map(dev, 1, 0x10000000, 0x1000ffff, 0x100000 + sizeof(memory) - 0xc000,
			      VIOMMU_MAP_F_WRITE), VIOMMU_S_OK);
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x10001234, VIOMMU_IOTLB_PERM_RW, &e, &inv), 0);
	cr_assert_eq(e.iova, 0x10000000);
	cr_assert_eq(e.size, 0xc000);
	cr_assert_eq(e.uaddr, (uint64_t)(uintptr_t)(memory + sizeof(memory) - 0xc000));
	cr_assert_eq(e.perm, VIOMMU_IOTLB_PERM_RW, "a write mapping is answered RW");
	cr_assert_eq(inv.size, 0);
	/* past the region: translated but unbacked */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x1000d000, 1, &e, &inv), -ENXIO);
	viommu_iotlb_free(it);
}

Test(iotlb, a_miss_for_an_unmapped_or_read_only_iova_is_a_fault_on_the_event_queue,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = new_iotlb(false, NULL);
	struct viommu_iotlb_entry e, inv;
	struct viommu_wire_fault f;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x2000, 0x2fff, 0x100000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x5000, 1, &e, &inv), -EFAULT);
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x2000, VIOMMU_IOTLB_PERM_RW, &e, &inv), -EFAULT);
	cr_assert_eq(viommu_iotlb_stats(it)->faults, 2);
	cr_assert_eq(viommu_fastpath_poll_faults(fp), 2);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	viommu_iotlb_free(it);
}

Test(iotlb, adjacent_extents_with_discontiguous_memory_are_never_answered_adjacent,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb *it = new_iotlb(true, NULL);
	struct viommu_iotlb_entry e, inv;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	/* A: 3 pages at 0x10000; B right after it in IOVA, far away in memory */
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x12fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x13000, 0x13fff, 0x180000, 3), VIOMMU_S_OK);
	/* A's interior: its last page is left out */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x10000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x10000 && e.size == 0x2000);
	/* A's last page alone, after invalidating B's first byte (and itself) */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x12800, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x12000 && e.size == 0x1000);
	cr_assert(inv.iova == 0x12000 && inv.size == 0x1001);
	/* B alone, after invalidating A's last byte */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x13000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x13000 && e.size == 0x1000);
	cr_assert(inv.iova == 0x12fff && inv.size == 0x1001);
	viommu_iotlb_free(it);
}

static unsigned inval_calls, complete_calls;
static uint64_t inval_first, inval_last;

static int rec_invalidate(void *ctx, uint32_t ep, uint64_t first, uint64_t last)
{
	(void)ctx;
	cr_assert_eq(ep, EP);
	inval_calls++;
	inval_first = first;
	inval_last = last;
	return 0;
}

static int rec_complete(void *ctx, bool strict)
{
	(void)ctx;
	cr_assert(strict);
	complete_calls++;
	return 0;
}

Test(iotlb, an_unmap_is_invalidated_and_confirmed_before_the_request_returns, .init = setup,
     .fini = teardown)
{
	struct viommu_iotlb_ops ops = { .invalidate = rec_invalidate, .complete = rec_complete };
	struct viommu_iotlb *it = new_iotlb(false, &ops);
	uint8_t r[64], t[4];

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(inval_calls, 0);
	viommu_device_request_buf(dev, r, viommu_req_unmap(r, 1, 0x4000, 0x5fff), t, 4);
	cr_assert(inval_calls == 1 && complete_calls == 1 && inval_first == 0x4000 && inval_last == 0x5fff);
	/* a reset detaches: everything */
	viommu_device_reset(dev);
	cr_assert(inval_calls == 2 && inval_first == 0 && inval_last == UINT64_MAX);
	viommu_iotlb_free(it);
}

static int lazy_complete(void *ctx, bool strict)
{
	(void)ctx;
	cr_assert(!strict);
	complete_calls++;
	return 0;
}

Test(iotlb, with_the_record_a_discontiguous_neighbour_is_split_off_only_while_it_is_held,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb_opts o = { .quirk_adjacent_join = true, .track_held = true };
	struct viommu_iotlb *it = viommu_iotlb_new(fp, &o, NULL);
	struct viommu_iotlb_region r = { 0x100000, sizeof(memory), memory, -1, 0 };
	struct viommu_iotlb_entry e, inv;

	cr_assert(it);
	cr_assert_eq(viommu_iotlb_add_region(it, &r), 0);
	cr_assert_eq(viommu_iotlb_serve(it, EP), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x10000, 0x12fff, 0x100000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x13000, 0x13fff, 0x180000, 3), VIOMMU_S_OK);
	/* Nothing held next to A: A whole, nothing to invalidate. */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x10000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x10000 && e.size == 0x3000 && inv.size == 0);
	/* The same answer again (the consumer evicted it): no INVALIDATE either. */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x11000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x10000 && e.size == 0x3000 && inv.size == 0);
	/* B while A is held: A's byte next to B goes (A whole, in the consumer), B alone. */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x13000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x13000 && e.size == 0x1000);
	cr_assert(inv.iova == 0x12fff && inv.size == 0x1001);
	/* A again while B is held: A's interior, not touching B: nothing to invalidate. */
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x10000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x10000 && e.size == 0x2000 && inv.size == 0);
	/* B unmapped (invalidated: gone from the record): A's last page has no held neighbour. */
	cr_assert_eq(test_unmap(dev, 1, 0x13000, 0x13fff), VIOMMU_S_OK);
	cr_assert_eq(viommu_iotlb_answer(it, EP, 0x12000, 1, &e, &inv), 0);
	cr_assert(e.iova == 0x10000 && e.size == 0x3000);
	cr_assert(inv.iova == 0x10000 && inv.size == 0x3000); /* the interior is held: replaced */
	cr_assert_eq(viommu_iotlb_stats(it)->held_entries, 1);
	viommu_iotlb_free(it);
}

Test(iotlb, lazy_mode_returns_the_unmap_without_waiting_and_keeps_nothing_pending,
     .init = setup, .fini = teardown)
{
	struct viommu_iotlb_ops ops = { .invalidate = rec_invalidate, .complete = lazy_complete };
	struct viommu_iotlb_opts o = { .lazy = true };
	struct viommu_iotlb *it = viommu_iotlb_new(fp, &o, &ops);
	uint8_t r[64], t[4];

	cr_assert(it);
	cr_assert_eq(viommu_iotlb_serve(it, EP), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x4000, 0x5fff, 0x100000, 3), VIOMMU_S_OK);
	viommu_device_request_buf(dev, r, viommu_req_unmap(r, 1, 0x4000, 0x5fff), t, 4);
	/* Sent at the sync, completed without waiting (lazy_complete asserts !strict). */
	cr_assert(inval_calls == 1 && complete_calls == 1 && inval_first == 0x4000 && inval_last == 0x5fff);
	cr_assert_eq(viommu_iotlb_pending(it), 0);
	cr_assert_eq(viommu_iotlb_flush(it, true), 0); /* nothing left for the VMM's timer */
	viommu_iotlb_free(it);
}

/* ---- the hostile backend ---- */

enum hostile {
	H_TRUNCATED, /* half a header on the backend channel, then EOF */
	H_OVERSIZED, /* a backend-channel header announcing 1 MiB */
	H_UNKNOWN, /* unknown requests with NEED_REPLY, malformed IOTLB messages, fds */
	H_FLOOD, /* 5000 MISSes for unmapped IOVAs */
	H_NO_ACK, /* never acks the INVALIDATE of an UNMAP */
	H_DISCONNECT_MID_UPDATE, /* answers a MISS's UPDATE with half an ack, then closes */
	H_QUEUES, /* keeps IOTLB entries per vring as DPDK 22.11 does: only in vrings that exist */
};

/* H_QUEUES: what each vring holds when vring 1 is enabled, written to report_fd. */
#define QMAX 32
struct queues_report {
	uint32_t n[2];
	uint64_t iova[2][QMAX], size[2][QMAX], uaddr[2][QMAX];
	uint32_t acked_invalidates, unacked_invalidates;
};
static int report_fd = -1;

static void put(int fd, uint32_t req, uint32_t flags, const void *p, uint32_t size, int pass_fd)
{
	uint8_t b[12 + 64];
	struct iovec iov = { b, 12 + size };
	union {
		char c[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memcpy(b, &req, 4);
	memcpy(b + 4, &flags, 4);
	memcpy(b + 8, &size, 4);
	if (size)
		memcpy(b + 12, p, size);
	if (pass_fd >= 0) {
		mh.msg_control = u.c;
		mh.msg_controllen = sizeof(u.c);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &pass_fd, sizeof(int));
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
		_exit(3);
}

static void miss(int bfd, uint64_t iova)
{
	struct viommu_vu_iotlb m = { .iova = iova, .perm = 1, .type = VIOMMU_VU_IOTLB_MISS };

	put(bfd, VIOMMU_VU_BACKEND_IOTLB_MSG, 1, &m, sizeof(m), -1);
}

/* The backend: answers setup as a backend must, then misbehaves as @mode says. */
/* DPDK 22.11's vhost_user_iotlb_msg, in miniature: an UPDATE goes into every vring that exists
 * (from its first per-vring message on), an INVALIDATE removes what overlaps it from each. */
static void queues_model(struct queues_report *q, const bool exists[2], uint32_t req, const uint8_t *p)
{
	struct viommu_vu_iotlb m;

	if (req != VIOMMU_VU_IOTLB_MSG)
		return;
	memcpy(&m, p, sizeof(m));
	for (unsigned v = 0; v < 2; v++) {
		if (!exists[v])
			continue;
		if (m.type == VIOMMU_VU_IOTLB_UPDATE && q->n[v] < QMAX) {
			q->iova[v][q->n[v]] = m.iova;
			q->uaddr[v][q->n[v]] = m.uaddr;
			q->size[v][q->n[v]++] = m.size;
		}
		if (m.type == VIOMMU_VU_IOTLB_INVALIDATE)
			for (unsigned i = 0; i < q->n[v]; i++)
				if (q->iova[v][i] < m.iova + m.size && m.iova < q->iova[v][i] + q->size[v][i]) {
					q->iova[v][i] = q->iova[v][--q->n[v]];
					q->uaddr[v][i] = q->uaddr[v][q->n[v]];
					q->size[v][i--] = q->size[v][q->n[v]];
				}
	}
}

static void backend(int lfd, enum hostile mode)
{
	int c = accept(lfd, NULL, NULL), bfd = -1;
	struct queues_report q;
	bool exists[2] = { false, false };

	memset(&q, 0, sizeof(q));

	for (;;) {
		uint8_t b[12 + 512];
		union {
			char c[CMSG_SPACE(sizeof(int) * 8)];
			struct cmsghdr a;
		} u;
		struct iovec iov = { b, 12 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
				     .msg_controllen = sizeof(u.c) };
		uint32_t req, flags, size;
		uint64_t v = 0;

		if (recvmsg(c, &mh, MSG_WAITALL) != 12)
			_exit(0);
		memcpy(&req, b, 4);
		memcpy(&flags, b + 4, 4);
		memcpy(&size, b + 8, 4);
		if (size && recv(c, b + 12, size, MSG_WAITALL) != (ssize_t)size)
			_exit(0);
		if (req == VIOMMU_VU_SET_BACKEND_REQ_FD && CMSG_FIRSTHDR(&mh))
			memcpy(&bfd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
		if (mode == H_QUEUES) {
			bool per_vring = (req >= VIOMMU_VU_SET_VRING_NUM && req <= VIOMMU_VU_SET_VRING_CALL) ||
					 req == VIOMMU_VU_SET_VRING_ENABLE;

			queues_model(&q, exists, req, b + 12);
			if (req == VIOMMU_VU_IOTLB_MSG && b[12 + 25] == VIOMMU_VU_IOTLB_INVALIDATE) {
				if (flags & VIOMMU_VU_F_NEED_REPLY)
					q.acked_invalidates++;
				else
					q.unacked_invalidates++;
			}
			if (per_vring && b[12] < 2)
				exists[b[12]] = true; /* the index: the first byte, in every one of them */
			if (req == VIOMMU_VU_SET_VRING_ENABLE && b[12] == 1 &&
			    write(report_fd, &q, sizeof(q)) != (ssize_t)sizeof(q))
				_exit(3);
		}
		if (req == VIOMMU_VU_GET_FEATURES)
			v = 0x340000000ull;
		if (req == VIOMMU_VU_GET_PROTOCOL_FEATURES)
			v = 0x28;
		if (req == VIOMMU_VU_IOTLB_MSG && mode == H_NO_ACK && b[12 + 25] == VIOMMU_VU_IOTLB_INVALIDATE)
			continue; /* never acked */
		if (req == VIOMMU_VU_IOTLB_MSG && mode == H_DISCONNECT_MID_UPDATE &&
		    b[12 + 25] == VIOMMU_VU_IOTLB_UPDATE) {
			put(c, req, 5, &v, 0, -1); /* a header announcing nothing, then gone */
			_exit(0);
		}
		if (req == VIOMMU_VU_GET_FEATURES || req == VIOMMU_VU_GET_PROTOCOL_FEATURES || req == VIOMMU_VU_GET_VRING_BASE ||
		    (flags & VIOMMU_VU_F_NEED_REPLY))
			put(c, req, 5, &v, 8, -1);
		if (req != VIOMMU_VU_SET_MEM_TABLE)
			continue;
		/* setup done (its ack is out): misbehave once the frontend is back in its loop */
		usleep(100000);
		if (mode == H_TRUNCATED) {
			if (write(bfd, "\x01\0\0\0\x01", 5) < 0)
				_exit(3);
			close(bfd); /* the main channel stays open: only this one ends mid-message */
			pause();
		}
		if (mode == H_OVERSIZED) {
			put(bfd, 2, 1, NULL, 0, -1); /* CONFIG_CHANGE: not served */
			b[0] = 1, b[4] = 1;
			size = 1u << 20;
			memcpy(b + 8, &size, 4);
			if (write(bfd, b, 12) < 0)
				_exit(3);
		}
		if (mode == H_UNKNOWN) {
			struct viommu_vu_iotlb m = { .iova = 0x1000, .perm = 1, .type = 2 /* UPDATE */ };

			put(bfd, 77, 1 | VIOMMU_VU_F_NEED_REPLY, &v, 8, -1);
			put(bfd, 1, 1 | VIOMMU_VU_F_NEED_REPLY, &m, sizeof(m), -1);
			put(bfd, 1, 1, &m, 7, c); /* a wrong size, and an fd */
			put(bfd, 1, 1 | VIOMMU_VU_F_REPLY, &m, sizeof(m), -1);
			miss(bfd, 0x7000); /* a valid one last: still served */
		}
		if (mode == H_FLOOD || mode == H_DISCONNECT_MID_UPDATE)
			for (unsigned i = 0; i < (mode == H_FLOOD ? 5000u : 1u); i++)
				miss(bfd, mode == H_FLOOD ? 0x900000000ull + i * 4096ull : 0x7000);
	}
}

static pid_t start_backend(const char *path, enum hostile mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	pid_t pid;

	strcpy(sa.sun_path, path);
	unlink(path);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(lfd, 1), 0);
	pid = fork();
	if (pid == 0)
		backend(lfd, mode);
	close(lfd);
	return pid;
}

static struct viommu_vhost_user *frontend(const char *path, int *memfd)
{
	struct viommu_vhost_user_opts o;
	struct viommu_vhost_user *vu;
	struct viommu_iotlb_region r;
	void *m;

	viommu_vhost_user_opts_default(&o);
	o.endpoint = EP;
	o.ack_timeout_ms = 300;
	vu = viommu_vhost_user_new(fp, &o);
	cr_assert(vu);
	*memfd = memfd_create("guest", MFD_CLOEXEC);
	cr_assert(*memfd >= 0 && ftruncate(*memfd, 1 << 20) == 0);
	m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, *memfd, 0);
	r = (struct viommu_iotlb_region){ 0, 1 << 20, m, *memfd, 0 };
	cr_assert_eq(viommu_iotlb_add_region(viommu_vhost_user_iotlb(vu), &r), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x7000, 0x7fff, 0x3000, 3), VIOMMU_S_OK);
	cr_assert_eq(viommu_vhost_user_connect(vu, path, 0), 0, "%s", viommu_vhost_user_error(vu));
	return vu;
}

static void run_for(struct viommu_vhost_user *vu, unsigned ms)
{
	for (unsigned i = 0; i < ms && viommu_vhost_user_connected(vu); i++)
		viommu_vhost_user_poll(vu, 1);
}

/* No criterion .timeout on these tests: criterion 2.4 leaks in its runner now and then when a
 * test with one ends (seen by LeakSanitizer in make unit-asan); each test bounds its own waits. */
static char sock_path[64];

static struct viommu_vhost_user *hostile(enum hostile mode, pid_t *pid, int *memfd)
{
	snprintf(sock_path, sizeof(sock_path), "/tmp/viommu-hostile-%d.sock", (int)getpid());
	*pid = start_backend(sock_path, mode);
	return frontend(sock_path, memfd);
}

static void done(struct viommu_vhost_user *vu, pid_t pid, int memfd)
{
	viommu_vhost_user_free(vu);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(memfd);
	unlink(sock_path);
}

Test(vhost_user, a_message_truncated_by_the_backend_closing_is_a_disconnect_not_a_hang,
     .init = setup, .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_TRUNCATED, &pid, &memfd);

	run_for(vu, 2000);
	cr_assert(!viommu_vhost_user_connected(vu));
	cr_assert(strstr(viommu_vhost_user_error(vu), "middle of a message"), "%s",
		  viommu_vhost_user_error(vu));
	cr_assert_eq(viommu_vhost_user_poll(vu, 0), -ENOTCONN);
	done(vu, pid, memfd);
}

Test(vhost_user, a_header_announcing_an_oversized_payload_is_a_disconnect, .init = setup,
     .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_OVERSIZED, &pid, &memfd);

	run_for(vu, 2000);
	cr_assert(!viommu_vhost_user_connected(vu));
	cr_assert(strstr(viommu_vhost_user_error(vu), "announcing 1048576 bytes"), "%s",
		  viommu_vhost_user_error(vu));
	cr_assert_eq(viommu_vhost_user_stats(vu)->unsupported, 1, "the message before it was handled");
	done(vu, pid, memfd);
}

Test(vhost_user, unknown_and_malformed_backend_messages_are_refused_and_counted_and_fds_closed,
     .init = setup, .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_UNKNOWN, &pid, &memfd);
	const struct viommu_vhost_user_stats *s = viommu_vhost_user_stats(vu);

	for (unsigned i = 0; i < 2000 && s->updates_sent == 0; i++)
		viommu_vhost_user_poll(vu, 1);
	cr_assert(viommu_vhost_user_connected(vu), "%s", viommu_vhost_user_error(vu));
	cr_assert_eq(s->unsupported, 1);
	cr_assert_eq(s->malformed, 3);
	cr_assert_eq(s->fds_refused, 1);
	cr_assert_eq(s->misses, 1, "the valid MISS after them is still served");
	cr_assert_eq(s->updates_sent, 1);
	done(vu, pid, memfd);
}

Test(vhost_user, a_flood_of_misses_for_unmapped_iovas_becomes_faults_in_bounded_memory,
     .init = setup, .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_FLOOD, &pid, &memfd);
	const struct viommu_iotlb_stats *is = viommu_iotlb_stats(viommu_vhost_user_iotlb(vu));

	for (unsigned i = 0; i < 10000 && is->misses < 5000; i++)
		viommu_vhost_user_poll(vu, 1);
	cr_assert(viommu_vhost_user_connected(vu));
	cr_assert_eq(is->misses, 5000);
	cr_assert_eq(is->faults, 5000);
	cr_assert_eq(is->updates, 0);
	cr_assert_eq(viommu_vhost_user_stats(vu)->updates_sent, 0);
	done(vu, pid, memfd);
}

Test(vhost_user, an_invalidate_never_acked_ends_the_connection_at_the_deadline_and_the_unmap_completes,
     .init = setup, .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_NO_ACK, &pid, &memfd);

	/* The UNMAP's strict flush waits for the ack: at most ack_timeout_ms, then disconnects. */
	cr_assert_eq(test_unmap(dev, 1, 0x7000, 0x7fff), VIOMMU_S_OK);
	cr_assert(!viommu_vhost_user_connected(vu));
	cr_assert_eq(viommu_vhost_user_stats(vu)->timeouts, 1);
	cr_assert(strstr(viommu_vhost_user_error(vu), "no reply to request 22"), "%s",
		  viommu_vhost_user_error(vu));
	cr_assert_eq(viommu_iotlb_stats(viommu_vhost_user_iotlb(vu))->invalidate_errors, 1);
	done(vu, pid, memfd);
}

Test(vhost_user, a_backend_that_disconnects_in_the_middle_of_an_update_leaves_the_vmm_running,
     .init = setup, .fini = teardown)
{
	pid_t pid;
	int memfd;
	struct viommu_vhost_user *vu = hostile(H_DISCONNECT_MID_UPDATE, &pid, &memfd);

	run_for(vu, 2000);
	cr_assert(!viommu_vhost_user_connected(vu));
	cr_assert_eq(viommu_vhost_user_stats(vu)->updates_sent, 1);
	/* the device goes on; nothing is sent to a closed connection */
	cr_assert_eq(test_unmap(dev, 1, 0x7000, 0x7fff), VIOMMU_S_OK);
	done(vu, pid, memfd);
}

/* The guard against DPDK 22.11 dropping UPDATEs for vrings that do not exist yet. With prefill,
 * a MAP made before connect (A) and one made after connect but before the vrings (B), as a
 * guest's driver maps its rings and RX pool before DRIVER_OK, must reach both vrings; one mapped
 * and unmapped again in between (C) must reach neither (the held answer is looked up again). */
Test(vhost_user, answers_made_before_the_vrings_exist_reach_every_vring_once_it_exists,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_user_opts o;
	struct viommu_vhost_user *vu;
	struct viommu_iotlb_region r;
	struct queues_report rep;
	int memfd, pfd[2];
	pid_t pid;
	void *m;

	cr_assert_eq(pipe(pfd), 0);
	report_fd = pfd[1];
	snprintf(sock_path, sizeof(sock_path), "/tmp/viommu-hostile-%d.sock", (int)getpid());
	pid = start_backend(sock_path, H_QUEUES);
	close(pfd[1]);
	viommu_vhost_user_opts_default(&o);
	o.endpoint = EP;
	o.ack_timeout_ms = 1000;
	o.iotlb.prefill = true;
	vu = viommu_vhost_user_new(fp, &o);
	cr_assert(vu);
	memfd = memfd_create("guest", MFD_CLOEXEC);
	cr_assert(memfd >= 0 && ftruncate(memfd, 1 << 20) == 0);
	m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	r = (struct viommu_iotlb_region){ 0, 1 << 20, m, memfd, 0 };
	cr_assert_eq(viommu_iotlb_add_region(viommu_vhost_user_iotlb(vu), &r), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x80000, 0x82fff, 0x0, 3), VIOMMU_S_OK); /* the rings */
	cr_assert_eq(test_map(dev, 1, 0x20000, 0x2ffff, 0x10000, 1), VIOMMU_S_OK); /* A */
	cr_assert_eq(viommu_vhost_user_connect(vu, sock_path, 0), 0, "%s", viommu_vhost_user_error(vu));
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, 0x30000, 2), VIOMMU_S_OK); /* B */
	cr_assert_eq(test_map(dev, 1, 0x60000, 0x60fff, 0x50000, 3), VIOMMU_S_OK); /* C */
	cr_assert_eq(test_unmap(dev, 1, 0x60000, 0x60fff), VIOMMU_S_OK);
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(viommu_vhost_user_set_vring(vu, i, 0x80000 + i * 0x1000, 0x80800 + i * 0x1000,
							 0x82000 + i * 0x800, -1, -1),
			     0, "%s", viommu_vhost_user_error(vu));
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(viommu_vhost_user_enable(vu, i, true), 0, "%s", viommu_vhost_user_error(vu));
	cr_assert_eq(read(pfd[0], &rep, sizeof(rep)), (ssize_t)sizeof(rep));
	for (unsigned v = 0; v < 2; v++) {
		bool a = false, b = false, c = false;

		for (unsigned i = 0; i < rep.n[v]; i++) {
			a |= rep.iova[v][i] == 0x20000 && rep.size[v][i] == 0x10000;
			b |= rep.iova[v][i] == 0x40000 && rep.size[v][i] == 0x10000;
			c |= rep.iova[v][i] < 0x61000 && 0x60000 < rep.iova[v][i] + rep.size[v][i];
		}
		cr_assert(a, "vring %u lacks the extent mapped before connect", v);
		cr_assert(b, "vring %u lacks the extent mapped before the vrings", v);
		cr_assert(!c, "vring %u holds an extent unmapped before it existed", v);
	}
	cr_assert(viommu_vhost_user_stats(vu)->deferred >= 3);
	cr_assert_eq(viommu_vhost_user_stats(vu)->deferred_dropped, 0);
	close(pfd[0]);
	report_fd = -1;
	done(vu, pid, memfd);
}

/* DPDK 22.11 joins IOVA-adjacent entries of a vring without checking their user addresses. Two
 * IOVA-adjacent extents with memory apart, both prefilled once the vrings exist: the second
 * answer comes with the split's INVALIDATE first (no NEED_REPLY: the UPDATE's ack covers it),
 * so no vring ever holds the two joined, and nothing waits for an ack that does not come. */
Test(vhost_user, the_quirk_split_invalidates_before_its_update_and_awaits_only_the_update_ack,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_user_opts o;
	struct viommu_vhost_user *vu;
	struct viommu_iotlb_region r;
	struct queues_report rep;
	int memfd, pfd[2];
	pid_t pid;
	void *m;

	cr_assert_eq(pipe(pfd), 0);
	report_fd = pfd[1];
	snprintf(sock_path, sizeof(sock_path), "/tmp/viommu-hostile-%d.sock", (int)getpid());
	pid = start_backend(sock_path, H_QUEUES);
	close(pfd[1]);
	viommu_vhost_user_opts_default(&o);
	o.endpoint = EP;
	o.ack_timeout_ms = 1000;
	o.iotlb.prefill = true;
	vu = viommu_vhost_user_new(fp, &o);
	cr_assert(vu);
	memfd = memfd_create("guest", MFD_CLOEXEC);
	cr_assert(memfd >= 0 && ftruncate(memfd, 1 << 20) == 0);
	m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	r = (struct viommu_iotlb_region){ 0, 1 << 20, m, memfd, 0 };
	cr_assert_eq(viommu_iotlb_add_region(viommu_vhost_user_iotlb(vu), &r), 0);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x80000, 0x82fff, 0x0, 3), VIOMMU_S_OK); /* the rings */
	cr_assert_eq(viommu_vhost_user_connect(vu, sock_path, 0), 0, "%s", viommu_vhost_user_error(vu));
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(viommu_vhost_user_set_vring(vu, i, 0x80000 + i * 0x1000, 0x80800 + i * 0x1000,
							 0x82000 + i * 0x800, -1, -1),
			     0, "%s", viommu_vhost_user_error(vu));
	cr_assert_eq(viommu_vhost_user_enable(vu, 0, true), 0);
	cr_assert_eq(test_map(dev, 1, 0xa0000, 0xa0fff, 0x60000, 1), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0xa1000, 0xa1fff, 0x90000, 1), VIOMMU_S_OK); /* memory apart */
	cr_assert_eq(viommu_vhost_user_enable(vu, 1, true), 0, "%s", viommu_vhost_user_error(vu));
	cr_assert(viommu_vhost_user_connected(vu), "%s", viommu_vhost_user_error(vu));
	cr_assert_eq(read(pfd[0], &rep, sizeof(rep)), (ssize_t)sizeof(rep));
	cr_assert_geq(rep.unacked_invalidates, 1, "no split INVALIDATE was sent");
	cr_assert_eq(rep.acked_invalidates, 0, "the split's INVALIDATE asked for an ack");
	for (unsigned v = 0; v < 2; v++) {
		bool second = false;

		for (unsigned i = 0; i < rep.n[v]; i++) {
			second |= rep.iova[v][i] == 0xa1000;
			for (unsigned j = 0; j < rep.n[v]; j++)
				cr_assert(rep.iova[v][i] + rep.size[v][i] != rep.iova[v][j] ||
						  rep.uaddr[v][i] + rep.size[v][i] == rep.uaddr[v][j],
					  "vring %u holds IOVA-adjacent entries 0x%llx and 0x%llx with memory apart",
					  v, (unsigned long long)rep.iova[v][i], (unsigned long long)rep.iova[v][j]);
		}
		cr_assert(second, "vring %u lacks the second extent", v);
	}
	close(pfd[0]);
	report_fd = -1;
	done(vu, pid, memfd);
}
