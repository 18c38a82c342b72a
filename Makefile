# au - one GNU Makefile. `make`, `make test`, `make unit`, `make demo`,
# `make bench`, `make soak`, `make check-layers`, `make deps`, `make servers`,
# `make install PREFIX=... DESTDIR=...`, `make clean`.
# `make` also builds examples/*.c into $(BUILD)/examples/.
# Any target takes SANITIZE=address,undefined.

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PKGS := hiredis msgpack libpq libevent libcurl jansson libcrypto

# The library's version, from include/au.h; the shared library is
# libau.so.$(VERSION), its soname libau.so.<major>.
VERSION := $(shell sed -n 's/^.define AU_VERSION "\([^"]*\)"/\1/p' include/au.h)
SONAME := libau.so.$(firstword $(subst ., ,$(VERSION)))
SOLIB := libau.so.$(VERSION)

O ?= -O2
CFLAGS ?= $(O) -g
WARN := -Wall -Wextra -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
        -Wwrite-strings -Wvla -Werror
# A machine without the libraries stops here with what to run, unless the
# goal installs them itself first (test, demo, bench, soak run `deps`).
DEB_hiredis := libhiredis-dev
DEB_msgpack := libmsgpack-dev
DEB_libpq := libpq-dev
DEB_libevent := libevent-dev
DEB_libcurl := libcurl4-openssl-dev
DEB_jansson := libjansson-dev
DEB_libcrypto := libssl-dev
ifeq ($(filter deps clean test demo bench soak servers,$(MAKECMDGOALS)),)
MISSING := $(strip $(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(p) 2>/dev/null && echo y),,$(DEB_$(p)))))
ifneq ($(MISSING),)
$(error missing the Debian packages $(MISSING): `make deps` installs them (as root, or through sudo), `make test` and `make demo` do it themselves)
endif
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# The library's folders, lowest layer first (docs/architecture.md).
LAYERS := core clickhouse redis postgres backends store middleware tasks producer worker
CPPFLAGS += -Iinclude $(LAYERS:%=-I%) -I$(BUILD)/gen -D_GNU_SOURCE
ALL_CFLAGS = -std=c11 -fPIC $(WARN) $(CFLAGS) $(PKG_CFLAGS)
LDLIBS += $(PKG_LIBS) -lpthread -lm

ifdef SANITIZE
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
BUILD := build/san
else
BUILD := build/rel
endif

LIB_SRC := $(foreach d,$(LAYERS),$(wildcard $(d)/*.c))
HEADERS := $(wildcard include/*.h tests/*.h cli/*.h $(LAYERS:%=%/*.h))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_COMMON := $(BUILD)/tests/harness.o $(BUILD)/tests/plug.o
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(filter-out examples/plugin.c,$(wildcard examples/*.c))
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

# Tests that need no server: `make unit`.
UNIT_TESTS := test_codec test_sql test_url test_worker test_alloc test_sign test_cron test_schedule

.PHONY: all test unit check-layers demo bench soak deps servers install clean
.PHONY: fuzz fuzz-targets
.SECONDARY:
all: $(BUILD)/libau.a $(BUILD)/$(SOLIB) $(BUILD)/$(SONAME) $(BUILD)/libau.so $(BUILD)/au au $(TEST_BIN) $(BENCH_BIN) $(EXAMPLE_BIN)

# `au` at the top level is a link to the build in use.
au: $(BUILD)/au
	@ln -sf $(BUILD)/au au

# The Redis queue's Lua scripts, one .lua file each, become C strings at
# build time, checked by luac -p where a Lua compiler is installed.
LUA_SRC := $(sort $(wildcard backends/redis_scripts/*.lua))
$(BUILD)/gen/redis_scripts.h: $(LUA_SRC) scripts/embed.sh
	@mkdir -p $(dir $@)
	@echo "  GEN $@"
	@scripts/embed.sh $@ $(LUA_SRC)
$(BUILD)/backends/redis_queue.o: $(BUILD)/gen/redis_scripts.h

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libau.a: $(LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/$(SOLIB): $(LIB_OBJ)
	@echo "  LD $@"
	@$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The links: libau.so.<major> is what programs load, libau.so what -lau finds.
$(BUILD)/$(SONAME): $(BUILD)/$(SOLIB)
	@ln -sf $(SOLIB) $@
$(BUILD)/libau.so: $(BUILD)/$(SONAME)
	@ln -sf $(SONAME) $@

# The `au` command: every file of cli/ (au.c parses and dispatches).
# The plugins it loads call the au_* functions it holds: all of libau.a
# is linked in (--whole-archive) and exported (-rdynamic).
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c))
$(BUILD)/au: $(CLI_OBJ) $(BUILD)/libau.a
	@echo "  LD $@"
	@$(CC) -rdynamic -o $@ $(CLI_OBJ) -Wl,--whole-archive $(BUILD)/libau.a -Wl,--no-whole-archive \
		$(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(BUILD)/libau.a
	@$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libau.a
	@$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The examples see the public header only, as a program built against an
# installed libau does (tests/t_install.sh builds them that way too).
$(BUILD)/examples/%: examples/%.c include/au.h $(BUILD)/libau.a
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) -Iinclude $(ALL_CFLAGS) -o $@ $< $(BUILD)/libau.a $(LDFLAGS) $(LDLIBS)

# Plugins (include/au.h, "Plugins"): examples/plugin.c is a shared library
# that `au worker --plugin` loads. It links no libau (it calls the au_* of
# the process that loads it) and sees au's private headers for the
# ClickHouse client; a sanitizer build builds it with the sanitizer too.
PLUGIN_SRC := examples/plugin.c
PLUGIN_SO := $(BUILD)/examples/libauexample.so
all: $(PLUGIN_SO)
$(PLUGIN_SO): $(PLUGIN_SRC) $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -shared -o $@ $< $(LDFLAGS) $(shell pkg-config --libs msgpack 2>/dev/null)

# au.pc is written by `make install`, so it carries the PREFIX given there.
# Requires.private names the libraries whose Debian .pc files link
# statically; libpq.pc and libcurl.pc do not (their Libs.private name
# -lpgcommon, -lnghttp2, ... which the -dev packages do not ship), so those
# two are plain -l flags: `pkg-config --static --libs au` then links.
PC_REQUIRES := hiredis msgpack libevent jansson libcrypto
PC_LIBS := -lpq -lcurl -lpthread -lm
define au_pc
prefix=$(PREFIX)
exec_prefix=$${prefix}
libdir=$${exec_prefix}/lib
includedir=$${prefix}/include

Name: au
Description: computations on ClickHouse through a queue
Version: $(VERSION)
Requires.private: $(PC_REQUIRES)
Cflags: -I$${includedir}
Libs: -L$${libdir} -lau
Libs.private: $(PC_LIBS)
endef
export au_pc

deps:
	@scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/run.sh

unit: all
	@BUILD=$(BUILD) tests/run.sh --unit $(UNIT_TESTS)

# No file includes a header from a folder above its own, and no object
# calls a function defined above it (scripts/check-layers.sh).
check-layers: all
	@BUILD=$(BUILD) scripts/check-layers.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) scripts/demo.sh

# Redis, PostgreSQL and ClickHouse to try au by hand, until Ctrl-C.
servers: deps
	@scripts/servers.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

soak: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/soak.sh

# bin/au, lib/ (libau.a, libau.so.$(VERSION) and its two links),
# include/au.h, lib/pkgconfig/au.pc, the man page and the bash completion.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 755 $(BUILD)/au $(DESTDIR)$(PREFIX)/bin/au
	install -m 644 $(BUILD)/libau.a $(DESTDIR)$(PREFIX)/lib/libau.a
	install -m 755 $(BUILD)/$(SOLIB) $(DESTDIR)$(PREFIX)/lib/$(SOLIB)
	ln -sf $(SOLIB) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libau.so
	install -m 644 include/au.h $(DESTDIR)$(PREFIX)/include/au.h
	printf '%s\n' "$$au_pc" > $(DESTDIR)$(PREFIX)/lib/pkgconfig/au.pc
	chmod 644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/au.pc
	install -m 644 docs/au.1 $(DESTDIR)$(PREFIX)/share/man/man1/au.1
	install -m 644 scripts/au-completion.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/au

# ---- fuzzing: `make fuzz` (FUZZ_SECONDS=60 each), `make fuzz-targets` ----
# libFuzzer targets of tests/fuzz/ built by clang against core/, in their
# own object folder whatever SANITIZE says (they always carry ASan and
# UBSan). Each runs on a scratch copy of its seed corpus
# tests/fuzz/corpus/<target>/, which stays as committed; a crash leaves its
# input in build/fuzz/artifacts/ and fails the run.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 $(WARN) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link $(PKG_CFLAGS)
FUZZ_LIB_SRC := $(wildcard core/*.c)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)

$(FUZZ_BUILD)/%.o: %.c $(HEADERS) tests/fuzz/fuzz.h
	@mkdir -p $(dir $@)
	@echo "  FUZZCC $<"
	@$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	@echo "  LD $@"
	@$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-targets: $(FUZZ_BIN)

fuzz: fuzz-targets
	@mkdir -p $(FUZZ_BUILD)/artifacts
	@set -e; for t in $(FUZZ_BIN); do \
		n=$$(basename $$t); n=$${n#fuzz_}; \
		work=$$(mktemp -d); \
		echo "  FUZZ $$n ($(FUZZ_SECONDS)s)"; \
		$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$n- \
			$$work tests/fuzz/corpus/$$n 2>$(FUZZ_BUILD)/$$n.log \
			|| { tail -40 $(FUZZ_BUILD)/$$n.log; rm -rf $$work; \
			     echo "fuzz: '$$n' crashed, the input is in $(FUZZ_BUILD)/artifacts/" >&2; exit 1; }; \
		grep -E '^(Done|stat::number_of_executed_units)' $(FUZZ_BUILD)/$$n.log | head -1; \
		rm -rf $$work; \
	done

clean:
	rm -rf build au au.pc
