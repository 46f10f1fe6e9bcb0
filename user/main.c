// SPDX-License-Identifier: MIT
/* The viommu command-line tool. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <net/if.h>

#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include "replay.h"
#include "stat.h"
#include "xdp.h"
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
	"  xdp      attach the fast path's XDP program to an interface (libxdp), or detach it\n"
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

static const char usage_xdp[] =
	"usage: viommu xdp attach [--mode=native|skb] [-v|--verbose] IFACE PIN_DIR\n"
	"       viommu xdp detach [-v|--verbose] IFACE\n"
	"\n"
	"attach: loads the fast path's XDP program (viommu_xdp) over the maps a running device\n"
	"pinned under PIN_DIR (viommu_fastpath_pin) and attaches it to IFACE through libxdp, so it\n"
	"shares the interface with other XDP programs (libxdp's dispatcher). Frames of ethertype\n"
	"0x88b5 carrying a struct viommu_query, with room for a struct viommu_answer after it, are\n"
	"answered back to their sender (XDP_TX) or dropped on a fault (reported to the device);\n"
	"other frames go on. The program stays attached after this command exits.\n"
	"Where the kernel cannot run libxdp's dispatcher (no BPF_PROG_TYPE_EXT, or no bpffs at\n"
	"/sys/fs/bpf or $LIBXDP_BPFFS) libxdp attaches the program alone: it is then the\n"
	"interface's only XDP program, and attaching over another one fails. The output says which.\n"
	"detach: removes every viommu XDP program from IFACE, leaving other programs in place.\n"
	"\n"
	"  --mode=MODE    native (in the driver; default) or skb (generic XDP)\n"
	"  -v, --verbose  pass libbpf's and libxdp's debug messages through\n"
	"  -h, --help     this text\n"
	"\n"
	"Exit status: 0, 1 if it could not be done (the reason printed), 2 usage.\n";

static bool verbose;

/* libbpf's messages: as its default print (warnings and info: a program the verifier refuses is
 * printed with its log), plus its debug messages with --verbose. */
static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* libbpf's and libxdp's messages while attaching: kept, and shown only if the attach fails or
 * with --verbose (libxdp's probe of its dispatcher makes libbpf warn on a kernel that refuses
 * it, and the attach then goes on without it: said in one line instead). */
static char held[16384];
static size_t held_len;
static bool holding;

static int print_held(const char *fmt, va_list ap)
{
	int n;

	if (!holding)
		return vfprintf(stderr, fmt, ap);
	n = vsnprintf(held + held_len, sizeof(held) - held_len, fmt, ap);
	if (n > 0)
		held_len = held_len + (size_t)n < sizeof(held) ? held_len + (size_t)n : sizeof(held) - 1;
	return n;
}

static int print_libbpf_held(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (verbose)
		return vfprintf(stderr, fmt, ap);
	return level == LIBBPF_DEBUG ? 0 : print_held(fmt, ap);
}

static int print_libxdp(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	if (verbose)
		return vfprintf(stderr, fmt, ap);
	return level == LIBXDP_DEBUG ? 0 : print_held(fmt, ap);
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

static int cmd_xdp(int argc, char **argv)
{
	struct viommu_xdp_opts o = { .mode = VIOMMU_XDP_NATIVE };
	const char *args[3] = { NULL, NULL, NULL };
	int nargs = 0, ifindex, n;

	for (int i = 1; i < argc; i++) {
		if (is_help(argv[i])) {
			fputs(usage_xdp, stdout);
			return 0;
		} else if (is_verbose(argv[i])) {
			verbose = true;
		} else if (!strcmp(argv[i], "--mode=native")) {
			o.mode = VIOMMU_XDP_NATIVE;
		} else if (!strcmp(argv[i], "--mode=skb")) {
			o.mode = VIOMMU_XDP_SKB;
		} else if (!is_file_arg(argv[i]) || nargs == 3) {
			fputs(usage_xdp, stderr);
			return EXIT_USAGE;
		} else {
			args[nargs++] = argv[i];
		}
	}
	if (!nargs || ((strcmp(args[0], "attach") || nargs != 3) && (strcmp(args[0], "detach") || nargs != 2))) {
		fputs(usage_xdp, stderr);
		return EXIT_USAGE;
	}
	if (!(ifindex = (int)if_nametoindex(args[1]))) {
		fprintf(stderr, "viommu xdp: %s: no such interface\n", args[1]);
		return EXIT_MISMATCH;
	}
	libbpf_set_print(print_libbpf_held);
	libxdp_set_print(print_libxdp);
	if (!strcmp(args[0], "detach")) {
		n = viommu_xdp_detach_ifindex(ifindex);
		if (n < 0) {
			fprintf(stderr, "viommu xdp: %s: %s\n", args[1],
				n == -ENOENT ? "no viommu XDP program attached" : strerror(-n));
			return EXIT_MISMATCH;
		}
		printf("viommu xdp: detached %d program%s from %s\n", n, n == 1 ? "" : "s", args[1]);
		return 0;
	}
	{
		const char *why = viommu_xdp_legacy_reason();
		struct viommu_xdp *x;
		char names[256];
		int err;

		holding = true;
		x = viommu_xdp_attach_pinned(args[2], ifindex, &o);
		err = errno;
		holding = false;
		if (!x) {
			fputs(held, stderr);
			fprintf(stderr, "viommu xdp: attach to %s: %s\n", args[1],
				err == EPROTO ? "not a viommu fast path of this version" :
				err == ENOENT ? "PIN_DIR does not hold a fast path's pins" :
				err == EBUSY ? "another XDP program is attached and libxdp cannot add ours to it "
					       "(no dispatcher: see viommu xdp --help)" : strerror(err));
			if (err == EBUSY && why)
				fprintf(stderr, "viommu xdp: libxdp cannot use its dispatcher here: %s\n", why);
			return EXIT_MISMATCH;
		}
		printf("viommu xdp: attached viommu_xdp (id %u) to %s, %s mode, ", viommu_xdp_prog_id(x),
		       args[1], o.mode == VIOMMU_XDP_SKB ? "skb" : "native");
		if (viommu_xdp_multiprog(x))
			printf("in libxdp's dispatcher\n");
		else
			printf("alone (libxdp's legacy mode: %s)\n",
			       why ? why : "libxdp could not load its dispatcher");
		viommu_xdp_release(x);
		if (viommu_xdp_programs(ifindex, names, sizeof(names)) > 0)
			printf("viommu xdp: %s runs: %s\n", args[1], names);
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
	{ "xdp", cmd_xdp, usage_xdp },
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
