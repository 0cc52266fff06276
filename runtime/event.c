/* SPDX-License-Identifier: MIT */
/*
 * runtime/event.c - weft_event: a flag tasks wait for (asyncio.Event).
 *
 * Layout (32 bytes, all-zero = clear): the flag, a spinlock, and the FIFO
 * of waiter records on the waiters' stacks.
 *
 * Guarantees and how:
 *  - A waiter never misses a set: it tests the flag and links itself under
 *    the spinlock; set raises the flag and takes every linked waiter under
 *    the same spinlock.
 *  - Every task waiting when set runs returns 0, even if the event is
 *    cleared before it runs: set claims each waiter with SOURCE (waitq.h
 *    step 4) and the waiter does not look at the flag again. A waiter whose
 *    claim fails had already been cancelled or timed out, and fails.
 *  - Setting a set event takes no lock: while the flag is up, no waiter can
 *    be linked (waiters link only after seeing it down, under the lock, and
 *    the set that raised it emptied the list under that lock).
 */
#include <errno.h>

#include "runtime/waitq.h"

struct event_impl {
	/* 1: set. Raised under lock (weft_event_set), lowered without it
	 * (weft_event_clear), read by anyone. */
	_Atomic uint32_t set;
	_Atomic uint32_t lock; /* spinlock over q */
	struct weft__waitq q; /* under lock */
	uint64_t pad_;
};

_Static_assert(sizeof(struct event_impl) <= sizeof(weft_event),
	       "struct event_impl must fit weft_event");
_Static_assert(_Alignof(struct event_impl) <= _Alignof(weft_event),
	       "struct event_impl alignment");
_Static_assert(sizeof(weft_event) == 32, "API.md: weft_event is 32 bytes");

static inline struct event_impl *impl(weft_event *e)
{
	return (struct event_impl *)(void *)e;
}

WEFT_API int weft_event_init(weft_event *e)
{
	if (!e)
		return -EINVAL;
	*e = (weft_event){ { 0 } };
	return 0;
}

WEFT_API void weft_event_destroy(weft_event *e)
{
	struct event_impl *ei;
	bool waiters;

	if (!e)
		return;
	ei = impl(e);
	weft__spin_lock(&ei->lock);
	waiters = !weft__waitq_empty(&ei->q);
	weft__spin_unlock(&ei->lock);
	if (waiters)
		weft__report("weft_event_destroy(%p): tasks are waiting on it; "
			     "not destroyed",
			     (void *)e);
}

WEFT_API void weft_event_set(weft_event *e)
{
	struct weft__wakeups wk;
	struct event_impl *ei;
	struct weft__waiter *w;

	wk.n = 0;
	if (!e) {
		weft__report("weft_event_set(NULL)");
		return;
	}
	ei = impl(e);
	/* acquire: pairs with the release store below of the set that
	 * raised it (which also emptied the list). */
	if (atomic_load_explicit(&ei->set, memory_order_acquire))
		return;
	weft__spin_lock(&ei->lock);
	/* release: what the setter did before is visible to every task
	 * that sees the flag (weft_event_is_set(), a lock-free wait). */
	atomic_store_explicit(&ei->set, 1, memory_order_release);
	while ((w = weft__waitq_pop(&ei->q)))
		/* The claim's release publishes our writes to the waiter. A
		 * failed claim: the waiter gave up and fails on its own. */
		weft__waiter_claim(w, &wk);
	weft__spin_unlock(&ei->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API void weft_event_clear(weft_event *e)
{
	if (!e) {
		weft__report("weft_event_clear(NULL)");
		return;
	}
	atomic_store_explicit(&impl(e)->set, 0, memory_order_relaxed);
}

WEFT_API bool weft_event_is_set(const weft_event *e)
{
	if (!e)
		return false;
	/* acquire: pairs with the release store in weft_event_set(). */
	return atomic_load_explicit(&impl((weft_event *)e)->set,
				    memory_order_acquire) != 0;
}

WEFT_API int weft_event_wait(weft_event *e)
{
	struct weft__task *t = weft__task_current();
	struct weft__waiter wr;
	struct event_impl *ei;
	int err, reason;

	if (!t)
		return -EPERM;
	if (!e)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	ei = impl(e);
	for (;;) {
		if (atomic_load_explicit(&ei->set, memory_order_acquire))
			return 0;
		weft__spin_lock(&ei->lock);
		if (atomic_load_explicit(&ei->set, memory_order_relaxed)) {
			weft__spin_unlock(&ei->lock);
			return 0;
		}
		weft__waiter_enqueue(&ei->q, &wr, t, true, false, false);
		weft__set_wait_kind(t, WEFT__WK_EVENT); /* for dumps */
		reason = weft__waiter_park(&ei->lock, &ei->q, &wr, ei);
		if (reason == WEFT__WAKE_SOURCE)
			return 0;
		err = weft__wake_error(t, reason);
		if (err)
			return err;
	}
}

size_t weft__event_nwaiters(weft_event *e)
{
	struct event_impl *ei = impl(e);
	size_t n;

	weft__spin_lock(&ei->lock);
	n = weft__waitq_len(&ei->q);
	weft__spin_unlock(&ei->lock);
	return n;
}
