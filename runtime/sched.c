/* SPDX-License-Identifier: MIT */
/*
 * runtime/sched.c - where a runnable task goes, and who gets woken for it.
 *
 * Run queues of a worker: the LIFO slot (the task it just woke: message
 * passing runs back to back on one core), its Chase-Lev deque (thieves take
 * from the top), the FIFO of tasks pinned to it (owner only) and their
 * inbox (other threads). The runtime's injection queue takes tasks from
 * foreign threads and deque overflow.
 *
 * Waking idle workers (Go's discipline, see also worker.c park()):
 *  - nsearching counts workers looking for work (stealing). At most half
 *    the workers search at once.
 *  - A waker that made work stealable runs weft__notify(): a seq_cst fence,
 *    then, only if nobody is searching and somebody is idle, it takes the
 *    searching role on behalf of one idle worker (CAS nsearching 0 -> 1)
 *    and wakes it. The woken worker starts as a searcher, so a burst of
 *    wakers wakes one worker, not all.
 *  - A worker going idle registers on the idle list (nidle++), issues a
 *    seq_cst fence and re-checks every queue before sleeping. Together with
 *    the waker's fence this is Dekker's pattern: either the waker sees the
 *    idle worker, or the idle worker sees the work. No lost wakeup.
 *  - A searcher that finds work and was the last searcher notifies again,
 *    so parallelism ramps up one worker at a time.
 * A task put in the LIFO slot does not notify (as in Tokio): the worker
 * that woke it is running and will run it next; notifying would send an
 * idle worker to steal it and turn message passing into cross-core
 * traffic. Only a task displaced from the slot into the deque notifies.
 *
 * Lock order: timer_lock -> inject_lock; idle_lock and inbox_lock are
 * leaves.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/sched.h"
#include "io/backend.h"

/* ------------------------------------------------------------ futex */

static void futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL,
		0);
}

/* Wake a parked worker: through its I/O backend (it sleeps in the ring or
 * in epoll_wait, io/backend.h), else on its futex. */
static void kick(struct weft__worker *v)
{
	if (!weft__io_kick(v))
		futex_wake(&v->park_word, 1);
}

void weft__futex_wake_all(_Atomic uint32_t *addr)
{
	futex_wake(addr, 0x7fffffff);
}

/* ------------------------------------------------------------ inject */

void weft__inject_push(struct weft__runtime *rt, struct weft__task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&rt->inject_lock);
	if (rt->inject_tail)
		rt->inject_tail->next = t;
	else
		rt->inject_head = t;
	rt->inject_tail = t;
	atomic_fetch_add_explicit(&rt->inject_len, 1, memory_order_seq_cst);
	pthread_mutex_unlock(&rt->inject_lock);
}

static void inject_push_list(struct weft__runtime *rt, struct weft__task *h,
			     struct weft__task *tail, size_t n)
{
	pthread_mutex_lock(&rt->inject_lock);
	if (rt->inject_tail)
		rt->inject_tail->next = h;
	else
		rt->inject_head = h;
	rt->inject_tail = tail;
	atomic_fetch_add_explicit(&rt->inject_len, n, memory_order_seq_cst);
	pthread_mutex_unlock(&rt->inject_lock);
}

/* Pop up to @max tasks in one lock; returns the first, linked by ->next. */
struct weft__task *weft__inject_pop_batch(struct weft__runtime *rt, size_t max)
{
	struct weft__task *h, *t;
	size_t n = 1;

	if (!max ||
	    atomic_load_explicit(&rt->inject_len, memory_order_relaxed) == 0)
		return NULL;
	pthread_mutex_lock(&rt->inject_lock);
	h = t = rt->inject_head;
	if (h) {
		while (n < max && t->next) {
			t = t->next;
			n++;
		}
		rt->inject_head = t->next;
		if (!rt->inject_head)
			rt->inject_tail = NULL;
		t->next = NULL;
		atomic_fetch_sub_explicit(&rt->inject_len, n,
					  memory_order_relaxed);
	}
	pthread_mutex_unlock(&rt->inject_lock);
	return h;
}

/* ------------------------------------------------------------ local */

/*
 * Push @item (a task, or a tagged fresh task) to w's deque; when it is full
 * move the older half to the injection queue first. A fresh entry whose
 * task was meanwhile run inline by its joiner is a tombstone: it is dropped
 * here with its reference instead of moving.
 */
void weft__deque_push_or_spill(struct weft__worker *w, void *item)
{
	void *batch[WEFT__DEQUE_CAP / 2];
	struct weft__task *head = NULL, *tail = NULL;
	size_t n, i, moved = 0;

	atomic_store_explicit(&weft__item_task(item)->fair_tick, w->tick,
			      memory_order_relaxed);
	if (WEFT__LIKELY(weft__deque_push(&w->dq, item)))
		return;
	n = weft__deque_take_top(&w->dq, batch, WEFT__ARRAY_SIZE(batch));
	for (i = 0; i < n; i++) {
		struct weft__task *t = weft__item_task(batch[i]);
		if ((uintptr_t)batch[i] & WEFT__ITEM_FRESH) {
			int exp = WEFT__RC_DEQUE;
			if (!atomic_compare_exchange_strong_explicit(
				    &t->run_claim, &exp, WEFT__RC_INJECT,
				    memory_order_acq_rel,
				    memory_order_acquire)) {
				weft__task_put(t, 1); /* tombstone */
				continue;
			}
		}
		t->next = NULL;
		if (tail)
			tail->next = t;
		else
			head = t;
		tail = t;
		moved++;
	}
	if (moved)
		inject_push_list(w->rt, head, tail, moved);
	if (!weft__deque_push(&w->dq, item)) {
		struct weft__task *t = weft__item_task(item);
		if ((uintptr_t)item & WEFT__ITEM_FRESH) {
			int exp = WEFT__RC_DEQUE;
			if (!atomic_compare_exchange_strong(&t->run_claim, &exp,
							    WEFT__RC_INJECT)) {
				weft__task_put(t, 1);
				return;
			}
		}
		weft__inject_push(w->rt, t);
	}
}

/* A freshly spawned task of this worker: its tagged entry goes to the
 * deque, where a thief, the owner or its joiner (inline) may start it. */
void weft__ready_fresh(struct weft__worker *w, struct weft__task *t)
{
	atomic_store_explicit(&t->state, WEFT__TASK_RUNNABLE,
			      memory_order_relaxed);
	weft__deque_push_or_spill(w, weft__item_fresh(t));
	weft__notify(w->rt);
}

static void pin_append(struct weft__worker *w, struct weft__task *t)
{
	t->next = NULL;
	if (w->pin_tail)
		w->pin_tail->next = t;
	else
		w->pin_head = t;
	w->pin_tail = t;
}

static void inbox_push(struct weft__worker *w, struct weft__task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&w->inbox_lock);
	if (w->inbox_tail)
		w->inbox_tail->next = t;
	else
		w->inbox_head = t;
	w->inbox_tail = t;
	atomic_fetch_add_explicit(&w->inbox_len, 1, memory_order_seq_cst);
	pthread_mutex_unlock(&w->inbox_lock);
}

void weft__ready_local(struct weft__worker *w, struct weft__task *t,
		       bool lifo)
{
	/* Read what we need before t is published: once on a queue it may
	 * run, finish and be recycled (pinned_to reset) under us. */
	struct weft__worker *pin = t->pinned_to;

	atomic_store_explicit(&t->state, WEFT__TASK_RUNNABLE,
			      memory_order_relaxed);
	if (pin) {
		if (pin == w) {
			pin_append(w, t);
		} else {
			inbox_push(pin, t);
			weft__wake_worker(pin);
		}
		return;
	}
	if (lifo) {
		/* release: t's state is published to a thief that takes the
		 * slot (acquire exchange in steal_lifo()). */
		struct weft__task *prev = atomic_exchange_explicit(
			&w->lifo, t, memory_order_acq_rel);
		if (!prev)
			return;
		t = prev;
	}
	weft__deque_push_or_spill(w, t);
	weft__notify(w->rt);
}

void weft__task_ready(struct weft__task *t)
{
	struct weft__worker *w = weft__worker_current();

	if (w && w->rt == t->rt) {
		weft__ready_local(w, t, true);
		return;
	}
	/* As in weft__ready_local(): nothing of t is read after it is
	 * published. */
	struct weft__worker *pin = t->pinned_to;
	struct weft__runtime *rt = t->rt;

	atomic_store_explicit(&t->state, WEFT__TASK_RUNNABLE,
			      memory_order_relaxed);
	if (pin) {
		inbox_push(pin, t);
		weft__wake_worker(pin);
		return;
	}
	weft__inject_push(rt, t);
	weft__notify(rt);
}

/* ------------------------------------------------------------ waking */

/* park_word values */
#define PARK_ASLEEP 0u
#define PARK_WOKEN 1u	    /* woken for its own inbox or shutdown */
#define PARK_SEARCHING 2u   /* woken as a searcher (nsearching counted) */

static void idle_remove_locked(struct weft__runtime *rt,
			       struct weft__worker *w)
{
	unsigned n = atomic_load_explicit(&rt->nidle, memory_order_relaxed);

	for (unsigned i = 0; i < n; i++) {
		if (rt->idle_stack[i] == w->index) {
			rt->idle_stack[i] = rt->idle_stack[n - 1];
			break;
		}
	}
	w->idle = false;
	atomic_store_explicit(&rt->nidle, n - 1, memory_order_seq_cst);
}

void weft__notify(struct weft__runtime *rt)
{
	unsigned zero = 0;
	struct weft__worker *v = NULL;

	/* seq_cst fence: pairs with the fence in park() between the idle
	 * registration and the re-check of the queues. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&rt->nsearching, memory_order_relaxed) ||
	    !atomic_load_explicit(&rt->nidle, memory_order_relaxed))
		return;
	if (!atomic_compare_exchange_strong_explicit(
		    &rt->nsearching, &zero, 1, memory_order_seq_cst,
		    memory_order_relaxed))
		return;
	pthread_mutex_lock(&rt->idle_lock);
	unsigned n = atomic_load_explicit(&rt->nidle, memory_order_relaxed);
	if (n) {
		v = rt->workers[rt->idle_stack[n - 1]];
		idle_remove_locked(rt, v);
		atomic_store_explicit(&v->park_word, PARK_SEARCHING,
				      memory_order_release);
	} else {
		/* Undo the searcher role under idle_lock (as Go's startm):
		 * undone after the unlock, a worker could park and a waker
		 * see our phantom searcher in between, and wake nobody
		 * (found by tests/model/park.pml, park_two_submitters). */
		atomic_fetch_sub_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
	}
	pthread_mutex_unlock(&rt->idle_lock);
	if (v)
		kick(v);
}

void weft__wake_worker(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	bool wake = false;

	/* The inbox push before this was seq_cst; the parker re-checks its
	 * inbox after registering idle under idle_lock. */
	pthread_mutex_lock(&rt->idle_lock);
	if (w->idle) {
		idle_remove_locked(rt, w);
		atomic_store_explicit(&w->park_word, PARK_WOKEN,
				      memory_order_release);
		wake = true;
	}
	pthread_mutex_unlock(&rt->idle_lock);
	if (wake)
		kick(w);
}

void weft__wake_all(struct weft__runtime *rt)
{
	for (unsigned i = 0; i < rt->nworkers; i++)
		weft__wake_worker(rt->workers[i]);
}

/* Used by worker.c: register @w idle. Context: w's scheduler stack. */
void weft__idle_enter(struct weft__worker *w);
void weft__idle_enter(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	pthread_mutex_lock(&rt->idle_lock);
	unsigned n = atomic_load_explicit(&rt->nidle, memory_order_relaxed);
	rt->idle_stack[n] = w->index;
	w->idle = true;
	atomic_store_explicit(&w->park_word, PARK_ASLEEP, memory_order_relaxed);
	atomic_store_explicit(&rt->nidle, n + 1, memory_order_seq_cst);
	pthread_mutex_unlock(&rt->idle_lock);
}

/*
 * Leave the idle list. Return: false if @w was still idle (it removed
 * itself: not searching); true if a waker removed it first, in which case
 * w->searching tells whether it was woken as a searcher.
 */
bool weft__idle_leave(struct weft__worker *w);
bool weft__idle_leave(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	bool woken;

	pthread_mutex_lock(&rt->idle_lock);
	woken = !w->idle;
	if (!woken)
		idle_remove_locked(rt, w);
	else
		w->searching = atomic_load_explicit(&w->park_word,
						    memory_order_relaxed) ==
			       PARK_SEARCHING;
	pthread_mutex_unlock(&rt->idle_lock);
	return woken;
}
