/* SPDX-License-Identifier: MIT */
/*
 * perf/offload.c - shared/perf/cpu-spec.md, section "6. offload
 * (offload_seq) and offload_c64":
 *
 *   The blocking function: trivial_blocking(x) = x + 1 (no sleeping, no
 *   I/O). The caller checks the result. One round trip = submit the call to
 *   the runtime's blocking pool and await its result from a task.
 *   R = 100,000 round trips in total.
 *   offload (sequential): one caller task does j = 0..R-1 one after
 *   another. Metric us_per_roundtrip_seq = wall us / R.
 *   offload_c64: 64 caller tasks spawned together; caller c does
 *   j = c, c+64, c+128, ... < R. Metric us_per_roundtrip_c64 = wall us / R.
 *
 * weft: weft_offload(fn, &call), fn calling a noinline trivial_blocking()
 * through a volatile read (the black_box of the Rust peer). Built only when
 * include/weft/offload.h exists; until then both workloads report
 * themselves unavailable. Targets (issue 5): seq < 5 us, c64 < 2 us.
 *
 * The pool's spinning can be switched off for a comparison with
 * WEFT_OFFLOAD_SPIN_NS=0 (runtime/offload.c: SPIN_NS). The figures move a
 * lot with the machine's load: a spinning pool thread only pays when a
 * core is free for it.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

#if __has_include("weft/offload.h")
#include "weft/offload.h"
#define HAVE_OFFLOAD 1
#else
#define HAVE_OFFLOAD 0
#endif

#if HAVE_OFFLOAD

struct call {
	uint64_t x;
	uint64_t result;
};

static __attribute__((noinline)) uint64_t trivial_blocking(uint64_t x)
{
	volatile uint64_t v = x; /* black_box */

	return v + 1;
}

static int blocking_fn(void *arg)
{
	struct call *c = arg;

	c->result = trivial_blocking(c->x);
	return 0;
}

struct caller_arg;

struct offload_bench {
	long long r;
	unsigned callers;
	weft_task **handles;
	struct caller_arg *args;
	_Atomic long long bad; /* results that were not j + 1 */
	_Atomic int failed; /* first failed weft call, as -errno */
	uint64_t wall_ns;
};

struct caller_arg {
	struct offload_bench *s;
	unsigned c;
};

static void fail(struct offload_bench *s, int ret)
{
	int zero = 0;

	atomic_compare_exchange_strong(&s->failed, &zero, ret);
}

static int caller(void *arg)
{
	struct caller_arg *a = arg;
	struct offload_bench *s = a->s;
	struct call call;
	long long j;
	int ret;

	for (j = a->c; j < s->r; j += s->callers) {
		call.x = (uint64_t)j;
		call.result = 0;
		ret = weft_offload(blocking_fn, &call);
		if (ret != 0) {
			fail(s, ret);
			return ret;
		}
		if (call.result != (uint64_t)j + 1)
			atomic_fetch_add(&s->bad, 1);
	}
	return 0;
}

static int driver(void *arg)
{
	struct offload_bench *s = arg;
	struct caller_arg *args = s->args;
	unsigned i, spawned;
	uint64_t t0;
	int ret;

	for (i = 0; i < s->callers; i++)
		args[i] = (struct caller_arg){ .s = s, .c = i };
	t0 = weft_now();
	for (spawned = 0; spawned < s->callers; spawned++) {
		s->handles[spawned] = weft_spawn(caller, &args[spawned]);
		if (!s->handles[spawned]) {
			fail(s, -errno);
			break;
		}
	}
	for (i = 0; i < spawned; i++) {
		ret = weft_join(s->handles[i]);
		if (ret != 0)
			fail(s, ret);
	}
	s->wall_ns = weft_now() - t0;
	return atomic_load(&s->failed);
}

static int run_callers(const struct bench_opts *o, const char *workload,
		       const char *metric, unsigned callers, long long r)
{
	struct offload_bench s = { .r = r, .callers = callers };
	long long bad;
	int ret;

	s.handles = calloc(callers, sizeof(*s.handles));
	s.args = calloc(callers, sizeof(*s.args));
	if (!s.handles || !s.args) {
		free(s.handles);
		free(s.args);
		return bench_fail(workload, "out of memory");
	}
	ret = bench_weft_run(o, driver, &s);
	free(s.handles);
	free(s.args);
	if (ret != 0)
		return bench_fail(workload, "weft call failed: %d", ret);
	bad = atomic_load(&s.bad);
	if (bad)
		return bench_fail(workload, "%lld results were not j + 1", bad);
	bench_emit(workload, metric, (double)s.wall_ns / 1e3 / (double)r, "us",
		   r);
	return 0;
}

static int run_seq(const struct bench_opts *o, long long r)
{
	return run_callers(o, "offload", "us_per_roundtrip_seq", 1, r);
}

static int run_c64(const struct bench_opts *o, long long r)
{
	return run_callers(o, "offload_c64", "us_per_roundtrip_c64", 64, r);
}

#define UNAVAILABLE NULL

#else /* !HAVE_OFFLOAD */

static int unavailable_run(const struct bench_opts *o, long long r)
{
	(void)o;
	(void)r;
	return 1;
}

#define run_seq unavailable_run
#define run_c64 unavailable_run
#define UNAVAILABLE "skipped: weft/offload.h not in this build"

#endif /* HAVE_OFFLOAD */

const struct bench_workload bench_offload = {
	.name = "offload",
	.spec = "6. offload: one caller, R sequential weft_offload() calls",
	.size_full = 100000,
	.size_quick = 100000,
	.unavailable = UNAVAILABLE,
	.run = run_seq,
};

const struct bench_workload bench_offload_c64 = {
	.name = "offload_c64",
	.spec = "6. offload_c64: 64 callers share R weft_offload() calls",
	.size_full = 100000,
	.size_quick = 100000,
	.unavailable = UNAVAILABLE,
	.run = run_c64,
};
