/* SPDX-License-Identifier: MIT */
/*
 * runtime/mutex.c - weft_mutex: a task-owned lock with barging and a 1 ms
 * starvation hand-over (Go's sync.Mutex, on the wait protocol of wait.c).
 *
 * Layout (32 bytes, all-zero = unlocked):
 *   state  LOCKED | WAITERS. LOCKED is taken by a CAS (the fast path is one
 *          CAS each way); WAITERS says "the list may be non-empty, unlock
 *          must look", and is set only under the spinlock.
 *   lock   the spinlock over the waiter list (waitq.h).
 *   owner  the task holding the mutex, for misuse checks and cond_wait.
 *   q      FIFO of waiter records on the waiters' stacks.
 *
 * Lock:
 *  1. CAS state 0 -> LOCKED. Done (then owner = self).
 *  2. Otherwise spin briefly while the holder is running and nobody is
 *     queued, retrying a CAS that keeps the other bits (barging).
 *  3. Take the spinlock; fetch_or WAITERS. If LOCKED is clear, take it by
 *     CAS and leave. Else queue a waiter record (waitq.h steps 2-3) and
 *     park. The fetch_or and the unlocker's CAS are RMWs of one word: either
 *     the unlocker's fast CAS came first (we see LOCKED clear) or it fails
 *     on WAITERS and takes the slow path, which needs the spinlock, which it
 *     gets only after we are linked. No lost wake-up.
 *  4. Resumed by the mutex (SOURCE): if the record says "granted", the
 *     unlocker handed us the mutex (owner already set): done. Otherwise we
 *     were only woken to retry: go to 3, and if we lose to a barger, re-queue
 *     in enqueue-time order (at the head in practice), keeping our original
 *     enqueue time.
 *  5. Resumed by cancellation / deadline: unlink (waitq.h step 5), fail.
 *     A waiter woken to retry that is then cancelled still takes a free
 *     mutex (returns 0; the next suspension point fails); if the mutex is
 *     held again, it fails without re-queueing: the holder's unlock wakes
 *     the next waiter, so no wake-up is lost either way.
 *
 * Unlock (slow path, WAITERS set), all under the spinlock:
 *  1. While the first waiter has waited >= WEFT__STARVE_NS: pop it, mark it
 *     granted, set owner to it, keep LOCKED, and claim it. Claimed: done -
 *     the mutex never became free, so no barger can overtake a starving
 *     waiter. Claim failed (it was cancelled): take the grant back, next.
 *  2. Otherwise clear LOCKED (release: the critical section is published to
 *     the next taker), then wake the first waiter whose claim succeeds, to
 *     retry. Clear WAITERS if the list became empty (a woken waiter in
 *     flight sets it again if it has to queue).
 * Invariant: while the mutex is free and waiters are queued, a woken waiter
 * is on its way to retry, so the queue never stalls.
 *
 * Dropped: handing the mutex to the first waiter on every unlock (strict
 * FIFO, as pthread's PI mutexes). Every hand-over then costs a full wake-up
 * latency during which nobody can take the lock (a lock convoy): 64 tasks
 * incrementing a counter on 2 busy cores took ~198 ns/op against ~155 with
 * barging, and the gap grows with the wake-up latency. Dropped too: a
 * "starving" bit in the word (Go): the per-unlock age check of the head
 * waiter gives the same bound with one bit less and no mode to leave.
 */
#include <errno.h>

#include "runtime/waitq.h"

#define M_LOCKED 1u
#define M_WAITERS 2u

/*
 * Barging spin before queueing: at most 64 x 8 pause instructions (~2.5 us
 * here, a pause is ~5 ns), about what a park and wake-up costs, and enough
 * for another worker's short critical section. 64 tasks incrementing one
 * counter on 2 busy cores: no spin ~600 ns/op, 16 rounds ~190, 64 ~155,
 * 256 ~155 (on an idle machine all were 25-100 ns/op).
 */
#define SPIN_ROUNDS 64

struct mutex_impl {
	_Atomic uint32_t state; /* M_LOCKED | M_WAITERS */
	_Atomic uint32_t lock; /* spinlock over q */
	/* the holder: written by whoever makes it the holder (itself, or
	 * an unlocker handing over), read by misuse checks and cond_wait */
	_Atomic(struct weft__task *) owner;
	struct weft__waitq q; /* under lock */
};

_Static_assert(sizeof(struct mutex_impl) <= sizeof(weft_mutex),
	       "struct mutex_impl must fit weft_mutex");
_Static_assert(_Alignof(struct mutex_impl) <= _Alignof(weft_mutex),
	       "struct mutex_impl alignment");
_Static_assert(sizeof(weft_mutex) == 32, "API.md: weft_mutex is 32 bytes");

static inline struct mutex_impl *impl(weft_mutex *m)
{
	return (struct mutex_impl *)(void *)m;
}

static inline void set_owner(struct mutex_impl *mi, struct weft__task *t)
{
	/* relaxed: owner is only compared with the caller's own task; a task
	 * always sees its own store, and never equals a stale value. */
	atomic_store_explicit(&mi->owner, t, memory_order_relaxed);
}

WEFT_API int weft_mutex_init(weft_mutex *m)
{
	if (!m)
		return -EINVAL;
	*m = (weft_mutex){ { 0 } };
	return 0;
}

WEFT_API void weft_mutex_destroy(weft_mutex *m)
{
	struct mutex_impl *mi;
	bool waiters, locked;

	if (!m)
		return;
	mi = impl(m);
	weft__spin_lock(&mi->lock);
	waiters = !weft__waitq_empty(&mi->q);
	locked = atomic_load_explicit(&mi->state, memory_order_relaxed) &
		 M_LOCKED;
	weft__spin_unlock(&mi->lock);
	if (waiters)
		weft__report("weft_mutex_destroy(%p): tasks are waiting on it; "
			     "not destroyed",
			     (void *)m);
	else if (locked)
		weft__report("weft_mutex_destroy(%p): it is locked; not "
			     "destroyed",
			     (void *)m);
	/* Nothing to release otherwise: the mutex owns no memory. */
}

/* Try to take a free mutex keeping the other bits. Return: true if taken. */
static inline bool try_take(struct mutex_impl *mi, uint32_t s)
{
	while (!(s & M_LOCKED)) {
		/* acquire: pairs with the release that cleared LOCKED. */
		if (atomic_compare_exchange_weak_explicit(
			    &mi->state, &s, s | M_LOCKED, memory_order_acquire,
			    memory_order_relaxed))
			return true;
	}
	return false;
}

static int lock_slow(struct mutex_impl *mi, struct weft__task *t,
		     bool cancellable)
{
	struct weft__waiter wr;
	bool requeue = false;

	for (;;) {
		uint32_t s =
			atomic_load_explicit(&mi->state, memory_order_relaxed);

		/* 2. Barging spin: only while nobody is queued, so a queue
		 * of waiters is not overtaken by spinners forever. */
		for (int i = 0; i < SPIN_ROUNDS && !(s & M_WAITERS); i++) {
			if (try_take(mi, s))
				goto taken;
			for (int k = 0; k < 8; k++)
				weft__cpu_relax();
			s = atomic_load_explicit(&mi->state,
						 memory_order_relaxed);
		}

		/* 3. */
		weft__spin_lock(&mi->lock);
		s = atomic_fetch_or_explicit(&mi->state, M_WAITERS,
					     memory_order_seq_cst);
		s |= M_WAITERS;
		if (!(s & M_LOCKED)) {
			/* Free: take it. WAITERS is ours to decide under
			 * the spinlock; only a barger's CAS can race. */
			uint32_t nw =
				M_LOCKED |
				(weft__waitq_empty(&mi->q) ? 0 : M_WAITERS);
			bool got = false;
			while (!got && !(s & M_LOCKED))
				got = atomic_compare_exchange_weak_explicit(
					&mi->state, &s, nw,
					memory_order_acquire,
					memory_order_relaxed);
			if (got) {
				weft__spin_unlock(&mi->lock);
				goto taken;
			}
		}
		/* Held: queue, unless the task must give up now (a retry
		 * after losing to a barger re-checks cancellation). */
		if (requeue && cancellable) {
			int err = weft__pending_error(t);
			if (err) {
				weft__spin_unlock(&mi->lock);
				return err;
			}
		}
		weft__waiter_enqueue(&mi->q, &wr, t, cancellable, requeue,
				     true);
		weft__set_wait_kind(t, WEFT__WK_MUTEX); /* for dumps */
		int reason = weft__waiter_park(&mi->lock, &mi->q, &wr, mi);
		if (reason != WEFT__WAKE_SOURCE) {
			int err = weft__wake_error(t, reason);
			if (err)
				return err;
		} else if (wr.granted) {
			return 0; /* handed over: owner already set */
		}
		requeue = true; /* retry, keeping our place in line */
	}
taken:
	set_owner(mi, t);
	return 0;
}

WEFT_API int weft_mutex_lock(weft_mutex *m)
{
	struct weft__task *t = weft__task_current();
	struct mutex_impl *mi;
	uint32_t zero = 0;
	int err;

	if (!t)
		return -EPERM;
	if (!m)
		return -EINVAL;
	mi = impl(m);
	/* A programming error, whatever else is pending: checked first. */
	if (WEFT__UNLIKELY(atomic_load_explicit(&mi->owner,
						memory_order_relaxed) == t))
		return -EDEADLK;
	err = weft__pending_error(t);
	if (err)
		return err;
	/* acquire: pairs with the release of the unlock that cleared it. */
	if (WEFT__LIKELY(atomic_compare_exchange_strong_explicit(
		    &mi->state, &zero, M_LOCKED, memory_order_acquire,
		    memory_order_relaxed))) {
		set_owner(mi, t);
		return 0;
	}
	return lock_slow(mi, t, true);
}

void weft__mutex_lock_nocancel(weft_mutex *m)
{
	struct weft__task *t = weft__task_current();
	struct mutex_impl *mi = impl(m);
	uint32_t zero = 0;

	if (atomic_compare_exchange_strong_explicit(&mi->state, &zero, M_LOCKED,
						    memory_order_acquire,
						    memory_order_relaxed)) {
		set_owner(mi, t);
		return;
	}
	int r = lock_slow(mi, t, false);
	WEFT__BUG_ON(r != 0);
}

bool weft__mutex_held_by(const weft_mutex *m, const struct weft__task *t)
{
	const struct mutex_impl *mi =
		(const struct mutex_impl *)(const void *)m;

	return t && atomic_load_explicit(&((struct mutex_impl *)mi)->owner,
					 memory_order_relaxed) == t;
}

WEFT_API int weft_mutex_trylock(weft_mutex *m)
{
	struct weft__task *t = weft__task_current();
	struct mutex_impl *mi;

	if (!t)
		return -EPERM;
	if (!m)
		return -EINVAL;
	mi = impl(m);
	if (!try_take(mi,
		      atomic_load_explicit(&mi->state, memory_order_relaxed)))
		return -EBUSY;
	set_owner(mi, t);
	return 0;
}

static void unlock_slow(struct mutex_impl *mi)
{
	struct weft__wakeups wk;
	struct weft__waiter *w;
	uint64_t now = 0;

	wk.n = 0;
	weft__spin_lock(&mi->lock);
	if (!weft__waitq_empty(&mi->q))
		now = weft__clock_real(); /* fairness: real time */
	/* 1. Hand-over to a starving waiter: LOCKED stays set. */
	while ((w = mi->q.head) && now - w->enq_ns >= WEFT__STARVE_NS) {
		weft__waitq_remove(&mi->q, w);
		w->granted = true;
		set_owner(mi, w->task);
		atomic_store_explicit(&mi->state,
				      M_LOCKED | (mi->q.head ? M_WAITERS : 0),
				      memory_order_relaxed);
		/* The claim's release publishes the critical section and the
		 * grant to the waiter (acquire in weft__wait_park()). */
		if (weft__waiter_claim(w, &wk))
			goto out;
		w->granted = false; /* it gave up: take the grant back */
	}
	/* 2. Free the mutex, then wake one waiter to retry. Nobody else
	 * changes state while LOCKED is set and we hold the spinlock, so a
	 * store is enough. release: publishes the critical section. */
	set_owner(mi, NULL);
	atomic_store_explicit(&mi->state, mi->q.head ? M_WAITERS : 0,
			      memory_order_release);
	while ((w = weft__waitq_pop(&mi->q))) {
		w->granted = false;
		if (weft__waiter_claim(w, &wk))
			break;
	}
	if (!mi->q.head)
		atomic_fetch_and_explicit(&mi->state, ~M_WAITERS,
					  memory_order_relaxed);
out:
	weft__spin_unlock(&mi->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API void weft_mutex_unlock(weft_mutex *m)
{
	struct weft__task *t = weft__task_current();
	struct mutex_impl *mi;
	uint32_t exp = M_LOCKED;

	if (!m) {
		weft__report("weft_mutex_unlock(NULL)");
		return;
	}
	mi = impl(m);
	if (WEFT__UNLIKELY(!t ||
			   atomic_load_explicit(&mi->owner,
						memory_order_relaxed) != t)) {
		if (!(atomic_load_explicit(&mi->state, memory_order_relaxed) &
		      M_LOCKED))
			weft__report("weft_mutex_unlock(%p): not locked; "
				     "ignored",
				     (void *)m);
		else
			weft__report("weft_mutex_unlock(%p): %s does not hold "
				     "it; ignored",
				     (void *)m,
				     t ? "the calling task" :
					 "a thread that is not a task");
		return;
	}
	set_owner(mi, NULL);
	/* release: publishes the critical section to the next taker. */
	if (WEFT__LIKELY(atomic_compare_exchange_strong_explicit(
		    &mi->state, &exp, 0, memory_order_release,
		    memory_order_relaxed)))
		return;
	unlock_slow(mi);
}

size_t weft__mutex_nwaiters(weft_mutex *m)
{
	struct mutex_impl *mi = impl(m);
	size_t n;

	weft__spin_lock(&mi->lock);
	n = weft__waitq_len(&mi->q);
	weft__spin_unlock(&mi->lock);
	return n;
}
