/* SPDX-License-Identifier: MIT */
/*
 * perf/sync.c - the synchronisation primitives' costs (issue 4): not
 * workloads of shared/perf/cpu-spec.md, but run by the same driver under
 * the spec's common rules (a runtime of --workers workers, the driver as
 * its main task, weft_now() around the timed region, invariants checked,
 * medians of interleaved passes).
 *
 * Issue 4: "uncontended fast paths never enter the scheduler: an
 * uncontended mutex lock/unlock pair and a queue put/get on a non-full,
 * non-empty queue cost tens of nanoseconds at most", and "measure both
 * the uncontended cost and a contended convoy case".
 *
 *   mutex_pair       one task: N x (weft_mutex_lock; weft_mutex_unlock).
 *                    ns_per_pair = wall ns / N.
 *   mutex_convoy     64 tasks on every worker, N acquisitions in all
 *                    (N/64 each), each holding the mutex for a small
 *                    critical section (a shared counter and one splitmix64
 *                    step of shared state). ns_per_acquire = wall ns / N,
 *                    acquires_per_s, and waited_pct: the share of
 *                    acquisitions that found the mutex held (a trylock
 *                    first, then lock). The counter must equal N.
 *   mutex_handoff    the same, but each holder calls weft_yield() inside
 *                    its critical section, so the other tasks of its
 *                    worker find the mutex held and queue: the wait, wake
 *                    and hand-over path, the convoy's worst case.
 *   sem_pair         one task: N x (weft_sem_acquire; weft_sem_release) on
 *                    a semaphore of 1. ns_per_pair.
 *   queue_pair       one task: a queue of capacity 16 holding 8 items;
 *                    N x (weft_queue_put; weft_queue_get), so it is never
 *                    full nor empty. ns_per_pair. Every item got must be
 *                    the one put 8 puts earlier (FIFO).
 *   queue_mpmc       4 producers and 4 consumers through a queue of
 *                    capacity 16; N items in all; the queue is closed
 *                    when the producers are done and the consumers drain
 *                    it to -EPIPE. msgs_per_s = N / wall s, ns_per_item.
 *                    Count and sum of the items got must match.
 *   limiter_acquire  one task: N x weft_limiter_acquire() on a limiter so
 *                    fast (10^12/s, burst 10^6) that a slot is always free:
 *                    the cost of taking a slot without sleeping (the API
 *                    has no try_acquire; this is its fast path).
 *                    ns_per_acquire.
 *   limiter_c64      the same limiter, 64 tasks, N acquisitions in all:
 *                    the slot lock under contention. ns_per_acquire.
 *
 * Timing: the single-task workloads time the loop only (the primitive is
 * set up before the clock starts); the multi-task ones time spawn of the
 * first task to join of the last, as the spec does.
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "bench.h"

#define CONVOY_TASKS 64
#define MPMC_PRODUCERS 4
#define MPMC_CONSUMERS 4
#define MPMC_CAPACITY 16
#define PAIR_CAPACITY 16
#define PAIR_PREFILL 8
#define LIMITER_RATE 1e12
#define LIMITER_BURST 1000000u

/* What one child measured; run() checks and reports it. */
struct sync_run {
	long long n; /* the size argument */
	uint64_t wall_ns;
	long long check; /* the workload's invariant value */
	long long waited; /* convoys: acquisitions that had to wait */
	int failed; /* first failed weft call, as -errno */
};

static void note_failure(struct sync_run *r, int ret)
{
	if (ret < 0 && !r->failed)
		r->failed = ret;
}

/*
 * Spawn @nr tasks of @fn(@arg), join them all; the clock runs from the
 * first spawn to the last join. Returns the first failure.
 */
static int spawn_join_all(struct sync_run *r, unsigned nr, weft_fn fn,
			  void *arg)
{
	weft_task **t = calloc(nr, sizeof(*t));
	unsigned i, spawned;
	uint64_t t0;

	if (!t)
		return -ENOMEM;
	t0 = weft_now();
	for (spawned = 0; spawned < nr; spawned++) {
		t[spawned] = weft_spawn(fn, arg);
		if (!t[spawned]) {
			note_failure(r, -errno);
			break;
		}
	}
	for (i = 0; i < spawned; i++)
		note_failure(r, weft_join(t[i]));
	r->wall_ns = weft_now() - t0;
	free(t);
	return r->failed;
}

/* ---- mutex --------------------------------------------------------------- */

static int mutex_pair_driver(void *arg)
{
	struct sync_run *r = arg;
	weft_mutex m = { 0 }; /* all-zero: unlocked */
	uint64_t t0;
	long long i;
	int ret;

	t0 = weft_now();
	for (i = 0; i < r->n; i++) {
		ret = weft_mutex_lock(&m);
		if (ret < 0)
			return ret;
		weft_mutex_unlock(&m);
	}
	r->wall_ns = weft_now() - t0;
	r->check = i;
	return 0;
}

struct convoy {
	weft_mutex m;
	long long each; /* acquisitions per task */
	bool yield_inside; /* mutex_handoff: suspend while holding m */
	long long counter; /* under m */
	long long waited; /* under m: acquisitions that found m held */
	uint64_t state; /* under m: splitmix64 state */
};

static int convoy_task(void *arg)
{
	struct convoy *c = arg;
	long long i;
	int ret;

	for (i = 0; i < c->each; i++) {
		/* trylock first only to count the waits: on a free mutex
		 * it is the same single CAS as weft_mutex_lock(). */
		bool waited = weft_mutex_trylock(&c->m) != 0;

		if (waited) {
			ret = weft_mutex_lock(&c->m);
			if (ret < 0)
				return ret;
		}
		c->counter++;
		c->waited += waited;
		(void)bench_splitmix64(&c->state);
		if (c->yield_inside) {
			ret = weft_yield();
			if (ret < 0) {
				weft_mutex_unlock(&c->m);
				return ret;
			}
		}
		weft_mutex_unlock(&c->m);
	}
	return 0;
}

static int convoy_driver(struct sync_run *r, bool yield_inside)
{
	struct convoy c = { .each = r->n / CONVOY_TASKS,
			    .yield_inside = yield_inside,
			    .state = 42 };

	spawn_join_all(r, CONVOY_TASKS, convoy_task, &c);
	r->check = c.counter;
	r->waited = c.waited;
	weft_mutex_destroy(&c.m);
	return r->failed;
}

static int mutex_convoy_driver(void *arg)
{
	return convoy_driver(arg, false);
}

static int mutex_handoff_driver(void *arg)
{
	return convoy_driver(arg, true);
}

/* ---- semaphore ----------------------------------------------------------- */

static int sem_pair_driver(void *arg)
{
	struct sync_run *r = arg;
	weft_sem s;
	uint64_t t0;
	long long i;
	int ret;

	weft_sem_init(&s, 1);
	t0 = weft_now();
	for (i = 0; i < r->n; i++) {
		ret = weft_sem_acquire(&s);
		if (ret < 0)
			return ret;
		weft_sem_release(&s);
	}
	r->wall_ns = weft_now() - t0;
	r->check = i;
	weft_sem_destroy(&s);
	return 0;
}

/* ---- queue --------------------------------------------------------------- */

static int queue_pair_driver(void *arg)
{
	struct sync_run *r = arg;
	weft_queue *q = weft_queue_new(PAIR_CAPACITY);
	long long i, in_order = 0;
	uint64_t t0;
	void *v;
	int ret = 0;

	if (!q)
		return -errno;
	for (i = 0; i < PAIR_PREFILL; i++)
		weft_queue_try_put(q, (void *)(uintptr_t)i);
	t0 = weft_now();
	for (i = 0; i < r->n; i++) {
		ret = weft_queue_put(q, (void *)(uintptr_t)(i + PAIR_PREFILL));
		if (ret < 0)
			break;
		ret = weft_queue_get(q, &v);
		if (ret < 0)
			break;
		in_order += (uintptr_t)v == (uintptr_t)i;
	}
	r->wall_ns = weft_now() - t0;
	r->check = in_order;
	weft_queue_free(q);
	return ret;
}

struct mpmc {
	weft_queue *q;
	long long n; /* items in all */
	_Atomic long long got, sum; /* consumers' totals */
};

struct mpmc_arg {
	struct mpmc *m;
	unsigned id;
};

static int mpmc_producer(void *arg)
{
	struct mpmc_arg *a = arg;
	long long v;
	int ret;

	for (v = a->id; v < a->m->n; v += MPMC_PRODUCERS) {
		ret = weft_queue_put(a->m->q, (void *)(uintptr_t)v);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int mpmc_consumer(void *arg)
{
	struct mpmc *m = ((struct mpmc_arg *)arg)->m;
	long long got = 0, sum = 0;
	void *v;
	int ret;

	while ((ret = weft_queue_get(m->q, &v)) == 0) {
		got++;
		sum += (long long)(uintptr_t)v;
	}
	atomic_fetch_add(&m->got, got);
	atomic_fetch_add(&m->sum, sum);
	return ret == -EPIPE ? 0 : ret;
}

static int queue_mpmc_driver(void *arg)
{
	struct sync_run *r = arg;
	struct mpmc m = { .n = r->n };
	struct mpmc_arg pa[MPMC_PRODUCERS], ca[MPMC_CONSUMERS];
	weft_task *pt[MPMC_PRODUCERS], *ct[MPMC_CONSUMERS];
	unsigned i, np = 0, nc = 0;
	uint64_t t0;

	m.q = weft_queue_new(MPMC_CAPACITY);
	if (!m.q)
		return -errno;
	t0 = weft_now();
	for (i = 0; i < MPMC_CONSUMERS; i++, nc++) {
		ca[i] = (struct mpmc_arg){ &m, i };
		ct[i] = weft_spawn(mpmc_consumer, &ca[i]);
		if (!ct[i]) {
			note_failure(r, -errno);
			break;
		}
	}
	for (i = 0; i < MPMC_PRODUCERS && !r->failed; i++, np++) {
		pa[i] = (struct mpmc_arg){ &m, i };
		pt[i] = weft_spawn(mpmc_producer, &pa[i]);
		if (!pt[i]) {
			note_failure(r, -errno);
			break;
		}
	}
	for (i = 0; i < np; i++)
		note_failure(r, weft_join(pt[i]));
	weft_queue_close(m.q); /* the consumers drain it, then -EPIPE */
	for (i = 0; i < nc; i++)
		note_failure(r, weft_join(ct[i]));
	r->wall_ns = weft_now() - t0;
	weft_queue_free(m.q);
	/* n(n-1)/2 fits: n < 2^31 */
	r->check = atomic_load(&m.got) == m.n &&
		   atomic_load(&m.sum) == m.n * (m.n - 1) / 2;
	return r->failed;
}

/* ---- limiter ------------------------------------------------------------- */

static int limiter_driver(void *arg)
{
	struct sync_run *r = arg;
	weft_limiter *l = weft_limiter_new(LIMITER_RATE, LIMITER_BURST);
	uint64_t t0;
	long long i;
	int ret = 0;

	if (!l)
		return -errno;
	t0 = weft_now();
	for (i = 0; i < r->n; i++) {
		ret = weft_limiter_acquire(l);
		if (ret < 0)
			break;
	}
	r->wall_ns = weft_now() - t0;
	r->check = i;
	weft_limiter_free(l);
	return ret;
}

struct limiter_c64 {
	weft_limiter *l;
	long long each;
};

static int limiter_task(void *arg)
{
	struct limiter_c64 *lc = arg;
	long long i;
	int ret;

	for (i = 0; i < lc->each; i++) {
		ret = weft_limiter_acquire(lc->l);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int limiter_c64_driver(void *arg)
{
	struct sync_run *r = arg;
	struct limiter_c64 lc = { .each = r->n / CONVOY_TASKS };

	lc.l = weft_limiter_new(LIMITER_RATE, LIMITER_BURST);
	if (!lc.l)
		return -errno;
	spawn_join_all(r, CONVOY_TASKS, limiter_task, &lc);
	weft_limiter_free(lc.l);
	r->check = lc.each * CONVOY_TASKS;
	return r->failed;
}

/* ---- the workloads' run() ------------------------------------------------ */

/* Run @driver in a runtime; 0, or 1 once bench_fail() reported why. */
static int measure(const struct bench_opts *o, const char *name, weft_fn driver,
		   struct sync_run *r)
{
	int ret = bench_weft_run(o, driver, r);

	if (ret == 0)
		ret = r->failed;
	if (ret != 0)
		return bench_fail(name, "weft call failed: %d", ret);
	if (r->wall_ns == 0)
		return bench_fail(name, "the clock did not advance");
	return 0;
}

static double per(const struct sync_run *r, long long n)
{
	return (double)r->wall_ns / (double)n;
}

static int run_mutex_pair(const struct bench_opts *o, long long n)
{
	struct sync_run r = { .n = n };

	if (measure(o, "mutex_pair", mutex_pair_driver, &r))
		return 1;
	bench_emit("mutex_pair", "ns_per_pair", per(&r, n), "ns", n);
	return 0;
}

static int run_convoy(const struct bench_opts *o, long long n, const char *name,
		      weft_fn driver)
{
	struct sync_run r;

	n -= n % CONVOY_TASKS;
	r = (struct sync_run){ .n = n };
	if (measure(o, name, driver, &r))
		return 1;
	if (r.check != n)
		return bench_fail(name, "counter %lld, want %lld", r.check, n);
	bench_emit(name, "ns_per_acquire", per(&r, n), "ns", n);
	bench_emit(name, "acquires_per_s", 1e9 / per(&r, n), "acq/s", n);
	bench_emit(name, "waited_pct", 100.0 * (double)r.waited / (double)n,
		   "%", n);
	return 0;
}

static int run_mutex_convoy(const struct bench_opts *o, long long n)
{
	return run_convoy(o, n, "mutex_convoy", mutex_convoy_driver);
}

static int run_mutex_handoff(const struct bench_opts *o, long long n)
{
	return run_convoy(o, n, "mutex_handoff", mutex_handoff_driver);
}

static int run_sem_pair(const struct bench_opts *o, long long n)
{
	struct sync_run r = { .n = n };

	if (measure(o, "sem_pair", sem_pair_driver, &r))
		return 1;
	bench_emit("sem_pair", "ns_per_pair", per(&r, n), "ns", n);
	return 0;
}

static int run_queue_pair(const struct bench_opts *o, long long n)
{
	struct sync_run r = { .n = n };

	if (measure(o, "queue_pair", queue_pair_driver, &r))
		return 1;
	if (r.check != n)
		return bench_fail("queue_pair", "%lld of %lld items in order",
				  r.check, n);
	bench_emit("queue_pair", "ns_per_pair", per(&r, n), "ns", n);
	return 0;
}

static int run_queue_mpmc(const struct bench_opts *o, long long n)
{
	struct sync_run r = { .n = n };

	if (n >= INT_MAX)
		return bench_fail("queue_mpmc", "n must be below 2^31");
	if (measure(o, "queue_mpmc", queue_mpmc_driver, &r))
		return 1;
	if (!r.check)
		return bench_fail("queue_mpmc",
				  "items lost or duplicated (count or sum)");
	bench_emit("queue_mpmc", "msgs_per_s", 1e9 / per(&r, n), "msg/s", n);
	bench_emit("queue_mpmc", "ns_per_item", per(&r, n), "ns", n);
	return 0;
}

static int run_limiter(const struct bench_opts *o, long long n)
{
	struct sync_run r = { .n = n };

	if (measure(o, "limiter_acquire", limiter_driver, &r))
		return 1;
	bench_emit("limiter_acquire", "ns_per_acquire", per(&r, n), "ns", n);
	return 0;
}

static int run_limiter_c64(const struct bench_opts *o, long long n)
{
	struct sync_run r;

	n -= n % CONVOY_TASKS;
	r = (struct sync_run){ .n = n };
	if (measure(o, "limiter_c64", limiter_c64_driver, &r))
		return 1;
	bench_emit("limiter_c64", "ns_per_acquire", per(&r, n), "ns", n);
	return 0;
}

const struct bench_workload bench_mutex_pair = {
	.name = "mutex_pair",
	.spec = "issue 4: uncontended weft_mutex lock+unlock, one task",
	.size_full = 10000000,
	.size_quick = 10000000,
	.run = run_mutex_pair,
};

const struct bench_workload bench_mutex_convoy = {
	.name = "mutex_convoy",
	.spec = "issue 4: 64 tasks contend for one weft_mutex",
	.size_full = 2000000,
	.size_quick = 1000000,
	.run = run_mutex_convoy,
};

const struct bench_workload bench_mutex_handoff = {
	.name = "mutex_handoff",
	.spec = "issue 4: 64 tasks, each yields while holding the weft_mutex",
	.size_full = 400000,
	.size_quick = 200000,
	.run = run_mutex_handoff,
};

const struct bench_workload bench_sem_pair = {
	.name = "sem_pair",
	.spec = "issue 4: uncontended weft_sem acquire+release, one task",
	.size_full = 10000000,
	.size_quick = 10000000,
	.run = run_sem_pair,
};

const struct bench_workload bench_queue_pair = {
	.name = "queue_pair",
	.spec = "issue 4: weft_queue put+get, never full nor empty, one task",
	.size_full = 10000000,
	.size_quick = 10000000,
	.run = run_queue_pair,
};

const struct bench_workload bench_queue_mpmc = {
	.name = "queue_mpmc",
	.spec = "issue 4: 4 producers, 4 consumers, weft_queue of 16",
	.size_full = 2000000,
	.size_quick = 1000000,
	.run = run_queue_mpmc,
};

const struct bench_workload bench_limiter_acquire = {
	.name = "limiter_acquire",
	.spec = "issue 4: weft_limiter_acquire with a free slot, one task",
	.size_full = 10000000,
	.size_quick = 10000000,
	.run = run_limiter,
};

const struct bench_workload bench_limiter_c64 = {
	.name = "limiter_c64",
	.spec = "issue 4: weft_limiter_acquire with free slots, 64 tasks",
	.size_full = 2000000,
	.size_quick = 1000000,
	.run = run_limiter_c64,
};
