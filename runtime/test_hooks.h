/* SPDX-License-Identifier: MIT */
/*
 * runtime/test_hooks.h - fault-injection hooks of WEFT_TEST_HOOKS builds
 * (RELIABILITY.md 3.5). Exported with the weft_test_ prefix so tests reach
 * them through the normal library; absent from release builds.
 */
#ifndef WEFT_RUNTIME_TEST_HOOKS_H
#define WEFT_RUNTIME_TEST_HOOKS_H

#include "weft/base.h"

WEFT_EXTERN_C_BEGIN

#ifdef WEFT_TEST_HOOKS
/* Let n more runtime allocations succeed, then fail every one (-1: off). */
WEFT_API void weft_test_fail_alloc_after(long n);
/* How many runtime allocation points were passed so far. */
WEFT_API unsigned long weft_test_alloc_count(void);
struct weft_runtime;
/* Tasks of rt spawned and not yet finished, other than the calling one. */
WEFT_API uint64_t weft_test_live_tasks(struct weft_runtime *rt);
#endif

WEFT_EXTERN_C_END
#endif
