/* SPDX-License-Identifier: MIT */
/*
 * runtime/cond.c - weft_cond: a condition variable over a weft_mutex
 * (asyncio.Condition).
 *
 * Layout (32 bytes, all-zero = no waiters): a spinlock and the FIFO of
 * waiter records on the waiters' stacks.
 *
 * Wait:
 *  1. Checks: a task, holding @m (-EPERM otherwise), no pending
 *     cancellation or expired deadline (then it returns at once, still
 *     holding @m, having released nothing).
 *  2. Under the cond's spinlock, prepare the wait and link the record
 *     (waitq.h step 2); drop the spinlock; unlock @m; park. Linking before
 *     the unlock is what makes "release and wait" atomic: a signal sent by
 *     anyone who took @m after us finds the record.
 *  3. Resumed: SOURCE means a signal or broadcast claimed us: 0. Otherwise
 *     (cancelled, deadline) unlink if still linked and fail.
 *  4. Either way re-take @m, uncancellably: the caller holds @m on return.
 *
 * Passing a signal on: signal pops the first record and claims it; if the
 * claim fails, that waiter had already been cancelled or timed out, so the
 * signal goes to the next record, and so on. A waiter therefore never
 * swallows a signal it cannot use: the claim decides, under the spinlock,
 * whether the signal was delivered (the waiter returns 0 even if it was
 * cancelled a moment later; its next suspension point reports that) or
 * passed on.
 *
 * Spurious wake-ups: none are generated today, but callers must loop on
 * their predicate anyway (API.md allows them; a later reactor-driven
 * implementation may need them).
 */
#include <errno.h>

#include "runtime/waitq.h"

struct cond_impl {
	_Atomic uint32_t lock; /* spinlock over q */
	uint32_t pad_;
	struct weft__waitq q; /* under lock */
	uint64_t pad2_;
};

_Static_assert(sizeof(struct cond_impl) <= sizeof(weft_cond),
	       "struct cond_impl must fit weft_cond");
_Static_assert(_Alignof(struct cond_impl) <= _Alignof(weft_cond),
	       "struct cond_impl alignment");
_Static_assert(sizeof(weft_cond) == 32, "API.md: weft_cond is 32 bytes");

static inline struct cond_impl *impl(weft_cond *c)
{
	return (struct cond_impl *)(void *)c;
}

WEFT_API int weft_cond_init(weft_cond *c)
{
	if (!c)
		return -EINVAL;
	*c = (weft_cond){ { 0 } };
	return 0;
}

WEFT_API void weft_cond_destroy(weft_cond *c)
{
	struct cond_impl *ci;
	bool waiters;

	if (!c)
		return;
	ci = impl(c);
	weft__spin_lock(&ci->lock);
	waiters = !weft__waitq_empty(&ci->q);
	weft__spin_unlock(&ci->lock);
	if (waiters)
		weft__report("weft_cond_destroy(%p): tasks are waiting on it; "
			     "not destroyed",
			     (void *)c);
}

WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m)
{
	struct weft__task *t = weft__task_current();
	struct weft__waiter wr;
	struct cond_impl *ci;
	int err, reason;

	if (!t)
		return -EPERM;
	if (!c || !m)
		return -EINVAL;
	if (!weft__mutex_held_by(m, t))
		return -EPERM;
	err = weft__pending_error(t);
	if (err)
		return err; /* m still held: nothing was released */
	ci = impl(c);
	weft__spin_lock(&ci->lock);
	weft__waiter_enqueue(&ci->q, &wr, t, true, false, false);
	/* Drop the spinlock before unlocking m (which may take m's own
	 * spinlock and claim another task): locks are never nested. The wait
	 * is prepared and linked, so nothing sent from here on is missed. */
	weft__spin_unlock(&ci->lock);
	weft_mutex_unlock(m);
	weft__set_wait_kind(t, WEFT__WK_COND); /* for dumps */
	reason = weft__waiter_sleep(&ci->lock, &ci->q, &wr, ci, NULL);
	weft__mutex_lock_nocancel(m);
	/* A timer for a deadline that moved later gives 0: a spurious
	 * wake-up, which callers handle anyway. */
	return reason == WEFT__WAKE_SOURCE ? 0 : weft__wake_error(t, reason);
}

WEFT_API void weft_cond_signal(weft_cond *c)
{
	struct weft__wakeups wk;
	struct cond_impl *ci;
	struct weft__waiter *w;

	wk.n = 0;
	if (!c) {
		weft__report("weft_cond_signal(NULL)");
		return;
	}
	ci = impl(c);
	weft__spin_lock(&ci->lock);
	while ((w = weft__waitq_pop(&ci->q)))
		if (weft__waiter_claim(w, &wk))
			break; /* delivered; else passed on to the next */
	weft__spin_unlock(&ci->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API void weft_cond_broadcast(weft_cond *c)
{
	struct weft__wakeups wk;
	struct cond_impl *ci;
	struct weft__waiter *w;

	wk.n = 0;
	if (!c) {
		weft__report("weft_cond_broadcast(NULL)");
		return;
	}
	ci = impl(c);
	weft__spin_lock(&ci->lock);
	while ((w = weft__waitq_pop(&ci->q)))
		weft__waiter_claim(w, &wk);
	weft__spin_unlock(&ci->lock);
	weft__wakeups_flush(&wk);
}

size_t weft__cond_nwaiters(weft_cond *c)
{
	struct cond_impl *ci = impl(c);
	size_t n;

	weft__spin_lock(&ci->lock);
	n = weft__waitq_len(&ci->q);
	weft__spin_unlock(&ci->lock);
	return n;
}
