/* SPDX-License-Identifier: MIT */
/*
 * viommu_xdp: the fast path's XDP program (bpf/xlate.bpf.c, viommu_xdp) on a real interface,
 * attached through libxdp so that it shares the interface's XDP hook with other programs.
 *
 * The program is a second load of the fast path's BPF object with every map reused from a
 * running fast path (in this process: viommu_xdp_attach; in another: its pins,
 * viommu_xdp_attach_pinned), so it translates from the device's live shared memory and reports
 * faults into the same ring buffer the device drains (viommu_fastpath_poll_faults).
 *
 * libxdp runs several programs on one interface through its dispatcher, whose slots are
 * freplace (BPF_PROG_TYPE_EXT) programs and whose links it pins on a bpffs (/sys/fs/bpf, or
 * $LIBXDP_BPFFS). On a kernel that refuses EXT programs, or without a bpffs, libxdp attaches
 * the program alone (legacy mode): then it is the interface's only XDP program and attaching
 * another one fails with -EBUSY. viommu_xdp_multiprog() says which happened and
 * viommu_xdp_legacy_reason() why.
 *
 * Concurrency: control plane only; any thread, one call at a time per interface. The attached
 * program is a BPF reader of the fast path (docs/concurrency.md): a strict UNMAP waits for it
 * only with viommu_fastpath_opts.bpf_grace.
 * Errors: 0 or -errno; constructors NULL + errno.
 */
#ifndef VIOMMU_XDP_H
#define VIOMMU_XDP_H

#include <stdbool.h>
#include <stdint.h>

#include "fastpath.h"

enum viommu_xdp_mode {
	VIOMMU_XDP_NATIVE = 0, /* in the driver (veth, most NICs); default */
	VIOMMU_XDP_SKB, /* generic XDP, after the skb is built: any interface, slower */
};

struct viommu_xdp_opts {
	enum viommu_xdp_mode mode;
	/* Attach viommu_xdp_nolookup instead: the same parsing and answer write, no translation
	 * (the baseline of `make xdp`'s figure). */
	bool nolookup;
	/* libxdp's run priority in the dispatcher (lower runs first); 0: libxdp's default (50). */
	unsigned run_prio;
};

struct viommu_xdp;

/* Attach the XDP program to @ifindex, translating from @fp's maps (its BPF replica, made now if
 * needed: device thread). NULL + errno: EBUSY (another
 * XDP program is attached and libxdp cannot add ours to it: legacy mode, or it is not a libxdp
 * dispatcher), ENODEV, EOPNOTSUPP (the mode is not supported by the interface), EPERM, or what
 * the kernel says. The program stays attached while @fp lives, until viommu_xdp_detach(). */
struct viommu_xdp *viommu_xdp_attach(struct viommu_fastpath *fp, int ifindex,
				     const struct viommu_xdp_opts *opts);
/* The same from the maps a running fast path pinned under @pin_dir (viommu_fastpath_pin), for
 * a process that is not the device's (the CLI). The program stays attached after this process
 * exits, until detached; it keeps the maps alive (not the device: a device that went away
 * leaves it answering from the last state it published). Besides the above: ENOENT (a map is
 * not pinned there), EPROTO (the pins are not a fast path of this version). */
struct viommu_xdp *viommu_xdp_attach_pinned(const char *pin_dir, int ifindex,
					    const struct viommu_xdp_opts *opts);
/* Detach and free @x (NULL is a no-op). 0, or -errno from libxdp (the handle is freed anyway). */
int viommu_xdp_detach(struct viommu_xdp *x);
/* Free @x and leave the program attached (the CLI's attach). */
void viommu_xdp_release(struct viommu_xdp *x);

/* Whether @x went in through libxdp's dispatcher (true), or alone (legacy). */
bool viommu_xdp_multiprog(const struct viommu_xdp *x);
/* The attached program's kernel id. */
uint32_t viommu_xdp_prog_id(const struct viommu_xdp *x);

/* Detach every viommu XDP program (viommu_xdp, viommu_xdp_nolookup) from @ifindex, whoever
 * attached it, leaving other programs in place. How many were detached, or -errno (-ENOENT:
 * none was attached). */
int viommu_xdp_detach_ifindex(int ifindex);
/* The number of XDP programs attached to @ifindex (through a dispatcher: the programs in it),
 * or -errno; @names (may be NULL) gets their names, comma-separated. */
int viommu_xdp_programs(int ifindex, char *names, size_t len);

/* Why libxdp cannot use its dispatcher on this machine, or NULL if it can: the kernel refuses
 * BPF_PROG_TYPE_EXT (freplace) programs, or there is no bpffs. */
const char *viommu_xdp_legacy_reason(void);

#endif
