/* SPDX-License-Identifier: MIT */
/*
 * examples/task_group.c - structured concurrency: a task group whose
 * children all finish before the group's wait returns, and where one
 * child's failure cancels its siblings.
 *
 * Seed files: shared/seeds/000_30f16e6467157b09.txt, 004_636619dee873197f.txt.
 *
 * Ports seed 000's "TaskGroup (3.11+): structured concurrency with proper
 * cancellation" (fetch(2) raises ValueError) and seed 004's
 * load_dashboard_data (user, orders, preferences fetched together):
 *
 *     async with asyncio.TaskGroup() as tg:
 *         t1 = tg.create_task(fetch(1))
 *         t2 = tg.create_task(fetch(2))
 *         t3 = tg.create_task(fetch(3))
 *     # all tasks are done here; if any raised, all siblings were
 *     # cancelled and the errors come back as an ExceptionGroup
 *
 * The `async with` block is weft_group_new() ... weft_group_wait(): wait
 * returns only once every child has finished, with 0 or the first
 * failure. The first failure cancels the siblings, which see -ECANCELED
 * at their suspension point and clean up. weft_group_errors() is the
 * ExceptionGroup: every real failure, not the siblings' -ECANCELED.
 * Children return results through their arg, like every weft task.
 *
 * Checked: the dashboard's three fetches all complete; in the failing
 * group wait returns -EINVAL, exactly one error is listed, both slow
 * siblings were cancelled and cleaned up before wait returned, and no
 * child result is half-written.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

/* ---- the dashboard: every child succeeds --------------------------------- */

struct dashboard {
	const char *user_id;
	char user[32];
	int orders;
	bool dark_mode;
};

static int fetch_user(void *arg)
{
	struct dashboard *d = arg;
	int ret = weft_sleep(WEFT_MSEC(3));

	if (ret == 0)
		snprintf(d->user, sizeof(d->user), "User %s", d->user_id);
	return ret;
}

static int fetch_orders(void *arg)
{
	struct dashboard *d = arg;
	int ret = weft_sleep(WEFT_MSEC(5));

	if (ret == 0)
		d->orders = 7;
	return ret;
}

static int fetch_prefs(void *arg)
{
	struct dashboard *d = arg;
	int ret = weft_sleep(WEFT_MSEC(1));

	if (ret == 0)
		d->dark_mode = true;
	return ret;
}

/* The three fetches write disjoint fields of one struct. */
static int load_dashboard_data(struct dashboard *d)
{
	weft_group *g = weft_group_new();
	int ret, wait;

	if (!g)
		return -errno;
	ret = weft_group_spawn(g, fetch_user, d);
	if (ret == 0)
		ret = weft_group_spawn(g, fetch_orders, d);
	if (ret == 0)
		ret = weft_group_spawn(g, fetch_prefs, d);
	if (ret < 0)
		weft_group_cancel(g); /* could not start them all: stop */
	wait = weft_group_wait(g); /* leaving the async with block */
	weft_group_free(g);
	return ret < 0 ? ret : wait;
}

/* ---- seed 000: fetch(2) raises ------------------------------------------- */

struct fetch {
	int n;
	uint64_t delay_ns;
	int square; /* the result */
	bool cleaned_up;
};

static int fetch(void *arg)
{
	struct fetch *f = arg;
	int ret = weft_sleep(f->delay_ns);

	if (ret < 0) {
		/* Cancelled because a sibling failed: undo, then propagate. */
		f->cleaned_up = true;
		return ret;
	}
	if (f->n == 2)
		return -EINVAL; /* raise ValueError("no twos allowed") */
	f->square = f->n * f->n;
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

static void one_child_fails(void)
{
	struct fetch f[3] = {
		{ .n = 1, .delay_ns = WEFT_SEC(10) },
		{ .n = 2, .delay_ns = WEFT_MSEC(5) },
		{ .n = 3, .delay_ns = WEFT_SEC(10) },
	};
	weft_group *g = weft_group_new();
	int errs[4], ret, i;
	size_t nerrs;

	if (!g) {
		CHECK(0, "weft_group_new: errno %d", errno);
		return;
	}
	for (i = 0; i < 3; i++) {
		ret = weft_group_spawn(g, fetch, &f[i]);
		CHECK(ret == 0, "weft_group_spawn(%d): %d", i, ret);
	}
	ret = weft_group_wait(g);
	/* except* ValueError as eg: for err in eg.exceptions: ... */
	nerrs = weft_group_errors(g, errs, 4);
	for (i = 0; i < (int)nerrs; i++)
		printf("caught: %s\n", strerrorname_np(-errs[i]));
	printf("wait returned %s; fetch(1) cleaned up: %s, fetch(3): %s\n",
	       strerrorname_np(-ret), f[0].cleaned_up ? "yes" : "no",
	       f[2].cleaned_up ? "yes" : "no");
	weft_group_free(g);

	CHECK(ret == -EINVAL, "weft_group_wait returned %d", ret);
	CHECK(nerrs == 1 && errs[0] == -EINVAL,
	      "%zu errors listed; siblings' -ECANCELED must not be", nerrs);
	CHECK(f[0].cleaned_up && f[2].cleaned_up,
	      "a sibling was not cancelled or did not clean up");
	CHECK(f[0].square == 0 && f[2].square == 0,
	      "a cancelled sibling wrote its result");
}

static int main_task(void *arg)
{
	struct dashboard d = { .user_id = "42" };
	int ret;

	(void)arg;
	ret = load_dashboard_data(&d);
	printf("dashboard: user \"%s\", %d orders, dark mode %s\n", d.user,
	       d.orders, d.dark_mode ? "on" : "off");
	CHECK(ret == 0, "load_dashboard_data: %d", ret);
	CHECK(!strcmp(d.user, "User 42") && d.orders == 7 && d.dark_mode,
	      "the dashboard is incomplete");

	one_child_fails();
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
