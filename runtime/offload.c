/* SPDX-License-Identifier: MIT */
/*
 * runtime/offload.c - weft_offload(): an elastic pool of OS threads per
 * runtime that runs blocking or long CPU work off the workers
 * (asyncio.to_thread / run_in_executor, Tokio's spawn_blocking).
 *
 * Guarantees
 *  - fn runs exactly once per successful call, on a pool thread; the caller
 *    resumes only after fn returned, so arg may live on its stack.
 *  - A thread is started only when no idle thread is free, and at most
 *    offload_max are alive at once; requests beyond that wait FIFO.
 *  - A thread idle for idle_ns (10 s) exits; the runtime's shutdown joins
 *    every thread (no detached threads, nothing leaked).
 *  - The caller is woken through the wait protocol (wait.c), never polled.
 *
 * The call (task side), with the pool's records:
 *  1. Entry checks: -EPERM outside a task, the pending error (an already
 *     cancelled or expired caller returns without running fn; a shielded
 *     one runs it). The request record (fn, arg, status, task, wait word)
 *     lives on the caller's stack.
 *  2. Submit, still on the task's stack (before the switch, as a primitive
 *     links its waiter before parking; a claim from PREP is allowed: the
 *     publisher then re-queues the task): under the pool lock, pop the most
 *     recently idle thread and store the request in its hand-off slot, or
 *     reserve a new thread (below offload_max), or append to the FIFO.
 *     The wait is prepared (weft__wait_prepare()) before any thread can see
 *     the request: taken by a thread, it is not cancellable and has no
 *     deadline (fn cannot be interrupted; arg may be on our stack); queued,
 *     it is cancellable and bounded by the caller's deadlines.
 *     A sleeping thread is woken by futex after the lock is dropped.
 *  3. weft__wait_park(): switch out; the worker publishes (PREP -> ARMED).
 *  4. A queued request's caller woken by its cancellation or deadline
 *     looks under the pool lock (withdraw_or_rewait()): still queued, the
 *     request is unlinked and the caller returns -ECANCELED / -ETIMEDOUT
 *     (fn never runs, as a pending concurrent.futures call is cancelled);
 *     taken meanwhile, the caller waits for fn after all, uncancellably,
 *     on a fresh wait word it stores in the request for the thread; done,
 *     it returns fn's status.
 *  5. The pool thread runs fn, writes status into the record, then under
 *     the lock reads task, word and worker out of it and marks it done,
 *     and only then claims (SOURCE). From then on it never touches the
 *     record (the caller may already have returned).
 *     Claimed while ARMED, complete() makes the task runnable: into the
 *     inbox of the worker it parked on when that worker spins for it
 *     (worker.c spin_for_offload(), while it has offload waiters and
 *     nothing else to do, at most its SPIN_NS), else with
 *     weft__task_ready() (the injection queue and an idle worker's
 *     wake-up). Measured (perf/offload.c, 2 workers, machine load ~4):
 *     sequential 8.3-8.8 us -> 2.5-6.2 us per call; through the injection
 *     queue the worker that found the task woke the other one as a
 *     searcher (stop_searching()), whose spin then made the first park,
 *     so every call paid a worker wake-up.
 *  6. The caller returns fn's status. A cancellation that arrived while fn
 *     ran is level-triggered (J_CANCEL stays set): the next suspension
 *     point reports it.
 *
 * A pool thread's loop: run its request; then, under the lock, take the
 * FIFO's head, or push itself on the idle stack, and only then claim the
 * finished request's wait (so a caller that offloads again at once finds
 * it idle instead of starting a new thread); idle stack is LIFO (the thread that
 * went idle last is handed work first, so work concentrates on threads
 * whose caches and wake-up state are hot and the rest time out). Idle, it
 * spins for SPIN_NS on its hand-off slot (if fewer than max_spinners
 * threads spin), then sleeps on a futex until idle_ns has passed.
 *
 * Hand-off and sleep (Dekker on two seq_cst words of the thread):
 *   thread: sleeping = 1; if (handoff) skip; futex_wait(sleeping, 1)
 *   waker:  handoff = req;  if (xchg(sleeping, 0)) futex_wake(sleeping)
 * Either the thread sees the request, or the waker sees it asleep.
 * The waker stores handoff under the pool lock (it popped the thread from
 * the idle stack there), so a thread whose idle time ran out decides under
 * the same lock: still on the idle stack -> it leaves the stack and exits;
 * popped -> a request is in its slot, it runs it. An idle exit therefore
 * never loses a request (pool thread exit vs new request).
 *
 * Exit and join: an exiting thread leaves its record as the pool's
 * "zombie" and joins the previous zombie, so at most one exited thread is
 * unjoined at a time. Joined records are kept for reuse and freed only by
 * weft__offload_stop(): a submitter wakes its thread after dropping the
 * lock, and by then the thread may have run the request, idled out and
 * exited (found by TSan in offload_stress_test, IdleExitVsNewRequest), so
 * that late wake() must hit a live record; on a reused record it is at
 * worst a spurious wake-up, which the sleep loop tolerates. weft__offload_stop() wakes every idle thread with
 * the STOP hand-off, waits until no thread is alive and joins the last
 * zombie. It runs after the workers exited: every task has finished, so no
 * call is in flight (the drain of runtime.c cancels every task: queued
 * calls are withdrawn, and it waits for running ones, whose callers' waits
 * are not cancellable, reporting those still running after a grace
 * period, observe.c).
 * A pool thread that has just claimed may still be inside
 * weft__task_ready() touching rt; it is joined before rt is freed.
 *
 * Tried and measured (perf/offload.c, 2 cores): see SPIN_NS below.
 *
 * Lock order: the pool lock is a leaf (nothing else is taken under it;
 * pthread_create and futex calls happen outside it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/sched.h"
#include "runtime/test_hooks.h"

/*
 * How long an idle thread polls its hand-off slot before sleeping on the
 * futex, when it may spin at all (want_spin(): adaptive, at most
 * max_spinners at once, handed work first). A futex wake costs the
 * submitter a syscall and the call 5-20 us of wake-up latency on these
 * machines; a polled hand-off well under a microsecond. Measured with
 * perf/offload.c on the shared 2-core machine (load 3-5 from other
 * builds): 64 concurrent callers 1.7-4.4 us/call with spinning against
 * 5.3-6.1 without; the sequential caller never profits (its next call
 * comes only after a worker wake-up, and a spinner holding a core delays
 * exactly that: a fixed 50 us spin made it 50-90 us instead of 10-15),
 * which the adaptive score detects. WEFT_OFFLOAD_SPIN_NS overrides the
 * value (0: never spin) for measurements. One spinner per two workers:
 * 2 and 4 spinners with 2 workers measured no better for 64 callers
 * (3.1 and 3.8 us against 3.1, machine load 6-10). Re-measured once
 * completions went back to a spinning worker's inbox (complete()), load
 * 1-4, medians of 5: 2 spinners made 64 callers slower (3.4-4.8 us against
 * 2.9-3.35); WEFT_OFFLOAD_SPIN_NS 5000 / 20000 / 50000 gave seq 3.1-3.7 /
 * 3.2-3.4 / 2.8-3.2 us and c64 4.5-4.8 / 3.35-3.4 / 3.0-3.5 us: 20 us
 * kept, as the shortest spin that does not lose.
 */
#define SPIN_NS 20000u
#define IDLE_NS ((uint64_t)10 * 1000 * 1000 * 1000)

#define STOP_REQ ((struct offload_req *)(uintptr_t)1)

enum { ON_NONE, ON_SPIN, ON_SLEEP };

/* Where a request is; under the pool lock. */
enum { REQ_QUEUED, REQ_TAKEN, REQ_DONE };

struct offload_req {
	/* FIFO link, under the pool lock (a withdrawn request is unlinked
	 * from the middle). */
	struct weft__list link;
	weft_fn fn;
	void *arg;
	int status;			/* written by the pool thread */
	int state;			/* REQ_*; under the pool lock */
	struct weft__task *task;	/* the caller */
	/* The caller's wait word and the worker it parks on, read by the
	 * pool thread under the lock when fn has returned: a caller woken
	 * by its cancellation while fn runs re-parks, and replaces both
	 * under the lock (withdraw_or_rewait()). */
	uint64_t word;
	struct weft__worker *worker;
};

struct pool_thread {
	struct weft__offload_pool *pool;
	struct pool_thread *next_idle;	/* idle stack; under the lock */
	int on;				/* ON_NONE / ON_SPIN / ON_SLEEP: which
					 * idle stack; under the lock */
	/* Set by a waker under the lock (seq_cst), read and cleared by the
	 * thread: the request to run next, or STOP_REQ. */
	_Atomic(struct offload_req *) handoff;
	/* futex word: 1 while the thread sleeps or is about to (see top). */
	_Atomic uint32_t sleeping;
	unsigned idle_periods;		/* for the spin probe */
	pthread_t thread;
};

struct weft__offload_pool {
	pthread_mutex_t lock;
	pthread_cond_t all_exited;	/* signalled when nthreads drops to 0
					 * while stopping */
	struct weft__runtime *rt;
	struct weft__list fifo;		/* requests waiting for a thread */
	/* idle threads, LIFO: spinning ones (handed work first: no futex
	 * wake) and sleeping ones; nspin = length of idle_spin */
	struct pool_thread *idle_spin, *idle_sleep;
	unsigned nspin;
	struct pool_thread *zombie;	/* exited, not yet joined */
	struct pool_thread *free_recs;	/* joined records, for reuse */
	unsigned nthreads;		/* alive (started, not exited) */
	unsigned max;			/* offload_max */
	bool stopping;
	_Atomic unsigned nthreads_pub;	/* nthreads, for weft_stats */
	unsigned max_spinners;
	uint64_t spin_ns;
	_Atomic int spin_score;		/* adaptive spinning, see want_spin() */
	sigset_t sigmask;		/* the runtime creator's */
};

static _Thread_local struct weft__runtime *tls_offload_rt WEFT__TLS_IE;

/* Test hook: idle time of threads going idle from now on (0: default). */
static _Atomic uint64_t idle_ns_override;

#ifdef WEFT_TEST_HOOKS
static _Atomic int fail_create;

WEFT_API void weft_test_offload_idle_ns(uint64_t ns)
{
	atomic_store(&idle_ns_override, ns);
}

WEFT_API void weft_test_offload_fail_create(int n)
{
	atomic_store(&fail_create, n);
}

static _Atomic uint64_t withdraw_delay_ns;

WEFT_API void weft_test_offload_withdraw_delay_ns(uint64_t ns)
{
	atomic_store(&withdraw_delay_ns, ns);
}

/* Stall (the worker: a test hook) before a woken caller looks. */
static void withdraw_delay(void)
{
	uint64_t ns = atomic_load(&withdraw_delay_ns);

	if (ns)
		usleep((useconds_t)(ns / 1000));
}

static bool create_should_fail(void)
{
	int n = atomic_load(&fail_create);

	while (n > 0)
		if (atomic_compare_exchange_weak(&fail_create, &n, n - 1))
			return true;
	return false;
}
#else
static inline bool create_should_fail(void)
{
	return false;
}

static inline void withdraw_delay(void)
{
}
#endif

struct weft__runtime *weft__offload_runtime(void)
{
	return tls_offload_rt;
}

unsigned weft__offload_nthreads(const struct weft__runtime *rt)
{
	return rt->offload ? atomic_load_explicit(&rt->offload->nthreads_pub,
						  memory_order_relaxed) :
			     0;
}

/* ------------------------------------------------------------ futex */

static void futex_wait(_Atomic uint32_t *addr, uint32_t val,
		       const struct timespec *abs_deadline)
{
	/* FUTEX_WAIT_BITSET: an absolute CLOCK_MONOTONIC deadline. */
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE, val,
		abs_deadline, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void futex_wake_one(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL,
		0);
}

/* Give @th its request; the caller popped it from the idle stack under
 * the lock and stored nothing else. Context: pool lock held. */
static void hand_locked(struct pool_thread *th, struct offload_req *req)
{
	/* seq_cst: Dekker with the thread's sleeping store (top). */
	atomic_store_explicit(&th->handoff, req, memory_order_seq_cst);
}

/* After the lock is dropped: wake @th if it sleeps. */
static void wake(struct pool_thread *th)
{
	if (atomic_exchange_explicit(&th->sleeping, 0, memory_order_seq_cst))
		futex_wake_one(&th->sleeping);
}

/* ------------------------------------------------------------ thread */

/* Leave the pool for good. Context: pool lock held; releases it. */
static void thread_exit_unlock(struct weft__offload_pool *pool,
			       struct pool_thread *th)
{
	struct pool_thread *prev = pool->zombie;

	pool->zombie = th;
	pool->nthreads--;
	atomic_store_explicit(&pool->nthreads_pub, pool->nthreads,
			      memory_order_relaxed);
	if (pool->stopping && pool->nthreads == 0)
		pthread_cond_broadcast(&pool->all_exited);
	pthread_mutex_unlock(&pool->lock);
	/* Joined by the next thread to exit, or by weft__offload_stop(),
	 * which waits for nthreads == 0 first and then joins the last
	 * zombie (this thread, once it has joined prev). */
	if (prev) {
		pthread_join(prev->thread, NULL);
		pthread_mutex_lock(&pool->lock);
		prev->next_idle = pool->free_recs;
		pool->free_recs = prev;
		pthread_mutex_unlock(&pool->lock);
	}
}

/*
 * Adaptive spinning (as glibc's adaptive mutexes): a spin that catches a
 * request scores +1, one that times out -2, within [0, SPIN_SCORE_MAX];
 * threads spin while the score is positive, and otherwise only on every
 * 256th idle period, to find out whether spinning pays again. A spinner
 * that times out has kept a core from the workers for nothing, which on a
 * loaded 2-core machine cost sequential callers 30-80 us per call
 * (measured); with a steady stream of calls nearly every spin succeeds.
 * The score is a hint: relaxed, racy updates are fine.
 */
#define SPIN_SCORE_MAX 8

static bool want_spin(struct weft__offload_pool *pool, struct pool_thread *th)
{
	return pool->spin_ns && pool->nspin < pool->max_spinners &&
	       (atomic_load_explicit(&pool->spin_score, memory_order_relaxed) >
			0 ||
		(++th->idle_periods & 255) == 0);
}

static void stack_push(struct pool_thread **top, struct pool_thread *th)
{
	th->next_idle = *top;
	*top = th;
}

static void stack_remove(struct pool_thread **top, struct pool_thread *th)
{
	while (*top != th)
		top = &(*top)->next_idle;
	*top = th->next_idle;
}

/* Go idle: on the spinning stack if this thread may spin. Context: pool
 * lock held. Return: true if it should spin. */
static bool idle_push_locked(struct weft__offload_pool *pool,
			     struct pool_thread *th)
{
	if (want_spin(pool, th)) {
		stack_push(&pool->idle_spin, th);
		pool->nspin++;
		th->on = ON_SPIN;
		return true;
	}
	stack_push(&pool->idle_sleep, th);
	th->on = ON_SLEEP;
	return false;
}

/* Take an idle thread, spinning ones first. Context: pool lock held. */
static struct pool_thread *idle_pop_locked(struct weft__offload_pool *pool)
{
	struct pool_thread *th = pool->idle_spin;

	if (th) {
		pool->idle_spin = th->next_idle;
		pool->nspin--;
	} else {
		th = pool->idle_sleep;
		if (!th)
			return NULL;
		pool->idle_sleep = th->next_idle;
	}
	th->on = ON_NONE;
	return th;
}

static void spin_scored(struct weft__offload_pool *pool, bool caught)
{
	int s = atomic_load_explicit(&pool->spin_score, memory_order_relaxed);

	s = caught ? (s < SPIN_SCORE_MAX ? s + 1 : s) : (s > 2 ? s - 2 : 0);
	atomic_store_explicit(&pool->spin_score, s, memory_order_relaxed);
}

/* Wait for a hand-off while idle (on an idle stack, lock not held;
 * @spin: on the spinning one). Return: the request, STOP_REQ, or NULL when
 * the idle time ran out and the thread left the idle stack (it must exit;
 * lock held on return). */
static struct offload_req *idle_wait(struct weft__offload_pool *pool,
				     struct pool_thread *th, bool spin)
{
	struct offload_req *req;
	uint64_t idle_ns = atomic_load_explicit(&idle_ns_override,
						memory_order_relaxed);
	uint64_t now = weft__clock_real(), deadline;
	struct timespec ts;

	if (!idle_ns)
		idle_ns = IDLE_NS;
	if (spin) {
		uint64_t end = now + pool->spin_ns;
		unsigned n = 0;

		for (;;) {
			req = atomic_load_explicit(&th->handoff,
						   memory_order_acquire);
			if (req)
				break;
			weft__cpu_relax();
			if ((++n & 63) == 0 && weft__clock_real() >= end)
				break;
		}
		spin_scored(pool, req != NULL);
		if (req)
			goto got;
		/* Move to the sleeping stack, unless a waker popped us
		 * meanwhile (it stores the hand-off under the lock). */
		pthread_mutex_lock(&pool->lock);
		req = atomic_load_explicit(&th->handoff, memory_order_acquire);
		if (!req) {
			stack_remove(&pool->idle_spin, th);
			pool->nspin--;
			stack_push(&pool->idle_sleep, th);
			th->on = ON_SLEEP;
		}
		pthread_mutex_unlock(&pool->lock);
		if (req)
			goto got;
		now = weft__clock_real();
	}
	deadline = weft__deadline_after(now, idle_ns);
	weft__ns_to_timespec(deadline, &ts);
	for (;;) {
		/* seq_cst: Dekker with hand_locked()/wake() (top). */
		atomic_store_explicit(&th->sleeping, 1, memory_order_seq_cst);
		req = atomic_load_explicit(&th->handoff, memory_order_seq_cst);
		if (req)
			break;
		futex_wait(&th->sleeping, 1, &ts);
		req = atomic_load_explicit(&th->handoff, memory_order_acquire);
		if (req)
			break;
		if (weft__clock_real() >= deadline) {
			pthread_mutex_lock(&pool->lock);
			/* A waker stores the hand-off under this lock after
			 * popping us: popped means a request is there. */
			req = atomic_load_explicit(&th->handoff,
						   memory_order_acquire);
			if (req) {
				pthread_mutex_unlock(&pool->lock);
				break;
			}
			/* Still idle: leave the stack, then exit. */
			stack_remove(&pool->idle_sleep, th);
			th->on = ON_NONE;
			return NULL;
		}
	}
	atomic_store_explicit(&th->sleeping, 0, memory_order_relaxed);
got:
	atomic_store_explicit(&th->handoff, NULL, memory_order_relaxed);
	return req;
}

/* ------------------------------------------------------------ FIFO */

/* Append @req. Context: pool lock held. */
static void fifo_push_locked(struct weft__offload_pool *pool,
			     struct offload_req *req)
{
	weft__list_add_tail(&pool->fifo, &req->link);
	req->state = REQ_QUEUED;
}

/* Take the oldest request, marking it taken. Context: pool lock held. */
static struct offload_req *fifo_pop_locked(struct weft__offload_pool *pool)
{
	struct offload_req *req;

	if (weft__list_empty(&pool->fifo))
		return NULL;
	req = weft__container_of(pool->fifo.next, struct offload_req, link);
	weft__list_del(&req->link);
	req->state = REQ_TAKEN;
	return req;
}

/*
 * End the caller @t's wait and make it runnable. If the worker @w it
 * parked on spins for it (worker.c, spin_for_offload()), straight into
 * w's inbox: w takes it within a spin iteration, with no injection queue,
 * notify or wake-up of another worker; otherwise through
 * weft__task_ready() (the injection queue; an idle worker is woken).
 * Should w stop spinning just after we looked, it still finds the task:
 * park() re-checks its inbox, and weft__wake_worker() kicks it if parked.
 * offload_waiting drops only after the hand-off, so w does not stop
 * spinning before the task is in its inbox. Workers outlive every pool
 * thread (weft__offload_stop() joins them first), so w stays valid.
 */
static void complete(struct weft__worker *w, struct weft__task *t,
		     uint64_t word)
{
	weft__chaos(); /* fn done, the caller not yet woken */
	if (weft__wait_try_claim(t, word, WEFT__WAKE_SOURCE) == 2) {
		/* seq_cst: pairs with the store of offload_spin. */
		if (atomic_load_explicit(&w->offload_spin,
					 memory_order_seq_cst))
			weft__task_ready_on(w, t);
		else
			weft__task_ready(t);
	}
	atomic_fetch_sub_explicit(&w->offload_waiting, 1,
				  memory_order_relaxed);
	/* A paused clock's worker may have parked in the meantime, seen the
	 * call still in flight and slept for real until its next deadline
	 * (worker.c, vclock_park()): have it look again. Ordered by the idle
	 * lock: either it registered idle before we take it, and is woken, or
	 * it reads offload_waiting after our unlock. */
	if (WEFT__UNLIKELY(w->rt->vclock_paused))
		weft__wake_worker(w);
}

static void *pool_main(void *arg)
{
	struct pool_thread *th = arg;
	struct weft__offload_pool *pool = th->pool;
	struct offload_req *req, *next;
	struct weft__task *t;
	struct weft__worker *w;
	uint64_t word;
	bool spin = false;

	tls_offload_rt = pool->rt;
	pthread_setname_np(pthread_self(), "weft-offload");
	req = atomic_load_explicit(&th->handoff, memory_order_acquire);
	atomic_store_explicit(&th->handoff, NULL, memory_order_relaxed);
	for (;;) {
		req->status = req->fn(req->arg);
		/* Become available BEFORE waking the caller: a caller that
		 * offloads again at once must find this thread idle, not
		 * start a new one (measured: claiming first made a
		 * sequential caller create a thread per call whenever it
		 * won that race). A request handed to us meanwhile waits in
		 * our slot until idle_wait() looks. */
		pthread_mutex_lock(&pool->lock);
		/* Read what the claim needs under the lock (a cancelled
		 * caller may have replaced word and worker), and before the
		 * claim: after it the caller may return and its frame (req)
		 * be gone. REQ_DONE tells a caller woken by a cancellation
		 * that fn is over and req no longer ours. */
		t = req->task;
		word = req->word;
		w = req->worker;
		req->state = REQ_DONE;
		next = fifo_pop_locked(pool);
		if (!next)
			spin = idle_push_locked(pool, th);
		pthread_mutex_unlock(&pool->lock);
		/* The claim's release publishes status to the caller. It
		 * fails if a cancellation or deadline ended the wait first:
		 * the caller then found REQ_DONE under the lock (or will)
		 * and returns the status on its own. */
		complete(w, t, word);
		if (next) {
			req = next;
			continue;
		}
		/* Idle. Shutdown (which can only begin after the claim above
		 * let the last task finish) pops us and hands STOP_REQ. */
		req = idle_wait(pool, th, spin);
		if (!req)
			break; /* lock held */
		if (req == STOP_REQ) {
			pthread_mutex_lock(&pool->lock);
			break;
		}
	}
	thread_exit_unlock(pool, th);
	tls_offload_rt = NULL;
	return NULL;
}

/* Start a thread whose first request is @req. The caller reserved its
 * slot (nthreads++) under the lock. Return: 0 or -errno (slot given back
 * by the caller). */
static int thread_start(struct weft__offload_pool *pool,
			struct offload_req *req)
{
	struct pool_thread *th;
	pthread_attr_t attr;
	int err;

	pthread_mutex_lock(&pool->lock);
	th = pool->free_recs;
	if (th)
		pool->free_recs = th->next_idle;
	pthread_mutex_unlock(&pool->lock);
	if (!th) {
		th = weft__calloc(1, sizeof(*th));
		if (!th)
			return -ENOMEM;
	}
	th->pool = pool;
	th->next_idle = NULL;
	th->on = ON_NONE;
	atomic_store_explicit(&th->sleeping, 0, memory_order_relaxed);
	atomic_store_explicit(&th->handoff, req, memory_order_relaxed);
	pthread_attr_init(&attr);
	/* The creator's mask, whatever the submitting worker's is now. */
	pthread_attr_setsigmask_np(&attr, &pool->sigmask);
	err = create_should_fail() ?
		      EAGAIN :
		      pthread_create(&th->thread, &attr, pool_main, th);
	pthread_attr_destroy(&attr);
	if (err) {
		pthread_mutex_lock(&pool->lock);
		th->next_idle = pool->free_recs;
		pool->free_recs = th;
		pthread_mutex_unlock(&pool->lock);
		return -err;
	}
	return 0;
}

/* @req goes to a thread: its caller's wait cannot be cancelled (fn cannot
 * be interrupted, and arg may live on the caller's stack). Context: pool
 * lock held, or @req not yet visible to any thread. */
static void take(struct offload_req *req)
{
	req->word = weft__wait_prepare(req->task, false);
	req->state = REQ_TAKEN;
}

/*
 * Hand @req to an idle thread, a new thread, or the FIFO, and prepare the
 * caller's wait (req->word) before any pool thread can see the request:
 * not cancellable when a thread takes it, cancellable when it queues (a
 * cancellation or a deadline withdraws it, withdraw_or_rewait()).
 * Preparing only stores the caller's own wait word, so it may happen under
 * the pool lock, which stays a leaf.
 * Context: task (a worker thread); never suspends; may block briefly in
 * pthread_create. Return: 0 taken by a thread, 1 queued, or -EAGAIN/
 * -ENOMEM when no thread exists and none could be started (nothing
 * queued; req->word is still prepared).
 */
static int submit(struct weft__offload_pool *pool, struct offload_req *req)
{
	struct pool_thread *th;
	int err;

	pthread_mutex_lock(&pool->lock);
	th = idle_pop_locked(pool);
	if (th) {
		take(req);
		hand_locked(th, req);
		pthread_mutex_unlock(&pool->lock);
		wake(th);
		return 0;
	}
	if (pool->nthreads < pool->max) {
		pool->nthreads++;
		atomic_store_explicit(&pool->nthreads_pub, pool->nthreads,
				      memory_order_relaxed);
		pthread_mutex_unlock(&pool->lock);
		take(req);
		err = thread_start(pool, req);
		if (!err)
			return 0;
		pthread_mutex_lock(&pool->lock);
		pool->nthreads--;
		atomic_store_explicit(&pool->nthreads_pub, pool->nthreads,
				      memory_order_relaxed);
		if (pool->nthreads == 0) {
			/* RELIABILITY B10: fail only with no thread at all. */
			pthread_mutex_unlock(&pool->lock);
			return err;
		}
		/* Threads exist: queue on them. One may have gone idle
		 * meanwhile; the FIFO is checked before idling, but an
		 * already idle one would not look: hand to it instead. */
		th = idle_pop_locked(pool);
		if (th) {
			take(req);
			hand_locked(th, req);
			pthread_mutex_unlock(&pool->lock);
			wake(th);
			return 0;
		}
	}
	req->word = weft__wait_prepare(req->task, true);
	fifo_push_locked(pool, req);
	pthread_mutex_unlock(&pool->lock);
	return 1;
}

/*
 * The caller @t's wait on @req ended for @reason, a cancellation or a
 * deadline, which only a queued request's wait allows. Under the pool lock,
 * by where the request is now:
 *  - still queued: it is unlinked and fn never runs; the wait's error is
 *    returned (a timer that found no deadline due - one moved later - waits
 *    again, still queued);
 *  - taken by a thread (fn runs): the caller waits for it uncancellably,
 *    as for a call a thread took at once. The thread's claim would be for
 *    the old, already claimed wait word, so a fresh word, and the worker
 *    the caller parks on now, replace the old ones in @req; the thread
 *    reads both under this lock once fn returns;
 *  - done: the thread read everything it needs under the lock and its
 *    claim of the old word fails; fn's status is ours (written before the
 *    thread took the lock).
 * Context: @t's own task; suspends.
 * Return: fn's status, or -ECANCELED / -ETIMEDOUT when withdrawn.
 */
static int withdraw_or_rewait(struct weft__task *t, struct offload_req *req,
			      struct weft__wait *wt, int reason)
{
	struct weft__offload_pool *pool = t->rt->offload;

	withdraw_delay();
	weft__chaos(); /* woken; a thread may take the request meanwhile */
	do {
		struct weft__worker *w = weft__worker_current();
		int err = weft__wait_error(t, reason);
		bool queued;

		pthread_mutex_lock(&pool->lock);
		if (req->state == REQ_DONE) {
			pthread_mutex_unlock(&pool->lock);
			return req->status;
		}
		queued = req->state == REQ_QUEUED;
		if (queued && err) {
			weft__list_del(&req->link); /* withdrawn */
			pthread_mutex_unlock(&pool->lock);
			atomic_fetch_sub_explicit(&req->worker->offload_waiting,
						  1, memory_order_relaxed);
			return err;
		}
		if (w != req->worker) {
			/* Resumed elsewhere: the call now waits on w. */
			atomic_fetch_add_explicit(&w->offload_waiting, 1,
						  memory_order_relaxed);
			atomic_fetch_sub_explicit(&req->worker->offload_waiting,
						  1, memory_order_relaxed);
			req->worker = w;
		}
		req->word = wt->word = weft__wait_prepare(t, queued);
		wt->deadline_ns = queued ? weft__wait_deadline(t) : UINT64_MAX;
		pthread_mutex_unlock(&pool->lock);
		reason = weft__wait_park(t, wt);
	} while (reason != WEFT__WAKE_SOURCE);
	return req->status;
}

/* ------------------------------------------------------------ API */

static inline void count_call(void)
{
	struct weft__worker *w = weft__worker_current();

	/* Single writer (this worker): load + store, as worker.c's stats. */
	atomic_store_explicit(&w->stats.offload_calls,
			      atomic_load_explicit(&w->stats.offload_calls,
						   memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

WEFT_API int weft_offload(weft_fn fn, void *arg)
{
	struct weft__task *t = weft__task_current();
	struct offload_req req;
	struct weft__wait wt;
	struct weft__worker *w;
	int err, reason;

	if (!t)
		return -EPERM;
	if (!fn)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	req.fn = fn;
	req.arg = arg;
	req.status = 0;
	req.task = t;
	weft__set_wait_kind(t, WEFT__WK_OFFLOAD);
	count_call();
	/* The worker we park on (we cannot migrate before the park). */
	w = weft__worker_current();
	req.worker = w;
	atomic_fetch_add_explicit(&w->offload_waiting, 1,
				  memory_order_relaxed);
	err = submit(t->rt->offload, &req);
	if (err < 0) {
		/* Nobody else knows this wait: end it ourselves so the word
		 * does not stay PREP. */
		weft__wait_try_claim(t, req.word, WEFT__WAKE_SOURCE);
		atomic_fetch_sub_explicit(&w->offload_waiting, 1,
					  memory_order_relaxed);
		return err;
	}
	wt.publish = NULL;
	wt.obj = &req;
	/* req.word is ours to read: only this task writes it. A queued
	 * request's wait is cancellable and bounded by our deadlines. */
	wt.word = req.word;
	wt.deadline_ns = err == 1 ? weft__wait_deadline(t) : UINT64_MAX;
	reason = weft__wait_park(t, &wt);
	if (WEFT__LIKELY(reason == WEFT__WAKE_SOURCE))
		return req.status;
	return withdraw_or_rewait(t, &req, &wt, reason);
}

/* ------------------------------------------------------------ lifetime */

int weft__offload_init(struct weft__runtime *rt)
{
	struct weft__offload_pool *pool = weft__calloc(1, sizeof(*pool));
	unsigned long long v;

	if (!pool)
		return -ENOMEM;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->all_exited, NULL);
	weft__list_init(&pool->fifo);
	pool->rt = rt;
	pool->max = rt->cfg.offload_max;
	pool->spin_ns = SPIN_NS;
	/* At most 10 ms: an idle pool thread polls that long at most (a
	 * wrapped "-1" used to make it poll forever). */
	if (weft__env_ulong("WEFT_OFFLOAD_SPIN_NS", 0, 10000000, &v))
		pool->spin_ns = v;
	/* One spinner per two CPUs the runtime uses (at least one): more
	 * would take the cores the workers and the running calls need. */
	pool->max_spinners = rt->nworkers / 2 ? rt->nworkers / 2 : 1;
	pthread_sigmask(SIG_SETMASK, NULL, &pool->sigmask);
	rt->offload = pool;
	return 0;
}

void weft__offload_stop(struct weft__runtime *rt)
{
	struct weft__offload_pool *pool = rt->offload;
	struct pool_thread *th, *z;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	/* No call is in flight (every task finished): a non-empty FIFO
	 * would be a request whose caller is gone. */
	WEFT__BUG_ON(!weft__list_empty(&pool->fifo));
	while ((th = idle_pop_locked(pool))) {
		hand_locked(th, STOP_REQ);
		wake(th); /* a futex wake under the lock: shutdown only */
	}
	while (pool->nthreads)
		pthread_cond_wait(&pool->all_exited, &pool->lock);
	z = pool->zombie;
	pool->zombie = NULL;
	pthread_mutex_unlock(&pool->lock);
	if (z) {
		pthread_join(z->thread, NULL);
		weft__free(z);
	}
	/* Every thread is joined: nothing can touch a record any more. */
	while ((z = pool->free_recs)) {
		pool->free_recs = z->next_idle;
		weft__free(z);
	}
	pthread_cond_destroy(&pool->all_exited);
	pthread_mutex_destroy(&pool->lock);
	weft__free(pool);
	rt->offload = NULL;
}
