# au - one GNU Makefile. `make`, `make test`, `make unit`, `make demo`,
# `make bench`, `make soak`, `make check-layers`, `make deps`,
# `make install PREFIX=... DESTDIR=...`, `make clean`.
# Any target takes SANITIZE=address,undefined.

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PKGS := hiredis msgpack libpq libevent libcurl jansson libcrypto

O ?= -O2
CFLAGS ?= $(O) -g
WARN := -Wall -Wextra -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
        -Wwrite-strings -Wvla -Werror
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

# Tests that need no server: `make unit`.
UNIT_TESTS := test_codec test_sql test_url test_worker test_alloc

.PHONY: all test unit check-layers demo bench soak deps install clean
.SECONDARY:
all: $(BUILD)/libau.a $(BUILD)/libau.so $(BUILD)/au au au.pc $(TEST_BIN) $(BENCH_BIN)

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

$(BUILD)/libau.so: $(LIB_OBJ)
	@echo "  LD $@"
	@$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS)

CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c))
$(BUILD)/au: $(CLI_OBJ) $(BUILD)/libau.a
	@echo "  LD $@"
	@$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(BUILD)/libau.a
	@$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libau.a
	@$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

au.pc: FORCE
	@printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: au\nDescription: computations on ClickHouse through a queue\nVersion: 0.1.0\nRequires.private: %s\nCflags: -I$${includedir}\nLibs: -L$${libdir} -lau\n' \
		'$(PREFIX)' '$(PKGS)' > $@

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

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

soak: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/soak.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/au $(DESTDIR)$(PREFIX)/bin/au
	install -m 644 $(BUILD)/libau.a $(DESTDIR)$(PREFIX)/lib/libau.a
	install -m 755 $(BUILD)/libau.so $(DESTDIR)$(PREFIX)/lib/libau.so
	install -m 644 include/au.h $(DESTDIR)$(PREFIX)/include/au.h
	install -m 644 au.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/au.pc

clean:
	rm -rf build au au.pc

FORCE:
