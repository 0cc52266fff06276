/* SPDX-License-Identifier: MIT */
/* tests/support/stack_hooks.h - see stack_hooks.c. */
#ifndef WEFT_TESTS_STACK_HOOKS_H
#define WEFT_TESTS_STACK_HOOKS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The stack the calling task runs on: usable bytes [*lo, *lo + *size),
 * with the guard page(s) right below *lo. A child run inline on its
 * joiner's stack gets the joiner's. Return 0, or -EPERM outside a task.
 */
int stack_test_current(void **lo, size_t *size);

#ifdef __cplusplus
}
#endif
#endif
