/* SPDX-License-Identifier: MIT */
/*
 * runtime/ctx.c - the C half of execution contexts (see ctx.h for the
 * switch protocol and the tool hooks; ctx_<arch>.S for the frame layout).
 *
 * This file prepares and retires contexts. The hot path, weft__ctx_switch(),
 * is inline in ctx.h; only the rare steps live here:
 *   - weft__ctx_make(): the assembly writes the first frame, C adds the
 *     tool state (TSan fiber, valgrind stack id);
 *   - weft__ctx_start(): where a fresh context's first switch lands (via
 *     the trampoline); it completes ASan's switch and calls the entry;
 *   - weft__ctx_switch_final() / weft__ctx_destroy(): the end of a context,
 *     split in two because the tool state of a context cannot be freed
 *     while running on it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_getattr_np */
#endif
#include "ctx.h"

#include <pthread.h>
#include <string.h>

void weft__ctx_thread_stack(const void **lo, size_t *size)
{
	pthread_attr_t attr;
	void *addr = NULL;
	size_t sz = 0;

	*lo = NULL;
	*size = 0;
	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return;
	if (pthread_attr_getstack(&attr, &addr, &sz) == 0) {
		*lo = addr;
		*size = sz;
	}
	pthread_attr_destroy(&attr);
}

void weft__ctx_init_thread(struct weft__ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->fp = weft__ctx_fp_read();
	weft__ctx_asan_init_thread(c);
	weft__ctx_tsan_init_thread(c);
}

void weft__ctx_make(struct weft__ctx *c, void *stack_lo, size_t size,
		    void (*entry)(void *), void *arg)
{
	memset(c, 0, sizeof(*c));
	c->stack_lo = stack_lo;
	c->stack_size = size;
	c->sp = weft__ctx_init_stack((char *)stack_lo + size, entry, arg);
	weft__ctx_tsan_make(c);
	weft__ctx_valgrind_make(c);
}

void weft__ctx_start(void (*entry)(void *), void *arg)
{
	/* First run: there is no fake stack of ours to restore. */
	weft__ctx_asan_after(NULL);
	entry(arg);
	weft__bug(__FILE__, __LINE__,
		  "a context entry returned (it must end with "
		  "weft__ctx_switch_final)");
}

void weft__ctx_switch_final(struct weft__ctx *from, struct weft__ctx *to)
{
	weft__ctx_asan_before_final(to);
	weft__ctx_tsan_before(to);
	weft__ctx_swap(&from->sp, to->sp);
	weft__bug(__FILE__, __LINE__, "a finished context was resumed");
}

void weft__ctx_destroy(struct weft__ctx *c)
{
	weft__ctx_tsan_destroy(c);
	weft__ctx_valgrind_destroy(c);
	c->asan_fake_stack = NULL;
}
