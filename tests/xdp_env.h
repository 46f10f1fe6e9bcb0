/* SPDX-License-Identifier: MIT */
/*
 * A veth pair for the XDP tests and figure (tests/test_xdp.c, tests/xdp_veth.c), all in network
 * namespaces of the calling thread's own making, so nothing is left behind and two runs never
 * meet: the thread moves into a new namespace (the "host" side: vxa, where viommu's program is
 * attached) and the peer end vxb lives in a second one. The peer sends descriptor frames through
 * AF_PACKET sockets created in its namespace; a small XDP program on vxb (tests/xdp_aux.bpf.c)
 * gives it the NAPI instance that frames sent back with XDP_TX need to be received at all, and
 * counts them.
 *
 * Needs root (CAP_SYS_ADMIN for the namespaces, CAP_NET_ADMIN) and iproute2's `ip`.
 */
#ifndef VIOMMU_TEST_XDP_ENV_H
#define VIOMMU_TEST_XDP_ENV_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "viommu_abi.h"
#include "xdp_aux.skel.h"

#define XDP_ENV_ETH_P 0x88b5
#define XDP_ENV_HOST "vxa"
#define XDP_ENV_PEER "vxb"

/* A descriptor frame: the query, the answer's room (written by the program), then a tag of the
 * sender's that the program leaves alone (to match answers to queries). */
struct xdp_env_frame {
	struct ethhdr eth;
	struct viommu_query q;
	struct viommu_answer a;
	uint64_t tag;
} __attribute__((packed));

struct xdp_env {
	int host_ns, peer_ns; /* namespace fds */
	int host_if, peer_if;
	int tx, rx; /* the peer's sockets: queries out, answers in */
	struct viommu_xdp_aux_bpf *peer_prog;
	unsigned char host_mac[ETH_ALEN], peer_mac[ETH_ALEN];
};

static inline int xdp_env_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int xdp_env_sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	return system(cmd) == 0 ? 0 : -1;
}

/* Set up; NULL, or why the machine cannot (the caller skips with it). @peer_drop: the peer's
 * program drops answers after counting them (the figure) instead of passing them to its
 * socket. */
static inline const char *xdp_env_setup(struct xdp_env *e, bool peer_drop)
{
	static char why[256];
	static const unsigned char hmac[ETH_ALEN] = { 0x02, 0x76, 0x69, 0, 0, 0x0a };
	static const unsigned char pmac[ETH_ALEN] = { 0x02, 0x76, 0x69, 0, 0, 0x0b };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	int one = 1, buf = 8 << 20, err;

	memset(e, 0, sizeof(*e));
	e->host_ns = e->peer_ns = e->tx = e->rx = -1;
	memcpy(e->host_mac, hmac, ETH_ALEN);
	memcpy(e->peer_mac, pmac, ETH_ALEN);
	if (geteuid() != 0)
		return "not root (the test makes network namespaces and a veth pair)";
	if (unshare(CLONE_NEWNET)) {
		snprintf(why, sizeof(why), "unshare(CLONE_NEWNET): %s", strerror(errno));
		return why;
	}
	e->host_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (unshare(CLONE_NEWNET))
		return "a second network namespace is refused";
	e->peer_ns = open("/proc/thread-self/ns/net", O_RDONLY); /* inherited by `ip` below */
	if (e->host_ns < 0 || e->peer_ns < 0 || setns(e->host_ns, CLONE_NEWNET))
		return "cannot move between network namespaces";
	if (xdp_env_sh("ip link add " XDP_ENV_HOST " address 02:76:69:00:00:0a type veth peer name "
		       XDP_ENV_PEER " address 02:76:69:00:00:0b netns /proc/%d/fd/%d", getpid(), e->peer_ns))
		return "`ip link add ... type veth` fails (no veth in this kernel, or no iproute2)";
	if (xdp_env_sh("ip link set lo up") || xdp_env_sh("ip link set " XDP_ENV_HOST " up"))
		return "`ip link set " XDP_ENV_HOST " up` fails";
	e->host_if = (int)if_nametoindex(XDP_ENV_HOST);
	if (setns(e->peer_ns, CLONE_NEWNET))
		return "cannot enter the peer's namespace";
	err = xdp_env_sh("ip link set " XDP_ENV_PEER " up");
	e->peer_if = (int)if_nametoindex(XDP_ENV_PEER);
	e->tx = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* sends only */
	e->rx = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(XDP_ENV_ETH_P));
	if (!err && e->tx >= 0 && e->rx >= 0) {
		sll.sll_ifindex = e->peer_if;
		sll.sll_protocol = htons(XDP_ENV_ETH_P);
		setsockopt(e->tx, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
		setsockopt(e->rx, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
		setsockopt(e->rx, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
		if (bind(e->tx, (struct sockaddr *)&sll, sizeof(sll)) ||
		    bind(e->rx, (struct sockaddr *)&sll, sizeof(sll)))
			err = -1;
	}
	if (!err && (e->peer_prog = viommu_xdp_aux_bpf__open_and_load())) {
		struct bpf_program *p = peer_drop ? e->peer_prog->progs.viommu_test_drop :
						    e->peer_prog->progs.viommu_test_pass;

		err = bpf_xdp_attach(e->peer_if, bpf_program__fd(p), XDP_FLAGS_DRV_MODE, NULL);
	} else {
		err = -1;
	}
	if (setns(e->host_ns, CLONE_NEWNET) || err || !e->host_if || !e->peer_if)
		return "the peer's sockets or its XDP program cannot be set up";
	return NULL;
}

static inline void xdp_env_teardown(struct xdp_env *e)
{
	if (e->tx >= 0)
		close(e->tx);
	if (e->rx >= 0)
		close(e->rx);
	viommu_xdp_aux_bpf__destroy(e->peer_prog); /* the namespaces go with this process */
	if (e->peer_ns >= 0)
		close(e->peer_ns);
	if (e->host_ns >= 0)
		close(e->host_ns);
	memset(e, 0, sizeof(*e));
	e->host_ns = e->peer_ns = e->tx = e->rx = -1;
}

/* A query frame from the peer to the host side. */
static inline void xdp_env_frame(const struct xdp_env *e, struct xdp_env_frame *f,
				 const struct viommu_query *q, uint64_t tag)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->eth.h_dest, e->host_mac, ETH_ALEN);
	memcpy(f->eth.h_source, e->peer_mac, ETH_ALEN);
	f->eth.h_proto = htons(XDP_ENV_ETH_P);
	memcpy(&f->q, q, sizeof(*q));
	f->tag = tag;
}

/* Send @len bytes from the peer; 0 or -errno. */
static inline int xdp_env_send(const struct xdp_env *e, const void *frame, size_t len)
{
	return send(e->tx, frame, len, 0) == (ssize_t)len ? 0 : -errno;
}

/* The next frame the peer receives within @ms; its length, 0 on timeout, or -errno. */
static inline ssize_t xdp_env_recv(const struct xdp_env *e, void *buf, size_t len, int ms)
{
	struct pollfd p = { .fd = e->rx, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return 0;
	n = recv(e->rx, buf, len, MSG_DONTWAIT);
	return n < 0 ? -errno : n;
}

/* Frames the peer's XDP program has seen (answers), summed over CPUs. */
static inline uint64_t xdp_env_peer_seen(const struct xdp_env *e)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t per[ncpu > 0 ? ncpu : 1], sum = 0;
	uint32_t zero = 0;

	if (ncpu <= 0 || bpf_map_lookup_elem(bpf_map__fd(e->peer_prog->maps.viommu_test_seen), &zero, per))
		return 0;
	for (int c = 0; c < ncpu; c++)
		sum += per[c];
	return sum;
}

#endif
