#!/usr/bin/env bash
# scripts/fuzz.sh BUILD_DIR SECONDS - run every libFuzzer target of a
# WEFT_FUZZ build (the list is BUILD_DIR/tests/fuzz/targets.txt) over its
# seed corpus plus SECONDS of fuzzing. New inputs go to a fresh temporary
# directory, so tests/fuzz/corpus/ is only read. Exits 1 if any target
# fails; the crashing input is kept in BUILD_DIR/fuzz-artifacts/.
set -euo pipefail

build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
secs=${2:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
list="$build/tests/fuzz/targets.txt"
[[ $secs =~ ^[0-9]+$ ]] || { echo "weft: FUZZ_SECONDS must be a number of seconds, not '$secs'" >&2; exit 1; }
[[ -f $list ]] || { echo "weft: $list not found; build the fuzz preset first" >&2; exit 1; }

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
while read -r name; do
	[[ -n $name ]] || continue
	seeds="$root/tests/fuzz/corpus/${name%_fuzz}"
	mkdir -p "$tmp/$name"
	start=$SECONDS
	rc=0
	# -timeout: one input running 10 s is a hang; the outer timeout
	# catches a fuzzer that never returns at all.
	timeout -k 10 $((secs + 120)) "$build/tests/fuzz/$name" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
		-print_final_stats=1 \
		-artifact_prefix="$artifacts/$name-" \
		"$tmp/$name" "$seeds" >"$tmp/$name.log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$name.log")
	if [[ $rc -ne 0 ]]; then
		tail -n 60 "$tmp/$name.log"
		echo "=== $name: FAILED (exit $rc) after $((SECONDS - start)) s; inputs in $artifacts/"
		failed+=("$name")
	else
		echo "=== $name: ok, ${runs:-?} runs in $((SECONDS - start)) s"
	fi
done <"$list"

if [[ ${#failed[@]} -ne 0 ]]; then
	echo "weft: fuzz targets failed: ${failed[*]}" >&2
	exit 1
fi
