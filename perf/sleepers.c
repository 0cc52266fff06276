/* SPDX-License-Identifier: MIT */
/*
 * perf/sleepers.c - shared/perf/cpu-spec.md, section "5. sleepers":
 *
 *   N = 1,000,000 tasks. Task i (i = 0..N-1, in spawn order) sleeps
 *   d_i = 1 + (x_i mod 1000) milliseconds, x_i being the i-th splitmix64
 *   output (seed 42), then returns. The driver spawns all N (drawing d_i in
 *   the driver), then joins them in spawn order.
 *   Metrics: wall_ms (spawn of the first to join of the last);
 *   peak_rss_mib = getrusage(RUSAGE_SELF).ru_maxrss read after the last
 *   join; rss_per_task = (peak RSS - RSS read from /proc/self/statm just
 *   before the first spawn) / N, in bytes.
 *
 * weft: weft_sleep(WEFT_MSEC(d_i)); d_i travels as the task's arg pointer.
 * The N handles live in an array allocated (not touched) before the RSS
 * baseline, so its pages count, as Tokio's Vec of JoinHandles does. The
 * PRNG is checked against the spec's first three outputs for seed 42
 * before anything runs. Under --quick N is 100,000 (the "n" field says so).
 */
#include <stdlib.h>

#include "bench.h"

struct sleepers {
	long long n;
	weft_task **handles;
	uint64_t wall_ns;
	long base_kib; /* statm right before the first spawn */
	long peak_kib; /* ru_maxrss right after the last join */
	int failed; /* first failed spawn, join or sleep */
};

static int sleeper(void *arg)
{
	return weft_sleep(WEFT_MSEC((uintptr_t)arg));
}

static int driver(void *arg)
{
	struct sleepers *s = arg;
	uint64_t rng = 42, t0;
	long long i, spawned;
	int ret;

	s->base_kib = bench_rss_now_kib();
	t0 = weft_now();
	for (spawned = 0; spawned < s->n; spawned++) {
		uintptr_t d_ms = 1 + bench_splitmix64(&rng) % 1000;

		s->handles[spawned] = weft_spawn(sleeper, (void *)d_ms);
		if (!s->handles[spawned]) {
			s->failed = -errno;
			break;
		}
	}
	for (i = 0; i < spawned; i++) {
		ret = weft_join(s->handles[i]);
		if (ret != 0 && !s->failed)
			s->failed = ret;
	}
	s->wall_ns = weft_now() - t0;
	s->peak_kib = bench_rss_peak_kib();
	return s->failed;
}

/* The spec's check values: the first three outputs for seed 42. */
static int prng_self_check(void)
{
	static const uint64_t want[3] = {
		UINT64_C(13679457532755275413),
		UINT64_C(2949826092126892291),
		UINT64_C(5139283748462763858),
	};
	static const unsigned want_ms[3] = { 414, 292, 859 };
	uint64_t s = 42, x;
	int i;

	for (i = 0; i < 3; i++) {
		x = bench_splitmix64(&s);
		if (x != want[i] || 1 + x % 1000 != want_ms[i])
			return bench_fail(
				"sleepers",
				"splitmix64 output %d is %llu, not %llu", i + 1,
				(unsigned long long)x,
				(unsigned long long)want[i]);
	}
	return 0;
}

static int run(const struct bench_opts *o, long long n)
{
	struct sleepers s = { .n = n };
	int ret;

	if (prng_self_check())
		return 1;
	s.handles = malloc((size_t)n * sizeof(*s.handles));
	if (!s.handles)
		return bench_fail("sleepers", "out of memory");
	ret = bench_weft_run(o, driver, &s);
	free(s.handles);
	if (ret != 0)
		return bench_fail("sleepers", "weft call failed: %d", ret);
	bench_emit("sleepers", "wall_ms", (double)s.wall_ns / 1e6, "ms", n);
	bench_emit("sleepers", "peak_rss_mib", (double)s.peak_kib / 1024.0,
		   "MiB", n);
	bench_emit("sleepers", "rss_per_task",
		   (double)(s.peak_kib - s.base_kib) * 1024.0 / (double)n,
		   "bytes", n);
	return 0;
}

const struct bench_workload bench_sleepers = {
	.name = "sleepers",
	.spec = "5. sleepers: N tasks sleep 1 + splitmix64 mod 1000 ms",
	.size_full = 1000000,
	.size_quick = 100000,
	.quick_runs = 1,
	.run = run,
};
