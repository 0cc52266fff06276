/* SPDX-License-Identifier: MIT */
/*
 * runtime/runtime.c - weft_run, weft_runtime_new/free, weft_block_on,
 * weft_submit; configuration and environment.
 *
 * Shutdown (weft_runtime_free), in order:
 *  1. state = DRAINING (seq_cst). weft_submit/weft_block_on entries that
 *     raced with it are counted in rt->entering; free waits until that
 *     count is 0, so every submit either sees DRAINING (-ECANCELED, fn not
 *     run) or has queued its task before the drain starts (it runs).
 *  2. Cancel every task that is not done (registry walk). Tasks spawned
 *     from now on start cancelled (task_init), so the set shrinks.
 *  3. Wait until spawned == completed (weft__stat_live), woken through
 *     drain_word by each task that ends while draining; repeat the cancel
 *     walk on every wake-up (cheap, and catches tasks spawned meanwhile).
 *     A task whose weft_offload() call runs cannot be cancelled (one still
 *     queued for a pool thread is withdrawn): the drain waits for those
 *     calls, naming those still running after a grace period
 *     (weft__drain_report(), observe.c).
 *  4. state = STOPPING, wake every worker; they exit when they find no
 *     work; join them. Then stop the watchdog/SIGQUIT threads and the
 *     offload pool (offload.c: no call is in flight any more).
 *  5. Wait for weft_block_on callers to leave, report tasks never joined
 *     nor detached (debug mode), free stacks, records and workers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/sched.h"
#include "io/backend.h"

struct weft__task *weft__spawn_foreign(struct weft__runtime *rt, weft_fn fn,
				       void *arg, const char *name,
				       bool owned);
void weft__registry_walk(struct weft__runtime *rt,
			 void (*fn)(struct weft__task *t, void *arg),
			 void *arg);

#define WORKERS_MAX 1024
#define STACK_MIN ((size_t)16 << 10)
#define STACK_MAX ((size_t)1 << 30)

bool weft__rt_draining(const struct weft__runtime *rt)
{
	return atomic_load_explicit(&rt->state, memory_order_seq_cst) !=
	       WEFT__RT_RUNNING;
}

/* ------------------------------------------------------------ config */

/* CPUs of the cgroup v2 quota ("max" or "<quota> <period>"), 0: none. */
static unsigned cgroup_cpu_limit(void)
{
	char path[512], line[256];
	FILE *f = fopen("/proc/self/cgroup", "re");
	unsigned limit = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		/* cgroup v2: "0::/path" */
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max",
			 line + 3);
		FILE *q = fopen(path, "re");
		if (!q)
			break;
		unsigned long long quota, period;
		char qs[32];
		if (fscanf(q, "%31s %llu", qs, &period) == 2 &&
		    strcmp(qs, "max") != 0 && period > 0) {
			quota = strtoull(qs, NULL, 10);
			limit = (unsigned)((quota + period - 1) / period);
			if (limit == 0)
				limit = 1;
		}
		fclose(q);
		break;
	}
	fclose(f);
	return limit;
}

static unsigned default_workers(void)
{
	cpu_set_t set;
	unsigned n = 0, q;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = (unsigned)CPU_COUNT(&set);
	if (n == 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		n = c > 0 ? (unsigned)c : 1;
	}
	q = cgroup_cpu_limit();
	if (q && q < n)
		n = q;
	return n;
}

static int resolve_config(const weft_config *in, weft_config *cfg)
{
	unsigned long long v;

	if (in) {
		for (size_t i = 0; i < WEFT__ARRAY_SIZE(in->reserved); i++)
			if (in->reserved[i])
				return -EINVAL;
		if (in->flags & ~(WEFT_IO_EPOLL | WEFT_PIN_WORKERS |
				  WEFT_DUMP_ON_SIGQUIT | WEFT_CLOCK_PAUSED))
			return -EINVAL;
		*cfg = *in;
	} else {
		memset(cfg, 0, sizeof(*cfg));
	}
	/* One worker: the clock stands still while any task runs, and only
	 * one thread moves it (worker.c: vclock_park()). */
	if (cfg->flags & WEFT_CLOCK_PAUSED) {
		if (cfg->workers > 1)
			return -EINVAL;
		cfg->workers = 1;
	}
	if (cfg->workers == 0) {
		if (weft__env_ulong("WEFT_WORKERS", 1, WORKERS_MAX, &v))
			cfg->workers = (unsigned)v;
		else
			cfg->workers = default_workers();
	}
	if (cfg->workers > WORKERS_MAX)
		cfg->workers = WORKERS_MAX;
	if (cfg->stack_size) {
		if (cfg->stack_size < STACK_MIN)
			cfg->stack_size = STACK_MIN;
		if (cfg->stack_size > STACK_MAX)
			cfg->stack_size = STACK_MAX;
	}
	if (cfg->offload_max == 0)
		cfg->offload_max = 512;
	return 0;
}

/* ------------------------------------------------------------ new/free */

static void free_workers(struct weft__runtime *rt)
{
	for (unsigned i = 0; rt->workers && i < rt->nworkers; i++) {
		struct weft__worker *w = rt->workers[i];
		if (!w)
			continue;
		pthread_mutex_destroy(&w->inbox_lock);
		pthread_mutex_destroy(&w->timer_lock);
		weft__free(w);
	}
	weft__free(rt->workers);
	weft__free(rt->idle_stack);
}

static void pin_thread(pthread_t th, unsigned i)
{
	cpu_set_t set, one;
	unsigned seen = 0;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		if (seen++ == i % (unsigned)CPU_COUNT(&set)) {
			CPU_ZERO(&one);
			CPU_SET(c, &one);
			pthread_setaffinity_np(th, sizeof(one), &one);
			return;
		}
	}
}

WEFT_API int weft_runtime_new(weft_runtime **out, const weft_config *in)
{
	struct weft__runtime *rt;
	weft_config cfg;
	unsigned i, started = 0;
	int err;

	if (!out)
		return -EINVAL;
	if (weft__task_current())
		return -EBUSY;
	weft__faults_init(); /* WEFT_FAULTS, test builds (fault.c) */
	weft__chaos_init();  /* WEFT_CHAOS, test builds (chaos.c) */
	err = resolve_config(in, &cfg);
	if (err)
		return err;
	rt = weft__alloc_aligned(WEFT__CACHELINE, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	rt->cfg = cfg;
	rt->nworkers = cfg.workers;
	/* Searchers spin: more of them than CPUs only take the CPUs the
	 * workers with tasks need (1,024 workers on 2 CPUs took 30 s to start
	 * and stop, 512 spinners scanning 1,024 deques). */
	{
		unsigned cpus = default_workers();
		unsigned lim = cfg.workers < cpus ? cfg.workers : cpus;
		rt->max_searchers = lim / 2 ? lim / 2 : 1;
	}
	rt->stack_size = cfg.stack_size;
	rt->inline_join = weft__env_switch("WEFT_INLINE_JOIN", true);
	rt->handoff = weft__env_switch("WEFT_HANDOFF", true);
	if (cfg.flags & WEFT_CLOCK_PAUSED) {
		rt->vclock_paused = true;
		atomic_init(&rt->vclock_ns, weft__clock_real());
		weft__vclock_runtimes_add(1);
	}
	pthread_mutex_init(&rt->inject_lock, NULL);
	pthread_mutex_init(&rt->idle_lock, NULL);
	pthread_mutex_init(&rt->reg_lock, NULL);
	err = weft__stack_pool_init(&rt->stacks, cfg.stack_size);
	if (err)
		goto out_free_rt;
	/* On this thread: the pool threads take its signal mask. */
	err = weft__offload_init(rt);
	if (err)
		goto out_free_stacks;
	rt->workers = weft__calloc(rt->nworkers, sizeof(*rt->workers));
	rt->idle_stack = weft__calloc(rt->nworkers, sizeof(unsigned));
	rt->watcher = -1;
	if (!rt->workers || !rt->idle_stack) {
		err = -ENOMEM;
		goto out_free_workers;
	}
	for (i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w =
			weft__alloc_aligned(WEFT__CACHELINE, sizeof(*w));
		if (!w) {
			err = -ENOMEM;
			goto out_free_workers;
		}
		rt->workers[i] = w;
		w->rt = rt;
		w->index = i;
		w->rng = 0x9E3779B97F4A7C15ULL * (i + 1) ^ (uintptr_t)w;
		weft__deque_init(&w->dq);
		pthread_mutex_init(&w->inbox_lock, NULL);
		pthread_mutex_init(&w->timer_lock, NULL);
		weft__timer_heap_init(&w->timers);
		atomic_store(&w->next_deadline, UINT64_MAX);
		atomic_store(&w->park_word, 1);
	}
	/* One ring (or epoll set) per worker, made here so that a lack of
	 * memory or fds is this call's error (io/reactor.c). */
	err = weft__io_rt_init(rt);
	if (err)
		goto out_free_workers;
	weft__stack_guard_probe(); /* before any worker: see stack.h */
	for (i = 0; i < rt->nworkers; i++) {
		err = -weft__fault(WEFT__F_PTHREAD_CREATE);
		if (!err)
			err = -pthread_create(&rt->workers[i]->thread, NULL,
					      weft__worker_main, rt->workers[i]);
		if (err)
			goto out_stop;
		if (cfg.flags & WEFT_PIN_WORKERS)
			pin_thread(rt->workers[i]->thread, i);
		started++;
	}
	err = weft__observe_start(rt); /* watchdog, SIGQUIT dumps */
	if (err)
		goto out_stop;
	*out = (weft_runtime *)rt;
	return 0;

out_stop:
	atomic_store(&rt->state, WEFT__RT_STOPPING);
	weft__wake_all(rt);
	for (i = 0; i < started; i++)
		pthread_join(rt->workers[i]->thread, NULL);
	weft__io_rt_fini(rt);
out_free_workers:
	free_workers(rt);
	weft__offload_stop(rt);
out_free_stacks:
	weft__stack_pool_destroy(&rt->stacks);
out_free_rt:
	if (rt->vclock_paused)
		weft__vclock_runtimes_add(-1);
	weft__free(rt);
	return err;
}

static void cancel_one(struct weft__task *t, void *arg)
{
	(void)arg;
	if (atomic_load_explicit(&t->state, memory_order_acquire) !=
	    WEFT__TASK_DONE)
		weft__task_cancel_internal(t);
}

struct unjoined {
	unsigned count;
};

static void report_unjoined(struct weft__task *t, void *arg)
{
	struct unjoined *u = arg;

	if (atomic_load_explicit(&t->state, memory_order_acquire) ==
		    WEFT__TASK_DONE &&
	    !(atomic_load_explicit(&t->flags, memory_order_acquire) &
	      (WEFT__T_DETACHED | WEFT__T_OWNER_WAITING))) {
		if (u->count++ >= 32)
			return;
		if (t->spawn_file)
			weft__report("task '%s' (id %llu) spawned at %s:%u was "
				     "never joined nor detached (status %d)",
				     t->name[0] ? t->name : "<unnamed>",
				     (unsigned long long)t->id, t->spawn_file,
				     t->spawn_line, t->status);
		else
			weft__report("task '%s' (id %llu) was never joined "
				     "nor detached (status %d)",
				     t->name[0] ? t->name : "<unnamed>",
				     (unsigned long long)t->id, t->status);
	}
}

static bool owns_thread(struct weft__runtime *rt)
{
	struct weft__worker *w = weft__worker_current();

	/* A worker of rt, or an offload thread of rt (API.md: -EBUSY). */
	return (w && w->rt == rt) || weft__offload_runtime() == rt;
}

WEFT_API int weft_runtime_free(weft_runtime *h)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	uint64_t s, c, next_report = 0;

	if (!rt)
		return 0;
	if (owns_thread(rt)) {
		weft__report("weft_runtime_free called from a task or offload "
			     "function of the runtime it frees");
		return -EBUSY;
	}
	atomic_store_explicit(&rt->state, WEFT__RT_DRAINING,
			      memory_order_seq_cst);
	while (atomic_load_explicit(&rt->entering, memory_order_seq_cst))
		sched_yield();
	for (;;) {
		uint32_t gen = atomic_load_explicit(&rt->drain_word,
						    memory_order_acquire);
		weft__registry_walk(rt, cancel_one, NULL);
		weft__stat_live(rt, &s, &c);
		if (s == c)
			break;
		weft__drain_report(rt, &next_report); /* stuck offloads */
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		syscall(SYS_futex, (uint32_t *)&rt->drain_word,
			FUTEX_WAIT_PRIVATE, gen, &ts, NULL, 0);
	}
	atomic_store_explicit(&rt->state, WEFT__RT_STOPPING,
			      memory_order_seq_cst);
	weft__wake_all(rt);
	for (unsigned i = 0; i < rt->nworkers; i++) {
		/* A worker may be between idle checks: keep waking until it
		 * has left. */
		pthread_join(rt->workers[i]->thread, NULL);
	}
	weft__observe_stop(rt);
	weft__offload_stop(rt); /* after the workers: no call in flight */
	/* Callers that overlapped the drain (they saw DRAINING and are on
	 * their way out) still read rt: wait for them before freeing. */
	while (atomic_load_explicit(&rt->blockers, memory_order_acquire) ||
	       atomic_load_explicit(&rt->entering, memory_order_acquire))
		sched_yield();
	if (weft__debug_enabled()) {
		struct unjoined u = { 0 };
		weft__registry_walk(rt, report_unjoined, &u);
		if (u.count > 32)
			weft__report("... and %u more tasks never joined nor "
				     "detached", u.count - 32);
	}
	weft__registry_free_all(rt);
	weft__io_rt_fini(rt);
	free_workers(rt);
	weft__stack_pool_destroy(&rt->stacks);
	weft__inject_free_chunks(rt);
	pthread_mutex_destroy(&rt->inject_lock);
	pthread_mutex_destroy(&rt->idle_lock);
	pthread_mutex_destroy(&rt->reg_lock);
	if (rt->vclock_paused)
		weft__vclock_runtimes_add(-1);
	weft__free(rt);
	return 0;
}

/* ------------------------------------------------------------ entry */

/* Enter a foreign call: false (and nothing to undo) if rt is draining. */
static bool enter(struct weft__runtime *rt)
{
	/* seq_cst: Dekker with the DRAINING store in weft_runtime_free. */
	atomic_fetch_add_explicit(&rt->entering, 1, memory_order_seq_cst);
	if (weft__rt_draining(rt)) {
		atomic_fetch_sub_explicit(&rt->entering, 1,
					  memory_order_seq_cst);
		return false;
	}
	return true;
}

static void leave(struct weft__runtime *rt)
{
	atomic_fetch_sub_explicit(&rt->entering, 1, memory_order_seq_cst);
}

WEFT_API int weft_submit(weft_runtime *h, weft_fn fn, void *arg)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	struct weft__task *t;

	if (!rt || !fn)
		return -EINVAL;
	if (!enter(rt))
		return -ECANCELED;
	t = weft__spawn_foreign(rt, fn, arg, "submitted", false);
	leave(rt);
	return t ? 0 : -ENOMEM;
}

struct blocker {
	weft_fn fn;
	void *arg;
	int status;
	_Atomic uint32_t done;
};

static int block_on_body(void *p)
{
	struct blocker *b = p;

	b->status = b->fn(b->arg);
	/* release: the status is visible to the blocked thread. */
	atomic_store_explicit(&b->done, 1, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&b->done, FUTEX_WAKE_PRIVATE, 1, NULL,
		NULL, 0);
	return 0;
}

WEFT_API int weft_block_on(weft_runtime *h, weft_fn fn, void *arg)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	struct blocker b = { .fn = fn, .arg = arg };
	struct weft__task *t;

	if (!rt || !fn)
		return -EINVAL;
	if (weft__task_current())
		return -EPERM;
	if (!enter(rt))
		return -ECANCELED;
	atomic_fetch_add_explicit(&rt->blockers, 1, memory_order_acq_rel);
	t = weft__spawn_foreign(rt, block_on_body, &b, "block_on", false);
	leave(rt);
	if (!t) {
		atomic_fetch_sub_explicit(&rt->blockers, 1,
					  memory_order_release);
		return -ENOMEM;
	}
	while (!atomic_load_explicit(&b.done, memory_order_acquire))
		syscall(SYS_futex, (uint32_t *)&b.done, FUTEX_WAIT_PRIVATE, 0,
			NULL, NULL, 0);
	atomic_fetch_sub_explicit(&rt->blockers, 1, memory_order_release);
	return b.status;
}

WEFT_API int weft_run(weft_fn main, void *arg, const weft_config *cfg)
{
	weft_runtime *rt;
	int err, status;

	if (!main)
		return -EINVAL;
	if (weft_runtime_current())
		return -EBUSY;
	err = weft_runtime_new(&rt, cfg);
	if (err)
		return err;
	status = weft_block_on(rt, main, arg);
	weft_runtime_free(rt);
	return status;
}

WEFT_API weft_runtime *weft_runtime_current(void)
{
	struct weft__worker *w = weft__worker_current();

	/* Off the workers: an offload thread's runtime (offload.c). */
	return w ? (weft_runtime *)w->rt :
		   (weft_runtime *)weft__offload_runtime();
}

WEFT_API unsigned weft_runtime_workers(const weft_runtime *h)
{
	const struct weft__runtime *rt = (const struct weft__runtime *)h;

	if (!rt)
		rt = (const struct weft__runtime *)weft_runtime_current();
	return rt ? rt->nworkers : 0;
}

#ifdef WEFT_TEST_HOOKS
#include "runtime/test_hooks.h"

WEFT_API uint64_t weft_test_live_tasks(struct weft_runtime *h)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	uint64_t s, c;

	weft__stat_live(rt, &s, &c);
	/* The block_on task that just returned is being completed: wait
	 * briefly for the numbers to settle. */
	for (int i = 0; i < 2000 && s != c; i++) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
		weft__stat_live(rt, &s, &c);
	}
	return s - c;
}

WEFT_API void weft_test_stack_decay_ns(struct weft_runtime *h, uint64_t ns)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;

	pthread_mutex_lock(&rt->stacks.lock);
	rt->stacks.decay_ns = ns ? ns : WEFT__STACK_DECAY_NS;
	pthread_mutex_unlock(&rt->stacks.lock);
}

WEFT_API void weft_test_stack_counts(struct weft_runtime *h,
				     unsigned long *nr_free,
				     unsigned long *nr_released)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;

	pthread_mutex_lock(&rt->stacks.lock);
	*nr_free = rt->stacks.nr_free;
	*nr_released = rt->stacks.nr_released;
	pthread_mutex_unlock(&rt->stacks.lock);
}

WEFT_API unsigned long weft_test_task_records(struct weft_runtime *h)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	unsigned long n;

	pthread_mutex_lock(&rt->reg_lock);
	n = rt->nrecords;
	pthread_mutex_unlock(&rt->reg_lock);
	return n;
}

WEFT_API unsigned long weft_test_record_chunks(struct weft_runtime *h)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	unsigned long n = 0;

	pthread_mutex_lock(&rt->reg_lock);
	for (struct weft__rec_chunk *c = rt->rec_chunks; c; c = c->next)
		n++;
	pthread_mutex_unlock(&rt->reg_lock);
	return n;
}
#endif
