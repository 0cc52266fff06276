#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/check_must_use.sh CC INCLUDE_DIR - a spawn whose handle is dropped
# must not compile quietly (the "task was never awaited" pitfall of the
# seeds): weft_spawn/weft_spawn_named warn (warn_unused_result), so a build
# with -Werror fails; a handle that is joined or detached compiles cleanly.
set -u
cc=$1 inc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/dropped.c" <<'C'
#include <weft.h>
static int f(void *a) { (void)a; return 0; }
int g(void);
int g(void) { weft_spawn(f, 0); return 0; }
C
cat > "$tmp/named.c" <<'C'
#include <weft.h>
static int f(void *a) { (void)a; return 0; }
int g(void);
int g(void) { weft_spawn_named("x", f, 0); return 0; }
C
cat > "$tmp/kept.c" <<'C'
#include <weft.h>
static int f(void *a) { (void)a; return 0; }
int g(void);
int g(void) { weft_detach(weft_spawn(f, 0)); return weft_join(weft_spawn(f, 0)); }
C
fail=0
for s in dropped named; do
	if "$cc" -std=gnu17 -Wall -Werror -c -o "$tmp/$s.o" -I "$inc" "$tmp/$s.c" 2>/dev/null; then
		echo "FAIL: $s.c compiled: a dropped spawn handle is not diagnosed"
		fail=1
	fi
done
if ! "$cc" -std=gnu17 -Wall -Werror -c -o "$tmp/kept.o" -I "$inc" "$tmp/kept.c"; then
	echo "FAIL: kept.c (joined and detached handles) does not compile"
	fail=1
fi
[ $fail -eq 0 ] && echo "ok: dropped spawn handles are diagnosed"
exit $fail
