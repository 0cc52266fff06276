/* SPDX-License-Identifier: MIT */
/*
 * runtime/sched.h - the records every scheduler file shares: task, worker,
 * runtime; and the internal calls between task.c, wait.c, worker.c,
 * sched.c and runtime.c.
 *
 * MIGRATION RULE. A task may resume on another worker thread after any
 * switch. Code that runs on a task's stack reaches per-worker state only
 * through weft__worker_current() (non-inlined, re-read after every switch)
 * and never keeps a struct weft__worker pointer across a call that may
 * switch. Code on a worker's scheduler stack never migrates and may keep it.
 */
#ifndef WEFT_RUNTIME_SCHED_H
#define WEFT_RUNTIME_SCHED_H

#include <pthread.h>

#include "weft.h"
#include "runtime/ctx.h"
#include "runtime/deque.h"
#include "runtime/internal.h"
#include "runtime/stack.h"
#include "runtime/timer.h"

#ifdef __cplusplus
extern "C" {
#endif

struct weft__worker;
struct weft__runtime;
struct weft__task;
struct weft__io_backend;

/* ---------------------------------------------------------------- waits */

/*
 * The wait word of a task (struct weft__task.wait_word):
 *   bits 0-1  state: IDLE, PREP (prepared, maybe not yet published),
 *             ARMED (published), CLAIMED (ended by exactly one source)
 *   bit  2    cancellable: weft_cancel() may end this wait
 *   bits 3-4  reason, valid once CLAIMED: SOURCE, TIMER, CANCEL
 *   bits 5-63 sequence number of the wait (the task's wait_seq)
 * A source that claims from PREP leaves the enqueue to the publisher; a
 * source that claims from ARMED enqueues the task itself. See wait.c.
 */
#define WEFT__W_IDLE 0u
#define WEFT__W_PREP 1u
#define WEFT__W_ARMED 2u
#define WEFT__W_CLAIMED 3u
#define WEFT__W_STATE_MASK 3u
#define WEFT__W_CANCELLABLE 4u
#define WEFT__W_REASON_SHIFT 3
#define WEFT__W_REASON_MASK (3u << WEFT__W_REASON_SHIFT)
#define WEFT__W_SEQ_SHIFT 5

enum weft__wake_reason {
	WEFT__WAKE_SOURCE = 0, /* the primitive / completion it waited for */
	WEFT__WAKE_TIMER = 1,  /* its deadline timer fired */
	WEFT__WAKE_CANCEL = 2, /* weft_cancel() */
};

struct weft__wait;
/* Runs on the scheduler stack right after the task switched out. */
typedef void (*weft__publish_fn)(struct weft__task *t, struct weft__wait *wt);

/* A wait in progress; lives on the waiting task's stack. */
struct weft__wait {
	weft__publish_fn publish; /* NULL: nothing to register (sleep) */
	void *obj;		  /* what it waits on (for the publish fn) */
	uint64_t word;		  /* seq | cancellable | PREP, as prepared */
	uint64_t deadline_ns;	  /* timer to arm; UINT64_MAX: none */
};

/* ---------------------------------------------------------------- tasks */

enum weft__task_state {
	WEFT__TASK_FREE = 0,	/* record on a free list */
	WEFT__TASK_RUNNABLE,	/* on exactly one run queue */
	WEFT__TASK_RUNNING,	/* run by exactly one worker */
	WEFT__TASK_WAITING,	/* parked on exactly one wait */
	WEFT__TASK_DONE,	/* fn returned; record kept for the owner */
};

enum weft__switch_reason {
	WEFT__SW_PARK = 1, /* publish t->cur_wait, then maybe re-enqueue */
	WEFT__SW_YIELD,	   /* push back behind the worker's other tasks */
	WEFT__SW_EXIT,	   /* fn returned: free the stack, complete */
};

/*
 * run_claim: a fresh (never started) task may be started by a worker that
 * pops its queue entry, or run inline by its joiner (task.c). Exactly one
 * CAS to RC_RUN wins; a loser's queue entry is a tombstone, dropped with
 * the reference it holds. Fresh deque entries are tagged (bit 0 of the
 * item); a fresh task in the injection queue has RC_INJECT and is never
 * run inline (its intrusive link is in use).
 */
#define WEFT__RC_DEQUE 0
#define WEFT__RC_INJECT 2
#define WEFT__RC_RUN 1
#define WEFT__ITEM_FRESH ((uintptr_t)1)

static inline void *weft__item_fresh(struct weft__task *t)
{
	return (void *)((uintptr_t)t | WEFT__ITEM_FRESH);
}

static inline struct weft__task *weft__item_task(void *item)
{
	return (struct weft__task *)((uintptr_t)item & ~WEFT__ITEM_FRESH);
}

/* join_word: joiner task pointer | these low bits */
#define WEFT__J_DONE 1u	  /* fn returned (set once, from the scheduler) */
#define WEFT__J_CANCEL 2u /* weft_cancel() recorded */
#define WEFT__J_FLAGS 7u

/* flags (owner-side bookkeeping) */
#define WEFT__T_DETACHED 1u	  /* owner reference given up */
#define WEFT__T_OWNER_WAITING 2u  /* a join/wait is in progress */
#define WEFT__T_FOREIGN 4u	  /* submitted from outside the runtime */

struct weft__task {
	struct weft__ctx ctx;		/* owned by whoever runs the task */
	struct weft__stack *stack;	/* NULL until first run and after exit */
	struct weft__runtime *rt;	/* set at spawn */
	weft_fn fn;
	void *arg;
	int status;			/* fn's result; read after J_DONE */
	uint32_t gen;			/* handle generation; bumped on free */

	_Atomic uint32_t refs;		/* owner handle + "alive" */
	_Atomic uint32_t flags;		/* WEFT__T_* */
	_Atomic uintptr_t join_word;	/* joiner | J_DONE | J_CANCEL */
	_Atomic uint64_t joiner_seq;	/* joiner's wait word, for its claim */

	_Atomic uint64_t wait_word;	/* see WEFT__W_* */
	uint64_t wait_seq;		/* task-owned counter */
	struct weft__wait *cur_wait;	/* read by the publisher */
	int switch_reason;		/* WEFT__SW_*, read by the scheduler */
	_Atomic int state;		/* WEFT__TASK_*, informational */
	_Atomic bool started;		/* has a stack: ran at least once */
	_Atomic int run_claim;		/* WEFT__RC_*: who starts a fresh task */
	bool stack_borrowed;		/* running inline on its joiner's stack */
	struct weft__task *inline_host;	/* the joiner whose stack it runs on */
	_Atomic(struct weft__task *) hosting; /* child running inline on ours */
	uint64_t inherited_deadline_ns;	/* hosts' deadlines (inline run) */
	uint32_t locals_mask;		/* bit k: locals[k] was set */
	_Atomic uint64_t fair_tick;	/* worker tick when queued (fairness) */

	struct weft__timer timer;	/* deadline of the current wait */
	uint64_t timer_seq;		/* the wait word the timer claims */
	_Atomic(struct weft__worker *) timer_worker; /* whose heap holds it */

	/* Cancel scopes: the earliest open deadline and shield depth
	 * (written by the task itself). */
	uint64_t scope_deadline_ns;
	unsigned shield_depth;
	void *scope_top;

	struct weft__task *next;	/* run-queue link (inject, pinned) */
	struct weft__worker *pinned_to; /* set at first run if pinned */
	unsigned spawn_flags;
	size_t stack_size;		/* 0: default */
	uint64_t id;

	struct weft__task *free_next;	/* free-list link */
	struct weft__task *reg_next;	/* registry: every record ever made */

	void *locals[WEFT_KEYS_MAX];
	char name[WEFT_TASK_NAME_MAX + 1];
};

/* ---------------------------------------------------------------- workers */

struct weft__stats_ctr {
	_Atomic uint64_t spawned, completed, steals, parks;
	_Atomic uint64_t io_submitted, io_completed; /* io/: owner worker */
};

struct weft__worker {
	struct weft__deque dq;			/* owner push/take; thieves */
	WEFT__ALIGNED_CL _Atomic(struct weft__task *) lifo; /* just woken */
	struct weft__runtime *rt;
	unsigned index;
	unsigned lifo_streak;		/* LIFO runs in a row */
	uint64_t tick;
	bool after_yield;		/* next pick from the deque's top */
	bool searching;			/* counted in rt->nsearching */
	struct weft__ctx sched_ctx;	/* the worker thread's own stack */
	struct weft__task *current;	/* task running now, or NULL */
	uint64_t rng;

	/* pinned tasks: owner-only FIFO, and an inbox other threads fill */
	struct weft__task *pin_head, *pin_tail;
	WEFT__ALIGNED_CL pthread_mutex_t inbox_lock;
	struct weft__task *inbox_head, *inbox_tail;
	_Atomic size_t inbox_len;

	/* timers: the owner arms and fires; a resumed task may remove */
	WEFT__ALIGNED_CL pthread_mutex_t timer_lock;
	struct weft__timer_heap timers;
	_Atomic uint64_t next_deadline;	/* UINT64_MAX: none */

	/* parking: 0 = asleep, 1 = told to wake (futex word) */
	WEFT__ALIGNED_CL _Atomic uint32_t park_word;
	bool idle;			/* on rt's idle list; under idle_lock */

	/* record and stack caches: owner only */
	struct weft__task *free_tasks;
	size_t nfree_tasks;
	struct weft__stack_cache stacks;
	uint64_t next_id;

	WEFT__ALIGNED_CL struct weft__stats_ctr stats;
	pthread_t thread;
	void *altstack;

	/* I/O reactor state of this worker (io/backend.h): the backend's
	 * per-worker record, NULL until weft__io_rt_init(). */
	void *io;
};

/* ---------------------------------------------------------------- runtime */

enum weft__rt_state {
	WEFT__RT_RUNNING = 0,
	WEFT__RT_DRAINING,	/* free() began: new submits refused */
	WEFT__RT_STOPPING,	/* all tasks done: workers exit */
};

struct weft__runtime {
	unsigned nworkers;
	struct weft__worker **workers;
	weft_config cfg;
	size_t stack_size;

	/* global injection queue: foreign submits and deque overflow */
	WEFT__ALIGNED_CL pthread_mutex_t inject_lock;
	struct weft__task *inject_head, *inject_tail;
	_Atomic size_t inject_len;

	/* idle workers and searchers (Go's discipline, see sched.c) */
	WEFT__ALIGNED_CL _Atomic unsigned nsearching;
	_Atomic unsigned nidle;
	pthread_mutex_t idle_lock;
	unsigned *idle_stack;		/* worker indices; under idle_lock */

	WEFT__ALIGNED_CL _Atomic int state;	/* WEFT__RT_* */
	_Atomic uint32_t drain_word;	/* futex: bumped when a task ends while draining */
	_Atomic uint32_t stopped_workers;

	/* records: registry of every record ever made (append-only), and
	 * the free list of records released from non-worker threads */
	pthread_mutex_t reg_lock;
	struct weft__task *registry;
	struct weft__task *free_tasks;
	struct weft__stats_ctr foreign_stats; /* spawns/completions off-worker */
	_Atomic uint64_t foreign_next_id;
	_Atomic unsigned blockers;	/* weft_block_on calls in flight */
	_Atomic unsigned entering;	/* submit/block_on entries racing free */

	struct weft__stack_pool stacks;
	bool inline_join;		/* env WEFT_INLINE_JOIN=0 turns it off */

	/* the I/O backend of every worker (io/backend.h); set at new */
	const struct weft__io_backend *io_backend;
};

/* ---------------------------------------------------------------- calls */

/* The worker running the calling thread, or NULL. Never inlined: see the
 * migration rule above. Context: any thread. */
struct weft__worker *weft__worker_current(void) WEFT__NOINLINE;
/* The running task, or NULL. Context: any thread. */
struct weft__task *weft__task_current(void);

/* wait.c */
uint64_t weft__wait_prepare(struct weft__task *t, bool cancellable);
int weft__wait_park(struct weft__task *t, struct weft__wait *wt);
int weft__wait_try_claim(struct weft__task *t, uint64_t word, unsigned reason);
bool weft__wait_claim(struct weft__task *t, uint64_t word, unsigned reason);
void weft__wait_publish(struct weft__worker *w, struct weft__task *t);
int weft__pending_error_slow(struct weft__task *t);

/*
 * weft__task_cancel_pending() - Is @t's cancellation visible to it now?
 * seq_cst: Dekker with weft__task_cancel_internal() (see
 * weft__wait_prepare()). A host's cancellation is copied into a child
 * running inline on its stack (task.c), so one load does.
 * Context: @t's own task (shield_depth is its own).
 */
static inline bool weft__task_cancel_pending(const struct weft__task *t)
{
	return !t->shield_depth &&
	       (atomic_load_explicit(&t->join_word, memory_order_seq_cst) &
		WEFT__J_CANCEL);
}

/* The deadline a wait of @t must arm: its scopes' and, when it runs
 * inline on a joiner's stack, its hosts'. */
static inline uint64_t weft__wait_deadline(const struct weft__task *t)
{
	return t->scope_deadline_ns < t->inherited_deadline_ns ?
		       t->scope_deadline_ns :
		       t->inherited_deadline_ns;
}

/*
 * weft__pending_error() - The level-triggered check at the start of every
 * suspension point: -ECANCELED, -ETIMEDOUT (an own scope's deadline passed),
 * or 0. A host's deadline passing cancels an inline child (-ECANCELED).
 * Context: @t's own task; never suspends.
 */
static inline int weft__pending_error(struct weft__task *t)
{
	if (WEFT__LIKELY(!weft__task_cancel_pending(t) &&
			 weft__wait_deadline(t) == UINT64_MAX))
		return 0;
	return weft__pending_error_slow(t);
}

/* sched.c */
void weft__task_ready(struct weft__task *t);
void weft__ready_local(struct weft__worker *w, struct weft__task *t, bool lifo);
void weft__inject_push(struct weft__runtime *rt, struct weft__task *t);
struct weft__task *weft__inject_pop_batch(struct weft__runtime *rt, size_t max);
void weft__notify(struct weft__runtime *rt);
void weft__wake_worker(struct weft__worker *w);
void weft__wake_all(struct weft__runtime *rt);
void weft__futex_wake_all(_Atomic uint32_t *addr);
void weft__deque_push_or_spill(struct weft__worker *w, void *item);
void weft__ready_fresh(struct weft__worker *w, struct weft__task *t);
int weft__wait_error(struct weft__task *t, int reason);

/* worker.c */
void *weft__worker_main(void *arg);
void weft__timer_arm(struct weft__worker *w, struct weft__task *t,
		     uint64_t deadline_ns);
void weft__timer_disarm(struct weft__task *t);

/* task.c */
struct weft__task *weft__task_alloc(struct weft__runtime *rt,
				    struct weft__worker *w);
void weft__task_put(struct weft__task *t, uint32_t n);
void weft__owner_release(struct weft__task *t);
void weft__task_complete(struct weft__worker *w, struct weft__task *t);
void weft__task_entry(void *arg) __attribute__((noreturn));
struct weft__task *weft__handle_decode(const weft_task *h);
weft_task *weft__handle_encode(struct weft__task *t);
void weft__registry_free_all(struct weft__runtime *rt);
int weft__task_cancel_internal(struct weft__task *t);
void weft__stat_live(struct weft__runtime *rt, uint64_t *spawned,
		     uint64_t *completed);

/* runtime.c */
bool weft__rt_draining(const struct weft__runtime *rt);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_SCHED_H */
