# weft - a thin wrapper around the CMake presets (CMakePresets.json).
# `make` alone prints the targets. Each target works from a clean clone:
# it installs what it needs (scripts/deps.sh), configures, builds, runs.

SHELL := /bin/bash
MAKEFLAGS += --no-print-directory
NPROC := $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest
CTEST_FLAGS := --output-on-failure
FUZZ_SECONDS ?= 60
# make chaos: the seed is the commit's (a new one per commit, the same on
# every run of it); CHAOS_SEED=N replays another.
CHAOS_SEED ?= $(shell h=$$(git rev-parse --short=8 HEAD 2>/dev/null) && printf '%d' 0x$$h || echo 1)
CHAOS_PERMILLE ?= 20
FORMAT_DIRS := $(wildcard runtime io include tests perf examples)

.DEFAULT_GOAL := help
.PHONY: help deps test test-epoll stress chaos bench asan tsan hardened valgrind \
	fuzz format clean build-debug build-release build-asan build-tsan \
	build-hardened build-valgrind build-fuzz

help:
	@echo "weft make targets:"
	@echo "  make test     debug build, ctest without the stress label"
	@echo "  make test-epoll  the same suite with WEFT_IO=epoll (every runtime on the epoll backend)"
	@echo "  make stress   debug build, ctest -L stress"
	@echo "  make chaos    the stress suite in chaos mode (WEFT_CHAOS=CHAOS_SEED:CHAOS_PERMILLE, runtime/chaos.c)"
	@echo "  make bench    release build, build/release/perf/weft-bench --quick"
	@echo "  make asan     ASan+UBSan build, ctest without the stress label"
	@echo "  make tsan     TSan build, all tests with WEFT_TEST_SCALE=10"
	@echo "  make hardened Release + _FORTIFY_SOURCE/CET/stack-clash, unit suite on both backends"
	@echo "  make valgrind -O1 build, a subset of the unit tests under valgrind memcheck (epoll)"
	@echo "  make fuzz     clang-14 libFuzzer targets (tests/fuzz), FUZZ_SECONDS=$(FUZZ_SECONDS) s each over their corpus"
	@echo "  make format   clang-format -i over the C/C++ sources"
	@echo "  make deps     install the Debian packages weft needs (scripts/deps.sh)"
	@echo "  make clean    remove build/ and the compile_commands.json link"

deps:
	@bash scripts/deps.sh

# build-<preset>: configure and build one preset into build/<preset>.
define preset_build
	$(CMAKE) --preset $(1)
	$(CMAKE) --build --preset $(1) -j$(NPROC)
endef

build-debug: deps
	$(CMAKE) --preset debug
	@ln -sf build/debug/compile_commands.json compile_commands.json
	$(CMAKE) --build --preset debug -j$(NPROC)

build-release: deps
	$(call preset_build,release)

build-asan: deps
	$(call preset_build,asan)

build-tsan: deps
	$(call preset_build,tsan)

build-hardened: deps
	$(call preset_build,hardened)

# Only the test binaries scripts/valgrind.sh runs (examples and perf are
# not needed); deps.sh installs valgrind for this target alone.
VALGRIND_TESTS = $(shell bash scripts/valgrind.sh --list)
build-valgrind:
	@bash scripts/deps.sh valgrind
	$(CMAKE) --preset valgrind
	$(CMAKE) --build --preset valgrind -j$(NPROC) --target $(VALGRIND_TESTS)

# clang-14 and libFuzzer are needed here only, not by `make test`.
build-fuzz:
	@bash scripts/deps.sh clang-14 libclang-rt-14-dev
	$(call preset_build,fuzz)

test: build-debug
	$(CTEST) --test-dir build/debug $(CTEST_FLAGS) --no-tests=error -j2 -LE stress

# RELIABILITY 3.5: the whole suite again on the epoll backend (tests of
# io_uring-only behaviour skip themselves there).
test-epoll: build-debug
	WEFT_IO=epoll $(CTEST) --test-dir build/debug $(CTEST_FLAGS) --no-tests=error -j2 -LE 'stress|model'

stress: build-debug
	$(CTEST) --test-dir build/debug $(CTEST_FLAGS) -L stress

# RELIABILITY 3.1: the stress suite again with every protocol point of the
# runtime yielding or spinning 0-50 us now and then (runtime/chaos.c). The
# seed is printed; `make chaos CHAOS_SEED=N` replays a failing one.
chaos: build-debug
	@echo "weft: chaos run, WEFT_CHAOS=$(CHAOS_SEED):$(CHAOS_PERMILLE)"
	WEFT_CHAOS=$(CHAOS_SEED):$(CHAOS_PERMILLE) $(CTEST) --test-dir build/debug $(CTEST_FLAGS) -j2 -L stress

bench: build-release
	@test -x build/release/perf/weft-bench || { echo "weft: build/release/perf/weft-bench was not built (no perf/*.c?)" >&2; exit 1; }
	build/release/perf/weft-bench --quick

asan: build-asan
	$(CTEST) --test-dir build/asan $(CTEST_FLAGS) --no-tests=error -j2 -LE stress

tsan: build-tsan
	WEFT_TEST_SCALE=10 $(CTEST) --test-dir build/tsan $(CTEST_FLAGS) --no-tests=error -j2

# RELIABILITY 3.7: Release with _FORTIFY_SOURCE, CET and stack-clash
# protection; the unit suite on both backends (the overflow death tests
# run here with weft's own SIGSEGV handler, which ASan replaces).
hardened: build-hardened
	$(CTEST) --test-dir build/hardened $(CTEST_FLAGS) --no-tests=error -j2 -LE stress
	WEFT_IO=epoll $(CTEST) --test-dir build/hardened $(CTEST_FLAGS) --no-tests=error -j2 -LE 'stress|model'

# RELIABILITY 3.7: memcheck over a subset of the unit tests, on epoll and
# one worker (scripts/valgrind.sh says why, and which tests it skips).
valgrind: build-valgrind
	bash scripts/valgrind.sh build/valgrind

# RELIABILITY 3.6: each libFuzzer target replays its seed corpus
# (tests/fuzz/corpus/<name>, never modified) and fuzzes for FUZZ_SECONDS
# more; a crash, a model mismatch or a hang fails the target.
fuzz: build-fuzz
	bash scripts/fuzz.sh build/fuzz $(FUZZ_SECONDS)

format:
	@command -v clang-format >/dev/null || { echo "weft: clang-format not found (apt-get install clang-format)" >&2; exit 1; }
	find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' -o -name '*.cc' \) -print0 | xargs -0 -r clang-format -i

clean:
	rm -rf build compile_commands.json
