/* SPDX-License-Identifier: MIT */
/*
 * The kernel vhost bridge (user/vhost_kernel.h) on the host, without vhost: a SOCK_SEQPACKET
 * socketpair stands in for the vhost fd, so each write() is one 72-byte message as on
 * /dev/vhost-net and the test plays the kernel on the other end (MISS, ACCESS_FAIL, garbage in;
 * UPDATE and INVALIDATE out). This checks the bridge's parsing, answers, faults, invalidation
 * points, prefill budget and error handling. What vhost-net does with the answers is tested with
 * the real module in a booted guest: make vhost-net (tests/vhost_net/).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/vhost.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bpf_access.h"
#include "device.h"
#include "fastpath.h"
#include "requests.h"
#include "vhost_kernel.h"
#include "wire.h"

#define EP 8u
#define GPA 0x100000ull

static struct viommu_device *dev;
static struct viommu_fastpath *fp;
static int kfd = -1, bfd = -1; /* the "kernel"'s end, the bridge's end */
static uint8_t memory[1 << 20] __attribute__((aligned(4096)));
static const struct viommu_vhost_region region = { GPA, sizeof(memory), 0 };

static void setup(void)
{
	struct viommu_config cfg;
	int sv[2];

	signal(SIGPIPE, SIG_IGN);
	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, EP, true, NULL, 0), 0);
	fp = viommu_fastpath_new(dev, NULL);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert(fp, "viommu_fastpath_new: %s", strerror(errno));
	viommu_device_eventq_post(dev, 1024);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
	kfd = sv[0];
	bfd = sv[1];
}

static void teardown(void)
{
	close(kfd);
	close(bfd);
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
}

static struct viommu_vhost_kernel *attach_bridge(const struct viommu_vhost_opts *o)
{
	struct viommu_vhost_region r = region;
	struct viommu_vhost_kernel *b;

	r.uaddr = (uint64_t)(uintptr_t)memory;
	b = viommu_vhost_kernel_attach(fp, bfd, EP, &r, 1, o);
	cr_assert(b, "attach: %s", strerror(errno));
	return b;
}

/* The kernel's side: one message of @type (VHOST_IOTLB_*) in frame @frame (V1 or V2). */
static void kernel_send(uint32_t frame, uint8_t type, uint64_t iova, uint8_t perm)
{
	struct vhost_msg_v2 m;

	memset(&m, 0, sizeof(m));
	m.type = frame;
	m.iotlb.iova = iova;
	m.iotlb.perm = perm;
	m.iotlb.type = type;
	cr_assert_eq(write(kfd, &m, sizeof(m)), (ssize_t)sizeof(m));
}

/* The next message the bridge wrote, or false when none is queued (after @ms). */
static bool kernel_recv(struct vhost_msg_v2 *m, int ms)
{
	struct pollfd p = { .fd = kfd, .events = POLLIN };

	if (poll(&p, 1, ms) <= 0)
		return false;
	cr_assert_eq(read(kfd, m, sizeof(*m)), (ssize_t)sizeof(*m), "every message is 72 bytes");
	cr_assert_eq(m->type, VHOST_IOTLB_MSG_V2);
	return true;
}

static unsigned faults_popped(uint8_t *reason, uint64_t *addr)
{
	struct viommu_wire_fault f;
	unsigned n = 0;

	viommu_fastpath_poll_faults(fp);
	while (viommu_device_fault_pop(dev, &f) == 0) {
		n++;
		if (reason)
			*reason = f.reason;
		if (addr)
			*addr = viommu_le64(&f.address);
	}
	return n;
}

Test(vhost_kernel, negotiation_refuses_an_fd_that_is_no_vhost_device_and_says_why,
     .init = setup, .fini = teardown)
{
	const char *why = NULL;
	uint64_t acked = 0xdead;

	cr_assert_eq(viommu_vhost_kernel_negotiate(bfd, 1ull << 32, &acked, &why), -ENOTTY);
	cr_assert(why && strstr(why, "VHOST_GET_FEATURES"), "why: %s", why ? why : "(null)");
	cr_assert_eq(acked, 0xdead, "nothing acked on a refusal");
}

Test(vhost_kernel, attach_refuses_no_regions_overlapping_regions_and_too_many,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_region r[VIOMMU_VHOST_REGIONS_MAX + 1];

	for (unsigned i = 0; i <= VIOMMU_VHOST_REGIONS_MAX; i++)
		r[i] = (struct viommu_vhost_region){ GPA + i * 0x1000, 0x1000, (uint64_t)(uintptr_t)memory };
	errno = 0;
	cr_assert_null(viommu_vhost_kernel_attach(fp, bfd, EP, r, 0, NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(viommu_vhost_kernel_attach(fp, bfd, EP, r, VIOMMU_VHOST_REGIONS_MAX + 1, NULL));
	cr_assert_eq(errno, EINVAL);
	r[1].gpa = GPA + 0x800;
	cr_assert_null(viommu_vhost_kernel_attach(fp, bfd, EP, r, 2, NULL));
	cr_assert_eq(errno, EEXIST);
	cr_assert_null(viommu_vhost_kernel_attach(fp, -1, EP, r, 1, NULL));
	cr_assert_eq(errno, EINVAL);
}

Test(vhost_kernel, a_miss_in_either_frame_is_answered_with_one_update_of_the_whole_extent,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA + 0x10000, VIOMMU_MAP_F_WRITE), VIOMMU_S_OK);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x41234, VHOST_ACCESS_RO);
	kernel_send(VHOST_IOTLB_MSG, VHOST_IOTLB_MISS, 0x4fff0, VHOST_ACCESS_WO); /* V1 frame */
	cr_assert_eq(viommu_vhost_kernel_service(b), 2);
	for (int i = 0; i < 2; i++) {
		cr_assert(kernel_recv(&m, 0), "answer %d", i);
		cr_assert_eq(m.iotlb.type, VHOST_IOTLB_UPDATE);
		cr_assert_eq(m.iotlb.iova, 0x40000);
		cr_assert_eq(m.iotlb.size, 0x10000);
		cr_assert_eq(m.iotlb.uaddr, (uint64_t)(uintptr_t)(memory + 0x10000));
		cr_assert_eq(m.iotlb.perm, VHOST_ACCESS_RW, "the mapping's permission, widened, not an echo");
	}
	cr_assert_not(kernel_recv(&m, 0), "one UPDATE per MISS");
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.misses == 2 && st.updates == 2 && st.faults == 0 && st.bad_messages == 0);
	cr_assert_eq(viommu_vhost_kernel_service(b), 0, "nothing queued: returns at once");
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, messages_the_kernel_never_sends_are_counted_and_not_answered,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	uint8_t junk[200];

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	memset(junk, 0xa5, sizeof(junk));
	cr_assert_eq(write(kfd, junk, 40), 40); /* short */
	kernel_send(7, VHOST_IOTLB_MISS, 0x40000, 1); /* unknown frame type */
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_UPDATE, 0x40000, 1);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_INVALIDATE, 0x40000, 1);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_BATCH_BEGIN, 0, 0);
	kernel_send(VHOST_IOTLB_MSG_V2, 0, 0x40000, 1);
	cr_assert_eq(write(kfd, junk, sizeof(junk)), (ssize_t)sizeof(junk)); /* long: cut to 72 */
	cr_assert_eq(viommu_vhost_kernel_service(b), 7);
	viommu_vhost_kernel_stats(b, &st);
	cr_assert_eq(st.bad_messages, 7);
	cr_assert(st.misses == 0 && st.updates == 0 && st.faults == 0);
	cr_assert_not(kernel_recv(&m, 0), "no answer to garbage");
	/* and the bridge still serves */
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x40000, 1);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_UPDATE);
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, a_miss_with_no_translation_gets_no_update_and_a_fault_at_its_iova,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	uint64_t addr = 0;
	uint8_t reason = 0xff;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x90010, VHOST_ACCESS_RO); /* unmapped */
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert_eq(faults_popped(&reason, &addr), 1);
	cr_assert(reason == VIOMMU_FAULT_R_MAPPING && addr == 0x90010);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x40010, VHOST_ACCESS_WO); /* read-only */
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert_eq(faults_popped(&reason, &addr), 1);
	cr_assert(reason == VIOMMU_FAULT_R_MAPPING && addr == 0x40010);
	cr_assert_not(kernel_recv(&m, 0), "never an UPDATE for a fault");
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.misses == 2 && st.faults == 2 && st.updates == 0);
	/* detached endpoint: blocked, reason DOMAIN */
	cr_assert_eq(test_detach(dev, 1, EP), VIOMMU_S_OK);
	while (kernel_recv(&m, 0))
		; /* the DETACH's INVALIDATE */
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x40010, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert_eq(faults_popped(&reason, NULL), 1);
	cr_assert_eq(reason, VIOMMU_FAULT_R_DOMAIN);
	cr_assert_not(kernel_recv(&m, 0));
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, a_miss_mapped_to_no_vmm_memory_is_a_fault_not_a_silent_stall,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	uint64_t addr = 0;
	uint8_t reason = 0xff;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	/* the guest maps an IOVA onto MMIO (a PA outside every region) */
	cr_assert_eq(test_map(dev, 1, 0x70000, 0x70fff, 0xfee00000, VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE),
		     VIOMMU_S_OK);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x70100, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert_not(kernel_recv(&m, 0), "no UPDATE: the kernel could not reach it");
	cr_assert_eq(faults_popped(&reason, &addr), 1, "the guest learns why its queue stopped");
	cr_assert(reason == VIOMMU_FAULT_R_MAPPING && addr == 0x70100);
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.unbacked == 1 && st.faults == 1 && st.updates == 0);
	/* a prefill over it pushes nothing */
	cr_assert_eq(viommu_vhost_kernel_prefill(b, 0x70000, 0x1000), -EFAULT);
	cr_assert_not(kernel_recv(&m, 0));
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, an_access_fail_is_a_fault_unless_the_iova_is_mapped_now,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	uint64_t addr = 0;
	uint8_t reason = 0xff;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_ACCESS_FAIL, 0x40020, VHOST_ACCESS_WO);
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_ACCESS_FAIL, 0x40020, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 2);
	cr_assert_eq(faults_popped(&reason, &addr), 1, "the write to a read-only mapping faults");
	cr_assert(reason == VIOMMU_FAULT_R_MAPPING && addr == 0x40020);
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.access_fails == 2 && st.access_fails_mapped == 1 && st.faults == 1);
	cr_assert_eq(st.updates, 0, "an ACCESS_FAIL is never answered");
	cr_assert_not(kernel_recv(&m, 0));
	viommu_vhost_kernel_detach(b);
}

/* Strict: the INVALIDATE is on the fd when the request returns; a DETACH invalidates all. */
static void check_invalidations(const struct viommu_vhost_opts *o)
{
	struct viommu_vhost_kernel *b = attach_bridge(o);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	while (kernel_recv(&m, 0))
		; /* MAP prefills, if any */
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	cr_assert(kernel_recv(&m, 0), "the INVALIDATE is written before the UNMAP completes");
	cr_assert(m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0x40000 &&
		  m.iotlb.size == 0x10000);
	cr_assert_eq(test_detach(dev, 1, EP), VIOMMU_S_OK);
	cr_assert(kernel_recv(&m, 0), "the DETACH's INVALIDATE too");
	cr_assert(m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0 &&
		  m.iotlb.size == UINT64_MAX, "everything, without size 0 (EINVAL on 5.17+)");
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.invalidates == 2 && st.invalidate_all == 1);
	viommu_vhost_kernel_detach(b);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.size == UINT64_MAX,
		  "detaching the bridge leaves the kernel nothing");
}

Test(vhost_kernel, strict_unmap_and_detach_are_invalidated_before_they_complete,
     .init = setup, .fini = teardown)
{
	check_invalidations(NULL);
}

static bool bridge_readable(struct viommu_vhost_kernel *b)
{
	struct pollfd p = { .fd = viommu_vhost_kernel_fd(b), .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/* Lazy: the kernel's write() is synchronous, so an UNMAP's INVALIDATE is not written inside the
 * request; the bridge's fd turns readable and the next service() writes the ranges kept since,
 * merged. A DETACH is still invalidated inside the request. */
Test(vhost_kernel, lazy_unmaps_are_invalidated_merged_by_the_next_service_call_not_the_request,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_opts o = { .lazy = true };
	struct viommu_vhost_kernel *b = attach_bridge(&o);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x50000, 0x5ffff, GPA + 0x10000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x80000, 0x8ffff, GPA + 0x20000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_not(bridge_readable(b), "nothing to do yet");
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 0), "the UNMAP completed with its INVALIDATE not written");
	cr_assert(bridge_readable(b), "the bridge's fd says a flush waits");
	cr_assert_eq(test_unmap(dev, 1, 0x50000, 0x5ffff), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 0));
	viommu_vhost_kernel_stats(b, &st);
	cr_assert_eq(st.invalidates, 0);
	cr_assert_eq(viommu_vhost_kernel_service(b), 0, "no MISS handled");
	cr_assert(kernel_recv(&m, 0), "service() wrote the INVALIDATE");
	cr_assert(m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0x40000 &&
		  m.iotlb.size == 0x20000, "the two adjacent UNMAPs merged into one INVALIDATE");
	cr_assert_not(kernel_recv(&m, 0));
	cr_assert_not(bridge_readable(b));
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.invalidates == 1 && st.invalidates_deferred == 1);
	/* once flushed, the unmapped IOVA is a fault, never an UPDATE */
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x41000, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert_not(kernel_recv(&m, 0));
	cr_assert_eq(faults_popped(NULL, NULL), 1);
	/* DETACH: inside the request, as in strict mode */
	cr_assert_eq(test_detach(dev, 1, EP), VIOMMU_S_OK);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0 &&
		  m.iotlb.size == UINT64_MAX, "a DETACH is invalidated before it completes, lazy or not");
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.invalidates == 2 && st.invalidates_deferred == 1 && st.invalidate_all == 1);
	viommu_vhost_kernel_detach(b);
}

/* Lazy: an UPDATE is never written before an INVALIDATE kept from an earlier UNMAP (it would
 * remove the UPDATE, or leave the kernel the stale entry beside the new one). */
Test(vhost_kernel, lazy_invalidates_go_out_before_any_update_answer_or_prefill,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_opts o = { .lazy = true };
	struct viommu_vhost_kernel *b = attach_bridge(&o);
	struct vhost_msg_v2 m;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x80000, 0x8ffff, GPA + 0x20000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	/* re-mapped elsewhere before any flush; the kernel misses on it */
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA + 0x30000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 0));
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x40000, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0x40000,
		  "the INVALIDATE first");
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_UPDATE && m.iotlb.iova == 0x40000 &&
		  m.iotlb.uaddr == (uint64_t)(uintptr_t)(memory + 0x30000), "then the new translation");
	/* a prefill writes what is kept first too */
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 0));
	cr_assert_eq(viommu_vhost_kernel_prefill(b, 0x80000, 0x10000), 0);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0x40000);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_UPDATE && m.iotlb.iova == 0x80000);
	cr_assert_not(kernel_recv(&m, 0));
	viommu_vhost_kernel_detach(b);
}

/* Lazy, thread mode: the bridge's thread writes the INVALIDATE once the device thread has left the
 * request (it holds the bridge's lock until then), without a service call. */
Test(vhost_kernel, lazy_thread_mode_writes_the_invalidate_after_the_request_released_the_lock,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_opts o = { .lazy = true, .thread = true };
	struct viommu_vhost_kernel *b = attach_bridge(&o);
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	struct timespec ts;
	uint64_t done;

	viommu_vhost_kernel_lock(b);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 50), "nothing while the request holds the lock");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	done = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	viommu_vhost_kernel_unlock(b);
	cr_assert(kernel_recv(&m, 2000), "the bridge's thread wrote it");
	cr_assert(m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.iova == 0x40000 && m.iotlb.size == 0x10000);
	viommu_vhost_kernel_stats(b, &st);
	cr_assert(st.invalidates == 1 && st.invalidates_deferred == 1);
	cr_assert_gt(st.last_invalidate_at_ns, done, "written after the request completed");
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, prefill_map_pushes_maps_until_half_the_kernels_entries_then_leaves_them_to_misses,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_opts o = { .prefill = VIOMMU_VHOST_PREFILL_MAP, .max_iotlb_entries = 8 };
	struct viommu_vhost_kernel *b;
	struct viommu_vhost_stats st;
	struct vhost_msg_v2 m;
	unsigned updates = 0;

	b = attach_bridge(&o);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	for (unsigned i = 0; i < 6; i++)
		cr_assert_eq(test_map(dev, 1, 0x40000 + i * 0x10000, 0x4ffff + i * 0x10000,
				      GPA + i * 0x10000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	while (kernel_recv(&m, 0)) {
		cr_assert_eq(m.iotlb.type, VHOST_IOTLB_UPDATE);
		cr_assert_eq(m.iotlb.iova, 0x40000 + updates * 0x10000ull, "in MAP order");
		cr_assert_eq(m.iotlb.size, 0x10000);
		updates++;
	}
	viommu_vhost_kernel_stats(b, &st);
	cr_assert_eq(updates, 4, "max_iotlb_entries / 2");
	cr_assert(st.prefilled == 4 && st.prefill_skipped == 2);
	/* the skipped ones are still answered on a MISS */
	kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x90000, VHOST_ACCESS_RO);
	cr_assert_eq(viommu_vhost_kernel_service(b), 1);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_UPDATE && m.iotlb.iova == 0x90000);
	/* a full invalidation (re-ATTACH elsewhere) gives the budget back */
	cr_assert_eq(test_attach(dev, 2, EP, 0), VIOMMU_S_OK);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_INVALIDATE && m.iotlb.size == UINT64_MAX);
	cr_assert_eq(test_map(dev, 2, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.type == VHOST_IOTLB_UPDATE, "budget back after a full invalidation");
	/* a MAP into a domain the endpoint is not in is not pushed; nor one unmapped in the batch */
	cr_assert_eq(viommu_device_add_endpoint(dev, EP + 1, true, NULL, 0), 0);
	cr_assert_eq(test_attach(dev, 3, EP + 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 3, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_not(kernel_recv(&m, 0), "another domain's MAP is not pushed");
	viommu_device_batch_begin(dev);
	cr_assert_eq(test_map(dev, 2, 0x200000, 0x20ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 2, 0x200000, 0x20ffff), VIOMMU_S_OK);
	viommu_device_batch_end(dev);
	while (kernel_recv(&m, 0))
		cr_assert_neq(m.iotlb.type, VHOST_IOTLB_UPDATE, "mapped and unmapped in one batch: not pushed");
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, prefill_pushes_every_extent_of_a_range_and_refuses_a_gap,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct vhost_msg_v2 m;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x41fff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x42000, 0x43fff, GPA + 0x8000, VIOMMU_MAP_F_WRITE), VIOMMU_S_OK);
	cr_assert_eq(viommu_vhost_kernel_prefill(b, 0x41000, 0x2000), 0, "a range over two extents");
	cr_assert(kernel_recv(&m, 0) && m.iotlb.iova == 0x40000 && m.iotlb.size == 0x2000 &&
		  m.iotlb.perm == VHOST_ACCESS_RO);
	cr_assert(kernel_recv(&m, 0) && m.iotlb.iova == 0x42000 && m.iotlb.size == 0x2000 &&
		  m.iotlb.perm == VHOST_ACCESS_RW && m.iotlb.uaddr == (uint64_t)(uintptr_t)(memory + 0x8000));
	cr_assert_not(kernel_recv(&m, 0));
	cr_assert_eq(viommu_vhost_kernel_prefill(b, 0x43000, 0x2000), -EFAULT, "ends in a gap");
	cr_assert_eq(faults_popped(NULL, NULL), 0, "a prefill reports no fault");
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, a_refused_write_is_counted_and_the_request_still_completes,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_kernel *b = attach_bridge(NULL);
	struct viommu_vhost_stats st;

	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(shutdown(kfd, SHUT_RD), 0); /* the "kernel" takes nothing more */
	cr_assert_eq(test_unmap(dev, 1, 0x40000, 0x4ffff), VIOMMU_S_OK);
	viommu_vhost_kernel_stats(b, &st);
	cr_assert_eq(st.write_errors, 1);
	cr_assert_eq(st.last_write_error, -EPIPE);
	cr_assert_eq(st.invalidates, 0);
	viommu_vhost_kernel_detach(b);
}

Test(vhost_kernel, the_bridge_thread_answers_without_a_service_call_and_stops_at_detach,
     .init = setup, .fini = teardown)
{
	struct viommu_vhost_opts o = { .thread = true };
	struct viommu_vhost_kernel *b = attach_bridge(&o);
	struct vhost_msg_v2 m;

	viommu_vhost_kernel_lock(b);
	cr_assert_eq(test_attach(dev, 1, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x40000, 0x4ffff, GPA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	viommu_vhost_kernel_unlock(b);
	for (unsigned i = 0; i < 100; i++) {
		kernel_send(VHOST_IOTLB_MSG_V2, VHOST_IOTLB_MISS, 0x40000 + i * 0x100, VHOST_ACCESS_RO);
		cr_assert(kernel_recv(&m, 2000), "answered by the thread (%u)", i);
		cr_assert(m.iotlb.type == VHOST_IOTLB_UPDATE && m.iotlb.iova == 0x40000);
	}
	viommu_vhost_kernel_detach(b);
}
