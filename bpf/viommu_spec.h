/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * viommu_spec.h — the virtio-iommu spec's constants (virtio spec, "IOMMU device"; device id 23),
 * by the spec's names: feature bits, request types, statuses, map and attach flags, PROBE
 * property and reserved-region types, fault reasons and flags. No types, no includes: BPF
 * programs and user code include it alike. The wire layouts are in user/wire.h.
 */
#ifndef VIOMMU_SPEC_H
#define VIOMMU_SPEC_H

#define VIOMMU_DEVICE_ID 23

/* Device-type feature bits. */
#define VIOMMU_F_INPUT_RANGE   0
#define VIOMMU_F_DOMAIN_RANGE  1
#define VIOMMU_F_MAP_UNMAP     2
#define VIOMMU_F_BYPASS        3 /* legacy, superseded by BYPASS_CONFIG */
#define VIOMMU_F_PROBE         4
#define VIOMMU_F_MMIO          5
#define VIOMMU_F_BYPASS_CONFIG 6
#define VIOMMU_FEATURES_KNOWN  0x7fULL
#define VIOMMU_FBIT(b)         (1ULL << (b))

/* Request types. */
#define VIOMMU_T_ATTACH 1
#define VIOMMU_T_DETACH 2
#define VIOMMU_T_MAP    3
#define VIOMMU_T_UNMAP  4
#define VIOMMU_T_PROBE  5
#define VIOMMU_T_MAX    5

/* Statuses written in the request tail. */
enum viommu_status {
	VIOMMU_S_OK = 0,
	VIOMMU_S_IOERR = 1,
	VIOMMU_S_UNSUPP = 2,
	VIOMMU_S_DEVERR = 3,
	VIOMMU_S_INVAL = 4,
	VIOMMU_S_RANGE = 5,
	VIOMMU_S_NOENT = 6,
	VIOMMU_S_FAULT = 7,
	VIOMMU_S_NOMEM = 8,
	VIOMMU_S_COUNT = 9,
};

#define VIOMMU_ATTACH_F_BYPASS (1u << 0)

#define VIOMMU_MAP_F_READ  (1u << 0)
#define VIOMMU_MAP_F_WRITE (1u << 1)
#define VIOMMU_MAP_F_MMIO  (1u << 2)
#define VIOMMU_MAP_F_MASK  0x7u

#define VIOMMU_PROBE_T_NONE     0
#define VIOMMU_PROBE_T_RESV_MEM 1
#define VIOMMU_PROBE_T_MASK     0xfffu

#define VIOMMU_RESV_MEM_T_RESERVED 0
#define VIOMMU_RESV_MEM_T_MSI      1

/* Fault reasons and flags (event queue). */
#define VIOMMU_FAULT_R_UNKNOWN 0
#define VIOMMU_FAULT_R_DOMAIN  1
#define VIOMMU_FAULT_R_MAPPING 2
#define VIOMMU_FAULT_F_READ    (1u << 0)
#define VIOMMU_FAULT_F_WRITE   (1u << 1)
#define VIOMMU_FAULT_F_ADDRESS (1u << 8)

#endif
