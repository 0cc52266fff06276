/* SPDX-License-Identifier: MIT */
/*
 * runtime/task.c - spawn, join, detach, cancel, self; task records,
 * handles, reference counts; task-local storage.
 *
 * References: a record starts with 2 (the owner's handle, and "alive",
 * dropped by the scheduler after fn returned) or 1 for tasks nobody owns
 * (weft_submit). join and detach drop the owner's; when the count reaches 0
 * the record is recycled. So join, cancel and the task's exit may race:
 * whoever comes last recycles.
 *
 * Records are carved from slabs, linked once into the runtime's registry
 * (never unlinked: dumps and shutdown walk it) and recycled through
 * per-worker free lists; they are returned to the allocator only when the
 * runtime is freed. A stale reference therefore never touches freed
 * memory, and the wait protocol's sequence numbers make stale wake-ups
 * fail (wait.c).
 *
 * Handles: a weft_task * is the record's address with the record's 16-bit
 * generation in the top bits (user-space addresses use 48 bits on both
 * supported architectures). Recycling bumps the generation, so a handle
 * used after join or detach is detected (-EINVAL) in every build, unless
 * the same record was recycled a multiple of 65,536 times meanwhile.
 *
 * The join word (join_word) holds the joiner's record pointer and two
 * flags, J_DONE (set once by the scheduler after fn returned) and J_CANCEL
 * (weft_cancel). Joiner and finisher follow Dekker's pattern on
 * join_word/joiner_seq (all seq_cst): the joiner stores its wait word in
 * joiner_seq and then looks at join_word; the finisher sets J_DONE and then
 * reads joiner_seq. Either the finisher claims the joiner's current wait,
 * or the joiner sees J_DONE and does not sleep.
 */
#include <errno.h>
#include <string.h>

#include "runtime/sched.h"

#define SLAB_RECORDS 64
/* A worker's cache of free records, and the batch it trades with the
 * runtime's free list (one reg_lock per REC_BATCH records either way). */
#define REC_CACHE_MAX 4096u
#define REC_BATCH 64u
#define HANDLE_GEN_SHIFT 48
#define HANDLE_PTR_MASK ((UINT64_C(1) << HANDLE_GEN_SHIFT) - 1)

/*
 * Records in bulk. The first REC_CHUNK_AFTER records come from the
 * allocator, a slab at a time, so a small program's records cost no more
 * than they use. Past that, slabs are carved from 2 MiB chunks mapped
 * with MADV_HUGEPAGE and populated in one call (weft__map_huge()): a burst
 * of spawns (a million sleepers: 576 MB of records live at once) otherwise
 * pays a page fault per 4 KiB at first touch and, under a hypervisor that
 * shadows the guest's page tables, a fill exit on the first access even
 * after populating. Measured on this project's 2-core VM: populating and
 * first touching 4 KiB pages ~11 us per page; in a huge page ~0.5 us per
 * 4 KiB. Chunks are unmapped with the runtime; each starts with its link.
 */
#define REC_CHUNK_AFTER 4096u

struct slab {
	struct slab *next;
	bool chunked; /* carved from a chunk: not the allocator's */
	struct weft__task rec[SLAB_RECORDS];
};

/* A zeroed slab from the current chunk, mapping a new one when it is used
 * up; NULL if none can be mapped. Called with reg_lock held. */
static struct slab *chunk_slab(struct weft__runtime *rt)
{
	const size_t first =
		(sizeof(struct weft__rec_chunk) + WEFT__CACHELINE - 1) &
		~(size_t)(WEFT__CACHELINE - 1);
	struct slab *s;

	_Static_assert(sizeof(struct slab) % WEFT__CACHELINE == 0,
		       "slabs in a chunk stay cache-line aligned");
	char *end = rt->rec_chunks ? (char *)rt->rec_chunks + WEFT__HUGE_BYTES :
				     NULL;

	if (!end || rt->rec_chunk_next + sizeof(struct slab) > end) {
		struct weft__rec_chunk *c = weft__map_huge(WEFT__HUGE_BYTES);

		if (!c)
			return NULL;
		c->next = rt->rec_chunks;
		rt->rec_chunks = c;
		rt->rec_chunk_next = (char *)c + first;
	}
	s = (struct slab *)(void *)rt->rec_chunk_next;
	rt->rec_chunk_next += sizeof(struct slab);
	s->chunked = true;
	return s;
}

/* ------------------------------------------------------------ handles */

weft_task *weft__handle_encode(struct weft__task *t)
{
	uint64_t gen = atomic_load_explicit((_Atomic uint32_t *)&t->gen,
					    memory_order_relaxed) & 0xffff;
	return (weft_task *)(uintptr_t)((uint64_t)(uintptr_t)t |
					(gen << HANDLE_GEN_SHIFT));
}

struct weft__task *weft__handle_decode(const weft_task *h)
{
	uint64_t v = (uint64_t)(uintptr_t)h;
	struct weft__task *t = (struct weft__task *)(uintptr_t)(v &
							       HANDLE_PTR_MASK);

	if (!t)
		return NULL;
	uint32_t gen = atomic_load_explicit((_Atomic uint32_t *)&t->gen,
					    memory_order_relaxed);
	if ((gen & 0xffff) != (v >> HANDLE_GEN_SHIFT) ||
	    atomic_load_explicit(&t->state, memory_order_relaxed) ==
		    WEFT__TASK_FREE)
		return NULL;
	return t;
}

/*
 * Move @t's handle generation on. Its two writers never run at once: the
 * owner bumps it while it still holds its reference (weft__owner_release(),
 * before its put), the recycler only after the last put (whose acq_rel
 * RMW on refs orders it after every other put). So a load and a store, not
 * a locked add: two locked instructions less per task (fib: 4% each).
 * Readers (handle decode) load it relaxed from any thread.
 */
static inline void gen_bump(struct weft__task *t)
{
	_Atomic uint32_t *g = (_Atomic uint32_t *)&t->gen;

	atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

/* ------------------------------------------------------------ records */

/* The idle values of a free record's lines 3 and 4 (sched.h): spawn does
 * not write them; whoever changes one restores it before the task ends. */
static void record_idle_init(struct weft__task *t)
{
	t->scope_deadline_ns = UINT64_MAX;
	t->inherited_deadline_ns = UINT64_MAX;
	weft__timer_init(&t->timer);
}

static struct weft__task *slab_new(struct weft__runtime *rt)
{
	/* Called with reg_lock held. Returns one record; the others go to
	 * the runtime's free list. */
	struct slab *s = NULL;

	if (rt->nrecords >= REC_CHUNK_AFTER) {
		int saved = errno; /* a spawn that succeeds leaves it alone */
		s = chunk_slab(rt);
		if (!s)
			errno = saved;
	}
	if (!s) {
		s = weft__alloc_aligned(WEFT__CACHELINE, sizeof(*s));
		if (!s)
			return NULL;
		/* Zeroed (jemalloc knows fresh pages are zero and skips the
		 * clearing). Fresh memory, the first of a burst of spawns:
		 * one populate call, not a page fault per page below. */
		weft__populate(s, sizeof(*s));
	}
	for (int i = 0; i < SLAB_RECORDS; i++) {
		record_idle_init(&s->rec[i]);
		atomic_store_explicit(&s->rec[i].run_claim, WEFT__RC_RUN,
				      memory_order_relaxed);
	}
	s->next = (struct slab *)rt->registry;
	rt->registry = (struct weft__task *)(void *)s;
	rt->nrecords += SLAB_RECORDS;
	for (int i = SLAB_RECORDS - 1; i >= 1; i--) {
		s->rec[i].free_next = rt->free_tasks;
		rt->free_tasks = &s->rec[i];
	}
	return &s->rec[0];
}

/*
 * RELIABILITY B2/B3: while stacks cannot be had (a get failed for want of
 * memory or of mappings, vm.max_map_count, and none came back since), a
 * spawn fails with ENOMEM rather than make a task that could not start
 * (one already made waits for a stack: worker.c run_task()). A stack in
 * this worker's cache, or one the pool gives now (a probe: get, put
 * back), is enough. A foreign thread has no cache: the pool's free count.
 */
static bool stack_obtainable(struct weft__runtime *rt, struct weft__worker *w)
{
	struct weft__stack *s;

	if (!w)
		return weft__stack_pool_nfree(&rt->stacks) != 0;
	if (w->stacks.count)
		return true;
	s = weft__stack_get(&rt->stacks, &w->stacks, 0);
	if (!s)
		return false;
	weft__stack_put(&rt->stacks, &w->stacks, s);
	return true;
}

struct weft__task *weft__task_alloc(struct weft__runtime *rt,
				    struct weft__worker *w)
{
	struct weft__task *t;

	if (WEFT__UNLIKELY(weft__stack_pool_failing(&rt->stacks)) &&
	    !stack_obtainable(rt, w)) {
		errno = ENOMEM;
		return NULL;
	}
	if (w && w->free_tasks) {
		t = w->free_tasks;
		w->free_tasks = t->free_next;
		w->nfree_tasks--;
		return t;
	}
	if (w && w->spill) {
		t = w->spill;
		w->spill = t->free_next;
		w->nspill--;
		return t;
	}
	pthread_mutex_lock(&rt->reg_lock);
	if (w && rt->free_batches) {
		/* A whole batch: this one and REC_BATCH - 1 for the cache. */
		t = rt->free_batches;
		rt->free_batches = t->arg;
		pthread_mutex_unlock(&rt->reg_lock);
		w->free_tasks = t->free_next;
		w->nfree_tasks = REC_BATCH - 1;
		return t;
	}
	t = rt->free_tasks;
	if (!t && rt->free_batches) {
		/* A thread that is not a worker (rare): one record of a
		 * batch, the others to the single list. */
		t = rt->free_batches;
		rt->free_batches = t->arg;
		for (struct weft__task *x = t->free_next, *nx; x; x = nx) {
			nx = x->free_next;
			x->free_next = rt->free_tasks;
			rt->free_tasks = x;
		}
	} else if (t) {
		rt->free_tasks = t->free_next;
		/* Take a batch into the worker's cache. */
		for (unsigned i = 0; w && i < REC_BATCH && rt->free_tasks;
		     i++) {
			struct weft__task *x = rt->free_tasks;
			rt->free_tasks = x->free_next;
			x->free_next = w->free_tasks;
			w->free_tasks = x;
			w->nfree_tasks++;
		}
	} else {
		t = slab_new(rt);
	}
	pthread_mutex_unlock(&rt->reg_lock);
	if (!t)
		errno = ENOMEM;
	return t;
}

static void task_recycle(struct weft__task *t)
{
	struct weft__runtime *rt = t->rt;
	struct weft__worker *w = weft__worker_current();

	/* A free record's name is "" (task_init() writes it only when one
	 * is given); line 0's flags say whether this one was. */
	if (atomic_load_explicit(&t->flags, memory_order_relaxed) &
	    WEFT__T_NAMED)
		t->name[0] = 0;
	gen_bump(t);
	/* A stale queue entry naming this record must not start it. */
	atomic_store_explicit(&t->run_claim, WEFT__RC_RUN,
			      memory_order_relaxed);
	atomic_store_explicit(&t->state, WEFT__TASK_FREE, memory_order_release);
	if (w && w->rt == rt) {
		if (w->nfree_tasks < REC_CACHE_MAX) {
			t->free_next = w->free_tasks;
			w->free_tasks = t;
			w->nfree_tasks++;
			return;
		}
		/* Past the bound (a join loop releasing a big batch): gather
		 * REC_BATCH, then hand the chain over whole: one lock per
		 * batch, and no walk over cold records under it. */
		t->free_next = w->spill;
		w->spill = t;
		if (++w->nspill < REC_BATCH)
			return;
		pthread_mutex_lock(&rt->reg_lock);
		w->spill->arg = rt->free_batches;
		rt->free_batches = w->spill;
		pthread_mutex_unlock(&rt->reg_lock);
		w->spill = NULL;
		w->nspill = 0;
		return;
	}
	pthread_mutex_lock(&rt->reg_lock);
	t->free_next = rt->free_tasks;
	rt->free_tasks = t;
	pthread_mutex_unlock(&rt->reg_lock);
}

void weft__task_put(struct weft__task *t, uint32_t n)
{
	/* acq_rel: the last dropper sees every write of the others. */
	if (atomic_fetch_sub_explicit(&t->refs, n, memory_order_acq_rel) == n)
		task_recycle(t);
}

void weft__registry_free_all(struct weft__runtime *rt)
{
	struct slab *s = (struct slab *)(void *)rt->registry;

	while (s) {
		struct slab *next = s->next;
		if (!s->chunked)
			weft__free(s);
		s = next;
	}
	while (rt->rec_chunks) {
		struct weft__rec_chunk *c = rt->rec_chunks;
		rt->rec_chunks = c->next;
		weft__unmap_huge(c, WEFT__HUGE_BYTES);
	}
	rt->rec_chunk_next = NULL;
	rt->registry = NULL;
	rt->free_tasks = NULL;
	rt->free_batches = NULL;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		rt->workers[i]->free_tasks = NULL;
		rt->workers[i]->nfree_tasks = 0;
		rt->workers[i]->spill = NULL;
		rt->workers[i]->nspill = 0;
	}
}

/* Walk every record that is not free. Context: any thread; takes reg_lock. */
void weft__registry_walk(struct weft__runtime *rt,
			 void (*fn)(struct weft__task *t, void *arg),
			 void *arg);
void weft__registry_walk(struct weft__runtime *rt,
			 void (*fn)(struct weft__task *t, void *arg), void *arg)
{
	pthread_mutex_lock(&rt->reg_lock);
	for (struct slab *s = (struct slab *)(void *)rt->registry; s;
	     s = s->next)
		for (int i = 0; i < SLAB_RECORDS; i++)
			if (atomic_load_explicit(&s->rec[i].state,
						 memory_order_acquire) !=
			    WEFT__TASK_FREE)
				fn(&s->rec[i], arg);
	pthread_mutex_unlock(&rt->reg_lock);
}

void weft__stat_live(struct weft__runtime *rt, uint64_t *spawned,
		     uint64_t *completed)
{
	uint64_t s = 0, c = 0;

	/* Completions first, then spawns (acquire): a completion seen
	 * implies its spawn is seen, so spawned - completed never
	 * undercounts the tasks alive. */
	c += atomic_load_explicit(&rt->foreign_stats.completed,
				  memory_order_acquire);
	for (unsigned i = 0; i < rt->nworkers; i++)
		c += atomic_load_explicit(&rt->workers[i]->stats.completed,
					  memory_order_acquire);
	atomic_thread_fence(memory_order_seq_cst);
	s += atomic_load_explicit(&rt->foreign_stats.spawned,
				  memory_order_acquire);
	for (unsigned i = 0; i < rt->nworkers; i++)
		s += atomic_load_explicit(&rt->workers[i]->stats.spawned,
					  memory_order_acquire);
	*spawned = s;
	*completed = c;
}

/* ------------------------------------------------------------ spawn */

/*
 * Fill a record for a new task. Only lines 0 and 2 are written (and the
 * name when one is given): the rest holds its idle values already
 * (record_idle_init(), sched.h). Debug builds check that it does.
 */
static void task_init(struct weft__task *t, struct weft__runtime *rt,
		      weft_fn fn, void *arg, const char *name)
{
#ifndef NDEBUG /* reads the lines spawn means not to touch */
	WEFT__BUG_ON(t->stack || t->scope_top || t->group || t->inline_host ||
		     atomic_load_explicit(&t->hosting, memory_order_relaxed) ||
		     atomic_load_explicit(&t->timer_worker,
					  memory_order_relaxed) ||
		     t->scope_deadline_ns != UINT64_MAX ||
		     t->inherited_deadline_ns != UINT64_MAX ||
		     weft__timer_linked(&t->timer) || t->stack_borrowed ||
		     t->alive_ref_held);
#endif
	t->fn = fn;
	t->arg = arg;
	t->rt = rt;
	atomic_store_explicit(&t->join_word,
			      weft__rt_draining(rt) ? WEFT__J_CANCEL : 0,
			      memory_order_relaxed);
	t->status = 0;
	atomic_store_explicit(&t->refs, 2, memory_order_relaxed);
	atomic_store_explicit(&t->flags, name ? WEFT__T_NAMED : 0,
			      memory_order_relaxed);
	/* run_claim stays RC_RUN (a free record's): RC_DEQUE is stored last,
	 * by weft__ready_fresh() (sched.h, run_claim). */

	atomic_store_explicit(&t->wait_word, 0, memory_order_relaxed);
	t->pinned_to = NULL;
	t->stack_size = 0;
	t->spawn_flags = 0;
	t->shield_depth = 0;
	t->scoped = false;
	atomic_store_explicit(&t->started, false, memory_order_relaxed);
	if (t->locals_mask) {
		memset(t->locals, 0, sizeof(t->locals));
		t->locals_mask = 0;
	}
	if (name) {
		size_t n = strnlen(name, WEFT_TASK_NAME_MAX);
		memcpy(t->name, name, n);
		t->name[n] = 0;
	}
	/* The last line, which weft__ready_fresh() writes anyway. */
	atomic_store_explicit(&t->cancel_fails, 0, memory_order_relaxed);
	t->spawn_file = NULL;
	t->spawn_line = 0;
}

static void count_spawn(struct weft__runtime *rt, struct weft__worker *w,
			struct weft__task *t)
{
	if (w) {
		t->id = (++w->next_id << 10) | (w->index + 1);
		atomic_store_explicit(
			&w->stats.spawned,
			atomic_load_explicit(&w->stats.spawned,
					     memory_order_relaxed) + 1,
			memory_order_release);
	} else {
		t->id = (atomic_fetch_add(&rt->foreign_next_id, 1) + 1) << 10;
		atomic_fetch_add_explicit(&rt->foreign_stats.spawned, 1,
					  memory_order_acq_rel);
	}
}

/* 0 if @o (may be NULL) is acceptable, else -EINVAL. */
int weft__spawn_opts_check(const weft_spawn_opts *o)
{
	if (!o)
		return 0;
	for (size_t i = 0; i < WEFT__ARRAY_SIZE(o->reserved); i++)
		if (o->reserved[i])
			return -EINVAL;
	if ((o->flags & ~WEFT_SPAWN_PINNED) ||
	    o->stack_size > ((size_t)1 << 30))
		return -EINVAL;
	return 0;
}

/*
 * A child of group @g (group.c): nobody owns it (one reference, "alive";
 * DETACHED, so it is never reported as unjoined), its completion goes
 * through weft__group_child_done(). Not made runnable: the caller links it
 * into the group first, then calls weft__ready_fresh().
 * Context: a task on worker @w; the caller holds @g's lock.
 * Return: the record, or NULL (-ENOMEM).
 */
struct weft__task *weft__spawn_child(struct weft__worker *w,
				     const weft_spawn_opts *o, weft_fn fn,
				     void *arg, struct weft_group *g)
{
	struct weft__task *t = weft__task_alloc(w->rt, w);

	if (!t)
		return NULL;
	task_init(t, w->rt, fn, arg, o ? o->name : NULL);
	if (o) {
		t->spawn_flags |= o->flags;
		t->stack_size = o->stack_size;
	}
	atomic_store_explicit(&t->refs, 1, memory_order_relaxed);
	atomic_store_explicit(&t->flags,
			      atomic_load_explicit(&t->flags,
						   memory_order_relaxed) |
				      WEFT__T_DETACHED | WEFT__T_GROUP,
			      memory_order_relaxed);
	t->group = g;
	count_spawn(w->rt, w, t);
	return t;
}

/*
 * The spawn functions are also function-like macros of task.h that pass
 * the caller's __FILE__/__LINE__ to the _at variants; here the real
 * functions are defined, so the macros must not apply.
 */
#undef weft_spawn
#undef weft_spawn_named
#undef weft_spawn_ex

WEFT_API int weft_spawn_ex_at(weft_task **out, const weft_spawn_opts *o,
			      weft_fn fn, void *arg, const char *file,
			      unsigned line)
{
	struct weft__worker *w = weft__worker_current();
	struct weft__task *t;

	if (!out || !fn || weft__spawn_opts_check(o))
		return -EINVAL;
	if (!w || !w->current)
		return -EPERM;
	t = weft__task_alloc(w->rt, w);
	if (!t)
		return -ENOMEM;
	task_init(t, w->rt, fn, arg, o ? o->name : NULL);
	if (o) {
		t->spawn_flags |= o->flags;
		t->stack_size = o->stack_size;
	}
	t->spawn_file = file; /* for the unjoined-task report (runtime.c) */
	t->spawn_line = line;
	count_spawn(w->rt, w, t);
	*out = weft__handle_encode(t);
	weft__ready_fresh(w, t);
	return 0;
}

WEFT_API weft_task *weft_spawn_named_at(const char *name, weft_fn fn,
					void *arg, const char *file,
					unsigned line)
{
	weft_spawn_opts o = { .name = name };
	weft_task *h = NULL;
	int err = weft_spawn_ex_at(&h, name ? &o : NULL, fn, arg, file, line);

	if (err) {
		errno = -err;
		return NULL;
	}
	return h;
}

WEFT_API int weft_spawn_ex(weft_task **out, const weft_spawn_opts *o,
			   weft_fn fn, void *arg)
{
	return weft_spawn_ex_at(out, o, fn, arg, NULL, 0);
}

WEFT_API weft_task *weft_spawn_named(const char *name, weft_fn fn, void *arg)
{
	return weft_spawn_named_at(name, fn, arg, NULL, 0);
}

WEFT_API weft_task *weft_spawn(weft_fn fn, void *arg)
{
	return weft_spawn_named_at(NULL, fn, arg, NULL, 0);
}

/* Create a task from a thread that is not a worker of rt (weft_submit,
 * weft_block_on). @owned: keep the owner reference for the caller. */
struct weft__task *weft__spawn_foreign(struct weft__runtime *rt, weft_fn fn,
				       void *arg, const char *name,
				       bool owned);
struct weft__task *weft__spawn_foreign(struct weft__runtime *rt, weft_fn fn,
				       void *arg, const char *name, bool owned)
{
	struct weft__task *t = weft__task_alloc(rt, NULL);

	if (!t)
		return NULL;
	task_init(t, rt, fn, arg, name);
	if (!owned) {
		atomic_store_explicit(&t->refs, 1, memory_order_relaxed);
		atomic_store_explicit(
			&t->flags,
			atomic_load_explicit(&t->flags, memory_order_relaxed) |
				WEFT__T_DETACHED,
			memory_order_relaxed);
	}
	count_spawn(rt, NULL, t);
	/* A fresh entry in the injection queue, claimed by whichever worker
	 * pops it (its owner is a foreign thread: never run inline).
	 * release: the record is complete before it can be claimed. */
	weft__task_set_state(t, WEFT__TASK_RUNNABLE);
	atomic_store_explicit(&t->run_claim, WEFT__RC_DEQUE,
			      memory_order_release);
	weft__inject_push(rt, weft__item_fresh(t));
	weft__notify(rt);
	return t;
}

/* ------------------------------------------------------------ run/exit */

typedef void (*weft__local_dtor_fn)(void *);
/* written once per key before nkeys covers it... see weft_key_create() */
static _Atomic(weft__local_dtor_fn) local_dtors[WEFT_KEYS_MAX];
static _Atomic unsigned nkeys;

/* After fn returned, in the task: task-local destructors, scope check. */
static void task_finish(struct weft__task *t)
{
	/* First: the scopes fn left open are in its dead frame, which the
	 * destructors' calls below would overwrite (weft__scopes_unwind()). */
	if (t->scoped)
		weft__scopes_unwind(t, NULL, "returned");
	while (t->locals_mask) {
		unsigned k = (unsigned)__builtin_ctz(t->locals_mask);
		void *v = t->locals[k];
		weft__local_dtor_fn d = atomic_load_explicit(
			&local_dtors[k], memory_order_acquire);
		t->locals_mask &= ~(1u << k);
		t->locals[k] = NULL;
		if (v && d)
			d(v); /* may set other locals: the loop sees them */
	}
	if (t->scoped) /* and any a destructor left open */
		weft__scopes_unwind(t, NULL,
				    "a task-local destructor returned");
	if (atomic_load_explicit(&t->flags, memory_order_relaxed) &
	    WEFT__T_GROUP)
		weft__group_child_done(t);
}

void weft__task_entry(void *arg)
{
	struct weft__task *t = arg;

	t->status = t->fn(t->arg);
	task_finish(t);
	t->switch_reason = WEFT__SW_EXIT;
	struct weft__worker *w = weft__worker_current();
	weft__ctx_switch_final(&t->ctx, &w->sched_ctx);
}

static void count_completion(struct weft__worker *w, struct weft__runtime *rt)
{
	atomic_store_explicit(&w->stats.completed,
			      atomic_load_explicit(&w->stats.completed,
						   memory_order_relaxed) + 1,
			      memory_order_release);
	if (atomic_load_explicit(&rt->state, memory_order_acquire) !=
	    WEFT__RT_RUNNING) {
		atomic_fetch_add_explicit(&rt->drain_word, 1,
					  memory_order_release);
		weft__futex_wake_all(&rt->drain_word);
	}
}

void weft__task_complete(struct weft__worker *w, struct weft__task *t)
{
	struct weft__runtime *rt = t->rt;
	uintptr_t old;

	atomic_store_explicit(&t->state, WEFT__TASK_DONE, memory_order_relaxed);
	/* seq_cst: Dekker with the joiner's joiner_seq store (header). */
	old = atomic_fetch_or_explicit(&t->join_word, WEFT__J_DONE,
				       memory_order_seq_cst);
	struct weft__task *joiner =
		(struct weft__task *)(old & ~(uintptr_t)WEFT__J_FLAGS);
	if (WEFT__UNLIKELY(old & WEFT__J_HUB)) {
		weft__hub_report(w, (struct weft__hub *)joiner, t);
	} else if (joiner) {
		uint64_t seq = atomic_load_explicit(&t->joiner_seq,
						    memory_order_seq_cst);
		if (weft__wait_try_claim(joiner, seq, WEFT__WAKE_SOURCE) == 2)
			weft__ready_local(w, joiner, true);
	}
	count_completion(w, rt);
	weft__task_put(t, 1);
}

/*
 * Joiner-side inline run (help-first join, as TBB's wait runs tasks): when
 * the owner joins a child that no worker has started, it claims the child
 * (RC_DEQUE -> RC_RUN) and calls fn directly on its own stack: no stack to
 * fetch, no switch, no queue. The child is a full task meanwhile:
 * weft_self(), task-locals and its cancellation are its own; if it
 * suspends, the whole stack (the joiner's frames below it) suspends with
 * it and may resume on another worker. The joiner's cancellation and
 * deadlines reach it: a cancellation is copied into it (at the start, or
 * by weft__task_cancel_internal() through hosting, which also ends a wait
 * in progress), and the joiner's deadline is inherited
 * (inherited_deadline_ns, weft__pending_error()). The child's queue entry
 * becomes a tombstone (sched.h, run_claim); the inline run drops the
 * "alive" reference itself, as a worker's completion would.
 *
 * Eligible: unpinned children spawned with the default stack size, when at
 * least 3/4 of a default stack is free below the joiner's frame (the
 * child's guaranteed stack; spawn with an explicit stack_size to always
 * get a fresh stack of that size).
 */
static bool try_run_inline(struct weft__task *host, struct weft__task *c)
{
	struct weft__runtime *rt = host->rt;
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	int exp = WEFT__RC_DEQUE;

	if ((c->spawn_flags & WEFT_SPAWN_PINNED) || c->stack_size ||
	    !host->stack || !rt->inline_join ||
	    sp - (uintptr_t)host->stack->lo < rt->stacks.default_size / 4 * 3)
		return false;
	if (atomic_load_explicit(&c->run_claim, memory_order_relaxed) != exp)
		return false;
	struct weft__worker *w = weft__worker_current();
	/* Its entry is usually the newest in our deque (everything spawned
	 * after it has been joined): take it out rather than leave a
	 * tombstone. A joiner that runs a whole tree inline (fib) never
	 * returns to its scheduler to pop them; they used to fill the deque
	 * and spill to the injection queue by the hundred (8% of fib). */
	weft__deque_take_if_bottom(&w->dq, weft__item_fresh(c));
	/* Still needed after a successful take: an old tombstone naming this
	 * recycled record may claim it too (sched.h, run_claim). */
	if (!atomic_compare_exchange_strong_explicit(&c->run_claim, &exp,
						     WEFT__RC_RUN,
						     memory_order_acq_rel,
						     memory_order_relaxed))
		return false;

	uint64_t hd = weft__wait_deadline(host);

	c->stack = host->stack;
	c->stack_borrowed = true;
	c->ctx = host->ctx; /* tool state of the stack (sp is rewritten) */
	c->pinned_to = host->pinned_to;
	c->inline_host = host;
	c->inherited_deadline_ns = hd;
	atomic_store_explicit(&c->started, true, memory_order_relaxed);
	/* seq_cst: Dekker with weft__task_cancel_internal(host), which sets
	 * J_CANCEL and then reads hosting: either it sees c and cancels it,
	 * or we see its J_CANCEL here and copy it into c. */
	atomic_store_explicit(&host->hosting, c, memory_order_seq_cst);
	if (weft__task_cancel_pending(host))
		atomic_fetch_or_explicit(&c->join_word, WEFT__J_CANCEL,
					 memory_order_seq_cst);
	weft__task_set_state(c, WEFT__TASK_RUNNING);
	w->current = c;
	weft__wd_slice_begin(w, c); /* watchdog/dumps name the child */
	/* So does the stack-overflow report (stack.c): the stack is ours,
	 * the frames that overflow it are the child's. */
	w->oi.task_name = c->name;

	c->status = c->fn(c->arg);
	task_finish(c);

	w = weft__worker_current(); /* c may have migrated, with our stack */
	w->current = host;
	w->oi.task_name = host->name;
#ifndef NDEBUG
	/* set if c was resumed by a run_task() after a park */
	atomic_store_explicit(&c->dbg_running_on, 0, memory_order_relaxed);
#endif
	weft__wd_slice_begin(w, host);
	/* release, not seq_cst (an xchg: ~9% of fib): the clear takes part
	 * in no Dekker pair (the set above does). cancel_hosted() relies
	 * only on the clear being ordered before our later put of c's
	 * references (weft__owner_release()), which release gives: a
	 * canceller whose pin succeeds while c is still ours may see c or
	 * NULL, and cancelling a finished c is a no-op. */
	atomic_store_explicit(&host->hosting, NULL, memory_order_release);
	c->inline_host = NULL;
	c->inherited_deadline_ns = UINT64_MAX; /* idle value (sched.h) */
	c->stack = NULL;
	c->stack_borrowed = false;
	atomic_store_explicit(&c->state, WEFT__TASK_DONE, memory_order_relaxed);
	/* Only the owner (us) joins: nobody to wake. A load and a store, not
	 * a locked or (~10% of fib): the only other writers of c's join
	 * word are cancellers (fetch_or J_CANCEL). One that lands between
	 * our load and store saw c not done and returned 1, rightly (it came
	 * before J_DONE in the word's order); its bit is lost, and nothing
	 * reads J_CANCEL of a finished task. release: the status, for the
	 * acquire loads of J_DONE (gather.c, weft_cancel()'s RMW). */
	atomic_store_explicit(
		&c->join_word,
		atomic_load_explicit(&c->join_word, memory_order_relaxed) |
			WEFT__J_DONE,
		memory_order_release);
	count_completion(w, rt);
	/* The "alive" reference goes with the owner's, in one put, when
	 * the join returns (weft__owner_release(): every caller of
	 * weft__join_wait() ends with it). */
	c->alive_ref_held = true;
	return true;
}

/* ------------------------------------------------------------ join */

/*
 * weft__join_register() - Make @self the joiner @child's completion wakes,
 * for @self's wait @word.
 *
 * The pointer in join_word and joiner_seq are two words, so the finisher
 * may read them from different registrations. When the pointer changes
 * (the first registration, or the handle moved to a new owner after a
 * weft_wait_any()), joiner_seq is cleared first (0 matches no wait): a
 * finisher that reads the new pointer then reads 0 or the new word, and one
 * that reads the old pointer finds the old owner's stale word, never the
 * new owner's word under the wrong task. The store of @word and the load of
 * join_word that follows are Dekker with the finisher's fetch_or(J_DONE)
 * and its load of joiner_seq (all seq_cst): either it claims this wait or
 * we see J_DONE.
 *
 * Return: true if @child is done (the caller claims its own wait).
 * Context: the scheduler stack (a wait's publish callback) or @self.
 */
bool weft__join_register(struct weft__task *self, struct weft__task *child,
			 uint64_t word)
{
	uintptr_t cur = atomic_load_explicit(&child->join_word,
					     memory_order_seq_cst);

	if (cur & WEFT__J_DONE)
		return true;
	if ((cur & ~(uintptr_t)WEFT__J_FLAGS) != (uintptr_t)self) {
		atomic_store_explicit(&child->joiner_seq, 0,
				      memory_order_seq_cst);
		do {
			if (cur & WEFT__J_DONE)
				return true;
		} while (!atomic_compare_exchange_weak_explicit(
			&child->join_word, &cur,
			(cur & (uintptr_t)WEFT__J_CANCEL) | (uintptr_t)self,
			memory_order_seq_cst, memory_order_seq_cst));
	}
	atomic_store_explicit(&child->joiner_seq, word, memory_order_seq_cst);
	return atomic_load_explicit(&child->join_word, memory_order_seq_cst) &
	       WEFT__J_DONE;
}

static void join_publish(struct weft__task *self, struct weft__wait *wt)
{
	if (weft__join_register(self, wt->obj, wt->word))
		weft__wait_try_claim(self, wt->word, WEFT__WAKE_SOURCE);
}

/*
 * Wait until @t is done. If the caller is cancelled or its scope expires
 * first, cancel @t and keep waiting, uncancellably. Return: 0 if the wait
 * was not interrupted, else the interruption (-ECANCELED / -ETIMEDOUT).
 * Context: task; suspension point.
 */
int weft__join_wait(struct weft__task *self, struct weft__task *t,
		    uint64_t deadline_ns, bool *timed_out)
{
	int interrupted = 0;
	bool cancellable = true;

	if (timed_out)
		*timed_out = false;
	if (deadline_ns == UINT64_MAX && !weft__pending_error(self) &&
	    try_run_inline(self, t))
		return 0;
	while (!(atomic_load_explicit(&t->join_word, memory_order_acquire) &
		 WEFT__J_DONE)) {
		struct weft__wait wt = { .publish = join_publish, .obj = t };
		uint64_t dl = UINT64_MAX;

		if (cancellable) {
			int err = weft__pending_error(self);
			if (!err && deadline_ns != UINT64_MAX &&
			    weft__clock_now() >= deadline_ns) {
				if (timed_out)
					*timed_out = true;
				err = -ETIMEDOUT;
			}
			if (err) {
				interrupted = err;
				weft__task_cancel_internal(t);
				cancellable = false;
				continue;
			}
			uint64_t sd = weft__wait_deadline(self);
			dl = deadline_ns < sd ? deadline_ns : sd;
		}
		wt.deadline_ns = dl;
		wt.word = weft__wait_prepare(self, cancellable);
		weft__set_wait_kind(self, WEFT__WK_JOIN); /* for dumps */
		weft__wait_park(self, &wt);
		/* Loop: re-check done, cancellation and the deadlines. */
	}
	return interrupted;
}

static struct weft__task *owner_wait_begin(weft_task *h, int *err)
{
	struct weft__task *self = weft__task_current();
	struct weft__task *t;

	if (!self) {
		*err = -EPERM;
		return NULL;
	}
	t = weft__handle_decode(h);
	if (!t || t->rt != self->rt) {
		*err = -EINVAL;
		return NULL;
	}
	if (t == self) {
		*err = -EDEADLK;
		return NULL;
	}
	uint32_t f = atomic_fetch_or_explicit(&t->flags,
					      WEFT__T_OWNER_WAITING,
					      memory_order_acq_rel);
	if (f & (WEFT__T_DETACHED | WEFT__T_OWNER_WAITING)) {
		if (!(f & WEFT__T_OWNER_WAITING))
			atomic_fetch_and_explicit(&t->flags,
						  ~WEFT__T_OWNER_WAITING,
						  memory_order_relaxed);
		*err = -EINVAL;
		return NULL;
	}
	*err = 0;
	return t;
}

WEFT_API int weft_join(weft_task *h)
{
	struct weft__task *self = weft__task_current();
	struct weft__task *t;
	int err, status;

	t = owner_wait_begin(h, &err);
	if (!t)
		return err;
	weft__join_wait(self, t, UINT64_MAX, NULL);
	status = t->status;
	weft__owner_release(t);
	return status;
}

/*
 * The owner gives up its handle (join returned, or detach): the handle's
 * generation moves on at once, so the released handle is rejected even
 * while the record lives on (a running detached task, or a task its
 * inline run still holding a reference).
 */
void weft__owner_release(struct weft__task *t)
{
	uint32_t n = 1 + t->alive_ref_held; /* its inline run's, too */

	t->alive_ref_held = false; /* idle value, before the record is free */
	gen_bump(t);
	weft__task_put(t, n);
}

/* For gather.c: begin an owner wait on @h. */
struct weft__task *weft__owner_wait_begin(weft_task *h, int *err)
{
	return owner_wait_begin(h, err);
}

WEFT_API void weft_detach(weft_task *h)
{
	struct weft__task *t = weft__handle_decode(h);

	if (!t) {
		weft__report("weft_detach: released or invalid handle %p",
			     (void *)h);
		return;
	}
	uint32_t f = atomic_fetch_or_explicit(&t->flags, WEFT__T_DETACHED,
					      memory_order_acq_rel);
	if (f & (WEFT__T_DETACHED | WEFT__T_OWNER_WAITING)) {
		weft__report("weft_detach: task '%s' is already %s", t->name,
			     (f & WEFT__T_DETACHED) ? "detached" :
						      "being joined");
		return;
	}
	/* No generation bump (unlike a join): the task itself, or a task it
	 * gave its weft_self() handle, may still cancel it by that handle
	 * (same encoding). Join and detach of a detached handle are refused
	 * by the flag; the generation moves on when the record is recycled. */
	weft__task_put(t, 1);
}

/* ------------------------------------------------------------ cancel */

/* Take a reference only if the record is still referenced (never from 0:
 * a recycled record stays recycled). */
static bool ref_get_not_zero(struct weft__task *t)
{
	uint32_t r = atomic_load_explicit(&t->refs, memory_order_relaxed);

	do {
		if (r == 0)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(
		&t->refs, &r, r + 1, memory_order_acquire,
		memory_order_relaxed));
	return true;
}

/*
 * Cancel the child t hosts. The child's record may be finishing: pin it
 * with a reference taken only if the count is not zero, then make sure t
 * still hosts it (the host clears hosting before it drops its reference,
 * so a child still hosted after the pin is the real one).
 */
static void cancel_hosted(struct weft__task *t)
{
	struct weft__task *c =
		atomic_load_explicit(&t->hosting, memory_order_seq_cst);

	/* A shielded host does not see its cancellation, nor does the join
	 * it runs the child from. (t is blocked in that join: its
	 * shield_depth does not change meanwhile.) */
	if (!c || t->shield_depth)
		return;
	if (!ref_get_not_zero(c))
		return;
	if (atomic_load_explicit(&t->hosting, memory_order_seq_cst) == c)
		weft__task_cancel_internal(c);
	weft__task_put(c, 1);
}

int weft__task_cancel_internal(struct weft__task *t)
{
	/* seq_cst: Dekker with the publish CAS of weft__wait_publish() and
	 * the load of J_CANCEL after it (wait.c, step 4). */
	uintptr_t old = atomic_fetch_or_explicit(&t->join_word, WEFT__J_CANCEL,
						 memory_order_seq_cst);
	uint64_t cur;

	if (old & WEFT__J_DONE)
		return 0;
	weft__chaos(); /* between the flag and the look at the wait */
	cur = atomic_load_explicit(&t->wait_word, memory_order_seq_cst);
	if (cur & WEFT__W_CANCELLABLE)
		weft__wait_claim(t, cur, WEFT__WAKE_CANCEL);
	/* A child running inline on t's stack waits in t's stead. */
	if (atomic_load_explicit(&t->hosting, memory_order_seq_cst))
		cancel_hosted(t);
	return 1;
}

WEFT_API int weft_cancel(weft_task *h)
{
	struct weft__task *t = weft__handle_decode(h);
	int r;

	if (!t)
		return -EINVAL;
	/* Decode and cancel are two steps: the owner may release the handle
	 * and the record be reused by a new task in between. Pin the record,
	 * then re-check the handle, so an unrelated task is never hit. */
	if (!ref_get_not_zero(t))
		return -EINVAL;
	if (weft__handle_decode(h) != t) {
		weft__task_put(t, 1);
		return -EINVAL;
	}
	r = weft__task_cancel_internal(t);
	weft__task_put(t, 1);
	return r;
}

WEFT_API weft_task *weft_self(void)
{
	struct weft__task *t = weft__task_current();

	return t ? weft__handle_encode(t) : NULL;
}

WEFT_API int weft_task_name(const weft_task *h, char *buf, size_t len)
{
	struct weft__task *t = h ? weft__handle_decode(h) : weft__task_current();
	size_t n;

	if (!t || !buf)
		return -EINVAL;
	n = strnlen(t->name, WEFT_TASK_NAME_MAX);
	if (len) {
		size_t c = n < len - 1 ? n : len - 1;
		memcpy(buf, t->name, c);
		buf[c] = 0;
	}
	return (int)n;
}

WEFT_API uint64_t weft_task_id(const weft_task *h)
{
	struct weft__task *t = h ? weft__handle_decode(h) : weft__task_current();

	return t ? t->id : 0;
}

/* ------------------------------------------------------------ locals */

WEFT_API int weft_key_create(weft_key *k, void (*dtor)(void *))
{
	unsigned n;

	if (!k)
		return -EINVAL;
	/* The slot is reserved by the CAS; its destructor is stored with
	 * release before the key is handed out, so a task that uses the key
	 * (it got it through some synchronisation) sees the destructor. */
	n = atomic_load(&nkeys);
	do {
		if (n >= WEFT_KEYS_MAX)
			return -EAGAIN;
	} while (!atomic_compare_exchange_weak(&nkeys, &n, n + 1));
	atomic_store_explicit(&local_dtors[n], dtor, memory_order_release);
	*k = n;
	return 0;
}

WEFT_API void *weft_local_get(weft_key k)
{
	struct weft__task *t = weft__task_current();

	if (!t || k >= WEFT_KEYS_MAX)
		return NULL;
	return t->locals[k];
}

WEFT_API int weft_local_set(weft_key k, void *value)
{
	struct weft__task *t = weft__task_current();

	if (!t)
		return -EPERM;
	if (k >= atomic_load(&nkeys))
		return -EINVAL;
	t->locals[k] = value;
	t->locals_mask |= 1u << k;
	return 0;
}
