// SPDX-License-Identifier: MIT
// tests/fuzz/fuzz_check.h - the C++ fuzz targets' model check: a failed
// CHECK names the condition and the op index, then aborts (libFuzzer keeps
// the input); and, after <weft.h>, the session's one-worker runtime.
// Define FUZZ_NAME before including it.
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

#define CHECK(cond, step)                                    \
	do {                                                 \
		if (!(cond))                                 \
			fuzz_fail(FUZZ_NAME, #cond, (step)); \
	} while (0)

#ifdef WEFT_H
// The one-worker runtime a model-based target keeps for the whole session
// (made by its LLVMFuzzerInitialize; aborts if it cannot be made).
inline weft_runtime *fuzz_one_worker_runtime()
{
	weft_config cfg = {};
	weft_runtime *rt;

	cfg.workers = 1;
	if (weft_runtime_new(&rt, &cfg) != 0) {
		fprintf(stderr, "%s: weft_runtime_new failed\n", FUZZ_NAME);
		abort();
	}
	return rt;
}
#endif

#endif
