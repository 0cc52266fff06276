#!/usr/bin/env bash
# check_install.sh BUILD_DIR CMAKE CC [FLAGS] - install smoke test.
#
# Installs BUILD_DIR into a temporary prefix, then builds a small C program
# against the installed weft twice: with pkg-config (shared library) and
# with a CMake project using find_package(weft) (weft::weft and
# weft::weft_static). Each program must run and print weft_version().
# FLAGS (e.g. the sanitizer flags of BUILD_DIR) go to every compile and link.
# Everything lives under one temporary directory, removed on exit.
set -euo pipefail

build=${1:?usage: check_install.sh BUILD_DIR CMAKE CC [FLAGS]}
cmake=${2:?cmake}
cc=${3:?C compiler}
flags=${4:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-install-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "install_smoke: $*"; }
run_logged() {
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		echo "install_smoke: failed: $*" >&2
		cat "$log" >&2
		exit 1
	fi
}

step "cmake --install into $prefix"
run_logged "$tmp/install.log" "$cmake" --install "$build" --prefix "$prefix"

cat >"$tmp/hello.c" <<'C'
#include <stdio.h>
#include <weft.h>

int main(void)
{
	unsigned v = weft_version();

	printf("weft_version() = %u\n", v);
	return 0;
}
C

check_run() {
	local exe=$1 out
	out=$("$exe") || { echo "install_smoke: $exe failed" >&2; exit 1; }
	if [[ $out != "weft_version() = "* ]]; then
		echo "install_smoke: $exe printed '$out'" >&2
		exit 1
	fi
	step "$(basename "$exe"): $out"
}

# --- pkg-config
pc=$(find "$prefix" -name weft.pc -print -quit)
[[ -n $pc ]] || { echo "install_smoke: weft.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
libdir=$(pkg-config --variable=libdir weft)
step "pkg-config: $(pkg-config --cflags --libs weft)"
# shellcheck disable=SC2046,SC2086
run_logged "$tmp/pc-build.log" "$cc" $flags -o "$tmp/hello_pkgconfig" "$tmp/hello.c" \
	$(pkg-config --cflags --libs weft)
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} check_run "$tmp/hello_pkgconfig"

# --- CMake package
mkdir -p "$tmp/consumer"
cp "$tmp/hello.c" "$tmp/consumer/hello.c"
cat >"$tmp/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(weft_install_smoke LANGUAGES C)
find_package(weft 0.1 REQUIRED)
add_executable(hello_shared hello.c)
target_link_libraries(hello_shared PRIVATE weft::weft)
add_executable(hello_static hello.c)
target_link_libraries(hello_static PRIVATE weft::weft_static)
CMAKE
step "find_package(weft) consumer"
run_logged "$tmp/consumer-configure.log" "$cmake" -S "$tmp/consumer" -B "$tmp/consumer/build" \
	-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
	-DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags"
run_logged "$tmp/consumer-build.log" "$cmake" --build "$tmp/consumer/build"
check_run "$tmp/consumer/build/hello_shared"
check_run "$tmp/consumer/build/hello_static"
if ldd "$tmp/consumer/build/hello_static" | grep -q 'libweft\.so'; then
	echo "install_smoke: hello_static is linked to libweft.so" >&2
	exit 1
fi
step "ok"
