/* SPDX-License-Identifier: MIT */
/*
 * perf/switch.c - shared/perf/cpu-spec.md, section "2. yield", bullet
 * "boost-context (raw switch floor)":
 *
 *   No scheduler. One fiber whose body loops switching back to main; the
 *   main context loops switching to the fiber M = 10,000,000 times (after
 *   one warm-up entry). One iteration = 2 context switches
 *   (main->fiber->main). Metrics: ns_per_switch_pair = wall ns / M and
 *   ns_per_switch = wall ns / (2M).
 *
 * weft: the same with weft's own switch, weft__ctx_switch() (runtime/ctx.h)
 * between the thread's context and one context made by weft__ctx_make() on
 * a stack from weft's stack pool (runtime/stack.h), on one thread, with no
 * runtime. This is the floor under weft_yield(): the scheduler's work is
 * the difference. The internal symbols are hidden in libweft.so; weft-bench
 * links libweft.a, where they resolve.
 *
 * The peers report this under workload "yield" (boost-context); weft's
 * lines say "switch", and the driver compares them with the peers'
 * "yield" lines of the same metric.
 */
#include "bench.h"
#include "runtime/ctx.h"
#include "runtime/stack.h"

struct switch_bench {
	struct weft__ctx main;
	struct weft__ctx fiber;
	volatile bool stop; /* set by main before the last switch */
	long long hops; /* fiber-side count of entries */
};

static void fiber_body(void *arg)
{
	struct switch_bench *s = arg;

	while (!s->stop) {
		s->hops++;
		weft__ctx_switch(&s->fiber, &s->main);
	}
	weft__ctx_switch_final(&s->fiber, &s->main);
}

static int run(const struct bench_opts *o, long long m)
{
	struct weft__stack_pool pool;
	struct weft__stack_cache cache = { 0 };
	struct weft__stack *st;
	struct switch_bench s = { .stop = false };
	uint64_t t0, wall_ns;
	long long i;
	int ret;

	(void)o; /* no runtime, no workers */
	ret = weft__stack_pool_init(&pool, 0);
	if (ret < 0)
		return bench_fail("switch", "weft__stack_pool_init: %d", ret);
	st = weft__stack_get(&pool, &cache, 0);
	if (!st) {
		weft__stack_pool_destroy(&pool);
		return bench_fail("switch", "weft__stack_get: errno %d", errno);
	}
	weft__ctx_init_thread(&s.main);
	weft__ctx_make(&s.fiber, st->lo, st->size, fiber_body, &s);

	weft__ctx_switch(&s.main, &s.fiber); /* warm-up: the first entry */
	t0 = weft_now();
	for (i = 0; i < m; i++)
		weft__ctx_switch(&s.main, &s.fiber);
	wall_ns = weft_now() - t0;
	s.stop = true;
	weft__ctx_switch(&s.main, &s.fiber); /* the fiber's final switch */

	weft__ctx_destroy(&s.fiber);
	weft__stack_put(&pool, &cache, st);
	weft__stack_cache_flush(&pool, &cache);
	weft__stack_pool_destroy(&pool);
	if (s.hops != m + 1)
		return bench_fail("switch",
				  "fiber ran %lld times, not M+1 = %lld",
				  s.hops, m + 1);
	bench_emit("switch", "ns_per_switch_pair", (double)wall_ns / (double)m,
		   "ns", m);
	bench_emit("switch", "ns_per_switch",
		   (double)wall_ns / (2.0 * (double)m), "ns", 2 * m);
	return 0;
}

const struct bench_workload bench_switch = {
	.name = "switch",
	.spec = "2. yield, boost-context: raw switch pair x M, no scheduler",
	.size_full = 10000000,
	.size_quick = 10000000,
	.run = run,
};
