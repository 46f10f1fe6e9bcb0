/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user backend-channel parser (vhost_user.h): pure, no state, so the fuzzer
 * (tests/fuzz/fuzz_vhost_user.c) links it alone.
 */
#include <errno.h>
#include <string.h>

#include "vhost_user.h"

int viommu_vu_backend_parse(const void *buf, size_t len, struct viommu_vu_backend_msg *m)
{
	const uint8_t *p = buf;

	if (len < VIOMMU_VU_HDR_SIZE)
		return 0;
	memcpy(&m->hdr, p, sizeof(m->hdr));
	if (m->hdr.size > VIOMMU_VU_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (len < VIOMMU_VU_HDR_SIZE + m->hdr.size)
		return 0;
	memset(&m->iotlb, 0, sizeof(m->iotlb));
	if ((m->hdr.flags & VIOMMU_VU_VERSION_MASK) != VIOMMU_VU_VERSION ||
	    (m->hdr.flags & VIOMMU_VU_F_REPLY))
		m->kind = VIOMMU_VU_MSG_BAD_FLAGS;
	else if (m->hdr.request != VIOMMU_VU_BACKEND_IOTLB_MSG)
		m->kind = VIOMMU_VU_MSG_UNSUPPORTED;
	else if (m->hdr.size != sizeof(m->iotlb))
		m->kind = VIOMMU_VU_MSG_BAD_IOTLB;
	else {
		memcpy(&m->iotlb, p + VIOMMU_VU_HDR_SIZE, sizeof(m->iotlb));
		m->kind = m->iotlb.type == VIOMMU_VU_IOTLB_MISS && m->iotlb.perm >= 1 &&
					  m->iotlb.perm <= 3
				  ? VIOMMU_VU_MSG_MISS
				  : VIOMMU_VU_MSG_BAD_IOTLB;
	}
	return (int)(VIOMMU_VU_HDR_SIZE + m->hdr.size);
}

