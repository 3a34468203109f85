# portfence — see README.md and HACKING.md.
#   make            builds the shim, the tool and the benchmark; never installs
#   make BPF=0      the same without the BPF backend (no clang, libbpf, bpftool)
#   make deps       installs the Debian packages the build and the tests need
#   make probe      says what this host lacks, installing nothing
#   make check      the unit tests and the docs' links: seconds, no root
#   make test       everything (installs what it needs; root)
#   make deb        the Debian package; make deb-test builds, lints, installs it
SANITIZE ?=
# BPF=0 leaves the BPF backend out: its commands then say so and exit 1.
BPF      ?= 1
# A sanitizer build keeps its objects apart from the normal build.
BUILD    ?= build$(if $(SANITIZE),/sanitize-$(subst $(comma),-,$(SANITIZE)))
comma    := ,
CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
CFLAGS   ?= -O2 -g

LIBDIR_INSTALLED = $(PREFIX)/lib/portfence
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
ALL_CFLAGS = -std=gnu11 -Wall -Wextra -Werror $(CPPFLAGS) $(CFLAGS) -fPIC -fvisibility=hidden \
             -D_GNU_SOURCE -I. -DPF_LIBDIR='"$(LIBDIR_INSTALLED)"'
ALL_LDFLAGS = $(LDFLAGS)
# A failed recipe leaves no half-written target behind.
.DELETE_ON_ERROR:
ifneq ($(SANITIZE),)
ALL_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
ALL_LDFLAGS += -fsanitize=$(SANITIZE)
# A sanitized shim preloaded into curl or python needs the sanitizer's
# runtime loaded first; the harness and the benchmark put it there.
SAN_RUNTIME := $(shell $(CC) -print-file-name=$(if $(findstring thread,$(SANITIZE)),libtsan.so,libasan.so))
TEST_ENV = PORTFENCE_TEST_PRELOAD=$(SAN_RUNTIME) \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp \
  TSAN_OPTIONS=halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
endif
# Integration suites run in a private network namespace (root; see
# tests/netns.sh).
NETNS = unshare -n -m --propagation private sh tests/netns.sh
# With SANITIZE=thread, the suites that exercise concurrency (the log suite
# moves the log fd under writing threads; the collector suite drains the
# rings of processes writing at once).  The bpf suite runs in every
# other build; where BPF cannot load, its tests report skipped.
INTEG_FILTER = $(if $(findstring thread,$(SANITIZE)),--filter '@(hardening|runtime|log|collector)/*',)

# The rooms under the shim and the tool (HACKING.md): reading the policy
# (config/), deciding (core/), asking the kernel (kernel/), the record
# (record/).  Includes carry the room: "core/holds.h".
POLICY_SRC = $(wildcard config/*.c core/*.c kernel/*.c record/*.c)
SHIM_SRC   = $(wildcard shim/*.c)
# The BPF backend: programs (bpf/*.bpf.c and their bpf/*.bpf.h, built by
# clang for the BPF target; bpf/*_api.h is shared with the loader), their
# user-space loader (loader/), and the commands that use it, linked into the
# tool only.  Without it (BPF=0) cli/bpf_absent.c stands in for those
# commands.
BPF_PROG_SRC = bpf/portfence.bpf.c
CLI_BPF_SRC  = cli/attach.c cli/bpf_common.c cli/bpf_run.c cli/daemon.c cli/daemon_watch.c
ifeq ($(BPF),0)
BPF_USER_SRC =
CLI_SRC      = $(filter-out $(CLI_BPF_SRC),$(wildcard cli/*.c))
BPF_LIBS     =
ALL_CFLAGS  += -DPF_HAVE_BPF=0
else
BPF_USER_SRC = $(wildcard loader/*.c)
CLI_SRC      = $(filter-out cli/bpf_absent.c,$(wildcard cli/*.c))
BPF_LIBS     = -lbpf
ALL_CFLAGS  += -DPF_HAVE_BPF=1
endif
# test_sequence.c and test_glob_kernel.c also run BPF code in the kernel:
# BPF builds only.
UNIT_SRC   = $(filter-out $(if $(filter 0,$(BPF)),tests/unit/test_sequence.c tests/unit/test_glob_kernel.c),$(wildcard tests/unit/*.c))
INTEG_SRC  = $(wildcard tests/integration/*.c)
BENCH_SRC  = $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

POLICY_LIB = $(BUILD)/libpfpolicy.a
BPF_LIB    = $(BUILD)/libpfbpf.a
BPF_OBJ    = $(BUILD)/bpf/portfence.bpf.o
BPF_SKEL   = $(BUILD)/bpf/portfence.skel.h
# The daemon's dispatcher: one program per hook, tail-calling the app's.
DISPATCH_OBJ  = $(BUILD)/bpf/dispatch.bpf.o
DISPATCH_SKEL = $(BUILD)/bpf/dispatch.skel.h
SHIM       = $(BUILD)/libportfence.so
SHIM_MAP   = $(BUILD)/exports.map
TOOL       = $(BUILD)/portfence
BENCH      = $(BUILD)/portfence-bench
UNIT       = $(BUILD)/unit-tests
INTEG      = $(BUILD)/integration-tests
HELPERS    = $(BUILD)/early-connect.so $(BUILD)/early-client $(BUILD)/sockprobe $(BUILD)/static-hello $(BUILD)/stress \
             $(BUILD)/connprobe $(BUILD)/sigconnect $(BUILD)/runtime-probe $(BUILD)/deepbind-lib.so \
             $(BUILD)/logprobe $(BUILD)/table-client $(BUILD)/ringprobe $(BPF_HELPERS)
# The BPF backend's clients: Go (static and dynamic), a static C client
# making raw system calls, and an io_uring connect.
BPF_HELPERS = $(BUILD)/goclient-static $(BUILD)/goclient-dyn $(BUILD)/bpf-static-client \
             $(BUILD)/bpf-uring-client $(BUILD)/bpf-burst

.PHONY: all core-check check test unit integration demo bench install uninstall clean deps probe fuzz fuzz-replay deb deb-test
# Builds only: `make deps` installs what a build needs, `make probe` says
# what is missing.
all: $(POLICY_LIB) $(SHIM) $(TOOL) $(BENCH)

# Each object's header dependencies, written by the compiler (-MMD -MP).
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

OBJS = $(call obj,$(POLICY_SRC) $(SHIM_SRC) $(CLI_SRC) $(BPF_USER_SRC) $(UNIT_SRC) $(INTEG_SRC) $(BENCH_SRC))
-include $(OBJS:.o=.d)

# Built without the sanitizers: the BPF target has none.
BPF_CFLAGS = -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I/usr/include/$$(gcc -dumpmachine) -I.
$(BPF_OBJ): $(BPF_PROG_SRC) $(wildcard bpf/*.h core/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@
$(DISPATCH_OBJ): bpf/dispatch.bpf.c $(wildcard bpf/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@

# The core (core/*.h) is shared by the shim and the BPF programs: every
# header must build for the BPF target as it builds for the host.  This
# object is only compiled, never loaded: it drives the core as a BPF
# program would (tests/core/core_check.bpf.c).
CORE_CHECK = $(BUILD)/bpf/core_check.bpf.o
$(CORE_CHECK): tests/core/core_check.bpf.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@
core-check: $(CORE_CHECK)

# The differential test runs the core's walk in the kernel as well
# (BPF_PROG_TEST_RUN of a syscall program), embedded in the unit tests.
SEQ_RUN_OBJ  = $(BUILD)/bpf/sequence_run.bpf.o
SEQ_RUN_SKEL = $(BUILD)/bpf/sequence_run.skel.h
$(SEQ_RUN_OBJ): tests/core/sequence_run.bpf.c $(wildcard core/*.h bpf/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@
$(SEQ_RUN_SKEL): $(SEQ_RUN_OBJ)
	bpftool gen skeleton $< name sequence_run > $@.tmp && mv $@.tmp $@
$(call obj,tests/unit/test_sequence.c): $(SEQ_RUN_SKEL)
$(call obj,tests/unit/test_sequence.c): ALL_CFLAGS += -I$(BUILD)/bpf

# The same for the kernel's cgroup glob matcher, against fnmatch(3).
GLOB_RUN_OBJ  = $(BUILD)/bpf/glob_run.bpf.o
GLOB_RUN_SKEL = $(BUILD)/bpf/glob_run.skel.h
$(GLOB_RUN_OBJ): tests/core/glob_run.bpf.c $(wildcard bpf/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@
$(GLOB_RUN_SKEL): $(GLOB_RUN_OBJ)
	bpftool gen skeleton $< name glob_run > $@.tmp && mv $@.tmp $@
$(call obj,tests/unit/test_glob_kernel.c): $(GLOB_RUN_SKEL)
$(call obj,tests/unit/test_glob_kernel.c): ALL_CFLAGS += -I$(BUILD)/bpf

$(BPF_SKEL): $(BPF_OBJ)
	bpftool gen skeleton $< name portfence_bpf > $@.tmp && mv $@.tmp $@
$(DISPATCH_SKEL): $(DISPATCH_OBJ)
	bpftool gen skeleton $< name dispatch_bpf > $@.tmp && mv $@.tmp $@

$(call obj,$(BPF_USER_SRC)): $(BPF_SKEL) $(DISPATCH_SKEL)
$(call obj,$(BPF_USER_SRC)): ALL_CFLAGS += -I$(BUILD)/bpf
# glib: the tool's hash tables (report, status); the shim never links it.
GLIB_CFLAGS := $(shell pkg-config --cflags glib-2.0 2>/dev/null)
GLIB_LIBS   := $(or $(shell pkg-config --libs glib-2.0 2>/dev/null),-lglib-2.0)
$(call obj,$(CLI_SRC)): ALL_CFLAGS += $(GLIB_CFLAGS)
# The shim's code (and the policy code it links): calls into libc through
# the GOT, not a PLT stub on a page of its own, and switches as compares,
# not tables read from .rodata (more lines and pages per connect; core/hot.h);
# a section per function, for shim/hot.ld to put the connect cycle's in
# the order they run.
$(call obj,$(SHIM_SRC) $(POLICY_SRC)): ALL_CFLAGS += -fno-plt -fno-jump-tables -fno-tree-switch-conversion -ffunction-sections
# `portfence --version`: the package's version, from debian/changelog.
PF_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog 2>/dev/null)
$(call obj,cli/main.c): ALL_CFLAGS += -DPF_VERSION='"$(or $(PF_VERSION),unknown)"'
$(call obj,cli/main.c): debian/changelog

$(BPF_LIB): $(call obj,$(BPF_USER_SRC))
	@rm -f $@
	ar rcs $@ $^

$(POLICY_LIB): $(call obj,$(POLICY_SRC))
	@rm -f $@
	ar rcs $@ $^

# The version script: the exported names of shim/hooks.def.
$(SHIM_MAP): shim/exports.map.in shim/hooks.def
	@mkdir -p $(dir $@)
	$(CC) -E -P -x c -Ishim $< -o $@

# shim/hot.ld: the connect cycle's code side by side, its variables
# together (core/hot.h).
$(SHIM): $(call obj,$(SHIM_SRC)) $(POLICY_LIB) $(SHIM_MAP) shim/hot.ld
	$(CC) -shared $(ALL_LDFLAGS) -Wl,--version-script=$(SHIM_MAP) -Wl,-z,now -Wl,-T,shim/hot.ld \
	  -o $@ $(call obj,$(SHIM_SRC)) $(POLICY_LIB) -lconfig -ldl -pthread

$(TOOL): $(call obj,$(CLI_SRC)) $(if $(BPF_USER_SRC),$(BPF_LIB)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(BPF_LIBS) -lconfig -ljansson $(GLIB_LIBS)

$(BENCH): $(call obj,$(BENCH_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lconfig -pthread -lm -ldl

$(UNIT): $(call obj,$(UNIT_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcriterion -lconfig -ljansson $(BPF_LIBS) -pthread

$(INTEG): $(call obj,$(INTEG_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcriterion -lconfig -ljansson -pthread

$(BUILD)/early-connect.so: tests/helpers/early_connect.c
	$(CC) $(ALL_CFLAGS) -shared -o $@ $<
$(BUILD)/early-client: tests/helpers/early_client.c $(BUILD)/early-connect.so
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -L$(BUILD) -l:early-connect.so -Wl,-rpath,'$$ORIGIN'
$(BUILD)/static-hello: tests/helpers/static_hello.c
	$(CC) -static -O2 -o $@ $<
$(BUILD)/stress: tests/helpers/stress.c tests/helpers/dest.h
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -pthread
$(BUILD)/sigconnect: tests/helpers/sigconnect.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<
$(BUILD)/runtime-probe: tests/helpers/runtime_probe.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -pthread -ldl -Wl,-rpath,'$$ORIGIN'
# Lazy binding (no -z now), so that the test also meets unresolved PLT slots.
$(BUILD)/deepbind-lib.so: tests/helpers/deepbind_lib.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -shared -Wl,-z,lazy -o $@ $<
$(BUILD)/sockprobe: tests/helpers/sockprobe.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -pthread
$(BUILD)/connprobe: tests/helpers/connprobe.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<
$(BUILD)/logprobe: tests/helpers/logprobe.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -pthread
# A program that attacks its own records (test_collector.c): it writes
# into its ring with the ring's own code.
$(BUILD)/ringprobe: tests/helpers/ringprobe.c tests/helpers/dest.h $(POLICY_LIB)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(POLICY_LIB) -pthread
# The behaviour table's client (test_table.c): dynamic, so that the shim
# reaches it; the BPF backend confines it as well.
$(BUILD)/table-client: tests/helpers/table_client.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<

# Go keeps its cache and module path inside the build directory (HOME may
# be unset or read-only on CI); the module has no dependencies, so nothing
# is fetched.
go_build = cd tests/helpers/goclient && env CGO_ENABLED=$(1) HOME=$(abspath $(BUILD))/go \
  GOCACHE=$(abspath $(BUILD))/go/cache GOPATH=$(abspath $(BUILD))/go/path GOENV=off \
  GOPROXY=off GOFLAGS= LD_PRELOAD= go build
GO_SRC = tests/helpers/goclient/main.go tests/helpers/goclient/go.mod
$(BUILD)/goclient-static: $(GO_SRC)
	$(call go_build,0) -o $(abspath $@) .
	@! ldd $@ >/dev/null 2>&1 || { echo "$@ is not static" >&2; rm -f $@; exit 1; }
# cgo and the external linker: a program that loads libc, as a Go service
# built on a distribution usually is.
$(BUILD)/goclient-dyn: $(GO_SRC)
	$(call go_build,1) -ldflags=-linkmode=external -o $(abspath $@) .
	@ldd $@ | grep -q 'libc\.so' || { echo "$@ is not dynamic" >&2; rm -f $@; exit 1; }
$(BUILD)/bpf-static-client: tests/helpers/bpf_static_client.c tests/helpers/bpf_client.h
	$(CC) -static -O2 -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -o $@ $<
$(BUILD)/bpf-uring-client: tests/helpers/bpf_uring_client.c tests/helpers/bpf_client.h
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -luring
$(BUILD)/bpf-burst: tests/helpers/bpf_burst.c tests/helpers/bpf_client.h
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<

# Installs (as root) the Debian packages that building and testing need;
# otherwise prints the apt-get line.
deps:
	@sh tests/install-deps.sh

# What this host lacks for the build, the BPF backend and the tests.
probe:
	@sh tests/install-deps.sh probe

# libFuzzer targets (not in CI): make fuzz FUZZ_SECONDS=600.  Crash inputs
# land in tests/fuzz/regressions/, which fuzz-replay (in make test) runs.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = policy rule
FUZZ_DIR = $(BUILD)/fuzz

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(POLICY_SRC) $(wildcard config/*.h core/*.h kernel/*.h record/*.h)
	@mkdir -p $(FUZZ_DIR)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -Itests/fuzz \
	  $(POLICY_SRC) $< -lconfig -o $@

$(FUZZ_DIR)/replay_%: tests/fuzz/fuzz_%.c $(POLICY_LIB)
	@mkdir -p $(FUZZ_DIR)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -DFUZZ_REPLAY -Itests/fuzz -o $@ $< $(POLICY_LIB) -lconfig

fuzz:
	@sh tests/install-deps.sh fuzz
	$(MAKE) $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
	sh tests/fuzz/seed.sh $(FUZZ_DIR)
	for t in $(FUZZ_TARGETS); do \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=tests/fuzz/regressions/$$t/ $(FUZZ_DIR)/corpus-$$t || exit 1; \
	done

fuzz-replay: $(addprefix $(FUZZ_DIR)/replay_,$(FUZZ_TARGETS))
	sh tests/fuzz/seed.sh $(FUZZ_DIR)
	for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_DIR)/replay_$$t $(FUZZ_DIR)/corpus-$$t/* $$(find tests/fuzz/regressions/$$t -type f ! -name .keep) || exit 1; \
	done

# The fast tier: the unit tests and the docs' links; no root, no network.
check: $(UNIT) $(if $(filter-out 0,$(BPF)),$(CORE_CHECK))
	$(TEST_ENV) $(UNIT) --jobs 2
	sh tests/check-links.sh

unit: check

integration: $(INTEG) $(HELPERS) all
	PORTFENCE_BUILD=$(abspath $(BUILD)) $(NETNS) $(INTEG) --jobs 1 $(INTEG_FILTER)

# The benchmark's smoke run comes first, so that the last line printed is
# Criterion's synthesis.  No test fails on a timing.  The Debian package
# test (a package build, lintian, dpkg -i and -r) runs in the normal
# build only.
ifeq ($(findstring thread,$(SANITIZE)),)
test: deps
	$(MAKE) --no-print-directory all $(UNIT) $(INTEG) $(HELPERS) $(CORE_CHECK)
	$(TEST_ENV) $(BENCH) --quick --out $(BUILD)/bench-quick.json > /dev/null
	$(TEST_ENV) $(MAKE) --no-print-directory fuzz-replay
	$(TEST_ENV) $(MAKE) --no-print-directory check
	$(if $(SANITIZE),,$(MAKE) --no-print-directory deb-test)
	$(TEST_ENV) PORTFENCE_BUILD=$(abspath $(BUILD)) $(NETNS) $(INTEG) --jobs 1 $(INTEG_FILTER)
else
# Criterion cannot run under TSan (its arena mapping is refused), so the
# runner comes from the normal build and drives the TSan-built shim, tool
# and helpers through the concurrency suites.
test: deps
	$(MAKE) --no-print-directory all $(HELPERS)
	$(MAKE) --no-print-directory BUILD=build SANITIZE= build/integration-tests
	$(TEST_ENV) PORTFENCE_BUILD=$(abspath $(BUILD)) $(NETNS) build/integration-tests --jobs 1 $(INTEG_FILTER)
endif

# The demo needs the build's packages, curl and python3, nothing more.
demo:
	@sh tests/install-deps.sh demo
	@$(MAKE) --no-print-directory all
	@sh tests/demo.sh $(abspath $(BUILD))

bench: all
	$(BENCH) --out $(BUILD)/bench.json

# dist/ names the Debian paths (/usr/bin, /usr/lib/portfence): they are
# rewritten for PREFIX.
DIST_PATHS = sed -e 's|/usr/bin/portfence|$(PREFIX)/bin/portfence|g' \
  -e 's|/usr/lib/portfence|$(LIBDIR_INSTALLED)|g'
DOCDIR = $(DESTDIR)$(PREFIX)/share/doc/portfence

install: $(SHIM) $(TOOL)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR_INSTALLED) \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DOCDIR)/examples/systemd $(DOCDIR)/examples/prometheus $(DESTDIR)$(SYSCONFDIR)/logrotate.d \
	  $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(BASHCOMPDIR)
	install -m 0755 $(TOOL) $(DESTDIR)$(PREFIX)/bin/portfence
	install -m 0644 $(SHIM) $(DESTDIR)$(LIBDIR_INSTALLED)/libportfence.so
	install -m 0644 man/portfence.1 $(DESTDIR)$(PREFIX)/share/man/man1/portfence.1
	install -m 0644 man/portfence.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/portfence.conf.5
	install -m 0644 example.conf $(DOCDIR)/example.conf
	install -m 0644 README.md $(DOCDIR)/README.md
	install -m 0644 dist/logrotate.d/portfence $(DESTDIR)$(SYSCONFDIR)/logrotate.d/portfence
	$(DIST_PATHS) dist/portfence.service > $(DESTDIR)$(SYSTEMDUNITDIR)/portfence.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/portfence.service
	install -m 0644 dist/bash-completion/portfence $(DESTDIR)$(BASHCOMPDIR)/portfence
	install -m 0644 dist/prometheus/portfence.rules.yml $(DOCDIR)/examples/prometheus/portfence.rules.yml
	for f in dist/systemd/*.conf; do \
	  $(DIST_PATHS) $$f > $(DOCDIR)/examples/systemd/$${f##*/} && chmod 0644 $(DOCDIR)/examples/systemd/$${f##*/} || exit 1; \
	done

# Removes what install put there (the same variables), and the
# directories of portfence's own that are left empty.
INSTALLED_FILES = $(PREFIX)/bin/portfence $(LIBDIR_INSTALLED)/libportfence.so \
  $(PREFIX)/share/man/man1/portfence.1 $(PREFIX)/share/man/man5/portfence.conf.5 \
  $(PREFIX)/share/doc/portfence/example.conf $(PREFIX)/share/doc/portfence/README.md \
  $(SYSCONFDIR)/logrotate.d/portfence $(SYSTEMDUNITDIR)/portfence.service $(BASHCOMPDIR)/portfence \
  $(patsubst dist/systemd/%,$(PREFIX)/share/doc/portfence/examples/systemd/%,$(wildcard dist/systemd/*.conf)) \
  $(PREFIX)/share/doc/portfence/examples/prometheus/portfence.rules.yml
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED_FILES))
	-rmdir $(DOCDIR)/examples/systemd $(DOCDIR)/examples/prometheus $(DOCDIR)/examples $(DOCDIR) $(DESTDIR)$(LIBDIR_INSTALLED) 2>/dev/null

# ---- Packaging: its own tier (make test still runs deb-test) ----
# The Debian package, built from a copy of the tree under $(BUILD)/deb
# (dpkg-buildpackage writes its outputs to the parent directory), then
# copied to $(BUILD)/.
DEB_STAGE = $(BUILD)/deb
deb:
	@sh tests/install-deps.sh deb
	rm -rf $(DEB_STAGE) && mkdir -p $(DEB_STAGE)/portfence
	tar -c --exclude=./build --exclude=./.git . | tar -x -C $(DEB_STAGE)/portfence
	cd $(DEB_STAGE)/portfence && dpkg-buildpackage -us -uc -b
	rm -f $(BUILD)/portfence_*.deb
	cp $(DEB_STAGE)/portfence_*.deb $(BUILD)/
	@ls $(BUILD)/portfence_*.deb

# Builds the package, checks it with lintian, installs it, uses it and
# removes it (root; run by `make test`).
deb-test:
	sh tests/deb-test.sh $(BUILD)

clean:
	rm -rf $(BUILD)
