/* SPDX-License-Identifier: MIT */
/*
 * runtime/wait.c - the one suspend/resume protocol every blocking call uses.
 *
 * Guarantee: a task that decides to wait is fully switched out before any
 * other worker can resume it, and it is made runnable exactly once per
 * wait, however many sources (the primitive, its deadline timer, a
 * cancellation) try to end that wait at the same moment.
 *
 * The protocol (switch-then-publish, as Go's park):
 *  1. The task prepares: wait_seq++, wait_word = seq|cancellable|PREP
 *     (a plain store: whoever can reach the task through a primitive gets
 *     it under that primitive's lock, which orders the store), and fills a
 *     struct weft__wait on its own stack (what it waits on, the deadline).
 *     If a cancellation is already visible it claims the wait itself and
 *     does not switch (a shortcut; step 4 is what guarantees it).
 *  2. It switches to its worker's scheduler context with reason PARK -
 *     or, when its worker's LIFO slot holds the task the scheduler would
 *     run next, straight to that task (a hand-off, worker.c
 *     weft__task_switch_out()), leaving itself in w->handoff.
 *  3. After the switch (the task's registers are saved now), on the
 *     scheduler stack or first thing in the task handed to, the
 *     worker runs wt->publish, which links the task into the primitive's
 *     waiter list - or, when the condition already holds, claims the wait
 *     itself - and arms the deadline timer on this worker.
 *  4. The worker CASes PREP -> ARMED. If that fails, a source claimed the
 *     wait while it was PREP; such a source does not enqueue the task, so
 *     the worker does it now. After a successful CAS the worker never
 *     touches the wait record again (its frame may be gone as soon as
 *     another source resumes the task). For a cancellable wait it then
 *     reads the task's cancel flag: the CAS and that load against
 *     weft_cancel()'s fetch_or of the flag and its load of the wait word,
 *     all seq_cst, are Dekker's pattern - either the canceller sees the
 *     wait (PREP or ARMED) and claims it, or the worker sees the flag and
 *     claims it for CANCEL. A stale read is harmless: the claim is for
 *     this wait's sequence number only, and task records are never freed.
 *  5. A source ends the wait with weft__wait_claim(): a CAS from PREP or
 *     ARMED, for exactly this seq, to CLAIMED with its reason. Only one CAS
 *     wins. Claimed from ARMED, the source enqueues the task. Losers back
 *     off and clean their own side (a primitive passes its item to the
 *     next waiter, the timer entry is dropped).
 *  6. Resumed, the task removes its timer (under the arming worker's timer
 *     lock, so a concurrent fire has finished with it) and returns the
 *     reason; the caller's primitive unlinks itself when the reason is not
 *     SOURCE.
 * Payloads (a queue item, an I/O result) are written by the source into the
 * wait record before it claims, under the source's own lock; a source whose
 * claim fails takes its payload back.
 *
 * Task records are never returned to the allocator while the runtime lives
 * (they are recycled through free lists), so a stale source that CASes a
 * recycled record fails on the sequence number instead of touching freed
 * memory.
 */
#include <errno.h>

#include "runtime/sched.h"

uint64_t weft__wait_prepare(struct weft__task *t, bool cancellable)
{
	uint64_t word = (++t->wait_seq << WEFT__W_SEQ_SHIFT) | WEFT__W_PREP;

	if (cancellable && t->shield_depth == 0)
		word |= WEFT__W_CANCELLABLE;
	/* relaxed: a source finds the task only through a primitive's list
	 * (under its lock, after this store) or after the publish CAS;
	 * weft_cancel() that reads an older word is caught by the Dekker
	 * check after that CAS (weft__wait_publish()). A seq_cst store here
	 * was an xchg: ~5% of ping_pong_pairs. */
	atomic_store_explicit(&t->wait_word, word, memory_order_relaxed);
	return word;
}

/*
 * The error a suspension point returns for a wait that ended with @reason
 * other than SOURCE: -ECANCELED, or for a timer the pending error (an own
 * scope's deadline: -ETIMEDOUT; a host's deadline: -ECANCELED, the host's
 * join cancelling us). 0 if the timer fired but no deadline is due (a
 * deadline moved later meanwhile): the caller may wait again.
 */
int weft__wait_error(struct weft__task *t, int reason)
{
	if (reason == WEFT__WAKE_CANCEL)
		return -ECANCELED;
	if (reason == WEFT__WAKE_TIMER)
		return weft__pending_error(t);
	return 0;
}

/*
 * weft__wait_try_claim() - end @t's wait @word (any state bits) for @reason.
 * Return: 0 lost (another source won, or the wait is over); 1 won while the
 * wait was PREP (the publisher enqueues); 2 won while ARMED (the caller must
 * make the task runnable).
 * Context: any thread; never suspends.
 */
int weft__wait_try_claim(struct weft__task *t, uint64_t word, unsigned reason)
{
	const uint64_t keep = ~(uint64_t)(WEFT__W_STATE_MASK |
					  WEFT__W_REASON_MASK);
	uint64_t base = word & keep;
	/* No load first: the CAS starts from the likely ARMED word, so the
	 * task's line (often in the other worker's cache) is fetched once,
	 * for writing, instead of shared and then upgraded. A wrong guess
	 * only costs the failed CAS, which loads the word for the loop. */
	uint64_t cur = base | WEFT__W_ARMED;

	weft__chaos(); /* a source about to claim */
	for (;;) {
		unsigned st = cur & WEFT__W_STATE_MASK;

		if ((cur & keep) != base ||
		    (st != WEFT__W_PREP && st != WEFT__W_ARMED))
			return 0;
		uint64_t nw = base | ((uint64_t)reason << WEFT__W_REASON_SHIFT) |
			      WEFT__W_CLAIMED;
		/* acq_rel: the winner's writes before the claim (a payload)
		 * are released to the task; acquire (also on failure, which
		 * is the load the loop decides on) pairs with the release of
		 * PREP->ARMED in weft__wait_publish(), so the registrations
		 * are visible. */
		if (atomic_compare_exchange_weak_explicit(
			    &t->wait_word, &cur, nw, memory_order_acq_rel,
			    memory_order_acquire))
			return st == WEFT__W_ARMED ? 2 : 1;
	}
}

bool weft__wait_claim(struct weft__task *t, uint64_t word, unsigned reason)
{
	int r = weft__wait_try_claim(t, word, reason);

	if (r == 2)
		weft__task_ready(t);
	return r != 0;
}

int weft__wait_park(struct weft__task *t, struct weft__wait *wt)
{
	uint64_t cur;

	/* Shortcut: a cancellation already visible ends the wait without a
	 * switch (the guarantee is the check after the publish CAS). */
	if ((wt->word & WEFT__W_CANCELLABLE) && weft__task_cancel_pending(t))
		weft__wait_try_claim(t, wt->word, WEFT__WAKE_CANCEL);
	weft__chaos(); /* prepared and linked, not yet switched out */
	cur = atomic_load_explicit(&t->wait_word, memory_order_acquire);
	if ((cur & WEFT__W_STATE_MASK) != WEFT__W_CLAIMED) {
		t->cur_wait = wt;
		t->switch_reason = WEFT__SW_PARK;
		weft__task_switch_out(t);
		cur = atomic_load_explicit(&t->wait_word,
					   memory_order_acquire);
	}
	WEFT__BUG_ON((cur & WEFT__W_STATE_MASK) != WEFT__W_CLAIMED ||
		     (cur >> WEFT__W_SEQ_SHIFT) != (wt->word >> WEFT__W_SEQ_SHIFT));
	if (atomic_load_explicit(&t->timer_worker, memory_order_acquire))
		weft__timer_disarm(t);
	return (int)((cur & WEFT__W_REASON_MASK) >> WEFT__W_REASON_SHIFT);
}

void weft__wait_publish(struct weft__worker *w, struct weft__task *t)
{
	struct weft__wait *wt = t->cur_wait;
	uint64_t exp = wt->word;
	uint64_t deadline = wt->deadline_ns;

	atomic_store_explicit(&t->state, WEFT__TASK_WAITING,
			      memory_order_relaxed);
	if (wt->publish)
		wt->publish(t, wt);
	if (deadline != UINT64_MAX)
		weft__timer_arm(w, t, deadline);
	weft__chaos(); /* registered, not yet ARMED: sources claim from PREP */
	/* release: publishes the registrations to every later claimer
	 * (pairs with the acquire in claim()); seq_cst: the Dekker below.
	 * After success, wt is not ours any more, and t only through a claim
	 * of this wait. */
	if (!atomic_compare_exchange_strong_explicit(
		    &t->wait_word, &exp,
		    (exp & ~(uint64_t)WEFT__W_STATE_MASK) | WEFT__W_ARMED,
		    memory_order_seq_cst, memory_order_acquire)) {
		weft__ready_local(w, t, true);
		return;
	}
	/* seq_cst: Dekker with weft__task_cancel_internal() (step 4). The
	 * wait was prepared cancellable only if t was not shielded, and t
	 * cannot change that while it waits. */
	if ((exp & WEFT__W_CANCELLABLE) &&
	    (atomic_load_explicit(&t->join_word, memory_order_seq_cst) &
	     WEFT__J_CANCEL) &&
	    weft__wait_try_claim(t, exp, WEFT__WAKE_CANCEL) == 2)
		weft__ready_local(w, t, true);
}

int weft__pending_error_slow(struct weft__task *t)
{
	if (weft__task_cancel_pending(t)) {
		/* Level-triggered: every suspension point fails at once from
		 * now on. Counted so that a task looping on them (ignoring
		 * -ECANCELED, RELIABILITY F2) can be named by the watchdog and
		 * the shutdown drain (observe.c). Written by t only. */
		atomic_store_explicit(
			&t->cancel_fails,
			atomic_load_explicit(&t->cancel_fails,
					     memory_order_relaxed) + 1,
			memory_order_relaxed);
		return -ECANCELED;
	}
	if (weft__wait_deadline(t) == UINT64_MAX)
		return 0;
	uint64_t now = weft__clock_now();
	if (now >= t->scope_deadline_ns)
		return -ETIMEDOUT;
	if (now >= t->inherited_deadline_ns && !t->shield_depth) {
		atomic_fetch_or_explicit(&t->join_word, WEFT__J_CANCEL,
					 memory_order_seq_cst);
		return -ECANCELED;
	}
	return 0;
}

/* ------------------------------------------------------------- sleep/yield */

WEFT_API int weft_checkpoint(void)
{
	struct weft__task *t = weft__task_current();

	if (!t)
		return -EPERM;
	return weft__pending_error(t);
}

WEFT_API int weft_yield(void)
{
	struct weft__task *t = weft__task_current();
	int err;

	if (!t)
		return -EPERM;
	err = weft__pending_error(t);
	if (err)
		return err;
	t->switch_reason = WEFT__SW_YIELD;
	weft__task_switch_out(t);
	return 0;
}

WEFT_API int weft_sleep_until(uint64_t deadline_ns)
{
	struct weft__task *t = weft__task_current();
	struct weft__wait wt;
	int err, reason;

	if (!t)
		return -EPERM;
	err = weft__pending_error(t);
	if (err)
		return err;
	if (deadline_ns <= weft__clock_now())
		return weft_yield();
	wt.publish = NULL;
	wt.obj = NULL;
	uint64_t sd = weft__wait_deadline(t);
	wt.deadline_ns = deadline_ns < sd ? deadline_ns : sd;
	wt.word = weft__wait_prepare(t, true);
	weft__set_sleep_kind(t); /* for dumps */
	reason = weft__wait_park(t, &wt);
	/* TIMER: the sleep ended, or a scope's (or host's) deadline came
	 * first: weft__wait_error() tells which. */
	return weft__wait_error(t, reason);
}

WEFT_API int weft_sleep(uint64_t ns)
{
	if (!weft__task_current())
		return -EPERM;
	if (ns == 0)
		return weft_yield();
	return weft_sleep_until(weft__deadline_after(weft__clock_now(), ns));
}

WEFT_API uint64_t weft_now(void)
{
	return weft__clock_now();
}

WEFT_API int weft_clock_advance(uint64_t ns)
{
	struct weft__worker *w;
	uint64_t v;

	if (!weft__task_current())
		return -EPERM;
	w = weft__worker_current();
	if (!w->rt->vclock_paused)
		return -EINVAL;
	/* Only this worker moves the clock (the runtime has no other). */
	v = atomic_load_explicit(&w->rt->vclock_ns, memory_order_relaxed);
	v = weft__deadline_after(v, ns);
	atomic_store_explicit(&w->rt->vclock_ns,
			      v == UINT64_MAX ? UINT64_MAX - 1 : v,
			      memory_order_relaxed);
	return 0;
}
