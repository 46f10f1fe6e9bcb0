// SPDX-License-Identifier: MIT
/* Save and restore (user/image.c): a round trip is exact, and a bad image is refused whole. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_access.h"
#include "fastpath.h"
#include "image.h"
#include "reader.h"
#include "requests.h"

static struct viommu_device *dev;

/* A device with something of everything: endpoints with reserved regions and without
 * ACCESS_PLATFORM, a translated and a bypass domain, extents of several sizes, bypass written,
 * queued faults and free event buffers. */
static struct viommu_device *populated(void)
{
	struct viommu_config c;
	struct viommu_resv msi = { 0xfee00000, 0xfeefffff, VIOMMU_RESV_MEM_T_MSI };
	struct viommu_device *d;
	uint8_t zero = 0;

	viommu_config_default(&c);
	d = viommu_device_new(&c);
	cr_assert_not_null(d);
	cr_assert_eq(viommu_device_add_endpoint(d, 8, true, &msi, 1), 0);
	cr_assert_eq(viommu_device_add_endpoint(d, 9, true, NULL, 0), 0);
	cr_assert_eq(viommu_device_add_endpoint(d, 10, false, NULL, 0), 0);
	cr_assert_eq(viommu_device_add_endpoint(d, 0x30100, true, NULL, 0), 0);
	cr_assert_eq(viommu_device_config_write(d, offsetof(struct viommu_wire_config, bypass), &zero, 1), 0);
	cr_assert_eq(test_attach(d, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(d, 1, 10, 0), VIOMMU_S_OK);
	cr_assert_eq(test_attach(d, 7, 9, VIOMMU_ATTACH_F_BYPASS), VIOMMU_S_OK);
	for (uint64_t i = 0; i < 40; i++)
		cr_assert_eq(test_map(d, 1, 0x100000 + i * 0x1000, 0x100fff + i * 0x1000, 0x9000000 + i * 0x3000,
				      1 + (i % 3)), VIOMMU_S_OK);
	cr_assert_eq(test_map(d, 1, 1ull << 40, (1ull << 40) + (2u << 20) - 1, 0x40000000, 3), VIOMMU_S_OK);
	cr_assert_eq(test_map(d, 1, 0xfffffffffffff000ull, ~0ull, 0x1000, 1), VIOMMU_S_OK);
	viommu_device_eventq_post(d, 5);
	cr_assert_eq(viommu_device_report_fault(d, 8, VIOMMU_FAULT_R_MAPPING, VIOMMU_MAP_F_WRITE, 0x7000), 0);
	cr_assert_eq(viommu_device_report_fault(d, 0x30100, VIOMMU_FAULT_R_DOMAIN, VIOMMU_MAP_F_READ, 0), 0);
	return d;
}

static void fin(void)
{
	viommu_device_free(dev);
	dev = NULL;
}

TestSuite(image, .fini = fin);

static void same_answers(const struct viommu_device *a, const struct viommu_device *b)
{
	static const uint32_t eps[] = { 8, 9, 10, 0x30100, 11 };

	for (unsigned e = 0; e < 5; e++)
		for (uint64_t iova = 0xff000; iova < 0x12a000; iova += 0x800) {
			struct viommu_query q = { .endpoint = eps[e], .access = 1, .iova = iova, .size = 0x1800 };
			struct viommu_answer x, y;

			viommu_device_answer(a, &q, &x);
			viommu_device_answer(b, &q, &y);
			cr_assert(!memcmp(&x, &y, sizeof(x)), "ep 0x%x iova 0x%llx answers differ", eps[e],
				  (unsigned long long)iova);
		}
}

Test(image, a_restored_device_answers_as_the_saved_one_and_saves_to_the_same_bytes)
{
	struct viommu_device *r;
	struct viommu_wire_fault f1, f2;
	void *i1, *i2;
	size_t l1, l2;
	char why[200];

	dev = populated();
	cr_assert_eq(viommu_device_save(dev, &i1, &l1), 0);
	r = viommu_device_restore(i1, l1, why, sizeof(why));
	cr_assert_not_null(r, "%s", why);
	cr_assert_eq(viommu_device_check(r), 0);
	same_answers(dev, r);
	cr_assert_eq(viommu_device_negotiated(r), viommu_device_negotiated(dev));
	cr_assert_eq(viommu_device_eventq_credits(r), viommu_device_eventq_credits(dev));
	cr_assert_eq(viommu_device_nr_mappings(r), viommu_device_nr_mappings(dev));
	cr_assert_eq(viommu_device_save(r, &i2, &l2), 0);
	cr_assert(l1 == l2 && !memcmp(i1, i2, l1), "save -> restore -> save is a fixed point");
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(viommu_device_fault_pop(dev, &f1), 0);
		cr_assert_eq(viommu_device_fault_pop(r, &f2), 0);
		cr_assert(!memcmp(&f1, &f2, sizeof(f1)), "queued faults survive, in order");
	}
	cr_assert_eq(viommu_device_fault_pop(r, &f2), -ENOENT);
	free(i1);
	free(i2);
	viommu_device_free(r);
}

Test(image, a_fast_path_made_on_a_restored_device_answers_as_the_store)
{
	struct viommu_device *r;
	struct viommu_fastpath *fp;
	struct viommu_reader *rd;
	void *img;
	size_t len;

	dev = populated();
	cr_assert_eq(viommu_device_save(dev, &img, &len), 0);
	r = viommu_device_restore(img, len, NULL, 0);
	free(img);
	cr_assert_not_null(r);
	fp = viommu_fastpath_new(r, &(struct viommu_fastpath_opts){ .overcommit = true });
	if (!fp) {
		viommu_device_free(r);
		test_skip_if_kernel_refuses_bpf(errno);
		cr_assert_fail("viommu_fastpath_new: %s", strerror(errno));
	}
	rd = viommu_reader_open(fp);
	for (uint64_t iova = 0xff000; iova < 0x12a000; iova += 0x1000) {
		struct viommu_query q = { .endpoint = 8, .access = 1, .iova = iova, .size = 8 };
		struct viommu_answer want, got;

		viommu_device_answer(r, &q, &want);
		viommu_reader_translate(rd, &q, &got);
		cr_assert(viommu_fastpath_agrees(&q, &want, &got), "iova 0x%llx", (unsigned long long)iova);
	}
	cr_assert_eq(viommu_fastpath_check(fp), 0);
	viommu_reader_close(rd);
	viommu_fastpath_free(fp);
	viommu_device_free(r);
}

Test(image, every_truncation_is_refused_with_a_reason)
{
	void *img;
	size_t len;
	char why[200];

	dev = populated();
	cr_assert_eq(viommu_device_save(dev, &img, &len), 0);
	for (size_t n = 0; n < len; n++) {
		uint8_t *cut = malloc(n + 1);

		memcpy(cut, img, n);
		if (n >= 32) {
			viommu_image_seal(cut, n); /* a consistent header, so the records are tried */
		}
		why[0] = 0;
		cr_assert_null(viommu_device_restore(cut, n, why, sizeof(why)), "%zu of %zu bytes", n, len);
		cr_assert(errno == EINVAL && why[0], "%zu bytes: errno %d, reason '%s'", n, errno, why);
		free(cut);
	}
	free(img);
}

Test(image, every_byte_changed_is_refused_or_gives_a_consistent_device)
{
	void *img;
	size_t len;
	unsigned refused = 0;

	dev = populated();
	cr_assert_eq(viommu_device_save(dev, &img, &len), 0);
	for (size_t i = 8; i < len; i++) {
		uint8_t *bad = malloc(len);
		struct viommu_device *r;

		memcpy(bad, img, len);
		bad[i] ^= 0x41;
		if (i >= 32 || i < 16) /* a changed length or checksum is judged as it is */
			viommu_image_seal(bad, len);
		r = viommu_device_restore(bad, len, NULL, 0);
		if (r)
			cr_assert_eq(viommu_device_check(r), 0, "byte %zu changed: an inconsistent device", i);
		else
			refused++;
		viommu_device_free(r);
		free(bad);
	}
	cr_assert_gt(refused, len / 4, "most changes are refused (%u of %zu)", refused, len);
	free(img);
}

/* Append a record to a saved image, before its END (or replace END's position). */
static uint8_t *with_record_before_end(const uint8_t *img, size_t len, const uint8_t *rec, size_t rlen,
				       size_t *out_len)
{
	uint8_t *b = malloc(len + rlen);

	memcpy(b, img, len - 8); /* END is the last 8 bytes */
	memcpy(b + len - 8, rec, rlen);
	memcpy(b + len - 8 + rlen, img + len - 8, 8);
	*out_len = len + rlen;
	viommu_put_le32(b + 28, viommu_le32(img + 28) + 1);
	viommu_image_seal(b, *out_len);
	return b;
}

Test(image, an_image_with_a_mapping_the_device_would_refuse_is_refused_whole)
{
	struct viommu_config c;
	uint8_t rec[40] = { 0 }, *b;
	void *img;
	size_t len, blen;
	char why[200];

	/* A device with attachments but no extents, so an ATTACH record can go last. */
	viommu_config_default(&c);
	dev = viommu_device_new(&c);
	cr_assert_eq(viommu_device_add_endpoint(dev, 8, true, NULL, 0), 0);
	cr_assert_eq(test_attach(dev, 1, 8, 0), VIOMMU_S_OK);
	cr_assert_eq(test_map(dev, 1, 0x1000, 0x1fff, 0x5000, 1), VIOMMU_S_OK);
	cr_assert_eq(viommu_device_save(dev, &img, &len), 0);
	/* A MAP overlapping the saved one: the device's own check refuses it. */
	viommu_put_le16(rec, 5);
	viommu_put_le32(rec + 4, 32);
	viommu_put_le32(rec + 8, 1);
	viommu_put_le32(rec + 12, 1);
	viommu_put_le64(rec + 16, 0x1000);
	viommu_put_le64(rec + 24, 0x2fff);
	viommu_put_le64(rec + 32, 0x9000);
	b = with_record_before_end(img, len, rec, 40, &blen);
	cr_assert_null(viommu_device_restore(b, blen, why, sizeof(why)));
	cr_assert(strstr(why, "map record") && strstr(why, "refused"), "%s", why);
	free(b);
	free(img);
}

Test(image, another_version_is_eproto_and_a_damaged_image_is_einval)
{
	uint8_t *b;
	void *img;
	size_t len;
	char why[200];

	dev = populated();
	cr_assert_eq(viommu_device_save(dev, &img, &len), 0);
	b = img;
	viommu_put_le32(b + 8, VIOMMU_IMAGE_VERSION + 1);
	cr_assert_null(viommu_device_restore(b, len, why, sizeof(why)));
	cr_assert_eq(errno, EPROTO);
	viommu_put_le32(b + 8, VIOMMU_IMAGE_VERSION);
	b[len / 2] ^= 1; /* checksum no longer matches */
	cr_assert_null(viommu_device_restore(b, len, why, sizeof(why)));
	cr_assert_eq(errno, EINVAL);
	cr_assert(strstr(why, "checksum"), "%s", why);
	free(img);
}
