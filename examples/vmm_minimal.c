// SPDX-License-Identifier: MIT
/*
 * A minimal VMM side, built against an installed viommu the way a user builds it:
 *
 *   cc vmm_minimal.c $(pkg-config --cflags --libs viommu) -o vmm_minimal
 *
 * A virtio-iommu device with its fast path; a guest (the library's model of Linux's driver)
 * sending ATTACH and MAP through real split virtqueues in a memfd; a reader in a second process
 * translating a DMA from the read-only view it gets over a socket; then an UNMAP through the
 * rings, after which the same DMA faults. Root is needed for the fast path's BPF maps.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <viommu/device.h>
#include <viommu/fastpath.h>
#include <viommu/reader.h>
#include <viommu/replay_vq.h>

#define EP 0x18
#define IOVA 0x10000ull
#define PA 0x200000ull

/* One request through the rings: queue it, kick, read the status back. */
static int ring_request(struct viommu_vq_driver *drv, const uint8_t *rd, size_t len)
{
	const uint8_t *wr;
	int tok = viommu_vq_driver_add(drv, rd, len, 4);

	if (tok < 0 || viommu_vq_driver_flush(drv) || viommu_vq_driver_result(drv, tok, &wr) != 4)
		return -1;
	return wr[0];
}

static int reader_process(int sock)
{
	struct viommu_reader *r = viommu_reader_open_socket(sock);
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ, .iova = IOVA + 0x10, .size = 64 };
	struct viommu_answer a;

	if (!r) {
		fprintf(stderr, "reader: %s\n", strerror(errno));
		return 1;
	}
	viommu_reader_enter(r);
	if (viommu_reader_translate(r, &q, &a) != VIOMMU_XLATE_HIT || a.pa != PA + 0x10)
		return 2;
	printf("reader (another process): iova 0x%llx -> pa 0x%llx, extent 0x%llx-0x%llx\n",
	       (unsigned long long)q.iova, (unsigned long long)a.pa, (unsigned long long)a.ext_start,
	       (unsigned long long)a.ext_end);
	fflush(stdout);
	viommu_reader_exit(r);
	viommu_reader_close(r);
	return 0;
}

int main(void)
{
	struct viommu_config cfg;
	struct viommu_device *dev;
	struct viommu_fastpath *fp;
	struct viommu_vq_driver *drv;
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ, .iova = IOVA + 0x10, .size = 64 };
	struct viommu_answer a;
	uint8_t rq[64];
	int sv[2], status;
	pid_t pid;

	viommu_config_default(&cfg);
	cfg.bypass = 0;
	if (!(dev = viommu_device_new(&cfg)) || viommu_device_add_endpoint(dev, EP, true, NULL, 0))
		return 1;
	if (!(fp = viommu_fastpath_new(dev, NULL))) {
		fprintf(stderr, "vmm: the fast path needs BPF (root): %s\n", strerror(errno));
		return 1;
	}
	drv = viommu_vq_driver_new(dev, viommu_device_features(dev),
				   VIOMMU_VQ_DRIVER_INDIRECT | VIOMMU_VQ_DRIVER_EVENT_IDX);
	if (!drv)
		return 1;
	if (ring_request(drv, rq, viommu_req_attach(rq, 1, EP, 0)) != VIOMMU_S_OK ||
	    ring_request(drv, rq, viommu_req_map(rq, 1, IOVA, IOVA + 0xffff, PA,
						 VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)) != VIOMMU_S_OK)
		return 3;
	printf("vmm: ATTACH and MAP through the virtqueues: OK\n");
	fflush(stdout);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		return 1;
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		_exit(reader_process(sv[1]));
	}
	close(sv[1]);
	if (viommu_fastpath_add_reader(fp, sv[0]) < 0)
		return 4;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		return 5;

	if (ring_request(drv, rq, viommu_req_unmap(rq, 1, IOVA, IOVA + 0xffff)) != VIOMMU_S_OK)
		return 6;
	{
		struct viommu_reader *r = viommu_reader_open(fp);

		if (!r || viommu_reader_translate(r, &q, &a) != VIOMMU_XLATE_FAULT)
			return 7;
		viommu_reader_close(r);
	}
	printf("vmm: after UNMAP the same DMA faults (reason %u at 0x%llx)\n", a.reason,
	       (unsigned long long)a.fault_addr);
	viommu_vq_driver_free(drv);
	viommu_fastpath_free(fp);
	viommu_device_free(dev);
	printf("example: OK\n");
	return 0;
}
