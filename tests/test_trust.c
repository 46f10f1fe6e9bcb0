// SPDX-License-Identifier: MIT
/*
 * The trust model, tried as a hostile neighbour would: readers in other processes (another PID
 * namespace, a seccomp sandbox, one that scribbles on everything it was given, one that dies
 * inside or outside its critical section, one that never leaves it), threads of the device's
 * process that exit inside a section, pins in a directory someone else controls, pinned maps of
 * the wrong shape. Every test runs the real BPF fast path; those that need root for a namespace
 * or a bpffs mount skip with the kernel's reason.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "device.h"
#include "fastpath.h"
#include "reader.h"
#include "bpf_access.h"
#include "requests.h"
#include "stat.h"

#define EP 8
#define DOM 1
#define IOVA 0x3000ull
#define PA 0x55000ull

static struct viommu_device *dev;
static struct viommu_fastpath *fp;

/* Shared with the reader processes and threads: a MAP_SHARED page. */
struct shared {
	int ready; /* the reader is inside its section, holding the translation */
	int go; /* the test tells the reader to go on */
	int done_using; /* set by the reader before it exits the section */
	int result; /* the reader's own checks: 0 = all passed, else which failed */
};
static struct shared *sh;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void setup_with(uint32_t grace_timeout_ms)
{
	struct viommu_config cfg;
	struct viommu_fastpath_opts o = { .grace_timeout_ms = grace_timeout_ms };

	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_pending_faults = 1u << 16; /* room for what one poll can move */
	dev = viommu_device_new(&cfg);
	cr_assert_not_null(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, EP, true, NULL, 0), 0);
	fp = viommu_fastpath_new(dev, &o);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(fp, "viommu_fastpath_new: %s", strerror(errno));
	cr_assert_eq(test_attach(dev, DOM, EP, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, DOM, IOVA, IOVA + 0xfff, PA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	viommu_device_eventq_post(dev, 64);
}

static void teardown(void)
{
	if (fp && viommu_fastpath_check(fp)) {
		fprintf(stderr, "teardown: the fast path's shared state is inconsistent\n");
		abort();
	}
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
	fp = NULL;
	dev = NULL;
}

static void wait_flag(int *f)
{
	uint64_t t0 = now_ms();

	while (!__atomic_load_n(f, __ATOMIC_ACQUIRE)) {
		cr_assert_lt(now_ms() - t0, 20000, "the reader never got there");
		usleep(1000);
	}
}

static bool translates(struct viommu_reader *r)
{
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ, .iova = IOVA + 8, .size = 8 };
	struct viommu_answer a;

	return viommu_reader_translate(r, &q, &a) == VIOMMU_XLATE_HIT && a.pa == PA + 8;
}

/* The reader's side of the ordering check: inside a section, holding the translation, it says
 * so, keeps it for @hold_ms, marks its use done, and only then exits. */
static int hold_translation(struct viommu_reader *r, unsigned hold_ms)
{
	viommu_reader_enter(r);
	if (!translates(r))
		return 2;
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
	usleep(hold_ms * 1000);
	__atomic_store_n(&sh->done_using, 1, __ATOMIC_RELAXED);
	return viommu_reader_exit(r) ? 3 : 0;
}

/* The writer's side: the strict UNMAP returns only after the reader's use is done. */
static void unmap_must_wait_for_the_reader(void)
{
	const struct viommu_meta *m = viommu_fastpath_view(fp)->meta;
	uint32_t revoked = m->readers_revoked;

	wait_flag(&sh->ready);
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	/* Ordered by the reader's release in exit() and the scan's acquire (R2/W5). */
	cr_assert_eq(__atomic_load_n(&sh->done_using, __ATOMIC_RELAXED), 1,
		     "the strict UNMAP completed while the reader still used the translation");
	cr_assert_eq(m->readers_revoked, revoked, "the reader was waited for, not revoked");
}

/* Fork a reader process on a fresh connection; @fn runs in the child with its reader. */
static pid_t spawn_remote(int (*fn)(int sock))
{
	int sv[2];
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(fn(sv[1]));
	}
	close(sv[1]);
	cr_assert_geq(viommu_fastpath_add_reader(fp, sv[0]), 0);
	return pid;
}

static void expect_exit(pid_t pid, int code)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the reader process died of signal %d", WTERMSIG(status));
	cr_assert_eq(WEXITSTATUS(status), code, "the reader process failed its check %d",
		     WEXITSTATUS(status));
}

/* No criterion .timeout: criterion 2.4 leaks in its runner now and then when a test with one
 * ends (LeakSanitizer, make unit-asan); every wait below is bounded by the test itself. */
TestSuite(trust, .fini = teardown);

/* ---- readers in other processes ---- */

static int remote_translates_and_reports(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);
	struct viommu_query bad = { .endpoint = EP, .access = VIOMMU_MAP_F_WRITE, .iova = IOVA, .size = 1 };
	struct viommu_answer a;

	if (!r)
		return 10;
	if (!translates(r))
		return 11;
	if (viommu_reader_translate(r, &bad, &a) != VIOMMU_XLATE_FAULT || viommu_reader_report_fault(r, &bad, &a))
		return 12;
	/* Read-only for good: the view cannot be made writable. */
	if (mprotect((void *)r->nodes, 4096, PROT_READ | PROT_WRITE) == 0)
		return 13;
	viommu_reader_close(r);
	return 0;
}

Test(trust, a_reader_in_another_process_translates_and_reports_faults_over_its_connection)
{
	struct viommu_wire_fault f;
	pid_t pid;
	int got = 0;

	setup_with(0);
	pid = spawn_remote(remote_translates_and_reports);
	expect_exit(pid, 0);
	for (int i = 0; i < 100 && got == 0; i++)
		got = viommu_fastpath_poll_faults(fp);
	cr_assert_eq(got, 1);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	cr_assert_eq(f.reason, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(viommu_le64(&f.address), IOVA);
}

/* A hostile reader: it takes the protocol's fds itself and tries every way to write what it
 * was given. Bit i of the result: attempt i succeeded. */
static int remote_scribbler(int sock)
{
	struct viommu_share_hello h;
	int fds[2], res = 0, rw;
	char cbuf[CMSG_SPACE(sizeof(fds))], path[64];
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct viommu_reader_slot *slot;
	void *p;

	if (recvmsg(sock, &msg, 0) != sizeof(h) || !CMSG_FIRSTHDR(&msg))
		return 255;
	memcpy(fds, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(fds));
	if (mmap(NULL, h.data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0) != MAP_FAILED)
		res |= 1;
	p = mmap(NULL, h.data_bytes, PROT_READ, MAP_SHARED, fds[0], 0);
	if (p == MAP_FAILED || mprotect(p, 4096, PROT_READ | PROT_WRITE) == 0)
		res |= 2;
	if (pwrite(fds[0], "x", 1, (off_t)h.off[VIOMMU_SHM_EXTENTS]) == 1)
		res |= 4;
	if (ftruncate(fds[0], 0) == 0)
		res |= 8;
	if (fallocate(fds[0], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
		res |= 16;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[0]);
	rw = open(path, O_RDWR);
	if (rw >= 0 && mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) != MAP_FAILED)
		res |= 32;
	if (ftruncate(fds[1], 0) == 0) /* the writer would take a SIGBUS on our slot */
		res |= 64;
	/* Its own slot it may write: garbage everywhere, including an `active` that claims to be
	 * inside a section from the start of time. */
	slot = mmap(NULL, VIOMMU_READER_SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	if (slot == MAP_FAILED)
		return 254;
	memset(slot, 0xa5, VIOMMU_READER_SLOT_BYTES);
	__atomic_store_n(&slot->active, 1, __ATOMIC_RELAXED);
	/* Malformed messages and an fd it tries to push on the writer. */
	send(sock, "short", 5, 0);
	{
		char m2[CMSG_SPACE(sizeof(int))];
		struct viommu_fault_rec rec = { .endpoint = EP, .reason = 200 };
		struct iovec v = { .iov_base = &rec, .iov_len = sizeof(rec) };
		struct msghdr mm = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = m2,
				     .msg_controllen = sizeof(m2) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mm);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fds[0], sizeof(int));
		sendmsg(sock, &mm, 0);
	}
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
	wait_flag(&sh->go);
	return res;
}

Test(trust, a_reader_in_another_process_can_write_nothing_but_its_own_slot)
{
	struct viommu_reader *local;
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ, .iova = IOVA + 8, .size = 8 };
	struct viommu_answer want, user, bpf;
	uint64_t t0;
	pid_t pid;

	setup_with(100);
	pid = spawn_remote(remote_scribbler);
	wait_flag(&sh->ready);
	/* What the others see is what the store says. The BPF replica is made now, after the
	 * hostile reader has the memfd: it is a copy of it, kept in step. */
	cr_assert_eq(viommu_fastpath_bpf_enable(fp), 0);
	local = viommu_reader_open(fp);
	cr_assert_not_null(local);
	viommu_device_answer(dev, &q, &want);
	viommu_reader_translate(local, &q, &user);
	cr_assert_eq(viommu_fastpath_bpf_translate(fp, &q, &bpf, 1, false), 0);
	cr_assert(want.result == VIOMMU_XLATE_HIT && user.pa == want.pa && bpf.pa == want.pa);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	/* Its bogus messages are dropped, none reaches the event queue. */
	cr_assert_eq(viommu_fastpath_poll_faults(fp), 0);
	/* Its `active` of 1 costs one grace timeout, once: it is then revoked. */
	t0 = now_ms();
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_view(fp)->meta->readers_revoked, 1);
	cr_assert_eq(test_map(dev, DOM, IOVA, IOVA + 0xfff, PA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_view(fp)->meta->readers_revoked, 1, "revoked once, not again");
	cr_assert_lt(now_ms() - t0, 10000);
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	expect_exit(pid, 0);
	viommu_reader_close(local);
}

static int remote_holds(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);
	int res;

	if (!r)
		return 10;
	res = hold_translation(r, 200);
	viommu_reader_close(r);
	return res;
}

Test(trust, a_strict_unmap_waits_for_a_reader_in_another_process)
{
	pid_t pid;

	setup_with(10000);
	pid = spawn_remote(remote_holds);
	unmap_must_wait_for_the_reader();
	expect_exit(pid, 0);
}

/* In a new PID namespace the reader is pid 1 there: a pid means nothing to the writer. */
static int remote_in_pid_namespace(int sock)
{
	pid_t pid;
	int status;

	if (unshare(CLONE_NEWPID))
		return 100; /* cannot: the parent skips */
	pid = fork();
	if (pid < 0)
		return 101;
	if (pid == 0) {
		if (getpid() != 1)
			_exit(102);
		_exit(remote_holds(sock));
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return 103;
	return WEXITSTATUS(status);
}

Test(trust, a_reader_in_another_pid_namespace_holds_a_strict_unmap_until_it_exits)
{
	int status;
	pid_t pid;

	setup_with(10000);
	pid = spawn_remote(remote_in_pid_namespace);
	while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE)) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 100)
				cr_skip_test("cannot make a PID namespace here (needs CAP_SYS_ADMIN)");
			cr_assert_fail("the namespaced reader failed: status 0x%x", status);
		}
		usleep(1000);
	}
	unmap_must_wait_for_the_reader();
	expect_exit(pid, 0);
}

static int remote_dies_inside(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);

	if (!r)
		return 10;
	viommu_reader_enter(r);
	if (!translates(r))
		return 11;
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
	_exit(0); /* inside its section, never exits it */
}

Test(trust, a_reader_that_dies_inside_its_section_releases_the_writer_at_once_even_as_a_zombie)
{
	uint64_t t0;
	pid_t pid;
	int status;

	setup_with(30000); /* a wait for the timeout would show */
	pid = spawn_remote(remote_dies_inside);
	wait_flag(&sh->ready);
	/* Not reaped yet: a zombie. Its connection ended with its files. */
	while (kill(pid, 0) == 0 && waitpid(pid, &status, WNOHANG | WNOWAIT) == 0)
		usleep(1000);
	t0 = now_ms();
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_lt(now_ms() - t0, 5000, "the writer waited for a dead reader");
	cr_assert_eq(viommu_fastpath_view(fp)->meta->readers_revoked, 0, "reclaimed, not revoked");
	expect_exit(pid, 0);
}

static int remote_quiescent_exit(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);

	if (!r || !translates(r))
		return 10;
	_exit(0); /* quiescent, without closing anything */
}

Test(trust, readers_that_exit_without_closing_are_reclaimed)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out;

	setup_with(0);
	for (unsigned i = 0; i < 3 * VIOMMU_READERS_MAX; i++)
		expect_exit(spawn_remote(remote_quiescent_exit), 0);
	out = open_memstream(&buf, &len);
	viommu_fastpath_poll_faults(fp);
	viommu_fastpath_print_stat(fp, out);
	fclose(out);
	cr_assert_not_null(strstr(buf, " 0 in others"), "stat: %s", buf);
	free(buf);
}

static int remote_overstays(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);
	struct viommu_query bad = { .endpoint = EP, .access = VIOMMU_MAP_F_WRITE, .iova = IOVA, .size = 1 };
	struct viommu_answer a;

	if (!r)
		return 10;
	viommu_reader_enter(r);
	if (!translates(r))
		return 11;
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
	wait_flag(&sh->go);
	/* Told, both ways: exit() says the section was cut off, the connection is gone. */
	if (viommu_reader_exit(r) != -ETIMEDOUT)
		return 12;
	bad.iova = 0x900000;
	if (viommu_reader_translate(r, &bad, &a) != VIOMMU_XLATE_FAULT ||
	    viommu_reader_report_fault(r, &bad, &a) != -ENOTCONN)
		return 13;
	viommu_reader_close(r);
	return 0;
}

Test(trust, a_reader_in_another_process_that_overstays_is_cut_off_and_told)
{
	setup_with(50);
	pid_t pid = spawn_remote(remote_overstays);

	wait_flag(&sh->ready);
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_view(fp)->meta->readers_revoked, 1);
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	expect_exit(pid, 0);
}

/* A seccomp sandbox that refuses membarrier: the reader must not silently lose R1's order. */
static int remote_sandboxed(int sock)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	struct viommu_reader *r;
	int res;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 100;
	if (syscall(__NR_membarrier, 0, 0, 0) != -1 || errno != EPERM)
		return 101;
	r = viommu_reader_open_socket(sock);
	if (!r)
		return 10;
	if (!viommu_reader_fence_mode(r))
		return 11;
	res = hold_translation(r, 100);
	viommu_reader_close(r);
	return res;
}

Test(trust, a_sandboxed_reader_without_membarrier_takes_the_fence_mode_and_says_so)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out;
	pid_t pid;

	setup_with(10000);
	pid = spawn_remote(remote_sandboxed);
	wait_flag(&sh->ready);
	/* It says so: its slot's flag reaches the writer's summary (`viommu stat`). */
	out = open_memstream(&buf, &len);
	viommu_fastpath_print_stat(fp, out);
	fclose(out);
	cr_assert_not_null(strstr(buf, " 1 fence mode"), "stat: %s", buf);
	free(buf);
	unmap_must_wait_for_the_reader();
	expect_exit(pid, 0);
}

/* ---- readers in the device's process ---- */

static void *thread_exits_inside(void *arg)
{
	struct viommu_reader *r = viommu_reader_open(fp);

	(void)arg;
	if (!r)
		return NULL;
	viommu_reader_enter(r);
	__atomic_store_n(&sh->result, translates(r) ? 0 : 1, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
	return r; /* the thread ends inside its section */
}

Test(trust, a_thread_that_ends_inside_its_section_is_revoked_after_the_grace_timeout)
{
	const struct viommu_meta *m;
	struct viommu_reader *r;
	pthread_t t;

	setup_with(50);
	m = viommu_fastpath_view(fp)->meta;
	cr_assert_eq(pthread_create(&t, NULL, thread_exits_inside, NULL), 0);
	cr_assert_eq(pthread_join(t, (void **)&r), 0);
	cr_assert_not_null(r);
	cr_assert_eq(sh->result, 0);
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(m->readers_revoked, 1);
	/* Not waited for again. */
	cr_assert_eq(test_map(dev, DOM, IOVA, IOVA + 0xfff, PA, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, DOM, IOVA, IOVA + 0xfff), VIOMMU_S_OK);
	cr_assert_eq(m->readers_revoked, 1);
	cr_assert_eq(viommu_reader_exit(r), -ETIMEDOUT, "its section is reported cut off");
	viommu_reader_close(r);
	/* The slot is free again and the next reader there is protected normally. */
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	viommu_reader_enter(r);
	cr_assert_eq(viommu_reader_exit(r), 0);
	viommu_reader_close(r);
}

static void *nested_holder(void *arg)
{
	struct viommu_reader *r = arg;

	viommu_reader_enter(r);
	viommu_reader_enter(r);
	if (viommu_reader_exit(r) || !viommu_reader_inside(r)) {
		__atomic_store_n(&sh->result, 1, __ATOMIC_RELAXED); /* the inner exit ended it */
		viommu_reader_exit(r);
		__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	sh->result = hold_translation(r, 0) ? 2 : 0; /* re-enters at depth 2 */
	usleep(100000);
	__atomic_store_n(&sh->done_using, 1, __ATOMIC_RELAXED);
	if (viommu_reader_exit(r))
		sh->result = 3;
	return NULL;
}

Test(trust, enter_and_exit_nest_and_only_the_outermost_exit_ends_the_section)
{
	struct viommu_reader *r;
	pthread_t t;

	setup_with(10000);
	r = viommu_reader_open(fp);
	cr_assert_not_null(r);
	cr_assert_eq(viommu_reader_exit(r), -EINVAL, "an exit without an enter is refused");
	__atomic_store_n(&sh->done_using, 0, __ATOMIC_RELAXED);
	cr_assert_eq(pthread_create(&t, NULL, nested_holder, r), 0);
	unmap_must_wait_for_the_reader();
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(sh->result, 0, "nested section check %d failed", sh->result);
	cr_assert(!viommu_reader_inside(r));
	viommu_reader_close(r);
}

/* ---- the self-check sees shared state that differs from the store ---- */

Test(trust, the_self_check_notices_a_translation_changed_behind_the_writers_back)
{
	const struct viommu_fp_view *v;
	struct viommu_extent_rec *x;
	__u64 *pte, old;
	uint64_t pa;
	uint32_t dslot;

	setup_with(0);
	/* A two-page mapping beside setup's one page: a record, and a solo PTE. */
	cr_assert_eq(test_map(dev, DOM, IOVA + 0x1000, IOVA + 0x2fff, PA + 0x1000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	v = viommu_fastpath_view(fp);
	/* Anyone holding a map fd (a pin, say) could do this to the map itself: the record... */
	x = (struct viommu_extent_rec *)v->exts;
	for (; x->start != IOVA + 0x1000 || (x->seq & 1); x++)
		;
	pa = x->phys;
	__atomic_store_n(&x->phys, 0x666000ull, __ATOMIC_RELAXED);
	cr_assert_eq(viommu_fastpath_check(fp), -EUCLEAN);
	__atomic_store_n(&x->phys, pa, __ATOMIC_RELAXED);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	/* ...or the one-page mapping's PTE (in the window its first MAP placed over IOVA), made
	 * to point elsewhere, or to say it is not alone. */
	dslot = v->eps[EP].domain_slot;
	cr_assert_neq(v->wins[dslot].regions, 0);
	pte = (__u64 *)&v->ptes[v->wins[dslot].leaf +
				((IOVA - (v->wins[dslot].base & ~VIOMMU_WIN_F_MASK)) >> VIOMMU_HASH_SHIFT)]
		      .pte[VIOMMU_SLOT_OF(VIOMMU_RADIX_LEVELS - 1, IOVA)];
	old = *pte;
	cr_assert_eq(old, VIOMMU_PTE_MAKE(PA, VIOMMU_MAP_F_READ) | VIOMMU_PTE_SOLO);
	__atomic_store_n(pte, VIOMMU_PTE_MAKE(0x666000ull, VIOMMU_MAP_F_READ) | VIOMMU_PTE_SOLO, __ATOMIC_RELAXED);
	cr_assert_eq(viommu_fastpath_check(fp), -EUCLEAN);
	__atomic_store_n(pte, old & ~VIOMMU_PTE_SOLO, __ATOMIC_RELAXED);
	cr_assert_eq(viommu_fastpath_check(fp), -EUCLEAN);
	__atomic_store_n(pte, old, __ATOMIC_RELAXED);
	cr_assert_eq(viommu_fastpath_check(fp), 0);
}

/* ---- pins ---- */

static char bpffs[64];

static void mount_bpffs(void)
{
	snprintf(bpffs, sizeof(bpffs), "/tmp/viommu-bpffs-XXXXXX");
	cr_assert_not_null(mkdtemp(bpffs));
	if (mount("bpf", bpffs, "bpf", 0, "mode=1777")) {
		rmdir(bpffs);
		cr_skip_test("cannot mount a bpffs to pin on: %s", strerror(errno));
	}
}

static void umount_bpffs(void)
{
	umount(bpffs);
	rmdir(bpffs);
}

static bool exists(const char *dir, const char *name)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return stat(p, &st) == 0;
}

Test(trust, a_pin_refused_for_a_taken_name_leaves_the_other_devices_pins_alone)
{
	struct viommu_device *dev2;
	struct viommu_fastpath *fp2;
	struct viommu_config cfg;
	char dir[96];

	setup_with(0);
	mount_bpffs();
	snprintf(dir, sizeof(dir), "%s/viommu", bpffs);
	cr_assert_eq(viommu_fastpath_pin(fp, dir), 0);
	viommu_config_default(&cfg);
	dev2 = viommu_device_new(&cfg);
	fp2 = viommu_fastpath_new(dev2, NULL);
	cr_assert_not_null(fp2);
	cr_assert_eq(viommu_fastpath_pin(fp2, dir), -EEXIST);
	viommu_fastpath_free(fp2);
	viommu_device_free(dev2);
	cr_assert(exists(dir, "viommu_meta") && exists(dir, "viommu_nodes") &&
		  exists(dir, "viommu_report_fault"), "the first device's pins are still there");
	cr_assert_eq(viommu_stat_pinned(dir, fopen("/dev/null", "w")), 0);
	viommu_fastpath_unpin(fp);
	cr_assert(!exists(dir, "viommu_meta") && !exists(bpffs, "viommu"));
	umount_bpffs();
}

Test(trust, a_pin_directory_someone_else_controls_is_refused)
{
	char dir[96], link[96];

	setup_with(0);
	mount_bpffs();
	snprintf(dir, sizeof(dir), "%s/open", bpffs);
	cr_assert_eq(mkdir(dir, 0777), 0);
	cr_assert_eq(chmod(dir, 0777), 0);
	cr_assert_eq(viommu_fastpath_pin(fp, dir), -EPERM, "writable by others");
	cr_assert(exists(bpffs, "open"), "what we did not create stays");
	cr_assert_eq(chmod(dir, 0700), 0);
	cr_assert_eq(chown(dir, 65534, 65534), 0);
	cr_assert_eq(viommu_fastpath_pin(fp, dir), -EPERM, "owned by another user");
	cr_assert(exists(bpffs, "open"));
	snprintf(link, sizeof(link), "%s/link", bpffs);
	cr_assert_eq(symlink("/tmp", link), 0);
	cr_assert_eq(viommu_fastpath_pin(fp, link), -ENOTDIR, "a symlink");
	umount_bpffs();
}

static void pin_map(const char *dir, const char *name, uint32_t value_size, uint32_t n, const void *v0)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);
	char p[256];
	uint32_t zero = 0;
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, name, 4, value_size, n, &o);

	cr_assert_geq(fd, 0);
	if (v0)
		cr_assert_eq(bpf_map_update_elem(fd, &zero, v0, 0), 0);
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	cr_assert_eq(bpf_obj_pin(fd, p), 0);
	close(fd);
}

Test(trust, stat_refuses_pinned_maps_of_the_wrong_shape)
{
	struct viommu_meta meta = { .magic = VIOMMU_ABI_MAGIC, .abi_version = VIOMMU_ABI_VERSION,
				    .readers_max = VIOMMU_READERS_MAX };
	char dir[96];
	FILE *null = fopen("/dev/null", "w");

	setup_with(0);
	mount_bpffs();
	snprintf(dir, sizeof(dir), "%s/fake", bpffs);
	cr_assert_eq(mkdir(dir, 0700), 0);
	pin_map(dir, "viommu_meta", 8, 1, NULL); /* too small a value */
	cr_assert_eq(viommu_stat_pinned(dir, null), -EPROTO);
	snprintf(dir, sizeof(dir), "%s/fake2", bpffs);
	cr_assert_eq(mkdir(dir, 0700), 0);
	pin_map(dir, "viommu_meta", sizeof(meta), 1, &meta);
	pin_map(dir, "viommu_readers", sizeof(struct viommu_reader_info), 1, NULL); /* too few */
	cr_assert_eq(viommu_stat_pinned(dir, null), -EPROTO);
	/* The right count of elements too small to be reader summaries: read past each one, the
	 * summary would be garbage; refused before anything is read. */
	snprintf(dir, sizeof(dir), "%s/fake3", bpffs);
	cr_assert_eq(mkdir(dir, 0700), 0);
	pin_map(dir, "viommu_meta", sizeof(meta), 1, &meta);
	pin_map(dir, "viommu_readers", 8, VIOMMU_READER_INFOS, NULL);
	cr_assert_eq(viommu_stat_pinned(dir, null), -EPROTO);
	fclose(null);
	umount_bpffs();
}

/* ---- caps the guest sees are caps every path honours ---- */

Test(trust, the_caps_are_lowered_to_what_the_pools_hold_for_a_node_hungry_layout)
{
	struct viommu_fastpath_opts o = { .nodes = 512 };
	struct viommu_config cfg;
	struct viommu_reader *r;
	uint64_t maps;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	dev = viommu_device_new(&cfg);
	cr_assert_eq(viommu_device_add_endpoint(dev, EP, true, NULL, 0), 0);
	fp = viommu_fastpath_new(dev, &o);
	if (!fp)
		test_skip_if_kernel_refuses_bpf(errno);
	cr_assert_not_null(fp);
	maps = viommu_device_config(dev)->max_mappings;
	cr_assert_eq(viommu_device_config(dev)->max_domains, 512 / 8);
	cr_assert_eq(maps, (512 - 512 / 8) / VIOMMU_NODES_PER_MAP_WORST);
	cr_assert_leq(viommu_device_config(dev)->max_mappings_per_domain, maps);
	/* Every mapping the caps allow, each straddling a 256 TiB boundary (a fresh path of
	 * level 2-5 nodes on each side), is taken and answered on every path; one more is NOMEM
	 * from the caps, the same on every path. */
	cr_assert_eq(test_attach(dev, DOM, EP, 0), VIOMMU_S_OK);
	for (uint64_t i = 1; i <= maps; i++) {
		uint64_t b = i << 48;

		cr_assert_eq(test_map(dev, DOM, b - 0x1000, b + 0xfff, i << 20, VIOMMU_MAP_F_READ),
			     VIOMMU_S_OK, "mapping %llu of %llu", (unsigned long long)i,
			     (unsigned long long)maps);
	}
	cr_assert_eq(test_map(dev, DOM, 0x1000, 0x1fff, 0, VIOMMU_MAP_F_READ), VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_fastpath_bpf_enable(fp), 0); /* a replica of the full pools */
	r = viommu_reader_open(fp);
	for (uint64_t i = 1; i <= maps; i++) {
		struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ,
					  .iova = (i << 48) - 0x10, .size = 0x20 };
		struct viommu_answer u, b;

		cr_assert_eq(viommu_reader_translate(r, &q, &u), VIOMMU_XLATE_HIT);
		cr_assert_eq(viommu_fastpath_bpf_translate(fp, &q, &b, 1, false), 0);
		cr_assert(b.result == VIOMMU_XLATE_HIT && b.pa == u.pa && u.pa == (i << 20) + 0xff0);
	}
	viommu_reader_close(r);
}

Test(trust, pools_that_cannot_hold_one_mapping_are_refused)
{
	struct viommu_fastpath_opts o = { .nodes = 8 };
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	dev = viommu_device_new(&cfg);
	cr_assert_null(viommu_fastpath_new(dev, &o));
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(viommu_device_config(dev)->max_mappings, cfg.max_mappings, "caps untouched");
}

/* ---- one fault path, safe from any thread ---- */

#define FAULT_THREADS 4
#define FAULTS_EACH 500

static int reporters_done;

static void *report_faults(void *arg)
{
	struct viommu_reader *r = viommu_reader_open(fp);
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_WRITE, .size = 1 };
	struct viommu_answer a;
	uintptr_t sent = 0;

	(void)arg;
	if (!r)
		return (void *)UINTPTR_MAX;
	for (int i = 0; i < FAULTS_EACH; i++) {
		int err;

		q.iova = 0x100000 + ((uint64_t)i << 12); /* never mapped */
		if (viommu_reader_translate(r, &q, &a) != VIOMMU_XLATE_FAULT)
			break;
		while ((err = viommu_reader_report_fault(r, &q, &a)) == -ENOBUFS)
			usleep(100); /* the ring is full until the device thread drains it */
		if (err)
			break;
		sent++;
	}
	viommu_reader_close(r);
	__atomic_add_fetch(&reporters_done, 1, __ATOMIC_RELEASE);
	return (void *)sent;
}

Test(trust, readers_on_many_threads_report_faults_while_the_device_thread_runs)
{
	pthread_t t[FAULT_THREADS];
	struct viommu_wire_fault f;
	uint64_t delivered = 0, sent = 0;

	setup_with(0);
	reporters_done = 0;
	for (int i = 0; i < FAULT_THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, report_faults, NULL), 0);
	/* The device thread keeps changing the device and moving faults into the event queue. */
	for (unsigned n = 0; __atomic_load_n(&reporters_done, __ATOMIC_ACQUIRE) < FAULT_THREADS; n++) {
		cr_assert_eq(test_map(dev, DOM, 0x40000000, 0x40000fff, 0x1000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
		cr_assert_eq(test_unmap(dev, DOM, 0x40000000, 0x40000fff), VIOMMU_S_OK);
		viommu_device_eventq_post(dev, 4096);
		cr_assert_geq(viommu_fastpath_poll_faults(fp), 0);
		while (viommu_device_fault_pop(dev, &f) == 0)
			delivered++;
	}
	for (int i = 0; i < FAULT_THREADS; i++) {
		void *ret;

		cr_assert_eq(pthread_join(t[i], &ret), 0);
		cr_assert_neq((uintptr_t)ret, UINTPTR_MAX);
		sent += (uintptr_t)ret;
	}
	viommu_device_eventq_post(dev, 4096);
	cr_assert_geq(viommu_fastpath_poll_faults(fp), 0);
	while (viommu_device_fault_pop(dev, &f) == 0)
		delivered++;
	cr_assert_eq(sent, FAULT_THREADS * FAULTS_EACH);
	cr_assert_eq(viommu_device_stats(dev)->faults_dropped, 0, "the event queue had room");
	cr_assert_eq(delivered, sent, "every fault reported from any thread reaches the event queue once");
	cr_assert_eq(viommu_device_stats(dev)->faults_dropped, 0);
}
