// SPDX-License-Identifier: MIT
/*
 * The XDP program on a real interface through libxdp: a second load of the fast path's object
 * (the skeleton's embedded ELF) whose maps are all the running fast path's, found by name, so
 * this file knows nothing of the maps' layout: whatever maps the device's programs use, the XDP
 * program here uses the same ones.
 */
#include "xdp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include "xlate.skel.h"

struct viommu_xdp {
	struct viommu_xlate_bpf *skel; /* the second load; its maps are the fast path's */
	struct xdp_program *prog;
	int ifindex;
	enum xdp_attach_mode mode;
	bool multiprog;
};

/* The fast path's maps by kernel name (BPF_OBJ_NAME_LEN - 1 characters at most). */
#define XDP_MAPS_MAX 32
struct map_set {
	unsigned n;
	struct {
		char name[BPF_OBJ_NAME_LEN];
		int fd;
	} m[XDP_MAPS_MAX];
};

static void map_set_free(struct map_set *s)
{
	for (unsigned i = 0; i < s->n; i++)
		close(s->m[i].fd);
	s->n = 0;
}

/* Takes @fd (closed if not kept). */
static int map_set_add(struct map_set *s, int fd)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->m[i].name, info.name)) {
			close(fd);
			return 0;
		}
	if (s->n == XDP_MAPS_MAX) {
		close(fd);
		return -E2BIG;
	}
	snprintf(s->m[s->n].name, sizeof(s->m[s->n].name), "%s", info.name);
	s->m[s->n++].fd = fd;
	return 0;
}

/* Every map @prog_fd uses. */
static int map_set_add_prog(struct map_set *s, int prog_fd)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info), ids[XDP_MAPS_MAX];
	int err;

	info.nr_map_ids = XDP_MAPS_MAX;
	info.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	if (info.nr_map_ids > XDP_MAPS_MAX)
		return -E2BIG;
	for (__u32 i = 0; i < info.nr_map_ids; i++) {
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			return -errno;
		if ((err = map_set_add(s, fd)))
			return err;
	}
	return 0;
}

static int map_set_find(const struct map_set *s, const char *name)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strncmp(s->m[i].name, name, BPF_OBJ_NAME_LEN - 1))
			return s->m[i].fd;
	return -1;
}

static bool is_viommu_prog(const char *name)
{
	/* The kernel keeps 15 characters of a name: "viommu_xdp_nolo". */
	return name && (!strcmp(name, "viommu_xdp") || !strncmp(name, "viommu_xdp_nolo", 15));
}

/* Open the object again, reuse @s's maps, attach the chosen program through libxdp. */
static struct viommu_xdp *attach_with(const struct map_set *s, int ifindex, const struct viommu_xdp_opts *opts,
				      const uint32_t *hash_mask)
{
	static const struct viommu_xdp_opts defaults = { 0 };
	struct viommu_xdp *x;
	struct bpf_program *p, *want;
	struct bpf_map *m;
	int err;

	if (!opts)
		opts = &defaults;
	if (ifindex <= 0) {
		errno = ENODEV;
		return NULL;
	}
	if (!(x = calloc(1, sizeof(*x)))) {
		errno = ENOMEM;
		return NULL;
	}
	x->ifindex = ifindex;
	x->mode = opts->mode == VIOMMU_XDP_SKB ? XDP_MODE_SKB : XDP_MODE_NATIVE;
	if (!(x->skel = viommu_xlate_bpf__open())) {
		err = -errno;
		goto fail;
	}
	want = opts->nolookup ? x->skel->progs.viommu_xdp_nolookup : x->skel->progs.viommu_xdp;
	bpf_object__for_each_program(p, x->skel->obj)
		bpf_program__set_autoload(p, p == want);
	bpf_object__for_each_map(m, x->skel->obj) {
		int fd = map_set_find(s, bpf_map__name(m));

		if (fd >= 0) {
			if ((err = bpf_map__reuse_fd(m, fd)))
				goto fail;
		} else if (!bpf_map__is_internal(m) && (err = bpf_map__set_autocreate(m, false))) {
			/* Not one the fast path's programs use (the readers' pages, say): the XDP
			 * program does not either; if it did, its load would fail, not see an
			 * empty map of its own. */
			goto fail;
		}
	}
	/* Pins carry no .rodata: the hash size comes from the device's meta (the fast path's
	 * loader does the same). */
	if (hash_mask && map_set_find(s, bpf_map__name(x->skel->maps.rodata)) < 0)
		x->skel->rodata->viommu_hash_mask = *hash_mask;
	{
		DECLARE_LIBXDP_OPTS(xdp_program_opts, po, .obj = x->skel->obj,
				    .prog_name = bpf_program__name(want));

		x->prog = xdp_program__create(&po);
	}
	if ((err = (int)libxdp_get_error(x->prog))) {
		x->prog = NULL;
		goto fail;
	}
	if (opts->run_prio && (err = xdp_program__set_run_prio(x->prog, opts->run_prio)))
		goto fail;
	if ((err = xdp_program__attach(x->prog, ifindex, x->mode, 0)))
		goto fail;
	{
		struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);

		x->multiprog = !libxdp_get_error(mp) && mp && !xdp_multiprog__is_legacy(mp);
		if (!libxdp_get_error(mp))
			xdp_multiprog__close(mp);
	}
	return x;
fail:
	xdp_program__close(x->prog);
	viommu_xlate_bpf__destroy(x->skel);
	free(x);
	errno = err < 0 ? -err : EINVAL;
	return NULL;
}

struct viommu_xdp *viommu_xdp_attach(struct viommu_fastpath *fp, int ifindex,
				     const struct viommu_xdp_opts *opts)
{
	struct map_set s = { 0 };
	struct viommu_xdp *x = NULL;
	int err;

	/* The programs and maps are the BPF replica's: made now if the fast path has none yet
	 * (attach runs on the device thread). */
	if ((err = viommu_fastpath_bpf_enable(fp))) {
		errno = -err;
		return NULL;
	}
	/* The maps of every program the fast path loaded: the XDP program's own (its .rodata
	 * too), the syscall batch's, the fault reporter's. */
	if ((err = map_set_add_prog(&s, viommu_fastpath_xdp_fd(fp))) ||
	    (err = map_set_add_prog(&s, viommu_fastpath_syscall_fd(fp))) ||
	    (err = map_set_add_prog(&s, viommu_fastpath_fault_prog_fd(fp)))) {
		map_set_free(&s);
		errno = -err;
		return NULL;
	}
	x = attach_with(&s, ifindex, opts, NULL);
	err = errno;
	map_set_free(&s);
	errno = err;
	return x;
}

struct viommu_xdp *viommu_xdp_attach_pinned(const char *pin_dir, int ifindex,
					    const struct viommu_xdp_opts *opts)
{
	struct map_set s = { 0 };
	struct viommu_xdp *x = NULL;
	struct viommu_meta meta;
	char path[512];
	uint32_t zero = 0;
	int err = 0, fd;

	for (int i = 0; i <= VIOMMU_SHM_COUNT + 1 && !err; i++) {
		const char *name = i < VIOMMU_SHM_COUNT ? viommu_shm_name[i] :
				   i == VIOMMU_SHM_COUNT ? "viommu_stats" : "viommu_report_fault";

		if ((size_t)snprintf(path, sizeof(path), "%s/%s", pin_dir, name) >= sizeof(path)) {
			err = -ENAMETOOLONG;
		} else if ((fd = bpf_obj_get(path)) < 0) {
			err = -errno;
		} else if (i == VIOMMU_SHM_COUNT + 1) { /* the fault reporter: its ring buffer */
			err = map_set_add_prog(&s, fd);
			close(fd);
		} else {
			err = map_set_add(&s, fd);
		}
	}
	if (!err) {
		struct bpf_map_info info = { 0 };
		__u32 len = sizeof(info);

		/* The meta element is read into our struct: its size first (pins of another
		 * version or of something else). */
		fd = map_set_find(&s, viommu_shm_name[VIOMMU_SHM_META]);
		if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len) || info.type != BPF_MAP_TYPE_ARRAY ||
		    info.key_size != 4 || info.value_size != sizeof(meta) || info.max_entries < 1 ||
		    bpf_map_lookup_elem(fd, &zero, &meta))
			err = -EPROTO;
		else if (meta.magic != VIOMMU_ABI_MAGIC || meta.abi_version != VIOMMU_ABI_VERSION)
			err = -EPROTO;
	}
	if (!err) {
		x = attach_with(&s, ifindex, opts, &meta.hash_mask);
		/* libbpf refuses a pinned map of another geometry when it reuses it */
		err = x ? 0 : errno == EINVAL ? -EPROTO : -errno;
	}
	map_set_free(&s);
	errno = -err;
	return x;
}

void viommu_xdp_release(struct viommu_xdp *x)
{
	if (!x)
		return;
	xdp_program__close(x->prog);
	viommu_xlate_bpf__destroy(x->skel);
	free(x);
}

int viommu_xdp_detach(struct viommu_xdp *x)
{
	int err;

	if (!x)
		return 0;
	err = xdp_program__detach(x->prog, x->ifindex, x->mode, 0);
	viommu_xdp_release(x);
	return err;
}

bool viommu_xdp_multiprog(const struct viommu_xdp *x)
{
	return x->multiprog;
}

uint32_t viommu_xdp_prog_id(const struct viommu_xdp *x)
{
	return xdp_program__id(x->prog);
}

/* The interface's programs, or NULL when none is attached. */
static struct xdp_multiprog *multiprog_of(int ifindex, int *err)
{
	struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);

	*err = (int)libxdp_get_error(mp);
	if (*err || !mp) {
		*err = *err == -ENOENT || !*err ? 0 : *err;
		return NULL;
	}
	if (xdp_multiprog__is_legacy(mp) && !xdp_multiprog__main_prog(mp)) {
		xdp_multiprog__close(mp);
		return NULL;
	}
	return mp;
}

int viommu_xdp_programs(int ifindex, char *names, size_t len)
{
	struct xdp_multiprog *mp;
	struct xdp_program *p;
	int err, n = 0;

	if (names && len)
		names[0] = 0;
	if (!(mp = multiprog_of(ifindex, &err)))
		return err;
	if (xdp_multiprog__is_legacy(mp))
		p = xdp_multiprog__main_prog(mp);
	else
		p = xdp_multiprog__next_prog(NULL, mp);
	for (; p; p = xdp_multiprog__is_legacy(mp) ? NULL : xdp_multiprog__next_prog(p, mp)) {
		if (names && len) {
			size_t used = strlen(names);

			snprintf(names + used, len - used, "%s%s", n ? "," : "", xdp_program__name(p));
		}
		n++;
	}
	xdp_multiprog__close(mp);
	return n;
}

int viommu_xdp_detach_ifindex(int ifindex)
{
	int n = 0, err;

	/* One at a time: each detach replaces the dispatcher, so look again. */
	for (;;) {
		struct xdp_multiprog *mp = multiprog_of(ifindex, &err);
		struct xdp_program *p = NULL;

		if (!mp)
			break;
		if (xdp_multiprog__is_legacy(mp)) {
			if (is_viommu_prog(xdp_program__name(xdp_multiprog__main_prog(mp))))
				err = xdp_multiprog__detach(mp);
			else
				err = 1; /* someone else's program alone: not ours to remove */
		} else {
			for (p = xdp_multiprog__next_prog(NULL, mp); p; p = xdp_multiprog__next_prog(p, mp))
				if (is_viommu_prog(xdp_program__name(p)))
					break;
			err = p ? xdp_program__detach(p, ifindex, xdp_multiprog__attach_mode(mp), 0) : 1;
		}
		xdp_multiprog__close(mp);
		if (err)
			break;
		n++;
	}
	if (err < 0)
		return err;
	return n ? n : -ENOENT;
}

const char *viommu_xdp_legacy_reason(void)
{
	static char why[200];
	const char *fs = getenv("LIBXDP_BPFFS");
	struct statfs st;

	if (!fs)
		fs = "/sys/fs/bpf";
	if (statfs(fs, &st) || st.f_type != BPF_FS_MAGIC) {
		snprintf(why, sizeof(why), "no bpffs at %s (libxdp pins its dispatcher there; "
			 "mount one, or set LIBXDP_BPFFS)", fs);
		return why;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_EXT, NULL) <= 0) {
		snprintf(why, sizeof(why), "the kernel refuses BPF_PROG_TYPE_EXT (freplace) programs, "
			 "which libxdp's dispatcher runs its programs as");
		return why;
	}
	return NULL;
}
