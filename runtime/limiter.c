/* SPDX-License-Identifier: MIT */
/*
 * runtime/limiter.c - weft_limiter: a token bucket as GCRA (the generic
 * cell rate algorithm), handing out absolute time slots.
 *
 * State: tat, the bucket's "theoretical arrival time" (when the bucket
 * would be full again if nobody else came); period T = 1/rate; tolerance
 * tau = (burst - 1) * T. Under the lock, a caller arriving at `now` gets
 *     slot = max(now, tat - tau)      and sets      tat = max(tat, now) + T,
 * then sleeps, without the lock, until its slot (weft_sleep_until). Slots
 * are therefore handed out in lock order (strictly FIFO), each at an
 * absolute time fixed when it was taken, and any window of length W holds
 * at most burst + W/T slots: the bucket starts full (tat = 0), lets `burst`
 * callers through at once, then one per T.
 *
 * Dropped (the seeds' bug): taking a lock, measuring the time elapsed
 * since the previous caller, and sleeping for the difference while still
 * deciding. Under concurrency each waiter measured against a moving
 * reference, so two callers could compute the same slot (rate exceeded) or
 * both sleep a full period (rate halved), and the order was up to the
 * scheduler. Computing an absolute slot under the lock and sleeping
 * outside it has neither problem.
 *
 * Arithmetic is in units of 2^-32 ns in unsigned __int128, so a rate such
 * as 3/s (T = 333333333.33 ns) does not drift, and neither tat nor
 * burst * T can overflow (2^64 ns * 2^32 * 2^32 < 2^128).
 *
 * A caller whose sleep fails (cancelled, deadline) gives its slot back if
 * it is still the last one handed out (tat is rolled back by T); if a later
 * slot exists, the capacity is lost rather than risk exceeding the rate.
 */
#include <errno.h>
#include <float.h>

#include "runtime/waitq.h"

typedef unsigned __int128 fp128; /* 2^-32 ns */
#define FP_SHIFT 32

struct weft_limiter {
	_Atomic uint32_t lock; /* spinlock over the fields below */
	unsigned sleepers; /* acquirers between slot and return */
	fp128 tat; /* theoretical arrival time */
	fp128 period; /* T */
	fp128 tau; /* (burst - 1) * T */
};

WEFT_API weft_limiter *weft_limiter_new(double per_second, unsigned burst)
{
	struct weft_limiter *l;
	double period_ns;

	/* !(x > 0) also rejects NaN; > DBL_MAX is +Inf. */
	if (!(per_second > 0) || per_second > DBL_MAX) {
		errno = EINVAL;
		return NULL;
	}
	period_ns = 1e9 / per_second;
	if (!(period_ns < 9223372036854775808.0)) { /* 2^63 ns: 292 years */
		errno = EINVAL;
		return NULL;
	}
	if (burst == 0)
		burst = 1;
	l = weft__alloc(sizeof(*l));
	if (!l) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&l->lock, 0);
	l->sleepers = 0;
	l->tat = 0;
	/* period_ns * 2^32 < 2^95: exact enough in a double (53 bits). */
	l->period = (fp128)(period_ns * 4294967296.0);
	l->tau = l->period * (burst - 1);
	return l;
}

WEFT_API int weft_limiter_acquire(weft_limiter *l)
{
	struct weft__task *t = weft__task_current();
	fp128 now, slot, tat;
	uint64_t slot_ns;
	int err;

	if (!t)
		return -EPERM;
	if (!l)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	weft__spin_lock(&l->lock);
	/* Read under the lock: a `now` read before it could be stale by the
	 * time the slot is decided, and let callers bunch up. */
	now = (fp128)weft__clock_now() << FP_SHIFT;
	tat = l->tat;
	slot = tat > l->tau ? tat - l->tau : 0;
	if (slot < now)
		slot = now;
	tat = (tat > now ? tat : now) + l->period;
	l->tat = tat;
	if (slot <= now) {
		weft__spin_unlock(&l->lock);
		return 0;
	}
	l->sleepers++;
	weft__spin_unlock(&l->lock);

	/* Round up: a slot is never early. Past 2^64 ns it is forever. */
	slot = (slot + (((fp128)1 << FP_SHIFT) - 1)) >> FP_SHIFT;
	slot_ns = slot >= UINT64_MAX ? UINT64_MAX : (uint64_t)slot;
	/* Loop: a sleep may end early when a deadline timer fired for a
	 * deadline that moved later meanwhile; a slot is never early. */
	weft__set_wait_kind(t, WEFT__WK_LIMITER); /* for dumps: not "sleep" */
	do
		err = weft_sleep_until(slot_ns);
	while (!err && weft__clock_now() < slot_ns);
	weft__set_wait_kind(t, WEFT__WK_NONE);

	weft__spin_lock(&l->lock);
	if (err && l->tat == tat)
		l->tat = tat - l->period; /* nobody came after us: give back */
	l->sleepers--;
	weft__spin_unlock(&l->lock);
	return err;
}

WEFT_API void weft_limiter_free(weft_limiter *l)
{
	unsigned n;

	if (!l)
		return;
	weft__spin_lock(&l->lock);
	n = l->sleepers;
	weft__spin_unlock(&l->lock);
	if (n) {
		weft__report("weft_limiter_free(%p): %u tasks are waiting in "
			     "weft_limiter_acquire(); not freed",
			     (void *)l, n);
		return;
	}
	weft__free(l);
}

unsigned weft__limiter_nsleepers(weft_limiter *l)
{
	unsigned n;

	weft__spin_lock(&l->lock);
	n = l->sleepers;
	weft__spin_unlock(&l->lock);
	return n;
}
