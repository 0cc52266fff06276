#!/usr/bin/env bash
# scripts/deps.sh - make sure the Debian packages weft builds with are installed.
#
# Silent and exit 0 when everything is there. Otherwise, as root: apt-get
# install the missing ones (from the configured Debian archive, nothing
# else); not root: say what to run and exit 1.
#
# Usage: scripts/deps.sh [EXTRA_PACKAGE...]: the extras are what one make
# target needs on top of the build (`make valgrind`: valgrind, which also
# ships valgrind/valgrind.h; `make fuzz`: clang-14 and libclang-rt-14-dev
# with libFuzzer and the sanitizer runtimes), so the other targets do not
# install them.
set -euo pipefail

pkgs=(liburing-dev libjemalloc-dev libgtest-dev cmake g++ pkg-config make spin "$@")

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "weft: not a Debian system (no dpkg-query); make sure these are installed: ${pkgs[*]}" >&2
	exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [[ $status != "install ok installed" ]]; then
		missing+=("$p")
	fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "weft: missing packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "weft: installing missing packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
if ! apt-get "${apt_opts[@]}" update -q </dev/null; then
	echo "weft: apt-get update failed; cannot install: ${missing[*]}" >&2
	exit 1
fi
if ! apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null; then
	echo "weft: apt-get install failed for: ${missing[*]}" >&2
	exit 1
fi
echo "weft: installed ${missing[*]}"
