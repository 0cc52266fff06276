#!/usr/bin/env bash
# check_gnu_stack.sh LIBPATH - fail unless the library has a GNU_STACK
# segment with flags RW (an executable stack, RWE, comes from an assembly
# file without `.section .note.GNU-stack,"",@progbits`; RELIABILITY.md H1).
set -euo pipefail

lib=${1:?usage: check_gnu_stack.sh LIBPATH}
if [[ ! -f $lib ]]; then
	echo "check_gnu_stack: no such file: $lib" >&2
	exit 1
fi

# readelf -lW: Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
line=$(readelf -lW "$lib" | awk '$1 == "GNU_STACK"')
if [[ -z $line ]]; then
	echo "check_gnu_stack: $lib has no GNU_STACK segment (the stack would be executable)" >&2
	exit 1
fi
flags=$(awk '{ f = ""; for (i = 7; i < NF; i++) f = f $i; print f }' <<<"$line")
if [[ $flags != RW ]]; then
	echo "check_gnu_stack: $lib GNU_STACK flags are '$flags', want RW:" >&2
	echo "  $line" >&2
	exit 1
fi
echo "check_gnu_stack: ok, GNU_STACK is RW"
