// SPDX-License-Identifier: MIT
/*
 * tests/test_interleave.c again, with the bucket read in 16-byte loads (VIOMMU_BUCKET_SSE2, what
 * userspace readers use on x86-64): the same interleavings, the writer's step placed before the
 * 16-byte load that holds the value.
 */
#if defined(__SSE2__) && defined(__x86_64__)
#define VIOMMU_BUCKET_SSE2 1
#define INTERLEAVE_SUITE interleave_sse2
#include "test_interleave.c"
#endif
