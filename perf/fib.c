/* SPDX-License-Identifier: MIT */
/*
 * perf/fib.c - shared/perf/cpu-spec.md, section "4. fib":
 *
 *   fib(n) = n if n < 2 else fib(n-1) + fib(n-2), where for n >= 2 the
 *   fib(n-1) branch is spawned as a new task, fib(n-2) is computed directly
 *   by the current task, then the spawned task is joined and the sum
 *   returned. No sequential cut-off. n = 30 (result 832,040).
 *   Spawns per fib(30) = F(31) - 1 = 1,346,268.
 *   Metrics: wall_ms, and tasks_per_s = spawns / wall s.
 *
 * weft: weft_spawn(fib_task, &sub) with the child's argument and result in
 * the parent's frame (weft_join() never returns while the child runs, so
 * that is safe), then fib(n-2), then weft_join(). The spawn count is
 * F(n+1) - 1, computed, not counted: a shared counter would add an atomic
 * to every spawn (the Go and Tokio peers count with one). The result must
 * be F(n) (832,040 for n = 30).
 */
#include <stdatomic.h>

#include "bench.h"

struct fib_arg {
	int n;
	uint64_t result;
};

static _Atomic int fib_failed; /* first failed spawn or join, as -errno */

static void fail(int ret)
{
	int zero = 0;

	atomic_compare_exchange_strong(&fib_failed, &zero, ret);
}

static uint64_t fib(int n);

static int fib_task(void *arg)
{
	struct fib_arg *a = arg;

	a->result = fib(a->n);
	return 0;
}

static uint64_t fib(int n)
{
	struct fib_arg sub;
	weft_task *t;
	uint64_t y;
	int ret;

	if (n < 2)
		return (uint64_t)n;
	sub.n = n - 1;
	sub.result = 0;
	t = weft_spawn(fib_task, &sub);
	if (!t) {
		fail(-errno);
		return 0;
	}
	y = fib(n - 2);
	ret = weft_join(t);
	if (ret != 0)
		fail(ret);
	return sub.result + y;
}

struct fib_bench {
	int n;
	uint64_t result;
	uint64_t wall_ns;
};

static int driver(void *arg)
{
	struct fib_bench *s = arg;
	uint64_t t0;

	t0 = weft_now();
	s->result = fib(s->n);
	s->wall_ns = weft_now() - t0;
	return 0;
}

/* F(n), sequentially. */
static uint64_t fib_seq(int n)
{
	uint64_t a = 0, b = 1, t;

	while (n-- > 0) {
		t = a + b;
		a = b;
		b = t;
	}
	return a;
}

static int run(const struct bench_opts *o, long long n)
{
	struct fib_bench s = { .n = (int)n };
	uint64_t want, spawns;
	double wall_s;
	int ret;

	if (n < 0 || n > 60)
		return bench_fail("fib", "n = %lld out of range", n);
	want = fib_seq((int)n);
	spawns = n >= 1 ? fib_seq((int)n + 1) - 1 : 0; /* calls with n >= 2 */
	ret = bench_weft_run(o, driver, &s);
	if (ret != 0 || atomic_load(&fib_failed))
		return bench_fail("fib", "weft call failed: %d",
				  ret ? ret : atomic_load(&fib_failed));
	if (s.result != want || (n == 30 && s.result != 832040))
		return bench_fail("fib", "fib(%lld) = %llu, not %llu", n,
				  (unsigned long long)s.result,
				  (unsigned long long)want);
	wall_s = (double)s.wall_ns / 1e9;
	bench_emit("fib", "wall_ms", wall_s * 1e3, "ms", n);
	bench_emit("fib", "tasks_per_s", (double)spawns / wall_s, "tasks/s",
		   (long long)spawns);
	return 0;
}

const struct bench_workload bench_fib = {
	.name = "fib",
	.spec = "4. fib: fib(n-1) spawned, fib(n-2) inline, no cut-off",
	.size_full = 30,
	.size_quick = 30,
	.run = run,
};
