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
 * The timer watcher: a worker stuck in a long task fires none of its
 * timers, and nobody is woken for a timer armed; so one idle worker, the
 * watcher, parks no later than a busy worker's first deadline plus a
 * grace, and at most TIMER_POLL_NS (10 ms) while any worker is busy, and
 * then fires what is overdue (worker.c, park_deadline(), steal_timers()).
 * The others park until their own deadlines: one poll per 10 ms for the
 * runtime, where every idle worker used to poll, each scanning every
 * worker. The role (rt->watcher, under idle_lock) is taken by a worker
 * going idle when nobody holds it, and kept across its polls; a watcher
 * about to run a task passes it to the idle worker at the bottom of the
 * idle stack and wakes it (weft__watch_pass()), or, with none idle, frees
 * it. So while any worker is idle a watcher exists, parked or about to
 * park or to pass the role on, and it never runs a task while it holds
 * the role. It sits at the bottom of the idle stack, which weft__notify()
 * pops last, so waking workers for work rarely moves the role.
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

/*
 * The injection queue holds queue items (tasks, or tagged fresh tasks:
 * sched.h) in array chunks, so moving a batch in or out copies pointers
 * and never touches the task records (cold, in a spawn-heavy program), and
 * a fresh task waiting here may still be run inline by its joiner (its
 * entry becomes a tombstone, dropped by whoever pops it).
 *
 * Two lanes of chunks, and the resume lane pops first:
 *   - resume: started tasks (woken ones a full deque spilled, woken by a
 *     foreign thread, starved of a stack), each holding a stack and
 *     whatever memory it pins until it runs to its end;
 *   - fresh: fresh entries (spawns a full deque spilled, foreign submits).
 * Why: a burst of wake-ups that overflows a deque (a thousand sleepers due
 * at once) used to go to the back of a single FIFO, behind every spawn
 * waiting there. With a million fresh tasks queued (shared/perf sleepers),
 * 40% of sleepers resumed seconds late, and meanwhile each task started
 * took a fresh stack: 270,000 stacks alive at once for sleeps of 1 ms.
 * Resuming what was started before starting more keeps stacks (and
 * whatever the tasks hold) bounded, as a depth-first scheduler does. The
 * fresh lane is not starved: every 61st tick takes its oldest entry first
 * (weft__inject_pop(), @fresh_first; worker.c next_task()).
 *
 * Chunks are recycled through a short free list. If a chunk cannot be
 * allocated, the remaining items go to the intrusive fallback list instead
 * (never lost, never an error; popped before both lanes): a fresh task
 * there gets RC_INJECT (its link is in use, so it must not be run inline)
 * and is tagged fresh again when popped.
 */
#define INJ_CHUNK 254
#define INJ_KEEP_FREE 16

struct weft__inject_chunk {
	struct weft__inject_chunk *next;
	uint32_t head, tail;		/* items [head, tail) are queued */
	void *item[INJ_CHUNK];
};

/* A chunk from the free list or the allocator. Context: inject_lock held;
 * may drop and retake it around the allocation. */
static struct weft__inject_chunk *chunk_get(struct weft__runtime *rt)
{
	struct weft__inject_chunk *c = rt->inj_free;

	if (c) {
		rt->inj_free = c->next;
		rt->inj_nfree--;
	} else {
		pthread_mutex_unlock(&rt->inject_lock);
		c = weft__alloc(sizeof(*c));
		pthread_mutex_lock(&rt->inject_lock);
		if (!c)
			return NULL;
	}
	c->next = NULL;
	c->head = c->tail = 0;
	return c;
}

/* Context: inject_lock held. */
static void chunk_put(struct weft__runtime *rt, struct weft__inject_chunk *c)
{
	if (rt->inj_nfree < INJ_KEEP_FREE) {
		c->next = rt->inj_free;
		rt->inj_free = c;
		rt->inj_nfree++;
	} else {
		weft__free(c);
	}
}

/* The fallback: link @item's task into the intrusive list. Context:
 * inject_lock held. Return: 1 if queued, 0 if it was a tombstone. */
static int fallback_push(struct weft__runtime *rt, void *item)
{
	struct weft__task *t = weft__item_task(item);

	if ((uintptr_t)item & WEFT__ITEM_FRESH) {
		int exp = WEFT__RC_DEQUE;
		if (!atomic_compare_exchange_strong_explicit(
			    &t->run_claim, &exp, WEFT__RC_INJECT,
			    memory_order_acq_rel, memory_order_acquire))
			return 0; /* run inline meanwhile: a tombstone */
	}
	t->next = NULL;
	if (rt->inject_tail)
		rt->inject_tail->next = t;
	else
		rt->inject_head = t;
	rt->inject_tail = t;
	return 1;
}

/*
 * Drop tombstones at the head of the chunks, at most @max, stopping at the
 * first live item. A task that spawns thousands and runs them inline as it
 * joins never lets its worker pop their spilled entries; without this they
 * would pile up (8 bytes a task) until it suspends. Reads run_claim of the
 * records looked at. Context: inject_lock held. Return: how many dropped.
 */
static size_t purge_head_tombstones(struct weft__runtime *rt, size_t max)
{
	size_t n = 0;

	while (n < max && rt->inj_fresh.head) {
		struct weft__inject_chunk *c = rt->inj_fresh.head;
		while (n < max && c->head < c->tail) {
			void *it = c->item[c->head];
			/* relaxed is enough: a stale RC_DEQUE only stops the
			 * purge early; a stale RC_RUN drops an entry whose
			 * record was just reused by a new spawn, which has its
			 * own entry (sched.h, run_claim): never a lost task. */
			if (!((uintptr_t)it & WEFT__ITEM_FRESH) ||
			    atomic_load_explicit(
				    &weft__item_task(it)->run_claim,
				    memory_order_relaxed) == WEFT__RC_DEQUE)
				return n;
			c->head++;
			n++;
		}
		if (c->head < c->tail)
			break;
		rt->inj_fresh.head = c->next;
		if (!rt->inj_fresh.head)
			rt->inj_fresh.tail = NULL;
		chunk_put(rt, c);
	}
	return n;
}

#define INJ_PURGE_AT 1024 /* queued items before a spill purges */

static void inject_push_items(struct weft__runtime *rt, void *const *items,
			      size_t n)
{
	size_t queued = 0, i = 0;

	pthread_mutex_lock(&rt->inject_lock);
	for (; i < n; i++) {
		struct weft__inject_lane *l =
			((uintptr_t)items[i] & WEFT__ITEM_FRESH) ?
				&rt->inj_fresh :
				&rt->inj_resume;
		struct weft__inject_chunk *c = l->tail;
		if (!c || c->tail == INJ_CHUNK) {
			c = chunk_get(rt);
			if (!c)
				break;
			/* the lock may have been dropped: re-read the tail */
			if (l->tail)
				l->tail->next = c;
			else
				l->head = c;
			l->tail = c;
		}
		c->item[c->tail++] = items[i];
		queued++;
	}
	for (; i < n; i++)
		queued += (size_t)fallback_push(rt, items[i]);
	if (n > 1 && atomic_load_explicit(&rt->inject_len,
					  memory_order_relaxed) > INJ_PURGE_AT) {
		size_t dropped = purge_head_tombstones(rt, 2 * n);
		/* the caller's items are queued at the tail: never dropped
		 * here unless everything before them was dead, and then they
		 * are tombstones too */
		atomic_fetch_sub_explicit(&rt->inject_len, dropped,
					  memory_order_relaxed);
	}
	/* seq_cst: the Dekker store of weft__notify()'s pairing (park()
	 * re-checks inject_len after announcing itself idle). */
	atomic_fetch_add_explicit(&rt->inject_len, queued,
				  memory_order_seq_cst);
	pthread_mutex_unlock(&rt->inject_lock);
}

void weft__inject_push(struct weft__runtime *rt, void *item)
{
	inject_push_items(rt, &item, 1);
}

/* Pop up to @max items of the fallback list into @out. Context:
 * inject_lock held. Return: how many. */
static size_t fallback_pop(struct weft__runtime *rt, void **out, size_t max)
{
	size_t n = 0;

	while (n < max && rt->inject_head) {
		struct weft__task *t = rt->inject_head;
		rt->inject_head = t->next;
		if (!rt->inject_head)
			rt->inject_tail = NULL;
		t->next = NULL;
		/* Ours now: nobody else claims from RC_INJECT. Tagged fresh
		 * again, its joiner may still run it inline. */
		if (atomic_load_explicit(&t->run_claim, memory_order_acquire) ==
		    WEFT__RC_INJECT) {
			atomic_store_explicit(&t->run_claim, WEFT__RC_DEQUE,
					      memory_order_release);
			out[n++] = weft__item_fresh(t);
		} else {
			out[n++] = t;
		}
	}
	return n;
}

/* The same for lane @l (oldest first). Context: inject_lock held. */
static size_t lane_pop(struct weft__runtime *rt, struct weft__inject_lane *l,
		       void **out, size_t max)
{
	size_t n = 0;

	while (n < max && l->head) {
		struct weft__inject_chunk *c = l->head;
		while (n < max && c->head < c->tail)
			out[n++] = c->item[c->head++];
		if (c->head < c->tail)
			break;
		l->head = c->next;
		if (!l->head)
			l->tail = NULL;
		chunk_put(rt, c);
	}
	return n;
}

/*
 * Pop up to @max items, oldest first within each part: the fallback list
 * (it only fills while allocation fails, so it holds older items), the
 * resume lane, the fresh lane; if @fresh_first, the fresh lane's oldest
 * entry before all of them. Return: how many were stored in @out.
 */
size_t weft__inject_pop(struct weft__runtime *rt, void **out, size_t max,
			bool fresh_first)
{
	size_t n = 0;

	if (!max ||
	    atomic_load_explicit(&rt->inject_len, memory_order_relaxed) == 0)
		return 0;
	pthread_mutex_lock(&rt->inject_lock);
	if (fresh_first)
		n = lane_pop(rt, &rt->inj_fresh, out, 1);
	n += fallback_pop(rt, out + n, max - n);
	n += lane_pop(rt, &rt->inj_resume, out + n, max - n);
	n += lane_pop(rt, &rt->inj_fresh, out + n, max - n);
	atomic_fetch_sub_explicit(&rt->inject_len, n, memory_order_relaxed);
	pthread_mutex_unlock(&rt->inject_lock);
	return n;
}

/* At runtime free, every queue is empty: release the chunks. */
void weft__inject_free_chunks(struct weft__runtime *rt)
{
	struct weft__inject_chunk *c, *next;
	struct weft__inject_chunk *lists[3] = { rt->inj_fresh.head,
						rt->inj_resume.head,
						rt->inj_free };

	for (unsigned i = 0; i < 3; i++) {
		for (c = lists[i]; c; c = next) {
			next = c->next;
			weft__free(c);
		}
	}
	rt->inj_fresh.head = rt->inj_fresh.tail = NULL;
	rt->inj_resume.head = rt->inj_resume.tail = NULL;
	rt->inj_free = NULL;
	rt->inj_nfree = 0;
}

/* ------------------------------------------------------------ local */

/*
 * Push @item (a task, or a tagged fresh task) to w's deque; when it is full
 * move the older half to the injection queue first.
 */
void weft__deque_push_or_spill(struct weft__worker *w, void *item)
{
	/* Moved in chunks: this may run on a task's stack. */
	void *batch[WEFT__DEQUE_CAP / 2 < 128 ? WEFT__DEQUE_CAP / 2 : 128];
	size_t n, moved = 0;

	/* Fairness bookkeeping only for started tasks (fair_pick() leaves
	 * fresh entries alone): a spawn does not touch that line. */
	if (!((uintptr_t)item & WEFT__ITEM_FRESH))
		atomic_store_explicit(&weft__item_task(item)->fair_tick,
				      w->tick, memory_order_relaxed);
	if (WEFT__LIKELY(weft__deque_push(&w->dq, item)))
		return;
	/* Full: the older half moves to the injection queue as it is
	 * (tombstones included: whoever pops one drops it), without
	 * touching a record. */
	do {
		n = weft__deque_take_top(&w->dq, batch,
					 WEFT__ARRAY_SIZE(batch));
		if (n)
			inject_push_items(w->rt, batch, n);
		moved += n;
	} while (n == WEFT__ARRAY_SIZE(batch) && moved < WEFT__DEQUE_CAP / 2);
	if (!weft__deque_push(&w->dq, item))
		weft__inject_push(w->rt, item);
}

/* A freshly spawned task of this worker: its tagged entry goes to the
 * deque, where a thief, the owner or its joiner (inline) may start it. */
void weft__ready_fresh(struct weft__worker *w, struct weft__task *t)
{
	weft__task_set_state(t, WEFT__TASK_RUNNABLE);
	/* release: the record is complete before any entry naming it can
	 * claim it (sched.h, run_claim). t may run, end and be recycled
	 * from here on: only the item is used below. */
	atomic_store_explicit(&t->run_claim, WEFT__RC_DEQUE,
			      memory_order_release);
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

/* weft__ready_local() but for the wake-up of another worker: true when t
 * (or the task it displaced from the LIFO slot) went into w's deque, where
 * another worker could take it. */
static bool ready_local_queue(struct weft__worker *w, struct weft__task *t,
			      bool lifo)
{
	/* Read what we need before t is published: once on a queue it may
	 * run, finish and be recycled (pinned_to reset) under us. */
	struct weft__worker *pin = t->pinned_to;

	/* w->clock_ns: read when w's current run slice began (or when its
	 * scheduler last came back), so a task woken late in a long slice
	 * shows as runnable since that slice began, an overstatement the
	 * slow-task watchdog reports on its own. One vDSO call less per
	 * wake (~4% of a ping-pong). */
	weft__task_set_state_at(t, WEFT__TASK_RUNNABLE, w->clock_ns);
	if (pin) {
		if (pin == w) {
			pin_append(w, t);
		} else {
			inbox_push(pin, t);
			weft__wake_worker(pin);
		}
		return false;
	}
	if (lifo) {
		/* Only the owner fills the slot; a thief only empties it. So
		 * an empty slot takes a plain store (a thief racing with it
		 * swaps NULL for NULL): one locked instruction less per wake
		 * in a ping-pong. release: t's state is published to a thief
		 * that takes the slot (acquire exchange in search()). */
		if (!atomic_load_explicit(&w->lifo, memory_order_relaxed)) {
			atomic_store_explicit(&w->lifo, t, memory_order_release);
			return false;
		}
		struct weft__task *prev = atomic_exchange_explicit(
			&w->lifo, t, memory_order_acq_rel);
		if (!prev)
			return false;
		t = prev;
	}
	weft__deque_push_or_spill(w, t);
	return true;
}

void weft__ready_local(struct weft__worker *w, struct weft__task *t, bool lifo)
{
	if (ready_local_queue(w, t, lifo))
		weft__notify(w->rt);
}

void weft__ready_local_quiet(struct weft__worker *w, struct weft__task *t)
{
	(void)ready_local_queue(w, t, false);
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

	weft__task_set_state(t, WEFT__TASK_RUNNABLE);
	if (pin) {
		inbox_push(pin, t);
		weft__wake_worker(pin);
		return;
	}
	weft__inject_push(rt, t);
	weft__notify(rt);
}

/*
 * Make @t runnable on @w, from a thread that is not one of rt's workers:
 * into w's inbox, waking w only if it is parked. For offload.c, whose pool
 * thread hands a finished call's task back to the worker that parked it
 * while that worker spins for it: no injection queue, no notify, and no
 * searcher woken for work its owner is about to take.
 * Context: any thread; never suspends.
 */
void weft__task_ready_on(struct weft__worker *w, struct weft__task *t)
{
	if (t->pinned_to)
		w = t->pinned_to;
	weft__task_set_state(t, WEFT__TASK_RUNNABLE);
	inbox_push(w, t);
	weft__wake_worker(w);
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

	weft__chaos(); /* work published, nobody told yet */
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
	weft__chaos();
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

/* Used by worker.c: register @w idle, taking the watcher role if nobody
 * holds it (the watcher then goes to the bottom of the idle stack, which
 * weft__notify() pops last). Context: w's scheduler stack. */
void weft__idle_enter(struct weft__worker *w);
void weft__idle_enter(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;

	pthread_mutex_lock(&rt->idle_lock);
	unsigned n = atomic_load_explicit(&rt->nidle, memory_order_relaxed);
	if (rt->watcher < 0) {
		rt->watcher = (int)w->index;
		atomic_store_explicit(&w->watching, true, memory_order_relaxed);
	}
	if (n && rt->watcher == (int)w->index) {
		rt->idle_stack[n] = rt->idle_stack[0];
		rt->idle_stack[0] = w->index;
	} else {
		rt->idle_stack[n] = w->index;
	}
	w->idle = true;
	atomic_store_explicit(&w->park_word, PARK_ASLEEP, memory_order_relaxed);
	atomic_store_explicit(&rt->nidle, n + 1, memory_order_seq_cst);
	pthread_mutex_unlock(&rt->idle_lock);
}

/*
 * The watcher @w is about to run a task: pass the role to the idle worker
 * at the bottom of the idle stack and wake it, so that it parks again as
 * the watcher; with no worker idle, nobody needs to watch and the next one
 * to go idle takes the role. Context: w's scheduler stack.
 */
void weft__watch_wake(struct weft__runtime *rt);
void weft__watch_pass(struct weft__worker *w);
void weft__watch_pass(struct weft__worker *w)
{
	struct weft__runtime *rt = w->rt;
	struct weft__worker *v = NULL;

	weft__chaos();
	pthread_mutex_lock(&rt->idle_lock);
	atomic_store_explicit(&w->watching, false, memory_order_relaxed);
	if (atomic_load_explicit(&rt->nidle, memory_order_relaxed)) {
		v = rt->workers[rt->idle_stack[0]];
		rt->watcher = (int)v->index;
		atomic_store_explicit(&v->watching, true, memory_order_relaxed);
		idle_remove_locked(rt, v);
		atomic_store_explicit(&v->park_word, PARK_WOKEN,
				      memory_order_release);
	} else {
		rt->watcher = -1;
	}
	pthread_mutex_unlock(&rt->idle_lock);
	if (v)
		kick(v);
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
	/* seq_cst: Dekker with the watcher's park_deadline() (our idle
	 * flag was cleared by a seq_cst store, ours or a waker's). */
	if (atomic_load_explicit(&w->watching, memory_order_relaxed))
		atomic_store_explicit(&rt->watch_deep, false,
				      memory_order_relaxed);
	else if (atomic_load_explicit(&rt->watch_deep, memory_order_seq_cst))
		weft__watch_wake(rt);
	return woken;
}

/*
 * A worker left the idle list while the watcher sleeps without polling
 * (it saw nobody busy): wake the watcher, which parks again polling while
 * that worker is busy. Context: any worker; never suspends.
 */
void weft__watch_wake(struct weft__runtime *rt)
{
	bool deep = true;
	struct weft__worker *v = NULL;

	if (!atomic_compare_exchange_strong_explicit(
		    &rt->watch_deep, &deep, false, memory_order_relaxed,
		    memory_order_relaxed))
		return;
	/* A worker busy for a moment would be idle again when the watcher
	 * looks, and every short burst of work would wake it once more. */
	atomic_store_explicit(&rt->watch_poll_once, true, memory_order_relaxed);
	pthread_mutex_lock(&rt->idle_lock);
	if (rt->watcher >= 0)
		v = rt->workers[rt->watcher];
	pthread_mutex_unlock(&rt->idle_lock);
	if (v)
		weft__wake_worker(v);
}
