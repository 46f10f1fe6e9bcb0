// SPDX-License-Identifier: MIT
/*
 * The device core's API: config space, features, requests as the driver places them (real wire
 * buffers), the authoritative translation, faults, resets and observers. The conformance
 * scripts (tests/conformance/) cover the request rules rule by rule through the replayer; these
 * tests cover what a script cannot express (scatter lists, observers, API errors, internals).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "requests.h"

#define MSI_START 0xfee00000ull
#define MSI_END 0xfeefffffull

static struct viommu_device *dev;

static void setup_with(struct viommu_config *cfg)
{
	struct viommu_resv msi = { MSI_START, MSI_END, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_resv rsv[2] = { { 0x10000, 0x1ffff, VIOMMU_RESV_MEM_T_RESERVED },
				      { MSI_START, MSI_END, VIOMMU_RESV_MEM_T_MSI } };

	dev = viommu_device_new(cfg);
	cr_assert_not_null(dev);
	cr_assert_eq(viommu_device_add_endpoint(dev, 1, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 2, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 3, true, rsv, 2), 0);
	cr_assert_eq(viommu_device_add_endpoint(dev, 4, false, NULL, 0), 0);
}

static void setup(void)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	setup_with(&cfg);
}

static void teardown(void)
{
	/* Criterion does not count an assertion in .fini as a failure: abort, counted as a crash. */
	if (dev && viommu_device_check(dev)) {
		fprintf(stderr, "teardown: the device's internal invariants do not hold\n");
		abort();
	}
	if (dev)
		viommu_device_free(dev);
	dev = NULL;
}

#define RW (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)

static enum viommu_xlate_result xlate(uint32_t ep, uint64_t iova, uint64_t size, uint32_t access,
				      struct viommu_answer *x)
{
	return viommu_device_translate(dev, ep, iova, size, access, x);
}

static uint64_t pa_of(uint32_t ep, uint64_t iova)
{
	struct viommu_answer x;

	cr_assert_eq(xlate(ep, iova, 1, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_HIT,
		     "iova 0x%llx of endpoint %u translates", (unsigned long long)iova, ep);
	return x.pa;
}

static void assert_fault(uint32_t ep, uint64_t iova, uint8_t reason)
{
	struct viommu_answer x;

	cr_assert_eq(xlate(ep, iova, 1, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_FAULT,
		     "iova 0x%llx of endpoint %u faults", (unsigned long long)iova, ep);
	cr_assert_eq(x.reason, reason);
}

/* ---- config space and features ---- */

TestSuite(config, .fini = teardown);

Test(config, defaults_read_back_little_endian_in_40_bytes)
{
	struct viommu_config cfg;
	uint8_t c[48];

	viommu_config_default(&cfg);
	setup_with(&cfg);
	memset(c, 0xff, sizeof(c));
	viommu_device_config_read(dev, 0, c, sizeof(c));
	cr_assert_eq(viommu_le64(c + 0), 0xfffffffffffff000ull, "page_size_mask");
	cr_assert_eq(viommu_le64(c + 8), 0, "input_range.start");
	cr_assert_eq(viommu_le64(c + 16), UINT64_MAX, "input_range.end");
	cr_assert_eq(viommu_le32(c + 24), 0, "domain_range.start");
	cr_assert_eq(viommu_le32(c + 28), UINT32_MAX, "domain_range.end");
	cr_assert_eq(viommu_le32(c + 32), 512, "probe_size");
	cr_assert_eq(c[36], 1, "bypass");
	for (int i = 37; i < 48; i++)
		cr_assert_eq(c[i], 0, "byte %d is padding or past the end", i);
}

Test(config, device_new_refuses_what_the_spec_forbids)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.page_size_mask = 0;
	cr_assert_null(viommu_device_new(&cfg));
	cr_assert_eq(errno, EINVAL);
	viommu_config_default(&cfg);
	cfg.bypass = 2;
	cr_assert_null(viommu_device_new(&cfg));
	viommu_config_default(&cfg);
	cfg.features |= VIOMMU_FBIT(VIOMMU_F_BYPASS); /* both 3 and 6 */
	cr_assert_null(viommu_device_new(&cfg));
	viommu_config_default(&cfg);
	cfg.features |= 1ull << 7;
	cr_assert_null(viommu_device_new(&cfg));
	viommu_config_default(&cfg);
	cfg.input_start = 0x2000;
	cfg.input_end = 0x1fff;
	cr_assert_null(viommu_device_new(&cfg));
}

Test(config, device_new_refuses_caps_of_zero_or_above_the_limits)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.max_domains = VIOMMU_MAX_DOMAINS_LIMIT + 1;
	cr_assert_null(viommu_device_new(&cfg), "an untrusted config cannot ask for 16 GiB of slots");
	cfg.max_domains = 0;
	cr_assert_null(viommu_device_new(&cfg));
	viommu_config_default(&cfg);
	cfg.max_pending_faults = VIOMMU_MAX_FAULTS_LIMIT + 1;
	cr_assert_null(viommu_device_new(&cfg));
	viommu_config_default(&cfg);
	cfg.max_domains = VIOMMU_MAX_DOMAINS_LIMIT;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_domain(dev, 5)->slot, 0, "slots are handed out from 0");
}

Test(config, bypass_write_needs_bypass_config_and_takes_only_0_or_1, .init = setup)
{
	uint8_t b = 1, v, two = 2;
	uint32_t off = offsetof(struct viommu_wire_config, bypass);

	cr_assert_eq(viommu_device_config_write(dev, off, &two, 1), -EINVAL);
	cr_assert_eq(viommu_device_config_write(dev, 0, &b, 1), -EPERM, "other fields are read-only");
	viommu_device_config_read(dev, off, &v, 1);
	cr_assert_eq(v, 0);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BLOCKED);
	cr_assert_eq(viommu_device_config_write(dev, off, &b, 1), 0);
	viommu_device_config_read(dev, off, &v, 1);
	cr_assert_eq(v, 1);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BYPASS);
	/* Without BYPASS_CONFIG negotiated the byte is read-only. */
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG)),
		     0);
	b = 0;
	cr_assert_eq(viommu_device_config_write(dev, off, &b, 1), -EPERM);
	viommu_device_config_read(dev, off, &v, 1);
	cr_assert_eq(v, 1);
}

Test(config, negotiation_accepts_only_a_subset_of_the_offer, .init = setup)
{
	cr_assert_eq(viommu_device_negotiate(dev, VIOMMU_FBIT(VIOMMU_F_BYPASS)), -EINVAL);
	cr_assert_eq(viommu_device_negotiated(dev), viommu_device_features(dev));
	cr_assert_eq(viommu_device_negotiate(dev, VIOMMU_FBIT(VIOMMU_F_MAP_UNMAP)), 0);
	cr_assert_eq(viommu_device_negotiated(dev), VIOMMU_FBIT(VIOMMU_F_MAP_UNMAP));
}

Test(config, legacy_bypass_feature_makes_unattached_endpoints_bypass)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.features = (cfg.features & ~VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG)) |
		       VIOMMU_FBIT(VIOMMU_F_BYPASS);
	setup_with(&cfg);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BYPASS);
	cr_assert_eq(viommu_device_negotiate(dev, 0), 0);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BLOCKED);
}

/* ---- the request path ---- */

TestSuite(request, .init = setup, .fini = teardown);

Test(request, too_short_for_head_or_tail_returns_used_0_and_writes_nothing)
{
	uint8_t rd[20] = { VIOMMU_T_ATTACH }, wr[8];

	memset(wr, 0xa5, sizeof(wr));
	cr_assert_eq(viommu_device_request_buf(dev, rd, 3, wr, 4), 0);
	cr_assert_eq(viommu_device_request_buf(dev, rd, sizeof(rd), wr, 3), 0);
	for (size_t i = 0; i < sizeof(wr); i++)
		cr_assert_eq(wr[i], 0xa5);
	cr_assert_eq(viommu_device_stats(dev)->dropped_requests, 2);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
}

Test(request, unknown_type_and_probe_without_f_probe_return_used_0)
{
	uint8_t rd[72] = { 0x42 }, wr[516];

	memset(wr, 0xa5, sizeof(wr));
	cr_assert_eq(viommu_device_request_buf(dev, rd, sizeof(rd), wr, sizeof(wr)), 0);
	rd[0] = 0;
	cr_assert_eq(viommu_device_request_buf(dev, rd, sizeof(rd), wr, sizeof(wr)), 0);
	rd[0] = VIOMMU_T_PROBE;
	viommu_put_le32(rd + 4, 1);
	cr_assert_eq(viommu_device_request_buf(dev, rd, sizeof(rd), wr, sizeof(wr)), sizeof(wr));
	cr_assert_eq(wr[sizeof(wr) - 4], VIOMMU_S_OK);
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_PROBE)),
		     0);
	memset(wr, 0xa5, sizeof(wr));
	cr_assert_eq(viommu_device_request_buf(dev, rd, sizeof(rd), wr, sizeof(wr)), 0);
	cr_assert_eq(wr[0], 0xa5);
}

Test(request, truncated_request_is_inval_and_changes_nothing)
{
	uint8_t r[20] = { VIOMMU_T_ATTACH }, t[4];

	viommu_put_le32(r + 4, 5);
	viommu_put_le32(r + 8, 1);
	cr_assert_eq(viommu_device_request_buf(dev, r, 19, t, 4), 4);
	cr_assert_eq(t[0], VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BLOCKED);
}

Test(request, used_length_is_the_writable_length_with_the_tail_at_its_end)
{
	uint8_t r[20] = { VIOMMU_T_ATTACH }, w[64];

	viommu_put_le32(r + 4, 5);
	viommu_put_le32(r + 8, 1);
	memset(w, 0xa5, sizeof(w));
	cr_assert_eq(viommu_device_request_buf(dev, r, sizeof(r), w, sizeof(w)), sizeof(w));
	cr_assert_eq(w[60], VIOMMU_S_OK);
	for (int i = 0; i < 60; i++)
		cr_assert_eq(w[i], 0xa5, "byte %d before the tail is untouched", i);
}

Test(request, scatter_lists_split_anywhere_give_the_same_answer)
{
	uint8_t r[36] = { VIOMMU_T_MAP }, w[8];

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	for (size_t cut = 0; cut <= sizeof(r); cut++) {
		for (size_t wcut = 0; wcut <= sizeof(w); wcut++) {
			struct iovec rd[2] = { { r, cut }, { r + cut, sizeof(r) - cut } };
			struct iovec wr[2] = { { w, wcut }, { w + wcut, sizeof(w) - wcut } };
			uint64_t iova = (uint64_t)(cut * 16 + wcut) << 12;

			viommu_put_le32(r + 4, 5);
			viommu_put_le64(r + 8, iova);
			viommu_put_le64(r + 16, iova + 0xfff);
			viommu_put_le64(r + 24, iova + 0x100000000ull);
			viommu_put_le32(r + 32, RW);
			memset(w, 0xa5, sizeof(w));
			cr_assert_eq(viommu_device_request(dev, rd, 2, wr, 2), sizeof(w));
			cr_assert_eq(w[4], VIOMMU_S_OK, "cut %zu/%zu", cut, wcut);
			cr_assert_eq(w[0] & w[1] & w[2] & w[3], 0xa5);
			cr_assert_eq(pa_of(1, iova + 5), iova + 0x100000005ull);
		}
	}
}

/* A transport may hand over an empty descriptor as {NULL, 0}: the device must skip it without
 * passing NULL to memcpy (UBSan's nonnull check fails the ASan+UBSan run of this test). */
Test(request, empty_segments_given_as_null_are_skipped)
{
	uint8_t r[36], w[8], pr[72] = { VIOMMU_T_PROBE }, pw[512 + 4];
	struct iovec rd[5] = { { NULL, 0 }, { r, 10 }, { NULL, 0 }, { r + 10, sizeof(r) - 10 },
			       { NULL, 0 } };
	struct iovec wr[4] = { { NULL, 0 }, { w, 3 }, { NULL, 0 }, { w + 3, sizeof(w) - 3 } };
	struct iovec prd[3] = { { NULL, 0 }, { pr, sizeof(pr) }, { NULL, 0 } };
	struct iovec pwr[4] = { { NULL, 0 }, { pw, 100 }, { NULL, 0 }, { pw + 100, sizeof(pw) - 100 } };
	struct iovec none[2] = { { NULL, 0 }, { NULL, 0 } };

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	viommu_req_map(r, 5, 0x1000, 0x1fff, 0x9000, RW);
	memset(w, 0xa5, sizeof(w));
	cr_assert_eq(viommu_device_request(dev, rd, 5, wr, 4), sizeof(w));
	cr_assert_eq(w[4], VIOMMU_S_OK);
	cr_assert_eq(w[0] & w[1] & w[2] & w[3], 0xa5, "nothing written before the tail");
	cr_assert_eq(pa_of(1, 0x1234), 0x9234);
	/* PROBE writes its properties across the segments. */
	viommu_put_le32(pr + 4, 1);
	memset(pw, 0xa5, sizeof(pw));
	cr_assert_eq(viommu_device_request(dev, prd, 3, pwr, 4), sizeof(pw));
	cr_assert_eq(pw[512], VIOMMU_S_OK);
	cr_assert_eq(viommu_le16(pw), VIOMMU_PROBE_T_RESV_MEM);
	cr_assert_eq(viommu_le64(pw + 8), MSI_START);
	/* Only empty segments: too short for a head or a tail, returned untouched. */
	cr_assert_eq(viommu_device_request(dev, none, 2, wr, 4), 0);
	cr_assert_eq(viommu_device_request(dev, rd, 5, none, 2), 0);
	cr_assert_eq(viommu_device_request(dev, none, 0, none, 0), 0);
	cr_assert_eq(viommu_device_request_buf(dev, NULL, 0, NULL, 0), 0);
}

Test(request, map_and_unmap_without_map_unmap_negotiated_are_unsupp)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_MAP_UNMAP)),
		     0);
	cr_assert_eq(test_map(dev, 5, 0, 0xfff, 0, RW), VIOMMU_S_UNSUPP);
	cr_assert_eq(test_unmap(dev, 5, 0, 0xfff), VIOMMU_S_UNSUPP);
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
}

Test(request, statistics_count_each_type_and_status)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 5, 99, 0), VIOMMU_S_NOENT);
	cr_assert_eq(viommu_device_stats(dev)->requests[VIOMMU_T_ATTACH][VIOMMU_S_OK], 1);
	cr_assert_eq(viommu_device_stats(dev)->requests[VIOMMU_T_ATTACH][VIOMMU_S_NOENT], 1);
}

/* ---- ATTACH / DETACH ---- */

TestSuite(attach, .init = setup, .fini = teardown);

Test(attach, creates_the_domain_and_the_last_detach_destroys_it_with_its_mappings)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 5, 2, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_detach(dev, 5, 1), VIOMMU_S_OK);
	cr_assert_eq(pa_of(2, 0x1000), 0x9000, "the domain lives while an endpoint remains");
	cr_assert_eq(test_detach(dev, 5, 2), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	assert_fault(1, 0x1000, VIOMMU_FAULT_R_MAPPING); /* a new domain 5, empty */
}

/* The device remembers the last MAP's domain; a MAP or UNMAP after that domain died finds none
 * (under ASan, a remembered pointer to the freed domain is a use after free), and one after a
 * new domain of the same id was made finds the new one. */
Test(attach, a_map_or_unmap_after_its_domain_died_finds_no_domain_and_then_the_new_one)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_detach(dev, 5, 1), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0xa000, RW), VIOMMU_S_NOENT);
	cr_assert_eq(test_unmap(dev, 5, 0x1000, 0x1fff), VIOMMU_S_NOENT);
	cr_assert_eq(test_attach(dev, 7, 2, 0), VIOMMU_S_OK); /* may take the freed memory */
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0xa000, RW), VIOMMU_S_NOENT);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0xa000, RW), VIOMMU_S_OK);
	cr_assert_eq(pa_of(1, 0x2000), 0xa000);
	cr_assert_eq(test_map(dev, 7, 0x2000, 0x2fff, 0xb000, RW), VIOMMU_S_OK);
	cr_assert_eq(pa_of(2, 0x2000), 0xb000, "each MAP went to its own domain");
	cr_assert_eq(pa_of(1, 0x2000), 0xa000);
}

Test(attach, attaching_an_attached_endpoint_moves_it)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 6, 1, 0), VIOMMU_S_OK);
	cr_assert_null(viommu_device_domain(dev, 5), "the old domain died with its last endpoint");
	assert_fault(1, 0x1000, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(test_detach(dev, 5, 1), VIOMMU_S_INVAL, "it is no longer attached to 5");
	cr_assert_eq(viommu_device_endpoint(dev, 1)->domain->id, 6);
	cr_assert_eq(test_attach(dev, 6, 1, 0), VIOMMU_S_OK, "re-attaching to the same domain is a no-op");
	cr_assert_eq(viommu_device_domain(dev, 6)->nr_endpoints, 1);
}

Test(attach, bypass_mismatch_is_inval_and_the_endpoint_stays_where_it_was)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 7, 2, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 7, 1, 0), VIOMMU_S_INVAL);
	cr_assert_eq(pa_of(1, 0x1000), 0x9000, "QEMU leaves it detached; we must not");
	cr_assert_eq(test_attach(dev, 5, 2, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_endpoint_state(dev, 2), VIOMMU_EP_BYPASS);
}

Test(attach, unknown_flags_reserved_bytes_and_unknown_endpoints_are_refused)
{
	uint8_t r[20] = { VIOMMU_T_ATTACH };

	cr_assert_eq(test_attach(dev, 5, 1, 1u << 1), VIOMMU_S_INVAL);
	cr_assert_eq(test_attach(dev, 5, 99, 0), VIOMMU_S_NOENT);
	viommu_put_le32(r + 4, 5);
	viommu_put_le32(r + 8, 1);
	r[16] = 1;
	cr_assert_eq(test_submit(dev, r, sizeof(r)), VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
}

Test(attach, bypass_flag_without_bypass_config_is_inval)
{
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_BYPASS_CONFIG)),
		     0);
	cr_assert_eq(test_attach(dev, 5, 1, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
}

Test(attach, endpoint_whose_reserved_regions_are_mapped_in_the_domain_is_unsupp)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x10000, 0x10fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 5, 3, 0), VIOMMU_S_UNSUPP); /* endpoint 3 reserves 0x10000-0x1ffff */
	cr_assert_null(viommu_device_endpoint(dev, 3)->domain);
	cr_assert_eq(viommu_device_domain(dev, 5)->nr_endpoints, 1);
}

Test(attach, domain_outside_domain_range_is_range)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.domain_start = 10;
	cfg.domain_end = 20;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 9, 1, 0), VIOMMU_S_RANGE);
	cr_assert_eq(test_attach(dev, 21, 1, 0), VIOMMU_S_RANGE);
	cr_assert_eq(test_attach(dev, 20, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_detach(dev, 21, 1), VIOMMU_S_RANGE);
}

Test(attach, domain_range_applies_when_offered_even_if_not_negotiated)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.domain_start = 10;
	cfg.domain_end = 20;
	setup_with(&cfg);
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_DOMAIN_RANGE)), 0);
	cr_assert_eq(test_attach(dev, 9, 1, 0), VIOMMU_S_RANGE);
	cr_assert_eq(test_attach(dev, 21, 1, 0), VIOMMU_S_RANGE);
	cr_assert_null(viommu_device_endpoint(dev, 1)->domain);
	cr_assert_eq(test_attach(dev, 10, 1, 0), VIOMMU_S_OK);
}

Test(attach, domain_range_does_not_apply_when_not_offered)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.domain_start = 10;
	cfg.domain_end = 20;
	cfg.features &= ~VIOMMU_FBIT(VIOMMU_F_DOMAIN_RANGE);
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 9, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 0xffffffff, 2, 0), VIOMMU_S_OK);
}

static int collect_ep(const struct viommu_endpoint *ep, void *arg)
{
	uint32_t *ids = arg;

	ids[++ids[0]] = ep->id;
	return 0;
}

Test(attach, each_domain_endpoint_lists_who_the_device_attached)
{
	uint32_t ids[8] = { 0 };
	uint8_t r[64];

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 5, 2, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 6, 4, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_for_each_domain_endpoint(dev, 5, collect_ep, ids), 0);
	cr_assert_eq(ids[0], 2);
	cr_assert(ids[1] + ids[2] == 3 && ids[1] != ids[2]);
	cr_assert_eq(test_submit(dev, r, viommu_req_detach(r, 5, 1)), VIOMMU_S_OK);
	ids[0] = 0;
	viommu_device_for_each_domain_endpoint(dev, 5, collect_ep, ids);
	cr_assert_eq(ids[0], 1);
	cr_assert_eq(ids[1], 2);
	ids[0] = 0;
	cr_assert_eq(viommu_device_for_each_domain_endpoint(dev, 99, collect_ep, ids), 0);
	cr_assert_eq(ids[0], 0);
}

Test(attach, domain_cap_answers_nomem_and_changes_nothing)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.max_domains = 1;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 6, 2, 0), VIOMMU_S_NOMEM);
	cr_assert_null(viommu_device_endpoint(dev, 2)->domain);
	cr_assert_eq(viommu_device_nr_domains(dev), 1);
}

Test(attach, detach_of_an_endpoint_not_in_that_domain_is_inval_and_keeps_it)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_detach(dev, 6, 1), VIOMMU_S_INVAL);
	cr_assert_eq(test_detach(dev, 5, 2), VIOMMU_S_INVAL);
	cr_assert_eq(test_detach(dev, 5, 99), VIOMMU_S_NOENT);
	cr_assert_eq(viommu_device_endpoint(dev, 1)->domain->id, 5);
}

/* ---- MAP / UNMAP ---- */

TestSuite(map, .init = setup, .fini = teardown);

Test(map, overlapping_a_mapping_is_inval_and_leaves_it)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x3fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x3000, 0x4fff, 0x7000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x2fff, 0x7000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, 0x0, 0x8fff, 0x7000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(viommu_device_nr_mappings(dev), 1);
	cr_assert_eq(pa_of(1, 0x3000), 0xa000);
}

Test(map, misaligned_or_wrapping_ranges_are_range_and_bad_flags_inval)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1001, 0x1fff, 0x9000, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1ffe, 0x9000, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9800, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x2fff, UINT64_MAX - 0xfff, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x1fff, 0x9000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, 1u << 3), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 6, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_NOENT);
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
}

Test(map, mmio_flag_needs_f_mmio)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW | VIOMMU_MAP_F_MMIO), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_MMIO)),
		     0);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x9000, RW | VIOMMU_MAP_F_MMIO), VIOMMU_S_INVAL);
}

Test(map, over_a_reserved_region_of_an_attached_endpoint_is_inval)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, MSI_START, MSI_START + 0xfff, 0x9000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, MSI_START - 0x1000, MSI_START + 0xfff, 0x9000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, MSI_START - 0x1000, MSI_START - 1, 0x9000, RW), VIOMMU_S_OK);
}

Test(map, into_a_bypass_domain_is_inval)
{
	cr_assert_eq(test_attach(dev, 7, 1, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 7, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_unmap(dev, 7, 0x1000, 0x1fff), VIOMMU_S_INVAL);
}

Test(map, the_last_page_of_the_64_bit_space_maps_and_unmaps)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, UINT64_MAX - 0xfff, UINT64_MAX, 0x5000, RW), VIOMMU_S_OK);
	cr_assert_eq(pa_of(1, UINT64_MAX), 0x5fff);
	cr_assert_eq(test_unmap(dev, 5, UINT64_MAX - 0xfff, UINT64_MAX), VIOMMU_S_OK);
	assert_fault(1, UINT64_MAX, VIOMMU_FAULT_R_MAPPING);
}

Test(map, a_2_pow_48_byte_extent_is_one_mapping)
{
	cr_assert_eq(test_attach(dev, 5, 2, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 1ull << 48, (2ull << 48) - 1, 0, RW), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_nr_mappings(dev), 1);
	cr_assert_eq(pa_of(2, (1ull << 48) + 0x123456789ull), 0x123456789ull);
	cr_assert_eq(pa_of(2, (2ull << 48) - 1), (1ull << 48) - 1);
}

Test(map, mapping_caps_answer_nomem_and_change_nothing)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.max_mappings_per_domain = 2;
	cfg.max_mappings = 3;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 6, 2, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x3000, 0x3fff, 0, RW), VIOMMU_S_NOMEM, "per domain");
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x3fff, 0, RW), VIOMMU_S_INVAL, "an overlap is INVAL first");
	cr_assert_eq(test_map(dev, 5, 0x0, 0x1fff, 0, RW), VIOMMU_S_INVAL, "an overlap is INVAL first");
	cr_assert_eq(test_map(dev, 6, 0x1000, 0x1fff, 0, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 6, 0x2000, 0x2fff, 0, RW), VIOMMU_S_NOMEM, "in all");
	cr_assert_eq(viommu_device_nr_mappings(dev), 3);
	assert_fault(1, 0x3000, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(test_unmap(dev, 5, 0x1000, 0x1fff), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 6, 0x2000, 0x2fff, 0, RW), VIOMMU_S_OK, "room again after an UNMAP");
}

Test(map, input_range_is_enforced)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.input_start = 0x100000;
	cfg.input_end = 0xffffffff;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0xff000, 0x100fff, 0, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0xfffff000, 0x100000fff, 0, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x100000, 0x100fff, 0, RW), VIOMMU_S_OK);
}

Test(map, input_range_applies_when_offered_even_if_not_negotiated)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.input_start = 0x100000;
	cfg.input_end = 0xffffffff;
	setup_with(&cfg);
	cr_assert_eq(viommu_device_negotiate(dev, viommu_device_features(dev) &
						       ~VIOMMU_FBIT(VIOMMU_F_INPUT_RANGE)), 0);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0xff000, 0xfffff, 0, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x100000000, 0x100000fff, 0, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x100000, 0x100fff, 0, RW), VIOMMU_S_OK);
}

Test(map, input_range_does_not_apply_when_not_offered)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.input_start = 0x100000;
	cfg.input_end = 0xffffffff;
	cfg.features &= ~VIOMMU_FBIT(VIOMMU_F_INPUT_RANGE);
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x0, 0xfff, 0, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x100000000, 0x100000fff, 0, RW), VIOMMU_S_OK);
}

Test(map, granule_comes_from_the_lowest_bit_of_page_size_mask)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.page_size_mask = ~0xffffull; /* 64 KiB */
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0, RW), VIOMMU_S_RANGE);
	cr_assert_eq(test_map(dev, 5, 0x10000, 0x1ffff, 0x20000, RW), VIOMMU_S_OK);
}

/* With a 1-byte granule a MAP can end one byte before a mapping or start one byte after it: the
 * overlap test's bounds, byte for byte, on both sides and over a full cap. */
Test(map, a_map_touching_a_mapping_byte_for_byte_is_fine_and_one_byte_over_is_inval)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.page_size_mask = ~0ull; /* a 1-byte granule */
	cfg.max_mappings_per_domain = 3;
	setup_with(&cfg);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x100, 0x1ff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x80, 0x100, 0x7000, RW), VIOMMU_S_INVAL, "its last byte is the mapping's first");
	cr_assert_eq(test_map(dev, 5, 0x1ff, 0x27f, 0x7000, RW), VIOMMU_S_INVAL, "its first byte is the mapping's last");
	cr_assert_eq(test_map(dev, 5, 0x80, 0xff, 0x7000, RW), VIOMMU_S_OK, "ends a byte before");
	cr_assert_eq(test_map(dev, 5, 0x200, 0x27f, 0x8000, RW), VIOMMU_S_OK, "starts a byte after");
	cr_assert_eq(viommu_device_nr_mappings(dev), 3);
	/* The cap is full: an overlap is still INVAL, by a byte too; a MAP that touches is NOMEM. */
	cr_assert_eq(test_map(dev, 5, 0x280, 0x300, 0x7000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(test_map(dev, 5, 0x27f, 0x300, 0x7000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, 0x0, 0x80, 0x7000, RW), VIOMMU_S_INVAL);
	cr_assert_eq(test_map(dev, 5, 0x0, 0x7f, 0x7000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(pa_of(1, 0x100), 0x9000);
	cr_assert_eq(pa_of(1, 0xff), 0x707f);
	cr_assert_eq(pa_of(1, 0x200), 0x8000);
}

Test(map, unmap_that_would_split_a_mapping_is_range_and_removes_nothing)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x11000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x5fff, 0x12000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 5, 0x1000, 0x2fff), VIOMMU_S_RANGE, "would split the second at its end");
	cr_assert_eq(test_unmap(dev, 5, 0x3000, 0x5fff), VIOMMU_S_RANGE, "would split the second at its start");
	cr_assert_eq(viommu_device_nr_mappings(dev), 2);
	cr_assert_eq(pa_of(1, 0x1000), 0x11000, "the first survived the rejected UNMAP");
	cr_assert_eq(test_unmap(dev, 5, 0, 0xffff), VIOMMU_S_OK, "whole mappings inside the range go");
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
	cr_assert_eq(test_unmap(dev, 5, 0, 0xffff), VIOMMU_S_OK, "unmapping nothing succeeds");
}

Test(map, unmap_with_reserved_bytes_set_is_inval_and_removes_nothing)
{
	uint8_t r[28] = { VIOMMU_T_UNMAP };

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x11000, RW), VIOMMU_S_OK);
	viommu_put_le32(r + 4, 5);
	viommu_put_le64(r + 8, 0x1000);
	viommu_put_le64(r + 16, 0x1fff);
	r[24] = 1;
	cr_assert_eq(test_submit(dev, r, sizeof(r)), VIOMMU_S_INVAL);
	cr_assert_eq(pa_of(1, 0x1000), 0x11000);
}

/* ---- PROBE ---- */

TestSuite(probe, .init = setup, .fini = teardown);

Test(probe, returns_the_reserved_regions_and_zero_fills_the_rest)
{
	uint8_t r[72] = { VIOMMU_T_PROBE }, w[600];

	viommu_put_le32(r + 4, 3);
	memset(w, 0xa5, sizeof(w));
	cr_assert_eq(viommu_device_request_buf(dev, r, sizeof(r), w, 516), 516);
	cr_assert_eq(w[512], VIOMMU_S_OK);
	cr_assert_eq(viommu_le16(w), VIOMMU_PROBE_T_RESV_MEM);
	cr_assert_eq(viommu_le16(w + 2), 20);
	cr_assert_eq(w[4], VIOMMU_RESV_MEM_T_RESERVED);
	cr_assert_eq(viommu_le64(w + 8), 0x10000);
	cr_assert_eq(viommu_le64(w + 16), 0x1ffff);
	cr_assert_eq(w[24 + 4], VIOMMU_RESV_MEM_T_MSI);
	cr_assert_eq(viommu_le64(w + 24 + 8), MSI_START);
	for (int i = 48; i < 512; i++)
		cr_assert_eq(w[i], 0, "byte %d after the last property is zero", i);
	cr_assert_eq(w[516], 0xa5, "nothing written past the buffer");
}

Test(probe, a_buffer_smaller_than_probe_size_is_inval_with_only_the_tail_written)
{
	uint8_t r[72] = { VIOMMU_T_PROBE }, w[100];

	viommu_put_le32(r + 4, 3);
	memset(w, 0xa5, sizeof(w));
	cr_assert_eq(viommu_device_request_buf(dev, r, sizeof(r), w, sizeof(w)), sizeof(w));
	cr_assert_eq(w[96], VIOMMU_S_INVAL);
	cr_assert_eq(w[0], 0xa5);
}

Test(probe, unknown_endpoint_is_noent)
{
	uint8_t r[72] = { VIOMMU_T_PROBE }, w[516];

	viommu_put_le32(r + 4, 77);
	cr_assert_eq(viommu_device_request_buf(dev, r, sizeof(r), w, sizeof(w)), sizeof(w));
	cr_assert_eq(w[512], VIOMMU_S_NOENT);
}

/* ---- topology ---- */

TestSuite(topology, .init = setup, .fini = teardown);

Test(topology, bad_reserved_regions_are_refused_when_declared)
{
	struct viommu_resv two_msi[2] = { { 0x1000, 0x1fff, VIOMMU_RESV_MEM_T_MSI },
					  { 0x3000, 0x3fff, VIOMMU_RESV_MEM_T_MSI } };
	struct viommu_resv overlap[2] = { { 0x1000, 0x2fff, VIOMMU_RESV_MEM_T_RESERVED },
					  { 0x2000, 0x3fff, VIOMMU_RESV_MEM_T_MSI } };
	struct viommu_resv upside_down = { 0x2000, 0x1fff, VIOMMU_RESV_MEM_T_RESERVED };

	cr_assert_eq(viommu_device_add_endpoint(dev, 1, true, NULL, 0), -EEXIST);
	cr_assert_eq(viommu_device_add_endpoint(dev, 10, true, two_msi, 2), -EINVAL);
	cr_assert_eq(viommu_device_add_endpoint(dev, 10, true, overlap, 2), -EINVAL);
	cr_assert_eq(viommu_device_add_endpoint(dev, 10, true, &upside_down, 1), -EINVAL);
	cr_assert_null(viommu_device_endpoint(dev, 10));
}

Test(topology, regions_that_do_not_fit_probe_size_are_refused)
{
	struct viommu_config cfg;
	struct viommu_resv r[2] = { { 0x1000, 0x1fff, VIOMMU_RESV_MEM_T_RESERVED },
				    { 0x3000, 0x3fff, VIOMMU_RESV_MEM_T_RESERVED } };

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.probe_size = 24;
	dev = viommu_device_new(&cfg);
	cr_assert_eq(viommu_device_add_endpoint(dev, 1, true, r, 2), -ENOSPC);
	cr_assert_eq(viommu_device_add_endpoint(dev, 1, true, r, 1), 0);
}

/* ---- translation ---- */

TestSuite(translate, .init = setup, .fini = teardown);

Test(translate, a_range_may_span_adjacent_extents_but_not_a_hole)
{
	struct viommu_answer x;

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x50000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x90000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x4000, 0x4fff, 0xa0000, RW), VIOMMU_S_OK);
	cr_assert_eq(xlate(1, 0x1ff0, 0x20, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_HIT);
	cr_assert_eq(x.pa, 0x50ff0);
	cr_assert_eq(x.ext_start, 0x1000);
	cr_assert_eq(x.ext_end, 0x1fff);
	cr_assert_eq(xlate(1, 0x2ff0, 0x20, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_FAULT);
	cr_assert_eq(x.reason, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(x.fault_addr, 0x3000, "the first byte that fails");
}

Test(translate, permissions_are_checked_for_the_access)
{
	struct viommu_answer x;

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x50000, VIOMMU_MAP_F_READ), VIOMMU_S_OK);
	cr_assert_eq(xlate(1, 0x1000, 8, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_HIT);
	cr_assert_eq(xlate(1, 0x1000, 8, VIOMMU_MAP_F_WRITE, &x), VIOMMU_XLATE_FAULT);
	cr_assert_eq(x.reason, VIOMMU_FAULT_R_MAPPING);
}

Test(translate, endpoint_state_decides_identity_domain_fault_or_unknown)
{
	struct viommu_answer x;
	uint8_t one = 1;

	assert_fault(1, 0x1000, VIOMMU_FAULT_R_DOMAIN);
	assert_fault(99, 0x1000, VIOMMU_FAULT_R_UNKNOWN);
	cr_assert_eq(xlate(4, 0x1234, 4, VIOMMU_MAP_F_WRITE, &x), VIOMMU_XLATE_IDENTITY,
		     "no ACCESS_PLATFORM: physical addresses whatever the guest does");
	cr_assert_eq(x.pa, 0x1234);
	cr_assert_eq(test_attach(dev, 5, 4, 0), VIOMMU_S_OK);
	cr_assert_eq(xlate(4, 0x1234, 4, VIOMMU_MAP_F_WRITE, &x), VIOMMU_XLATE_IDENTITY);
	cr_assert_eq(test_attach(dev, 7, 2, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_OK);
	cr_assert_eq(xlate(2, 0x1234, 4, VIOMMU_MAP_F_WRITE, &x), VIOMMU_XLATE_IDENTITY);
	cr_assert_eq(viommu_device_config_write(dev, offsetof(struct viommu_wire_config, bypass), &one, 1),
		     0);
	cr_assert_eq(xlate(1, 0x1234, 4, VIOMMU_MAP_F_WRITE, &x), VIOMMU_XLATE_IDENTITY);
}

Test(translate, reserved_regions_fault_even_inside_a_mapping)
{
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x0, 0xffff, 0x100000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_attach(dev, 6, 3, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 6, 0x0, 0xffff, 0x100000, RW), VIOMMU_S_OK);
	cr_assert_eq(pa_of(3, 0xfff0), 0x10fff0);
	assert_fault(3, MSI_START, VIOMMU_FAULT_R_MAPPING);
}

Test(translate, a_range_running_past_2_pow_64_faults)
{
	struct viommu_answer x;

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, UINT64_MAX - 0xfff, UINT64_MAX, 0x5000, RW), VIOMMU_S_OK);
	cr_assert_eq(xlate(1, UINT64_MAX - 7, 8, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_HIT);
	cr_assert_eq(xlate(1, UINT64_MAX - 7, 16, VIOMMU_MAP_F_READ, &x), VIOMMU_XLATE_FAULT);
}

/* ---- faults ---- */

TestSuite(faults, .init = setup, .fini = teardown);

Test(faults, are_dropped_and_counted_without_posted_event_buffers)
{
	struct viommu_wire_fault f;

	cr_assert_eq(viommu_device_report_fault(dev, 1, VIOMMU_FAULT_R_DOMAIN, VIOMMU_MAP_F_READ, 0x1000),
		     -ENOBUFS);
	cr_assert_eq(viommu_device_stats(dev)->faults_dropped, 1);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), -ENOENT);
}

Test(faults, are_queued_in_order_in_the_wire_format)
{
	struct viommu_wire_fault f;

	viommu_device_eventq_post(dev, 2);
	cr_assert_eq(viommu_device_report_fault(dev, 1, VIOMMU_FAULT_R_DOMAIN, VIOMMU_MAP_F_READ, 0x1000), 0);
	cr_assert_eq(viommu_device_report_fault(dev, 2, VIOMMU_FAULT_R_MAPPING, VIOMMU_MAP_F_WRITE, 0x2000), 0);
	cr_assert_eq(viommu_device_report_fault(dev, 3, VIOMMU_FAULT_R_MAPPING, VIOMMU_MAP_F_WRITE, 0x3000),
		     -ENOBUFS, "only two buffers were posted");
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	cr_assert_eq(f.reason, VIOMMU_FAULT_R_DOMAIN);
	cr_assert_eq(viommu_le32(&f.endpoint), 1);
	cr_assert_eq(viommu_le32(&f.flags), VIOMMU_FAULT_F_READ | VIOMMU_FAULT_F_ADDRESS);
	cr_assert_eq(viommu_le64(&f.address), 0x1000);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), 0);
	cr_assert_eq(viommu_le32(&f.endpoint), 2);
	cr_assert_eq(viommu_le32(&f.flags), VIOMMU_FAULT_F_WRITE | VIOMMU_FAULT_F_ADDRESS);
	cr_assert_eq(viommu_device_fault_pop(dev, &f), -ENOENT);
}

Test(faults, the_queue_is_capped)
{
	struct viommu_config cfg;

	viommu_device_free(dev);
	viommu_config_default(&cfg);
	cfg.max_pending_faults = 2;
	setup_with(&cfg);
	viommu_device_eventq_post(dev, 10);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(viommu_device_report_fault(dev, 1, 1, 1, 0), 0);
	cr_assert_eq(viommu_device_report_fault(dev, 1, 1, 1, 0), -ENOBUFS);
}

/* ---- resets ---- */

TestSuite(reset, .init = setup, .fini = teardown);

Test(reset, device_reset_detaches_everything_and_keeps_bypass)
{
	uint8_t one = 1, v;
	uint32_t off = offsetof(struct viommu_wire_config, bypass);

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_config_write(dev, off, &one, 1), 0);
	viommu_device_reset(dev);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
	cr_assert_null(viommu_device_endpoint(dev, 1)->domain);
	viommu_device_config_read(dev, off, &v, 1);
	cr_assert_eq(v, 1, "bypass survives a device reset");
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BYPASS);
}

Test(reset, system_reset_also_restores_the_initial_bypass)
{
	uint8_t one = 1, v;
	uint32_t off = offsetof(struct viommu_wire_config, bypass);

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_config_write(dev, off, &one, 1), 0);
	viommu_device_system_reset(dev);
	viommu_device_config_read(dev, off, &v, 1);
	cr_assert_eq(v, 0);
	cr_assert_eq(viommu_device_endpoint_state(dev, 1), VIOMMU_EP_BLOCKED);
	cr_assert_eq(viommu_device_nr_domains(dev), 0);
}

/* ---- observers ---- */

struct log {
	char ev[64][32];
	unsigned n;
	int fail_map_at; /* fail the map whose start is this page, -1 never */
	unsigned syncs, removed_syncs;
};

static void ev(struct log *l, const char *fmt, unsigned long long a, unsigned long long b)
{
	if (l->n < 64)
		snprintf(l->ev[l->n++], 32, fmt, a, b);
}

static int o_ep(void *ctx, const struct viommu_endpoint *ep, enum viommu_ep_state st)
{
	ev(ctx, "ep %llu %llu", ep->id, st);
	return 0;
}

static int o_dom(void *ctx, struct viommu_domain *d)
{
	ev(ctx, "dom+ %llu%.0llu", d->id, 0);
	return 0;
}

static void o_dom_gone(void *ctx, struct viommu_domain *d)
{
	ev(ctx, "dom- %llu%.0llu", d->id, 0);
}

static int o_map(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	struct log *l = ctx;

	if ((int)(x->start >> 12) == l->fail_map_at)
		return -ENOMEM;
	ev(ctx, "map %llu %llx", d->id, x->start);
	return 0;
}

static void o_unmap(void *ctx, struct viommu_domain *d, struct viommu_extent *x)
{
	ev(ctx, "unmap %llu %llx", d->id, x->start);
}

static void o_sync(void *ctx, bool removed)
{
	struct log *l = ctx;

	l->syncs++;
	l->removed_syncs += removed;
}

static const struct viommu_observer obs_tmpl = {
	.endpoint_changed = o_ep, .domain_created = o_dom, .domain_destroyed = o_dom_gone,
	.map = o_map, .unmap = o_unmap, .sync = o_sync,
};

TestSuite(observer, .init = setup, .fini = teardown);

Test(observer, a_late_observer_is_told_the_current_state_first)
{
	struct log l = { .fail_map_at = -1 };
	struct viommu_observer o = obs_tmpl;

	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x1000, 0x1fff, 0x9000, RW), VIOMMU_S_OK);
	o.ctx = &l;
	cr_assert_eq(viommu_device_add_observer(dev, &o), 0);
	cr_assert_str_eq(l.ev[0], "dom+ 5");
	cr_assert_str_eq(l.ev[1], "map 5 1000");
	cr_assert_str_eq(l.ev[2], "ep 1 3");
	cr_assert_eq(viommu_device_remove_observer(dev, &l), 0);
}

Test(observer, a_failed_observer_map_undoes_the_map_and_answers_nomem)
{
	struct log l = { .fail_map_at = 2 };
	struct viommu_observer o = obs_tmpl;

	o.ctx = &l;
	cr_assert_eq(viommu_device_add_observer(dev, &o), 0);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x9000, RW), VIOMMU_S_NOMEM);
	cr_assert_eq(viommu_device_nr_mappings(dev), 0);
	assert_fault(1, 0x2000, VIOMMU_FAULT_R_MAPPING);
}

Test(observer, removal_is_flagged_to_sync_once_per_batch)
{
	struct log l = { .fail_map_at = -1 };
	struct viommu_observer o = obs_tmpl;

	o.ctx = &l;
	cr_assert_eq(viommu_device_add_observer(dev, &o), 0);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x9000, RW), VIOMMU_S_OK);
	l.syncs = l.removed_syncs = 0;
	viommu_device_batch_begin(dev);
	cr_assert_eq(test_map(dev, 5, 0x3000, 0x3fff, 0x9000, RW), VIOMMU_S_OK);
	cr_assert_eq(test_unmap(dev, 5, 0x2000, 0x2fff), VIOMMU_S_OK);
	cr_assert_eq(l.syncs, 0, "no sync inside a batch");
	viommu_device_batch_end(dev);
	cr_assert_eq(l.syncs, 1);
	cr_assert_eq(l.removed_syncs, 1, "the batch unmapped something: a strict observer waits");
}

/* What the prefetch hints named. */
struct hints {
	unsigned calls;
	uint64_t domain, iova;
};

static void o_prefetch(void *ctx, const struct viommu_domain *d, uint64_t iova)
{
	struct hints *h = ctx;

	h->calls++;
	h->domain = d->id;
	h->iova = iova;
}

static void setup_prefetch(void)
{
	struct viommu_config cfg;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	cfg.max_mappings_per_domain = VIOMMU_MAP_PREFETCH_EXTENTS + 2;
	setup_with(&cfg);
}

/* Past VIOMMU_MAP_PREFETCH_EXTENTS mappings in its domain a MAP first names its IOVA to the
 * observers' prefetch hint, and the hint changes no answer: a MAP over a mapping or a reserved
 * region is still INVAL and one past the domain's cap NOMEM, with nothing changed. */
Test(observer, a_map_into_a_large_domain_hints_its_iova_first_and_the_hint_changes_no_answer)
{
	const struct viommu_observer o = { .ctx = &(struct hints){ 0 }, .prefetch = o_prefetch };
	struct hints *h = o.ctx;
	const unsigned n = VIOMMU_MAP_PREFETCH_EXTENTS + 1;
	const uint64_t base = 0x100000000ull;

	teardown(); /* the suite's device, for one whose domains hold two mappings past the threshold */
	setup_prefetch();
	cr_assert_eq(viommu_device_add_observer(dev, &o), 0);
	cr_assert_eq(test_attach(dev, 7, 3, 0), VIOMMU_S_OK); /* endpoint 3: reserved 0x10000-0x1ffff */
	viommu_device_batch_begin(dev);
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(test_map(dev, 7, base + i * 0x2000ull, base + i * 0x2000ull + 0xfff, 0x9000, RW),
			     VIOMMU_S_OK);
	viommu_device_batch_end(dev);
	cr_assert_eq(h->calls, 0, "no hint while the domain held at most the threshold");
	cr_assert_eq(test_map(dev, 7, base + 0x1000, base + 0x1fff, 0xa000, RW), VIOMMU_S_OK);
	cr_assert_eq(h->calls, 1);
	cr_assert_eq(h->domain, 7);
	cr_assert_eq(h->iova, base + 0x1000);
	cr_assert_eq(test_map(dev, 7, base, base + 0x1fff, 0xa000, RW), VIOMMU_S_INVAL, "overlaps");
	cr_assert_eq(test_map(dev, 7, 0xf000, 0x10fff, 0xa000, RW), VIOMMU_S_INVAL, "a reserved region");
	cr_assert_eq(test_map(dev, 7, base + 0x3000, base + 0x3fff, 0xa000, RW), VIOMMU_S_NOMEM, "the cap");
	cr_assert_eq(viommu_device_nr_mappings(dev), n + 1);
	cr_assert_eq(pa_of(3, base + 0x1008), 0xa008);
	assert_fault(3, base + 0x3008, VIOMMU_FAULT_R_MAPPING);
	cr_assert_eq(viommu_device_remove_observer(dev, h), 0);
}

Test(observer, detaching_the_last_endpoint_unmaps_then_destroys_the_domain)
{
	struct log l = { .fail_map_at = -1 };
	struct viommu_observer o = obs_tmpl;

	o.ctx = &l;
	cr_assert_eq(viommu_device_add_observer(dev, &o), 0);
	cr_assert_eq(test_attach(dev, 5, 1, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 5, 0x2000, 0x2fff, 0x9000, RW), VIOMMU_S_OK);
	l.n = 0;
	cr_assert_eq(test_detach(dev, 5, 1), VIOMMU_S_OK);
	cr_assert_str_eq(l.ev[0], "ep 1 1", "the endpoint leaves first (blocked)");
	cr_assert_str_eq(l.ev[1], "unmap 5 2000");
	cr_assert_str_eq(l.ev[2], "dom- 5");
}
