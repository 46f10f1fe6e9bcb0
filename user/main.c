// SPDX-License-Identifier: MIT
/* The viommu command-line tool. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "replay.h"
#include "stat.h"
#include "version.h" /* VIOMMU_VERSION, written by the Makefile */

/* Exit statuses. */
enum {
	EXIT_MISMATCH = 1, /* replay: a mismatch; stat: the pins cannot be read */
	EXIT_USAGE = 2,
	EXIT_IO = 3, /* replay: no mismatch, but a file could not be read */
};

static const char usage_main[] =
	"usage: viommu [-v|--verbose] COMMAND [OPTION]... [ARG]...\n"
	"       viommu --help | --version\n"
	"\n"
	"commands:\n"
	"  replay   run trace files through the device core and check every expectation\n"
	"  stat     occupancy and counters of a running device's fast path, from its pins\n"
	"  help     this text, or `viommu help COMMAND` (the same as `viommu COMMAND --help`)\n"
	"\n"
	"  -v, --verbose  pass libbpf's debug messages through too (its warnings, with the\n"
	"                 verifier's log of a program the kernel refuses, are always printed);\n"
	"                 also accepted after the command\n"
	"  -h, --help     this text\n"
	"  --version      the version\n";

static const char usage_replay[] =
	"usage: viommu replay [--path=store|user|bpf|all] [--via=direct|virtqueue|virtqueue-plain]\n"
	"                     [--dma-probes] [--stat] [--quiet] [--dump-requests=DIR]\n"
	"                     [--restore-every=N] [-v|--verbose] FILE...\n"
	"\n"
	"Runs trace files (tests/traces/FORMAT.md) through the device core and checks every\n"
	"expectation; the last line is 'replay: F files, R requests, P probes, M mismatches'\n"
	"(then ', U unreadable' if a file could not be read).\n"
	"\n"
	"  --path=PATH           who answers translate lines (default store; all = every path,\n"
	"                        each checked against the expectation)\n"
	"  --via=HOW             how requests reach the device: direct (default: each request\n"
	"                        handed to the core), virtqueue (a guest driver lays them out in\n"
	"                        split rings in shared memory as Linux does, INDIRECT_DESC and\n"
	"                        EVENT_IDX negotiated; faults come back on the event queue),\n"
	"                        virtqueue-plain (the same without either feature)\n"
	"  --dma-probes          after every accepted MAP/UNMAP, probe its first and last byte\n"
	"                        through an endpoint the device has in that domain (address from\n"
	"                        the line; identity if the endpoint has no ACCESS_PLATFORM)\n"
	"  --stat                print each path's counters after each file\n"
	"  --quiet               print only mismatches, errors and the totals\n"
	"  --dump-requests=DIR   also write the requests as request-fuzzer seeds\n"
	"  --restore-every=N     after every N requests (between batches), save the device, free\n"
	"                        it and restore it from the image, as a live migration would;\n"
	"                        the answers must not change. Via virtqueue the transport goes\n"
	"                        through the image too, with the N-th request still in the ring\n"
	"  -v, --verbose         pass libbpf's debug messages through (the user and bpf paths)\n"
	"  -h, --help            this text\n"
	"\n"
	"Exit status: 0 if every file was read and M is 0; 1 if M is not 0; 2 usage; 3 a file\n"
	"could not be read (and no mismatch).\n";

static const char usage_stat[] =
	"usage: viommu stat [-v|--verbose] PIN_DIR\n"
	"\n"
	"Prints the occupancy and counters of a running device's fast path from the maps it pinned\n"
	"under PIN_DIR (viommu_fastpath_pin), read with read-only fds after checking each map's\n"
	"type and geometry.\n"
	"\n"
	"  -v, --verbose  pass libbpf's debug messages through\n"
	"  -h, --help     this text\n"
	"\n"
	"Exit status: 0, 1 if PIN_DIR is not a viommu fast path of this version or cannot be read,\n"
	"2 usage.\n";

static bool verbose;

/* libbpf's messages: as its default print (warnings and info: a program the verifier refuses is
 * printed with its log), plus its debug messages with --verbose. */
static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static bool is_help(const char *a)
{
	return !strcmp(a, "-h") || !strcmp(a, "--help");
}

static bool is_verbose(const char *a)
{
	return !strcmp(a, "-v") || !strcmp(a, "--verbose");
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

static bool is_file_arg(const char *a)
{
	return a[0] != '-' || !a[1];
}

static int cmd_replay(int argc, char **argv)
{
	struct viommu_replay_opts o = { .paths = VIOMMU_PATH_STORE, .out = stdout };
	struct viommu_replay_totals t = { 0 };
	int i, nfiles = 0;

	for (i = 1; i < argc; i++) {
		if (is_help(argv[i])) {
			fputs(usage_replay, stdout);
			return 0;
		} else if (is_verbose(argv[i])) {
			verbose = true;
		} else if (!strncmp(argv[i], "--path=", 7)) {
			if (parse_paths(argv[i] + 7, &o.paths)) {
				fprintf(stderr, "viommu replay: --path is store, user, bpf or all\n");
				return EXIT_USAGE;
			}
		} else if (!strncmp(argv[i], "--via=", 6)) {
			if (!strcmp(argv[i] + 6, "direct")) {
				o.via = VIOMMU_VIA_DIRECT;
			} else if (!strcmp(argv[i] + 6, "virtqueue")) {
				o.via = VIOMMU_VIA_VIRTQUEUE;
			} else if (!strcmp(argv[i] + 6, "virtqueue-plain")) {
				o.via = VIOMMU_VIA_VIRTQUEUE_PLAIN;
			} else {
				fprintf(stderr, "viommu replay: --via is direct, virtqueue or virtqueue-plain\n");
				return EXIT_USAGE;
			}
		} else if (!strcmp(argv[i], "--dma-probes")) {
			o.dma_probes = true;
		} else if (!strcmp(argv[i], "--stat")) {
			o.stat = true;
		} else if (!strcmp(argv[i], "--quiet")) {
			o.quiet = true;
		} else if (!strncmp(argv[i], "--dump-requests=", 16) && argv[i][16]) {
			o.dump_dir = argv[i] + 16;
		} else if (!strncmp(argv[i], "--restore-every=", 16)) {
			char *end;

			o.restore_every = strtoull(argv[i] + 16, &end, 0);
			if (!argv[i][16] || *end || !o.restore_every) {
				fprintf(stderr, "viommu replay: --restore-every takes a number of requests > 0\n");
				return EXIT_USAGE;
			}
		} else if (!is_file_arg(argv[i])) {
			fprintf(stderr, "viommu replay: unknown option %s\n", argv[i]);
			fputs(usage_replay, stderr);
			return EXIT_USAGE;
		} else {
			nfiles++;
		}
	}
	if (!nfiles) {
		fputs(usage_replay, stderr);
		return EXIT_USAGE;
	}
	if (o.dump_dir) {
		int err = viommu_replay_dump_dir_check(o.dump_dir);

		if (err) {
			fprintf(stderr, "viommu replay: --dump-requests=%s: cannot write seeds there: %s\n",
				o.dump_dir, strerror(-err));
			return EXIT_MISMATCH;
		}
	}
	for (i = 1; i < argc; i++)
		if (is_file_arg(argv[i]))
			viommu_replay_file(argv[i], &o, &t);
	printf("replay: %llu files, %llu requests, %llu probes, %llu mismatches",
	       (unsigned long long)t.files, (unsigned long long)t.requests,
	       (unsigned long long)t.probes, (unsigned long long)t.mismatches);
	if (t.unreadable)
		printf(", %llu unreadable", (unsigned long long)t.unreadable);
	putchar('\n');
	return t.mismatches ? EXIT_MISMATCH : t.unreadable ? EXIT_IO : 0;
}

static int cmd_stat(int argc, char **argv)
{
	const char *dir = NULL;
	int err;

	for (int i = 1; i < argc; i++) {
		if (is_help(argv[i])) {
			fputs(usage_stat, stdout);
			return 0;
		} else if (is_verbose(argv[i])) {
			verbose = true;
		} else if (!is_file_arg(argv[i]) || dir) {
			fputs(usage_stat, stderr);
			return EXIT_USAGE;
		} else {
			dir = argv[i];
		}
	}
	if (!dir) {
		fputs(usage_stat, stderr);
		return EXIT_USAGE;
	}
	err = viommu_stat_pinned(dir, stdout);
	if (err) {
		fprintf(stderr, "viommu stat: %s: %s\n", dir,
			err == -EPROTO ? "not a viommu fast path of this version (a pinned map has the "
					 "wrong type, size or count)" : strerror(-err));
		return EXIT_MISMATCH;
	}
	return 0;
}

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
} commands[] = {
	{ "replay", cmd_replay, usage_replay },
	{ "stat", cmd_stat, usage_stat },
};

static const struct command *command_named(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	const struct command *c;
	int i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (is_help(argv[i])) {
			fputs(usage_main, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--version")) {
			printf("viommu %s\n", VIOMMU_VERSION);
			return 0;
		} else if (is_verbose(argv[i])) {
			verbose = true;
		} else {
			fprintf(stderr, "viommu: unknown option %s\n", argv[i]);
			fputs(usage_main, stderr);
			return EXIT_USAGE;
		}
	}
	if (i == argc) {
		fputs(usage_main, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[i], "help")) {
		if (i + 1 == argc) {
			fputs(usage_main, stdout);
			return 0;
		}
		if ((c = command_named(argv[i + 1]))) {
			fputs(c->usage, stdout);
			return 0;
		}
		fprintf(stderr, "viommu: no command '%s'\n", argv[i + 1]);
		return EXIT_USAGE;
	}
	if (!(c = command_named(argv[i]))) {
		fprintf(stderr, "viommu: unknown command '%s'\n", argv[i]);
		fputs(usage_main, stderr);
		return EXIT_USAGE;
	}
	libbpf_set_print(print_libbpf);
	return c->run(argc - i, argv + i);
}
