/* SPDX-License-Identifier: MIT */
/*
 * The virtio-iommu wire format (virtio spec, "IOMMU device"; device id 23): requests, the
 * config space, PROBE properties and fault events. All fields are little-endian on the wire;
 * the device core reads and writes them through viommu_le*() so it works on any host.
 * Every field is naturally aligned; the asserts pin each layout to the spec's offsets.
 */
#ifndef VIOMMU_WIRE_H
#define VIOMMU_WIRE_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "viommu_spec.h"

struct viommu_wire_head {
	uint8_t type;
	uint8_t reserved[3];
};

struct viommu_wire_tail {
	uint8_t status;
	uint8_t reserved[3];
};

/* Whole requests as the spec lays them out; the tail is the device-writable part, everything
 * before it is device-readable (VIOMMU_RD_LEN gives that length). PROBE's writable part is
 * properties[probe_size] + tail, so its struct is the readable part only. */
struct viommu_wire_attach {
	struct viommu_wire_head head;
	uint32_t domain;
	uint32_t endpoint;
	uint32_t flags;
	uint8_t reserved[4];
	struct viommu_wire_tail tail;
};

struct viommu_wire_detach {
	struct viommu_wire_head head;
	uint32_t domain;
	uint32_t endpoint;
	uint8_t reserved[8];
	struct viommu_wire_tail tail;
};

struct viommu_wire_map {
	struct viommu_wire_head head;
	uint32_t domain;
	uint64_t virt_start;
	uint64_t virt_end; /* inclusive */
	uint64_t phys_start;
	uint32_t flags;
	struct viommu_wire_tail tail;
};

struct viommu_wire_unmap {
	struct viommu_wire_head head;
	uint32_t domain;
	uint64_t virt_start;
	uint64_t virt_end; /* inclusive */
	uint8_t reserved[4];
	struct viommu_wire_tail tail;
};

struct viommu_wire_probe {
	struct viommu_wire_head head;
	uint32_t endpoint;
	uint8_t reserved[64];
};

struct viommu_wire_prop_head {
	uint16_t type; /* bits 0-11 type, 12-15 reserved */
	uint16_t length; /* excludes this header */
};

struct viommu_wire_resv_mem {
	struct viommu_wire_prop_head head;
	uint8_t subtype;
	uint8_t reserved[3];
	uint64_t start; /* inclusive */
	uint64_t end; /* inclusive */
};

struct viommu_wire_fault {
	uint8_t reason;
	uint8_t reserved[3];
	uint32_t flags;
	uint32_t endpoint;
	uint32_t reserved1;
	uint64_t address;
};

struct viommu_wire_config {
	uint64_t page_size_mask;
	uint64_t input_start;
	uint64_t input_end;
	uint32_t domain_start;
	uint32_t domain_end;
	uint32_t probe_size;
	uint8_t bypass;
	uint8_t reserved[3];
};

#define VIOMMU_RD_LEN(type) offsetof(type, tail)

_Static_assert(sizeof(struct viommu_wire_attach) == 24, "ATTACH is 24 B");
_Static_assert(sizeof(struct viommu_wire_detach) == 24, "DETACH is 24 B");
_Static_assert(sizeof(struct viommu_wire_map) == 40, "MAP is 40 B");
_Static_assert(offsetof(struct viommu_wire_map, phys_start) == 24, "MAP phys_start @24");
_Static_assert(offsetof(struct viommu_wire_map, tail) == 36, "MAP tail @36");
_Static_assert(sizeof(struct viommu_wire_unmap) == 32, "UNMAP is 32 B");
_Static_assert(offsetof(struct viommu_wire_unmap, tail) == 28, "UNMAP tail @28");
_Static_assert(sizeof(struct viommu_wire_probe) == 72, "PROBE readable part is 72 B");
_Static_assert(sizeof(struct viommu_wire_resv_mem) == 24, "RESV_MEM property is 24 B");
_Static_assert(sizeof(struct viommu_wire_fault) == 24, "fault event is 24 B");
_Static_assert(sizeof(struct viommu_wire_config) == 40, "config space is 40 B");
_Static_assert(offsetof(struct viommu_wire_config, bypass) == 36, "config bypass @36");

/* Little-endian accessors on unaligned byte buffers. */
static inline uint16_t viommu_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}

static inline uint32_t viommu_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t viommu_le64(const void *p)
{
	return viommu_le32(p) | (uint64_t)viommu_le32((const uint8_t *)p + 4) << 32;
}

static inline void viommu_put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}

static inline void viommu_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

static inline void viommu_put_le64(void *p, uint64_t v)
{
	viommu_put_le32(p, (uint32_t)v);
	viommu_put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/*
 * Driver-side encoders: write the device-readable part of a request as Linux places it (reserved
 * bytes zero) and return its length. For the replayer, tests, benchmarks and VMM tests.
 */
static inline size_t viommu_req_attach(uint8_t *r, uint32_t domain, uint32_t ep, uint32_t flags)
{
	memset(r, 0, VIOMMU_RD_LEN(struct viommu_wire_attach));
	r[0] = VIOMMU_T_ATTACH;
	viommu_put_le32(r + 4, domain);
	viommu_put_le32(r + 8, ep);
	viommu_put_le32(r + 12, flags);
	return VIOMMU_RD_LEN(struct viommu_wire_attach);
}

static inline size_t viommu_req_detach(uint8_t *r, uint32_t domain, uint32_t ep)
{
	memset(r, 0, VIOMMU_RD_LEN(struct viommu_wire_detach));
	r[0] = VIOMMU_T_DETACH;
	viommu_put_le32(r + 4, domain);
	viommu_put_le32(r + 8, ep);
	return VIOMMU_RD_LEN(struct viommu_wire_detach);
}

static inline size_t viommu_req_map(uint8_t *r, uint32_t domain, uint64_t virt_start,
				    uint64_t virt_end, uint64_t phys_start, uint32_t flags)
{
	memset(r, 0, VIOMMU_RD_LEN(struct viommu_wire_map));
	r[0] = VIOMMU_T_MAP;
	viommu_put_le32(r + 4, domain);
	viommu_put_le64(r + 8, virt_start);
	viommu_put_le64(r + 16, virt_end);
	viommu_put_le64(r + 24, phys_start);
	viommu_put_le32(r + 32, flags);
	return VIOMMU_RD_LEN(struct viommu_wire_map);
}

static inline size_t viommu_req_unmap(uint8_t *r, uint32_t domain, uint64_t virt_start,
				      uint64_t virt_end)
{
	memset(r, 0, VIOMMU_RD_LEN(struct viommu_wire_unmap));
	r[0] = VIOMMU_T_UNMAP;
	viommu_put_le32(r + 4, domain);
	viommu_put_le64(r + 8, virt_start);
	viommu_put_le64(r + 16, virt_end);
	return VIOMMU_RD_LEN(struct viommu_wire_unmap);
}

static inline size_t viommu_req_probe(uint8_t *r, uint32_t ep)
{
	memset(r, 0, sizeof(struct viommu_wire_probe));
	r[0] = VIOMMU_T_PROBE;
	viommu_put_le32(r + 4, ep);
	return sizeof(struct viommu_wire_probe);
}

const char *viommu_status_name(unsigned status);
const char *viommu_type_name(unsigned type);

#endif
