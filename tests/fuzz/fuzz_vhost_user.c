/* SPDX-License-Identifier: MIT */
/*
 * Fuzzer of the vhost-user backend-channel parser (user/vhost_user_msg.c): the input is what a
 * backend writes on its channel. It is parsed twice: whole, and arriving in chunks (sizes from
 * the input's first byte) through a buffer the size of the frontend's; both must give the same
 * messages, every message must be consistent with its header, and a MISS must be exactly what
 * the frontend answers (size 32, type MISS, perm 1-3).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhost_user.h"

#define FAIL(...) do { fprintf(stderr, "fuzz: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

struct seen {
	uint32_t request, flags, size;
	int kind;
	uint64_t iova;
	uint8_t perm;
};

static size_t parse_all(const uint8_t *p, size_t len, struct seen *out, size_t max, int *end)
{
	size_t n = 0;

	*end = 0;
	while (n < max) {
		struct viommu_vu_backend_msg m;
		int r = viommu_vu_backend_parse(p, len, &m);

		if (r < 0) {
			if (r != -EMSGSIZE || m.hdr.size <= VIOMMU_VU_MAX_PAYLOAD)
				FAIL("error %d for a header of size %u", r, m.hdr.size);
			*end = r;
			break;
		}
		if (r == 0)
			break;
		if ((size_t)r > len || (size_t)r != VIOMMU_VU_HDR_SIZE + m.hdr.size)
			FAIL("consumed %d of %zu, header size %u", r, len, m.hdr.size);
		if (m.kind == VIOMMU_VU_MSG_MISS &&
		    (m.hdr.size != 32 || m.iotlb.type != VIOMMU_VU_IOTLB_MISS || m.iotlb.perm < 1 ||
		     m.iotlb.perm > 3 || m.hdr.request != VIOMMU_VU_BACKEND_IOTLB_MSG ||
		     (m.hdr.flags & VIOMMU_VU_F_REPLY)))
			FAIL("a MISS that is not one");
		out[n++] = (struct seen){ m.hdr.request, m.hdr.flags, m.hdr.size, (int)m.kind,
					  m.iotlb.iova, m.iotlb.perm };
		p += r;
		len -= (size_t)r;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct seen a[4096], b[4096];
	uint8_t buf[VIOMMU_VU_HDR_SIZE + VIOMMU_VU_MAX_PAYLOAD];
	size_t na, nb = 0, have = 0, off = 1, chunk;
	int enda, endb = 0;

	if (size < 1)
		return 0;
	chunk = (size_t)(data[0] % 61) + 1;
	na = parse_all(data + 1, size - 1, a, 4096, &enda);
	/* Chunked, as recvmsg hands it over, into a buffer of the frontend's size. */
	while (nb < 4096 && !endb) {
		size_t take = size - off < chunk ? size - off : chunk;
		int end;
		size_t k, used = 0;

		if (take > sizeof(buf) - have)
			take = sizeof(buf) - have;
		memcpy(buf + have, data + off, take);
		have += take;
		off += take;
		k = parse_all(buf, have, b + nb, 4096 - nb, &end);
		for (size_t i = 0; i < k; i++)
			used += VIOMMU_VU_HDR_SIZE + b[nb + i].size;
		nb += k;
		memmove(buf, buf + used, have - used);
		have -= used;
		endb = end;
		if (!take && !k)
			break;
	}
	for (size_t i = 0; i < na && i < nb; i++)
		if (a[i].request != b[i].request || a[i].flags != b[i].flags || a[i].size != b[i].size ||
		    a[i].kind != b[i].kind || a[i].iova != b[i].iova || a[i].perm != b[i].perm)
			FAIL("message %zu differs when chunked by %zu", i, chunk);
	if (na != nb || (na < 4096 && enda != endb))
		FAIL("whole: %zu messages (end %d), chunked by %zu: %zu (end %d)", na, enda, chunk, nb, endb);
	return 0;
}
