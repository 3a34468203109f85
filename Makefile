# portfence — see README.md.  `make test` installs what it needs.
BUILD    ?= build
CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
SANITIZE ?=
CFLAGS   ?= -O2 -g

LIBDIR_INSTALLED = $(PREFIX)/lib/portfence
ALL_CFLAGS = -std=gnu11 -Wall -Wextra -Werror $(CFLAGS) -fPIC -fvisibility=hidden \
             -D_GNU_SOURCE -Ipolicy -DPF_LIBDIR='"$(LIBDIR_INSTALLED)"'
ALL_LDFLAGS = $(LDFLAGS)
ifneq ($(SANITIZE),)
ALL_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif

POLICY_SRC = $(wildcard policy/*.c)
SHIM_SRC   = $(wildcard shim/*.c)
CLI_SRC    = $(wildcard cli/*.c)
UNIT_SRC   = $(wildcard tests/unit/*.c)
INTEG_SRC  = $(wildcard tests/integration/*.c)
BENCH_SRC  = $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

POLICY_LIB = $(BUILD)/libpfpolicy.a
SHIM       = $(BUILD)/libportfence.so
TOOL       = $(BUILD)/portfence
BENCH      = $(BUILD)/portfence-bench
UNIT       = $(BUILD)/unit-tests
INTEG      = $(BUILD)/integration-tests
HELPERS    = $(BUILD)/early-connect.so $(BUILD)/early-client $(BUILD)/sockprobe $(BUILD)/static-hello

.PHONY: all test unit integration demo bench install clean deps
all: $(POLICY_LIB) $(SHIM) $(TOOL) $(BENCH)

$(BUILD)/obj/%.o: %.c $(wildcard policy/*.h shim/*.h cli/*.h tests/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(POLICY_LIB): $(call obj,$(POLICY_SRC))
	@rm -f $@
	ar rcs $@ $^

$(SHIM): $(call obj,$(SHIM_SRC)) $(POLICY_LIB) shim/exports.map
	$(CC) -shared $(ALL_LDFLAGS) -Wl,--version-script=shim/exports.map -Wl,-z,now \
	  -o $@ $(call obj,$(SHIM_SRC)) $(POLICY_LIB) -lconfig -ldl -pthread

$(TOOL): $(call obj,$(CLI_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lconfig -ljansson

$(BENCH): $(call obj,$(BENCH_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lconfig -pthread -lm -ldl

$(UNIT): $(call obj,$(UNIT_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcriterion -lconfig -pthread

$(INTEG): $(call obj,$(INTEG_SRC)) $(POLICY_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcriterion -lconfig -ljansson -pthread

$(BUILD)/early-connect.so: tests/helpers/early_connect.c
	$(CC) $(ALL_CFLAGS) -shared -o $@ $<
$(BUILD)/early-client: tests/helpers/early_client.c $(BUILD)/early-connect.so
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -L$(BUILD) -l:early-connect.so -Wl,-rpath,'$$ORIGIN'
$(BUILD)/static-hello: tests/helpers/static_hello.c
	$(CC) -static -O2 -o $@ $<
$(BUILD)/sockprobe: tests/helpers/sockprobe.c
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -pthread

deps:
	@sh tests/install-deps.sh

unit: deps $(UNIT)
	$(UNIT) --jobs 2

integration: deps all $(INTEG) $(HELPERS)
	PORTFENCE_BUILD=$(abspath $(BUILD)) $(INTEG) --jobs 1

# The benchmark's smoke run comes first, so that the last line printed is
# Criterion's synthesis.  No test fails on a timing.
test: deps all $(UNIT) $(INTEG) $(HELPERS)
	$(BENCH) --quick --out $(BUILD)/bench-quick.json > /dev/null
	$(UNIT) --jobs 2
	PORTFENCE_BUILD=$(abspath $(BUILD)) $(INTEG) --jobs 1

demo: deps all
	@sh tests/demo.sh $(abspath $(BUILD))

bench: all
	$(BENCH) --out $(BUILD)/bench.json

install: $(SHIM) $(TOOL)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR_INSTALLED) \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DESTDIR)$(PREFIX)/share/doc/portfence
	install -m 0755 $(TOOL) $(DESTDIR)$(PREFIX)/bin/portfence
	install -m 0644 $(SHIM) $(DESTDIR)$(LIBDIR_INSTALLED)/libportfence.so
	install -m 0644 man/portfence.1 $(DESTDIR)$(PREFIX)/share/man/man1/portfence.1
	install -m 0644 man/portfence.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/portfence.conf.5
	install -m 0644 example.conf $(DESTDIR)$(PREFIX)/share/doc/portfence/example.conf

clean:
	rm -rf $(BUILD)
