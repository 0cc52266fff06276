#!/usr/bin/env bash
# check_exports.sh LIBPATH - fail if libweft.so exports anything but weft_*.
#
# Symbols are hidden by default and WEFT_API exports (STYLE.md). Ignored:
# _init/_fini and the symbols the linker adds (__bss_start, _edata, _end, ...).
set -euo pipefail

lib=${1:?usage: check_exports.sh LIBPATH}
if [[ ! -f $lib ]]; then
	echo "check_exports: no such file: $lib" >&2
	exit 1
fi

# "ADDR TYPE NAME[@VERSION]"; keep the name only.
all=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }')
bad=$(printf '%s\n' "$all" | grep -Ev \
	'^(weft_.*|_init|_fini|__bss_start|_edata|_end|__end__|_bss_end__|__bss_end__|__bss_start__|_fbss|_fdata|_ftext)$' \
	| grep -v '^$' || true)
count=$(printf '%s\n' "$all" | grep -c '^weft_' || true)

if [[ -n $bad ]]; then
	echo "check_exports: $lib exports symbols outside the weft_ namespace:" >&2
	printf '  %s\n' $bad >&2
	echo "Make them static, or internal (weft__*, hidden by default), or WEFT_API weft_*." >&2
	exit 1
fi
if [[ $count -eq 0 ]]; then
	echo "check_exports: $lib exports no weft_* symbol at all (WEFT_API missing?)" >&2
	exit 1
fi
echo "check_exports: ok, $count weft_* symbols exported"
