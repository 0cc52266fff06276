/* SPDX-License-Identifier: MIT */
/*
 * perf/yield.c - shared/perf/cpu-spec.md, section "2. yield":
 *
 *   T = 2 x workers = 4 tasks, spawned together; each executes
 *   Y = 1,000,000 yields in a loop, then returns; the driver joins all 4.
 *   Metric: ns_per_yield = wall ns / (T x Y).
 *
 * weft: the yield is weft_yield(). T follows --workers (2 x workers); the
 * "n" field is T x Y, as the peers report it. The section's raw switch
 * floor (boost-context) is perf/switch.c.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

struct yield_bench {
	long long y; /* yields per task */
	_Atomic int failed; /* first failed weft_yield(), as -errno */
};

static int yielder(void *arg)
{
	struct yield_bench *s = arg;
	long long i;
	int ret;

	for (i = 0; i < s->y; i++) {
		ret = weft_yield();
		if (ret != 0) {
			int zero = 0;

			atomic_compare_exchange_strong(&s->failed, &zero, ret);
			return ret;
		}
	}
	return 0;
}

struct yield_driver {
	struct yield_bench *s;
	unsigned tasks;
	weft_task **handles;
	uint64_t wall_ns;
	int failed;
};

static int driver(void *arg)
{
	struct yield_driver *d = arg;
	unsigned i, spawned;
	uint64_t t0;
	int ret;

	t0 = weft_now();
	for (spawned = 0; spawned < d->tasks; spawned++) {
		d->handles[spawned] = weft_spawn(yielder, d->s);
		if (!d->handles[spawned]) {
			d->failed = -errno;
			break;
		}
	}
	for (i = 0; i < spawned; i++) {
		ret = weft_join(d->handles[i]);
		if (ret != 0 && !d->failed)
			d->failed = ret;
	}
	d->wall_ns = weft_now() - t0;
	return d->failed;
}

static int run(const struct bench_opts *o, long long y)
{
	struct yield_bench s = { .y = y };
	struct yield_driver d = { .s = &s, .tasks = 2 * o->workers };
	long long total = (long long)d.tasks * y;
	int ret;

	d.handles = calloc(d.tasks, sizeof(*d.handles));
	if (!d.handles)
		return bench_fail("yield", "out of memory");
	ret = bench_weft_run(o, driver, &d);
	free(d.handles);
	if (ret != 0)
		return bench_fail("yield", "weft call failed: %d", ret);
	bench_emit("yield", "ns_per_yield", (double)d.wall_ns / (double)total,
		   "ns", total);
	return 0;
}

const struct bench_workload bench_yield = {
	.name = "yield",
	.spec = "2. yield: 2 x workers tasks, Y weft_yield() each",
	.size_full = 1000000,
	.size_quick = 1000000,
	.run = run,
};
