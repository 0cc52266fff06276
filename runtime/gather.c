/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * runtime/gather.c - waiting on several tasks: weft_gather, weft_wait_for,
 * weft_wait_any.
 *
 * They build on the join protocol of task.c: a waiter registers itself as
 * the joiner of each task it waits for (weft__join_register(): the task's
 * join_word names the waiter, joiner_seq holds the waiter's current wait
 * word), and a finishing task claims that wait. weft_wait_any registers
 * one wait with many tasks: the first finisher's claim wins, the others
 * fail on the claimed word, and the waiter rescans. Registrations outlive
 * the wait harmlessly: a later finisher claims with a stale sequence
 * number and fails.
 *
 * weft_gather with WEFT_CANCEL_ON_ERROR wakes once per batch of finishes
 * until all are done, so it registers a hub instead (struct weft__hub,
 * protocol below): once per task, and each finisher reports itself there.
 *
 * The handles are marked WEFT__T_OWNER_WAITING for the whole call, which
 * both detects a repeated handle and keeps a concurrent wait (by another
 * task that was handed the handle) out. Nothing here allocates: the wait
 * record and the hub are on the caller's stack and the handles are
 * decoded afresh.
 *
 * Cost: gather without flags joins in index order (each join may run a
 * not-yet-started task inline, like weft_join), O(n). With
 * WEFT_CANCEL_ON_ERROR: O(n) to register, O(1) per finish, O(n) once to
 * cancel the rest. wait_any: O(n) per call and per wake-up (a call
 * usually wakes once), as asyncio.wait(FIRST_COMPLETED).
 */
#include <errno.h>
#include <limits.h>

#include "runtime/sched.h"
#include "weft/group.h"

static inline bool task_done(struct weft__task *t)
{
	/* acquire: the status written before J_DONE is visible. */
	return atomic_load_explicit(&t->join_word, memory_order_acquire) &
	       WEFT__J_DONE;
}

/* A failure: a negative status other than -ECANCELED (a positive one is
 * a result, as 0 is). */
static inline bool is_failure(int status)
{
	return status < 0 && status != -ECANCELED;
}

static inline struct weft__task *rec(weft_task *const *tasks, size_t i)
{
	/* Valid for the whole call: we own the handles and hold
	 * OWNER_WAITING, so they are not released. */
	return weft__handle_decode(tasks[i]);
}

static void unmark(weft_task *const *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		atomic_fetch_and_explicit(&rec(tasks, i)->flags,
					  ~WEFT__T_OWNER_WAITING,
					  memory_order_acq_rel);
}

/*
 * Validate @tasks and mark each OWNER_WAITING. On failure nothing stays
 * marked. Return: 0, -EINVAL or -EDEADLK.
 */
static int mark_all(struct weft__task *self, weft_task *const *tasks,
		    size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct weft__task *t = tasks[i] ? weft__handle_decode(tasks[i]) :
						  NULL;
		int err = 0;

		if (!t || t->rt != self->rt) {
			err = -EINVAL;
		} else if (t == self) {
			err = -EDEADLK;
		} else {
			uint32_t f = atomic_fetch_or_explicit(
				&t->flags, WEFT__T_OWNER_WAITING,
				memory_order_acq_rel);
			if (f & (WEFT__T_DETACHED | WEFT__T_OWNER_WAITING)) {
				/* Detached (not ours to wait for), or being
				 * waited on: by another wait, or repeated in
				 * @tasks. Leave a mark that is not ours. */
				if (!(f & WEFT__T_OWNER_WAITING))
					atomic_fetch_and_explicit(
						&t->flags,
						~WEFT__T_OWNER_WAITING,
						memory_order_relaxed);
				err = -EINVAL;
			}
		}
		if (err) {
			unmark(tasks, i);
			return err;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ multi-wait */

struct multi {
	weft_task *const *tasks;
	size_t n;
};

/* Publish: register with every task not yet done; one done already ends
 * the wait at once. */
static void multi_publish(struct weft__task *self, struct weft__wait *wt)
{
	const struct multi *m = wt->obj;

	for (size_t i = 0; i < m->n; i++) {
		struct weft__task *t = rec(m->tasks, i);
		if (task_done(t) || weft__join_register(self, t, wt->word)) {
			weft__wait_try_claim(self, wt->word, WEFT__WAKE_SOURCE);
			return;
		}
	}
}

/* Park until one of @m's tasks is done, @deadline_ns passes, or (when
 * @cancellable) the task is cancelled. Return: the wake reason. */
static int multi_park(struct weft__task *self, struct multi *m,
		      uint64_t deadline_ns, bool cancellable)
{
	struct weft__wait wt = {
		.publish = multi_publish,
		.obj = m,
		.deadline_ns = deadline_ns,
	};

	wt.word = weft__wait_prepare(self, cancellable);
	weft__set_wait_kind(self, WEFT__WK_JOIN); /* for dumps */
	return weft__wait_park(self, &wt);
}

static void cancel_unfinished(weft_task *const *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct weft__task *t = rec(tasks, i);
		if (!task_done(t))
			weft__task_cancel_internal(t);
	}
}

/* The lowest index of a done task with a failing status, or -1. */
static ssize_t first_failed_done(weft_task *const *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct weft__task *t = rec(tasks, i);
		if (task_done(t) && is_failure(t->status))
			return (ssize_t)i;
	}
	return -1;
}

/* ------------------------------------------------------------ gather */

/* In index order: join each (maybe inline). Return: the interruption. */
static int gather_in_order(struct weft__task *self, weft_task *const *tasks,
			   size_t n, bool *failed_first)
{
	int interrupted = weft__pending_error(self);

	if (interrupted) {
		*failed_first = first_failed_done(tasks, n) >= 0;
		cancel_unfinished(tasks, n);
	}
	for (size_t i = 0; i < n; i++) {
		/* Interrupted meanwhile: weft__join_wait() cancels task i and
		 * waits for it; then the others are cancelled at once. */
		int e = weft__join_wait(self, rec(tasks, i), UINT64_MAX, NULL);
		if (e && !interrupted) {
			interrupted = e;
			*failed_first = first_failed_done(tasks, n) >= 0;
			cancel_unfinished(tasks, n);
		}
	}
	return interrupted;
}

/* ------------------------------------------------------------ hub */

/*
 * The hub protocol (struct weft__hub, sched.h). Every word below is one
 * atomic location, so the orders that matter are its modification order:
 *  - register (the waiter, once per task): CAS the task's join_word from
 *    "not done" to hub | J_HUB, keeping J_CANCEL. Seeing J_DONE instead,
 *    the task finished before: counted at once, it never reports.
 *  - report (the finisher, task.c weft__task_complete(), after its
 *    fetch_or of J_DONE returned hub | J_HUB): read the waiter, then push
 *    the task onto head (release: its status). If the push replaced a
 *    wait word, claim that wait. The push is the finisher's last touch of
 *    the hub: right after it, the waiter may count it, return, and reuse
 *    its stack.
 *  - sleep (the waiter's publish, after its switch): CAS head from 0 to
 *    its wait word; finding reports already there, claim its own wait.
 *  - wake (the waiter, for any reason): exchange head with 0 (acquire),
 *    which takes the reports and withdraws a wait word nobody replaced. A
 *    finisher that replaced it claims a wait the waiter may have left
 *    already (timer, cancel): the claim fails on the sequence number.
 * Every registered task reports exactly once, so the waiter, which counts
 * reports, returns only when no finisher can still reach the hub.
 */
void weft__hub_report(struct weft__worker *w, struct weft__hub *h,
		      struct weft__task *t)
{
	struct weft__task *waiter = h->waiter; /* before the push */
	uintptr_t cur = atomic_load_explicit(&h->head, memory_order_relaxed);

	do {
		t->hub_next = (cur & 1) ? NULL : (struct weft__task *)cur;
		/* release: t's status and hub_next, for the waiter's
		 * acquire exchange. */
	} while (!atomic_compare_exchange_weak_explicit(
		&h->head, &cur, (uintptr_t)t, memory_order_release,
		memory_order_relaxed));
	if ((cur & 1) &&
	    weft__wait_try_claim(waiter, cur, WEFT__WAKE_SOURCE) == 2)
		weft__ready_local(w, waiter, true);
}

/* Register @h with @t. Return: true if @t was done already. */
static bool hub_register(struct weft__hub *h, struct weft__task *t)
{
	/* acquire, here and on the CAS's failure: a J_DONE we return on
	 * makes the status visible. */
	uintptr_t cur = atomic_load_explicit(&t->join_word,
					     memory_order_acquire);

	do {
		if (cur & WEFT__J_DONE)
			return true;
		/* release on success: the hub's fields (waiter) for the
		 * finisher, which finds the hub through this word. */
	} while (!atomic_compare_exchange_weak_explicit(
		&t->join_word, &cur,
		(cur & (uintptr_t)WEFT__J_CANCEL) | (uintptr_t)h | WEFT__J_HUB,
		memory_order_acq_rel, memory_order_acquire));
	return false;
}

static void hub_publish(struct weft__task *self, struct weft__wait *wt)
{
	struct weft__hub *h = wt->obj;
	uintptr_t exp = 0;

	if (!atomic_compare_exchange_strong_explicit(
		    &h->head, &exp, (uintptr_t)wt->word, memory_order_relaxed,
		    memory_order_relaxed))
		weft__wait_try_claim(self, wt->word, WEFT__WAKE_SOURCE);
}

/* Park on @h until a report, the deadline or (when @cancellable) a
 * cancellation; then take the reports. Return: the reports, newest first
 * (NULL: none). */
static struct weft__task *hub_wait(struct weft__task *self,
				   struct weft__hub *h, uint64_t deadline_ns,
				   bool cancellable)
{
	struct weft__wait wt = {
		.publish = hub_publish,
		.obj = h,
		.deadline_ns = deadline_ns,
	};
	uintptr_t got;

	wt.word = weft__wait_prepare(self, cancellable);
	weft__set_wait_kind(self, WEFT__WK_JOIN); /* for dumps */
	weft__wait_park(self, &wt);
	/* acquire: the reporters' statuses and links. */
	got = atomic_exchange_explicit(&h->head, 0, memory_order_acquire);
	return (got & 1) ? NULL : (struct weft__task *)got;
}

/*
 * Wait for all; the first failure in time cancels the rest. Tasks already
 * done when the call starts count as simultaneous: the lowest index among
 * their failures is first. After that, the order of the reports is the
 * order of the finishes. O(n) to register, O(1) per finish (plus O(n)
 * once to cancel the rest). Return: the interruption; *trigger: the
 * failure that cancelled the rest (or 0).
 */
static int gather_cancel_on_error(struct weft__task *self,
				  weft_task *const *tasks, size_t n,
				  bool *failed_first, int *trigger)
{
	struct weft__hub hub = { .waiter = self };
	int interrupted = 0;
	size_t ndone = 0;

	atomic_init(&hub.head, 0);
	for (size_t i = 0; i < n; i++) {
		struct weft__task *t = rec(tasks, i);
		if (!hub_register(&hub, t))
			continue;
		ndone++;
		if (!*trigger && is_failure(t->status))
			*trigger = t->status;
	}
	if (*trigger)
		cancel_unfinished(tasks, n);
	for (;;) {
		if (!interrupted) {
			interrupted = weft__pending_error(self);
			if (interrupted) {
				*failed_first = *trigger != 0;
				cancel_unfinished(tasks, n);
			}
		}
		if (ndone == n)
			return interrupted;
		struct weft__task *got = hub_wait(
			self, &hub,
			interrupted ? UINT64_MAX : weft__wait_deadline(self),
			!interrupted);
		int fail = 0;
		/* Newest first: the last failure met is the earliest. */
		for (struct weft__task *t = got; t; t = t->hub_next) {
			ndone++;
			if (is_failure(t->status))
				fail = t->status;
		}
		if (fail && !*trigger) {
			*trigger = fail;
			cancel_unfinished(tasks, n);
		}
	}
}

WEFT_API int weft_gather(weft_task *const *tasks, size_t n, int *statuses,
			 unsigned flags)
{
	struct weft__task *self = weft__task_current();
	bool failed_first = false;
	int interrupted, trigger = 0, first = 0, err;

	if (!self)
		return -EPERM;
	if (n == 0)
		return 0;
	/* No array holds more (RELIABILITY H3); as weft_wait_any(). */
	if (n > INT_MAX || !tasks || (flags & ~WEFT_CANCEL_ON_ERROR))
		return -EINVAL;
	err = mark_all(self, tasks, n);
	if (err)
		return err;

	if (flags & WEFT_CANCEL_ON_ERROR)
		interrupted = gather_cancel_on_error(self, tasks, n,
						     &failed_first, &trigger);
	else
		interrupted = gather_in_order(self, tasks, n, &failed_first);

	for (size_t i = 0; i < n; i++) {
		struct weft__task *t = rec(tasks, i);
		int st = t->status;

		if (statuses)
			statuses[i] = st;
		if (!first && is_failure(st))
			first = st;
		weft__owner_release(t);
	}
	if (interrupted && !failed_first)
		return interrupted;
	return (flags & WEFT_CANCEL_ON_ERROR) ? trigger : first;
}

/* ------------------------------------------------------------ wait_for */

WEFT_API int weft_wait_for(weft_task *h, uint64_t timeout_ns)
{
	struct weft__task *self = weft__task_current();
	struct weft__task *t;
	bool timed_out;
	int err, status;

	t = weft__owner_wait_begin(h, &err);
	if (!t)
		return err;
	weft__join_wait(self, t,
			timeout_ns == UINT64_MAX ?
				UINT64_MAX :
				weft__deadline_after(weft__clock_now(),
						     timeout_ns),
			&timed_out);
	status = t->status;
	weft__owner_release(t);
	return timed_out ? -ETIMEDOUT : status;
}

/* ------------------------------------------------------------ wait_any */

WEFT_API int weft_wait_any(weft_task *const *tasks, size_t n,
			   uint64_t timeout_ns)
{
	struct weft__task *self = weft__task_current();
	struct multi m = { tasks, n };
	uint64_t dl;
	int r, err;

	if (!self)
		return -EPERM;
	if (n == 0 || n > INT_MAX || !tasks)
		return -EINVAL;
	err = mark_all(self, tasks, n);
	if (err)
		return err;
	dl = timeout_ns == UINT64_MAX ?
		     UINT64_MAX :
		     weft__deadline_after(weft__clock_now(), timeout_ns);
	for (;;) {
		size_t i;

		/* A result already there is not undone by cancellation. */
		for (i = 0; i < n && !task_done(rec(tasks, i)); i++)
			;
		if (i < n) {
			r = (int)i;
			break;
		}
		r = weft__pending_error(self);
		if (r)
			break;
		if (dl != UINT64_MAX && weft__clock_now() >= dl) {
			r = -ETIMEDOUT;
			break;
		}
		uint64_t sd = weft__wait_deadline(self);
		multi_park(self, &m, dl < sd ? dl : sd, true);
	}
	unmark(tasks, n);
	return r;
}
