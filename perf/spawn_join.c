/* SPDX-License-Identifier: MIT */
/*
 * perf/spawn_join.c - shared/perf/cpu-spec.md, section "1. spawn_join":
 *
 *   N = 1,000,000 tasks, in batches of B = 10,000 (100 batches). For each
 *   batch: spawn B tasks, each of which does one relaxed atomic increment
 *   of a shared 64-bit counter and returns nothing; then join the B tasks
 *   in spawn order. After the last batch the counter must equal N.
 *   Metric: ns_per_task = wall ns / N.
 *
 * weft: weft_spawn() x B into a handle array, then weft_join() of each in
 * spawn order. The array is allocated before the clock starts (Tokio's
 * Vec::with_capacity(B) is the same, reused by every batch).
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

#define BATCH 10000

struct spawn_join {
	long long n;
	weft_task **handles; /* BATCH slots, reused by every batch */
	uint64_t wall_ns;
	int failed; /* first failed weft call, as -errno */
	/* The tasks' relaxed increments, on a line of its own: the driver
	 * reads n and handles at every spawn and join, and a counter on
	 * their line had the other worker's increments steal it from under
	 * the driver (the peers' counters are separate allocations). */
	_Alignas(64) _Atomic uint64_t counter;
	char pad[64 - sizeof(uint64_t)];
};

static int incr(void *arg)
{
	_Atomic uint64_t *counter = arg;

	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
	return 0;
}

static int driver(void *arg)
{
	struct spawn_join *s = arg;
	uint64_t t0;
	long long done;
	int i, ret;

	t0 = weft_now();
	for (done = 0; done < s->n; done += BATCH) {
		int b = s->n - done < BATCH ? (int)(s->n - done) : BATCH;

		for (i = 0; i < b; i++) {
			s->handles[i] = weft_spawn(incr, &s->counter);
			if (!s->handles[i]) {
				s->failed = -errno;
				b = i; /* join what was spawned, then stop */
				break;
			}
		}
		for (i = 0; i < b; i++) {
			ret = weft_join(s->handles[i]);
			if (ret != 0 && !s->failed)
				s->failed = ret;
		}
		if (s->failed)
			return s->failed;
	}
	s->wall_ns = weft_now() - t0;
	return 0;
}

static int run(const struct bench_opts *o, long long n)
{
	struct spawn_join s = { .n = n };
	uint64_t counter;
	int ret;

	s.handles = calloc(BATCH, sizeof(*s.handles));
	if (!s.handles)
		return bench_fail("spawn_join", "out of memory");
	ret = bench_weft_run(o, driver, &s);
	free(s.handles);
	if (ret != 0)
		return bench_fail("spawn_join", "weft call failed: %d (%s)",
				  ret, s.failed ? "spawn/join" : "weft_run");
	counter = atomic_load(&s.counter);
	if (counter != (uint64_t)n)
		return bench_fail("spawn_join", "counter %llu != N %lld",
				  (unsigned long long)counter, n);
	bench_emit("spawn_join", "ns_per_task", (double)s.wall_ns / (double)n,
		   "ns", n);
	return 0;
}

const struct bench_workload bench_spawn_join = {
	.name = "spawn_join",
	.spec = "1. spawn_join: N tasks in batches of 10,000, join in order",
	.size_full = 1000000,
	.size_quick = 1000000,
	.run = run,
};
