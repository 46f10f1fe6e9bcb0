// SPDX-License-Identifier: MIT
/* `viommu stat`: printing the counters, and reading them from pins, validated first. */
#include "stat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

int viommu_stat_sum_bpf(int stats_fd, struct viommu_stats *bpf)
{
	int ncpu = libbpf_num_possible_cpus(), err = 0;
	struct viommu_stats *per;
	uint32_t zero = 0;

	memset(bpf, 0, sizeof(*bpf));
	if (stats_fd < 0)
		return -EBADF;
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	if (!(per = calloc((size_t)ncpu, sizeof(*per))))
		return -ENOMEM;
	if (bpf_map_lookup_elem(stats_fd, &zero, per))
		err = -errno;
	for (int c = 0; !err && c < ncpu; c++) {
		bpf->lookups += per[c].lookups;
		bpf->hits += per[c].hits;
		bpf->identity += per[c].identity;
		bpf->walks += per[c].walks;
		bpf->hash_hits += per[c].hash_hits;
		bpf->retries += per[c].retries;
		for (int r = 0; r < 3; r++)
			bpf->faults[r] += per[c].faults[r];
	}
	free(per);
	return err;
}

void viommu_stat_print(const struct viommu_meta *m, const struct viommu_reader_info *infos,
		       int stats_fd, FILE *out)
{
	struct viommu_stats bpf;
	uint64_t ul = 0, uh = 0, ui = 0, ur = 0, uf[3] = { 0, 0, 0 };
	unsigned local = 0, remote = 0, fence = 0, revoked = 0;
	double slots_total = (double)(m->hash_mask + 1) * VIOMMU_HASH_WAYS;
	double maps = (double)m->extents_used + m->solo_used;

	viommu_stat_sum_bpf(stats_fd, &bpf); /* all zero when it fails */
	for (uint32_t i = 0; i < VIOMMU_READER_INFOS; i++) {
		const struct viommu_reader_info *r = &infos[i];
		uint32_t st = __atomic_load_n(&r->state, __ATOMIC_RELAXED);

		if (st == VIOMMU_READER_FREE)
			continue;
		local += st == VIOMMU_READER_LOCAL;
		remote += st == VIOMMU_READER_REMOTE;
		fence += (__atomic_load_n(&r->flags, __ATOMIC_RELAXED) & VIOMMU_READER_F_FENCE) != 0;
		revoked += __atomic_load_n(&r->revoked, __ATOMIC_RELAXED) != 0;
		ul += __atomic_load_n(&r->lookups, __ATOMIC_RELAXED);
		uh += __atomic_load_n(&r->hits, __ATOMIC_RELAXED);
		ui += __atomic_load_n(&r->identity, __ATOMIC_RELAXED);
		ur += __atomic_load_n(&r->retries, __ATOMIC_RELAXED);
		for (int k = 0; k < 3; k++)
			uf[k] += __atomic_load_n(&r->faults[k], __ATOMIC_RELAXED);
	}
	fprintf(out, "fast path (shared memory: a memfd; BPF maps once a BPF consumer asks)\n");
	fprintf(out, "  endpoints      %u\n", m->endpoints_used);
	fprintf(out, "  domains        %u\n", m->domains_used);
	fprintf(out, "  extents        %u one-page (no record) + %u with a record (%u max, %zu B each)\n",
		m->solo_used, m->extents_used, m->extents_max, sizeof(struct viommu_extent_rec));
	fprintf(out, "  radix nodes    %u / %u (%.2f MiB)\n", m->nodes_used, m->nodes_max,
		m->nodes_used * sizeof(struct viommu_node) / 1048576.0);
	fprintf(out, "  leaves         %u / %u (%.2f MiB)\n", m->leaves_used, m->leaves_max,
		m->leaves_used * (sizeof(struct viommu_leaf) + sizeof(struct viommu_ptes)) / 1048576.0);
	fprintf(out, "  windows        %u / %u (%u MiB of IOVA each; their leaves are counted above; "
		     "piece windows of %llu GiB)\n",
		m->windows_used, m->windows_max, m->window_regions * 2,
		(unsigned long long)m->piece_regions * 2 / 1024);
	fprintf(out, "  hash           %u / %.0f slots (load %.4f)\n", m->hash_used, slots_total,
		m->hash_used / slots_total);
	fprintf(out, "  bytes/extent   %.1f record + %.1f radix + %.1f hash (amortised over every extent; the hash counted whole)\n",
		maps ? (double)m->extents_used * sizeof(struct viommu_extent_rec) / maps : 0.0,
		maps ? ((double)m->nodes_used * sizeof(struct viommu_node) +
			(double)m->leaves_used * (sizeof(struct viommu_leaf) + sizeof(struct viommu_ptes))) / maps : 0.0,
		maps ? (m->hash_mask + 1.0) * sizeof(struct viommu_hash_bucket) / maps : 0.0);
	fprintf(out, "  publications   %llu, grace periods %llu (mean %.1f us, %s), readers revoked %u\n",
		(unsigned long long)m->publications, (unsigned long long)m->grace_periods,
		m->grace_periods ? m->grace_ns_total / 1e3 / m->grace_periods : 0.0,
		m->flags & VIOMMU_META_F_READER_FENCE ? "reader fences" : "membarrier",
		m->readers_revoked);
	fprintf(out, "  bpf readers    %llu lookups: %llu hits, %llu identity, %llu faults "
		     "(unknown %llu, domain %llu, mapping %llu); %llu hash hits, %llu walks, %llu retries\n",
		(unsigned long long)bpf.lookups, (unsigned long long)bpf.hits,
		(unsigned long long)bpf.identity,
		(unsigned long long)(bpf.faults[0] + bpf.faults[1] + bpf.faults[2]),
		(unsigned long long)bpf.faults[0], (unsigned long long)bpf.faults[1],
		(unsigned long long)bpf.faults[2], (unsigned long long)bpf.hash_hits,
		(unsigned long long)bpf.walks, (unsigned long long)bpf.retries);
	fprintf(out, "  user readers   %u open (%u in the device's process, %u in others; %u fence mode, "
		     "%u revoked); %llu lookups: %llu hits, %llu identity, %llu retries; "
		     "faults reported unknown %llu, domain %llu, mapping %llu\n",
		local + remote, local, remote, fence, revoked, (unsigned long long)ul,
		(unsigned long long)uh, (unsigned long long)ui, (unsigned long long)ur,
		(unsigned long long)uf[0], (unsigned long long)uf[1], (unsigned long long)uf[2]);
}

/* Open pin @name read-only and check it is the map we expect: an array (or per-CPU array) of
 * @count elements of @value_size bytes with u32 keys. The fd, or -errno. */
static int open_checked(const char *dir, const char *name, uint32_t type, uint32_t value_size,
			uint32_t count)
{
	LIBBPF_OPTS(bpf_obj_get_opts, o, .file_flags = BPF_F_RDONLY);
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	char path[512];
	int fd, err;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get_opts(path, &o);
	if (fd < 0)
		return -errno;
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		err = -errno;
		close(fd);
		return err;
	}
	if (info.type != type || info.key_size != 4 || info.value_size != value_size ||
	    info.max_entries != count) {
		close(fd);
		return -EPROTO;
	}
	return fd;
}

int viommu_stat_pinned(const char *dir, FILE *out)
{
	struct viommu_reader_info *infos = NULL;
	struct viommu_meta meta;
	int mfd, rfd = -1, sfd = -1, err = 0;
	uint32_t zero = 0;

	mfd = open_checked(dir, viommu_shm_name[VIOMMU_SHM_META], BPF_MAP_TYPE_ARRAY,
			   viommu_shm_elem_size[VIOMMU_SHM_META], viommu_shm_entries[VIOMMU_SHM_META]);
	if (mfd < 0)
		return mfd;
	/* A syscall read of the element (no mapping): sizes were checked, so it fits. */
	if (bpf_map_lookup_elem(mfd, &zero, &meta)) {
		err = -errno;
		goto out;
	}
	if (meta.magic != VIOMMU_ABI_MAGIC || meta.abi_version != VIOMMU_ABI_VERSION ||
	    meta.readers_max != VIOMMU_READERS_MAX) {
		err = -EPROTO;
		goto out;
	}
	rfd = open_checked(dir, viommu_shm_name[VIOMMU_SHM_READERS], BPF_MAP_TYPE_ARRAY,
			   viommu_shm_elem_size[VIOMMU_SHM_READERS], viommu_shm_entries[VIOMMU_SHM_READERS]);
	if (rfd < 0) {
		err = rfd;
		goto out;
	}
	infos = calloc(VIOMMU_READER_INFOS, sizeof(*infos));
	if (!infos) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < VIOMMU_READER_INFOS; i++)
		if (bpf_map_lookup_elem(rfd, &i, &infos[i])) {
			err = -errno;
			goto out;
		}
	/* Per-CPU values are rounded up to 8 bytes each; ours is a multiple of 8. */
	sfd = open_checked(dir, "viommu_stats", BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(struct viommu_stats), 1);
	viommu_stat_print(&meta, infos, sfd >= 0 ? sfd : -1, out);
out:
	free(infos);
	if (sfd >= 0)
		close(sfd);
	if (rfd >= 0)
		close(rfd);
	close(mfd);
	return err;
}
