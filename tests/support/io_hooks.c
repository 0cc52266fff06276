/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * tests/support/io_hooks.c - test-only helpers for the I/O suites that
 * need runtime internals (C, since runtime/sched.h is C only).
 *
 * io_test_set_deadline(): stands in for a cancel scope (weft_scope lands
 * on main separately): sets the calling task's scope deadline, which every
 * suspension point uses through weft__wait_deadline().
 */
#include "runtime/sched.h"
#include "tests/support/io_hooks.h"

void io_test_set_deadline(uint64_t deadline_ns)
{
	struct weft__task *t = weft__task_current();

	if (t)
		t->scope_deadline_ns = deadline_ns;
}

void io_test_stats(weft_runtime *h, uint64_t *submitted, uint64_t *completed)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;

	*submitted = *completed = 0;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		*submitted += atomic_load(&rt->workers[i]->stats.io_submitted);
		*completed += atomic_load(&rt->workers[i]->stats.io_completed);
	}
}
