#!/usr/bin/env bash
# check_cet.sh LIBPATH "C_FLAGS" - RELIABILITY H6 (CET/IBT): every entry
# point of the context switch (runtime/ctx_x86_64.S) starts with endbr64,
# in every build, since an indirect call or jump may reach it once IBT is
# enforced; and in a build with -fcf-protection=full or =branch in C_FLAGS,
# so does every exported weft_* function. (The linked library carries no
# IBT property note on Debian 12: its crt objects have none. The object
# of ctx_x86_64.S advertises IBT only, never SHSTK: see its header.)
# Exit 77 (skipped) off x86-64.
set -euo pipefail

lib=${1:?usage: check_cet.sh LIBPATH C_FLAGS}
flags=${2:-}
if [[ $(uname -m) != x86_64 ]]; then
	echo "check_cet: skipped, not x86-64"
	exit 77
fi
if [[ ! -f $lib ]]; then
	echo "check_cet: no such file: $lib" >&2
	exit 1
fi

# name -> first instruction's mnemonic, for every function in .text.
declare -A first
while IFS=$'\t' read -r name insn; do
	first[$name]=$insn
done < <(objdump -d --no-show-raw-insn -j .text "$lib" | awk '
	/^[0-9a-f]+ <[^>]+>:$/ { name = substr($2, 2, length($2) - 3); want = 1; next }
	want && /^ *[0-9a-f]+:\t/ { split($0, f, "\t"); split(f[2], w, " ");
		print name "\t" w[1]; want = 0 }')

fail=0
check() {
	local name=$1
	if [[ -z ${first[$name]+x} ]]; then
		echo "check_cet: $name not found in .text" >&2
		fail=1
	elif [[ ${first[$name]} != endbr64 ]]; then
		echo "check_cet: $name starts with '${first[$name]}', not endbr64" >&2
		fail=1
	fi
}

src="$(dirname "${BASH_SOURCE[0]}")/../runtime/ctx_x86_64.S"
ctx=$(awk '$1 == ".globl" { print $2 }' "$src")
if [[ -z $ctx ]]; then
	echo "check_cet: no entry points found in $src" >&2
	exit 1
fi
n=0
for f in $ctx; do
	check "$f"
	n=$((n + 1))
done
what="$n context-switch entry points"
if [[ $flags =~ fcf-protection=(full|branch) ]]; then
	m=0
	for f in $(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^weft_/ { print $3 }'); do
		check "$f"
		m=$((m + 1))
	done
	if [[ $m -lt 50 ]]; then
		echo "check_cet: only $m exported functions found" >&2
		fail=1
	fi
	what="$what and $m exported functions"
fi
[[ $fail -eq 0 ]] || exit 1
echo "check_cet: ok, $what start with endbr64"
