/* SPDX-License-Identifier: MIT */
/*
 * Whether the kernel serves BPF to this test process, told apart from a refusal of our own
 * programs. A load the verifier rejects fails with EACCES or EINVAL, the same errnos a kernel
 * that refuses BPF to an unprivileged process can give: a BPF test skips only when the kernel
 * refuses BPF here (no bpf(), missing capabilities, a trivial program of each type the fast path
 * loads refused, no mmapable array maps), and fails when the kernel serves it and still refuses
 * the fast path's programs: a program that stops verifying must fail the suite.
 */
#ifndef VIOMMU_TEST_BPF_ACCESS_H
#define VIOMMU_TEST_BPF_ACCESS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static inline bool test_has_cap(const struct __user_cap_data_struct d[2], int cap)
{
	return d[cap / 32].effective & (1u << (cap % 32));
}

/* Loads `r0 = @ret; exit` as a program of @type; 0 or -errno. */
static inline int test_bpf_trivial_load(enum bpf_prog_type type, int ret, unsigned flags)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = ret },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, o, .prog_flags = flags);
	int fd = bpf_prog_load(type, NULL, "GPL", insns, 2, &o);

	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/* Why the kernel refuses BPF to this process, or NULL when it serves it: then a refusal of the
 * fast path's objects is about them (a verifier rejection). Probed once per process. */
static inline const char *test_bpf_refusal(void)
{
	static char why[160];
	static int probed;
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	int err, fd;

	if (probed)
		return why[0] ? why : NULL;
	probed = 1;
	if (syscall(SYS_capget, &h, d)) {
		snprintf(why, sizeof(why), "capget: %s", strerror(errno));
		return why;
	}
	/* The fast path loads XDP (CAP_NET_ADMIN) and syscall programs (CAP_BPF) that the
	 * verifier checks with the privileged rules only with CAP_PERFMON; CAP_SYS_ADMIN has all. */
	if (!test_has_cap(d, CAP_SYS_ADMIN) &&
	    !(test_has_cap(d, CAP_BPF) && test_has_cap(d, CAP_PERFMON) && test_has_cap(d, CAP_NET_ADMIN))) {
		snprintf(why, sizeof(why),
			 "the process lacks CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN)");
		return why;
	}
	if ((err = test_bpf_trivial_load(BPF_PROG_TYPE_SYSCALL, 0, BPF_F_SLEEPABLE))) {
		snprintf(why, sizeof(why), "a trivial syscall program is refused: %s", strerror(-err));
		return why;
	}
	if ((err = test_bpf_trivial_load(BPF_PROG_TYPE_XDP, XDP_PASS, 0))) {
		snprintf(why, sizeof(why), "a trivial XDP program is refused: %s", strerror(-err));
		return why;
	}
	LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_MMAPABLE);
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 8, 1, &mo);
	if (fd < 0) {
		snprintf(why, sizeof(why), "an mmapable array map is refused: %s", strerror(errno));
		return why;
	}
	close(fd);
	return NULL;
}

/* After viommu_fastpath_new() returned NULL with @err (errno): skip the test if the kernel
 * refuses BPF (or membarrier, ENOSYS) to this process; fail it if the kernel serves BPF here and
 * refused the fast path's programs or maps anyway (EPERM, EACCES, EINVAL: the verifier's log is
 * on stderr, from libbpf); return for other errnos, which the caller asserts on. */
static inline void test_skip_if_kernel_refuses_bpf(int err)
{
	const char *why;

	if (err == ENOSYS)
		cr_skip_test("the kernel refuses the fast path: %s", strerror(err));
	if (err != EPERM && err != EACCES && err != EINVAL)
		return;
	if ((why = test_bpf_refusal()))
		cr_skip_test("the kernel refuses BPF to this process (%s); viommu_fastpath_new: %s",
			     why, strerror(err));
	cr_assert_fail("the kernel serves BPF to this process, but refused the fast path's objects: "
		       "%s (a program the verifier rejects? its log is above)", strerror(err));
}

#endif
