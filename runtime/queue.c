/* SPDX-License-Identifier: MIT */
/*
 * runtime/queue.c - weft_queue: a bounded MPMC queue of void * with
 * asyncio.Queue's task_done/join and an end of stream (close).
 *
 * One spinlock guards everything: the ring, the counters and three waiter
 * lists (getters, putters, joiners) whose records live on the waiting
 * tasks' stacks. An uncontended put or get takes it once.
 *
 * Invariants (under the lock):
 *  - getters non-empty  =>  the ring is empty (a put hands its item to the
 *    first getter instead of the ring);
 *  - putters non-empty  =>  the ring is full (a get that frees a slot pulls
 *    the first waiting putter's item in behind the others).
 * So items leave in the order they were put, waiting putters enter in the
 * order they arrived, and waiting getters are served in the order they
 * arrived: strictly FIFO.
 *
 * Hand-overs and cancellation (waitq.h step 4): a put that finds a waiting
 * getter writes the item into the getter's record and claims it. Claimed:
 * the getter returns the item. Failed (the getter was cancelled or timed
 * out first): the put takes the item back and tries the next getter, then
 * the ring. Likewise a get that frees a slot reads the first putter's item
 * and claims the putter: only if the claim succeeds does the item enter the
 * ring (and the putter return 0); a putter whose claim failed still owns
 * its item and returns -ECANCELED/-ETIMEDOUT. An item is therefore in
 * exactly one place at every moment: a producer, the ring, or one getter.
 *
 * task_done/join: every successful put adds one outstanding item; task_done
 * removes one and, at zero, wakes every joiner. A task_done with nothing
 * outstanding is reported and ignored (never underflows).
 *
 * close: sets closed and wakes every putter (-EPIPE, items not enqueued)
 * and every getter (-EPIPE: getters only wait on an empty ring, so the
 * queue is drained). Later gets drain the ring, then get -EPIPE.
 */
#include <errno.h>

#include "runtime/waitq.h"

struct weft_queue {
	_Atomic uint32_t lock; /* spinlock over everything below */
	bool closed; /* under lock */
	size_t cap; /* ring slots; >= 1; constant */
	size_t head; /* index of the oldest item; under lock */
	/* items in the ring: written under lock, read without it by
	 * weft_queue_len() */
	_Atomic size_t count;
	size_t unfinished; /* puts not yet task_done; under lock */
	/* waiter records a waker may still reach: +1 when linked, -1 by the
	 * waker whose claim succeeds or by the waiter leaving on its own
	 * (waitq.h); under lock. weft_queue_free() needs 0. */
	unsigned inside;
	struct weft__waitq getters, putters, joiners; /* under lock */
	void *ring[]; /* cap slots */
};

WEFT_API weft_queue *weft_queue_new(size_t capacity)
{
	struct weft_queue *q;
	size_t bytes;

	if (capacity == 0) {
		errno = EINVAL;
		return NULL;
	}
	/* RELIABILITY H3: an overflowing size is ENOMEM, never a small
	 * allocation. */
	if (__builtin_mul_overflow(capacity, sizeof(void *), &bytes) ||
	    __builtin_add_overflow(bytes, sizeof(*q), &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	/* Whole cache lines of its own: a queue's lock line moves between
	 * the two workers of a pair, and must not drag a neighbour's (the
	 * other queue of the pair, another pair's) along. */
	if (__builtin_add_overflow(bytes, (size_t)WEFT__CACHELINE - 1,
				   &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	bytes &= ~((size_t)WEFT__CACHELINE - 1);
	q = weft__alloc_aligned(WEFT__CACHELINE, bytes);
	if (!q) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&q->lock, 0);
	q->closed = false;
	q->cap = capacity;
	q->head = 0;
	atomic_init(&q->count, 0);
	q->unfinished = 0;
	q->inside = 0;
	q->getters = (struct weft__waitq){ 0 };
	q->putters = (struct weft__waitq){ 0 };
	q->joiners = (struct weft__waitq){ 0 };
	return q;
}

/* Under the lock: step 4 of waitq.h, counting the record out on success. */
static inline bool claim(struct weft_queue *q, struct weft__waiter *w,
			 struct weft__wakeups *wk)
{
	if (!weft__waiter_claim(w, wk))
		return false;
	q->inside--;
	return true;
}

/* Under the lock: step 2 of waitq.h, then step 3 (drops the lock). */
static int wait_on(struct weft_queue *q, struct weft__waitq *list,
		   struct weft__waiter *wr, struct weft__task *t)
{
	weft__waiter_enqueue(list, wr, t, true, false, false);
	q->inside++;
	weft__spin_unlock(&q->lock);
	weft__set_wait_kind(t, WEFT__WK_QUEUE); /* for dumps */
	return weft__waiter_sleep(&q->lock, list, wr, q, &q->inside);
}

static inline size_t qcount(const struct weft_queue *q)
{
	return atomic_load_explicit(&((struct weft_queue *)q)->count,
				    memory_order_relaxed);
}

static inline void set_count(struct weft_queue *q, size_t n)
{
	atomic_store_explicit(&q->count, n, memory_order_relaxed);
}

/* Under the lock: append to the ring (there is room). */
static inline void ring_push(struct weft_queue *q, void *item)
{
	size_t n = qcount(q), i = q->head + n;

	if (i >= q->cap)
		i -= q->cap;
	q->ring[i] = item;
	set_count(q, n + 1);
	q->unfinished++;
}

/*
 * Under the lock: a waiting putter's item moves into the slot just freed.
 * The first putter whose claim succeeds gets it; putters whose claim fails
 * gave up and keep their items.
 */
static void pull_putter(struct weft_queue *q, struct weft__wakeups *wk)
{
	struct weft__waiter *p;

	while ((p = weft__waitq_pop(&q->putters))) {
		void *item = p->item; /* read before the claim */

		p->status = 0;
		if (claim(q, p, wk)) {
			ring_push(q, item);
			return;
		}
	}
}

/* Under the lock: take the oldest item (there is one), refill from a
 * waiting putter. */
static inline void *ring_pop(struct weft_queue *q, struct weft__wakeups *wk)
{
	void *item = q->ring[q->head];

	if (++q->head == q->cap)
		q->head = 0;
	set_count(q, qcount(q) - 1);
	if (WEFT__UNLIKELY(!weft__waitq_empty(&q->putters)))
		pull_putter(q, wk);
	return item;
}

/* Under the lock, not closed: hand @item to the first getter that takes
 * it, else append it if there is room. Return: false if full. */
static bool deliver(struct weft_queue *q, void *item, struct weft__wakeups *wk)
{
	struct weft__waiter *g;

	while (WEFT__UNLIKELY((g = weft__waitq_pop(&q->getters)) != NULL)) {
		g->item = item;
		g->status = 0;
		/* The claim's release publishes the item to the getter. */
		if (claim(q, g, wk)) {
			q->unfinished++;
			return true;
		}
		/* That getter gave up first: the item is still ours. */
	}
	if (qcount(q) == q->cap)
		return false;
	ring_push(q, item);
	return true;
}

WEFT_API int weft_queue_try_put(weft_queue *q, void *item)
{
	struct weft__wakeups wk;
	int ret;

	wk.n = 0;
	if (!q)
		return -EINVAL;
	weft__spin_lock(&q->lock);
	if (q->closed)
		ret = -EPIPE;
	else
		ret = deliver(q, item, &wk) ? 0 : -EAGAIN;
	weft__spin_unlock(&q->lock);
	weft__wakeups_flush(&wk);
	return ret;
}

WEFT_API int weft_queue_put(weft_queue *q, void *item)
{
	struct weft__task *t = weft__task_current();
	struct weft__wakeups wk;
	struct weft__waiter wr;
	int err, reason;

	wk.n = 0;
	if (!t)
		return -EPERM;
	if (!q)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	for (;;) {
		weft__spin_lock(&q->lock);
		if (q->closed) {
			weft__spin_unlock(&q->lock);
			return -EPIPE;
		}
		if (WEFT__LIKELY(deliver(q, item, &wk))) {
			weft__spin_unlock(&q->lock);
			weft__wakeups_flush(&wk);
			return 0;
		}
		/* Full: wait with the item in our record. */
		wr.item = item;
		reason = wait_on(q, &q->putters, &wr, t);
		if (reason == WEFT__WAKE_SOURCE)
			return wr.status; /* 0: enqueued; -EPIPE: closed */
		err = weft__wake_error(t, reason);
		if (err)
			return err; /* item not enqueued */
	}
}

WEFT_API int weft_queue_try_get(weft_queue *q, void **item)
{
	struct weft__wakeups wk;
	int ret = 0;

	wk.n = 0;
	if (!q || !item)
		return -EINVAL;
	weft__spin_lock(&q->lock);
	if (qcount(q))
		*item = ring_pop(q, &wk);
	else
		ret = q->closed ? -EPIPE : -EAGAIN;
	weft__spin_unlock(&q->lock);
	weft__wakeups_flush(&wk);
	return ret;
}

WEFT_API int weft_queue_get(weft_queue *q, void **item)
{
	struct weft__task *t = weft__task_current();
	struct weft__wakeups wk;
	struct weft__waiter wr;
	int err, reason;

	wk.n = 0;
	if (!t)
		return -EPERM;
	if (!q || !item)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	for (;;) {
		weft__spin_lock(&q->lock);
		if (WEFT__LIKELY(qcount(q))) {
			*item = ring_pop(q, &wk);
			weft__spin_unlock(&q->lock);
			weft__wakeups_flush(&wk);
			return 0;
		}
		if (q->closed) {
			weft__spin_unlock(&q->lock);
			return -EPIPE;
		}
		wr.item = NULL;
		reason = wait_on(q, &q->getters, &wr, t);
		if (reason == WEFT__WAKE_SOURCE) {
			if (wr.status)
				return wr.status; /* -EPIPE: closed, drained */
			*item = wr.item;
			return 0;
		}
		err = weft__wake_error(t, reason);
		if (err)
			return err; /* took nothing */
	}
}

WEFT_API void weft_queue_task_done(weft_queue *q)
{
	struct weft__wakeups wk;
	struct weft__waiter *j;

	wk.n = 0;
	if (!q) {
		weft__report("weft_queue_task_done(NULL)");
		return;
	}
	weft__spin_lock(&q->lock);
	if (q->unfinished == 0) {
		weft__spin_unlock(&q->lock);
		weft__report("weft_queue_task_done(%p): called more times "
			     "than items were put; ignored",
			     (void *)q);
		return;
	}
	if (--q->unfinished == 0)
		while ((j = weft__waitq_pop(&q->joiners)))
			claim(q, j, &wk);
	weft__spin_unlock(&q->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API int weft_queue_join(weft_queue *q)
{
	struct weft__task *t = weft__task_current();
	struct weft__waiter wr;
	int err, reason;

	if (!t)
		return -EPERM;
	if (!q)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	for (;;) {
		weft__spin_lock(&q->lock);
		if (q->unfinished == 0) {
			weft__spin_unlock(&q->lock);
			return 0;
		}
		reason = wait_on(q, &q->joiners, &wr, t);
		if (reason == WEFT__WAKE_SOURCE)
			return 0;
		err = weft__wake_error(t, reason);
		if (err)
			return err;
	}
}

WEFT_API void weft_queue_close(weft_queue *q)
{
	struct weft__wakeups wk;
	struct weft__waiter *w;

	wk.n = 0;
	if (!q) {
		weft__report("weft_queue_close(NULL)");
		return;
	}
	weft__spin_lock(&q->lock);
	if (!q->closed) {
		q->closed = true;
		while ((w = weft__waitq_pop(&q->putters))) {
			w->status = -EPIPE;
			claim(q, w, &wk);
		}
		while ((w = weft__waitq_pop(&q->getters))) {
			w->status = -EPIPE;
			claim(q, w, &wk);
		}
	}
	weft__spin_unlock(&q->lock);
	weft__wakeups_flush(&wk);
}

WEFT_API size_t weft_queue_len(const weft_queue *q)
{
	return q ? qcount(q) : 0;
}

WEFT_API void weft_queue_free(weft_queue *q)
{
	bool waiters;

	if (!q)
		return;
	weft__spin_lock(&q->lock);
	/* inside also counts a cancelled waiter that was unlinked by a
	 * waker but has not yet taken the lock to leave. */
	waiters = q->inside != 0;
	weft__spin_unlock(&q->lock);
	if (waiters) {
		weft__report("weft_queue_free(%p): tasks are waiting on it; "
			     "not freed",
			     (void *)q);
		return;
	}
	weft__free(q);
}

size_t weft__queue_nwaiters(weft_queue *q, int which)
{
	const struct weft__waitq *l = which == 0 ? &q->getters :
				      which == 1 ? &q->putters :
						   &q->joiners;
	size_t n;

	weft__spin_lock(&q->lock);
	n = weft__waitq_len(l);
	weft__spin_unlock(&q->lock);
	return n;
}
