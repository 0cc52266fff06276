/* SPDX-License-Identifier: MIT */
/*
 * tests/support/stack_hooks.c - test-only access to the running task's
 * stack (C, since runtime/sched.h is C only): the stack tests need its
 * bounds to recurse to within a page of the guard (RELIABILITY G3).
 */
#include <errno.h>

#include "runtime/sched.h"
#include "runtime/stack.h"
#include "tests/support/stack_hooks.h"

int stack_test_current(void **lo, size_t *size)
{
	struct weft__task *t = weft__task_current();

	if (!t || !t->stack)
		return -EPERM;
	*lo = t->stack->lo;
	*size = t->stack->size;
	return 0;
}
