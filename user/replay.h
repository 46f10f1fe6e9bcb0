/* SPDX-License-Identifier: MIT */
/*
 * viommu_replay: runs trace files (tests/traces/FORMAT.md) through a device core and checks every
 * expectation. Used by `viommu replay` and by the tests.
 */
#ifndef VIOMMU_REPLAY_H
#define VIOMMU_REPLAY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "device.h"

/* Who answers `translate` lines. */
enum viommu_replay_path {
	VIOMMU_PATH_STORE = 1u << 0, /* the device core's authoritative state */
	VIOMMU_PATH_USER = 1u << 1, /* the fast path, read by the userspace inline reader */
	VIOMMU_PATH_BPF = 1u << 2, /* the fast path, read by the BPF syscall program */
};
#define VIOMMU_PATH_ALL (VIOMMU_PATH_STORE | VIOMMU_PATH_USER | VIOMMU_PATH_BPF)

/*
 * A reader answers a translate for one path. It reports its own faults to the device (the store
 * and userspace readers directly, BPF through its ring buffer), so the replayer can check the
 * report each path produced.
 */
struct viommu_replay_reader {
	const char *name;
	void *ctx;
	/* The final answer (never MORE); RETRY only if a writer raced, which replay never has. */
	enum viommu_xlate_result (*translate)(void *ctx, const struct viommu_query *q,
					      struct viommu_answer *out);
	void (*print_stat)(void *ctx, FILE *out);
	void (*close)(void *ctx);
};

/* Opens the reader of one path on @dev (registering observers as needed); 0 or -errno. */
typedef int (*viommu_replay_open_fn)(struct viommu_device *dev, struct viommu_replay_reader *r);

/* How requests reach the device. */
enum viommu_replay_via {
	VIOMMU_VIA_DIRECT = 0, /* viommu_device_request(), one batch per `kick` line */
	VIOMMU_VIA_VIRTQUEUE, /* real split rings (replay_vq.h), INDIRECT_DESC and EVENT_IDX */
	VIOMMU_VIA_VIRTQUEUE_PLAIN, /* the same, neither negotiated: chained descriptors */
};

struct viommu_replay_opts {
	unsigned paths; /* VIOMMU_PATH_* */
	enum viommu_replay_via via;
	bool dma_probes; /* after each OK MAP/UNMAP line, probe it through an endpoint the device has
			  * attached to that domain (address from the line; identity for an endpoint
			  * without ACCESS_PLATFORM, as the device treats it) */
	bool stat; /* print each reader's stats after each file */
	bool quiet; /* only mismatches and the totals */
	const char *dump_dir; /* if set, also write the requests as fuzzer seeds (fuzz_input.h) */
	/* Live migration, every N requests (0 = never): between two batches the device is saved,
	 * freed and restored from the image (image.h), with its readers and fast path made anew;
	 * every later answer must be what it would have been. */
	uint64_t restore_every;
	FILE *out; /* summaries and stats */
	FILE *err; /* errors and mismatches (tokens echoed cut to 64 characters); NULL = stderr */
};

/* Totals over the files of one run (zero it before the first file). */
struct viommu_replay_totals {
	uint64_t files, requests, probes, mismatches;
	uint64_t unreadable; /* files that could not be opened or read: I/O errors, not mismatches */
	bool dump_failed; /* a seed could not be written: said once, counted once, no more seeds */
};

/* Replays @path; adds to @tot. Returns 0, or -errno when the file cannot be opened or read (a
 * directory is -EISDIR; said as "PATH: cannot read: ..." and counted in tot->unreadable, not as
 * a mismatch) or a line cannot be parsed or run (the error, with file and line, is printed and
 * counted as a mismatch). The file is streamed: each line runs before the next is read, so the
 * memory used does not depend on the file's length; lines before a bad one have run. */
int viommu_replay_file(const char *path, const struct viommu_replay_opts *opts,
		       struct viommu_replay_totals *tot);
/* The same for an open stream (a pipe, stdin); @name is used in messages and seed names. */
int viommu_replay_stream(FILE *fp, const char *name, const struct viommu_replay_opts *opts,
			 struct viommu_replay_totals *tot);

/* Checks, before a run, that @dir is a directory this process may write seeds into: 0, or -errno
 * (ENOTDIR, ENOENT, EACCES...). viommu_replay_file() still copes with a write that fails later. */
int viommu_replay_dump_dir_check(const char *dir);

/* The fast-path readers (replay_paths.c). */
int viommu_replay_open_user(struct viommu_device *dev, struct viommu_replay_reader *r);
int viommu_replay_open_bpf(struct viommu_device *dev, struct viommu_replay_reader *r);

#endif
