/* SPDX-License-Identifier: MIT */
/*
 * examples/rate_limiter.c - 64 concurrent callers held to 100 calls/s.
 *
 * Seed file: shared/seeds/004_636619dee873197f.txt.
 *
 * Ports seed 004's "Rate limiting: requests per second" (class
 * RateLimiter) and its "Common Failure Cases: RateLimiter not working
 * correctly across concurrent callers":
 *
 *     rate_limiter = RateLimiter(calls_per_second=10)
 *     async def rate_limited_fetch(url):
 *         async with rate_limiter:
 *             return await http_get(url)
 *
 * The seed's limiter measures the time elapsed since the previous caller
 * while it holds a lock, and under concurrency lets bursts through. Its
 * fix, an absolute next-permitted time, is what weft_limiter does: each
 * weft_limiter_acquire() is handed an absolute time slot (a token bucket,
 * GCRA) and sleeps until it, so the rate holds however many tasks call at
 * once, on however many workers.
 *
 * The 64 callers are started first and released together by an event, so
 * they really call at once. The "server" records when each call arrives
 * (after acquire returned).
 * Checked, from those times, not assumed:
 *  1. exactly, the bucket's promise: sorted, the k-th call (from 0) comes
 *     no earlier than start + (k - BURST + 1) / RATE seconds - a limiter
 *     that let even one call through early fails this;
 *  2. over every sliding 1 s window at most BURST + RATE calls arrive,
 *     give or take delivery: a caller that wakes late (a loaded machine, a
 *     sanitizer) may slip into the next window - a real server would see
 *     that too - so up to LATE_MS of lateness is allowed for, and the
 *     worst lateness seen is printed;
 *  3. every call got through (no caller failed).
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft.h"

#define RATE 100.0 /* calls per second */
#define BURST 5 /* calls that may pass back to back */
#define NR_CALLERS 64
#define CALLS_EACH 3
#define NR_CALLS (NR_CALLERS * CALLS_EACH) /* 192: about 1.9 s */
#define WINDOW WEFT_SEC(1)
#define LATE_MS 100 /* delivery lateness the window check allows for */

struct server {
	weft_limiter *limiter;
	weft_sem ready; /* one unit per caller started */
	weft_event go; /* all callers start calling at once */
	uint64_t arrivals[NR_CALLS]; /* weft_now() at each call */
	_Atomic int nr_arrivals;
};

static int caller(void *arg)
{
	struct server *s = arg;
	int i, ret;

	weft_sem_release(&s->ready);
	ret = weft_event_wait(&s->go);
	if (ret < 0)
		return ret;
	for (i = 0; i < CALLS_EACH; i++) {
		ret = weft_limiter_acquire(s->limiter); /* async with limiter */
		if (ret < 0)
			return ret;
		/* await http_get(url): the server logs the arrival. */
		s->arrivals[atomic_fetch_add(&s->nr_arrivals, 1)] = weft_now();
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static int failures;

#define CHECK(cond, ...)                                       \
	do {                                                   \
		if (!(cond)) {                                 \
			fprintf(stderr, "FAIL: " __VA_ARGS__); \
			fputc('\n', stderr);                   \
			failures++;                            \
		}                                              \
	} while (0)

/* The most arrivals in any window [t, t + WINDOW) (@t sorted). */
static int max_in_window(const uint64_t *t, int n)
{
	int lo = 0, hi, max = 0;

	for (hi = 0; hi < n; hi++) {
		while (t[hi] - t[lo] >= WINDOW)
			lo++;
		if (hi - lo + 1 > max)
			max = hi - lo + 1;
	}
	return max;
}

static int main_task(void *arg)
{
	struct server *s = arg;
	weft_task *tasks[NR_CALLERS];
	uint64_t start, period = (uint64_t)(1e9 / RATE), took;
	int i, k, ret, spawned, early = 0, n, max_window, allowed;
	int64_t late, worst_late = 0;

	s->limiter = weft_limiter_new(RATE, BURST);
	if (!s->limiter)
		return -errno;
	for (spawned = 0; spawned < NR_CALLERS; spawned++) {
		tasks[spawned] = weft_spawn(caller, s);
		if (!tasks[spawned]) {
			CHECK(0, "weft_spawn: errno %d", errno);
			break;
		}
	}
	/* Let every caller start, then release them together. */
	for (i = 0; i < spawned; i++)
		weft_sem_acquire(&s->ready);
	start = weft_now();
	weft_event_set(&s->go);
	for (i = 0; i < spawned; i++) {
		ret = weft_join(tasks[i]);
		CHECK(ret == 0, "caller %d: %d", i, ret);
	}
	took = weft_now() - start;
	weft_limiter_free(s->limiter);
	weft_event_destroy(&s->go);
	weft_sem_destroy(&s->ready);

	n = s->nr_arrivals;
	CHECK(n == NR_CALLS, "%d calls arrived, want %d", n, NR_CALLS);
	qsort(s->arrivals, (size_t)n, sizeof(s->arrivals[0]), cmp_u64);
	for (k = BURST; k < n; k++) {
		if (s->arrivals[k] - start < (uint64_t)(k - BURST + 1) * period)
			early++;
		/* All callers queue, so slots come exactly every period
		 * after the burst: how late was this call? */
		late = (int64_t)(s->arrivals[k] - s->arrivals[0]) -
		       (int64_t)((uint64_t)(k - BURST + 1) * period);
		if (late > worst_late)
			worst_late = late;
	}
	max_window = max_in_window(s->arrivals, n);
	allowed = BURST + (int)RATE + (int)(LATE_MS * RATE / 1000);
	printf("%d calls from %d tasks in %.2f s: %.1f calls/s "
	       "(limit %.0f/s, burst %d)\n",
	       n, NR_CALLERS, (double)took / 1e9,
	       (double)(n - BURST) * 1e9 / (double)took, RATE, BURST);
	printf("most calls in any 1 s window: %d (limit %d); "
	       "latest call %.1f ms after its slot\n",
	       max_window, BURST + (int)RATE, (double)worst_late / 1e6);
	CHECK(early == 0, "%d calls arrived before their slot", early);
	CHECK(max_window <= allowed,
	      "%d calls in a 1 s window: over %d even allowing %d ms of lateness",
	      max_window, BURST + (int)RATE, LATE_MS);
	return 0;
}

int main(void)
{
	static struct server s; /* large: kept off the task's stack */
	int ret = weft_run(main_task, &s, NULL);

	if (ret != 0) {
		fprintf(stderr, "FAIL: main task: %d\n", ret);
		return 1;
	}
	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
