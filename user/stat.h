/* SPDX-License-Identifier: MIT */
/*
 * `viommu stat`: a running fast path's occupancy and counters, read from its pins with
 * read-only fds (no mapping, no slot: any number of stat runs, none can write anything).
 */
#ifndef VIOMMU_STAT_H
#define VIOMMU_STAT_H

#include <stdio.h>

#include "viommu_abi.h"

/* Print @m and the reader summaries @infos (VIOMMU_READER_INFOS of them); @stats_fd is the
 * per-CPU viommu_stats map, or -1. */
void viommu_stat_print(const struct viommu_meta *m, const struct viommu_reader_info *infos,
		       int stats_fd, FILE *out);
/* The per-CPU viommu_stats map @stats_fd, summed over the CPUs, into @bpf (all zero on
 * failure): 0 or -errno. */
int viommu_stat_sum_bpf(int stats_fd, struct viommu_stats *bpf);
/* The same from the pins under @dir. Every pinned map is checked (type, key and value size,
 * count, flags) before anything is read from it: 0, -EPROTO (not this ABI's maps), -errno. */
int viommu_stat_pinned(const char *dir, FILE *out);

#endif
