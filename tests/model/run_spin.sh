#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/model/run_spin.sh - model-check tests/model/deque.pml with spin
# (RELIABILITY 3.3; ctest label "model").
#
# Runs the exhaustive safety search (assertions, invalid end states) for
# the two configurations the model supports, CAP 2 with 3-bit indices and
# CAP 4 with 4-bit indices, each as
#   spin -a deque.pml && cc -O2 -DSAFETY pan.c -o pan && ./pan -m200000
# in a temporary directory, and fails on any error or an incomplete search.
# Then it checks that each known-wrong MUTANT of the model (see deque.pml)
# is caught, so a model that has stopped checking anything cannot pass.
#
# Exit: 0 all good; 1 a failure (the pan output is printed); 77 spin or a
# C compiler is missing (ctest SKIP_RETURN_CODE 77).
set -u

here=$(cd "$(dirname "$0")" && pwd)
model="$here/deque.pml"
cc=${CC:-cc}

if ! command -v spin >/dev/null 2>&1; then
	echo "SKIPPED: spin not installed (apt-get install spin)"
	exit 77
fi
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "SKIPPED: no C compiler ($cc) to build pan"
	exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-spin.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# run_pan NAME SPIN_DEFINES...: build and run one search in its own
# directory; leaves the output in $work/NAME/out.
run_pan() {
	local name=$1
	shift
	local dir="$work/$name"

	mkdir -p "$dir" && cp "$model" "$dir/" || return 2
	(
		cd "$dir" &&
		spin "$@" -a deque.pml >spin.log 2>&1 &&
		"$cc" -O2 -DSAFETY -w pan.c -o pan >cc.log 2>&1 &&
		./pan -m200000 >out 2>&1
	) || {
		cat "$dir"/*.log "$dir/out" 2>/dev/null
		return 2
	}
}

status=0

for cfg in "cap2:" "cap4:-DCAP=4 -DIBITS=4"; do
	name=${cfg%%:*}
	# shellcheck disable=SC2086 # word splitting of the defines is meant
	if ! run_pan "$name" ${cfg#*:}; then
		echo "FAIL $name: spin, cc or pan did not run"
		status=1
		continue
	fi
	out="$work/$name/out"
	states=$(awk '/states, stored/ { print $1; exit }' "$out")
	if grep -q 'errors: 0$' "$out" &&
	   ! grep -Eq 'max search depth too small|Search not completed' "$out"; then
		echo "ok   $name: $states states, errors: 0"
	else
		echo "FAIL $name:"
		cat "$out"
		status=1
	fi
done

# The mutants on the CAP 2 configuration (each fails within a second).
for m in 1 2 3 4; do
	name=mutant$m
	if ! run_pan "$name" -DMUTANT=$m; then
		echo "FAIL $name: spin, cc or pan did not run"
		status=1
		continue
	fi
	out="$work/$name/out"
	if grep -Eq 'errors: [1-9]' "$out"; then
		echo "ok   $name caught: $(grep -m1 '^pan:1:' "$out")"
	else
		echo "FAIL $name: the model did not catch a known bug"
		cat "$out"
		status=1
	fi
done

exit $status
