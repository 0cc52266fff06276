#!/usr/bin/env bash
# check_loopback.sh SRCDIR - RELIABILITY H2: the examples and the library
# never bind every interface by default (0.0.0.0, INADDR_ANY, in6addr_any,
# "::"); a server listens on 127.0.0.1 unless told otherwise (-H HOST).
set -euo pipefail

src=${1:?usage: check_loopback.sh SRCDIR}
hits=$(grep -rnE '0\.0\.0\.0|INADDR_ANY|in6addr_any|IN6ADDR_ANY|"::"' \
	"$src/examples" "$src/io" "$src/runtime" "$src/include" || true)
if [[ -n $hits ]]; then
	echo "check_loopback: an any-address bind in the sources:" >&2
	echo "$hits" >&2
	exit 1
fi
echo "check_loopback: ok, nothing binds every interface by default"
