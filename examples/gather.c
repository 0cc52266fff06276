/* SPDX-License-Identifier: MIT */
/*
 * examples/gather.c - run tasks concurrently and collect their results:
 * weft_gather() with and without return_exceptions semantics.
 *
 * Seed files: shared/seeds/002_9ceb21de6e9778d1.txt,
 * 000_30f16e6467157b09.txt, 004_636619dee873197f.txt.
 *
 * Ports seed 002's "gather: run tasks in parallel" (four price fetches:
 * the total time is the longest delay, not the sum) and its
 * return_exceptions=True example (might_fail(2) raises), with seed 000's
 * and seed 004's point that a failure should cancel the siblings:
 *
 *     results = await asyncio.gather(might_fail(1), might_fail(2),
 *                                    might_fail(3), return_exceptions=True)
 *
 * weft_gather(tasks, n, statuses, flags) joins all n tasks. Results travel
 * through each task's arg; statuses[i] gets task i's status, in order -
 * that is return_exceptions=True: a failure is just a value, and the other
 * tasks run to completion. The return value is 0 or the first failing
 * status in index order. With WEFT_CANCEL_ON_ERROR the first failure in
 * time cancels the others instead (what TaskGroup does), and gather
 * returns that failure. Either way gather returns only when every task
 * has finished: nothing is orphaned.
 *
 * Checked: all results arrive and the run took at least the longest delay;
 * with a failure, statuses are {0, -EINVAL, 0} and the other results are
 * there; with WEFT_CANCEL_ON_ERROR the slow siblings saw -ECANCELED and
 * gather returned -EINVAL long before their 10 s were up.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

struct fetch {
	const char *symbol;
	uint64_t delay_ns;
	double quote; /* what the server answers */
	int fail_with; /* 0, or the error this fetch fails with */
	double price; /* the result */
	bool saw_cancel;
};

static int fetch_price(void *arg)
{
	struct fetch *f = arg;
	int ret = weft_sleep(f->delay_ns); /* simulate I/O */

	if (ret < 0) {
		f->saw_cancel = ret == -ECANCELED;
		return ret;
	}
	if (f->fail_with)
		return f->fail_with; /* raise ValueError(...) */
	f->price = f->quote;
	return 0;
}

/* Spawn fetch_price(&f[i]) for each i; on failure stop the ones started. */
static int spawn_fetches(struct fetch *f, size_t n, weft_task **tasks)
{
	size_t i, j;
	int err;

	for (i = 0; i < n; i++) {
		tasks[i] = weft_spawn(fetch_price, &f[i]);
		if (!tasks[i]) {
			err = -errno;
			for (j = 0; j < i; j++)
				weft_cancel(tasks[j]);
			weft_gather(tasks, i, NULL, 0);
			return err;
		}
	}
	return 0;
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

static void all_succeed(void)
{
	struct fetch f[] = {
		{ .symbol = "AAPL", .delay_ns = WEFT_MSEC(30), .quote = 182.5 },
		{ .symbol = "GOOG", .delay_ns = WEFT_MSEC(10), .quote = 175.3 },
		{ .symbol = "MSFT", .delay_ns = WEFT_MSEC(20), .quote = 415.1 },
		{ .symbol = "TSLA", .delay_ns = WEFT_MSEC(15), .quote = 245.0 },
	};
	weft_task *tasks[4];
	uint64_t start = weft_now(), took;
	int ret, i;

	ret = spawn_fetches(f, 4, tasks);
	if (ret < 0) {
		CHECK(0, "spawn: %d", ret);
		return;
	}
	ret = weft_gather(tasks, 4, NULL, 0); /* the handles are released */
	took = weft_now() - start;
	for (i = 0; i < 4; i++) {
		printf("%s: $%.1f\n", f[i].symbol, f[i].price);
		CHECK(f[i].price > 0, "%s has no price", f[i].symbol);
	}
	printf("done in %llu ms (the longest fetch takes 30)\n",
	       (unsigned long long)(took / WEFT_MSEC(1)));
	CHECK(ret == 0, "gather: %d", ret);
	CHECK(took >= WEFT_MSEC(30), "done before the longest fetch");
}

static void return_exceptions(void)
{
	struct fetch f[] = {
		{ .symbol = "n1", .delay_ns = WEFT_MSEC(5), .quote = 10 },
		{ .symbol = "n2",
		  .delay_ns = WEFT_MSEC(1),
		  .fail_with = -EINVAL },
		{ .symbol = "n3", .delay_ns = WEFT_MSEC(5), .quote = 30 },
	};
	weft_task *tasks[3];
	int statuses[3], ret, i;

	ret = spawn_fetches(f, 3, tasks);
	if (ret < 0) {
		CHECK(0, "spawn: %d", ret);
		return;
	}
	ret = weft_gather(tasks, 3, statuses, 0);
	for (i = 0; i < 3; i++) {
		if (statuses[i] < 0)
			printf("Error: %s\n", strerrorname_np(-statuses[i]));
		else
			printf("OK: %.1f\n", f[i].price);
	}
	CHECK(ret == -EINVAL, "gather returned %d", ret);
	CHECK(statuses[0] == 0 && statuses[1] == -EINVAL && statuses[2] == 0,
	      "statuses %d %d %d", statuses[0], statuses[1], statuses[2]);
	CHECK(f[0].price > 0 && f[2].price > 0,
	      "the siblings of the failure did not complete");
}

static void cancel_on_error(void)
{
	struct fetch f[] = {
		{ .symbol = "slow1", .delay_ns = WEFT_SEC(10) },
		{ .symbol = "fails",
		  .delay_ns = WEFT_MSEC(5),
		  .fail_with = -EINVAL },
		{ .symbol = "slow2", .delay_ns = WEFT_SEC(10) },
	};
	weft_task *tasks[3];
	uint64_t start = weft_now(), took;
	int statuses[3], ret;

	ret = spawn_fetches(f, 3, tasks);
	if (ret < 0) {
		CHECK(0, "spawn: %d", ret);
		return;
	}
	ret = weft_gather(tasks, 3, statuses, WEFT_CANCEL_ON_ERROR);
	took = weft_now() - start;
	printf("cancel on error: gather returned %s after %llu ms; "
	       "statuses %d %d %d\n",
	       strerrorname_np(-ret), (unsigned long long)(took / WEFT_MSEC(1)),
	       statuses[0], statuses[1], statuses[2]);
	CHECK(ret == -EINVAL, "gather returned %d", ret);
	CHECK(statuses[0] == -ECANCELED && statuses[2] == -ECANCELED,
	      "the slow siblings ended with %d and %d", statuses[0],
	      statuses[2]);
	CHECK(f[0].saw_cancel && f[2].saw_cancel,
	      "a slow sibling was not cancelled");
	CHECK(took < WEFT_SEC(5), "gather waited for the slow siblings");
}

static int main_task(void *arg)
{
	(void)arg;
	all_succeed();
	return_exceptions();
	cancel_on_error();
	return 0;
}

int main(void)
{
	int ret = weft_run(main_task, NULL, NULL);

	if (ret != 0) {
		fprintf(stderr, "FAIL: main task: %d\n", ret);
		return 1;
	}
	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
