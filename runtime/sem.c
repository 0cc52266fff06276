/* SPDX-License-Identifier: MIT */
/*
 * runtime/sem.c - weft_sem: a counting semaphore with the mutex's rules
 * (barging, 1 ms starvation hand-over; see mutex.c), usable from any
 * thread for release and try_acquire.
 *
 * Layout (32 bytes, all-zero = 0 units):
 *   word   count in the low 32 bits, S_WAITERS (bit 32): "the list may be
 *          non-empty, release must look". WAITERS is set only under the
 *          spinlock. Units are taken by CAS (count > 0 -> count - 1).
 *   lock   spinlock over the waiter list.
 *   q      FIFO of waiter records on the waiters' stacks.
 *
 * Acquire: CAS a unit; else under the spinlock fetch_or WAITERS and retry
 * the CAS (a release racing it either came first and we see its unit, or
 * sees WAITERS and takes the slow path, which waits for our spinlock);
 * else queue and park. Resumed with "granted": the releaser handed us its
 * unit (the count never saw it). Resumed without: we were woken to retry;
 * losing to a barger re-queues us in enqueue-time order.
 *
 * Release (slow path, WAITERS set), under the spinlock:
 *  1. While the first waiter has waited >= WEFT__STARVE_NS: pop it, mark it
 *     granted and claim it. Claimed: the unit went to it, done. Failed (it
 *     was cancelled first): take the grant back, next waiter.
 *  2. Else add the unit to the count, and wake the first waiter whose claim
 *     succeeds, to retry. Each unit added while waiters are queued wakes
 *     one of them, so free units never sit beside a stalled queue.
 * A waiter woken to retry that is then cancelled still takes a unit if one
 * is free (returns 0; the next suspension point fails); otherwise a barger
 * took it and it fails without re-queueing. Either way every unit is held
 * by exactly one task or counted: permits are never leaked or duplicated.
 */
#include <errno.h>
#include <limits.h>

#include "runtime/waitq.h"

#define S_COUNT_MASK UINT64_C(0xffffffff)
#define S_WAITERS (UINT64_C(1) << 32)

struct sem_impl {
	_Atomic uint64_t word; /* count | S_WAITERS */
	_Atomic uint32_t lock; /* spinlock over q */
	uint32_t pad_;
	struct weft__waitq q; /* under lock */
};

_Static_assert(sizeof(struct sem_impl) <= sizeof(weft_sem),
	       "struct sem_impl must fit weft_sem");
_Static_assert(_Alignof(struct sem_impl) <= _Alignof(weft_sem),
	       "struct sem_impl alignment");
_Static_assert(sizeof(weft_sem) == 32, "API.md: weft_sem is 32 bytes");

static inline struct sem_impl *impl(weft_sem *s)
{
	return (struct sem_impl *)(void *)s;
}

WEFT_API int weft_sem_init(weft_sem *s, unsigned value)
{
	if (!s || value > INT_MAX)
		return -EINVAL;
	*s = (weft_sem){ { 0 } };
	atomic_store_explicit(&impl(s)->word, value, memory_order_relaxed);
	return 0;
}

WEFT_API void weft_sem_destroy(weft_sem *s)
{
	struct sem_impl *si;
	bool waiters;

	if (!s)
		return;
	si = impl(s);
	weft__spin_lock(&si->lock);
	waiters = !weft__waitq_empty(&si->q);
	weft__spin_unlock(&si->lock);
	if (waiters)
		weft__report("weft_sem_destroy(%p): tasks are waiting on it; "
			     "not destroyed",
			     (void *)s);
}

/* Take a unit if the count is > 0, keeping WAITERS. */
static inline bool try_take(struct sem_impl *si)
{
	uint64_t w = atomic_load_explicit(&si->word, memory_order_relaxed);

	while (w & S_COUNT_MASK) {
		/* acquire: pairs with the release that added the unit, so
		 * what the releaser did before is visible to the taker. */
		if (atomic_compare_exchange_weak_explicit(&si->word, &w, w - 1,
							  memory_order_acquire,
							  memory_order_relaxed))
			return true;
	}
	return false;
}

WEFT_API int weft_sem_try_acquire(weft_sem *s)
{
	if (!s)
		return -EINVAL;
	return try_take(impl(s)) ? 0 : -EAGAIN;
}

WEFT_API int weft_sem_acquire(weft_sem *s)
{
	struct weft__task *t = weft__task_current();
	struct weft__waiter wr;
	struct sem_impl *si;
	bool requeue = false;
	int err;

	if (!t)
		return -EPERM;
	if (!s)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	si = impl(s);
	for (;;) {
		if (try_take(si))
			return 0;
		weft__spin_lock(&si->lock);
		atomic_fetch_or_explicit(&si->word, S_WAITERS,
					 memory_order_seq_cst);
		if (try_take(si)) {
			if (weft__waitq_empty(&si->q))
				atomic_fetch_and_explicit(&si->word, ~S_WAITERS,
							  memory_order_relaxed);
			weft__spin_unlock(&si->lock);
			return 0;
		}
		if (requeue) {
			/* Woken to retry, and a barger took the unit (or a
			 * timer fired early): level-triggered checks again. */
			err = weft__pending_error(t);
			if (err) {
				weft__spin_unlock(&si->lock);
				return err;
			}
		}
		weft__waiter_enqueue(&si->q, &wr, t, true, requeue, true);
		weft__set_wait_kind(t, WEFT__WK_SEM); /* for dumps */
		int reason = weft__waiter_park(&si->lock, &si->q, &wr, si);
		if (reason != WEFT__WAKE_SOURCE) {
			err = weft__wake_error(t, reason);
			if (err)
				return err;
		} else if (wr.granted) {
			return 0; /* handed over */
		}
		requeue = true; /* retry, keeping our place in line */
	}
}

static void release_slow(weft_sem *s, struct sem_impl *si)
{
	struct weft__wakeups wk;
	struct weft__waiter *w;
	uint64_t now = 0, cur;

	wk.n = 0;
	weft__spin_lock(&si->lock);
	if (!weft__waitq_empty(&si->q))
		now = weft__clock_real(); /* fairness: real time */
	/* 1. Hand the unit to a starving waiter. */
	while ((w = si->q.head) && now - w->enq_ns >= WEFT__STARVE_NS) {
		weft__waitq_remove(&si->q, w);
		w->granted = true;
		/* The claim's release publishes the releaser's writes. */
		if (weft__waiter_claim(w, &wk)) {
			if (!si->q.head)
				atomic_fetch_and_explicit(&si->word, ~S_WAITERS,
							  memory_order_relaxed);
			goto out;
		}
		w->granted = false;
	}
	/* 2. Count the unit (try_acquire may race: CAS), then wake one. */
	cur = atomic_load_explicit(&si->word, memory_order_relaxed);
	for (;;) {
		uint64_t nw;

		if ((cur & S_COUNT_MASK) == S_COUNT_MASK) {
			weft__spin_unlock(&si->lock);
			weft__report("weft_sem_release(%p): count would pass "
				     "UINT_MAX; it stays at UINT_MAX",
				     (void *)s);
			return;
		}
		nw = (cur + 1) & S_COUNT_MASK;
		if (si->q.head)
			nw |= S_WAITERS;
		/* release: pairs with the acquire CAS of the taker. */
		if (atomic_compare_exchange_weak_explicit(&si->word, &cur, nw,
							  memory_order_release,
							  memory_order_relaxed))
			break;
	}
	while ((w = weft__waitq_pop(&si->q))) {
		w->granted = false;
		if (weft__waiter_claim(w, &wk))
			break;
	}
	if (!si->q.head)
		atomic_fetch_and_explicit(&si->word, ~S_WAITERS,
					  memory_order_relaxed);
out:
	weft__spin_unlock(&si->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API void weft_sem_release(weft_sem *s)
{
	struct sem_impl *si;
	uint64_t cur;

	if (!s) {
		weft__report("weft_sem_release(NULL)");
		return;
	}
	si = impl(s);
	cur = atomic_load_explicit(&si->word, memory_order_relaxed);
	while (!(cur & S_WAITERS)) {
		if ((cur & S_COUNT_MASK) == S_COUNT_MASK) {
			weft__report("weft_sem_release(%p): count would pass "
				     "UINT_MAX; it stays at UINT_MAX",
				     (void *)s);
			return;
		}
		/* release: pairs with the acquire CAS of the taker. */
		if (atomic_compare_exchange_weak_explicit(
			    &si->word, &cur, cur + 1, memory_order_release,
			    memory_order_relaxed))
			return;
	}
	release_slow(s, si);
}

size_t weft__sem_nwaiters(weft_sem *s)
{
	struct sem_impl *si = impl(s);
	size_t n;

	weft__spin_lock(&si->lock);
	n = weft__waitq_len(&si->q);
	weft__spin_unlock(&si->lock);
	return n;
}
