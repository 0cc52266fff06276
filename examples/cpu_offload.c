/* SPDX-License-Identifier: MIT */
/*
 * examples/cpu_offload.c - loop.run_in_executor for CPU-heavy work: long
 * sums run on the offload pool while a ping task on the workers keeps
 * answering on time.
 *
 * Two phases on a one-worker runtime, the worst case for a blocking call:
 *  1. offloaded: two tasks each weft_offload() a ~100 ms sum; meanwhile a
 *     ping task sleeps 2 ms in a loop and measures how late it wakes;
 *  2. direct: one task runs the same sum on the worker itself, as a
 *     careless coroutine would call a CPU-bound function.
 * It prints both lateness figures and the sums, and exits non-zero if the
 * sums are wrong or the offloaded phase let the ping task be late by more
 * than LATE_LIMIT_MS (a bound generous enough for a loaded 2-core machine
 * and sanitizer builds; on an idle machine it is well under a millisecond).
 * Phase 2 only shows the difference; it is not checked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

#define NSUMS 2
#define LATE_LIMIT_MS 100

struct sum_job {
	uint64_t n;
	uint64_t result;
};

/* Sum of i*i mod 2^64 for i < n, the slow way: pure CPU. */
static int slow_sum(void *arg)
{
	struct sum_job *j = arg;
	volatile uint64_t acc = 0;

	for (uint64_t i = 0; i < j->n; i++)
		acc += i * i;
	j->result = acc;
	return 0;
}

static uint64_t expected_sum(uint64_t n)
{
	uint64_t acc = 0;

	for (uint64_t i = 0; i < n; i++)
		acc += i * i;
	return acc;
}

struct ping {
	atomic_bool stop;
	uint64_t worst_ns;
	uint64_t pings;
};

static int ping_task(void *arg)
{
	struct ping *p = arg;

	while (!atomic_load(&p->stop)) {
		uint64_t t0 = weft_now();
		if (weft_sleep(WEFT_MSEC(2)) != 0)
			break;
		uint64_t late = weft_now() - t0 - WEFT_MSEC(2);
		if (late > p->worst_ns)
			p->worst_ns = late;
		p->pings++;
	}
	return 0;
}

static int offloaded_sum(void *arg)
{
	return weft_offload(slow_sum, arg);
}

static uint64_t calibrate(void)
{
	/* About 100 ms of summing on this machine (after a warm-up run). */
	struct sum_job j = { .n = 1000000 };
	uint64_t t0;

	slow_sum(&j);
	t0 = weft_now();
	slow_sum(&j);
	uint64_t dt = weft_now() - t0;
	if (!dt)
		dt = 1;
	return j.n * WEFT_MSEC(100) / dt;
}

struct phase {
	bool direct;
	uint64_t n;
	uint64_t worst_ns, pings;
	int bad;
};

static int run_phase(void *arg)
{
	struct phase *ph = arg;
	struct ping p = { 0 };
	struct sum_job jobs[NSUMS];
	weft_task *pinger, *t[NSUMS];
	int njobs = ph->direct ? 1 : NSUMS;
	uint64_t want = expected_sum(ph->n);

	pinger = weft_spawn_named("ping", ping_task, &p);
	if (!pinger)
		return -errno;
	weft_sleep(WEFT_MSEC(10));
	for (int i = 0; i < njobs; i++) {
		jobs[i] = (struct sum_job){ .n = ph->n };
		t[i] = weft_spawn_named("sum", ph->direct ? slow_sum :
							    offloaded_sum,
					&jobs[i]);
		if (!t[i])
			return -errno;
	}
	for (int i = 0; i < njobs; i++) {
		weft_join(t[i]);
		if (jobs[i].result != want)
			ph->bad = 1;
	}
	weft_sleep(WEFT_MSEC(10));
	atomic_store(&p.stop, true);
	weft_join(pinger);
	ph->worst_ns = p.worst_ns;
	ph->pings = p.pings;
	return 0;
}

int main(void)
{
	weft_config cfg = { .workers = 1 };
	struct phase off = { .direct = false }, dir = { .direct = true };
	uint64_t n = calibrate();
	int ret;

	off.n = dir.n = n;
	ret = weft_run(run_phase, &off, &cfg);
	if (ret == 0)
		ret = weft_run(run_phase, &dir, &cfg);
	if (ret != 0) {
		fprintf(stderr, "cpu_offload: failed: %s\n", strerror(-ret));
		return 1;
	}
	printf("%d sums of %llu squares in the offload pool: ping answered "
	       "%llu times, at most %.2f ms late\n",
	       NSUMS, (unsigned long long)n, (unsigned long long)off.pings,
	       (double)off.worst_ns / 1e6);
	printf("1 sum on the worker itself:                 ping answered "
	       "%llu times, at most %.2f ms late\n",
	       (unsigned long long)dir.pings, (double)dir.worst_ns / 1e6);
	if (off.bad || dir.bad) {
		fprintf(stderr, "cpu_offload: a sum was wrong\n");
		return 1;
	}
	if (off.worst_ns > WEFT_MSEC(LATE_LIMIT_MS)) {
		fprintf(stderr,
			"cpu_offload: the ping task was %.2f ms late while "
			"the sums ran in the pool (limit %d ms)\n",
			(double)off.worst_ns / 1e6, LATE_LIMIT_MS);
		return 1;
	}
	return 0;
}
