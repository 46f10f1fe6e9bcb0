// SPDX-License-Identifier: MIT
/*
 * The writer's side of sharing: reader registrations (this process and others), handing the
 * sealed memfd to readers in other processes, their connections (liveness and fault reports),
 * the in-process fault socket, the writer's summary for `viommu stat`, and pins.
 *
 * Trust (docs/concurrency.md, "Trust"): every party but the writer is assumed hostile. A reader
 * in another process holds a read-only view that the kernel enforces (a memfd sealed with
 * F_SEAL_FUTURE_WRITE: no mapping of it but the writer's can write, nor write(), nor truncation)
 * and one page of its own; its life is its connection, which the kernel ends with its last
 * holder, in whatever PID namespace. Everything it writes or sends is validated or bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fastpath_int.h"
#include "reader.h"
#include "xlate.skel.h"

#define ALIGNED_SLOT 128 /* two cache lines: a reader's stores never share a line with another's */
#define FP_REMOTE0 VIOMMU_READERS_MAX /* first index of readers in other processes */
#define FP_FAULTS_PER_POLL 1024 /* per reader and call: a flooding reader cannot starve the rest */

int fp_share_init(struct viommu_fastpath *fp)
{
	fp->local_slots = aligned_alloc(ALIGNED_SLOT, VIOMMU_READERS_MAX * sizeof(*fp->local_slots));
	if (!fp->local_slots)
		return -ENOMEM;
	memset(fp->local_slots, 0, VIOMMU_READERS_MAX * sizeof(*fp->local_slots));
	for (uint32_t i = 0; i < VIOMMU_READER_INFOS; i++) {
		fp->readers[i].conn = -1;
		fp->readers[i].slot = i < FP_REMOTE0 ? &fp->local_slots[i] : NULL;
	}
	return 0;
}

void fp_share_free(struct viommu_fastpath *fp)
{
	viommu_fastpath_unpin(fp);
	for (uint32_t i = FP_REMOTE0; i < VIOMMU_READER_INFOS; i++)
		if (fp->readers[i].conn >= 0)
			fp_reader_drop(fp, i);
	free(fp->local_slots);
}

/* ---- readers in this process ---- */

struct viommu_reader_slot *viommu_fastpath_claim_slot(struct viommu_fastpath *fp, uint32_t *token)
{
	for (uint32_t i = 0; i < FP_REMOTE0; i++) {
		struct fp_reader *rd = &fp->readers[i];
		uint32_t o = __atomic_load_n(&rd->owner, __ATOMIC_RELAXED);
		uint32_t claim = ((FP_OWNER_GEN(o) + 1) << 2) | FP_READER_CLAIMING;
		struct viommu_reader_slot *s = rd->slot;

		if (FP_OWNER_STATE(o) != FP_READER_FREE ||
		    !__atomic_compare_exchange_n(&rd->owner, &o, claim, false, __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			continue;
		__atomic_store_n(&s->active, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->revoked, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->flags, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->lookups, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->hits, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->identity, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->retries, 0, __ATOMIC_RELAXED);
		for (int k = 0; k < 3; k++)
			__atomic_store_n(&s->faults[k], 0, __ATOMIC_RELAXED);
		*token = (FP_OWNER_GEN(claim) << 2) | FP_READER_LIVE;
		/* Release: the slot's reset before the scan (wait_readers' acquire) can see it live. */
		__atomic_store_n(&rd->owner, *token, __ATOMIC_RELEASE);
		return s;
	}
	errno = ENOSPC;
	return NULL;
}

void viommu_fastpath_release_slot(struct viommu_fastpath *fp, const struct viommu_reader_slot *slot,
				  uint32_t token)
{
	size_t i = (size_t)(slot - fp->local_slots);

	if (i >= FP_REMOTE0)
		return;
	__atomic_store_n(&fp->local_slots[i].active, 0, __ATOMIC_RELEASE);
	/* LIVE or REVOKED with our generation -> FREE; the writer's revoking CAS names LIVE with
	 * our generation, so it fails once this store is in. */
	__atomic_store_n(&fp->readers[i].owner, (FP_OWNER_GEN(token) << 2) | FP_READER_FREE,
			 __ATOMIC_RELEASE);
}

static void release_local(struct viommu_reader *r)
{
	viommu_fastpath_release_slot(r->owner, r->slot, r->token);
}

struct viommu_reader *viommu_reader_open(struct viommu_fastpath *fp)
{
	const struct viommu_fp_view *v = &fp->view;
	struct viommu_reader *r = viommu_reader_alloc();

	if (!r)
		return NULL;
	/* The BPF replica when there is one, else the memfd: both follow the protocol (I11). The
	 * replica's pages were allocated whole by the kernel, in order, mostly contiguous; the
	 * memfd's one at a time as the pools filled, scattered. Random lookups over 1M pages cost
	 * 81 ns through the first and 90 through the second (docs/design.md, "Memory"). Acquire:
	 * pairs with viommu_fastpath_bpf_enable()'s release of skel, after replica_delta. */
	ptrdiff_t d = __atomic_load_n(&fp->skel, __ATOMIC_ACQUIRE) ? fp->replica_delta : 0;

	r->meta = (const void *)((const char *)v->meta + d);
	r->eps = (const void *)((const char *)v->eps + d);
	r->ep_index = (const void *)((const char *)v->ep_index + d);
	r->nodes = (const void *)((const char *)v->nodes + d);
	r->leaves = (const void *)((const char *)v->leaves + d);
	r->ptes = (const void *)((const char *)v->ptes + d);
	r->exts = (const void *)((const char *)v->exts + d);
	r->buckets = (const void *)((const char *)v->buckets + d);
	r->wins = (const void *)((const char *)v->wins + d);
	r->pieces = (const void *)((const char *)v->pieces + d);
	r->pieces_max = v->pieces_max;
	r->nodes_max = v->nodes_max;
	r->leaves_max = v->leaves_max;
	r->extents_max = v->extents_max;
	r->hash_mask = v->hash_mask;
	/* Faults go to the fast path's socket (never closed by the reader: release is set). */
	r->conn = fp->fault_tx;
	r->slot = viommu_fastpath_claim_slot(fp, &r->token);
	if (!r->slot) {
		free(r);
		errno = ENOSPC;
		return NULL;
	}
	r->owner = fp;
	r->release = release_local;
	viommu_reader_ready(r);
	return r;
}

int viommu_fastpath_fault_prog_fd(const struct viommu_fastpath *fp)
{
	const struct viommu_xlate_bpf *skel = __atomic_load_n(&fp->skel, __ATOMIC_ACQUIRE);

	return skel ? bpf_program__fd(skel->progs.viommu_report_fault) : -ENODEV;
}

int viommu_fastpath_fault_fd(const struct viommu_fastpath *fp)
{
	return fp->fault_tx;
}

/* ---- revocation and reclaim ---- */

void fp_reader_revoke(struct viommu_fastpath *fp, uint32_t i, uint32_t owner)
{
	struct fp_reader *rd = &fp->readers[i];

	if (rd->conn >= 0) {
		/* Another process: cut it off for good (its next report fails, its exit() says so). */
		__atomic_store_n(&rd->slot->revoked, owner, __ATOMIC_RELAXED);
		fp_reader_drop(fp, i);
	} else {
		uint32_t want = owner;

		if (!__atomic_compare_exchange_n(&rd->owner, &want,
						 (FP_OWNER_GEN(owner) << 2) | FP_READER_REVOKED, false,
						 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			return; /* it closed meanwhile: nothing to revoke */
		__atomic_store_n(&rd->slot->revoked, owner, __ATOMIC_RELAXED);
	}
	META_ADD(readers_revoked, 1);
}

void fp_reader_drop(struct viommu_fastpath *fp, uint32_t i)
{
	struct fp_reader *rd = &fp->readers[i];

	if (rd->conn < 0)
		return;
	close(rd->conn);
	munmap(rd->slot, VIOMMU_READER_SLOT_BYTES);
	rd->conn = -1;
	rd->slot = NULL;
	rd->pid = 0;
	__atomic_store_n(&rd->owner, (FP_OWNER_GEN(rd->owner) << 2) | FP_READER_FREE, __ATOMIC_RELAXED);
}

/* Is the connection over? Messages still queued are read first (poll_faults), so only a
 * hang-up with nothing left to read ends the reader here. */
static bool conn_ended(int conn)
{
	struct pollfd p = { .fd = conn, .events = POLLIN | POLLRDHUP };

	if (poll(&p, 1, 0) <= 0)
		return false;
	return (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

int fp_reader_reap(struct viommu_fastpath *fp, uint32_t i)
{
	if (fp->readers[i].conn < 0 || !conn_ended(fp->readers[i].conn))
		return 0;
	fp_reader_drop(fp, i);
	return 1;
}

/* ---- readers in other processes ---- */

static int slot_memfd(struct viommu_reader_slot **slot)
{
	int fd = memfd_create("viommu-reader", MFD_CLOEXEC | MFD_ALLOW_SEALING), err;
	void *m;

	if (fd < 0)
		return -errno;
	/* Sealed size: a reader that could shrink its page would make our next load of it a
	 * SIGBUS in the device thread. */
	if (ftruncate(fd, VIOMMU_READER_SLOT_BYTES) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		err = -errno;
		close(fd);
		return err;
	}
	m = mmap(NULL, VIOMMU_READER_SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		err = -errno;
		close(fd);
		return err;
	}
	*slot = m;
	return fd;
}

int viommu_fastpath_add_reader(struct viommu_fastpath *fp, int conn)
{
	struct viommu_share_hello h = { 0 };
	struct viommu_reader_slot *slot = NULL;
	struct ucred cred = { 0 };
	socklen_t len = sizeof(int);
	int type = 0, fds[2], err;
	uint32_t i, token;
	char cbuf[CMSG_SPACE(sizeof(fds))];
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;

	if (getsockopt(conn, SOL_SOCKET, SO_TYPE, &type, &len))
		return -errno;
	if (type != SOCK_SEQPACKET)
		return -EPROTOTYPE;
	for (i = FP_REMOTE0; i < VIOMMU_READER_INFOS; i++) /* reclaim the ended ones first */
		fp_reader_reap(fp, i);
	for (i = FP_REMOTE0; i < VIOMMU_READER_INFOS; i++)
		if (FP_OWNER_STATE(fp->readers[i].owner) == FP_READER_FREE)
			break;
	if (i == VIOMMU_READER_INFOS)
		return -ENOSPC;
	if ((fds[1] = slot_memfd(&slot)) < 0)
		return fds[1];
	fds[0] = fp->shm_fd; /* sealed since its creation: read-only to every mapping but ours */
	len = sizeof(cred);
	getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len); /* for reports only */

	token = ((FP_OWNER_GEN(fp->readers[i].owner) + 1) << 2) | FP_READER_LIVE;
	h = (struct viommu_share_hello){
		.magic = VIOMMU_ABI_MAGIC, .abi_version = VIOMMU_ABI_VERSION, .reader = i,
		.nodes_max = fp->nodes_max, .leaves_max = fp->leaves_max, .extents_max = fp->extents_max,
		.hash_buckets = fp->view.hash_mask + 1, .token = token, .data_bytes = fp->data_len,
		.windows_leaf = fp->leaves_pool, .window_regions = fp->win_regions,
		.pieces_max = fp->pieces_max, .piece_regions = fp->piece_regions,
	};
	for (int k = 0; k < VIOMMU_SHM_DATA; k++)
		h.off[k] = fp->off[k]; /* enum viommu_share order == M_* order */
	memset(cbuf, 0, sizeof(cbuf));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(c), fds, sizeof(fds));
	if (sendmsg(conn, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(h)) {
		err = errno ? -errno : -EIO;
		close(fds[1]);
		munmap(slot, VIOMMU_READER_SLOT_BYTES);
		return err;
	}
	close(fds[1]); /* the reader holds its own; ours is the mapping */
	fp->readers[i].slot = slot;
	fp->readers[i].conn = conn;
	fp->readers[i].pid = (uint32_t)cred.pid;
	__atomic_store_n(&fp->readers[i].owner, token, __ATOMIC_RELEASE);
	return (int)i;
}

/* Faults a reader sent (on its connection, or on the in-process socket): whole struct
 * viommu_fault_rec messages only, with a known reason and access bits; anything else is dropped
 * and counted. */
int fp_drain_faults(struct viommu_fastpath *fp, int fd, int max, bool *ended)
{
	int n = 0;

	*ended = false;
	for (int k = 0; k < max; k++) {
		struct viommu_fault_rec rec;
		/* recv without a control buffer: fds a reader tries to pass are never installed. */
		ssize_t got = recv(fd, &rec, sizeof(rec), MSG_DONTWAIT | MSG_TRUNC);

		if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			*ended = true; /* the connection ended */
			break;
		}
		if (got < 0)
			break;
		if (got != (ssize_t)sizeof(rec) || rec.reason > VIOMMU_FAULT_R_MAPPING ||
		    (rec.access & ~(uint32_t)(VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE))) {
			fp->bad_messages++;
			continue;
		}
		viommu_device_report_fault(fp->dev, rec.endpoint, rec.reason, rec.access, rec.address);
		n++;
	}
	return n;
}

int viommu_fastpath_poll_faults(struct viommu_fastpath *fp)
{
	int n = fp->rb ? ring_buffer__consume(fp->rb) : 0;
	bool ended;

	if (n < 0)
		return n;
	/* This process's readers: bounded like the others, so a flood cannot hold the thread. */
	n += fp_drain_faults(fp, fp->fault_rx, FP_FAULTS_PER_POLL * 4, &ended);
	for (uint32_t i = FP_REMOTE0; i < VIOMMU_READER_INFOS; i++)
		if (fp->readers[i].conn >= 0) {
			n += fp_drain_faults(fp, fp->readers[i].conn, FP_FAULTS_PER_POLL, &ended);
			if (ended)
				fp_reader_drop(fp, i);
		}
	fp_readers_summarise(fp);
	return n;
}

/* ---- `viommu stat`: the writer's summary in the viommu_readers map ---- */

void fp_readers_summarise(struct viommu_fastpath *fp)
{
	for (uint32_t i = 0; i < VIOMMU_READER_INFOS; i++) {
		struct fp_reader *rd = &fp->readers[i];
		struct viommu_reader_info *inf = &fp->infos[i], v = { 0 };
		uint32_t st = FP_OWNER_STATE(__atomic_load_n(&rd->owner, __ATOMIC_ACQUIRE));

		/* Called from every poll: a free slot already shown free costs one load. */
		if ((st == FP_READER_FREE || st == FP_READER_CLAIMING) &&
		    __atomic_load_n(&inf->state, __ATOMIC_RELAXED) == VIOMMU_READER_FREE)
			continue;
		if (st == FP_READER_LIVE || st == FP_READER_REVOKED) {
			const struct viommu_reader_slot *s = rd->slot;

			v.state = i < FP_REMOTE0 ? VIOMMU_READER_LOCAL : VIOMMU_READER_REMOTE;
			v.pid = rd->pid;
			v.revoked = st == FP_READER_REVOKED;
			v.flags = __atomic_load_n(&s->flags, __ATOMIC_RELAXED);
			v.lookups = __atomic_load_n(&s->lookups, __ATOMIC_RELAXED);
			v.hits = __atomic_load_n(&s->hits, __ATOMIC_RELAXED);
			v.identity = __atomic_load_n(&s->identity, __ATOMIC_RELAXED);
			v.retries = __atomic_load_n(&s->retries, __ATOMIC_RELAXED);
			for (int k = 0; k < 3; k++)
				v.faults[k] = __atomic_load_n(&s->faults[k], __ATOMIC_RELAXED);
		}
		/* Read racily by `viommu stat` in another process: a summary, not a protocol. */
		__atomic_store_n(&inf->state, v.state, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->pid, v.pid, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->flags, v.flags, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->revoked, v.revoked, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->lookups, v.lookups, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->hits, v.hits, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->identity, v.identity, __ATOMIC_RELAXED);
		__atomic_store_n(&inf->retries, v.retries, __ATOMIC_RELAXED);
		for (int k = 0; k < 3; k++)
			__atomic_store_n(&inf->faults[k], v.faults[k], __ATOMIC_RELAXED);
	}
}

/* ---- pins ---- */

/* The pins: every shared map (the table in viommu_abi.h), the BPF readers' counters, the fault
 * program. */
enum { PIN_MAPS = VIOMMU_SHM_COUNT, PIN_STATS = VIOMMU_SHM_COUNT, PIN_FAULT_PROG, PIN_COUNT };

static const char *pin_name(int i)
{
	return i < PIN_MAPS ? viommu_shm_name[i] : i == PIN_STATS ? "viommu_stats" : "viommu_report_fault";
}
static int pin_fd(const struct viommu_fastpath *fp, int i)
{
	if (i < PIN_MAPS)
		return bpf_map__fd(fp->maps[i]);
	if (i == PIN_STATS)
		return bpf_map__fd(fp->skel->maps.viommu_stats);
	return bpf_program__fd(fp->skel->progs.viommu_report_fault);
}

/* The id of the object behind an fd (map or program), or 0. */
static uint32_t obj_id(int fd, bool prog)
{
	if (prog) {
		struct bpf_prog_info info = { 0 };
		__u32 len = sizeof(info);

		return bpf_obj_get_info_by_fd(fd, &info, &len) ? 0 : info.id;
	} else {
		struct bpf_map_info info = { 0 };
		__u32 len = sizeof(info);

		return bpf_obj_get_info_by_fd(fd, &info, &len) ? 0 : info.id;
	}
}

int viommu_fastpath_pin(struct viommu_fastpath *fp, const char *dir)
{
	char path[512];
	struct stat st;
	int err;

	if (fp->pin_dir[0])
		return -EBUSY;
	if ((err = viommu_fastpath_bpf_enable(fp))) /* pins are BPF objects */
		return err;
	if (strlen(dir) + 32 >= sizeof(fp->pin_dir))
		return -ENAMETOOLONG;
	if (!mkdir(dir, 0700))
		fp->pin_dir_made = true;
	else if (errno != EEXIST)
		return -errno;
	snprintf(fp->pin_dir, sizeof(fp->pin_dir), "%s", dir);
	/* Not a symlink, ours, and nobody else may add, rename or remove entries in it (on a bpffs
	 * mounted 1777, another user could have made it first). */
	if (lstat(dir, &st)) {
		err = -errno;
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		err = -ENOTDIR;
		goto fail;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022)) {
		err = -EPERM;
		goto fail;
	}
	for (int i = 0; i < PIN_COUNT; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, pin_name(i));
		if (bpf_obj_pin(pin_fd(fp, i), path)) {
			err = -errno; /* EEXIST: another device's pin; it is left alone */
			goto fail;
		}
		fp->pins_made |= 1u << i;
		if (chmod(path, 0600)) {
			err = -errno;
			goto fail;
		}
	}
	return 0;
fail:
	viommu_fastpath_unpin(fp);
	return err;
}

void viommu_fastpath_unpin(struct viommu_fastpath *fp)
{
	char path[512];

	if (!fp->pin_dir[0])
		return;
	for (int i = 0; i < PIN_COUNT; i++) {
		int fd;

		if (!(fp->pins_made & (1u << i)))
			continue;
		snprintf(path, sizeof(path), "%s/%s", fp->pin_dir, pin_name(i));
		/* Only if the pin still names our object. */
		fd = bpf_obj_get(path);
		if (fd >= 0) {
			if (obj_id(fd, i == PIN_FAULT_PROG) == obj_id(pin_fd(fp, i), i == PIN_FAULT_PROG))
				unlink(path);
			close(fd);
		}
	}
	if (fp->pin_dir_made)
		rmdir(fp->pin_dir); /* fails, and keeps it, if anything else is in it */
	fp->pins_made = 0;
	fp->pin_dir_made = false;
	fp->pin_dir[0] = 0;
}
