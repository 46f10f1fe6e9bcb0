// SPDX-License-Identifier: MIT
/* The viommu command-line tool. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replay.h"
#include "stat.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: viommu replay [--path=store|user|bpf|all] [--dma-probes] [--stat] [--quiet]\n"
		"                     [--dump-requests=DIR] FILE...\n"
		"       viommu stat PIN_DIR\n"
		"\n"
		"  replay   run trace files (tests/traces/FORMAT.md) through the device core and check\n"
		"           every expectation; the last line is\n"
		"           'replay: F files, R requests, P probes, M mismatches'; exit 0 only if M is 0.\n"
		"           --path        who answers translate lines (default store; all = every path,\n"
		"                         each checked against the expectation)\n"
		"           --dma-probes  after every accepted MAP/UNMAP, probe its first and last byte\n"
		"                         through an endpoint the device has in that domain (address\n"
		"                         from the line; identity if the endpoint has no ACCESS_PLATFORM)\n"
		"           --stat        print each path's counters after each file\n"
		"           --quiet       print only mismatches and the totals\n"
		"           --dump-requests=DIR  also write the requests as request-fuzzer seeds\n"
		"  stat     occupancy and counters of a running device's fast path, from the maps it\n"
		"           pinned under PIN_DIR (viommu_fastpath_pin)\n");
}

static int parse_paths(const char *s, unsigned *out)
{
	if (!strcmp(s, "store"))
		*out = VIOMMU_PATH_STORE;
	else if (!strcmp(s, "user"))
		*out = VIOMMU_PATH_USER;
	else if (!strcmp(s, "bpf"))
		*out = VIOMMU_PATH_BPF;
	else if (!strcmp(s, "all"))
		*out = VIOMMU_PATH_ALL;
	else
		return -EINVAL;
	return 0;
}

static int cmd_replay(int argc, char **argv)
{
	struct viommu_replay_opts o = { .paths = VIOMMU_PATH_STORE, .out = stdout };
	struct viommu_replay_totals t = { 0 };
	int i, nfiles = 0;

	for (i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--path=", 7)) {
			if (parse_paths(argv[i] + 7, &o.paths)) {
				fprintf(stderr, "viommu replay: --path is store, user, bpf or all\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--dma-probes")) {
			o.dma_probes = true;
		} else if (!strcmp(argv[i], "--stat")) {
			o.stat = true;
		} else if (!strcmp(argv[i], "--quiet")) {
			o.quiet = true;
		} else if (!strncmp(argv[i], "--dump-requests=", 16) && argv[i][16]) {
			o.dump_dir = argv[i] + 16;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "viommu replay: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		} else {
			nfiles++;
		}
	}
	if (!nfiles) {
		usage(stderr);
		return 2;
	}
	if (o.dump_dir) {
		int err = viommu_replay_dump_dir_check(o.dump_dir);

		if (err) {
			fprintf(stderr, "viommu replay: --dump-requests=%s: cannot write seeds there: %s\n",
				o.dump_dir, strerror(-err));
			return 1;
		}
	}
	for (i = 1; i < argc; i++)
		if (argv[i][0] != '-' || !argv[i][1])
			viommu_replay_file(argv[i], &o, &t);
	printf("replay: %llu files, %llu requests, %llu probes, %llu mismatches\n",
	       (unsigned long long)t.files, (unsigned long long)t.requests,
	       (unsigned long long)t.probes, (unsigned long long)t.mismatches);
	return t.mismatches ? 1 : 0;
}

static int cmd_stat(int argc, char **argv)
{
	int err;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	err = viommu_stat_pinned(argv[1], stdout);
	if (err) {
		fprintf(stderr, "viommu stat: %s: %s\n", argv[1],
			err == -EPROTO ? "not a viommu fast path of this version (a pinned map has the "
					 "wrong type, size or count)" : strerror(-err));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "replay"))
		return cmd_replay(argc - 1, argv + 1);
	if (!strcmp(argv[1], "stat"))
		return cmd_stat(argc - 1, argv + 1);
	fprintf(stderr, "viommu: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
