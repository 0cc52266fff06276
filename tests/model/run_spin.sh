#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/model/run_spin.sh [MODEL [SPIN_DEFINE...]] - model-check one of the
# spin models in tests/model/ (RELIABILITY 3.3; ctest label "model").
#
#   deque (the default, also with no argument): tests/model/deque.pml, the
#     Chase-Lev deque: the exhaustive safety search (assertions, invalid
#     end states) for the two configurations the model supports, CAP 2
#     with 3-bit indices and CAP 4 with 4-bit indices, each as
#       spin -a deque.pml && cc -O2 -DSAFETY pan.c -o pan && ./pan -m200000
#     then its known-wrong MUTANTs must each be caught.
#   park: tests/model/park.pml, idle workers parking and being woken (2
#     workers, a foreign submitter with a pinned task, a spawning task):
#     the safety search, then the liveness run (ltl all_run, pan -a -f:
#     acceptance cycles under weak fairness), then MUTANT 1 must be caught.
#   park_two_submitters: park.pml with two foreign submitters (NSUB=2):
#     safety and liveness. This finds the lost wake-up described in
#     park.pml ("FOUND") as long as runtime/sched.c decrements nsearching
#     after unlocking idle_lock; pass -DFIX_NOTIFY_DEC to check the fixed
#     protocol.
#   task_state: tests/model/task_state.pml, the wait-word protocol of
#     runtime/wait.c with three wake sources (EPISODES=3), then its
#     MUTANTs 1-3 must be caught.
# Extra arguments are passed to spin as defines (-DNAME=VALUE).
# Each search runs in a temporary directory and fails on any error or an
# incomplete search (search depth too small).
#
# Exit: 0 all good; 1 a failure (the pan output is printed); 2 usage; 77
# spin or a C compiler is missing (ctest SKIP_RETURN_CODE 77).
set -u

here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
what=${1:-deque}
[[ $# -gt 0 ]] && shift
extra=("$@")

case $what in
deque | park | park_two_submitters | task_state) ;;
*)
	echo "usage: $0 [deque|park|park_two_submitters|task_state] [-DNAME=VALUE...]" >&2
	exit 2
	;;
esac

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

# How run_pan builds and runs pan; set per search.
pml=deque.pml			# the model file, in this directory
cc_flags=(-DSAFETY)		# pan build flags
pan_flags=(-m200000)		# pan run flags

# run_pan NAME SPIN_DEFINES...: build and run one search in its own
# directory; leaves the output in $work/NAME/out.
run_pan() {
	local name=$1
	shift
	local dir="$work/$name"

	mkdir -p "$dir" && cp "$here/$pml" "$dir/" || return 2
	(
		cd "$dir" &&
		spin "$@" -a "$pml" >spin.log 2>&1 &&
		"$cc" -O2 "${cc_flags[@]}" -w pan.c -o pan >cc.log 2>&1 &&
		./pan "${pan_flags[@]}" >out 2>&1
	) || {
		cat "$dir"/*.log "$dir/out" 2>/dev/null
		return 2
	}
}

status=0

# expect_clean NAME SPIN_DEFINES...: the search must complete, error-free.
expect_clean() {
	local name=$1
	shift
	if ! run_pan "$name" "$@"; then
		echo "FAIL $name: spin, cc or pan did not run"
		status=1
		return
	fi
	local out="$work/$name/out"
	local states
	states=$(awk '/states, stored/ { print $1; exit }' "$out")
	if grep -q 'errors: 0$' "$out" &&
	   ! grep -Eq 'max search depth too small|Search not completed' "$out"; then
		echo "ok   $name: $states states, errors: 0"
	else
		echo "FAIL $name:"
		cat "$out"
		status=1
	fi
}

# expect_caught NAME SPIN_DEFINES...: the search must report an error.
expect_caught() {
	local name=$1
	shift
	if ! run_pan "$name" "$@"; then
		echo "FAIL $name: spin, cc or pan did not run"
		status=1
		return
	fi
	local out="$work/$name/out"
	if grep -Eq 'errors: [1-9]' "$out"; then
		echo "ok   $name caught: $(grep -m1 '^pan:1:' "$out")"
	else
		echo "FAIL $name: the model did not catch a known bug"
		cat "$out"
		status=1
	fi
}

case $what in
deque)
	for cfg in "cap2:" "cap4:-DCAP=4 -DIBITS=4"; do
		# shellcheck disable=SC2086 # word splitting of the defines is meant
		expect_clean "${cfg%%:*}" ${cfg#*:} "${extra[@]}"
	done
	# The mutants on the CAP 2 configuration (each fails within a second).
	for m in 1 2 3 4; do
		expect_caught mutant$m -DMUTANT=$m "${extra[@]}"
	done
	;;
park)
	pml=park.pml
	# COLLAPSE: about 5 M states, well under 1 GiB.
	cc_flags=(-DSAFETY -DCOLLAPSE)
	pan_flags=(-m1000000)
	expect_clean safety "${extra[@]}"
	cc_flags=(-DCOLLAPSE)
	pan_flags=(-a -f -m1000000)
	expect_clean liveness -DLIVENESS -DNSUBMIT=1 "${extra[@]}"
	cc_flags=(-DSAFETY)
	pan_flags=(-m1000000)
	expect_caught mutant1 -DMUTANT=1 "${extra[@]}"
	;;
park_two_submitters)
	pml=park.pml
	two=(-DNSUB=2 -DNSUBMIT=1 -DPINNED=0 -DNSPAWN=0)
	cc_flags=(-DSAFETY -DCOLLAPSE)
	pan_flags=(-m2000000)
	expect_clean safety "${two[@]}" "${extra[@]}"
	cc_flags=(-DCOLLAPSE)
	pan_flags=(-a -f -m2000000)
	expect_clean liveness -DLIVENESS "${two[@]}" "${extra[@]}"
	cc_flags=(-DSAFETY -DCOLLAPSE)
	pan_flags=(-m2000000)
	expect_caught old_notify "${two[@]}" -DOLD_NOTIFY_DEC "${extra[@]}"
	;;
task_state)
	pml=task_state.pml
	pan_flags=(-m1000000)
	expect_clean safety -DEPISODES=3 "${extra[@]}"
	for m in 1 2 3; do
		expect_caught mutant$m -DMUTANT=$m "${extra[@]}"
	done
	;;
esac

exit $status
