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
 * CAS RC_DEQUE -> RC_RUN wins; a loser's queue entry is a tombstone. Fresh
 * entries are tagged (bit 0 of the item), in deques and in the injection
 * queue's chunks alike.
 *
 * A queue entry holds no reference: a tombstone may outlive its task and
 * even see its record reused by a new fresh task. That is harmless, since
 * records are never freed while the runtime lives and a fresh record can
 * be started by any entry that names it: whichever entry claims it first
 * runs it, once, and the other is the tombstone. So run_claim is set to
 * RC_DEQUE (release) only after the whole record is written, just before
 * the task's own entry is published, and set to RC_RUN again when the
 * record is freed. A popped tombstone is simply dropped; nothing piles up
 * when a joiner runs thousands of spilled tasks inline without ever
 * letting its worker pop their entries.
 *
 * Only a fresh task on the injection queue's fallback list (no chunk
 * could be allocated) has RC_INJECT and is never run inline: its intrusive
 * link is in use.
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

/* join_word: joiner pointer | these low bits */
#define WEFT__J_DONE 1u	  /* fn returned (set once, from the scheduler) */
#define WEFT__J_CANCEL 2u /* weft_cancel() recorded */
/* the joiner pointer is a struct weft__hub (gather.c), not a task */
#define WEFT__J_HUB 4u
#define WEFT__J_FLAGS 7u

/* flags (owner-side bookkeeping) */
#define WEFT__T_DETACHED 1u	  /* owner reference given up */
#define WEFT__T_OWNER_WAITING 2u  /* a join/wait is in progress */
#define WEFT__T_FOREIGN 4u	  /* submitted from outside the runtime */
#define WEFT__T_NAMED 8u	  /* name[] written at spawn (reset at recycle) */
#define WEFT__T_GROUP 16u	  /* a group's child (group.c) */

/*
 * Layout: records are cache-line aligned and the fields are grouped by when
 * they are touched, because a spawn-heavy program (spawn 10,000, join them)
 * is bound by cache misses on cold records. A spawn writes lines 0 and 2
 * only (and the name when one is given); running adds line 1. The fields of
 * lines 3 and 4 keep their idle values in a free record (set when the slab
 * is made, restored by whoever changed them before the task ends: scopes,
 * inline runs, groups, timers), so spawn does not write them.
 */
struct weft__task {
	/* line 0: spawn, run claim, join, completion */
	WEFT__ALIGNED_CL weft_fn fn;
	void *arg;
	struct weft__runtime *rt;	/* set at spawn */
	_Atomic uintptr_t join_word;	/* joiner | J_DONE | J_CANCEL | J_HUB */
	struct weft__task *free_next;	/* free-list link */
	int status;			/* fn's result; read after J_DONE */
	uint32_t gen;			/* handle generation; bumped on free */
	_Atomic uint32_t refs;		/* owner handle + "alive" */
	_Atomic uint32_t flags;		/* WEFT__T_* */
	_Atomic int state;		/* WEFT__TASK_*, informational */
	_Atomic int run_claim;		/* WEFT__RC_*: who starts a fresh task */

	/* line 1: running */
	struct weft__ctx ctx;		/* owned by whoever runs the task */
	struct weft__stack *stack;	/* NULL until first run and after exit */
	/* joiner's wait word, for its claim; meaningful only once a joiner
	 * pointer is in join_word (weft__join_register() sets it then) */
	_Atomic uint64_t joiner_seq;

	/* line 2: set at spawn; waits */
	_Atomic uint64_t wait_word;	/* see WEFT__W_* */
	uint64_t wait_seq;		/* task-owned counter */
	struct weft__wait *cur_wait;	/* read by the publisher */
	uint64_t id;
	struct weft__worker *pinned_to; /* set at first run if pinned */
	size_t stack_size;		/* 0: default */
	unsigned spawn_flags;		/* WEFT_SPAWN_* */
	uint32_t locals_mask;		/* bit k: locals[k] was set */
	uint8_t switch_reason;		/* WEFT__SW_*, read by the scheduler */
	bool scoped;			/* a cancel scope was entered */
	uint16_t shield_depth;		/* open shields (own task) */
	_Atomic bool started;		/* has a stack: ran at least once */
	bool stack_borrowed;		/* running inline on its joiner's stack */
	/* ran inline and kept its "alive" reference for the owner's put
	 * (task.c weft__owner_release()); idle value false */
	bool alive_ref_held;

	/* line 3: scopes, groups, inline runs (idle values: MAX/NULL/0) */
	/* Cancel scopes (scope.c): the earliest deadline in force and the
	 * innermost open scope (written by the task itself). */
	uint64_t scope_deadline_ns;
	uint64_t inherited_deadline_ns;	/* hosts' deadlines (inline run) */
	void *scope_top;
	/* Task groups (group.c): the group this task is a child of, and its
	 * links in the group's list of live children (under its lock). */
	struct weft_group *group;
	struct weft__task *grp_prev, *grp_next;
	struct weft__task *inline_host;	/* the joiner whose stack it runs on */
	_Atomic(struct weft__task *) hosting; /* child running inline on ours */

	/* line 4: queues and timers */
	struct weft__task *next;	/* run-queue link (inject, pinned) */
	_Atomic uint64_t fair_tick;	/* worker tick when queued (fairness) */
	_Atomic(struct weft__worker *) timer_worker; /* whose heap holds it */
	uint64_t timer_seq;		/* the wait word the timer claims */
	struct weft__timer timer;	/* deadline of the current wait */

	void *locals[WEFT_KEYS_MAX];
	char name[WEFT_TASK_NAME_MAX + 1]; /* "" unless WEFT__T_NAMED */

	/* observe.c (dumps, shutdown reports): read racily from any thread.
	 * wait_kind: WEFT__WK_*, what a WAITING task waits on; stored by the
	 * primitive itself before it parks (weft__set_wait_kind()).
	 * state_since_ns / last_worker: coarse clock and worker index, stored
	 * by the worker in run_task() when the task parks or yields. */
	_Atomic uint8_t wait_kind;
	_Atomic unsigned last_worker;
	_Atomic uint64_t state_since_ns;
	/* Suspension points that failed at once with -ECANCELED because a
	 * cancellation was pending (weft__pending_error_slow()): written by
	 * the task only, read by the watchdog and the shutdown drain report
	 * (RELIABILITY F2: a task that ignores its cancellation). */
	_Atomic uint32_t cancel_fails;
	/* Spawn site, NULL when unknown (the weft_spawn*() macros of task.h
	 * pass it): written at spawn, read by the debug-mode unjoined-task
	 * report (runtime.c). */
	unsigned spawn_line;
	const char *spawn_file;
	/* Link in a gather hub's list of finished tasks (struct weft__hub):
	 * written by the finisher before its push, read by the hub's waiter
	 * after it took the list. */
	struct weft__task *hub_next;
#ifndef NDEBUG
	/* Debug builds (RELIABILITY C10): 1 + the index of the worker whose
	 * run_task() switched into the task, 0 while it is not running. A
	 * double wake that queued it twice aborts naming both workers,
	 * instead of two workers running on one stack. */
	_Atomic unsigned dbg_running_on;
#endif
};

/* What a waiting task waits on (for weft_dump_tasks; observe.c names them). */
enum weft__wait_kind {
	WEFT__WK_NONE = 0,
	WEFT__WK_SLEEP,
	WEFT__WK_MUTEX,
	WEFT__WK_SEM,
	WEFT__WK_EVENT,
	WEFT__WK_COND,
	WEFT__WK_QUEUE,
	WEFT__WK_JOIN,
	WEFT__WK_IO,
	WEFT__WK_OFFLOAD,
	WEFT__WK_LIMITER,
	WEFT__WK_COUNT
};

/* One relaxed store by @t itself before it parks; dumps read it racily. */
static inline void weft__set_wait_kind(struct weft__task *t, unsigned kind)
{
	atomic_store_explicit(&t->wait_kind, (uint8_t)kind,
			      memory_order_relaxed);
}

/* A sleep shows as "sleep", unless limiter.c sleeps for its slot: it sets
 * LIMITER before and NONE after. Context: @t itself. */
static inline void weft__set_sleep_kind(struct weft__task *t)
{
	if (atomic_load_explicit(&t->wait_kind, memory_order_relaxed) !=
	    WEFT__WK_LIMITER)
		weft__set_wait_kind(t, WEFT__WK_SLEEP);
}

/*
 * Run-slice publication for the watchdog (observe.c), the only cost it adds
 * to the switch path: no clock read, a counter and a pointer. The monitor
 * samples (wd_task, wd_slice) periodically; the same pair seen across
 * samples spanning slow_task_ns is one slice that long (Go's sysmon does
 * the same with schedtick). Order: slice first, then the task (release);
 * the monitor reads task, slice, task (acquire) and uses the sample only
 * when both task reads agree, so a pair never mixes two slices such that
 * it would look older than it is. Context: the worker, in run_task().
 */
static inline void weft__wd_slice_begin(struct weft__worker *w,
					struct weft__task *t);
static inline void weft__wd_slice_end(struct weft__worker *w);

/*
 * weft__clock_coarse() - CLOCK_MONOTONIC_COARSE in ns: a few ns through the
 * vDSO, resolution one kernel tick (1-10 ms). For dumps and the watchdog,
 * whose durations are approximate by contract; never for deadlines.
 * Context: any thread.
 */
static inline uint64_t weft__clock_coarse(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- workers */

struct weft__stats_ctr {
	_Atomic uint64_t spawned, completed, steals, parks, handoffs;
	/* offload.c: weft_offload() calls made from this worker */
	_Atomic uint64_t offload_calls;
	_Atomic uint64_t io_submitted, io_completed; /* io/: owner worker */
};

struct weft__worker {
	struct weft__deque dq;			/* owner push/take; thieves */
	WEFT__ALIGNED_CL _Atomic(struct weft__task *) lifo; /* just woken */
	struct weft__runtime *rt;
	unsigned index;
	unsigned lifo_streak;		/* LIFO runs in a row */
	uint64_t tick;
	/* coarse clock read when the last task switched back (or the worker
	 * woke up): the dump times of the switch-out, of the next switch-in
	 * and of the wakes made during that slice (weft__ready_local()), one
	 * vDSO read per run slice. Owner only. */
	uint64_t clock_ns;
	bool after_yield;		/* next pick from the deque's top */
	bool searching;			/* counted in rt->nsearching */
	struct weft__ctx sched_ctx;	/* the worker thread's own stack */
	struct weft__task *current;	/* task running now, or NULL */
	/* a task that parked or yielded by switching straight to another
	 * (worker.c, weft__task_switch_out()): its publish, or its queueing
	 * if handoff_yield, is still to be done, by the task it switched to.
	 * Owner only. */
	struct weft__task *handoff;
	bool handoff_yield;
	/* an item a yield's hand-off popped but cannot switch to (not
	 * started): the scheduler runs it first. Owner only. */
	void *yield_stash;
	/* what the overflow handler names while a task runs (stack.h) */
	struct weft__overflow_info oi;
	uint64_t rng;

	/* pinned tasks: owner-only FIFO, and an inbox other threads fill */
	struct weft__task *pin_head, *pin_tail;
	WEFT__ALIGNED_CL pthread_mutex_t inbox_lock;
	struct weft__task *inbox_head, *inbox_tail;
	_Atomic size_t inbox_len;
	/* offload.c: tasks parked from this worker on an offloaded call
	 * (callers add, the completing pool thread subtracts), and whether
	 * the owner spins for their completions (written by the owner, read
	 * by pool threads: then the completion comes to the inbox, see
	 * weft__task_ready_on()). Hints: relaxed except where noted. */
	_Atomic unsigned offload_waiting;
	_Atomic bool offload_spin;

	/* timers: the owner arms and fires; a resumed task may remove */
	WEFT__ALIGNED_CL pthread_mutex_t timer_lock;
	struct weft__timer_heap timers;
	_Atomic uint64_t next_deadline;	/* UINT64_MAX: none */

	/* parking: 0 = asleep, 1 = told to wake (futex word) */
	WEFT__ALIGNED_CL _Atomic uint32_t park_word;
	_Atomic bool idle;		/* on rt's idle list; written under
				 * idle_lock, read as a hint */
	/* This worker holds rt->watcher (sched.c, "The timer watcher"):
	 * written under idle_lock, also by the worker handing the role
	 * over; the owner reads it before it runs a task. */
	_Atomic bool watching;

	/* record and stack caches: owner only (a line of their own: wakers
	 * write park_word above). Records freed past the cache's bound
	 * gather in spill and go to the runtime's batch list whole. */
	WEFT__ALIGNED_CL struct weft__task *free_tasks;
	size_t nfree_tasks;
	struct weft__task *spill;
	unsigned nspill;
	struct weft__stack_cache stacks;
	uint64_t next_id;
	/* Started tasks that got no stack (run_task()), linked through
	 * ->next, and when they go back to the injection queue for another
	 * try (any worker may have a stack for them by then); the wait
	 * doubles from 1 ms to 64 ms while tries keep failing here, and
	 * resets at this worker's next stack. Owner only. */
	struct weft__task *starved_head, *starved_tail;
	uint64_t starved_retry_ns;
	uint64_t starved_backoff_ns;

	WEFT__ALIGNED_CL struct weft__stats_ctr stats;
	/* observe.c watchdog and dumps: the task run_task() is running (NULL
	 * between run slices) and a count of run slices. Written by the owner
	 * only (weft__wd_slice_begin/end), read by the monitor. */
	_Atomic(struct weft__task *) wd_task;
	_Atomic uint64_t wd_slice;
	pthread_t thread;
	void *altstack;

	/* I/O reactor state of this worker (io/backend.h): the backend's
	 * per-worker record, NULL until weft__io_rt_init(). */
	void *io;
};

static inline void weft__wd_slice_begin(struct weft__worker *w,
					struct weft__task *t)
{
	atomic_store_explicit(&w->wd_slice,
			      atomic_load_explicit(&w->wd_slice,
						   memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&w->wd_task, t, memory_order_release);
}

static inline void weft__wd_slice_end(struct weft__worker *w)
{
	atomic_store_explicit(&w->wd_task, NULL, memory_order_relaxed);
}

/*
 * weft__task_set_state() - Store @t's state (WEFT__TASK_RUNNABLE, _RUNNING)
 * and when it entered it, for weft_dump_tasks(): one coarse clock read (a
 * few ns, no syscall), so every state shows its age.
 * Context: whoever makes the transition; never suspends.
 */
static inline void weft__task_set_state_at(struct weft__task *t, int state,
					   uint64_t now)
{
	atomic_store_explicit(&t->state_since_ns, now, memory_order_relaxed);
	atomic_store_explicit(&t->state, state, memory_order_relaxed);
}

static inline void weft__task_set_state(struct weft__task *t, int state)
{
	weft__task_set_state_at(t, state, weft__clock_coarse());
}

/* When and where @t began to wait or wait to run (dumps): at w->clock_ns,
 * read as it switched back. Context: @t's worker, in run_task(), before
 * @t is published to anybody. */
static inline void weft__note_switch(struct weft__worker *w,
				     struct weft__task *t)
{
	atomic_store_explicit(&t->state_since_ns, w->clock_ns,
			      memory_order_relaxed);
	atomic_store_explicit(&t->last_worker, w->index, memory_order_relaxed);
}

/* ---------------------------------------------------------------- runtime */

enum weft__rt_state {
	WEFT__RT_RUNNING = 0,
	WEFT__RT_DRAINING,	/* free() began: new submits refused */
	WEFT__RT_STOPPING,	/* all tasks done: workers exit */
};

/* The head of a 2 MiB chunk of task records (task.c). */
struct weft__rec_chunk {
	struct weft__rec_chunk *next;
};

/* One lane of the injection queue (sched.c): a list of array chunks. */
struct weft__inject_lane {
	struct weft__inject_chunk *head, *tail;
};

struct weft__runtime {
	unsigned nworkers;
	struct weft__worker **workers;
	weft_config cfg;
	size_t stack_size;

	/* global injection queue: foreign submits and deque overflow
	 * (sched.c). Items (tagged like deque items) in two lanes of array
	 * chunks, started tasks (resume, popped first) and fresh entries;
	 * when a chunk cannot be allocated, tasks go to the intrusive
	 * fallback list (fresh ones with RC_INJECT). */
	WEFT__ALIGNED_CL pthread_mutex_t inject_lock;
	struct weft__inject_lane inj_resume, inj_fresh;
	struct weft__inject_chunk *inj_free;
	unsigned inj_nfree;
	struct weft__task *inject_head, *inject_tail; /* fallback list */
	_Atomic size_t inject_len; /* items in all three */

	/* idle workers and searchers (Go's discipline, see sched.c); at
	 * most max_searchers search at once: half the workers, and half the
	 * CPUs the process may use, at least 1 (runtime.c) */
	WEFT__ALIGNED_CL _Atomic unsigned nsearching;
	unsigned max_searchers;
	_Atomic unsigned nidle;
	pthread_mutex_t idle_lock;
	unsigned *idle_stack;		/* worker indices; under idle_lock */
	int watcher;			/* the watching worker's index, -1:
					 * none; under idle_lock */
	/* The watcher sleeps with no poll, having seen no busy worker: the
	 * next worker to leave the idle list wakes it (sched.c). */
	_Atomic bool watch_deep;
	/* Set when a worker woke it so: the watcher then polls at least
	 * once, even if that worker is idle again when it looks. */
	_Atomic bool watch_poll_once;

	WEFT__ALIGNED_CL _Atomic int state;	/* WEFT__RT_* */
	_Atomic uint32_t drain_word;	/* futex: bumped when a task ends while draining */
	_Atomic uint32_t stopped_workers;

	/* records: registry of every record ever made (append-only), and
	 * the free list of records released from non-worker threads */
	pthread_mutex_t reg_lock;
	struct weft__task *registry;
	struct weft__task *free_tasks;
	/* full batches of free records (task.c: chained through free_next,
	 * the batches through their first record's arg) */
	struct weft__task *free_batches;
	unsigned long nrecords;		/* ever made (slabs x 64) */
	/* 2 MiB chunks slabs are carved from past the first few thousand
	 * records (task.c), newest first, and where the next slab of the
	 * newest starts; under reg_lock */
	struct weft__rec_chunk *rec_chunks;
	char *rec_chunk_next;
	struct weft__stats_ctr foreign_stats; /* spawns/completions off-worker */
	_Atomic uint64_t foreign_next_id;
	_Atomic unsigned blockers;	/* weft_block_on calls in flight */
	_Atomic unsigned entering;	/* submit/block_on entries racing free */

	struct weft__stack_pool stacks;
	bool inline_join;		/* env WEFT_INLINE_JOIN=0 turns it off */
	bool handoff;			/* env WEFT_HANDOFF=0 turns it off */
	/* WEFT_CLOCK_PAUSED (one worker): weft__clock_now() on the worker
	 * reads vclock_ns, which only that worker moves (worker.c:
	 * vclock_park(), weft_clock_advance()) */
	bool vclock_paused;
	_Atomic uint64_t vclock_ns;

	struct weft__offload_pool *offload;	/* offload.c */
	struct weft__observer *observer;	/* observe.c: watchdog, SIGQUIT */
	/* the I/O backend of every worker (io/backend.h); set at new */
	const struct weft__io_backend *io_backend;
	/* io/reactor.c: on the list of runtimes with I/O, which a
	 * weft_close() from a thread outside any runtime notifies */
	struct weft__list io_rts_link;
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
 * seq_cst: orders it after the caller's earlier seq_cst steps (a wait's
 * own guarantee is in weft__wait_publish()). A host's cancellation is copied into a child
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
void weft__task_ready_on(struct weft__worker *w, struct weft__task *t);
void weft__ready_local(struct weft__worker *w, struct weft__task *t, bool lifo);
/* The same into w's deque, waking no other worker: the caller decides. */
void weft__ready_local_quiet(struct weft__worker *w, struct weft__task *t);
void weft__inject_push(struct weft__runtime *rt, void *item);
size_t weft__inject_pop(struct weft__runtime *rt, void **out, size_t max,
			bool fresh_first);
void weft__inject_free_chunks(struct weft__runtime *rt);
void weft__notify(struct weft__runtime *rt);
void weft__wake_worker(struct weft__worker *w);
void weft__wake_all(struct weft__runtime *rt);
void weft__futex_wake_all(_Atomic uint32_t *addr);
void weft__deque_push_or_spill(struct weft__worker *w, void *item);
void weft__ready_fresh(struct weft__worker *w, struct weft__task *t);
int weft__wait_error(struct weft__task *t, int reason);

/* worker.c */
void *weft__worker_main(void *arg);
void weft__task_switch_out(struct weft__task *t);
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
bool weft__join_register(struct weft__task *self, struct weft__task *child,
			 uint64_t word);

/*
 * A wait on many tasks that each finisher reports to once (gather.c, for
 * weft_gather() with WEFT_CANCEL_ON_ERROR): registered in each task's
 * join_word with J_HUB, it collects the finished tasks in @head, so the
 * waiter costs O(1) per completion instead of a rescan and a new
 * registration with every task at each wake-up. Lives on the waiter's
 * stack; the waiter leaves only after every task registered with it has
 * reported (a finisher touches the hub last in its push).
 * @head: 0, or the waiter's wait word while it sleeps with nothing
 *   reported (odd: WEFT__W_PREP is bit 0), or a list of reported tasks,
 *   newest first, linked through hub_next (records are cache-line aligned:
 *   even).
 */
struct weft__hub {
	_Atomic uintptr_t head;
	struct weft__task *waiter; /* constant */
};
/* gather.c: @t, registered with @h, finished on @w (task.c). */
void weft__hub_report(struct weft__worker *w, struct weft__hub *h,
		      struct weft__task *t);
int weft__join_wait(struct weft__task *self, struct weft__task *t,
		    uint64_t deadline_ns, bool *timed_out);
struct weft__task *weft__owner_wait_begin(weft_task *h, int *err);
struct weft__task *weft__spawn_child(struct weft__worker *w,
				     const weft_spawn_opts *o, weft_fn fn,
				     void *arg, struct weft_group *g);
int weft__spawn_opts_check(const weft_spawn_opts *o);

/* group.c */
void weft__group_child_done(struct weft__task *t);
struct weft__task *weft__handle_decode(const weft_task *h);
weft_task *weft__handle_encode(struct weft__task *t);
void weft__registry_free_all(struct weft__runtime *rt);
int weft__task_cancel_internal(struct weft__task *t);
void weft__stat_live(struct weft__runtime *rt, uint64_t *spawned,
		     uint64_t *completed);

/* scope.c */
void weft__scopes_unwind(struct weft__task *t, void *keep, const char *what);

/* runtime.c */
bool weft__rt_draining(const struct weft__runtime *rt);

/* offload.c: the pool of a runtime. init in weft_runtime_new() (on the
 * creating thread: its signal mask is the pool threads'), stop after the
 * workers have exited (no call can be in flight then). */
int weft__offload_init(struct weft__runtime *rt);
void weft__offload_stop(struct weft__runtime *rt);
/* The runtime whose offload fn the calling thread runs, else NULL. */
struct weft__runtime *weft__offload_runtime(void);
/* Offload threads alive now (a snapshot). Context: any thread. */
unsigned weft__offload_nthreads(const struct weft__runtime *rt);

/* observe.c: watchdog monitor and SIGQUIT dumper, started after the
 * workers and stopped before they are. */
int weft__observe_start(struct weft__runtime *rt);
void weft__observe_stop(struct weft__runtime *rt);
/* observe.c: called on each round of the shutdown drain (runtime.c) with
 * a zero-initialised *@next_ns; once the grace period (5 s) has passed, and
 * then every grace period, names the tasks still waiting in weft_offload().
 * Context: the thread in weft_runtime_free(). */
void weft__drain_report(struct weft__runtime *rt, uint64_t *next_ns);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_SCHED_H */
