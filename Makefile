# viommu — see README.md. `make help` lists the targets.
BUILD    ?= build
V        ?= 0
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_RUNS ?= 30000
FUZZ_FASTPATH_SMOKE_RUNS ?= 5000

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-7s %s\n' $(1) $(2)
endif

WARN     := -Wall -Wextra -Werror
INCLUDES := -Iuser -Ibpf -I$(BUILD)
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(INCLUDES) $(CFLAGS) -MMD -MP
LDLIBS   := -lxdp -lbpf -lelf -lz -lpthread -lm
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# -Wno-tsan: the virtqueue code's two store->load fences (virtio's "mb" against the guest) are
# needed on real hardware; TSan does not model fences (gcc warns), and in the tests the guest
# side runs on the same thread anyway. Nothing else in the tree uses a fence.
TSAN_FLAGS := -O1 -g -fsanitize=thread -Wno-tsan

LIB_SRCS  := $(filter-out user/main.c,$(wildcard user/*.c))
BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_HDRS  := $(wildcard bpf/*.h)
TEST_SRCS := $(wildcard tests/test_*.c)
BENCH_SRCS := $(filter-out %.bpf.c,$(wildcard bench/*.c))
SKELS     := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))

LIB_OBJS      := $(patsubst user/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
LIB_OBJS_SAN  := $(patsubst user/%.c,$(BUILD)/asan/%.o,$(LIB_SRCS))
LIB_OBJS_TSAN := $(patsubst user/%.c,$(BUILD)/tsan/%.o,$(LIB_SRCS))
TEST_OBJS      := $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(TEST_SRCS))
TEST_OBJS_SAN  := $(patsubst tests/%.c,$(BUILD)/asan/tests/%.o,$(TEST_SRCS))
TEST_OBJS_TSAN := $(patsubst tests/%.c,$(BUILD)/tsan/tests/%.o,$(TEST_SRCS))
BENCH_OBJS    := $(patsubst bench/%.c,$(BUILD)/obj/bench/%.o,$(BENCH_SRCS))

TRACES      := $(wildcard tests/traces/*.trace)
CONFORMANCE := $(wildcard tests/conformance/*.trace)
# Replayer regressions: hand-written traces that must replay with --dma-probes and 0 mismatches.
REPLAY_TESTS := $(wildcard tests/replay/*.trace)
REPLAY_PATH ?= all

TARGETS := $(BUILD)/viommu $(BUILD)/viommu-tests $(BUILD)/viommu-bench

# The version, said in one place; `viommu --version` adds the commit (git describe) when built
# from a git tree.
VIOMMU_VERSION := 0.1.0
GIT_DESCRIBE := $(shell git describe --always --dirty 2>/dev/null)

# The BPF target arch (bpf_tracing.h's PT_REGS_* need it) from the host, as the kernel's
# Makefile names them. vmlinux/vmlinux.h is this host's too: `make vmlinux` on another arch.
BPF_ARCH ?= $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/i.86/x86/' -e 's/aarch64/arm64/' \
	-e 's/arm.*/arm/' -e 's/ppc64.*/powerpc/' -e 's/s390x/s390/' -e 's/riscv64/riscv/' \
	-e 's/loongarch64/loongarch/' -e 's/mips.*/mips/')

# A recipe that fails leaves no half-written target behind.
.DELETE_ON_ERROR:

.PHONY: all test run clean help deps vmlinux fuzz tsan stress bench check-traces \
	unit unit-asan fuzz-smoke bench-smoke vhost-net dpdk FORCE install uninstall examples xdp
.DEFAULT_GOAL := all
.SECONDARY:

all: $(TARGETS)

help:
	@echo 'viommu make targets'
	@echo '  make            build everything into $(BUILD)/ (the CLI is $(BUILD)/viommu)'
	@echo '  make run        the main job: replay the recorded Linux lazy-mode trace with DMA probes'
	@echo '  make test       unit and stress tests (plain and ASan+UBSan), traces and conformance'
	@echo '                  scripts on all paths, both fuzzers (bounded), bench smoke run;'
	@echo '                  installs missing Debian packages first'
	@echo '  make fuzz       run a fuzzer for FUZZ_SECONDS (default $(FUZZ_SECONDS));'
	@echo '                  FUZZ_TARGET=request (device core), fastpath (with the BPF fast path) or virtqueue (the ring walker)'
	@echo '  make tsan       unit + stress tests under ThreadSanitizer'
	@echo '  make stress     the long stress run'
	@echo '  make bench      the benchmark suite (results in bench/results/)'
	@echo '  make dpdk       the vhost-user frontend against dpdk-testpmd (DPDK_SEED, DPDK_FRAMES, DPDK_SIZES)'
	@echo '  make xdp        the XDP program on a veth pair through libxdp: answers checked, frames/s with and'
	@echo '                  without the lookup (XDP_ROUNDS, XDP_ROUND_MS, XDP_EXTENTS, XDP_JSON=FILE)'
	@echo '  make vhost-net  kernel vhost-net through the bridge, in a booted Debian 6.1 guest (QEMU TCG);'
	@echo '                  VHOST_NET_SEED, VHOST_NET_FRAMES, VHOST_NET_SIZES'
	@echo '  make vmlinux    regenerate vmlinux/vmlinux.h from the running kernel BTF'
	@echo '  make clean      remove $(BUILD)/'
	@echo '  make check-traces  the recorded traces and conformance scripts (REPLAY_PATH=$(REPLAY_PATH))'
	@echo '  make fuzz-smoke the bounded fuzzer runs of make test'
	@echo '  V=1             show the full commands'
	@echo '  BPF_ARCH=...    the BPF target arch (default from uname -m: $(BPF_ARCH))'
	@echo ''
	@echo 'The CLI ($(BUILD)/viommu --help; $(BUILD)/viommu CMD --help for a command):'
	@echo '  viommu [-v] replay [--path=store|user|bpf|all] [--via=direct|virtqueue|virtqueue-plain]'
	@echo '                     [--dma-probes] [--stat] [--quiet]'
	@echo '                     [--dump-requests=DIR] FILE...   run and check trace files'
	@echo '  viommu [-v] stat PIN_DIR      a running fast path'"'"'s counters, from its pins'
	@echo '  viommu [-v] xdp attach [--mode=native|skb] IFACE PIN_DIR   its XDP program on IFACE (libxdp)'
	@echo '  viommu [-v] xdp detach IFACE  remove it'
	@echo '  viommu --version              -v: libbpf'"'"'s debug messages too'

deps:
	$(Q)sh .ci/install-deps

# ---- BPF: *.bpf.c -> object -> skeleton ----
$(BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) vmlinux/vmlinux.h | deps
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -mcpu=v3 -Wall -Werror \
		-Ivmlinux -Ibpf -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name viommu_$(subst .,_,$*)_bpf > $@.tmp && mv $@.tmp $@

vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/vmlinux.h

# ---- user space ----
# Rewritten only when the version string changes, so main.o is rebuilt only then.
$(BUILD)/version.h: FORCE
	$(Q)mkdir -p $(@D)
	$(Q)printf '#define VIOMMU_VERSION "%s"\n' '$(VIOMMU_VERSION)$(if $(GIT_DESCRIBE), ($(GIT_DESCRIBE)))' \
		> $@.tmp && { cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@; }

$(BUILD)/obj/main.o: $(BUILD)/version.h

$(BUILD)/obj/%.o: user/%.c $(SKELS) | deps
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/tests/%.o: tests/%.c $(SKELS) | deps
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/bench/%.o: bench/%.c $(SKELS) | deps
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags glib-2.0 2>/dev/null) -c $< -o $@

$(BUILD)/asan/%.o: user/%.c $(SKELS) | deps
	$(call msg,CC-SAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/asan/tests/%.o: tests/%.c $(SKELS) | deps
	$(call msg,CC-SAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/tsan/%.o: user/%.c $(SKELS) | deps
	$(call msg,CC-TSAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TSAN_FLAGS) -c $< -o $@

$(BUILD)/tsan/tests/%.o: tests/%.c $(SKELS) | deps
	$(call msg,CC-TSAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TSAN_FLAGS) -c $< -o $@

$(BUILD)/libviommu.a: $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/viommu: $(BUILD)/obj/main.o $(BUILD)/libviommu.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/viommu-tests: $(TEST_OBJS) $(BUILD)/libviommu.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/asan/viommu-tests: $(TEST_OBJS_SAN) $(LIB_OBJS_SAN)
	$(call msg,LD,$@)
	$(Q)$(CC) $(SAN_FLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/tsan/viommu-tests: $(TEST_OBJS_TSAN) $(LIB_OBJS_TSAN)
	$(call msg,LD,$@)
	$(Q)$(CC) $(TSAN_FLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/viommu-bench: $(BENCH_OBJS) $(BUILD)/libviommu.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(shell pkg-config --libs glib-2.0 2>/dev/null) $(LDLIBS)

# The benchmark's own BPF programs (bench/*.bpf.c: the bpf_hash baseline, not part of the
# device): objects and skeletons in $(BUILD)/bench/, prerequisites of the bench's objects only.
BENCH_SKELS := $(patsubst bench/%.bpf.c,$(BUILD)/bench/%.skel.h,$(wildcard bench/*.bpf.c))
$(BUILD)/bench/%.bpf.o: bench/%.bpf.c $(BPF_HDRS) vmlinux/vmlinux.h | deps
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -mcpu=v3 -Wall -Werror \
		-Ivmlinux -Ibpf -c $< -o $@

$(BUILD)/bench/%.skel.h: $(BUILD)/bench/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name viommu_$(subst .,_,$*)_bpf > $@.tmp && mv $@.tmp $@

$(BENCH_OBJS): $(BENCH_SKELS)
$(BENCH_OBJS): INCLUDES += -I$(BUILD)/bench

# The tests' own BPF programs (tests/*.bpf.c: the XDP tests' second program and veth peer, not
# part of the device): objects and skeletons in $(BUILD)/tests/, prerequisites of the tests only.
TEST_SKELS := $(patsubst tests/%.bpf.c,$(BUILD)/tests/%.skel.h,$(wildcard tests/*.bpf.c))
$(BUILD)/tests/%.bpf.o: tests/%.bpf.c $(BPF_HDRS) vmlinux/vmlinux.h | deps
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -mcpu=v3 -Wall -Werror \
		-Ivmlinux -Ibpf -c $< -o $@

$(BUILD)/tests/%.skel.h: $(BUILD)/tests/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name viommu_$(subst .,_,$*)_bpf > $@.tmp && mv $@.tmp $@

$(TEST_OBJS) $(TEST_OBJS_SAN) $(TEST_OBJS_TSAN) $(BUILD)/obj/tests/xdp_veth.o: $(TEST_SKELS)
$(TEST_OBJS) $(TEST_OBJS_SAN) $(TEST_OBJS_TSAN) $(BUILD)/obj/tests/xdp_veth.o: INCLUDES += -I$(BUILD)/tests

# The XDP figure and check on a real veth pair (tests/xdp_veth.c, make xdp).
$(BUILD)/viommu-xdp: $(BUILD)/obj/tests/xdp_veth.o $(BUILD)/libviommu.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# ---- the library as a user links it: static, shared (soname, only viommu_* exported),
# headers, pkg-config, the CLI ----
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
SO_MAJOR   := 0
SO_NAME    := libviommu.so.$(SO_MAJOR)
SO_FILE    := libviommu.so.$(VIOMMU_VERSION)
# Every header a user includes: the control plane's (not the writer's internals or the fuzzers'),
# the ABI and the spec constants, and the header a BPF program includes to translate.
PUBLIC_HDRS := $(filter-out user/fastpath_int.h user/fuzz_input.h,$(wildcard user/*.h)) \
	bpf/viommu_abi.h bpf/viommu_spec.h bpf/viommu_lookup.h bpf/viommu_maps.bpf.h
LIB_OBJS_PIC := $(patsubst user/%.c,$(BUILD)/pic/%.o,$(LIB_SRCS))

$(BUILD)/pic/%.o: user/%.c $(SKELS) | deps
	$(call msg,CC-PIC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -fPIC -c $< -o $@

$(BUILD)/$(SO_FILE): $(LIB_OBJS_PIC) user/libviommu.map
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,$(SO_NAME) -Wl,--version-script=user/libviommu.map \
		-o $@ $(LIB_OBJS_PIC) $(LDLIBS)

$(BUILD)/viommu.pc: user/viommu.pc.in FORCE
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VIOMMU_VERSION)|' $< > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

install: $(BUILD)/viommu $(BUILD)/libviommu.a $(BUILD)/$(SO_FILE) $(BUILD)/viommu.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/viommu $(DESTDIR)$(BINDIR)
	install -m 0644 $(BUILD)/libviommu.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(BUILD)/$(SO_FILE) $(DESTDIR)$(LIBDIR)/
	ln -sf $(SO_FILE) $(DESTDIR)$(LIBDIR)/$(SO_NAME)
	ln -sf $(SO_NAME) $(DESTDIR)$(LIBDIR)/libviommu.so
	install -m 0644 $(PUBLIC_HDRS) $(DESTDIR)$(INCLUDEDIR)/viommu/
	install -m 0644 $(BUILD)/viommu.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 0755 $(BUILD)/viommu $(DESTDIR)$(BINDIR)/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libviommu.a $(DESTDIR)$(LIBDIR)/$(SO_FILE) \
		$(DESTDIR)$(LIBDIR)/$(SO_NAME) $(DESTDIR)$(LIBDIR)/libviommu.so \
		$(DESTDIR)$(LIBDIR)/pkgconfig/viommu.pc $(DESTDIR)$(BINDIR)/viommu
	rm -rf $(DESTDIR)$(INCLUDEDIR)/viommu

# examples/, built against an installed copy through pkg-config as a user would, and run.
EXAMPLE_PREFIX := $(CURDIR)/$(BUILD)/example-prefix
examples: FORCE
	@echo '== examples/ against an installed copy (pkg-config --cflags --libs viommu)'
	$(Q)rm -rf $(EXAMPLE_PREFIX)
	$(Q)$(MAKE) --no-print-directory install PREFIX=$(EXAMPLE_PREFIX) >$(BUILD)/example-install.log
	$(Q)for f in examples/*.c; do \
		$(CC) -std=gnu11 -Wall -Wextra -Werror $$f \
			$$(PKG_CONFIG_PATH=$(EXAMPLE_PREFIX)/lib/pkgconfig pkg-config --cflags --libs viommu) \
			-o $(BUILD)/example-$$(basename $$f .c) || exit 1; \
		LD_LIBRARY_PATH=$(EXAMPLE_PREFIX)/lib $(BUILD)/example-$$(basename $$f .c) || exit 1; \
	done
	$(Q)nm -D --defined-only $(EXAMPLE_PREFIX)/lib/libviommu.so | awk '$$3 !~ /^viommu_/ && $$2 ~ /[TDBR]/ { print; bad = 1 } END { exit bad }' \
		|| { echo 'libviommu.so exports names outside viommu_*'; exit 1; }
	$(Q)$(MAKE) --no-print-directory uninstall PREFIX=$(EXAMPLE_PREFIX) >/dev/null
	$(Q)test -z "$$(find $(EXAMPLE_PREFIX) -type f)" || { echo 'make uninstall left files behind'; exit 1; }

# The fuzzer: clang + libFuzzer over the request path, with ASan and UBSan.
# The device core alone (no BPF): device.c and the sources of the user/ headers it includes,
# directly or not.
FUZZ_LIB = $(sort user/device.c $(wildcard $(patsubst %.h,%.c,$(filter user/%.h, \
	$(shell $(CC) -MM -Iuser -Ibpf user/device.c 2>/dev/null)))))
FUZZ_HDRS := $(wildcard user/*.h tests/fuzz/*.h)
$(BUILD)/fuzz-request: tests/fuzz/fuzz_request.c $(FUZZ_LIB) $(FUZZ_HDRS) $(BPF_HDRS) | deps
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -std=gnu11 $(WARN) -Iuser -Ibpf -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_request.c $(FUZZ_LIB)

# The same over the device core with the fast path (real BPF maps and program) attached.
$(BUILD)/fuzz-fastpath: tests/fuzz/fuzz_fastpath.c $(LIB_SRCS) $(FUZZ_HDRS) $(BPF_HDRS) $(SKELS) | deps
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -std=gnu11 $(WARN) $(INCLUDES) -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_fastpath.c $(LIB_SRCS) $(LDLIBS)

# The split-ring walker and the virtio transport (user/virtqueue.c) over the device core:
# hostile rings, descriptors and indirect tables, kicks, resets, memory map changes.
$(BUILD)/fuzz-virtqueue: tests/fuzz/fuzz_virtqueue.c user/virtqueue.c user/image.c $(FUZZ_LIB) $(FUZZ_HDRS) $(BPF_HDRS) | deps
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -std=gnu11 $(WARN) -Iuser -Ibpf -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_virtqueue.c user/virtqueue.c user/image.c $(FUZZ_LIB)

# The save/restore image (user/image.c) as untrusted input, over the device core, and its
# TRANSPORT record over the virtio transport (user/virtqueue.c).
$(BUILD)/fuzz-image: tests/fuzz/fuzz_image.c user/image.c user/virtqueue.c $(FUZZ_LIB) $(FUZZ_HDRS) $(BPF_HDRS) | deps
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -std=gnu11 $(WARN) -Iuser -Ibpf -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_image.c user/image.c user/virtqueue.c $(FUZZ_LIB)

# The vhost-user backend-channel parser (user/vhost_user.c), alone: any byte stream.
$(BUILD)/fuzz-vhost-user: tests/fuzz/fuzz_vhost_user.c user/vhost_user_msg.c user/vhost_user.h user/iotlb.h | deps
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -std=gnu11 $(WARN) $(INCLUDES) -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_vhost_user.c user/vhost_user_msg.c

# Seeds: the recorded traces' requests in the fuzzer's input format (user/fuzz_input.h),
# written by the replayer itself.
$(BUILD)/fuzz-corpus/.seeded: $(BUILD)/viommu $(TRACES)
	$(call msg,SEEDS,$(@D))
	$(Q)rm -rf $(@D) && mkdir -p $(@D)
	$(Q)$(BUILD)/viommu replay --quiet --dump-requests=$(@D) $(TRACES) >/dev/null
	$(Q)touch $@

FUZZ_TARGET ?= request
ifeq ($(FUZZ_TARGET),virtqueue)
fuzz: $(BUILD)/fuzz-virtqueue
	mkdir -p $(BUILD)/fuzz-virtqueue-corpus tests/fuzz/virtqueue-regressions
	$(BUILD)/fuzz-virtqueue -max_total_time=$(FUZZ_SECONDS) -max_len=2048 -len_control=0 -print_final_stats=1 \
		-artifact_prefix=tests/fuzz/virtqueue-regressions/crash- $(BUILD)/fuzz-virtqueue-corpus \
		tests/fuzz/virtqueue-seeds
else
fuzz: $(BUILD)/fuzz-$(FUZZ_TARGET) $(BUILD)/fuzz-corpus/.seeded
	$(BUILD)/fuzz-$(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=tests/fuzz/regressions/crash- $(BUILD)/fuzz-corpus tests/fuzz/regressions
endif

# A bounded run from the seeds, then every regression input once. The log is kept in $(BUILD)
# and shown only on failure.
fuzz-smoke: $(BUILD)/fuzz-request $(BUILD)/fuzz-fastpath $(BUILD)/fuzz-vhost-user $(BUILD)/fuzz-virtqueue \
	$(BUILD)/fuzz-image $(BUILD)/fuzz-corpus/.seeded
	@echo '== request fuzzer: $(FUZZ_SMOKE_RUNS) inputs from the trace seeds, then the regressions'
	$(Q)mkdir -p $(BUILD)/fuzz-smoke
	$(Q)if $(BUILD)/fuzz-request -runs=$(FUZZ_SMOKE_RUNS) -seed=1 \
		-artifact_prefix=$(BUILD)/fuzz-smoke/crash- $(BUILD)/fuzz-corpus \
		>$(BUILD)/fuzz-smoke/log 2>&1; then grep -h '^#.*DONE' $(BUILD)/fuzz-smoke/log | tail -n 1; \
	else tail -n 40 $(BUILD)/fuzz-smoke/log; echo 'fuzz-smoke: FAILED'; exit 1; fi
	$(Q)regs=$$(find tests/fuzz/regressions -type f ! -name .keep); \
	if [ -n "$$regs" ]; then $(BUILD)/fuzz-request $$regs >$(BUILD)/fuzz-smoke/regressions.log 2>&1 \
		|| { tail -n 40 $(BUILD)/fuzz-smoke/regressions.log; echo 'fuzz-smoke: a regression input fails'; exit 1; }; \
	echo "$$(echo "$$regs" | wc -l) regression inputs pass"; else echo 'no regression inputs yet'; fi
	@echo '== fast-path fuzzer: $(FUZZ_FASTPATH_SMOKE_RUNS) inputs, every answer checked against the store'
	$(Q)if $(BUILD)/fuzz-fastpath -runs=$(FUZZ_FASTPATH_SMOKE_RUNS) -seed=1 \
		-artifact_prefix=$(BUILD)/fuzz-smoke/crash-fastpath- $(BUILD)/fuzz-corpus \
		tests/fuzz/regressions \
		>$(BUILD)/fuzz-smoke/fastpath.log 2>&1; then grep -h '^#.*DONE' $(BUILD)/fuzz-smoke/fastpath.log | tail -n 1; \
	else tail -n 40 $(BUILD)/fuzz-smoke/fastpath.log; echo 'fuzz-smoke: the fast-path fuzzer FAILED'; exit 1; fi
	@echo '== vhost-user backend-channel parser fuzzer: $(FUZZ_SMOKE_RUNS) inputs'
	$(Q)if $(BUILD)/fuzz-vhost-user -runs=$(FUZZ_SMOKE_RUNS) -seed=1 \
		-artifact_prefix=$(BUILD)/fuzz-smoke/crash-vhost-user- \
		>$(BUILD)/fuzz-smoke/vhost-user.log 2>&1; then grep -h '^#.*DONE' $(BUILD)/fuzz-smoke/vhost-user.log | tail -n 1; \
	else tail -n 40 $(BUILD)/fuzz-smoke/vhost-user.log; echo 'fuzz-smoke: the vhost-user parser fuzzer FAILED'; exit 1; fi
	@echo '== save/restore image fuzzer: $(FUZZ_SMOKE_RUNS) images from tests/fuzz/image-seeds/'
	$(Q)mkdir -p $(BUILD)/fuzz-image-corpus
	$(Q)if $(BUILD)/fuzz-image -runs=$(FUZZ_SMOKE_RUNS) -seed=1 -max_len=4096 \
		-artifact_prefix=$(BUILD)/fuzz-smoke/crash-image- $(BUILD)/fuzz-image-corpus \
		tests/fuzz/image-seeds \
		>$(BUILD)/fuzz-smoke/image.log 2>&1; then grep -h '^#.*DONE' $(BUILD)/fuzz-smoke/image.log | tail -n 1; \
	else tail -n 40 $(BUILD)/fuzz-smoke/image.log; echo 'fuzz-smoke: the image fuzzer FAILED'; exit 1; fi
	@echo '== virtqueue fuzzer: $(FUZZ_SMOKE_RUNS) hostile rings from tests/fuzz/virtqueue-seeds/, then its regressions'
	$(Q)mkdir -p $(BUILD)/fuzz-virtqueue-corpus
	$(Q)if $(BUILD)/fuzz-virtqueue -runs=$(FUZZ_SMOKE_RUNS) -seed=1 -max_len=2048 -len_control=0 \
		-artifact_prefix=$(BUILD)/fuzz-smoke/crash-virtqueue- $(BUILD)/fuzz-virtqueue-corpus \
		tests/fuzz/virtqueue-seeds \
		>$(BUILD)/fuzz-smoke/virtqueue.log 2>&1; then grep -h '^#.*DONE' $(BUILD)/fuzz-smoke/virtqueue.log | tail -n 1; \
	else tail -n 40 $(BUILD)/fuzz-smoke/virtqueue.log; echo 'fuzz-smoke: the virtqueue fuzzer FAILED'; exit 1; fi
	$(Q)regs=$$(find tests/fuzz/virtqueue-regressions -type f ! -name .keep 2>/dev/null); \
	if [ -n "$$regs" ]; then $(BUILD)/fuzz-virtqueue $$regs >$(BUILD)/fuzz-smoke/virtqueue-regressions.log 2>&1 \
		|| { tail -n 40 $(BUILD)/fuzz-smoke/virtqueue-regressions.log; echo 'fuzz-smoke: a virtqueue regression input fails'; exit 1; }; \
	echo "$$(echo "$$regs" | wc -l) virtqueue regression inputs pass"; fi

# The vhost-net test's guest payload: static (it is the guest's only program besides busybox).
$(BUILD)/guest/vhost-net-test: tests/vhost_net/vhost_net_test.c $(BUILD)/libviommu.a | deps
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -static -o $@ $< $(BUILD)/libviommu.a $(LDLIBS) 2>$@.log || \
		{ cat $@.log; exit 1; }

# The vhost-user frontend against Debian's dpdk-testpmd (tests/dpdk_testpmd.c).
$(BUILD)/viommu-dpdk: $(BUILD)/obj/tests/dpdk_testpmd.o $(BUILD)/libviommu.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# ---- the jobs ----
run: $(BUILD)/viommu
	$(BUILD)/viommu replay --dma-probes --stat --path=$(REPLAY_PATH) tests/traces/linux-6.12-lazy.trace

dpdk: $(BUILD)/viommu-dpdk
	@echo '== vhost-user frontend against dpdk-testpmd (DPDK_SEED, DPDK_FRAMES, DPDK_SIZES)'
	$(Q)$(BUILD)/viommu-dpdk

# Each set runs directly, then through real virtqueues (with and without INDIRECT_DESC and
# EVENT_IDX): the summary line and the exit status must be the direct path's, word for word.
VIAS := virtqueue virtqueue-plain
define replay_vias
	$(Q)$(BUILD)/viommu replay --quiet --path=$(REPLAY_PATH) $(1) > $(BUILD)/check-traces/direct.log 2>&1; \
	echo "exit $$?" >> $(BUILD)/check-traces/direct.log; \
	grep -v '^exit ' $(BUILD)/check-traces/direct.log; \
	want=$$(grep -h '^replay:\|^exit ' $(BUILD)/check-traces/direct.log); \
	case "$$want" in *'exit 0') ;; *) exit 1 ;; esac; \
	for via in $(VIAS); do \
		$(BUILD)/viommu replay --quiet --path=$(REPLAY_PATH) --via=$$via $(1) \
			> $(BUILD)/check-traces/$$via.log 2>&1; echo "exit $$?" >> $(BUILD)/check-traces/$$via.log; \
		got=$$(grep -h '^replay:\|^exit ' $(BUILD)/check-traces/$$via.log); \
		if [ "$$got" = "$$want" ]; then echo "  --via=$$via: the same"; \
		else tail -n 20 $(BUILD)/check-traces/$$via.log; echo "check-traces: --via=$$via differs"; exit 1; fi; \
	done
endef

check-traces: $(BUILD)/viommu
	@echo '== recorded Linux traces and replayer regressions (with DMA probes), conformance scripts, --path=$(REPLAY_PATH); each also --via=$(subst $(eval) ,/,$(VIAS))'
	$(Q)mkdir -p $(BUILD)/check-traces
	$(call replay_vias,--dma-probes $(TRACES) $(REPLAY_TESTS))
	$(if $(CONFORMANCE),$(call replay_vias,$(CONFORMANCE)),@echo 'no conformance scripts in tests/conformance/')
	@echo '== the same through save/restore: the store after every request, every path every 1000'
	$(Q)$(BUILD)/viommu replay --quiet --dma-probes --path=store --restore-every=1 $(TRACES) $(REPLAY_TESTS)
	$(Q)$(BUILD)/viommu replay --quiet --path=store --restore-every=1 $(CONFORMANCE)
	$(Q)$(BUILD)/viommu replay --quiet --dma-probes --path=$(REPLAY_PATH) --restore-every=1000 $(TRACES) \
		> $(BUILD)/check-traces/restore-direct.log 2>&1 || { cat $(BUILD)/check-traces/restore-direct.log; exit 1; }
	@echo '== and via the rings every 1000, the transport in the image, the 1000th request in flight'
	$(Q)want=$$(grep -h '^replay:' $(BUILD)/check-traces/restore-direct.log); echo "$$want"; \
	for via in $(VIAS); do \
		$(BUILD)/viommu replay --quiet --dma-probes --path=$(REPLAY_PATH) --via=$$via --restore-every=1000 \
			$(TRACES) > $(BUILD)/check-traces/restore-$$via.log 2>&1 || { tail -n 20 $(BUILD)/check-traces/restore-$$via.log; exit 1; }; \
		got=$$(grep -h '^replay:' $(BUILD)/check-traces/restore-$$via.log); \
		if [ "$$got" = "$$want" ]; then echo "  --via=$$via --restore-every=1000: the same"; \
		else tail -n 20 $(BUILD)/check-traces/restore-$$via.log; echo "check-traces: --via=$$via --restore-every=1000 differs"; exit 1; fi; \
	done

unit: $(BUILD)/viommu-tests
	@echo '== unit tests'
	$(Q)$(BUILD)/viommu-tests --jobs=2

# LeakSanitizer reports a leak when a test's worker exits, after criterion has counted the test
# as passed: the report itself fails the run.
unit-asan: $(BUILD)/asan/viommu-tests
	@echo '== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer'
	$(Q){ ASAN_OPTIONS=detect_leaks=1 $(BUILD)/asan/viommu-tests --jobs=2 2>&1; echo $$? >$(BUILD)/asan/unit.rc; } \
		| tee $(BUILD)/asan/unit.log
	$(Q)if grep -q 'ERROR: LeakSanitizer' $(BUILD)/asan/unit.log; then \
		echo 'unit-asan: LeakSanitizer reported leaks (above)'; exit 1; fi; exit $$(cat $(BUILD)/asan/unit.rc)

test: $(TARGETS) $(BUILD)/asan/viommu-tests $(BUILD)/fuzz-request $(BUILD)/fuzz-fastpath \
	$(BUILD)/fuzz-vhost-user $(BUILD)/fuzz-virtqueue $(BUILD)/viommu-dpdk $(BUILD)/viommu-xdp
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory unit-asan
	$(Q)$(MAKE) --no-print-directory check-traces
	$(Q)$(MAKE) --no-print-directory fuzz-smoke
	$(Q)$(MAKE) --no-print-directory bench-smoke
	$(Q)$(MAKE) --no-print-directory dpdk
	$(Q)$(MAKE) --no-print-directory vhost-net
	$(Q)$(MAKE) --no-print-directory xdp XDP_ROUNDS=3 XDP_ROUND_MS=200
	$(Q)$(MAKE) --no-print-directory examples

# Every benchmark scenario on tiny worlds: each implementation checked against the device core's
# translations; no timing is judged.
bench-smoke: $(BUILD)/viommu-bench
	@echo '== benchmark smoke run (every baseline checked against the device core, no timing)'
	$(Q)$(BUILD)/viommu-bench --smoke > $(BUILD)/bench-smoke.log 2>&1 || \
		{ tail -n 40 $(BUILD)/bench-smoke.log; echo 'bench-smoke: FAILED'; exit 1; }
	$(Q)tail -n 1 $(BUILD)/bench-smoke.log

# Boots Debian's 6.1 kernel under QEMU TCG (tests/vhost_net/run-guest) and runs the test as its
# /init payload; VHOST_NET_* from the environment go on the guest's command line.
VHOST_NET_FRAMES ?= 2000
vhost-net: $(BUILD)/guest/vhost-net-test
	@echo '== vhost-net in a Debian 6.1 guest under QEMU TCG (the kernel module through the bridge)'
	$(Q)tests/vhost_net/run-guest $(BUILD) $(BUILD)/guest/vhost-net-test \
		VHOST_NET_FRAMES=$(VHOST_NET_FRAMES) $(if $(VHOST_NET_SEED),VHOST_NET_SEED=$(VHOST_NET_SEED)) \
		$(if $(VHOST_NET_SIZES),VHOST_NET_SIZES=$(VHOST_NET_SIZES))

# halt_on_error: a race inside criterion's forked test process must fail the test.
tsan: $(BUILD)/tsan/viommu-tests
	TSAN_OPTIONS="halt_on_error=1 $$TSAN_OPTIONS" $(BUILD)/tsan/viommu-tests --jobs=1

stress: $(BUILD)/viommu-tests
	VIOMMU_STRESS_SECONDS=$${VIOMMU_STRESS_SECONDS:-120} $(BUILD)/viommu-tests --filter='stress/*'

bench: $(BUILD)/viommu-bench
	$(BUILD)/viommu-bench

# viommu's XDP program on a real veth pair through libxdp (tests/xdp_veth.c): answers checked
# against the store, then frames/s with the lookup against the no-lookup twin. XDP_ROUNDS,
# XDP_ROUND_MS, XDP_EXTENTS, XDP_FRAMES, XDP_CHECK_FRAMES; XDP_JSON=FILE keeps the figures.
# Exit 77 (a printed reason: not root, no veth, no BPF) is a skip.
xdp: $(BUILD)/viommu-xdp $(BUILD)/viommu
	@echo '== XDP on a veth pair through libxdp: answers against the store, frames/s with and without the lookup'
	$(Q)VIOMMU_COMMIT='$(GIT_DESCRIBE)' $(BUILD)/viommu-xdp $(BUILD)/viommu; rc=$$?; [ $$rc = 0 ] || [ $$rc = 77 ]

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
