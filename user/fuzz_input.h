/* SPDX-License-Identifier: MIT */
/*
 * The request fuzzer's input format (tests/fuzz/fuzz_request.c), shared with the replayer, which
 * writes the recorded traces' requests in it as seeds (`viommu replay --dump-requests=DIR`).
 *
 *   byte 0       config selector: VIOMMU_FUZZ_CFG_* bits (0 = the defaults the traces use)
 *   then records, at most VIOMMU_FUZZ_MAX_OPS, each starting with an op byte (its low 7 bits
 *   taken modulo VIOMMU_FUZZ_OP_COUNT):
 *   REQUEST      u8 rd_len, le16 wr_len (clamped to VIOMMU_FUZZ_MAX_WR), rd_len bytes; op bit 7
 *                set: both parts are passed as scatter lists: split at half when the low
 *                bit of wr_len is set, else cut into up to 64 segments of 0-8 bytes
 *   TRANSLATE    u8 endpoint selector, u8 access, u8 log2 size, le64 iova
 *   RESET        u8 kind (bit 0: system reset)
 *   CONFIG_WRITE u8 offset, u8 len (<= 8), len bytes
 *   EVENTQ       u8 n: post n event buffers, then pop up to n faults
 *   BATCH        toggles a batch (queue kick) open/closed
 *   MAP_RUN      u8 domain, u8 count, u8 log2 pages, le64 iova: (count % 64) + 1 MAP requests of
 *                adjacent 2^(log2 % 3) page ranges from iova (page-aligned down), as Linux maps
 *                a scatter-gather list; the fast-path fuzzer then probes DMA ranges across it
 * A record cut short by the end of the input ends the run.
 */
#ifndef VIOMMU_FUZZ_INPUT_H
#define VIOMMU_FUZZ_INPUT_H

enum viommu_fuzz_op {
	VIOMMU_FUZZ_OP_REQUEST = 0,
	VIOMMU_FUZZ_OP_TRANSLATE = 1,
	VIOMMU_FUZZ_OP_RESET = 2,
	VIOMMU_FUZZ_OP_CONFIG_WRITE = 3,
	VIOMMU_FUZZ_OP_EVENTQ = 4,
	VIOMMU_FUZZ_OP_BATCH = 5,
	VIOMMU_FUZZ_OP_MAP_RUN = 6,
	VIOMMU_FUZZ_OP_COUNT = 7,
};
#define VIOMMU_FUZZ_OP_SCATTER 0x80u

enum viommu_fuzz_cfg {
	VIOMMU_FUZZ_CFG_GRANULE_64K = 1u << 0, /* page_size_mask from 64 KiB */
	VIOMMU_FUZZ_CFG_GRANULE_512 = 1u << 1, /* page_size_mask from 512 B (wins over 64K) */
	VIOMMU_FUZZ_CFG_BYPASS_0 = 1u << 2, /* initial bypass 0 */
	VIOMMU_FUZZ_CFG_LEGACY_BYPASS = 1u << 3, /* offer F_BYPASS instead of F_BYPASS_CONFIG */
	VIOMMU_FUZZ_CFG_SMALL_CAPS = 1u << 4, /* 4 domains, 8 mappings per domain, 12 in all */
	VIOMMU_FUZZ_CFG_NARROW_INPUT = 1u << 5, /* input_range [1 MiB, 4 GiB - 1] */
	VIOMMU_FUZZ_CFG_NARROW_DOMAINS = 1u << 6, /* domain_range [1, 64] */
	VIOMMU_FUZZ_CFG_FEW_FEATURES = 1u << 7, /* driver negotiates without MAP_UNMAP and PROBE */
};

#define VIOMMU_FUZZ_MAX_OPS 64
#define VIOMMU_FUZZ_MAX_WR 4096
#define VIOMMU_FUZZ_SEED_REQUESTS 32 /* requests per seed file written by the replayer */

#endif
