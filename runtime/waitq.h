/* SPDX-License-Identifier: MIT */
/*
 * runtime/waitq.h - what every synchronisation primitive shares: a small
 * spinlock, an intrusive FIFO of waiter records that live on the waiting
 * tasks' stacks, and the one "wait on this list" sequence built on wait.c.
 *
 * THE WAIT SEQUENCE (every primitive follows it; the numbers are referred
 * to from mutex.c, sem.c, event.c, cond.c and queue.c):
 *  1. Entry: -EPERM outside a task, then weft__pending_error() (level-
 *     triggered cancellation and scope deadlines).
 *  2. Under the primitive's spinlock the condition is tested; if the caller
 *     must wait, weft__waiter_enqueue() prepares the task's wait
 *     (weft__wait_prepare(): wait word PREP) and links the record. A waker
 *     that claims while the word is still PREP does not enqueue the task;
 *     wait.c's publish step does, so registering before the switch is safe.
 *  3. The spinlock is dropped and weft__waiter_park() switches out.
 *  4. A waker, under the same spinlock, unlinks the first record, writes the
 *     payload into it (an item, "you own the lock", -EPIPE), reads
 *     everything it still needs from it (the next record) and only then
 *     claims it with weft__waiter_claim() (a SOURCE claim of wait.c). True:
 *     the waiter has it, and the waker never touches the record again (the
 *     waiter may already be running and its frame gone). False: the waiter
 *     gave up first (cancelled, timed out): the waker takes the payload back
 *     and serves the next record, or keeps the item / unit. Claimed tasks
 *     are made runnable after the spinlock is dropped (struct
 *     weft__wakeups), so no run-queue lock or futex wake happens inside it.
 *  5. A waiter resumed with any reason but SOURCE takes the spinlock and
 *     unlinks its record if it is still linked. Taking that lock is also
 *     what proves that a waker that unlinked it has finished writing into
 *     it (it held the lock from unlink to claim). Such a waiter holds
 *     nothing: a waker that unlinked it saw its claim fail and took the
 *     payload back.
 * So a hand-over and a cancellation that race are decided by the one CAS
 * on the waiter's wait word: either the waiter has the item and returns 0,
 * or the waker kept it; never both, never neither.
 *
 * Nothing here allocates; nothing is held across a switch. The spinlock is
 * test-and-test-and-set: critical sections are a handful of pointer moves
 * plus at most a few claims, so a futex would cost more than it saves. A
 * spinner whose lock holder was preempted by the OS (more workers than
 * CPUs) yields the CPU after a while instead of burning its time slice.
 */
#ifndef WEFT_RUNTIME_WAITQ_H
#define WEFT_RUNTIME_WAITQ_H

#include <sched.h>

#include "runtime/sched.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- spinlock */

/*
 * weft__spin_lock() - take @l (0 free, 1 held).
 * Context: any thread; never suspends; never held across a switch.
 */
static inline void weft__spin_lock(_Atomic uint32_t *l)
{
	unsigned spins = 0;

	/* acquire: pairs with the release store of weft__spin_unlock(). */
	while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
		while (atomic_load_explicit(l, memory_order_relaxed)) {
			if (++spins < 2048) {
				weft__cpu_relax();
			} else {
				/* The holder was likely preempted. */
				sched_yield();
				spins = 0;
			}
		}
	}
}

static inline bool weft__spin_trylock(_Atomic uint32_t *l)
{
	return !atomic_load_explicit(l, memory_order_relaxed) &&
	       !atomic_exchange_explicit(l, 1, memory_order_acquire);
}

static inline void weft__spin_unlock(_Atomic uint32_t *l)
{
	/* release: pairs with the acquire exchange of weft__spin_lock(). */
	atomic_store_explicit(l, 0, memory_order_release);
}

/* ---------------------------------------------------------------- waiters */

/*
 * One waiting task. Lives on that task's stack for the duration of one
 * primitive call. Every field but @task/@word/@enq_ns (written by the
 * waiter before linking) is read and written under the primitive's
 * spinlock only, and never by a waker after its claim succeeded.
 */
struct weft__waiter {
	struct weft__waiter *next, *prev; /* list links; under the lock */
	struct weft__task *task; /* the waiter */
	uint64_t word; /* its prepared wait word */
	uint64_t enq_ns; /* first enqueue time (starvation) */
	void *item; /* payload: a queue item */
	int status; /* payload: 0, -EPIPE, ... */
	bool granted; /* payload: lock / unit handed over */
	bool linked; /* on the list; under the lock */
	/* enqueued cancellable: the wait arms the scope deadline (also in
	 * a shield, where word lacks WEFT__W_CANCELLABLE) */
	bool cancellable;
};

/*
 * A FIFO of waiter records: head is the oldest. All-zero is empty, so the
 * zero-initialised primitives that embed one need no _init.
 * Context: every call below under the owning primitive's spinlock.
 */
struct weft__waitq {
	struct weft__waiter *head, *tail;
};

static inline bool weft__waitq_empty(const struct weft__waitq *q)
{
	return q->head == NULL;
}

static inline void weft__waitq_push_tail(struct weft__waitq *q,
					 struct weft__waiter *w)
{
	w->next = NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	w->linked = true;
}

/*
 * Re-queue a waiter that was woken to retry and lost the race (barging):
 * it goes back in enqueue-time order, in front of every waiter that came
 * after it, so barging never costs a waiter its place in line.
 */
static inline void weft__waitq_push_ordered(struct weft__waitq *q,
					    struct weft__waiter *w)
{
	struct weft__waiter *after = NULL, *x = q->head;

	while (x && x->enq_ns <= w->enq_ns) {
		after = x;
		x = x->next;
	}
	w->prev = after;
	w->next = x;
	if (after)
		after->next = w;
	else
		q->head = w;
	if (x)
		x->prev = w;
	else
		q->tail = w;
	w->linked = true;
}

static inline void weft__waitq_remove(struct weft__waitq *q,
				      struct weft__waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->next = w->prev = NULL;
	w->linked = false;
}

static inline struct weft__waiter *weft__waitq_pop(struct weft__waitq *q)
{
	struct weft__waiter *w = q->head;

	if (w)
		weft__waitq_remove(q, w);
	return w;
}

/*
 * weft__waiter_enqueue() - step 2: prepare @t's wait and link @w at the
 * tail of @q (or in enqueue-time order when @requeue: a woken waiter that
 * lost a barging race keeps its place).
 * @cancellable: false for waits that must not fail (cond re-acquiring its
 *   mutex): then neither weft_cancel() nor a deadline can end the wait.
 * @timed: stamp the first enqueue time (mutex, sem: starvation hand-off
 *   and requeue order); other primitives skip the clock read.
 * Context: task; under the primitive's spinlock.
 */
static inline void weft__waiter_enqueue(struct weft__waitq *q,
					struct weft__waiter *w,
					struct weft__task *t, bool cancellable,
					bool requeue, bool timed)
{
	w->task = t;
	w->word = weft__wait_prepare(t, cancellable);
	w->cancellable = cancellable;
	w->granted = false;
	w->status = 0;
	if (requeue) {
		weft__waitq_push_ordered(q, w);
	} else {
		w->enq_ns = timed ? weft__clock_real() : 0;
		weft__waitq_push_tail(q, w);
	}
}

/*
 * weft__waiter_sleep() - steps 3 and 5 after the spinlock was dropped:
 * switch out until a source ends the wait, and, unless the primitive woke
 * us, unlink @w.
 * @lock: the primitive's spinlock (not held).
 * @q: the list @w was linked on by weft__waiter_enqueue().
 * @obj: what the task waits on (for dumps).
 * @inside: NULL, or the primitive's count of records a waker may still
 *   reach (queue.c: a queue is freed only at zero). The waiter decrements
 *   it here when it leaves on its own; a waker whose claim succeeds does.
 * Context: task; suspension point.
 * Return: WEFT__WAKE_SOURCE (a waker claimed @w: read its payload),
 * WEFT__WAKE_TIMER (a deadline timer fired) or WEFT__WAKE_CANCEL; for the
 * last two @w is unlinked and holds nothing (weft__wake_error() says what
 * to return).
 */
static inline int weft__waiter_sleep(_Atomic uint32_t *lock,
				     struct weft__waitq *q,
				     struct weft__waiter *w, void *obj,
				     unsigned *inside)
{
	struct weft__task *t = w->task;
	struct weft__wait wt = {
		.publish = NULL,
		.obj = obj,
		.word = w->word,
		/* Not the word's WEFT__W_CANCELLABLE bit: a shield clears
		 * it, but the shielded scope's own deadline and the scopes
		 * entered inside it still apply (weft/scope.h), as for
		 * sleeps and I/O. */
		.deadline_ns = w->cancellable ? weft__wait_deadline(t) :
						UINT64_MAX,
	};
	int reason = weft__wait_park(t, &wt);

	if (reason != WEFT__WAKE_SOURCE) {
		weft__spin_lock(lock);
		if (w->linked)
			weft__waitq_remove(q, w);
		if (inside)
			--*inside;
		weft__spin_unlock(lock);
	}
	return reason;
}

/*
 * weft__waiter_park() - drop @lock, then weft__waiter_sleep().
 * Context: task; called with @lock held, returns with it released.
 * Return: as weft__waiter_sleep().
 */
static inline int weft__waiter_park(_Atomic uint32_t *lock,
				    struct weft__waitq *q,
				    struct weft__waiter *w, void *obj)
{
	weft__spin_unlock(lock);
	return weft__waiter_sleep(lock, q, w, obj, NULL);
}

/*
 * The error a wait that was not ended by its primitive returns
 * (weft__wait_error(): -ECANCELED, -ETIMEDOUT), or 0 when its timer fired
 * for a deadline that has since moved later: the caller then waits again,
 * keeping its place in line where the primitive has one.
 */
static inline int weft__wake_error(struct weft__task *t, int reason)
{
	return weft__wait_error(t, reason);
}

/*
 * Tasks a waker claimed under the primitive's spinlock and makes runnable
 * after dropping it (step 4 without the enqueue inside the lock: the
 * enqueue may take a run-queue lock or wake an idle worker with a futex
 * call, which has no business inside a spinlock others spin on). A claimed
 * task cannot run until it is enqueued, and nothing else enqueues it, so
 * the delay is safe; only the task pointer is kept, never the record.
 */
#define WEFT__WAKE_BATCH 16
struct weft__wakeups {
	unsigned n;
	struct weft__task *t[WEFT__WAKE_BATCH]; /* only t[0..n) is defined */
};
/* Declare one uninitialised and set n = 0 before use: an initialiser
 * ("= { 0 }") zeroes all 136 bytes, a rep stosq that was half the cost of
 * an uncontended weft_queue_put(). */

/* Make the collected tasks runnable. Context: any thread; never suspends. */
static inline void weft__wakeups_flush(struct weft__wakeups *wk)
{
	for (unsigned i = 0; i < wk->n; i++)
		weft__task_ready(wk->t[i]);
	wk->n = 0;
}

/*
 * weft__waiter_claim() - step 4: end @w's wait with SOURCE. The payload
 * must already be in @w; after a true return @w must not be touched again.
 * @wk: collects the task if it must be enqueued (flushed inline when full).
 * Context: under the primitive's spinlock; never suspends.
 * Return: true if the waiter has it; false if it gave up first.
 */
static inline bool weft__waiter_claim(struct weft__waiter *w,
				      struct weft__wakeups *wk)
{
	struct weft__task *t = w->task;
	int r = weft__wait_try_claim(t, w->word, WEFT__WAKE_SOURCE);

	if (r == 2) {
		if (wk->n == WEFT__WAKE_BATCH)
			weft__wakeups_flush(wk);
		wk->t[wk->n++] = t;
	}
	return r != 0;
}

/*
 * A waiter queued longer than this is handed the mutex or semaphore unit
 * directly instead of being woken to retry (starvation mode, as Go's
 * sync.Mutex).
 */
#define WEFT__STARVE_NS 1000000u

/* How many records are linked. Context: under the primitive's spinlock. */
static inline size_t weft__waitq_len(const struct weft__waitq *q)
{
	size_t n = 0;

	for (const struct weft__waiter *w = q->head; w; w = w->next)
		n++;
	return n;
}

/*
 * Waiters linked on a primitive right now, for tests and task dumps (a
 * snapshot). A linked waiter has prepared its wait and may still be
 * switching out. @which for a queue: 0 getters, 1 putters, 2 joiners.
 * Context: any thread; never suspends.
 */
size_t weft__mutex_nwaiters(weft_mutex *m);
size_t weft__sem_nwaiters(weft_sem *s);
size_t weft__event_nwaiters(weft_event *e);
size_t weft__cond_nwaiters(weft_cond *c);
size_t weft__queue_nwaiters(weft_queue *q, int which);
/* Acquirers sleeping until their slot. */
unsigned weft__limiter_nsleepers(weft_limiter *l);

/* mutex.c: take @m, uncancellably (cond.c re-acquiring after a wait). */
void weft__mutex_lock_nocancel(weft_mutex *m);
/* mutex.c: does the calling task @t hold @m? */
bool weft__mutex_held_by(const weft_mutex *m, const struct weft__task *t);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_WAITQ_H */
