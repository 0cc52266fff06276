// SPDX-License-Identifier: MIT
// tests/fuzz/fuzz_check.h - the C++ fuzz targets' model check: a failed
// CHECK names the condition and the op index, then aborts (libFuzzer keeps
// the input). Define FUZZ_NAME before including it.
#ifndef WEFT_TESTS_FUZZ_CHECK_H
#define WEFT_TESTS_FUZZ_CHECK_H

#include <cstddef>
#include <cstdio>
#include <cstdlib>

[[noreturn]] inline void fuzz_fail(const char *target, const char *what,
				   size_t step)
{
	fprintf(stderr, "%s: %s (at op %zu)\n", target, what, step);
	abort();
}

#define CHECK(cond, step)                                        \
	do {                                                     \
		if (!(cond))                                     \
			fuzz_fail(FUZZ_NAME, #cond, (step));     \
	} while (0)

#endif
