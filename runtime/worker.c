/* SPDX-License-Identifier: MIT */
/*
 * runtime/worker.c - one worker thread's loop: pick a task, switch into it,
 * handle why it switched back; steal; fire timers; park.
 *
 * Pick order of a tick (tick = one task run):
 *  0. every 4th tick, while a timer is armed: fire the due ones;
 *  1. every 61st tick: fire due timers and take one task from the
 *     injection queue first, from its fresh lane first (sched.c), so
 *     foreign submits and spilled spawns never starve;
 *  2. tasks pinned to this worker (its FIFO, then its inbox);
 *  3. the LIFO slot, at most 3 times in a row: then the deque's newest
 *     task runs and the slot's task is queued behind it, so two tasks
 *     ping-ponging through the slot cannot starve the rest;
 *  4. the deque: the newest task (bottom: work-first, depth-first, few
 *     stacks alive), except right after a yield, when the oldest (top) is
 *     taken so the yielder goes behind the others. Every 61st tick a
 *     woken (already started) task that has waited at the top since the
 *     previous check is taken first, so woken tasks never starve; never
 *     an unstarted one (see fair_pick());
 *  5. the injection queue (its resume lane first: started tasks before
 *     fresh ones); then due timers;
 *  6. steal half of a random victim's deque (at most half the workers
 *     search at once), then victims' LIFO slots;
 *  7. park (see park()).
 *
 * The scheduler context (the worker thread's own stack) never migrates, so
 * code here may keep its struct weft__worker pointer. Task-side code must
 * call weft__worker_current() after every switch (sched.h).
 */
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/sched.h"
#include "io/backend.h"
#include "runtime/test_hooks.h"

void weft__idle_enter(struct weft__worker *w);
bool weft__idle_leave(struct weft__worker *w);
void weft__watch_pass(struct weft__worker *w);
void weft__watch_wake(struct weft__runtime *rt);

static _Thread_local struct weft__worker *tls_worker WEFT__TLS_IE;

/* Not inlined and re-read after every switch: a task that migrated must see
 * the worker it runs on now, not a cached address of the old thread's TLS. */
WEFT__NOINLINE struct weft__worker *weft__worker_current(void)
{
	struct weft__worker *w = tls_worker;
	/* Keep the compiler from hoisting the TLS address computation. */
	__asm__ __volatile__("" : "+r"(w));
	return w;
}

struct weft__task *weft__task_current(void)
{
	struct weft__worker *w = weft__worker_current();

	return w ? w->current : NULL;
}

WEFT_API int weft_worker_index(void)
{
	struct weft__worker *w = weft__worker_current();

	return w ? (int)w->index : -1;
}

static inline void stat_inc(_Atomic uint64_t *c)
{
	/* single writer: a plain load/store pair, release so that
	 * weft__stat_live()'s acquire reads see causally earlier counts. */
	atomic_store_explicit(c,
			      atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_release);
}

/* ------------------------------------------------------------ timers */

static void update_next_deadline(struct weft__worker *w)
{
	atomic_store_explicit(&w->next_deadline,
			      weft__timer_next_deadline(&w->timers),
			      memory_order_relaxed);
}

void weft__timer_arm(struct weft__worker *w, struct weft__task *t,
		     uint64_t deadline_ns)
{
	pthread_mutex_lock(&w->timer_lock);
	t->timer_seq = t->cur_wait->word;
	weft__timer_insert(&w->timers, &t->timer, deadline_ns);
	atomic_store_explicit(&t->timer_worker, w, memory_order_release);
	update_next_deadline(w);
	pthread_mutex_unlock(&w->timer_lock);
}

void weft__timer_disarm(struct weft__task *t)
{
	struct weft__worker *tw =
		atomic_load_explicit(&t->timer_worker, memory_order_acquire);

	if (!tw)
		return;
	weft__chaos(); /* resumed: a fire of our timer may be under way */
	/* Under the arming worker's lock: a fire in progress has finished
	 * with t when we get it. */
	pthread_mutex_lock(&tw->timer_lock);
	if (weft__timer_linked(&t->timer)) {
		weft__timer_remove(&tw->timers, &t->timer);
		update_next_deadline(tw);
	}
	atomic_store_explicit(&t->timer_worker, NULL, memory_order_relaxed);
	pthread_mutex_unlock(&tw->timer_lock);
}

/*
 * Fire the due timers in v's heap; the tasks they wake become runnable on
 * w (the calling worker). @trylock: do not wait for v's lock (another
 * worker's: its owner or a third worker is at it). Return: how many tasks
 * became runnable.
 */
static unsigned fire_timers_of(struct weft__worker *w, struct weft__worker *v,
			       uint64_t now, bool trylock)
{
	struct weft__timer *tm;
	struct weft__task *fired = NULL; /* claimed, the last one first */
	unsigned n = 0;

	weft__chaos(); /* timers due: their tasks may be cancelled meanwhile */
	if (trylock) {
		if (pthread_mutex_trylock(&v->timer_lock))
			return 0;
	} else {
		pthread_mutex_lock(&v->timer_lock);
	}
	while ((tm = weft__timer_pop_expired(&v->timers, now))) {
		struct weft__task *t =
			weft__container_of(tm, struct weft__task, timer);
		if (weft__wait_try_claim(t, t->timer_seq, WEFT__WAKE_TIMER) ==
		    2) {
			/* Claimed: ours to ready, in no run queue, so its
			 * run-queue link is free until then. */
			t->next = fired;
			fired = t;
			n++;
		}
		atomic_store_explicit(&t->timer_worker, NULL,
				      memory_order_release);
	}
	update_next_deadline(v);
	pthread_mutex_unlock(&v->timer_lock);
	/* Into the deque, not the LIFO slot: a burst of expiries would only
	 * shuffle through the slot. They fired in (deadline, arming) order
	 * and w pops its deque last in, first out: pushed last-fired first,
	 * equal deadlines resume in the order their tasks went to sleep
	 * (RELIABILITY E7), as asyncio's do; in a batch of more than about
	 * 60, fair_pick() runs some of the last ones early. */
	while (fired) {
		struct weft__task *t = fired;
		fired = t->next;
		weft__ready_local_quiet(w, t);
	}
	/* w is in its scheduler and runs one of them next: another worker
	 * is woken only for the rest (Tokio's should_notify_others). One
	 * sleeper's wake-up used to wake an idle worker too, which spun
	 * (SPIN_NS) and parked again for nothing. The deque's length is a
	 * thief-racy hint: it can only make us wake one too many. */
	size_t runnable =
		weft__deque_len(&w->dq) + (w->pin_head != NULL) +
		(atomic_load_explicit(&w->lifo, memory_order_relaxed) != NULL);
	if (n && runnable > 1)
		weft__notify(w->rt);
	return n;
}

/* Fire every due timer of w. Return: how many tasks became runnable. */
static unsigned fire_timers(struct weft__worker *w)
{
	uint64_t nd = atomic_load_explicit(&w->next_deadline,
					   memory_order_relaxed);
	uint64_t now;

	if (nd == UINT64_MAX)
		return 0;
	now = weft__clock_now();
	if (now < nd)
		return 0;
	return fire_timers_of(w, w, now, false);
}

/*
 * Timers of a worker stuck in a long task (it runs no scheduler code, so
 * it fires nothing): once one is TIMER_STEAL_GRACE_NS overdue, a worker
 * that is looking for work fires it, and the woken task runs here. The
 * idle worker that holds the watcher role (sched.c) parks no later than a
 * busy worker's first deadline plus the grace, and polls while a worker
 * is busy (park_deadline()). The grace leaves the owner, which checks its
 * timers every few task runs, time to do it itself.
 */
#define TIMER_STEAL_GRACE_NS UINT64_C(2000000)

static unsigned steal_timers(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t now = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *v = rt->workers[i];
		uint64_t nd = atomic_load_explicit(&v->next_deadline,
						   memory_order_relaxed);
		if (v == w || nd == UINT64_MAX)
			continue;
		if (!now)
			now = weft__clock_now();
		if (nd > now || now - nd < TIMER_STEAL_GRACE_NS)
			continue;
		n += fire_timers_of(w, v, now, true);
	}
	return n;
}

/*
 * When a parking worker must wake up: its own first deadline; for the
 * watcher (sched.c), also a busy worker's first deadline plus the grace,
 * whichever comes first, and while any other worker is busy, within
 * TIMER_POLL_NS at most, because a busy worker may arm a timer after we
 * looked and then get stuck (nobody is woken for an armed timer). That
 * costs the runtime at most 100 wake-ups a second, one worker's, and only
 * while another one runs; it cost every idle worker that many, each
 * scanning every worker, before the role existed.
 */
#define TIMER_POLL_NS UINT64_C(10000000)
#define TRIM_SLACK_NS UINT64_C(10000000)

static uint64_t park_deadline(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t d = atomic_load_explicit(&w->next_deadline,
					  memory_order_relaxed);
	/* Set by weft__idle_enter() just before, or by a watcher passing
	 * the role, which then kicks us: a stale false ends in that kick. */
	bool watch = atomic_load_explicit(&w->watching, memory_order_relaxed);
	bool busy = false;

	/* seq_cst: Dekker with park()'s exit, which clears a worker's idle
	 * flag and then reads watch_deep: either we see it busy below, or
	 * it sees us deep asleep and wakes us. */
	if (watch)
		atomic_store_explicit(&rt->watch_deep, true,
				      memory_order_seq_cst);

	for (unsigned i = 0; watch && i < rt->nworkers; i++) {
		struct weft__worker *v = rt->workers[i];
		uint64_t nd;
		if (v == w ||
		    atomic_load_explicit(&v->idle, memory_order_seq_cst))
			continue;
		busy = true;
		nd = atomic_load_explicit(&v->next_deadline,
					  memory_order_relaxed);
		if (nd < UINT64_MAX - TIMER_STEAL_GRACE_NS &&
		    nd + TIMER_STEAL_GRACE_NS < d)
			d = nd + TIMER_STEAL_GRACE_NS;
	}
	if (watch &&
	    atomic_load_explicit(&rt->watch_poll_once, memory_order_relaxed)) {
		atomic_store_explicit(&rt->watch_poll_once, false,
				      memory_order_relaxed);
		busy = true;
	}
	if (busy) {
		atomic_store_explicit(&rt->watch_deep, false,
				      memory_order_relaxed);
		uint64_t cap = weft__deadline_after(weft__clock_now(),
						    TIMER_POLL_NS);
		if (cap < d)
			d = cap;
	}
	/* Tasks waiting for a stack go back to the queue then. */
	if (w->starved_head && w->starved_retry_ns < d)
		d = w->starved_retry_ns;
	/* Free stacks due to give their pages back (stack.c): the trim
	 * clock is the coarse one, which may lag by a tick; the slack keeps
	 * us from waking before it says the trim is due. */
	uint64_t trim = weft__stack_pool_trim_due(&rt->stacks);
	if (trim < UINT64_MAX - TRIM_SLACK_NS && trim + TRIM_SLACK_NS < d)
		d = trim + TRIM_SLACK_NS;
	return d;
}

/* ------------------------------------------------------------ picking */

static struct weft__task *pin_pop(struct weft__worker *w)
{
	struct weft__task *t;

	if (atomic_load_explicit(&w->inbox_len, memory_order_relaxed)) {
		pthread_mutex_lock(&w->inbox_lock);
		if (w->inbox_head) {
			if (w->pin_tail)
				w->pin_tail->next = w->inbox_head;
			else
				w->pin_head = w->inbox_head;
			w->pin_tail = w->inbox_tail;
			w->inbox_head = w->inbox_tail = NULL;
			atomic_store_explicit(&w->inbox_len, 0,
					      memory_order_relaxed);
		}
		pthread_mutex_unlock(&w->inbox_lock);
	}
	t = w->pin_head;
	if (t) {
		w->pin_head = t->next;
		if (!w->pin_head)
			w->pin_tail = NULL;
	}
	return t;
}

static void *deque_pop(struct weft__worker *w, bool fifo)
{
	void *p = NULL;

	if (!fifo)
		return weft__deque_take(&w->dq);
	/* The owner takes from its own top (FIFO end) as a thief would, but
	 * without a thief's fence: bottom is its own and cannot move during
	 * the call, so only the CAS on top races (with thieves). One
	 * serialising instruction less per yield. 0: the deque is empty. */
	return weft__deque_take_top(&w->dq, &p, 1) ? p : NULL;
}

#define TURN_BATCH_MAX 30 /* see inject_take() */

/* Take a fair share of the injection queue (at most 64) in one lock: the
 * first item is returned, the rest go to our deque. @fresh_first: the
 * fresh lane's oldest entry comes first (weft__inject_pop()). */
static void *inject_take(struct weft__worker *w, bool fresh_first)
{
	struct weft__runtime *rt = w->rt;
	size_t len = atomic_load_explicit(&rt->inject_len,
					  memory_order_relaxed);
	size_t want = len / rt->nworkers + 1, n, room;
	void *items[64];

	if (!len)
		return NULL;
	if (want > WEFT__ARRAY_SIZE(items))
		want = WEFT__ARRAY_SIZE(items);
	/* The 61-tick turn takes fewer items than the 61 tasks run before
	 * the next turn, so its batches never bury what waits deeper in our
	 * deque (the deque's newest run first): a batch of 64 a turn kept
	 * woken tasks below it waiting until the injection queue ran dry. */
	if (fresh_first && want > TURN_BATCH_MAX)
		want = TURN_BATCH_MAX;
	/* No more than the deque has room for: pushing into a full deque
	 * spills its older half straight back (a lock round trip and a
	 * reshuffle for nothing). */
	room = WEFT__DEQUE_CAP - weft__deque_len(&w->dq);
	if (want > room + 1)
		want = room + 1;
	n = weft__inject_pop(rt, items, want, fresh_first);
	if (!n)
		return NULL;
	for (size_t i = 1; i < n; i++)
		weft__deque_push_or_spill(w, items[i]);
	return items[0];
}

static uint64_t next_rand(struct weft__worker *w)
{
	/* xorshift64*: victim choice only */
	uint64_t x = w->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void *steal_work(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	unsigned n = rt->nworkers, start = (unsigned)(next_rand(w) % n);
	void *first = NULL;

	for (unsigned i = 0; i < n; i++) {
		struct weft__worker *v = rt->workers[(start + i) % n];
		if (v == w)
			continue;
		if (weft__deque_steal_half(&v->dq, &w->dq, &first)) {
			stat_inc(&w->stats.steals);
			return first;
		}
	}
	/* Last resort: a victim's LIFO slot (never notified for). */
	for (unsigned i = 0; i < n; i++) {
		struct weft__worker *v = rt->workers[(start + i) % n];
		if (v == w || !atomic_load_explicit(&v->lifo,
						    memory_order_relaxed))
			continue;
		/* acquire: pairs with the acq_rel exchange that filled it */
		struct weft__task *t = atomic_exchange_explicit(
			&v->lifo, NULL, memory_order_acq_rel);
		if (t) {
			stat_inc(&w->stats.steals);
			return t;
		}
	}
	first = inject_take(w, false);
	if (first)
		return first;
	/* A busy worker's overdue timers (steal_timers()). */
	if (steal_timers(w))
		return weft__deque_take(&w->dq);
	return NULL;
}

static void *search(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	if (!w->searching) {
		unsigned s = atomic_load_explicit(&rt->nsearching,
						  memory_order_relaxed);
		if (s >= rt->max_searchers) {
			/* The watcher's poll is for the timers of busy
			 * workers: with searchers always about (a stream of
			 * short tasks) the cap would keep it from ever
			 * looking at them. */
			if (atomic_load_explicit(&w->watching,
						 memory_order_relaxed) &&
			    steal_timers(w))
				return weft__deque_take(&w->dq);
			return NULL;
		}
		atomic_fetch_add_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
		w->searching = true;
	}
	return steal_work(w);
}

/*
 * A searching worker found work (by any path: steal, injection queue,
 * inbox, timers): it stops searching. If it was the last searcher there
 * may be more work; let one more worker look (Go's resetspinning).
 */
static void stop_searching(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	w->searching = false;
	if (atomic_fetch_sub_explicit(&rt->nsearching, 1,
				      memory_order_seq_cst) == 1)
		weft__notify(rt);
}

/* The owner's look at its deque's top item, or NULL. A thief may take it
 * meanwhile: the caller only reads atomics of a record that is never
 * freed, and a later deque_pop() takes whatever is on top then. */
static void *peek_top(struct weft__worker *w)
{
	int64_t top = atomic_load_explicit(&w->dq.top, memory_order_acquire);
	int64_t bot = atomic_load_explicit(&w->dq.bottom, memory_order_relaxed);

	if (top >= bot)
		return NULL;
	return atomic_load_explicit(&w->dq.buf[top & (WEFT__DEQUE_CAP - 1)],
				    memory_order_relaxed);
}

/*
 * The owner's look at the oldest item of its own deque: a task that already
 * ran (it was woken, not just spawned) and has waited there since before
 * the last fairness check is taken from the top. Unstarted tasks are left
 * alone: starting the oldest spawn first turns depth-first work (fib)
 * breadth-first and costs a stack per started task.
 */
static void *fair_pick(struct weft__worker *w)
{
	void *item = peek_top(w);

	/* Fresh entries are unstarted by definition. */
	if (!item || ((uintptr_t)item & WEFT__ITEM_FRESH))
		return NULL;
	struct weft__task *t = item;
	if (atomic_load_explicit(&t->fair_tick, memory_order_relaxed) + 61 >
	    w->tick)
		return NULL;
	return deque_pop(w, true);
}

/*
 * Is @tick a multiple of 61 (the global queue's turn)? The divisibility
 * test of Granlund and Montgomery: for odd d, x % d == 0 iff x times the
 * inverse of d mod 2^64 is at most (2^64 - 1) / d. gcc -O3 compiled the
 * plain remainder in weft__task_switch_out() to a 64-bit div, the largest
 * single cost of a yield hand-off.
 */
static inline bool global_turn(uint64_t tick)
{
	/* 61 * 0x4fbcda3ac10c9715 == 1 (mod 2^64) */
	return tick * UINT64_C(0x4fbcda3ac10c9715) <= UINT64_MAX / 61;
}

/* A fresh entry whose task its joiner already claimed to run inline.
 * acquire: pairs with the joiner's claim of run_claim (task.c), as in
 * run_task(); a stale RC_DEQUE read only sends the item to run_task(),
 * whose own claim CAS then fails and drops it. */
static bool tombstone(void *item)
{
	return ((uintptr_t)item & WEFT__ITEM_FRESH) &&
	       atomic_load_explicit(&weft__item_task(item)->run_claim,
				    memory_order_acquire) != WEFT__RC_DEQUE;
}

static void *next_task(struct weft__worker *w)
{
	void *t;

	w->tick++;
	/* Due timers are checked every 4th run while any is armed (one clock
	 * read), so a worker that always has work still wakes sleepers within
	 * a few task runs of their deadline, not only when it runs dry. */
	if ((w->tick & 3) == 0 &&
	    atomic_load_explicit(&w->next_deadline, memory_order_relaxed) !=
		    UINT64_MAX)
		fire_timers(w);
	if (WEFT__UNLIKELY(global_turn(w->tick))) {
		fire_timers(w);
		/* A busy worker still serves its ring; what completed may
		 * wait behind the running tasks, so let an idle worker steal. */
		if (weft__io_poll(w))
			weft__notify(w->rt);
		/* The fresh lane's oldest entry first: a steady stream of
		 * woken tasks spilled to the resume lane (popped first
		 * everywhere else) cannot keep spawns waiting for ever. */
		t = inject_take(w, true);
		if (t)
			return t;
		t = fair_pick(w);
		if (t)
			return t;
	}
	if (WEFT__UNLIKELY(w->after_yield)) {
		/* A yielder (pinned or not) goes behind the others: the
		 * deque's oldest task first, then the pinned FIFO, so a
		 * yielding pinned task cannot starve the deque either.
		 * Tombstones (fresh entries run inline) do not count. */
		w->after_yield = false;
		if (WEFT__UNLIKELY(w->yield_stash)) {
			t = w->yield_stash;
			w->yield_stash = NULL;
			/* A tombstone runs nothing: returned, it would use up
			 * this pick and the yielder (the deque's newest) would
			 * run next, ahead of the others. Dropped, as below. */
			if (!tombstone(t))
				return t;
		}
		/* A task woken into the LIFO slot counts as "other runnable
		 * tasks" too: it runs before the yielder comes back. */
		if (atomic_load_explicit(&w->lifo, memory_order_relaxed)) {
			t = atomic_exchange_explicit(&w->lifo, NULL,
						     memory_order_acq_rel);
			if (t)
				return t;
		}
		while ((t = deque_pop(w, true))) {
			if (!tombstone(t))
				return t;
			/* a tombstone: dropped (it holds no reference) */
		}
	}
	if (w->pin_head ||
	    atomic_load_explicit(&w->inbox_len, memory_order_relaxed)) {
		t = pin_pop(w);
		if (t)
			return t;
	}
	if (atomic_load_explicit(&w->lifo, memory_order_relaxed)) {
		t = atomic_exchange_explicit(&w->lifo, NULL,
					     memory_order_acq_rel);
		if (t) {
			if (w->lifo_streak < 3) {
				w->lifo_streak++;
				return t;
			}
			/* Cap reached: run the deque's newest task first and
			 * queue the slot's task behind it, so a pair
			 * ping-ponging through the slot lets the rest run. */
			void *u = weft__deque_take(&w->dq);
			w->lifo_streak = 0;
			weft__deque_push_or_spill(w, t);
			if (u)
				return u;
			return weft__deque_take(&w->dq);
		}
	}
	w->lifo_streak = 0;
	t = weft__deque_take(&w->dq);
	if (t)
		return t;
	/* Own queues empty: end of a round. Submit the SQEs the round's
	 * tasks prepared and reap completions (io/backend.h). */
	if (weft__io_poll(w)) {
		t = weft__deque_take(&w->dq);
		if (t)
			return t;
		if (w->pin_head)
			return pin_pop(w);
	}
	t = inject_take(w, false);
	if (t)
		return t;
	if (fire_timers(w)) {
		t = weft__deque_take(&w->dq);
		if (t)
			return t;
	}
	return search(w);
}

/* ------------------------------------------------------------ parking */

static bool work_visible(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	if (atomic_load_explicit(&rt->inject_len, memory_order_seq_cst) ||
	    atomic_load_explicit(&w->inbox_len, memory_order_seq_cst) ||
	    w->pin_head || atomic_load_explicit(&w->lifo, memory_order_seq_cst) ||
	    weft__io_has_work(w)) /* requests posted to its reactor */
		return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (weft__deque_len(&rt->workers[i]->dq))
			return true;
	if (atomic_load_explicit(&w->next_deadline, memory_order_relaxed) <=
	    weft__clock_now())
		return true;
	return atomic_load_explicit(&rt->state, memory_order_seq_cst) ==
	       WEFT__RT_STOPPING;
}

/* A worker without an I/O backend sleeps on its park word until woken
 * or @deadline_ns (CLOCK_MONOTONIC, as FUTEX_WAIT_BITSET takes it;
 * UINT64_MAX: no limit). */
static void futex_park(struct weft__worker *w, uint64_t deadline_ns)
{
	struct timespec ts;

	weft__ns_to_timespec(deadline_ns, &ts);
	while (atomic_load_explicit(&w->park_word, memory_order_acquire) == 0) {
		long r = syscall(SYS_futex, (uint32_t *)&w->park_word,
				 FUTEX_WAIT_BITSET_PRIVATE, 0,
				 deadline_ns == UINT64_MAX ? NULL : &ts, NULL,
				 FUTEX_BITSET_MATCH_ANY);
		if (r < 0 && errno == ETIMEDOUT)
			break;
	}
}

/*
 * park() on the one worker of a WEFT_CLOCK_PAUSED runtime (the rules are
 * weft_clock_advance()'s in weft/runtime.h). Nothing is runnable. With no
 * task waiting on I/O or on an offloaded call, only a timer can wake a
 * task: jump the clock to the earliest deadline and let the worker loop
 * fire it, without sleeping. Otherwise sleep for real until that deadline
 * (on the virtual clock, the backends' relative wait is the same length),
 * a completion or a kick; with I/O or offloads in flight the clock then
 * moves by the real time that passed. The stack trim and the busy-worker
 * poll of park_deadline() are real-time matters a virtual clock must not
 * jump to: left out here.
 */
static void vclock_park(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t d =
		atomic_load_explicit(&w->next_deadline, memory_order_relaxed);
	uint64_t v0 =
		atomic_load_explicit(&rt->vclock_ns, memory_order_relaxed);
	bool in_flight =
		weft__io_busy(w) ||
		atomic_load_explicit(&w->offload_waiting, memory_order_relaxed);
	uint64_t r0 = weft__clock_real();
	bool starved = false;

	/* Tasks waiting for a stack retry after a real-time back-off: sleep
	 * until then, as long on this clock, and jump nowhere. */
	if (w->starved_head) {
		uint64_t sd = weft__deadline_after(
			v0, w->starved_retry_ns > r0 ?
				    w->starved_retry_ns - r0 :
				    0);
		if (sd <= d) {
			d = sd;
			starved = true;
		}
	}
	if (!in_flight && !starved && d != UINT64_MAX) {
		if (d > v0)
			atomic_store_explicit(&rt->vclock_ns, d,
					      memory_order_relaxed);
		return;
	}
	if (w->io) {
		if (atomic_load_explicit(&w->park_word, memory_order_acquire) ==
		    0)
			weft__io_sleep(w, d);
	} else {
		futex_park(w, d == UINT64_MAX ?
				      UINT64_MAX :
				      weft__deadline_after(r0, d > v0 ? d - v0 :
									0));
	}
	if (in_flight) {
		uint64_t v = weft__deadline_after(v0, weft__clock_real() - r0);
		/* below WEFT_FOREVER, as weft_clock_advance() keeps it */
		atomic_store_explicit(&rt->vclock_ns,
				      v == UINT64_MAX ? UINT64_MAX - 1 : v,
				      memory_order_relaxed);
	}
}

static void park(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t deadline;

	if (w->searching) {
		w->searching = false;
		atomic_fetch_sub_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
	}
	weft__idle_enter(w);
	weft__chaos(); /* registered idle, queues not yet re-checked */
	/* seq_cst: pairs with the fence in weft__notify() (Dekker). */
	atomic_thread_fence(memory_order_seq_cst);
	if (work_visible(w)) {
		weft__idle_leave(w);
		return;
	}
	weft__chaos(); /* RELIABILITY C5: queues empty, not yet asleep */
	stat_inc(&w->stats.parks);
	/* Idle: a good time to return the memory of stacks left unused
	 * (stack.c); park_deadline() wakes us when the next trim is due. */
	if (weft__stack_pool_trim_due(&rt->stacks) <= weft__clock_coarse())
		weft__stack_pool_trim(&rt->stacks, weft__clock_coarse());
	if (WEFT__UNLIKELY(rt->vclock_paused)) {
		vclock_park(w);
		weft__idle_leave(w);
		return;
	}
	deadline = park_deadline(w);
	if (w->io) {
		/* The I/O backend's sleep (io/backend.h): ends on a
		 * completion, a kick or the deadline. Any of them ends the
		 * park; the loop reaps and looks again. */
		if (atomic_load_explicit(&w->park_word, memory_order_acquire) ==
		    0)
			weft__io_sleep(w, deadline);
	} else {
		futex_park(w, deadline);
	}
	weft__idle_leave(w);
}

/*
 * Before parking, a worker that may search spins for a short while
 * (SPIN_NS), looking for work with cheap loads and taking it with the full
 * pick. While it spins it stays counted in nsearching, so wakers do not
 * pay a futex wake for work it is about to find (Go's spinning M). A
 * futex sleep and wake-up costs 5-50 us on these machines; a burst of
 * short tasks would otherwise park and wake a worker per batch.
 */
#define SPIN_NS 50000

static bool work_hint(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	if (atomic_load_explicit(&rt->inject_len, memory_order_relaxed) ||
	    atomic_load_explicit(&w->inbox_len, memory_order_relaxed))
		return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (rt->workers[i] != w &&
		    weft__deque_len(&rt->workers[i]->dq))
			return true;
	return atomic_load_explicit(&w->next_deadline, memory_order_relaxed) !=
	       UINT64_MAX;
}

/*
 * A task parked from this worker waits on an offloaded call: spin for its
 * completion, which the pool thread hands back to our inbox while
 * offload_spin is set (offload.c), for at most SPIN_NS, then park. Not as
 * a searcher: a searcher that finds work wakes another worker
 * (stop_searching()), which for a sequential offload caller cost a worker
 * wake-up per call (measured, perf/offload.c); and another worker's spin
 * must not keep this one from waiting here.
 */
static void *spin_for_offload(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t end = weft__clock_real() + SPIN_NS;
	void *t = NULL;

	if (w->searching) {
		w->searching = false;
		atomic_fetch_sub_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
	}
	/* seq_cst: a pool thread that reads false uses the injection
	 * queue, which the loop below and park() both look at. */
	atomic_store_explicit(&w->offload_spin, true, memory_order_seq_cst);
	do {
		for (int i = 0; i < 64; i++)
			weft__cpu_relax();
		if (work_hint(w)) {
			t = next_task(w);
			if (t)
				break;
		}
		if (atomic_load_explicit(&rt->state, memory_order_relaxed) ==
		    WEFT__RT_STOPPING)
			break;
	} while (atomic_load_explicit(&w->offload_waiting,
				      memory_order_relaxed) &&
		 weft__clock_real() < end);
	atomic_store_explicit(&w->offload_spin, false, memory_order_relaxed);
	return t;
}

static void *spin_for_work(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	uint64_t end;

	if (atomic_load_explicit(&w->offload_waiting, memory_order_relaxed))
		return spin_for_offload(w);
	if (!w->searching) {
		unsigned s = atomic_load_explicit(&rt->nsearching,
						  memory_order_relaxed);
		if (s >= rt->max_searchers)
			return NULL;
		atomic_fetch_add_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
		w->searching = true;
	}
	end = weft__clock_real() + SPIN_NS;
	do {
		for (int i = 0; i < 64; i++)
			weft__cpu_relax();
		if (work_hint(w)) {
			void *t = next_task(w);
			if (t)
				return t;
		}
		if (atomic_load_explicit(&rt->state, memory_order_relaxed) ==
		    WEFT__RT_STOPPING)
			return NULL;
	} while (weft__clock_real() < end);
	return NULL;
}

/* ------------------------------------------------------------ running */

#ifndef NDEBUG
/* RELIABILITY C10: a task queued twice (a double wake) is about to run on
 * two workers at once. */
static void __attribute__((noreturn, cold))
weft__task_bug_twice(struct weft__task *t, unsigned other, unsigned me)
{
	weft__report("internal error: task '%s' (%p) is already running on "
		     "worker %u; worker %u was about to run it too (queued "
		     "twice: a double wake-up)",
		     t->name, (void *)t, other, me);
	abort();
}
#endif

#ifdef WEFT_TEST_HOOKS
WEFT_API unsigned long weft_test_deque_len(void)
{
	struct weft__worker *w = weft__worker_current();

	return w && weft__task_current() ? weft__deque_len(&w->dq) : 0;
}

WEFT_API void weft_test_queue_self_again(void)
{
	struct weft__task *t = weft__task_current();

	if (t) {
		weft__inject_push(t->rt, t);
		weft__notify(t->rt);
	}
}
#endif

/* ------------------------------------------------------------ no stack */

/*
 * A task that could get no stack (run_task()) must still run, exactly
 * once, and must not make its worker spin: it waits on w's starved list,
 * which goes back to the injection queue at starved_retry_ns (any worker
 * may have stacks cached by then, or memory may be back), and the worker
 * parks no later than that (park_deadline()). The pause doubles from
 * 1 ms to 64 ms while stacks keep failing here and resets at w's next
 * stack. Meanwhile spawns fail with ENOMEM (task.c stack_obtainable()).
 */
#define STARVED_MIN_NS UINT64_C(1000000)
#define STARVED_MAX_NS UINT64_C(64000000)

static void starve(struct weft__worker *w, struct weft__task *t)
{
	t->next = NULL;
	if (w->starved_tail) {
		w->starved_tail->next = t;
	} else {
		uint64_t b = w->starved_backoff_ns;

		b = b ? (b >= STARVED_MAX_NS / 2 ? STARVED_MAX_NS : 2 * b) :
			STARVED_MIN_NS;
		w->starved_backoff_ns = b;
		w->starved_retry_ns = weft__clock_real() + b;
		w->starved_head = t;
	}
	w->starved_tail = t;
}

/* Give the starved tasks another try, when due (@now: at once). */
static void starved_release(struct weft__worker *w, bool now)
{
	struct weft__task *t = w->starved_head, *next;

	if (WEFT__LIKELY(!t) ||
	    (!now && weft__clock_real() < w->starved_retry_ns))
		return;
	w->starved_head = w->starved_tail = NULL;
	for (; t; t = next) {
		next = t->next;
		t->next = NULL;
		weft__inject_push(w->rt, t);
	}
	weft__notify(w->rt);
}

/* A yielder goes behind the worker's other tasks (the deque's bottom; the
 * next pick after a yield takes the top). */
static void queue_yielder(struct weft__worker *w, struct weft__task *t)
{
	struct weft__runtime *rt = w->rt;

	weft__deque_push_or_spill(w, t);
	/* Cheap check: the task stays ours if nobody comes. */
	if (atomic_load_explicit(&rt->nidle, memory_order_relaxed) &&
	    !atomic_load_explicit(&rt->nsearching, memory_order_relaxed))
		weft__notify(rt);
}

static void run_task(struct weft__worker *w, void *item)
{
	struct weft__runtime *rt = w->rt;
	struct weft__task *t = weft__item_task(item);

	if ((uintptr_t)item & WEFT__ITEM_FRESH) {
		int exp = WEFT__RC_DEQUE;
		/* acq_rel: pairs with the inline claim in task.c. */
		if (!atomic_compare_exchange_strong_explicit(
			    &t->run_claim, &exp, WEFT__RC_RUN,
			    memory_order_acq_rel, memory_order_acquire)) {
			/* Its joiner ran it inline: a tombstone. */
			return;
		}
	}
	if (WEFT__UNLIKELY(!t->stack)) {
		struct weft__stack *s =
			weft__stack_get(&rt->stacks, &w->stacks, t->stack_size);
		if (!s) {
			/* fn must run exactly once: retry later rather than
			 * drop it. Reported at most once a second: the
			 * retries come back at once while memory is short. */
			/* relaxed: a rate limit; the CAS only picks one
			 * reporter per second, it orders nothing else. */
			static _Atomic uint64_t reported_ns;
			uint64_t now = weft__clock_coarse();
			uint64_t last = atomic_load_explicit(
				&reported_ns, memory_order_relaxed);
			if ((!last || now - last >= 1000000000u) &&
			    atomic_compare_exchange_strong_explicit(
				    &reported_ns, &last, now,
				    memory_order_relaxed, memory_order_relaxed))
				weft__report("cannot allocate a stack for task "
					     "'%s' (%s); retrying",
					     t->name, strerror(errno));
			/* Claimed (RC_RUN): held as a started task, it goes
			 * back to the injection queue after a pause and
			 * comes back here to try again (starved_*). */
			starve(w, t);
			return;
		}
		if (WEFT__UNLIKELY(w->starved_backoff_ns))
			w->starved_backoff_ns = 0;
		t->stack = s;
		atomic_store_explicit(&t->started, true, memory_order_relaxed);
		weft__ctx_make(&t->ctx, s->lo, s->size, weft__task_entry, t);
		if (t->spawn_flags & WEFT_SPAWN_PINNED)
			t->pinned_to = w;
	}
#ifndef NDEBUG
	unsigned other = atomic_exchange_explicit(&t->dbg_running_on,
						  w->index + 1,
						  memory_order_acq_rel);
	if (WEFT__UNLIKELY(other))
		weft__task_bug_twice(t, other - 1, w->index);
#endif
	w->current = t;
	/* w->clock_ns: read as the previous task switched back or the
	 * worker woke up, microseconds ago at most. */
	weft__task_set_state_at(t, WEFT__TASK_RUNNING, w->clock_ns);
	w->oi.stack = t->stack;
	w->oi.task_name = t->name;
	weft__overflow_set_current(&w->oi);
	weft__wd_slice_begin(w, t); /* watchdog (observe.c): no clock read */
	weft__ctx_switch_from_thread(&w->sched_ctx, &t->ctx);
	weft__wd_slice_end(w);
	weft__overflow_set_current(NULL);
	/* The task that switched back may not be t: a child t was running
	 * inline on its stack (task.c) switches out as itself, and t may
	 * have handed the worker to another task (weft__task_switch_out()),
	 * which switched back in its turn. */
	t = w->current;
	w->current = NULL;
	w->clock_ns = weft__clock_coarse();
#ifndef NDEBUG
	/* release: before anyone can queue it again (publish, push) */
	atomic_store_explicit(&t->dbg_running_on, 0, memory_order_release);
#endif

	switch (t->switch_reason) {
	case WEFT__SW_PARK:
		weft__note_switch(w, t); /* for dumps: waiting since */
		weft__wait_publish(w, t);
		break;
	case WEFT__SW_YIELD:
		weft__task_set_state_at(t, WEFT__TASK_RUNNABLE, w->clock_ns);
		if (t->pinned_to)
			weft__ready_local(w, t, false);
		else
			queue_yielder(w, t);
		w->after_yield = true;
		break;
	case WEFT__SW_EXIT:
		weft__ctx_destroy(&t->ctx);
		weft__stack_put(&rt->stacks, &w->stacks, t->stack);
		t->stack = NULL;
		weft__task_complete(w, t);
		break;
	default:
		WEFT__BUG_ON(1);
	}
}

/* ------------------------------------------------------------ hand-off */

/* Must the next pick (at @tick) go through the scheduler? Due timers,
 * the 61-tick turn, pinned work, the inbox, a stash or starved tasks. */
static bool scheduler_due(struct weft__worker *w, uint64_t tick)
{
	return !w->rt->handoff || w->pin_head || w->yield_stash ||
	       w->starved_head ||
	       atomic_load_explicit(&w->inbox_len, memory_order_relaxed) ||
	       global_turn(tick) ||
	       ((tick & 3) == 0 &&
		atomic_load_explicit(&w->next_deadline, memory_order_relaxed) !=
			UINT64_MAX);
}

/* Take the LIFO slot's task if it has started (a woken task always has);
 * one that has not goes to the deque for the scheduler to start. */
static struct weft__task *take_lifo_started(struct weft__worker *w)
{
	/* acq_rel as in next_task(): a thief may empty the slot first. */
	struct weft__task *n =
		atomic_exchange_explicit(&w->lifo, NULL, memory_order_acq_rel);

	if (n && WEFT__UNLIKELY(!n->stack)) { /* never seen */
		weft__deque_push_or_spill(w, n);
		return NULL;
	}
	return n;
}

/*
 * Direct hand-off, the fast path of a park: a task that parks while its
 * worker's LIFO slot holds the task the scheduler would run next anyway
 * switches straight to that task instead of going through the scheduler's
 * stack (one switch instead of two, and none of run_task()'s bookkeeping):
 * a message passed between two tasks costs one switch.
 *
 * The park protocol still holds (wait.c): the parked task's publish must
 * run only once its registers are saved, i.e. after the switch. So the
 * parking task leaves itself in w->handoff and the task it switched to
 * publishes it, first thing after its own switch returns
 * (handoff_finish(), called at every resume point of a started task: they
 * all go through weft__task_switch_out()). Until then the parked task is in
 * no queue, exactly as while the scheduler would be publishing it.
 *
 * The pick is next_task()'s, limited to its common case: nothing due
 * (every 4th tick with timers armed, every 61st), no pinned work, no
 * yielder pending, the LIFO streak below its cap, and the slot's task
 * started (a woken task always is). Anything else goes through the
 * scheduler, which then makes the same choice the long way.
 */
static struct weft__task *handoff_pick(struct weft__worker *w)
{
	uint64_t tick = w->tick + 1;
	struct weft__task *n;

	if (w->lifo_streak >= 3 || w->after_yield || scheduler_due(w, tick) ||
	    !atomic_load_explicit(&w->lifo, memory_order_relaxed))
		return NULL;
	n = take_lifo_started(w);
	if (!n)
		return NULL;
	w->tick = tick;
	w->lifo_streak++;
	return n;
}

#ifdef WEFT_TEST_HOOKS
static _Atomic int yield_skip_peek;
static _Atomic unsigned long yield_stashes;

WEFT_API void weft_test_yield_skip_peek(int on)
{
	atomic_store_explicit(&yield_skip_peek, on, memory_order_relaxed);
}

WEFT_API unsigned long weft_test_yield_stashes(void)
{
	return atomic_load_explicit(&yield_stashes, memory_order_relaxed);
}

static bool skip_peek(void)
{
	return atomic_load_explicit(&yield_skip_peek, memory_order_relaxed);
}

static void count_stash(void)
{
	atomic_fetch_add_explicit(&yield_stashes, 1, memory_order_relaxed);
}
#else
static inline bool skip_peek(void)
{
	return false;
}

static inline void count_stash(void)
{
}
#endif

/*
 * The same for a yield: the task next_task() would pick after a yield
 * (the LIFO slot's, else the deque's oldest) when that is a started task
 * and nothing else is due; the yielder is queued by the task switched to
 * (handoff_finish()), once its registers are saved, as a park is
 * published. A yield between two tasks then costs one switch, not two.
 * An item popped from the top that turns out unstarted (a thief took the
 * one looked at meanwhile) is stashed for the scheduler, which runs it
 * first, as it would have.
 */
static struct weft__task *yield_pick(struct weft__worker *w)
{
	uint64_t tick = w->tick + 1;
	struct weft__task *n;
	void *item;

	if (scheduler_due(w, tick))
		return NULL;
	if (atomic_load_explicit(&w->lifo, memory_order_relaxed)) {
		n = take_lifo_started(w);
		if (n)
			w->tick = tick;
		return n;
	}
	/* A look at the top first, as fair_pick(): only a started task. */
	item = peek_top(w);
	if (!item || (((uintptr_t)item & WEFT__ITEM_FRESH) && !skip_peek()))
		return NULL;
	item = deque_pop(w, true);
	if (!item)
		return NULL;
	if (WEFT__UNLIKELY(((uintptr_t)item & WEFT__ITEM_FRESH) ||
			   !weft__item_task(item)->stack)) {
		w->yield_stash = item;
		count_stash();
		return NULL;
	}
	w->tick = tick;
	return item;
}

/* On the task switched to: publish the task that handed over (step 3 of
 * wait.c's protocol, as run_task() does after a park), or queue it if it
 * yielded. */
static void handoff_finish(struct weft__worker *w)
{
	struct weft__task *p = w->handoff;

	w->handoff = NULL;
#ifndef NDEBUG
	/* release: before anyone can queue it again (publish) */
	atomic_store_explicit(&p->dbg_running_on, 0, memory_order_release);
#endif
	if (w->handoff_yield) {
		w->handoff_yield = false;
		weft__task_set_state_at(p, WEFT__TASK_RUNNABLE, w->clock_ns);
		queue_yielder(w, p);
		return;
	}
	weft__note_switch(w, p); /* for dumps: waiting since */
	weft__wait_publish(w, p);
}

/*
 * weft__task_switch_out() - Switch @t out for its t->switch_reason, and
 * return when it runs again (maybe on another worker). A park hands the
 * worker straight to the next task when it can (above); anything else
 * switches to the scheduler.
 * Context: @t, the running task.
 */
void weft__task_switch_out(struct weft__task *t)
{
	/* Reached through the accessor, before and after the switch: t may
	 * come back on another worker. */
	struct weft__worker *w = weft__worker_current();
	struct weft__task *n = NULL;

	if (t->switch_reason == WEFT__SW_PARK) {
		n = handoff_pick(w);
	} else if (t->switch_reason == WEFT__SW_YIELD && !t->pinned_to) {
		n = yield_pick(w);
		w->handoff_yield = n != NULL;
	}
	if (n) {
#ifndef NDEBUG
		unsigned other = atomic_exchange_explicit(
			&n->dbg_running_on, w->index + 1,
			memory_order_acq_rel);
		if (WEFT__UNLIKELY(other))
			weft__task_bug_twice(n, other - 1, w->index);
#endif
		stat_inc(&w->stats.handoffs);
		w->handoff = t;
		w->current = n;
		weft__task_set_state_at(n, WEFT__TASK_RUNNING, w->clock_ns);
		/* w->oi still names t: see below. */
		weft__wd_slice_begin(w, n);
		weft__ctx_switch(&t->ctx, &n->ctx);
	} else {
		weft__ctx_switch(&t->ctx, &w->sched_ctx);
	}
	w = weft__worker_current();
	if (w->handoff) {
		/* Handed to: only now may the overflow reporter name us.
		 * Until the switch was done the thread ran on the stack of
		 * the task that handed over, whose last frames (the swap's
		 * register saves) can be the ones that hit its guard; named
		 * before, that overflow was a bare SIGSEGV with no report.
		 * Our stack is no deeper here than when we switched out. */
		w->oi.stack = t->stack;
		w->oi.task_name = t->name;
		handoff_finish(w);
	}
}

void *weft__worker_main(void *arg)
{
	struct weft__worker *w = arg;
	struct weft__runtime *rt = w->rt;

	tls_worker = w;
	weft__io_worker_start(w);
	weft__ctx_init_thread(&w->sched_ctx);
	if (weft__altstack_setup(&w->altstack) == 0)
		weft__overflow_handler_install();
	w->clock_ns = weft__clock_coarse();
	for (;;) {
		starved_release(w, false);
		void *t = next_task(w);
		if (t) {
			if (WEFT__UNLIKELY(w->searching))
				stop_searching(w);
			/* Never run a task holding the watcher role. */
			if (WEFT__UNLIKELY(atomic_load_explicit(
				    &w->watching, memory_order_relaxed)))
				weft__watch_pass(w);
			run_task(w, t);
			continue;
		}
		if (atomic_load_explicit(&rt->state, memory_order_acquire) ==
		    WEFT__RT_STOPPING)
			break;
		/* With I/O in flight the ring's sleep ends on its completions;
		 * spinning would only burn the core the peer needs. A paused
		 * clock's worker would spin before every jump of its clock. */
		t = weft__io_busy(w) || rt->vclock_paused ? NULL :
							    spin_for_work(w);
		if (t) {
			if (w->searching)
				stop_searching(w);
			if (atomic_load_explicit(&w->watching,
						 memory_order_relaxed))
				weft__watch_pass(w);
			w->clock_ns = weft__clock_coarse();
			run_task(w, t);
			continue;
		}
		park(w);
		w->clock_ns = weft__clock_coarse();
	}
	if (w->searching) {
		w->searching = false;
		atomic_fetch_sub_explicit(&rt->nsearching, 1,
					  memory_order_seq_cst);
	}
	/* Empty unless the runtime stops with tasks alive: they stay
	 * queued, as every other unfinished task. */
	starved_release(w, true);
	weft__stack_cache_flush(&rt->stacks, &w->stacks);
	weft__altstack_teardown(w->altstack);
	w->altstack = NULL;
	tls_worker = NULL;
	return NULL;
}
